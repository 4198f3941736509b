import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** This API process's own metrics; what workers did comes from the shared counters at scrape time. */
export interface ApiMetrics {
  registry: Registry;
  requests: Counter<'route' | 'method' | 'status'>;
  duration: Histogram<'route'>;
  rateLimited: Counter<'budget'>;
}

/**
 * How often the event loop's delay is sampled (prom-client's default is 10 ms). The sampler's timer
 * wakes the process even when nothing else does: sampling every 10 ms cost an idle API 22-27 ticks
 * of CPU in 20 s (about 1.2% of a core), every 100 ms 8, every second 6. A block of the loop at
 * least this long always delays a sample, so it still shows in the maximum; a shorter one shows
 * with a chance in proportion to its length.
 */
export const EVENT_LOOP_SAMPLE_MS = 100;

/** prom-client's own sampler's period, the longest a timer takes (24.8 days): its figures are replaced. */
const UNREAD_SAMPLER_MS = 2 ** 31 - 1;

/** One registry per app, so several apps in one process (tests) do not share counters. */
export function createApiMetrics(): ApiMetrics {
  const registry = new Registry();
  const prefix = 'proxy_api_';
  collectDefaultMetrics({ register: registry, prefix, eventLoopMonitoringPrecision: UNREAD_SAMPLER_MS });
  eventLoopDelayGauges(registry, prefix);
  return {
    registry,
    requests: new Counter({
      name: 'proxy_http_requests_total',
      help: 'HTTP requests by route, method and status code',
      labelNames: ['route', 'method', 'status'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'proxy_http_request_duration_seconds',
      help: 'HTTP request duration by route (long-polls included)',
      labelNames: ['route'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60],
      registers: [registry],
    }),
    rateLimited: new Counter({ name: 'proxy_rate_limited_total', help: 'Requests refused by a rate limit, by budget', labelNames: ['budget'], registers: [registry] }),
  };
}

/**
 * The event loop's delay since the last scrape, under prom-client's names
 * (`nodejs_eventloop_lag_{min,max,mean,stddev,p50,p90,p99}_seconds`), as the delay beyond the
 * sampling period. prom-client reports Node's histogram as it is, and Node records the whole time
 * between two ticks of its sampling timer, period included: an idle API read 0.100 s at every
 * percentile, which an alert on a 0.1 s p99 would take for a blocked loop. collectDefaultMetrics
 * cannot leave its own sampler out, so that one is set to a period it never reaches and its
 * gauges give way to these. Its `nodejs_eventloop_lag_seconds` (one setImmediate's wait at scrape
 * time) is right as it is and stays.
 */
function eventLoopDelayGauges(registry: Registry, prefix: string): void {
  const histogram = monitorEventLoopDelay({ resolution: EVENT_LOOP_SAMPLE_MS });
  histogram.enable();
  const beyond = (ns: number): number => Math.max(0, ns / 1e9 - EVENT_LOOP_SAMPLE_MS / 1000);
  const figures: [name: string, help: string, read: () => number][] = [
    ['min', 'The shortest', () => beyond(histogram.min)],
    ['max', 'The longest', () => beyond(histogram.max)],
    ['mean', 'The mean', () => beyond(histogram.mean)],
    ['stddev', 'The standard deviation of', () => histogram.stddev / 1e9],
    ['p50', 'The median', () => beyond(histogram.percentile(50))],
    ['p90', 'The 90th percentile of', () => beyond(histogram.percentile(90))],
    ['p99', 'The 99th percentile of', () => beyond(histogram.percentile(99))],
  ];
  const gauges: Gauge[] = figures.map(([figure, help], i) => {
    const name = `${prefix}nodejs_eventloop_lag_${figure}_seconds`;
    registry.removeSingleMetric(name);
    return new Gauge({
      name,
      help: `${help} event loop delay since the last scrape, beyond its ${EVENT_LOOP_SAMPLE_MS} ms sampling period.`,
      registers: [registry],
      // The first gauge reads the histogram for all of them (a scrape collects in the order they
      // were made) and starts it afresh; with no sample since the last scrape, each keeps its figure.
      ...(i === 0
        ? {
            collect() {
              if (histogram.count > 0) figures.forEach(([, , read], j) => gauges[j]!.set(read()));
              histogram.reset();
            },
          }
        : {}),
    });
  });
}
