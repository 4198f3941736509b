import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { test } from 'node:test';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { createSilentLogger, signBody, signBodyText, type JobStore } from '@proxy/core';
import { createTestWorker, eventually, freshStamp, getJson, newTestJob, overriding, postSigned } from '../../../test/helpers/index.ts';
import { createUpstreamClient } from '../../../packages/core/src/runner/upstream-client.ts';
import { createJobWatcher, type JobWatcher } from '../src/job-watcher.ts';
import { startTestApi } from './helpers.ts';

async function post(url: string, body: string | Buffer, headers: Record<string, string>) {
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text), text, headers: res.headers };
}

test('create answers 202 with an id at once; the job is stored queued and readable by its owner', async (t) => {
  const api = await startTestApi(t);
  const res = await postSigned(api.url, api.key, api.secret, { prompt: 'hello', options: { temperature: 0.2 } });
  assert.equal(res.status, 202);
  assert.match(res.json.id, /^req_[A-Za-z0-9_-]{22}$/);
  assert.equal(res.json.status, 'queued');
  assert.equal(res.json.model, 'gpt-4o-mini');
  assert.equal(res.json.attempts, 0);
  assert.equal(typeof res.json.created_at, 'number');
  assert.equal(res.headers.get('location'), `/v1/requests/${res.json.id}`);
  assert.ok(res.headers.get('x-request-id'));

  const stored = await api.store.getJob(res.json.id);
  assert.deepEqual(stored?.request, { temperature: 0.2, model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }] });
  const read = await getJson(api.url, `/v1/requests/${res.json.id}`, api.key);
  assert.equal(read.status, 200);
  assert.equal(read.json.id, res.json.id);
  assert.equal(read.json.status, 'queued');
  // Answers are written without res.json: the headers it set must still be there. None may be
  // kept by a cache on the way: a job read again through one would stay queued.
  const unknown = await getJson(api.url, '/v1/requests/req_unknown', api.key);
  for (const answer of [res, read, unknown]) {
    assert.equal(answer.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(answer.headers.get('content-length'), String(Buffer.byteLength(JSON.stringify(answer.json))));
    assert.equal(answer.headers.get('cache-control'), 'no-store');
  }
  const head = await fetch(`${api.url}/v1/requests/${res.json.id}`, { method: 'HEAD', headers: { 'x-proxy-key': api.key } });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(JSON.stringify(read.json))));
  assert.equal(await head.text(), '');
});

/** An answer's status and how many times each header came, by lowercased name (fetch would join repeats). */
function rawHead(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; count: Map<string, number>; get: (name: string) => string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers: init.headers ?? {} }, (res) => {
      const count = new Map<string, number>();
      const values = new Map<string, string>();
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        const name = (res.rawHeaders[i] as string).toLowerCase();
        count.set(name, (count.get(name) ?? 0) + 1);
        values.set(name, res.rawHeaders[i + 1] as string);
      }
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode as number, count, get: (name) => values.get(name) }));
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

test('every answer carries its X-Request-Id and RateLimit headers once, whether sent as JSON or otherwise (metrics, the dashboard, a redirect), with its own', async (t) => {
  const api = await startTestApi(t, { env: { RATE_LIMIT_PER_IP: 'off', RATE_LIMIT_PER_KEY: '1/min', RATE_LIMIT_READS_PER_IP: '100/min', METRICS_ALLOW: '127.0.0.1' } });
  const signed = (prompt: string) => signBody({ prompt, ts: Math.floor(Date.now() / 1000), nonce: randomUUID() }, api.secret);
  const create = { method: 'POST', headers: { 'content-type': 'application/json', 'x-proxy-key': api.key, 'x-request-id': 'req-check-1' }, body: signed('a') };
  const created = await rawHead(`${api.url}/v1/requests`, create);
  const id = (created.get('location') ?? '').split('/').pop() as string;
  const answers = {
    created,
    limited: await rawHead(`${api.url}/v1/requests`, { ...create, body: signed('b') }),
    read: await rawHead(`${api.url}/v1/requests/${id}`, { headers: { 'x-proxy-key': api.key } }),
    unknown: await rawHead(`${api.url}/v1/requests/req_unknown`, { headers: { 'x-proxy-key': api.key } }),
    refusedMethod: await rawHead(`${api.url}/v1/requests/${id}`, { method: 'PUT', headers: { 'x-proxy-key': api.key } }),
    metrics: await rawHead(`${api.url}/metrics`),
    redirect: await rawHead(`${api.url}/dashboard`),
    page: await rawHead(`${api.url}/dashboard/`),
  };
  assert.deepEqual(Object.fromEntries(Object.entries(answers).map(([name, a]) => [name, a.status])), {
    created: 202,
    limited: 429,
    read: 200,
    unknown: 404,
    refusedMethod: 405,
    metrics: 200,
    redirect: 301,
    page: 200,
  });
  for (const [name, answer] of Object.entries(answers)) {
    const repeated = [...answer.count].filter(([, n]) => n > 1).map(([header]) => header);
    assert.deepEqual(repeated, [], `${name}: headers sent more than once`);
    assert.match(answer.get('x-request-id') ?? '', /^[0-9a-f-]{36}$|^req-check-1$/, `${name}: X-Request-Id`);
  }
  assert.equal(created.get('x-request-id'), 'req-check-1');
  assert.equal(created.get('location'), `/v1/requests/${id}`);
  for (const answer of [created, answers.limited]) {
    assert.equal(answer.get('ratelimit-policy'), '"key";q=1;w=60');
    assert.match(answer.get('ratelimit') ?? '', /^"key";r=0;t=\d+$/);
  }
  assert.match(answers.limited.get('retry-after') ?? '', /^\d+$/);
  assert.equal(answers.read.get('ratelimit-policy'), '"ip";q=100;w=60');
  assert.equal(answers.refusedMethod.get('allow'), 'GET, DELETE');
  assert.equal(answers.redirect.get('location'), 'dashboard/');
  assert.match(answers.metrics.get('content-type') ?? '', /^text\/plain/);
  assert.match(answers.page.get('content-type') ?? '', /^text\/html/);
  assert.equal(answers.page.get('cache-control'), 'no-cache');
});

test('messages, system and model are passed through; ttl sets the deadline', async (t) => {
  const api = await startTestApi(t);
  const res = await postSigned(api.url, api.key, api.secret, {
    messages: [
      { role: 'user', content: 'a' },
      { role: 'assistant', content: 'b' },
      { role: 'user', content: 'c' },
    ],
    system: 'be brief',
    model: 'gpt-4.1',
    ttl: 60,
  });
  assert.equal(res.status, 202);
  const stored = await api.store.getJob(res.json.id);
  assert.equal(stored?.model, 'gpt-4.1');
  assert.equal(stored?.request.messages.length, 4);
  assert.deepEqual(stored?.request.messages[0], { role: 'system', content: 'be brief' });
  assert.ok(Math.abs(res.json.expires_at - res.json.created_at - 60) <= 1);
});

test('signature: tampered body, wrong secret, missing sign, bad sign length → 401 invalid_signature; nothing stored', async (t) => {
  const api = await startTestApi(t);
  const headers = { 'content-type': 'application/json', 'x-proxy-key': api.key };
  const good = signBody({ prompt: 'pay 10', ...freshStamp() }, api.secret);
  const cases = {
    tampered: good.replace('pay 10', 'pay 99'),
    wrongSecret: signBody({ prompt: 'x', ...freshStamp() }, 'W'.repeat(40)),
    missingSign: JSON.stringify({ prompt: 'x', ...freshStamp() }),
    shortSign: JSON.stringify({ prompt: 'x', ...freshStamp(), sign: 'abc123' }),
    longSign: JSON.stringify({ prompt: 'x', ...freshStamp(), sign: 'a'.repeat(200) }),
    signNotLast: (() => {
      const body = { prompt: 'x', ...freshStamp() };
      const signed = JSON.parse(signBody(body, api.secret));
      return JSON.stringify({ sign: signed.sign, ...body });
    })(),
    otherBodysSign: (() => {
      const a = JSON.parse(signBody({ prompt: 'a', ...freshStamp() }, api.secret));
      return signBodyText(JSON.stringify({ prompt: 'b', ...freshStamp() }), 'irrelevant-secret-that-is-long-enough!!').replace(/"sign":"[0-9a-f]{64}"/, `"sign":"${a.sign}"`);
    })(),
  };
  for (const [name, body] of Object.entries(cases)) {
    const res = await post(`${api.url}/v1/requests`, body, headers);
    assert.equal(res.status, 401, name);
    assert.equal(res.json.error.code, 'invalid_signature', name);
  }
  // A text signed, then saved with a byte-order mark (a Windows editor, Set-Content -Encoding UTF8)
  // and sent from the file: the mark is named, where only a mismatch was said.
  const marked = await post(
    `${api.url}/v1/requests`,
    Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(signBody({ prompt: 'saved', ...freshStamp() }, api.secret))]),
    headers,
  );
  assert.deepEqual(
    [marked.status, marked.json.error.code, marked.json.error.message],
    [
      401,
      'invalid_signature',
      'the signature does not match the body, which begins with a UTF-8 byte-order mark (EF BB BF) that the signature covers: send the signed text without it',
    ],
  );
  assert.equal((await api.store.countByStatus()).queued, 0);
  assert.equal((await post(`${api.url}/v1/requests`, good, headers)).status, 202);
});

test('ts more than 300 s away from the server clock, either way → 401 stale_request', async (t) => {
  const api = await startTestApi(t);
  const now = Date.now();
  // Whole seconds against a fractional clock: stay clear of the 300 s edge by a few seconds.
  for (const offset of [-305, 305]) {
    const res = await postSigned(api.url, api.key, api.secret, { prompt: 'x', ts: Math.floor(now / 1000) + offset });
    assert.equal(res.status, 401);
    assert.equal(res.json.error.code, 'stale_request');
  }
  const ok = await postSigned(api.url, api.key, api.secret, { prompt: 'x', ts: Math.floor(now / 1000) - 250 });
  assert.equal(ok.status, 202);
});

test('key: missing or unknown → 401 unauthorized, on every route but health', async (t) => {
  const api = await startTestApi(t);
  const body = signBody({ prompt: 'x', ...freshStamp() }, api.secret);
  const variants: Array<Record<string, string>> = [{ 'content-type': 'application/json' }, { 'content-type': 'application/json', 'x-proxy-key': 'nope-nope-nope-nope' }];
  for (const headers of variants) {
    const res = await post(`${api.url}/v1/requests`, body, headers);
    assert.equal(res.status, 401);
    assert.equal(res.json.error.code, 'unauthorized');
  }
  assert.equal((await getJson(api.url, '/v1/requests/req_AAAAAAAAAAAAAAAAAAAAAA')).status, 401);
  assert.equal((await fetch(`${api.url}/v1/worker/run`, { method: 'POST' })).status, 401);
  assert.equal((await getJson(api.url, '/health')).status, 200);
});

test('bad input: invalid JSON 400, invalid UTF-8 400, wrong content type 415, oversize 413, schema errors name the field', async (t) => {
  const api = await startTestApi(t, { env: { BODY_LIMIT: '2kb' } });
  const headers = { 'content-type': 'application/json', 'x-proxy-key': api.key };
  const badJson = await post(`${api.url}/v1/requests`, '{"prompt": "x",', headers);
  assert.deepEqual([badJson.status, badJson.json.error.code], [400, 'invalid_json']);
  const badUtf8 = await post(`${api.url}/v1/requests`, Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]), headers);
  assert.deepEqual([badUtf8.status, badUtf8.json.error.code], [400, 'invalid_json']);
  const form = await post(`${api.url}/v1/requests`, 'prompt=x', { ...headers, 'content-type': 'application/x-www-form-urlencoded' });
  assert.deepEqual([form.status, form.json.error.code], [415, 'unsupported_media_type']);
  const big = await post(`${api.url}/v1/requests`, signBody({ prompt: 'x'.repeat(5000), ...freshStamp() }, api.secret), headers);
  assert.deepEqual([big.status, big.json.error.code, big.json.error.message], [413, 'payload_too_large', 'the request body is over the 2 KB the server accepts']);
  const array = await post(`${api.url}/v1/requests`, '[1,2]', headers);
  assert.deepEqual([array.status, array.json.error.code], [400, 'invalid_request']);
  const deep = await post(`${api.url}/v1/requests`, `${'['.repeat(500)}${']'.repeat(500)}`.replace(/^\[/, '{"a":[').replace(/\]$/, ']}'), headers);
  assert.equal(deep.status, 400);

  const checks: Array<[Record<string, unknown>, RegExp]> = [
    [{ prompt: 'x', options: { stream: true } }, /options\.stream is not allowed/],
    [{ prompt: 'x', options: { temperature: 9 } }, /options\.temperature/],
    [{ prompt: 'x', colour: 'red' }, /colour is not a known field/],
    [{}, /exactly one of prompt or messages/],
    [{ prompt: 'x', messages: [{ role: 'user', content: 'y' }] }, /exactly one of prompt or messages/],
    [{ prompt: 'x', nonce: 'short' }, /nonce must be 8 to 128/],
    [{ prompt: 'x', ttl: 0 }, /ttl/],
    [{ prompt: 'x', model: 'bad model!' }, /model must be/],
    [{ messages: [{ role: 'wizard', content: 'y' }] }, /^messages\.0\.role must be one of system, developer, user, assistant, tool$/],
    [{ messages: [{ role: 'user', content: 'y' }, { content: 'z' }] }, /^messages\.1\.role is required$/],
    [{ messages: [{ role: 'user', content: 5 }] }, /^messages\.0\.content must be string, array or null$/],
    [{ messages: [{ role: 'user', content: [5] }] }, /^messages\.0\.content\.0 must be object$/],
    [{ prompt: 'x', options: { stop: ['a', 'b', 'c', 'd', 'e'] } }, /^options\.stop must have at most 4 items$/],
    [{ prompt: 'x', options: { stop: 7 } }, /^options\.stop must be string or array$/],
  ];
  for (const [body, message] of checks) {
    const res = await postSigned(api.url, api.key, api.secret, body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.json.error.code, 'invalid_request');
    assert.match(res.json.error.message, message);
  }
  const noTs = await post(`${api.url}/v1/requests`, signBody({ prompt: 'x', nonce: 'abcdefgh12' }, api.secret), headers);
  assert.deepEqual([noTs.status, noTs.json.error.message], [400, 'ts is required']);
  assert.equal((await api.store.countByStatus()).queued, 0, 'no bad request stored anything');
});

test('errors never carry a stack trace or SQL', async (t) => {
  const api = await startTestApi(t);
  const res = await post(`${api.url}/v1/requests`, '{"prompt":', { 'content-type': 'application/json', 'x-proxy-key': api.key });
  assert.doesNotMatch(res.text, /at \w+ \(|node_modules|SELECT|sqlite/i);
  assert.deepEqual(Object.keys(res.json), ['error']);
  assert.deepEqual(Object.keys(res.json.error).sort(), ['code', 'message']);
});

test('prompt and message contents: up to 1,000,000 characters, counted as UTF-16 code units (an emoji is two); one more is 400 naming the field', async (t) => {
  const api = await startTestApi(t, { env: { BODY_LIMIT: '5mb' } });
  const emoji = '\u{1F600}';
  const cases: Array<[Record<string, unknown>, number]> = [
    [{ prompt: 'x'.repeat(1_000_000) }, 202],
    [{ prompt: 'x'.repeat(1_000_001) }, 400],
    [{ prompt: emoji.repeat(500_000) }, 202],
    [{ prompt: `${emoji.repeat(500_000)}x` }, 400],
    [{ messages: [{ role: 'user', content: 'y'.repeat(1_000_001) }] }, 400],
  ];
  for (const [body, status] of cases) {
    const res = await postSigned(api.url, api.key, api.secret, body);
    assert.equal(res.status, status, JSON.stringify(body).slice(0, 60));
    if (status === 400) assert.match(res.json.error.message, /prompt|messages\.0\.content/);
  }
});

test('idempotency: same nonce and request → the same job (200); same nonce, other request → 409', async (t) => {
  const api = await startTestApi(t);
  const stamp = freshStamp();
  const first = await postSigned(api.url, api.key, api.secret, { prompt: 'once', ...stamp });
  assert.equal(first.status, 202);
  const again = await postSigned(api.url, api.key, api.secret, { prompt: 'once', ...stamp, ts: stamp.ts + 5 });
  assert.equal(again.status, 200);
  assert.equal(again.json.id, first.json.id);
  const other = await postSigned(api.url, api.key, api.secret, { prompt: 'different', ...stamp });
  assert.deepEqual([other.status, other.json.error.code], [409, 'nonce_reused']);
  assert.equal((await api.store.countByStatus()).queued, 1);
  // The hash is of JSON.stringify([request, ttl]), as for jobs stored by earlier releases: a create
  // sent again across an upgrade still finds its job.
  const long = await postSigned(api.url, api.key, api.secret, { prompt: `é "q" \\ ${'x'.repeat(20_000)}`, ttl: 90, options: { temperature: 0.5 } });
  const stored = await api.store.getJob(long.json.id);
  assert.equal(
    stored?.requestHash,
    createHash('sha256')
      .update(JSON.stringify([stored?.request, 90]))
      .digest('hex'),
  );
});

test('a signed body sent again within its ts window gets its job back, even after a worker with the shortest retention (60 s) swept the store a minute after the job finished', async (t) => {
  const api = await startTestApi(t);
  const body = signBody({ prompt: 'answered at once', ...freshStamp() }, api.secret);
  const send = () => post(`${api.url}/v1/requests`, body, { 'content-type': 'application/json', 'x-proxy-key': api.key });
  const first = await send();
  assert.equal(first.status, 202);
  const [claimed] = await api.store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
  await api.store.completeJob(first.json.id, claimed!.leaseToken, { outputText: 'the answer', usage: { total_tokens: 3 }, response: { id: 'chatcmpl-1' } });
  // Never called: no job is due when the sweeper runs.
  const upstream = createUpstreamClient({ baseUrl: 'http://127.0.0.1:9/v1', apiKey: 'sk-unused', connections: 1 });
  t.after(() => upstream.close());
  await createTestWorker({ store: api.store, upstream, retentionMs: 60_000, now: () => api.store.now() + 61_000 }).runOnce();
  const again = await send();
  assert.deepEqual([again.status, again.json.id, again.json.status], [200, first.json.id, 'completed']);
  assert.equal((await api.store.countByStatus()).queued, 0, 'no second job');
});

test('ids that are not ours — unknown, malformed, SQL- or path-looking — are 404 not_found', async (t) => {
  const api = await startTestApi(t);
  for (const id of ['req_AAAAAAAAAAAAAAAAAAAAAA', "1' OR '1'='1", '..%2F..%2Fetc%2Fpasswd', 'x'.repeat(300)]) {
    const res = await getJson(api.url, `/v1/requests/${encodeURIComponent(id)}`, api.key);
    assert.equal(res.status, 404, id);
    assert.equal(res.json.error.code, 'not_found');
  }
});

test('a path that is not valid percent-encoding is 400 invalid_request, not a 500', async (t) => {
  const api = await startTestApi(t);
  for (const [method, path] of [
    ['GET', '/v1/requests/%'],
    ['GET', '/v1/requests/%ZZ'],
    ['DELETE', '/v1/requests/%E0%A4%A'],
  ]) {
    const res = await fetch(`${api.url}${path}`, { method, headers: { 'x-proxy-key': api.key } });
    const json = (await res.json()) as any;
    assert.deepEqual([res.status, json.error.code], [400, 'invalid_request'], `${method} ${path}`);
    assert.equal(json.error.message, 'the path is not valid percent-encoding');
  }
});

test('compressed bodies: gzip is read and its plain bytes are what is signed; one that does not decompress is 400, an unknown encoding 415', async (t) => {
  const api = await startTestApi(t, { env: { BODY_LIMIT: '2kb' } });
  const headers = { 'content-type': 'application/json', 'x-proxy-key': api.key };
  const body = signBody({ prompt: 'compressed', ...freshStamp() }, api.secret);
  const gzipped = await post(`${api.url}/v1/requests`, gzipSync(body), { ...headers, 'content-encoding': 'gzip' });
  assert.equal(gzipped.status, 202);
  assert.deepEqual((await api.store.getJob(gzipped.json.id))?.request.messages, [{ role: 'user', content: 'compressed' }]);
  for (const encoding of ['gzip', 'deflate', 'br']) {
    const res = await post(`${api.url}/v1/requests`, signBody({ prompt: 'x', ...freshStamp() }, api.secret), { ...headers, 'content-encoding': encoding });
    assert.deepEqual(
      [res.status, res.json.error.code, res.json.error.message],
      [400, 'invalid_request', `the body does not decompress as its Content-Encoding (${encoding}) says`],
      encoding,
    );
  }
  const unknown = await post(`${api.url}/v1/requests`, body, { ...headers, 'content-encoding': 'zz' });
  assert.deepEqual([unknown.status, unknown.json.error.code], [415, 'unsupported_media_type']);
  assert.equal(unknown.json.error.message, 'this Content-Encoding is not read here; send the body as it is, or in gzip, deflate, br');
  assert.equal(unknown.headers.get('accept-encoding'), 'gzip, deflate, br');
  // The limit counts the bytes after decompression: a small gzip of a large body is refused.
  const bomb = await post(`${api.url}/v1/requests`, gzipSync(signBody({ prompt: 'x'.repeat(100_000), ...freshStamp() }, api.secret)), { ...headers, 'content-encoding': 'gzip' });
  assert.deepEqual(
    [bomb.status, bomb.json.error.code, bomb.json.error.message],
    [413, 'payload_too_large', 'the request body is over the 2 KB the server accepts (counted decompressed)'],
  );
  assert.equal((await api.store.countByStatus()).queued, 1, 'only the good body was stored');
});

test('bodies arrive in pieces: with a Content-Length or chunked, read whole; a client gone mid-body stores nothing and the API goes on', async (t) => {
  const api = await startTestApi(t);
  const { port } = new URL(api.url);
  // A raw socket, so the body can be sent in pieces with pauses, without a length, or cut short.
  // The socket stays open until the server closes it (Connection: close): Node's server drops a
  // request whose client half-closes before the answer.
  const send = (head: string, pieces: Array<string | Buffer>, finish = true) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1');
      let answer = '';
      socket.on('data', (d) => {
        answer += d.toString('utf8');
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(answer));
      const writePieces = async () => {
        socket.write(head);
        for (const piece of pieces) {
          await new Promise((r) => setTimeout(r, 20));
          socket.write(piece);
        }
        if (!finish) socket.destroy();
      };
      socket.on('connect', () => void writePieces().catch(reject));
    });
  const head = (extra: string) => `POST /v1/requests HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nX-Proxy-Key: ${api.key}\r\n${extra}\r\n`;
  const created = (answer: string) => {
    assert.match(answer, /^HTTP\/1\.1 202 /, answer);
    return JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).id as string;
  };

  const body = Buffer.from(signBody({ prompt: 'in three pieces, one of them splitting a character: \u00e9t\u00e9', ...freshStamp() }, api.secret));
  const cut = body.indexOf(0xc3) + 1; // inside the two bytes of an é
  const pieces = created(await send(head(`Content-Length: ${body.length}\r\n`), [body.subarray(0, 10), body.subarray(10, cut), body.subarray(cut)]));
  assert.deepEqual((await api.store.getJob(pieces))?.request.messages, [{ role: 'user', content: 'in three pieces, one of them splitting a character: \u00e9t\u00e9' }]);

  const chunkedBody = signBody({ prompt: 'chunked', ...freshStamp() }, api.secret);
  const chunk = (text: string) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
  const chunked = created(await send(head('Transfer-Encoding: chunked\r\n'), [chunk(chunkedBody.slice(0, 7)), chunk(chunkedBody.slice(7)), '0\r\n\r\n']));
  assert.deepEqual((await api.store.getJob(chunked))?.request.messages, [{ role: 'user', content: 'chunked' }]);

  const cutShort = Buffer.from(signBody({ prompt: 'never finished', ...freshStamp() }, api.secret));
  assert.equal(await send(head(`Content-Length: ${cutShort.length}\r\n`), [cutShort.subarray(0, 20)], false), '', 'nothing is answered to a client that left');
  await new Promise((r) => setTimeout(r, 50));
  const counts = await api.store.countByStatus();
  assert.equal(counts.queued, 2, 'the cut-short body stored nothing');
  const after = await postSigned(api.url, api.key, api.secret, { prompt: 'still here' });
  assert.equal(after.status, 202);
});

test('Expect: 100-continue: the 100 goes out only when the body is to be read, so a create refused on its headers (unknown key, body over BODY_LIMIT, not JSON) is refused before its body is sent', async (t) => {
  const api = await startTestApi(t, { env: { BODY_LIMIT: '2kb' }, served: 'proxy-api' });
  const { port } = new URL(api.url);
  // As curl (for a large body) and Windows PowerShell (for every POST) send a create: the
  // headers, then the body only once the server says 100 Continue. The answer is read until the
  // server closes the connection (Connection: close, or Node's own close after a refusal).
  const exchange = (path: string, headers: string, body: string) =>
    new Promise<{ continued: boolean; answer: string }>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1');
      let received = '';
      let continued = false;
      socket.on('data', (d) => {
        received += d.toString('utf8');
        if (!continued && received.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
          continued = true;
          received = received.slice('HTTP/1.1 100 Continue\r\n\r\n'.length);
          socket.write(body);
        }
      });
      socket.on('error', reject);
      socket.on('close', () => resolve({ continued, answer: received }));
      socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${headers}Content-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`);
    });
  const status = (answer: string) => Number(answer.slice(9, 12));
  const code = (answer: string) => JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).error.code as string;
  const json = 'Content-Type: application/json\r\n';
  const ours = `X-Proxy-Key: ${api.key}\r\n`;

  const good = await exchange('/v1/requests', json + ours, signBody({ prompt: 'after a 100 Continue', ...freshStamp() }, api.secret));
  assert.deepEqual([good.continued, status(good.answer)], [true, 202], good.answer);
  const legacy = await exchange('/index.php?action=request', json + ours, signBody({ prompt: 'the old URL', ...freshStamp() }, api.secret));
  assert.deepEqual([legacy.continued, status(legacy.answer)], [true, 202], legacy.answer);

  const unsent = signBody({ prompt: 'never sent', ...freshStamp() }, api.secret);
  for (const [what, path, headers, body, answered] of [
    ['an unknown key', '/v1/requests', `${json}X-Proxy-Key: pk_not_a_client_0123456789\r\n`, unsent, [401, 'unauthorized']],
    ['no JSON type', '/v1/requests', `Content-Type: text/plain\r\n${ours}`, unsent, [415, 'unsupported_media_type']],
    ['over BODY_LIMIT', '/v1/requests', json + ours, 'x'.repeat(3000), [413, 'payload_too_large']],
    ['over BODY_LIMIT, the old URL', '/index.php?action=request', json + ours, 'x'.repeat(3000), [413, 'payload_too_large']],
  ] as const) {
    const refused = await exchange(path, headers, body);
    assert.equal(refused.continued, false, `${what}: refused without a 100 Continue (${refused.answer.slice(0, 40)})`);
    assert.deepEqual([status(refused.answer), code(refused.answer)], answered, what);
  }
  assert.equal((await api.store.countByStatus()).queued, 2, 'only the two sent whole were stored');
});

test('a long-poll whose client hangs up holds no waiter: not when it leaves mid-wait, nor while its job is first read', async (t) => {
  // The first read of the job is held until released, so the client can leave while it runs.
  let holdNextRead = false;
  let reading = () => {};
  let release = () => {};
  let watcher: JobWatcher | undefined;
  const api = await startTestApi(t, {
    wrapStore: (store) =>
      overriding(store, {
        getJobOutcome: async (id: string) => {
          if (holdNextRead) {
            holdNextRead = false;
            const released = new Promise<void>((r) => (release = r));
            reading();
            await released;
          }
          return store.getJobOutcome(id);
        },
      }),
    watcher: (store) => (watcher = createJobWatcher({ store, logger: createSilentLogger(), pollMs: 15 })),
  });
  const waiters = () => (watcher as JobWatcher).waiting;
  const { json: job } = await postSigned(api.url, api.key, api.secret, { prompt: 'nobody waits for me' });
  const ask = () => {
    const leave = new AbortController();
    const answer = fetch(`${api.url}/v1/requests/${job.id}?wait=30`, { headers: { 'X-Proxy-Key': api.key }, signal: leave.signal }).catch((err: unknown) => err);
    return { leave: () => leave.abort(), answer };
  };

  const midWait = ask();
  await eventually(async () => waiters() === 1, 5000, 10);
  midWait.leave();
  await midWait.answer;
  await eventually(async () => waiters() === 0, 5000, 10); // a client that left mid-wait no longer holds a waiter

  holdNextRead = true;
  const read = new Promise<void>((r) => (reading = r));
  const early = ask();
  await read;
  early.leave();
  await early.answer;
  // The server sees the hang-up before the read it is awaiting ends.
  await new Promise((r) => setTimeout(r, 100));
  release();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(waiters(), 0, 'a client that left during the first read holds no waiter');

  const stays = await getJson(api.url, `/v1/requests/${job.id}?wait=1`, api.key);
  assert.deepEqual([stays.status, stays.json.status], [200, 'queued'], 'one who stays is answered after the wait');
});

test('unknown route 404 and wrong method 405, as JSON', async (t) => {
  const api = await startTestApi(t);
  const unknown = await getJson(api.url, '/v2/nothing', api.key);
  assert.deepEqual([unknown.status, unknown.json.error.code], [404, 'not_found']);
  const wrong = await fetch(`${api.url}/v1/requests`, { method: 'GET', headers: { 'x-proxy-key': api.key } });
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get('allow'), 'POST');
  assert.equal(((await wrong.json()) as any).error.code, 'method_not_allowed');
});

test('legacy routes: /index.php?action=request|result|health and /?action= behave like /v1', async (t) => {
  const api = await startTestApi(t);
  const created = await postSigned(api.url, api.key, api.secret, { prompt: 'legacy' }, '/index.php?action=request');
  assert.equal(created.status, 202);
  const viaLegacy = await getJson(api.url, `/index.php?action=result&id=${created.json.id}`, api.key);
  assert.equal(viaLegacy.status, 200);
  assert.equal(viaLegacy.json.id, created.json.id);
  const viaRoot = await getJson(api.url, `/?action=result&id=${created.json.id}`, api.key);
  assert.equal(viaRoot.json.id, created.json.id);
  assert.equal((await getJson(api.url, `/index.php?action=result&id=${created.json.id}`)).status, 401);
  assert.deepEqual((await getJson(api.url, '/index.php?action=health')).json, { status: 'ok' });
  assert.equal((await getJson(api.url, '/?action=health')).status, 200);
  const noPass = await getJson(api.url, '/index.php?action=worker', api.key);
  assert.deepEqual([noPass.status, noPass.json.error.code], [503, 'upstream_not_configured']);
  const unknown = await getJson(api.url, '/index.php?action=explode', api.key);
  assert.deepEqual([unknown.status, unknown.json.error.code], [404, 'not_found']);
  // A client given the old tool's address as its base URL: told what to change.
  const underLegacy = await postSigned(api.url, api.key, api.secret, { prompt: 'legacy base' }, '/index.php/v1/requests');
  assert.deepEqual(
    [underLegacy.status, underLegacy.json.error.code, underLegacy.json.error.message],
    [404, 'not_found', "no route for POST /index.php/v1/requests; a client's base URL is the server's root, without /index.php (the old routes are /index.php?action=…)"],
  );
  // A base URL ending in a slash, joined with '/v1/…': nginx merges the slashes, the API alone does not.
  const doubled = await getJson(api.url, `//v1/requests/${created.json.id}`, api.key);
  assert.deepEqual(
    [doubled.status, doubled.json.error.message],
    [404, `no route for GET //v1/requests/${created.json.id}; the path holds a doubled slash: a client's base URL should not end with /`],
  );
  // A base URL in OpenAI's form, ending in /v1, joined with '/v1/…'.
  const underV1 = await postSigned(api.url, api.key, api.secret, { prompt: 'v1 base' }, '/v1/v1/requests');
  assert.deepEqual(
    [underV1.status, underV1.json.error.code, underV1.json.error.message],
    [404, 'not_found', "no route for POST /v1/v1/requests; a client's base URL is the server's root, without /v1 (an OpenAI base URL ends in /v1; this API's paths begin with it)"],
  );
  const twoWaits = await getJson(api.url, `/v1/requests/${created.json.id}?wait=1&wait=2`, api.key);
  assert.deepEqual([twoWaits.status, twoWaits.json.error.message], [400, 'give one wait: ?wait=N, a whole number of seconds from 0 to 60']);
  const wrongMethod = await getJson(api.url, '/index.php?action=request', api.key);
  assert.equal(wrongMethod.status, 405);
  const twice = await getJson(api.url, '/index.php?action=health&action=result', api.key);
  assert.equal(twice.status, 400);
  // A result asked for without its id, or with two, is the client's mistake, not an unknown job.
  for (const query of ['action=result', `action=result&id=${created.json.id}&id=${created.json.id}`]) {
    const noId = await getJson(api.url, `/index.php?${query}`, api.key);
    assert.deepEqual([noId.status, noId.json.error.code, noId.json.error.message], [400, 'invalid_request', 'give one id: ?action=result&id=ID'], query);
  }
});

test('health answers 503 when the database does not', async (t) => {
  const api = await startTestApi(t);
  assert.equal((await getJson(api.url, '/health')).status, 200);
  await api.store.close();
  const down = await getJson(api.url, '/health');
  assert.equal(down.status, 503);
  assert.equal(down.json.status, 'unavailable');
});

test('cancel: a queued job at once (200), and again when sent again (200, as a client resends one whose answer was lost); one that ended otherwise 409; another client or unknown id 404', async (t) => {
  const api = await startTestApi(t);
  const del = async (id: string, key = api.key) => {
    const res = await fetch(`${api.url}/v1/requests/${id}`, { method: 'DELETE', headers: { 'x-proxy-key': key } });
    return { status: res.status, json: (await res.json()) as any };
  };
  const created = await postSigned(api.url, api.key, api.secret, { prompt: 'cancel me' });
  const cancelled = await del(created.json.id);
  assert.deepEqual([cancelled.status, cancelled.json.status], [200, 'cancelled']);
  const again = await del(created.json.id);
  assert.deepEqual([again.status, again.json], [200, cancelled.json], 'the same answer');
  const done = await postSigned(api.url, api.key, api.secret, { prompt: 'finish me' });
  const [claimed] = await api.store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
  assert.ok(claimed && (await api.store.completeJob(claimed.id, claimed.leaseToken, { outputText: 'done', usage: null, response: {} })));
  const ended = await del(done.json.id);
  assert.deepEqual([ended.status, ended.json.error.code, ended.json.error.message], [409, 'conflict', 'the request already ended as completed and cannot be cancelled']);
  assert.equal((await del('req_AAAAAAAAAAAAAAAAAAAAAA')).status, 404);
  assert.equal((await del("'; DROP TABLE jobs; --")).status, 404);
  assert.equal((await getJson(api.url, `/v1/requests/${created.json.id}`, api.key)).json.status, 'cancelled');
});

test("cancel racing the job's end: a job that finished between the read and the cancel is 409 conflict, the same answer as one finished before", async (t) => {
  let finishOnRead = false;
  // The job ends (a worker completes it) right after the cancel read it as queued.
  const racing = (store: JobStore): JobStore =>
    overriding(store, {
      async getJob(id: string) {
        const job = await store.getJob(id);
        if (finishOnRead && job) {
          finishOnRead = false;
          const [claimed] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
          assert.equal(claimed?.id, job.id);
          assert.ok(await store.completeJob(claimed.id, claimed.leaseToken, { outputText: 'done', usage: null, response: {} }));
        }
        return job;
      },
    });
  const api = await startTestApi(t, { wrapStore: racing });
  const created = await postSigned(api.url, api.key, api.secret, { prompt: 'finish as I cancel' });
  finishOnRead = true;
  const res = await fetch(`${api.url}/v1/requests/${created.json.id}`, { method: 'DELETE', headers: { 'x-proxy-key': api.key } });
  const json = (await res.json()) as any;
  assert.deepEqual([res.status, json.error?.code], [409, 'conflict']);
  assert.equal((await getJson(api.url, `/v1/requests/${created.json.id}`, api.key)).json.status, 'completed');
});

test('health: the public sees only the status; a client key also sees the queue and live workers, not one whose heartbeat was written before the clock stepped back', async (t) => {
  const api = await startTestApi(t);
  await postSigned(api.url, api.key, api.secret, { prompt: 'count me' });
  await api.store.recordHeartbeat({ id: 'host:1:ab', host: 'host', pid: 1, startedAt: Date.now() - 1000, lastSeenAt: Date.now(), jobsDone: 7, clockOffsetMs: -1234 });
  await api.store.recordHeartbeat({ id: 'host:2:cd', host: 'host', pid: 2, startedAt: Date.now() - 90_000, lastSeenAt: Date.now() - 60_000, jobsDone: 1, clockOffsetMs: 0 });
  // Beat before the clock stepped back an hour, by a worker not seen since: no sign of life now.
  await api.store.recordHeartbeat({ id: 'host:3:ef', host: 'host', pid: 3, startedAt: Date.now(), lastSeenAt: Date.now() + 3_600_000, jobsDone: 0, clockOffsetMs: 0 });
  assert.deepEqual((await getJson(api.url, '/health')).json, { status: 'ok' });
  const detailed = await getJson(api.url, '/health', api.key);
  assert.equal(detailed.json.queue.queued, 1);
  assert.deepEqual(
    detailed.json.workers.map((w: any) => [w.id, w.jobs_done, w.clock_offset_ms]),
    [['host:1:ab', 7, -1234]],
  );
});

test("stats: the hour's finished jobs per minute for the whole service, the caller's own latest failures, and the time the minutes count back from (the store's clock)", async (t) => {
  // The store's clock half an hour ahead of this host's, as a PostgreSQL server's may be: the stats go by it.
  const api = await startTestApi(t, { wrapStore: (store) => overriding(store, { now: () => store.now() + 1_800_000 }) });
  const { store } = api;
  for (const [client, ending] of [
    ['default', 'completed'],
    ['default', 'completed'],
    ['default', 'failed'],
    ['other', 'failed'],
  ] as const) {
    await store.createJob(newTestJob({ client }));
    const [claimed] = await store.claimJobs({ workerId: 'w', limit: 1, leaseMs: 60_000 });
    if (ending === 'completed') assert.ok(await store.completeJob(claimed!.id, claimed!.leaseToken, { outputText: 'ok', usage: null, response: {} }));
    else assert.ok(await store.finishJob(claimed!.id, claimed!.leaseToken, 'failed', { code: 'upstream_invalid_request_error', message: `bad request of ${client}` }));
  }
  const before = Math.floor(Date.now() / 1000);
  const res = await getJson(api.url, '/v1/stats', api.key);
  assert.equal(res.status, 200);
  assert.equal(res.json.object, 'proxy.stats');
  assert.ok(Math.abs(res.json.server_time - (before + 1800)) <= 2, `server_time ${res.json.server_time} against the store's ${before + 1800}`);
  assert.equal(res.json.window_seconds, 3600);
  // Finished by this host's clock (the test's store writes with it): half an hour into the window.
  const minute = Math.floor(before / 60) * 60;
  const counts = Object.fromEntries(res.json.per_minute.filter((p: any) => Math.abs(p.minute - minute) <= 60).map((p: any) => [p.status, p.count]));
  assert.deepEqual(counts, { completed: 2, failed: 2 });
  assert.deepEqual(
    res.json.latest_failed.map((j: any) => j.error.message),
    ['bad request of default'],
  );
  assert.equal((await getJson(api.url, '/v1/stats')).status, 401);
});
