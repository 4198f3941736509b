/**
 * The one-off move between stores: `proxy-worker copy-jobs --from <old SQLite file>` into the store
 * the configuration names (PostgreSQL on that run of the suite, another SQLite file on the other).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { openSqliteStore } from '../../packages/core/src/store/sqlite/sqlite-job-store.ts';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { WORKER_MAIN, enqueueJob, openTestStore, spawnNode, tempDir, testEnv } from '../helpers/index.ts';

test('copy-jobs moves every job once; the copied queue then runs on the new store', async (t) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-copy', OPENAI_BASE_URL: stub.url, PROXY_DB_PATH: join(dir, 'new.sqlite') });
  const oldPath = join(dir, 'old.sqlite');

  // The old store: one job finished with its answer, one held by a worker that is now gone, one queued.
  const old = openSqliteStore({ path: oldPath });
  const doneId = await enqueueJob(old, 'answered long ago');
  const heldId = await enqueueJob(old, 'was running');
  const [done, held] = await old.claimJobs({ workerId: 'old-worker', limit: 2, leaseMs: 600_000 });
  assert.deepEqual([done?.id, held?.id], [doneId, heldId]);
  await old.completeJob(doneId, done!.leaseToken, { outputText: 'the old answer', usage: { total_tokens: 7 }, response: { id: 'chatcmpl-old' } });
  const queuedId = await enqueueJob(old, 'still waiting');
  await old.recordHeartbeat({ id: 'old-worker', host: 'old-host', pid: 4242, startedAt: Date.now(), lastSeenAt: Date.now(), jobsDone: 1, clockOffsetMs: 0 });

  const cli = async (...args: string[]) => cliWith({}, ...args);
  const cliWith = async (extra: Record<string, string>, ...args: string[]) => {
    const { OPENAI_API_KEY: _key, ...adminEnv } = env;
    const child = spawnNode(WORKER_MAIN, args, { ...adminEnv, ...extra }, dir);
    const { code } = await child.exited;
    return { code, out: child.lines.join('\n'), err: child.stderr.join('\n') };
  };

  const target = await openTestStore(env);
  t.after(() => target.close());

  const refused = await cli('copy-jobs', '--from', oldPath);
  assert.equal(refused.code, 1);
  assert.match(refused.err, /1 worker\(s\) still use the source \(old-host pid 4242\): stop them first/);
  assert.equal(await target.getJob(queuedId), null, 'nothing is copied while the old workers live');

  assert.match((await cli('copy-jobs', '--from', join(dir, 'missing.sqlite'))).err, /no SQLite file at .*missing\.sqlite/);
  const badUrl = await cli('copy-jobs', '--from', 'postgres://app:hunter2@db:port/jobs');
  assert.equal(badUrl.code, 78);
  assert.match(badUrl.err, /^proxy-worker: --from is not a PostgreSQL URL/);
  assert.ok(!badUrl.err.includes('hunter2'));

  if (env.DATABASE_URL) {
    // The configured store named otherwise, by libpq's variables as DATABASE_URL may be: still seen
    // as itself (the two URLs' texts had been compared, and it was copied into itself).
    const configured = new URL(env.DATABASE_URL);
    const variables = { PGHOST: configured.hostname, PGPORT: configured.port || '5432', PGUSER: decodeURIComponent(configured.username), PGDATABASE: configured.pathname.slice(1) };
    const itself = await cliWith(variables, 'copy-jobs', '--from', 'postgres://', '--from-schema', env.DATABASE_SCHEMA!);
    assert.equal(itself.code, 1, itself.err);
    assert.match(itself.err, /the source is the configured store itself/);
  }

  await old.removeHeartbeat('old-worker');
  const first = await cli('copy-jobs', '--from', oldPath, '--json');
  assert.equal(first.code, 0, first.err);
  const summary = JSON.parse(first.out);
  assert.deepEqual([summary.copied, summary.skipped, summary.copied_by_status], [3, 0, { completed: 1, in_progress: 1, queued: 1 }]);
  assert.match(summary.from, /^sqlite .*old\.sqlite$/);

  const again = await cli('copy-jobs', '--from', oldPath);
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /copied 0 jobs .*; 3 already there/);

  assert.deepEqual(await target.getJob(doneId), await old.getJob(doneId), 'a finished job comes across unchanged');
  await old.close();

  // The new store's worker runs what was waiting, and what the gone worker held, at once.
  const once = spawnNode(WORKER_MAIN, ['once'], env, dir);
  assert.equal((await once.exited).code, 0, once.stderr.join('\n'));
  const [queued, wasHeld] = await Promise.all([target.getJob(queuedId), target.getJob(heldId)]);
  assert.deepEqual([queued?.status, queued?.outputText, queued?.attempts], ['completed', 'echo: still waiting', 1]);
  assert.deepEqual([wasHeld?.status, wasHeld?.outputText, wasHeld?.attempts], ['completed', 'echo: was running', 2], 'the lost attempt counts');
  assert.equal(stub.calls.length, 2, 'the finished job is not run again');
});
