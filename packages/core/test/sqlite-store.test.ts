import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../src/store/sqlite/sqlite-job-store.ts';
import type { NewJob } from '../src/store/types.ts';
import { newJobId } from '../src/ids.ts';
import { tempDir } from '../../../test/helpers/index.ts';

function job(overrides: Partial<NewJob> = {}): NewJob {
  return {
    id: newJobId(),
    client: 'default',
    nonce: `nonce-${Math.random().toString(36).slice(2)}`,
    requestHash: 'h1',
    model: 'm',
    request: { model: 'm', messages: [{ role: 'user', content: 'hi' }] },
    maxAttempts: 3,
    expiresAt: Date.now() + 3_600_000,
    ...overrides,
  };
}

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

test('create, then the same nonce returns the same job instead of a second one', async (t) => {
  const dir = tempDir(t);
  const store = openSqliteStore({ path: `${dir}/db.sqlite`, now: clock().now });
  t.after(() => store.close());
  const first = await store.createJob(job({ nonce: 'same-nonce' }));
  assert.equal(first.created, true);
  assert.equal(first.job.status, 'queued');
  const again = await store.createJob(job({ nonce: 'same-nonce', requestHash: 'other' }));
  assert.equal(again.created, false);
  assert.equal(again.job.id, first.job.id);
  assert.equal(again.job.requestHash, 'h1');
  assert.deepEqual(await store.countByStatus(), { queued: 1, in_progress: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 });
});

test('two connections claiming in turn never take the same job (cross-process: see test/e2e)', async (t) => {
  const dir = tempDir(t);
  const a = openSqliteStore({ path: `${dir}/db.sqlite` });
  const b = openSqliteStore({ path: `${dir}/db.sqlite` });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  for (let i = 0; i < 200; i++) await a.createJob(job());
  const seen = new Set<string>();
  let total = 0;
  for (;;) {
    const [x, y] = await Promise.all([
      a.claimJobs({ workerId: 'a', limit: 7, leaseMs: 60_000 }),
      b.claimJobs({ workerId: 'b', limit: 7, leaseMs: 60_000 }),
    ]);
    if (x.length + y.length === 0) break;
    for (const j of [...x, ...y]) {
      assert.ok(!seen.has(j.id), `job ${j.id} claimed twice`);
      seen.add(j.id);
      total += 1;
    }
  }
  assert.equal(total, 200);
});

test('fencing: after a lease lapses and another worker claims, the old token can no longer write', async (t) => {
  const dir = tempDir(t);
  const c = clock();
  const store = openSqliteStore({ path: `${dir}/db.sqlite`, now: c.now });
  t.after(() => store.close());
  const { job: created } = await store.createJob(job());
  const [first] = await store.claimJobs({ workerId: 'w1', limit: 1, leaseMs: 1000 });
  assert.ok(first);
  assert.equal(first.attempts, 1);
  assert.deepEqual(await store.claimJobs({ workerId: 'w2', limit: 1, leaseMs: 1000 }), [], 'held lease is not claimable');
  c.advance(1001);
  const [second] = await store.claimJobs({ workerId: 'w2', limit: 1, leaseMs: 1000 });
  assert.ok(second);
  assert.equal(second.id, created.id);
  assert.equal(second.attempts, 2);
  assert.ok(second.leaseToken > first.leaseToken);
  assert.equal(await store.renewLease(first.id, first.leaseToken, 1000), 'lost');
  assert.equal(await store.completeJob(first.id, first.leaseToken, { outputText: 'stale', usage: null, response: {} }), false);
  assert.equal(await store.finishJob(first.id, first.leaseToken, 'failed', { code: 'x', message: 'x' }), false);
  assert.equal(await store.completeJob(second.id, second.leaseToken, { outputText: 'fresh', usage: { total_tokens: 3 }, response: { ok: 1 } }), true);
  const done = await store.getJob(created.id);
  assert.equal(done?.status, 'completed');
  assert.equal(done?.outputText, 'fresh');
  assert.deepEqual(done?.usage, { total_tokens: 3 });
});

test('retry waits in the database; release hands the attempt back', async (t) => {
  const dir = tempDir(t);
  const c = clock();
  const store = openSqliteStore({ path: `${dir}/db.sqlite`, now: c.now });
  t.after(() => store.close());
  await store.createJob(job());
  const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 1000 });
  assert.ok(held);
  assert.equal(await store.retryJob(held.id, held.leaseToken, c.now() + 5000, { code: 'upstream_500', message: 'boom', upstreamStatus: 500 }), true);
  assert.equal(await store.nextWakeAt(), c.now() + 5000);
  assert.deepEqual(await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 1000 }), []);
  c.advance(5000);
  const [again] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 1000 });
  assert.equal(again?.attempts, 2);
  assert.ok(again);
  assert.equal(await store.releaseJob(again.id, again.leaseToken, c.now()), true);
  assert.equal((await store.getJob(again.id))?.attempts, 1);
});

test('a lapsed lease with no attempts left fails the job instead of running it again', async (t) => {
  const dir = tempDir(t);
  const c = clock();
  const store = openSqliteStore({ path: `${dir}/db.sqlite`, now: c.now });
  t.after(() => store.close());
  const { job: created } = await store.createJob(job({ maxAttempts: 1 }));
  await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 1000 });
  c.advance(2000);
  assert.deepEqual(await store.claimJobs({ workerId: 'w2', limit: 1, leaseMs: 1000 }), []);
  const after = await store.getJob(created.id);
  assert.equal(after?.status, 'failed');
  assert.equal(after?.error?.code, 'worker_lost');
});

test('queued jobs past their deadline expire, and are never claimed', async (t) => {
  const dir = tempDir(t);
  const c = clock();
  const store = openSqliteStore({ path: `${dir}/db.sqlite`, now: c.now });
  t.after(() => store.close());
  const { job: created } = await store.createJob(job({ expiresAt: c.now() + 1000 }));
  c.advance(1000);
  assert.deepEqual(await store.claimJobs({ workerId: 'w', limit: 5, leaseMs: 1000 }), []);
  assert.equal((await store.getJob(created.id))?.status, 'expired');
});

test('cancel: a queued job at once, a running one through its lease renewal; only the owner may', async (t) => {
  const dir = tempDir(t);
  const store = openSqliteStore({ path: `${dir}/db.sqlite` });
  t.after(() => store.close());
  const { job: queued } = await store.createJob(job());
  assert.equal(await store.cancelJob(queued.id, 'someone-else'), null);
  assert.equal((await store.cancelJob(queued.id, 'default'))?.status, 'cancelled');
  const { job: running } = await store.createJob(job());
  const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 10_000 });
  assert.equal(held?.id, running.id);
  assert.equal((await store.cancelJob(running.id, 'default'))?.status, 'in_progress');
  assert.equal(await store.renewLease(running.id, held.leaseToken, 10_000), 'cancel_requested');
});

test('retention deletes only finished jobs older than the cut-off', async (t) => {
  const dir = tempDir(t);
  const c = clock();
  const store = openSqliteStore({ path: `${dir}/db.sqlite`, now: c.now });
  t.after(() => store.close());
  const { job: old } = await store.createJob(job());
  const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 1000 });
  assert.ok(held);
  await store.completeJob(held.id, held.leaseToken, { outputText: 'x', usage: null, response: {} });
  c.advance(10_000);
  const { job: pending } = await store.createJob(job());
  assert.equal(await store.deleteFinishedBefore(c.now() - 5000), 1);
  assert.equal(await store.getJob(old.id), null);
  assert.ok(await store.getJob(pending.id));
});

test('the claim, lookup and expiry queries use their indexes, not a table scan', async (t) => {
  const dir = tempDir(t);
  const store = openSqliteStore({ path: `${dir}/db.sqlite` });
  await store.close();
  const db = new Database(`${dir}/db.sqlite`, { readonly: true });
  t.after(() => db.close());
  const plan = (sql: string) => db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all({ now: 1, limit: 1, id: 'x', client: 'c', nonce: 'n' }).map((r: any) => r.detail).join(' | ');
  assert.match(plan("SELECT id FROM jobs WHERE status = 'queued' AND run_after <= @now ORDER BY run_after LIMIT @limit"), /USING INDEX jobs_queued_due/);
  assert.match(plan("SELECT * FROM jobs WHERE status = 'in_progress' AND lease_until <= @now ORDER BY lease_until LIMIT @limit"), /USING INDEX jobs_running_lease/);
  assert.match(plan("UPDATE jobs SET status = 'expired' WHERE status = 'queued' AND expires_at <= @now"), /USING INDEX jobs_queued_expiry/);
  assert.match(plan('SELECT * FROM jobs WHERE id = @id'), /USING INDEX sqlite_autoindex_jobs_1|PRIMARY KEY/);
  assert.match(plan('SELECT * FROM jobs WHERE client = @client AND nonce = @nonce'), /USING INDEX jobs_client_nonce/);
  assert.match(plan("SELECT * FROM jobs WHERE status = 'failed' AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT @limit"), /USING INDEX jobs_status_finished/);
  assert.match(plan('SELECT id, status, finished_at FROM jobs WHERE finished_at >= @now ORDER BY finished_at'), /USING INDEX jobs_(status_)?finished/);
  assert.doesNotMatch(plan("SELECT id FROM jobs WHERE status = 'queued' AND run_after <= @now ORDER BY run_after LIMIT @limit"), /TEMP B-TREE/);
});

test('migrations run once even when several processes open a new file together', async (t) => {
  const dir = tempDir(t);
  const stores = await Promise.all([1, 2, 3].map(async () => openSqliteStore({ path: `${dir}/db.sqlite` })));
  t.after(() => Promise.all(stores.map((s) => s.close())));
  const db = new Database(`${dir}/db.sqlite`, { readonly: true });
  t.after(() => db.close());
  const files = readdirSync(new URL('../migrations/sqlite/', import.meta.url)).filter((f) => f.endsWith('.sql'));
  assert.ok(files.length >= 2);
  assert.deepEqual(db.prepare('SELECT version FROM schema_migrations ORDER BY version').all(), files.map((f) => ({ version: Number(f.slice(0, 4)) })));
});

test('checkpoint truncates the write-ahead log once no reader holds it', async (t) => {
  const dir = tempDir(t);
  const store = openSqliteStore({ path: `${dir}/db.sqlite` });
  t.after(() => store.close());
  for (let i = 0; i < 500; i++) await store.createJob(job());
  const { statSync } = await import('node:fs');
  assert.ok(statSync(`${dir}/db.sqlite-wal`).size > 0);
  await store.checkpoint();
  assert.equal(statSync(`${dir}/db.sqlite-wal`).size, 0);
});

test('pacing: RPM spaces calls evenly across connections; TPM charges by tokens; a pause holds everyone', async (t) => {
  const dir = tempDir(t);
  const c = clock();
  const a = openSqliteStore({ path: `${dir}/db.sqlite`, now: c.now });
  const b = openSqliteStore({ path: `${dir}/db.sqlite`, now: c.now });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  const rpm = { rpm: 60, tpm: null, tokens: 10 };
  assert.equal(await a.acquireUpstream(rpm), 0);
  assert.equal(await b.acquireUpstream(rpm), 1000, 'the other connection waits one interval');
  c.advance(1000);
  assert.equal(await b.acquireUpstream(rpm), 0);
  const tpm = { rpm: null, tpm: 6000, tokens: 300 };
  assert.equal(await a.acquireUpstream(tpm), 0);
  assert.equal(await b.acquireUpstream(tpm), 3000, '300 tokens at 100 a second');
  await a.pauseUpstream(c.now() + 5000);
  assert.equal(await b.acquireUpstream({ rpm: null, tpm: null, tokens: 1 }), 5000);
  await b.pauseUpstream(c.now() + 100);
  assert.equal(await a.acquireUpstream({ rpm: null, tpm: null, tokens: 1 }), 5000, 'a shorter pause never cuts a longer one');
});

test('group commit: creates issued together share commits, and each resolves only after its commit', async (t) => {
  const dir = tempDir(t);
  const store = openSqliteStore({ path: `${dir}/db.sqlite`, sync: 'full' });
  t.after(() => store.close());
  await store.createJob(job());
  await store.checkpoint();
  const reader = new Database(`${dir}/db.sqlite`);
  t.after(() => reader.close());

  const results = await Promise.all(Array.from({ length: 200 }, () => store.createJob(job())));
  assert.equal(results.filter((r) => r.created).length, 200);
  assert.equal((reader.prepare('SELECT COUNT(*) AS n FROM jobs').get() as { n: number }).n, 201, 'another connection sees every resolved create');
  // Every commit appends at least one frame to the WAL: fewer frames than creates means they shared commits.
  const log = (reader.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number }>)[0]?.log ?? Infinity;
  assert.ok(log < 200, `${log} WAL frames for 200 creates`);
  t.diagnostic(`200 concurrent creates wrote ${log} WAL frames`);
});

test('group commit: one bad create in a batch fails alone; its neighbours are stored', async (t) => {
  const dir = tempDir(t);
  const store = openSqliteStore({ path: `${dir}/db.sqlite` });
  t.after(() => store.close());
  const taken = job();
  await store.createJob(taken);
  const results = await Promise.allSettled([store.createJob(job()), store.createJob({ ...job(), id: taken.id }), store.createJob(job())]);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.equal((await store.countByStatus()).queued, 3);
});
