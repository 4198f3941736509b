import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { describeDatabase, keyGoesInClear, loadConfig, readDatabaseUrl, secretValues, trustProxySpoofable } from '../src/config.ts';
import { ConfigError } from '../src/errors.ts';
import { postgresConnection, queryParam } from '../src/store/postgres/connection-url.ts';
import { reloadClients } from '../src/clients-file.ts';
import pg from 'pg';

const key = 'k'.repeat(20);
const secret = 'S'.repeat(40);

function withDir(fn: (dir: string) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('defaults apply and the result is frozen', () => {
  withDir((cwd) => {
    const c = loadConfig({ env: {}, cwd });
    assert.equal(c.http.port, 8000);
    assert.equal(c.http.host, '127.0.0.1');
    assert.equal(c.upstream.baseUrl, 'https://api.openai.com/v1');
    assert.equal(c.db.path, join(cwd, 'data/requests.sqlite'));
    assert.equal(c.http.bodyLimitBytes, 1024 * 1024);
    assert.equal(c.upstream.maxResponseBytes, 16 * 1024 * 1024);
    assert.equal(c.upstream.stream, false);
    assert.equal(c.jobs.maxAttempts, 5);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.http));
  });
});

test('.env is read and the environment wins over it', () => {
  withDir((cwd) => {
    writeFileSync(join(cwd, '.env'), `PORT=9001\nHOST=0.0.0.0\nPROXY_KEY=${key}\nPROXY_SECRET=${secret}\n`);
    const c = loadConfig({ env: { PORT: '9002' }, cwd, needs: { clients: true } });
    assert.equal(c.http.port, 9002);
    assert.equal(c.http.host, '0.0.0.0');
    assert.deepEqual(c.clients, [{ name: 'default', key, secrets: [secret] }]);
  });
});

test('a malformed setting fails with one line naming it, and never the secret', () => {
  withDir((cwd) => {
    assert.throws(
      () => loadConfig({ env: { PORT: 'eighty' }, cwd }),
      (e: Error) => e instanceof ConfigError && /^PORT /.test(e.message) && !e.message.includes('\n'),
    );
    // A choice names the choices, where Ajv said only "must be equal to one of the allowed values".
    assert.throws(() => loadConfig({ env: { LOG_LEVEL: 'loud' }, cwd }), /^ConfigError: LOG_LEVEL must be one of error, warn, info, debug \(got "loud"\): /);
    assert.throws(() => loadConfig({ env: { UPSTREAM_STREAM: 'yes' }, cwd }), /^ConfigError: UPSTREAM_STREAM must be one of true, false \(got "yes"\): /);
    // A number is named as written, not as read: "0x10" was shown as "16", "1e1" as "10".
    assert.throws(() => loadConfig({ env: { RESULT_RETENTION_SECONDS: '0x10' }, cwd }), /^ConfigError: RESULT_RETENTION_SECONDS must be >= 60 \(got "0x10"\): /);
    assert.throws(() => loadConfig({ env: { LEASE_SECONDS: '1e0' }, cwd }), /^ConfigError: LEASE_SECONDS must be >= 2 \(got "1e0"\): /);
    assert.throws(() => loadConfig({ env: { OPENAI_BASE_URL: 'ftp://x' }, cwd }), /OPENAI_BASE_URL/);
    for (const [name, value] of [
      ['UPSTREAM_RESPONSE_LIMIT', '16 MB'],
      ['UPSTREAM_RESPONSE_LIMIT', '0kb'],
      ['BODY_LIMIT', '0'],
      ['UPSTREAM_STREAM', 'yes'],
    ]) {
      assert.throws(
        () => loadConfig({ env: { [name as string]: value as string }, cwd }),
        (e: Error) => e instanceof ConfigError && e.message.startsWith(`${name} `) && !e.message.includes('\n'),
      );
    }
    assert.equal(loadConfig({ env: { UPSTREAM_RESPONSE_LIMIT: '512kb' }, cwd }).upstream.maxResponseBytes, 512 * 1024);
    assert.equal(loadConfig({ env: { UPSTREAM_STREAM: 'true' }, cwd }).upstream.stream, true);
    const shortSecret = 'tooshort-secret-value';
    assert.throws(
      () => loadConfig({ env: { PROXY_KEY: key, PROXY_SECRET: shortSecret }, cwd }),
      (e: Error) => /^PROXY_SECRET /.test(e.message) && !e.message.includes(shortSecret),
    );
  });
});

test('OPENAI_BASE_URL: a query string is kept; a user, password or fragment stops the start without echoing the value', () => {
  withDir((cwd) => {
    assert.equal(loadConfig({ env: { OPENAI_BASE_URL: 'https://gw.example/v1/?api-version=2024-10-21' }, cwd }).upstream.baseUrl, 'https://gw.example/v1?api-version=2024-10-21');
    assert.equal(loadConfig({ env: { OPENAI_BASE_URL: 'https://api.example/v1//' }, cwd }).upstream.baseUrl, 'https://api.example/v1');
    assert.equal(loadConfig({ env: { OPENAI_BASE_URL: 'https://gw.example/v1?route=a/b/' }, cwd }).upstream.baseUrl, 'https://gw.example/v1?route=a/b/');
    assert.equal(loadConfig({ env: { OPENAI_BASE_URL: 'http://127.0.0.1:8080/' }, cwd }).upstream.baseUrl, 'http://127.0.0.1:8080');
    const cases: Array<[string, RegExp]> = [
      ['https://bob:hunter2-secret@api.example/v1', /must not hold a user or password/],
      ['https://api.example/v1#part', /#fragment/],
      ['http://[bad', /not a valid URL/],
      // These fail the setting's pattern, ahead of the URL checks: still never echoed.
      ['https://bob:hunter2 x@api.example/v1', /^OPENAI_BASE_URL is malformed: Any OpenAI-compatible API base URL/],
      ['ftp://bob:hunter2@api.example/v1', /^OPENAI_BASE_URL is malformed: /],
      // The endpoint pasted in place of its base: the base it should be is named, the query not shown.
      [
        'https://api.openai.com/v1/chat/completions',
        /^OPENAI_BASE_URL ends with \/chat\/completions, which the worker adds to each call itself: set it to the base, https:\/\/api\.openai\.com\/v1$/,
      ],
      ['https://gw.example/openai/v1/chat/completions/?key=hunter2', /set it to the base, https:\/\/gw\.example\/openai\/v1 and its query string$/],
    ];
    for (const [value, problem] of cases) {
      assert.throws(
        () => loadConfig({ env: { OPENAI_BASE_URL: value }, cwd }),
        (e: Error) => e instanceof ConfigError && /^OPENAI_BASE_URL /.test(e.message) && problem.test(e.message) && !e.message.includes('hunter2') && !e.message.includes('\n'),
        value,
      );
    }
  });
});

test('HTTPS_PROXY / HTTP_PROXY / NO_PROXY choose the upstream proxy as curl does; a bad one stops the start without echoing it', () => {
  withDir((cwd) => {
    const proxyOf = (env: Record<string, string>) => loadConfig({ env, cwd }).upstream.proxyUrl;
    // The default base URL is https: HTTPS_PROXY applies, HTTP_PROXY does not.
    assert.equal(proxyOf({}), null);
    assert.equal(proxyOf({ HTTPS_PROXY: 'http://proxy.corp:3128' }), 'http://proxy.corp:3128/');
    assert.equal(proxyOf({ HTTP_PROXY: 'http://proxy.corp:3128' }), null);
    assert.equal(proxyOf({ OPENAI_BASE_URL: 'http://llm.lan:8080/v1', HTTP_PROXY: 'http://proxy.corp:3128', HTTPS_PROXY: 'http://other:1' }), 'http://proxy.corp:3128/');
    // Lowercase first, as curl reads them; no scheme means http.
    assert.equal(proxyOf({ https_proxy: 'proxy.corp:3128', HTTPS_PROXY: 'http://other:1' }), 'http://proxy.corp:3128/');
    // NO_PROXY: the host and its subdomains, a leading dot or *., a port, a subnet for an address, *.
    const bypassed: Array<[string, string]> = [
      ['https://api.openai.com/v1', 'localhost,openai.com'],
      ['https://api.openai.com/v1', '.openai.com'],
      ['https://api.openai.com/v1', '*.openai.com'],
      ['https://api.openai.com/v1', 'api.openai.com:443'],
      ['https://api.openai.com/v1', '*'],
      ['http://10.1.2.3:8080/v1', '127.0.0.1, 10.0.0.0/8'],
      ['http://[::1]:8080/v1', '::1'],
      ['http://[::1]:8080/v1', '[::1]:8080'],
    ];
    for (const [base, noProxy] of bypassed) {
      assert.equal(proxyOf({ OPENAI_BASE_URL: base, HTTPS_PROXY: 'http://p:1', HTTP_PROXY: 'http://p:1', no_proxy: noProxy }), null, `${base} with ${noProxy}`);
    }
    const proxied: Array<[string, string]> = [
      ['https://api.openai.com/v1', 'notopenai.com'],
      ['https://api.openai.com/v1', 'api.openai.com:8443'],
      ['http://10.1.2.3:8080/v1', '10.0.0.0/16,192.168.0.0/16'],
      ['https://api.openai.com/v1', '10.0.0.0/8'],
    ];
    for (const [base, noProxy] of proxied) {
      assert.equal(proxyOf({ OPENAI_BASE_URL: base, HTTPS_PROXY: 'http://p:1', HTTP_PROXY: 'http://p:1', NO_PROXY: noProxy }), 'http://p:1/', `${base} with ${noProxy}`);
    }
    const bad: Array<[string, RegExp]> = [
      ['socks5://bob:hunter2@p:1080', /must be an http:\/\/ or https:\/\/ proxy/],
      ['http://bob:hunter2@p:3128/some/path', /a proxy's address only/],
      ['http://bob:hunter2@[bad', /not a valid URL/],
    ];
    for (const [value, problem] of bad) {
      assert.throws(
        () => loadConfig({ env: { HTTPS_PROXY: value }, cwd }),
        (e: Error) => e instanceof ConfigError && /^HTTPS_PROXY /.test(e.message) && problem.test(e.message) && !e.message.includes('hunter2'),
        value,
      );
    }
    // The proxy's password is a secret the logs redact, percent-encoded or not.
    const config = loadConfig({ env: { HTTPS_PROXY: 'http://bob:p%40ss@p:3128' }, cwd });
    assert.ok(secretValues(config).includes('p%40ss') && secretValues(config).includes('p@ss'));
  });
});

test('ALLOWED_MODELS: a list of model names that includes DEFAULT_MODEL, or the start stops naming it', () => {
  withDir((cwd) => {
    assert.equal(loadConfig({ env: {}, cwd }).http.allowedModels, null);
    assert.deepEqual(loadConfig({ env: { ALLOWED_MODELS: 'gpt-4o, gpt-4o-mini' }, cwd }).http.allowedModels, ['gpt-4o', 'gpt-4o-mini']);
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ ALLOWED_MODELS: ' , ' }, /^ALLOWED_MODELS names no model/],
      [{ ALLOWED_MODELS: 'gpt-4o-mini,bad model' }, /^ALLOWED_MODELS: "bad model" is not a model name/],
      [{ ALLOWED_MODELS: 'gpt-4o' }, /^ALLOWED_MODELS does not include DEFAULT_MODEL \(gpt-4o-mini\)/],
      [{ ALLOWED_MODELS: 'gpt-4o', DEFAULT_MODEL: 'gpt-4.1' }, /DEFAULT_MODEL \(gpt-4\.1\)/],
    ];
    for (const [env, problem] of cases)
      assert.throws(
        () => loadConfig({ env, cwd }),
        (e: Error) => e instanceof ConfigError && problem.test(e.message),
        JSON.stringify(env),
      );
    assert.deepEqual(loadConfig({ env: { ALLOWED_MODELS: 'gpt-4o', DEFAULT_MODEL: 'gpt-4o' }, cwd }).http.allowedModels, ['gpt-4o']);
  });
});

test('DATABASE_URL is read as pg reads it; printed and logged without its password', () => {
  withDir((cwd) => {
    assert.throws(
      () => loadConfig({ env: { DATABASE_URL: 'postgres://app:hunter2@db:port/jobs' }, cwd }),
      (e: Error) => e instanceof ConfigError && /^DATABASE_URL /.test(e.message) && !e.message.includes('hunter2') && !e.message.includes('\n'),
    );
    const socket = loadConfig({ env: { DATABASE_URL: 'postgres://app@/jobs?host=/var/run/postgresql' }, cwd });
    assert.equal(describeDatabase(socket.db), 'postgres app@/jobs?host=/var/run/postgresql (schema public)');
    // An IPv6 address keeps its brackets: `::1:5432` would read as an address alone.
    assert.equal(describeDatabase(loadConfig({ env: { DATABASE_URL: 'postgresql://app@[::1]:5432/jobs' }, cwd }).db), 'postgres app@[::1]:5432/jobs (schema public)');
    for (const url of ['postgres://app:hunter2@db.internal:6432/jobs?sslmode=disable', 'postgres://app@db.internal:6432/jobs?password=hunter2']) {
      const config = loadConfig({ env: { DATABASE_URL: url, DATABASE_SCHEMA: 'proxy' }, cwd });
      assert.equal(describeDatabase(config.db), 'postgres app@db.internal:6432/jobs (schema proxy)');
      assert.ok(secretValues(config).includes('hunter2'), `the logger redacts the password of ${url}`);
    }
    // What its TLS settings need is said in one line, never the URL; `require` (libpq's reading:
    // encrypted, not verified) needs nothing more.
    const refused = (url: string) => {
      try {
        loadConfig({ env: { DATABASE_URL: url }, cwd });
      } catch (err) {
        assert.ok(err instanceof ConfigError && !err.message.includes('hunter2') && !err.message.includes('\n'), String(err));
        return err.message;
      }
      assert.fail(`accepted: ${url}`);
    };
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?sslmode=verify-ca'),
      "DATABASE_URL: sslmode=verify-ca needs sslrootcert=FILE, the CA to check the server's certificate against (or sslmode=verify-full, against Node's list and the host name)",
    );
    assert.equal(
      refused(`postgres://app:hunter2@db/jobs?sslmode=verify-full&sslrootcert=${cwd}/missing-ca.pem`),
      `DATABASE_URL: cannot read ${cwd}/missing-ca.pem, named by its sslrootcert, sslcert, sslkey or sslcrl: ENOENT`,
    );
    assert.equal(describeDatabase(loadConfig({ env: { DATABASE_URL: 'postgres://app:hunter2@db/jobs?sslmode=require' }, cwd }).db), 'postgres app@db/jobs (schema public)');
    // libpq 16's sslrootcert=system names no file (it had read as one: "cannot read system"), and
    // takes verify-full alone, as libpq does.
    for (const url of ['postgres://app:hunter2@db/jobs?sslrootcert=system', 'postgres://app:hunter2@db/jobs?sslmode=verify-full&sslrootcert=system']) {
      assert.equal(describeDatabase(loadConfig({ env: { DATABASE_URL: url }, cwd }).db), 'postgres app@db/jobs (schema public)');
    }
    // PGSSLMODE from the environment, as libpq takes it, when the URL names no sslmode.
    const fromEnvironment = (url: string, PGSSLMODE: string) => loadConfig({ env: { DATABASE_URL: url, PGSSLMODE }, cwd }).db.url;
    assert.equal(fromEnvironment('postgres://app:hunter2@db/jobs', 'require'), 'postgres://app:hunter2@db/jobs?sslmode=require');
    assert.equal(fromEnvironment('postgres://app:hunter2@db/jobs?application_name=x', 'prefer'), 'postgres://app:hunter2@db/jobs?application_name=x&sslmode=prefer');
    assert.equal(fromEnvironment('postgres://app:hunter2@db/jobs?sslmode=disable', 'require'), 'postgres://app:hunter2@db/jobs?sslmode=disable');
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?sslmode=requir'),
      "DATABASE_URL: sslmode=requir is none of libpq's (disable, allow, prefer, require, verify-ca, verify-full); pg would have read it as verify-full",
    );
    // libpq's connect_timeout, in seconds, bounds the wait for a connection (pg had waited by
    // nothing of it: the store's own 10 s); PGCONNECT_TIMEOUT stands for a missing one.
    const waitOf = (url: string) => postgresConnection(url).connectionTimeoutMillis;
    assert.deepEqual(
      ['3', '%203%20', '1', '0', '-5', '99999999'].map((seconds) => waitOf(`postgres://app:hunter2@db/jobs?connect_timeout=${seconds}`)),
      [3000, 3000, 2000, 0, 0, 2 ** 31 - 1],
    );
    assert.equal(waitOf('postgres://app:hunter2@db/jobs'), undefined);
    // An encrypted client key's passphrase is kept out of logs, as the password is.
    assert.ok(secretValues(loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs?sslpassword=open%20sesame' }, cwd })).includes('open sesame'));
    // No TLS over a local socket, as libpq has it, whatever the sslmode; a host over TCP keeps it.
    assert.equal(postgresConnection('postgres://app@/jobs?host=/var/run/postgresql&sslmode=require').ssl, false);
    assert.deepEqual({ ...(postgresConnection('postgres://app@db/jobs?sslmode=require').ssl as object) }, { rejectUnauthorized: false });
    assert.equal(refused('postgres://app:hunter2@db/jobs?connect_timeout=2.5'), 'DATABASE_URL: connect_timeout=2.5 is not a whole number of seconds (0 waits without end)');
    const withTimeout = (url: string, PGCONNECT_TIMEOUT: string) => loadConfig({ env: { DATABASE_URL: url, PGCONNECT_TIMEOUT, PGSSLMODE: 'require' }, cwd }).db.url;
    assert.equal(withTimeout('postgres://app:hunter2@db/jobs#x', '4'), 'postgres://app:hunter2@db/jobs?sslmode=require&connect_timeout=4#x');
    assert.equal(withTimeout('postgres://app:hunter2@db/jobs?connect_timeout=7', '4'), 'postgres://app:hunter2@db/jobs?connect_timeout=7&sslmode=require');
    // libpq's PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE stand for what the URL leaves out, as
    // pg reads them: the start's description and the password's redaction read them too.
    const described = (url: string, variables: Record<string, string>) => {
      const config = loadConfig({ env: { DATABASE_URL: url, ...variables }, cwd });
      return [describeDatabase(config.db), secretValues(config).includes('hunter2')];
    };
    const variables = { PGHOST: 'db.internal', PGPORT: '6432', PGUSER: 'app', PGPASSWORD: 'hunter2', PGDATABASE: 'jobs' };
    assert.deepEqual(described('postgres://', variables), ['postgres app@db.internal:6432/jobs (schema public)', true]);
    assert.deepEqual(described('postgresql:///', variables), ['postgres app@db.internal:6432/jobs (schema public)', true]);
    assert.deepEqual(described('postgres://other:secret@db2:5433/queue', variables), ['postgres other@db2:5433/queue (schema public)', false]);
    assert.deepEqual(described('postgres://other@/queue?host=/var/run/postgresql', variables), ['postgres other@/queue?host=/var/run/postgresql (schema public)', true]);
    // No user anywhere: USER, as pg has it, or else the account the process runs as, as libpq has
    // it (pg had sent none); and its database, on localhost, as pg has them.
    assert.deepEqual(described('postgres://', { USER: 'deploy' }), ['postgres deploy@localhost/deploy (schema public)', false]);
    assert.deepEqual(described('postgres:///jobs', {}), [`postgres ${userInfo().username}@localhost/jobs (schema public)`, false]);
    // libpq's PGSSLROOTCERT, PGSSLCERT and PGSSLKEY, which pg reads nothing of, name the URL's files.
    writeFileSync(join(cwd, 'ca.pem'), 'not read until a connection');
    assert.equal(
      loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs?sslmode=verify-ca', PGSSLROOTCERT: join(cwd, 'ca.pem') }, cwd }).db.url,
      `postgres://app@db/jobs?sslmode=verify-ca&sslrootcert=${encodeURIComponent(join(cwd, 'ca.pem'))}`,
    );
    // A variable's value refused is told by the variable's name: the URL does not hold it.
    for (const [env, said] of [
      [{ PGCONNECT_TIMEOUT: '5s' }, 'PGCONNECT_TIMEOUT=5s is not a whole number of seconds (0 waits without end)'],
      [{ PGPORT: '54e2' }, 'PGPORT=54e2 is not a port number'],
      [{ PGSSLCRLDIR: '/etc/ssl/crl' }, "PGSSLCRLDIR=/etc/ssl/crl is not read here: name the revocation list's file as sslcrl"],
      [{ PGSSLROOTCERT: join(cwd, 'missing-ca.pem') }, `PGSSLROOTCERT=${join(cwd, 'missing-ca.pem')} cannot be read: ENOENT`],
      [{ PGSSLMODE: 'requir' }, "PGSSLMODE=requir is none of libpq's (disable, allow, prefer, require, verify-ca, verify-full); pg would have read it as verify-full"],
    ] as const) {
      assert.throws(
        () => loadConfig({ env: { DATABASE_URL: 'postgres://app:hunter2@db/jobs', ...env }, cwd }),
        (e: Error) => e instanceof ConfigError && e.message === said,
      );
    }
    // libpq's list of hosts to fail over along: pg takes one host.
    for (const [url, hosts] of [
      ['postgres://app:hunter2@db1:5432,db2:5432/jobs', 'db1:5432,db2:5432'],
      ['postgres://app:hunter2@db1,db2/jobs?target_session_attrs=read-write', 'db1,db2'],
      ['postgres://app:hunter2@/jobs?host=db1,db2', 'db1,db2'],
    ]) {
      assert.equal(
        refused(url as string),
        `DATABASE_URL names several hosts (${hosts}), libpq's list to fail over along; pg connects to one host: name the primary, or an address that follows it (your provider's primary endpoint, or a proxy such as PgBouncer or HAProxy)`,
      );
    }
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?sslmode=require&sslrootcert=system'),
      'DATABASE_URL: sslrootcert=system needs sslmode=verify-full (it has sslmode=require), as libpq has it',
    );
    // libpq's channel_binding: prefer (its default) and require bind SCRAM to the server's
    // certificate where the server offers it; disable does not; require without TLS never connects.
    assert.equal(postgresConnection('postgres://app@db/jobs?sslmode=require').enableChannelBinding, true);
    assert.equal(postgresConnection('postgres://app@db/jobs?sslmode=require&channel_binding=require').enableChannelBinding, true);
    assert.equal(postgresConnection('postgres://app@db/jobs?sslmode=require&channel_binding=disable').enableChannelBinding, false);
    assert.equal(
      loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs?sslmode=require', PGCHANNELBINDING: 'require' }, cwd }).db.url,
      'postgres://app@db/jobs?sslmode=require&channel_binding=require',
    );
    assert.equal(refused('postgres://app:hunter2@db/jobs?sslmode=require&channel_binding=yes'), "DATABASE_URL: channel_binding=yes is none of libpq's (disable, prefer, require)");
    assert.throws(
      () => loadConfig({ env: { DATABASE_URL: 'postgres://app:hunter2@db/jobs?sslmode=require', PGCHANNELBINDING: 'maybe' }, cwd }),
      (e: Error) => e instanceof ConfigError && e.message === "PGCHANNELBINDING=maybe is none of libpq's (disable, prefer, require)",
    );
    // libpq's password file gives a URL that names no password its password, read at start and
    // redacted as the URL's own: the URL's passfile, else PGPASSFILE, else ~/.pgpass.
    writeFileSync(join(cwd, 'pgpass'), 'db:5432:jobs:app:from-the-file\n', { mode: 0o600 });
    writeFileSync(join(cwd, '.pgpass'), 'db:*:*:*:from-home\n', { mode: 0o600 });
    const withPassfile = (url: string, env: Record<string, string>) => {
      const config = loadConfig({ env: { DATABASE_URL: url, ...env }, cwd });
      return [config.db.url, secretValues(config).includes('from-the-file') || secretValues(config).includes('from-home'), config.notes];
    };
    assert.deepEqual(withPassfile('postgres://app@db/jobs', { PGPASSFILE: join(cwd, 'pgpass') }), ['postgres://app@db/jobs?password=from-the-file', true, []]);
    assert.deepEqual(withPassfile(`postgres://app@db/jobs?passfile=${join(cwd, 'pgpass')}`, { PGPASSFILE: join(cwd, '.pgpass') }), [
      `postgres://app@db/jobs?passfile=${join(cwd, 'pgpass')}&password=from-the-file`,
      true,
      [],
    ]);
    assert.deepEqual(withPassfile('postgres://app@db/jobs', { HOME: cwd }), ['postgres://app@db/jobs?password=from-home', true, []]);
    // A password given otherwise wins, as libpq has it; a file others may read is said and not read.
    assert.deepEqual(withPassfile('postgres://app:given@db/jobs', { HOME: cwd }), ['postgres://app:given@db/jobs', false, []]);
    assert.deepEqual(withPassfile('postgres://app@db/jobs', { HOME: cwd, PGPASSWORD: 'given' }), ['postgres://app@db/jobs?password=given', false, []]);
    chmodSync(join(cwd, '.pgpass'), 0o644);
    assert.deepEqual(withPassfile('postgres://app@db/jobs', { HOME: cwd }), [
      'postgres://app@db/jobs',
      false,
      [`password file ${join(cwd, '.pgpass')} has group or world access, and is not read: permissions should be u=rw (0600) or less, as libpq has them`],
    ]);
    // A parameter neither libpq nor pg reads is refused, as libpq refuses it; pg ignored it, and
    // sslmdoe=require connected unencrypted. A name a letter or two from one is named; Prisma's
    // (a DATABASE_URL shared with a Prisma application) say what stands for them.
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?sslmdoe=require'),
      "DATABASE_URL: sslmdoe is no parameter of libpq's or pg's, and libpq refuses it ('invalid URI query parameter'): was sslmode meant?",
    );
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?sslmode=require&Application_Name=x'),
      "DATABASE_URL: Application_Name is no parameter of libpq's or pg's, and libpq refuses it ('invalid URI query parameter'): was application_name meant?",
    );
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?flavour=x'),
      "DATABASE_URL: flavour is no parameter of libpq's or pg's, and libpq refuses it ('invalid URI query parameter')",
    );
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?schema=proxy'),
      "DATABASE_URL: schema is Prisma's, and neither libpq nor pg reads it: the proxy's tables are in DATABASE_SCHEMA's schema (public unless set), whatever this says: take it out of the URL",
    );
    // libpq's connection service file: the URL's service (else PGSERVICE) names a group of
    // parameters that stand for those the URL does not give, before the environment's; pg read no
    // such file and went to localhost.
    const services = join(cwd, 'services.conf');
    writeFileSync(
      services,
      '# ours\n[other]\nhost=elsewhere\n\n[jobs]\n  host=db.internal\nport=6432\ndbname=jobs\nuser=app\npassword=from-service\nsslmode=require  \r\n[later]\nhost=x\n',
    );
    const viaService = (url: string, env: Record<string, string> = {}) => {
      const config = loadConfig({ env: { DATABASE_URL: url, PGSERVICEFILE: services, ...env }, cwd });
      return [
        describeDatabase(config.db),
        queryParam(config.db.url!, 'sslmode'),
        secretValues(config).includes('from-service'),
        queryParam(config.db.url!, 'service') !== undefined,
      ];
    };
    assert.deepEqual(viaService('postgres://?service=jobs'), ['postgres app@db.internal:6432/jobs (schema public)', 'require', true, false]);
    assert.deepEqual(viaService('postgres://other:given@db2/queue?service=jobs&sslmode=disable'), ['postgres other@db2:6432/queue (schema public)', 'disable', false, false]);
    assert.deepEqual(viaService('postgres://', { PGSERVICE: 'jobs', PGHOST: 'from-env', PGDATABASE: 'from-env', PGSSLMODE: 'verify-full', PGCONNECT_TIMEOUT: '3' }), [
      'postgres app@db.internal:6432/jobs (schema public)',
      'require',
      true,
      false,
    ]);
    assert.deepEqual(viaService(`postgres://?service=jobs&servicefile=${encodeURIComponent(services)}`, { PGSERVICEFILE: join(cwd, 'missing.conf') }).slice(0, 2), [
      'postgres app@db.internal:6432/jobs (schema public)',
      'require',
    ]);
    // ~/.pg_service.conf, then PGSYSCONFDIR's pg_service.conf: the first that defines the service.
    mkdirSync(join(cwd, 'etc'));
    writeFileSync(join(cwd, '.pg_service.conf'), '[jobs]\nhost=from-home\n');
    writeFileSync(join(cwd, 'etc', 'pg_service.conf'), '[jobs]\nhost=from-system\n[queue]\nhost=system-queue\n');
    const fromDefaults = (url: string) => describeDatabase(loadConfig({ env: { DATABASE_URL: url, HOME: cwd, PGSYSCONFDIR: join(cwd, 'etc'), USER: 'app' }, cwd }).db);
    assert.deepEqual(['postgres:///q?service=jobs', 'postgres:///q?service=queue'].map(fromDefaults), [
      'postgres app@from-home/q (schema public)',
      'postgres app@system-queue/q (schema public)',
    ]);
    // What libpq refuses is refused, naming where it is.
    for (const [url, env, said] of [
      ['postgres://?service=nope', {}, `DATABASE_URL: service=nope: no service nope is defined in ${services} or /etc/postgresql-common/pg_service.conf`],
      ['postgres://', { PGSERVICE: 'nope' }, `PGSERVICE=nope: no service nope is defined in ${services} or /etc/postgresql-common/pg_service.conf`],
      ['postgres://?service=jobs', { PGSERVICEFILE: join(cwd, 'missing.conf') }, `DATABASE_URL: service=jobs: service file ${join(cwd, 'missing.conf')} is not there`],
      [
        'postgres://?service=spaced',
        {},
        `DATABASE_URL: service=spaced: service file ${services}, line 2: "host " is no keyword of libpq's (write keyword=value, without spaces about the =)`,
      ],
      ['postgres://?service=nested', {}, `DATABASE_URL: service=nested: service file ${services}, line 4: a service within a service is not possible, as in libpq`],
      ['postgres://?service=bare', {}, `DATABASE_URL: service=bare: service file ${services}, line 6: "sslmode" is no keyword=value`],
      [
        'postgres://?service=typo',
        {},
        `DATABASE_URL: service=typo: sslmode=requir in ${services} is none of libpq's (disable, allow, prefer, require, verify-ca, verify-full); pg would have read it as verify-full`,
      ],
    ] as const) {
      if (url.includes('jobs')) writeFileSync(services, '[jobs]\nhost=db\n');
      else writeFileSync(services, '[spaced]\nhost = db\n[nested]\nservice=jobs\n[bare]\nsslmode\n[typo]\nsslmode=requir\n');
      assert.throws(
        () => loadConfig({ env: { DATABASE_URL: url, PGSERVICEFILE: services, PGSYSCONFDIR: '', HOME: '', ...env }, cwd }),
        (e: Error) => e instanceof ConfigError && e.message === said,
        said,
      );
    }
    loadConfig({
      env: { DATABASE_URL: 'postgres://app@db/jobs?application_name=x&options=-c%20work_mem%3D8MB&keepalives=1&target_session_attrs=any&ssl=true&statement_timeout=5000' },
      cwd,
    });
    // What pg cannot do and libpq would have done, or failed the connection for, stops the start;
    // the TLS version's bounds are Node's.
    for (const [query, said] of [
      ['gssencmode=require', 'is not possible here: pg has no GSSAPI encryption (encrypt with sslmode)'],
      ['gssencmode=maybe', "is none of libpq's (disable, prefer, require)"],
      ['requirepeer=postgres', 'is not checked here: pg cannot ask who runs the server behind a local socket'],
      ['sslsni=0', 'is not possible here: pg names the host in TLS whatever this says'],
      ['sslcertmode=require', 'is not checked here: pg cannot tell whether the server asked for the certificate'],
      ['min_protocol_version=3.2', 'is not possible here: pg speaks protocol 3.0'],
      ['requiressl=1', "is libpq's old name for sslmode=require, which pg does not read: write sslmode=require"],
      ['ssl_min_protocol_version=TLSv1.4', "is none of libpq's (TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)"],
    ]) {
      assert.equal(refused(`postgres://app:hunter2@db/jobs?sslmode=require&${query}`), `DATABASE_URL: ${query} ${said}`);
    }
    loadConfig({
      env: { DATABASE_URL: 'postgres://app@db/jobs?sslmode=require&gssencmode=disable&sslsni=1&sslcertmode=allow&min_protocol_version=3.0&max_protocol_version=latest' },
      cwd,
    });
    assert.throws(
      () => loadConfig({ env: { DATABASE_URL: 'postgres://app:hunter2@db/jobs?sslmode=require', PGGSSENCMODE: 'require' }, cwd }),
      (e: Error) => e instanceof ConfigError && e.message === 'PGGSSENCMODE=require is not possible here: pg has no GSSAPI encryption (encrypt with sslmode)',
    );
    assert.deepEqual(
      [postgresConnection('postgres://app@db/jobs?sslmode=require&ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.3').ssl].map((ssl) => {
        const { minVersion, maxVersion } = ssl as { minVersion?: string; maxVersion?: string };
        return [minVersion, maxVersion];
      }),
      [['TLSv1.3', 'TLSv1.3']],
    );
    // A URL given on the command line (copy-jobs --from) is read as DATABASE_URL is, named as given.
    assert.deepEqual(readDatabaseUrl('postgres://', '--from', { PGHOST: 'db', PGUSER: 'app', PGDATABASE: 'jobs', PGPASSFILE: join(cwd, 'pgpass') }), {
      url: 'postgres:///jobs?host=db&user=app&password=from-the-file',
      note: undefined,
    });
    assert.throws(
      () => readDatabaseUrl('postgres://app@db/jobs?sslmdoe=require', '--from', {}),
      (e: Error) => e instanceof ConfigError && e.message.startsWith('--from: sslmdoe is no parameter'),
    );
    // A client key others may read is refused, as libpq refuses it; owned by root (as here, when
    // the tests run as root), its group may read it. Over a local socket no TLS uses it.
    writeFileSync(join(cwd, 'client.key'), 'not read until a connection', { mode: 0o644 });
    const keyUrl = (host: string) => `postgres://app@${host}/jobs?sslmode=require&sslkey=${encodeURIComponent(join(cwd, 'client.key'))}`;
    const openKey = refused(keyUrl('db'));
    assert.ok(openKey.startsWith(`DATABASE_URL: sslkey ${join(cwd, 'client.key')} has group or world access: it must be u=rw (0600) or less`), openKey);
    loadConfig({ env: { DATABASE_URL: `postgres://app@/jobs?host=/var/run/postgresql&sslkey=${encodeURIComponent(join(cwd, 'client.key'))}` }, cwd });
    chmodSync(join(cwd, 'client.key'), process.getuid?.() === 0 ? 0o640 : 0o600);
    assert.ok(!refused(keyUrl('db')).includes('group or world access'));
    // libpq's hostaddr: connected to, the host's name still what TLS checks and what is described.
    const byAddress = postgresConnection('postgres://app@db.internal/jobs?hostaddr=10.0.0.5&sslmode=verify-full');
    assert.deepEqual([byAddress.host, (byAddress.ssl as { servername?: string }).servername], ['10.0.0.5', 'db.internal']);
    assert.equal(
      describeDatabase(loadConfig({ env: { DATABASE_URL: 'postgres://app@db.internal/jobs?hostaddr=10.0.0.5' }, cwd }).db),
      'postgres app@db.internal/jobs at 10.0.0.5 (schema public)',
    );
    assert.equal(loadConfig({ env: { DATABASE_URL: 'postgres://app@db.internal/jobs', PGHOSTADDR: '10.0.0.5' }, cwd }).db.url, 'postgres://app@db.internal/jobs?hostaddr=10.0.0.5');
    assert.equal(refused('postgres://app:hunter2@db/jobs?hostaddr=db.other'), 'DATABASE_URL: hostaddr=db.other is not an IP address, as libpq has it (a name goes in the host)');
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?hostaddr=10.0.0.5,10.0.0.6'),
      "DATABASE_URL: hostaddr=10.0.0.5,10.0.0.6 lists several addresses, libpq's list to fail over along; pg connects to one: name one",
    );
    // libpq 16's require_auth, its values checked as libpq checks them.
    loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs?require_auth=scram-sha-256,md5', PGREQUIREAUTH: 'none' }, cwd });
    loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs?require_auth=oauth,scram-sha-256' }, cwd });
    assert.equal(
      loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs', PGREQUIREAUTH: '!password,!md5' }, cwd }).db.url,
      'postgres://app@db/jobs?require_auth=!password%2C!md5',
    );
    for (const [value, said] of [
      ['kerberos', "names kerberos, none of libpq's methods (password, md5, gss, sspi, scram-sha-256, oauth, none)"],
      ['scram-sha-256,!md5', 'mixes methods refused (!) with methods required, as libpq refuses it'],
      ['md5,md5', 'names md5 twice, as libpq refuses it'],
      ['md5,', "names nothing, none of libpq's methods (password, md5, gss, sspi, scram-sha-256, oauth, none)"],
      // Methods pg cannot do, alone: no connection could ever be made.
      ['oauth', 'allows only what pg cannot do (it authenticates by scram-sha-256, md5, password, none)'],
      ['gss,sspi', 'allows only what pg cannot do (it authenticates by scram-sha-256, md5, password, none)'],
      ['!scram-sha-256,!md5,!password,!none', 'allows only what pg cannot do (it authenticates by scram-sha-256, md5, password, none)'],
    ]) {
      assert.equal(refused(`postgres://app:hunter2@db/jobs?require_auth=${encodeURIComponent(value as string)}`), `DATABASE_URL: require_auth=${value} ${said}`);
    }
    // PostgreSQL 17's sslnegotiation=direct: with an sslmode that cannot fall back to no TLS, as
    // libpq has it, and left out over a local socket, where pg had refused it at each connection.
    assert.equal(postgresConnection('postgres://app@db/jobs?sslmode=require&sslnegotiation=direct').sslnegotiation, 'direct');
    const overSocket = postgresConnection('postgres://app@/jobs?host=/var/run/postgresql&sslmode=require&sslnegotiation=direct');
    assert.equal(overSocket.sslnegotiation, 'postgres');
    assert.doesNotThrow(() => new pg.Client(overSocket));
    loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs?sslrootcert=system&sslnegotiation=direct' }, cwd });
    assert.equal(refused('postgres://app:hunter2@db/jobs?sslmode=require&sslnegotiation=tls'), "DATABASE_URL: sslnegotiation=tls is none of libpq's (postgres, direct)");
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?sslmode=prefer&sslnegotiation=direct'),
      'DATABASE_URL: sslnegotiation=direct needs sslmode=require, verify-ca or verify-full, as libpq has it (not prefer)',
    );
    assert.equal(
      refused('postgres://app:hunter2@db/jobs?sslnegotiation=direct'),
      'DATABASE_URL: sslnegotiation=direct needs sslmode=require, verify-ca or verify-full, as libpq has it (it has none)',
    );
    assert.equal(
      loadConfig({ env: { DATABASE_URL: 'postgres://app@db/jobs?sslmode=require', PGSSLNEGOTIATION: 'direct' }, cwd }).db.url,
      'postgres://app@db/jobs?sslmode=require&sslnegotiation=direct',
    );
    for (const [url, why] of [
      ['postgres://app:hunter2@db/jobs?channel_binding=require', 'set sslmode (require, verify-ca or verify-full); without sslmode the connection is unencrypted, as pg has it'],
      ['postgres://app:hunter2@db/jobs?sslmode=disable&channel_binding=require', 'which sslmode=disable turns off'],
      [
        'postgres://app@/jobs?host=/var/run/postgresql&sslmode=require&channel_binding=require',
        'which a local socket does not use: connect over TCP, or leave channel binding out',
      ],
    ]) {
      assert.equal(refused(url as string), `DATABASE_URL: channel_binding=require needs TLS, ${why}`);
    }
  });
});

test("a PostgreSQL server asking for a password where none is given (the URL, PGPASSWORD, a password file) hears why, where pg's SCRAM said 'client password must be a string'", async () => {
  for (const url of ['postgres://app@db/jobs', 'postgres://app:@db/jobs']) {
    const { password } = postgresConnection(url);
    assert.equal(typeof password, 'function', url);
    await assert.rejects(async () => (password as () => Promise<string>)(), /^Error: the server asks for a password and none is given/);
  }
  assert.equal(postgresConnection('postgres://app:given@db/jobs').password, 'given');
});

test('settings naming a file or folder take a path: a file: URL there (or, for PROXY_DB_PATH, an ORM URI or a PostgreSQL URL) stops the start saying what to write, never echoing it; a path with a colon is a path', () => {
  withDir((cwd) => {
    // Taken as relative paths, these made folders named file: and sqlite: under the working
    // directory, and the database or the logs in them.
    const cases: Array<[Record<string, string>, string]> = [
      [{ PROXY_DB_PATH: 'file:/srv/data/requests.sqlite?mode=rwc' }, 'PROXY_DB_PATH is a path, not a URI (file:…): write the path alone'],
      [{ PROXY_DB_PATH: 'sqlite:///srv/data/requests.sqlite' }, 'PROXY_DB_PATH is a path, not a URI (sqlite:…): write the path alone'],
      [{ PROXY_DB_PATH: 'SQLite3://data/requests.sqlite' }, 'PROXY_DB_PATH is a path, not a URI (sqlite3:…): write the path alone'],
      [{ PROXY_DB_PATH: 'postgres://app:hunter2@db/jobs' }, 'PROXY_DB_PATH holds a PostgreSQL URL: set DATABASE_URL to it instead'],
      [{ PROXY_DB_PATH: 'postgresql://app:hunter2@db/jobs' }, 'PROXY_DB_PATH holds a PostgreSQL URL: set DATABASE_URL to it instead'],
      [{ LOG_DIR: 'file:///var/log/proxy' }, 'LOG_DIR is a path, not a URI (file:…): write the path alone'],
      [{ PROXY_CLIENTS_FILE: 'file:///etc/proxy/clients.json' }, 'PROXY_CLIENTS_FILE is a path, not a URI (file:…): write the path alone'],
      [{ UPSTREAM_CA_FILE: 'FILE:///etc/ssl/ca.pem' }, 'UPSTREAM_CA_FILE is a path, not a URI (file:…): write the path alone'],
      [{ OPENAI_API_KEY_FILE: 'file:///run/credentials/key' }, 'OPENAI_API_KEY_FILE is a path, not a URI (file:…): write the path alone'],
    ];
    for (const [env, said] of cases) {
      assert.throws(
        () => loadConfig({ env, cwd }),
        (e: Error) => e instanceof ConfigError && e.message === said,
        JSON.stringify(env),
      );
    }
    for (const path of ['data/at 10:30.sqlite', 'C:/data/requests.sqlite', ':memory:']) {
      assert.equal(loadConfig({ env: { PROXY_DB_PATH: path, LOG_DIR: path }, cwd }).db.path, join(cwd, path));
    }
  });
});

test('what a program needs is required: the worker the upstream key, the API a client', () => {
  withDir((cwd) => {
    assert.throws(() => loadConfig({ env: {}, cwd, needs: { upstream: true } }), /^ConfigError: OPENAI_API_KEY is not set/);
    assert.throws(() => loadConfig({ env: {}, cwd, needs: { clients: true } }), /PROXY_KEY is not set/);
    assert.throws(() => loadConfig({ env: { PROXY_KEY: key }, cwd }), /PROXY_SECRET is not set/);
  });
});

test('OPENAI_API_KEY_FILE supplies the key (systemd credentials)', () => {
  withDir((cwd) => {
    writeFileSync(join(cwd, 'key.txt'), 'sk-from-file\n');
    assert.equal(loadConfig({ env: { OPENAI_API_KEY_FILE: 'key.txt' }, cwd }).upstream.apiKey, 'sk-from-file');
    assert.throws(() => loadConfig({ env: { OPENAI_API_KEY_FILE: 'missing.txt' }, cwd }), /OPENAI_API_KEY_FILE cannot be read/);
  });
});

test('an upstream key that cannot go in an HTTP header stops the start, naming the setting, the character and its place, never the key', () => {
  withDir((cwd) => {
    const cases: Array<[string, RegExp]> = [
      ['sk-abc\u201cdef', /^ConfigError: OPENAI_API_KEY holds the character U\+201C at position 7, which cannot go in an HTTP header: a key is printable ASCII without spaces$/],
      ['Bearer sk-abcdef', /^ConfigError: OPENAI_API_KEY holds a space at position 7, .*: set the key alone, without "Bearer "$/],
      ['sk-abc\tdef', /holds a tab at position 7/],
      ['sk-ab\u00e9', /holds the character U\+00E9 at position 6/],
    ];
    for (const [key, message] of cases) {
      assert.throws(
        () => loadConfig({ env: { OPENAI_API_KEY: key }, cwd }),
        (err: Error) => {
          assert.match(String(err), message);
          assert.ok(!String(err).includes('abcdef') && !String(err).includes('sk-ab'), 'the key is not quoted');
          return true;
        },
      );
    }
    writeFileSync(join(cwd, 'two-lines.txt'), 'sk-first\nsk-second\n');
    assert.throws(
      () => loadConfig({ env: { OPENAI_API_KEY_FILE: 'two-lines.txt' }, cwd }),
      /^ConfigError: the key in OPENAI_API_KEY_FILE \(two-lines\.txt\) holds a line break at position 9/,
    );
    for (const key of ['sk-proj-Ab_9-x', 'abc123+/=~.']) assert.equal(loadConfig({ env: { OPENAI_API_KEY: key }, cwd }).upstream.apiKey, key);
  });
});

test('OPENAI_API_KEY_HEADER: authorization by default; another header name (api-key for Azure OpenAI) is taken in lowercase; a header each call sets itself stops the start', () => {
  withDir((cwd) => {
    assert.equal(loadConfig({ env: {}, cwd }).upstream.apiKeyHeader, 'authorization');
    assert.equal(loadConfig({ env: { OPENAI_API_KEY_HEADER: 'Api-Key' }, cwd }).upstream.apiKeyHeader, 'api-key');
    assert.throws(
      () => loadConfig({ env: { OPENAI_API_KEY_HEADER: 'Content-Type' }, cwd }),
      /^ConfigError: OPENAI_API_KEY_HEADER cannot be content-type: each call sets that header itself/,
    );
    assert.throws(() => loadConfig({ env: { OPENAI_API_KEY_HEADER: 'api key' }, cwd }), /^ConfigError: OPENAI_API_KEY_HEADER /);
  });
});

test('UPSTREAM_HEADERS: Name=value pairs, %-decoded, names lowercase; what a header cannot carry, a header a call sets itself, the key header or a name twice stops the start, the value never echoed; long values are redacted from logs', () => {
  withDir((cwd) => {
    const headersOf = (env: Record<string, string>) => loadConfig({ env, cwd }).upstream.extraHeaders;
    assert.deepEqual(headersOf({}), {});
    assert.deepEqual(headersOf({ UPSTREAM_HEADERS: 'OpenAI-Project=proj_abc, Helicone-Auth=Bearer%20sk-helicone-hunter2,X-Title=a%2Cb=c' }), {
      'openai-project': 'proj_abc',
      'helicone-auth': 'Bearer sk-helicone-hunter2',
      'x-title': 'a,b=c',
    });
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ UPSTREAM_HEADERS: 'no-equals-hunter2' }, /^UPSTREAM_HEADERS must be Name=value pairs/],
      [{ UPSTREAM_HEADERS: 'bad name=hunter2' }, /^UPSTREAM_HEADERS must be Name=value pairs/],
      [{ UPSTREAM_HEADERS: 'X-A=%zzhunter2' }, /^UPSTREAM_HEADERS: the value of x-a holds a % that does not start a %-escape/],
      [{ UPSTREAM_HEADERS: 'X-A=hunter2%0A' }, /^UPSTREAM_HEADERS: the value of x-a is empty or holds what a header cannot carry/],
      [{ UPSTREAM_HEADERS: 'X-A=' }, /the value of x-a is empty/],
      [{ UPSTREAM_HEADERS: 'Content-Type=text/hunter2' }, /^UPSTREAM_HEADERS cannot set content-type: each call sets it itself$/],
      [{ UPSTREAM_HEADERS: 'Authorization=Bearer hunter2' }, /^UPSTREAM_HEADERS cannot set authorization: each call sets it itself \(it carries OPENAI_API_KEY\)$/],
      [{ UPSTREAM_HEADERS: 'api-key=hunter2', OPENAI_API_KEY_HEADER: 'api-key' }, /cannot set api-key/],
      [{ UPSTREAM_HEADERS: 'X-A=1,x-a=hunter2' }, /^UPSTREAM_HEADERS names x-a twice$/],
    ];
    for (const [env, message] of cases) {
      assert.throws(
        () => loadConfig({ env, cwd }),
        (e: Error) => e instanceof ConfigError && message.test(e.message) && !e.message.includes('hunter2'),
        JSON.stringify(env),
      );
    }
    // With the key header set elsewhere, Authorization is the gateway's to use.
    assert.deepEqual(headersOf({ UPSTREAM_HEADERS: 'Authorization=Bearer gw-token-123', OPENAI_API_KEY_HEADER: 'api-key' }), { authorization: 'Bearer gw-token-123' });
    const secrets = secretValues(loadConfig({ env: { UPSTREAM_HEADERS: 'OpenAI-Project=proj_1,Helicone-Auth=Bearer sk-helicone-123' }, cwd }));
    assert.ok(secrets.includes('Bearer sk-helicone-123') && secrets.includes('sk-helicone-123'), 'a long value, with and without Bearer');
    assert.ok(!secrets.includes('proj_1'), 'a short value would blot out ordinary words');
  });
});

test('UPSTREAM_CA_FILE: its certificates are read at start; a file that cannot be read, or holds none or a broken one, stops the start naming it', () => {
  withDir((cwd) => {
    const ca = readFileSync(new URL('../../../test/e2e/fixtures/tls/ca.pem', import.meta.url), 'utf8');
    writeFileSync(join(cwd, 'two.pem'), `# a bundle\n${ca}\n${ca}`);
    const loaded = loadConfig({ env: { UPSTREAM_CA_FILE: 'two.pem' }, cwd }).upstream.caCertificates;
    assert.deepEqual(loaded, [ca.trim(), ca.trim()]);
    assert.deepEqual(loadConfig({ env: {}, cwd }).upstream.caCertificates, []);
    const fails = (file: string, message: RegExp) =>
      assert.throws(
        () => loadConfig({ env: { UPSTREAM_CA_FILE: file }, cwd }),
        (err: Error) => err instanceof ConfigError && message.test(err.message) && !err.message.includes('\n'),
      );
    fails('missing.pem', /^UPSTREAM_CA_FILE cannot be read \(.*missing\.pem\): ENOENT$/);
    writeFileSync(join(cwd, 'key.pem'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
    fails('key.pem', /^UPSTREAM_CA_FILE holds no PEM certificate/);
    writeFileSync(join(cwd, 'broken.pem'), `${ca}\n-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n`);
    fails('broken.pem', /^UPSTREAM_CA_FILE: certificate 2 of 2 cannot be read/);
  });
});

test('keyGoesInClear: http to a host that is not this machine; https, and http to loopback, are not', () => {
  for (const url of ['http://10.0.0.5:8000/v1', 'http://api.openai.com/v1', 'http://[fd00::1]/v1', 'http://127.example.com/v1']) assert.equal(keyGoesInClear(url), true, url);
  for (const url of ['https://10.0.0.5/v1', 'http://127.0.0.1:8000/v1', 'http://127.1.2.3/v1', 'http://localhost:11434/v1', 'http://vllm.localhost/v1', 'http://[::1]:8000/v1'])
    assert.equal(keyGoesInClear(url), false, url);
});

test("TRUST_PROXY: what Express's trust proxy takes is kept; an entry it would refuse stops the start naming the setting and the entry, where Express threw as the app was built", () => {
  withDir((cwd) => {
    const trust = (TRUST_PROXY: string) => loadConfig({ env: { TRUST_PROXY }, cwd }).http.trustProxy;
    assert.equal(trust('false'), false);
    assert.equal(trust('true'), true);
    assert.equal(trust('2'), 2);
    for (const kept of ['loopback', 'loopback, 10.0.0.5', '10.0.0.0/8,uniquelocal', 'linklocal', '::1', 'fd00::/8', '10.0.0.0/255.0.0.0']) assert.equal(trust(kept), kept);
    for (const [value, entry] of [
      ['maybe', 'maybe'],
      ['loopback, Loopback', 'Loopback'],
      ['10.0.0.0/33', '10.0.0.0/33'],
      ['loopback,,10.0.0.5', ''],
      ['::1/129', '::1/129'],
    ] as const) {
      assert.throws(
        () => trust(value),
        (e: Error) => e instanceof ConfigError && e.message.startsWith(`TRUST_PROXY: ${JSON.stringify(entry)} is not an address or subnet`) && !e.message.includes('\n'),
        value,
      );
    }
  });
});

test('trustProxySpoofable: TRUST_PROXY=true or a hop count while HOST lets clients connect directly; on loopback, or naming the proxy, it is not', () => {
  withDir((cwd) => {
    const said = (TRUST_PROXY: string, HOST: string) => trustProxySpoofable(loadConfig({ env: { TRUST_PROXY, HOST }, cwd }).http);
    assert.equal(
      said('true', '0.0.0.0'),
      'TRUST_PROXY=true believes X-Forwarded-For from any peer, and HOST=0.0.0.0 lets clients connect directly: one that does can name any address for the rate limits to count; name the proxy instead (TRUST_PROXY=loopback, or its address), or listen on 127.0.0.1 behind it',
    );
    assert.match(said('2', '::') ?? '', /^TRUST_PROXY=2 believes X-Forwarded-For from any peer, and HOST=:: /);
    assert.match(said('true', '192.168.1.20') ?? '', /HOST=192\.168\.1\.20 lets clients connect directly/);
    for (const [trust, host] of [
      ['true', '127.0.0.1'],
      ['true', 'localhost'],
      ['1', '::1'],
      ['loopback', '0.0.0.0'],
      ['10.0.0.5', '0.0.0.0'],
      ['false', '0.0.0.0'],
      ['0', '0.0.0.0'],
      ['true', 'api.localhost'],
    ] as const) {
      assert.equal(said(trust, host), null, `${trust} on ${host}`);
    }
  });
});

test('settings files saved by Windows tools are read: .env, the clients file and the key file in UTF-8 with a byte-order mark or in UTF-16; a clients file that is not JSON names the line and column, never its text', () => {
  withDir((cwd) => {
    const bom8 = (text: string) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')]);
    const utf16 = (text: string) => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    const clients = JSON.stringify([{ name: 'win', key: 'w'.repeat(20), secret: 'W'.repeat(40) }], null, 2);
    for (const encode of [bom8, utf16]) {
      // PowerShell 5: `Out-File .env` writes UTF-16, `-Encoding utf8` UTF-8 with a mark.
      writeFileSync(join(cwd, '.env'), encode(`OPENAI_API_KEY_FILE=key.txt\r\nPROXY_CLIENTS_FILE=clients.json\r\n`));
      writeFileSync(join(cwd, 'key.txt'), encode('sk-windows\r\n'));
      writeFileSync(join(cwd, 'clients.json'), encode(clients));
      const c = loadConfig({ env: {}, cwd });
      assert.equal(c.upstream.apiKey, 'sk-windows');
      assert.deepEqual(
        c.clients.map((client) => client.name),
        ['win'],
      );
    }
    writeFileSync(join(cwd, 'clients.json'), `[\n  {"name": "win", "key": "${'w'.repeat(20)}", "secret": "sk-secret-in-file",, }\n]`);
    assert.throws(
      () => loadConfig({ env: {}, cwd }),
      (err: Error) =>
        err instanceof ConfigError &&
        /^PROXY_CLIENTS_FILE is not valid JSON at line 2, column \d+: expected double-quoted property name \(.*clients\.json\)$/.test(err.message) &&
        !err.message.includes('sk-secret'),
    );
  });
});

test('a clients file is refused, in one line naming what to mend, when it leaves no client, names a field no client has, or gives a key that is also a secret', () => {
  withDir((cwd) => {
    const long = 'L'.repeat(40);
    const refused = (clients: unknown, env: Record<string, string> = {}) => {
      writeFileSync(join(cwd, 'clients.json'), JSON.stringify(clients));
      try {
        loadConfig({ env: { PROXY_CLIENTS_FILE: 'clients.json', ...env }, cwd, needs: { clients: true } });
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        assert.ok(!err.message.includes(long) && !err.message.includes(secret), 'no secret in the line');
        return err.message;
      }
      assert.fail(`accepted: ${JSON.stringify(clients)}`);
    };
    // An empty list and no PROXY_KEY: the line named PROXY_CLIENTS_FILE as though it were unset.
    assert.match(refused([]), /^PROXY_CLIENTS_FILE lists no client \(.*clients\.json\), and PROXY_KEY is not set/);
    // A field mistyped: Ajv's "0 must NOT have additional properties" did not say which.
    assert.match(
      refused([{ name: 'a', key, secret, rate_limt: '5/min' }]),
      /^PROXY_CLIENTS_FILE: 0\.rate_limt is not a known field \(a client has name, key, secret, secrets, rate_limit\)/,
    );
    assert.match(refused([{ name: 'a', key, secrets: [] }]), /^PROXY_CLIENTS_FILE: 0\.secrets must have at least 1 item \(/);
    // The key goes in the clear with every request: a secret equal to it signs nothing.
    assert.match(refused([{ name: 'a', key: long, secrets: [secret, long] }]), /^PROXY_CLIENTS_FILE: client "a"'s key is also a secret \(client "a"'s\): /);
    assert.match(
      refused([
        { name: 'a', key, secret: long },
        { name: 'b', key: long, secret },
      ]),
      /^PROXY_CLIENTS_FILE: client "b"'s key is also a secret \(client "a"'s\): /,
    );
    assert.match(refused([{ name: 'a', key, secret }], { PROXY_KEY: long, PROXY_SECRET: long }), /^PROXY_KEY is also PROXY_SECRET: /);
  });
});

test('a reload to a clients file that lists no client is refused (every request would be), unless PROXY_KEY gives one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  try {
    const path = join(dir, 'clients.json');
    writeFileSync(path, '[]');
    const fromFile = [{ name: 'a', key, secrets: [secret] }];
    await assert.rejects(reloadClients(fromFile, path), (err: Error) => err instanceof ConfigError && /^PROXY_CLIENTS_FILE lists no client \(/.test(err.message));
    const withEnv = [{ name: 'default', key: 'd'.repeat(20), secrets: ['D'.repeat(40)] }, ...fromFile];
    assert.deepEqual(
      (await reloadClients(withEnv, path)).map((c) => c.name),
      ['default'],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a name set that no setting has, close to one unset (a misspelling, or the OpenAI SDKs\' name), is a warning at start and named beside "is not set"; other programs\' names are left alone', () => {
  withDir((cwd) => {
    writeFileSync(
      join(cwd, '.env'),
      `OPENAI_APIKEY=sk-typo\nRATE_LIMIT_PER_IPS=5/min\nport=9000\nNODE_EXTRA_CA_CERTS=/etc/proxy-ca.pem\nPORT=8001\n# names an object has by inheritance are no names of Node's or other tools'\ntoString=x\nconstructor=y\nhasOwnProperty=z\n`,
    );
    const env = {
      OPENAI_API_BASE: 'http://10.0.0.5:8000/v1',
      PATH: '/usr/bin',
      HOME: '/root',
      HOSTNAME: 'vm',
      LOGNAME: 'root',
      NODE_ENV: 'production',
      PROXY_BASE_URL: 'http://x',
    };
    assert.throws(
      () => loadConfig({ env, cwd, needs: { upstream: true } }),
      (err: Error) =>
        err instanceof ConfigError &&
        err.message ===
          'OPENAI_API_KEY is not set: put the upstream key in .env (or point OPENAI_API_KEY_FILE at a file holding it) (.env sets OPENAI_APIKEY: was OPENAI_API_KEY meant?)',
    );
    const config = loadConfig({ env: { ...env, OPENAI_API_KEY: 'sk-real' }, cwd });
    assert.deepEqual(config.notes, [
      '.env sets NODE_EXTRA_CA_CERTS, which Node reads only from the environment it starts in, never from .env: name the file in UPSTREAM_CA_FILE instead',
      // OPENAI_APIKEY is not told of: OPENAI_API_KEY is set (here from the environment), and port: PORT is.
      '.env sets RATE_LIMIT_PER_IPS, which is no setting of this program, and RATE_LIMIT_PER_IP is unset: RATE_LIMIT_PER_IPS is ignored (was RATE_LIMIT_PER_IP meant?)',
      'the environment sets OPENAI_API_BASE, which is no setting of this program, and OPENAI_BASE_URL is unset: OPENAI_API_BASE is ignored (was OPENAI_BASE_URL meant?)',
    ]);
    assert.equal(config.http.port, 8001);
    mkdirSync(join(cwd, 'bare'));
    assert.equal(
      loadConfig({ env: { PROX_KEY: 'k'.repeat(20) }, cwd: join(cwd, 'bare') }).notes[0],
      'the environment sets PROX_KEY, which is no setting of this program, and PROXY_KEY is unset: PROX_KEY is ignored (was PROXY_KEY meant?)',
    );
  });
});
