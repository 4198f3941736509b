/**
 * A streamed chat completion (UPSTREAM_STREAM=true) put back together into the answer the same call
 * would have had unstreamed, so that a job reads the same either way.
 *
 * The stream is server-sent events (text/event-stream): each event's `data` is one
 * `chat.completion.chunk`, the last `[DONE]`. Each chunk's choice carries a `delta`: its strings
 * (content, refusal, a reasoning model's reasoning_content) are pieces to join; tool calls come by
 * index, their arguments in pieces; the usage comes in a last chunk with no choices (asked for with
 * `stream_options.include_usage`). This follows how OpenAI's own SDKs join a stream.
 */

/** What a stream came to: the completion, or an error object the stream sent instead, or why it is unreadable. */
export type AssembledStream = { ok: true; body: Record<string, unknown> } | { ok: false; message: string };

type Json = Record<string, unknown>;
interface ChoiceSoFar {
  index: number;
  message: Json;
  logprobs: Json | null;
  finish_reason: unknown;
}

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The events' data, in order, per the SSE rules: comments and fields other than data and event skipped. */
function* events(text: string): Generator<{ event: string; data: string }> {
  let data: string[] = [];
  let event = 'message';
  // A last event without its blank line still counts: the stream's end ends it.
  for (const line of `${text}\n\n`.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (data.length > 0) yield { event, data: data.join('\n') };
      data = [];
      event = 'message';
      continue;
    }
    const colon = line.indexOf(':');
    // A line starting with a colon is a comment: a keep-alive, as OpenRouter sends while it waits.
    if (colon === 0) continue;
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(line[colon + 1] === ' ' ? colon + 2 : colon + 1);
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
  }
}

/** Joins one delta's piece to what the message holds: strings end to end, a list of parts after the parts. */
function joinPiece(into: Json, key: string, piece: unknown): void {
  const held = into[key];
  if (typeof piece === 'string') into[key] = typeof held === 'string' ? held + piece : Array.isArray(held) ? [...held, { type: 'text', text: piece }] : piece;
  else if (Array.isArray(piece)) into[key] = [...(typeof held === 'string' && held !== '' ? [{ type: 'text', text: held }] : Array.isArray(held) ? held : []), ...piece];
  else if (piece !== null && piece !== undefined && held === undefined) into[key] = piece;
}

/** A tool call's pieces, by their index: id, type and name as sent, the arguments joined. */
function joinToolCalls(message: Json, pieces: unknown): void {
  if (!Array.isArray(pieces)) return;
  const calls = (message.tool_calls ??= []) as Json[];
  for (const piece of pieces) {
    if (!isObject(piece)) continue;
    const index = typeof piece.index === 'number' ? piece.index : calls.length;
    const call = (calls[index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
    if (typeof piece.id === 'string') call.id = piece.id;
    if (typeof piece.type === 'string') call.type = piece.type;
    const fn = piece.function;
    if (isObject(fn)) {
      const into = call.function as Json;
      if (typeof fn.name === 'string') into.name = fn.name;
      if (typeof fn.arguments === 'string') into.arguments = (into.arguments as string) + fn.arguments;
    }
  }
}

/** One chunk's choice joined to the choice so far. */
function joinChoice(choice: ChoiceSoFar, piece: Json): void {
  const delta = isObject(piece.delta) ? piece.delta : {};
  for (const [key, value] of Object.entries(delta)) {
    if (key === 'role') choice.message.role = value;
    else if (key === 'tool_calls') joinToolCalls(choice.message, value);
    else joinPiece(choice.message, key, value);
  }
  if (isObject(piece.logprobs)) {
    choice.logprobs ??= {};
    for (const [key, value] of Object.entries(piece.logprobs)) {
      if (Array.isArray(value)) choice.logprobs[key] = [...((choice.logprobs[key] as unknown[] | undefined) ?? []), ...value];
    }
  }
  if (piece.finish_reason !== null && piece.finish_reason !== undefined) choice.finish_reason = piece.finish_reason;
}

/** The completion a streamed answer's text comes to. */
export function assembleStream(text: string): AssembledStream {
  const head: Json = {};
  const choices: ChoiceSoFar[] = [];
  let usage: unknown = null;
  let done = false;
  let chunks = 0;
  for (const { event, data } of events(text)) {
    if (data === '[DONE]') {
      done = true;
      break;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(data);
    } catch {
      return { ok: false, message: 'with a stream event that is not JSON' };
    }
    if (!isObject(chunk)) return { ok: false, message: 'with a stream event that is not a JSON object' };
    // A failure met mid-stream comes as an error object (some servers name the event "error"):
    // the error, as an unstreamed answer would have carried it.
    if (isObject(chunk.error) || event === 'error') return { ok: true, body: isObject(chunk.error) ? { error: chunk.error } : { error: chunk } };
    chunks += 1;
    for (const key of ['id', 'created', 'model', 'system_fingerprint', 'service_tier']) if (chunk[key] !== undefined && chunk[key] !== null) head[key] = chunk[key];
    if (chunk.usage !== undefined && chunk.usage !== null) usage = chunk.usage;
    if (!Array.isArray(chunk.choices)) continue;
    for (const piece of chunk.choices) {
      if (!isObject(piece)) continue;
      const index = typeof piece.index === 'number' ? piece.index : 0;
      const choice = (choices[index] ??= { index, message: { role: 'assistant', content: null }, logprobs: null, finish_reason: null });
      joinChoice(choice, piece);
    }
  }
  if (chunks === 0) return { ok: false, message: done ? 'with a stream that held no chunk' : 'with an empty stream' };
  // Cut short (a balancer, a crash upstream): without [DONE] a stream is whole only when every
  // choice has said why it ended.
  const present = choices.filter(Boolean);
  if (!done && (present.length === 0 || present.some((c) => c.finish_reason === null))) return { ok: false, message: 'with a stream that ended before its end' };
  for (const { message } of present) if (Array.isArray(message.tool_calls)) message.tool_calls = message.tool_calls.filter(Boolean);
  // In the order an unstreamed completion has its keys.
  const { id, ...rest } = head;
  return {
    ok: true,
    body: {
      ...(id === undefined ? {} : { id }),
      object: 'chat.completion',
      ...rest,
      choices: present.map(({ index, message, logprobs, finish_reason }) => ({ index, message, logprobs, finish_reason })),
      usage,
    },
  };
}

/**
 * The request as sent when streaming: `stream` set, and the usage asked for in a last chunk (without
 * it, a streamed answer carries none). The request's JSON is not parsed again: the proxy refuses both
 * keys in a request's options, so they are never there already.
 */
export function streamedRequest(requestJson: string): string {
  const rest = requestJson.trimStart().slice(1);
  return `{"stream":true,"stream_options":{"include_usage":true}${rest.trimStart().startsWith('}') ? '' : ','}${rest}`;
}
