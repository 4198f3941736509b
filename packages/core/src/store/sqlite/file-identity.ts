import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync, type BigIntStats } from 'node:fs';
import { dirname } from 'node:path';
import { syncDirectory } from './file-copy.js';
import { heldLocks, procLocksName, processName, type PosixLock } from './lock-holder.js';
import type { Db } from './open-database.js';

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

function statOf(path: string) {
  try {
    return statSync(path, { bigint: true, throwIfNoEntry: false }) ?? null;
  } catch (err) {
    // A file where a folder of the path should be: nothing is at this path either (opening the
    // database then says what is wrong).
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw err;
  }
}

/** What became of the opened file: null while it is still the one at `path`. */
export function movedAway(path: string, opened: BigIntStats): 'deleted' | 'replaced' | null {
  const now = statOf(path);
  return now === null ? 'deleted' : now.ino === opened.ino && now.dev === opened.dev ? null : 'replaced';
}

/** A store's watch over its open files (watchForMoves). */
export interface MoveWatch {
  /** Looks now: the error every write fails with from then on, once a file was found moved. */
  look(): Error | null;
  /** That error, as the last look left it (no look of its own: for each write). */
  readonly gone: Error | null;
  /** Stops looking, and folds the log of each file found moved into it; for closing. */
  close(): void;
}

/**
 * Looks every `intervalMs` (one stat a file) whether each database opened is still the file at its
 * path. The first found moved, replaced or deleted is told to `onGone`, once; the store then writes
 * nothing more. SQLite, closing a moved file, neither folds its log into it nor deletes the log (it
 * checks, and leaves the names alone): the log would stay at the path, to be replayed into the file
 * found there next, or deleted beside a new one with the moved file's last writes. So each moved
 * file's log is folded into it and cut to zero bytes, on finding the move and again on closing
 * (other programs' writes may come in between, until they find it too). Only this connection's own
 * descriptors are touched, whatever is at the path now.
 */
export function watchForMoves(files: ReadonlyArray<{ path: string; db: Db }>, options: { intervalMs: number; onGone?: (message: string) => void }): MoveWatch {
  // Taken right after opening: the identity each path had when its file was opened.
  const opened = files.filter((file) => file.path !== ':memory:').map((file) => ({ ...file, at: statSync(file.path, { bigint: true }) }));
  let gone: Error | null = null;
  const foldMoved = () => {
    for (const file of opened) {
      if (!file.db.open || movedAway(file.path, file.at) === null) continue;
      try {
        file.db.pragma('wal_checkpoint(TRUNCATE)');
      } catch {
        // Unreadable or failing: the next try, or the last program to close, folds it.
      }
    }
  };
  const look = (): Error | null => {
    if (gone) return gone;
    for (const file of opened) {
      const how = movedAway(file.path, file.at);
      if (!how) continue;
      // SQLite's own name for a file moved since it was opened (its rollback-journal mode refuses writes to one).
      gone = Object.assign(
        new Error(`the database file ${file.path} was ${how === 'deleted' ? 'moved away or deleted' : 'replaced'} while this process had it open; it writes nothing more to it`),
        { code: 'SQLITE_READONLY_DBMOVED' },
      );
      foldMoved();
      options.onGone?.(gone.message);
      break;
    }
    return gone;
  };
  const timer = opened.length > 0 ? setInterval(look, options.intervalMs) : null;
  timer?.unref();
  return {
    look,
    get gone() {
      return gone;
    },
    close() {
      if (timer) clearInterval(timer);
      foldMoved();
    },
  };
}

/**
 * The processes holding the -shm at `dbPath` that do not hold the database file now at `dbPath`:
 * each holds the -shm as long as it has the database open (SQLite's DMS lock, byte 128), and its
 * database file for as long (a SHARED lock, kept between transactions in WAL mode), taken before
 * the -shm's and let go after. So a process that holds one and not the other opened another file
 * under this name. Read from /proc/locks; empty off Linux.
 */
export function logHeldForAnotherFile(dbPath: string): number[] {
  const shm = statOf(`${dbPath}-shm`);
  if (shm === null) return [];
  const locks = heldLocks();
  if (locks === null) return [];
  const db = statOf(dbPath);
  return strangers(locks, procLocksName(shm), db === null ? null : procLocksName(db));
}

/** The pids (this one's aside) with a lock on `shm` and none on `db` (null: no database there). */
export function strangers(locks: readonly PosixLock[], shm: string, db: string | null): number[] {
  const holdingDb = new Set(locks.filter((lock) => lock.file === db).map((lock) => lock.pid));
  const found = locks.filter((lock) => lock.file === shm && lock.pid !== process.pid && !holdingDb.has(lock.pid)).map((lock) => lock.pid);
  return [...new Set(found)];
}

/** How long a start waits for processes that have another file open under its database's name. */
export const OTHER_FILE_WAIT_MS = 60_000;

/**
 * Waits, up to `waitMs`, until no process holds the log at `dbPath` for another file: proxy-api and
 * proxy-worker stop by themselves within seconds of finding their file gone (see the store's
 * watch), and their close folds the log into their file and empties it. Tells `onWait` who it waits
 * for, once; past `waitMs` it fails, naming them.
 */
export async function untilLogIsOurs(dbPath: string, options: { waitMs?: number; pollMs?: number; onWait?: (holders: string) => void } = {}): Promise<void> {
  const { waitMs = OTHER_FILE_WAIT_MS, pollMs = 100 } = options;
  const until = Date.now() + waitMs;
  let told = false;
  for (;;) {
    const pids = logHeldForAnotherFile(dbPath);
    if (pids.length === 0) return;
    const holders = pids.map(processName).join(', ');
    if (Date.now() >= until) {
      throw new Error(
        `${dbPath}-wal and -shm are in use by ${holders}, with another database open under this name (the file was moved or deleted while it ran): stop ${pids.length > 1 ? 'them' : 'it'}, then start again`,
      );
    }
    if (!told) options.onWait?.(holders);
    told = true;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Refuses to open `dbPath` when a -wal with writes lies there beside no database: SQLite would delete it. */
export function assertNoOrphanLog(dbPath: string): void {
  if (statOf(dbPath) !== null || (statOf(`${dbPath}-wal`)?.size ?? 0n) === 0n) return;
  throw new Error(
    `${dbPath} is missing but its -wal holds writes, the last of a database moved or deleted while a program had it open: put that database back at this path (or its -wal and -shm beside it under its own name); if it is gone for good, delete ${dbPath}-wal and ${dbPath}-shm`,
  );
}

/**
 * Beside each database, which file and which -wal a connection last opened together there: a note
 * that lets a start tell the log of the file at the path from the log of a file it replaced.
 * SQLite cannot tell them apart (a -wal names no database) and replays whatever log lies beside
 * the file it opens. Measured: programs killed (their last writes still in the log), a backup then
 * moved into place, the next start showed the killed program's jobs in place of the backup's;
 * where the killed program's file had been checkpointed before its last writes, it showed the
 * backup's two jobs under a count of 3,005, the log's pages laid over another file's.
 */
export function logNotePath(dbPath: string): string {
  return `${dbPath}-wal-owner`;
}

const identity = (stats: BigIntStats) => `${stats.dev}:${stats.ino}`;

/**
 * Writes the note for `dbPath` as a connection finds its files now, once its -wal exists (every
 * open, before its first write). Unchanged, it is only read. Written whole (a new file synced, then
 * renamed in) so that a crash leaves the note before or after, never half of one; not writing it
 * (a folder that refuses, a full disk) costs only the check it serves.
 */
export function noteLogOwner(dbPath: string): void {
  if (dbPath === ':memory:') return;
  const db = statOf(dbPath);
  const wal = statOf(`${dbPath}-wal`);
  if (db === null || wal === null) return;
  const note = `${JSON.stringify({ db: identity(db), wal: identity(wal) })}\n`;
  const path = logNotePath(dbPath);
  const partial = `${path}.${process.pid}.partial`;
  try {
    if (readFileSync(path, 'utf8') === note) return;
  } catch {
    // None yet, or unreadable: written anew.
  }
  try {
    const fd = openSync(partial, 'w', 0o644);
    try {
      writeSync(fd, note);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(partial, path);
    syncDirectory(dirname(path));
  } catch {
    rmSync(partial, { force: true });
  }
}

/**
 * After a close: where the -wal is gone (SQLite deletes it as the last connection closes), the note
 * goes too, so a cleanly stopped file leaves none. One removed as another program's open makes a
 * new -wal only costs that program's check, until it opens again.
 */
export function dropLogNote(dbPath: string): void {
  if (dbPath !== ':memory:' && statOf(`${dbPath}-wal`) === null) rmSync(logNotePath(dbPath), { force: true });
}

/**
 * Refuses to open `dbPath` when its -wal holds writes made to another database file: the note says
 * this very -wal (same device and inode) was opened with a file that is no longer the one at the
 * path, and no process has the log open now (one that had would have the file at the path open:
 * untilLogIsOurs waited for any other, and it would have written the note anew). So the file was
 * replaced after its programs stopped without closing it (killed, or the machine went down), and
 * SQLite would replay the log into the replacement. A -wal copied or restored along with its file
 * has another inode than the note names, and is left to SQLite as before. Made on Linux only, where
 * /proc/locks says who has the log open.
 */
export function assertLogBelongs(dbPath: string): void {
  const wal = statOf(`${dbPath}-wal`);
  const db = statOf(dbPath);
  // Its 32-byte header alone holds no writes; with no database at all, assertNoOrphanLog speaks.
  if (wal === null || wal.size <= 32n || db === null) return;
  let noted: { db?: unknown; wal?: unknown };
  try {
    noted = JSON.parse(readFileSync(logNotePath(dbPath), 'utf8')) as typeof noted;
  } catch {
    return;
  }
  if (noted.wal !== identity(wal) || noted.db === identity(db)) return;
  const shm = statOf(`${dbPath}-shm`);
  const locks = heldLocks();
  // Who has the log open cannot be told (off Linux): no verdict.
  if (locks === null) return;
  if (shm !== null && strangers(locks, procLocksName(shm), null).length > 0) return;
  throw new Error(
    `${dbPath}-wal holds writes made to another database file, the one at this path when its programs last ran (stopped without closing it: killed, or the machine went down), since replaced by the file there now; SQLite would replay them into it. To open the file there now, move ${dbPath}-wal and ${dbPath}-shm beside the database they belong to under its name (or delete them, and those writes with them); to keep those writes, put that database back at this path`,
  );
}
