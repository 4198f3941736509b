import { statfsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { describeDatabase, parseDatabaseUrl, type DatabaseSettings } from '../config.js';
import { openSqliteStore } from './sqlite/sqlite-job-store.js';
import type { Logger } from '../logger.js';
import type { JobStore } from './types.js';

/**
 * The store the configuration names: PostgreSQL when DATABASE_URL is set, else the SQLite file.
 * The PostgreSQL store is imported only when chosen: `pg` costs an SQLite process about 15 MB.
 * A store that cannot be opened (a file that is not a database, a server that refuses) fails with
 * one line naming `setting` and where the database is, never the password.
 */
export async function openStore(db: DatabaseSettings, logger?: Pick<Logger, 'warn'>, setting = db.url ? 'DATABASE_URL' : 'PROXY_DB_PATH'): Promise<JobStore> {
  try {
    if (db.url) {
      const { openPostgresStore } = await import('./postgres/pg-job-store.js');
      const onConnectionLost = (err: Error) => logger?.warn('the PostgreSQL server closed an idle connection; the next query opens another', { err });
      // The store goes by the server's clock either way; a host this far off has its NTP to mend.
      const onClockOffset = (offsetMs: number) =>
        logger?.warn(`this host's clock is ${Math.abs(offsetMs)} ms ${offsetMs > 0 ? 'behind' : 'ahead of'} the PostgreSQL server's; the proxy goes by the server's`, { offset_ms: offsetMs });
      return await openPostgresStore({ url: db.url, schema: db.schema, onConnectionLost, onClockOffset });
    }
    return openSqliteStore({ path: db.path, sync: db.sync });
  } catch (err) {
    const password = db.url ? parseDatabaseUrl(db.url, setting).password : '';
    const reason = String((err as Error)?.message ?? err).replace(/\s+/g, ' ').trim();
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
