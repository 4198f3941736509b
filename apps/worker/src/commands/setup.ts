import { createLogger, loadConfig, describeDatabase, keyGoesInClear, openStore, secretValues, warnIfFewOpenFiles, type JobStore, type Logger, type Worker } from '@proxy/core';
import { createUpstreamClientFromConfig, createWorkerFromConfig, type UpstreamClient } from '@proxy/core/runner';

/** What both commands run on, built from configuration. */
export interface WorkerSetup {
  logger: Logger;
  store: JobStore;
  upstream: UpstreamClient;
  worker: Worker;
  /** Aborted when the store can write no more (its SQLite file moved away, a later release's migration): the worker must stop. */
  storeLost: AbortSignal;
  close(): Promise<void>;
}

/** Loads configuration (the upstream key is required) and builds the worker. */
export async function setUpWorker(): Promise<WorkerSetup> {
  const config = loadConfig({ needs: { upstream: true } });
  const logger = createLogger({ ...config.log, secrets: secretValues(config), defaultMeta: { app: 'worker' }, file: 'worker.log' });
  // Before the store opens: a note may say why it cannot (a password file left unread).
  for (const note of config.notes) logger.warn(note);
  const storeLost = new AbortController();
  const store = await openStore(config.db, { logger, onLost: (message) => storeLost.abort(`${message}; the worker stops`) });
  logger.info('database', { database: describeDatabase(config.db) });
  // The origin only: the URL may hold the proxy's password.
  if (config.upstream.proxyUrl) logger.info('upstream calls go through a proxy', { proxy: new URL(config.upstream.proxyUrl).origin });
  if (keyGoesInClear(config.upstream.baseUrl)) {
    logger.warn('OPENAI_BASE_URL is plain http to another machine: the upstream key crosses the network unencrypted (use https, or a host on this machine)', {
      upstream: new URL(config.upstream.baseUrl).origin,
    });
  }
  // The names only: a value may be a gateway's key.
  const extra = Object.keys(config.upstream.extraHeaders);
  if (extra.length > 0) logger.info('upstream calls carry UPSTREAM_HEADERS', { headers: extra });
  if (config.upstream.stream) logger.info('upstream answers are asked for streamed (UPSTREAM_STREAM) and put together');
  if (config.upstream.caCertificates.length > 0)
    logger.info("upstream certificates: trusting UPSTREAM_CA_FILE's besides Node's own", { ca_certificates: config.upstream.caCertificates.length });
  warnIfFewOpenFiles(logger, config.worker.concurrency);
  const upstream = createUpstreamClientFromConfig(config, (message) => logger.warn(message));
  const worker = createWorkerFromConfig(config, { store, upstream, logger });
  // Nothing it does now could be written where anyone looks: calls in flight end at once.
  storeLost.signal.addEventListener('abort', () => worker.abortNow(), { once: true });
  return {
    logger,
    store,
    upstream,
    worker,
    storeLost: storeLost.signal,
    async close() {
      await upstream.close();
      await store.close();
    },
  };
}
