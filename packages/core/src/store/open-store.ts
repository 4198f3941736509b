import type { DatabaseSettings } from '../config.js';
import { openPostgresStore } from './postgres/pg-job-store.js';
import { openSqliteStore } from './sqlite/sqlite-job-store.js';
import type { JobStore } from './types.js';

/** The store the configuration names: PostgreSQL when DATABASE_URL is set, else the SQLite file. */
export async function openStore(db: DatabaseSettings): Promise<JobStore> {
  if (db.url) return openPostgresStore({ url: db.url, schema: db.schema });
  return openSqliteStore({ path: db.path, sync: db.sync });
}
