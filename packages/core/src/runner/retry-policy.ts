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
      return {
        retryable: true,
        error: { code: 'upstream_unreachable', message: outcome.message },
        // TLS spoken to a server that answers in plain HTTP: undici's code names only the symptom.
        ...(outcome.code === 'ERR_SSL_WRONG_VERSION_NUMBER'
          ? { hint: 'the server at that address answers plain HTTP where OPENAI_BASE_URL (or the proxy) says https://: check its scheme and port' }
          : {}),
      };
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
      return {
        retryable: !outcome.final,
        error: { code: 'upstream_bad_response', message: outcome.message, upstreamStatus: outcome.status },
        ...(outcome.notCompletion
          ? {
              hint: "check that OPENAI_BASE_URL is an OpenAI-compatible API's base, to which each call adds /chat/completions (a server's own API beside it, as Ollama's /api, answers otherwise)",
            }
          : {}),
      };
    // The same request would most likely get the same oversized answer: another attempt only costs money.
    case 'too_large':
      return { retryable: false, error: { code: 'upstream_response_too_large', message: outcome.message, upstreamStatus: outcome.status } };
    case 'http_error': {
      const error = { code: `upstream_${outcome.status}`, message: outcome.message, upstreamStatus: outcome.status };
      if (outcome.errorCode) error.code = `upstream_${outcome.errorCode}`;
      const hint = settingsHint(outcome.status, outcome.errorCode);
      const verdict = (retryable: boolean, waitMs?: number): Verdict => ({ retryable, error, waitMs, ...(hint ? { hint } : {}) });
      // A header's word first, as OpenAI's SDKs read it; then the body's (Google's RetryInfo).
      const asked = retryHintMs(outcome.headers, now) ?? outcome.retryDelayMs;
      const should = outcome.headers['x-should-retry'];
      if (should === 'true') return verdict(true, asked);
      if (should === 'false') return verdict(false);
      // Out of credit: retrying only burns attempts.
      if (outcome.status === 429 && outcome.errorCode === 'insufficient_quota') return verdict(false);
      const retryable = RETRYABLE_STATUS.has(outcome.status) || outcome.status >= 500;
      return verdict(retryable, retryable ? asked : undefined);
    }
  }
}

/**
 * The setting to look at when a status says the call was wrong for every job alike: the key, or the
 * address (a base without OpenAI's /v1 gets 404 for /chat/completions). A 404 naming a missing model
 * is the request's, not the settings'.
 */
function settingsHint(status: number, errorCode: string | null): string | undefined {
  if (status === 401) return 'the upstream refused the key: check OPENAI_API_KEY (and OPENAI_API_KEY_HEADER: Azure OpenAI takes its key as api-key)';
  if ((status === 404 || status === 405) && errorCode !== 'model_not_found' && errorCode !== 'DeploymentNotFound') {
    return "if the model exists there, check OPENAI_BASE_URL: it is the API's base, to which each call adds /chat/completions (OpenAI's is https://api.openai.com/v1)";
  }
  return undefined;
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
