/**
 * A streamed chat completion (UPSTREAM_STREAM=true) put back together, as it arrives, into the
 * answer the same call would have had unstreamed, so that a job reads the same either way.
 *
 * The stream is server-sent events (text/event-stream): each event's `data` is one
 * `chat.completion.chunk`, the last `[DONE]`. Each chunk's choice carries a `delta`: its strings
 * (content, refusal, a reasoning model's reasoning_content) are pieces to join; tool calls come by
 * index, their arguments in pieces; the usage comes in a last chunk with no choices (asked for with
 * `stream_options.include_usage`). This follows how OpenAI's own SDKs join a stream.
 *
 * Read as it arrives, a stream is held as the answer it makes, not as its events: a chunk in
 * OpenAI's shape carrying one word is about 330 bytes.
 */
import { isErrorBody, listedError } from './error-body.js';

/** What a stream came to: the completion, or an error object the stream sent instead, or why it is unreadable. */
export type AssembledStream = { ok: true; body: Record<string, unknown> } | { ok: false; message: string };

/** Puts a stream together from its text, given piece by piece as it arrives. */
export interface StreamAssembler {
  /** The next piece of the stream's text. Throws StreamTooLarge past the limit. */
  push(text: string): void;
  /** What the stream came to, once it ended. */
  end(): AssembledStream;
}

/** Thrown when the answer put together, or one event of the stream, is larger than the limit. */
export class StreamTooLarge extends Error {}

type Json = Record<string, unknown>;
interface ChoiceSoFar {
  index: number;
  message: Json;
  logprobs: Json | null;
  finish_reason: unknown;
}

/** How much text of lines that are no field of the stream is kept to read as an error (an error body is far less). */
const STRAY_LIMIT = 16 * 1024;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);
const sizeOf = (value: unknown) => (typeof value === 'string' ? Buffer.byteLength(value) : value === null || value === undefined ? 0 : Buffer.byteLength(JSON.stringify(value)));

/**
 * An assembler that holds at most `maxBytes` (0: no limit) of answer, counted as its pieces' text
 * (tool calls' arguments and logprobs too), and of any one event not yet complete.
 */
export function createStreamAssembler(maxBytes = 0): StreamAssembler {
  const head: Json = {};
  const choices: ChoiceSoFar[] = [];
  let usage: unknown = null;
  let chunks = 0;
  let held = 0;
  // Where the stream stands: reading; `[DONE]` met; or decided early (an error, an event not JSON),
  // the rest read only to leave the connection clean.
  let outcome: AssembledStream | 'reading' | 'done' = 'reading';
  // The text after the last line break, and the current event's data lines and name.
  let pending = '';
  let data: string[] = [];
  let dataBytes = 0;
  let event = 'message';
  // Lines that are no field of an event stream, kept (up to STRAY_LIMIT) in case they are an error
  // sent raw: Gemini's stream, and gateways in front of it, write a failure midway as plain JSON
  // without `data:` (google's `{"error": {"code": 503, …}}`, pretty-printed over several lines).
  let stray: string[] | null = [];
  let strayChars = 0;

  const hold = (bytes: number) => {
    held += bytes;
    if (maxBytes > 0 && held > maxBytes) throw new StreamTooLarge();
  };

  /** One complete line, per the SSE rules: comments and fields other than data and event skipped. */
  function line(text: string): void {
    if (text === '') {
      if (data.length > 0) dispatch(event, data.join('\n'));
      data = [];
      dataBytes = 0;
      event = 'message';
      return;
    }
    const colon = text.indexOf(':');
    // A line starting with a colon is a comment: a keep-alive, as OpenRouter sends while it waits.
    if (colon === 0) return;
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? '' : text.slice(text[colon + 1] === ' ' ? colon + 2 : colon + 1);
    // Its size is held to the limit by push, with the line still arriving.
    if (field === 'data') {
      data.push(value);
      dataBytes += value.length;
    } else if (field === 'event') event = value;
    else if (field !== 'id' && field !== 'retry' && stray !== null) {
      strayChars += text.length + 1;
      if (strayChars > STRAY_LIMIT) stray = null;
      else stray.push(text);
    }
  }

  /** The error the stream's stray lines make, if together they are one: read only when the stream failed. */
  function strayError(): AssembledStream | null {
    if (stray === null || stray.length === 0) return null;
    let said: unknown;
    try {
      said = JSON.parse(stray.join('\n'));
    } catch {
      return null;
    }
    said = listedError(said) ?? said;
    return isObject(said) && isErrorBody(said) ? { ok: true, body: said } : null;
  }

  function dispatch(name: string, text: string): void {
    if (outcome !== 'reading') return;
    if (text === '[DONE]') {
      outcome = 'done';
      return;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(text);
    } catch {
      outcome = { ok: false, message: 'with a stream event that is not JSON' };
      return;
    }
    // Gemini's endpoint sends its error in a list of one, as it answers one unstreamed.
    chunk = listedError(chunk) ?? chunk;
    if (!isObject(chunk)) {
      outcome = { ok: false, message: 'with a stream event that is not a JSON object' };
      return;
    }
    // A failure met mid-stream comes as an error (some servers name the event "error"): the
    // error, as an unstreamed answer would have carried it. TGI's, as text, had been passed over,
    // the stream read as cut short without its words.
    const failure = isErrorBody(chunk);
    if (failure || name === 'error') {
      outcome = { ok: true, body: failure ? chunk : { error: chunk } };
      return;
    }
    chunks += 1;
    for (const key of ['id', 'created', 'model', 'system_fingerprint', 'service_tier']) if (chunk[key] !== undefined && chunk[key] !== null) head[key] = chunk[key];
    if (chunk.usage !== undefined && chunk.usage !== null) usage = chunk.usage;
    if (!Array.isArray(chunk.choices)) return;
    for (const piece of chunk.choices) {
      if (!isObject(piece)) continue;
      // OpenRouter's choice may carry the error that ended it (its finish_reason "error").
      if (isObject(piece.error)) {
        outcome = { ok: true, body: { error: piece.error } };
        return;
      }
      const index = typeof piece.index === 'number' ? piece.index : 0;
      const choice = (choices[index] ??= { index, message: { role: 'assistant', content: null }, logprobs: null, finish_reason: null });
      joinChoice(choice, piece);
    }
  }

  /** One chunk's choice joined to the choice so far. */
  function joinChoice(choice: ChoiceSoFar, piece: Json): void {
    const delta = isObject(piece.delta) ? piece.delta : {};
    for (const [key, value] of Object.entries(delta)) {
      if (key === 'role') choice.message.role = value;
      else if (key === 'tool_calls') joinToolCalls(choice.message, value);
      else if (key === 'function_call') joinFunctionCall(choice.message, value);
      else joinPiece(choice.message, key, value);
    }
    if (isObject(piece.logprobs)) {
      choice.logprobs ??= {};
      for (const [key, value] of Object.entries(piece.logprobs)) {
        if (!Array.isArray(value)) continue;
        hold(sizeOf(value));
        ((choice.logprobs[key] ??= []) as unknown[]).push(...value);
      }
    }
    if (piece.finish_reason !== null && piece.finish_reason !== undefined) choice.finish_reason = piece.finish_reason;
  }

  /** Joins one delta's piece to what the message holds: strings end to end, a list of parts after the parts. */
  function joinPiece(into: Json, key: string, piece: unknown): void {
    if (piece === null || piece === undefined) return;
    hold(sizeOf(piece));
    const had = into[key];
    if (typeof piece === 'string' && (typeof had === 'string' || had === null || had === undefined)) {
      into[key] = typeof had === 'string' ? had + piece : piece;
    } else if (typeof piece === 'string' || Array.isArray(piece)) {
      const parts = Array.isArray(had) ? had : typeof had === 'string' && had !== '' ? [{ type: 'text', text: had }] : [];
      if (typeof piece === 'string') parts.push({ type: 'text', text: piece });
      else parts.push(...piece);
      into[key] = parts;
    } else if (had === undefined || had === null) {
      into[key] = piece;
    }
  }

  /** A function's pieces, in a tool call or alone: the name as sent, the arguments end to end. */
  function joinFunction(into: Json, piece: Json): void {
    if (typeof piece.name === 'string') into.name = piece.name;
    if (typeof piece.arguments === 'string') into.arguments = (into.arguments as string) + piece.arguments;
  }

  /** A function call as answered before tool calls (still, to the deprecated `functions`). */
  function joinFunctionCall(message: Json, piece: unknown): void {
    if (!isObject(piece)) return;
    hold(sizeOf(piece));
    joinFunction((message.function_call ??= { name: '', arguments: '' }) as Json, piece);
  }

  /** A tool call's pieces, by their index: id, type and name as sent, the arguments joined. */
  function joinToolCalls(message: Json, pieces: unknown): void {
    if (!Array.isArray(pieces)) return;
    const calls = (message.tool_calls ??= []) as Json[];
    for (const piece of pieces) {
      if (!isObject(piece)) continue;
      hold(sizeOf(piece));
      const index = typeof piece.index === 'number' ? piece.index : calls.length;
      const call = (calls[index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
      if (typeof piece.id === 'string') call.id = piece.id;
      if (typeof piece.type === 'string') call.type = piece.type;
      if (isObject(piece.function)) joinFunction(call.function as Json, piece.function);
    }
  }

  return {
    push(text) {
      pending += text;
      // A CR last may be the first half of a CRLF: it waits for the next piece.
      const upTo = pending.endsWith('\r') ? pending.length - 1 : pending.length;
      const lastBreak = Math.max(pending.lastIndexOf('\n', upTo - 1), pending.lastIndexOf('\r', upTo - 1));
      if (lastBreak >= 0) {
        // The last break may be a CRLF's LF: the CR is a break of its own only when alone.
        const cut = pending[lastBreak] === '\n' && pending[lastBreak - 1] === '\r' ? lastBreak - 1 : lastBreak;
        const lines = pending.slice(0, cut).split(/\r\n|\r|\n/);
        pending = pending.slice(lastBreak + 1);
        for (const text of lines) line(text);
      }
      // The event still arriving: its data so far and the line not yet ended.
      if (maxBytes > 0 && dataBytes + pending.length > maxBytes) throw new StreamTooLarge();
    },
    end() {
      // A last event without its line break or blank line still counts: the stream's end ends it.
      if (pending !== '') line(pending);
      line('');
      pending = '';
      if (typeof outcome === 'object') return outcome;
      const done = outcome === 'done';
      if (chunks === 0) return strayError() ?? { ok: false, message: done ? 'with a stream that held no chunk' : 'with an empty stream' };
      // Cut short (a balancer, a crash upstream): without [DONE] a stream is whole only when every
      // choice has said why it ended.
      const present = choices.filter(Boolean);
      if (!done && (present.length === 0 || present.some((c) => c.finish_reason === null)))
        return strayError() ?? { ok: false, message: 'with a stream that ended before its end' };
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
    },
  };
}

/** What a stream's whole text comes to (a stream read at once: one the server compressed). */
export function assembleStream(text: string, maxBytes = 0): AssembledStream {
  const assembler = createStreamAssembler(maxBytes);
  assembler.push(text);
  return assembler.end();
}

/**
 * The request as sent when streaming: `stream` set, and, with `usage`, the usage asked for in a last
 * chunk (without it, a streamed answer carries none). The request's JSON is not parsed again: the
 * proxy refuses both keys in a request's options, so they are never there already.
 */
export function streamedRequest(requestJson: string, usage = true): string {
  const rest = requestJson.trimStart().slice(1);
  const head = usage ? '{"stream":true,"stream_options":{"include_usage":true}' : '{"stream":true';
  return `${head}${rest.trimStart().startsWith('}') ? '' : ','}${rest}`;
}
