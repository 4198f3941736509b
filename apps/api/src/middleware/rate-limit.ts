import type { Request, RequestHandler, Response } from 'express';
import { AppError, isDatabaseUnavailable, type Budget, type RateLimiter } from '@proxy/core';
import { ctx } from '../context.js';

export interface RateLimitOptions {
  /** Counts each refusal by the budgets that refused it. */
  onRefused?: (names: string[]) => void;
  /**
   * When the limiter's own store cannot serve (a full disk, a lock held past its 5 s wait): true
   * lets the request through, false refuses it with the store's error (503 unavailable). Any other
   * error is a fault and is never passed over.
   */
  passOnStoreError?: boolean;
}

// A store that fails, fails for every request: one warning a minute says so, not one a request
// (on a full disk, a line per request would only fill it faster).
const STORE_ERROR_WARN_EVERY_MS = 60_000;

/**
 * Draws from the budgets `budgetsFor` names, sets the RateLimit headers, and refuses with 429
 * rate_limited and Retry-After when any budget is spent. A refused request stores nothing.
 */
export function rateLimit(limiter: RateLimiter, budgetsFor: (req: Request, res: Response) => Budget[], options: RateLimitOptions = {}): RequestHandler {
  let lastWarnedAt = -Infinity;
  let passedSinceWarning = 0;
  return async (req, res, next) => {
    const budgets = budgetsFor(req, res);
    let result: Awaited<ReturnType<RateLimiter['take']>>;
    try {
      result = await limiter.take(budgets);
    } catch (err) {
      if (!options.passOnStoreError || !isDatabaseUnavailable(err)) throw err;
      passedSinceWarning += 1;
      const at = Date.now();
      if (at - lastWarnedAt >= STORE_ERROR_WARN_EVERY_MS) {
        ctx(res).log.warn('rate limiter unavailable: requests pass unchecked', { err, budgets: budgets.map((b) => b.name), passed: passedSinceWarning });
        lastWarnedAt = at;
        passedSinceWarning = 0;
      }
      next();
      return;
    }
    // Sent with the answer, refused or not (respond.ts).
    ctx(res).rateLimit = result.headers;
    if (!result.allowed) {
      options.onRefused?.(result.refused);
      throw new AppError('rate_limited', `too many requests; retry in ${result.retryAfterSeconds} s`, {
        headers: { 'Retry-After': String(result.retryAfterSeconds) },
      });
    }
    next();
  };
}

/** The caller's address as Express sees it: the socket's, or X-Forwarded-For's only under TRUST_PROXY. */
export function clientIp(req: Request): string {
  return req.ip ?? req.socket.remoteAddress ?? 'unknown';
}

/**
 * clientIp for an app whose `trust proxy` is `trustProxy`. Trusting no proxy, Express's req.ip is
 * the socket's address too, but reached by parsing X-Forwarded-For on every request (proxy-addr)
 * only to set it aside; it is read from the socket instead.
 */
export function clientIpFor(trustProxy: boolean | number | string): (req: Request) => string {
  return trustProxy === false ? (req) => req.socket.remoteAddress ?? 'unknown' : clientIp;
}
