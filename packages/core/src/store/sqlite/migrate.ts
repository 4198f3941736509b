import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Db } from './open-database.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/sqlite/', import.meta.url));
/** The rate-limit file's own migrations. */
export const LIMITS_MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/sqlite-limits/', import.meta.url));

/** Applies the numbered migrations not yet applied, each in its own IMMEDIATE transaction. */
export function migrate(db: Db, dir = MIGRATIONS_DIR): number {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const files = readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
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
