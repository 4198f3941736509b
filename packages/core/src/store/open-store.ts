import type { Config } from '../config.js';
import { openPostgresStore } from './postgres/pg-job-store.js';
import { openSqliteStore } from './sqlite/sqlite-job-store.js';
import type { JobStore } from './types.js';

/** The store the configuration names: PostgreSQL when DATABASE_URL is set, else the SQLite file. */
export async function openStore(config: Config): Promise<JobStore> {
  if (config.db.url) return openPostgresStore({ url: config.db.url, schema: config.db.schema });
  return openSqliteStore({ path: config.db.path, sync: config.db.sync });
}
