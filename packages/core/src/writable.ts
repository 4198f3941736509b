import { accessSync, constants as fsConstants } from 'node:fs';

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
