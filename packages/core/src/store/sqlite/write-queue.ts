import type { Db } from './open-database.js';
import { isDatabaseUnavailable } from '../unavailable.js';
import type { WalSync } from './wal-sync.js';
import { writeLockHolder } from './lock-holder.js';

/** The most writes one group commit takes, so one transaction never holds the write lock for long. */
export const MAX_GROUP_COMMIT = 256;

/**
 * The longest SQLite's own busy handler holds the event loop while another connection has the write
 * lock. It sleeps in the calling thread, so with the connection's busy_timeout of 5 s a lock held
 * elsewhere (an operator's open transaction) froze the whole process: every lookup too, not only
 * the writes. Past this, the queue waits off the event loop and tries again, first after
 * BUSY_RETRY_MS and then twice as long each time up to BUSY_RETRY_MAX_MS (so a lock held for
 * seconds holds the loop a sixth of the time, not two thirds), until the write has waited its
 * busy_timeout. A commit by another program of ours takes a few ms, well within BUSY_BLOCK_MS.
 */
export const BUSY_BLOCK_MS = 20;
export const BUSY_RETRY_MS = 10;
export const BUSY_RETRY_MAX_MS = 100;

/** What runs at the edges of each transaction the queue commits (the counters' batched upserts). */
export interface WriteQueueHooks {
  /** Before each flush, outside any transaction: ends what the connection holds open (a turn's read, turn-read.ts). */
  beforeFlush?(): void;
  /** Before each transaction: throws to refuse its writes (the database file moved away). */
  check?(): void;
  /** First inside each transaction: throws to refuse its writes by what it reads (a later release's migration). */
  begin?(): void;
  /** Inside the transaction, after its writes: anything they left to write goes in now. */
  beforeCommit(): void;
  /** After a rollback: forget what the rolled-back writes left behind. */
  afterRollback(): void;
}

/**
 * Group commit. Writes queued in the same event-loop turn run in one IMMEDIATE transaction, so
 * under load one commit serves many of them; each promise resolves only after the commit that
 * holds its write and, when `durable` is given, after it resolves too (the WAL flushed to disk, see
 * wal-sync.ts). A batch that throws is rolled back and its writes are run again one transaction
 * each, so one bad write fails alone; unless the database itself failed (an I/O error), which fails
 * every write of the flush at once. The write lock held elsewhere is waited for off the event loop
 * (BUSY_BLOCK_MS): writes queued meanwhile wait behind the batch, and the batch's writes that have
 * waited `waitMs` fail together (503 material), not one wait after another. A write run again alone
 * after its batch failed waits the same way if another program took the lock in between.
 */
export function createWriteQueue(
  db: Db,
  hooks?: WriteQueueHooks,
  durable?: Pick<WalSync, 'flushed' | 'check'>,
  /** How long a write waits for the write lock before it fails (the connection's busy_timeout). */
  waitMs = 5000,
): { run<T>(write: () => T, mustBeDurable?: boolean): Promise<T>; drain(): Promise<void> } {
  type Pending = {
    write: () => unknown;
    resolve: (v: unknown) => void;
    reject: (e: unknown) => void;
    mustBeDurable: boolean;
    /** Set when the write first finds the lock taken: when it stops waiting. */
    giveUpAt?: number;
  };
  const pending: Pending[] = [];
  let scheduled = false;
  let retry: NodeJS.Timeout | null = null;
  // Tries since the lock was last found free.
  let lockTries = 0;
  // From here on every write of this connection goes through the queue, which waits for the lock
  // itself (its migrations, before, had the full busy_timeout). Set once: setting it around each
  // flush instead cost the worker 5% more instructions a job (two pragmas a flush; 510,388 against
  // 483,902–486,279), and SQLite applies this pragma as it prepares it, so a prepared one cannot
  // be run again instead.
  db.pragma(`busy_timeout = ${Math.min(BUSY_BLOCK_MS, waitMs)}`);
  const runBatch = db.transaction((batch: typeof pending) => {
    hooks?.begin?.();
    const results = batch.map((p) => p.write());
    hooks?.beforeCommit();
    return results;
  });
  const runAlone = db.transaction((write: () => unknown) => {
    hooks?.begin?.();
    const result = write();
    hooks?.beforeCommit();
    return result;
  });

  function flush() {
    hooks?.beforeFlush?.();
    scheduled = false;
    if (retry) clearTimeout(retry);
    retry = null;
    // Answered after one flush that covers every batch committed here.
    const flushing: Array<[Pending, unknown]> = [];
    commitBatches(flushing);
    if (durable && flushing.length > 0) {
      durable.flushed().then(
        () => flushing.forEach(([p, value]) => p.resolve(value)),
        (err: unknown) => flushing.forEach(([p]) => p.reject(err)),
      );
    }
  }

  function commitBatches(flushing: Array<[Pending, unknown]>) {
    // Set when the database itself failed (an I/O error): the rest of this flush fails with it.
    // Held in an object: a thrown value may be anything, a falsy one too.
    let unavailable: { error: unknown } | null = null;
    while (pending.length > 0) {
      const batch = pending.splice(0, MAX_GROUP_COMMIT);
      try {
        // After a failed flush nothing more is written: it could not be promised durable.
        durable?.check();
        hooks?.check?.();
        if (unavailable) throw unavailable.error;
      } catch (err) {
        batch.forEach((p) => p.reject(err));
        continue;
      }
      const outcomes: Array<{ ok: boolean; value: unknown }> = [];
      try {
        for (const value of runBatch.immediate(batch)) outcomes.push({ ok: true, value });
        lockTries = 0;
      } catch (err) {
        hooks?.afterRollback();
        if (isLockTaken(err)) {
          waitForLock(batch, err);
          return;
        }
        if (isDatabaseUnavailable(err)) unavailable = { error: err };
        if (batch.length === 1 || unavailable) {
          for (let i = 0; i < batch.length; i++) outcomes.push({ ok: false, value: err });
        } else {
          for (const p of batch) {
            try {
              outcomes.push({ ok: true, value: runAlone.immediate(p.write) });
            } catch (err) {
              hooks?.afterRollback();
              if (isLockTaken(err)) {
                // Taken between the batch and this write: the writes run alone so far are settled,
                // this one and the rest wait for the lock as a batch does.
                settle(batch.slice(0, outcomes.length), outcomes, flushing);
                waitForLock(batch.slice(outcomes.length), err);
                return;
              }
              outcomes.push({ ok: false, value: err });
            }
          }
        }
      }
      settle(batch, outcomes, flushing);
    }
  }

  function settle(batch: Pending[], outcomes: Array<{ ok: boolean; value: unknown }>, flushing: Array<[Pending, unknown]>) {
    batch.forEach((p, i) => {
      const outcome = outcomes[i] as { ok: boolean; value: unknown };
      // A failed write changed nothing, so it has nothing to wait for.
      if (!outcome.ok) p.reject(outcome.value);
      else if (durable && p.mustBeDurable) flushing.push([p, outcome.value]);
      else p.resolve(outcome.value);
    });
  }

  /**
   * The write lock is held elsewhere: the batch's writes that have waited `waitMs` fail together
   * (503 material), the rest go back in front of those queued after them, and all try again shortly.
   */
  function waitForLock(batch: Pending[], err: unknown) {
    const at = performance.now();
    const waiting: Pending[] = [];
    let givenUp: unknown = null;
    for (const p of batch) {
      p.giveUpAt ??= at + waitMs - BUSY_BLOCK_MS;
      if (p.giveUpAt > at) waiting.push(p);
      else p.reject((givenUp ??= namingHolder(err, db.name)));
    }
    pending.unshift(...waiting);
    if (pending.length === 0) return;
    scheduled = true;
    retry = setTimeout(flush, Math.min(BUSY_RETRY_MAX_MS, BUSY_RETRY_MS * 2 ** lockTries++));
  }

  return {
    /**
     * `mustBeDurable: false` answers right after the commit, before the flush: for writes whose loss
     * in a power cut costs nothing that the cut did not already cost (see the claim).
     */
    run<T>(write: () => T, mustBeDurable = true): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        pending.push({ write, resolve: resolve as (v: unknown) => void, reject, mustBeDurable });
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      });
    },
    /** Writes what is queued, waiting for the lock as a write would; for closing. */
    async drain() {
      flush();
      while (retry) await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
    },
  };
}

/** `err` (SQLITE_BUSY), saying which process holds the write lock when that can be told. */
function namingHolder(err: unknown, dbPath: string): unknown {
  const holder = writeLockHolder(dbPath);
  if (!holder || !(err instanceof Error)) return err;
  return Object.assign(new Error(`${err.message}: the write lock is held by ${holder}`, { cause: err }), { name: err.name, code: (err as { code?: unknown }).code });
}

/** SQLite's answer when another connection holds the write lock (after the busy handler gave up). */
function isLockTaken(err: unknown): boolean {
  return typeof (err as { code?: unknown })?.code === 'string' && (err as { code: string }).code.startsWith('SQLITE_BUSY');
}
