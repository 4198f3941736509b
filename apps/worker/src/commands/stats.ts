import { STALLED_AFTER_SECONDS, liveWorkers, toWorkerView, type CounterValue } from '@proxy/core';
import { withStore, output, table } from './admin-context.js';

/**
 * `proxy-worker stats`: the queue by status, how long the longest-waiting due job has waited, whether
 * a worker found the upstream down (the outage mark), the live workers, and the tokens the upstream
 * has reported, in all and by model (proxy_tokens_total, for an operator with no Prometheus).
 */
export async function runStats(opts: { json?: boolean }): Promise<void> {
  await withStore(async (store) => {
    const now = store.now();
    const [queue, oldest, workers, counters, down] = await Promise.all([
      store.countByStatus(),
      store.oldestDueAt(),
      liveWorkers(store, now),
      store.readCounters(),
      store.upstreamDown(),
    ]);
    const oldestAge = oldest === null ? null : Math.max(0, Math.floor((now - oldest) / 1000));
    const stalled = workers.length === 0 && oldestAge !== null && oldestAge >= STALLED_AFTER_SECONDS;
    const { tokens, byModel } = tokenTotals(counters);
    const data = {
      queue,
      oldest_queued_age_seconds: oldestAge,
      workers_alive: workers.length,
      workers: workers.map(toWorkerView),
      // Unix seconds, as the workers' times; why, in a few words after "the upstream".
      upstream_down_since: down === null ? null : Math.floor(down.since / 1000),
      upstream_down_reason: down === null ? null : down.reason,
      tokens,
      tokens_by_model: Object.fromEntries(byModel),
    };
    output(Boolean(opts.json), data, () =>
      [
        table(['status', 'jobs'], Object.entries(queue)),
        '',
        `longest wait in queue: ${oldestAge === null ? 'none' : `${oldestAge} s`}`,
        down === null
          ? 'upstream: answering, as far as the workers have seen'
          : `upstream: found down by a worker ${Math.max(0, Math.round((now - down.since) / 1000))} s ago, as it ${down.reason}, and not seen answering since (the workers look whether it is back one call at a time, the jobs waiting with their attempts unspent)`,
        `tokens the upstream reported for completed jobs: ${count(tokens.prompt)} prompt, ${count(tokens.completion)} completion${
          byModel.size
            ? `\n${table(
                ['model', 'prompt', 'completion'],
                [...byModel].map(([model, t]) => [model, count(t.prompt), count(t.completion)]),
              )}`
            : ''
        }`,
        `workers alive: ${workers.length}${stalled ? ': the queued jobs wait for nothing; start proxy-worker daemon, or check its cron line' : ''}${
          workers.length
            ? `\n${table(
                ['worker', 'pid', 'jobs done', 'last seen', 'clock'],
                workers.map((w) => [w.id, w.pid, w.jobsDone, `${Math.round((now - w.lastSeenAt) / 1000)} s ago`, clockText(w.clockOffsetMs)]),
              )}`
            : ''
        }`,
      ].join('\n'),
    );
  });
}

type Tokens = { prompt: number; completion: number };

/**
 * proxy_tokens_total's counts: in all, and by model (the label the counters give it, so the models
 * past MODEL_LABELS_MAX as one). Counts a database kept by kind alone, before tokens were counted
 * by model, are in the totals only.
 */
function tokenTotals(counters: readonly CounterValue[]): { tokens: Tokens; byModel: Map<string, Tokens> } {
  const tokens: Tokens = { prompt: 0, completion: 0 };
  const byModel = new Map<string, Tokens>();
  for (const { name, labels, value } of counters) {
    const kind = labels.kind;
    if (name !== 'tokens_total' || (kind !== 'prompt' && kind !== 'completion')) continue;
    tokens[kind] += value;
    if (labels.model === undefined) continue;
    let own = byModel.get(labels.model);
    if (!own) byModel.set(labels.model, (own = { prompt: 0, completion: 0 }));
    own[kind] += value;
  }
  return { tokens, byModel };
}

const count = (n: number) => n.toLocaleString('en-US');

/** A worker host's clock against the store's, as its heartbeat reported it (the store's minus the host's). */
function clockText(offsetMs: number | null): string {
  if (offsetMs === null) return 'not reported';
  if (offsetMs === 0) return 'in step';
  const size = Math.abs(offsetMs) < 1000 ? `${Math.abs(offsetMs)} ms` : `${(Math.abs(offsetMs) / 1000).toFixed(1)} s`;
  return `${size} ${offsetMs > 0 ? 'behind' : 'ahead'}`;
}
