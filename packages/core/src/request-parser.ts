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
  if (!validateCreate(body)) throw new AppError('invalid_request', describe(validateCreate.errors ?? []));
  const options = body.options ?? {};
  for (const key of RESERVED_OPTIONS) {
    if (Object.hasOwn(options, key)) {
      throw new AppError('invalid_request', `options.${key} is not allowed: the proxy ${key === 'stream' || key === 'stream_options' ? 'does not stream' : `sets ${key} itself`}`);
    }
  }
  return body;
}

function describe(errors: readonly ErrorObject[]): string {
  const err = choiceError(errors);
  if (!err) return 'the body is invalid';
  if (err.schemaPath.startsWith('#/oneOf')) return 'give exactly one of prompt or messages';
  const field = err.instancePath.replace(/^\//, '').replace(/\//g, '.');
  if (err.keyword === 'additionalProperties') {
    const extra = (err.params as { additionalProperty: string }).additionalProperty;
    return `${field ? `${field}.` : ''}${extra} is not a known field`;
  }
  if (err.keyword === 'required') {
    return `${field ? `${field}.` : ''}${(err.params as { missingProperty: string }).missingProperty} is required`;
  }
  if (err.keyword === 'pattern' && field === 'nonce') return 'nonce must be 8 to 128 characters of A-Z a-z 0-9 . _ : -';
  if (err.keyword === 'pattern' && field === 'model') return 'model must be 1 to 100 characters of A-Z a-z 0-9 . _ : / -';
  if (err.keyword === 'anyOf') return `${field} must be ${orList(errors.filter((e) => isBranchOf(e, err)).map((e) => String((e.params as { type: string }).type)))}`;
  return `${field || 'body'} ${ajvProblem(err)}`;
}

/**
 * The error to tell of. Ajv lists an anyOf's branches' errors before its own, so the first named a
 * value of the wrong kind as if the first branch were the only one ("content must be string", where
 * an array will do). A branch that failed on more than the value's type (a string too long, an
 * array's item of the wrong kind) is the one to tell of; failing on type in every branch, the anyOf
 * itself, which lists the types.
 */
function choiceError(errors: readonly ErrorObject[]): ErrorObject | undefined {
  const first = errors[0];
  const choice = errors.find((e) => e.keyword === 'anyOf');
  if (!first || !choice || !isBranchOf(first, choice)) return first;
  return errors.find((e) => isBranchOf(e, choice) && (e.keyword !== 'type' || e.instancePath !== choice.instancePath)) ?? choice;
}

function isBranchOf(err: ErrorObject, choice: ErrorObject): boolean {
  return err.schemaPath.startsWith(`${choice.schemaPath}/`);
}

function orList(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`;
}
