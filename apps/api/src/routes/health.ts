import type { RequestHandler } from 'express';
import type { ClientRegistry, JobStore } from '@proxy/core';
import { ctx } from '../context.js';

/** A worker counts as alive when its heartbeat is this recent. */
export const WORKER_ALIVE_MS = 30_000;

/**
 * GET /health: 200 when the database answers, 503 when it does not. Anyone sees the status; a caller
 * with a valid X-Proxy-Key also sees the queue by status and the live workers.
 */
export function healthHandler(store: JobStore, clients: () => ClientRegistry, now: () => number, version: string): RequestHandler {
  return async (req, res) => {
    try {
      await store.ping();
    } catch (err) {
      ctx(res).log.error('health check: database unavailable', { err });
      res.status(503).json({ status: 'unavailable', error: { code: 'unavailable', message: 'the database does not answer' } });
      return;
    }
    if (!clients().findByKey(req.get('x-proxy-key'))) {
      res.json({ status: 'ok' });
      return;
    }
    const [queue, workers] = await Promise.all([store.countByStatus(), store.listWorkers(now() - WORKER_ALIVE_MS)]);
    res.json({
      status: 'ok',
      version,
      database: store.kind,
      queue,
      workers: workers.map((w) => ({
        id: w.id,
        host: w.host,
        pid: w.pid,
        started_at: Math.floor(w.startedAt / 1000),
        last_seen_at: Math.floor(w.lastSeenAt / 1000),
        jobs_done: w.jobsDone,
      })),
    });
  };
}
