export * from './types.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite/sqlite-job-store.js';
export { openPostgresStore, type PostgresStoreOptions } from './postgres/pg-job-store.js';
export { openStore } from './open-store.js';
