import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createReserve, maxHoldFor, RESERVE_MAX_HOLD_MS } from '../src/runner/reserve.ts';

test('the reserve holds nothing until a call has ended, then what frees in RESERVE_HOLD_MS at that pace, none for calls quicker than that', () => {
  const reserve = createReserve<string>(64);
  assert.equal(reserve.wanted(), 0);
  reserve.callTook(200);
  // 64 slots freeing every 200 ms: 8 in 25 ms.
  assert.equal(reserve.wanted(), 8);
  reserve.hold('a', 0);
  reserve.hold('b', 0);
  assert.equal(reserve.wanted(), 6);
  reserve.callTook(50);
  assert.ok(reserve.wanted() > 6, 'quicker calls, a larger reserve');
  for (let i = 0; i < 50; i++) reserve.callTook(26);
  assert.equal(reserve.wanted() + reserve.size, 61, 'calls of 26 ms: as many as free in 25');
  for (let i = 0; i < 50; i++) reserve.callTook(1);
  assert.equal(reserve.wanted(), 0, 'calls quicker than the hold itself: none');
  for (let i = 0; i < 50; i++) reserve.callTook(5000);
  assert.equal(reserve.wanted(), 0, 'calls of seconds: no reserve');
  assert.equal(createReserve<string>(64, 0).wanted(), 0);
  const off = createReserve<string>(64, 0);
  off.callTook(100);
  assert.equal(off.wanted(), 0, 'holdMs 0 keeps none');
});

test('held jobs start oldest first; one held past RESERVE_MAX_HOLD_MS is not started but given back, and the reserve waits for a call to end', () => {
  const reserve = createReserve<string>(8);
  reserve.callTook(100);
  reserve.hold('old', 0);
  reserve.hold('new', 600);
  assert.equal(reserve.take(500), 'old');
  reserve.hold('newer', 700);
  const later = 600 + RESERVE_MAX_HOLD_MS + 1;
  assert.equal(reserve.take(later), null, 'a job held too long is not started');
  assert.deepEqual(reserve.stale(later), ['new']);
  assert.equal(reserve.take(later), 'newer');
  reserve.hold('x', later);
  assert.deepEqual(reserve.stale(later + RESERVE_MAX_HOLD_MS + 1), ['x']);
  assert.equal(reserve.wanted(), 0, 'off after jobs went stale');
  reserve.callTook(100);
  assert.ok(reserve.wanted() > 0, 'on again once a call ends');
  reserve.hold('y', 0);
  reserve.hold('z', 0);
  assert.deepEqual(reserve.drain(), ['y', 'z']);
  assert.equal(reserve.size, 0);
});

test('under a short lease a job is held at most a third of it, so it starts with most of its lease left', () => {
  assert.equal(maxHoldFor(60_000), RESERVE_MAX_HOLD_MS);
  assert.equal(maxHoldFor(2_000), 666);
  const reserve = createReserve<string>(8, undefined, maxHoldFor(1_200));
  reserve.callTook(100);
  reserve.hold('a', 0);
  assert.equal(reserve.take(401), null, 'held past a third of a 1,200 ms lease');
  assert.deepEqual(reserve.stale(401), ['a']);
});
