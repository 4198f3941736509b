import type { ErrorRequestHandler, RequestHandler } from 'express';
import { AppError, isDatabaseUnavailable, toAppError } from '@proxy/core';
import { ctx } from '../context.js';
import { sendJson } from '../respond.js';

/** Unknown route: the same JSON shape as every other error. */
export const notFound: RequestHandler = (req) => {
  throw new AppError('not_found', `no route for ${req.method} ${req.path}`);
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
  'encoding.unsupported': 'unsupported_media_type',
  'charset.unsupported': 'unsupported_media_type',
  'entity.parse.failed': 'invalid_json',
  'request.aborted': 'invalid_request',
  'request.size.invalid': 'invalid_request',
  'stream.encoding.set': 'internal',
};

/** What a 503 `unavailable` tells clients to wait: a restart or failover usually takes seconds. */
const UNAVAILABLE_RETRY_AFTER_S = 2;

/** The one place an error becomes a reply: a stable code and message, never a stack or SQL. */
export const errorHandler: ErrorRequestHandler = (err, _req, res, _next) => {
  const parserCode = typeof err?.type === 'string' ? PARSER_ERRORS[err.type] : undefined;
  const appError = parserCode
    ? new AppError(parserCode, parserCode === 'payload_too_large' ? 'the request body is larger than the server accepts' : 'the request body could not be read', { cause: err })
    : isDatabaseUnavailable(err)
      ? new AppError('unavailable', 'the database does not answer; try again shortly', { cause: err, headers: { 'Retry-After': String(UNAVAILABLE_RETRY_AFTER_S) } })
      : toAppError(err);
  const log = ctx(res).log;
  if (appError.status >= 500) log?.error('request failed', { err: appError.cause ?? appError, code: appError.code });
  if (res.headersSent) return;
  res.set(appError.headers);
  sendJson(res, appError.status, appError.toJSON());
};
