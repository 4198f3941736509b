import type { Request, RequestHandler, Response } from 'express';
import { AppError, type Budget, type RateLimiter } from '@proxy/core';

/**
 * Draws from the budgets `budgetsFor` names, sets the RateLimit headers, and refuses with 429
 * rate_limited and Retry-After when any budget is spent. A refused request stores nothing.
 */
export function rateLimit(limiter: RateLimiter, budgetsFor: (req: Request, res: Response) => Budget[], onRefused?: (names: string[]) => void): RequestHandler {
  return async (req, res, next) => {
    const budgets = budgetsFor(req, res);
    const result = await limiter.take(budgets);
    res.set(result.headers);
    if (!result.allowed) {
      onRefused?.(result.refused);
      throw new AppError('rate_limited', `too many requests; retry in ${result.retryAfterSeconds} s`, {
        headers: { ...result.headers, 'Retry-After': String(result.retryAfterSeconds) },
      });
    }
    next();
  };
}

/** The caller's address as Express sees it: the socket's, or X-Forwarded-For's only under TRUST_PROXY. */
export function clientIp(req: Request): string {
  return req.ip ?? req.socket.remoteAddress ?? 'unknown';
}
