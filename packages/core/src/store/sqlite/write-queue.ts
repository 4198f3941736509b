import type { Db } from './open-database.js';
import { isDatabaseUnavailable } from '../unavailable.js';
import type { WalSync } from './wal-sync.js';

/** The most writes one group commit takes, so one transaction never holds the write lock for long. */
export const MAX_GROUP_COMMIT = 256;

/** What runs at the edges of each transaction the queue commits (the counters' batched upserts). */
export interface WriteQueueHooks {
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
 * each, so one bad write fails alone; unless the database itself failed (its write lock held past
 * busy_timeout, an I/O error), which fails every write of the flush at once: run again one by one,
 * each would block the event loop for busy_timeout in turn.
 */
export function createWriteQueue(
  db: Db,
  hooks?: WriteQueueHooks,
  durable?: Pick<WalSync, 'flushed' | 'check'>,
): { run<T>(write: () => T, mustBeDurable?: boolean): Promise<T>; flush(): void } {
  type Pending = { write: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void; mustBeDurable: boolean };
  const pending: Pending[] = [];
  let scheduled = false;
  const runBatch = db.transaction((batch: typeof pending) => {
    const results = batch.map((p) => p.write());
    hooks?.beforeCommit();
    return results;
  });
  const runAlone = db.transaction((write: () => unknown) => {
    const result = write();
    hooks?.beforeCommit();
    return result;
  });

  function flush() {
    scheduled = false;
    // Answered after one flush that covers every batch committed here.
    const flushing: Array<[Pending, unknown]> = [];
    // Set when the database itself failed (busy past busy_timeout, I/O): the rest of this flush
    // fails with it rather than have the event loop wait out busy_timeout again for each.
    let unavailable: unknown = null;
    while (pending.length > 0) {
      const batch = pending.splice(0, MAX_GROUP_COMMIT);
      try {
        // After a failed flush nothing more is written: it could not be promised durable.
        durable?.check();
        if (unavailable) throw unavailable;
      } catch (err) {
        batch.forEach((p) => p.reject(err));
        continue;
      }
      const outcomes: Array<{ ok: boolean; value: unknown }> = [];
      try {
        for (const value of runBatch.immediate(batch)) outcomes.push({ ok: true, value });
      } catch (err) {
        hooks?.afterRollback();
        if (isDatabaseUnavailable(err)) unavailable = err;
        if (batch.length === 1 || unavailable) {
          for (let i = 0; i < batch.length; i++) outcomes.push({ ok: false, value: err });
        } else {
          for (const p of batch) {
            try {
              outcomes.push({ ok: true, value: runAlone.immediate(p.write) });
            } catch (err) {
              hooks?.afterRollback();
              outcomes.push({ ok: false, value: err });
            }
          }
        }
      }
      batch.forEach((p, i) => {
        const outcome = outcomes[i] as { ok: boolean; value: unknown };
        // A failed write changed nothing, so it has nothing to wait for.
        if (!outcome.ok) p.reject(outcome.value);
        else if (durable && p.mustBeDurable) flushing.push([p, outcome.value]);
        else p.resolve(outcome.value);
      });
    }
    if (durable && flushing.length > 0) {
      durable.flushed().then(
        () => flushing.forEach(([p, value]) => p.resolve(value)),
        (err: unknown) => flushing.forEach(([p]) => p.reject(err)),
      );
    }
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
    flush,
  };
}
