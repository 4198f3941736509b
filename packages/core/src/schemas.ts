/**
 * The JSON schemas of what clients and operators send: the create body and the clients file. Their
 * validators are compiled ahead by scripts/generate-validators.ts (`npm run generate`), which also
 * defines the create body's minUnits and maxUnits keywords: a string's length in UTF-16 units.
 * This module imports no validator, so that the script can load it whatever state those are in.
 */
import { RATE_PATTERN } from './rate-spec.js';

/** What a model name may be, in a request, DEFAULT_MODEL and ALLOWED_MODELS alike. */
export const MODEL_PATTERN = /^[A-Za-z0-9._:/-]{1,100}$/;

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

const printable = (min: number, max: number) => ({ type: 'string', pattern: `^[\\x21-\\x7e]{${min},${max}}$` });

/** PROXY_CLIENTS_FILE: a JSON list of clients. */
export const clientsFileSchema = {
  type: 'array',
  maxItems: 10_000,
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['name', 'key'],
    properties: {
      name: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' },
      key: printable(16, 256),
      secret: printable(32, 512),
      // Several secrets are active at once during a rotation: add the new one, move clients, drop the old.
      secrets: { type: 'array', minItems: 1, maxItems: 8, items: printable(32, 512) },
      rate_limit: { type: 'string', pattern: RATE_PATTERN },
    },
    anyOf: [{ required: ['secret'] }, { required: ['secrets'] }],
  },
} as const;

/** One client of a validated clients file. */
export interface ClientsFileEntry {
  name: string;
  key: string;
  secret?: string;
  secrets?: string[];
  rate_limit?: string;
}
