import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLOCK_SYNC_MS, createDbClock } from '../src/store/postgres/db-clock.ts';

/**
 * A host clock the test moves, its monotonic clock, and a server read that takes `rtts` (one per
 * read) around a server `ahead` of the host's clock.
 */
function fakeHost(ahead: number, rtts: number[]) {
  const host = { ms: 1_000_000, mono: 70_000, ahead, reads: 0 };
  const pass = (ms: number) => void ((host.ms += ms), (host.mono += ms));
  const readServerMs = async () => {
    const rtt = rtts[Math.min(host.reads, rtts.length - 1)]!;
    host.reads += 1;
    // The server reads its clock a quarter into the trip: the midpoint guess is off by a quarter of it.
    pass(rtt / 4);
    const server = host.ms + host.ahead;
    pass((rtt * 3) / 4);
    return server;
  };
  // This host's clock stepped (NTP, an administrator): the server's and the monotonic clock go on as they were.
  const step = (ms: number) => void ((host.ms += ms), (host.ahead -= ms));
  return { host, readServerMs, localNow: () => host.ms, monotonic: () => host.mono, pass, step };
}

test('db clock: the offset comes from the quickest of three reads, rounded to whole ms, and now() is the host clock plus it', async () => {
  // Round trips of 40, 4 and 80 ms: the 4 ms read is off by a millisecond, the others by 10 and 20.
  const { host, readServerMs, localNow, monotonic } = fakeHost(5000, [40, 4, 80]);
  const reports: number[] = [];
  const clock = await createDbClock(readServerMs, localNow, (ms) => reports.push(ms), monotonic);
  clock.close();
  assert.equal(host.reads, 3);
  assert.equal(clock.offsetMs, 4999);
  assert.equal(clock.now(), host.ms + 4999);
  assert.ok(Number.isInteger(clock.now()));
  assert.deepEqual(reports, [4999], 'a host 5 s behind the server is reported');
});

test('db clock: an offset under a second is not reported; a later one that moved by a second is, and is used; one its round trip explains, or one unread, changes nothing', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const rtts = [2];
  const { host, readServerMs, localNow, monotonic, pass, step } = fakeHost(-300, rtts);
  const reports: number[] = [];
  const clock = await createDbClock(readServerMs, localNow, (ms) => reports.push(ms), monotonic);
  t.after(() => clock.close());
  assert.equal(clock.offsetMs, -300);
  assert.deepEqual(reports, []);

  // This host's clock is stepped back 2 s (NTP, an administrator), so the server is 2 s further
  // ahead of it. The time read stays the server's at once, carried by the monotonic clock; the next
  // measurement reports the new offset.
  step(-2000);
  pass(500);
  assert.equal(clock.now(), host.ms + 1700, "the server's time, not the host's stepped back with it");
  t.mock.timers.tick(CLOCK_SYNC_MS);
  await new Promise((r) => setImmediate(r));
  assert.equal(clock.offsetMs, 1700);
  assert.equal(clock.now(), host.ms + 1700);
  assert.deepEqual(reports, [1700]);

  // A difference that a slow round trip explains leaves the offset: 20 ms off, read in 80 ms.
  host.ahead += 20;
  rtts.splice(0, rtts.length, 80);
  t.mock.timers.tick(CLOCK_SYNC_MS);
  await new Promise((r) => setImmediate(r));
  assert.equal(clock.offsetMs, 1700);

  // A failed measurement keeps the last offset.
  let gone = false;
  let serverAhead = 0;
  const failing = await createDbClock(
    async () => {
      if (gone) throw new Error('server gone');
      return host.ms + serverAhead;
    },
    localNow,
    undefined,
    monotonic,
  );
  t.after(() => failing.close());
  // Read, this would move the offset by 5 s; unread, it stays.
  serverAhead = 5000;
  gone = true;
  t.mock.timers.tick(CLOCK_SYNC_MS);
  await new Promise((r) => setImmediate(r));
  assert.equal(failing.offsetMs, 0);
});

test("db clock: the server's own clock stepped back is followed at the next measurement, and reported", async (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const { host, readServerMs, localNow, monotonic, pass } = fakeHost(0, [2]);
  const reports: number[] = [];
  const clock = await createDbClock(readServerMs, localNow, (ms) => reports.push(ms), monotonic);
  t.after(() => clock.close());
  host.ahead -= 120_000;
  pass(1000);
  assert.equal(clock.now(), host.ms, 'until measured again, the time as it ran');
  t.mock.timers.tick(CLOCK_SYNC_MS);
  await new Promise((r) => setImmediate(r));
  assert.equal(clock.now(), host.ms - 120_000);
  assert.deepEqual(reports, [-120_000]);
});

test("db clock: a host suspended for ten minutes (its monotonic clock stopped meanwhile) reads the server's time at once, not ten minutes behind", async (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const { host, readServerMs, localNow, monotonic } = fakeHost(-300, [2]);
  const clock = await createDbClock(readServerMs, localNow, undefined, monotonic);
  t.after(() => clock.close());
  // Asleep: the host's clock and the server's go on (the host's is set again from its RTC at wake-up), the monotonic clock stands.
  host.ms += 600_000;
  assert.equal(clock.now(), host.ms - 300);
  t.mock.timers.tick(CLOCK_SYNC_MS);
  await new Promise((r) => setImmediate(r));
  assert.equal(clock.now(), host.ms - 300, 'and after the next measurement');
});
