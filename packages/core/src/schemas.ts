import { Ajv, _, str, type ErrorObject, type KeywordCxt } from 'ajv';
import { AppError } from './errors.js';

/** What a model name may be, in a request, DEFAULT_MODEL and ALLOWED_MODELS alike. */
export const MODEL_PATTERN = /^[A-Za-z0-9._:/-]{1,100}$/;

/** Chat-completions parameters a client may not set: the proxy owns them. */
const RESERVED_OPTIONS = ['stream', 'stream_options', 'messages', 'model'];

const message = {
  type: 'object',
  required: ['role'],
  properties: {
    role: { enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
    content: {
      anyOf: [{ type: 'string', maxUnits: 1_000_000 }, { type: 'array', maxItems: 256, items: { type: 'object' } }, { type: 'null' }],
    },
    name: { type: 'string', maxUnits: 256 },
    tool_call_id: { type: 'string', maxUnits: 256 },
    tool_calls: { type: 'array', maxItems: 256 },
  },
} as const;

/** The create body as the client signs it. */
export const createRequestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['ts', 'nonce', 'sign'],
  properties: {
    prompt: { type: 'string', minUnits: 1, maxUnits: 1_000_000 },
    messages: { type: 'array', minItems: 1, maxItems: 1000, items: message },
    model: { type: 'string', pattern: MODEL_PATTERN.source },
    system: { type: 'string', maxUnits: 1_000_000 },
    ttl: { type: 'integer', minimum: 1, maximum: 604800 },
    options: {
      type: 'object',
      properties: {
        temperature: { type: 'number', minimum: 0, maximum: 2 },
        top_p: { type: 'number', minimum: 0, maximum: 1 },
        max_tokens: { type: 'integer', minimum: 1 },
        max_completion_tokens: { type: 'integer', minimum: 1 },
        n: { type: 'integer', minimum: 1, maximum: 128 },
        presence_penalty: { type: 'number', minimum: -2, maximum: 2 },
        frequency_penalty: { type: 'number', minimum: -2, maximum: 2 },
        seed: { type: 'integer' },
        stop: { anyOf: [{ type: 'string' }, { type: 'array', maxItems: 4, items: { type: 'string' } }] },
        response_format: { type: 'object', required: ['type'], properties: { type: { type: 'string' } } },
        user: { type: 'string', maxUnits: 256 },
        tools: { type: 'array', maxItems: 128 },
        logit_bias: { type: 'object' },
        logprobs: { type: 'boolean' },
        top_logprobs: { type: 'integer', minimum: 0, maximum: 20 },
        reasoning_effort: { type: 'string' },
        metadata: { type: 'object' },
      },
    },
    ts: { type: 'integer' },
    nonce: { type: 'string', pattern: '^[A-Za-z0-9._:-]{8,128}$' },
    sign: { type: 'string' },
  },
  oneOf: [{ required: ['prompt'] }, { required: ['messages'] }],
} as const;

/** A validated create body. */
export interface CreateRequestBody {
  prompt?: string;
  messages?: ChatMessage[];
  model?: string;
  system?: string;
  ttl?: number;
  options?: Record<string, unknown>;
  ts: number;
  nonce: string;
  sign: string;
}

/** An OpenAI chat message, as far as the proxy needs to know it. */
export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content?: unknown;
  [extra: string]: unknown;
}

/**
 * Builds the create body's validator: parse(body) checks a parsed create body and throws
 * invalid_request naming the first bad field. Compiling the schema takes 50–140 ms (measured at
 * import, on a 2-core machine), so it is done when asked for, not when the module loads: proxy-api
 * asks once at start, when it builds its routes; the worker and the admin commands, which load this
 * package but validate no create, never pay for it.
 */
export function createRequestParser(): (body: unknown) => CreateRequestBody {
  const ajv = new Ajv({ allErrors: false, strict: false });
  // minUnits and maxUnits: a string's length as JavaScript counts it (UTF-16 code units, an emoji is
  // two). Ajv's minLength and maxLength count code points by walking every character in JavaScript:
  // for a 20 KB prompt that walk was the largest single cost of a create (8.7% of the API's profile).
  // Ajv's own switch for `.length` (`unicode: false`) is deprecated and prints a warning at each start.
  ajv.addKeyword({
    keyword: 'minUnits',
    type: 'string',
    schemaType: 'number',
    code: (cxt: KeywordCxt) => cxt.fail(_`${cxt.data}.length < ${cxt.schema}`),
    error: { message: ({ schemaCode }) => str`must NOT have fewer than ${schemaCode} characters` },
  });
  ajv.addKeyword({
    keyword: 'maxUnits',
    type: 'string',
    schemaType: 'number',
    code: (cxt: KeywordCxt) => cxt.fail(_`${cxt.data}.length > ${cxt.schema}`),
    error: { message: ({ schemaCode }) => str`must NOT have more than ${schemaCode} characters` },
  });
  const validateCreate = ajv.compile<CreateRequestBody>(createRequestSchema);

  return (body) => {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new AppError('invalid_request', 'the body must be a JSON object');
    }
    if (!validateCreate(body)) throw new AppError('invalid_request', describe(validateCreate.errors?.[0]));
    const options = body.options ?? {};
    for (const key of RESERVED_OPTIONS) {
      if (Object.hasOwn(options, key)) {
        throw new AppError(
          'invalid_request',
          `options.${key} is not allowed: the proxy ${key === 'stream' || key === 'stream_options' ? 'does not stream' : `sets ${key} itself`}`,
        );
      }
    }
    return body;
  };
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
  return `${field || 'body'} ${err.message ?? 'is invalid'}`;
}
