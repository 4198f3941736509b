import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { signBody } from '../../packages/core/src/signing.ts';
import {
  WORKER_MAIN,
  freshStamp,
  getJson,
  newCredentials,
  openTestStore,
  postSigned,
  spawnNode,
  startApiProcess,
  tempDir,
  testEnv,
  within,
  type TestHooks,
} from '../helpers/index.ts';

type T = TestHooks & { diagnostic: (m: string) => void };

function clientsFile(dir: string, clients: unknown[]): string {
  const path = join(dir, 'clients.json');
  writeFileSync(path, JSON.stringify(clients));
  return path;
}

test('clients file: each client sees only its own jobs; a secret removed and reloaded with SIGHUP stops working; a bad file on reload is refused', async (t: T) => {
  const dir = tempDir(t);
  const alice = { ...newCredentials(), old: newCredentials().secret };
  const bob = newCredentials();
  const file = clientsFile(dir, [
    { name: 'alice', key: alice.key, secrets: [alice.old, alice.secret] },
    { name: 'bob', key: bob.key, secret: bob.secret, rate_limit: 'off' },
  ]);
  const { url, child } = await startApiProcess(t, testEnv(dir, { PROXY_CLIENTS_FILE: file }), dir);

  const byOld = await postSigned(url, alice.key, alice.old, { prompt: 'signed with the old secret' });
  assert.equal(byOld.status, 202, 'both secrets are active during a rotation');
  const byNew = await postSigned(url, alice.key, alice.secret, { prompt: 'signed with the new secret' });
  assert.equal(byNew.status, 202);
  const bobsView = await getJson(url, `/v1/requests/${byNew.json.id}`, bob.key);
  assert.deepEqual([bobsView.status, bobsView.json.error.code], [404, 'not_found'], "another client's job looks unknown");
  assert.deepEqual((await getJson(url, '/v1/requests/req_AAAAAAAAAAAAAAAAAAAAAA', bob.key)).json, bobsView.json);
  assert.equal((await postSigned(url, bob.key, alice.secret, { prompt: 'bob with alice secret' })).status, 401);

  // Rotation done: the old secret is removed and the file reloaded.
  clientsFile(dir, [
    { name: 'alice', key: alice.key, secret: alice.secret },
    { name: 'bob', key: bob.key, secret: bob.secret },
  ]);
  child.proc.kill('SIGHUP');
  await child.waitFor((l) => l.includes('clients reloaded'));
  const stale = await postSigned(url, alice.key, alice.old, { prompt: 'old secret after reload' });
  assert.deepEqual([stale.status, stale.json.error.code], [401, 'invalid_signature']);
  assert.equal((await postSigned(url, alice.key, alice.secret, { prompt: 'new secret after reload' })).status, 202);

  writeFileSync(file, '[{"name":"alice","key":"short","secret":"x"}]');
  child.proc.kill('SIGHUP');
  const refused = await child.waitFor((l) => l.includes('clients file refused'));
  assert.ok(!refused.includes(alice.secret) && !refused.includes('"x"'));
  assert.equal((await postSigned(url, bob.key, bob.secret, { prompt: 'still here' })).status, 202, 'the old clients stay');
});

test('a reload that waits on its file (a named pipe fed by a secrets agent) holds up no request; the clients come once it is written; a stop does not wait for it', async (t: T) => {
  const dir = tempDir(t);
  const alice = newCredentials();
  const bob = newCredentials();
  const file = clientsFile(dir, [{ name: 'alice', key: alice.key, secret: alice.secret }]);
  const { url, child } = await startApiProcess(t, testEnv(dir, { PROXY_CLIENTS_FILE: file }), dir);
  const created = await postSigned(url, alice.key, alice.secret, { prompt: 'before the reload' });
  assert.equal(created.status, 202);

  // The file becomes a pipe no program writes yet; read on the event loop, the reload held every
  // request until a writer came.
  unlinkSync(file);
  execFileSync('mkfifo', [file]);
  child.proc.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 300));
  const during = await within(getJson(url, `/v1/requests/${created.json.id}`, alice.key), 3000, 'a lookup while the reload waits');
  assert.equal(during.status, 200);
  assert.equal((await postSigned(url, bob.key, bob.secret, { prompt: 'not yet' })).status, 401);

  // The agent writes the new list: the reload ends with it.
  const writer = spawn('sh', ['-c', `cat > '${file}'`], { stdio: ['pipe', 'ignore', 'ignore'] });
  writer.stdin.end(
    JSON.stringify([
      { name: 'alice', key: alice.key, secret: alice.secret },
      { name: 'bob', key: bob.key, secret: bob.secret },
    ]),
  );
  await child.waitFor((l) => l.includes('clients reloaded'));
  assert.equal((await postSigned(url, bob.key, bob.secret, { prompt: 'after the reload' })).status, 202);

  // Waiting on the pipe again, the API still stops at the first SIGTERM.
  child.proc.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 300));
  child.proc.kill('SIGTERM');
  const { code } = await within(child.exited, 10_000, 'the stop');
  assert.equal(code, 0);
});

test('a bad clients file stops the start with one line; secrets under 32 characters are refused', async (t: T) => {
  const dir = tempDir(t);
  const { API_MAIN } = await import('../helpers/index.ts');
  const cases: Array<[unknown, RegExp]> = [
    [[{ name: 'a', key: 'k'.repeat(20), secret: 'too-short-secret' }], /PROXY_CLIENTS_FILE: 0\.secret must be 32 to 512/],
    [[{ name: 'a', key: 'k'.repeat(20) }], /PROXY_CLIENTS_FILE: 0 needs secret or secrets/],
    [
      [
        { name: 'a', key: 'k'.repeat(20), secret: 's'.repeat(40) },
        { name: 'a', key: 'j'.repeat(20), secret: 's'.repeat(40) },
      ],
      /name "a" is used twice/,
    ],
    [{ not: 'a list' }, /must be array/],
  ];
  for (const [content, message] of cases) {
    const file = clientsFile(dir, content as unknown[]);
    const api = spawnNode(API_MAIN, [], testEnv(dir, { PROXY_CLIENTS_FILE: file }), dir);
    assert.equal((await api.exited).code, 78);
    assert.equal(api.stderr.filter(Boolean).length, 1);
    assert.match(api.stderr[0]!, message);
    assert.ok(!api.stderr[0]!.includes('s'.repeat(40)) && !api.stderr[0]!.includes('too-short-secret'));
  }
});

test('a replayed request returns the same job and the upstream is called once', async (t: T) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-replay', OPENAI_BASE_URL: stub.url });
  const { url } = await startApiProcess(t, env, dir);
  const body = signBody({ prompt: 'exactly once', ...freshStamp() }, secret);
  const send = () => fetch(`${url}/v1/requests`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-proxy-key': key }, body });
  const first = await send();
  assert.equal(first.status, 202);
  const { id } = (await first.json()) as { id: string };
  assert.equal((await spawnNode(WORKER_MAIN, ['once'], env, dir).exited).code, 0);
  const replay = await send();
  assert.equal(replay.status, 200);
  const replayed = (await replay.json()) as { id: string; status: string };
  assert.deepEqual([replayed.id, replayed.status], [id, 'completed']);
  assert.equal((await spawnNode(WORKER_MAIN, ['once'], env, dir).exited).code, 0);
  assert.equal(stub.calls.length, 1);
});

test('rate limit across two API processes sharing one file: accepted creates stay within the budget', async (t: T) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, RATE_LIMIT_PER_IP: '20/min', RATE_LIMIT_PER_KEY: 'off' });
  const apis = [await startApiProcess(t, env, dir), await startApiProcess(t, env, dir)];
  const started = Date.now();
  const results = await Promise.all(Array.from({ length: 60 }, (_, i) => postSigned(apis[i % 2]!.url, key, secret, { prompt: `burst ${i}` })));
  const elapsed = Date.now() - started;
  const accepted = results.filter((r) => r.status === 202).length;
  const refused = results.filter((r) => r.status === 429);
  // 20 at once, then one more every 3 s while the burst lasts.
  const allowed = 20 + Math.floor(elapsed / 3000);
  assert.ok(accepted >= 20 && accepted <= allowed, `${accepted} accepted, budget ${allowed}`);
  assert.equal(accepted + refused.length, 60);
  const sample = refused[0]!;
  assert.equal(sample.json.error.code, 'rate_limited');
  assert.ok(Number(sample.headers.get('retry-after')) >= 1);
  assert.match(sample.headers.get('ratelimit-policy') ?? '', /^"ip";q=20;w=60$/);
  assert.match(sample.headers.get('ratelimit') ?? '', /^"ip";r=0;t=\d+$/);
  const store = await openTestStore(env);
  const stored = (await store.countByStatus()).queued;
  await store.close();
  assert.equal(stored, accepted, 'refused requests stored nothing');
  t.diagnostic(`two APIs, 60 creates in ${elapsed} ms against 20/min: ${accepted} accepted, ${refused.length} refused`);
});

test('no key or secret ever reaches a response or a log line, whatever the client sends', async (t: T) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const upstreamKey = 'sk-upstream-secret-abcdefghijklmnop';
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: upstreamKey, OPENAI_BASE_URL: stub.url, LOG_LEVEL: 'debug' });
  const { url, child } = await startApiProcess(t, env, dir);
  const bodies: string[] = [];
  const keep = async (p: Promise<Response>) => bodies.push(await (await p).text());
  const created = await fetch(`${url}/v1/requests`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-proxy-key': key },
    body: signBody({ prompt: 'hello', ...freshStamp() }, secret),
  });
  const { id } = (await created.json()) as { id: string };
  await keep(fetch(`${url}/v1/requests`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-proxy-key': key }, body: `{"prompt":"${secret}",` }));
  await keep(fetch(`${url}/v1/requests`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-proxy-key': `${key}0` }, body: '{}' }));
  stub.behave(() => ({ status: 401, body: { error: { message: `Incorrect API key provided: ${upstreamKey}`, code: 'invalid_api_key' } } }));
  await keep(fetch(`${url}/v1/worker/run`, { method: 'POST', headers: { 'x-proxy-key': key } }));
  const worker = spawnNode(WORKER_MAIN, ['once'], env, dir);
  await worker.exited;
  const job = await getJson(url, `/v1/requests/${id}`, key);
  assert.equal(job.json.status, 'failed');
  assert.match(job.json.error.message, /Incorrect API key provided: \[redacted\]/);
  bodies.push(JSON.stringify(job.json));
  child.kill('SIGTERM');
  await child.exited;
  const everything = [...bodies, ...child.lines, ...child.stderr, ...worker.lines, ...worker.stderr].join('\n');
  assert.ok(child.lines.length > 5 && worker.lines.length > 0, 'there were logs to read');
  for (const [name, value] of Object.entries({ key, secret, upstreamKey })) assert.ok(!everything.includes(value), `${name} leaked`);
});
