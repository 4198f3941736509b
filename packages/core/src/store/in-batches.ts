/**
 * Writing many rows without stopping everyone else. Measured on SQLite: one `DELETE` of 1,000,000
 * finished jobs held the write lock for 6.4 s, and marking 300,000 overdue queued jobs expired (a
 * worker back after an hour away) took 6.0 s in one statement; the API's creates waited out their
 * 5 s busy_timeout meanwhile and answered 503, its event loop blocked. In batches of about
 * BATCH_TARGET_MS each, with a pause as long as the batch between them, such a pass holds the lock
 * at most about half the time and never for long, and the caller's own event loop runs in the
 * pauses. On PostgreSQL a batch holds its rows' locks only until it commits.
 */
export const BATCH_TARGET_MS = 10;

/** The first batch's size; later ones are sized from how long the last took (rows differ a lot in size). */
const FIRST_BATCH = 500;
const MIN_BATCH = 10;
const MAX_BATCH = 50_000;

export interface InBatchesOptions {
  /** Stops between batches (a worker shutting down); what was written stays written. */
  signal?: AbortSignal | undefined;
  /** The clock the batches are timed with, in ms (tests). */
  clock?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `batch(limit)`, each call its own transaction writing at most `limit` rows, until one writes
 * fewer than its limit (nothing left) or `signal` aborts; returns how many rows it wrote in all.
 */
export async function inBatches(batch: (limit: number) => number | Promise<number>, options: InBatchesOptions = {}): Promise<number> {
  const clock = options.clock ?? (() => performance.now());
  const sleep = options.sleep ?? pause;
  let limit = FIRST_BATCH;
  let total = 0;
  for (;;) {
    const began = clock();
    const n = await batch(limit);
    total += n;
    if (n < limit || options.signal?.aborted) return total;
    const took = clock() - began;
    limit = Math.round(Math.min(MAX_BATCH, Math.max(MIN_BATCH, (limit * BATCH_TARGET_MS) / Math.max(took, 0.1))));
    await sleep(Math.max(1, Math.ceil(took)));
    if (options.signal?.aborted) return total;
  }
}
