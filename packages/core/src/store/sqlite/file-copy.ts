import { closeSync, fsyncSync, openSync, readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import Database from 'better-sqlite3';

// What backup.ts and restore.ts share: a copy is written to a hidden partial file beside its
// target, checked, synced, and only then renamed over the target.

/** Where a copy is written before its rename: hidden, beside the target, one name per process. */
export function partialPath(to: string, pid: number): string {
  return join(dirname(to), `.${basename(to)}.${pid}.partial`);
}

/**
 * A backup or restore killed in its copy (VACUUM INTO runs to its end before a signal handler
 * could) leaves its partial file; the next one to the same target removes those whose process is
 * gone.
 */
export function removeAbandonedCopies(to: string): void {
  const prefix = `.${basename(to)}.`;
  for (const name of readdirSync(dirname(to))) {
    const pid = name.startsWith(prefix) && name.endsWith('.partial') ? Number(name.slice(prefix.length, -'.partial'.length)) : NaN;
    if (Number.isInteger(pid) && pid > 0 && !isRunning(pid)) rmSync(partialPath(to, pid), { force: true });
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A file new or renamed in a folder: its directory entry must be on disk too. Where a directory
 * cannot be opened to flush (Windows), there is nothing to do, as SQLite itself does there.
 */
export function syncDirectory(dir: string): void {
  let handle: number;
  try {
    handle = openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fsyncSync(handle);
  } finally {
    closeSync(handle);
  }
}

export function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Reads every page of the copy, so a bad one is found before it replaces the file before it. */
export function assertIntact(path: string): void {
  const copy = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const problems = copy.pragma('integrity_check(5)', { simple: false }) as Array<{ integrity_check: string }>;
    const found = problems.map((p) => p.integrity_check).filter((p) => p !== 'ok');
    if (found.length > 0) throw new Error(`the copy failed its integrity check, and the target was left as it was: ${found.join('; ')}`);
  } finally {
    copy.close();
  }
}

export function countJobs(path: string): number | null {
  const copy = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const hasCounts = copy.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'job_counts'`).get();
    if (!hasCounts) return null;
    return (copy.prepare('SELECT COALESCE(SUM(n), 0) AS n FROM job_counts').get() as { n: number }).n;
  } finally {
    copy.close();
  }
}

/**
 * VACUUM INTO `partial`, a full disk there named as such (SQLite says only "database or disk is
 * full", which reads as if the file copied from were at fault).
 */
export function vacuumInto(db: Database.Database, partial: string): void {
  try {
    db.prepare('VACUUM INTO ?').run(partial);
  } catch (err) {
    if (!((err as { code?: string }).code ?? '').startsWith('SQLITE_FULL')) throw err;
    throw new Error(`the disk holding ${dirname(partial)} has no room for the copy (${(err as Error).message})`, { cause: err });
  }
}
