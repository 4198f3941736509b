import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, isIP, type AddressInfo, type Socket } from 'node:net';
import { chownSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../../scripts/bench/processes.ts';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { assertSessionPerConnection } from '../../packages/core/src/store/postgres/session-probe.ts';
import { openPostgresStore } from '../../packages/core/src/store/postgres/pg-job-store.ts';
import pg from 'pg';
import { startTlsRelay } from '../helpers/pg-tls-relay.ts';
import {
  API_MAIN,
  completedJob,
  eventually,
  getJson,
  newCredentials,
  newTestJob,
  onlyOn,
  PG_URL,
  postSigned,
  spawnNode,
  startApiProcess,
  startOutageStub,
  startWorkerDaemon,
  tempDir,
  testEnv,
  within,
  WORKER_MAIN,
  type TestHooks,
} from '../helpers/index.ts';

// A PostgreSQL server of the test's own, on a free port, so that stopping it disturbs none of the
// other test files, which share the machine's server. Debian's binaries; started as the postgres
// user (the server refuses to run as root), so the test needs root to switch to it.
const PG_VERSIONS = '/usr/lib/postgresql';

function privateServerUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'starting a private PostgreSQL server needs root (to run it as the postgres user)';
  if (!existsSync(PG_VERSIONS) || readdirSync(PG_VERSIONS).length === 0) return `no PostgreSQL binaries under ${PG_VERSIONS}`;
  return null;
}

async function startPrivatePostgres(t: TestHooks, setUp: (dir: string, asPostgres: (tool: string, args: string[]) => Buffer) => string = () => '') {
  const bin = join(PG_VERSIONS, readdirSync(PG_VERSIONS).sort().at(-1) as string, 'bin');
  const dir = mkdtempSync(join(tmpdir(), 'proxy-pg-'));
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  chownSync(dir, uid, gid);
  const data = join(dir, 'data');
  const asPostgres = (tool: string, args: string[]) => execFileSync('runuser', ['-u', 'postgres', '--', join(bin, tool), ...args], { stdio: 'pipe' });
  asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '--no-instructions']);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off ${setUp(dir, asPostgres)}`;
  const start = () => asPostgres('pg_ctl', ['-D', data, '-l', join(dir, 'server.log'), '-o', options, '-w', 'start']);
  // -m fast: what a restart or failover does to clients (their connections closed, new ones refused).
  const stop = () => asPostgres('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
  start();
  t.after(() => {
    try {
      asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    } catch {
      // Already stopped.
    }
    rmSync(dir, { recursive: true, force: true });
  });
  // The superuser, over the server's socket (its TCP may take TLS alone), closed with the test.
  const admin = async () => {
    const client = new pg.Client({ host: dir, port, user: 'postgres', database: 'postgres' });
    await client.connect();
    t.after(() => client.end());
    return client;
  };
  return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, dir, port, start, stop, admin };
}

test('a PostgreSQL server stopped and started again: creates meanwhile get 503 unavailable; answers that came back during the outage are written once it is back, each job called once; both programs keep running', async (t) => {
  if (!onlyOn('postgres', t, 'stops and starts a PostgreSQL server')) return;
  const missing = privateServerUnavailable();
  if (missing) return t.skip(missing);
  const pgServer = await startPrivatePostgres(t);
  const dir = tempDir(t);
  const { stub, answered } = await startOutageStub(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-restart', OPENAI_BASE_URL: stub.url, DATABASE_URL: pgServer.url, DATABASE_SCHEMA: 'proxy' });
  const api = await startApiProcess(t, env, dir);
  const worker = startWorkerDaemon(t, env, dir);
  const completed = (id: string) => completedJob(api.url, key, id, 30_000);
  const create = async (prompt: string) => {
    const created = await postSigned(api.url, key, secret, { prompt });
    assert.equal(created.status, 202, JSON.stringify(created.json));
    return created.json.id as string;
  };
  assert.equal((await completed(await create('before'))).output_text, 'echo: before');

  const during = await Promise.all(['during-1', 'during-2', 'during-3'].map(create));
  await eventually(async () => stub.calls.filter((c) => c.prompt.startsWith('during')).length === 3);
  pgServer.stop();

  const refused = await postSigned(api.url, key, secret, { prompt: 'while stopped' });
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get('retry-after'), '2');
  assert.equal(refused.json.error.code, 'unavailable');
  assert.equal((await getJson(api.url, '/health')).status, 503);
  // The upstream answers while the server is down; the worker holds the answers.
  await eventually(async () => answered() === 3, 10_000);
  await new Promise((r) => setTimeout(r, 500));
  pgServer.start();

  for (const [i, id] of during.entries()) assert.equal((await completed(id)).output_text, `echo: during-${i + 1}`);
  for (const prompt of ['during-1', 'during-2', 'during-3']) {
    assert.equal(stub.calls.filter((c) => c.prompt === prompt).length, 1, `${prompt} was called once`);
  }
  assert.equal((await completed(await create('after'))).output_text, 'echo: after');
  assert.equal(api.child.proc.exitCode, null, 'proxy-api is still running');
  assert.equal(worker.proc.exitCode, null, 'proxy-worker is still running');
});

test("DATABASE_URL's sslmode reads as libpq reads it: require encrypts against a server whose certificate is its own, with no warning printed; verify-full checks the certificate, and takes the CA named by sslrootcert, or with sslrootcert=system Node's, and the revocations sslcrl names; ssl_max_protocol_version bounds the TLS version; over a local socket no sslmode asks for TLS", async (t) => {
  if (!onlyOn('postgres', t, 'starts a PostgreSQL server of its own, with TLS')) return;
  const missing = privateServerUnavailable();
  if (missing) return t.skip(missing);
  // A self-signed certificate, as Heroku's servers have, or one from a CA outside Node's list (RDS's).
  const pgServer = await startPrivatePostgres(t, (dir) => serveTls(dir));
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = (query: string) => testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, DATABASE_URL: `${pgServer.url}?${query}`, DATABASE_SCHEMA: 'proxy' });

  // pg 8 read require as verify-full: this start failed on the certificate, after a nine-line warning.
  // The URL's own session options go before the store's: they had replaced them, search_path with them.
  const api = await startApiProcess(t, env('sslmode=require&options=-c%20work_mem%3D8MB'), dir);
  const created = await postSigned(api.url, key, secret, { prompt: 'over TLS' });
  assert.equal(created.status, 202, JSON.stringify(created.json));
  assert.equal((await getJson(api.url, `/v1/requests/${created.json.id}`, key)).status, 200);
  assert.deepEqual(api.child.stderr.filter(Boolean), [], 'nothing on stderr');
  const admin = new pg.Client({ connectionString: pgServer.url });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ ssl: boolean }>("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'proxy%'");
    assert.ok(rows.length > 0 && rows.every((r) => r.ssl), `the API's connections encrypted: ${JSON.stringify(rows)}`);
    const stored = await admin.query('SELECT count(*)::int AS n FROM proxy.jobs WHERE id = $1', [created.json.id]);
    assert.equal(stored.rows[0].n, 1, 'the job in DATABASE_SCHEMA, the URL giving options of its own');
  } finally {
    await admin.end();
  }

  // pg's own no-verify, as Heroku's guides for Node give it: read the libpq way, it had meant verify-full.
  const unverified = await startApiProcess(t, env('sslmode=no-verify'), dir);
  assert.equal((await getJson(unverified.url, `/v1/requests/${created.json.id}`, key)).status, 200);

  const refused = spawnNode(API_MAIN, [], env('sslmode=verify-full'), dir);
  assert.equal((await refused.exited).code, 1);
  assert.equal(refused.stderr.filter(Boolean).length, 1, refused.stderr.join('\n'));
  assert.match(refused.stderr[0]!, /^proxy-api: DATABASE_URL: cannot open postgres postgres@127\.0\.0\.1:\d+\/postgres \(schema proxy\): self-signed certificate/);

  const verified = await startApiProcess(t, env(`sslmode=verify-full&sslrootcert=${join(pgServer.dir, 'server.crt')}`), dir);
  assert.equal((await getJson(verified.url, `/v1/requests/${created.json.id}`, key)).status, 200);

  // sslcrl, libpq's list of revoked certificates: one that revokes the server's stops the start,
  // where pg had read nothing of it and connected. One that revokes nothing lets it start.
  const [unrevoked, revoked] = revocationLists(pgServer.dir);
  const checked = await startApiProcess(t, env(`sslmode=verify-full&sslrootcert=${join(pgServer.dir, 'server.crt')}&sslcrl=${unrevoked}`), dir);
  assert.equal((await getJson(checked.url, `/v1/requests/${created.json.id}`, key)).status, 200);
  const revokedStart = spawnNode(API_MAIN, [], env(`sslmode=verify-full&sslrootcert=${join(pgServer.dir, 'server.crt')}&sslcrl=${revoked}`), dir);
  // Bounded: a start that connects (the failure) would run on.
  const revokedExit = await within(revokedStart.exited, 15_000, 'the start against a revoked certificate').catch((err: unknown) => {
    revokedStart.proc.kill();
    throw err;
  });
  assert.equal(revokedExit.code, 1);
  assert.match(revokedStart.stderr.join('\n'), /^proxy-api: DATABASE_URL: cannot open postgres postgres@127\.0\.0\.1:\d+\/postgres \(schema proxy\): certificate revoked/);

  // libpq 16's sslrootcert=system checks against the CAs the TLS library trusts: Node's list, to
  // which NODE_EXTRA_CA_CERTS adds. It had been read as a file's path ("cannot read system").
  const untrusted = spawnNode(API_MAIN, [], env('sslrootcert=system'), dir);
  assert.equal((await untrusted.exited).code, 1);
  assert.match(untrusted.stderr.join('\n'), /^proxy-api: DATABASE_URL: cannot open postgres postgres@127\.0\.0\.1:\d+\/postgres \(schema proxy\): self-signed certificate/);
  const trusted = await startApiProcess(t, { ...env('sslrootcert=system'), NODE_EXTRA_CA_CERTS: join(pgServer.dir, 'server.crt') }, dir);
  assert.equal((await getJson(trusted.url, `/v1/requests/${created.json.id}`, key)).status, 200);

  // libpq's bounds on the TLS version, which pg read nothing of: the server offers 1.3, which the
  // API's connections took before.
  const tls12 = await startApiProcess(t, env('sslmode=require&ssl_max_protocol_version=TLSv1.2&application_name=proxy-tls12'), dir);
  assert.equal((await getJson(tls12.url, `/v1/requests/${created.json.id}`, key)).status, 200);
  const versions = new pg.Client({ connectionString: pgServer.url });
  await versions.connect();
  try {
    const { rows } = await versions.query<{ version: string }>("SELECT s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'proxy-tls12'");
    assert.ok(rows.length > 0 && rows.every((r) => r.version === 'TLSv1.2'), JSON.stringify(rows));
  } finally {
    await versions.end();
  }

  // Over the server's local socket libpq uses no TLS, whatever the sslmode (here PGSSLMODE, set for
  // every host); pg asked the server for it there, and every start failed: "The server does not
  // support SSL connections".
  const socketUrl = `postgres://postgres@/postgres?host=${encodeURIComponent(pgServer.dir)}&port=${new URL(pgServer.url).port}`;
  const overSocket = await startApiProcess(t, { ...env(''), DATABASE_URL: socketUrl, PGSSLMODE: 'verify-full' }, dir);
  assert.equal((await getJson(overSocket.url, `/v1/requests/${created.json.id}`, key)).status, 200);
});

test("DATABASE_URL's sslcert and sslkey present a client certificate, as pg_hba's cert method asks; sslpassword opens a key kept encrypted", async (t) => {
  if (!onlyOn('postgres', t, 'starts a PostgreSQL server of its own, with TLS and client certificates')) return;
  const missing = privateServerUnavailable();
  if (missing) return t.skip(missing);
  const pgServer = await startPrivatePostgres(t, (dir) => {
    writeFileSync(join(dir, 'pg_hba.conf'), 'local all all trust\nhostssl all all 127.0.0.1/32 cert\n');
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=proxy-test-ca', '-keyout', 'ca.key', '-out', 'ca.crt');
    // The certificate's CN is the role it logs in as.
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=postgres', '-keyout', 'client.key', '-out', 'client.csr');
    openssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'client.crt');
    openssl('pkey', '-in', 'client.key', '-aes256', '-passout', 'pass:open sesame', '-out', 'client-encrypted.key');
    chownSync(join(dir, 'ca.crt'), Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), -1);
    return `${serveTls(dir, join(dir, 'pg_hba.conf'))} -c ssl_ca_file=${join(dir, 'ca.crt')}`;
  });
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = (query: string) => testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, DATABASE_URL: `${pgServer.url}?sslmode=require&${query}`, DATABASE_SCHEMA: 'proxy' });
  const file = (name: string) => encodeURIComponent(join(pgServer.dir, name));

  const api = await startApiProcess(t, env(`sslcert=${file('client.crt')}&sslkey=${file('client.key')}`), dir);
  const created = await postSigned(api.url, key, secret, { prompt: 'with a client certificate' });
  assert.equal(created.status, 202, JSON.stringify(created.json));

  const encrypted = await startApiProcess(t, env(`sslcert=${file('client.crt')}&sslkey=${file('client-encrypted.key')}&sslpassword=${encodeURIComponent('open sesame')}`), dir);
  assert.equal((await getJson(encrypted.url, `/v1/requests/${created.json.id}`, key)).status, 200);
  assert.deepEqual(encrypted.child.stderr.filter(Boolean), [], 'nothing on stderr');

  // What cannot serve stops the start in one line (exit 78), never echoing the passphrase; TLS had
  // said it at the first connection in OpenSSL's words ('bad decrypt', 'key values mismatch').
  for (const [query, said] of [
    [`sslcert=${file('client.crt')}&sslkey=${file('client-encrypted.key')}`, 'sslkey is encrypted: give its passphrase as sslpassword'],
    [`sslcert=${file('client.crt')}&sslkey=${file('client-encrypted.key')}&sslpassword=open%20sesam`, 'sslpassword does not open sslkey'],
    [`sslcert=${file('client.crt')}&sslkey=${file('ca.key')}`, "sslkey is not the private key of sslcert's certificate"],
    [`sslcert=${file('client.crt')}`, 'sslcert needs sslkey, the file of its private key'],
    [`sslcert=${file('client.key')}&sslkey=${file('client.key')}`, 'sslcert holds no certificate Node can read (PEM)'],
  ] as const) {
    const refused = spawnNode(API_MAIN, [], env(query), dir);
    assert.equal((await refused.exited).code, 78, refused.stderr.join('\n'));
    assert.deepEqual(refused.stderr.filter(Boolean), [`proxy-api: DATABASE_URL: ${said}`]);
  }
});

test("DATABASE_URL's channel_binding and require_auth read as libpq's: SCRAM binds its proof to the server's certificate unless disable says not, so a relay ending TLS with a certificate of its own is found out; require refuses a server that would let the client in without the binding, and require_auth one that would use a method it does not list, before the password is sent, on every connection the store makes", async (t) => {
  if (!onlyOn('postgres', t, 'starts a PostgreSQL server of its own, with TLS and SCRAM')) return;
  const missing = privateServerUnavailable();
  if (missing) return t.skip(missing);
  const pgServer = await startPrivatePostgres(t, (dir) => {
    // scram logs in with SCRAM-SHA-256, plain with its password in clear (TLS carries it), postgres
    // with none: each over TLS alone.
    writeFileSync(
      join(dir, 'pg_hba.conf'),
      'local all all trust\nhostssl all scram 127.0.0.1/32 scram-sha-256\nhostssl all plain 127.0.0.1/32 password\nhostssl all all 127.0.0.1/32 trust\n',
    );
    return serveTls(dir, join(dir, 'pg_hba.conf'));
  });
  const { port } = pgServer;
  const admin = await pgServer.admin();
  await admin.query("CREATE ROLE scram LOGIN PASSWORD 'scram-secret-1'; CREATE ROLE plain LOGIN PASSWORD 'plain-secret-1'");
  // The man in the middle's certificate, which sslmode=require takes as it would the server's.
  const relayDir = tempDir(t);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-keyout', join(relayDir, 'k'), '-out', join(relayDir, 'c')], {
    stdio: 'pipe',
  });
  const relay = await startTlsRelay(t, { host: '127.0.0.1', port }, { key: readFileSync(join(relayDir, 'k')), cert: readFileSync(join(relayDir, 'c')) });

  const dir = tempDir(t);
  const once = async (user: string, through: number, query: string) => {
    const password = `${user}-secret-1`;
    const env = testEnv(dir, {
      OPENAI_API_KEY: 'sk-channel-binding',
      OPENAI_BASE_URL: 'http://127.0.0.1:9/v1',
      DATABASE_URL: `postgres://${user}:${password}@127.0.0.1:${through}/postgres?sslmode=require${query}`,
      DATABASE_SCHEMA: `proxy_${user}`,
    });
    const sentBefore = relay.sent().length;
    const worker = spawnNode(WORKER_MAIN, ['once'], env, dir);
    const { code } = await within(worker.exited, 30_000, 'proxy-worker once');
    return { code, said: worker.stderr.join('\n'), passwordSent: relay.sent().subarray(sentBefore).includes(password) };
  };
  await admin.query('CREATE SCHEMA proxy_scram AUTHORIZATION scram; CREATE SCHEMA proxy_plain AUTHORIZATION plain; CREATE SCHEMA proxy_postgres');

  // Straight to the server, SCRAM binds by default and with require.
  for (const query of ['', '&channel_binding=require']) {
    const direct = await once('scram', port, query);
    assert.equal(direct.code, 0, direct.said);
  }
  // Through the relay, the server finds the proof bound to another certificate than its own, as it
  // does psql's; with disable the relay gets in, as pg's Client had by default.
  for (const query of ['', '&channel_binding=prefer', '&channel_binding=require']) {
    const relayed = await once('scram', relay.port, query);
    assert.equal(relayed.code, 1, `through the relay with '${query}': ${relayed.said}`);
    assert.match(relayed.said, /SCRAM channel binding check failed/);
  }
  assert.equal((await once('scram', relay.port, '&channel_binding=disable')).code, 0);

  // A server that asks for the password in clear gets it through the relay unless require refuses
  // first; one that lets the client in without a password is refused under require.
  const plain = await once('plain', relay.port, '&channel_binding=require');
  assert.deepEqual([plain.code, plain.passwordSent], [1, false], plain.said);
  assert.match(plain.said, /channel binding required but not supported by server's authentication request \(channel_binding=require\)$/);
  const unrequired = await once('plain', relay.port, '');
  assert.deepEqual([unrequired.code, unrequired.passwordSent], [0, true], 'without require the relay reads the password, as libpq would send it');
  const trusted = await once('postgres', port, '&channel_binding=require');
  assert.equal(trusted.code, 1);
  assert.match(trusted.said, /channel binding required, but server authenticated client without channel binding/);
  assert.equal((await once('postgres', port, '')).code, 0);

  // require_auth (libpq 16's): the methods the server may authenticate the client by, or (!) may
  // not, none standing for letting it in unasked; a password asked for otherwise is not sent.
  const required = await once('plain', relay.port, '&require_auth=scram-sha-256');
  assert.deepEqual([required.code, required.passwordSent], [1, false], required.said);
  assert.match(required.said, /authentication method requirement "scram-sha-256" failed: server requested a cleartext password$/);
  for (const [user, query, said] of [
    ['postgres', 'scram-sha-256', 'server did not complete authentication'],
    ['postgres', '!none', 'server did not complete authentication'],
    ['scram', '!scram-sha-256', 'server requested SASL authentication'],
    ['scram', 'password,md5', 'server requested SASL authentication'],
  ] as const) {
    const refused = await once(user, port, `&require_auth=${encodeURIComponent(query)}`);
    assert.equal(refused.code, 1, refused.said);
    assert.ok(refused.said.endsWith(`authentication method requirement "${query}" failed: ${said}`), refused.said);
  }
  for (const [user, query] of [
    ['scram', 'scram-sha-256'],
    ['plain', 'password'],
    ['postgres', 'none'],
    ['plain', '!none'],
  ] as const) {
    const ran = await once(user, port, `&require_auth=${encodeURIComponent(query)}`);
    assert.equal(ran.code, 0, `${user} with require_auth=${query}: ${ran.said}`);
  }

  // The store's pooled connections are held to it too, not only the start's: once the server asks
  // scram for its password in clear, the next connection the pool makes is refused.
  const store = await openPostgresStore({ url: `postgres://scram:scram-secret-1@127.0.0.1:${port}/postgres?sslmode=require&channel_binding=require`, schema: 'proxy_scram' });
  try {
    const { id } = (await store.createJob(newTestJob())).job;
    writeFileSync(join(pgServer.dir, 'pg_hba.conf'), 'local all all trust\nhostssl all scram 127.0.0.1/32 password\nhostssl all all 127.0.0.1/32 trust\n');
    await admin.query('SELECT pg_reload_conf()');
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'scram'");
    await assert.rejects(
      eventually(async () => (await store.getJob(id)) === null, 10_000),
      /channel binding required but not supported by server's authentication request/,
    );
  } finally {
    await store.close().catch(() => undefined);
  }
});

test("libpq's password file (PGPASSFILE, ~/.pgpass) gives a URL without a password its password, with no warning of pg's, and its service file (pg_service.conf) the rest; a password file others may read is said at start and not read, and the server's question for a password is answered in words", async (t) => {
  if (!onlyOn('postgres', t, 'starts a PostgreSQL server of its own, with SCRAM')) return;
  const missing = privateServerUnavailable();
  if (missing) return t.skip(missing);
  const pgServer = await startPrivatePostgres(t, (dir) => {
    writeFileSync(join(dir, 'pg_hba.conf'), 'local all all trust\nhost all scram 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n');
    return `-c hba_file=${join(dir, 'pg_hba.conf')}`;
  });
  const { port } = pgServer;
  const admin = await pgServer.admin();
  await admin.query("CREATE ROLE scram LOGIN PASSWORD 'scram-secret-1'; CREATE SCHEMA proxy AUTHORIZATION scram");
  const dir = tempDir(t);
  writeFileSync(join(dir, 'pgpass'), `# the proxy's\n127.0.0.1:${port}:postgres:scram:scram-secret-1\n`, { mode: 0o600 });
  const once = async (env: Record<string, string>) => {
    const worker = spawnNode(
      WORKER_MAIN,
      ['once'],
      {
        ...testEnv(dir, {
          OPENAI_API_KEY: 'sk-password-file',
          OPENAI_BASE_URL: 'http://127.0.0.1:9/v1',
          DATABASE_URL: `postgres://scram@127.0.0.1:${port}/postgres`,
          DATABASE_SCHEMA: 'proxy',
        }),
        ...env,
      },
      dir,
    );
    const { code } = await within(worker.exited, 30_000, 'proxy-worker once');
    return { code, stderr: worker.stderr.filter(Boolean), lines: worker.lines };
  };
  for (const env of [{ PGPASSFILE: join(dir, 'pgpass') }, { HOME: dir, PGPASSFILE: '' }] as Array<Record<string, string>>) {
    if ('HOME' in env) writeFileSync(join(dir, '.pgpass'), readFileSync(join(dir, 'pgpass')), { mode: 0o600 });
    const ran = await once(env);
    assert.equal(ran.code, 0, ran.stderr.join('\n'));
    // pg read the file itself, and said in two lines on stderr at every start that pg 9 will not.
    assert.deepEqual(ran.stderr, [], 'nothing on stderr');
    assert.ok(!ran.lines.some((line) => line.includes('scram-secret-1')), 'the password is in no line');
  }
  // A URL that names only a service, whose definition names the server, the user and the password
  // file; pg read no service file, and went to localhost:5432 as whoever ran it.
  writeFileSync(join(dir, 'services.conf'), `[proxy]\nhost=127.0.0.1\nport=${port}\ndbname=postgres\nuser=scram\npassfile=${join(dir, 'pgpass')}\n`);
  const serviced = await once({ DATABASE_URL: 'postgres://?service=proxy', PGSERVICEFILE: join(dir, 'services.conf'), PGPASSFILE: '' });
  assert.equal(serviced.code, 0, serviced.stderr.join('\n'));
  assert.ok(
    serviced.lines.some((line) => line.includes(`scram@127.0.0.1:${port}/postgres`)),
    serviced.lines.join('\n'),
  );
  chmodSync(join(dir, 'pgpass'), 0o644);
  const loose = await once({ PGPASSFILE: join(dir, 'pgpass') });
  assert.equal(loose.code, 1);
  assert.ok(
    loose.lines.some((line) => line.includes(`password file ${join(dir, 'pgpass')} has group or world access, and is not read`)),
    loose.lines.join('\n'),
  );
  assert.deepEqual(loose.stderr, [
    `proxy-worker: DATABASE_URL: cannot open postgres scram@127.0.0.1:${port}/postgres (schema proxy): the server asks for a password and none is given: put it in DATABASE_URL, in PGPASSWORD, or in a password file (~/.pgpass, PGPASSFILE)`,
  ]);
});

test('a password rotated on the server under running programs (a secrets manager rotating it): creates get 503 unavailable with Retry-After, not 500, the outage said once; an answer that arrives meanwhile is held and written once the password works, the job called once; both programs keep running', async (t) => {
  if (!onlyOn('postgres', t, 'starts a PostgreSQL server of its own, with SCRAM')) return;
  const missing = privateServerUnavailable();
  if (missing) return t.skip(missing);
  const pgServer = await startPrivatePostgres(t, (dir) => {
    writeFileSync(join(dir, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n');
    return `-c hba_file=${join(dir, 'pg_hba.conf')}`;
  });
  const admin = await pgServer.admin();
  await admin.query("CREATE ROLE app LOGIN PASSWORD 'first-secret-1'; CREATE SCHEMA proxy AUTHORIZATION app");
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const url = `postgres://app:first-secret-1@127.0.0.1:${pgServer.port}/postgres`;
  const { stub, answered } = await startOutageStub(t);
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, DATABASE_URL: url, DATABASE_SCHEMA: 'proxy', OPENAI_API_KEY: 'sk-rotation', OPENAI_BASE_URL: stub.url });
  const api = await startApiProcess(t, env, dir);
  const worker = startWorkerDaemon(t, env, dir);
  const during = await postSigned(api.url, key, secret, { prompt: 'during the rotation' });
  assert.equal(during.status, 202);
  // Its call is under way (answered 1.5 s after it began) when the password changes.
  await eventually(async () => stub.calls.length === 1);

  await admin.query("ALTER ROLE app PASSWORD 'second-secret-2'");
  // A connection that began its login before the password changed may finish it after (seen
  // under load: the worker wrote its outcome through one), so sessions are ended until none
  // is left for three looks in a row.
  for (let quiet = 0; quiet < 3;) {
    const { rows } = await admin.query<{ ended: number }>("SELECT count(pg_terminate_backend(pid))::int AS ended FROM pg_stat_activity WHERE usename = 'app'");
    quiet = rows[0]!.ended === 0 ? quiet + 1 : 0;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  for (let i = 0; i < 3; i++) {
    const refused = await postSigned(api.url, key, secret, { prompt: `rotated ${i}` });
    assert.equal(refused.status, 503, JSON.stringify(refused.json));
    assert.equal(refused.json.error.code, 'unavailable');
    assert.ok(refused.headers.get('retry-after'));
  }
  const said = api.child.lines.filter((line) => line.includes('password authentication failed'));
  assert.equal(said.length, 1, said.join('\n'));
  assert.ok(said[0]!.includes('the database does not answer; requests get 503 unavailable'), said[0]);
  assert.ok(!api.child.lines.some((line) => line.includes('first-secret-1')), 'the password is in no line');

  // The answer comes while the login is refused: held, not lost (the job would be called again
  // once its lease lapsed), and not the end of the worker.
  await eventually(async () => answered() === 1 && worker.lines.some((line) => line.includes('the database cannot take an outcome now; holding it')), 10_000).catch(
    (err: unknown) => {
      throw new Error(`${(err as Error).message}: answered ${answered()}; the worker said:\n${worker.lines.join('\n')}`);
    },
  );

  await admin.query("ALTER ROLE app PASSWORD 'first-secret-1'");
  assert.equal((await postSigned(api.url, key, secret, { prompt: 'after' })).status, 202);
  assert.equal((await completedJob(api.url, key, during.json.id as string, 30_000)).output_text, 'echo: during the rotation');
  assert.equal(stub.calls.filter((c) => c.prompt === 'during the rotation').length, 1, 'called once');
  assert.ok(!worker.lines.some((line) => line.includes('first-secret-1')), 'the password is in no line of the worker');
  assert.equal(worker.proc.exitCode, null, 'proxy-worker is still running');
  assert.equal(api.child.proc.exitCode, null, 'proxy-api is still running');
});

test("libpq's PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE stand for what DATABASE_URL leaves out, postgres:// alone among them; the start says where it connected", async (t) => {
  if (!onlyOn('postgres', t, 'connects to the PostgreSQL server the run tests on')) return;
  const dir = tempDir(t);
  const server = new URL(PG_URL);
  const password = decodeURIComponent(server.password) || 'unused-by-trust';
  const env: Record<string, string> = {
    ...testEnv(dir, { OPENAI_API_KEY: 'sk-environment', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' }),
    DATABASE_URL: 'postgres://',
    PGHOST: server.hostname,
    PGPORT: server.port || '5432',
    PGUSER: decodeURIComponent(server.username),
    PGPASSWORD: password,
    PGDATABASE: server.pathname.slice(1),
  };
  // `postgres://` had been refused as malformed; libpq (and pg) take every part from these.
  const worker = spawnNode(WORKER_MAIN, ['once'], env, dir);
  assert.equal((await worker.exited).code, 0, worker.stderr.join('\n'));
  const said = worker.lines.map((line) => JSON.parse(line) as { message: string; database?: string }).find((line) => line.message === 'database');
  assert.equal(said?.database, `postgres ${env.PGUSER}@${env.PGHOST}:${env.PGPORT}/${env.PGDATABASE} (schema ${env.DATABASE_SCHEMA})`);
  assert.ok(!worker.lines.some((line) => line.includes(password)), 'the password is in no line');
});

test("libpq's hostaddr: the store connects to the address, the host's name no lookup's (here a name no resolver knows), and the start names both", async (t) => {
  if (!onlyOn('postgres', t, 'connects to the PostgreSQL server the run tests on')) return;
  const dir = tempDir(t);
  const server = new URL(PG_URL);
  if (isIP(server.hostname) !== 4) return t.skip(`TEST_DATABASE_URL's host is not an IPv4 address (${server.hostname})`);
  const named = new URL(PG_URL);
  named.hostname = 'db.proxy-test.invalid';
  named.searchParams.set('hostaddr', server.hostname);
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-hostaddr', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1', DATABASE_URL: named.href });
  // pg had looked the name up: 'getaddrinfo ENOTFOUND db.proxy-test.invalid'.
  const worker = spawnNode(WORKER_MAIN, ['once'], env, dir);
  assert.equal((await within(worker.exited, 30_000, 'proxy-worker once')).code, 0, worker.stderr.join('\n'));
  const said = worker.lines.map((line) => JSON.parse(line) as { message: string; database?: string }).find((line) => line.message === 'database');
  assert.match(said?.database ?? '', new RegExp(`@db\\.proxy-test\\.invalid:${server.port || '5432'}/.* at ${server.hostname.replace(/\./g, '\\.')} \\(schema `));
});

/**
 * Two revocation lists signed with the key of the server's self-signed certificate (serveTls): one
 * that revokes nothing, then one that revokes that certificate. Their paths.
 */
function revocationLists(dir: string): [string, string] {
  const ca = join(dir, 'crl-ca');
  mkdirSync(ca);
  writeFileSync(join(ca, 'index.txt'), '');
  writeFileSync(join(ca, 'crlnumber'), '01\n');
  writeFileSync(join(ca, 'ca.cnf'), '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n');
  const openssl = (...args: string[]) =>
    execFileSync('openssl', ['ca', '-config', 'ca.cnf', '-cert', join(dir, 'server.crt'), '-keyfile', join(dir, 'server.key'), ...args], { cwd: ca, stdio: 'pipe' });
  openssl('-gencrl', '-out', 'none-revoked.pem');
  openssl('-revoke', join(dir, 'server.crt'));
  openssl('-gencrl', '-out', 'server-revoked.pem');
  return [join(ca, 'none-revoked.pem'), join(ca, 'server-revoked.pem')];
}

/**
 * Settings for a private server (startPrivatePostgres) that serves TLS with a self-signed
 * certificate, as Heroku's servers have, or one from a CA outside Node's list (RDS's), written in
 * its folder as server.crt. `hbaFile` replaces its pg_hba.conf.
 */
function serveTls(dir: string, hbaFile?: string): string {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      join(dir, 'server.key'),
      '-out',
      join(dir, 'server.crt'),
    ],
    { stdio: 'pipe' },
  );
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  for (const file of ['server.key', 'server.crt']) chownSync(join(dir, file), uid, -1);
  chmodSync(join(dir, 'server.key'), 0o600);
  return `-c ssl=on -c ssl_cert_file=${join(dir, 'server.crt')} -c ssl_key_file=${join(dir, 'server.key')}${hbaFile ? ` -c hba_file=${hbaFile}` : ''}`;
}

test("DATABASE_URL's sslmode=prefer and allow fall back as libpq's do: prefer (psql's default) connects unencrypted to a server without TLS, allow encrypts to a server that takes only TLS; a silent server fails the start after connect_timeout, or 10 s", async (t) => {
  if (!onlyOn('postgres', t, 'starts PostgreSQL servers of its own, one without TLS and one with TLS only')) return;
  const missing = privateServerUnavailable();
  if (missing) return t.skip(missing);
  const [plain, tlsOnly] = await Promise.all([
    startPrivatePostgres(t),
    startPrivatePostgres(t, (dir) => {
      writeFileSync(join(dir, 'pg_hba.conf'), 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n');
      return serveTls(dir, join(dir, 'pg_hba.conf'));
    }),
  ]);
  /** Whether every connection the store opened with this sslmode is encrypted, read by the server over its socket. */
  const encrypted = async (server: { url: string; dir: string }, sslmode: string) => {
    const store = await openPostgresStore({ url: `${server.url}?sslmode=${sslmode}`, schema: 'proxy' });
    try {
      await store.createJob(newTestJob());
      const admin = new pg.Client({ host: server.dir, port: Number(new URL(server.url).port), user: 'postgres', database: 'postgres' });
      await admin.connect();
      try {
        const { rows } = await admin.query<{ ssl: boolean }>("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'proxy%'");
        assert.ok(rows.length > 0);
        return rows.every((r) => r.ssl) ? 'encrypted' : rows.some((r) => r.ssl) ? 'mixed' : 'plain';
      } finally {
        await admin.end();
      }
    } finally {
      await store.close();
    }
  };
  // Both had failed against the server without TLS: "The server does not support SSL connections".
  assert.deepEqual(
    [await encrypted(plain, 'prefer'), await encrypted(plain, 'allow'), await encrypted(tlsOnly, 'prefer'), await encrypted(tlsOnly, 'allow')],
    ['plain', 'plain', 'encrypted', 'encrypted'],
  );

  // A port that accepts and never answers: each mode's first connection gives up as every other
  // does (the fallback's trial had no bound, and a start with prefer waited without end).
  const held = new Set<Socket>();
  const silent = createServer((socket) => void held.add(socket)).listen(0, '127.0.0.1');
  // Hung up at the end, so that a start still waiting (a failure) does not keep the file running.
  t.after(() => {
    held.forEach((socket) => socket.destroy());
    silent.close();
  });
  await once(silent, 'listening');
  const silentUrl = `postgres://postgres@127.0.0.1:${(silent.address() as AddressInfo).port}/postgres`;
  // The URL's connect_timeout (libpq's, in seconds) bounds it instead of the store's 10 s, the
  // fallback's trial too; pg had read it into nothing it waits by. 0 waits without end, as libpq.
  const outcomes = await Promise.all(
    ['sslmode=prefer', 'sslmode=allow', 'sslmode=disable', 'sslmode=prefer&connect_timeout=2', 'connect_timeout=0'].map(async (query) => {
      const started = Date.now();
      const opened = openPostgresStore({ url: `${silentUrl}?${query}`, schema: 'proxy' }).then(
        (store) => store.close().then(() => 'opened'),
        (err: Error) => err.message,
      );
      const waited = new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), 13_000).unref());
      const outcome = await Promise.race([opened, waited]);
      const seconds = (Date.now() - started) / 1000;
      // A start still waiting waited out the timer's 13 s. Its time is not read off Date.now(), which
      // CI once put short of 13 s: a timer counts by the event loop's own clock, not Date.now()'s.
      if (outcome === 'still waiting') return [query, outcome, '13 s or more'] as const;
      // Bounds wide enough for a loaded machine, narrow enough to tell 2 s from 10.
      return [query, outcome, seconds < 7 ? 'under 7 s' : seconds < 13 ? '7-13 s' : '13 s or more'] as const;
    }),
  );
  assert.deepEqual(outcomes, [
    ['sslmode=prefer', 'timeout expired', '7-13 s'],
    ['sslmode=allow', 'timeout expired', '7-13 s'],
    ['sslmode=disable', 'timeout expired', '7-13 s'],
    ['sslmode=prefer&connect_timeout=2', 'timeout expired', 'under 7 s'],
    ['connect_timeout=0', 'still waiting', '13 s or more'],
  ]);
});

const PGBOUNCER = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((path) => existsSync(path));

test('behind PgBouncer in session mode, as README says to pool connections: both programs start and a job completes (the session settings went as a startup parameter PgBouncer refuses); in transaction mode the start is refused, nothing made', async (t) => {
  if (!onlyOn('postgres', t, 'starts a PostgreSQL server and a PgBouncer of its own')) return;
  const missing = privateServerUnavailable() ?? (PGBOUNCER ? null : 'PgBouncer is not installed (apt-get install pgbouncer); CI installs it');
  if (missing) {
    if (process.env.CI && !PGBOUNCER) throw new Error('pgbouncer is missing: .ci/run installs it');
    return t.skip(missing);
  }
  const pgServer = await startPrivatePostgres(t);
  const port = await freePort();
  const server = new URL(pgServer.url);
  const ini = join(pgServer.dir, 'pgbouncer.ini');
  writeFileSync(join(pgServer.dir, 'users.txt'), '"postgres" ""\n');
  writeFileSync(
    ini,
    [
      '[databases]',
      `postgres = host=127.0.0.1 port=${server.port} dbname=postgres`,
      `by_transaction = host=127.0.0.1 port=${server.port} dbname=postgres pool_mode=transaction`,
      `one_session = host=127.0.0.1 port=${server.port} dbname=postgres pool_size=1`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${join(pgServer.dir, 'users.txt')}`,
      'pool_mode = session',
      `logfile = ${join(pgServer.dir, 'pgbouncer.log')}`,
      `pidfile = ${join(pgServer.dir, 'pgbouncer.pid')}`,
    ].join('\n'),
  );
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  for (const file of ['pgbouncer.ini', 'users.txt']) chownSync(join(pgServer.dir, file), uid, -1);
  // PgBouncer will not run as root. A child of the test's (not -d, whose daemon no one would reap),
  // stopped by the test; runuser passes the signal on.
  const pgbouncer = spawn('runuser', ['-u', 'postgres', '--', PGBOUNCER as string, ini], { stdio: 'ignore' });
  const pgbouncerExited = once(pgbouncer, 'exit');
  t.after(async () => {
    pgbouncer.kill('SIGTERM');
    await pgbouncerExited;
  });
  await eventually(() => isListening(port), 10_000);

  const dir = tempDir(t);
  const stub = await startStubUpstream({});
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, {
    PROXY_KEY: key,
    PROXY_SECRET: secret,
    OPENAI_API_KEY: 'sk-pool',
    OPENAI_BASE_URL: stub.url,
    DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/postgres`,
    DATABASE_SCHEMA: 'pooled',
  });
  const api = await startApiProcess(t, env, dir);
  startWorkerDaemon(t, env, dir);
  const created = await postSigned(api.url, key, secret, { prompt: 'through the pool' });
  assert.equal(created.status, 202, JSON.stringify(created.json));
  assert.equal((await completedJob(api.url, key, created.json.id)).output_text, 'echo: through the pool');
  assert.deepEqual(api.child.stderr.filter(Boolean), []);

  // In transaction mode a session is no connection's own: refused before anything is migrated,
  // where the migrations made their tables in whatever schema the session they landed on had.
  const refused = spawnNode(API_MAIN, [], { ...env, DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/by_transaction`, DATABASE_SCHEMA: 'by_transaction' }, dir);
  assert.equal((await refused.exited).code, 1);
  assert.equal(refused.stderr.filter(Boolean).length, 1, refused.stderr.join('\n'));
  assert.match(
    refused.stderr[0]!,
    /^proxy-api: DATABASE_URL: cannot open postgres postgres@127\.0\.0\.1:\d+\/by_transaction \(schema by_transaction\): it is reached through a pool in transaction mode \(PgBouncer's pool_mode = transaction/,
  );
  // A session-mode pool with one session holds the probe's second statement until the first lets
  // go: taken as what it is, no pool in transaction mode, rather than waited on for PgBouncer's 120 s.
  const began = Date.now();
  await within(assertSessionPerConnection({ connectionString: `postgres://postgres@127.0.0.1:${port}/one_session` }), 10_000, 'the probe through a pool of one session');
  t.diagnostic(`probe through a pool of one session: ${Date.now() - began} ms`);
  const admin = new pg.Client({ connectionString: pgServer.url });
  await admin.connect();
  try {
    const made = await admin.query("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'pooled')");
    assert.deepEqual(made.rows, [], 'nothing made outside the session-mode schema');
  } finally {
    await admin.end();
  }
});

/** Whether something accepts connections on 127.0.0.1:port. */
function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}
