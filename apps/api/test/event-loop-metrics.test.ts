import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { EVENT_LOOP_SAMPLE_MS, createApiMetrics } from '../src/metrics.ts';

/** The event-loop figures of one scrape, by name (min, max, p50 …); each must appear exactly once. */
async function eventLoopFigures(metrics: ReturnType<typeof createApiMetrics>): Promise<Record<string, number>> {
  const figures: Record<string, number> = {};
  for (const line of (await metrics.registry.metrics()).split('\n')) {
    const m = /^proxy_api_nodejs_eventloop_lag_(\w+)_seconds (\S+)$/.exec(line);
    if (!m) continue;
    assert.equal(figures[m[1]!], undefined, `${m[1]} appears twice`);
    figures[m[1]!] = Number(m[2]);
  }
  return figures;
}

test("the event loop's delay is reported beyond its sampling period: near 0 while idle (not the period itself), and a blocked loop shows in the maximum", async () => {
  const metrics = createApiMetrics();
  await sleep(EVENT_LOOP_SAMPLE_MS * 6);
  const idle = await eventLoopFigures(metrics);
  assert.deepEqual(Object.keys(idle).sort(), ['max', 'mean', 'min', 'p50', 'p90', 'p99', 'stddev']);
  // prom-client's own figures read the period (0.100 s) at every percentile of an idle loop.
  assert.ok(idle.p50! >= 0 && idle.p50! < 0.05, `idle median ${idle.p50}`);
  assert.ok(idle.min! < 0.05, `idle minimum ${idle.min}`);

  // A scrape starts the histogram afresh and it records from its next sample on, so the block
  // begins after one (three periods leave room for a loaded machine's late timers); 400 ms of it
  // delays the sample due in it by 300 ms at least.
  await sleep(EVENT_LOOP_SAMPLE_MS * 3);
  const until = Date.now() + 400;
  while (Date.now() < until);
  await sleep(EVENT_LOOP_SAMPLE_MS * 2.5);
  const blocked = await eventLoopFigures(metrics);
  assert.ok(blocked.max! >= 0.25 && blocked.max! < 5, `maximum after a 400 ms block ${blocked.max}`);
});
