import type { JobError } from '../store/types.js';
import type { UpstreamOutcome } from './upstream-client.js';

/** How a failed attempt is judged: try again or not, and how long the upstream asked us to wait. */
export interface Verdict {
  retryable: boolean;
  error: JobError;
  /** The upstream's own wait, when it named one (Retry-After and friends). */
  waitMs?: number | undefined;
  /** What the operator can do about it, for the worker's log only (the job's error goes to its client). */
  hint?: string;
}

const RETRYABLE_STATUS = new Set([408, 409, 429]);

/** Classifies an unsuccessful outcome the way OpenAI's SDKs do. */
export function judgeFailure(outcome: Exclude<UpstreamOutcome, { kind: 'ok' | 'local_shortage' }>, now: number): Verdict {
  switch (outcome.kind) {
    case 'network_error':
      return { retryable: true, error: { code: 'upstream_unreachable', message: outcome.message } };
    // As an upstream's own status: a 407 (the proxy's credentials) or 403 (its policy) stays so
    // until someone changes the settings, so only the proxy's 408, 429 and 5xx are tried again.
    case 'proxy_refused':
      return { retryable: RETRYABLE_STATUS.has(outcome.status) || outcome.status >= 500, error: { code: 'upstream_proxy_refused', message: outcome.message } };
    // The same certificate meets every attempt until someone acts on this machine.
    case 'certificate_rejected':
      return {
        retryable: false,
        error: { code: 'upstream_certificate_rejected', message: outcome.message },
        hint: "when a proxy that inspects TLS or a private CA signs the upstream's certificate, name that CA's PEM file in UPSTREAM_CA_FILE",
      };
    case 'bad_response':
      return { retryable: !outcome.final, error: { code: 'upstream_bad_response', message: outcome.message, upstreamStatus: outcome.status } };
    // The same request would most likely get the same oversized answer: another attempt only costs money.
    case 'too_large':
      return { retryable: false, error: { code: 'upstream_response_too_large', message: outcome.message, upstreamStatus: outcome.status } };
    case 'http_error': {
      const error = { code: `upstream_${outcome.status}`, message: outcome.message, upstreamStatus: outcome.status };
      if (outcome.errorCode) error.code = `upstream_${outcome.errorCode}`;
      const waitMs = retryHintMs(outcome.headers, now);
      const should = outcome.headers['x-should-retry'];
      if (should === 'true') return { retryable: true, error, waitMs };
      if (should === 'false') return { retryable: false, error };
      // Out of credit: retrying only burns attempts.
      if (outcome.status === 429 && outcome.errorCode === 'insufficient_quota') return { retryable: false, error };
      const retryable = RETRYABLE_STATUS.has(outcome.status) || outcome.status >= 500;
      return { retryable, error, waitMs: retryable ? waitMs : undefined };
    }
  }
}

/** Exponential backoff with equal jitter: half the step fixed, half random, capped at maxMs. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(step / 2 + random() * (step / 2));
}

/**
 * The wait the upstream asked for, in ms: `retry-after-ms`, then `Retry-After` (seconds or an HTTP
 * date), then OpenAI's `x-ratelimit-reset-requests`/`-tokens` for the budget that ran out.
 */
export function retryHintMs(headers: Record<string, string>, now: number): number | undefined {
  const ms = Number(headers['retry-after-ms']);
  if (headers['retry-after-ms'] !== undefined && Number.isFinite(ms) && ms >= 0) return Math.ceil(ms);
  const after = headers['retry-after'];
  if (after !== undefined) {
    const seconds = Number(after);
    if (after.trim() !== '' && Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
    const date = Date.parse(after);
    if (Number.isFinite(date)) return Math.max(0, date - now);
  }
  const requests = parseGoDuration(headers['x-ratelimit-reset-requests']);
  const tokens = parseGoDuration(headers['x-ratelimit-reset-tokens']);
  const requestsOut = headers['x-ratelimit-remaining-requests'] === '0';
  const tokensOut = headers['x-ratelimit-remaining-tokens'] === '0';
  if (requestsOut && !tokensOut) return requests;
  if (tokensOut && !requestsOut) return tokens;
  if (requests === undefined) return tokens;
  if (tokens === undefined) return requests;
  return Math.max(requests, tokens);
}

const GO_UNITS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000001 };

/** Parses Go-style durations such as `6m0s`, `1.5s`, `20ms`; undefined when malformed. */
export function parseGoDuration(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const trimmed = text.trim();
  if (!/^(\d+(\.\d+)?(h|ms|m|s|us|µs|ns))+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const m of trimmed.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/g)) total += Number(m[1]) * (GO_UNITS[m[2] as string] ?? 0);
  return Math.ceil(total);
}
