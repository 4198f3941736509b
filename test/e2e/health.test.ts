import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BACKEND, WORKER_MAIN, enqueueJob, eventually, getJson, newCredentials, onlyOn, openTestStore, spawnNode, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';

test('health: 503 when the database file is moved away or replaced, 200 again once it is back', async (t) => {
  if (!onlyOn('sqlite', t, 'moves the database file')) return;
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const { url } = await startApiProcess(t, testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret }), dir);
  const db = join(dir, 'requests.sqlite');
  assert.deepEqual((await getJson(url, '/health')).json, { status: 'ok' });

  renameSync(db, `${db}.away`);
  const down = await getJson(url, '/health');
  assert.deepEqual([down.status, down.json], [503, { status: 'unavailable' }], 'the public sees only the status');
  const why = await getJson(url, '/health', key);
  assert.deepEqual([why.status, why.json.error], [503, { code: 'unavailable', message: 'the database does not answer' }]);

  renameSync(`${db}.away`, db);
  assert.equal((await getJson(url, '/health')).status, 200);
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
});
