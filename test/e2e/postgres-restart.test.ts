import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../../scripts/bench/processes.ts';
import {
  completedJob,
  eventually,
  getJson,
  newCredentials,
  onlyOn,
  postSigned,
  startApiProcess,
  startOutageStub,
  startWorkerDaemon,
  tempDir,
  testEnv,
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

async function startPrivatePostgres(t: TestHooks) {
  const bin = join(PG_VERSIONS, readdirSync(PG_VERSIONS).sort().at(-1) as string, 'bin');
  const dir = mkdtempSync(join(tmpdir(), 'proxy-pg-'));
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  chownSync(dir, uid, gid);
  const data = join(dir, 'data');
  const asPostgres = (tool: string, args: string[]) => execFileSync('runuser', ['-u', 'postgres', '--', join(bin, tool), ...args], { stdio: 'pipe' });
  asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '--no-instructions']);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
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
  return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, start, stop };
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
