import type { JobStore } from '../store/types.js';

/**
 * How often a worker asks whether a client cancelled one of its running jobs. A renewal of the
 * lease carries the same word, but only every third of LEASE_SECONDS (10 s by default): a call
 * shorter than that completed after its client had been answered 202 cancel_requested.
 */
export const CANCEL_LOOK_MS = 1000;

/** The jobs a worker is calling, each with what to do when its client cancels it. */
export interface CancelWatch {
  /** Watches `id` while its attempt runs; the returned function stops watching. */
  watch(id: string, onCancel: () => void): () => void;
}

/**
 * One look for every running job of the process, once a second while any runs (one read by id of
 * at most WORKER_CONCURRENCY rows); no timer while none does. A look that fails (the database
 * away) is skipped: the lease's renewals meet the same outage and say so.
 */
export function createCancelWatch(store: Pick<JobStore, 'cancelsAmong'>, everyMs = CANCEL_LOOK_MS): CancelWatch {
  const running = new Map<string, () => void>();
  let timer: NodeJS.Timeout | undefined;

  const look = async () => {
    timer = undefined;
    if (running.size === 0) return;
    try {
      for (const id of await store.cancelsAmong([...running.keys()])) running.get(id)?.();
    } catch {
      // Skipped, as above.
    }
    arm();
  };
  const arm = () => {
    if (timer === undefined && running.size > 0) timer = setTimeout(() => void look(), everyMs).unref();
  };

  return {
    watch(id, onCancel) {
      running.set(id, onCancel);
      arm();
      return () => {
        running.delete(id);
        if (running.size === 0 && timer !== undefined) {
          clearTimeout(timer);
          timer = undefined;
        }
      };
    },
  };
}
