import type { JobStore } from './types.js';

/**
 * A reader told of commits (JobStore.watchChanges) looks anyway this often (or at its own poll, if
 * that is longer) in case a notice is lost. Looking every 20 ms cost an idle worker daemon 1.9% of a
 * core (38 ticks of CPU in 20 s, two runs), most of it the wakeup itself; told, 0.5% (9-10 ticks).
 */
export const WATCHED_POLL_MS = 1000;
/**
 * A notice can arrive a moment before its commit is visible (the log is written before its index
 * is updated): for this long after one, a reader looks at its own poll as it would unwatched, so a
 * commit it was told of too early is still found at once.
 */
export const NOTICE_SETTLE_MS = 100;

/** One reader's watch on the store's commits, opened while it waits and closed while it works. */
export interface ChangeWatch {
  /** Starts watching (if not yet); false where the store cannot tell, and the reader then polls. */
  open(): boolean;
  close(): void;
  readonly isOpen: boolean;
  /** How long the reader may wait before it looks again: `pollMs` unwatched or just after a notice, else the safety poll. */
  nextLookWithin(pollMs: number): number;
}

/** A watch that calls `onNotice` for each notice while open. */
export function createChangeWatch(store: Pick<JobStore, 'watchChanges'>, onNotice: () => void): ChangeWatch {
  let stop: (() => void) | null = null;
  // A store that could not watch once (an in-memory SQLite file) is not asked again.
  let canWatch = true;
  let noticedAt = -Infinity;
  return {
    open() {
      if (!stop && canWatch) {
        stop = store.watchChanges(() => {
          noticedAt = performance.now();
          onNotice();
        });
        canWatch = stop !== null;
      }
      return stop !== null;
    },
    close() {
      stop?.();
      stop = null;
    },
    get isOpen() {
      return stop !== null;
    },
    nextLookWithin(pollMs) {
      return !stop || performance.now() - noticedAt < NOTICE_SETTLE_MS ? pollMs : Math.max(pollMs, WATCHED_POLL_MS);
    },
  };
}
