import type { RequestHandler } from 'express';
import { liveWorkers, toWorkerView, type ClientRegistry, type JobStore } from '@proxy/core';
import { ctx } from '../context.js';
import { sendJson } from '../respond.js';
import type { Refusals } from '../refusals.js';

export interface HealthDeps {
  store: JobStore;
  clients: () => ClientRegistry;
  now: () => number;
  version: string;
  requireWorker: boolean;
  /** Whether the database refused this API's requests lately, though it answers the ping (refusals.ts). */
  refusals?: Pick<Refusals, 'lastRefusedAgoMs'>;
}

/**
 * GET /health: 200 when the database answers (and, with HEALTH_REQUIRE_WORKER, a worker is alive),
 * 503 otherwise; a database that refused this API's requests in the last seconds (a full disk, the
 * write lock held elsewhere) does not answer, though its ping does. Anyone sees `status`; a caller
 * with a valid X-Proxy-Key also sees why, the queue by status, how long the longest-waiting due job
 * has waited, the live workers, since when a worker has found the upstream down (the outage mark),
 * the version, and how far this API host's clock is off the database's (the workers' are in their
 * heartbeats).
 */
export function healthHandler({ store, clients, now, version, requireWorker, refusals }: HealthDeps): RequestHandler {
  return async (req, res) => {
    const detailed = clients().findByKey(req.get('x-proxy-key')) !== null;
    let problem: string | null = null;
    try {
      await store.ping();
    } catch (err) {
      ctx(res).log.error('health check: database unavailable', { err });
      problem = 'the database does not answer';
    }
    const refusedAgo = problem ? null : (refusals?.lastRefusedAgoMs() ?? null);
    if (refusedAgo !== null) problem = `the database refused a request ${Math.round(refusedAgo / 1000)} s ago; proxy-api's log says why`;
    const workers = problem || !(detailed || requireWorker) ? [] : await liveWorkers(store, now());
    if (!problem && requireWorker && workers.length === 0) problem = 'no worker has been seen in the last 30 s';
    const code = problem ? 503 : 200;
    const status = problem ? 'unavailable' : 'ok';
    if (!detailed) {
      sendJson(res, code, { status });
      return;
    }
    const body: Record<string, unknown> = { status, version, database: store.kind, clock_offset_ms: store.clockOffsetMs() };
    if (problem) body.error = { code: 'unavailable', message: problem };
    if (problem !== 'the database does not answer') {
      const [queue, oldest, down] = await Promise.all([store.countByStatus(), store.oldestDueAt(), store.upstreamDown()]);
      body.queue = queue;
      body.oldest_queued_age_seconds = oldest === null ? null : Math.max(0, Math.floor((now() - oldest) / 1000));
      body.workers = workers.map(toWorkerView);
      // Told, not a failure of this API's: a worker found the upstream down (Unix seconds, as the
      // workers' times), and why in a few words after "the upstream".
      body.upstream_down_since = down === null ? null : Math.floor(down.since / 1000);
      body.upstream_down_reason = down === null ? null : down.reason;
    }
    sendJson(res, code, body);
  };
}
