import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OUTAGE_PROBE_FIRST_MS, OUTAGE_PROBE_MAX_MS, createOutageBrake } from '../src/runner/upstream-outage.ts';
import type { UpstreamOutcome } from '../src/runner/upstream-client.ts';

const refused: UpstreamOutcome = { kind: 'network_error', code: 'ECONNREFUSED', message: 'upstream connection failed: ECONNREFUSED' };
const reset: UpstreamOutcome = { kind: 'network_error', code: 'ECONNRESET', message: 'upstream connection failed: ECONNRESET' };
const answered: UpstreamOutcome = { kind: 'http_error', status: 503, message: 'overloaded', errorCode: null, headers: {} } as UpstreamOutcome;

function brake() {
  let mono = 5000;
  const lines: Array<{ level: string; message: string }> = [];
  const log = { warn: (message: string) => void lines.push({ level: 'warn', message }), info: (message: string) => void lines.push({ level: 'info', message }) };
  return { brake: createOutageBrake({ log, monotonic: () => mono }), lines, advance: (ms: number) => void (mono += ms) };
}

test('outage brake: a call that cannot connect holds calls back; then one looks, the wait doubling up to its most; any answer lets them all go', () => {
  const { brake: b, lines, advance } = brake();
  assert.equal(b.callsAllowed(), Infinity);
  b.report(refused);
  assert.equal(b.callsAllowed(), 0);
  // The other calls begun before the hold end as it begins: they do not lengthen it.
  b.report(refused);
  advance(OUTAGE_PROBE_FIRST_MS - 1);
  assert.equal(b.callsAllowed(), 0);
  advance(1);
  assert.equal(b.callsAllowed(), 1, 'one call looks');
  let wait = OUTAGE_PROBE_FIRST_MS;
  for (let look = 0; look < 8; look++) {
    b.report(refused);
    wait = Math.min(OUTAGE_PROBE_MAX_MS, wait * 2);
    advance(wait - 1);
    assert.equal(b.callsAllowed(), 0, `look ${look + 2} after ${wait} ms`);
    advance(1);
    assert.equal(b.callsAllowed(), 1);
  }
  assert.equal(wait, OUTAGE_PROBE_MAX_MS);
  b.report(answered);
  assert.equal(b.callsAllowed(), Infinity, 'an answer, even an error, is the upstream back');
  // Said as it began, then at most once a minute while it lasted (about four minutes here), and as it ended.
  assert.deepEqual(
    lines.map((l) => l.level),
    ['warn', 'warn', 'warn', 'info'],
    JSON.stringify(lines),
  );
  assert.match(lines[0]!.message, /^the upstream cannot be reached \(ECONNREFUSED\): calls are held, and one goes after 1 s/);
});

test('outage brake: a reset or a close (the request may have been sent) and answers hold nothing back', () => {
  const { brake: b, lines } = brake();
  b.report(reset);
  b.report(answered);
  b.report({ kind: 'local_shortage', code: 'EMFILE', message: 'm' });
  assert.equal(b.callsAllowed(), Infinity);
  assert.deepEqual(lines, []);
});
