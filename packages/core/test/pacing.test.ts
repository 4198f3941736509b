/**
 * The worker's side of pacing (runner/pacing.ts) over a real store: how many draws it makes, in what
 * order, and when. The store's own rules for a draw are in store-contract.test.ts.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { openTestStore, tempDir, testEnv, within, type TestHooks } from '../../../test/helpers/index.ts';
import { createPacing, sharedPauseReads } from '../src/runner/pacing.ts';
import type { ClaimedJob, JobStore } from '../src/store/types.ts';

/**
 * A store whose every acquireUpstream is counted; with `tripMs`, as over a network: each draw is made
 * half of that after it was asked, and answered half of it after it was made.
 */
async function countedStore(t: TestHooks, tripMs = 0) {
  const store = await openTestStore(testEnv(tempDir(t)));
  t.after(() => store.close());
  const draws = { count: 0 };
  const counted: JobStore = Object.create(store, {
    acquireUpstream: {
      value: async (request: Parameters<JobStore['acquireUpstream']>[0]) => {
        draws.count += 1;
        const halfway = () => new Promise((r) => setTimeout(r, tripMs / 2));
        if (tripMs > 0) await halfway();
        const wait = await store.acquireUpstream(request);
        if (tripMs > 0) await halfway();
        return wait;
      },
    },
  });
  return { store, counted, draws };
}

/** An attempt's abort signal, as process-job's AttemptSignal. */
class Signal extends EventEmitter {
  aborted = false;
  reason: unknown = undefined;
  abort(reason: unknown) {
    this.aborted = true;
    this.reason = reason;
    this.emit('abort');
  }
}

const job = { request: { model: 'm', messages: [{ role: 'user', content: 'paced' }] } } as unknown as ClaimedJob;

/**
 * The spans between turns taken closer than `interval` allows, less `slack` (a commit's own time, as
 * the answers that carry it are seen). An answer that comes back late (a commit or this loop held up
 * on a loaded machine) lengthens the span before it and shortens the one after by as much (seen in
 * CI: 109 then 10 ms at 50; under a loaded suite 273 then 153 at 200); two calls let through in one
 * turn shorten the one span and leave the one before it as it was. So a short span passes only where
 * the two spans ending with it make their two intervals, less the slack.
 */
function tooClose(spans: number[], interval: number, slack = 25): number[] {
  return spans.filter((span, i) => span < interval - slack && (i === 0 || spans[i - 1]! + span < 2 * interval - slack));
}

test('under a budget, a process’s waiting calls line up: one draw at a time, not every slot at every turn', async (t) => {
  const { counted, draws } = await countedStore(t);
  const pacing = createPacing(counted, { rpm: 1200, tpm: null }); // one call every 50 ms
  const slots = 16;
  const taken: number[] = [];
  await within(
    Promise.all(Array.from({ length: slots }, () => pacing(job, new Signal()).then((wait) => (assert.equal(wait, 0), taken.push(performance.now()))))),
    10_000,
    'sixteen turns',
  );
  assert.equal(taken.length, slots);
  // Each turn: the draw that takes it, the next in line's draw that learns the wait, now and then one
  // more (woken a little early). With every slot drawing at every turn, 187 (measured, the line taken out).
  assert.ok(draws.count <= 3 * slots, `${draws.count} draws for ${slots} calls`);
  // Seen when the answers come back, which carry each commit's own time (a flush to disk).
  const spans = taken.slice(1).map((at, i) => at - taken[i]!);
  assert.deepEqual(tooClose(spans, 50), [], `turns ${spans.map((s) => s.toFixed(0)).join(', ')} ms apart; 50 ms each`);
});

test('a call whose attempt ends while it waits in line leaves it at once, and those behind it still get their turns', async (t) => {
  const { counted } = await countedStore(t);
  const pacing = createPacing(counted, { rpm: 120, tpm: null }); // one call every 500 ms
  assert.equal(await pacing(job, new Signal()), 0);
  const [second, third, fourth] = [new Signal(), new Signal(), new Signal()];
  const waiting = [pacing(job, second), pacing(job, third), pacing(job, fourth)];
  const started = performance.now();
  third.abort('shutdown');
  await assert.rejects(waiting[1]!, (err) => err === 'shutdown');
  assert.ok(performance.now() - started < 400, 'the one that left did not wait for the turn of the one ahead');
  assert.deepEqual(await within(Promise.all([waiting[0], waiting[2]]), 5000, 'the others'), [0, 0]);
});

test('the wait is slept less the time its answer took to come back, so a slow database does not lose part of every turn', async (t) => {
  // A round trip of 40 ms: sleeping the whole wait once the answer is back would make each draw 40
  // ms past its turn (20 for the answer, 20 for the next draw to arrive), 240 ms apart where the
  // budget gives 200. Slept less the trip, the next draw is sent half a trip before the turn.
  const { counted } = await countedStore(t, 40);
  const pacing = createPacing(counted, { rpm: 300, tpm: null });
  const taken: number[] = [];
  await Promise.all(Array.from({ length: 13 }, () => pacing(job, new Signal()).then(() => taken.push(performance.now()))));
  const spans = taken.slice(1).map((at, i) => at - taken[i]!);
  t.diagnostic(`turns taken ${spans.map((s) => s.toFixed(0)).join(', ')} ms apart`);
  // Not every turn: a draw woken a little early (the trip is not the same both ways, about every
  // other time here) learns it has a millisecond to wait, and the draw after that comes a whole trip
  // late; so does one behind a loaded machine's late timer. Without the correction none is on time.
  const onTime = spans.filter((span) => span < 220).length;
  assert.ok(onTime >= 1, `no turn of ${spans.length} taken within 220 ms of the one before, where the budget gives 200`);
  assert.deepEqual(tooClose(spans, 200), [], 'never closer than the budget allows (less a commit’s own time, as above)');
});

test('jobs starting in the same turn share one read of the pause; budgets are still drawn call by call', async (t) => {
  const dir = tempDir(t);
  const store = await openTestStore(testEnv(dir));
  t.after(() => store.close());
  let reads = 0;
  const counted: JobStore = Object.create(store, {
    acquireUpstream: { value: (request: Parameters<JobStore['acquireUpstream']>[0]) => ((reads += 1), store.acquireUpstream(request)) },
  });
  const acquire = sharedPauseReads(counted);
  const free = { rpm: null, tpm: null, tokens: 10 };
  assert.deepEqual(await Promise.all(Array.from({ length: 10 }, () => acquire(free))), Array(10).fill(0));
  assert.equal(reads, 1, 'ten jobs, one read');
  await new Promise((r) => setImmediate(r));
  await store.pauseUpstream(Date.now() + 60_000);
  const [wait] = await Promise.all([acquire(free), acquire(free)]);
  assert.ok((wait ?? 0) > 50_000, 'the next turn reads again, and sees the pause');
  assert.equal(reads, 2);
  await store.pauseUpstream(0);
  await new Promise((r) => setImmediate(r));
  const paced = { rpm: 600, tpm: null, tokens: 10 };
  await Promise.all(Array.from({ length: 3 }, () => acquire(paced)));
  assert.equal(reads, 5, 'with a budget every call draws from it');
});
