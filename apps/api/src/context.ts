import type { Response } from 'express';
import type { ClientIdentity, Logger } from '@proxy/core';

/** What middleware learns about a request, kept on res.locals. */
export interface RequestContext {
  requestId: string;
  log: Logger;
  /** Whether debug lines are written: lets a hot path skip building one. */
  debug: boolean;
  client?: ClientIdentity;
  /** The job this request created, read or cancelled, for the access log line. */
  jobId?: string;
}

/** The context the request-id middleware set up. */
export function ctx(res: Response): RequestContext {
  return res.locals as RequestContext;
}

/** The authenticated client; only call behind the authenticate middleware. */
export function clientOf(res: Response): ClientIdentity {
  const client = ctx(res).client;
  if (!client) throw new Error('route used without authenticate');
  return client;
}
