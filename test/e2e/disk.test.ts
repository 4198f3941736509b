import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import {
  API_MAIN,
  WORKER_MAIN,
  completedJob,
  eventually,
  fillDisk,
  getJson,
  newCredentials,
  onlyOn,
  postSigned,
  smallDisk,
  spawnNode,
  startApiProcess,
  startOutageStub,
  startWorkerDaemon,
  tempDir,
  testEnv,
} from '../helpers/index.ts';

test('a full disk under the SQLite file: creates that cannot be stored get 503 unavailable, every 202 is kept, lookups go on, an answer that came back meanwhile is written once space is freed; both programs keep running and the file stays whole', async (t) => {
  if (!onlyOn('sqlite', t, 'fills the disk under the SQLite file')) return;
  const mnt = smallDisk(t, '4m');
  if (!mnt) return;
  const dir = tempDir(t);
  const { stub, answered } = await startOutageStub(t);
  const { key, secret } = newCredentials();
  const dbPath = join(mnt, 'requests.sqlite');
  const env = testEnv(dir, {
    PROXY_KEY: key,
    PROXY_SECRET: secret,
    OPENAI_API_KEY: 'sk-full',
    OPENAI_BASE_URL: stub.url,
    PROXY_DB_PATH: dbPath,
    RATE_LIMIT_PER_IP: '100000/min',
    RATE_LIMIT_PER_KEY: '100000/min',
  });
  const api = await startApiProcess(t, env, dir);
  const worker = startWorkerDaemon(t, env, dir);
  const completed = (id: string) => completedJob(api.url, key, id, 30_000);
  const before = await postSigned(api.url, key, secret, { prompt: 'before' });
  assert.equal(before.status, 202);
  assert.equal((await completed(before.json.id)).output_text, 'echo: before');

  const during = await postSigned(api.url, key, secret, { prompt: 'during' });
  assert.equal(during.status, 202);
  await eventually(async () => stub.calls.some((c) => c.prompt === 'during'));
  const filler = fillDisk(mnt);

  // Creates go on while the WAL has room it already took, then are refused, none with a 500.
  const accepted: string[] = [];
  let refused: Awaited<ReturnType<typeof postSigned>> | undefined;
  for (let i = 0; i < 2000 && !refused; i++) {
    const res = await postSigned(api.url, key, secret, { prompt: `full-${i}`, system: 'x'.repeat(2000) });
    if (res.status === 202) accepted.push(res.json.id);
    else refused = res;
  }
  assert.ok(refused, 'a create was refused once the disk was full');
  assert.equal(refused.status, 503, JSON.stringify(refused.json));
  assert.equal(refused.json.error.code, 'unavailable');
  assert.ok(refused.headers.get('retry-after'));
  assert.equal((await getJson(api.url, `/v1/requests/${before.json.id}`, key)).json.status, 'completed', 'a lookup still answers');
  // /health answers 503 meanwhile, though its ping reads: it said ok while no create could be stored.
  assert.equal((await getJson(api.url, '/health')).status, 503);
  // The outage is told once, not once a request; each 503 has its access line. Lines reach stdout
  // once per event-loop turn, after the answer may have: they are waited for.
  for (let i = 0; i < 20; i++) assert.equal((await postSigned(api.url, key, secret, { prompt: `refused-${i}` })).status, 503);
  await eventually(async () => api.child.lines.filter((l) => l.includes('"status":503')).length >= 21);
  const told = api.child.lines.filter((l) => l.includes('requests get 503 unavailable'));
  assert.equal(told.length, 1, told.join('\n'));
  assert.match(told[0] as string, /database or disk is full/);
  await eventually(async () => answered() === 1, 10_000);
  await worker.waitFor((l) => l.includes('holding it and trying again') && l.includes(during.json.id));

  rmSync(filler);
  assert.equal((await completed(during.json.id)).output_text, 'echo: during');
  assert.equal(stub.calls.filter((c) => c.prompt === 'during').length, 1, 'the answer held through the full disk was not asked for again');
  for (const id of accepted) assert.match((await completed(id)).output_text, /^echo: full-\d+$/);
  const after = await postSigned(api.url, key, secret, { prompt: 'after' });
  assert.equal(after.status, 202);
  assert.equal((await getJson(api.url, '/health')).status, 200, 'a create stored: the database takes writes again');
  assert.equal((await completed(after.json.id)).output_text, 'echo: after');
  assert.equal(api.child.proc.exitCode, null, 'proxy-api is still running');
  assert.equal(worker.proc.exitCode, null, 'proxy-worker is still running');
  const db = new Database(dbPath, { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
  // The refused create left nothing behind: the jobs are those that got a 202.
  assert.equal((db.prepare('SELECT count(*) AS n FROM jobs').get() as { n: number }).n, 3 + accepted.length);
});

test('a full disk at start: one line says the disk is full, not only that SQLite had an I/O error', async (t) => {
  if (!onlyOn('sqlite', t, 'fills the disk under the SQLite file')) return;
  const mnt = smallDisk(t, '1m');
  if (!mnt) return;
  const dir = tempDir(t);
  const env = testEnv(dir, { PROXY_KEY: 'k'.repeat(20), PROXY_SECRET: 's'.repeat(40), PROXY_DB_PATH: join(mnt, 'requests.sqlite') });
  const made = spawnNode(API_MAIN, [], env, dir);
  await made.waitFor((l) => l.includes('proxy-api listening'));
  made.kill('SIGTERM');
  assert.equal((await made.exited).code, 0);
  fillDisk(mnt);

  const api = spawnNode(API_MAIN, [], env, dir);
  assert.equal((await api.exited).code, 1);
  assert.deepEqual(api.stderr.filter(Boolean), [`proxy-api: PROXY_DB_PATH: cannot open sqlite ${env.PROXY_DB_PATH}: disk I/O error (the disk holding it is full)`]);
});

test('a read-only mount under the SQLite file: one line at start says so, instead of a program that fails every write', async (t) => {
  if (!onlyOn('sqlite', t, 'mounts the disk under the SQLite file read-only')) return;
  const mnt = smallDisk(t, '1m');
  if (!mnt) return;
  const dir = tempDir(t);
  const env = testEnv(dir, { PROXY_KEY: 'k'.repeat(20), PROXY_SECRET: 's'.repeat(40), OPENAI_API_KEY: 'sk-ro', PROXY_DB_PATH: join(mnt, 'requests.sqlite') });
  const made = spawnNode(WORKER_MAIN, ['stats'], env, dir);
  assert.equal((await made.exited).code, 0, made.stderr.join('\n'));
  execFileSync('mount', ['-o', 'remount,ro', mnt], { stdio: 'pipe' });

  for (const [main, args, program] of [
    [API_MAIN, [], 'proxy-api'],
    [WORKER_MAIN, ['daemon'], 'proxy-worker'],
  ] as const) {
    const child = spawnNode(main, [...args], env, dir);
    assert.equal((await child.exited).code, 1);
    assert.deepEqual(child.stderr.filter(Boolean), [`${program}: PROXY_DB_PATH: cannot open sqlite ${env.PROXY_DB_PATH}: ${env.PROXY_DB_PATH} is on a read-only file system`]);
  }
});
