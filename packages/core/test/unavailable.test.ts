/**
 * Which store errors mean "the database cannot serve now" (the API's 503 `unavailable`, which
 * clients retry) and which are faults (500 `internal`): each case is a real error from SQLite or
 * from a real PostgreSQL server, not a made-up object.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { withClient } from '../src/store/postgres/checkout.ts';
import { isDatabaseUnavailable } from '../src/store/unavailable.ts';
import { PG_URL, tempDir } from '../../../test/helpers/index.ts';

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected a throw');
}

test('SQLite: a write lock held past busy_timeout is unavailable; a constraint or a bad statement is not', (t) => {
  const dir = tempDir(t);
  const a = new Database(`${dir}/db.sqlite`);
  const b = new Database(`${dir}/db.sqlite`, { timeout: 0 });
  t.after(() => (a.close(), b.close()));
  a.exec('PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY)');
  a.exec('BEGIN IMMEDIATE');
  const busy = thrown(() => b.exec('INSERT INTO t VALUES (1)'));
  assert.equal((busy as { code: string }).code, 'SQLITE_BUSY');
  assert.equal(isDatabaseUnavailable(busy), true);
  a.exec('INSERT INTO t VALUES (1); COMMIT');
  assert.equal(isDatabaseUnavailable(thrown(() => b.exec('INSERT INTO t VALUES (1)'))), false, 'a UNIQUE constraint');
  assert.equal(isDatabaseUnavailable(thrown(() => b.exec('SELECT nope FROM t'))), false, 'a bad statement');
  // Found through the cause, as the WAL flush's failure carries the disk's error.
  const io = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
  assert.equal(isDatabaseUnavailable(new Error('fdatasync of x-wal failed', { cause: io })), true);
  assert.equal(isDatabaseUnavailable(new TypeError('x is not a function')), false);
});

test('PostgreSQL: a refused connection, a refused login and a terminated connection are unavailable; a syntax error is not', async () => {
  const closed = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:1/test' });
  const refused = await closed.connect().then(
    () => null,
    (err: unknown) => err,
  );
  assert.equal(isDatabaseUnavailable(refused), true, String(refused));
  // A login the server refuses (class 28: here a role that is not there; a password rotated under
  // running programs is 28P01): the request is not at fault, and its retry is answered once the
  // login works. pg_hba.conf's trust on the test server lets no wrong password be tried.
  const stranger = new URL(PG_URL);
  stranger.username = 'proxy_no_such_role';
  stranger.password = '';
  const login = await new pg.Client({ connectionString: stranger.href }).connect().then(
    () => null,
    (err: unknown) => err,
  );
  assert.equal((login as { code?: string } | null)?.code, '28000', String(login));
  assert.equal(isDatabaseUnavailable(login), true);

  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  client.on('error', () => undefined);
  const syntax = await client.query('SELEC 1').then(
    () => null,
    (err: unknown) => err,
  );
  assert.equal((syntax as { code: string }).code, '42601');
  assert.equal(isDatabaseUnavailable(syntax), false);
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
  const sleeping = client.query('SELECT pg_sleep(10)').then(
    () => null,
    (err: unknown) => err,
  );
  await new Promise((r) => setTimeout(r, 100));
  await admin.query('SELECT pg_terminate_backend($1)', [pid]);
  await admin.end();
  const terminated = await sleeping;
  assert.equal((terminated as { code?: string } | null)?.code, '57P01', String(terminated));
  assert.equal(isDatabaseUnavailable(terminated), true);
  const after = await client.query('SELECT 1').then(
    () => null,
    (err: unknown) => err,
  );
  assert.ok(after, 'the connection is gone');
  assert.equal(isDatabaseUnavailable(after), true, String(after));
  await client.end().catch(() => undefined);
});

test('PostgreSQL: a checked-out connection the server closes between two queries fails its next query; the process lives and the pool serves a fresh one', async () => {
  const pool = new pg.Pool({ connectionString: PG_URL, max: 1 });
  pool.on('error', () => undefined);
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    const failed = await withClient(pool, async (client) => {
      const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      // The server's goodbye arrives while no query runs: unheard, it was an unhandled 'error'.
      await new Promise((r) => setTimeout(r, 200));
      return client.query('SELECT 1').then(
        () => null,
        (err: unknown) => err,
      );
    });
    assert.ok(failed && isDatabaseUnavailable(failed), String(failed));
    const { rows } = await pool.query<{ one: number }>('SELECT 1 AS one');
    assert.equal(rows[0]?.one, 1, 'the broken connection was not given back to the pool');
  } finally {
    await admin.end();
    await pool.end();
  }
});

test("PostgreSQL: a named statement the session no longer knows (a pool in transaction mode gave the next transaction another server session) says what to change, with PostgreSQL's own words and code", async () => {
  const pool = new pg.Pool({ connectionString: PG_URL, max: 1 });
  try {
    const named = () => withClient(pool, (client) => client.query({ name: 'pooled_probe', text: 'SELECT 1 AS one' }));
    assert.equal((await named()).rows[0].one, 1);
    // What such a pool does: the statement was prepared on a server session this one is not.
    await withClient(pool, (client) => client.query('DEALLOCATE pooled_probe'));
    const err = (await named().then(
      () => assert.fail('answered'),
      (e: unknown) => e,
    )) as Error & { code?: string };
    assert.equal(err.code, '26000');
    assert.match(
      err.message,
      /^prepared statement "pooled_probe" does not exist: DATABASE_URL may reach PostgreSQL through a pool in transaction mode \(PgBouncer's pool_mode = transaction, a provider's transaction pooler\), where a session's prepared statements and settings do not last: point it at a pool in session mode, or at the server$/,
    );
    assert.equal(isDatabaseUnavailable(err), false, 'a fault of the settings, not an outage to retry');
  } finally {
    await pool.end();
  }
});
