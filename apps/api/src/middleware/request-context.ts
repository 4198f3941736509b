import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import { lineWriter, type Logger } from '@proxy/core';
import { RequestLocals, ctx } from '../context.js';
import type { ApiMetrics } from '../metrics.js';

const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
/** The status logged and counted for a request whose client left before its answer was sent. */
const CLIENT_CLOSED = 499;

/**
 * Gives every request an id (the client's X-Request-Id when well-formed), a child logger, and an
 * access log line that names the client and the job the request created or read.
 */
export function requestContext(logger: Logger, metrics?: ApiMetrics): RequestHandler {
  const debug = logger.isDebugEnabled();
  const accessLine = lineWriter(logger, 'info', 'request');
  return (req, res, next) => {
    const given = req.get('x-request-id');
    const requestId = given && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
    // X-Request-Id goes out with the answer's other headers (respond.ts).
    res.locals = new RequestLocals(logger, requestId, debug);
    const started = process.hrtime.bigint();
    // 'close' rather than 'finish': a client that hangs up before its answer (a long-poll it stopped
    // waiting for) gets its line too, with nginx's 499 "client closed request" as the status.
    res.once('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const status = res.writableFinished ? res.statusCode : CLIENT_CLOSED;
      const { client, jobId, route: named } = ctx(res);
      accessLine({
        request_id: requestId,
        method: req.method,
        path: req.path,
        status,
        ms: Math.round(ms * 10) / 10,
        ...(client ? { client: client.name } : {}),
        ...(jobId ? { job_id: jobId } : {}),
      });
      if (metrics) {
        // A route's pattern, never the raw path (ids would make every request its own series), nor
        // a client's action name: only one the legacy router knows names a series.
        const route = named ?? (req.route?.path ? String(req.route.path) : 'unmatched');
        metrics.requests.inc({ route, method: req.method, status: String(status) });
        metrics.duration.observe({ route }, ms / 1000);
      }
    });
    next();
  };
}
