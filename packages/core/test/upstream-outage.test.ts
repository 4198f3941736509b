import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  FAILING_FOR_MS,
  FAILING_IN_A_ROW,
  OUTAGE_LINE_MS,
  OUTAGE_PROBE_FIRST_MS,
  OUTAGE_PROBE_MAX_MS,
  createOutageBrake,
  type CallEnd,
  type OutageBrake,
} from '../src/runner/upstream-outage.ts';
import type { UpstreamOutcome } from '../src/runner/upstream-client.ts';

const refused: UpstreamOutcome = { kind: 'network_error', code: 'ECONNREFUSED', message: 'upstream connection failed: ECONNREFUSED' };
const reset: UpstreamOutcome = { kind: 'network_error', code: 'ECONNRESET', message: 'upstream connection failed: ECONNRESET' };
const answered: UpstreamOutcome = { kind: 'http_error', status: 400, message: 'bad request', errorCode: null, headers: {} } as UpstreamOutcome;
const overloaded: UpstreamOutcome = { kind: 'http_error', status: 503, message: 'overloaded', errorCode: null, headers: {} } as UpstreamOutcome;
const completed: UpstreamOutcome = { kind: 'ok', status: 200, body: {}, outputText: 'hi', finishReason: 'stop', usage: null };

function brake(shared = false) {
  let mono = 5000;
  const lines: Array<{ level: string; message: string }> = [];
  const marks: string[] = [];
  const log = { warn: (message: string) => void lines.push({ level: 'warn', message }), info: (message: string) => void lines.push({ level: 'info', message }) };
  const brake = createOutageBrake({ log, monotonic: () => mono, shared, onHeld: () => void marks.push('held'), onResumed: () => void marks.push('resumed') });
  return { brake, lines, marks, advance: (ms: number) => void (mono += ms) };
}

/** A brake just held: one call looks after the first wait, one that fails as `failure` did doubles it, and an answer lets all go. */
function looksUntilAnswered(b: OutageBrake, advance: (ms: number) => void, failure: CallEnd) {
  advance(OUTAGE_PROBE_FIRST_MS);
  assert.equal(b.callsAllowed(), 1, 'one call looks');
  b.report(failure);
  advance(OUTAGE_PROBE_FIRST_MS * 2 - 1);
  assert.equal(b.callsAllowed(), 0, 'a look that fails doubles the wait');
  advance(1);
  b.report(completed);
  assert.equal(b.callsAllowed(), Infinity);
}

test("outage brake, shared: a look whose wait is over waits for the fleet's turn, and for the time another worker's turn leaves it; each look's turn is taken anew", () => {
  const { brake: b, advance } = brake(true);
  assert.equal(b.needsTurn(), false, 'nothing held, no turn needed');
  b.report(refused);
  assert.equal(b.needsTurn(), false, 'the wait first');
  advance(OUTAGE_PROBE_FIRST_MS);
  assert.deepEqual([b.needsTurn(), b.callsAllowed()], [true, 0], 'no call before the turn');
  b.postpone(700);
  assert.deepEqual([b.needsTurn(), b.callsAllowed()], [false, 0], "another worker's turn");
  advance(700);
  assert.equal(b.needsTurn(), true);
  b.turnTaken();
  assert.deepEqual([b.needsTurn(), b.callsAllowed()], [false, 1], 'its turn: one call looks');
  b.report(refused);
  advance(2 * OUTAGE_PROBE_FIRST_MS);
  assert.deepEqual([b.needsTurn(), b.callsAllowed()], [true, 0], 'the next look needs its own turn');
  b.turnTaken();
  b.report(completed);
  assert.deepEqual([b.needsTurn(), b.callsAllowed()], [false, Infinity]);
  b.assumeDown();
  assert.deepEqual([b.needsTurn(), b.callsAllowed()], [true, 0], 'assumed down: the first look waits for its turn too');
});

test('outage brake: the hold and its end are told once each (the store marks them); a brake that assumes the upstream down (the mark found at start) lets one call look at once, and its end is told too', () => {
  const { brake: b, marks, advance } = brake();
  b.report(refused);
  b.report(refused);
  advance(OUTAGE_PROBE_FIRST_MS);
  b.report(refused);
  assert.deepEqual(marks, ['held'], 'a look that fails marks nothing new');
  b.report(completed);
  b.report(completed);
  assert.deepEqual(marks, ['held', 'resumed']);

  const { brake: started, marks: startedMarks, advance: later } = brake();
  started.assumeDown();
  assert.equal(started.callsAllowed(), 1, 'one call looks at once');
  started.report(refused);
  assert.equal(started.callsAllowed(), 0);
  later(2 * OUTAGE_PROBE_FIRST_MS - 1);
  assert.equal(started.callsAllowed(), 0, 'a failed look waits as a second look does');
  later(1);
  assert.equal(started.callsAllowed(), 1);
  started.report(answered);
  assert.equal(started.callsAllowed(), Infinity);
  assert.deepEqual(startedMarks, ['resumed'], 'the mark it found was not marked again; its end is told');
});

test('outage brake: a call that cannot connect holds calls back; then one looks, the wait doubling up to its most; any answer but a server error lets them all go', () => {
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
  // A look answered with a server error finds the upstream not back either.
  b.report(overloaded);
  advance(OUTAGE_PROBE_MAX_MS - 1);
  assert.equal(b.callsAllowed(), 0);
  advance(1);
  b.report(answered);
  assert.equal(b.callsAllowed(), Infinity, 'an answer, even an error of the request, is the upstream back');
  // Said as it began, then at most once a minute while it lasted (about four minutes here), and as it ended.
  assert.deepEqual(
    lines.map((l) => l.level),
    ['warn', 'warn', 'warn', 'info'],
    JSON.stringify(lines),
  );
  assert.match(lines[0]!.message, /^the upstream cannot be reached \(ECONNREFUSED\): calls are held, and one goes after 1 s/);
});

test('outage brake: a reset or a close (the request may have been sent) and answers hold nothing back, a server error alone neither', () => {
  const { brake: b, lines } = brake();
  b.report(reset);
  b.report(answered);
  b.report(overloaded);
  b.report({ kind: 'local_shortage', code: 'EMFILE', message: 'm' });
  assert.equal(b.callsAllowed(), Infinity);
  assert.deepEqual(lines, []);
});

test(`outage brake: server errors hold the calls once ${FAILING_IN_A_ROW} calls in a row over ${FAILING_FOR_MS} ms got one, and any other answer between starts the count again`, () => {
  const { brake: b, lines, advance } = brake();
  // Many at once, as at concurrency 64 the moment the upstream fails: not yet a second of it.
  for (let i = 0; i < FAILING_IN_A_ROW * 3; i++) b.report(overloaded);
  assert.equal(b.callsAllowed(), Infinity, 'a burst within a moment holds nothing');
  advance(FAILING_FOR_MS);
  b.report(completed);
  // A run as long as the rule asks but for one call, over more than the time.
  for (let i = 0; i < FAILING_IN_A_ROW - 1; i++) {
    b.report(overloaded);
    advance(FAILING_FOR_MS);
  }
  assert.equal(b.callsAllowed(), Infinity, `a completion between started the count again: ${FAILING_IN_A_ROW - 1} in a row`);
  b.report({ kind: 'proxy_refused', status: 502, message: 'the proxy answered 502' });
  assert.equal(b.callsAllowed(), 0, `the ${FAILING_IN_A_ROW}th in a row: held`);
  looksUntilAnswered(b, advance, overloaded);
  assert.deepEqual(
    lines.map((l) => l.message.replace(/: calls are held.*/, '')),
    [
      `the upstream answers every call with a server error (502, ${FAILING_IN_A_ROW} calls in a row over ${((FAILING_IN_A_ROW - 1) * FAILING_FOR_MS) / 1000} s)`,
      'the upstream answers again: calls resume',
    ],
  );
  // Released, the count starts again from none.
  for (let i = 0; i < FAILING_IN_A_ROW - 1; i++) b.report(overloaded);
  advance(FAILING_FOR_MS);
  assert.equal(b.callsAllowed(), Infinity);
});

test(`outage brake: calls that get no answer within their timeout hold the calls once ${FAILING_IN_A_ROW} in a row, as server errors do, counted with them; a look that times out doubles the wait`, () => {
  const { brake: b, lines, advance } = brake();
  const timedOut = { kind: 'timeout', ms: 120_000 } as const;
  for (let i = 0; i < FAILING_IN_A_ROW - 2; i++) {
    b.report(timedOut);
    advance(FAILING_FOR_MS);
  }
  b.report(overloaded);
  assert.equal(b.callsAllowed(), Infinity, `${FAILING_IN_A_ROW - 1} in a row`);
  b.report(timedOut);
  assert.equal(b.callsAllowed(), 0, `the ${FAILING_IN_A_ROW}th in a row: held`);
  looksUntilAnswered(b, advance, timedOut);
  assert.deepEqual(
    lines.map((l) => l.message.replace(/: calls are held.*/, '')),
    [`the upstream answers no call within 120 s (${FAILING_IN_A_ROW} calls in a row)`, 'the upstream answers again: calls resume'],
  );
  // A timeout between answers holds nothing.
  b.report(timedOut);
  b.report(completed);
  assert.equal(b.callsAllowed(), Infinity);
});

test(`outage brake: a run of failures an earlier pass ended in is counted on, and told as it stands; held, or after an answer, there is no run`, () => {
  const { brake: b, lines, advance } = brake();
  assert.equal(b.failingRun(), null);
  b.report(overloaded);
  advance(300);
  assert.deepEqual(b.failingRun(), { calls: 1, agoMs: 300 });
  b.report(completed);
  assert.equal(b.failingRun(), null, 'an answer ends the run');

  const { brake: next, lines: nextLines, advance: later } = brake();
  next.continueRun(FAILING_IN_A_ROW - 1, 40_000);
  next.continueRun(1, 0);
  assert.deepEqual(next.failingRun(), { calls: FAILING_IN_A_ROW - 1, agoMs: 40_000 }, 'a run already counted is not replaced');
  later(10);
  next.report(overloaded);
  assert.equal(next.callsAllowed(), 0, `the ${FAILING_IN_A_ROW}th in a row, counting the earlier pass's: held`);
  assert.match(nextLines[0]?.message ?? '', new RegExp(`^the upstream answers every call with a server error \\(503, ${FAILING_IN_A_ROW} calls in a row over 40 s\\)`));
  assert.equal(next.failingRun(), null, 'held: the mark says more');
  next.continueRun(3, 0);
  assert.equal(next.callsAllowed(), 0, 'no run begins while held');
  assert.equal(lines.length, 0);
});

test("outage brake: told that another worker's call found the upstream back (the mark lifted), a held brake lets one call look at once, without the fleet's turn; all go once it is answered, and one that fails waits on as before", () => {
  const { brake: b, lines, marks, advance } = brake(true);
  b.liftedElsewhere();
  assert.equal(lines.length, 0, 'not held: nothing to say');
  b.report(refused);
  assert.equal(b.callsAllowed(), 0);
  b.liftedElsewhere();
  assert.deepEqual([b.callsAllowed(), b.needsTurn()], [1, false], 'one call looks now');
  assert.match(lines.at(-1)?.message ?? '', /^another worker found the upstream answering: one call goes now/);
  b.report(completed);
  assert.equal(b.callsAllowed(), Infinity);
  assert.deepEqual(marks, ['held', 'resumed']);
  // The upstream answers the other worker and not this one (its host's network cut): the look fails
  // and the wait goes on doubling, with no new mark for the fleet.
  b.report(refused);
  advance(OUTAGE_PROBE_FIRST_MS);
  b.turnTaken();
  b.report(refused);
  b.liftedElsewhere();
  b.report(refused);
  assert.equal(b.callsAllowed(), 0);
  advance(OUTAGE_PROBE_FIRST_MS * 4 - 1);
  b.turnTaken();
  assert.equal(b.callsAllowed(), 0, 'the look after the lift failed: 4 s, as a second failed look waits');
  advance(1);
  assert.equal(b.callsAllowed(), 1);
  assert.deepEqual(marks, ['held', 'resumed', 'held']);
});

test('outage brake in a run that ends when its calls are held (a pass): its line says they are held, not when a call goes to look', () => {
  const lines: string[] = [];
  let passing = true;
  let mono = 0;
  const log = { warn: (message: string) => void lines.push(message), info: () => undefined };
  const b = createOutageBrake({ log, monotonic: () => mono, endsWhenHeld: () => passing });
  b.report(refused);
  assert.deepEqual(lines, ['the upstream cannot be reached (ECONNREFUSED): calls are held']);
  b.report(completed);
  // The same worker's daemon run, a minute on (the line is told once a minute).
  passing = false;
  mono += OUTAGE_LINE_MS;
  b.report(refused);
  assert.match(lines[1] ?? '', /: calls are held, and one goes after 1 s to see whether it is back/);
});
