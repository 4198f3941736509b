import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { signBody } from '../../packages/core/src/signing.ts';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import {
  BACKEND,
  WORKER_MAIN,
  completedJob,
  enqueueJob,
  eventually,
  freshStamp,
  getJson,
  newCredentials,
  onlyOn,
  openTestStore,
  postSigned,
  spawnNode,
  startApiProcess,
  startWorkerDaemon,
  tempDir,
  testEnv,
  within,
  type TestHooks,
} from '../helpers/index.ts';

test(
  'the SQLite file moved away under a running API and worker: health says so at once, both stop (exit 1) within seconds, the moved file keeps every job, and a new start opens a new file at the path',
  { timeout: 60_000 },
  async (t) => {
    if (!onlyOn('sqlite', t, 'moves the database file')) return;
    const dir = tempDir(t);
    const { key, secret } = newCredentials();
    const stub = await startStubUpstream();
    t.after(() => stub.close());
    const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-moved', OPENAI_BASE_URL: stub.url });
    const api = await startApiProcess(t, env, dir);
    const worker = startWorkerDaemon(t, env, dir);
    await worker.waitFor((line) => line.includes('worker started'));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await postSigned(api.url, key, secret, { prompt: `job ${i}` })).json.id);
    for (const id of ids) await completedJob(api.url, key, id);
    const db = join(dir, 'requests.sqlite');
    assert.deepEqual((await getJson(api.url, '/health')).json, { status: 'ok' });

    renameSync(db, `${db}.moved`);
    const down = await getJson(api.url, '/health', key);
    assert.deepEqual([down.status, down.json.error], [503, { code: 'unavailable', message: 'the database does not answer' }], 'at once, before its next look');
    const stopped = await within(Promise.all([api.child.exited, worker.exited]), 20_000, 'both programs stopping');
    assert.deepEqual(
      stopped.map(({ code }) => code),
      [1, 1],
      'a failure: systemd starts them again',
    );
    for (const [child, program] of [
      [api.child, 'API'],
      [worker, 'worker'],
    ] as const) {
      const said = child.lines.map((line) => JSON.parse(line)).find((line) => line.level === 'error' && line.message.endsWith('draining'));
      assert.equal(
        said?.message,
        `PROXY_DB_PATH: the database file ${db} was moved away or deleted while this process had it open; it writes nothing more to it; a restart opens the file now at that path; the ${program} stops: draining`,
      );
    }

    const moved = new Database(`${db}.moved`, { readonly: true });
    t.after(() => moved.close());
    assert.equal(moved.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(moved.prepare('SELECT status, count(*) AS n FROM jobs GROUP BY status').all(), [{ status: 'completed', n: 5 }], 'every job and its answer, the log folded in');
    const restarted = await startApiProcess(t, env, dir);
    assert.equal((await getJson(restarted.url, '/health')).status, 200);
    assert.equal((await getJson(restarted.url, `/v1/requests/${ids[0]}`, key)).status, 404, 'a new, empty file at the path');
  },
);

test('a program started while another still has the file that was at PROXY_DB_PATH open waits for it, naming it, and opens once it has stopped', { timeout: 60_000 }, async (t) => {
  if (!onlyOn('sqlite', t, 'moves the database file')) return;
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-moved', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' });
  const api = await startApiProcess(t, env, dir);
  const db = join(dir, 'requests.sqlite');
  // Frozen, it cannot notice the move: it holds the moved file's log under the old names.
  process.kill(api.child.proc.pid as number, 'SIGSTOP');
  t.after(() => api.child.kill('SIGCONT'));
  renameSync(db, `${db}.moved`);
  const worker = startWorkerDaemon(t, env, dir);
  const waiting = JSON.parse(await worker.waitFor((line) => line.includes('waiting for')));
  assert.equal(
    waiting.message,
    `PROXY_DB_PATH: waiting for pid ${api.child.proc.pid} (node) to close the database it opened at ${db}, since moved or deleted; it still holds that database's log under this name`,
  );
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.ok(!worker.lines.some((line) => line.includes('worker started')), 'the worker waits');

  api.child.kill('SIGCONT');
  assert.equal((await within(api.child.exited, 20_000, 'the API stopping')).code, 1);
  await worker.waitFor((line) => line.includes('worker started'), 20_000);
  const moved = new Database(`${db}.moved`, { readonly: true });
  t.after(() => moved.close());
  assert.equal(moved.pragma('integrity_check', { simple: true }), 'ok');
});

test('`proxy-worker once` whose file is moved away mid-call abandons the call and exits 1 within seconds, not when the call would have ended', { timeout: 60_000 }, async (t) => {
  if (!onlyOn('sqlite', t, 'moves the database file')) return;
  const dir = tempDir(t);
  const stub = await startStubUpstream({ delayMs: 30_000 });
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-moved', OPENAI_BASE_URL: stub.url });
  const store = await openTestStore(env);
  await enqueueJob(store, 'slow');
  await store.close();
  const once = spawnNode(WORKER_MAIN, ['once'], env, dir);
  t.after(() => once.kill('SIGKILL'));
  await eventually(async () => stub.calls.length === 1);
  const db = join(dir, 'requests.sqlite');
  renameSync(db, `${db}.moved`);
  const exit = await within(once.exited, 10_000, 'once stopping');
  assert.equal(exit.code, 1);
  assert.ok(
    once.lines.some((line) => line.includes('was moved away or deleted while this process had it open')),
    once.lines.join('\n'),
  );
  const moved = new Database(`${db}.moved`, { readonly: true });
  t.after(() => moved.close());
  assert.equal(moved.pragma('integrity_check', { simple: true }), 'ok');
  assert.equal(moved.prepare('SELECT count(*) FROM jobs').pluck().get(), 1);
});

test('health with a key: queue by status, age of the oldest queued job, live workers, version; HEALTH_REQUIRE_WORKER', async (t) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, HEALTH_REQUIRE_WORKER: 'true', OPENAI_API_KEY: 'sk-h', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' });
  const { url } = await startApiProcess(t, env, dir);
  const store = await openTestStore(env);
  t.after(() => store.close());
  await enqueueJob(store, 'waiting');

  const noWorker = await getJson(url, '/health', key);
  assert.equal(noWorker.status, 503);
  assert.match(noWorker.json.error.message, /no worker has been seen/);
  assert.equal(noWorker.json.queue.queued, 1);
  assert.deepEqual(noWorker.json.workers, []);
  assert.deepEqual((await getJson(url, '/health')).json, { status: 'unavailable' });

  const worker = spawnNode(WORKER_MAIN, ['daemon'], { ...env, UPSTREAM_TIMEOUT_SECONDS: '60' }, dir);
  t.after(() => worker.kill('SIGKILL'));
  const healthy = await eventually(async () => {
    const res = await getJson(url, '/health', key);
    return res.status === 200 ? res.json : null;
  });
  assert.equal(healthy.status, 'ok');
  assert.equal(healthy.database, BACKEND);
  assert.match(healthy.version, /^\d+\.\d+\.\d+$/);
  assert.equal(healthy.workers.length, 1);
  assert.equal(healthy.workers[0].pid, worker.proc.pid);
  assert.equal(typeof healthy.oldest_queued_age_seconds === 'number' || healthy.oldest_queued_age_seconds === null, true);
  // The worker finds the upstream down (nothing listens on port 9) and marks it: /health tells the
  // mark, and stays 200, the upstream being down no fault of this API's.
  const told = await eventually(async () => {
    const res = await getJson(url, '/health', key);
    return typeof res.json.upstream_down_since === 'number' ? res : null;
  });
  assert.equal(told.status, 200);
  assert.ok(Math.abs(told.json.upstream_down_since - Date.now() / 1000) < 60, `upstream_down_since ${told.json.upstream_down_since}, in Unix seconds`);
  assert.equal(told.json.upstream_down_reason, 'cannot be reached (ECONNREFUSED)');
  // This API host's clock against the database's: SQLite's is the host's own.
  if (BACKEND === 'sqlite') assert.equal(healthy.clock_offset_ms, 0);
  else assert.ok(Math.abs(healthy.clock_offset_ms) < 1000, `the API's clock is ${healthy.clock_offset_ms} ms off the server's on one machine`);
});

test('the PostgreSQL server closing every connection (a restart, a failover) stops neither program; requests and jobs go on', async (t) => {
  if (!onlyOn('postgres', t, 'closes the server connections')) return;
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-pg', OPENAI_BASE_URL: stub.url });
  const api = await startApiProcess(t, env, dir);
  const worker = startWorkerDaemon(t, env, dir);
  const completes = async (prompt: string) => {
    const created = await postSigned(api.url, key, secret, { prompt });
    assert.equal(created.status, 202);
    return completedJob(api.url, key, created.json.id, 15_000);
  };
  assert.equal((await completes('before')).output_text, 'echo: before');

  const admin = new pg.Client({ connectionString: env.DATABASE_URL });
  await admin.connect();
  t.after(() => admin.end());
  const { rowCount } = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ($1, $2)', [
    `proxy:${env.DATABASE_SCHEMA}`,
    `proxy-listener:${env.DATABASE_SCHEMA}`,
  ]);
  assert.ok((rowCount ?? 0) >= 3, `the pools' and the listeners' connections closed (${rowCount})`);

  assert.equal((await completes('after')).output_text, 'echo: after');
  assert.equal(api.child.proc.exitCode, null, 'proxy-api is still running');
  assert.equal(worker.proc.exitCode, null, 'proxy-worker is still running');
  assert.ok(
    api.child.lines.some((l) => l.includes('closed an idle connection')),
    'the API says what happened',
  );
});

/**
 * Another connection takes a lock the API's writes must wait for, until `release`: the SQLite file's
 * write lock (the jobs file or the limits file), or on PostgreSQL the table, as an operator's
 * transaction or a non-concurrent index build would. Reads are not blocked.
 */
async function holdWriteLock(t: TestHooks, env: Record<string, string>, dir: string, what: 'jobs' | 'limits'): Promise<() => Promise<void>> {
  if (BACKEND === 'sqlite') {
    const holder = new Database(join(dir, what === 'jobs' ? 'requests.sqlite' : 'requests.limits.sqlite'));
    t.after(() => {
      holder.close();
    });
    holder.exec('BEGIN IMMEDIATE');
    return async () => void holder.exec('ROLLBACK');
  }
  const holder = new pg.Client({ connectionString: env.DATABASE_URL });
  await holder.connect();
  t.after(() => holder.end());
  await holder.query('BEGIN');
  await holder.query(`LOCK TABLE ${env.DATABASE_SCHEMA}.${what === 'jobs' ? 'jobs' : 'rate_limits'} IN EXCLUSIVE MODE`);
  return async () => void (await holder.query('ROLLBACK'));
}

test(
  'a create while another connection holds the write lock past busy_timeout (lock_timeout on PostgreSQL): 503 unavailable with Retry-After, and /health 503 until a create is stored; sent again once the lock is gone, it is stored once',
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir(t);
    const { key, secret } = newCredentials();
    const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret });
    const { url, child } = await startApiProcess(t, env, dir);
    const release = await holdWriteLock(t, env, dir, 'jobs');
    const body = signBody({ prompt: 'while locked', ...freshStamp() }, secret);
    const send = () => fetch(`${url}/v1/requests`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-proxy-key': key }, body });
    const locked = await send();
    assert.equal(locked.status, 503);
    assert.equal(locked.headers.get('retry-after'), '2');
    assert.deepEqual(await locked.json(), { error: { code: 'unavailable', message: 'the database does not answer; try again shortly' } });
    if (BACKEND === 'sqlite') {
      // The log says who holds the lock: here this test's process.
      const said = await eventually(async () => child.lines.find((l) => l.includes('the database does not answer')));
      assert.match(said, new RegExp(`the write lock is held by pid ${process.pid} \\(node\\)`));
    }
    // Reads, the health check's ping among them, still answer; /health says the database refused
    // the create all the same (it said ok, while no create could be stored).
    const health = async (withKey: boolean) => {
      const res = await fetch(`${url}/health`, { headers: withKey ? { 'x-proxy-key': key } : {} });
      return { status: res.status, json: (await res.json()) as { status: string; error?: { code: string; message: string } } };
    };
    assert.deepEqual(await health(false), { status: 503, json: { status: 'unavailable' } });
    const told = await health(true);
    assert.equal(told.status, 503);
    assert.equal(told.json.error?.code, 'unavailable');
    assert.match(told.json.error?.message ?? '', /^the database refused a request \d+ s ago; proxy-api's log says why$/);
    await release();
    const stored = await send();
    assert.equal(stored.status, 202);
    assert.deepEqual(await health(false), { status: 200, json: { status: 'ok' } }, 'a create stored: the database takes writes again');
    const again = await send();
    assert.equal(again.status, 200, 'the same request again answers with the job it made');
    assert.equal(((await again.json()) as { id: string }).id, ((await stored.json()) as { id: string }).id);
  },
);

test(
  "the limiter's store locked past busy_timeout (lock_timeout on PostgreSQL): reads pass unchecked (one warning), creates answer 503; limits resume once the lock is gone",
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir(t);
    const { key, secret } = newCredentials();
    const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret });
    const { url, child } = await startApiProcess(t, env, dir);
    const created = await postSigned(url, key, secret, { prompt: 'stored before the lock', ...freshStamp() });
    assert.equal(created.status, 202);
    const id = created.json.id as string;

    const release = await holdWriteLock(t, env, dir, 'limits');
    const [read, again, create] = await Promise.all([
      getJson(url, `/v1/requests/${id}`, key),
      getJson(url, `/v1/requests/${id}`, key),
      postSigned(url, key, secret, { prompt: 'while the limits are locked', ...freshStamp() }),
    ]);
    assert.deepEqual([read.status, read.json.id, read.json.status], [200, id, 'queued'], 'a stored job stays readable');
    assert.equal(read.headers.get('ratelimit'), null, 'no budget was drawn, so none is reported');
    assert.equal(again.status, 200);
    assert.deepEqual([create.status, create.json.error.code], [503, 'unavailable']);
    // Log lines reach the test through a pipe, after the answers: wait for the three access lines.
    const accessLine = (l: string) => l.includes('"message":"request"') && l.includes('/v1/requests');
    await eventually(async () => child.lines.filter(accessLine).length >= 4);
    const warnings = child.lines.filter((l) => l.includes('rate limiter unavailable'));
    assert.equal(warnings.length, 1, `one warning, not one a request: ${warnings.join('\n')}`);
    assert.equal(JSON.parse(warnings[0]!).level, 'warn');

    await release();
    const after = await getJson(url, `/v1/requests/${id}`, key);
    assert.equal(after.status, 200);
    assert.match(after.headers.get('ratelimit') ?? '', /^"ip";r=\d+;t=\d+$/, 'the read is drawn again');
  },
);
