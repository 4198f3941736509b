/**
 * What an upstream's error body says: its message, its code (candidates, best first, for the caller
 * to check), and the wait it asks for. OpenAI's shape, `{error: {message, type, code}}`, is the one
 * most servers copy (Azure OpenAI, Anthropic's and Ollama's compatible APIs, llama.cpp, LiteLLM);
 * the others met at an OPENAI_BASE_URL are read too. Before, each of them became the job's error as
 * its JSON text, named only by its status:
 * - Google's (Gemini's OpenAI-compatible endpoint): a list of one,
 *   `[{error: {code: 429, message, status: 'RESOURCE_EXHAUSTED', details: [{'@type': '…RetryInfo', retryDelay: '37s'}]}}]`;
 * - vLLM's (before it took OpenAI's) and Mistral's: `{object: 'error', message, type, code}`;
 * - an error as text (Hugging Face's TGI, Ollama's own API): `{error: '…', error_type}`;
 * - a gateway's own (Kong, AWS API Gateway): `{message: '…'}`; FastAPI's: `{detail: '…'}`, or its
 *   list of what its schema refused;
 * - Cloudflare's API envelope (Workers AI's OpenAI-compatible endpoint, AI Gateway):
 *   `{result: null, success: false, errors: [{code: 7009, message: 'Upstream service unavailable'}], messages: []}`.
 */
export interface ErrorBody {
  message: string | undefined;
  codes: unknown[];
  /** Google's RetryInfo, in ms: the wait its 429s ask for in the body, where others send Retry-After. */
  retryDelayMs: number | undefined;
}

/**
 * Whether a 2xx's object, or a stream's event, is an error in place of a completion: an `error`
 * object or text (TGI streams its failures as `{error: '…', error_type}`), or vLLM's and Mistral's
 * `object: 'error'`. A gateway's bare `message` is not enough here: Ollama's own API answers with
 * a `message`.
 */
export function isErrorBody(body: object): boolean {
  const { error, object } = body as Record<string, unknown>;
  return (error !== null && typeof error === 'object') || (typeof error === 'string' && error !== '') || object === 'error';
}

/**
 * Google's list of one error (`[{error: {…}}]`), as a 2xx's body or a stream's event, its one
 * error; anything else undefined. Only an error is taken out of its list: a list of chunks is no
 * OpenAI-compatible answer.
 */
export function listedError(body: unknown): object | undefined {
  if (!Array.isArray(body) || body.length !== 1) return undefined;
  const only: unknown = body[0];
  return only !== null && typeof only === 'object' && !Array.isArray(only) && isErrorBody(only) ? only : undefined;
}

const NONE: ErrorBody = { message: undefined, codes: [], retryDelayMs: undefined };

export function readErrorBody(body: unknown): ErrorBody {
  const top = Array.isArray(body) && body.length === 1 ? body[0] : body;
  if (top === null || typeof top !== 'object' || Array.isArray(top)) return NONE;
  const { error, object, message, detail, errors, error_type: errorType } = top as Record<string, unknown>;
  if (error !== null && typeof error === 'object' && !Array.isArray(error)) {
    const e = error as Record<string, unknown>;
    // Google's numeric code repeats the status; its `status` names the error (RESOURCE_EXHAUSTED).
    return { message: text(e.message), codes: [e.code, e.status, e.type], retryDelayMs: retryDelayOf(e.details) };
  }
  if (typeof error === 'string') return { message: text(error), codes: [errorType], retryDelayMs: undefined };
  const own = top as Record<string, unknown>;
  if (object === 'error') return { message: text(message), codes: [own.code, own.type], retryDelayMs: undefined };
  if (typeof message === 'string') return { message: text(message), codes: [], retryDelayMs: undefined };
  if (typeof detail === 'string') return { message: text(detail), codes: [], retryDelayMs: undefined };
  if (Array.isArray(detail)) return { message: validationText(detail), codes: [], retryDelayMs: undefined };
  if (Array.isArray(errors)) return { message: envelopeText(errors), codes: [], retryDelayMs: undefined };
  return NONE;
}

/**
 * FastAPI's answer to a request its schema refuses (422; vLLM and many a small server are built on
 * it): `{detail: [{loc: ['body', 'messages', 0, 'role'], msg: 'Field required', type}]}`, told as
 * `body.messages.0.role: Field required`, each item so, joined by `; `.
 */
function validationText(detail: unknown[]): string | undefined {
  return eachTold(detail, ({ loc, msg }) => (typeof msg !== 'string' ? undefined : Array.isArray(loc) && loc.length > 0 ? `${loc.join('.')}: ${msg}` : msg));
}

/**
 * Cloudflare's list of errors, each told as its message and its number (`Upstream service
 * unavailable (code 7009)`: Cloudflare's table of Workers AI errors is by number), joined by `; `.
 * The numbers are no error code of the job's: they name Cloudflare's error, not the call's kind.
 */
function envelopeText(errors: unknown[]): string | undefined {
  return eachTold(errors, ({ code, message }) =>
    typeof message !== 'string' ? undefined : typeof code === 'number' || (typeof code === 'string' && code !== '') ? `${message} (code ${code})` : message,
  );
}

/** A list's items, each told by `tell`, joined by `; `; undefined where one cannot be told (not a list of this shape). */
function eachTold(items: unknown[], tell: (item: Record<string, unknown>) => string | undefined): string | undefined {
  const said: string[] = [];
  for (const item of items) {
    const one = tell((item ?? {}) as Record<string, unknown>);
    if (one === undefined) return undefined;
    said.push(one);
  }
  return text(said.join('; '));
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value.trim() !== '' ? value : undefined;
}

/** A google.protobuf.Duration as JSON writes it: seconds with up to nine decimals and an `s`. */
const DURATION = /^(\d{1,9})(\.\d{1,9})?s$/;

function retryDelayOf(details: unknown): number | undefined {
  if (!Array.isArray(details)) return undefined;
  for (const detail of details) {
    const { '@type': type, retryDelay } = (detail ?? {}) as Record<string, unknown>;
    if (typeof type !== 'string' || !type.endsWith('google.rpc.RetryInfo') || typeof retryDelay !== 'string') continue;
    const parts = DURATION.exec(retryDelay);
    if (parts) return Math.ceil(Number(`${parts[1]}${parts[2] ?? ''}`) * 1000);
  }
  return undefined;
}
