import type { RequestHandler } from 'express';
import { AppError, type ClientRegistry } from '@proxy/core';
import { ctx } from '../context.js';

/** Requires a known X-Proxy-Key; the registry is read through a getter so a reload takes effect at once. */
export function authenticate(registry: () => ClientRegistry): RequestHandler {
  return (req, res, next) => {
    const client = ctx(res).client ?? registry().findByKey(req.get('x-proxy-key'));
    if (!client) throw new AppError('unauthorized', 'a valid X-Proxy-Key header is required');
    ctx(res).client = client;
    next();
  };
}

/**
 * Notes the client when X-Proxy-Key names one, and refuses nothing: for a rate limiter that must
 * draw from the caller's IP budget before a bad key is refused. `authenticate` enforces it after.
 */
export function identify(registry: () => ClientRegistry): RequestHandler {
  return (req, res, next) => {
    const client = registry().findByKey(req.get('x-proxy-key'));
    if (client) ctx(res).client = client;
    next();
  };
}
