export * from './types.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite/sqlite-job-store.js';
