import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  API_MAIN,
  WORKER_MAIN,
  eventually,
  getJson,
  newCredentials,
  onlyOn,
  openTestStore,
  postSigned,
  spawnNode,
  startApiProcess,
  streamCreates,
  tempDir,
  testEnv,
  within,
  type TestHooks,
} from '../helpers/index.ts';

type T = TestHooks & { diagnostic: (msg: string) => void };

// A 202 promises the job is stored: it goes out only after the commit (and, with sync=full, the
// flush) that holds the job. Killing the API with creates in flight must not lose one that was
// answered. (A process kill leaves the operating system's cache intact, so this checks the order of
// commit and answer; what a power cut would take is the flush's part, tested in sqlite-store.test.ts.)
test('kill -9 the API while creates stream in: every create that got its 202 is stored with its prompt', async (t: T) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, RATE_LIMIT_PER_IP: 'off', RATE_LIMIT_PER_KEY: 'off' });
  const { url, child } = await startApiProcess(t, env, dir);
  const creates = streamCreates(url, key, secret, 16, (sender, i) => `crash ${sender}-${i}`);
  const { accepted } = creates;
  await eventually(async () => accepted.size >= 300, 30_000, 5);
  child.kill('SIGKILL');
  await creates.stop();
  assert.equal((await child.exited).signal, 'SIGKILL');
  const failed = [...creates.ends.values()].reduce((a, b) => a + b, 0);

  const store = await openTestStore(env);
  t.after(() => store.close());
  for (const [id, prompt] of accepted) {
    const job = await store.getJob(id);
    assert.ok(job, `${id} was answered 202 but is not stored`);
    assert.equal(job.status, 'queued');
    assert.equal((job.request.messages.at(-1) as { content?: unknown } | undefined)?.content, prompt);
  }
  const stored = (await store.countByStatus()).queued;
  assert.ok(stored >= accepted.size, `${stored} stored, ${accepted.size} answered`);
  t.diagnostic(`${accepted.size} creates answered 202 before the kill, ${failed} cut off, ${stored} stored`);
});

// Clients that send request after request on keep-alive connections (nginx's upstream keepalive, an
// agent under load) never leave one idle, and a server closing waits for every connection to end.
test('the first SIGTERM while creates stream in on keep-alive connections: the API exits 0 within seconds, its connections closed as each answer ends, and every 202 is stored', async (t: T) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, RATE_LIMIT_PER_IP: 'off', RATE_LIMIT_PER_KEY: 'off' });
  const { url, child } = await startApiProcess(t, env, dir);
  const creates = streamCreates(url, key, secret, 4);
  const { accepted } = creates;
  await eventually(async () => accepted.size >= 200, 30_000, 5);
  const at = accepted.size;
  child.kill('SIGTERM');
  const exit = await within(child.exited, 5000, 'proxy-api draining while clients keep sending').finally(() => creates.stop());
  assert.equal(exit.code, 0);
  assert.ok(child.lines.some((line) => line.includes('proxy-api stopped')));
  assert.ok(creates.closing > 0, 'answers given while draining end their connections');

  const store = await openTestStore(env);
  t.after(() => store.close());
  const missing: string[] = [];
  for (const id of accepted.keys()) if (!(await store.getJob(id))) missing.push(id);
  assert.deepEqual(missing, [], 'every 202 is stored');
  t.diagnostic(
    `${at} creates answered 202 before the SIGTERM, ${accepted.size} in all; ${creates.closing} answers ended their connection; the senders' last requests: ${[...creates.ends].map(([code, n]) => `${n} ${code}`).join(', ')}`,
  );
});

// SQLite replays whatever log lies beside the file it opens: after a kill, a backup put in place of
// the file got the killed program's log (README, "The file moved or replaced under running programs").
test('kill -9 the API, then a backup moved into place: the next start refuses the log left beside it in one line; the advice followed, each file keeps its own jobs', async (t: T & {
  skip: (why: string) => void;
}) => {
  if (!onlyOn('sqlite', t, 'replaces the SQLite file')) return;
  if (process.platform !== 'linux') return t.skip('the check reads /proc/locks, which only Linux has');
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret });
  const path = env.PROXY_DB_PATH as string;
  const first = await startApiProcess(t, env, dir);
  const kept = await postSigned(first.url, key, secret, { prompt: 'before the backup' });
  const backup = spawnNode(WORKER_MAIN, ['backup', join(dir, 'nightly.sqlite')], env, dir);
  assert.equal((await backup.exited).code, 0, backup.stderr.join('\n'));
  const after = await postSigned(first.url, key, secret, { prompt: 'after the backup' });
  assert.deepEqual([kept.status, after.status], [202, 202]);
  first.child.kill('SIGKILL');
  await first.child.exited;

  renameSync(path, join(dir, 'crashed.sqlite'));
  renameSync(join(dir, 'nightly.sqlite'), path);
  for (const [main, args, program] of [
    [API_MAIN, [], 'proxy-api'],
    [WORKER_MAIN, ['stats'], 'proxy-worker'],
  ] as const) {
    const refused = spawnNode(main, [...args], env, dir);
    t.after(() => refused.kill('SIGKILL'));
    assert.equal((await within(refused.exited, 15_000, `${program} refusing to start`)).code, 1);
    assert.deepEqual(refused.stderr.filter(Boolean), [
      `${program}: PROXY_DB_PATH: cannot open sqlite ${path}: ${path}-wal holds writes made to another database file, the one at this path when its programs last ran (stopped without closing it: killed, or the machine went down), since replaced by the file there now; SQLite would replay them into it. To open the file there now, move ${path}-wal and ${path}-shm beside the database they belong to under its name (or delete them, and those writes with them); to keep those writes, put that database back at this path`,
    ]);
  }

  renameSync(`${path}-wal`, join(dir, 'crashed.sqlite-wal'));
  renameSync(`${path}-shm`, join(dir, 'crashed.sqlite-shm'));
  const second = await startApiProcess(t, env, dir);
  assert.equal((await getJson(second.url, `/v1/requests/${kept.json.id}`, key)).status, 200, 'the backup, as it was');
  assert.equal((await getJson(second.url, `/v1/requests/${after.json.id}`, key)).status, 404, 'made after the backup');
  const crashed = await openTestStore({ ...env, PROXY_DB_PATH: join(dir, 'crashed.sqlite') });
  t.after(() => crashed.close());
  assert.ok(await crashed.getJob(after.json.id as string), 'the killed file holds its last create, from its log');
});
