import { fileURLToPath } from 'node:url';
import express, { type Express, type RequestHandler } from 'express';
import { AppError, createRateLimiter, type ClientRegistry, type Config, type JobStore, type Logger } from '@proxy/core';
import { ctx } from './context.js';
import { authenticate, identify } from './middleware/authenticate.js';
import { createErrorHandler, methodNotAllowed, notFound } from './middleware/errors.js';
import { untrustedProxyHint } from './middleware/proxy-hint.js';
import { budgetAddress, clientIpFor, rateLimit } from './middleware/rate-limit.js';
import { rawBody } from './middleware/raw-body.js';
import { requestContext } from './middleware/request-context.js';
import { carryRequestHeaders } from './respond.js';
import { healthHandler } from './routes/health.js';
import { WATCH_POLL_MS, createJobWatcher, type JobWatcher } from './job-watcher.js';
import { createApiMetrics } from './metrics.js';
import { legacyRouter } from './routes/legacy.js';
import { metricsAllowList, metricsHandler } from './routes/metrics.js';
import { statsHandler } from './routes/stats.js';
import { cancelRequestHandler, createRequestHandler, getRequestHandler } from './routes/requests.js';
import { runWorkerHandler, type WorkerPass } from './routes/worker.js';
import { createRefusals } from './refusals.js';

/**
 * How long the server waits for a request's headers, for the whole request, on an idle keep-alive
 * connection, and for a client to take any of an answer it is being sent (respond.ts; while the
 * server closes, the shorter limit): slow clients cannot pin sockets, nor the memory of answers they
 * do not read, nor a stop. nginx in front must keep idle connections for less than `keepAliveMs`
 * (scripts/deploy/nginx.conf; a test holds the two together).
 */
export const SERVER_TIMEOUTS = { headersMs: 10_000, requestMs: 30_000, keepAliveMs: 5_000, stalledAnswerMs: 30_000, stalledAnswerClosingMs: 5_000 } as const;

export type { WorkerPass } from './routes/worker.js';

export interface AppDeps {
  config: Config;
  store: JobStore;
  logger: Logger;
  /** Read on every request, so a reloaded client list takes effect at once. */
  clients: () => ClientRegistry;
  /** One bounded worker pass, or null when this process has no upstream key. */
  workerPass: WorkerPass | null;
  now?: () => number;
  version?: string;
  /** Wakes long-polls; one is made when not given. main.ts passes its own so it can close it on stop. */
  watcher?: JobWatcher;
}

/** Builds the Express app from its dependencies. It neither listens nor reads the environment. */
export function createApp(deps: AppDeps): Express {
  // The store's clock: on PostgreSQL the server's, which every host goes by (heartbeats, budgets).
  const now = deps.now ?? deps.store.now;
  const app = express();
  carryRequestHeaders(app.response);
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  // Off by default: only behind a proxy that sets X-Forwarded-For may it be believed.
  app.set('trust proxy', deps.config.http.trustProxy);

  const auth = authenticate(deps.clients);
  const requireJson: RequestHandler = (req, _res, next) => {
    if (!req.is('application/json')) throw new AppError('unsupported_media_type', 'send the body as Content-Type: application/json');
    next();
  };

  const metrics = createApiMetrics();
  const limits = deps.config.rateLimits;
  const limiter = createRateLimiter(deps.store, now);
  const clientIp = clientIpFor(deps.config.http.trustProxy);
  const refused = (kind: string) => (names: string[]) => names.forEach((name) => metrics.rateLimited.inc({ budget: `${kind}_${name}` }));
  // A create draws from its IP's budget and, when the key is good, its client's, in one atomic step
  // (one trip to the store). The IP's budget is drawn before a bad key is refused, so guessing keys
  // is limited too.
  const createLimits = rateLimit(
    limiter,
    (req, res) => {
      const client = ctx(res).client;
      return [
        { name: 'ip', key: `create:ip:${budgetAddress(clientIp(req))}`, spec: limits.createsPerIp },
        ...(client ? [{ name: 'key', key: `create:key:${client.name}`, spec: client.rateLimit !== undefined ? client.rateLimit : limits.createsPerKey }] : []),
      ];
    },
    // Refused when the limiter cannot draw: its store failing is the job store failing too (they
    // share a disk or a server), so the create could not be stored anyway.
    { onRefused: refused('create') },
  );
  // Let through when the limiter cannot draw: results already stored stay readable on a full disk,
  // where the draw's write fails but reads do not. The read then fails by itself if the store does.
  const readsPerIp = rateLimit(limiter, (req) => [{ name: 'ip', key: `read:ip:${budgetAddress(clientIp(req))}`, spec: limits.readsPerIp }], {
    onRefused: refused('read'),
    passOnStoreError: true,
  });

  // What /health learns of the requests the database refused (refusals.ts).
  const refusals = createRefusals();
  const watcher = deps.watcher ?? createJobWatcher({ store: deps.store, logger: deps.logger, pollMs: WATCH_POLL_MS });
  const create = [
    identify(deps.clients),
    createLimits,
    auth,
    requireJson,
    rawBody(deps.config.http.bodyLimitBytes),
    createRequestHandler({ store: deps.store, config: deps.config, now, refusals }),
  ];
  const read = [readsPerIp, auth, getRequestHandler({ store: deps.store, watcher })];
  const work = [readsPerIp, auth, runWorkerHandler(deps.workerPass)];
  const health = [healthHandler({ store: deps.store, clients: deps.clients, now, version: deps.version ?? 'dev', requireWorker: deps.config.http.healthRequiresWorker, refusals })];

  app.use(requestContext(deps.logger, metrics));
  if (deps.config.http.trustProxy === false) app.use(untrustedProxyHint(deps.logger));

  app.post('/v1/requests', ...create);
  app.all('/v1/requests', methodNotAllowed(['POST']));
  app.get('/v1/requests/:id', ...read);
  app.delete('/v1/requests/:id', readsPerIp, auth, cancelRequestHandler({ store: deps.store, watcher }));
  app.all('/v1/requests/:id', methodNotAllowed(['GET', 'DELETE']));
  app.post('/v1/worker/run', ...work);
  app.all('/v1/worker/run', methodNotAllowed(['POST']));
  app.get('/health', ...health);
  app.all('/health', methodNotAllowed(['GET']));
  // The status page: static files only; the data comes from /health and /v1/stats with the key.
  // The page is at /dashboard/ (its files and calls are relative to it). The way there is relative
  // too, where express.static's own redirect named /dashboard/ from the root: behind a proxy that
  // serves the API under a path (/tools/gpt/), that left it.
  app.get('/dashboard', (req, res, next) => {
    if (req.path.endsWith('/')) return next();
    res.status(301).set({ Location: 'dashboard/', 'Content-Security-Policy': "default-src 'none'" }).end();
  });
  app.use(
    '/dashboard',
    express.static(fileURLToPath(new URL('../static/dashboard/', import.meta.url)), {
      index: 'index.html',
      redirect: false,
      setHeaders: (res) => {
        res.setHeader('Content-Security-Policy', "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
        res.setHeader('X-Content-Type-Options', 'nosniff');
        res.setHeader('Cache-Control', 'no-cache');
      },
    }),
  );
  app.get('/v1/stats', readsPerIp, auth, statsHandler({ store: deps.store, now }));
  app.all('/v1/stats', methodNotAllowed(['GET']));
  app.get('/metrics', metricsHandler({ store: deps.store, clients: deps.clients, metrics, allow: metricsAllowList(deps.config.http.metricsAllow), now }));
  app.all('/metrics', methodNotAllowed(['GET']));

  const legacy = legacyRouter(
    {
      request: { method: 'POST', handlers: create },
      result: { method: 'GET', handlers: read },
      worker: { method: 'GET', handlers: work },
      health: { method: 'GET', handlers: health },
    },
    () => ({ service: 'chat-async-proxy', version: deps.version ?? 'dev', docs: 'see README.md' }),
  );
  app.all(['/', '/index.php'], legacy);

  app.use(notFound);
  app.use(createErrorHandler({ refusals }));
  return app;
}
