import { isDatabaseUnavailable } from '../unavailable.js';

/** The most calls one batch statement takes, so one statement never holds many rows' locks for long. */
export const MAX_BATCH = 256;

export interface TurnBatch<I, O> {
  /** Resolves when the statement holding `item` has committed. */
  run(item: I): Promise<O>;
  /** Resolves once every batch already started or scheduled has settled (before the pool is closed). */
  drain(): Promise<void>;
}

/**
 * Group commit for PostgreSQL: the calls made in one event-loop turn go to the server as one
 * statement, so they share a round trip, a transaction and its WAL flush (the SQLite store's write
 * queue does the same with one transaction). A lone call is a batch of one. When a batch statement
 * fails, its calls are run again one statement each, so one bad row fails alone (unless the server
 * is unreachable or shutting down: then they all fail with it).
 */
export function createTurnBatch<I, O>(runMany: (items: I[]) => Promise<O[]>): TurnBatch<I, O> {
  type Pending = { item: I; resolve: (value: O) => void; reject: (err: unknown) => void };
  let pending: Pending[] = [];
  const inFlight = new Set<Promise<void>>();

  async function runChunk(chunk: Pending[]): Promise<void> {
    if (chunk.length > 1) {
      let results: O[] | null = null;
      try {
        results = await runMany(chunk.map((p) => p.item));
      } catch (err) {
        // A server that cannot serve now fails every call alike: sending each again alone would only
        // queue as many more connection attempts.
        if (isDatabaseUnavailable(err)) {
          chunk.forEach((p) => p.reject(err));
          return;
        }
        // Otherwise fall through: each call alone, so the error lands only on the call that causes it.
      }
      if (results) {
        chunk.forEach((p, i) => p.resolve(results[i] as O));
        return;
      }
    }
    await Promise.all(chunk.map((p) => runMany([p.item]).then(([result]) => p.resolve(result as O), p.reject)));
  }

  function flush(): void {
    const batch = pending;
    pending = [];
    for (let at = 0; at < batch.length; at += MAX_BATCH) {
      const running = runChunk(batch.slice(at, at + MAX_BATCH)).finally(() => inFlight.delete(running));
      inFlight.add(running);
    }
  }

  return {
    run(item) {
      return new Promise<O>((resolve, reject) => {
        if (pending.length === 0) setImmediate(flush);
        pending.push({ item, resolve, reject });
      });
    },
    async drain() {
      if (pending.length > 0) flush();
      while (inFlight.size > 0) await Promise.all([...inFlight]);
    },
  };
}
