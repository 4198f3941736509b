import { readFileSync } from 'node:fs';
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
