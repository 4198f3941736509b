import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent, request } from 'undici';
import { signBody } from '../../packages/core/src/signing.ts';
import { freePort, freshStamp, newCredentials, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';
import { findTool, startNginx, writeNginxConfig } from '../helpers/nginx.ts';

// The repository's nginx block in front of a real proxy-api, over HTTPS, as an operator runs it.
test('behind the shipped nginx block: creates and long-polls pass, the rate limit sees the real client address, and nginx answers its own errors in JSON', async (t) => {
  if (!findTool('nginx', t)) return;
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const ports = { http: await freePort(), https: await freePort(), api: await freePort() };
  const api = await startApiProcess(
    t,
    testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, PORT: String(ports.api), TRUST_PROXY: 'loopback', RATE_LIMIT_PER_IP: '2/min', RATE_LIMIT_PER_KEY: 'off' }),
    dir,
  );
  const conf = writeNginxConfig(dir, ports);
  await startNginx(t, dir, conf, ports.https);

  const ca = readFileSync(join(dir, 'cert.pem'));
  // A client per loopback address: nginx passes each one's address on as X-Forwarded-For.
  const clientAt = (localAddress: string) => new Agent({ localAddress, connect: { ca, servername: 'proxy.example.com' } });
  const [first, second] = [clientAt('127.0.0.2'), clientAt('127.0.0.3')];
  t.after(() => Promise.all([first.close(), second.close()]));
  const base = `https://127.0.0.1:${ports.https}`;
  const send = async (dispatcher: Agent, method: 'GET' | 'POST', path: string, body?: string, headers: Record<string, string> = {}) => {
    const res = await request(`${base}${path}`, {
      dispatcher,
      method,
      body,
      headers: { host: 'proxy.example.com', 'x-proxy-key': key, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text, json: text.startsWith('{') ? JSON.parse(text) : null };
  };
  const create = (dispatcher: Agent, spoofed: string) =>
    send(dispatcher, 'POST', '/v1/requests', signBody({ prompt: 'through nginx', ...freshStamp() }, secret), { 'x-forwarded-for': spoofed });

  // Each address has its own budget of two; a forged X-Forwarded-For changes nothing.
  const fromFirst = [await create(first, '10.0.0.1'), await create(first, '10.0.0.2')];
  assert.deepEqual(
    fromFirst.map((r) => r.status),
    [202, 202],
    fromFirst.map((r) => r.text).join('\n'),
  );
  assert.equal((await create(second, '10.0.0.3')).status, 202, 'another address draws from its own budget');
  const refused = await create(first, '10.0.0.4');
  assert.deepEqual([refused.status, refused.json?.error.code], [429, 'rate_limited']);
  assert.ok(Number(refused.headers['retry-after']) >= 1);

  // nginx's request id reaches the API and comes back; a long-poll waits its time and answers.
  const id = fromFirst[0]!.json.id as string;
  const started = Date.now();
  const polled = await send(first, 'GET', `/v1/requests/${id}?wait=2`);
  assert.deepEqual([polled.status, polled.json?.status], [200, 'queued']);
  assert.ok(Date.now() - started >= 1900, 'the long-poll was held, not cut short');
  assert.match(String(polled.headers['x-request-id']), /^[0-9a-f]{32}$/, 'the id nginx made');
  const legacy = await send(second, 'GET', `/index.php?action=result&id=${id}`);
  assert.deepEqual([legacy.status, legacy.json?.id], [200, id]);

  // Too large for nginx: refused before the API, in the API's error shape.
  const large = await send(second, 'POST', '/v1/requests', JSON.stringify({ prompt: 'x'.repeat(1024 * 1024 + 1) }));
  assert.equal(large.status, 413);
  assert.deepEqual(large.json, { error: { code: 'payload_too_large', message: 'the request body is larger than the proxy accepts' } });
  assert.match(String(large.headers['content-type']), /^application\/json/);

  // Plain HTTP is sent to HTTPS.
  const plain = await request(`http://127.0.0.1:${ports.http}/health`, { headers: { host: 'proxy.example.com' } });
  await plain.body.dump();
  assert.deepEqual([plain.statusCode, plain.headers.location], [301, 'https://proxy.example.com/health']);

  // The API gone: nginx's 502 becomes the API's own 503 `unavailable`, with Retry-After.
  api.child.kill('SIGKILL');
  await api.child.exited;
  const down = await send(second, 'GET', '/health');
  assert.equal(down.status, 503);
  assert.equal(down.json?.error.code, 'unavailable');
  assert.equal(down.headers['retry-after'], '5');
});
