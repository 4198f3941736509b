import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Db } from './open-database.js';
import { foreignMigration, laterMigrations, laterReleaseMessage, migrationFiles, someTables, watchLaterMigrations } from '../migration-files.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/sqlite/', import.meta.url));
/** The rate-limit file's own migrations. */
export const LIMITS_MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/sqlite-limits/', import.meta.url));

/** Applies the numbered migrations not yet applied, each in its own IMMEDIATE transaction. */
export function migrate(db: Db, dir = MIGRATIONS_DIR): number {
  const files = migrationFiles(dir);
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const isApplied = db.prepare<[number], { version: number }>('SELECT version FROM schema_migrations WHERE version = ?');
  const record = db.prepare<[number, string, number]>('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  let applied = 0;
  for (const file of files) {
    const version = Number(file.slice(0, 4));
    // Checked again inside the write lock: processes starting together must not apply a file twice.
    const apply = db.transaction(() => {
      if (isApplied.get(version)) return false;
      db.exec(readFileSync(`${dir}/${file}`, 'utf8'));
      record.run(version, file, Date.now());
      return true;
    });
    if (apply.immediate()) applied += 1;
  }
  return applied;
}

/**
 * Throws unless `db` is empty or was migrated from `dir` (the same file at each version it
 * recorded). Run before anything is changed in the file: a file that holds another program's
 * tables, or whose migrations are another schema's (the limiter's file and the database mixed up),
 * would otherwise be switched to WAL and get this program's tables beside its own, or a schema
 * whose versions skip what they should have made. Throws too for a file a later release migrated
 * past what this one can run on (a release rolled back); answers the later migrations it can run
 * on, for the caller to say. `name` is the file the messages name (a copy's original, for restore).
 */
export function assertOurSchema(db: Db, dir = MIGRATIONS_DIR, name = db.name): string[] {
  const files = migrationFiles(dir);
  const tables = db.prepare<[], string>(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`).pluck().all();
  if (tables.length === 0) return [];
  if (!tables.includes('schema_migrations'))
    throw new Error(`${name} is another program's SQLite database (its tables: ${someTables(tables)}); name a new file, or this program's`);
  const applied = db.prepare<[], { version: number; name: string }>('SELECT version, name FROM schema_migrations ORDER BY version').all();
  const foreign = foreignMigration(applied, files);
  if (foreign) throw new Error(`${name} holds another schema: ${foreign} (the database and the limiter's file beside it mixed up?)`);
  const later = laterMigrations(applied, files);
  if (later.refusing) throw new Error(laterReleaseMessage(name, later.refusing));
  return later.compatible;
}

/** An open file's watch for a later release's migrations (watchForLaterRelease). */
export interface LaterReleaseWatch {
  /** Reads what the file recorded past this release's migrations and judges it: the error refusing writes, or null. */
  look(): Error | null;
  /** That error, once a look found it (no read of its own). */
  readonly refused: Error | null;
}

/**
 * Watches `db`, opened and migrated from `dir`, for a later release's migrations applied while it
 * runs (watchLaterMigrations). A look is one seek on schema_migrations' key, cheap enough for each
 * write transaction: run first inside it, it sees exactly the schema the writes after it go to. The
 * first look is taken here, as the start's.
 */
export function watchForLaterRelease(db: Db, dir = MIGRATIONS_DIR, tell: { onLater?: (names: string[]) => void; onRefused?: (message: string) => void } = {}): LaterReleaseWatch {
  const watch = watchLaterMigrations(migrationFiles(dir), db.name, tell);
  const since = db.prepare<[number], { version: number; name: string }>('SELECT version, name FROM schema_migrations WHERE version > ? ORDER BY version');
  const look = () => watch.refused ?? watch.judge(since.all(watch.after));
  look();
  return {
    look,
    get refused() {
      return watch.refused;
    },
  };
}
