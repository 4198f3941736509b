import type { ErrorRequestHandler, Request, RequestHandler } from 'express';
import { AppError, isDatabaseUnavailable, sayAtMostEvery, toAppError } from '@proxy/core';
import { ctx } from '../context.js';
import { sendJson } from '../respond.js';
import type { Refusals } from '../refusals.js';

/**
 * Unknown route: the same JSON shape as every other error. A client given the old tool's address
 * as its base URL (`https://host/index.php`) asks for `/index.php/v1/requests`, and one whose base
 * URL ends in a slash for `//v1/requests` (nginx merges such slashes; the API alone does not), and
 * one given an address in OpenAI's form (`https://host/v1`) for `/v1/v1/requests`: told what to
 * change. Said here, off the routes' path, which a check of every request would slow.
 */
export const notFound: RequestHandler = (req) => {
  const hint = req.path.includes('/index.php/')
    ? "; a client's base URL is the server's root, without /index.php (the old routes are /index.php?action=…)"
    : req.path.includes('//')
      ? "; the path holds a doubled slash: a client's base URL should not end with /"
      : req.path.startsWith('/v1/v1/')
        ? "; a client's base URL is the server's root, without /v1 (an OpenAI base URL ends in /v1; this API's paths begin with it)"
        : '';
  throw new AppError('not_found', `no route for ${req.method} ${req.path}${hint}`);
};

/** A known path asked with a method it does not serve. */
export function methodNotAllowed(allowed: readonly string[]): RequestHandler {
  return (req) => {
    throw new AppError('method_not_allowed', `${req.method} is not allowed here; use ${allowed.join(' or ')}`, { headers: { Allow: allowed.join(', ') } });
  };
}

// body-parser's error types, mapped to our codes.
const PARSER_ERRORS: Record<string, AppError['code']> = {
  'entity.too.large': 'payload_too_large',
  'charset.unsupported': 'unsupported_media_type',
  'entity.parse.failed': 'invalid_json',
  'request.aborted': 'invalid_request',
  'request.size.invalid': 'invalid_request',
  'stream.encoding.set': 'internal',
};

/** The Content-Encodings body-parser inflates (besides identity), and the same as Accept-Encoding lists them. */
const READ_ENCODINGS: readonly string[] = ['gzip', 'deflate', 'br'];
const ACCEPT_ENCODING = READ_ENCODINGS.join(', ');

/** What a 503 `unavailable` tells clients to wait: a restart or failover usually takes seconds. */
const UNAVAILABLE_RETRY_AFTER_S = 2;

/**
 * Errors raised by Express's own parts for a bad request rather than a bug: body-parser's typed
 * ones; the router's URIError for a path parameter that is not valid percent-encoding (`/v1/requests/%`);
 * and body-parser's untyped 400 for a compressed body that does not decompress (Content-Encoding
 * gzip, deflate or br). The last two are recognised by the http-errors `status` of 400 they carry;
 * anything else unknown stays a 500.
 */
function requestError(err: unknown, req: Request): AppError | null {
  if (!err || typeof err !== 'object') return null;
  const { type, status } = err as { type?: unknown; status?: unknown };
  const parserCode = typeof type === 'string' ? PARSER_ERRORS[type] : undefined;
  if (type === 'encoding.unsupported') {
    // RFC 9110 15.5.16: a 415 for a body's coding names the codings accepted, in Accept-Encoding.
    return new AppError('unsupported_media_type', `this Content-Encoding is not read here; send the body as it is, or in ${ACCEPT_ENCODING}`, {
      cause: err,
      headers: { 'Accept-Encoding': ACCEPT_ENCODING },
    });
  }
  if (parserCode === 'payload_too_large') {
    const { limit } = err as { limit?: unknown };
    const coded = req.headers['content-encoding'] !== undefined && req.headers['content-encoding'] !== 'identity';
    return bodyTooLarge(typeof limit === 'number' ? limit : undefined, coded, err);
  }
  if (parserCode) return new AppError(parserCode, 'the request body could not be read', { cause: err });
  if (status !== 400) return null;
  if (err instanceof URIError) return new AppError('invalid_request', 'the path is not valid percent-encoding', { cause: err });
  // The coding is named only when it is one body-parser inflates, which it must be to fail here.
  const coding = req.headers['content-encoding']?.toLowerCase();
  if (coding !== undefined && READ_ENCODINGS.includes(coding)) {
    return new AppError('invalid_request', `the body does not decompress as its Content-Encoding (${coding}) says`, { cause: err });
  }
  return new AppError('invalid_request', 'the request body could not be read', { cause: err });
}

/**
 * A body over BODY_LIMIT, told with the limit, so a client can split or trim; a compressed body is
 * held to it decompressed.
 */
export function bodyTooLarge(limitBytes: number | undefined, coded: boolean, cause?: unknown): AppError {
  const over = limitBytes !== undefined ? `over the ${byteText(limitBytes)} the server accepts${coded ? ' (counted decompressed)' : ''}` : 'larger than the server accepts';
  return new AppError('payload_too_large', `the request body is ${over}`, cause === undefined ? {} : { cause });
}

/**
 * A lasting outage is told once in this long, with the 503s answered since. Each request still has
 * its own access line; a line with a stack for each, as before, came to 3,088 in 5 s of creates
 * while the PostgreSQL pool could not open connections.
 */
export const UNAVAILABLE_LINE_MS = 10_000;

/** The one place an error becomes a reply: a stable code and message, never a stack or SQL. */
export function createErrorHandler({ refusals, now = Date.now }: { refusals?: Pick<Refusals, 'refused'>; now?: () => number } = {}): ErrorRequestHandler {
  const tellOutage = sayAtMostEvery(UNAVAILABLE_LINE_MS, now);
  return (err, req, res, _next) => {
    const appError =
      err instanceof AppError
        ? err
        : (requestError(err, req) ??
          (isDatabaseUnavailable(err)
            ? new AppError('unavailable', 'the database does not answer; try again shortly', { cause: err, headers: { 'Retry-After': String(UNAVAILABLE_RETRY_AFTER_S) } })
            : toAppError(err)));
    const log = ctx(res).log;
    if (appError.code === 'unavailable') {
      refusals?.refused();
      tellOutage((times) =>
        log?.error('the database does not answer; requests get 503 unavailable', { err: appError.cause ?? appError, code: appError.code, answered_503: times }),
      );
    } else if (appError.status >= 500) {
      log?.error('request failed', { err: appError.cause ?? appError, code: appError.code });
    }
    if (res.headersSent) return;
    sendJson(res, appError.status, appError.toJSON(), Object.entries(appError.headers).flat());
  };
}

/** A byte count as BODY_LIMIT is written: 1 MB, 512 KB, or bytes. */
function byteText(bytes: number): string {
  if (bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MB`;
  if (bytes % 1024 === 0) return `${bytes / 1024} KB`;
  return `${bytes} bytes`;
}
