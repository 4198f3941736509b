import type { RequestHandler } from 'express';
import type { JobStore } from '@proxy/core';
import { ctx } from '../context.js';

/** GET /health: 200 when the database answers, 503 when it does not. Public: says nothing else. */
export function healthHandler(store: JobStore): RequestHandler {
  return async (_req, res) => {
    try {
      await store.ping();
      res.json({ status: 'ok' });
    } catch (err) {
      ctx(res).log.error('health check: database unavailable', { err });
      res.status(503).json({ status: 'unavailable', error: { code: 'unavailable', message: 'the database does not answer' } });
    }
  };
}
