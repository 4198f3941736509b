import { chmodSync, closeSync, existsSync, openSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import Database from 'better-sqlite3';
import { assertIntact, countJobs, partialPath, removeAbandonedCopies, syncDirectory, syncFile, vacuumInto } from './file-copy.js';
import { notAFile } from './file-kind.js';

export interface BackupReport {
  /** The file written, as an absolute path. */
  target: string;
  bytes: number;
  /** Jobs in the copy, from its counts table; null in a file from before migration 0006. */
  jobs: number | null;
  /** Whether the copy passed `PRAGMA integrity_check` before it replaced the target (asked for with `check`). */
  checked: boolean;
  ms: number;
}

/**
 * Copies the SQLite file at `source` to `target` while the programs go on using it: a consistent
 * snapshot of every committed write, the WAL's included. A plain `cp` of a file in WAL mode can
 * miss the commits still in its `-wal` file, or catch the database half checkpointed.
 *
 * `VACUUM INTO` reads the snapshot in one read transaction, which in WAL mode holds up no writer.
 * The online backup API was the other way; it starts over whenever another connection writes, and
 * the API writes every few milliseconds under load, so a large file might never finish. SQLite
 * does not sync what VACUUM INTO writes, so the copy is written beside the target, synced, then
 * renamed over it, and the folder synced: the target is always a whole backup, the new or the old.
 */
export function backupSqliteFile(source: string, target: string, options: { check?: boolean } = {}): BackupReport {
  const started = performance.now();
  const { live, to } = resolvePaths(source, target);
  removeAbandonedCopies(to);
  const partial = partialPath(to, process.pid);
  // Read-only: a backup never migrates, checkpoints or otherwise writes the live file.
  const db = new Database(live, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    // The copy holds what the live file holds (prompts, answers), so it gets the live file's
    // permissions before any of it is written, not those the umask of a cron job would give.
    const mode = statSync(live).mode & 0o777;
    closeSync(openSync(partial, 'wx', mode));
    chmodSync(partial, mode);
    vacuumInto(db, partial);
    if (options.check) assertIntact(partial);
    syncFile(partial);
    renameSync(partial, to);
    syncDirectory(dirname(to));
  } catch (err) {
    rmSync(partial, { force: true });
    throw err;
  } finally {
    db.close();
  }
  return { target: to, bytes: statSync(to).size, jobs: countJobs(to), checked: Boolean(options.check), ms: Math.round(performance.now() - started) };
}

/** The live file and the target, links resolved, so that no path to the live file passes for another. */
function resolvePaths(source: string, named: string): { live: string; to: string } {
  if (!existsSync(source)) throw new Error(`there is no database file at ${source}`);
  // A folder, as for cp: the copy goes in it under the live file's name.
  const target = existsSync(named) && statSync(named).isDirectory() ? join(named, basename(source)) : named;
  // A name ending in a slash is a folder, as cp reads it: not a file of that name to make.
  const folder = target.endsWith('/') || target.endsWith(sep) ? resolve(target) : dirname(resolve(target));
  const folderStats = statSync(folder, { throwIfNoEntry: false });
  if (!folderStats) throw new Error(`the folder ${folder} does not exist`);
  if (!folderStats.isDirectory()) throw new Error(`${folder} is not a folder`);
  // Asked of the name given, links followed: /dev/stdout's own path does not resolve to a pipe's.
  const kind = notAFile(target);
  if (kind) throw new Error(`${target} is ${kind}, not a file; name a file for the backup, or a folder to put it in`);
  const to = existsSync(target) ? realpathSync(target) : join(realpathSync(folder), basename(target));
  const live = realpathSync(source);
  // Renamed over the live file (or its log), the copy would take the place of what the programs
  // still write to, and their next start would read it with a log that belongs to another file.
  if ([live, `${live}-wal`, `${live}-shm`, `${live}-journal`].includes(to)) {
    throw new Error(`the backup would replace the live database ${live} or its log; name another file`);
  }
  return { live, to };
}
