import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../src/store/sqlite/sqlite-job-store.ts';
import { manualClock, newTestJob, tempDir } from '../../../test/helpers/index.ts';

const job = newTestJob;
const clock = manualClock;

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
