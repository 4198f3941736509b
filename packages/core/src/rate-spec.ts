import { ConfigError } from './errors.js';

/** What a rate setting may say: N/s, N/min or N/h, or off. */
export const RATE_PATTERN = '^(off|[1-9][0-9]{0,8}/(s|min|h))$';

/** A budget of `count` requests per `periodMs`, bursting up to `count`. */
export interface RateLimitSpec {
  readonly count: number;
  readonly periodMs: number;
}

/** "60/min" → 60 per 60 000 ms; "off" → null. */
export function parseRate(text: string): RateLimitSpec | null {
  if (text === 'off') return null;
  const m = /^([0-9]+)\/(s|min|h)$/.exec(text);
  if (!m) throw new ConfigError(`rate limit ${JSON.stringify(text)} must look like 60/min, 5/s or 1000/h, or be off`);
  return { count: Number(m[1]), periodMs: m[2] === 's' ? 1000 : m[2] === 'min' ? 60_000 : 3_600_000 };
}
