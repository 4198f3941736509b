import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_BATCH, createTurnBatch } from '../src/store/postgres/turn-batch.ts';

/** A batch whose statements are recorded; one holding `badItem` throws. */
function recorded(options: { badItem?: number } = {}) {
  const calls: number[][] = [];
  const batch = createTurnBatch<number, number>(async (items) => {
    calls.push(items);
    if (items.includes(options.badItem as number)) throw new Error(items.length > 1 ? 'batch refused' : `item ${items[0]} refused`);
    return items.map((n) => n * 10);
  });
  return { batch, calls };
}

test('calls of one event-loop turn share one statement; each gets its own answer', async () => {
  const { batch, calls } = recorded();
  assert.deepEqual(await Promise.all([1, 2, 3].map((n) => batch.run(n))), [10, 20, 30]);
  assert.deepEqual(calls, [[1, 2, 3]]);
  // A later turn is a statement of its own.
  assert.equal(await batch.run(4), 40);
  assert.deepEqual(calls, [[1, 2, 3], [4]]);
});

test('when the batch statement fails, its calls run one by one and only the bad one fails', async () => {
  const { batch, calls } = recorded({ badItem: 2 });
  const settled = await Promise.allSettled([1, 2, 3].map((n) => batch.run(n)));
  assert.deepEqual(
    settled.map((s) => s.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
  assert.deepEqual(
    settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message)),
    [10, 'item 2 refused', 30],
  );
  assert.deepEqual(calls, [[1, 2, 3], [1], [2], [3]]);
});

test('when the server cannot be reached, the calls of the batch all fail with that error, without one attempt each', async () => {
  const calls: number[][] = [];
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
  const batch = createTurnBatch<number, number>(async (items) => {
    calls.push(items);
    throw refused;
  });
  const settled = await Promise.allSettled([1, 2, 3].map((n) => batch.run(n)));
  assert.deepEqual(
    settled.map((s) => (s.status === 'rejected' ? s.reason : s.value)),
    [refused, refused, refused],
  );
  assert.deepEqual(calls, [[1, 2, 3]]);
});

test('a turn with more than MAX_BATCH calls is split into statements of at most MAX_BATCH', async () => {
  const { batch, calls } = recorded();
  const n = MAX_BATCH * 2 + 1;
  const answers = await Promise.all(Array.from({ length: n }, (_, i) => batch.run(i)));
  assert.equal(answers[n - 1], (n - 1) * 10);
  assert.deepEqual(
    calls.map((c) => c.length),
    [MAX_BATCH, MAX_BATCH, 1],
  );
});

test('drain waits for scheduled and running statements', async () => {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const done: number[] = [];
  const batch = createTurnBatch<number, number>(async (items) => {
    await gate;
    done.push(...items);
    return items;
  });
  const pending = [batch.run(1), batch.run(2)];
  let drained = false;
  const draining = batch.drain().then(() => (drained = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(drained, false, 'drain does not resolve while a statement runs');
  release();
  await draining;
  assert.deepEqual(done, [1, 2]);
  assert.deepEqual(await Promise.all(pending), [1, 2]);
});
