import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createClientRegistry, createSilentLogger, loadConfig, openStore, type Config, type JobStore, type Logger } from '@proxy/core';
import type { Express } from 'express';
import { createApp, type WorkerPass } from '../src/app.ts';
import { listen } from '../src/listen.ts';
import type { JobWatcher } from '../src/job-watcher.ts';
import { newCredentials, tempDir, testEnv, type TestHooks } from '../../../test/helpers/index.ts';

export interface TestApi {
  url: string;
  key: string;
  secret: string;
  store: JobStore;
  config: Config;
  dir: string;
}

/** The real app on 127.0.0.1:0 over a real SQLite file in a temp folder. */
export async function startTestApi(
  t: TestHooks,
  options: {
    env?: Record<string, string>;
    workerPass?: WorkerPass | null;
    now?: () => number;
    /** What the app sees of the store, to slow or fail a call; `store` stays the real one. */
    wrapStore?: (store: JobStore) => JobStore;
    watcher?: (store: JobStore) => JobWatcher;
    /** Where the app logs; silent when not given. */
    logger?: Logger;
    /** 'proxy-api': served as proxy-api serves it (listen.ts), not by Express's app.listen. */
    served?: 'proxy-api';
  } = {},
): Promise<TestApi> {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const { DATABASE_URL, DATABASE_SCHEMA } = testEnv(dir);
  const database = DATABASE_URL ? { DATABASE_URL, DATABASE_SCHEMA: DATABASE_SCHEMA as string } : {};
  const config = loadConfig({ cwd: dir, env: { PROXY_KEY: key, PROXY_SECRET: secret, PROXY_DB_PATH: `${dir}/db.sqlite`, ...database, ...options.env }, needs: { clients: true } });
  const store = await openStore(config.db);
  const clients = createClientRegistry(config.clients);
  const seen = options.wrapStore ? options.wrapStore(store) : store;
  const watcher = options.watcher?.(seen);
  const app = createApp({
    config,
    store: seen,
    ...(watcher ? { watcher } : {}),
    logger: options.logger ?? createSilentLogger(),
    clients: () => clients,
    workerPass: options.workerPass ?? null,
    ...(options.now ? { now: options.now } : {}),
  });
  const { server, close } = options.served === 'proxy-api' ? await listen(app, { host: '127.0.0.1', port: 0 }, createSilentLogger()) : await listenPlain(app);
  t.after(async () => {
    watcher?.close();
    server.closeAllConnections();
    await close();
    await store.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, key, secret, store, config, dir };
}

async function listenPlain(app: Express): Promise<{ server: Server; close(): Promise<void> }> {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return { server, close: () => new Promise((resolve) => server.close(() => resolve())) };
}
