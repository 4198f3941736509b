export * from './types.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite/sqlite-job-store.js';
export type { PostgresStoreOptions } from './postgres/pg-job-store.js';
export { openStore } from './open-store.js';
export { backupSqliteFile, type BackupReport } from './sqlite/backup.js';
export { DatabaseInUseError, restoreSqliteFile, type RestoreReport } from './sqlite/restore.js';
export { isDatabaseUnavailable } from './unavailable.js';
export { MODEL_LABELS_MAX, OTHER_MODEL } from './counter-labels.js';
export { createChangeWatch, WATCHED_POLL_MS, NOTICE_SETTLE_MS, type ChangeWatch } from './change-watch.js';
