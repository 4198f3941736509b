import { accessSync, mkdirSync, statSync, constants as fsConstants } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Why this process may not write `path` (EACCES, EROFS, ENOENT, …), or null when it may. Checked at
 * start, because the libraries that write (SQLite, winston's file transport) take an unwritable
 * file quietly: SQLite opens it read-only, winston drops the lines.
 */
export function whyNotWritable(path: string): string | null {
  try {
    accessSync(path, fsConstants.W_OK);
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'EACCES';
  }
}

/**
 * Makes `folder` and the folders above it that are missing. Throws with what is wrong where mkdir's
 * own words name the wrong thing ("EEXIST" for a file where the folder goes); other errors with
 * their code (EACCES, EROFS, …).
 *
 * Walks up itself rather than through `mkdirSync(…, { recursive: true })`: Node's walk retries a
 * folder for as long as mkdir answers ENOENT inside a parent that exists, which procfs does
 * (PROXY_DB_PATH=/proc/x/jobs.sqlite spun at full CPU, never reaching the error).
 */
export function makeFolder(folder: string): void {
  try {
    makeFolderChain(folder);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new Error(`${folder} is not a folder`);
    if (code === 'ENOTDIR') throw new Error(`cannot make the folder ${folder}: a folder on its path is a file`);
    if (code === 'ENOENT') throw new Error(`cannot make the folder ${folder}: the file system there takes no new folder (ENOENT)`);
    throw new Error(`cannot make the folder ${folder}: ${code ?? (err as Error).message}`);
  }
}

function makeFolderChain(folder: string): void {
  const code = mkdirCode(folder);
  if (code === undefined) return;
  const parent = dirname(folder);
  if (code !== 'ENOENT' || parent === folder) throw mkdirError(folder, code);
  makeFolderChain(parent);
  // Once only: an ENOENT with the parent in place is the file system's answer, not a race.
  const again = mkdirCode(folder);
  if (again !== undefined) throw mkdirError(folder, again);
}

/** mkdir's error code, or undefined once `folder` is a folder (made now, or by another process). */
function mkdirCode(folder: string): string | undefined {
  try {
    mkdirSync(folder);
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    if (code === 'EEXIST' && statSync(folder).isDirectory()) return undefined;
    return code;
  }
}

function mkdirError(folder: string, code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: mkdir ${folder}`), { code });
}
