import { statSync } from 'node:fs';

/**
 * What `path` names when it is there but is no regular file, in words ("a named pipe"); null for
 * a file or for nothing there. Links are followed. A database, a backup and a restore each rename or
 * write a file of their own; named as their target, /dev/null would be replaced by one, or read by
 * SQLite as a file that fails with "disk I/O error".
 */
export function notAFile(path: string): string | null {
  const stats = statSync(path, { throwIfNoEntry: false });
  if (!stats || stats.isFile()) return null;
  if (stats.isDirectory()) return 'a folder';
  if (stats.isFIFO()) return 'a named pipe';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSocket()) return 'a socket';
  return 'no regular file';
}
