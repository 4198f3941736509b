import type { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders } from 'node:http';
import { createSecureContext, rootCertificates } from 'node:tls';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { Pool, ProxyAgent, buildConnector, errors as undiciErrors, type Dispatcher } from 'undici';
import { baseOfEndpoint, headerSecrets, type Config } from '../config.js';
import { StreamTooLarge, assembleStream, createStreamAssembler, streamedRequest, type AssembledStream } from './event-stream.js';
import { exchange, type Answer, type ExchangeOptions } from './exchange.js';
import { createIdleCloseTracker } from './idle-closed.js';
import { isErrorBody, listedError, readErrorBody } from './error-body.js';
import { pageText } from './page-text.js';
import { cutText } from '../unicode.js';
import { UnreadableBody, codingOf, decodeBody, inflated, isTooLarge } from './content-coding.js';
import { networkError } from './network-error.js';

/**
 * What one upstream call produced, already read to the end. `requestId`: the upstream's own id for
 * the call (its x-request-id header, as OpenAI sends), when it answered with one. `finishReason`:
 * why a completion's first choice stopped (`stop`, `length`, `content_filter`, …), when it says.
 */
export type UpstreamOutcome = (
  | { kind: 'ok'; status: number; body: unknown; outputText: string | null; finishReason: string | null; usage: unknown }
  /** `retryDelayMs`: the wait the body asked for (Google's RetryInfo), where no header names one. */
  | { kind: 'http_error'; status: number; headers: Record<string, string>; body: unknown; errorCode: string | null; message: string; retryDelayMs?: number }
  /** `final`: the same call would get the same unreadable answer (an encoding the worker cannot read). */
  /** `notCompletion`: a JSON object, but not a chat completion (no choices list): the settings may name another API. */
  | { kind: 'bad_response'; status: number; message: string; final?: boolean; notCompletion?: true }
  | { kind: 'too_large'; status: number; message: string }
  | { kind: 'network_error'; code: string; message: string }
  /** The proxy (HTTPS_PROXY, HTTP_PROXY) answered the tunnel with this status instead of opening it. */
  | { kind: 'proxy_refused'; status: number; message: string }
  /** The upstream's TLS certificate failed verification (`code`, OpenSSL's or Node's name for why): the call was never sent. */
  | { kind: 'certificate_rejected'; code: string; message: string }
  /** This machine could not open the connection (no file descriptors, ports or buffers): the upstream never heard of the call. */
  | { kind: 'local_shortage'; code: string; message: string }
) & { requestId?: string };

/**
 * What ends a call early. undici takes either an AbortSignal or an EventEmitter that emits 'abort'
 * with `aborted` and `reason` set, which is what the worker passes (see AttemptSignal).
 */
export type CallSignal = (AbortSignal | (EventEmitter & { readonly aborted: boolean; readonly reason: unknown })) & {
  /**
   * Asked as a call's first byte is about to be written (after its connect; again for a call sent
   * twice); it may abort the signal there, and the call is then never sent.
   */
  readonly beforeSend?: () => void;
  /** Told as the answer's head (its status and headers) arrives: the upstream answers, however long its body takes. */
  readonly onHead?: () => void;
};

/** Calls POST {baseUrl}/chat/completions. One instance per process: it owns the connection pool. */
export interface UpstreamClient {
  /**
   * `requestJson`: a chat completion request as JSON text, sent as the body as it is. `callId`: the
   * call's own id, sent as `X-Client-Request-Id` (OpenAI logs it beside its own, so its support can
   * find a call that never answered, which has no x-request-id to quote).
   */
  chat(requestJson: string, signal: CallSignal, callId?: string): Promise<UpstreamOutcome>;
  close(): Promise<void>;
}

export interface UpstreamClientOptions {
  baseUrl: string;
  apiKey: string;
  /** The header that carries the key (OPENAI_API_KEY_HEADER): `authorization` (the default) as `Bearer <key>`, another the key alone. */
  apiKeyHeader?: string;
  /** Headers sent with every call besides the key (UPSTREAM_HEADERS). */
  extraHeaders?: Readonly<Record<string, string>>;
  /** Most sockets to keep open; match the worker's concurrency. */
  connections: number;
  /** The most bytes of one answer read into memory (UPSTREAM_RESPONSE_LIMIT); no limit when left out. */
  maxResponseBytes?: number;
  /** An HTTP proxy to call through (HTTPS_PROXY or HTTP_PROXY, as config chose it); directly when null. */
  proxyUrl?: string | null;
  /** CA certificates (PEM) trusted besides Node's own, for the upstream and an https proxy (UPSTREAM_CA_FILE). */
  caCertificates?: readonly string[];
  /** Ask for each answer streamed, and put it together (UPSTREAM_STREAM). */
  stream?: boolean;
  /** Told, once, of what the client changed in how it calls (streamed answers asked for without their usage). */
  onNotice?: (message: string) => void;
}

// Upstream error bodies can be large HTML pages from a proxy in front; keep what a person needs.
const MAX_ERROR_TEXT = 500;
// What an upstream error code or type may be to name the job's error: OpenAI's are like
// rate_limit_exceeded or invalid_request_error.
const ERROR_CODE = /^[A-Za-z0-9_.:-]{1,64}$/;
// What an upstream's request id may be to be logged: OpenAI's are like req_0123abcd.
const REQUEST_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Builds the undici-backed upstream client. */
export function createUpstreamClient(options: UpstreamClientOptions): UpstreamClient {
  const base = new URL(options.baseUrl);
  // A query string in the base URL (some gateways route on one) goes with every call.
  const path = `${base.pathname.replace(/\/+$/, '')}/chat/completions${base.search}`;
  const poolOptions = {
    connections: options.connections,
    // The caller's signal carries the real per-attempt timeout; these only catch a stuck socket.
    headersTimeout: 0,
    bodyTimeout: 0,
    // Well under the 5 s after which uvicorn, Node and others close an idle connection, so this
    // side closes first: undici's timers run up to a second late (measured: 4 s closed at 4.5 s).
    // A limit a server announces in Keep-Alive is taken less 2 s, as undici does. A close that
    // still crosses a call is answered by sending the call again (createIdleCloseTracker).
    keepAliveTimeout: 3_000,
    // No maxResponseSize: exchange() counts each answer as it arrives and drops the connection past
    // the limit, so a runaway answer costs at most that much memory per call, never the whole
    // process; and an event stream is counted by the answer it makes, not by its events, which
    // take many times its bytes (undici's limit is the pool's, the same for every answer).
  };
  // Built once: given a `ca` list instead, each new TLS connection would parse every CA again.
  // Node's own list goes in too, since a `ca` replaces it.
  const extraCa = options.caCertificates ?? [];
  const tls = extraCa.length > 0 ? { secureContext: createSecureContext({ ca: [...rootCertificates, ...extraCa] }) } : undefined;
  // Through a proxy, each connection is a tunnel (CONNECT) the proxy opens to the upstream; the
  // same pool options apply to the connections inside it. A pool names its origin itself.
  const idle = createIdleCloseTracker();
  const dispatcher: Dispatcher = options.proxyUrl
    ? new ProxyAgent({
        uri: options.proxyUrl,
        ...poolOptions,
        ...(tls ? { requestTls: tls, proxyTls: tls } : {}),
        // The pool to the upstream, its connections made through the proxy's tunnel connector.
        factory: (origin, opts) => {
          const { connect, ...rest } = opts as Pool.Options & { connect: buildConnector.connector };
          return new Pool(origin, { ...rest, connect: idle.track(connect) });
        },
      })
    : new Pool(base.origin, { ...poolOptions, connect: idle.track(buildConnector({ ...tls })) });
  // The most bytes of one answer, or (0) no limit.
  const limit = options.maxResponseBytes !== undefined && options.maxResponseBytes > 0 ? options.maxResponseBytes : 0;
  // An event stream in one coding or none is read as it arrives, put together piece by piece; any
  // other answer is read whole (a stream in codings stacked too: it is inflated whole).
  const reading: ExchangeOptions = {
    maxBytes: limit,
    asStream: (status, resHeaders) => status >= 200 && status < 300 && isEventStream(resHeaders['content-type']) && codingOf(resHeaders['content-encoding']) !== undefined,
  };
  // An upstream error code becomes part of the job's own (upstream_<code>), so only a short identifier is taken.
  // What an answer must not carry into a job: the key, and a gateway's key among the extra headers.
  const secrets = [options.apiKey, ...headerSecrets(options.extraHeaders ?? {})];
  const redact = (text: string) => secrets.reduce((out, secret) => out.split(secret).join('[redacted]'), text);
  const identifier = (value: unknown) => (typeof value === 'string' && ERROR_CODE.test(value) && !secrets.some((secret) => value.includes(secret)) ? value : null);
  const keyHeader = options.apiKeyHeader?.toLowerCase() ?? 'authorization';
  const headers = {
    ...options.extraHeaders,
    'content-type': 'application/json',
    accept: 'application/json',
    // Without this header a server may compress as it likes (RFC 9110, 12.5.3); an answer it
    // compresses anyway is read all the same (decodeBody).
    'accept-encoding': 'identity',
    ...(keyHeader === 'authorization' ? { authorization: `Bearer ${options.apiKey}` } : { [keyHeader]: options.apiKey }),
  };

  // A gateway's own X-Client-Request-Id in UPSTREAM_HEADERS is sent as it is, in place of the call's.
  const sendsCallId = !('x-client-request-id' in headers);
  const headersOf = (callId: string | undefined) => (callId === undefined || !sendsCallId ? headers : { ...headers, 'x-client-request-id': callId });

  const stream = options.stream === true;
  // Cleared for good when the upstream refuses stream_options, as Azure OpenAI did for a time and
  // servers that have not heard of it do: a 400 for every call. Streamed answers then come without
  // their usage rather than not at all.
  let askUsage = stream;

  return {
    chat(requestJson, signal, callId) {
      // Not async itself: unstreamed, the hot path, one more await cost about 1% of a job's instructions.
      return askUsage ? sendAskingUsage(requestJson, signal, callId) : send(requestJson, signal, callId);
    },
    async close() {
      await dispatcher.close();
    },
  };

  /** A streamed call with its usage asked for, sent again without the asking when the upstream refuses it. */
  async function sendAskingUsage(requestJson: string, signal: CallSignal, callId: string | undefined): Promise<UpstreamOutcome> {
    const outcome = await send(requestJson, signal, callId);
    if (!refusesStreamOptions(outcome)) return outcome;
    // Calls in flight meanwhile meet the same refusal; the first to hear it says so.
    if (askUsage) {
      askUsage = false;
      options.onNotice?.('the upstream refused stream_options: streamed answers are asked for without it from now on, and come without their usage');
    }
    // A 400 was not worked on: sent again at once, as the same attempt.
    return send(requestJson, signal, callId);
  }

  /** One call, sent (again at most once, on a connection closed while idle) and read. */
  async function send(requestJson: string, signal: CallSignal, callId: string | undefined): Promise<UpstreamOutcome> {
    const body = stream ? streamedRequest(requestJson, askUsage) : requestJson;
    const callHeaders = headersOf(callId);
    let answer: Answer;
    // Once more at most, when the connection it took had been closed by the upstream while idle:
    // the call was never read. Not spent as an attempt, and no wait, as curl and browsers do.
    for (let sentAgain = false; ; sentAgain = true) {
      const sentAt = performance.now();
      try {
        answer = await exchange(dispatcher, { origin: base.origin, method: 'POST', path, headers: callHeaders, body }, signal, reading);
        break;
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        if (!sentAgain && idle.closedWhileIdle(err, sentAt)) continue;
        return networkError(err);
      }
    }
    const { status, headers: resHeaders } = answer;
    // What the upstream's support asks for about a call: OpenAI's x-request-id, or Anthropic's
    // request-id (its OpenAI-compatible API's too). Only an id is taken, for a log line.
    const id = resHeaders['x-request-id'] ?? resHeaders['request-id'];
    const requestId = typeof id === 'string' && REQUEST_ID.test(id) ? id : undefined;
    const encoding = resHeaders['content-encoding'];
    try {
      // Handed over as a stream only in one coding or none (reading.asStream).
      if ('body' in answer) return withId(await readEvents(status, answer.body, codingOf(encoding) as string | null), requestId);
      if ('failed' in answer) throw answer.failed;
      const text = encoding === undefined ? textOf(answer.bytes) : await decodeBody(answer.bytes, String(encoding), limit);
      return withId(judgeAnswer(status, resHeaders, text), requestId);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      return withId(unread(err, status, resHeaders), requestId);
    }
  }

  /** What a 2xx's JSON object comes to. */
  function judgeCompletion(status: number, body: object): UpstreamOutcome {
    // Some gateways answer a provider's failure with a 2xx and an error object in place of the
    // completion; completed, the job would carry no answer and no word of why.
    const { choices } = body as { choices?: unknown };
    if (!Array.isArray(choices) && isErrorBody(body)) {
      const said = readErrorBody(body).message;
      const why = said === undefined ? '' : `: ${redact(said)}`;
      return { kind: 'bad_response', status, message: cutText(`upstream answered ${status} with an error instead of a completion${why}`, MAX_ERROR_TEXT) };
    }
    // No choice, no answer: some gateways, and proxies in front of Azure OpenAI, answer `choices: []`
    // (OpenAI's API always has one), and vLLM has answered `choices: null`. Completed, the job had
    // carried nothing, with no word of why; told as no other API's answer, the base URL was blamed.
    if (choices === null || (Array.isArray(choices) && choices.length === 0)) {
      return { kind: 'bad_response', status, message: `upstream answered ${status} with a completion that holds no choices` };
    }
    // A server's own API beside its OpenAI-compatible one (Ollama's /api/chat answers {message, done})
    // completed every job with no answer and no word of why.
    if (!Array.isArray(choices)) {
      return { kind: 'bad_response', status, message: `upstream answered ${status} with a JSON object that is not a chat completion (no choices list)`, notCompletion: true };
    }
    // OpenRouter's word for a generation that failed midway, the answer so far beside it: completed,
    // the job would have carried half an answer as a whole one.
    const failed = choices.find((choice) => (choice as { finish_reason?: unknown } | null)?.finish_reason === 'error') as { error?: unknown } | undefined;
    if (failed) {
      const said = readErrorBody(failed).message ?? readErrorBody(body).message;
      const why = said === undefined ? '' : `: ${redact(said)}`;
      return { kind: 'bad_response', status, message: cutText(`upstream answered ${status} with a completion that ended in an error${why}`, MAX_ERROR_TEXT) };
    }
    return { kind: 'ok', status, body, outputText: extractText(body), finishReason: finishReasonOf(body), usage: (body as { usage?: unknown }).usage ?? null };
  }

  /**
   * An event stream put together as it arrives, inflated as it arrives if compressed in one coding.
   * Streamed or not: a server may stream unasked (a gateway set to stream every call), and its
   * answer is then counted as put together, as a streamed one is.
   */
  async function readEvents(status: number, body: Readable, coding: string | null): Promise<UpstreamOutcome> {
    const assembler = createStreamAssembler(limit);
    const decoder = new TextDecoder();
    for await (const chunk of coding ? inflated(body, coding) : body) assembler.push(decoder.decode(chunk as Buffer, { stream: true }));
    assembler.push(decoder.decode());
    return judgeStream(status, assembler.end());
  }

  /** What a streamed 2xx comes to: the completion put together, judged as an unstreamed one. */
  function judgeStream(status: number, assembled: AssembledStream): UpstreamOutcome {
    return assembled.ok ? judgeCompletion(status, assembled.body) : { kind: 'bad_response', status, message: `upstream answered ${status} ${assembled.message}` };
  }

  /** What an answer whose body could not be read to the end comes to. */
  function unread(err: unknown, status: number, resHeaders: IncomingHttpHeaders): UpstreamOutcome {
    const tooLarge = err instanceof undiciErrors.ResponseExceededMaxSizeError || err instanceof StreamTooLarge || isTooLarge(err);
    if (!tooLarge && !(err instanceof UnreadableBody)) return networkError(err);
    const what = err instanceof StreamTooLarge ? 'an answer' : 'a body';
    const message = tooLarge
      ? `upstream answered ${status} with ${what} over ${options.maxResponseBytes} bytes (UPSTREAM_RESPONSE_LIMIT)`
      : `upstream answered ${status} ${(err as UnreadableBody).message}`;
    // An error status keeps its own meaning (a 503 with a huge HTML page is still worth a retry).
    if (status < 200 || status >= 300) return { kind: 'http_error', status, headers: flattenHeaders(resHeaders), body: null, errorCode: null, message };
    if (tooLarge) return { kind: 'too_large', status, message };
    return { kind: 'bad_response', status, message, final: (err as UnreadableBody).final };
  }

  /** What an answer read to the end comes to. Not async: on the hot path, one more await cost about 1% of a job's instructions. */
  function judgeAnswer(status: number, resHeaders: IncomingHttpHeaders, text: string): UpstreamOutcome {
    const body = tryParseJson(text);
    if (status >= 200 && status < 300) {
      const listed = listedError(body);
      if (listed) return judgeCompletion(status, listed);
      if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
        // An event stream in codings stacked, read whole (readEvents reads the others): its
        // events put together, rather than a paid answer thrown away and asked for again.
        if (isEventStream(resHeaders['content-type'])) return judgeStream(status, assembleStream(text, limit));
        return { kind: 'bad_response', status, message: `upstream answered ${status} with a body that is not a JSON object` };
      }
      return judgeCompletion(status, body);
    }
    const said = readErrorBody(body);
    // Some servers echo the key they were sent ("Incorrect API key provided: sk-…"); it must not reach the job.
    const rawMessage =
      said.message ?? redirectMessage(status, resHeaders.location, base) ?? (cutText(pageText(text, resHeaders['content-type']), MAX_ERROR_TEXT) || `HTTP ${status}`);
    const message = redact(rawMessage);
    let errorCode: string | null = null;
    for (let i = 0; errorCode === null && i < said.codes.length; i++) errorCode = identifier(said.codes[i]);
    const safeBody = body === undefined ? null : JSON.parse(redact(JSON.stringify(body)));
    return {
      kind: 'http_error',
      status,
      headers: flattenHeaders(resHeaders),
      body: safeBody,
      errorCode,
      message: cutText(message, MAX_ERROR_TEXT),
      ...(said.retryDelayMs === undefined ? {} : { retryDelayMs: said.retryDelayMs }),
    };
  }
}

/** The outcome with the upstream's id for the call, when it gave one. */
function withId(outcome: UpstreamOutcome, requestId: string | undefined): UpstreamOutcome {
  return requestId === undefined ? outcome : { ...outcome, requestId };
}

/** The client a worker built from configuration uses: one pool, sized to the worker's concurrency. */
export function createUpstreamClientFromConfig(config: Config, onNotice?: (message: string) => void): UpstreamClient {
  if (!config.upstream.apiKey) throw new Error('createUpstreamClientFromConfig needs OPENAI_API_KEY');
  return createUpstreamClient({
    baseUrl: config.upstream.baseUrl,
    apiKey: config.upstream.apiKey,
    apiKeyHeader: config.upstream.apiKeyHeader,
    extraHeaders: config.upstream.extraHeaders,
    connections: config.worker.concurrency,
    maxResponseBytes: config.upstream.maxResponseBytes,
    proxyUrl: config.upstream.proxyUrl,
    caCertificates: config.upstream.caCertificates,
    stream: config.upstream.stream,
    ...(onNotice ? { onNotice } : {}),
  });
}

/**
 * The first choice's text. Most servers send a string; some (Mistral's reasoning models among them)
 * send a list of parts, a text part beside a `thinking` one: the text parts, joined, are the answer.
 * None (a tool call, a refusal) is null; the whole response keeps what there is.
 */
function extractText(body: object): string | null {
  const choice = (body as { choices?: Array<{ message?: { content?: unknown } }> }).choices?.[0];
  const content = choice?.message?.content;
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return null;
  const texts = content.flatMap((part: { type?: unknown; text?: unknown } | null) => (part?.type === 'text' && typeof part.text === 'string' ? [part.text] : []));
  return texts.length > 0 ? texts.join('') : null;
}

/** Why the first choice stopped, as the upstream wrote it, cut to 64 characters: a log line carries it. */
function finishReasonOf(body: object): string | null {
  const reason = (body as { choices?: Array<{ finish_reason?: unknown } | null> }).choices?.[0]?.finish_reason;
  return typeof reason === 'string' ? cutText(reason, 64) : null;
}

function tryParseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * What a redirect says, when the upstream answers one: where to, and what to change. A POST is not
 * followed (a 301 or 302 turns it into a GET in most clients), and the new address is only shown
 * by its origin and path: its query string may carry a gateway's key, as OPENAI_BASE_URL's may.
 */
function redirectMessage(status: number, location: string | string[] | undefined, base: URL): string | null {
  if (status < 300 || status >= 400 || typeof location !== 'string') return null;
  let to: URL;
  try {
    to = new URL(location, base);
  } catch {
    return null;
  }
  const newBase = baseOfEndpoint(to);
  const change = newBase ? `set OPENAI_BASE_URL to ${newBase}` : 'set OPENAI_BASE_URL to the new address';
  return `upstream redirected (HTTP ${status}) to ${to.origin}${to.pathname}, which the worker does not follow: ${change}`;
}

/** A body's text, as undici's text() reads it: UTF-8, a byte-order mark dropped. */
function textOf(bytes: Buffer): string {
  return bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? bytes.toString('utf8', 3) : bytes.toString('utf8');
}

/** Whether an answer is a server's refusal of the stream_options parameter (its error names it). */
function refusesStreamOptions(outcome: UpstreamOutcome): boolean {
  if (outcome.kind !== 'http_error' || outcome.status !== 400) return false;
  const param = (outcome.body as { error?: { param?: unknown } } | null)?.error?.param;
  return param === 'stream_options' || outcome.message.includes('stream_options');
}

const isEventStream = (type: string | string[] | undefined) => typeof type === 'string' && /^\s*text\/event-stream\s*(;|$)/i.test(type);

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}
