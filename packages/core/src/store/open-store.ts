import { statfsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { describeDatabase, type DatabaseSettings } from '../config.js';
import { parseDatabaseUrl } from './postgres/database-url.js';
import { limitsPathFor, openSqliteStore } from './sqlite/sqlite-job-store.js';
import { assertLogBelongs, assertNoOrphanLog, untilLogIsOurs } from './sqlite/file-identity.js';
import { placeWarnings } from './sqlite/filesystem.js';
import type { JobStore } from './types.js';

export interface OpenStoreOptions {
  /** Where the store's warnings go (a network filesystem, a wait at start); none by default. */
  logger?: { warn(message: string, meta?: Record<string, unknown>): unknown };
  /** The setting named in a failure to open; DATABASE_URL or PROXY_DB_PATH by default. */
  setting?: string;
  /**
   * Told once, with why, when the store can write no more: a later release migrated the database
   * past what this one runs on (migration-files.ts), or, SQLite, the file at PROXY_DB_PATH is no
   * longer the one opened (moved, replaced or deleted: file-identity.ts). A long-running program
   * should stop.
   */
  onLost?: (message: string) => void;
}

/**
 * The store the configuration names: PostgreSQL when DATABASE_URL is set, else the SQLite file.
 * The PostgreSQL store is imported only when chosen: `pg` costs an SQLite process about 15 MB.
 * A store that cannot be opened (a file that is not a database, a server that refuses) fails with
 * one line naming `setting` and where the database is, never the password.
 */
export async function openStore(db: DatabaseSettings, options: OpenStoreOptions = {}): Promise<JobStore> {
  const { logger, setting = db.url ? 'DATABASE_URL' : 'PROXY_DB_PATH' } = options;
  const onLost = (message: string) => options.onLost?.(`${setting}: ${message}`);
  // A release rolled back onto a database a later one migrated: said at each of its starts.
  const sayLater = (names: string[], where: string) =>
    logger?.warn(`${setting}: ${where} was migrated by a later release of this program (${names.join(', ')}); those migrations leave it usable by this release, which runs on it`);
  try {
    if (db.url) {
      const { openPostgresStore } = await import('./postgres/pg-job-store.js');
      const onConnectionLost = (err: Error) => logger?.warn('the PostgreSQL server closed an idle connection; the next query opens another', { err });
      // The store goes by the server's clock either way; a host this far off has its NTP to mend.
      const onClockOffset = (offsetMs: number) =>
        logger?.warn(`this host's clock is ${Math.abs(offsetMs)} ms ${offsetMs > 0 ? 'behind' : 'ahead of'} the PostgreSQL server's; the proxy goes by the server's`, {
          offset_ms: offsetMs,
        });
      const onMigrationWait = (holder: string) => logger?.warn(`waiting for another process's migrations of schema ${db.schema}; the lock is held by ${holder}`);
      return await openPostgresStore({
        url: db.url,
        schema: db.schema,
        onConnectionLost,
        onClockOffset,
        onMigrationWait,
        onLaterMigrations: (names) => sayLater(names, `schema ${db.schema}`),
        onLost,
      });
    }
    // A program still running on a file moved or deleted from this path holds its log under this
    // name; opened beside it, this file would take that log as its own. Such a program of ours
    // stops within seconds of noticing, and its close empties the log.
    for (const path of [db.path, limitsPathFor(db.path)]) {
      await untilLogIsOurs(path, {
        onWait: (holders) =>
          logger?.warn(`${setting}: waiting for ${holders} to close the database it opened at ${path}, since moved or deleted; it still holds that database's log under this name`),
      });
    }
    assertNoOrphanLog(db.path);
    for (const path of [db.path, limitsPathFor(db.path)]) assertLogBelongs(path);
    const store = openSqliteStore({
      path: db.path,
      sync: db.sync,
      onLaterMigrations: sayLater,
      onLost,
    });
    for (const { message, filesystem } of placeWarnings(dirname(resolve(db.path)))) logger?.warn(`${setting} ${message}`, { filesystem });
    return store;
  } catch (err) {
    const password = db.url ? parseDatabaseUrl(db.url, setting).password : '';
    const reason = String((err as Error)?.message ?? err)
      .replace(/\s+/g, ' ')
      .trim();
    const message = `${setting}: cannot open ${describeDatabase(db)}: ${password ? reason.replaceAll(password, '***') : reason}${db.url ? '' : diskFullNote(db.path, err)}`;
    throw new Error(message, { cause: err });
  }
}

/**
 * SQLite says "disk I/O error" when a full disk refuses its shared-memory file, which sends an
 * operator looking for a failing disk; the free space says which it is.
 */
function diskFullNote(path: string, err: unknown): string {
  // Only for the errors a full disk causes, and not where SQLite said so itself.
  const code = String((err as { code?: unknown })?.code ?? '');
  if (!/^SQLITE_(IOERR|CANTOPEN)/.test(code)) return '';
  try {
    const { bavail, bsize } = statfsSync(dirname(resolve(path)));
    return bavail * bsize < FULL_BELOW_BYTES ? ' (the disk holding it is full)' : '';
  } catch {
    return '';
  }
}

/** Less than SQLite needs to grow its files by a few pages. */
const FULL_BELOW_BYTES = 64 * 1024;
