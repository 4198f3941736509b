import type { DatabaseSettings } from '../config.js';
import { openSqliteStore } from './sqlite/sqlite-job-store.js';
import type { Logger } from '../logger.js';
import type { JobStore } from './types.js';

/**
 * The store the configuration names: PostgreSQL when DATABASE_URL is set, else the SQLite file.
 * The PostgreSQL store is imported only when chosen: `pg` costs an SQLite process about 15 MB.
 */
export async function openStore(db: DatabaseSettings, logger?: Pick<Logger, 'warn'>): Promise<JobStore> {
  if (db.url) {
    const { openPostgresStore } = await import('./postgres/pg-job-store.js');
    const onConnectionLost = (err: Error) => logger?.warn('the PostgreSQL server closed an idle connection; the next query opens another', { err });
    return openPostgresStore({ url: db.url, schema: db.schema, onConnectionLost });
  }
  return openSqliteStore({ path: db.path, sync: db.sync });
}
