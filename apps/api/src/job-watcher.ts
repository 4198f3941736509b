import type { JobStore, Logger } from '@proxy/core';

/** Wakes long-polling requests when their job reaches a final status. */
export interface JobWatcher {
  /** Resolves when the job finishes, when `timeoutMs` passes, or when `signal` aborts, whichever is first. */
  waitForFinal(id: string, timeoutMs: number, signal: AbortSignal): Promise<void>;
  /** Wakes the waiters of a job this process changed itself (its own commits do not move data_version). */
  notify(id: string): void;
  readonly waiting: number;
  close(): void;
}

/** How often the watcher looks for completions while anyone waits: answers come this soon after a job ends. */
export const WATCH_POLL_MS = 15;

// Completions are looked up from a little before the last check, so a commit racing the check is not missed.
const OVERLAP_MS = 1000;

/**
 * One watcher per API process serves every waiter: while anyone waits, it asks SQLite every
 * `pollMs` whether another connection committed (PRAGMA data_version, no table read), and only then
 * lists the jobs finished since its last look. Idle when nobody waits.
 */
export function createJobWatcher(options: { store: JobStore; logger: Logger; pollMs: number; now?: () => number }): JobWatcher {
  const now = options.now ?? Date.now;
  const waiters = new Map<string, Set<() => void>>();
  let timer: NodeJS.Timeout | null = null;
  let lastVersion = -1;
  let since = 0;
  let closed = false;

  const wake = (id: string) => {
    const set = waiters.get(id);
    if (!set) return;
    waiters.delete(id);
    for (const resolve of set) resolve();
  };

  async function tick() {
    timer = null;
    try {
      const version = await options.store.changeCounter();
      if (version !== lastVersion) {
        lastVersion = version;
        const checkedAt = now();
        for (const row of await options.store.listFinishedSince(since - OVERLAP_MS)) wake(row.id);
        since = checkedAt;
      }
    } catch (err) {
      options.logger.warn('job watcher: check failed', { err });
    }
    schedule();
  }

  function schedule() {
    if (!timer && !closed && waiters.size > 0) timer = setTimeout(() => void tick(), options.pollMs);
  }

  return {
    get waiting() {
      let n = 0;
      for (const set of waiters.values()) n += set.size;
      return n;
    },
    waitForFinal(id, timeoutMs, signal) {
      return new Promise<void>((resolve) => {
        if (signal.aborted) return resolve();
        const done = () => {
          clearTimeout(timeout);
          signal.removeEventListener('abort', done);
          const set = waiters.get(id);
          set?.delete(done);
          if (set?.size === 0) waiters.delete(id);
          resolve();
        };
        const timeout = setTimeout(done, timeoutMs);
        signal.addEventListener('abort', done, { once: true });
        if (waiters.size === 0) since = now();
        const set = waiters.get(id) ?? new Set();
        set.add(done);
        waiters.set(id, set);
        schedule();
      });
    },
    notify: wake,
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const id of [...waiters.keys()]) wake(id);
    },
  };
}
