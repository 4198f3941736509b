/**
 * A release rolled back onto a database a later release migrated, with the real programs on either
 * backend: refused in one line while a later migration does not say earlier releases can run on
 * it, nothing changed; run, with a warning at start, once every one says so. And a later release
 * migrating the database under programs of this one that are running: they stop.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { laterReleaseMessage } from '../../packages/core/src/store/migration-files.ts';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import {
  API_MAIN,
  WORKER_MAIN,
  completedJob,
  enqueueJob,
  getJson,
  newCredentials,
  openTestStore,
  postSigned,
  spawnNode,
  startApiProcess,
  startWorkerDaemon,
  streamCreates,
  tempDir,
  testEnv,
  within,
} from '../helpers/index.ts';

/** Runs `text` (no parameters) on the database a test's programs use; the rows it read. */
async function runSql(env: Record<string, string>, text: string): Promise<unknown[]> {
  if (env.DATABASE_URL) {
    const client = new pg.Client({ connectionString: env.DATABASE_URL });
    await client.connect();
    try {
      await client.query(`SET search_path TO ${env.DATABASE_SCHEMA}`);
      return (await client.query(text)).rows;
    } finally {
      await client.end();
    }
  }
  const db = new Database(env.PROXY_DB_PATH);
  try {
    const statement = db.prepare(text);
    return statement.reader ? statement.all() : (statement.run(), []);
  } finally {
    db.close();
  }
}

test("a release rolled back onto a database a later release migrated: refused in one line, nothing changed, unless each later migration's name says earlier releases run on it", async (t) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-later', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' });
  const setting = env.DATABASE_URL ? 'DATABASE_URL' : 'PROXY_DB_PATH';
  const where = env.DATABASE_URL ? `schema ${env.DATABASE_SCHEMA}` : (env.PROXY_DB_PATH as string);
  const store = await openTestStore(env);
  const id = await enqueueJob(store, 'queued before the rollback');
  await store.close();
  // What the later release left: one migration that says this release can run on its result, one that does not.
  await runSql(env, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9001, '9001_later_index_compatible.sql', 0), (9002, '9002_later_change.sql', 0)");
  const recorded = await runSql(env, 'SELECT version, name FROM schema_migrations ORDER BY version');

  for (const [main, args, program] of [
    [API_MAIN, [], 'proxy-api'],
    [WORKER_MAIN, ['daemon'], 'proxy-worker'],
    [WORKER_MAIN, ['stats'], 'proxy-worker'],
  ] as const) {
    const child = spawnNode(main, [...args], env, dir);
    const exit = await within(child.exited, 15_000, `${program} ${args.join(' ')} refusing to start`);
    assert.equal(exit.code, 1, child.stderr.join('\n'));
    const said = child.stderr.filter(Boolean);
    assert.equal(said.length, 1, said.join('\n'));
    assert.ok(said[0]!.startsWith(`${program}: ${setting}: cannot open `), said[0]);
    assert.ok(said[0]!.endsWith(`: ${laterReleaseMessage(where, '9002_later_change.sql')}`), said[0]);
  }
  assert.deepEqual(await runSql(env, 'SELECT version, name FROM schema_migrations ORDER BY version'), recorded, 'no migration applied or undone');

  await runSql(env, "UPDATE schema_migrations SET name = '9002_later_change_compatible.sql' WHERE version = 9002");
  const warning = `${setting}: ${where} was migrated by a later release of this program (9001_later_index_compatible.sql, 9002_later_change_compatible.sql); those migrations leave it usable by this release, which runs on it`;
  const shown = spawnNode(WORKER_MAIN, ['show', id, '--json'], env, dir);
  assert.equal((await within(shown.exited, 15_000, 'proxy-worker show')).code, 0, shown.stderr.join('\n'));
  assert.deepEqual(shown.stderr.filter(Boolean), [`proxy-worker: ${warning}`]);
  assert.equal((JSON.parse(shown.lines.join('\n')) as { id: string }).id, id, 'the job made before is there');
  const api = await startApiProcess(t, env, dir);
  assert.ok(
    api.child.lines.some((line) => (JSON.parse(line) as { level: string; message: string }).message === warning && line.includes('"warn"')),
    api.child.lines.join('\n'),
  );
  assert.equal((await getJson(api.url, `/v1/requests/${id}`, key)).json.status, 'queued');
});

test(
  'a later release migrating the database under a running API and worker: both stop (exit 1) within seconds, in one line naming the migration; what they stored stays',
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir(t);
    const { key, secret } = newCredentials();
    const stub = await startStubUpstream();
    t.after(() => stub.close());
    const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-later', OPENAI_BASE_URL: stub.url });
    const setting = env.DATABASE_URL ? 'DATABASE_URL' : 'PROXY_DB_PATH';
    const where = env.DATABASE_URL ? `schema ${env.DATABASE_SCHEMA}` : (env.PROXY_DB_PATH as string);
    const api = await startApiProcess(t, env, dir);
    const worker = startWorkerDaemon(t, env, dir);
    await worker.waitFor((line) => line.includes('worker started'));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await postSigned(api.url, key, secret, { prompt: `before ${i}` })).json.id);
    for (const id of ids) await completedJob(api.url, key, id);

    await runSql(env, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9003, '9003_later_change.sql', 0)");
    const stopped = await within(Promise.all([api.child.exited, worker.exited]), 20_000, 'both programs stopping');
    assert.deepEqual(
      stopped.map(({ code }) => code),
      [1, 1],
    );
    for (const [child, program] of [
      [api.child, 'API'],
      [worker, 'worker'],
    ] as const) {
      const errors = child.lines.map((line) => JSON.parse(line) as { level: string; message: string }).filter((line) => line.level === 'error');
      assert.deepEqual(
        errors.map((line) => line.message),
        [`${setting}: ${laterReleaseMessage(where, '9003_later_change.sql')}; the ${program} stops: draining`],
      );
    }
    assert.deepEqual(await runSql(env, 'SELECT status, COUNT(*) AS n FROM jobs GROUP BY status'), [{ status: 'completed', n: env.DATABASE_URL ? '3' : 3 }]);
  },
);

test(
  'creates under way while a later release migrates the database: the jobs stored are exactly those answered 202, on SQLite not one after the migration commits, and the rest are told 503',
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir(t);
    const { key, secret } = newCredentials();
    const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, RATE_LIMIT_PER_IP: '100000/min', RATE_LIMIT_PER_KEY: '100000/min' });
    const api = await startApiProcess(t, env, dir);
    const creates = streamCreates(api.url, key, secret, 4);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = creates.accepted.size;
    // The later release's migration: a table change and its record, in one transaction, as migrate() applies a file.
    let storedAtCommit: number;
    if (env.DATABASE_URL) {
      const admin = new pg.Client({ connectionString: env.DATABASE_URL });
      await admin.connect();
      try {
        await admin.query(`SET search_path TO ${env.DATABASE_SCHEMA}`);
        await admin.query('BEGIN');
        await admin.query('ALTER TABLE jobs ADD COLUMN later_note TEXT');
        await admin.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9004, '9004_later_change.sql', 0)");
        storedAtCommit = Number((await admin.query('SELECT COUNT(*) AS n FROM jobs')).rows[0].n);
        await admin.query('COMMIT');
      } finally {
        await admin.end();
      }
    } else {
      const db = new Database(env.PROXY_DB_PATH);
      db.pragma('busy_timeout = 5000');
      try {
        storedAtCommit = db
          .transaction(() => {
            db.exec('ALTER TABLE jobs ADD COLUMN later_note TEXT');
            db.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9004, '9004_later_change.sql', 0)");
            return db.prepare('SELECT COUNT(*) FROM jobs').pluck().get() as number;
          })
          .immediate();
      } finally {
        db.close();
      }
    }
    assert.equal((await within(api.child.exited, 20_000, 'the API stopping')).code, 1);
    await creates.stop();
    assert.ok(before > 0, 'creates were answered 202 before the migration');
    const accepted = [...creates.accepted.keys()];
    const stored = new Set((await runSql(env, 'SELECT id FROM jobs')).map((row) => (row as { id: string }).id));
    assert.deepEqual(
      accepted.filter((id) => !stored.has(id)),
      [],
      'every 202 is stored',
    );
    assert.equal(stored.size, accepted.length, 'nothing stored that was not answered 202');
    t.diagnostic(
      `${before} creates answered before the migration, ${accepted.length} in all, ${stored.size - storedAtCommit} stored after its commit; others: ${[...creates.refused].join(', ') || 'none'}`,
    );
    if (!env.DATABASE_URL) assert.equal(stored.size, storedAtCommit, "nothing stored after the migration's commit");
    for (const answer of creates.refused.keys()) assert.match(answer, /^503 unavailable$/, 'the creates not stored were told to try again');
  },
);
