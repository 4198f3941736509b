import { chmodSync, chownSync, closeSync, existsSync, linkSync, openSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { assertIntact, countJobs, partialPath, removeAbandonedCopies, syncDirectory, syncFile, vacuumInto } from './file-copy.js';
import { assertLogBelongs, logNotePath } from './file-identity.js';
import { notAFile } from './file-kind.js';
import { assertOurSchema } from './migrate.js';

export interface RestoreReport {
  /** The live file, now holding the backup, as an absolute path. */
  restored: string;
  /** The backup it came from, as an absolute path. */
  from: string;
  /** Jobs in the restored file, from its counts table; null in a file from before migration 0006. */
  jobs: number | null;
  bytes: number;
  /** Where the file it replaced was kept (whole: its log folded in); null when there was none. */
  kept: string | null;
  ms: number;
}

/** Thrown when a program has the live file open; the command says to stop them first. */
export class DatabaseInUseError extends Error {
  constructor(path: string) {
    super(`${path} is open in another process (proxy-api, a proxy-worker, or another SQLite client): stop them first, then restore`);
    this.name = 'DatabaseInUseError';
  }
}

/**
 * Puts the backup at `backup` in place of the SQLite file at `live`, which no program may have
 * open. By hand this took three steps, one of them easy to forget and ruinous: a `-wal` file left
 * beside the live file belongs to the old database, and SQLite would replay it into the copy.
 *
 * The backup is copied beside the live file (VACUUM INTO, which also takes in a log of its own if
 * something opened it), read whole (`PRAGMA integrity_check`) and synced before anything of the
 * live file is touched; a backup that is not whole, or is not this program's database, changes
 * nothing. The live file must then be free: SQLite grants an exclusive lock only when no other
 * connection, in any process, has the file open, and that connection, closing, folds the log into
 * the file. The old file is kept under a name beside it (a hard link, so the live name is replaced
 * in one rename and never missing), its `-wal` and `-shm` are removed, and the copy renamed in.
 */
export function restoreSqliteFile(live: string, backup: string, options: { force?: boolean; now?: Date } = {}): RestoreReport {
  const started = performance.now();
  const { to, from } = resolvePaths(live, backup);
  removeAbandonedCopies(to);
  const partial = partialPath(to, process.pid);
  const current = existsSync(to) ? statSync(to) : null;
  assertOwner(to, current);
  // Folding a log of another file into the live one would leave that mix as the file kept.
  assertLogBelongs(to);
  try {
    copyBackup(from, partial, current ?? statSync(from));
    assertIntact(partial);
    assertOurDatabase(partial, from);
    syncFile(partial);
    let kept: string | null = null;
    if (current) {
      foldLogAlone(to, Boolean(options.force));
      kept = keptPath(to, options.now ?? new Date());
      linkSync(to, kept);
    }
    // The old file's log and index, whole in it now: beside the copy, SQLite would read them as its own.
    rmSync(`${to}-wal`, { force: true });
    rmSync(`${to}-shm`, { force: true });
    // It names the old file, whose log is gone.
    rmSync(logNotePath(to), { force: true });
    renameSync(partial, to);
    syncDirectory(dirname(to));
    return { restored: to, from, jobs: countJobs(to), bytes: statSync(to).size, kept, ms: Math.round(performance.now() - started) };
  } finally {
    rmSync(partial, { force: true });
  }
}

function resolvePaths(live: string, backup: string): { to: string; from: string } {
  if (!existsSync(backup)) throw new Error(`there is no backup at ${backup}`);
  const backupKind = notAFile(backup);
  if (backupKind) throw new Error(`${backup} is ${backupKind}, not a backup file`);
  const folder = dirname(resolve(live));
  if (!existsSync(folder)) throw new Error(`the folder ${folder} does not exist`);
  const liveKind = notAFile(live);
  if (liveKind) throw new Error(`${live} is ${liveKind}, not a database file`);
  const to = existsSync(live) ? realpathSync(live) : join(realpathSync(folder), basename(live));
  const from = realpathSync(backup);
  if ([to, `${to}-wal`, `${to}-shm`, `${to}-journal`].includes(from)) throw new Error(`${backup} is the live database or its log, not a backup of it`);
  return { to, from };
}

/**
 * The restored file is made by whoever restores it: run as another user than the live file's owner
 * (and not as root, which gives it the owner's), it would leave a file the programs, running as that
 * owner, might not be able to write.
 */
function assertOwner(to: string, current: { uid: number } | null): void {
  const uid = process.getuid?.();
  if (!current || uid === undefined || uid === 0 || uid === current.uid) return;
  throw new Error(`${to} belongs to uid ${current.uid}, and this user is uid ${uid}: run restore as its owner (or as root), so that the restored file is the owner's too`);
}

/** The backup's snapshot, written with the live file's permissions (and, as root, its owner). */
function copyBackup(from: string, partial: string, like: { mode: number; uid: number; gid: number }): void {
  const mode = like.mode & 0o777;
  closeSync(openSync(partial, 'wx', mode));
  chmodSync(partial, mode);
  // Run as root, the restored file would be root's, and the programs, running as their own user,
  // could not write it (they would refuse to start, naming it).
  if (process.getuid?.() === 0) chownSync(partial, like.uid, like.gid);
  const db = new Database(from, { readonly: true, fileMustExist: true });
  try {
    vacuumInto(db, partial);
  } catch (err) {
    if (((err as { code?: string }).code ?? '').startsWith('SQLITE_')) throw new Error(`${from} could not be read as a SQLite database: ${(err as Error).message}`, { cause: err });
    throw err;
  } finally {
    db.close();
  }
}

/**
 * A SQLite file that is not a job store would leave the programs with no jobs and an odd schema; one
 * a later release migrated past what this one runs on, with programs that refuse to start on it.
 */
function assertOurDatabase(path: string, from: string): void {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const tables = db.prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN ('jobs', 'schema_migrations')`).all();
    if (tables.length !== 2) throw new Error(`${from} is a SQLite database, but not this program's (it has no jobs table)`);
    assertOurSchema(db, undefined, from);
  } finally {
    db.close();
  }
}

/**
 * Takes the live file alone, or throws DatabaseInUseError. Every connection in WAL mode holds a
 * shared lock on the file while open, so the exclusive lock is refused while any other is open; the
 * connection, closing as the last, checkpoints the log into the file and deletes it.
 *
 * A live file too damaged for SQLite to lock (its header gone) cannot be asked: `force`, given by
 * someone who stopped the programs, replaces it as it is.
 */
function foldLogAlone(path: string, force: boolean): void {
  let db: Database.Database | null = null;
  try {
    db = new Database(path, { fileMustExist: true, timeout: 0 });
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('COMMIT');
  } catch (err) {
    db?.close();
    const code = (err as { code?: string }).code ?? '';
    if (code.startsWith('SQLITE_BUSY')) throw new DatabaseInUseError(path);
    if (!code.startsWith('SQLITE_NOTADB') && !code.startsWith('SQLITE_CORRUPT')) throw err;
    if (force) return;
    throw new Error(
      `${path} cannot be read as a database (${(err as Error).message}), so whether a program has it open cannot be asked; once proxy-api and the workers are stopped, run again with --force to replace it`,
    );
  }
  db.close();
  if (existsSync(`${path}-wal`) && statSync(`${path}-wal`).size > 0) {
    throw new Error(`the log ${path}-wal could not be folded into the file; nothing was changed`);
  }
}

/** Beside the live file, named for the moment it was replaced: requests.sqlite.replaced-20261203T130501Z. */
function keptPath(to: string, now: Date): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  let path = `${to}.replaced-${stamp}`;
  for (let n = 2; existsSync(path); n++) path = `${to}.replaced-${stamp}-${n}`;
  return path;
}
