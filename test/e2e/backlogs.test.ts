/**
 * Large backlogs, worked through by the real programs while something else needs the database:
 * a purge of many finished jobs, a worker coming back to many overdue ones, a requeue of a day of
 * failures. Every create the API
 * takes needs SQLite's write lock, and waits as long as another process holds it (503 after 5 s),
 * so these tests take that lock from here every millisecond, as a create would, and measure the
 * longest stretch they could not. In one statement each pass held it for seconds: with these
 * 200,000 rows, 0.9 s to purge and 2.4 s to expire (300,000: 1.4 and 3.1 s), where the batches
 * held it 49 and 14 ms at most; requeueing 100,000 failed jobs held it 2.8 s (25 ms in batches).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { WORKER_MAIN, enqueueJob, eventually, onlyOn, openTestStore, spawnNode, startWorkerDaemon, tempDir, testEnv } from '../helpers/index.ts';

const BACKLOG = 200_000;
/** Far above a batch's 10 ms aim, far below what one statement took. */
const LONGEST_HOLD_MS = 250;

/** Writes `count` jobs straight into the file (in SQL: far faster than row by row from here), as an idle worker or years of traffic would have left them. */
function fill(path: string, count: number, status: 'completed' | 'failed' | 'queued', at: number) {
  const db = new Database(path);
  try {
    db.pragma('synchronous = OFF');
    const done = status === 'queued' ? null : 1;
    db.prepare(
      `
      WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < @count - 1)
      INSERT INTO jobs (id, client, nonce, request_hash, status, model, attempts, max_attempts,
                        run_after, expires_at, created_at, started_at, finished_at, updated_at, output_text)
      SELECT printf('req_%022d', i), 'default', printf('backlog-%d', i), 'h', @status, 'm', COALESCE(@done, 0), 5,
             @at + i, @at + i + 3600000, @at + i, @done * (@at + i), @done * (@at + i), @at + i, @output
        FROM n`,
    ).run({ count, status, done, at, output: status === 'completed' ? 'an answer of about a kilobyte '.repeat(35) : null });
    // Each job's request beside it, as the store writes it (migration 0011).
    db.prepare('INSERT INTO job_requests (job, request) SELECT seq, @request FROM jobs WHERE seq > (SELECT COALESCE(MAX(job), 0) FROM job_requests)').run({
      request: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'a prompt of a few hundred bytes '.repeat(12) }] }),
    });
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}

/** Takes and gives back the write lock every millisecond, never waiting for it; `stop` says the longest it went without. */
function probeWriteLock(path: string) {
  const db = new Database(path);
  db.pragma('busy_timeout = 0');
  let lastTaken = performance.now();
  let longest = 0;
  let taken = 0;
  const probe = () => {
    try {
      db.exec('BEGIN IMMEDIATE');
      db.exec('ROLLBACK');
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err;
      return;
    }
    const at = performance.now();
    longest = Math.max(longest, at - lastTaken);
    lastTaken = at;
    taken += 1;
  };
  const timer = setInterval(probe, 1);
  return {
    stop() {
      clearInterval(timer);
      probe();
      db.close();
      return { longestMs: Math.round(longest), taken };
    },
  };
}

test(`purge of ${BACKLOG.toLocaleString('en')} finished jobs: never holds the write lock long, keeps what is newer`, { timeout: 120_000 }, async (t) => {
  if (!onlyOn('sqlite', t, "measures SQLite's write lock; on PostgreSQL creates do not wait for a purge")) return;
  const dir = tempDir(t);
  const env = testEnv(dir);
  const store = await openTestStore(env);
  const recent = await enqueueJob(store, 'still queued');
  await store.close();
  fill(env.PROXY_DB_PATH as string, BACKLOG, 'completed', Date.now() - 86_400_000);

  const probe = probeWriteLock(env.PROXY_DB_PATH as string);
  const purge = spawnNode(WORKER_MAIN, ['purge', '--older-than', '1h'], env, dir);
  const { code } = await purge.exited;
  const { longestMs, taken } = probe.stop();
  assert.equal(code, 0, purge.stderr.join('\n'));
  assert.equal(purge.lines.join('\n'), `deleted ${BACKLOG} finished jobs older than 1h`);
  t.diagnostic(`write lock: longest held ${longestMs} ms, taken ${taken} times by the probe during the purge`);
  assert.ok(longestMs < LONGEST_HOLD_MS, `the write lock was out of reach for ${longestMs} ms`);
  assert.ok(taken > 50, 'the probe got the lock between batches');

  const after = await openTestStore(env);
  t.after(() => after.close());
  assert.deepEqual(await after.countByStatus(), { queued: 1, in_progress: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 });
  assert.equal((await after.getJob(recent))?.status, 'queued');
});

test(`a worker back to ${BACKLOG.toLocaleString('en')} overdue jobs: expires them in short claims, then runs the new one`, { timeout: 120_000 }, async (t) => {
  if (!onlyOn('sqlite', t, "measures SQLite's write lock; PostgreSQL's claims skip rows another holds")) return;
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-test-backlog', OPENAI_BASE_URL: stub.url });
  await (await openTestStore(env)).close();
  // Queued two hours ago with an hour to live: the worker was away.
  fill(env.PROXY_DB_PATH as string, BACKLOG, 'queued', Date.now() - 7_200_000);

  const probe = probeWriteLock(env.PROXY_DB_PATH as string);
  startWorkerDaemon(t, env, dir);
  const store = await openTestStore(env);
  t.after(() => store.close());
  await eventually(async () => (await store.countByStatus()).expired === BACKLOG, 90_000, 100);
  const { longestMs, taken } = probe.stop();
  t.diagnostic(`write lock: longest held ${longestMs} ms, taken ${taken} times by the probe while the worker expired the backlog`);
  assert.ok(longestMs < LONGEST_HOLD_MS, `the write lock was out of reach for ${longestMs} ms`);
  assert.equal(stub.calls.length, 0, 'no overdue job was called');

  const fresh = await enqueueJob(store, 'after the backlog');
  await eventually(async () => (await store.getJob(fresh))?.status === 'completed', 10_000);
  assert.deepEqual(await store.countByStatus(), { queued: 0, in_progress: 0, completed: 1, failed: 0, cancelled: 0, expired: BACKLOG });
});

test('retry --all-failed of 100,000 failed jobs (a day of a bad key): never holds the write lock long, requeues them all', { timeout: 120_000 }, async (t) => {
  if (!onlyOn('sqlite', t, "measures SQLite's write lock; on PostgreSQL creates do not wait for a requeue")) return;
  const dir = tempDir(t);
  const env = testEnv(dir);
  await (await openTestStore(env)).close();
  fill(env.PROXY_DB_PATH as string, 100_000, 'failed', Date.now() - 86_400_000);

  const probe = probeWriteLock(env.PROXY_DB_PATH as string);
  const retry = spawnNode(WORKER_MAIN, ['retry', '--all-failed'], env, dir);
  const { code } = await retry.exited;
  const { longestMs, taken } = probe.stop();
  assert.equal(code, 0, retry.stderr.join('\n'));
  t.diagnostic(`write lock: longest held ${longestMs} ms, taken ${taken} times by the probe during the requeue`);
  assert.ok(longestMs < LONGEST_HOLD_MS, `the write lock was out of reach for ${longestMs} ms`);
  // A terminal line names twenty of them, not a hundred thousand.
  assert.match(retry.lines.join('\n'), /^requeued 100000 jobs: (req_\w+ ){20}and 99980 more \(--json lists them all\)$/);

  const store = await openTestStore(env);
  t.after(() => store.close());
  assert.deepEqual(await store.countByStatus(), { queued: 100_000, in_progress: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 });
});
