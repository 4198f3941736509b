import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startStubUpstream, type StubReply } from '../../scripts/stub-upstream.ts';
import { WORKER_MAIN, newCredentials, postSigned, spawnNode, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';

test("a request's life in the JSON logs: the request id and the job id link the API's lines and the worker's, the upstream's own request id is named, a client that hung up is logged as 499, and no secret appears", async (t) => {
  const dir = tempDir(t);
  // Each answer carries the upstream's id for the call, as OpenAI's x-request-id does (the refusal
  // as Anthropic's request-id does).
  const stub = await startStubUpstream({
    behave: (call): StubReply =>
      call.prompt === 'refused'
        ? { status: 400, headers: { 'request-id': `req_refused${call.n}` }, body: { error: { message: 'no', type: 'invalid_request_error' } } }
        : { headers: { 'x-request-id': `req_${call.n}abc` } },
  });
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const upstreamKey = 'sk-log-test-0123456789abcdefghij';
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: upstreamKey, OPENAI_BASE_URL: stub.url, LOG_DIR: join(dir, 'logs'), LOG_LEVEL: 'debug' });
  const { url, child } = await startApiProcess(t, env, dir);

  const created = await postSigned(url, key, secret, { prompt: 'trace me' });
  const requestId = created.headers.get('x-request-id');
  const jobId = created.json.id as string;
  const refusedId = (await postSigned(url, key, secret, { prompt: 'refused' })).json.id as string;
  assert.ok(requestId);
  // A long-poll its client gives up on before the job ends.
  const leave = new AbortController();
  const abandoned = fetch(`${url}/v1/requests/${jobId}?wait=30`, { headers: { 'X-Proxy-Key': key, 'X-Request-Id': 'gave-up-waiting' }, signal: leave.signal }).catch(
    (err: unknown) => err,
  );
  setTimeout(() => leave.abort(), 300);
  await abandoned;
  assert.equal((await spawnNode(WORKER_MAIN, ['once'], env, dir).exited).code, 0);
  child.kill('SIGTERM');
  await child.exited;

  const read = (file: string) =>
    readFileSync(join(dir, 'logs', file), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const api = read('api.log');
  const worker = read('worker.log');
  const queued = api.find((l) => l.message === 'job queued');
  assert.equal(queued?.request_id, requestId, 'the API line names the request id returned in X-Request-Id');
  assert.equal(queued?.job_id, jobId);
  const access = api.find((l) => l.message === 'request' && l.request_id === requestId);
  assert.deepEqual([access?.method, access?.status, access?.client, access?.job_id], ['POST', 202, 'default', jobId], 'the access line names the job');
  const gaveUp = api.find((l) => l.message === 'request' && l.request_id === 'gave-up-waiting');
  assert.deepEqual([gaveUp?.method, gaveUp?.status, gaveUp?.job_id], ['GET', 499, jobId], "a client that hung up gets an access line with nginx's 499");
  assert.ok(Number(gaveUp?.ms) >= 250, 'its duration runs until the client left');
  const jobLines = worker.filter((l) => l.job_id === jobId);
  assert.ok(
    jobLines.some((l) => l.message === 'job completed'),
    'the worker logs the job by id',
  );
  const upstreamIds = (id: string, message: string) => worker.filter((l) => l.job_id === id && l.message === message).map((l) => l.upstream_request_id);
  const calledAs = (prompt: string) => stub.calls.filter((c) => c.prompt === prompt).map((c) => c.n);
  assert.deepEqual(
    upstreamIds(jobId, 'job completed'),
    calledAs('trace me').map((n) => `req_${n}abc`),
    "the upstream's id for the call",
  );
  assert.deepEqual(
    upstreamIds(refusedId, 'job failed: not retryable'),
    calledAs('refused').map((n) => `req_refused${n}`),
  );
  assert.ok(jobLines.every((l) => typeof l.worker_id === 'string' && l.app === 'worker'));
  // stdout carries the same lines for the journal, written in batches: the last one, written as the
  // process exits, is there too.
  assert.ok(child.lines.some((l) => l.includes(requestId)));
  assert.equal(JSON.parse(child.lines.at(-1) ?? '{}').message, 'proxy-api stopped');
  // The file gets it too: the process exits only once its log files have what was logged.
  assert.equal(api.at(-1)?.message, 'proxy-api stopped', 'the last line of api.log');

  const all = readFileSync(join(dir, 'logs', 'api.log'), 'utf8') + readFileSync(join(dir, 'logs', 'worker.log'), 'utf8') + child.lines.join('\n');
  for (const value of [key, secret, upstreamKey]) assert.ok(!all.includes(value), 'a secret reached the logs');
});

test('LOG_FORMAT=text writes readable lines instead of JSON', async (t) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const { child } = await startApiProcess(t, testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, LOG_FORMAT: 'json' }), dir);
  assert.doesNotThrow(() => JSON.parse(child.lines[0]!));
  const { API_MAIN } = await import('../helpers/index.ts');
  const human = spawnNode(API_MAIN, [], testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, LOG_FORMAT: 'text' }), dir);
  t.after(() => human.kill('SIGKILL'));
  const line = await human.waitFor((l) => l.includes('proxy-api listening'));
  assert.match(line, /^\d\d:\d\d:\d\d\.\d{3} info {2}proxy-api listening \{/);
});
