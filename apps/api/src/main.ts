#!/usr/bin/env -S node --max-semi-space-size=4
// --max-semi-space-size=4 (MB, from V8's 16): requests leave short-lived garbage, and a small young
// generation collects it as cheaply while keeping the process small. Measured under the benchmark's
// create load: peak RSS 129–131 MB against 152–156 MB, with create and lookup throughput within the
// run-to-run noise of the default. scripts/node-flags.mjs passes the same flags wherever this file is
// started with `node` rather than run as a command.
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import {
  createClientRegistry,
  createLogger,
  handleStopSignals,
  loadConfig,
  reloadClients,
  describeDatabase,
  openStore,
  runMain,
  secretValues,
  trustProxySpoofable,
} from '@proxy/core';
import { createApp, type WorkerPass } from './app.js';
import { commandLineAnswer } from './command-line.js';
import { WATCH_POLL_MS, createJobWatcher } from './job-watcher.js';
import { listen } from './listen.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

// A pass through the API is bounded so an HTTP caller is not held for long, and answers before its
// housekeeping, which may purge a large backlog for seconds.
const PASS_LIMITS = { maxJobs: 50, maxSeconds: 20, housekeepingAfter: true };

await runMain('proxy-api', async () => {
  // --help, --version, or an argument refused: answered before any setting is read.
  const answer = commandLineAnswer(process.argv.slice(2), version);
  if (answer) {
    process.stdout.write(answer.stdout ?? '');
    process.stderr.write(answer.stderr ?? '');
    process.exitCode = answer.code;
    return;
  }
  const config = loadConfig({ needs: { clients: true } });
  const logger = createLogger({ ...config.log, secrets: secretValues(config), defaultMeta: { app: 'api' }, file: 'api.log' });
  for (const note of config.notes) logger.warn(note);
  // Writes to a file no longer at PROXY_DB_PATH would be 202s for jobs no worker sees, and writes
  // under a later release's schema rows it reads otherwise: the API stops (exit 1), and its restart
  // opens the file that is there, or refuses the later schema in one line.
  const storeLost = new AbortController();
  const store = await openStore(config.db, { logger, onLost: (message) => storeLost.abort(`${message}; the API stops`) });
  // The manual worker pass needs the upstream key; without it the runner (and undici) is never loaded.
  const runner = config.upstream.apiKey ? await import('@proxy/core/runner') : null;
  const upstream = runner ? runner.createUpstreamClientFromConfig(config, (message) => logger.warn(message)) : null;
  const worker = runner && upstream ? runner.createWorkerFromConfig(config, { store, upstream, logger }) : null;
  const workerPass: WorkerPass | null = worker ? () => worker.runOnce(PASS_LIMITS) : null;
  let clients = createClientRegistry(config.clients);
  let clientList = config.clients;
  const watcher = createJobWatcher({ store, logger, pollMs: WATCH_POLL_MS });
  const app = createApp({ config, store, logger, clients: () => clients, workerPass, version, watcher });
  // SIGHUP re-reads the clients file; a bad file is refused and the clients in force stay. Reloads
  // run one after another, so that a later signal's file is the one in force.
  let reloading = Promise.resolve();
  process.on('SIGHUP', () => {
    const path = config.clientsFile;
    if (!path) {
      logger.warn('SIGHUP: no PROXY_CLIENTS_FILE to reload');
      return;
    }
    reloading = reloading.then(async () => {
      try {
        clientList = await reloadClients(clientList, path);
        clients = createClientRegistry(clientList);
        logger.info('clients reloaded', { clients: clientList.length });
      } catch (err) {
        logger.error('clients file refused on reload; the previous clients stay', { reason: (err as Error).message });
      }
    });
  });
  // Budgets that are whole again say nothing; dropping them keeps the limiter's file small.
  const purge = setInterval(() => {
    store.purgeRateLimits().catch((err: unknown) => logger.warn('rate-limit purge failed', { err }));
  }, 60_000);
  purge.unref();

  const { server, close: closeServer } = await listen(app, config.http, logger);
  const { address, port } = server.address() as AddressInfo;
  logger.info('proxy-api listening', { address, port, database: describeDatabase(config.db), version, manual_worker: Boolean(worker) });
  const spoofable = trustProxySpoofable(config.http);
  if (spoofable) logger.warn(spoofable);

  const stopPass = () => worker?.abortNow();
  if (storeLost.signal.aborted) stopPass();
  else storeLost.signal.addEventListener('abort', stopPass, { once: true });
  handleStopSignals(
    logger,
    async () => {
      const closed = closeServer();
      // Long-polls answer now with the job as it is, instead of holding the stop for up to a minute.
      watcher.close();
      await worker?.stop();
      await closed;
      await upstream?.close();
      await store.close();
      logger.info('proxy-api stopped');
    },
    { failWhen: storeLost.signal },
  );
});
