import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { withClient } from './checkout.js';
import { foreignMigration, laterMigrations, laterReleaseMessage, migrationFiles, someTables, watchLaterMigrations } from '../migration-files.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/postgres/', import.meta.url));

/**
 * Creates the schema and applies the numbered migrations not yet applied, each in its own
 * transaction, under an advisory lock: several hosts starting at once apply each file once.
 * `onWait` is told who holds the lock when another process has it: a start waiting for it said
 * nothing, for as long as the holder took (a long migration, or a host frozen or cut off while it
 * held the lock). `onLater` is told the migrations a later release applied that this one runs on.
 */
export async function migratePostgres(
  pool: pg.Pool,
  schema: string,
  { dir = MIGRATIONS_DIR, onWait, onLater }: { dir?: string; onWait?: (holder: string) => void; onLater?: (names: string[]) => void } = {},
): Promise<number> {
  return withClient(pool, async (client) => {
    // Waiting here for another host's migrations, or for a table lock a migration needs, is not a
    // stuck request: no lock_timeout for this session until it is done. Nor a statement_timeout that
    // the role, the database or the URL's options set (operators set one against runaway queries):
    // it cancelled the wait for another host's migrations, and would cancel a migration that
    // rewrites a large table, failing every start until someone lifted it. PostgreSQL 17's
    // transaction_timeout likewise, where the server has it (it ended the waiting session).
    await client.query(
      "SET lock_timeout = 0; SET statement_timeout = 0; SELECT set_config('transaction_timeout', '0', false) WHERE current_setting('transaction_timeout', true) IS NOT NULL",
    );
    const lock = `chat-async-proxy:${schema}`;
    const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS got', [lock]);
    if (!rows[0]?.got) {
      onWait?.(await lockHolder(client, lock));
      await client.query('SELECT pg_advisory_lock(hashtext($1))', [lock]);
    }
    try {
      const files = migrationFiles(dir);
      const later = await assertOurSchema(client, schema, files);
      if (later.length > 0) onLater?.(later);
      // Made only when missing: CREATE SCHEMA IF NOT EXISTS asks for the right to create schemas in
      // the database even when the schema is there, and a role given a schema of its own by its
      // administrator, without that right, was refused ('permission denied for database').
      // Quoted: DATABASE_SCHEMA's pattern lets through words SQL reserves (order, user), which quoted
      // name the same schema as unquoted names do (lower case).
      const { rowCount: present } = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
      if (!present) await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      // Made only when missing, as the schema: a role that may only read and write the tables (the
      // migrations applied by their owner) is refused CREATE TABLE IF NOT EXISTS all the same.
      const { rows: kept } = await client.query<{ table: string | null }>('SELECT to_regclass($1)::text AS table', [`"${schema}".schema_migrations`]);
      if (kept[0]?.table == null) {
        await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version    INTEGER PRIMARY KEY,
          name       TEXT    NOT NULL,
          applied_at BIGINT  NOT NULL
        )`);
      }
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
          throw notAllowed(err, file, schema);
        }
      }
      return count;
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [lock]);
      // Back to the connection's own settings before it returns to the pool.
      await client.query("RESET lock_timeout; RESET statement_timeout; SELECT set_config(name, reset_val, false) FROM pg_settings WHERE name = 'transaction_timeout'");
    }
  });
}

/**
 * Throws unless `schema` is new, empty, or this program's (its schema_migrations names these
 * `files`), before anything in it changes. DATABASE_SCHEMA is `public` by default, and a database
 * shared with another application has that application's tables there, often beside a
 * schema_migrations of its own (Rails, Knex and others keep one by that name): this program's tables
 * would go in beside them, and its first insert into that table failed naming a column. Throws
 * too for a schema a later release migrated past what this one can run on; answers the later
 * migrations it can run on.
 */
async function assertOurSchema(client: pg.PoolClient, schema: string, files: readonly string[]): Promise<string[]> {
  const { rows: tables } = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
        -- An extension's own tables (PostGIS puts spatial_ref_sys in public) are no application's.
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1`,
    [schema],
  );
  if (tables.length === 0) return [];
  const names = tables.map((table) => table.name);
  const another = `schema ${schema} holds another application's tables (${someTables(names)}): set DATABASE_SCHEMA to a schema of this program's own`;
  if (!names.includes('schema_migrations')) throw new Error(another);
  const { rows: columns } = await client.query<{ name: string }>(
    `SELECT column_name AS name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'schema_migrations'`,
    [schema],
  );
  if (!['version', 'name', 'applied_at'].every((column) => columns.some((c) => c.name === column))) throw new Error(`${another} (its schema_migrations is not this program's)`);
  const { rows: applied } = await client.query<{ version: number; name: string }>(`SELECT version, name FROM "${schema}".schema_migrations ORDER BY version`);
  const foreign = foreignMigration(applied, files);
  if (foreign) throw new Error(`${another} (${foreign})`);
  const later = laterMigrations(applied, files);
  if (later.refusing) throw new Error(laterReleaseMessage(`schema ${schema}`, later.refusing));
  return later.compatible;
}

/**
 * Who holds the migrations' advisory lock, from pg_locks and pg_stat_activity: its backend's pid,
 * the application and the address it connected from, and what it is doing. A bigint advisory key
 * is listed split in two: its high 32 bits as classid, its low as objid, objsubid 1.
 */
async function lockHolder(client: pg.PoolClient, lock: string): Promise<string> {
  const { rows } = await client.query<{ pid: number; application_name: string; addr: string | null; state: string | null; since_s: number | null }>(
    `SELECT a.pid, a.application_name, host(a.client_addr) AS addr, a.state,
            EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)::int AS since_s
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
        AND l.classid = ((hashtext($1)::bigint >> 32) & 4294967295)::oid
        AND l.objid = (hashtext($1)::bigint & 4294967295)::oid`,
    [lock],
  );
  const holder = rows[0];
  if (!holder) return 'a session that has just let go of it';
  const from = holder.addr ? ` from ${holder.addr}` : ' over a local socket';
  return `PostgreSQL backend pid ${holder.pid} (application ${holder.application_name || 'unnamed'}${from}), ${holder.state ?? 'state unknown'} for ${holder.since_s ?? '?'} s`;
}

/** A running store's watch for a later release's migrations (watchForLaterRelease). */
export interface LaterReleaseWatch {
  /** Reads what the schema recorded past this release's migrations and judges it: the error refusing the store's work, or null. */
  look(): Promise<Error | null>;
  /** That error, once a look found it (no query of its own). */
  readonly refused: Error | null;
}

/**
 * Watches `schema`, migrated from `dir`, for a later release's migrations applied while this one
 * runs (watchLaterMigrations), through the store's `query`. The first look is taken here, as the
 * start's.
 */
export async function watchForLaterRelease(
  query: (text: string, values: unknown[]) => Promise<{ rows: Array<{ version: number; name: string }> }>,
  schema: string,
  { dir = MIGRATIONS_DIR, onLater, onRefused }: { dir?: string; onLater?: (names: string[]) => void; onRefused?: (message: string) => void } = {},
): Promise<LaterReleaseWatch> {
  const watch = watchLaterMigrations(migrationFiles(dir), `schema ${schema}`, { onLater, onRefused });
  const look = async () => watch.refused ?? watch.judge((await query('SELECT version, name FROM schema_migrations WHERE version > $1 ORDER BY version', [watch.after])).rows);
  await look();
  return {
    look,
    get refused() {
      return watch.refused;
    },
  };
}

/**
 * A migration the role may not apply (42501, insufficient_privilege: a role that may only read and
 * write the tables), said with what to do, keeping PostgreSQL's words and code; any other error as
 * it came.
 */
function notAllowed(err: unknown, file: string, schema: string): unknown {
  if ((err as { code?: string }).code !== '42501') return err;
  const message = `migration ${file} cannot be applied by this role (${(err as Error).message}): start either program once with a DATABASE_URL whose role owns schema ${schema}, which applies it, then go on with this one`;
  return Object.assign(new Error(message, { cause: err }), { code: '42501' });
}
