/**
 * An OpenAI-compatible stub of POST /v1/chat/completions, for tests, the demo and benchmarks.
 * A development tool only: the product never imports it. By default it echoes the last user message;
 * tests replace the behaviour per call to inject faults (status codes, headers, delays, resets, bad JSON).
 *
 *   node --import tsx scripts/stub-upstream.ts [--port 0] [--delay-ms 0]
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { pathToFileURL } from 'node:url';

/** What the stub does for one call. */
export interface StubReply {
  status?: number;
  headers?: Record<string, string>;
  /** A JSON body; defaults to a chat completion echoing the prompt. */
  body?: unknown;
  /** Sent as-is instead of `body` (e.g. broken JSON, or a compressed body with its content-encoding header). */
  raw?: string | Buffer;
  delayMs?: number;
  /**
   * Drop the connection without answering: `true` closes it (the client reads its end), `'rst'`
   * resets it (TCP RST: the client's read fails with ECONNRESET), as a server does that closes a
   * connection with the call unread in its buffer.
   */
  reset?: boolean | 'rst';
  /** Never answer (until the client gives up or the stub closes). */
  hang?: boolean;
  /** Answer a call that asked for a stream unstreamed all the same, as some servers do. */
  unstreamed?: boolean;
  /** A streamed answer's connection is dropped after this many events, the rest never sent. */
  cutAfter?: number;
  /** A streamed answer's events are sent this many ms apart, as a model writes them. */
  eventGapMs?: number;
}

/** One call the stub received. */
export interface StubCall {
  n: number;
  at: number;
  authorization: string | undefined;
  /** The request's headers, lowercase names. */
  headers: IncomingMessage['headers'];
  /** The request's path with its query string, e.g. /v1/chat/completions. */
  path: string;
  body: { model?: string; messages?: Array<{ role: string; content: unknown }>; stream?: unknown; stream_options?: { include_usage?: unknown }; [k: string]: unknown };
  /** The last user message's text, handy to steer behaviour per job. */
  prompt: string;
  /** When the caller hung up before the answer was sent (an aborted call), if it did. */
  hungUpAt?: number;
}

export type StubBehaviour = (call: StubCall) => StubReply | Promise<StubReply>;

export interface StubUpstream {
  /** Base URL to use as OPENAI_BASE_URL (ends in /v1). */
  url: string;
  port: number;
  calls: StubCall[];
  /** Replaces how the stub answers from now on. */
  behave(fn: StubBehaviour): void;
  /** Calls under way right now. */
  inflight(): number;
  close(): Promise<void>;
}

/** The TCP socket under a call: for https, the one its TLS socket runs on (Node keeps it as `_parent`). */
function rawSocket(socket: Socket): Socket {
  return (socket as Socket & { _parent?: Socket | null })._parent ?? socket;
}

/** The stub's default answer: a chat completion whose text echoes the prompt. */
export function echoCompletion(call: StubCall, text = `echo: ${call.prompt}`): unknown {
  const promptTokens = Math.ceil(call.prompt.length / 4);
  const completionTokens = Math.ceil(text.length / 4);
  return {
    id: `chatcmpl-stub-${call.n}`,
    object: 'chat.completion',
    created: Math.floor(call.at / 1000),
    model: call.body.model ?? 'stub-model',
    choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
  };
}

type Completion = { id?: string; created?: number; model?: string; choices?: Array<{ index: number; message: Record<string, unknown>; finish_reason?: unknown }>; usage?: unknown };

/**
 * A completion as OpenAI streams it: the events' data, `[DONE]` last. Each choice's role first, its
 * strings in pieces of three characters, its tool calls as a head (id, name) then their arguments in
 * pieces, its finish reason alone; the usage in a chunk of its own when asked for.
 */
export function streamEvents(completion: unknown, includeUsage: boolean): string[] {
  const { id, created, model, choices = [], usage } = completion as Completion;
  const chunk = (choice: unknown, extra: object = {}) =>
    JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices: choice === null ? [] : [choice], ...(includeUsage ? { usage: null } : {}), ...extra });
  const pieces = (text: string) => text.match(/[\s\S]{1,3}/g) ?? [];
  const events: string[] = [];
  for (const { index, message, finish_reason } of choices) {
    // As OpenAI: an answer with no text (tool calls only) opens with a null content.
    events.push(chunk({ index, delta: { role: message.role ?? 'assistant', content: message.content === null ? null : '' }, finish_reason: null }));
    for (const [key, value] of Object.entries(message)) {
      if (typeof value === 'string' && key !== 'role') for (const piece of pieces(value)) events.push(chunk({ index, delta: { [key]: piece }, finish_reason: null }));
    }
    for (const [n, call] of ((message.tool_calls ?? []) as Array<{ id: string; type: string; function: { name: string; arguments: string } }>).entries()) {
      events.push(
        chunk({ index, delta: { tool_calls: [{ index: n, id: call.id, type: call.type, function: { name: call.function.name, arguments: '' } }] }, finish_reason: null }),
      );
      for (const piece of pieces(call.function.arguments))
        events.push(chunk({ index, delta: { tool_calls: [{ index: n, function: { arguments: piece } }] }, finish_reason: null }));
    }
    events.push(chunk({ index, delta: {}, finish_reason: finish_reason ?? 'stop' }));
  }
  if (includeUsage) events.push(chunk(null, { usage: usage ?? null }));
  events.push('[DONE]');
  return events;
}

/** Starts the stub on 127.0.0.1 (port 0 picks a free port); over https when given a key and certificate. */
export async function startStubUpstream(
  options: { port?: number; delayMs?: number; behave?: StubBehaviour; tls?: { key: string | Buffer; cert: string | Buffer } } = {},
): Promise<StubUpstream> {
  const calls: StubCall[] = [];
  const sockets = new Set<Socket>();
  let behaviour: StubBehaviour = options.behave ?? (() => ({ delayMs: options.delayMs ?? 0 }));
  let active = 0;

  const serve = (req: IncomingMessage, res: ServerResponse) => void handle(req, res);
  const server: Server = options.tls ? createTlsServer(options.tls, serve) : createServer(serve);
  // The TCP connections, under TLS too, so close() can cut them.
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse) {
    // When the call arrived, not when its body was read: pacing tests compare arrival times.
    const arrivedAt = Date.now();
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const path = req.url ?? '';
    if (req.method !== 'POST' || !path.split('?', 1)[0]?.endsWith('/chat/completions')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'not found', type: 'invalid_request_error' } }));
      return;
    }
    let body: StubCall['body'] = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'bad json', type: 'invalid_request_error' } }));
      return;
    }
    const lastUser = [...(body.messages ?? [])].reverse().find((m) => m.role === 'user');
    const call: StubCall = {
      n: calls.length + 1,
      at: arrivedAt,
      authorization: req.headers.authorization,
      headers: req.headers,
      path,
      body,
      prompt: typeof lastUser?.content === 'string' ? lastUser.content : JSON.stringify(lastUser?.content ?? ''),
    };
    calls.push(call);
    res.once('close', () => {
      if (!res.writableFinished) call.hungUpAt = Date.now();
    });
    active += 1;
    try {
      const reply = await behaviour(call);
      // Unref'd: a stub closed mid-delay must not keep its process alive.
      if (reply.delayMs) await new Promise((r) => setTimeout(r, reply.delayMs).unref());
      if (reply.hang) return;
      if (reply.reset === 'rst') {
        rawSocket(req.socket).resetAndDestroy();
        return;
      }
      if (reply.reset) {
        req.socket.destroy();
        return;
      }
      const status = reply.status ?? 200;
      if (body.stream === true && status === 200 && reply.raw === undefined && !reply.unstreamed) {
        const events = streamEvents(reply.body ?? echoCompletion(call), body.stream_options?.include_usage === true);
        res.writeHead(status, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...reply.headers });
        for (const [i, event] of events.entries()) {
          if (i === reply.cutAfter) {
            req.socket.destroy();
            return;
          }
          if (i > 0 && reply.eventGapMs) await new Promise((r) => setTimeout(r, reply.eventGapMs).unref());
          res.write(`data: ${event}\n\n`);
        }
        res.end();
        return;
      }
      const text = reply.raw ?? JSON.stringify(reply.body ?? (status === 200 ? echoCompletion(call) : { error: { message: `stub error ${status}`, type: 'server_error' } }));
      res.writeHead(status, { 'content-type': 'application/json', ...reply.headers }).end(text);
    } finally {
      active -= 1;
    }
  }

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}/v1`,
    port,
    calls,
    behave(fn) {
      behaviour = fn;
    },
    inflight: () => active,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const stub = await startStubUpstream({ port: arg('--port') ?? 0, delayMs: arg('--delay-ms') ?? 0 });
  process.stdout.write(`stub upstream listening: OPENAI_BASE_URL=${stub.url}\n`);
  const stop = () => void stub.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
