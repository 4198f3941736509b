import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRateLimiter } from '../src/rate-limit.ts';
import { parseRate } from '../src/rate-spec.ts';
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

test('a per-second budget ("5/s"): five at once, the sixth refused until a fifth of a second has passed', async (t) => {
  // One clock for the store's draws and the limiter's headers, moved by hand: at 5/s the sixth of six
  // reads is refused only when all six come within 200 ms, which a loaded machine cannot promise.
  let clock = 1_000_000;
  const now = () => clock;
  const store = openSqliteStore({ path: `${tempDir(t)}/db.sqlite`, now });
  t.after(() => store.close());
  const limiter = createRateLimiter(store, now);
  const spec = parseRate('5/s');
  assert.deepEqual(spec, { count: 5, periodMs: 1000 });
  const budget = [{ name: 'ip', key: 'read:ip:127.0.0.1', spec }];
  const allowed = [];
  for (let i = 0; i < 6; i++) allowed.push((await limiter.take(budget)).allowed);
  assert.deepEqual(allowed, [true, true, true, true, true, false]);
  clock += 199;
  assert.equal((await limiter.take(budget)).allowed, false, 'not before a fifth of a second');
  clock += 1;
  const next = await limiter.take(budget);
  assert.equal(next.allowed, true);
  assert.equal(next.headers['RateLimit-Policy'], '"ip";q=5;w=1');
  assert.deepEqual(['60/min', '1000/h', 'off'].map(parseRate), [{ count: 60, periodMs: 60_000 }, { count: 1000, periodMs: 3_600_000 }, null]);
});
