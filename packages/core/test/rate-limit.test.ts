import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRateLimiter } from '../src/rate-limit.ts';
import { openSqliteStore } from '../src/store/sqlite/sqlite-job-store.ts';
import { tempDir } from '../../../test/helpers/index.ts';

test('with nothing to draw, the takes of one event-loop turn are allowed together at its end, as drawn ones are', async (t) => {
  const store = openSqliteStore({ path: `${tempDir(t)}/db.sqlite` });
  t.after(() => store.close());
  const limiter = createRateLimiter(store);
  const order: string[] = [];
  // Queued before the takes: a take that answered in its own turn would come before it.
  setImmediate(() => order.push('end of turn'));
  const results = await Promise.all([
    limiter.take([]).then((r) => (order.push('none'), r)),
    limiter.take([{ name: 'ip', key: 'read:ip:127.0.0.1', spec: null }]).then((r) => (order.push('off'), r)),
  ]);
  assert.deepEqual(order, ['end of turn', 'none', 'off']);
  assert.deepEqual(results, Array(2).fill({ allowed: true, refused: [], retryAfterSeconds: 0, headers: {} }));
  // A drawn budget is decided in the same place, at the turn's end, and reports itself.
  const drawn = await limiter.take([{ name: 'ip', key: 'read:ip:127.0.0.1', spec: { count: 2, periodMs: 60_000 } }]);
  assert.equal(drawn.allowed, true);
  assert.equal(drawn.headers['RateLimit-Policy'], '"ip";q=2;w=60');
});
