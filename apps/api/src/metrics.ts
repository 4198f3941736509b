import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** This API process's own metrics; what workers did comes from the shared counters at scrape time. */
export interface ApiMetrics {
  registry: Registry;
  requests: Counter<'route' | 'method' | 'status'>;
  duration: Histogram<'route'>;
  rateLimited: Counter<'budget'>;
}

/** One registry per app, so several apps in one process (tests) do not share counters. */
export function createApiMetrics(): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'proxy_api_' });
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
