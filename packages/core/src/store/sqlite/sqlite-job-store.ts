import { accessSync, constants as fsConstants, watch } from 'node:fs';
import type { Statement } from 'better-sqlite3';
import { createCounters } from './counters.js';
import { createModelLabels } from './model-labels.js';
import { createFinishedMinutes } from './finished-minutes.js';
import {
  FINAL_STATUSES,
  LOG_BACKLOG_BYTES,
  CLOCK_STEP_SLACK_MS,
  pacingBounds,
  steppedBack,
  type AttemptObservation,
  type ClaimOptions,
  type ClaimedJob,
  type CreateResult,
  type JobError,
  type JobRecord,
  type JobResult,
  type JobStatus,
  type JobStore,
  type LeaseState,
  type NewJob,
  type QueueCounts,
  type WorkerHeartbeat,
} from '../types.js';
import { EXPIRED_ERROR, WORKER_LOST_ERROR, byQueueOrder, queuedJob, resultColumns, toClaimedJob, toJob, toOutcome, toRow, type JobRow, type OutcomeRow } from '../job-row.js';
import { toHeartbeat, type WorkerRow } from '../worker-row.js';
import { LIMITS_MIGRATIONS_DIR, watchForLaterRelease, type LaterReleaseWatch } from './migrate.js';
import { createWriteQueue } from './write-queue.js';
import { createLimitDraws } from './limit-draws.js';
import { createUpstreamBudget } from './upstream-budget.js';
import { CLAIM_EXPIRE_LIMIT, createExpirySpacing } from '../expiry-spacing.js';
import { inBatches } from '../in-batches.js';
import { createTurnRead } from './turn-read.js';
import { createWalSync, type Datasync } from './wal-sync.js';
import { openDatabase, type Db, type OpenDatabaseOptions } from './open-database.js';
import { dropLogNote, watchForMoves } from './file-identity.js';
import { HELD_COLUMNS, heldRow, type HeldValues } from './held-row.js';
import { readLockHolders } from './lock-holder.js';
import { wellFormed } from '../../unicode.js';

/** A jobs row as this file stores it (the request lives in job_requests, keyed by `seq`: 0011), as a claim reads a lapsed lease. */
type LapsedRow = Omit<JobRow, 'request'> & { seq: number };

export interface SqliteStoreOptions extends OpenDatabaseOptions {
  /** Milliseconds since the epoch; injected so tests control time. */
  now?: () => number;
  /** How the WAL is flushed under sync=full; injected so tests can hold or fail a flush. */
  datasync?: Datasync;
  /**
   * Told once, with why, when this store can write no more: the file at `path` is no longer the one
   * opened (moved, replaced or deleted), or a later release migrated it past what this one runs on.
   * From then on every write fails, and the program should stop (see FILE_CHECK_MS).
   */
  onLost?: (message: string) => void;
  /** How often the file at `path` is looked at; FILE_CHECK_MS by default. */
  fileCheckMs?: number;
  /** What a checkpoint reports a log larger than (LOG_BACKLOG_BYTES); injected so tests need not write 256 MB. */
  logBacklogBytes?: number;
}

/**
 * How often a store looks whether its file is still the one at its path (one stat), and whether a
 * later release migrated it (one read). Writes made in between go to the file that was moved, as
 * before it was (a later release's migration is looked for by each write itself); a health check
 * looks at once.
 */
export const FILE_CHECK_MS = 1000;

/** Opens the SQLite job store on `path`; every statement is prepared here, once. */
export function openSqliteStore(options: SqliteStoreOptions): JobStore {
  // sync=full: commits are written with synchronous=NORMAL and made durable by an fdatasync off the
  // event loop before any write resolves (wal-sync.ts), rather than an fsync inside each commit.
  const durable = (options.sync ?? 'full') === 'full' && options.path !== ':memory:';
  const db = openDatabase({ ...options, sync: durable ? 'normal' : options.sync });
  // Limiter state lives in a sibling file without fsync: after a power cut, a budget that forgets a
  // few seconds is harmless, and no read or create should wait on a disk flush for it.
  const limitsPath = limitsPathFor(options.path);
  let limitsDb: Db;
  try {
    limitsDb = openDatabase({ path: limitsPath, sync: 'off', migrations: LIMITS_MIGRATIONS_DIR, onLaterMigrations: options.onLaterMigrations });
  } catch (err) {
    db.close();
    throw err;
  }
  const walSync = durable ? createWalSync(options.path, options.datasync) : null;
  // Whichever is found first stops the program; the other is then not told.
  let lost = false;
  const tellLost = (message: string) => {
    if (!lost) options.onLost?.(message);
    lost = true;
  };
  // An open descriptor keeps reading and writing a file that was moved, replaced or deleted, while
  // every other program goes by the path (file-identity.ts): past that, this store writes nothing.
  const intervalMs = options.fileCheckMs ?? FILE_CHECK_MS;
  const moves = watchForMoves(
    [
      { path: options.path, db },
      { path: limitsPath, db: limitsDb },
    ],
    { intervalMs, onGone: (message) => tellLost(`${message}; a restart opens the file now at that path`) },
  );
  const refuseIfMoved = () => {
    if (moves.gone) throw moves.gone;
  };
  // A later release rolled out while this one runs migrates the files under it (migrate.ts): each
  // write transaction looks first, and a timer looks for a program that only reads.
  const laterWatch = (file: Db, dir: string | undefined, path: string) =>
    watchForLaterRelease(file, dir, { onLater: (names) => options.onLaterMigrations?.(names, path), onRefused: tellLost });
  const laterJobs = laterWatch(db, options.migrations, options.path);
  const laterLimits = laterWatch(limitsDb, LIMITS_MIGRATIONS_DIR, limitsPath);
  const later = [laterJobs, laterLimits];
  // Either file refused refuses both: the program stops, and what it would still write is no use.
  const laterRefused = () => laterJobs.refused ?? laterLimits.refused;
  const refuseIfLater = (watch: LaterReleaseWatch) => () => {
    const refused = watch.look() ?? laterRefused();
    if (refused) throw refused;
  };
  const lookForLater = () => {
    for (const watch of later) {
      try {
        watch.look();
      } catch {
        // Unreadable now: the next look, or the next write, tells.
      }
    }
  };
  const laterLooks = setInterval(lookForLater, intervalMs);
  laterLooks.unref();
  // Limiter draws in the limits file, refused as the jobs file's writes are (limit-draws.ts).
  const limitDraws = createLimitDraws(limitsDb, { check: refuseIfMoved, begin: refuseIfLater(laterLimits) });
  const now = options.now ?? Date.now;
  const sql = prepareStatements(db);
  // Read once: what a checkpoint's count of frames comes to (checkpoint()).
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const counters = createCounters(db);
  const modelLabels = createModelLabels(db);
  const minutes = createFinishedMinutes(db);
  // Every write that finishes a job reports it here, with the model the write returned (undefined:
  // the write found no job to finish) and the time it wrote as finished_at.
  const finished = (status: string, model: string | undefined, at: number) => {
    if (model === undefined) return;
    counters.add('jobs_finished_total', { status, model: modelLabels.of(model) });
    minutes.add(status, at);
  };
  const expireDue = (at: number, limit: number): number => {
    const rows = sql.expireQueued.all({ now: at, limit, ...EXPIRED_ERROR });
    for (const { model } of rows) finished('expired', model, at);
    return rows.length;
  };

  const expirySpacing = createExpirySpacing();

  // A claim's RETURNING gives the jobs row (as an array: held-row.ts); its request is read by key from job_requests (0011).
  const withRequest = (values: HeldValues) => heldRow(values, sql.requestOf.get(values[0]) as string);

  // create, claim and settle run inside the write queue's IMMEDIATE transaction (see write-queue.ts).
  const claim = (opts: ClaimOptions, at: number): ClaimedJob[] => {
    // See expiry-spacing.ts: a full claim scans at most every 250 ms, a short one always.
    const scanned = expirySpacing.before(at);
    // A backlog of overdue jobs left after the scan: the queue waits (see expirySpacing.backlog).
    const backlog = scanned && expirySpacing.backlog(expireDue(at, CLAIM_EXPIRE_LIMIT));
    const claimed: ClaimedJob[] = [];
    // Jobs whose worker vanished first: they are the oldest work in the system.
    for (const row of sql.lapsedLeases.all({ now: at - (opts.lapseGraceMs ?? 0), limit: opts.limit })) {
      const end = (status: 'cancelled' | 'expired' | 'failed', error: { code: string | null; message: string | null }) =>
        finished(status, sql.finishHeld.get({ id: row.id, token: row.lease_token, status, now: at, ...error, upstream_status: null })?.model, at);
      if (row.cancel_requested) end('cancelled', { code: null, message: null });
      else if (row.expires_at <= at) end('expired', EXPIRED_ERROR);
      else if (row.attempts >= row.max_attempts) end('failed', WORKER_LOST_ERROR);
      else {
        claimed.push(toClaimedJob(withRequest(sql.claimOne.get({ id: row.id, now: at, lease_until: at + opts.leaseMs, worker: opts.workerId }) as HeldValues)));
      }
    }
    const room = opts.limit - claimed.length;
    if (room > 0 && !backlog) {
      const due = sql.claimDue.all({ now: at, limit: room, lease_until: at + opts.leaseMs, worker: opts.workerId }).map(withRequest);
      for (const row of due.sort(byQueueOrder)) claimed.push(toClaimedJob(row));
    }
    if (expirySpacing.after(at, scanned, claimed.length < opts.limit)) expirySpacing.backlog(expireDue(at, CLAIM_EXPIRE_LIMIT));
    return claimed;
  };

  // The upstream budgets and the fleet's pause (upstream-budget.ts), drawn inside the write queue's transactions.
  const budget = createUpstreamBudget(db);

  const create = (job: NewJob, at: number): CreateResult => {
    const inserted = sql.insertJob.run({
      id: job.id,
      client: job.client,
      nonce: job.nonce,
      request_hash: job.requestHash,
      model: job.model,
      max_attempts: job.maxAttempts,
      expires_at: job.expiresAt,
      now: at,
    });
    if (inserted.changes === 1) {
      sql.insertRequest.run(inserted.lastInsertRowid, job.requestJson);
      counters.add('jobs_created_total', { model: modelLabels.admit(job.model) });
      // Built here rather than read back (RETURNING *, then parsing the request again): the insert
      // wrote exactly these values.
      return { job: queuedJob(job, at), created: true };
    }
    const existing = sql.byNonce.get({ client: job.client, nonce: job.nonce });
    if (!existing) throw new Error('insert ignored but no job holds the nonce');
    return { job: toJob(existing), created: false };
  };

  // The API's lookups of one turn share a read transaction, which every writer ends first.
  const turnRead = createTurnRead(db);
  // Every write goes through one queue: writes from the same event-loop turn share a commit, and
  // their counter bumps and finished minutes are written once, at its end.
  const writes = createWriteQueue(
    db,
    {
      beforeFlush: turnRead.end,
      check: refuseIfMoved,
      begin: refuseIfLater(laterJobs),
      beforeCommit() {
        counters.writePending();
        minutes.writePending();
      },
      afterRollback() {
        counters.discardPending();
        minutes.discardPending();
        modelLabels.forget();
      },
    },
    walSync ?? undefined,
    options.busyTimeoutMs,
  );

  // Each write about a held job names its fencing token, and counts what happened in the same transaction.
  const settle = (at: number, write: () => { model: string } | undefined, status: string | null, attempt: AttemptObservation | undefined, retried: boolean): boolean => {
    const row = write();
    if (!row) return false;
    if (status) finished(status, row.model, at);
    if (retried) counters.add('retries_total', { model: modelLabels.of(row.model) });
    if (attempt) counters.observeAttempt(attempt);
    if (attempt?.tokens) counters.observeTokens(attempt.tokens, modelLabels.of(row.model));
    return true;
  };

  const store: JobStore = {
    kind: 'sqlite',
    now,
    clockOffsetMs: () => 0,
    clockSyncMs: 0,

    createJob(job: NewJob): Promise<CreateResult> {
      const at = now();
      return writes.run(() => create(job, at));
    },

    async getJob(id) {
      turnRead.begin();
      const row = sql.byId.get(id);
      return row ? toJob(row) : null;
    },

    async getJobOutcome(id) {
      turnRead.begin();
      const row = sql.outcomeById.get(id);
      return row ? toOutcome(row) : null;
    },

    async claimJobs(opts) {
      if (opts.limit <= 0) return [];
      const at = now();
      // Not waited for on disk: unflushed WAL frames are lost only when the machine goes down, and
      // the worker holding the claim (on this machine, as SQLite requires) goes down with it. The
      // job is then queued or lapsed again and runs once more, as after any worker crash.
      return writes.run(() => claim(opts, at), false);
    },

    async renewLease(id, token, leaseMs): Promise<LeaseState> {
      // Through the queue like every write: written past it, a renewal had SQLite's own 20 ms wait
      // for a lock held elsewhere (BUSY_BLOCK_MS) and failed beyond it. Not flushed first: a renewal
      // lost in a power cut is a lease that lapses, as it would with the worker gone.
      const at = now();
      const row = await writes.run(() => sql.renewLease.get({ id, token, now: at, lease_until: at + leaseMs }), false);
      if (!row) return 'lost';
      return row.cancel_requested ? 'cancel_requested' : 'held';
    },

    async completeJob(id, token, result: JobResult, attempt) {
      const params = { id, token, now: now(), ...resultColumns(result) };
      return writes.run(() => settle(params.now, () => sql.complete.get(params), 'completed', attempt, false));
    },

    async finishJob(id, token, status, error: JobError | null, attempt) {
      const params = {
        id,
        token,
        status,
        now: now(),
        code: error?.code ?? null,
        message: error ? wellFormed(error.message) : null,
        upstream_status: error?.upstreamStatus ?? null,
      };
      return writes.run(() => settle(params.now, () => sql.finishHeld.get(params), status, attempt, false));
    },

    async retryJob(id, token, runAfter, error, attempt) {
      const params = { id, token, now: now(), run_after: runAfter, code: error.code, message: wellFormed(error.message), upstream_status: error.upstreamStatus ?? null };
      return writes.run(() => settle(params.now, () => sql.retry.get(params), null, attempt, true));
    },

    async releaseJob(id, token, runAfter) {
      const params = { id, token, now: now(), run_after: runAfter };
      return writes.run(() => sql.release.run(params).changes === 1);
    },

    async cancelJob(id, client) {
      const at = now();
      const row = await writes.run(() => {
        finished('cancelled', sql.cancelQueued.get({ id, client, now: at })?.model, at);
        sql.requestCancel.run({ id, client, now: at });
        return sql.byIdForClient.get({ id, client });
      });
      return row ? toJob(row) : null;
    },

    async listFinishedSince(since) {
      return sql.finishedSince.all(since).map((r) => ({ id: r.id, status: r.status, finishedAt: r.finished_at }));
    },

    async finalAmong(ids) {
      return ids.length === 0 ? [] : sql.finalAmong.all(JSON.stringify(ids));
    },

    async cancelsAmong(ids) {
      return ids.length === 0 ? [] : sql.cancelsAmong.all(JSON.stringify(ids));
    },

    async nextWakeAt() {
      const row = sql.nextWake.get();
      return row?.at ?? null;
    },

    async expireOverdue(signal) {
      const at = now();
      return inBatches((limit) => writes.run(() => expireDue(at, limit)), { signal });
    },

    async rebaseAfterClockStep(signal) {
      const at = now();
      const params = { now: at, bound: at + CLOCK_STEP_SLACK_MS };
      // Not flushed to disk first, as the purge: a rebase lost in a power cut is made again by the next pass.
      await writes.run(() => sql.rebaseWorkers.run(params), false);
      let jobs = 0;
      for (const rebase of [sql.rebaseQueued, sql.rebaseRunning]) {
        jobs += await inBatches((limit) => writes.run(() => rebase.run({ ...params, limit }).changes, false), { signal });
      }
      return jobs;
    },

    async readCounters() {
      return counters.read();
    },

    async deleteFinishedBefore(before, signal) {
      // The chart's rows go with the jobs they counted, and so do the rows of workers last seen
      // before then: one that died without saying so (kill -9, a lost host) leaves its row behind.
      // Not to be flushed to disk first: a delete lost in a power cut is made again by the next pass.
      await writes.run(() => {
        sql.pruneMinutes.run(before);
        sql.pruneWorkers.run(before);
      }, false);
      // In batches, each its own transaction: see in-batches.ts.
      return inBatches((limit) => writes.run(() => sql.deleteFinished.run({ before, limit }).changes, false), { signal });
    },

    async countByStatus() {
      const counts: QueueCounts = { queued: 0, in_progress: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 };
      for (const row of sql.countByStatus.all()) counts[row.status] = row.n;
      return counts;
    },

    async acquireUpstream(request) {
      if (!request.rpm && !request.tpm) {
        // No budgets: only a fleet-wide pause can hold the call, and a read answers that; a pause
        // past its bound (the clock stepped back) is brought back to it by a draw below.
        const [until, at] = [budget.pausedUntil() ?? 0, now()];
        if (!steppedBack(until, pacingBounds(request, at).pause)) return Math.max(0, until - at);
      }
      // Budgets and the pause are not flushed first: a draw lost in a power cut is a call allowed early once.
      // Timed in the write, not when asked: a draw queued behind others' writes (or another
      // process's lock) would otherwise take a turn in the past, a call at once.
      return writes.run(() => budget.acquire(request, now()), false);
    },

    async pauseUpstream(until) {
      await writes.run(() => budget.pause(until), false);
    },

    async upstreamDown() {
      return budget.down();
    },

    async markUpstreamDown(mark) {
      await writes.run(() => budget.markDown(mark), false);
    },

    async failingRun() {
      return budget.failingRun();
    },

    async setFailingRun(run) {
      await writes.run(() => budget.setFailingRun(run), false);
    },

    async takeUpstreamLook(at, spacing) {
      return writes.run(() => budget.takeLook(at, spacing), false);
    },

    async consumeRateLimits(checks) {
      if (checks.length === 0) return [];
      // Measured: a transaction per draw cost a third of lookup throughput; sharing one per event-loop
      // turn (as creates do) took lookups from about 3,000 to 5,000 a second on the bench machine.
      return limitDraws.consume(checks, now());
    },

    async purgeRateLimits() {
      return limitDraws.purge(now());
    },

    // Not flushed first either: a heartbeat lost in a power cut is written again 5 s later.
    async recordHeartbeat(beat: WorkerHeartbeat) {
      await writes.run(
        () =>
          sql.upsertWorker.run({
            id: beat.id,
            host: beat.host,
            pid: beat.pid,
            started_at: beat.startedAt,
            last_seen_at: beat.lastSeenAt,
            jobs_done: beat.jobsDone,
            clock_offset_ms: beat.clockOffsetMs,
          }),
        false,
      );
    },

    async removeHeartbeat(id) {
      await writes.run(() => sql.deleteWorker.run(id), false);
    },

    async listWorkers(seenSince) {
      return sql.liveWorkers.all(seenSince).map(toHeartbeat);
    },

    async changeCounter() {
      return sql.dataVersion.pluck().get() as number;
    },

    watchChanges(listener) {
      if (options.path === ':memory:') return null;
      // Every commit appends to the -wal file, which keeps its inode while this connection is open
      // (see wal-sync.ts), so inotify (kqueue, ReadDirectoryChangesW) reports each one. Events also
      // come for this connection's own commits and checkpoints: a notice is only a hint.
      let watcher: ReturnType<typeof watch>;
      try {
        watcher = watch(`${options.path}-wal`, { persistent: false }, () => listener());
      } catch {
        return null;
      }
      // A watch that fails later (the file removed under us) ends; the reader's slow poll remains.
      watcher.on('error', () => watcher.close());
      return () => watcher.close();
    },

    async ping() {
      if (options.path !== ':memory:') {
        const moved = moves.look();
        if (moved) throw moved;
        lookForLater();
        const refused = laterRefused();
        if (refused) throw refused;
        try {
          accessSync(options.path, fsConstants.R_OK | fsConstants.W_OK);
        } catch (err) {
          throw new Error(`database file ${options.path} is unreadable`, { cause: err });
        }
      }
      walSync?.check();
      sql.ping.get();
    },

    async listJobs({ status, client, limit }) {
      const rows =
        status === 'queued'
          ? sql.listQueued.all({ limit, client: client ?? null })
          : status === 'in_progress'
            ? sql.listRunning.all({ limit, client: client ?? null })
            : status === 'failed' && client
              ? sql.listFailedForClient.all({ client, limit })
              : status
                ? sql.listFinished.all({ status, limit, client: client ?? null })
                : sql.listNewest.all({ limit, client: client ?? null });
      return rows.map(toJob);
    },

    async requeueJobs(ids) {
      const at = now();
      const requeue = (targets: readonly string[]) => targets.filter((id) => sql.requeue.run({ id, now: at }).changes === 1);
      if (ids !== 'all-failed') return writes.run(() => requeue(ids));
      // Every failed job may be a day's traffic after a bad key: in batches (see in-batches.ts), each
      // taking the failed jobs the last one left.
      const requeued: string[] = [];
      await inBatches((limit) =>
        writes.run(() => {
          const batch = requeue(sql.failedIds.pluck().all({ limit }) as string[]);
          requeued.push(...batch);
          return batch.length;
        }),
      );
      return requeued;
    },

    async finishedPerMinute(since) {
      return sql.perMinute.all(since).map((r) => ({ minute: r.minute * 60_000, status: r.status, count: r.n }));
    },

    async oldestDueAt() {
      return (sql.oldestDue.pluck().get() as number | null) ?? null;
    },

    async exportJobs(cursor, limit) {
      const rows = sql.pageByRowid.all({ after: cursor === null ? 0 : Number(cursor), limit });
      const last = rows.at(-1);
      return { jobs: rows.map(toJob), next: rows.length === limit && last ? String(last.position) : null };
    },

    async importJobs(jobs) {
      const importOne = (job: JobRecord) => {
        const row = toRow(job);
        const inserted = sql.importJob.run(row);
        if (inserted.changes !== 1) return false;
        sql.insertRequest.run(inserted.lastInsertRowid, row.request);
        // A job still to run will be counted as it finishes, under its model's label.
        if (job.status === 'queued' || job.status === 'in_progress') modelLabels.admit(job.model);
        return true;
      };
      return writes.run(() => jobs.filter(importOne).map((job) => job.id));
    },

    async checkpoint() {
      // PASSIVE, never TRUNCATE: once every frame is copied, the next write starts the WAL over in
      // place, so the flushes that follow overwrite blocks the file already has. Cut to zero bytes,
      // every flush until the file was as long again also had to write the file's new size:
      // measured here (ext4), the store alone made creates one at a time at sync=full 3,119-3,541 a
      // second in a WAL reused in place against 2,736-2,897 in one grown from zero, with 177-186 µs
      // of CPU each against 210-219. PASSIVE also never waits for readers; open-database.ts bounds
      // what is kept.
      turnRead.end();
      const [result] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number; checkpointed: number }>;
      // The frames the log holds (-1 when the file is not in WAL: in memory), and whether the
      // checkpoint copied them all: a log copied whole starts over at the next write, however long.
      const { log = 0, checkpointed = 0 } = result ?? {};
      const bytes = log * pageSize;
      if (checkpointed >= log || bytes <= (options.logBacklogBytes ?? LOG_BACKLOG_BYTES)) return null;
      return { path: `${options.path}-wal`, bytes, readers: readLockHolders(options.path) };
    },

    async close() {
      await Promise.all([writes.drain(), limitDraws.drain()]);
      await walSync?.close();
      clearInterval(laterLooks);
      moves.close();
      turnRead.end();
      if (db.open) db.close();
      if (limitsDb.open) limitsDb.close();
      for (const path of [options.path, limitsPath]) dropLogNote(path);
    },
  };
  return store;
}

// Every LIMIT is written CAST(@limit AS INTEGER), never a bare @limit: SQLite (3.53 here) reads a
// bare bound LIMIT while planning, and a plan that read a bound value is thrown away and prepared
// again whenever the statement is re-bound. Measured on the claim's lapsed-lease query with no
// rows: 17 µs a run with LIMIT @limit, 2.5 µs with the CAST, which the planner leaves alone.
function prepareStatements(db: Db) {
  // Every query over finished jobs names their statuses, so it runs on jobs_status_finished (status,
  // finished_at): one seek per status.
  const FINISHED = `(${[...FINAL_STATUSES].map((status) => `'${status}'`).join(', ')})`;
  const jobs = <P extends object | unknown[] | string | number = object>(text: string) => db.prepare<P extends unknown[] ? P : [P], JobRow>(text);
  // A claim's rows come back as arrays of HELD_COLUMNS (held-row.ts says why).
  const claiming = (text: string) => db.prepare<[object], HeldValues>(text).raw();
  // A job with its request, for the reads that return whole jobs: one lookup by key per row.
  const JOB = 'jobs.*, (SELECT request FROM job_requests WHERE job = jobs.seq) AS request';
  return {
    insertJob: db.prepare(`
      INSERT INTO jobs (id, client, nonce, request_hash, status, model, attempts, max_attempts,
                        run_after, expires_at, created_at, updated_at)
      VALUES (@id, @client, @nonce, @request_hash, 'queued', @model, 0, @max_attempts,
              @now, @expires_at, @now, @now)
      ON CONFLICT (client, nonce) DO NOTHING`),
    // Written once, in the transaction that inserted its job (0011 says why apart).
    insertRequest: db.prepare<[number | bigint, string]>('INSERT INTO job_requests (job, request) VALUES (?, ?)'),
    requestOf: db.prepare<[number], string>('SELECT request FROM job_requests WHERE job = ?').pluck(),
    byNonce: jobs(`SELECT ${JOB} FROM jobs WHERE client = @client AND nonce = @nonce`),
    byId: jobs<string>(`SELECT ${JOB} FROM jobs WHERE id = ?`),
    // The ids go in as one JSON array, each looked up by primary key in one statement. Measured
    // in-process: about 1 µs an id, against 3-4 µs for a statement run per id.
    finalAmong: db
      .prepare<[string], string>(
        `
      SELECT jobs.id FROM json_each(?) AS waited JOIN jobs ON jobs.id = waited.value
       WHERE jobs.status IN ${FINISHED}`,
      )
      .pluck(),
    cancelsAmong: db
      .prepare<[string], string>(
        `
      SELECT jobs.id FROM json_each(?) AS held JOIN jobs ON jobs.id = held.value
       WHERE jobs.status = 'in_progress' AND jobs.cancel_requested = 1`,
      )
      .pluck(),
    // Measured: 17 columns read by id cost about half of SELECT * (25 columns, the prompt among them).
    outcomeById: db.prepare<[string], OutcomeRow>(`
      SELECT id, client, status, model, attempts, run_after, expires_at, cancel_requested, created_at, started_at,
             finished_at, output_text, usage, response, error_code, error_message, upstream_status
        FROM jobs WHERE id = ?`),
    byIdForClient: jobs(`SELECT ${JOB} FROM jobs WHERE id = @id AND client = @client`),

    expireQueued: db.prepare(`
      UPDATE jobs
         SET status = 'expired', finished_at = @now, updated_at = @now, error_code = @code, error_message = @message
       WHERE rowid IN (SELECT rowid FROM jobs
                        WHERE status = 'queued' AND expires_at <= @now
                        ORDER BY expires_at
                        LIMIT CAST(@limit AS INTEGER))
      RETURNING model`) as Statement<[object], { model: string }>,
    lapsedLeases: db.prepare<[object], LapsedRow>(`
      SELECT * FROM jobs
       WHERE status = 'in_progress' AND lease_until <= @now
       ORDER BY lease_until
       LIMIT CAST(@limit AS INTEGER)`),
    // The oldest due jobs, taken in one statement (a select, then an update per job, cost a statement each).
    claimDue: claiming(`
      UPDATE jobs
         SET status = 'in_progress', attempts = attempts + 1, lease_token = lease_token + 1,
             lease_until = @lease_until, worker_id = @worker, started_at = COALESCE(started_at, @now), updated_at = @now
       WHERE id IN (SELECT id FROM jobs
                     WHERE status = 'queued' AND run_after <= @now AND expires_at > @now
                     ORDER BY run_after
                     LIMIT CAST(@limit AS INTEGER))
      RETURNING ${HELD_COLUMNS}`),
    claimOne: claiming(`
      UPDATE jobs
         SET status = 'in_progress', attempts = attempts + 1, lease_token = lease_token + 1,
             lease_until = @lease_until, worker_id = @worker, started_at = COALESCE(started_at, @now), updated_at = @now
       WHERE id = @id
      RETURNING ${HELD_COLUMNS}`),

    // updated_at comes back from ahead (the claim's, before the clock stepped back): a lease renewed
    // on the clock as it now reads is no longer one for rebaseRunning to move back.
    renewLease: db.prepare<[object], { cancel_requested: number }>(`
      UPDATE jobs SET lease_until = @lease_until, updated_at = MIN(updated_at, @now)
       WHERE id = @id AND lease_token = @token AND status = 'in_progress'
      RETURNING cancel_requested`),
    complete: db.prepare(`
      UPDATE jobs
         SET status = 'completed', finished_at = @now, updated_at = @now, lease_until = NULL,
             output_text = @output_text, usage = @usage, response = @response,
             error_code = NULL, error_message = NULL, upstream_status = NULL
       WHERE id = @id AND lease_token = @token AND status = 'in_progress'
      RETURNING model`) as Statement<[object], { model: string }>,
    finishHeld: db.prepare(`
      UPDATE jobs
         SET status = @status, finished_at = @now, updated_at = @now, lease_until = NULL,
             error_code = @code, error_message = @message, upstream_status = @upstream_status
       WHERE id = @id AND lease_token = @token AND status = 'in_progress'
      RETURNING model`) as Statement<[object], { model: string }>,
    retry: db.prepare(`
      UPDATE jobs
         SET status = 'queued', run_after = @run_after, updated_at = @now, lease_until = NULL, worker_id = NULL,
             error_code = @code, error_message = @message, upstream_status = @upstream_status
       WHERE id = @id AND lease_token = @token AND status = 'in_progress'
      RETURNING model`) as Statement<[object], { model: string }>,
    // The attempt was never made (or was abandoned before the call), so it is handed back.
    release: db.prepare(`
      UPDATE jobs
         SET status = 'queued', run_after = @run_after, updated_at = @now, lease_until = NULL, worker_id = NULL,
             attempts = MAX(attempts - 1, 0)
       WHERE id = @id AND lease_token = @token AND status = 'in_progress'`),

    // Jobs written before the clock stepped back (rebaseAfterClockStep), the time that holds each
    // back moved back by how far ahead its write stands. By the index of each status's own time:
    // with the clock as it was, only retries waiting (queued) or the jobs under way (running) are in range.
    rebaseQueued: db.prepare(`
      UPDATE jobs SET run_after = run_after - (updated_at - @now), updated_at = @now
       WHERE rowid IN (SELECT rowid FROM jobs
                        WHERE status = 'queued' AND run_after > @bound AND updated_at > @bound
                        LIMIT CAST(@limit AS INTEGER))`),
    // A lease renewed since the step brought updated_at back (renewLease), so what is moved here is
    // a lease from before it, and moved by no more than the step: never shorter than it truly is.
    rebaseRunning: db.prepare(`
      UPDATE jobs SET lease_until = lease_until - (updated_at - @now), updated_at = @now
       WHERE rowid IN (SELECT rowid FROM jobs
                        WHERE status = 'in_progress' AND lease_until > @bound AND updated_at > @bound
                        LIMIT CAST(@limit AS INTEGER))`),
    rebaseWorkers: db.prepare('UPDATE workers SET last_seen_at = @now WHERE last_seen_at > @bound'),

    cancelQueued: db.prepare(`
      UPDATE jobs
         SET status = 'cancelled', finished_at = @now, updated_at = @now
       WHERE id = @id AND client = @client AND status = 'queued'
      RETURNING model`) as Statement<[object], { model: string }>,
    requestCancel: db.prepare(`
      UPDATE jobs SET cancel_requested = 1, updated_at = @now
       WHERE id = @id AND client = @client AND status = 'in_progress'`),

    nextWake: db.prepare<[], { at: number | null }>(`
      SELECT MIN(at) AS at FROM (
        SELECT MIN(run_after) AS at FROM jobs WHERE status = 'queued'
        UNION ALL
        SELECT MIN(lease_until) AS at FROM jobs WHERE status = 'in_progress'
      )`),
    listQueued: jobs(`SELECT ${JOB} FROM jobs WHERE status = 'queued' AND (@client IS NULL OR client = @client) ORDER BY run_after LIMIT CAST(@limit AS INTEGER)`),
    listRunning: jobs(`SELECT ${JOB} FROM jobs WHERE status = 'in_progress' AND (@client IS NULL OR client = @client) ORDER BY lease_until LIMIT CAST(@limit AS INTEGER)`),
    listFinished: jobs(`
      SELECT ${JOB} FROM jobs
       WHERE status = @status AND finished_at IS NOT NULL AND (@client IS NULL OR client = @client)
       ORDER BY finished_at DESC
       LIMIT CAST(@limit AS INTEGER)`),
    // The status page's latest failures of one client: on jobs_failed_by_client (migration 0008),
    // which the planner takes only when the query names status = 'failed' itself.
    listFailedForClient: jobs(`
      SELECT ${JOB} FROM jobs
       WHERE status = 'failed' AND client = @client
       ORDER BY finished_at DESC
       LIMIT CAST(@limit AS INTEGER)`),
    // rowid follows insertion, so this is newest first without an index on created_at.
    listNewest: jobs(`SELECT ${JOB} FROM jobs WHERE (@client IS NULL OR client = @client) ORDER BY rowid DESC LIMIT CAST(@limit AS INTEGER)`),
    failedIds: db.prepare("SELECT id FROM jobs WHERE status = 'failed' AND finished_at IS NOT NULL LIMIT CAST(@limit AS INTEGER)"),
    // A fresh start: new attempts, and the same length of deadline the job first had.
    requeue: db.prepare(`
      UPDATE jobs
         SET status = 'queued', attempts = 0, run_after = @now, expires_at = @now + (expires_at - created_at),
             finished_at = NULL, started_at = NULL, lease_until = NULL, worker_id = NULL, cancel_requested = 0,
             error_code = NULL, error_message = NULL, upstream_status = NULL, updated_at = @now
       WHERE id = @id AND status IN ('failed', 'expired')`),
    // Counted as jobs finish (finished-minutes.ts; the table is migration 0007's): at most sixty rows a status for an hour.
    perMinute: db.prepare<[number], { minute: number; status: JobStatus; n: number }>(
      'SELECT minute, status, n FROM finished_per_minute WHERE minute >= CAST(? / 60000 AS INTEGER) ORDER BY minute',
    ),
    pruneMinutes: db.prepare<[number]>('DELETE FROM finished_per_minute WHERE minute < CAST(? / 60000 AS INTEGER)'),
    finishedSince: db.prepare<[number], { id: string; status: JobStatus; finished_at: number }>(
      `SELECT id, status, finished_at FROM jobs WHERE status IN ${FINISHED} AND finished_at >= ? ORDER BY finished_at`,
    ),
    deleteFinished: db.prepare<[{ before: number; limit: number }]>(`
      DELETE FROM jobs
       WHERE rowid IN (SELECT rowid FROM jobs
                        WHERE status IN ${FINISHED} AND finished_at < @before
                        LIMIT CAST(@limit AS INTEGER))`),
    // Kept by triggers (migration 0006): six rows, however many jobs the file holds.
    countByStatus: db.prepare<[], { status: JobStatus; n: number }>('SELECT status, n FROM job_counts'),

    upsertWorker: db.prepare(`
      INSERT INTO workers (id, host, pid, started_at, last_seen_at, jobs_done, clock_offset_ms)
      VALUES (@id, @host, @pid, @started_at, @last_seen_at, @jobs_done, @clock_offset_ms)
      ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at, jobs_done = excluded.jobs_done, clock_offset_ms = excluded.clock_offset_ms`),
    deleteWorker: db.prepare<[string]>('DELETE FROM workers WHERE id = ?'),
    pruneWorkers: db.prepare<[number]>('DELETE FROM workers WHERE last_seen_at < ?'),
    liveWorkers: db.prepare<[number], WorkerRow>(
      'SELECT id, host, pid, started_at, last_seen_at, jobs_done, clock_offset_ms FROM workers WHERE last_seen_at >= ? ORDER BY started_at',
    ),

    dataVersion: db.prepare('PRAGMA data_version'),
    ping: db.prepare('SELECT version FROM schema_migrations LIMIT 1'),
    // MIN over jobs_queued_due's key: one seek. MIN(created_at) read every queued row (measured 20 ms
    // with some 100,000 queued, on the API's event loop at each /health and /metrics).
    oldestDue: db.prepare("SELECT MIN(run_after) FROM jobs WHERE status = 'queued'"),
    // rowid grows with each insert, so pages come in the order the jobs were created.
    pageByRowid: db.prepare<{ after: number; limit: number }, JobRow & { position: number }>(
      `SELECT rowid AS position, ${JOB} FROM jobs WHERE rowid > @after ORDER BY rowid LIMIT CAST(@limit AS INTEGER)`,
    ),
    // A copy keeps every column as it was; a job the store already has (by id, or by client and nonce)
    // is left alone. Its request goes in beside it (insertRequest), as a create's does.
    importJob: db.prepare<[JobRow]>(`
      INSERT INTO jobs (id, client, nonce, request_hash, status, model, attempts, max_attempts, run_after,
                        expires_at, lease_until, lease_token, worker_id, cancel_requested, created_at, started_at,
                        finished_at, updated_at, output_text, usage, response, error_code, error_message, upstream_status)
      VALUES (@id, @client, @nonce, @request_hash, @status, @model, @attempts, @max_attempts, @run_after,
              @expires_at, @lease_until, @lease_token, @worker_id, @cancel_requested, @created_at, @started_at,
              @finished_at, @updated_at, @output_text, @usage, @response, @error_code, @error_message, @upstream_status)
      ON CONFLICT DO NOTHING`),
  };
}

/** `data/requests.sqlite` → `data/requests.limits.sqlite`: the limiter's sibling file. */
export function limitsPathFor(path: string): string {
  return path === ':memory:' ? ':memory:' : `${path.replace(/\.(sqlite3?|db)$/, '')}.limits.sqlite`;
}
