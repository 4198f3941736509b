import type { Response } from 'express';
import type { ClientIdentity, Logger } from '@proxy/core';

/** What middleware learns about a request, kept on res.locals. */
export interface RequestContext {
  requestId: string;
  log: Logger;
  client?: ClientIdentity;
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
