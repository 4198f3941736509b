import { closeSync, fdatasync, fdatasyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { syncDirectory } from './file-copy.js';

/**
 * Durable commits that do not stop the event loop. better-sqlite3 runs on the main thread, so with
 * `synchronous=FULL` every commit blocked the process for its fsync: measured, a third of the
 * worker's time at full speed, during which no HTTP answer or upstream reply was handled.
 *
 * Instead the connection commits with `synchronous=NORMAL` (in WAL mode: the frames are written to
 * the -wal file, not flushed) and the writer then waits for `flushed()`, an fdatasync of that file on
 * libuv's thread pool. A flush covers every frame written before it began, so commits made while one
 * is running share the next one (group commit, as PostgreSQL's WAL flush serves every commit
 * written before it).
 * Nothing is acknowledged before its frames are on disk, which is what FULL promises: SQLite
 * validates WAL frames by checksum on recovery, so a cut mid-write loses only unacknowledged
 * commits, and NORMAL already syncs the WAL before each checkpoint copies it into the database.
 *
 * The -wal file keeps its inode while any connection is open (checkpoints truncate or rewrite it;
 * only the last connection to close deletes it), and this store's connection stays open until
 * `close()`, so one descriptor serves the store's whole life.
 *
 * A failed fdatasync is final: the kernel may have dropped the dirty pages, so a later flush could
 * succeed without the earlier frames on disk. Every pending and later write is refused, and the
 * store's health check reports it, until the process is restarted.
 */
export interface WalSync {
  /** Resolves once every frame written to the WAL before this call is on disk. */
  flushed(): Promise<void>;
  /** Throws the flush failure, if one happened. */
  check(): void;
  /** Waits for the running flush, flushes what is left, and closes the descriptor. */
  close(): Promise<void>;
}

/**
 * A flush that writes arrived for while another ran begins no sooner than this after that one began
 * (PostgreSQL's commit_delay, which it likewise applies only when other transactions are active).
 * Back to back, a flush began every 0.2-0.3 ms here, each covering one or two of a fast worker's
 * outcomes, and each costs the process about 70 µs of CPU in the kernel (measured: a 16 KB append
 * plus fdatasync, 67-93 µs). Measured against a zero-latency stub (worker pinned to one core, three
 * alternating pairs): 144-152 µs of CPU per job against 153-166 unspaced (119-123 with
 * sync=normal); 5,230-5,470 jobs/s against 4,860-5,120. The API's creates measured the same either
 * way (a turn of its event loop outlasts a flush).
 * A write made while no flush runs is flushed at once: a writer waiting for each write in turn
 * (one client, a worker at concurrency 1) is not held back. Spaced even then, such a writer was held
 * to under 1,000 writes a second (the store alone, one job at a time: 658-667 jobs/s against
 * 2,926-3,026 unspaced and 2,775-2,914 with this rule).
 */
export const FLUSH_SPACING_MS = 1;

export type Datasync = (fd: number, done: (err: Error | null) => void) => void;

interface Waiters {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export function createWalSync(dbPath: string, datasync: Datasync = fdatasync): WalSync {
  const walPath = `${dbPath}-wal`;
  let fd: number | null = null;
  let running: Promise<void> | null = null;
  // The flush that starts when the running one ends: whoever writes meanwhile waits for it.
  let next: Waiters | null = null;
  let failure: Error | null = null;

  function descriptor(): number {
    if (fd === null) {
      // Opened for writing though nothing is written through it: some systems (Windows) flush only
      // a handle that may write.
      fd = openSync(walPath, 'r+');
      // The -wal file may be new: its directory entry must be on disk too, once.
      syncDirectory(dirname(walPath));
    }
    return fd;
  }

  // When the last flush began (performance.now()), for FLUSH_SPACING_MS.
  let lastBegan = -Infinity;

  /** `spaced`: writes came in while the last flush ran, so more are likely coming (see FLUSH_SPACING_MS). */
  function start(spaced: boolean): void {
    let settle!: () => void;
    running = new Promise<void>((resolve) => (settle = resolve));
    if (spaced) beginWhenSpaced(settle);
    else begin(settle);
  }

  // Looked at again when the timer fires: a timer counts from the event loop's cached clock, which
  // may lag, and then fires early.
  function beginWhenSpaced(settle: () => void): void {
    const wait = lastBegan + FLUSH_SPACING_MS - performance.now();
    if (wait > 0) setTimeout(beginWhenSpaced, wait, settle);
    else begin(settle);
  }

  // Takes the waiters only now: writes committed during the spacing join this flush.
  function begin(settle: () => void): void {
    const group = next as Waiters;
    next = null;
    const done = (err: Error | null) => {
      running = null;
      settle();
      if (err) {
        failure = new Error(`fdatasync of ${walPath} failed; writes are refused until the process restarts`, { cause: err });
        group.reject(failure);
        next?.reject(failure);
        next = null;
        return;
      }
      group.resolve();
      if (next) start(true);
    };
    try {
      const walFd = descriptor();
      // After the first call's directory sync, so that the spacing is between the flushes themselves.
      lastBegan = performance.now();
      datasync(walFd, done);
    } catch (err) {
      done(err as Error);
    }
  }

  return {
    flushed() {
      if (failure) return Promise.reject(failure);
      if (!next) {
        let resolve!: () => void;
        let reject!: (err: unknown) => void;
        const promise = new Promise<void>((res, rej) => {
          resolve = res;
          reject = rej;
        });
        next = { promise, resolve, reject };
      }
      const waiting = next.promise;
      if (!running) start(false);
      return waiting;
    },
    check() {
      if (failure) throw failure;
    },
    async close() {
      while (running) await running;
      if (fd !== null) {
        if (!failure) fdatasyncSync(fd);
        closeSync(fd);
        fd = null;
      }
    },
  };
}
