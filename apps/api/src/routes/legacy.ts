import { Router, type RequestHandler } from 'express';
import { AppError, cutText } from '@proxy/core';
import { ctx } from '../context.js';
import { sendJson } from '../respond.js';

/** The method the old tool used for an action, and the chain its /v1 route runs. */
export interface LegacyAction {
  method: 'GET' | 'POST';
  handlers: RequestHandler[];
}

/**
 * `/index.php?action=…` and `/?action=…`, kept so the old PHP tool's clients work unchanged. Each
 * action runs the same chain as its /v1 route.
 */
export function legacyRouter(actions: Record<string, LegacyAction>, about: () => unknown): RequestHandler {
  // A Router is itself a handler that runs its chain with Express's own next() semantics.
  const chains = new Map(Object.entries(actions).map(([name, a]) => [name, { method: a.method, run: Router().use(...a.handlers) }]));
  return (req, res, next) => {
    const context = ctx(res);
    context.route = 'legacy';
    const action = req.query.action;
    if (action === undefined && req.path === '/' && req.method === 'GET') {
      sendJson(res, 200, about());
      return;
    }
    if (typeof action !== 'string') throw new AppError('invalid_request', 'give one action: request, result, worker or health');
    const route = chains.get(action);
    if (!route) throw new AppError('not_found', `unknown action ${JSON.stringify(cutText(action, 40))}; use request, result, worker or health`);
    context.route = `legacy:${action}`;
    if (req.method !== route.method && !(route.method === 'GET' && req.method === 'HEAD')) {
      throw new AppError('method_not_allowed', `action=${action} takes ${route.method}`, { headers: { Allow: route.method } });
    }
    route.run(req, res, next);
  };
}
