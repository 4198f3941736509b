import { readFileSync, statSync, type BigIntStats } from 'node:fs';
import { posixLocks, procLocksName, processName, type PosixLock } from './lock-holder.js';

/**
 * Whether the SQLite file at PROXY_DB_PATH is still the one a process opened, and who else holds its
 * log. SQLite keeps going on a file that was moved, replaced or deleted under it (its descriptor
 * still reads and writes the old inode), while its -wal and -shm stay under the old names, now
 * beside another database or none; closing, it sees the move and leaves the log there, unfolded. A
 * program started then opens the file at the path with the old one's log: measured here, with one
 * process writing to a moved file and another started at its path, the new one read "disk I/O
 * error", and once both had closed, the moved file held none of the rows its log had. And a -wal
 * beside no database (its writer killed, the file then moved) is deleted by SQLite at the next
 * open, with the last writes it held.
 */

const statOf = (path: string) => statSync(path, { bigint: true, throwIfNoEntry: false }) ?? null;

/** The file at `path` as it is now, to tell later whether it is still the one (movedAway). */
export function fileAt(path: string): BigIntStats {
  return statSync(path, { bigint: true });
}

/** What became of the opened file: null while it is still the one at `path`. */
export function movedAway(path: string, opened: BigIntStats): 'deleted' | 'replaced' | null {
  const now = statOf(path);
  return now === null ? 'deleted' : now.ino === opened.ino && now.dev === opened.dev ? null : 'replaced';
}

/**
 * The processes holding the -shm at `dbPath` that do not hold the database file now at `dbPath`:
 * each holds the -shm as long as it has the database open (SQLite's DMS lock, byte 128), and its
 * database file for as long (a SHARED lock, kept between transactions in WAL mode), taken before
 * the -shm's and let go after. So a process that holds one and not the other opened another file
 * under this name. Read from /proc/locks; empty off Linux.
 */
export function logHeldForAnotherFile(dbPath: string, readLocks: () => string = () => readFileSync('/proc/locks', 'utf8')): number[] {
  const shm = statOf(`${dbPath}-shm`);
  if (shm === null) return [];
  let locks: PosixLock[];
  try {
    locks = posixLocks(readLocks());
  } catch {
    return [];
  }
  const db = statOf(dbPath);
  return strangers(locks, procLocksName(shm), db === null ? null : procLocksName(db));
}

/** The pids (this one's aside) with a lock on `shm` and none on `db` (null: no database there). */
export function strangers(locks: readonly PosixLock[], shm: string, db: string | null): number[] {
  const holdingDb = new Set(locks.filter((lock) => lock.file === db).map((lock) => lock.pid));
  const found = locks.filter((lock) => lock.file === shm && lock.pid !== process.pid && !holdingDb.has(lock.pid)).map((lock) => lock.pid);
  return [...new Set(found)];
}

/** Whether a -wal with writes in it lies at `dbPath` with no database beside it. */
export function orphanLog(dbPath: string): boolean {
  return statOf(dbPath) === null && (statOf(`${dbPath}-wal`)?.size ?? 0n) > 0n;
}

/** How long a start waits for processes that have another file open under its database's name. */
export const OTHER_FILE_WAIT_MS = 60_000;

/**
 * Waits, up to `waitMs`, until no process holds the log at `dbPath` for another file: proxy-api and
 * proxy-worker stop by themselves within seconds of finding their file gone (see the store's
 * watch), and their close folds the log into their file and removes it. Tells `onWait` who it waits
 * for, once; past `waitMs` it fails, naming them.
 */
export async function untilLogIsOurs(dbPath: string, options: { waitMs?: number; pollMs?: number; onWait?: (holders: string) => void; readLocks?: () => string } = {}): Promise<void> {
  const { waitMs = OTHER_FILE_WAIT_MS, pollMs = 100 } = options;
  const until = Date.now() + waitMs;
  let told = false;
  for (;;) {
    const pids = logHeldForAnotherFile(dbPath, options.readLocks);
    if (pids.length === 0) return;
    const holders = pids.map(processName).join(', ');
    if (Date.now() >= until) {
      throw new Error(`${dbPath}-wal and -shm are in use by ${holders}, which has another database open under this name (the file was moved or deleted while it ran): stop it, then start again`);
    }
    if (!told) options.onWait?.(holders);
    told = true;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Refuses to open `dbPath` when SQLite would delete a log of another database's last writes. */
export function assertNoOrphanLog(dbPath: string): void {
  if (!orphanLog(dbPath)) return;
  throw new Error(
    `${dbPath} is missing but its -wal holds writes, the last of a database moved or deleted while a program had it open: put that database back at this path (or its -wal and -shm beside it under its own name); if it is gone for good, delete ${dbPath}-wal and ${dbPath}-shm`,
  );
}
