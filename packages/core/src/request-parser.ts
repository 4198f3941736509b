import type { ErrorObject, ValidateFunction } from 'ajv';
import { ajvProblem } from './ajv-message.js';
import { AppError } from './errors.js';
import { validate as compiledCreateValidator } from './generated/validate-create-request.js';
import type { CreateRequestBody } from './schemas.js';

/** Chat-completions parameters a client may not set: the proxy owns them. */
const RESERVED_OPTIONS = ['stream', 'stream_options', 'messages', 'model'];

/**
 * The create body's validator, compiled ahead from createRequestSchema with its minUnits and maxUnits
 * keywords (scripts/generate-validators.ts): compiling it at start took 50–140 ms (measured on a
 * 2-core machine).
 */
const validateCreate = compiledCreateValidator as ValidateFunction<CreateRequestBody>;

/** Checks a parsed create body; throws invalid_request naming the first bad field. */
export function parseCreateRequest(body: unknown): CreateRequestBody {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new AppError('invalid_request', 'the body must be a JSON object');
  }
  if (!validateCreate(body)) throw new AppError('invalid_request', describe(validateCreate.errors?.[0]));
  const options = body.options ?? {};
  for (const key of RESERVED_OPTIONS) {
    if (Object.hasOwn(options, key)) {
      throw new AppError('invalid_request', `options.${key} is not allowed: the proxy ${key === 'stream' || key === 'stream_options' ? 'does not stream' : `sets ${key} itself`}`);
    }
  }
  return body;
}

function describe(err: ErrorObject | undefined): string {
  if (!err) return 'the body is invalid';
  if (err.schemaPath.startsWith('#/oneOf')) return 'give exactly one of prompt or messages';
  const field = err.instancePath.replace(/^\//, '').replace(/\//g, '.');
  if (err.keyword === 'additionalProperties') {
    const extra = (err.params as { additionalProperty: string }).additionalProperty;
    return `${field ? `${field}.` : ''}${extra} is not a known field`;
  }
  if (err.keyword === 'required') {
    return `${(err.params as { missingProperty: string }).missingProperty} is required`;
  }
  if (err.keyword === 'pattern' && field === 'nonce') return 'nonce must be 8 to 128 characters of A-Z a-z 0-9 . _ : -';
  if (err.keyword === 'pattern' && field === 'model') return 'model must be 1 to 100 characters of A-Z a-z 0-9 . _ : / -';
  return `${field || 'body'} ${ajvProblem(err)}`;
}
