import { ServerResponse, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { RequestLocals } from './context.js';

const NONE: readonly string[] = [];

/** Per server (listen.ts), how long an answer may wait for its client to take any of it. */
const stallLimits = new WeakMap<object, number>();

/**
 * Closes a connection whose client has taken nothing of its answer for `ms`. Node keeps what a
 * client has not read in memory, and no timeout of its own ends a response that is being written:
 * a client that asked for a large result and stopped reading (hung, stopped, or doing it on purpose)
 * held it for good. Seen: twenty such reads of one 8 MB answer grew proxy-api from 126 MB to 1 GB,
 * still 758 MB a minute later, every connection still open.
 */
export function limitStalledAnswers(server: Server, ms: number): void {
  stallLimits.set(server, ms);
}

/**
 * Every JSON answer the API sends goes through here, errors included. It writes what res.json ends
 * up sending (the same Content-Type and Content-Length; a HEAD request gets the headers only, as
 * Node drops its body) without the settings lookups and header bookkeeping of res.json and res.send.
 * Measured (AMD EPYC, profile.ts pinned, three alternating pairs): lookups 112-118 µs of the API's
 * CPU against 123-135 with res.json, creates 193-198 against 201-209. It needs only Node's response,
 * so listen.ts answers with it too, before Express sees a request.
 *
 * The whole head goes out in one writeHead with its headers as a list: `headers` (the answer's own,
 * as name, value, name, value), X-Request-Id and the RateLimit headers the middleware gathered on the
 * request's locals, and the JSON ones. Each setHeader before it filed the header in Node's header
 * map (its name lowercased, an entry made) for `_storeHeader` to read back; a head given whole skips
 * that, and Express's res.set before it. Counted (callgrind, the API's main thread, 2,000 requests
 * after 5,000): a lookup 243,720 instructions (242,696 and 243,326 in a first draft) against 257,999
 * and 255,431 with each header set on its own; a create 411,795 and 414,086 against 439,591.
 */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: readonly string[] = NONE): void {
  const text = JSON.stringify(body);
  const head = carriedHeaders(res);
  for (const item of headers) head.push(item);
  // Bytes once, for a large answer: its length is the header, and it goes out in pieces.
  const bytes = text.length > ANSWER_PIECE_BYTES ? Buffer.from(text) : null;
  // A job's answer changes (queued, then completed) and is its client's alone: no cache on the way
  // (a proxy on a plain-http network, a browser) may keep one. X-Proxy-Key, unlike Authorization,
  // does not keep a shared cache from storing it by itself.
  head.push('Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(bytes ? bytes.length : Buffer.byteLength(text)), 'Cache-Control', 'no-store');
  res.writeHead(status, head);
  if (bytes) endInPieces(res, bytes);
  else res.end(text);
  // Whatever the kernel did not take at once waits in memory for the client: watched from now.
  const socket = res.socket;
  if (socket !== null && socket.writableLength > 0) watchStall(res, socket);
}

/** A larger answer goes out this many bytes at a time (endInPieces). */
const ANSWER_PIECE_BYTES = 64 * 1024;

/**
 * Writes a large answer a piece at a time, the next once the client has taken the last. A socket's
 * timeout counts from its last write completed, and one write of a whole large result completes
 * only at its end: in the listen test a client reading 16 MB steadily but slowly was cut at the
 * stall limit (Node's own look for progress within a write did not save it), and is not so.
 */
function endInPieces(res: ServerResponse, bytes: Buffer): void {
  let at = 0;
  const write = () => {
    while (at < bytes.length) {
      const piece = bytes.subarray(at, (at += ANSWER_PIECE_BYTES));
      if (at >= bytes.length) res.end(piece);
      else if (!res.write(piece)) return void res.once('drain', write);
    }
  };
  write();
}

/**
 * A socket's timeout counts from its last byte read or write completed, so a client that keeps
 * taking the answer, however slowly, keeps it; one that takes nothing for the limit has its
 * connection closed (Node's own handler destroys a socket whose timeout nobody answers). Once the
 * answer is out, Node sets the keep-alive timeout in its place; where it does not (a request
 * pipelined behind, which may be a long-poll), the limit is taken off.
 */
function watchStall(res: ServerResponse, socket: Socket): void {
  const server = (socket as Socket & { server?: object }).server;
  const ms = server === undefined ? undefined : stallLimits.get(server);
  if (ms === undefined) return;
  socket.setTimeout(ms);
  res.once('finish', () => {
    if (socket.timeout === ms) socket.setTimeout(0);
  });
}

/**
 * Makes every answer of the app whose response prototype this is carry X-Request-Id and the
 * RateLimit headers, whatever writes its head (a static file, the metrics text, a redirect,
 * Express's own 404): each head is written by `writeHead`, which Node calls for a head not written
 * yet. sendJson puts them in its list itself; this adds them to the others.
 */
export function carryRequestHeaders(response: ServerResponse): void {
  const writeHead = ServerResponse.prototype.writeHead;
  response.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    const head = carriedHeaders(this);
    for (let i = 0; i < head.length; i += 2) if (!this.hasHeader(head[i] as string)) this.setHeader(head[i] as string, head[i + 1] as string);
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
  } as ServerResponse['writeHead'];
}

/** X-Request-Id and the RateLimit headers, as name, value, …, the first time they are asked for; else none. */
function carriedHeaders(res: ServerResponse): string[] {
  const locals = (res as { locals?: unknown }).locals;
  if (!(locals instanceof RequestLocals) || locals.headersCarried) return [];
  locals.headersCarried = true;
  const head = ['X-Request-Id', locals.requestId];
  const limit = locals.rateLimit;
  if (limit) for (const name in limit) head.push(name, limit[name] as string);
  return head;
}
