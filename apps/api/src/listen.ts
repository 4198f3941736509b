import type { Server } from 'node:http';
import type { Express } from 'express';
import { sayAtMostEvery, watchOpenFiles, type Logger } from '@proxy/core';
import { SERVER_TIMEOUTS } from './app.js';

/** An error accepting connections is told at most this often, with how many came since. */
export const ACCEPT_ERROR_LINE_MS = 60_000;

/**
 * Starts listening, and watches what the server meets past its start. An error of the listening
 * socket after it listens is one accept() failed (ENOBUFS, ENOMEM, or EMFILE once libuv's spare
 * descriptor is gone): Node emits it on the server, where with no listener it would crash
 * proxy-api, every request under way with it. It is logged instead, and the server goes on. The
 * common case at the file limit says nothing at all (see watchOpenFiles), so that is watched too.
 */
export async function listen(app: Express, at: { host: string; port: number }, logger: Pick<Logger, 'error'>, now: () => number = Date.now): Promise<{ server: Server; stop(): void }> {
  const server = app.listen(at.port, at.host);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.headersTimeout = SERVER_TIMEOUTS.headersMs;
  server.requestTimeout = SERVER_TIMEOUTS.requestMs;
  server.keepAliveTimeout = SERVER_TIMEOUTS.keepAliveMs;
  const tell = sayAtMostEvery(ACCEPT_ERROR_LINE_MS, now);
  server.on('error', (err: NodeJS.ErrnoException) =>
    tell((times) => logger.error(`could not accept a connection: ${err.code ?? err.message}; the server goes on`, { code: err.code, times_seen: times })),
  );
  const openFiles = watchOpenFiles(logger, { now });
  return { server, stop: () => openFiles.stop() };
}
