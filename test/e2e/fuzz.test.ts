import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { ERROR_STATUS } from '../../packages/core/src/errors.ts';
import { signBody } from '../../packages/core/src/signing.ts';
import { getJson, newCredentials, openTestStore, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';

type Sent = { body: string | Uint8Array; headers: Record<string, string>; validlySigned: boolean };

const contentType = fc.oneof(
  { weight: 4, arbitrary: fc.constant<string | undefined>('application/json') },
  {
    weight: 1,
    arbitrary: fc.constantFrom<string | undefined>(
      'application/json; charset=utf-8',
      'text/plain',
      'application/x-www-form-urlencoded',
      undefined,
      'application/json; charset=latin1',
    ),
  },
);
const headerValue = fc.string({ unit: fc.constantFrom(...'abcXYZ019 -_.,;=/"'.split('')), maxLength: 40 });
const extraHeaders = fc.dictionary(fc.stringMatching(/^x-f-[a-z]{1,8}$/), headerValue, { maxKeys: 3 });

/** A 4xx answer in the error envelope, with a code from the closed list and no trace of the internals. */
function assertClientError(status: number, text: string): void {
  assert.ok(status >= 400 && status < 500, `status ${status}: ${text}`);
  const json = JSON.parse(text) as { error?: { code: string; message: string } };
  const code = json.error?.code as keyof typeof ERROR_STATUS;
  assert.ok(code in ERROR_STATUS, `unknown code ${code}`);
  assert.equal(ERROR_STATUS[code], status);
  assert.doesNotMatch(text, /\bat .+:\d+:\d+|SQLITE|node_modules/);
}

function requestArb(key: string, secret: string): fc.Arbitrary<Sent> {
  const now = Math.floor(Date.now() / 1000);
  const keyHeader = fc.oneof(
    { weight: 3, arbitrary: fc.constant<string | undefined>(key) },
    { weight: 1, arbitrary: fc.constantFrom<string | undefined>(undefined, 'wrong-key-0123456789', `${key}x`) },
  );
  const fields = fc.record(
    {
      prompt: fc.oneof(fc.string(), fc.string({ unit: 'binary', maxLength: 50 }), fc.constant('')),
      messages: fc.array(fc.record({ role: fc.constantFrom('user', 'system', 'assistant', 'root'), content: fc.oneof(fc.string(), fc.integer(), fc.constant(null)) }), {
        maxLength: 3,
      }),
      model: fc.oneof(fc.constant('gpt-4o-mini'), fc.string({ maxLength: 12 })),
      ttl: fc.oneof(fc.integer({ min: -5, max: 700_000 }), fc.constant('60')),
      options: fc.dictionary(fc.constantFrom('temperature', 'stream', 'max_tokens', 'seed', 'junk'), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 2 }),
      ts: fc.oneof(fc.integer({ min: now - 400, max: now + 400 }), fc.constant(now), fc.double()),
      nonce: fc.oneof(fc.uuid(), fc.string({ maxLength: 10 })),
      extra: fc.jsonValue({ maxDepth: 2 }),
    },
    { requiredKeys: [] },
  );
  // Well-formed requests, so that the accepted path is exercised as often as the refused ones.
  const wellFormed = fc.record(
    {
      prompt: fc.string({ minLength: 1, maxLength: 40 }),
      model: fc.constant('gpt-4o-mini'),
      options: fc.record({ temperature: fc.double({ min: 0, max: 2, noNaN: true }) }, { requiredKeys: [] }),
      ts: fc.integer({ min: now - 60, max: now + 60 }),
      nonce: fc.uuid(),
    },
    { requiredKeys: ['prompt', 'ts', 'nonce'] },
  );
  const signedBody = fc
    .tuple(
      fc.oneof({ weight: 1, arbitrary: fields }, { weight: 2, arbitrary: wellFormed }),
      fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
    )
    .map(([obj, tamper]) => {
      let body = signBody(obj as Record<string, unknown>, secret);
      if (tamper) body = body.replace(/"sign":"([0-9a-f])/, (_m, c: string) => `"sign":"${c === 'a' ? 'b' : 'a'}`);
      return { body, validlySigned: !tamper };
    });
  const junk = fc.oneof(
    fc.jsonValue().map((v) => ({ body: JSON.stringify(v) ?? 'null', validlySigned: false })),
    fc.uint8Array({ maxLength: 200 }).map((b) => ({ body: b, validlySigned: false })),
    fc.string().map((s) => ({ body: s, validlySigned: false })),
    fields.map((obj) => ({ body: signBody(obj as Record<string, unknown>, 'an-attacker-secret-of-sufficient-length'), validlySigned: false })),
  );
  // Content-Encoding: mostly none; sometimes a body really gzipped (still valid), sometimes a header
  // that does not match the bytes, or names an encoding the server does not know.
  const encoding = fc.oneof(
    { weight: 6, arbitrary: fc.constant<string | undefined>(undefined) },
    { weight: 2, arbitrary: fc.constantFrom<string | undefined>('identity', 'gzip (applied)', 'gzip', 'deflate', 'br', 'zz') },
  );
  return fc
    .record({ payload: fc.oneof({ weight: 2, arbitrary: signedBody }, { weight: 1, arbitrary: junk }), type: contentType, key: keyHeader, extra: extraHeaders, encoding })
    .map(({ payload, type, key: k, extra, encoding: enc }) => {
      const headers: Record<string, string> = { ...extra };
      if (type) headers['content-type'] = type;
      if (k) headers['x-proxy-key'] = k;
      if (enc) headers['content-encoding'] = enc === 'gzip (applied)' ? 'gzip' : enc;
      const body = enc === 'gzip (applied)' ? gzipSync(payload.body) : payload.body;
      const readable = enc === undefined || enc === 'identity' || enc === 'gzip (applied)';
      return { body, headers, validlySigned: payload.validlySigned && readable && type !== undefined && type.startsWith('application/json') && k === key };
    });
}

test('random bodies and headers: always a 2xx or a 4xx JSON error, the process stays up, only validly signed requests are stored', async (t) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, RATE_LIMIT_PER_IP: 'off', RATE_LIMIT_PER_KEY: 'off' });
  const { url, child } = await startApiProcess(t, env, dir);
  const accepted = new Set<string>();
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(requestArb(key, secret), fc.constantFrom('/v1/requests', '/index.php?action=request'), async (sent, path) => {
      runs += 1;
      const res = await fetch(`${url}${path}`, { method: 'POST', headers: sent.headers, body: sent.body });
      const text = await res.text();
      const json = JSON.parse(text) as { id?: string; error?: { code: string; message: string } };
      if (res.status >= 200 && res.status < 300) {
        assert.ok(sent.validlySigned, `accepted a request that was not validly signed: ${text}`);
        assert.ok(json.id);
        accepted.add(json.id);
      } else {
        assertClientError(res.status, text);
      }
    }),
    { numRuns: 400 },
  );
  assert.equal(child.proc.exitCode, null, 'the API is still running');
  assert.equal((await getJson(url, '/health')).status, 200);
  const store = await openTestStore(env);
  const stored = (await store.listJobs({ limit: 100_000 })).map((j) => j.id).sort();
  await store.close();
  assert.deepEqual(stored, [...accepted].sort());
  assert.ok(accepted.size >= 20, `only ${accepted.size} requests were accepted: the generator no longer exercises the accepted path`);
  t.diagnostic(`${runs} random requests, ${accepted.size} accepted (all validly signed)`);
});

test('random ids and query strings on the read routes, percent-escapes good and bad: always a 4xx JSON error, never a 500', async (t) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, RATE_LIMIT_READS_PER_IP: 'off' });
  const { url, child } = await startApiProcess(t, env, dir);
  // Characters a path or query can carry raw, with '%' often, so that escapes are as often broken
  // (%, %Z, %E0%A4) as whole.
  const piece = fc.string({ unit: fc.constantFrom(...'%%%0123456789abcdefABCDEFZz_-.~:@!$'.split('')), minLength: 1, maxLength: 24 });
  const route = fc.oneof(
    piece.map((id) => ({ method: 'GET', path: `/v1/requests/${id}` })),
    piece.map((id) => ({ method: 'DELETE', path: `/v1/requests/${id}` })),
    fc.tuple(piece, piece).map(([id, wait]) => ({ method: 'GET', path: `/v1/requests/${id}?wait=${wait}` })),
    piece.map((id) => ({ method: 'GET', path: `/index.php?action=result&id=${id}` })),
    piece.map((action) => ({ method: 'GET', path: `/index.php?action=${action}` })),
  );
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(route, async ({ method, path }) => {
      runs += 1;
      const res = await fetch(`${url}${path}`, { method, headers: { 'x-proxy-key': key } });
      assertClientError(res.status, await res.text());
    }),
    { numRuns: 300 },
  );
  assert.equal(child.proc.exitCode, null, 'the API is still running');
  t.diagnostic(`${runs} random reads, every one a 4xx`);
});
