import type { Db } from './open-database.js';

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
 * under load one commit (one fsync with synchronous=FULL) serves many of them; each promise
 * resolves only after the commit that holds its write. A batch that throws is rolled back and its
 * writes are run again one transaction each, so one bad write fails alone.
 */
export function createWriteQueue(db: Db, hooks?: WriteQueueHooks): { run<T>(write: () => T): Promise<T>; flush(): void } {
  const pending: Array<{ write: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];
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
    while (pending.length > 0) {
      const batch = pending.splice(0, MAX_GROUP_COMMIT);
      let results: unknown[];
      try {
        results = runBatch.immediate(batch);
      } catch {
        hooks?.afterRollback();
        for (const p of batch) {
          try {
            p.resolve(runAlone.immediate(p.write));
          } catch (err) {
            hooks?.afterRollback();
            p.reject(err);
          }
        }
        continue;
      }
      batch.forEach((p, i) => p.resolve(results[i]));
    }
  }

  return {
    run<T>(write: () => T): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        pending.push({ write, resolve: resolve as (v: unknown) => void, reject });
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      });
    },
    flush,
  };
}
