import { LATENCY_BUCKETS } from '../types.js';
import type { Db } from './open-database.js';

/** Adds to named counters; call inside the transaction of the write being counted. */
export function createCounters(db: Db) {
  const upsert = db.prepare<[string, string, number]>(
    'INSERT INTO counters (name, labels, value) VALUES (?, ?, ?) ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value',
  );
  const all = db.prepare<[], { name: string; labels: string; value: number }>('SELECT name, labels, value FROM counters ORDER BY name, labels');
  return {
    /** Labels are stored as JSON with sorted keys, so one label set is always one row. */
    add(name: string, labels: Record<string, string>, by = 1) {
      const sorted = Object.fromEntries(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
      upsert.run(name, JSON.stringify(sorted), by);
    },
    /** One upstream attempt: its status, its latency in the histogram. */
    observeAttempt(upstreamStatus: string, latencyMs: number) {
      this.add('upstream_calls_total', { code: upstreamStatus });
      const seconds = latencyMs / 1000;
      const le = LATENCY_BUCKETS.find((b) => seconds <= b);
      this.add('upstream_latency_seconds_bucket', { le: le === undefined ? '+Inf' : String(le) });
      this.add('upstream_latency_seconds_sum', {}, seconds);
    },
    read() {
      return all.all().map((r) => ({ name: r.name, labels: JSON.parse(r.labels) as Record<string, string>, value: r.value }));
    },
  };
}
