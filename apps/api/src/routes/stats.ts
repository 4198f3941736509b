import type { RequestHandler } from 'express';
import { toJobView, type JobStore } from '@proxy/core';
import { clientOf } from '../context.js';
import { sendJson } from '../respond.js';

/** The status page's chart window. */
const WINDOW_MS = 3_600_000;

/**
 * GET /v1/stats: jobs finished per minute over the last hour, by status (counts only, for the whole
 * service), and the caller's own latest failed jobs with their errors.
 */
export function statsHandler({ store, now }: { store: JobStore; now: () => number }): RequestHandler {
  return async (_req, res) => {
    const client = clientOf(res);
    const at = now();
    const since = at - WINDOW_MS;
    const [perMinute, failed] = await Promise.all([store.finishedPerMinute(since), store.listJobs({ status: 'failed', client: client.name, limit: 10 })]);
    sendJson(res, 200, {
      object: 'proxy.stats',
      // The status page places the hour's minutes by this, not by the browser's clock, which may be off.
      server_time: Math.floor(at / 1000),
      window_seconds: WINDOW_MS / 1000,
      per_minute: perMinute.map((p) => ({ minute: Math.floor(p.minute / 1000), status: p.status, count: p.count })),
      latest_failed: failed.map(toJobView),
    });
  };
}
