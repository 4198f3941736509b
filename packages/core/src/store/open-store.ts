import type { DatabaseSettings } from '../config.js';
import { openSqliteStore } from './sqlite/sqlite-job-store.js';
import type { JobStore } from './types.js';

/**
 * The store the configuration names: PostgreSQL when DATABASE_URL is set, else the SQLite file.
 * The PostgreSQL store is imported only when chosen: `pg` costs an SQLite process about 15 MB.
 */
export async function openStore(db: DatabaseSettings): Promise<JobStore> {
  if (db.url) {
    const { openPostgresStore } = await import('./postgres/pg-job-store.js');
    return openPostgresStore({ url: db.url, schema: db.schema });
  }
  return openSqliteStore({ path: db.path, sync: db.sync });
}
