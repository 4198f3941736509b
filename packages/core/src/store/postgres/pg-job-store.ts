import pg from 'pg';
import { CLAIM_EXPIRE_LIMIT, createExpirySpacing } from '../expiry-spacing.js';
import { inBatches } from '../in-batches.js';
import { EXPIRED_ERROR, WORKER_LOST_ERROR, byQueueOrder, queuedJob, resultColumns, toClaimedJob, toJob, toOutcome, toRow, type JobRow, type OutcomeRow } from '../job-row.js';
import { toHeartbeat, type WorkerRow } from '../worker-row.js';
import { CLOCK_STEP_SLACK_MS, FINAL_STATUSES, type ClaimedJob, type JobStatus, type JobStore, type QueueCounts } from '../types.js';
import { MODEL_LABELS_MAX, attemptBumps } from '../counter-labels.js';
import { isDatabaseUnavailable } from '../unavailable.js';
import { migratePostgres, watchForLaterRelease, type LaterReleaseWatch } from './migrate.js';
import { query, timeCheckouts, withClient } from './checkout.js';
import { createBatchedWrites, pgText, type Queryable as Q } from './batched-writes.js';
import { LISTEN_FALLBACK_MS, createChangeListener } from './change-listener.js';
import { CLOCK_SYNC_MS, createDbClock, type DbClock } from './db-clock.js';
import { postgresConnection } from './connection-url.js';
import { settleTls } from './tls-fallback.js';
import { createUpstreamBudget } from './upstream-budget.js';
import { PgClient } from './pg-client.js';
import { assertSessionPerConnection } from './session-probe.js';

export interface PostgresStoreOptions {
  /** postgres://… connection string. */
  url: string;
  /** Schema to use (created if missing); tests give each file its own. */
  schema?: string;
  poolSize?: number;
  /** Milliseconds since the epoch; injected so tests control time (the server's clock is not read then). */
  now?: () => number;
  /** This host's clock, which the server's is measured against (db-clock.ts); tests give a host's that is off. */
  localNow?: () => number;
  /** Told when this host's clock is a second or more off the server's (db-clock.ts). */
  onClockOffset?: (offsetMs: number) => void;
  /** How often the change counter moves anyway, in case a notification was lost all the same (ms). */
  fallbackPollMs?: number;
  /** Told when the server closes an idle connection (a restart, a failover, an administrator). */
  onConnectionLost?: (err: Error) => void;
  /** QUERY_TIMEOUT_MS unless given (tests shorten it). */
  queryTimeoutMs?: number;
  /** IDLE_IN_TRANSACTION_MS unless given (tests shorten it). */
  idleInTransactionMs?: number;
  /** Told, with who holds it, when the start waits for another process's migrations. */
  onMigrationWait?: (holder: string) => void;
  /** Told the migrations a later release applied to the schema that this one runs on anyway. */
  onLaterMigrations?: (names: string[]) => void;
  /**
   * Told once, with why, when a later release migrated the schema past what this one runs on while
   * it ran (migration-files.ts): from then on the store refuses its work, and the program should stop.
   */
  onLost?: (message: string) => void;
}

/**
 * How often a running store asks whether a later release migrated its schema (one indexed query
 * returning no row): what this release wrote in between went to the later schema.
 */
export const LATER_CHECK_MS = 1000;

/**
 * A statement, or a transaction's statements together, not answered in this long fails as
 * unavailable (503 through the API; a worker backs off and claims again), and its connection is
 * destroyed (checkout.ts, timeCheckouts): a connection that died silently had held a statement
 * until TCP gave up, and a pool whose connections had all died that way held up every request and
 * claim of the process meanwhile. Far above any statement's own time here: locks are waited for 5
 * s at most (LOCK_TIMEOUT_MS), and work on many rows goes in batches. Migrations, which may wait
 * for another host's, run on a connection of their own without it.
 */
export const QUERY_TIMEOUT_MS = 30_000;

/**
 * How long a new connection may take to be answered, unless the URL's `connect_timeout` says (read
 * in connection-url.ts): a server that does not answer one (a network cut, a host gone, a port that
 * accepts and stays silent) fails the start, or the query that needed the connection (503
 * unavailable), instead of waiting for the kernel's TCP timeout (minutes) or, for a port that
 * accepts, for ever. pg-pool bounds a wait for a free pooled connection by the same time.
 */
const CONNECT_TIMEOUT_MS = 10_000;

// BIGINT columns hold Unix ms: well inside a double, so read them as numbers.
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** Changes appended to the counts by status past which a reader starts a fold (see foldSoon). */
export const FOLD_AFTER_CHANGES = 5000;

/** How long a statement waits for a lock before it fails (SQLite's busy_timeout is the same). */
export const LOCK_TIMEOUT_MS = 5000;

/**
 * How long the server lets one of the store's sessions sit inside a transaction without a statement
 * before it ends the session, and with it the transaction and its locks. The store sends a
 * transaction's statements back to back, so a gap this long means its process is frozen (SIGSTOP, a
 * paused VM) or cut off from the server. Until the session ends, the rows its transaction wrote
 * stay locked: other workers' claims pass them (SKIP LOCKED), so the jobs it was claiming wait, and
 * a write to one of them waits out lock_timeout and fails. Without this the session lasted as long
 * as the frozen process, or until the server's TCP keepalive saw the cut (two hours by default).
 * The process, running again, finds its session ended: what it sent fails as unavailable, and
 * nothing of the transaction was written.
 */
export const IDLE_IN_TRANSACTION_MS = 10_000;

/**
 * The settings of every session the store opens (`-c name=value`, as libpq's `options`).
 * - lock_timeout: a write that waits for a lock held elsewhere (an operator's transaction, a
 *   non-concurrent index build) fails after 5 s, as 503 unavailable, as SQLite's busy_timeout does,
 *   instead of holding the request and a pooled connection until the lock goes.
 * - enable_bitmapscan=off: each of the store's queries walks one index in its order and stops at a
 *   `LIMIT`, or looks rows up by key; none gains from a bitmap scan. But on a table not analyzed yet
 *   (a new installation's first minutes, before autovacuum has looked) the planner guessed a handful
 *   of queued rows, fewer than the claim's limit, chose a bitmap scan of a partial index and sorted
 *   what it returned: every claim read and sorted the whole queue to take its first jobs. A claim of
 *   64 took 43 ms of the server's time with 100,000 queued (its sort spilled to disk), 2.2 ms now.
 * - idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS.
 * - default_transaction_isolation=read committed: the statements sent alone (a create, an outcome,
 *   a rate-limit draw) are written for it, as the transactions that say so are. A database or role
 *   set to serializable (some organisations set it everywhere) failed them under load with
 *   'could not serialize access', as 500s.
 */
export const SESSION_SETTINGS = sessionSettings(IDLE_IN_TRANSACTION_MS);

function sessionSettings(idleInTransactionMs: number): string {
  return `-c lock_timeout=${LOCK_TIMEOUT_MS} -c idle_in_transaction_session_timeout=${idleInTransactionMs} -c enable_bitmapscan=off -c default_transaction_isolation=read\\ committed`;
}

/**
 * The settings above, with the schema, as each session's first statement. Sent at connect as the
 * `options` startup parameter they were refused by PgBouncer ("unsupported startup parameter:
 * options"), which README names as the way to put a pool in front of the server; PgBouncer's
 * `ignore_startup_parameters = options` would have dropped them, the schema with them.
 */
export function sessionSetup(schema: string, idleInTransactionMs: number): string {
  return `SET search_path TO "${schema}"; SET lock_timeout = ${LOCK_TIMEOUT_MS}; SET idle_in_transaction_session_timeout = ${idleInTransactionMs}; SET enable_bitmapscan = off; SET default_transaction_isolation = 'read committed'`;
}

/**
 * Opens the PostgreSQL job store: applies its migrations under an advisory lock, and LISTENs for job
 * changes while someone asks (change-listener.ts) so idle workers and long-poll watchers wake
 * without polling the table.
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<JobStore> {
  const schema = options.schema ?? 'public';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
  // The URL's own settings over the rest, as pg merges a connectionString; the store's session
  // settings are set by each session's first statement (sessionSetup), after any of the URL's own
  // (?options=-c …), so that the schema and the settings the store relies on win.
  const probeName = `proxy-probe:${schema}`;
  const connection = { types, ...(await settleTls(options.url, postgresConnection(options.url), { application_name: probeName, connectionTimeoutMillis: CONNECT_TIMEOUT_MS })) };
  const setup = sessionSetup(schema, options.idleInTransactionMs ?? IDLE_IN_TRANSACTION_MS);
  // pg-pool waits for a promise the hook returns, and a session whose settings failed is ended and
  // its checkout failed (its types say void).
  const onConnect = (client: pg.ClientBase) => client.query(setup);
  // A server that does not answer a connection fails it after CONNECT_TIMEOUT_MS, and one that
  // stops answering a statement, after QUERY_TIMEOUT_MS. Keepalive finds an idle connection
  // that died silently, but only after the system's keepalive time (two hours by default).
  const poolConfig = { application_name: `proxy:${schema}`, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, keepAlive: true, ...connection, onConnect, Client: PgClient };
  // Before anything is migrated: through a pool in transaction mode, migrations land anywhere.
  await assertSessionPerConnection({ ...poolConfig, application_name: probeName });
  const pool = new pg.Pool({ ...poolConfig, max: options.poolSize ?? 10 });
  const stopTimingCheckouts = timeCheckouts(pool, options.queryTimeoutMs ?? QUERY_TIMEOUT_MS);
  // An idle connection the server closes is reported on the pool, and an 'error' nobody listens to
  // ends the process: a PostgreSQL restart stopped every API and worker. The pool drops that
  // connection itself and the next query opens another; a query that was running fails on its own.
  pool.on('error', (err) => options.onConnectionLost?.(err));
  // Every statement goes through withClient, which runs it again when its pooled connection turns
  // out closed by a restart or a failover (checkout.ts). Each is named after its text, so a
  // connection parses and analyzes it once and then only binds and executes it; PostgreSQL still
  // plans each run for its values until a generic plan costs no more (plan_cache_mode=auto). The
  // texts are a fixed set (listJobs and requeueJobs pick among a few). Measured against unnamed
  // statements, three alternating pairs of 12,000-job drains of the worker in profile.ts:
  // 1,066-1,084 jobs/s against 708-922, PostgreSQL's processes using 1,081-1,227 µs of CPU a job,
  // the harness's creates included, against 1,561-1,987; and creates through the API, two pairs:
  // 2,355-2,507/s against 2,007-2,260. A table changing shape under a prepared statement: checkout.ts.
  const names = new Map<string, string>();
  const nameOf = (text: string) => {
    let name = names.get(text);
    if (name === undefined) names.set(text, (name = `proxy_${names.size}`));
    return name;
  };
  const unwatched = { query: <R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]) => query<R>(pool, nameOf(text), text, values) };
  // Past a later release's migration this release cannot run on, nothing more is asked of the
  // schema (the clock aside): its reads may mean other things there too, and the program stops.
  const db: typeof unwatched = {
    query: (text, values) => (laterRelease.refused ? Promise.reject(laterRelease.refused) : unwatched.query(text, values)),
  };
  const migrating = new pg.Pool({ ...poolConfig, max: 1 });
  try {
    await migratePostgres(migrating, schema, { onWait: options.onMigrationWait, onLater: options.onLaterMigrations });
  } finally {
    await migrating.end();
  }
  // Every host keeps the server's time (db-clock.ts): leases, deadlines, heartbeats and budgets are
  // compared across hosts whose own clocks may disagree.
  let clock: DbClock | null = null;
  let laterRelease: LaterReleaseWatch;
  try {
    if (!options.now) {
      clock = await createDbClock(
        async () => (await unwatched.query<{ ms: number }>('SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::float8 AS ms')).rows[0]!.ms,
        options.localNow,
        options.onClockOffset,
      );
    }
    laterRelease = await watchForLaterRelease((text, values) => unwatched.query(text, values), schema, {
      onLater: options.onLaterMigrations,
      onRefused: options.onLost,
    });
  } catch (err) {
    clock?.close();
    stopTimingCheckouts();
    await pool.end();
    throw err;
  }
  const now = options.now ?? clock!.now;
  // A failed look (the server down) is the next one's to make again; what failed is told by the work that fails.
  const laterLooks = setInterval(() => void laterRelease.look().catch(() => undefined), LATER_CHECK_MS);
  laterLooks.unref();

  // The counter the worker loop and long-poll watchers compare: see change-listener.ts.
  const listener = createChangeListener({ connection, schema, fallbackPollMs: options.fallbackPollMs ?? LISTEN_FALLBACK_MS });
  let closed = false;

  // A transaction's statements are named too: an idle daemon's claim (a sweep of three statements
  // once a second) and every claim that comes back short had parsed each of them again. Measured
  // with jobs queued one at a time, 10-30 ms apart (300 each, three alternating pairs): the server's
  // processes used 110-117 ticks of CPU against 137-157; the worker and the pickup (median 5-6 ms)
  // the same.
  function tx<T>(fn: (c: Q) => Promise<T>): Promise<T> {
    if (laterRelease.refused) return Promise.reject(laterRelease.refused);
    return withClient(pool, async (client) => {
      const named: Q = { query: (text, values) => client.query({ name: nameOf(text), text, values }) };
      try {
        await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
        const result = await fn(named);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        // A connection the database failed on is destroyed (checkout.ts), which ends its
        // transaction: a ROLLBACK sent behind a statement that timed out would wait out the timeout
        // again.
        if (!isDatabaseUnavailable(err)) await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  // The upstream budgets and the fleet's pause (upstream-budget.ts).
  const budget = createUpstreamBudget({ db, pool, nameOf, now, serverClock: clock !== null, refused: () => laterRelease.refused });

  /** Counts a job finished by a write of its own, inside its transaction (the batched writes, batched-writes.ts, count theirs in their own statement). */
  async function countFinished(c: Q, status: string, model: string): Promise<void> {
    // Appended, not upserted: no row lock for concurrent writers to queue on (see migration 0003).
    // The labels' text is built as labelsJson builds it, keys sorted; a model past the first
    // MODEL_LABELS_MAX (not in counter_models) is '(other)', OTHER_MODEL, as in every count here and in batched-writes.ts.
    // Written out in each statement rather than called as an SQL function: PostgreSQL 15 plans a
    // function's body again at each statement that calls it.
    await c.query(
      `INSERT INTO counter_deltas (name, labels, value)
       VALUES ('jobs_finished_total',
               '{"model":' || to_json(CASE WHEN EXISTS (SELECT 1 FROM counter_models WHERE model = $1::text) THEN $1::text ELSE '(other)' END)::text
                 || ',"status":' || to_json($2::text)::text || '}',
               1)`,
      [model, status],
    );
  }

  const expirySpacing = createExpirySpacing();

  /**
   * Expires at most `limit` queued jobs past their deadline, the longest overdue first, and counts
   * them per model, in one statement. Rows another claimer holds are left to it.
   */
  async function expireDue(c: Q, at: number, limit: number): Promise<number> {
    const { rows } = await c.query<{ n: number }>(
      `WITH expired AS (
         UPDATE jobs
            SET status = 'expired', finished_at = $1, updated_at = $1, error_code = $2, error_message = $3
          WHERE id IN (SELECT id FROM jobs
                        WHERE status = 'queued' AND expires_at <= $1
                        ORDER BY expires_at
                        LIMIT $4
                          FOR UPDATE SKIP LOCKED)
         RETURNING model),
       counted AS (
         INSERT INTO counter_deltas (name, labels, value)
         SELECT 'jobs_finished_total',
                '{"model":' || to_json(CASE WHEN EXISTS (SELECT 1 FROM counter_models known WHERE known.model = expired.model) THEN model ELSE '(other)' END)::text || ',"status":"expired"}',
                COUNT(*)
           FROM expired GROUP BY model)
       SELECT COUNT(*)::int AS n FROM expired`,
      [at, EXPIRED_ERROR.code, EXPIRED_ERROR.message, limit],
    );
    return rows[0]?.n ?? 0;
  }

  /**
   * Ends a job whose lease lapsed (the sweep holds its row) and counts it. An attempt's own endings
   * go through `endings`, which also counts its call; here no call is being recorded.
   */
  async function finishLapsed(
    c: Q,
    id: string,
    token: number,
    status: 'failed' | 'expired' | 'cancelled',
    error: { code: string; message: string } | null,
    at: number,
  ): Promise<void> {
    const { rows } = await c.query<{ model: string }>(
      `UPDATE jobs
          SET status = $3, finished_at = $4, updated_at = $4, lease_until = NULL,
              error_code = $5, error_message = $6, upstream_status = NULL
        WHERE id = $1 AND lease_token = $2 AND status = 'in_progress'
       RETURNING model`,
      [id, token, status, at, error?.code ?? null, error?.message ?? null],
    );
    if (rows[0]) await countFinished(c, status, rows[0].model);
  }

  // Creates, an attempt's outcome (an ending or a retry) and rate-limit draws: one statement a turn each.
  const { inserts, draws, endings, retries } = createBatchedWrites(db);

  const claimSet = `status = 'in_progress', attempts = attempts + 1, lease_token = lease_token + 1,
                    lease_until = $2, worker_id = $3, started_at = COALESCE(started_at, $1), updated_at = $1`;

  /**
   * Folds what the triggers and the batched writes appended (counters, counts by status, finished
   * minutes) into their totals. Each is one statement: rows another fold already took are skipped
   * (it deleted them), never counted twice.
   */
  async function fold(): Promise<void> {
    await db.query(
      `WITH moved AS (DELETE FROM counter_deltas RETURNING name, labels, value)
       INSERT INTO counters (name, labels, value)
       SELECT name, labels, SUM(value) FROM moved GROUP BY name, labels
       ON CONFLICT (name, labels) DO UPDATE SET value = counters.value + excluded.value`,
    );
    await db.query(
      `WITH moved AS (DELETE FROM job_count_deltas RETURNING status, d)
       INSERT INTO job_counts (status, n)
       SELECT status, SUM(d) FROM moved GROUP BY status
       ON CONFLICT (status) DO UPDATE SET n = job_counts.n + excluded.n`,
    );
    await db.query(
      `WITH moved AS (DELETE FROM finished_minute_deltas RETURNING minute, status, n)
       INSERT INTO finished_per_minute (minute, status, n)
       SELECT minute, status, SUM(n) FROM moved GROUP BY minute, status
       ON CONFLICT (minute, status) DO UPDATE SET n = finished_per_minute.n + excluded.n`,
    );
  }

  // A count by status reads every change appended since the last fold, and housekeeping folds once a
  // minute: under a sustained drain that is four rows a job, tens of thousands by then. A reader that
  // finds more than FOLD_AFTER_CHANGES starts a fold (one at a time in this process), so the counts
  // detailed /health, /metrics and the status page read stay cheap under load (measured in
  // docs/performance-history.md: 1.3-1.9 ms mid-drain against 4.1-6.0). A fold that fails is left
  // to the next reader or to housekeeping: what it would have folded is still counted where it is.
  let folding: Promise<void> | null = null;
  function foldSoon(): void {
    if (folding || closed) return;
    folding = fold()
      .catch(() => undefined)
      .finally(() => (folding = null));
  }
  const store: JobStore = {
    kind: 'postgres',
    now,
    clockOffsetMs: () => clock?.offsetMs ?? 0,
    clockSyncMs: CLOCK_SYNC_MS,

    async createJob(job) {
      const at = now();
      if (await inserts.run({ job, at })) return { job: queuedJob(job, at), created: true };
      const existing = await db.query<JobRow>('SELECT * FROM jobs WHERE client = $1 AND nonce = $2', [job.client, job.nonce]);
      if (!existing.rows[0]) throw new Error('insert ignored but no job holds the nonce');
      return { job: toJob(existing.rows[0]), created: false };
    },

    async getJob(id) {
      const { rows } = await db.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id]);
      return rows[0] ? toJob(rows[0]) : null;
    },

    async getJobOutcome(id) {
      const { rows } = await db.query<OutcomeRow>(
        `SELECT id, client, status, model, attempts, run_after, expires_at, cancel_requested, created_at, started_at,
                finished_at, output_text, usage, response, error_code, error_message, upstream_status
           FROM jobs WHERE id = $1`,
        [id],
      );
      return rows[0] ? toOutcome(rows[0]) : null;
    },

    async claimJobs(opts) {
      if (opts.limit <= 0) return [];
      const at = now();
      const leaseUntil = at + opts.leaseMs;
      // `expires_at + 0`: the deadline is checked on each row met in jobs_queued_due, never looked up
      // in jobs_queued_expiry, whose rows would then have to be sorted (see SESSION_SETTINGS).
      const claimDue = async (c: Q, limit: number) => {
        const { rows } = await c.query<JobRow & { seq: number }>(
          `UPDATE jobs SET ${claimSet}
            WHERE id IN (SELECT id FROM jobs
                          WHERE status = 'queued' AND run_after <= $1 AND expires_at + 0 > $1
                          ORDER BY run_after, seq
                          LIMIT $4
                          FOR UPDATE SKIP LOCKED)
           RETURNING *`,
          [at, leaseUntil, opts.workerId, limit],
        );
        return rows.sort(byQueueOrder).map(toClaimedJob);
      };
      // While claims come back full, most are this one statement in its own transaction: one round
      // trip instead of four (BEGIN, the lapsed-lease query, the claim, COMMIT). Measured at full speed
      // against a zero-latency stub, the claim transaction was where the worker waited. Lapsed leases
      // and overdue jobs are looked for on the expiry scan's schedule (expiry-spacing.ts: every 250 ms
      // while busy) and whenever a claim comes back short, so a dead worker's job waits at most that
      // much longer than its lease.
      if (!expirySpacing.before(at)) {
        const claimed = await claimDue(db, opts.limit);
        if (claimed.length === opts.limit) return claimed;
        // Short: the sweep runs now, and counts as this moment's expiry scan.
        expirySpacing.after(at, false, true);
        return [...claimed, ...(await tx((c) => sweep(c, opts.limit - claimed.length, false)))];
      }
      return tx((c) => sweep(c, opts.limit, true));

      // Expires overdue jobs, ends or reclaims lapsed leases (the oldest work in the system, so taken
      // first), then fills what room is left from the queue when `thenQueue`.
      async function sweep(c: Q, limit: number, thenQueue: boolean): Promise<ClaimedJob[]> {
        // A backlog of overdue jobs left after the scan: the queue waits (see expirySpacing.backlog).
        const backlog = expirySpacing.backlog(await expireDue(c, at, CLAIM_EXPIRE_LIMIT));
        const claimed: ClaimedJob[] = [];
        // SKIP LOCKED lets other claimers pass rows taken here.
        const lapsed = await c.query<JobRow>(
          `SELECT * FROM jobs
            WHERE status = 'in_progress' AND lease_until <= $1
            ORDER BY lease_until
            LIMIT $2
            FOR UPDATE SKIP LOCKED`,
          [at - (opts.lapseGraceMs ?? 0), limit],
        );
        for (const row of lapsed.rows) {
          if (row.cancel_requested) await finishLapsed(c, row.id, row.lease_token, 'cancelled', null, at);
          else if (row.expires_at <= at) await finishLapsed(c, row.id, row.lease_token, 'expired', EXPIRED_ERROR, at);
          else if (row.attempts >= row.max_attempts) await finishLapsed(c, row.id, row.lease_token, 'failed', WORKER_LOST_ERROR, at);
          else {
            const { rows } = await c.query<JobRow>(`UPDATE jobs SET ${claimSet} WHERE id = $4 RETURNING *`, [at, leaseUntil, opts.workerId, row.id]);
            claimed.push(toClaimedJob(rows[0] as JobRow));
          }
        }
        const room = limit - claimed.length;
        if (thenQueue && room > 0 && !backlog) claimed.push(...(await claimDue(c, room)));
        return claimed;
      }
    },

    async renewLease(id, token, leaseMs) {
      const { rows } = await db.query<{ cancel_requested: number }>(
        `UPDATE jobs SET lease_until = $3
          WHERE id = $1 AND lease_token = $2 AND status = 'in_progress'
         RETURNING cancel_requested`,
        [id, token, now() + leaseMs],
      );
      if (!rows[0]) return 'lost';
      return rows[0].cancel_requested ? 'cancel_requested' : 'held';
    },

    async completeJob(id, token, result, attempt) {
      return endings.run({
        id,
        token,
        at: now(),
        status: 'completed',
        ...resultColumns(result, pgText),
        error_code: null,
        error_message: null,
        upstream_status: null,
        bumps: attemptBumps(attempt),
        tokens: attempt?.tokens,
      });
    },

    async finishJob(id, token, status, error, attempt) {
      const columns = { error_code: error?.code ?? null, error_message: error?.message ?? null, upstream_status: error?.upstreamStatus ?? null };
      return endings.run({ id, token, at: now(), status, output_text: null, usage: null, response: null, ...columns, bumps: attemptBumps(attempt), tokens: attempt?.tokens });
    },

    async retryJob(id, token, runAfter, error, attempt) {
      const columns = { error_code: error.code, error_message: error.message, upstream_status: error.upstreamStatus ?? null };
      return retries.run({ id, token, at: now(), runAfter, ...columns, bumps: attemptBumps(attempt) });
    },

    async releaseJob(id, token, runAfter) {
      const { rowCount } = await db.query(
        `UPDATE jobs
            SET status = 'queued', run_after = $4, updated_at = $3, lease_until = NULL, worker_id = NULL,
                attempts = GREATEST(attempts - 1, 0)
          WHERE id = $1 AND lease_token = $2 AND status = 'in_progress'`,
        [id, token, now(), runAfter],
      );
      return rowCount === 1;
    },

    async cancelJob(id, client) {
      const at = now();
      return tx(async (c) => {
        const cancelled = await c.query<{ model: string }>(
          `UPDATE jobs SET status = 'cancelled', finished_at = $3, updated_at = $3
            WHERE id = $1 AND client = $2 AND status = 'queued'
           RETURNING model`,
          [id, client, at],
        );
        if (cancelled.rows[0]) await countFinished(c, 'cancelled', cancelled.rows[0].model);
        await c.query(`UPDATE jobs SET cancel_requested = 1, updated_at = $3 WHERE id = $1 AND client = $2 AND status = 'in_progress'`, [id, client, at]);
        const { rows } = await c.query<JobRow>('SELECT * FROM jobs WHERE id = $1 AND client = $2', [id, client]);
        return rows[0] ? toJob(rows[0]) : null;
      });
    },

    async listFinishedSince(since) {
      const { rows } = await db.query<{ id: string; status: JobStatus; finished_at: number }>(
        'SELECT id, status, finished_at FROM jobs WHERE finished_at >= $1 ORDER BY finished_at',
        [since],
      );
      return rows.map((r) => ({ id: r.id, status: r.status, finishedAt: r.finished_at }));
    },

    async finalAmong(ids) {
      if (ids.length === 0) return [];
      const { rows } = await db.query<{ id: string }>('SELECT id FROM jobs WHERE id = ANY($1::text[]) AND status = ANY($2::text[])', [ids, [...FINAL_STATUSES]]);
      return rows.map((r) => r.id);
    },

    async cancelsAmong(ids) {
      if (ids.length === 0) return [];
      const { rows } = await db.query<{ id: string }>("SELECT id FROM jobs WHERE id = ANY($1::text[]) AND status = 'in_progress' AND cancel_requested = 1", [ids]);
      return rows.map((r) => r.id);
    },

    async nextWakeAt() {
      const { rows } = await db.query<{ at: number | null }>(
        `SELECT LEAST((SELECT MIN(run_after) FROM jobs WHERE status = 'queued'),
                      (SELECT MIN(lease_until) FROM jobs WHERE status = 'in_progress')) AS at`,
      );
      return rows[0]?.at ?? null;
    },

    async expireOverdue(signal) {
      const at = now();
      return inBatches((limit) => tx((c) => expireDue(c, at, limit)), { signal });
    },

    async rebaseAfterClockStep(signal) {
      const at = now();
      const bound = at + CLOCK_STEP_SLACK_MS;
      await db.query('UPDATE workers SET last_seen_at = $1 WHERE last_seen_at > $2', [at, bound]);
      // Queued jobs only: each host reads the server's clock through an offset it measures again at
      // its own minute (db-clock.ts), so until every one has, the hosts disagree by the step. A job
      // due earlier on a host still ahead is harmless; a lease moved back would have lapsed there,
      // and it could take a job whose call is still running. So a running job whose worker died
      // before the step waits out the step here.
      return inBatches(
        async (limit) => {
          const { rowCount } = await db.query(
            `UPDATE jobs SET run_after = run_after - (updated_at - $1), updated_at = $1
              WHERE id IN (SELECT id FROM jobs
                            WHERE status = 'queued' AND run_after > $2 AND updated_at > $2
                            LIMIT $3
                              FOR UPDATE SKIP LOCKED)`,
            [at, bound, limit],
          );
          return rowCount ?? 0;
        },
        { signal },
      );
    },

    async deleteFinishedBefore(before, signal) {
      // The chart's rows go with the jobs they counted, and so do the rows of workers last seen
      // before then: one that died without saying so (kill -9, a lost host) leaves its row behind.
      await db.query('DELETE FROM finished_per_minute WHERE minute < $1', [Math.floor(before / 60_000)]);
      await db.query('DELETE FROM workers WHERE last_seen_at < $1', [before]);
      // In batches (in-batches.ts): one statement would hold its rows' locks until it ends, so a
      // cancel or a retry of one of them would wait that long. Workers on other hosts purging at the
      // same time skip each other's rows instead of waiting for them.
      return inBatches(
        async (limit) => {
          const { rowCount } = await db.query(
            `DELETE FROM jobs
            WHERE id IN (SELECT id FROM jobs
                          WHERE finished_at IS NOT NULL AND finished_at < $1
                          LIMIT $2
                            FOR UPDATE SKIP LOCKED)`,
            [before, limit],
          );
          return rowCount ?? 0;
        },
        { signal },
      );
    },

    async countByStatus() {
      const counts: QueueCounts = { queued: 0, in_progress: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 };
      // Kept by triggers (migration 0004): the folded counts plus the changes since the last fold.
      const { rows } = await db.query<{ status: JobStatus; n: string; changes: string }>(
        `SELECT status, SUM(n) AS n, SUM(change) AS changes
           FROM (SELECT status, n, 0 AS change FROM job_counts UNION ALL SELECT status, d, 1 FROM job_count_deltas) AS all_counts
          GROUP BY status`,
      );
      let changes = 0;
      for (const row of rows) {
        counts[row.status] = Number(row.n);
        changes += Number(row.changes);
      }
      if (changes > FOLD_AFTER_CHANGES) foldSoon();
      return counts;
    },

    async listJobs({ status, client, limit }) {
      const where = ['($1::text IS NULL OR client = $1)'];
      let order = 'seq DESC';
      if (status === 'queued') order = 'run_after';
      else if (status === 'in_progress') order = 'lease_until';
      else if (status) order = 'finished_at DESC';
      if (status) where.push('status = $3');
      const { rows } = await db.query<JobRow>(
        `SELECT * FROM jobs WHERE ${where.join(' AND ')} ORDER BY ${order} LIMIT $2`,
        status ? [client ?? null, limit, status] : [client ?? null, limit],
      );
      return rows.map(toJob);
    },

    async requeueJobs(ids) {
      const at = now();
      // A fresh start: new attempts, and the same length of deadline the job first had.
      const requeue = async (which: string, params: unknown[]) => {
        const { rows } = await db.query<{ id: string }>(
          `UPDATE jobs
              SET status = 'queued', attempts = 0, run_after = $1, expires_at = $1 + (expires_at - created_at),
                  finished_at = NULL, started_at = NULL, lease_until = NULL, worker_id = NULL, cancel_requested = 0,
                  error_code = NULL, error_message = NULL, upstream_status = NULL, updated_at = $1
            WHERE ${which}
           RETURNING id`,
          [at, ...params],
        );
        return rows.map((r) => r.id);
      };
      if (ids !== 'all-failed') return requeue(`status IN ('failed', 'expired') AND id = ANY($2::text[])`, [ids]);
      // Every failed job may be a day's traffic after a bad key: in batches (see in-batches.ts).
      const requeued: string[] = [];
      await inBatches(async (limit) => {
        const batch = await requeue(`id IN (SELECT id FROM jobs WHERE status = 'failed' LIMIT $2 FOR UPDATE SKIP LOCKED)`, [limit]);
        requeued.push(...batch);
        return batch.length;
      });
      return requeued;
    },

    async finishedPerMinute(since) {
      const { rows } = await db.query<{ minute: number; status: JobStatus; n: string }>(
        // Kept by triggers as jobs finish (migration 0005): the folded minutes plus what is not folded yet.
        `SELECT minute, status, SUM(n) AS n
           FROM (SELECT minute, status, n FROM finished_per_minute WHERE minute >= $1
                 UNION ALL
                 SELECT minute, status, n FROM finished_minute_deltas WHERE minute >= $1) AS all_minutes
          GROUP BY minute, status
          ORDER BY minute`,
        [Math.floor(since / 60_000)],
      );
      return rows.map((r) => ({ minute: r.minute * 60_000, status: r.status, count: Number(r.n) }));
    },

    async oldestDueAt() {
      // MIN over jobs_queued_due's key: one index read, however long the queue.
      const { rows } = await db.query<{ at: number | null }>("SELECT MIN(run_after) AS at FROM jobs WHERE status = 'queued'");
      return rows[0]?.at ?? null;
    },

    async exportJobs(cursor, limit) {
      const { rows } = await db.query<JobRow & { seq: number }>('SELECT * FROM jobs WHERE seq > $1 ORDER BY seq LIMIT $2', [cursor === null ? 0 : Number(cursor), limit]);
      const last = rows.at(-1);
      return { jobs: rows.map(toJob), next: rows.length === limit && last ? String(last.seq) : null };
    },

    async importJobs(jobs) {
      if (jobs.length === 0) return [];
      // One statement for the page; seq is left to its default so the copy keeps the order it was
      // given. The models of jobs still to run are admitted to the counters' labels, as a create's.
      const { rows } = await db.query<{ id: string }>(
        `WITH inserted AS (
           INSERT INTO jobs (id, client, nonce, request_hash, status, model, request, attempts, max_attempts, run_after,
                             expires_at, lease_until, lease_token, worker_id, cancel_requested, created_at, started_at,
                             finished_at, updated_at, output_text, usage, response, error_code, error_message, upstream_status)
           SELECT id, client, nonce, request_hash, status, model, request, attempts, max_attempts, run_after,
                  expires_at, lease_until, lease_token, worker_id, cancel_requested, created_at, started_at,
                  finished_at, updated_at, output_text, usage, response, error_code, error_message, upstream_status
             FROM json_populate_recordset(NULL::jobs, $1::json) WITH ORDINALITY AS page
            ORDER BY ordinality
           ON CONFLICT DO NOTHING
           RETURNING id, model, status),
         admitted AS (
           INSERT INTO counter_models (model)
           SELECT DISTINCT model FROM inserted
            WHERE status IN ('queued', 'in_progress') AND NOT EXISTS (SELECT 1 FROM counter_models known WHERE known.model = inserted.model)
            ORDER BY model
            LIMIT greatest(0, $2 - (SELECT COUNT(*) FROM (SELECT 1 FROM counter_models LIMIT $2) AS taken))
           ON CONFLICT (model) DO NOTHING)
         SELECT id FROM inserted`,
        [
          JSON.stringify(
            jobs.map((job) => {
              const row = toRow(job, pgText);
              return { ...row, error_code: pgText(row.error_code) };
            }),
          ),
          MODEL_LABELS_MAX,
        ],
      );
      return rows.map((r) => r.id);
    },

    acquireUpstream: (request) => budget.acquire(request),

    pauseUpstream: (until) => budget.pause(until),
    upstreamDown: () => budget.down(),
    markUpstreamDown: (mark) => budget.markDown(mark),
    takeUpstreamLook: (at, spacing) => budget.takeLook(at, spacing),
    failingRun: () => budget.failingRun(),
    setFailingRun: (run) => budget.setFailingRun(run),

    async consumeRateLimits(checks) {
      if (checks.length === 0) return [];
      return draws.run({ checks, at: now() });
    },

    async purgeRateLimits() {
      const { rowCount } = await db.query('DELETE FROM rate_limits WHERE tat < $1', [now()]);
      return rowCount ?? 0;
    },

    async recordHeartbeat(beat) {
      await db.query(
        `INSERT INTO workers (id, host, pid, started_at, last_seen_at, jobs_done, clock_offset_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at, jobs_done = excluded.jobs_done, clock_offset_ms = excluded.clock_offset_ms`,
        [beat.id, beat.host, beat.pid, beat.startedAt, beat.lastSeenAt, beat.jobsDone, beat.clockOffsetMs],
      );
    },

    async removeHeartbeat(id) {
      await db.query('DELETE FROM workers WHERE id = $1', [id]);
    },

    async listWorkers(seenSince) {
      const { rows } = await db.query<WorkerRow>(
        'SELECT id, host, pid, started_at, last_seen_at, jobs_done, clock_offset_ms FROM workers WHERE last_seen_at >= $1 ORDER BY started_at',
        [seenSince],
      );
      return rows.map(toHeartbeat);
    },

    async readCounters() {
      const { rows } = await db.query<{ name: string; labels: string; value: number }>(
        `SELECT name, labels, SUM(value) AS value
           FROM (SELECT name, labels, value FROM counters UNION ALL SELECT name, labels, value FROM counter_deltas) AS all_counts
          GROUP BY name, labels
          ORDER BY name, labels`,
      );
      return rows.map((r) => ({ name: r.name, labels: JSON.parse(r.labels) as Record<string, string>, value: r.value }));
    },

    async changeCounter() {
      return listener.counter();
    },

    watchChanges(onChange) {
      return listener.subscribe(onChange);
    },

    async ping() {
      await db.query('SELECT 1 FROM jobs LIMIT 1');
    },

    async checkpoint() {
      // PostgreSQL checkpoints on its own; what housekeeping does here is fold the appended counts.
      await fold();
      return null;
    },

    async close() {
      if (closed) return;
      closed = true;
      clock?.close();
      clearInterval(laterLooks);
      // Writes already accepted finish before the pool goes.
      await Promise.all([inserts.drain(), endings.drain(), retries.drain(), draws.drain(), folding]);
      await listener.close();
      stopTimingCheckouts();
      await pool.end();
    },
  };

  return store;
}
