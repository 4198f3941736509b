import type { RequestHandler } from 'express';
import { AppError, type RunReport } from '@proxy/core';
import { ctx } from '../context.js';
import { sendJson } from '../respond.js';

/** Runs one bounded worker pass; null when this API process has no upstream key. */
export type WorkerPass = () => Promise<RunReport>;

/**
 * POST /v1/worker/run (legacy: GET ?action=worker): processes what is due now and answers what it
 * did. Calls that arrive while a pass runs share that pass instead of starting a second one.
 */
export function runWorkerHandler(pass: WorkerPass | null): RequestHandler {
  let running: Promise<RunReport> | null = null;
  return async (_req, res) => {
    if (!pass) throw new AppError('upstream_not_configured', 'this API process has no upstream key; run proxy-worker, or set OPENAI_API_KEY for the API too');
    running ??= pass().finally(() => {
      running = null;
    });
    const report = await running;
    ctx(res).log.info('worker pass', { ...report });
    sendJson(res, 200, { object: 'proxy.worker_pass', ...report });
  };
}
