import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { RENEW_RETRY_MS, keepLease, type LeaseEnd } from '../src/runner/lease.ts';
import type { LeaseState } from '../src/store/types.ts';

/** A keeper over a fake store and clock; `answer` decides each renewal (a promise the test may hold). */
function harness(t: TestContext, answer: (n: number) => Promise<LeaseState>, leaseMs = 3000, claimedAgoMs = 0) {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  let clock = 1_000_000;
  let monotonic = 5000;
  const renewals: number[] = [];
  const ends: LeaseEnd[] = [];
  const sendBys: number[] = [];
  const keeper = keepLease({
    store: {
      renewLease: async () => {
        renewals.push(clock);
        return answer(renewals.length);
      },
    },
    job: { id: 'req_1', leaseToken: 1, leaseUntil: clock - claimedAgoMs + leaseMs },
    leaseMs,
    now: () => clock,
    monotonic: () => monotonic,
    end: (reason) => void ends.push(reason),
    throwIfEnded: () => undefined,
    sendBy: (at) => void sendBys.push(at),
    warn: () => undefined,
  });
  const advance = async (ms: number) => {
    for (let i = 0; i < ms; i += 10) {
      clock += 10;
      monotonic += 10;
      t.mock.timers.tick(10);
      await new Promise((r) => setImmediate(r));
    }
  };
  // Time passing with no timer run: a process stopped, or its event loop held up.
  const freeze = (ms: number) => void ((clock += ms), (monotonic += ms));
  // The clock stepped (corrected by hand, NTP at boot): the monotonic clock goes on as it was.
  const step = (ms: number) => void (clock += ms);
  return { keeper, renewals: () => renewals.map((at) => at - 1_000_000), sendBys: () => sendBys.map((at) => at - 1_000_000), ends, advance, freeze, step };
}

test('lease keeper: renews a third into the lease taken at the claim, then every third', async (t) => {
  const h = harness(t, async () => 'held', 3000, 600);
  await h.advance(2500);
  h.keeper.stop();
  // Claimed 600 ms before the start: the first renewal 400 ms in, then every 1,000 ms.
  assert.deepEqual(h.renewals(), [400, 1400, 2400]);
  assert.deepEqual(h.ends, []);
  await h.advance(2000);
  assert.equal(h.renewals().length, 3, 'renewed after stop()');
});

test('lease keeper: a failed renewal is tried again after RENEW_RETRY_MS; a renewal still unanswered when the lease runs out ends the attempt as lapsed', async (t) => {
  let hold: ((state: LeaseState) => void) | null = null;
  // A lease of 6 s: renewals every 2 s, so a retry after a failure comes sooner than the next one would.
  const h = harness(t, (n) => (n === 1 ? Promise.reject(new Error('ECONNREFUSED')) : new Promise((resolve) => (hold = resolve))), 6000);
  await h.advance(2000 + RENEW_RETRY_MS + 10);
  assert.deepEqual(h.renewals(), [2000, 2000 + RENEW_RETRY_MS]);
  // The second renewal never answers (the next tick joins it): the claim's lease runs out at 6,000 ms.
  await h.advance(6000 - 2000 - RENEW_RETRY_MS - 40);
  assert.deepEqual(h.ends, []);
  await h.advance(40);
  assert.deepEqual(h.ends, ['lease_lapsed']);
  assert.equal(h.renewals().length, 2, 'one renewal at a time');
  (hold as unknown as (s: LeaseState) => void)('held');
  h.keeper.stop();
});

test("lease keeper: a renewal's answer ends the attempt when the lease was lost or the client cancelled", async (t) => {
  for (const [state, end] of [
    ['lost', 'lease_lost'],
    ['cancel_requested', 'cancelled'],
  ] as const) {
    const h = harness(t, async () => state, 3000);
    await h.advance(1010);
    h.keeper.stop();
    assert.deepEqual(h.ends, [end]);
    t.mock.timers.reset();
  }
});

test('lease keeper: confirm() renews first when less than a third of the lease is known to be left, and not otherwise', async (t) => {
  const fresh = harness(t, async () => 'held', 3000, 0);
  await fresh.keeper.confirm();
  assert.deepEqual(fresh.renewals(), [], 'a fresh lease needs no renewal before the call');
  fresh.keeper.stop();
  t.mock.timers.reset?.();
  const late = harness(t, async () => 'held', 3000, 2200);
  await late.keeper.confirm();
  assert.equal(late.renewals().length, 1);
  late.keeper.stop();
});

test('lease keeper: confirm() does not resolve on less than a third of the lease, even after its two renewals: each came back too late to leave one', async (t) => {
  const holds: Array<(state: LeaseState) => void> = [];
  const h = harness(t, () => new Promise((resolve) => holds.push(resolve)), 3000, 2200);
  const confirming = h.keeper.confirm();
  for (let i = 0; i < 2; i++) {
    await new Promise((r) => setImmediate(r));
    assert.equal(holds.length, i + 1, `renewal ${i + 1} sent`);
    // Each renewal answers 2,100 ms after it was sent: 900 ms of a 3,000 ms lease left.
    h.freeze(2100);
    holds[i]!('held');
  }
  await assert.rejects(confirming, /two thirds of the lease/);
  assert.deepEqual(h.renewals(), [0, 2100]);
  h.keeper.stop();
});

test('lease keeper: tells until when a call may still go out, a third of the lease before its known end: at the start and after each renewal that moves it', async (t) => {
  let answers = 0;
  // Claimed 600 ms ago: the lease ends at 2,400 ms, so a call may go out until 1,400.
  const h = harness(t, async () => (++answers === 2 ? 'lost' : 'held'), 3000, 600);
  assert.deepEqual(h.sendBys(), [1400]);
  // Renewed at 400 ms (held to 3,400): until 2,400. The second renewal finds the lease lost: no move.
  await h.advance(1500);
  h.keeper.stop();
  assert.deepEqual(h.renewals(), [400, 1400]);
  assert.deepEqual(h.sendBys(), [1400, 2400]);
  assert.deepEqual(h.ends, ['lease_lost']);
});

test('lease keeper: after the clock stepped back an hour, a lease whose renewals fail still ends when it truly runs out, not an hour later', async (t) => {
  // A store that moves the lease back by the step (rebaseAfterClockStep) lets another worker take the
  // job at the lease's true end: the call must not run past it.
  const h = harness(t, () => Promise.reject(new Error('ECONNREFUSED')), 3000);
  await h.advance(500);
  h.step(-3_600_000);
  await h.advance(2500 - 40);
  assert.deepEqual(h.ends, []);
  await h.advance(40);
  assert.deepEqual(h.ends, ['lease_lapsed']);
  h.keeper.stop();
});

test('lease keeper: after the clock stepped back, a renewal that succeeds holds the lease a whole lease on, as before the step', async (t) => {
  const h = harness(t, async () => 'held', 3000);
  await h.advance(500);
  h.step(-3_600_000);
  await h.advance(10_000);
  h.keeper.stop();
  assert.deepEqual(h.ends, []);
  assert.equal(h.renewals().length, 10, 'every third of the lease, before the step and after it');
  // Told after each renewal: a third of the lease before its end, on the clock as it now reads.
  assert.equal(h.sendBys().at(-1), h.renewals().at(-1)! + 3000 - 1000);
});

test('lease keeper: after the clock stepped forward past the lease, it renews at once rather than ending the attempt, and the lease holds on', async (t) => {
  const h = harness(t, async () => 'held', 3000);
  await h.advance(500);
  // Two minutes forward: by the store's clock the lease ran out long ago; by this process's time it has 2.5 s left.
  h.step(120_000);
  await h.advance(600);
  assert.deepEqual(h.ends, [], 'not ended as lapsed');
  assert.deepEqual(h.renewals(), [120_000 + 1000], 'renewed at its next look, a third into the lease');
  await h.advance(5000);
  h.keeper.stop();
  assert.deepEqual(h.ends, []);
  assert.equal(h.renewals().length, 6, 'every third of the lease after');
  // Told after the renewal: a third of the lease before its end, on the clock as it now reads.
  assert.equal(h.sendBys().at(-1), h.renewals().at(-1)! + 3000 - 1000);
});

test('lease keeper: after the clock stepped forward past the lease, a renewal that fails or finds the lease taken ends the attempt', async (t) => {
  for (const [answer, end] of [
    [() => Promise.reject(new Error('ECONNREFUSED')), 'lease_lapsed'],
    [async () => 'lost' as const, 'lease_lost'],
  ] as const) {
    const h = harness(t, answer, 3000);
    await h.advance(500);
    h.step(120_000);
    await h.advance(600);
    h.keeper.stop();
    assert.deepEqual(h.ends, [end]);
    assert.equal(h.renewals().length, 1);
    t.mock.timers.reset();
  }
});

test('lease keeper: after the clock stepped forward past the lease, a renewal that never comes back ends the attempt when the lease truly runs out', async (t) => {
  const h = harness(t, () => new Promise<LeaseState>(() => undefined), 3000);
  await h.advance(500);
  h.step(120_000);
  await h.advance(2500 - 40);
  assert.deepEqual(h.ends, []);
  assert.equal(h.renewals().length, 1);
  await h.advance(40);
  assert.deepEqual(h.ends, ['lease_lapsed']);
  h.keeper.stop();
});
