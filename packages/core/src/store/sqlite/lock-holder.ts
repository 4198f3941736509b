import { readFileSync, statSync } from 'node:fs';

/**
 * Which process holds a SQLite file's write lock, said with the error of a write that waited
 * busy_timeout for it. "database is locked" alone left an operator to guess among the API, the
 * workers, an admin command and a `sqlite3` shell left inside a transaction; a process frozen
 * within a commit (README, "The other end of that") holds it until it runs again.
 *
 * In WAL mode the write lock is byte 120 of the -shm file (SQLite's unix VFS: WAL_WRITE_LOCK at
 * UNIX_SHM_BASE), held as a POSIX lock by the writing process, which Linux lists in /proc/locks. Only
 * the name the kernel keeps for the process (/proc/<pid>/comm) is said, not its command line, which
 * may carry another program's secrets. Elsewhere than Linux, or if the lock went meanwhile: null.
 */
export function writeLockHolder(dbPath: string): string | null {
  try {
    const pid = holderPid(readFileSync('/proc/locks', 'utf8'), procLocksName(statSync(`${dbPath}-shm`, { bigint: true })));
    return pid === null ? null : processName(pid);
  } catch {
    return null;
  }
}

/**
 * The processes other than this one holding a read lock on a SQLite file's log: a reader in WAL mode
 * holds one of the read marks, bytes 123 to 127 of the -shm file (WAL_READ_LOCK(0..4)), shared, for
 * as long as its read transaction lasts; one that lasts keeps every later frame in the log. Said as
 * processName says them, each once; empty where /proc/locks cannot be read.
 */
export function readLockHolders(dbPath: string): string[] {
  try {
    const file = procLocksName(statSync(`${dbPath}-shm`, { bigint: true }));
    const readers = posixLocks(readFileSync('/proc/locks', 'utf8')).filter(
      (lock) => lock.mode === 'READ' && lock.file === file && lock.start <= 127 && lock.end >= 123 && lock.pid !== process.pid,
    );
    return [...new Set(readers.map((lock) => lock.pid))].map(processName);
  } catch {
    return [];
  }
}

/** The pid of the POSIX lock on byte 120 of `device` ("maj:min:inode") in /proc/locks, waiters skipped. */
export function holderPid(locks: string, device: string): number | null {
  return posixLocks(locks).find((lock) => lock.mode === 'WRITE' && lock.file === device && lock.start <= 120 && lock.end >= 120)?.pid ?? null;
}

/** One POSIX lock as /proc/locks lists it: who holds which bytes of which file ("maj:min:inode"). */
export interface PosixLock {
  pid: number;
  mode: string;
  file: string;
  start: number;
  /** Infinity for a lock to the end of the file (EOF). */
  end: number;
}

/** The POSIX locks held now, from /proc/locks; null where it cannot be read (off Linux). */
export function heldLocks(): PosixLock[] | null {
  try {
    return posixLocks(readFileSync('/proc/locks', 'utf8'));
  } catch {
    return null;
  }
}

/** The POSIX locks held (not waited for) in /proc/locks's text. */
export function posixLocks(locks: string): PosixLock[] {
  const held: PosixLock[] = [];
  for (const line of locks.split('\n')) {
    // "1: POSIX  ADVISORY  WRITE 4242 fe:00:2146664 120 120"; a waiter's line has "->" after the id.
    const fields = line.trim().split(/\s+/);
    if (fields[1] !== 'POSIX' || fields[7] === undefined) continue;
    const [, , , mode, pid, file, start, end] = fields as [string, string, string, string, string, string, string, string];
    held.push({ pid: Number(pid), mode, file, start: Number(start), end: end === 'EOF' ? Infinity : Number(end) });
  }
  return held;
}

/**
 * A file as /proc/locks names it: major and minor device numbers in hex (split as glibc's major()
 * and minor() split st_dev), then the inode.
 */
export function procLocksName({ dev, ino }: { dev: bigint; ino: bigint }): string {
  const major = ((dev & 0xfff00n) >> 8n) | ((dev & 0xfffff00000000000n) >> 32n);
  const minor = (dev & 0xffn) | ((dev & 0xffffff00000n) >> 12n);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
}

/** A process as an operator is told of it: its pid and the kernel's name for it (never its command line). */
export function processName(pid: number): string {
  // 0: the holder runs in another PID namespace (another container) and has no pid here.
  if (pid === 0) return 'a process in another PID namespace (another container?)';
  if (pid === process.pid) return `this process (pid ${pid})`;
  let name = '';
  try {
    name = ` (${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()})`;
  } catch {
    // Gone since, or not ours to read.
  }
  return `pid ${pid}${name}`;
}
