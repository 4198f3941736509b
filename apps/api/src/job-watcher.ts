import { createChangeWatch, watchClockSteps, type JobStore, type Logger } from '@proxy/core';

/** Wakes long-polling requests when their job reaches a final status. */
export interface JobWatcher {
  /** Resolves when the job finishes, when `timeoutMs` passes, or when `signal` aborts, whichever is first. */
  waitForFinal(id: string, timeoutMs: number, signal: AbortSignal): Promise<void>;
  /** Wakes the waiters of a job this process changed itself (its own commits do not move data_version). */
  notify(id: string): void;
  readonly waiting: number;
  /** Answers every waiter now, and any later one at once (stopping). */
  close(): void;
}

/**
 * How often the watcher looks for completions while anyone waits and the store cannot tell it of
 * commits; where it can, looks come at most this often, so under load a look's cost is paid at most
 * once a poll, and a new waiter is looked at by id within it.
 */
export const WATCH_POLL_MS = 15;

// Completions are looked up from a little before the last check, so a commit racing the check is not missed.
const OVERLAP_MS = 1000;

/**
 * A look reads either the jobs waited for, by id, or the jobs finished since the last look (a
 * listing, which reaches back OVERLAP_MS and so reads about a second of the workers' output). An id
 * costs about what a listed row does (on SQLite, in-process: about 1 µs an id, 1.3 µs a row), so a
 * look takes whichever is fewer: the waiters, or the rows the last listing read. Up to this many
 * waiters it reads by id without asking: that costs at most about 1% of a core more than nothing.
 * Measured with profile.ts longpoll (the API's CPU while a daemon drained 20,000 other jobs at
 * 3,500-4,900 a second): 100 waiters 4% of a core, 500 5%, 2,000 16-17%, against 26%, 26% and 29%
 * when every look above 64 waiters listed; one waiter 2%, 64 waiters 2-3%.
 */
export const WATCH_ALWAYS_BY_ID = 64;

/**
 * One watcher per API process serves every waiter: while anyone waits, it asks the store whether
 * another connection committed (SQLite's PRAGMA data_version, no table read), and only then looks:
 * at the waited-for jobs by id, or at the jobs finished since its last look, whichever reads fewer
 * rows (see WATCH_ALWAYS_BY_ID). While commits come it asks every `pollMs`; once two asks in a row
 * found none, it waits for the store to tell it of one (JobStore.watchChanges), asking at least every
 * WATCHED_POLL_MS in case a notice is lost. Asking every 15 ms, an API with one waiter and nothing
 * committed used 49-56 ticks of CPU in 20 s against 22-27 with none (most of those its metrics'
 * timer, see EVENT_LOOP_SAMPLE_MS); told, and with that timer slowed, 9-11 against 8. A job waited for
 * since the last look is looked at by id within `pollMs` even when nothing was committed: it may
 * have finished, unseen, between its handler's read and its wait.
 * Idle, and not watching, when nobody waits.
 */
export function createJobWatcher(options: { store: JobStore; logger: Logger; pollMs: number; now?: () => number }): JobWatcher {
  const now = options.now ?? options.store.now;
  const waiters = new Map<string, Set<() => void>>();
  // Jobs waited for since the last look.
  let fresh = new Set<string>();
  let timer: NodeJS.Timeout | null = null;
  // When the pending look is due, and when the last one began (performance.now()).
  let timerDue = Infinity;
  let lookedAt = -Infinity;
  let looking = false;
  let lastVersion = -1;
  let since = 0;
  let closed = false;
  // What the last listing read, and when: the estimate of what a listing costs now. Refreshed at
  // least every OVERLAP_MS while many wait, so a change in the workers' pace is noticed.
  let listed = { rows: 0, at: -Infinity };
  // A listing from `since` misses the jobs finished after the clock stepped back (their finished_at
  // falls before it), and their waiters would wait out their whole wait: the first look with
  // commits after a step reads the waiters by id.
  const clockStep = watchClockSteps(now);
  let stepped = false;
  const readById = (at: number) => waiters.size <= WATCH_ALWAYS_BY_ID || (waiters.size <= listed.rows && at - listed.at < OVERLAP_MS);

  const wake = (id: string) => {
    const set = waiters.get(id);
    if (!set) return;
    waiters.delete(id);
    for (const resolve of set) resolve();
  };

  // Whether a notice came since the last look began. One is enough: the watch closes until the
  // looks every poll find the store quiet again, so commits that come fast (this API's own creates
  // included) bring one notice, not one each.
  let noticed = false;
  const watch = createChangeWatch(options.store, () => {
    noticed = true;
    watch.close();
    lookWithin(0);
  });

  async function tick() {
    timer = null;
    timerDue = Infinity;
    looking = true;
    lookedAt = performance.now();
    const watchedBefore = watch.isOpen;
    // A notice before this look began, or during it.
    let busy = noticed;
    noticed = false;
    let changed = false;
    const newlyWaited = [...fresh].filter((id) => waiters.has(id));
    fresh = new Set();
    try {
      if (clockStep() > 0) stepped = true;
      const version = await options.store.changeCounter();
      if (version !== lastVersion) {
        changed = true;
        lastVersion = version;
        const checkedAt = now();
        if (stepped || readById(checkedAt)) {
          for (const id of await options.store.finalAmong([...waiters.keys()])) wake(id);
          stepped = false;
        } else {
          const rows = await options.store.listFinishedSince(since - OVERLAP_MS);
          listed = { rows: rows.length, at: checkedAt };
          for (const row of rows) wake(row.id);
        }
        since = checkedAt;
      } else if (newlyWaited.length > 0) {
        for (const id of await options.store.finalAmong(newlyWaited)) wake(id);
      }
    } catch (err) {
      // Looked at again next poll.
      for (const id of newlyWaited) if (waiters.has(id)) fresh.add(id);
      changed = true;
      options.logger.warn('job watcher: check failed', { err });
    }
    looking = false;
    // The last waiter left while this look ran (answered, or gone): idle() closed the watch already.
    if (closed || waiters.size === 0) return idle();
    // Commits coming (another connection's, or a notice of any, this API's own included): look every
    // poll, unwatched, as under load a notice would come for nearly every write. Watched throughout,
    // the API used 9% of a core against 2% while a worker drained (profile.ts longpoll), and heard of
    // each of its own creates while anyone waited (300 notices for 300 creates; now a handful).
    // Quiet: watch, and look once more, for a commit made before the watch opened. Quiet since the
    // watch opened: wait for a notice.
    busy ||= changed || noticed;
    if (busy) watch.close();
    else watch.open();
    lookWithin(busy || fresh.size > 0 || !watchedBefore ? options.pollMs : watch.nextLookWithin(options.pollMs));
  }

  // Schedules the next look no later than `ms` from now (a pending one stays if it comes sooner),
  // and no sooner than `pollMs` after the last one began. A look in progress schedules the next
  // itself when it ends.
  function lookWithin(ms: number) {
    if (looking || closed || waiters.size === 0) return;
    const at = Math.max(performance.now() + ms, lookedAt + options.pollMs);
    if (at >= timerDue) return;
    if (timer) clearTimeout(timer);
    timerDue = at;
    timer = setTimeout(() => void tick(), Math.max(0, at - performance.now()));
  }

  // Nobody waits: no look pending, no watch open.
  function idle() {
    if (timer) clearTimeout(timer);
    timer = null;
    timerDue = Infinity;
    watch.close();
  }

  return {
    get waiting() {
      let n = 0;
      for (const set of waiters.values()) n += set.size;
      return n;
    },
    waitForFinal(id, timeoutMs, signal) {
      return new Promise<void>((resolve) => {
        // Closed: the API is stopping, and a long-poll whose read came after the close would hold
        // the stop for its whole wait. It is answered now with the job as it is.
        if (signal.aborted || closed) return resolve();
        const done = () => {
          clearTimeout(timeout);
          signal.removeEventListener('abort', done);
          const set = waiters.get(id);
          set?.delete(done);
          if (set?.size === 0) waiters.delete(id);
          if (waiters.size === 0) idle();
          resolve();
        };
        const timeout = setTimeout(done, timeoutMs);
        signal.addEventListener('abort', done, { once: true });
        if (waiters.size === 0) since = now();
        const set = waiters.get(id) ?? new Set();
        set.add(done);
        waiters.set(id, set);
        fresh.add(id);
        lookWithin(options.pollMs);
      });
    },
    notify: wake,
    close() {
      closed = true;
      idle();
      for (const id of [...waiters.keys()]) wake(id);
    },
  };
}
