import assert from 'node:assert/strict';
import { test } from 'node:test';
import { echoCompletion, startStubUpstream } from '../../scripts/stub-upstream.ts';
import { WORKER_MAIN, newCredentials, openTestStore, postSigned, spawnNode, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';

function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',').filter(Boolean);
    if (want.every((w) => have.includes(w)) && have.length === want.length) return Number(m[3]);
  }
  return undefined;
}

test('metrics after a scripted run show the counts that run produced; anonymous callers are refused unless METRICS_ALLOW lists them', async (t) => {
  const dir = tempDir(t);
  // 'flaky' fails its first call only. It once failed while it was among the stub's first two calls
  // of all: the worker runs the four jobs at once, and in a CI run the retry of 'flaky' reached the
  // stub before the other three calls had, so it failed twice.
  let flakyCalls = 0;
  const stub = await startStubUpstream({
    behave: (call) => {
      if (call.prompt === 'bad') return { status: 400, body: { error: { message: 'no', type: 'invalid_request_error' } } };
      if (call.prompt === 'flaky' && ++flakyCalls === 1) return { status: 500 };
      // Why each answer stopped: 'ok 1' as most do, 'flaky' at the token limit, 'ok 2' in a server's
      // own word, and without a usage, as some servers answer.
      const finish = call.prompt === 'flaky' ? 'length' : call.prompt === 'ok 2' ? 'MAX_TOKENS' : null;
      if (finish) {
        const body = echoCompletion(call) as { choices: Array<{ finish_reason: string }>; usage?: unknown };
        body.choices[0]!.finish_reason = finish;
        if (call.prompt === 'ok 2') delete body.usage;
        return { body };
      }
      return {};
    },
  });
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, {
    PROXY_KEY: key,
    PROXY_SECRET: secret,
    OPENAI_API_KEY: 'sk-metrics',
    OPENAI_BASE_URL: stub.url,
    RATE_LIMIT_PER_KEY: '4/min',
    RETRY_BASE_MS: '1',
    RETRY_MAX_MS: '2',
  });
  const { url } = await startApiProcess(t, env, dir);

  const statuses = [];
  // 'ok 1' asks for a model of its own, for the counts by model.
  for (const prompt of ['flaky', 'ok 1', 'ok 2', 'bad', 'one too many']) {
    statuses.push((await postSigned(url, key, secret, { prompt, model: prompt === 'ok 1' ? 'gpt-n' : 'gpt-m' })).status);
  }
  assert.deepEqual(statuses, [202, 202, 202, 202, 429]);
  const worker = spawnNode(WORKER_MAIN, ['once'], env, dir);
  assert.equal((await worker.exited).code, 0);

  // The legacy URLs all match one pattern; each known action is its own series, and an action no
  // route knows adds none of its own (a client could otherwise make series without end).
  const legacyHeaders = { headers: { 'x-proxy-key': key } };
  assert.equal((await fetch(`${url}/index.php?action=health`, legacyHeaders)).status, 200);
  assert.equal((await fetch(`${url}/?action=health`, legacyHeaders)).status, 200);
  assert.equal((await fetch(`${url}/index.php?action=result&id=req_unknown`, legacyHeaders)).status, 404);
  for (const action of ['nosuchaction', 'another']) assert.equal((await fetch(`${url}/index.php?action=${action}`, legacyHeaders)).status, 404);

  const anonymous = await fetch(`${url}/metrics`);
  assert.equal(anonymous.status, 401);
  assert.equal(((await anonymous.json()) as any).error.code, 'unauthorized');

  const res = await fetch(`${url}/metrics`, { headers: { 'x-proxy-key': key } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.equal(sample(text, 'proxy_jobs_created_total', { model: 'gpt-m' }), 3);
  assert.equal(sample(text, 'proxy_jobs_created_total', { model: 'gpt-n' }), 1);
  assert.equal(sample(text, 'proxy_jobs_finished_total', { model: 'gpt-m', status: 'completed' }), 2);
  assert.equal(sample(text, 'proxy_jobs_finished_total', { model: 'gpt-n', status: 'completed' }), 1);
  assert.equal(sample(text, 'proxy_jobs_finished_total', { model: 'gpt-m', status: 'failed' }), 1);
  assert.equal(sample(text, 'proxy_upstream_calls_total', { code: '200' }), 3);
  assert.equal(sample(text, 'proxy_upstream_calls_total', { code: '500' }), 1);
  assert.equal(sample(text, 'proxy_upstream_calls_total', { code: '400' }), 1);
  assert.equal(sample(text, 'proxy_retries_total', { model: 'gpt-m' }), 1);
  assert.equal(sample(text, 'proxy_completions_total', { finish_reason: 'stop' }), 1);
  assert.equal(sample(text, 'proxy_completions_total', { finish_reason: 'length' }), 1);
  assert.equal(sample(text, 'proxy_completions_total', { finish_reason: 'other' }), 1, "a server's own word counts as other");
  assert.doesNotMatch(text, /MAX_TOKENS/);
  // The tokens the answers' usage reports (the stub's: a quarter of the characters, rounded up), by
  // the job's model; 'ok 2' reported none, and no series counts by kind alone.
  const tokens = (words: string) => Math.ceil(words.length / 4);
  assert.equal(sample(text, 'proxy_tokens_total', { kind: 'prompt', model: 'gpt-m' }), tokens('flaky'));
  assert.equal(sample(text, 'proxy_tokens_total', { kind: 'completion', model: 'gpt-m' }), tokens('echo: flaky'));
  assert.equal(sample(text, 'proxy_tokens_total', { kind: 'prompt', model: 'gpt-n' }), tokens('ok 1'));
  assert.equal(sample(text, 'proxy_tokens_total', { kind: 'completion', model: 'gpt-n' }), tokens('echo: ok 1'));
  assert.equal([...text.matchAll(/^proxy_tokens_total\{/gm)].length, 4);
  assert.equal(sample(text, 'proxy_upstream_latency_seconds_count'), 5);
  assert.equal(sample(text, 'proxy_upstream_latency_seconds_bucket', { le: '+Inf' }), 5);
  assert.equal(sample(text, 'proxy_queue_depth', { status: 'completed' }), 3);
  assert.equal(sample(text, 'proxy_queue_depth', { status: 'queued' }), 0);
  assert.equal(sample(text, 'proxy_http_requests_total', { route: '/v1/requests', method: 'POST', status: '202' }), 4);
  assert.equal(sample(text, 'proxy_http_requests_total', { route: '/v1/requests', method: 'POST', status: '429' }), 1);
  assert.equal(sample(text, 'proxy_http_requests_total', { route: 'legacy:health', method: 'GET', status: '200' }), 2);
  assert.equal(sample(text, 'proxy_http_requests_total', { route: 'legacy:result', method: 'GET', status: '404' }), 1);
  assert.equal(sample(text, 'proxy_http_requests_total', { route: 'legacy', method: 'GET', status: '404' }), 2);
  assert.equal(sample(text, 'proxy_http_request_duration_seconds_count', { route: 'legacy:health' }), 2);
  assert.doesNotMatch(text, /route="[^"]*(index\.php|nosuchaction)/);
  assert.equal(sample(text, 'proxy_rate_limited_total', { budget: 'create_key' }), 1);
  assert.ok((sample(text, 'proxy_api_process_resident_memory_bytes') ?? 0) > 0);
  assert.ok(!text.includes(key) && !text.includes(secret));
  assert.equal(sample(text, 'proxy_upstream_down_seconds'), 0, 'the upstream answered');
  // As a worker marks it when its calls come to be held (upstream-outage.ts).
  const store = await openTestStore(env);
  t.after(() => store.close());
  await store.markUpstreamDown({ since: store.now() - 90_000, lookAt: store.now(), reason: 'cannot be reached (ECONNREFUSED)' });
  const down = sample(await (await fetch(`${url}/metrics`, { headers: { 'x-proxy-key': key } })).text(), 'proxy_upstream_down_seconds');
  assert.ok(down !== undefined && down >= 90 && down < 120, `proxy_upstream_down_seconds ${down}`);
});

test('METRICS_ALLOW lets a listed address scrape without a key; a malformed entry stops the start', async (t) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const { url } = await startApiProcess(t, testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, METRICS_ALLOW: '10.0.0.0/8, 127.0.0.1' }), dir);
  assert.equal((await fetch(`${url}/metrics`)).status, 200);
  const { API_MAIN } = await import('../helpers/index.ts');
  const bad = spawnNode(API_MAIN, [], testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, METRICS_ALLOW: '10.0.0.0/99' }), dir);
  assert.equal((await bad.exited).code, 78);
  assert.match(bad.stderr.join('\n'), /^proxy-api: METRICS_ALLOW: "10\.0\.0\.0\/99" is not an address or subnet/);
});

test('the model label names the first 100 models asked for, and counts every later one as (other), in the API and the worker alike', async (t) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-metrics', OPENAI_BASE_URL: stub.url, RATE_LIMIT_PER_KEY: 'off', RATE_LIMIT_PER_IP: 'off' });
  const { url } = await startApiProcess(t, env, dir);
  // A client naming a model of its own with every request, as ALLOWED_MODELS unset lets it.
  const models = Array.from({ length: 110 }, (_, i) => `model-${i}`);
  for (const model of models) assert.equal((await postSigned(url, key, secret, { prompt: 'hi', model })).status, 202);
  const worker = spawnNode(WORKER_MAIN, ['once'], env, dir);
  assert.equal((await worker.exited).code, 0);

  const text = await (await fetch(`${url}/metrics`, { headers: { 'x-proxy-key': key } })).text();
  const labelled = (name: string) => new Set([...text.matchAll(new RegExp(`^${name}\\{[^}]*model="([^"]*)"`, 'gm'))].map((m) => m[1]));
  const expected = new Set([...models.slice(0, 100), '(other)']);
  assert.deepEqual(labelled('proxy_jobs_created_total'), expected);
  assert.deepEqual(labelled('proxy_jobs_finished_total'), expected, "the worker's counts, under the labels the API gave");
  assert.deepEqual(labelled('proxy_tokens_total'), expected, "a completion's tokens, under the same labels");
  // Each answer's usage: 'hi' is one prompt token, 'echo: hi' two completion tokens (the stub's count).
  assert.equal(sample(text, 'proxy_tokens_total', { kind: 'completion', model: '(other)' }), 20);
  assert.equal(sample(text, 'proxy_jobs_created_total', { model: '(other)' }), 10);
  assert.equal(sample(text, 'proxy_jobs_finished_total', { model: '(other)', status: 'completed' }), 10);
  assert.equal(sample(text, 'proxy_jobs_finished_total', { model: 'model-99', status: 'completed' }), 1);
  assert.match(text, /^# HELP proxy_jobs_created_total Jobs accepted, by model \(the first 100 models asked for; every later one as \(other\)\)$/m);
});
