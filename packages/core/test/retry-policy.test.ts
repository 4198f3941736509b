import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffMs, judgeFailure, parseGoDuration, retryHintMs } from '../src/runner/retry-policy.ts';

const http = (status: number, headers: Record<string, string> = {}, errorCode: string | null = null) =>
  ({ kind: 'http_error', status, headers, body: null, errorCode, message: 'x' }) as const;

test('retryable: connection errors, 408, 409, 429, 5xx; not: other 4xx and insufficient_quota', () => {
  assert.equal(judgeFailure({ kind: 'network_error', code: 'ECONNRESET', message: 'reset' }, 0).retryable, true);
  for (const s of [408, 409, 429, 500, 502, 503]) assert.equal(judgeFailure(http(s), 0).retryable, true, String(s));
  for (const s of [400, 401, 403, 404, 422]) assert.equal(judgeFailure(http(s), 0).retryable, false, String(s));
  assert.equal(judgeFailure(http(429, {}, 'insufficient_quota'), 0).retryable, false);
  assert.equal(judgeFailure({ kind: 'bad_response', status: 200, message: 'broken' }, 0).retryable, true);
  assert.equal(judgeFailure({ kind: 'bad_response', status: 200, message: 'in content-encoding zstd', final: true }, 0).retryable, false);
  // A proxy's refusal is judged by its status, as an upstream's: its credentials or policy stay wrong.
  for (const s of [407, 403])
    assert.deepEqual(judgeFailure({ kind: 'proxy_refused', status: s, message: `HTTP ${s}` }, 0), {
      retryable: false,
      error: { code: 'upstream_proxy_refused', message: `HTTP ${s}` },
    });
  for (const s of [502, 503, 429]) assert.equal(judgeFailure({ kind: 'proxy_refused', status: s, message: 'm' }, 0).retryable, true, String(s));
  const rejected = judgeFailure({ kind: 'certificate_rejected', code: 'CERT_HAS_EXPIRED', message: 'm' }, 0);
  assert.deepEqual([rejected.retryable, rejected.error], [false, { code: 'upstream_certificate_rejected', message: 'm' }]);
  assert.match(rejected.hint ?? '', /UPSTREAM_CA_FILE/);
});

test('a failure every job would meet alike names the setting to look at (worker log and check only)', () => {
  assert.match(judgeFailure(http(401, {}, 'invalid_api_key'), 0).hint ?? '', /OPENAI_API_KEY/);
  assert.match(judgeFailure(http(401, { 'x-should-retry': 'false' }), 0).hint ?? '', /OPENAI_API_KEY/, 'whatever decided the retry');
  for (const s of [404, 405]) assert.match(judgeFailure(http(s), 0).hint ?? '', /OPENAI_BASE_URL: it is the API's base, to which each call adds \/chat\/completions/, String(s));
  // A missing model is the request's mistake, not the address's.
  assert.equal(judgeFailure(http(404, {}, 'model_not_found'), 0).hint, undefined);
  assert.match(
    judgeFailure({ kind: 'network_error', code: 'ERR_SSL_WRONG_VERSION_NUMBER', message: 'm' }, 0).hint ?? '',
    /answers plain HTTP where OPENAI_BASE_URL \(or the proxy\) says https:\/\//,
  );
  for (const other of [http(400), http(429), http(500)]) assert.equal(judgeFailure(other, 0).hint, undefined, String(other.status));
  assert.equal(judgeFailure({ kind: 'network_error', code: 'ECONNREFUSED', message: 'm' }, 0).hint, undefined);
});

test('x-should-retry overrides the classification both ways', () => {
  assert.equal(judgeFailure(http(400, { 'x-should-retry': 'true' }), 0).retryable, true);
  assert.equal(judgeFailure(http(503, { 'x-should-retry': 'false' }), 0).retryable, false);
});

test('the upstream names the wait: retry-after-ms, Retry-After seconds or date, x-ratelimit-reset-*', () => {
  assert.equal(retryHintMs({ 'retry-after-ms': '250' }, 0), 250);
  assert.equal(retryHintMs({ 'retry-after': '2' }, 0), 2000);
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(retryHintMs({ 'retry-after': 'Thu, 01 Jan 2026 00:00:05 GMT' }, now), 5000);
  assert.equal(retryHintMs({ 'x-ratelimit-reset-requests': '1s', 'x-ratelimit-reset-tokens': '6m0s' }, 0), 360_000);
  assert.equal(retryHintMs({ 'x-ratelimit-reset-requests': '1s', 'x-ratelimit-reset-tokens': '6m0s', 'x-ratelimit-remaining-requests': '0' }, 0), 1000);
  assert.equal(retryHintMs({}, 0), undefined);
  assert.equal(judgeFailure(http(429, { 'retry-after': '3' }), 0).waitMs, 3000);
});

test('Go durations', () => {
  assert.equal(parseGoDuration('6m0s'), 360_000);
  assert.equal(parseGoDuration('20ms'), 20);
  assert.equal(parseGoDuration('1.5s'), 1500);
  assert.equal(parseGoDuration('1h2m3s'), 3_723_000);
  assert.equal(parseGoDuration('soon'), undefined);
  assert.equal(parseGoDuration(''), undefined);
});

test('backoff doubles, is capped, and has jitter within half the step', () => {
  assert.equal(
    backoffMs(1, 1000, 60_000, () => 0),
    500,
  );
  assert.equal(
    backoffMs(1, 1000, 60_000, () => 1),
    1000,
  );
  assert.equal(
    backoffMs(3, 1000, 60_000, () => 1),
    4000,
  );
  assert.equal(
    backoffMs(20, 1000, 60_000, () => 1),
    60_000,
  );
});
