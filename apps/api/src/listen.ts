import { STATUS_CODES, createServer, maxHeaderSize, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Express } from 'express';
import { AppError, ConfigError, sayAtMostEvery, watchOpenFiles, type Logger } from '@proxy/core';
import { SERVER_TIMEOUTS } from './app.js';
import { expressObjects } from './express-objects.js';
import { holdContinue } from './expect-continue.js';
import { limitStalledAnswers, sendJson } from './respond.js';

/** An error accepting connections is told at most this often, with how many came since. */
export const ACCEPT_ERROR_LINE_MS = 60_000;

/** How long a closing server keeps listening, and then how often it closes the connections gone idle. */
export const CLOSING_SWEEP_MS = 100;

/** Where a connection keeps the answer to its latest request. */
const LATEST = Symbol('latest answer');

/**
 * Starts listening, and watches what the server meets past its start. An error of the listening
 * socket after it listens is one accept() failed (ENOBUFS, ENOMEM, or EMFILE once libuv's spare
 * descriptor is gone): Node emits it on the server, where with no listener it would crash
 * proxy-api, every request under way with it. It is logged instead, and the server goes on. The
 * common case at the file limit says nothing at all (see watchOpenFiles), so that is watched too.
 * `close()` stops taking connections and resolves once the last one has ended.
 */
export async function listen(
  app: Express,
  at: { host: string; port: number },
  logger: Pick<Logger, 'error'>,
  now: () => number = Date.now,
  stalls: { stalledAnswerMs: number; stalledAnswerClosingMs: number } = SERVER_TIMEOUTS,
): Promise<{ server: Server; close(): Promise<void> }> {
  let closing = false;
  // Each open connection, and on it the answer of its latest request (see close()).
  const connections = new Set<Socket>();
  // Node's own check of the Host header answers a bare 400 with no body; it is made here instead.
  // Requests and responses are made as Express's own (express-objects.ts).
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    // Closing, each answer ends its connection (see close()).
    if (closing) res.setHeader('Connection', 'close');
    (req.socket as Socket & { [LATEST]?: ServerResponse })[LATEST] = res;
    if (req.headers.host === undefined && req.httpVersion === '1.1') {
      res.setHeader('Connection', 'close');
      sendJson(res, 400, new AppError('invalid_request', 'an HTTP/1.1 request needs a Host header').toJSON());
      return;
    }
    app(req, res);
  };
  const server = createServer({ requireHostHeader: false, ...expressObjects(app) }, serve);
  // The 100 Continue goes out when a route reads the body, not as the headers arrive (expect-continue.ts).
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    holdContinue(res);
    serve(req, res);
  });
  server.listen(at.port, at.host);
  await new Promise<void>((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException) => reject(listenFailure(err, at));
    server.once('error', fail);
    server.once('listening', () => {
      server.off('error', fail);
      resolve();
    });
  });
  // Called once the last open connection has closed, while close() waits for that.
  let lastClosed: (() => void) | null = null;
  server.on('connection', (socket: Socket) => {
    connections.add(socket);
    socket.once('close', () => {
      connections.delete(socket);
      if (connections.size === 0) lastClosed?.();
    });
  });
  server.headersTimeout = SERVER_TIMEOUTS.headersMs;
  server.requestTimeout = SERVER_TIMEOUTS.requestMs;
  server.keepAliveTimeout = SERVER_TIMEOUTS.keepAliveMs;
  limitStalledAnswers(server, stalls.stalledAnswerMs);
  const tell = sayAtMostEvery(ACCEPT_ERROR_LINE_MS, now);
  server.on('error', (err: NodeJS.ErrnoException) =>
    tell((times) => logger.error(`could not accept a connection: ${err.code ?? err.message}; the server goes on`, { code: err.code, times_seen: times })),
  );
  server.on('clientError', answerClientError);
  // CONNECT asks the server to be a proxy, which it is not; unanswered, the connection was dropped.
  server.on('connect', (_req, socket: Duplex) => answerOnSocket(socket, new AppError('method_not_allowed', 'CONNECT is not allowed: this is not a proxy')));
  const openFiles = watchOpenFiles(logger, { now });
  return {
    server,
    close() {
      closing = true;
      openFiles.stop();
      // server.close() waits for every connection to end, and closes only those idle at that
      // moment: a client sending request after request on a keep-alive connection (nginx's upstream
      // keepalive, an agent under steady load) never left one idle, and the first SIGTERM's drain
      // waited for the load to stop (seen: five of eight SIGTERMs under four clients' creates not
      // done after 20 s). So each answer from here on says `Connection: close`, those under way
      // included. And Node takes a connection whose answer has just gone out for idle until it has
      // read the next request: closed at once, that request failed unanswered (seen: three of four
      // clients' in one drain). So the server stops listening now, with net.Server's own close,
      // which leaves connections open, and closes the idle ones CLOSING_SWEEP_MS later, when the
      // clients that sent again have been answered with a close; then again every CLOSING_SWEEP_MS.
      // An answer its client is not taking held the stop for the stall limit (30 to 60 s; seen: 58.7
      // s, past systemd's 40 s, whose SIGKILL then ends the drain): from now it gets the shorter
      // limit, those under way included. A client still taking its answer keeps it.
      limitStalledAnswers(server, stalls.stalledAnswerClosingMs);
      for (const socket of connections) {
        const res = (socket as Socket & { [LATEST]?: ServerResponse })[LATEST];
        if (res && !res.headersSent) res.setHeader('Connection', 'close');
        else if (res && !res.writableFinished && socket.writableLength > 0) socket.setTimeout(stalls.stalledAnswerClosingMs);
      }
      // net.Server calls back once it counts no connection, before their sockets have emitted
      // 'close', and their answers theirs: a request cut at the end of a drain (a stalled answer)
      // lost its access line, the process gone first. So the close waits for those too.
      const closed = new Promise<void>((resolve) => NetServer.prototype.close.call(server, () => resolve())).then(() =>
        connections.size === 0 ? undefined : new Promise<void>((resolve) => (lastClosed = resolve)),
      );
      let sweep: NodeJS.Timeout | undefined;
      const first = setTimeout(() => {
        server.closeIdleConnections();
        sweep = setInterval(() => server.closeIdleConnections(), CLOSING_SWEEP_MS);
      }, CLOSING_SWEEP_MS);
      return closed.finally(() => {
        clearTimeout(first);
        clearInterval(sweep);
      });
    },
  };
}

/**
 * Why the server could not listen, naming the setting to look at; Node's own words
 * ("listen EADDRINUSE: address already in use 127.0.0.1:8000") named neither. Only a port the
 * process may not bind stops it as a setting does (exit 78): a port in use frees up when the
 * program holding it stops (an earlier proxy-api still draining), and an address not there yet, or
 * a name not resolving yet, can come with the network, so systemd's restart may still succeed.
 */
export function listenFailure(err: NodeJS.ErrnoException, at: { host: string; port: number }): Error {
  const where = `${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return new Error(`cannot listen on ${where}: another program listens there; stop it, or set PORT (or HOST) to another`);
    case 'EACCES':
      return new ConfigError(`PORT: not allowed to listen on ${where} (a port below 1024 needs root or CAP_NET_BIND_SERVICE); set PORT to 1024 or above`);
    case 'EADDRNOTAVAIL':
      return new Error(`cannot listen on ${where}: HOST is not an address of this machine (not yet, or not at all)`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new Error(`cannot listen on ${where}: HOST ${JSON.stringify(at.host)} does not resolve to an address (${err.code})`);
    default:
      return err;
  }
}

/**
 * What Node answers itself, before any route sees the request, as the routes answer: a JSON error
 * with a code from the closed list. Node's own answers carried no body at all: a 431 for headers
 * over its 16 KB, a 400 for what is not HTTP, a 408 for a request not received in time.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  // Nothing can be answered on a connection that is gone, or after an answer has begun.
  const started = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
  if (err.code === 'ECONNRESET' || !socket.writable || started) {
    socket.destroy();
    return;
  }
  const error =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new AppError('headers_too_large', `the request line and headers are over ${maxHeaderSize / 1024} KB`)
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new AppError(
            'request_timeout',
            `the request was not received in time (its headers within ${SERVER_TIMEOUTS.headersMs / 1000} s, all of it within ${SERVER_TIMEOUTS.requestMs / 1000} s)`,
          )
        : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
          ? new AppError('payload_too_large', 'the chunk extensions of the body are too large')
          : new AppError('invalid_request', 'the request is not valid HTTP/1.1');
  answerOnSocket(socket, error);
}

/** Writes `error` as a whole HTTP answer straight to the connection, and closes it. */
function answerOnSocket(socket: Duplex, error: AppError): void {
  const body = JSON.stringify(error.toJSON());
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
