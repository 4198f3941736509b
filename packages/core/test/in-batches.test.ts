import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BATCH_TARGET_MS, inBatches } from '../src/store/in-batches.ts';

/** A table of `rows` rows, each costing `msPerRow` to write, on a clock that only moves when they are written or slept on. */
function fakeTable(rows: number, msPerRow: number) {
  let left = rows;
  let t = 0;
  const limits: number[] = [];
  const sleeps: number[] = [];
  return {
    limits,
    sleeps,
    left: () => left,
    options: {
      clock: () => t,
      sleep: async (ms: number) => {
        sleeps.push(ms);
        t += ms;
      },
    },
    batch: (limit: number) => {
      limits.push(limit);
      const n = Math.min(limit, left);
      left -= n;
      t += n * msPerRow;
      return n;
    },
  };
}

test('batches are sized to take about BATCH_TARGET_MS each, with a pause as long as each between them, until one comes back short', async () => {
  const table = fakeTable(10_000, 0.1);
  assert.equal(await inBatches(table.batch, table.options), 10_000);
  assert.equal(table.left(), 0);
  const perBatch = BATCH_TARGET_MS / 0.1;
  assert.deepEqual(
    table.limits.slice(1),
    Array.from({ length: table.limits.length - 1 }, () => perBatch),
    'after the first, each batch is what fits in the target',
  );
  // The first, the full ones after it, and the short one that ends the pass (empty here, as 9,500 rows fill 95 batches).
  assert.equal(table.limits.length, 1 + Math.floor((10_000 - table.limits[0]!) / perBatch) + 1);
  // The first batch took limits[0] × 0.1 ms, every later full one BATCH_TARGET_MS; the last (short) one is not followed by a pause.
  assert.deepEqual(table.sleeps, [Math.ceil(table.limits[0]! * 0.1), ...Array.from({ length: table.sleeps.length - 1 }, () => BATCH_TARGET_MS)]);
  assert.equal(table.sleeps.length, table.limits.length - 1);
});

test('heavy rows make small batches; cheap rows large ones; an empty table is one query', async () => {
  const heavy = fakeTable(200, 5);
  assert.equal(await inBatches(heavy.batch, heavy.options), 200);
  assert.ok(
    heavy.limits.slice(1).every((limit) => limit <= 10),
    `heavy: ${heavy.limits}`,
  );
  const cheap = fakeTable(100_000, 0.001);
  await inBatches(cheap.batch, cheap.options);
  assert.ok(Math.max(...cheap.limits) > 5000, `cheap: ${cheap.limits}`);
  const empty = fakeTable(0, 1);
  assert.equal(await inBatches(empty.batch, empty.options), 0);
  assert.equal(empty.limits.length, 1);
  assert.deepEqual(empty.sleeps, []);
});

test('an abort stops the pass between two batches; what was written stays counted', async () => {
  const table = fakeTable(10_000, 0.1);
  const stop = new AbortController();
  const total = await inBatches(
    (limit) => {
      if (table.limits.length === 2) stop.abort();
      return table.batch(limit);
    },
    { ...table.options, signal: stop.signal },
  );
  assert.equal(table.limits.length, 3, 'the batch running when the abort came ends, and no other starts');
  assert.equal(total, 10_000 - table.left());
  assert.ok(table.left() > 0);
});
