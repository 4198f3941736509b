/**
 * The JobStore contract, run against every backend: the same tests, so PostgreSQL behaves as SQLite.
 * PostgreSQL comes from TEST_DATABASE_URL (default: the local server's `test` database), one schema
 * per test; under CI an unreachable server fails the run, elsewhere these tests skip saying why.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import pg from 'pg';
import { FOLD_AFTER_CHANGES, SESSION_SETTINGS, openPostgresStore } from '../src/store/postgres/pg-job-store.ts';
import { openSqliteStore } from '../src/store/sqlite/sqlite-job-store.ts';
import { WORKER_ALIVE_MS, type ClaimedJob, type JobRecord, type JobStore, type NewJob } from '../src/store/types.ts';
import { CLAIM_EXPIRE_LIMIT } from '../src/store/expiry-spacing.ts';
import { MODEL_LABELS_MAX, OTHER_MODEL } from '../src/store/counter-labels.ts';
import { isDatabaseUnavailable } from '../src/store/unavailable.ts';
import { LATER_RELEASE_CODE, laterReleaseMessage } from '../src/store/migration-files.ts';
import { createChangeListener } from '../src/store/postgres/change-listener.ts';
import { PG_URL, eventually, manualClock, newTestJob, tempDir, within, type TestHooks } from '../../../test/helpers/index.ts';

type Ctx = TestHooks;

/** Where one test's stores live, and how to open another connection to it. */
interface Place {
  /** Opens a store on this place; it is closed when the test ends. `tell` takes what it tells of its database. */
  open(now?: () => number, tell?: Tell): Promise<JobStore>;
  /** Has `close` run when the test ends, before the place itself goes. */
  own(close: () => unknown): void;
  /** The PostgreSQL schema, where there is one. */
  schema?: string;
  /** How the store's messages name its database: the SQLite file's path, or `schema <name>`. */
  database: string;
  /** Runs SQL on the place's database from a connection of the test's own (`?` for each value); its rows. */
  sql(text: string, ...values: unknown[]): Promise<Array<Record<string, unknown>>>;
}

/** What a store tells of its database while it runs: a later release's migrations, and that it can write no more. */
type Tell = { onLaterMigrations?: (names: string[]) => void; onLost?: (message: string) => void };

interface Backend {
  name: string;
  skip: string | false;
  place(t: Ctx): Promise<Place>;
}

async function postgresReachable(): Promise<string | false> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return false;
  } catch (err) {
    const why = `PostgreSQL at ${PG_URL.replace(/:[^:@/]*@/, ':***@')} is not reachable (${(err as Error).message})`;
    if (process.env.CI) throw new Error(`${why}: .ci/run starts it`);
    return `${why}; CI runs these against it`;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const backends: Backend[] = [
  {
    name: 'sqlite',
    skip: false,
    async place(t) {
      const dir = tempDir(t);
      return {
        database: `${dir}/db.sqlite`,
        open: async (now, tell) => {
          const store = openSqliteStore({ path: `${dir}/db.sqlite`, ...(now ? { now } : {}), ...tell });
          t.after(() => store.close());
          return store;
        },
        own: (close) => t.after(close),
        sql: async (text, ...values) => {
          const db = new Database(`${dir}/db.sqlite`);
          try {
            const statement = db.prepare(text);
            return statement.reader ? (statement.all(...values) as Array<Record<string, unknown>>) : (statement.run(...values), []);
          } finally {
            db.close();
          }
        },
      };
    },
  },
  {
    name: 'postgres',
    skip: await postgresReachable(),
    async place(t) {
      const schema = `test_${randomBytes(6).toString('hex')}`;
      // Everything open on the schema closes before it is dropped, in the one hook: node:test runs
      // hooks in the order added, so a store's own hook would come after the drop. A store still
      // folding its counts then deadlocked with DROP SCHEMA (seen in CI), and a failed hook skips
      // the ones after it, so the store stayed open and the test file never exited.
      const owned: Array<() => unknown> = [];
      const own = (close: () => unknown) => void owned.push(close);
      t.after(async () => {
        const closed = await Promise.allSettled(owned.map(async (close) => close()));
        const admin = new pg.Client({ connectionString: PG_URL });
        await admin.connect();
        try {
          await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        } finally {
          await admin.end();
        }
        for (const result of closed) if (result.status === 'rejected') throw result.reason;
      });
      // A long fallback poll, so only a real NOTIFY can move the change counter within a test.
      return {
        schema,
        database: `schema ${schema}`,
        open: async (now, tell) => {
          const store = await openPostgresStore({ url: PG_URL, schema, poolSize: 4, fallbackPollMs: 60_000, ...(now ? { now } : {}), ...tell });
          own(() => store.close());
          return store;
        },
        own,
        sql: async (text, ...values) => {
          let n = 0;
          const client = await sqlClient(own, schema);
          return (
            await client.query(
              text.replace(/\?/g, () => `$${++n}`),
              values,
            )
          ).rows;
        },
      };
    },
  },
];

const job = newTestJob;

/** A chat completion as an upstream answers it, its first message's content `content`. */
function completion(content: string) {
  return { id: 'chatcmpl-1', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }], usage: null };
}
const clock = manualClock;

/** Creates `n` jobs one after another (`make(i)` for each, a plain one by default); their ids in the order created. */
async function createJobs(store: JobStore, n: number, make: (i: number) => NewJob = () => job()): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await store.createJob(make(i))).job.id);
  return ids;
}

/**
 * A TCP relay to the test server (PG_URL) whose connections can be silenced: from `silence()` on,
 * no byte passes either way on the connections open then, and neither end is told (as when a NAT or
 * firewall forgets a connection). `silenceNew(true)` silences connections as they are accepted.
 * After `stallCommits()`, a connection's client is cut off from the server at its next COMMIT.
 * `url` is PG_URL through the relay.
 */
async function startSilenceableProxy(): Promise<{ url: string; connections(): number; silence(): void; silenceNew(on: boolean): void; stallCommits(): void; close(): void }> {
  const target = new URL(PG_URL);
  const pairs: Array<[Socket, Socket]> = [];
  let silenceNew = false;
  let stallCommits = false;
  // A simple-query message whose text is exactly COMMIT (the store's tx(); "READ COMMITTED" in its
  // BEGIN does not end so).
  const commit = Buffer.from('COMMIT\0');
  // The client's bytes are relayed by its 'data' handler, which pausing stops; the server's are piped.
  const mute = ([client, upstream]: [Socket, Socket]) => {
    upstream.unpipe(client);
    client.pause();
    upstream.pause();
  };
  const server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.push(pair);
    for (const socket of pair) socket.on('error', () => undefined);
    if (silenceNew) return mute(pair);
    // Relayed by hand, not piped, to look for a COMMIT: from one on, nothing more the client sends
    // reaches the server (as from a process frozen or cut off just before it), while what the server
    // sends still reaches the client.
    let stalled = false;
    client.on('data', (chunk: Buffer) => {
      if (!stalled && stallCommits && chunk.includes(commit)) stalled = true;
      if (!stalled) upstream.write(chunk);
    });
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(PG_URL);
  url.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: url.toString(),
    connections: () => pairs.length,
    silence: () => pairs.forEach(mute),
    silenceNew: (on) => void (silenceNew = on),
    stallCommits: () => void (stallCommits = true),
    close() {
      for (const pair of pairs) pair.forEach((socket) => socket.destroy());
      server.close();
    },
  };
}

/** A PostgreSQL connection of the test's own (in `schema`, with `settings`, when given), closed after the test. */
async function sqlClient(own: (close: () => unknown) => void, schema?: string, settings = ''): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: PG_URL, ...(schema ? { options: `-c search_path=${schema} ${settings}`.trim() } : {}) });
  await client.connect();
  own(() => client.end());
  return client;
}

/** Locks what an upstream draw needs, from a connection of the test's own, until the returned function is called. */
async function holdPacingLock(backend: string, place: Place): Promise<() => Promise<void>> {
  if (backend === 'postgres') {
    const client = await sqlClient(place.own, place.schema);
    await client.query('BEGIN');
    await client.query('SELECT tat FROM upstream_pacing FOR UPDATE');
    return async () => void (await client.query('COMMIT'));
  }
  const db = new Database(place.database);
  // Closed, rolling the lock back, should the test end before it lets go.
  place.own(() => db.open && db.close());
  db.exec('BEGIN IMMEDIATE');
  return async () => {
    db.exec('COMMIT');
    db.close();
  };
}

/**
 * On PostgreSQL the first read of the change counter opens the store's listening connection, and the
 * counter moves once when it listens: read until then, so that only a notification moves it after.
 */
async function listening(store: JobStore): Promise<void> {
  if (store.kind !== 'postgres') return;
  const first = await store.changeCounter();
  await eventually(async () => (await store.changeCounter()) !== first, 5000, 10);
}

for (const backend of backends) {
  describe(`store contract: ${backend.name}`, { skip: backend.skip }, () => {
    /** Two connections to one new store (two processes, as far as the store can tell), on one manual clock. */
    const twoConnections = async (t: Ctx) => {
      const place = await backend.place(t);
      const c = clock();
      return { c, a: await place.open(c.now), b: await place.open(c.now) };
    };

    test('create, then the same nonce returns the same job instead of a second one', async (t) => {
      const place = await backend.place(t);
      const store = await place.open(clock().now);
      const first = await store.createJob(job({ nonce: 'same-nonce' }));
      assert.equal(first.created, true);
      assert.equal(first.job.status, 'queued');
      const again = await store.createJob(job({ nonce: 'same-nonce', requestHash: 'other' }));
      assert.equal(again.created, false);
      assert.equal(again.job.id, first.job.id);
      assert.equal(again.job.requestHash, 'h1');
      assert.deepEqual(await store.countByStatus(), { queued: 1, in_progress: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 });
    });

    test('a claimed job carries its request as the JSON text stored, which the worker sends upstream as it is', async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      const request = {
        model: 'm',
        messages: [
          { role: 'system', content: 'é \u2028 "q" \\ \ud83d\ude00' },
          { role: 'user', content: 'x'.repeat(30_000) },
        ],
        temperature: 0.25,
        max_tokens: 1e3,
        stop: ['\n'],
      };
      await store.createJob(job({ request }));
      const [claimed] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
      assert.equal(claimed?.requestJson, JSON.stringify(request));
      assert.deepEqual(claimed?.request, request);
    });

    test('finalAmong: of the ids asked about, those of jobs in a final status now; unknown ids are not', async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      const ids = await createJobs(store, 4);
      const [queued, completed, cancelled, running] = ids as [string, string, string, string];
      const claimed = await store.claimJobs({ workerId: 'w', limit: 4, leaseMs: 60_000 });
      const held = (id: string) => claimed.find((j) => j.id === id) as ClaimedJob;
      await store.completeJob(completed, held(completed).leaseToken, { outputText: 'ok', usage: null, response: {} });
      await store.releaseJob(queued, held(queued).leaseToken, Date.now());
      await store.releaseJob(cancelled, held(cancelled).leaseToken, Date.now());
      await store.cancelJob(cancelled, 'default');
      assert.deepEqual((await store.finalAmong([queued, completed, 'j_unknown', cancelled, running])).sort(), [completed, cancelled].sort());
      assert.deepEqual(await store.finalAmong([]), []);
    });

    test('cancelsAmong: of the running ids asked about, those whose client asked to cancel; a queued job cancelled at once, a finished one, an unknown id are not', async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      const [asked, left, done, queued] = (await createJobs(store, 4)) as [string, string, string, string];
      const claimed = await store.claimJobs({ workerId: 'w', limit: 4, leaseMs: 60_000 });
      const held = (id: string) => claimed.find((j) => j.id === id) as ClaimedJob;
      await store.releaseJob(queued, held(queued).leaseToken, Date.now());
      assert.deepEqual(await store.cancelsAmong([asked, left]), []);
      await store.cancelJob(asked, 'default');
      await store.cancelJob(queued, 'default');
      await store.cancelJob(done, 'default');
      await store.finishJob(done, held(done).leaseToken, 'cancelled', null);
      assert.deepEqual(await store.cancelsAmong([asked, left, done, queued, 'j_unknown']), [asked]);
      assert.deepEqual(await store.cancelsAmong([]), []);
    });

    test('claims take jobs in queue order, the longest due first; jobs due in the same millisecond in the order created', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const claim = async (limit: number) => (await store.claimJobs({ workerId: 'w', limit, leaseMs: 60_000 })).map((j) => ({ id: j.id, token: j.leaseToken }));
      const first = await createJobs(store, 6);
      c.advance(5);
      const second = await createJobs(store, 6);
      const taken = await claim(3);
      assert.deepEqual(
        taken.map((j) => j.id),
        first.slice(0, 3),
      );
      // A retry queues its job again, due 3 ms after the first six: between the two groups.
      const retried = taken[1]!;
      await store.retryJob(retried.id, retried.token, c.now() - 2, { code: 'upstream_500', message: 'again', upstreamStatus: 500 });
      c.advance(1);
      assert.deepEqual(
        (await claim(20)).map((j) => j.id),
        [...first.slice(3), retried.id, ...second],
      );
    });

    test('a job put back due in the same millisecond as one created since is taken first, as the one created first', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const [earlier] = await createJobs(store, 1);
      const [taken] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
      const [later] = await createJobs(store, 1);
      // Written after the later job, the retried one sat behind it in PostgreSQL's table, and the
      // claim's index kept ties in table order: the later job was taken first.
      await store.retryJob(taken!.id, taken!.leaseToken, c.now(), { code: 'upstream_500', message: 'again', upstreamStatus: 500 });
      const claim = async () => (await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 }))[0]?.id;
      assert.deepEqual([await claim(), await claim()], [earlier, later]);
    });

    test('two connections claiming in turn never take the same job', async (t) => {
      const place = await backend.place(t);
      const a = await place.open();
      const b = await place.open();
      for (let i = 0; i < 200; i++) await a.createJob(job());
      const seen = new Set<string>();
      let total = 0;
      for (;;) {
        const [x, y] = await Promise.all([a.claimJobs({ workerId: 'a', limit: 7, leaseMs: 60_000 }), b.claimJobs({ workerId: 'b', limit: 7, leaseMs: 60_000 })]);
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
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
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

    test('a claim given a lapse grace takes a lease as lapsed only that long past its end (after a clock step forward)', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const { job: created } = await store.createJob(job());
      const [first] = await store.claimJobs({ workerId: 'w1', limit: 1, leaseMs: 1000 });
      assert.ok(first);
      // The clock steps 120 s forward: the lease reads as run out 119 s ago.
      c.advance(120_000);
      assert.deepEqual(await store.claimJobs({ workerId: 'w2', limit: 1, leaseMs: 1000, lapseGraceMs: 120_000 }), [], 'run out only by the step');
      assert.equal(await store.renewLease(first.id, first.leaseToken, 1000), 'held', 'its holder renews it on the clock as it now reads');
      c.advance(1001);
      // Now lapsed by the clock before the step too (its renewal unanswered since).
      c.advance(120_000);
      const [second] = await store.claimJobs({ workerId: 'w2', limit: 1, leaseMs: 1000, lapseGraceMs: 120_000 });
      assert.equal(second?.id, created.id);
      assert.equal(second?.attempts, 2);
    });

    test('retry waits in the database; release hands the attempt back', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
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

    test('a lookup reads what the full job holds, minus the prompt and the lease, in every state', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const ids = await createJobs(store, 5);
      const held = await store.claimJobs({ workerId: 'w', limit: 4, leaseMs: 60_000 });
      const [done, failed, retried, running] = held.map((j) => ({ id: j.id, token: j.leaseToken }));
      assert.ok(done && failed && retried && running);
      c.advance(1000);
      await store.completeJob(done.id, done.token, { outputText: 'hi', usage: { total_tokens: 3 }, response: { choices: [{ message: { content: 'hi' } }] } });
      await store.finishJob(failed.id, failed.token, 'failed', { code: 'upstream_400', message: 'bad', upstreamStatus: 400 });
      await store.retryJob(retried.id, retried.token, c.now() + 5000, { code: 'upstream_500', message: 'boom', upstreamStatus: 500 });
      await store.cancelJob(running.id, 'default');
      const fields = [
        'id',
        'client',
        'status',
        'model',
        'attempts',
        'runAfter',
        'expiresAt',
        'cancelRequested',
        'createdAt',
        'startedAt',
        'finishedAt',
        'outputText',
        'usage',
        'response',
        'error',
      ] as const;
      const statuses = [];
      for (const id of ids) {
        const full = await store.getJob(id);
        const outcome = await store.getJobOutcome(id);
        assert.ok(full && outcome);
        assert.deepEqual(Object.keys(outcome).sort(), [...fields].sort());
        assert.deepEqual(outcome, Object.fromEntries(fields.map((f) => [f, full[f]])));
        statuses.push(`${outcome.status}${outcome.cancelRequested ? '+cancel' : ''}${outcome.error ? `:${outcome.error.code}` : ''}`);
      }
      assert.deepEqual(statuses.sort(), ['completed', 'failed:upstream_400', 'in_progress+cancel', 'queued', 'queued:upstream_500']);
      assert.equal(await store.getJobOutcome('req_missing'), null);
    });

    test('while claims come back full the expiry scan runs at most every 250 ms; an expired job is never taken; a short claim scans', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const claim = (limit: number) => store.claimJobs({ workerId: 'w', limit, leaseMs: 60_000 });
      for (let i = 0; i < 3; i++) await store.createJob(job());
      assert.equal((await claim(1)).length, 1, 'the first claim scans');
      const { job: late } = await store.createJob(job({ expiresAt: c.now() + 100 }));
      c.advance(150);
      const taken = await claim(1);
      assert.equal(taken.length, 1, 'a full claim');
      assert.notEqual(taken[0]?.id, late.id, 'past its deadline: not taken');
      assert.equal((await store.getJob(late.id))?.status, 'queued', 'not marked yet: a full claim 150 ms after the last scan skips it');
      assert.equal((await claim(5)).length, 1, 'the last good job; the claim comes back short');
      assert.equal((await store.getJob(late.id))?.status, 'expired', 'so it scanned');
    });

    test('a lapsed lease is claimed again within 250 ms even while claims come back full', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const claim = async (limit: number) => (await store.claimJobs({ workerId: 'w', limit, leaseMs: 1000 })).map((j) => j.id);
      const { job: held } = await store.createJob(job());
      assert.deepEqual(await claim(1), [held.id]);
      for (let i = 0; i < 5; i++) await store.createJob(job());
      c.advance(900);
      assert.notDeepEqual(await claim(1), [held.id], 'a scan while the lease still holds');
      c.advance(100);
      // The lease has lapsed. Within 250 ms of the last scan a backend may still fill a full claim from
      // the queue (PostgreSQL does: such claims are one statement); the next scan takes it first.
      const taken = await claim(1);
      c.advance(250);
      taken.push(...(await claim(1)));
      assert.equal(taken.filter((id) => id === held.id).length, 1, `the lapsed job is among ${taken.join(', ')}`);
      assert.equal((await store.getJob(held.id))?.attempts, 2);
    });

    test('the counts by status follow every kind of write, without counting the table', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const STATUSES = ['queued', 'in_progress', 'completed', 'failed', 'cancelled', 'expired'] as const;
      const check = async (when: string) => {
        const counts = await store.countByStatus();
        for (const status of STATUSES) {
          const actual = (await store.listJobs({ status, limit: 1000 })).length;
          assert.equal(counts[status], actual, `${status} after ${when}`);
        }
      };
      const ids = await createJobs(store, 12, (i) => job({ expiresAt: c.now() + (i === 11 ? 500 : 60_000) }));
      await store.createJob(job({ nonce: (await store.getJob(ids[0] as string))?.nonce }));
      await check('creates and a replay');
      const held = await store.claimJobs({ workerId: 'w', limit: 6, leaseMs: 60_000 });
      await check('a claim of six');
      const [a, b, d, e, f, g] = held as [(typeof held)[number], (typeof held)[number], (typeof held)[number], (typeof held)[number], (typeof held)[number], (typeof held)[number]];
      await store.completeJob(a.id, a.leaseToken, { outputText: 'ok', usage: null, response: {} });
      await store.finishJob(b.id, b.leaseToken, 'failed', { code: 'upstream_400', message: 'no' });
      await store.retryJob(d.id, d.leaseToken, c.now(), { code: 'upstream_500', message: 'again' });
      await store.releaseJob(e.id, e.leaseToken, c.now());
      assert.equal(await store.completeJob(a.id, a.leaseToken, { outputText: 'twice', usage: null, response: {} }), false);
      await check('outcomes, a retry, a release and a stale completion');
      await store.cancelJob(f.id, f.client);
      const queued = (await store.listJobs({ status: 'queued', limit: 1 }))[0] as { id: string; client: string };
      await store.cancelJob(queued.id, queued.client);
      await store.finishJob(f.id, f.leaseToken, 'cancelled', null);
      await check('cancels, queued and running');
      c.advance(600);
      assert.equal(await store.expireOverdue(), 1);
      await store.checkpoint();
      await check('an expiry and a checkpoint');
      assert.equal((await store.requeueJobs('all-failed')).length, 1);
      await check('a requeue');
      c.advance(1000);
      assert.ok((await store.deleteFinishedBefore(c.now())) >= 3);
      await check('a purge');
      const copy = await store.getJob(g.id);
      const imported = await store.importJobs([{ ...(copy as JobRecord), id: 'req_AAAAAAAAAAAAAAAAAAAAAA', nonce: 'imported-1', status: 'completed', finishedAt: c.now() }]);
      assert.equal(imported.length, 1);
      await store.checkpoint();
      await check('an import and another checkpoint');
    });

    test('oldestDueAt: since when the longest-waiting due job has waited; a retry counts from the end of its backoff', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      assert.equal(await store.oldestDueAt(), null);
      const t0 = c.now();
      const { job: a } = await store.createJob(job());
      c.advance(100);
      await store.createJob(job());
      assert.equal(await store.oldestDueAt(), t0);
      const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
      assert.equal(held?.id, a.id);
      await store.retryJob(a.id, held!.leaseToken, c.now() + 10_000, { code: 'upstream_429', message: 'later' });
      assert.equal(await store.oldestDueAt(), t0 + 100, 'the job in its backoff is not waiting yet');
      const [b] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
      await store.completeJob(b!.id, b!.leaseToken, { outputText: 'ok', usage: null, response: {} });
      assert.equal(await store.oldestDueAt(), t0 + 100 + 10_000, 'only the retry is queued: due ahead');
    });

    test('finishedPerMinute counts jobs as they finish, by minute and status, through folds and requeues', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const minuteOf = (at: number) => Math.floor(at / 60_000) * 60_000;
      const sorted = (rows: Awaited<ReturnType<JobStore['finishedPerMinute']>>) => [...rows].sort((x, y) => x.minute - y.minute || x.status.localeCompare(y.status));
      for (let i = 0; i < 3; i++) await store.createJob(job());
      const held = await store.claimJobs({ workerId: 'w', limit: 3, leaseMs: 600_000 });
      const first = c.now();
      for (const h of held.slice(0, 2)) await store.completeJob(h.id, h.leaseToken, { outputText: 'ok', usage: null, response: {} });
      c.advance(60_000);
      const second = c.now();
      const failing = held[2] as (typeof held)[number];
      await store.finishJob(failing.id, failing.leaseToken, 'failed', { code: 'upstream_400', message: 'no' });
      const copy = (await store.getJob(failing.id)) as JobRecord;
      await store.importJobs([{ ...copy, id: 'req_BBBBBBBBBBBBBBBBBBBBBB', nonce: 'imported-2', status: 'completed', finishedAt: second }]);
      const expected = [
        { minute: minuteOf(first), status: 'completed', count: 2 },
        { minute: minuteOf(second), status: 'completed', count: 1 },
        { minute: minuteOf(second), status: 'failed', count: 1 },
      ];
      assert.deepEqual(sorted(await store.finishedPerMinute(first - 60_000)), expected);
      assert.deepEqual(sorted(await store.finishedPerMinute(second)), expected.slice(1), 'from the minute holding `since`');
      await store.checkpoint();
      await store.requeueJobs([failing.id]);
      assert.deepEqual(sorted(await store.finishedPerMinute(first - 60_000)), expected, 'after a fold and a requeue: the failure happened');
      c.advance(120_000);
      await store.deleteFinishedBefore(second);
      assert.deepEqual(sorted(await store.finishedPerMinute(0)), expected.slice(1), 'the minutes before the retention cut are gone');
    });

    test('every way a job finishes counts once in the chart, in the minute it finished', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      // Each job is created just before it is claimed: claims take the oldest due job first.
      const claimNext = async (overrides: Parameters<typeof job>[0] = {}, leaseMs = 60_000) => {
        const { job: created } = await store.createJob(job(overrides));
        const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs });
        assert.equal(held?.id, created.id);
        return held as ClaimedJob;
      };
      const done = await claimNext();
      await store.completeJob(done.id, done.leaseToken, { outputText: 'ok', usage: null, response: {} });
      const failed = await claimNext();
      await store.finishJob(failed.id, failed.leaseToken, 'failed', { code: 'upstream_400', message: 'no' });
      const queued = (await store.createJob(job())).job;
      await store.cancelJob(queued.id, 'default');
      await store.createJob(job({ expiresAt: c.now() + 1000 }));
      c.advance(1000);
      assert.equal(await store.expireOverdue(), 1);
      // Three leases that lapse: no attempts left, a cancel asked for, the deadline passed.
      await claimNext({ maxAttempts: 1 }, 1000);
      const cancelled = await claimNext({}, 1000);
      await store.cancelJob(cancelled.id, 'default');
      await claimNext({ expiresAt: c.now() + 1500 }, 1000);
      c.advance(60_000);
      assert.deepEqual(await store.claimJobs({ workerId: 'w2', limit: 5, leaseMs: 1000 }), [], 'the lapsed leases end their jobs');
      await store.checkpoint();
      const chart = await store.finishedPerMinute(0);
      const byStatus = Object.fromEntries(['completed', 'failed', 'cancelled', 'expired'].map((s) => [s, chart.filter((r) => r.status === s).reduce((n, r) => n + r.count, 0)]));
      assert.deepEqual(byStatus, { completed: 1, failed: 2, cancelled: 2, expired: 2 });
      const counts = await store.countByStatus();
      assert.deepEqual(
        byStatus,
        { completed: counts.completed, failed: counts.failed, cancelled: counts.cancelled, expired: counts.expired },
        'the chart agrees with the job counts',
      );
      const minute = (at: number) => Math.floor(at / 60_000) * 60_000;
      assert.deepEqual(
        chart
          .filter((r) => r.minute === minute(c.now()))
          .map((r) => [r.status, r.count])
          .sort(),
        [
          ['cancelled', 1],
          ['expired', 1],
          ['failed', 1],
        ],
        'the lapsed leases count in the minute of the claim that ended them',
      );
    });

    test('a lapsed lease with no attempts left fails the job instead of running it again', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const { job: created } = await store.createJob(job({ maxAttempts: 1 }));
      await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 1000 });
      c.advance(2000);
      assert.deepEqual(await store.claimJobs({ workerId: 'w2', limit: 1, leaseMs: 1000 }), []);
      const after = await store.getJob(created.id);
      assert.equal(after?.status, 'failed');
      assert.equal(after?.error?.code, 'worker_lost');
    });

    test('queued jobs past their deadline expire, and are never claimed', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const { job: created } = await store.createJob(job({ expiresAt: c.now() + 1000 }));
      c.advance(1000);
      assert.deepEqual(await store.claimJobs({ workerId: 'w', limit: 5, leaseMs: 1000 }), []);
      assert.equal((await store.getJob(created.id))?.status, 'expired');
      await store.createJob(job({ expiresAt: c.now() + 1000 }));
      c.advance(1000);
      assert.equal(await store.expireOverdue(), 1);
      await store.checkpoint();
      const expired = (await store.readCounters()).filter((x) => x.name === 'jobs_finished_total');
      assert.deepEqual(
        expired.map((x) => [x.labels, x.value]),
        [[{ model: 'm', status: 'expired' }, 2]],
        'both counted, under one label set',
      );
    });

    test('a backlog of overdue jobs: each claim expires at most CLAIM_EXPIRE_LIMIT and takes nothing until the backlog is gone, then the due job', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const overdue = 3 * CLAIM_EXPIRE_LIMIT + 7;
      await Promise.all(Array.from({ length: overdue }, () => store.createJob(job({ expiresAt: c.now() + 1000 }))));
      c.advance(1);
      const { job: live } = await store.createJob(job());
      c.advance(1000);
      const claim = () => store.claimJobs({ workerId: 'w', limit: 4, leaseMs: 60_000 });
      assert.deepEqual(await claim(), [], 'the first claim only expires');
      assert.equal((await store.countByStatus()).expired, CLAIM_EXPIRE_LIMIT);
      const claims: number[] = [];
      let taken: ClaimedJob[] = [];
      while (taken.length === 0 && claims.length < 10) {
        taken = await claim();
        claims.push((await store.countByStatus()).expired);
      }
      assert.deepEqual(
        taken.map((j) => j.id),
        [live.id],
        'the live job, once nothing overdue is left',
      );
      assert.deepEqual(claims, [2 * CLAIM_EXPIRE_LIMIT, 3 * CLAIM_EXPIRE_LIMIT, overdue], 'a full batch a claim; the claim that expires the last few takes the live job');
      assert.deepEqual(await store.countByStatus(), { queued: 0, in_progress: 1, completed: 0, failed: 0, cancelled: 0, expired: overdue });
    });

    test('expiry and retention work through backlogs larger than one batch, and count each job once', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const many = 1234;
      await Promise.all(Array.from({ length: many }, () => store.createJob(job({ expiresAt: c.now() + 1000 }))));
      const { job: live } = await store.createJob(job({ expiresAt: c.now() + 60_000 }));
      c.advance(1000);
      assert.equal(await store.expireOverdue(), many);
      assert.equal((await store.getJob(live.id))?.status, 'queued');
      c.advance(1000);
      const cut = c.now();
      const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
      assert.equal(held?.id, live.id);
      c.advance(1000);
      await store.completeJob(live.id, held!.leaseToken, { outputText: 'kept', usage: null, response: {} });
      assert.equal(await store.deleteFinishedBefore(cut), many, 'every expired job, and not the one finished after the cut');
      assert.equal((await store.getJob(live.id))?.outputText, 'kept');
      assert.deepEqual(await store.countByStatus(), { queued: 0, in_progress: 0, completed: 1, failed: 0, cancelled: 0, expired: 0 });
      await store.checkpoint();
      const expired = (await store.readCounters()).filter((x) => x.name === 'jobs_finished_total' && x.labels.status === 'expired');
      assert.deepEqual(
        expired.map((x) => x.value),
        [many],
      );
      const aborted = AbortSignal.abort();
      await Promise.all(Array.from({ length: many }, () => store.createJob(job({ expiresAt: c.now() + 1000 }))));
      c.advance(1000);
      const first = await store.expireOverdue(aborted);
      assert.ok(first > 0 && first < many, `an aborted pass stops after its first batch (${first} of ${many})`);
    });

    test('requeueing every failed job works through more than one batch, and leaves other jobs alone', async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      const many = 1234;
      await Promise.all(Array.from({ length: many + 1 }, () => store.createJob(job())));
      const held = await store.claimJobs({ workerId: 'w', limit: many + 1, leaseMs: 60_000 });
      assert.equal(held.length, many + 1);
      const [kept, ...failing] = held as [ClaimedJob, ...ClaimedJob[]];
      await store.completeJob(kept.id, kept.leaseToken, { outputText: 'ok', usage: null, response: {} });
      await Promise.all(failing.map((h) => store.finishJob(h.id, h.leaseToken, 'failed', { code: 'upstream_401', message: 'bad key' })));
      const requeued = await store.requeueJobs('all-failed');
      assert.equal(requeued.length, many);
      assert.deepEqual(new Set(requeued), new Set(failing.map((h) => h.id)), 'each failed job once');
      assert.deepEqual(await store.countByStatus(), { queued: many, in_progress: 0, completed: 1, failed: 0, cancelled: 0, expired: 0 });
    });

    test('cancel: a queued job at once, a running one through its lease renewal; only the owner may', async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      const { job: queued } = await store.createJob(job());
      assert.equal(await store.cancelJob(queued.id, 'someone-else'), null);
      assert.equal((await store.cancelJob(queued.id, 'default'))?.status, 'cancelled');
      const { job: running } = await store.createJob(job());
      const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 10_000 });
      assert.equal(held?.id, running.id);
      assert.equal((await store.cancelJob(running.id, 'default'))?.status, 'in_progress');
      assert.equal(await store.renewLease(running.id, held.leaseToken, 10_000), 'cancel_requested');
    });

    test('retention deletes only finished jobs older than the cut-off, and workers last seen before it', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      await store.recordHeartbeat({ id: 'gone', host: 'h', pid: 1, startedAt: c.now(), lastSeenAt: c.now(), jobsDone: 0, clockOffsetMs: 0 });
      const { job: old } = await store.createJob(job());
      const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 1000 });
      assert.ok(held);
      await store.completeJob(held.id, held.leaseToken, { outputText: 'x', usage: null, response: {} });
      c.advance(10_000);
      const { job: pending } = await store.createJob(job());
      await store.recordHeartbeat({ id: 'alive', host: 'h', pid: 2, startedAt: c.now(), lastSeenAt: c.now(), jobsDone: 0, clockOffsetMs: 0 });
      assert.equal(await store.deleteFinishedBefore(c.now() - 5000), 1);
      assert.equal(await store.getJob(old.id), null);
      assert.ok(await store.getJob(pending.id));
      assert.deepEqual(
        (await store.listWorkers(0)).map((w) => w.id),
        ['alive'],
      );
    });

    test("a client's latest failed jobs: only its own, newest first, up to the limit", async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      // Fails one job of `client` at the clock's time, then moves the clock on.
      const fail = async (client: string) => {
        const { job: created } = await store.createJob(job({ client }));
        const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
        assert.equal(held?.id, created.id);
        await store.finishJob(created.id, held!.leaseToken, 'failed', { code: 'upstream_http_error', message: 'no' });
        c.advance(1000);
        return created.id;
      };
      const mine = [await fail('mine'), await fail('mine')];
      for (let i = 0; i < 4; i++) await fail('other');
      mine.push(await fail('mine'));
      // A completed job of the same client is not a failure.
      const { job: done } = await store.createJob(job({ client: 'mine' }));
      const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
      await store.completeJob(done.id, held!.leaseToken, { outputText: 'ok', usage: null, response: {} });
      assert.deepEqual(
        (await store.listJobs({ status: 'failed', client: 'mine', limit: 10 })).map((j) => j.id),
        mine.slice().reverse(),
      );
      assert.deepEqual(
        (await store.listJobs({ status: 'failed', client: 'mine', limit: 2 })).map((j) => j.id),
        [mine[2], mine[1]],
      );
      assert.equal((await store.listJobs({ status: 'failed', limit: 10 })).length, 7);
      assert.deepEqual(await store.listJobs({ status: 'failed', client: 'nobody', limit: 10 }), []);
    });

    test('pacing: RPM spaces calls evenly across connections; TPM charges by tokens; a pause holds everyone', async (t) => {
      const { c, a, b } = await twoConnections(t);
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

    test("the upstream's outage mark: seen by every connection, its first time and reason kept while it stands, lifted by any", async (t) => {
      const { c, a, b } = await twoConnections(t);
      assert.equal(await b.upstreamDown(), null);
      const first = c.now();
      await a.markUpstreamDown({ since: first, lookAt: first + 1000, reason: 'cannot be reached (ECONNREFUSED)' });
      c.advance(5000);
      await b.markUpstreamDown({ since: c.now(), lookAt: c.now() + 1000, reason: 'answers every call with a server error (503)' });
      const standing = { since: first, reason: 'cannot be reached (ECONNREFUSED)' };
      assert.deepEqual(await b.upstreamDown(), standing, 'the outage began at the first mark, for its reason');
      assert.deepEqual(await a.upstreamDown(), standing);
      await b.markUpstreamDown(null);
      assert.equal(await a.upstreamDown(), null);
      await b.markUpstreamDown(null);
      await b.markUpstreamDown({ since: c.now(), lookAt: c.now() + 1000, reason: 'answers no call within 120 s' });
      assert.deepEqual(await a.upstreamDown(), { since: c.now(), reason: 'answers no call within 120 s' }, 'a new outage, a new mark');
    });

    test('the run of failed calls a pass ended in: kept for any connection, replaced, and cleared', async (t) => {
      const { c, a, b } = await twoConnections(t);
      assert.equal(await b.failingRun(), null);
      await a.setFailingRun({ calls: 2, since: c.now() - 500, endedAt: c.now() });
      assert.deepEqual(await b.failingRun(), { calls: 2, since: c.now() - 500, endedAt: c.now() });
      c.advance(60_000);
      await b.setFailingRun({ calls: 4, since: c.now() - 60_500, endedAt: c.now() });
      assert.deepEqual(await a.failingRun(), { calls: 4, since: c.now() - 60_500, endedAt: c.now() });
      await a.setFailingRun(null);
      assert.equal(await b.failingRun(), null);
      await a.setFailingRun(null);
    });

    test("the fleet's looks at an upstream that is down: one connection takes each when due, the next set as far on as the outage has lasted (1 to 30 s); none without a mark, and a look set before the clock stepped back is due", async (t) => {
      const { c, a, b } = await twoConnections(t);
      const spacing = { minMs: 1000, maxMs: 30_000 };
      assert.equal(await a.takeUpstreamLook(c.now(), spacing), 0, 'no mark: any call may look');
      const since = c.now();
      await a.markUpstreamDown({ since, lookAt: since + 1000, reason: 'cannot be reached (ECONNREFUSED)' });
      assert.equal(await b.takeUpstreamLook(c.now(), spacing), 1000, 'the first look is a second after the outage began');
      c.advance(1000);
      assert.equal(await b.takeUpstreamLook(c.now(), spacing), 0, 'due: taken');
      assert.equal(await a.takeUpstreamLook(c.now(), spacing), 1000, "the other waits a spacing: the outage's second");
      c.advance(1000);
      assert.equal(await a.takeUpstreamLook(c.now(), spacing), 0);
      assert.equal(await b.takeUpstreamLook(c.now(), spacing), 2000, 'two seconds into the outage, two seconds on');
      c.advance(58_000);
      assert.equal(await b.takeUpstreamLook(c.now(), spacing), 0);
      assert.equal(await a.takeUpstreamLook(c.now(), spacing), 30_000, 'a minute into the outage, at most 30 s on');
      // The clock stepped back an hour: the look stands an hour and 30 s ahead, past anything a
      // spacing sets, so it is due, and the next set from there, a second on (the outage began
      // after the clock's time now).
      assert.equal(await b.takeUpstreamLook(c.now() - 3600_000, spacing), 0);
      assert.equal(await a.takeUpstreamLook(c.now() - 3600_000, spacing), 1000);
      await b.markUpstreamDown(null);
      assert.equal(await a.takeUpstreamLook(c.now(), spacing), 0, 'the mark lifted: any call may look');
    });

    test('pacing after the clock steps back an hour: each budget, and a pause, holds calls no longer than it could have with the clock running forward, and is written so', async (t) => {
      const { c, a, b } = await twoConnections(t);
      const rpm = { rpm: 60, tpm: null, tokens: 10 };
      const tpm = { rpm: null, tpm: 6000, tokens: 300 };
      const none = { rpm: null, tpm: null, tokens: 1 };
      assert.equal(await a.acquireUpstream(rpm), 0);
      assert.equal(await a.acquireUpstream(tpm), 0);
      await a.pauseUpstream(c.now() + 5000);
      // A corrected clock, a machine restored from a snapshot.
      c.advance(-3_600_000);
      assert.equal(await b.acquireUpstream(none), 60_000, 'the pause: a minute at most (MAX_FLEET_PAUSE_MS), not an hour');
      c.advance(60_000);
      assert.equal(await b.acquireUpstream(none), 0, 'and over a minute later, as the clock now runs');
      assert.equal(await b.acquireUpstream(rpm), 1000, 'the requests budget: one interval at most');
      c.advance(1000);
      assert.equal(await b.acquireUpstream(rpm), 0, 'brought back and written: an interval later it draws');
      assert.equal(await a.acquireUpstream(rpm), 1000, 'and spaces calls as before');
      c.advance(-3_600_000);
      assert.equal(await b.acquireUpstream({ ...tpm, tokens: 12_000 }), 120_000, "the tokens budget, for a call whose share is two minutes' tokens: that long");
      assert.equal(await a.acquireUpstream(tpm), 60_000, 'for any other: a minute at most');
      c.advance(60_000);
      assert.equal(await a.acquireUpstream(tpm), 0, 'brought back and written: a minute later it draws');
    });

    test('pacing: a draw is timed when it is made, not when asked: one held up behind others (a lock, a queue) takes no turn in the past', async (t) => {
      const { c, a, b } = await twoConnections(t);
      const rpm = { rpm: 60, tpm: null, tokens: 10 };
      assert.equal(await a.acquireUpstream(rpm), 0);
      c.advance(2000);
      const held = b.acquireUpstream(rpm);
      // The draw asked for at 2 s is made at 5 s, as behind other draws' locks.
      c.advance(3000);
      assert.equal(await held, 0);
      assert.equal(await a.acquireUpstream(rpm), 1000, 'the next turn is an interval after the draw, not after the asking');
    });

    test('pacing, on the real clock: a draw held up by another connection’s lock is timed when it is made (PostgreSQL: at most DRAW_CREDIT_MS before), so the next turn is about an interval after it', async (t) => {
      const place = await backend.place(t);
      const a = await place.open();
      const b = await place.open();
      const rpm = { rpm: 120, tpm: null, tokens: 10 }; // a turn every 500 ms
      assert.equal(await a.acquireUpstream(rpm), 0);
      await sleep(600);
      // The budget is free again, but its rows (SQLite: the file's write lock) are held for 1 s while b draws.
      const release = await holdPacingLock(backend.name, place);
      const held = b.acquireUpstream(rpm);
      await sleep(1000);
      await release();
      assert.equal(await held, 0);
      // Timed when asked (or when sent), b's draw took a turn 1 s in the past, and a's next draw came due at once.
      const wait = await a.acquireUpstream(rpm);
      assert.ok(wait > 0 && wait <= 500, `the next turn ${wait} ms away, an interval after b's draw`);
    });

    test('pacing: draws made at once from four connections, the schema’s first among them, take one turn between them, round after round', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const stores = [await place.open(c.now), await place.open(c.now), await place.open(c.now), await place.open(c.now)];
      const both = { rpm: 60, tpm: 600, tokens: 10 };
      // Many rounds: the rows move on disk as they are updated, and draws that locked them in the
      // order a scan met them deadlocked only now and then (9 draws in 8,000, in a scratch run).
      for (let round = 0; round < 100; round++) {
        const draws = await Promise.all(Array.from({ length: 40 }, (_, i) => stores[i % stores.length]!.acquireUpstream(both)));
        assert.equal(draws.filter((wait) => wait === 0).length, 1, `one draw took round ${round}'s turn`);
        assert.deepEqual(new Set(draws.filter((wait) => wait > 0)), new Set([1000]), 'the rest wait for the next, one interval on');
        c.advance(1000);
      }
    });

    test('rate limits: a budget of N admits N at once, then one per interval; all-or-nothing across budgets', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const budget = { key: 'k', intervalMs: 1000, toleranceMs: 2000 };
      const allowed = [];
      for (let i = 0; i < 4; i++) allowed.push((await store.consumeRateLimits([budget]))[0]?.allowed);
      assert.deepEqual(allowed, [true, true, true, false]);
      c.advance(1000);
      assert.equal((await store.consumeRateLimits([budget]))[0]?.allowed, true);
      const other = { key: 'other', intervalMs: 1000, toleranceMs: 0 };
      const both = await store.consumeRateLimits([other, budget]);
      assert.deepEqual(
        both.map((d) => d.allowed),
        [true, false],
      );
      assert.equal((await store.consumeRateLimits([other]))[0]?.allowed, true, 'the refused pair drew nothing from the other budget');
    });

    test('rate limits after the clock steps back an hour: a budget drawn before is spent whole, not for the hour, and fills again as the clock now runs', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const store = await place.open(c.now);
      const budget = { key: 'k', intervalMs: 1000, toleranceMs: 2000 };
      const draw = async () => (await store.consumeRateLimits([budget]))[0]!;
      for (let i = 0; i < 3; i++) assert.equal((await draw()).allowed, true);
      // A corrected clock, a machine restored from a snapshot.
      c.advance(-3_600_000);
      const refused = await draw();
      assert.equal(refused.allowed, false, 'spent whole: the step gives no budget back');
      assert.equal(refused.tat - c.now(), 3000, 'a tolerance and an interval ahead, not an hour');
      c.advance(999);
      assert.equal((await draw()).allowed, false);
      c.advance(1);
      assert.equal((await draw()).allowed, true, 'one interval after the step it admits again');
      assert.equal((await draw()).allowed, false, 'and then one an interval, as before the step');
    });

    test('jobs written before the clock stepped back an hour wait from now what they had left, not the hour: queued and retrying, and on SQLite running with their worker gone; a lease renewed since is left alone; a deadline is never moved', async (t) => {
      const place = await backend.place(t);
      const c = clock(10_000_000_000);
      const store = await place.open(c.now);
      // PostgreSQL's hosts may disagree by the step for a minute (pg-job-store.ts): leases stay.
      const leasesMoved = backend.name === 'sqlite';
      const claimOne = async (leaseMs: number) => (await store.claimJobs({ workerId: 'w', limit: 1, leaseMs }))[0]!;
      const [retried, running, renewed, queued] = await createJobs(store, 4, () => job({ expiresAt: c.now() + 600_000 }));
      const retry = await claimOne(30_000);
      assert.equal(await store.retryJob(retry.id, retry.leaseToken, c.now() + 30_000, { code: 'upstream_500', message: 'x' }), true);
      assert.equal((await claimOne(20_000)).id, running, 'its worker dies holding it');
      const kept = await claimOne(60_000);
      assert.equal(kept.id, renewed);
      await store.recordHeartbeat({ id: 'gone', host: 'h', pid: 1, startedAt: c.now(), lastSeenAt: c.now(), jobsDone: 0, clockOffsetMs: 0 });
      // A clock corrected by hand, a machine restored from a snapshot.
      const step = 3_600_000;
      c.advance(-step);
      c.advance(5000);
      assert.deepEqual(await store.claimJobs({ workerId: 'w', limit: 4, leaseMs: 30_000 }), [], 'before the rebase nothing is due for an hour');
      assert.equal(await store.renewLease(kept.id, kept.leaseToken, 60_000), 'held', 'its worker renews on the clock as it now reads');
      assert.equal(await store.rebaseAfterClockStep(), leasesMoved ? 3 : 2);
      assert.equal(await store.rebaseAfterClockStep(), 0, 'written so: a second pass finds nothing');
      const times = async (id: string) => {
        const j = (await store.getJob(id))!;
        return { runAfter: j.runAfter - c.now(), expiresAt: j.expiresAt - c.now(), leaseUntil: j.leaseUntil === null ? null : j.leaseUntil - c.now() };
      };
      // Moved back by how far ahead each write stands (an hour less the 5 s since): from now, what was left.
      const deadline = 600_000 + step - 5000;
      assert.deepEqual(await times(queued!), { runAfter: 0, expiresAt: deadline, leaseUntil: null });
      assert.deepEqual(await times(retried!), { runAfter: 30_000, expiresAt: deadline, leaseUntil: null });
      assert.equal((await times(running!)).leaseUntil, leasesMoved ? 20_000 : 20_000 + step - 5000);
      assert.equal((await times(renewed!)).leaseUntil, 60_000, 'the renewed lease stays as renewed, not an hour short');
      assert.deepEqual(
        (await store.listWorkers(c.now() - WORKER_ALIVE_MS)).map((w) => [w.id, w.lastSeenAt - c.now()]),
        [['gone', 0]],
        'a heartbeat from ahead counts as seen now, and ages from here',
      );
      const ids = async () => (await store.claimJobs({ workerId: 'w2', limit: 4, leaseMs: 120_000 })).map((j) => j.id).sort();
      assert.deepEqual(await ids(), [queued]);
      c.advance(20_000);
      assert.deepEqual(await ids(), leasesMoved ? [running] : [], "the dead worker's job, when its lease ends");
      c.advance(10_000);
      assert.deepEqual(await ids(), [retried], 'the retry, when its backoff ends; the renewed lease still holds');
    });

    test('writes made in the same event-loop turn (one commit, one statement on PostgreSQL) end as if made one by one', async (t) => {
      const place = await backend.place(t);
      const store = await place.open(clock().now);
      // Creates: the repeated nonce finds the job the first call made, within the same batch.
      const jobs = [job({ model: 'a' }), job({ model: 'a', nonce: 'twice' }), job({ model: 'b' }), job({ model: 'a', nonce: 'twice' }), job({ model: 'b' })];
      const created = await Promise.all(jobs.map((j) => store.createJob(j)));
      assert.deepEqual(
        created.map((c) => c.created),
        [true, true, true, false, true],
      );
      assert.equal(created[3]?.job.id, jobs[1]?.id, 'the repeat answers with the job its nonce made');
      assert.equal((await store.countByStatus()).queued, 4);
      // Completions: a stale token writes nothing and counts nothing; the others keep their own answers.
      const held = await store.claimJobs({ workerId: 'w', limit: 4, leaseMs: 10_000 });
      assert.equal(held.length, 4);
      const done = await Promise.all(
        held.map((h, i) =>
          store.completeJob(
            h.id,
            i === 2 ? h.leaseToken + 1 : h.leaseToken,
            { outputText: `answer ${h.id}`, usage: { total_tokens: i }, response: { n: i } },
            { upstreamStatus: '200', latencyMs: 100, tokens: { prompt: 10 + i, completion: 1 } },
          ),
        ),
      );
      assert.deepEqual(done, [true, true, false, true]);
      for (const h of held) {
        const outcome = await store.getJobOutcome(h.id);
        assert.equal(outcome?.status, h === held[2] ? 'in_progress' : 'completed');
        if (h !== held[2]) assert.equal(outcome?.outputText, `answer ${h.id}`);
      }
      const counters = await store.readCounters();
      const value = (name: string, labels: Record<string, string>) =>
        counters.filter((x) => x.name === name && JSON.stringify(x.labels) === JSON.stringify(labels)).reduce((sum, x) => sum + x.value, 0);
      assert.equal(value('jobs_created_total', { model: 'a' }) + value('jobs_created_total', { model: 'b' }), 4);
      const finished = held.filter((_, i) => i !== 2).map((h) => h.model);
      assert.equal(value('jobs_finished_total', { model: 'a', status: 'completed' }), finished.filter((m) => m === 'a').length);
      assert.equal(value('jobs_finished_total', { model: 'b', status: 'completed' }), finished.filter((m) => m === 'b').length);
      assert.equal(value('upstream_calls_total', { code: '200' }), 3);
      // Tokens by the job's model, the stale one's not at all; the labels' keys in one order on both stores.
      for (const model of ['a', 'b']) {
        const own = held.map((h, i) => ({ h, i })).filter(({ h, i }) => i !== 2 && h.model === model);
        assert.equal(
          value('tokens_total', { kind: 'prompt', model }),
          own.reduce((sum, { i }) => sum + 10 + i, 0),
          `prompt tokens of ${model}`,
        );
        assert.equal(value('tokens_total', { kind: 'completion', model }), own.length, `completion tokens of ${model}`);
      }
      assert.deepEqual(await store.countByStatus(), { queued: 0, in_progress: 1, completed: 3, failed: 0, cancelled: 0, expired: 0 });
      // Every other outcome in one turn, mixed with a completion: each keeps its own status, error and
      // counts; the stale tokens (a failure and a retry) change and count nothing.
      for (let i = 0; i < 6; i++) await store.createJob(job({ model: 'c' }));
      const more = await store.claimJobs({ workerId: 'w', limit: 6, leaseMs: 10_000 });
      assert.equal(more.length, 6);
      const [fails, expires, staleFail, retries, staleRetry, completes] = more as [ClaimedJob, ClaimedJob, ClaimedJob, ClaimedJob, ClaimedJob, ClaimedJob];
      const runAfter = Date.now() + 60_000;
      const mixed = await Promise.all([
        store.finishJob(fails.id, fails.leaseToken, 'failed', { code: 'upstream_400', message: 'bad request', upstreamStatus: 400 }, { upstreamStatus: '400', latencyMs: 100 }),
        store.finishJob(expires.id, expires.leaseToken, 'expired', { code: 'expired', message: 'too late' }),
        store.finishJob(staleFail.id, staleFail.leaseToken + 1, 'cancelled', null, { upstreamStatus: '500', latencyMs: 100 }),
        store.retryJob(retries.id, retries.leaseToken, runAfter, { code: 'upstream_503', message: 'busy', upstreamStatus: 503 }, { upstreamStatus: '503', latencyMs: 100 }),
        store.retryJob(
          staleRetry.id,
          staleRetry.leaseToken + 1,
          runAfter,
          { code: 'upstream_503', message: 'busy', upstreamStatus: 503 },
          { upstreamStatus: '503', latencyMs: 100 },
        ),
        store.completeJob(completes.id, completes.leaseToken, { outputText: 'fine', usage: null, response: { ok: true } }, { upstreamStatus: '200', latencyMs: 100 }),
      ]);
      assert.deepEqual(mixed, [true, true, false, true, false, true]);
      const failed = await store.getJobOutcome(fails.id);
      assert.equal(failed?.status, 'failed');
      assert.deepEqual(failed?.error, { code: 'upstream_400', message: 'bad request', upstreamStatus: 400 });
      assert.equal(failed?.outputText, null);
      assert.equal((await store.getJobOutcome(expires.id))?.error?.message, 'too late');
      const retried = await store.getJob(retries.id);
      assert.equal(retried?.status, 'queued');
      assert.equal(retried?.runAfter, runAfter);
      assert.equal(retried?.error?.code, 'upstream_503');
      for (const stale of [staleFail, staleRetry]) assert.equal((await store.getJob(stale.id))?.status, 'in_progress');
      assert.equal((await store.getJobOutcome(completes.id))?.outputText, 'fine');
      const after = await store.readCounters();
      const valueNow = (name: string, labels: Record<string, string>) =>
        after.filter((x) => x.name === name && JSON.stringify(x.labels) === JSON.stringify(labels)).reduce((sum, x) => sum + x.value, 0);
      for (const status of ['failed', 'expired', 'completed']) assert.equal(valueNow('jobs_finished_total', { model: 'c', status }), 1, status);
      assert.equal(valueNow('jobs_finished_total', { model: 'c', status: 'cancelled' }), 0);
      assert.equal(valueNow('retries_total', { model: 'c' }), 1);
      assert.equal(valueNow('upstream_calls_total', { code: '503' }), 1, 'the stale retry counts no call');
      assert.equal(valueNow('upstream_calls_total', { code: '500' }), 0);
      assert.equal(valueNow('upstream_calls_total', { code: '200' }), 4);
      assert.deepEqual(await store.countByStatus(), { queued: 1, in_progress: 3, completed: 4, failed: 1, cancelled: 0, expired: 1 });
      // Rate-limit draws: decided in call order, each all or nothing.
      const two = { key: 'two', intervalMs: 1000, toleranceMs: 1000 };
      const one = { key: 'one', intervalMs: 1000, toleranceMs: 0 };
      const draws = await Promise.all([[two], [two], [one, two], [one], [one]].map((checks) => store.consumeRateLimits(checks)));
      assert.deepEqual(
        draws.map((d) => d.map((x) => x.allowed)),
        [[true], [true], [true, false], [true], [false]],
      );
      // What the turn drew was written: a later turn finds both budgets spent.
      assert.deepEqual(
        (await store.consumeRateLimits([two])).map((x) => x.allowed),
        [false],
      );
      assert.deepEqual(
        (await store.consumeRateLimits([one])).map((x) => x.allowed),
        [false],
      );
    });

    test('an answer or an error message holding a NUL character is recorded (PostgreSQL writes U+FFFD in its text)', async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      await store.createJob(job());
      await store.createJob(job());
      await store.createJob(job());
      const [a, b, c] = await store.claimJobs({ workerId: 'w', limit: 3, leaseMs: 10_000 });
      assert.ok(a && b && c);
      assert.equal(await store.completeJob(a.id, a.leaseToken, { outputText: 'x\u0000y', usage: null, response: { content: 'x\u0000y' } }), true);
      assert.equal(await store.finishJob(b.id, b.leaseToken, 'failed', { code: 'upstream_400', message: 'bad\u0000byte', upstreamStatus: 400 }), true);
      // A completion as the worker records it: its first message's content is the text.
      assert.equal(await store.completeJob(c.id, c.leaseToken, { outputText: 'x\u0000y', usage: null, response: completion('x\u0000y') }), true);
      const text = backend.name === 'postgres' ? 'x\uFFFDy' : 'x\u0000y';
      const completed = await store.getJobOutcome(a.id);
      assert.equal(completed?.outputText, text);
      assert.deepEqual(completed?.response, { content: 'x\u0000y' }, 'the JSON keeps the character, escaped');
      assert.equal((await store.getJobOutcome(b.id))?.error?.message, backend.name === 'postgres' ? 'bad\uFFFDbyte' : 'bad\u0000byte');
      const whole = await store.getJobOutcome(c.id);
      assert.equal(whole?.outputText, text);
      assert.deepEqual(whole?.response, completion('x\u0000y'), "the response's own content keeps the character");
    });

    test('half of a UTF-16 pair in an answer or an error message is stored as U+FFFD in its text, and the response keeps it', async (t) => {
      // A text column takes UTF-8, which has no way to write half a pair: SQLite stored the bytes
      // of none (read back as three U+FFFD), PostgreSQL's driver wrote one U+FFFD.
      const place = await backend.place(t);
      const store = await place.open();
      for (let i = 0; i < 4; i++) await store.createJob(job());
      const [a, b, c, d] = await store.claimJobs({ workerId: 'w', limit: 4, leaseMs: 10_000 });
      assert.ok(a && b && c && d);
      assert.equal(await store.completeJob(a.id, a.leaseToken, { outputText: 'ok \ud83d', usage: null, response: completion('ok \ud83d') }), true);
      assert.equal(await store.finishJob(b.id, b.leaseToken, 'failed', { code: 'upstream_400', message: 'cut \ud83d', upstreamStatus: 400 }), true);
      assert.equal(await store.retryJob(c.id, c.leaseToken, Date.now() + 60_000, { code: 'upstream_500', message: '\ude00 low half' }), true);
      assert.equal(await store.completeJob(d.id, d.leaseToken, { outputText: 'a pair 😀 whole', usage: null, response: completion('a pair 😀 whole') }), true);
      const completed = await store.getJobOutcome(a.id);
      assert.equal(completed?.outputText, 'ok \uFFFD');
      assert.deepEqual(completed?.response, completion('ok \ud83d'), 'the JSON keeps it, escaped');
      assert.equal((await store.getJobOutcome(b.id))?.error?.message, 'cut \uFFFD');
      assert.equal((await store.getJobOutcome(c.id))?.error?.message, '\uFFFD low half');
      const paired = await store.getJobOutcome(d.id);
      assert.equal(paired?.outputText, 'a pair 😀 whole');
      assert.deepEqual(paired?.response, completion('a pair 😀 whole'));
    });

    test("a completed answer's text and usage are stored once, in their own columns; the response reads whole, as written before too", async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      const text = 'a long answer. '.repeat(400);
      const answer = (content: string | null, extra = {}) => ({
        id: 'chatcmpl-1',
        object: 'chat.completion',
        choices: [
          { index: 0, message: { role: 'assistant', content, refusal: null, ...extra }, finish_reason: 'stop' },
          { index: 1, message: { role: 'assistant', content: 'another choice' }, finish_reason: 'stop' },
        ],
        usage: { total_tokens: 3 },
      });
      const toolCall = answer(null, { tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }] });
      const ids = await createJobs(store, 3);
      // Taken by id, in the order created (the order an export pages in): this test is about the
      // answer's columns, and the claim's order has a test of its own.
      const claimed = await store.claimJobs({ workerId: 'w', limit: 3, leaseMs: 10_000 });
      const [plain, tool, older] = ids.map((id) => claimed.find((j) => j.id === id));
      assert.ok(plain && tool && older);
      await store.completeJob(plain.id, plain.leaseToken, { outputText: text, usage: { total_tokens: 3 }, response: answer(text) });
      // Usage that is not the response's own (the worker never records such) stays in the response too.
      await store.completeJob(tool.id, tool.leaseToken, { outputText: null, usage: { total_tokens: 4 }, response: toolCall });
      await store.completeJob(older.id, older.leaseToken, { outputText: text, usage: { total_tokens: 3 }, response: answer(text) });
      // A row written before the text was stored once holds it in both columns.
      await place.sql('UPDATE jobs SET response = ? WHERE id = ?', JSON.stringify(answer(text)), older.id);

      const [stored] = await place.sql('SELECT output_text, response FROM jobs WHERE id = ?', plain.id);
      assert.equal(stored?.output_text, text);
      assert.ok(!String(stored?.response).includes('a long answer'), 'the response is stored without the text');
      assert.ok(!String(stored?.response).includes('total_tokens'), 'the response is stored without the usage');
      assert.ok(String(stored?.response).length < 400, `the response is stored in ${String(stored?.response).length} characters`);
      for (const [id, expected, usage] of [
        [plain.id, answer(text), 3],
        [tool.id, toolCall, 4],
        [older.id, answer(text), 3],
      ] as const) {
        // Compared as text: the content and the usage are back in their places among the keys.
        assert.equal(JSON.stringify((await store.getJobOutcome(id))?.response), JSON.stringify(expected));
        assert.equal(JSON.stringify((await store.getJob(id))?.response), JSON.stringify(expected));
        assert.deepEqual((await store.getJobOutcome(id))?.usage, { total_tokens: usage });
      }

      const copy = await backend.place(t);
      const target = await copy.open();
      assert.deepEqual(await target.importJobs((await store.exportJobs(null, 10)).jobs), [plain.id, tool.id, older.id]);
      for (const id of [plain.id, tool.id, older.id]) assert.deepEqual(await target.getJob(id), await store.getJob(id));
      const copied = await copy.sql('SELECT response FROM jobs WHERE id IN (?, ?)', plain.id, older.id);
      assert.ok(copied.length === 2 && copied.every((row) => !/a long answer|total_tokens/.test(String(row.response))), 'a copy stores the text and usage once too');
    });

    test('counters, heartbeats, listing and requeue', async (t) => {
      const place = await backend.place(t);
      const store = await place.open();
      const { job: created } = await store.createJob(job({ model: 'gpt-x' }));
      const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 10_000 });
      assert.ok(held);
      assert.equal(
        await store.finishJob(held.id, held.leaseToken, 'failed', { code: 'upstream_400', message: 'no', upstreamStatus: 400 }, { upstreamStatus: '400', latencyMs: 300 }),
        true,
      );
      const counters = await store.readCounters();
      const value = (name: string, labels: Record<string, string>) => counters.find((x) => x.name === name && JSON.stringify(x.labels) === JSON.stringify(labels))?.value;
      assert.equal(value('jobs_created_total', { model: 'gpt-x' }), 1);
      assert.equal(value('jobs_finished_total', { model: 'gpt-x', status: 'failed' }), 1);
      assert.equal(value('upstream_calls_total', { code: '400' }), 1);
      assert.equal(value('upstream_latency_seconds_bucket', { le: '0.5' }), 1);
      // Housekeeping folds PostgreSQL's appended bumps into the totals: the counts read the same after.
      await store.checkpoint();
      await store.createJob(job({ model: 'gpt-x' }));
      await store.checkpoint();
      const folded = await store.readCounters();
      assert.equal(folded.find((x) => x.name === 'jobs_created_total')?.value, 2);
      // A completion counts under the same labels whichever statement wrote them: one series each.
      const [second] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 10_000 });
      assert.ok(second);
      await store.completeJob(second.id, second.leaseToken, { outputText: 'ok', usage: null, response: {} }, { upstreamStatus: '200', latencyMs: 100 });
      await store.checkpoint();
      const afterCompletion = await store.readCounters();
      assert.equal(afterCompletion.find((x) => x.name === 'jobs_finished_total' && JSON.stringify(x.labels) === JSON.stringify({ model: 'gpt-x', status: 'completed' }))?.value, 1);
      assert.equal(afterCompletion.find((x) => x.name === 'upstream_calls_total' && x.labels.code === '200')?.value, 1);
      const series = afterCompletion.map((x) => `${x.name}${JSON.stringify(x.labels)}`);
      assert.equal(new Set(series).size, series.length, 'no label set is stored twice');
      assert.deepEqual(
        folded.filter((x) => x.name !== 'jobs_created_total'),
        counters.filter((x) => x.name !== 'jobs_created_total'),
      );
      assert.deepEqual(
        (await store.listJobs({ status: 'failed', limit: 5 })).map((j) => j.id),
        [created.id],
      );
      assert.deepEqual(await store.requeueJobs('all-failed'), [created.id]);
      const again = await store.getJob(created.id);
      assert.deepEqual([again?.status, again?.attempts, again?.error], ['queued', 0, null]);

      await store.recordHeartbeat({ id: 'w1', host: 'h', pid: 1, startedAt: 1, lastSeenAt: Date.now(), jobsDone: 2, clockOffsetMs: -1500 });
      await store.recordHeartbeat({ id: 'w1', host: 'h', pid: 1, startedAt: 1, lastSeenAt: Date.now(), jobsDone: 3, clockOffsetMs: 2 });
      // A worker of the release before wrote no clock offset.
      await store.recordHeartbeat({ id: 'w2', host: 'h', pid: 2, startedAt: 2, lastSeenAt: Date.now(), jobsDone: 0, clockOffsetMs: null });
      assert.deepEqual(
        (await store.listWorkers(Date.now() - 1000)).map((w) => [w.id, w.jobsDone, w.clockOffsetMs]),
        [
          ['w1', 3, 2],
          ['w2', 0, null],
        ],
      );
      await store.removeHeartbeat('w1');
      await store.removeHeartbeat('w2');
      assert.deepEqual(await store.listWorkers(0), []);
    });

    test('the counters name the first MODEL_LABELS_MAX models one by one and every later one as (other), in each write that counts a model, from another connection too; a label never changes', async (t) => {
      const place = await backend.place(t);
      const c = clock();
      const api = await place.open(c.now);
      // Named in sorted order and created in one turn: PostgreSQL admits a statement's models in that order.
      const models = Array.from({ length: MODEL_LABELS_MAX + 3 }, (_, i) => `m-${String(i).padStart(3, '0')}`);
      await Promise.all(models.map((model) => api.createJob(job({ model }))));
      // Another connection knows the labels only from the database, as a worker does.
      const worker = await place.open(c.now);
      const again = (model: string, extra: Partial<NewJob> = {}) => api.createJob(job({ model, ...extra })).then((r) => r.job.id);
      const [own, other, ownExpiring, otherExpiring, otherCancelled] = await Promise.all([
        again('m-000'),
        again('m-101'),
        again('m-002', { expiresAt: c.now() + 1000 }),
        again('m-100', { expiresAt: c.now() + 1000 }),
        again('m-102'),
      ]);
      await worker.cancelJob(otherCancelled, 'default');
      c.advance(2000);
      assert.equal(await worker.expireOverdue(), 2);
      const held = new Map((await worker.claimJobs({ workerId: 'w', limit: 500, leaseMs: 60_000 })).map((h) => [h.id, h]));
      const hold = (id: string) => held.get(id) as ClaimedJob;
      const first = (model: string) => [...held.values()].find((h) => h.model === model && h.id !== own && h.id !== other) as ClaimedJob;
      const done = { outputText: 'ok', usage: null, response: {} };
      const failure = { code: 'upstream_400', message: 'no', upstreamStatus: 400 };
      const retried = { code: 'upstream_500', message: 'again', upstreamStatus: 500 };
      await Promise.all([
        worker.completeJob(own, hold(own).leaseToken, done),
        worker.completeJob(other, hold(other).leaseToken, done),
        worker.finishJob(first('m-102').id, first('m-102').leaseToken, 'failed', failure),
        worker.retryJob(first('m-001').id, first('m-001').leaseToken, c.now() + 60_000, retried),
        worker.retryJob(first('m-100').id, first('m-100').leaseToken, c.now() + 60_000, retried),
      ]);
      await worker.checkpoint();
      const counted = (await api.readCounters()).filter((x) => x.labels.model !== undefined);
      const value = (name: string, labels: Record<string, string>) => counted.find((x) => x.name === name && JSON.stringify(x.labels) === JSON.stringify(labels))?.value;
      assert.deepEqual(new Set(counted.map((x) => x.labels.model)), new Set([...models.slice(0, MODEL_LABELS_MAX), OTHER_MODEL]), 'the first models by name, and (other)');
      assert.deepEqual(
        [value('jobs_created_total', { model: 'm-000' }), value('jobs_created_total', { model: 'm-002' }), value('jobs_created_total', { model: OTHER_MODEL })],
        [2, 2, 3 + 3],
      );
      assert.deepEqual(
        [
          value('jobs_finished_total', { model: 'm-000', status: 'completed' }),
          value('jobs_finished_total', { model: OTHER_MODEL, status: 'completed' }),
          value('jobs_finished_total', { model: OTHER_MODEL, status: 'failed' }),
          value('jobs_finished_total', { model: OTHER_MODEL, status: 'cancelled' }),
          value('jobs_finished_total', { model: 'm-002', status: 'expired' }),
          value('jobs_finished_total', { model: OTHER_MODEL, status: 'expired' }),
          value('retries_total', { model: 'm-001' }),
          value('retries_total', { model: OTHER_MODEL }),
        ],
        [1, 1, 1, 1, 1, 1, 1, 1],
      );
      assert.deepEqual(
        [(await api.getJob(ownExpiring))?.status, (await api.getJob(otherExpiring))?.status, (await api.getJob(otherCancelled))?.status],
        ['expired', 'expired', 'cancelled'],
      );
    });

    test('a database counted before counter_models keeps its counted models as labels, however many, and counts new ones as (other)', async (t) => {
      const place = await backend.place(t);
      const before = await place.open();
      await before.createJob(job({ model: 'kept' }));
      await before.checkpoint();
      // As a release before migration counter_models left it: many models counted, no table.
      await place.sql('DROP TABLE counter_models');
      await place.sql("DELETE FROM schema_migrations WHERE name LIKE '%counter_models%'");
      const many = MODEL_LABELS_MAX + 20;
      const rows = Array.from({ length: many }, (_, i) => `('jobs_created_total', '{"model":"old-${i}"}', 1)`);
      await place.sql(`INSERT INTO counters (name, labels, value) VALUES ${rows.join(', ')}`);
      const after = await place.open();
      await Promise.all([after.createJob(job({ model: 'kept' })), after.createJob(job({ model: `old-${many - 1}` })), after.createJob(job({ model: 'new' }))]);
      await after.checkpoint();
      const created = new Map((await after.readCounters()).filter((x) => x.name === 'jobs_created_total').map((x) => [x.labels.model, x.value]));
      assert.deepEqual([created.get('kept'), created.get(`old-${many - 1}`), created.get(OTHER_MODEL), created.has('new')], [2, 2, 1, false]);
      assert.equal(created.size, many + 2);
    });

    test('export pages through every job in the order stored; import writes them unchanged, once', async (t) => {
      const source = await (await backend.place(t)).open();
      const ids = await createJobs(source, 5, (i) => job({ model: `m${i}` }));
      const [done, failed, running] = await source.claimJobs({ workerId: 'w', limit: 3, leaseMs: 60_000 });
      assert.ok(done && failed && running);
      await source.completeJob(done.id, done.leaseToken, { outputText: 'hi', usage: { total_tokens: 3 }, response: { id: 'chatcmpl-1', choices: [] } });
      await source.finishJob(failed.id, failed.leaseToken, 'failed', { code: 'upstream_400', message: 'no', upstreamStatus: 400 });

      const pages: string[][] = [];
      const copied: Awaited<ReturnType<JobStore['exportJobs']>>['jobs'] = [];
      for (let cursor: string | null = null, first = true; first || cursor !== null; first = false) {
        const page: Awaited<ReturnType<JobStore['exportJobs']>> = await source.exportJobs(cursor, 2);
        pages.push(page.jobs.map((j) => j.id));
        copied.push(...page.jobs);
        cursor = page.next;
      }
      assert.deepEqual(pages.flat(), ids, 'every job once, oldest first');
      assert.ok(pages.every((p) => p.length <= 2));

      const target = await (await backend.place(t)).open();
      const clash = await target.createJob(job({ client: copied[4]!.client, nonce: copied[4]!.nonce }));
      assert.deepEqual(await target.importJobs(copied), ids.slice(0, 4), 'a job whose client and nonce are taken is skipped');
      assert.deepEqual(await target.importJobs(copied), [], 'a second copy writes nothing');
      for (const id of ids.slice(0, 4)) assert.deepEqual(await target.getJob(id), await source.getJob(id));
      assert.equal(await target.getJob(ids[4]!), null);
      assert.equal((await target.getJob(clash.job.id))?.status, 'queued');
      const held = await target.getJob(running.id);
      assert.equal(held?.status, 'in_progress');
      // The copied job keeps its fencing token: the old holder's token still names it, a stale one does not.
      assert.equal(await target.renewLease(running.id, running.leaseToken - 1, 1000), 'lost');
      assert.equal(await target.renewLease(running.id, running.leaseToken, 1000), 'held');
    });

    test('another connection notices changes through the change counter', async (t) => {
      const place = await backend.place(t);
      const writer = await place.open();
      const watcher = await place.open();
      await listening(watcher);
      const before = await watcher.changeCounter();
      await writer.createJob(job());
      const until = Date.now() + 2000;
      while ((await watcher.changeCounter()) === before && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      assert.notEqual(await watcher.changeCounter(), before);
    });

    test('another connection is told of a commit through watchChanges, and no more once it stops watching', async (t) => {
      const place = await backend.place(t);
      const writer = await place.open();
      const watcher = await place.open();
      let told = 0;
      const stop = watcher.watchChanges(() => (told += 1));
      assert.ok(stop, 'a store on a file or a server can watch');
      // On PostgreSQL, subscribing opens the listening connection; it is told once it listens.
      if (watcher.kind === 'postgres') await eventually(async () => told > 0, 5000, 10);
      const before = told;
      await writer.createJob(job());
      await eventually(async () => told > before, 2000, 5);
      stop();
      // Notices already on their way (a commit writes the log more than once) land first.
      await new Promise((r) => setTimeout(r, 100));
      const stopped = told;
      await writer.createJob(job());
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(told, stopped, 'no notice after stop');
    });

    // PostgreSQL only: SQLite's file has no schema.
    if (backend.name === 'postgres')
      test('postgres: a schema named by a word SQL reserves (DATABASE_SCHEMA=order, as its pattern allows) is made, migrated and used', async (t) => {
        const admin = new pg.Client({ connectionString: PG_URL });
        await admin.connect();
        const drop = () => admin.query('DROP SCHEMA IF EXISTS "order" CASCADE');
        await drop();
        t.after(async () => {
          await drop();
          await admin.end();
        });
        // Each had failed with 'syntax error at or near "order"'.
        const store = await openPostgresStore({ url: PG_URL, schema: 'order', poolSize: 2 });
        try {
          const { job: created } = await store.createJob(job());
          assert.equal((await store.getJob(created.id))?.status, 'queued');
          const { rows } = await admin.query('SELECT count(*)::int AS n FROM "order".jobs');
          assert.equal(rows[0].n, 1);
        } finally {
          await store.close();
        }
      });

    // PostgreSQL only: SQLite's file has no owner but the system's.
    if (backend.name === 'postgres')
      test('postgres: a role given a schema of its own, without the right to create schemas in the database, opens the store there, and jobs run', async (t) => {
        const role = `proxy_role_${randomBytes(4).toString('hex')}`;
        const admin = new pg.Client({ connectionString: PG_URL });
        await admin.connect();
        t.after(async () => {
          await admin.query(`DROP SCHEMA IF EXISTS ${role} CASCADE`);
          await admin.query(`DROP ROLE IF EXISTS ${role}`);
          await admin.end();
        });
        // As an administrator sets up an application's role for least privilege. A new role may not
        // create schemas in the database: PostgreSQL grants PUBLIC only CONNECT and TEMPORARY there.
        await admin.query(`CREATE ROLE ${role} LOGIN`);
        await admin.query(`CREATE SCHEMA ${role} AUTHORIZATION ${role}`);
        const url = new URL(PG_URL);
        url.username = role;
        url.password = '';
        // It had been refused: 'permission denied for database', by CREATE SCHEMA IF NOT EXISTS.
        const store = await openPostgresStore({ url: url.toString(), schema: role, poolSize: 2 });
        try {
          await store.createJob(job());
          const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 10_000 });
          assert.ok(held);
          assert.equal(await store.completeJob(held.id, held.leaseToken, { outputText: 'ok', usage: null, response: {} }), true);
          assert.equal((await store.getJob(held.id))?.status, 'completed');
        } finally {
          await store.close();
        }
      });

    // PostgreSQL only, as the test before.
    if (backend.name === 'postgres')
      test('postgres: a role that may only read and write the tables of a schema its owner migrated runs the store; a migration it may not apply is refused, naming it and what to do', async (t) => {
        const place = await backend.place(t);
        const role = `proxy_role_${randomBytes(4).toString('hex')}`;
        const admin = new pg.Client({ connectionString: PG_URL });
        await admin.connect();
        t.after(async () => {
          await admin.query(`DROP OWNED BY ${role}`).catch(() => undefined);
          await admin.query(`DROP ROLE IF EXISTS ${role}`);
          await admin.end();
        });
        await (await place.open()).close();
        await admin.query(`CREATE ROLE ${role} LOGIN`);
        for (const grant of [
          `GRANT USAGE ON SCHEMA ${place.schema} TO ${role}`,
          `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${place.schema} TO ${role}`,
          `GRANT USAGE ON ALL SEQUENCES IN SCHEMA ${place.schema} TO ${role}`,
        ])
          await admin.query(grant);
        const url = new URL(PG_URL);
        url.username = role;
        url.password = '';
        const open = () => openPostgresStore({ url: url.toString(), schema: place.schema, poolSize: 2 });
        // It had been refused: 'permission denied for schema', by CREATE TABLE IF NOT EXISTS schema_migrations.
        const store = await open();
        try {
          await store.createJob(job());
          const [held] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 10_000 });
          assert.ok(held);
          assert.equal(await store.completeJob(held.id, held.leaseToken, { outputText: 'ok', usage: null, response: {} }), true);
          await store.checkpoint();
          assert.equal((await store.countByStatus()).completed, 1);
        } finally {
          await store.close();
        }
        // As a release with a migration more finds the schema.
        await admin.query(`DROP TABLE ${place.schema}.counter_models`);
        await admin.query(`DELETE FROM ${place.schema}.schema_migrations WHERE name = '0010_counter_models_compatible.sql'`);
        await assert.rejects(open(), {
          message: `migration 0010_counter_models_compatible.sql cannot be applied by this role (permission denied for schema ${place.schema}): start either program once with a DATABASE_URL whose role owns schema ${place.schema}, which applies it, then go on with this one`,
        });
      });

    // PostgreSQL only: SQLite's writes take turns, so no two admit a model at once.
    if (backend.name === 'postgres')
      test("postgres: a create whose model another transaction is admitting waits for it and counts under the model's own label", async (t) => {
        const place = await backend.place(t);
        const store = await place.open();
        const other = await sqlClient(place.own, place.schema);
        await other.query('BEGIN');
        await other.query("INSERT INTO counter_models (model) VALUES ('raced')");
        // The create's statement began without the model and meets the other's row on its insert.
        const created = store.createJob(job({ model: 'raced' }));
        const watching = await sqlClient(place.own);
        const waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO counter_models%'";
        await eventually(async () => (await watching.query(waiting)).rowCount, 5000);
        await other.query('COMMIT');
        await created;
        await store.checkpoint();
        const labels = (await store.readCounters()).filter((x) => x.name === 'jobs_created_total').map((x) => x.labels.model);
        assert.deepEqual(labels, ['raced']);
      });

    // PostgreSQL only: SQLite has no listening connection to lose.
    if (backend.name === 'postgres')
      test('postgres: a dropped LISTEN connection is replaced, and notifications flow again', async (t) => {
        const place = await backend.place(t);
        const writer = await place.open();
        const watcher = await place.open();
        await listening(writer);
        await listening(watcher);
        const admin = await sqlClient((close) => t.after(close));
        const killed = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [`proxy-listener:${place.schema}`]);
        assert.equal(killed.rowCount, 2, "both stores' listeners were cut");
        await new Promise((r) => setTimeout(r, 1500));
        await listening(watcher);
        const before = await watcher.changeCounter();
        await writer.createJob(job());
        const until = Date.now() + 1000;
        while ((await watcher.changeCounter()) === before && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
        assert.notEqual(await watcher.changeCounter(), before, 'the watcher heard the write on its new connection');
      });

    // PostgreSQL only: SQLite's data_version moves with every commit of another connection.
    if (backend.name === 'postgres')
      test("postgres: a job queued or finished notifies this schema's listeners; a claim, an empty claim and a lease renewal do not", async (t) => {
        const place = await backend.place(t);
        const store = await place.open();
        const heard: string[] = [];
        const listening = await sqlClient(place.own);
        listening.on('notification', (msg) => heard.push(msg.payload ?? ''));
        await listening.query('LISTEN proxy_jobs');
        // Notifications from this schema only: other tests' schemas notify on the same channel.
        const after = async (what: string, write: () => Promise<unknown>) => {
          const before = heard.filter((p) => p === place.schema).length;
          await write();
          // Delivered after the commit, asynchronously: a quiet moment says none came.
          await new Promise((r) => setTimeout(r, 300));
          return { what, notified: heard.filter((p) => p === place.schema).length - before };
        };
        const created = await after('create', () => store.createJob(job()));
        let claimed: ClaimedJob | undefined;
        const claim = await after('claim', async () => ([claimed] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 })));
        assert.ok(claimed, 'the job was claimed');
        const empty = await after('empty claim', () => store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 }));
        const held = claimed;
        const renewal = await after('lease renewal', () => store.renewLease(held.id, held.leaseToken, 60_000));
        const retried = await after('retry', () => store.retryJob(held.id, held.leaseToken, store.now(), { code: 'upstream_error', message: 'try again' }));
        const [again] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
        const completed = await after('completion', () => store.completeJob(again!.id, again!.leaseToken, { outputText: 'ok', usage: null, response: { ok: true } }));
        assert.deepEqual(
          [created, claim, empty, renewal, retried, completed].map(({ what, notified }) => `${what}: ${notified > 0 ? 'notified' : 'silent'}`),
          ['create: notified', 'claim: silent', 'empty claim: silent', 'lease renewal: silent', 'retry: notified', 'completion: notified'],
        );
      });

    // PostgreSQL only: SQLite's plans are checked in sqlite-store.test.ts.
    if (backend.name === 'postgres')
      test('postgres: on a table never analyzed, with 4,000 jobs queued, the claim and the expiry scan walk their index in order and sort nothing, and the rebase after a clock step reads its index too', async (t) => {
        const place = await backend.place(t);
        const store = await place.open();
        const client = await sqlClient(place.own, place.schema, SESSION_SETTINGS);
        // As a new installation's first minutes, or a backlog that came since autovacuum last looked.
        await client.query('ALTER TABLE jobs SET (autovacuum_enabled = false)');
        for (let i = 0; i < 4000; i += 500) await Promise.all(Array.from({ length: 500 }, () => store.createJob(job())));
        const analyzed = await client.query("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'jobs'", [place.schema]);
        assert.deepEqual(analyzed.rows, [{ last_analyze: null, last_autoanalyze: null }]);
        // The store names its statements, so PostgreSQL may settle on a generic plan, made without the
        // values, after five runs: both kinds are checked, the custom plan for this run's values and the
        // generic plan forced.
        // PostgreSQL before 12 has no plan_cache_mode: there the custom plan alone is checked.
        const forcible = (await client.query("SELECT 1 FROM pg_settings WHERE name = 'plan_cache_mode'")).rowCount === 1;
        if (!forcible) t.diagnostic('this PostgreSQL cannot force a generic plan (plan_cache_mode came in 12): the custom plans alone are checked');
        const plans = async (sql: string) => {
          const text = async () => (await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, [Date.now(), 8])).rows.map((r) => r['QUERY PLAN']).join('\n');
          const custom = await text();
          if (!forcible) return [custom];
          await client.query('SET plan_cache_mode = force_generic_plan');
          try {
            return [custom, await text()];
          } finally {
            await client.query('RESET plan_cache_mode');
          }
        };
        // The statements of pg-job-store.ts, their SET lists shortened.
        const claim = await plans(`UPDATE jobs SET status = 'in_progress'
      WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= $1 AND expires_at + 0 > $1
                    ORDER BY run_after, seq LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING *`);
        const expire = await plans(`UPDATE jobs SET status = 'expired'
      WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND expires_at <= $1
                    ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING model`);
        for (const plan of claim) {
          assert.match(plan, /Index Scan using jobs_queued_due on jobs/);
          assert.doesNotMatch(plan, /Sort|Bitmap|Seq Scan/);
        }
        for (const plan of expire) {
          assert.match(plan, /Index Scan using jobs_queued_expiry on jobs/);
          assert.doesNotMatch(plan, /Sort|Bitmap|Seq Scan/);
        }
        // The rebase after a clock step, at every worker's pass and housekeeping: only the due times ahead of now.
        const rebase = await plans(`UPDATE jobs SET run_after = run_after - (updated_at - $1), updated_at = $1
      WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND run_after > $1 AND updated_at > $1
                    LIMIT $2 FOR UPDATE SKIP LOCKED)`);
        for (const plan of rebase) {
          assert.match(plan, /Index Scan using jobs_queued_due(_in_order)? on jobs/);
          assert.doesNotMatch(plan, /Seq Scan/);
        }
      });

    test('a later release migrating the database while the store runs: a compatible migration is told once; after one that is not, nothing more is written (unavailable), and the program is told to stop, once', async (t) => {
      const place = await backend.place(t);
      const later: string[][] = [];
      const lost: string[] = [];
      const store = await place.open(undefined, { onLaterMigrations: (names) => later.push(names), onLost: (message) => lost.push(message) });
      await store.createJob(job());
      await place.sql("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9001, '9001_later_index_compatible.sql', 0)");
      await store.createJob(job());
      await eventually(async () => later.length > 0, 5000);
      // A second of looks (LATER_CHECK_MS, FILE_CHECK_MS) and writes tells nothing more.
      for (let i = 0; i < 4; i++) {
        await store.createJob(job());
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      assert.deepEqual(later, [['9001_later_index_compatible.sql']]);
      assert.deepEqual(lost, []);

      await place.sql("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9002, '9002_later_change.sql', 0)");
      // SQLite's writes look first inside their own transaction, so the very next one is refused;
      // PostgreSQL's store finds it within its next look.
      if (backend.name === 'postgres') await eventually(async () => lost.length > 0, 5000);
      const refusal = (err: unknown) => (err as { code?: string }).code === LATER_RELEASE_CODE && isDatabaseUnavailable(err) && (err as Error).message === lost[0];
      await assert.rejects(store.createJob(job()), refusal);
      await assert.rejects(store.claimJobs({ workerId: 'w', limit: 10, leaseMs: 60_000 }), refusal);
      await assert.rejects(store.consumeRateLimits([{ key: 'k', intervalMs: 1000, toleranceMs: 0 }]), refusal);
      await assert.rejects(store.ping(), refusal);
      assert.deepEqual(lost, [laterReleaseMessage(place.database, '9002_later_change.sql')]);
      await new Promise((resolve) => setTimeout(resolve, 1200));
      assert.equal(lost.length, 1, 'told once');
      assert.deepEqual(await place.sql('SELECT status, COUNT(*) AS n FROM jobs GROUP BY status'), [{ status: 'queued', n: backend.name === 'postgres' ? '6' : 6 }]);
    });

    // PostgreSQL only: the store's statements are named (prepared once per connection), and a newer
    // version's migration may add a column while this process runs.
    if (backend.name === 'postgres')
      test('postgres: a column added to the jobs table while the store runs fails none of its statements', async (t) => {
        const place = await backend.place(t);
        const store = await place.open(clock().now);
        const seed = await store.createJob(job());
        for (let i = 0; i < 3; i++) await store.createJob(job());
        // With the clock standing still, the first claim sweeps in a transaction and the second runs as
        // one named statement, as the one after the change will.
        for (let i = 0; i < 2; i++) assert.equal((await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 })).length, 1);
        // Every pooled connection (poolSize 4) prepares the lookup and the listing.
        for (let i = 0; i < 3; i++) await Promise.all(Array.from({ length: 4 }, () => store.getJob(seed.job.id)));
        await Promise.all(Array.from({ length: 4 }, () => store.listJobs({ limit: 10 })));
        const admin = await sqlClient(place.own, place.schema);
        await admin.query('ALTER TABLE jobs ADD COLUMN added_later TEXT');
        const settled = await Promise.allSettled([
          store.getJob(seed.job.id),
          store.listJobs({ limit: 10 }),
          store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 }),
          store.getJob(seed.job.id),
        ]);
        assert.deepEqual(
          settled.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok')),
          ['ok', 'ok', 'ok', 'ok'],
        );
        const [read, listed, claimed] = settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [JobRecord | null, JobRecord[], ClaimedJob[]];
        assert.equal(read?.id, seed.job.id);
        assert.equal(listed.length, 4);
        assert.equal(claimed.length, 1);
      });

    // PostgreSQL only: a transaction's statements are named too (a claim that comes back short sweeps
    // in one), and its connection may have prepared them before the column was added.
    if (backend.name === 'postgres')
      test('postgres: a column added to the jobs table while the store runs fails no claim that sweeps in a transaction', async (t) => {
        const place = await backend.place(t);
        const store = await place.open(clock().now);
        for (let i = 0; i < 2; i++) await store.createJob(job());
        // Four claims at once, each short, each sweeping: every pooled connection (poolSize 4) may prepare the sweep.
        const before = await Promise.all(Array.from({ length: 4 }, () => store.claimJobs({ workerId: 'w', limit: 10, leaseMs: 60_000 })));
        assert.equal(before.flat().length, 2);
        await store.createJob(job());
        const admin = await sqlClient(place.own, place.schema);
        await admin.query('ALTER TABLE jobs ADD COLUMN added_later TEXT');
        const settled = await Promise.allSettled(Array.from({ length: 4 }, () => store.claimJobs({ workerId: 'w', limit: 10, leaseMs: 60_000 })));
        assert.deepEqual(
          settled.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok')),
          ['ok', 'ok', 'ok', 'ok'],
        );
        assert.equal(settled.flatMap((r) => (r as PromiseFulfilledResult<ClaimedJob[]>).value).length, 1);
      });

    // PostgreSQL only: the counts by status are the folded totals plus the changes appended since.
    if (backend.name === 'postgres')
      test(`postgres: a count by status that finds more than ${FOLD_AFTER_CHANGES} changes appended since the last fold folds them, and counts the same after`, async (t) => {
        const place = await backend.place(t);
        const store = await place.open();
        for (let i = 0; i < 3; i++) await store.createJob(job());
        const admin = await sqlClient(place.own, place.schema);
        const appended = async () => Number((await admin.query<{ n: string }>('SELECT count(*) AS n FROM job_count_deltas')).rows[0]?.n);
        // As many changes as a busy minute leaves, each moving nothing.
        await admin.query("INSERT INTO job_count_deltas (status, d) SELECT 'queued', 0 FROM generate_series(1, $1::int)", [FOLD_AFTER_CHANGES]);
        assert.ok((await appended()) > FOLD_AFTER_CHANGES);
        assert.equal((await store.countByStatus()).queued, 3);
        await eventually(async () => (await appended()) === 0);
        const [row] = (await admin.query<{ n: string }>("SELECT n FROM job_counts WHERE status = 'queued'")).rows;
        assert.equal(Number(row?.n), 3, 'folded into the totals');
        assert.deepEqual(await store.countByStatus(), { queued: 3, in_progress: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 });
      });

    // PostgreSQL only: its hosts' clocks may disagree, and the store's stamps are compared across them.
    if (backend.name === 'postgres')
      test("postgres: every host goes by the server's clock: one whose clock runs a minute ahead neither takes a job whose lease another holds nor misses a live worker", async (t) => {
        const place = await backend.place(t);
        const open = async (options: Partial<Parameters<typeof openPostgresStore>[0]>) => {
          const store = await openPostgresStore({ url: PG_URL, schema: place.schema, poolSize: 2, fallbackPollMs: 60_000, ...options });
          place.own(() => store.close());
          return store;
        };
        const here = await open({});
        const reports: number[] = [];
        const ahead = await open({ localNow: () => Date.now() + 60_000, onClockOffset: (ms) => reports.push(ms) });
        // The server runs on this machine: its clock is this one's.
        assert.ok(Math.abs(ahead.now() - Date.now()) < 250, `the host a minute ahead reads ${ahead.now() - Date.now()} ms off the server`);
        assert.equal(reports.length, 1);
        assert.ok(Math.abs(reports[0]! + 60_000) < 250, `reported ${reports[0]} ms`);
        assert.equal(ahead.clockOffsetMs(), reports[0], 'the offset it goes by is the one reported');
        assert.ok(Math.abs(here.clockOffsetMs()) < 250, `the host on the server's clock is ${here.clockOffsetMs()} ms off`);

        const { job: held } = await here.createJob(job());
        assert.equal((await here.claimJobs({ workerId: 'here', limit: 1, leaseMs: 30_000 })).length, 1);
        await here.recordHeartbeat({ id: 'here', host: 'h1', pid: 1, startedAt: here.now(), lastSeenAt: here.now(), jobsDone: 0, clockOffsetMs: 0 });
        assert.deepEqual(await ahead.claimJobs({ workerId: 'ahead', limit: 1, leaseMs: 30_000 }), [], 'the lease, 30 s by the server, is not lapsed');
        assert.deepEqual(
          (await ahead.listWorkers(ahead.now() - WORKER_ALIVE_MS)).map((w) => w.id),
          ['here'],
        );

        // What a host going by its own clock did: the lease looked lapsed, and the job was taken mid-call.
        const ownClock = await open({ now: () => Date.now() + 60_000 });
        const taken = await ownClock.claimJobs({ workerId: 'own-clock', limit: 1, leaseMs: 30_000 });
        assert.deepEqual(
          taken.map((j) => j.id),
          [held.id],
        );
      });

    // PostgreSQL only: a restart or a failover closes every pooled connection at once, and the pool
    // hears of it only when its event loop next reads those sockets.
    if (backend.name === 'postgres')
      test('postgres: connections the server closed while they sat idle in the pool (a restart, a failover) fail none of the next queries', async (t) => {
        const place = await backend.place(t);
        // A clock that stands still: the second claim below skips the expiry scan and runs as one
        // statement on any pooled connection, not in a transaction of its own.
        const store = await place.open(clock().now);
        const seed = await store.createJob(job());
        await store.createJob(job());
        assert.equal((await store.claimJobs({ workerId: 'w0', limit: 1, leaseMs: 60_000 })).length, 1);
        // Four statements at once: the pool (poolSize 4) holds four idle connections after.
        await Promise.all(Array.from({ length: 4 }, () => store.getJob(seed.job.id)));
        // Closed from psql, synchronously, then a pause for the backends to exit: the closings sit
        // unread in this process's sockets when the next queries go out, as they do for a busy API.
        const terminate = `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'proxy:${place.schema}'`;
        assert.equal(execFileSync('psql', [PG_URL, '-Atc', terminate], { encoding: 'utf8' }).trim(), '4');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
        const created = store.createJob(job());
        const read = store.getJob(seed.job.id);
        const claimed = store.claimJobs({ workerId: 'w1', limit: 1, leaseMs: 60_000 });
        const listed = store.listJobs({ limit: 10 });
        // Settled, not raced: a failure leaves no statement running while the store closes.
        const settled = await Promise.allSettled([created, read, claimed, listed]);
        assert.deepEqual(
          settled.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok')),
          ['ok', 'ok', 'ok', 'ok'],
        );
        const [a, b, c, d] = await Promise.all([created, read, claimed, listed]);
        assert.equal(a.created, true);
        assert.equal(b?.id, seed.job.id);
        assert.equal(c.length, 1, 'the claim ran');
        assert.ok(d.some((j) => j.id === seed.job.id));
        const counts = await store.countByStatus();
        assert.deepEqual([counts.queued, counts.in_progress], [1, 2], 'the new job stored once, both claims held');
      });

    if (backend.name === 'postgres')
      test('postgres: the listening connection opens when the change counter is first read, and closes once it has not been read for a while', async (t) => {
        const name = `proxy-listener:listen_${randomBytes(4).toString('hex')}`;
        const listener = createChangeListener({ connection: { connectionString: PG_URL }, schema: name.slice('proxy-listener:'.length), fallbackPollMs: 50, idleMs: 400 });
        t.after(() => listener.close());
        const admin = await sqlClient((close) => t.after(close));
        const connections = async () => Number((await admin.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1', [name])).rows[0]?.n);
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(await connections(), 0, 'nothing listens before the counter is read');
        listener.counter();
        await eventually(async () => (await connections()) === 1, 5000, 20);
        // Read more often than the idle time: it stays open.
        for (let i = 0; i < 8; i++) {
          listener.counter();
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(await connections(), 1, 'still listening while read');
        await eventually(async () => (await connections()) === 0, 5000, 20);
        listener.counter();
        await eventually(async () => (await connections()) === 1, 5000, 20);
        await listener.close();
        await eventually(async () => (await connections()) === 0, 5000, 20);
      });

    if (backend.name === 'postgres')
      test('postgres: a statement on a pooled connection that stops answering without an error fails as unavailable after the query timeout, and the next runs on a new connection', async (t) => {
        // The relay closes first (hooks run in the order added): a pool ending a silenced connection
        // would wait for its answer.
        const proxy = await startSilenceableProxy();
        t.after(() => proxy.close());
        const place = await backend.place(t);
        const store = await openPostgresStore({ url: proxy.url, schema: place.schema, poolSize: 4, fallbackPollMs: 60_000, queryTimeoutMs: 500 });
        place.own(() => store.close());
        const { job: created } = await store.createJob(job());
        assert.equal((await store.getJob(created.id))?.id, created.id);

        // `what`, sent on a silenced connection, fails as unavailable (503, not a fault) within 3 s.
        const failsUnavailable = async (what: string, run: () => Promise<unknown>) => {
          const began = Date.now();
          const failed = await within(run(), 5000, what).then(
            () => assert.fail(`${what} on a silent connection was answered`),
            (err: unknown) => err,
          );
          assert.ok(isDatabaseUnavailable(failed), `${what} failed as unavailable: ${String(failed)}`);
          assert.ok(Date.now() - began < 3000, `${what} failed ${Date.now() - began} ms after it was sent (timeout 500 ms)`);
        };
        proxy.silence();
        await failsUnavailable('a lookup', () => store.getJob(created.id));
        // Each connection that died this way is destroyed as its statement times out; new ones answer.
        const read = await eventually(async () => within(store.getJob(created.id), 5000, 'a lookup').catch(() => null), 15_000, 10);
        assert.equal(read.id, created.id);
        const [claimed] = await within(store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 }), 5000, 'a claim');
        assert.equal(claimed?.id, created.id, 'a transaction runs too');

        // A transaction on a connection that goes silent fails the same way, and is not run again.
        proxy.silence();
        await failsUnavailable('a claim', () => store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 }));
        const counts = await eventually(async () => within(store.countByStatus(), 5000, 'a count').catch(() => null), 15_000, 10);
        assert.deepEqual([counts.queued, counts.in_progress], [0, 1], 'the job stays held by the first claim');
      });

    if (backend.name === 'postgres')
      test('postgres: a database or role whose transactions default to serializable: two stores claiming together, and creating together, never fail to serialize', async (t) => {
        const place = await backend.place(t);
        // As `ALTER DATABASE … SET default_transaction_isolation = serializable` sets it for every session.
        const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent('-c default_transaction_isolation=serializable')}`;
        const open = async () => {
          const store = await openPostgresStore({ url, schema: place.schema, poolSize: 4, fallbackPollMs: 60_000 });
          place.own(() => store.close());
          return store;
        };
        const a = await open();
        const b = await open();
        // The statements sent alone had run serializable: 'could not serialize access' (500s).
        await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).createJob(job())));
        const seen = new Set<string>();
        for (;;) {
          const [x, y] = await Promise.all([a.claimJobs({ workerId: 'a', limit: 7, leaseMs: 60_000 }), b.claimJobs({ workerId: 'b', limit: 7, leaseMs: 60_000 })]);
          if (x.length + y.length === 0) break;
          for (const claimed of [...x, ...y]) {
            assert.ok(!seen.has(claimed.id), `job ${claimed.id} claimed twice`);
            seen.add(claimed.id);
          }
        }
        assert.equal(seen.size, 100);
      });

    if (backend.name === 'postgres')
      test("postgres: a statement the server cancels (a statement_timeout the URL sets, here; an administrator's pg_cancel_backend) fails as unavailable, and the next runs", async (t) => {
        const place = await backend.place(t);
        const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent('-c statement_timeout=300')}`;
        const store = await openPostgresStore({ url, schema: place.schema, poolSize: 2, fallbackPollMs: 60_000 });
        place.own(() => store.close());
        const { job: created } = await store.createJob(job());
        // A lock held elsewhere: the store's statements wait for it, and the statement_timeout
        // (300 ms) comes before the store's lock_timeout (5 s). 57014 had been a fault: 500 for a
        // create, and an outcome's write not retried, its job called again once its lease lapsed.
        const admin = await sqlClient(place.own, place.schema);
        await admin.query('BEGIN');
        await admin.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
        const failed = await within(store.getJob(created.id), 5000, 'a lookup behind the lock').then(
          () => assert.fail('the lookup was answered behind an exclusive lock'),
          (err: unknown) => err,
        );
        assert.equal((failed as { code?: string }).code, '57014', String(failed));
        assert.ok(isDatabaseUnavailable(failed), `the cancelled lookup failed as unavailable: ${String(failed)}`);
        await admin.query('ROLLBACK');
        assert.equal((await store.getJob(created.id))?.id, created.id);
      });

    if (backend.name === 'postgres')
      test('postgres: a claim whose COMMIT never reaches the server (its process frozen or cut off) holds its job only until the server ends the idle transaction; then another worker claims the job, and the stalled claim fails as unavailable', async (t) => {
        const proxy = await startSilenceableProxy();
        t.after(() => proxy.close());
        const place = await backend.place(t);
        const other = await place.open();
        // Shortened from IDLE_IN_TRANSACTION_MS, which SESSION_SETTINGS holds.
        const idleInTransactionMs = 1000;
        const stalled = await openPostgresStore({ url: proxy.url, schema: place.schema, poolSize: 4, fallbackPollMs: 60_000, idleInTransactionMs });
        place.own(() => stalled.close());
        const { job: created } = await other.createJob(job());

        proxy.stallCommits();
        const began = Date.now();
        const claim = stalled.claimJobs({ workerId: 'stalled', limit: 1, leaseMs: 60_000 }).then(
          () => assert.fail('a claim whose COMMIT never arrived was answered'),
          (err: unknown) => err,
        );
        const admin = await sqlClient(place.own);
        // Its claim made, its COMMIT held back: the server holds the transaction open, the job's row
        // locked. The transaction is idle between its statements too (after BEGIN, the expiry scan,
        // the lapsed-lease read), before the claim has locked the row: it counts once the row's
        // version others see names it as its updater (xmax, read without taking a lock), whatever
        // the claim's statements say.
        await eventually(
          async () => {
            const { rows } = await admin.query(
              `SELECT 1 FROM pg_stat_activity a JOIN "${place.schema}".jobs j ON j.xmax = a.backend_xid
                WHERE a.application_name = $1 AND a.state = 'idle in transaction' AND j.id = $2`,
              [`proxy:${place.schema}`, created.id],
            );
            return rows.length === 1;
          },
          5000,
          10,
        );
        assert.deepEqual(await other.claimJobs({ workerId: 'other', limit: 1, leaseMs: 60_000 }), [], 'locked by the stalled claim, the job is passed over');

        const failed = await within(claim, 10_000, 'the stalled claim');
        assert.ok(isDatabaseUnavailable(failed), `the stalled claim failed as unavailable: ${String(failed)}`);
        const [claimed] = await eventually(
          async () => {
            const jobs = await other.claimJobs({ workerId: 'other', limit: 1, leaseMs: 60_000 });
            return jobs.length > 0 && jobs;
          },
          10_000,
          50,
        );
        const waited = Date.now() - began;
        assert.equal(claimed?.id, created.id);
        assert.equal(claimed?.attempts, 1, 'nothing of the stalled claim was written');
        assert.ok(waited >= idleInTransactionMs && waited < idleInTransactionMs + 5000, `claimed ${waited} ms after the stall`);
        t.diagnostic(`claimed by the other worker ${waited} ms after the stall (timeout ${idleInTransactionMs} ms)`);
      });

    if (backend.name === 'postgres')
      test("postgres: a start that finds another process's migrations under way says who holds their lock, waits, and opens once it is let go, past a statement_timeout (and on PostgreSQL 17 and later a transaction_timeout) the URL sets", async (t) => {
        const place = await backend.place(t);
        const holder = await sqlClient(place.own);
        await holder.query("SET application_name = 'another host'");
        await holder.query('SELECT pg_advisory_lock(hashtext($1))', [`chat-async-proxy:${place.schema}`]);
        const { rows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        const told: string[] = [];
        let opened = false;
        // A statement_timeout, as operators set one for a role against runaway queries, had cancelled
        // the wait: 'canceling statement due to statement timeout'.
        // PostgreSQL 17's transaction_timeout too, where the server has it (it ended the session).
        const { rows: version } = await holder.query<{ n: number }>("SELECT current_setting('server_version_num')::int AS n");
        const hasTransactionTimeout = version[0]!.n >= 170000;
        if (!hasTransactionTimeout) t.diagnostic('this PostgreSQL has no transaction_timeout (it came in 17): statement_timeout alone is set');
        const timeouts = `-c statement_timeout=300${hasTransactionTimeout ? ' -c transaction_timeout=300' : ''}`;
        const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(timeouts)}`;
        const opening = openPostgresStore({ url, schema: place.schema, poolSize: 4, fallbackPollMs: 60_000, onMigrationWait: (who) => void told.push(who) }).then((store) => {
          opened = true;
          place.own(() => store.close());
          return store;
        });
        await eventually(async () => told.length === 1, 5000, 10);
        assert.match(told[0]!, new RegExp(`^PostgreSQL backend pid ${rows[0]!.pid} \\(application another host( from [0-9a-f.:]+| over a local socket)\\), idle for \\d+ s$`));
        await new Promise((r) => setTimeout(r, 600));
        assert.equal(opened, false, 'the start waits while the lock is held');
        await holder.query('SELECT pg_advisory_unlock(hashtext($1))', [`chat-async-proxy:${place.schema}`]);
        const store = await within(opening, 10_000, 'the start');
        assert.equal((await store.createJob(job())).created, true);
        assert.equal(told.length, 1);
      });

    if (backend.name === 'postgres')
      test("postgres: a schema holding another application's tables, with or without a schema_migrations of its own, is refused at start and left as it was", async (t) => {
        const place = await backend.place(t);
        const admin = await sqlClient(place.own);
        await admin.query(`CREATE SCHEMA ${place.schema}`);
        await admin.query(`CREATE TABLE ${place.schema}.users (id int PRIMARY KEY)`);
        const open = () =>
          openPostgresStore({ url: PG_URL, schema: place.schema, poolSize: 2, fallbackPollMs: 60_000 }).then((store) => {
            place.own(() => store.close());
            return store;
          });
        await assert.rejects(open(), { message: `schema ${place.schema} holds another application's tables (users): set DATABASE_SCHEMA to a schema of this program's own` });
        // As Rails keeps one: a varchar version and nothing else.
        await admin.query(`CREATE TABLE ${place.schema}.schema_migrations (version varchar PRIMARY KEY)`);
        await admin.query(`INSERT INTO ${place.schema}.schema_migrations VALUES ('20240101000000')`);
        await assert.rejects(open(), {
          message: `schema ${place.schema} holds another application's tables (schema_migrations, users): set DATABASE_SCHEMA to a schema of this program's own (its schema_migrations is not this program's)`,
        });
        const { rows } = await admin.query<{ name: string }>(
          `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1`,
          [place.schema],
        );
        assert.deepEqual(
          rows.map((row) => row.name),
          ['schema_migrations', 'users'],
          'no table of this program was made',
        );
        // This program's own schema opens as ever, made and then again.
        const ours = await backend.place(t);
        assert.equal((await (await ours.open()).createJob(job())).created, true);
        assert.equal((await (await ours.open()).countByStatus()).queued, 1);
        // An extension's own table (as PostGIS's spatial_ref_sys in public) is no application's: made an
        // extension's member here with hstore, which has no table of its own.
        const withExtension = await backend.place(t);
        const { rows: hstore } = await admin.query<{ installed: boolean }>("SELECT installed_version IS NOT NULL AS installed FROM pg_available_extensions WHERE name = 'hstore'");
        if (hstore[0]?.installed !== false) return t.diagnostic(`hstore is ${hstore[0] ? 'installed already' : 'not available'}: the extension table case was not run`);
        await admin.query(`CREATE SCHEMA ${withExtension.schema}`);
        await admin.query(`CREATE EXTENSION hstore SCHEMA ${withExtension.schema}`);
        await admin.query(`CREATE TABLE ${withExtension.schema}.spatial_ref_sys (srid int PRIMARY KEY)`);
        await admin.query(`ALTER EXTENSION hstore ADD TABLE ${withExtension.schema}.spatial_ref_sys`);
        assert.equal((await (await withExtension.open()).createJob(job())).created, true);
      });

    if (backend.name === 'postgres')
      test('postgres: a listening connection that stops answering without an error is found by its ping and replaced; one that answers moves the counter only when told', async (t) => {
        const proxy = await startSilenceableProxy();
        t.after(() => proxy.close());
        const schema = `ping_${randomBytes(4).toString('hex')}`;
        const listener = createChangeListener({ connection: { connectionString: proxy.url }, schema, fallbackPollMs: 60_000, pingMs: 50, pingTimeoutMs: 1000 });
        t.after(() => listener.close());
        listener.subscribe(() => undefined);
        const admin = await sqlClient((close) => t.after(close));
        const notify = () => admin.query("SELECT pg_notify('proxy_jobs', $1)", [schema]);
        // A listener's backend opened since `since` has run its LISTEN (and maybe pings since): a
        // notification from now on reaches it, and the counter moves for nothing else meanwhile.
        const listening = (since: Date) =>
          eventually(
            async () => {
              const { rows } = await admin.query<{ query: string; state: string }>('SELECT query, state FROM pg_stat_activity WHERE application_name = $1 AND backend_start > $2', [
                `proxy-listener:${schema}`,
                since,
              ]);
              return rows.some((r) => r.state === 'idle' && ['LISTEN proxy_jobs', 'SELECT 1'].includes(r.query));
            },
            5000,
            10,
          );
        // The listener moves the counter when it hears LISTEN's answer, a moment after the server shows
        // it done: the counter must stay put for a while before a notification is sent, or that move
        // could stand in for the notification's.
        const settled = async () => {
          let last = listener.counter();
          let since = Date.now();
          while (Date.now() - since < 200) {
            await new Promise((r) => setTimeout(r, 10));
            if (listener.counter() !== last) [last, since] = [listener.counter(), Date.now()];
          }
        };
        const heard = async (what: string, since: Date) => {
          await listening(since);
          await settled();
          const before = listener.counter();
          await notify();
          await eventually(async () => listener.counter() > before, 2000, 10).catch(() => assert.fail(`${what}: the notification was not heard`));
        };
        await eventually(async () => proxy.connections() === 1, 5000, 10);
        await heard('listening', new Date(0));

        // Answered pings (a dozen in this wait) move nothing. (The ping timeout is long enough that a
        // busy machine's slow answer is not taken for a lost connection.)
        const quiet = listener.counter();
        await new Promise((r) => setTimeout(r, 600));
        assert.equal(listener.counter(), quiet, 'the counter stayed while nothing was committed');

        // The connection goes silent: no byte passes either way, and neither end hears of it.
        proxy.silence();
        const silencedAt = Date.now();
        const lostMoved = listener.counter();
        await eventually(async () => proxy.connections() === 2, 8000, 10);
        const found = Date.now() - silencedAt;
        assert.ok(found >= 1000 && found < 5000, `replaced ${found} ms after it went silent (ping timeout 1 s, retry after 1 s)`);
        assert.ok(listener.counter() > lostMoved, 'the loss moved the counter: readers look once');
        await heard('listening again', new Date(silencedAt));

        // A server that accepts the connection but never answers is given up on too.
        proxy.silence();
        proxy.silenceNew(true);
        await eventually(async () => proxy.connections() === 4, 12_000, 10);
        const answering = new Date();
        proxy.silenceNew(false);
        await eventually(async () => proxy.connections() === 5, 12_000, 10);
        await heard('after a connection that never opened', answering);
      });
  });
}
