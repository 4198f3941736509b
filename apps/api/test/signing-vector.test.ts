import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { hmacHex, signBodyText, splitSignedBody, verifySignedText } from '@proxy/core';
import { startTestApi } from './helpers.ts';

const root = new URL('../../../', import.meta.url);
const vector = JSON.parse(readFileSync(new URL('scripts/signing-test-vector.json', root), 'utf8')) as Record<string, string>;

test('the shared signing vector holds: sign is the HMAC of the UTF-8 bytes, signed_body is T with sign appended', () => {
  assert.equal(Buffer.from(vector.unsigned_body!, 'utf8').toString('hex'), vector.unsigned_body_utf8_hex);
  assert.equal(hmacHex(vector.secret!, Buffer.from(vector.unsigned_body!, 'utf8')), vector.sign);
  assert.equal(signBodyText(vector.unsigned_body!, vector.secret!), vector.signed_body);
  const parts = splitSignedBody(Buffer.from(vector.signed_body!, 'utf8'));
  assert.ok(parts && verifySignedText(parts, [vector.secret!]));
});

test('openssl, a second implementation, computes the same signature', () => {
  const out = execFileSync('openssl', ['dgst', '-sha256', '-hmac', vector.secret!], { input: Buffer.from(vector.unsigned_body!, 'utf8') }).toString();
  assert.match(out, new RegExp(`${vector.sign}\\s*$`));
});

test('the API accepts the vector body from the vector key at the vector time', async (t) => {
  const ts = JSON.parse(vector.unsigned_body!).ts as number;
  const api = await startTestApi(t, { env: { PROXY_KEY: vector.key!, PROXY_SECRET: vector.secret! }, now: () => ts * 1000 + 1500 });
  const res = await fetch(`${api.url}/v1/requests`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-proxy-key': vector.key! }, body: vector.signed_body });
  assert.equal(res.status, 202);
});

test('README quotes the vector as it is', () => {
  const readme = readFileSync(new URL('README.md', root), 'utf8');
  for (const field of ['key', 'secret', 'unsigned_body', 'sign', 'signed_body']) assert.ok(readme.includes(vector[field]!), `README lacks the vector's ${field}`);
});
