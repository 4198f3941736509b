import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { withClient } from './checkout.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/postgres/', import.meta.url));

/**
 * Creates the schema and applies the numbered migrations not yet applied, each in its own
 * transaction, under an advisory lock: several hosts starting at once apply each file once.
 */
export async function migratePostgres(pool: pg.Pool, schema: string, dir = MIGRATIONS_DIR): Promise<number> {
  return withClient(pool, async (client) => {
    // Waiting here for another host's migrations, or for a table lock a migration needs, is not a
    // stuck request: no lock_timeout for this session until it is done.
    await client.query('SET lock_timeout = 0');
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [`chat-async-proxy:${schema}`]);
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version    INTEGER PRIMARY KEY,
        name       TEXT    NOT NULL,
        applied_at BIGINT  NOT NULL
      )`);
      const files = readdirSync(dir).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort();
      const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations');
      const applied = new Set(rows.map((r) => r.version));
      let count = 0;
      for (const file of files) {
        const version = Number(file.slice(0, 4));
        if (applied.has(version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(readFileSync(`${dir}/${file}`, 'utf8'));
          await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [version, file, Date.now()]);
          await client.query('COMMIT');
          count += 1;
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
      }
      return count;
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [`chat-async-proxy:${schema}`]);
      // Back to the connection's own setting before it returns to the pool.
      await client.query('RESET lock_timeout');
    }
  });
}
