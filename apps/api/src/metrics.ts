import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** This API process's own metrics; what workers did comes from the shared counters at scrape time. */
export interface ApiMetrics {
  registry: Registry;
  requests: Counter<'route' | 'method' | 'status'>;
  duration: Histogram<'route'>;
  rateLimited: Counter<'budget'>;
}

/**
 * How often the default metrics sample the event loop's delay (prom-client's default is 10 ms).
 * Its timer wakes the process even when nothing else does: sampling every 10 ms cost an idle API
 * 22-27 ticks of CPU in 20 s (about 1.2% of a core), every 100 ms 8, every second 6. A block of the
 * loop at least this long always delays a sample, so it still shows in the maximum; a shorter one
 * shows with a chance in proportion to its length.
 */
export const EVENT_LOOP_SAMPLE_MS = 100;

/** One registry per app, so several apps in one process (tests) do not share counters. */
export function createApiMetrics(): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'proxy_api_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  return {
    registry,
    requests: new Counter({ name: 'proxy_http_requests_total', help: 'HTTP requests by route, method and status code', labelNames: ['route', 'method', 'status'], registers: [registry] }),
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
