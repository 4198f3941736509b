import { accessSync, mkdirSync, constants as fsConstants } from 'node:fs';

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
 */
export function makeFolder(folder: string): void {
  try {
    mkdirSync(folder, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new Error(`${folder} is not a folder`);
    if (code === 'ENOTDIR') throw new Error(`cannot make the folder ${folder}: a folder on its path is a file`);
    throw new Error(`cannot make the folder ${folder}: ${code ?? (err as Error).message}`);
  }
}
