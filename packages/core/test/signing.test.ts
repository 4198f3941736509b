import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { test } from 'node:test';
import { hmacHex, sha256, sha256Hex, signBody, signBodyText, splitSignedBody, verifySignedText } from '../src/signing.ts';

const secret = 's'.repeat(40);

test('a body signed by the recipe verifies, and T is recovered byte for byte', () => {
  const unsigned = '{"prompt":"héllo ✓","ts":1700000000,"nonce":"n-12345678"}';
  const signed = signBodyText(unsigned, secret);
  const expected = createHmac('sha256', secret).update(Buffer.from(unsigned, 'utf8')).digest('hex');
  assert.equal(signed, `${unsigned.slice(0, -1)},"sign":"${expected}"}`);
  const parts = splitSignedBody(Buffer.from(signed));
  assert.ok(parts);
  assert.equal(parts.unsigned.toString('utf8'), unsigned);
  assert.equal(verifySignedText(parts, [secret]), true);
});

test('any serializer works: whitespace inside T is part of what is signed', () => {
  const unsigned = '{\n  "prompt": "hi",\n  "ts": 1,\n  "nonce": "abcdefgh"\n}';
  const parts = splitSignedBody(Buffer.from(signBodyText(unsigned, secret) + '\n  '));
  assert.ok(parts);
  assert.equal(parts.unsigned.toString(), unsigned);
  assert.equal(verifySignedText(parts, [secret]), true);
});

test('a tampered body, a wrong secret, or a wrong-length sign does not verify', () => {
  const signed = signBody({ prompt: 'pay 10', ts: 1, nonce: 'abcdefgh' }, secret);
  const tampered = splitSignedBody(Buffer.from(signed.replace('pay 10', 'pay 99')));
  assert.ok(tampered);
  assert.equal(verifySignedText(tampered, [secret]), false);
  const parts = splitSignedBody(Buffer.from(signed));
  assert.ok(parts);
  assert.equal(verifySignedText(parts, ['x'.repeat(40)]), false);
  assert.equal(verifySignedText(parts, ['x'.repeat(40), secret]), true, 'any active secret verifies');
  assert.equal(splitSignedBody(Buffer.from(signed.replace(/"sign":"([0-9a-f]{64})"/, '"sign":"$1aa"'))), null);
  assert.equal(splitSignedBody(Buffer.from('{"prompt":"x","ts":1,"nonce":"abcdefgh"}')), null);
  assert.equal(splitSignedBody(Buffer.from(signed.replace('"sign"', '"sig"'))), null);
});

test('sign must be the last member', () => {
  const sign = hmacHex(secret, '{"ts":1}');
  assert.equal(splitSignedBody(Buffer.from(`{"sign":"${sign}","ts":1}`)), null);
});

test('sha256 and sha256Hex give the SHA-256 digest of strings (as UTF-8) and bytes, as createHash does', () => {
  for (const input of ['', 'abc', 'Grüße ✓ 🙂', 'x'.repeat(100_000), Buffer.from([0, 255, 7])]) {
    const expected = createHash('sha256').update(input).digest();
    assert.deepEqual(sha256(input), expected);
    assert.equal(sha256Hex(input), expected.toString('hex'));
  }
});
