import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { makeFolder, whyNotWritable } from '../../writable.js';
import { noteLogOwner } from './file-identity.js';
import { notAFile } from './file-kind.js';
import { assertOurSchema, migrate } from './migrate.js';

/** The most bytes of write-ahead log kept on disk once it starts over. */
export const WAL_KEPT_BYTES = 64 * 1024 * 1024;

/** A better-sqlite3 connection. */
export type Db = Database.Database;

export interface OpenDatabaseOptions {
  path: string;
  /** SQLite's synchronous setting. The job store opens with `normal` under PROXY_DB_SYNC=full and flushes the WAL itself, off the event loop (wal-sync.ts). */
  sync?: 'full' | 'normal' | 'off';
  busyTimeoutMs?: number;
  /** Folder of numbered migrations; the jobs schema by default. */
  migrations?: string;
  /** Told the migrations a later release applied to the file at `path` that this one runs on anyway (see assertOurSchema). */
  onLaterMigrations?: (names: string[], path: string) => void;
}

/** Opens the shared SQLite file, sets its pragmas once and brings its schema up to date. */
export function openDatabase(options: OpenDatabaseOptions): Db {
  if (options.path !== ':memory:') {
    makeFolder(dirname(options.path));
    assertWritable(options.path);
  }
  const db = new Database(options.path);
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  // busy_timeout makes writers queue instead of failing.
  db.pragma(`busy_timeout = ${busyTimeoutMs}`);
  let later: string[];
  try {
    later = assertOurSchema(db, options.migrations);
  } catch (err) {
    db.close();
    throw err;
  }
  if (later.length > 0) options.onLaterMigrations?.(later, options.path);
  // WAL lets the API read while a worker writes.
  enterWal(db, options.path, busyTimeoutMs);
  // A file new to WAL has its -wal made by its first transaction after the switch: this read's. The
  // -wal then holds none of this connection's writes yet (file-identity.ts).
  db.pragma('user_version');
  noteLogOwner(options.path);
  db.pragma(`synchronous = ${(options.sync ?? 'full').toUpperCase()}`);
  db.pragma('foreign_keys = ON');
  // Checkpoints are driven by the worker's housekeeping (once a minute); this is the automatic
  // fallback. At SQLite's default of 1,000 pages a busy API checkpointed every few dozen commits,
  // copying the same hot index pages again each time; 10,000 pages (40 MB of WAL at most) measured
  // about a third less work per insert.
  db.pragma('wal_autocheckpoint = 10000');
  // Checkpoints leave the -wal file at its length to be written over again (see the store's
  // checkpoint()); one that a long reader let grow past this is cut back to it when it starts over.
  // Above the 41 MB that 10,000 frames take, so a file that checkpoints keep up with is never cut.
  db.pragma(`journal_size_limit = ${WAL_KEPT_BYTES}`);
  // 16 MB of page cache instead of 2 MB keeps the indexes' hot pages in memory as the table grows.
  db.pragma('cache_size = -16384');
  migrate(db, options.migrations);
  return db;
}

/**
 * Switches a file to WAL (a file already in WAL stays so). The API and the worker started together
 * (npm start, the two units) switch a new file at the same moment: both read it, then both want to
 * write it, and where waiting could deadlock SQLite answers SQLITE_BUSY without calling the busy
 * handler (sqlite3_busy_handler's documentation). Measured: one of a pair failed its start with
 * "database is locked" in 15 of 40 paired starts, and in 10 of 40 with busy_timeout set first. So
 * the switch is tried again until busy_timeout has passed.
 */
function enterWal(db: Db, path: string, busyTimeoutMs: number): void {
  const until = Date.now() + busyTimeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    let mode: unknown;
    try {
      mode = db.pragma('journal_mode = WAL', { simple: true });
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= until) throw err;
    }
    // An in-memory database keeps its own mode; a file that refused the switch still names its old one.
    if (mode === 'wal' || (path === ':memory:' && mode === 'memory')) return;
    if (mode !== undefined && Date.now() >= until) throw new Error(`${path} stays in journal_mode ${String(mode)}; WAL is required`);
    // Start-up is synchronous and has nothing else to do meanwhile.
    Atomics.wait(pause, 0, 0, 5);
  }
}

/**
 * SQLite opens a file it cannot write read-only without a word, and the program then fails every
 * write: an API that answers 503 to each create, a worker that backs off forever. That happens when
 * a program runs as another user than the one owning the file (the data folder made by a first
 * start as root, then the systemd units running as `proxy`), or on a read-only mount. Refusing at
 * start names the file and who owns it instead. The folder must be writable too: SQLite makes its
 * `-wal` and `-shm` files there, and removes them when the last connection closes.
 */
export function assertWritable(path: string): void {
  // SQLite says only "unable to open database file" for a folder, as for a file it cannot create,
  // and "disk I/O error" for a named pipe or a device (with a -journal left beside it).
  const kind = notAFile(path);
  if (kind === 'a folder') throw new Error(`${path} is a folder: name the database file in it, as ${join(path, 'requests.sqlite')}`);
  if (kind) throw new Error(`${path} is ${kind}, not a file: name a database file`);
  const uid = process.getuid?.() ?? '?';
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    // A file that is not there is no refusal, whenever it went: the -wal and -shm go when another
    // program closes the file's last connection, and did so between a look for them and the check
    // (the start failed, naming a stat of the -wal that found nothing).
    const refused = whyNotWritable(file);
    if (refused === null || refused === 'ENOENT') continue;
    if (refused === 'EROFS') throw new Error(`${file} is on a read-only file system`);
    const owner = statSync(file, { throwIfNoEntry: false });
    if (!owner) continue;
    throw new Error(`${file} is not writable by this user (uid ${uid}); it belongs to uid ${owner.uid} with mode ${(owner.mode & 0o777).toString(8)}`);
  }
  const folder = dirname(path);
  const refused = whyNotWritable(folder);
  if (refused === 'EROFS') throw new Error(`the folder ${folder} is on a read-only file system`);
  if (refused) throw new Error(`the folder ${folder} is not writable by this user (uid ${uid}), and SQLite keeps its -wal and -shm files there`);
}
