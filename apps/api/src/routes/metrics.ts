import { BlockList, isIPv4 } from 'node:net';
import type { RequestHandler } from 'express';
import { AppError, LATENCY_BUCKETS, MODEL_LABELS_MAX, OTHER_MODEL, liveWorkers, type ClientRegistry, type CounterValue, type JobStore, type WorkerHeartbeat } from '@proxy/core';
import type { ApiMetrics } from '../metrics.js';
import { clientIp } from '../middleware/rate-limit.js';

/** What the help of each family labelled by model says of the models past the bound (counter-labels.ts). */
const PAST_MODELS = ` (the first ${MODEL_LABELS_MAX} models asked for; every later one as ${OTHER_MODEL})`;

/** The store's bucket labels, in order, ending with +Inf. */
const BUCKET_LABELS = [...LATENCY_BUCKETS.map(String), '+Inf'];

/** Addresses allowed to scrape without a key (METRICS_ALLOW). */
export function metricsAllowList(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [address, prefix] = entry.split('/') as [string, string | undefined];
    const family = isIPv4(address) ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return list;
}

export interface MetricsDeps {
  store: JobStore;
  clients: () => ClientRegistry;
  metrics: ApiMetrics;
  allow: BlockList;
  now: () => number;
}

/**
 * GET /metrics in Prometheus text format: this process's HTTP counters, plus the queue and what
 * every worker recorded in the shared database. Only with a client key or from METRICS_ALLOW.
 */
export function metricsHandler({ store, clients, metrics, allow, now }: MetricsDeps): RequestHandler {
  return async (req, res) => {
    const ip = clientIp(req).replace(/^::ffff:/, '');
    const allowed = allow.check(ip, isIPv4(ip) ? 'ipv4' : 'ipv6');
    if (!allowed && !clients().findByKey(req.get('x-proxy-key'))) {
      throw new AppError('unauthorized', 'metrics need a valid X-Proxy-Key, or an address listed in METRICS_ALLOW');
    }
    const [own, counters, queue, oldest, workers, down] = await Promise.all([
      metrics.registry.metrics(),
      store.readCounters(),
      store.countByStatus(),
      store.oldestDueAt(),
      liveWorkers(store, now()),
      store.upstreamDown(),
    ]);
    const age = (since: number | null) => (since === null ? 0 : Math.max(0, (now() - since) / 1000));
    const shared = renderShared(counters, queue, age(oldest), age(down?.since ?? null), workers, store.clockOffsetMs());
    res.type(metrics.registry.contentType).send(`${own}\n${shared}`);
  };
}

function renderShared(counters: CounterValue[], queue: Record<string, number>, oldestAge: number, downAge: number, workers: WorkerHeartbeat[], ownOffsetMs: number): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string, rows: Array<[Record<string, string>, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of rows) out.push(`${name}${labelText(labels)} ${value}`);
  };
  const pick = (name: string) => counters.filter((c) => c.name === name).map((c): [Record<string, string>, number] => [c.labels, c.value]);

  family('proxy_jobs_created_total', 'counter', `Jobs accepted, by model${PAST_MODELS}`, pick('jobs_created_total'));
  family('proxy_jobs_finished_total', 'counter', `Jobs that reached a final status, by status and model${PAST_MODELS}`, pick('jobs_finished_total'));
  family(
    'proxy_upstream_calls_total',
    'counter',
    'Upstream attempts by HTTP status (or network_error, proxy_refused, certificate_rejected, timeout, bad_response, too_large, aborted)',
    pick('upstream_calls_total'),
  );
  family('proxy_retries_total', 'counter', `Attempts that were retried later, by model${PAST_MODELS}`, pick('retries_total'));
  family(
    'proxy_completions_total',
    'counter',
    "Completed jobs by why their answer's first choice stopped: stop, length (the token limit: an answer cut, or none when a reasoning model spent it thinking), content_filter, tool_calls, function_call, other, none",
    pick('completions_total'),
  );
  family(
    'proxy_tokens_total',
    'counter',
    `Tokens of completed jobs by kind (prompt, completion) and model${PAST_MODELS}, as each answer's usage reports them; an answer without usage adds none`,
    pick('tokens_total'),
  );

  // The store keeps one count per bucket; Prometheus wants them cumulative.
  const perBucket = new Map(pick('upstream_latency_seconds_bucket').map(([labels, value]) => [labels.le as string, value]));
  let running = 0;
  const buckets = BUCKET_LABELS.map((le): [Record<string, string>, number] => {
    running += perBucket.get(le) ?? 0;
    return [{ le }, running];
  });
  out.push('# HELP proxy_upstream_latency_seconds Upstream call latency', '# TYPE proxy_upstream_latency_seconds histogram');
  for (const [labels, value] of buckets) out.push(`proxy_upstream_latency_seconds_bucket${labelText(labels)} ${value}`);
  out.push(`proxy_upstream_latency_seconds_sum ${pick('upstream_latency_seconds_sum')[0]?.[1] ?? 0}`, `proxy_upstream_latency_seconds_count ${running}`);

  family(
    'proxy_queue_depth',
    'gauge',
    'Jobs by status now',
    Object.entries(queue).map(([status, n]): [Record<string, string>, number] => [{ status }, n]),
  );
  family('proxy_oldest_queued_age_seconds', 'gauge', 'How long the longest-waiting due job has waited for a worker, in seconds (0 when none)', [
    [{}, Math.round(oldestAge * 1000) / 1000],
  ]);
  family('proxy_workers_alive', 'gauge', 'Workers with a heartbeat in the last 30 s', [[{}, workers.length]]);
  family(
    'proxy_upstream_down_seconds',
    'gauge',
    'How long ago a worker found the upstream down (unreachable, a 5xx to every call, or no answer to any), not seen answering since, in seconds (0 while it answers)',
    [[{}, Math.round(downAge * 1000) / 1000]],
  );
  // Clocks: the proxy goes by the database's, but a host far from it has its NTP to mend. One series
  // for this process and one for the farthest live worker, not one per worker: their ids change at
  // every restart.
  const offsets = workers.map((w) => w.clockOffsetMs).filter((ms): ms is number => ms !== null);
  const farthest = offsets.reduce((far, ms) => (Math.abs(ms) > Math.abs(far) ? ms : far), 0);
  family('proxy_clock_offset_seconds', 'gauge', "The database's clock minus this host's, in seconds (0 on SQLite)", [[{}, ownOffsetMs / 1000]]);
  family('proxy_workers_clock_offset_max_seconds', 'gauge', "Of the live workers, the offset farthest from 0 of the database's clock minus its host's, in seconds", [
    [{}, farthest / 1000],
  ]);
  return `${out.join('\n')}\n`;
}

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}
