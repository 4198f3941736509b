import { readdirSync, readFileSync, statSync } from 'node:fs';
import { sayAtMostEvery } from '../log-throttle.js';
import type { Logger } from '../logger.js';

/**
 * Descriptors a worker holds besides its upstream sockets: 27 idle on SQLite (the database and its
 * limits file with their logs, stdio, Node's own), with room for LOG_DIR's file and PostgreSQL's pool.
 */
export const WORKER_OWN_FILES = 50;

/**
 * This process's open-file limit (the soft one, which Node raises to the hard one at start), or null
 * where it cannot be read (not Linux).
 */
export function openFilesLimit(read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | null {
  let text: string;
  try {
    text = read();
  } catch {
    return null;
  }
  const soft = /^Max open files\s+(\S+)/m.exec(text)?.[1];
  if (soft === undefined) return null;
  return soft === 'unlimited' ? Infinity : Number(soft);
}

/**
 * Says at start when the worker may not open a socket for each of its calls. Not a refusal: the
 * calls past the limit are put back and held (local-shortage.ts), so the worker runs, slower.
 */
export function warnIfFewOpenFiles(logger: Logger, concurrency: number, limit = openFilesLimit()): void {
  if (limit === null || limit >= concurrency + WORKER_OWN_FILES) return;
  logger.warn(
    `this process may open ${limit} files, and WORKER_CONCURRENCY=${concurrency} calls need a socket each besides about ${WORKER_OWN_FILES} it holds: calls past the limit will wait. Raise LimitNOFILE= (ulimit -n) or lower WORKER_CONCURRENCY`,
    { open_files_limit: limit, concurrency },
  );
}

/**
 * How many files this process has open, or null where it cannot be told (not Linux). Linux 6.2 and
 * later give the count as the size of /proc/self/fd: a stat, about 0.05 ms at 10,000 open as at 100,
 * and it needs no descriptor of its own, so it still answers at the limit. Older kernels give 0
 * there; their count is the folder's listing, which costs 11 ms at 10,000 open (`listed`).
 */
export function countOpenFiles(): { open: number; listed: boolean } | null {
  let size: number;
  try {
    size = statSync('/proc/self/fd').size;
  } catch {
    return null;
  }
  if (size > 0) return { open: size, listed: false };
  try {
    return { open: readdirSync('/proc/self/fd').length, listed: true };
  } catch (err) {
    // The listing needs a descriptor of its own: none left means the limit is reached.
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EMFILE' || code === 'ENFILE' ? { open: Infinity, listed: true } : null;
  }
}

/** Past this share of its limit, a process is told its open files run short. */
export const OPEN_FILES_WARN_SHARE = 0.9;
export const OPEN_FILES_CHECK_MS = 1000;
/** Where the count needs a listing, it is taken this much less often. */
export const OPEN_FILES_LISTED_EVERY = 10;
export const OPEN_FILES_LINE_MS = 60_000;

/**
 * Watches proxy-api's open files. At its limit, libuv accepts each new connection and closes it at
 * once to keep the listening socket alive, and neither it nor Node says a word: a client sees a
 * reset, and the log shows nothing (found flooding proxy-api under `prlimit --nofile=80`: 96 of
 * 150 connections dropped, not a line). The count is checked every second, and from
 * OPEN_FILES_WARN_SHARE of the limit up one error line says so, at most once a minute.
 */
export function watchOpenFiles(
  logger: Pick<Logger, 'error'>,
  options: { count?: typeof countOpenFiles; limit?: () => number | null; everyMs?: number; now?: () => number } = {},
): { stop(): void } {
  const count = options.count ?? countOpenFiles;
  const limitOf = options.limit ?? (() => openFilesLimit());
  const tell = sayAtMostEvery(OPEN_FILES_LINE_MS, options.now ?? Date.now);
  // Read again at each check (prlimit can change it), but reading it takes a descriptor: at the
  // limit, the last one read stands.
  let limit = limitOf();
  let tick = 0;
  let listed = false;
  const check = () => {
    tick += 1;
    if (listed && tick % OPEN_FILES_LISTED_EVERY !== 0) return;
    const counted = count();
    if (counted === null) {
      clearInterval(timer);
      return;
    }
    listed = counted.listed;
    limit = limitOf() ?? limit;
    if (limit === null || limit === Infinity || counted.open < limit * OPEN_FILES_WARN_SHARE) return;
    const open = Math.min(counted.open, limit);
    tell((times) =>
      logger.error(
        `${open} of the ${limit} files this process may open are open: at the limit, new connections are closed unanswered and unlogged. Raise LimitNOFILE= (ulimit -n)`,
        { open_files: open, open_files_limit: limit, times_seen: times },
      ),
    );
  };
  const timer = setInterval(check, options.everyMs ?? OPEN_FILES_CHECK_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
