import { LATENCY_BUCKETS, type AttemptObservation, type TokenCounts } from './types.js';

/**
 * A counter's labels as both stores keep them: JSON with sorted keys, so one label set is always
 * one row. (PostgreSQL's single-statement writes build the same text in SQL for {model, status}.)
 */
export function labelsJson(labels: Record<string, string>): string {
  const keys = Object.keys(labels);
  if (keys.length < 2) return JSON.stringify(labels);
  return JSON.stringify(Object.fromEntries(keys.sort().map((k) => [k, labels[k]])));
}

const oneKey = new Map<string, string>();

/**
 * labelsJson of a label set of one key, made once for each key and value: an upstream attempt's
 * labels (its status, its latency's bucket, a completion's finish reason) each take a few values,
 * and every attempt adds three or four. Only for labels of such bounded values: each is kept.
 */
export function oneLabelJson(key: string, value: string): string {
  const id = `${key}=${value}`;
  let json = oneKey.get(id);
  if (json === undefined) oneKey.set(id, (json = JSON.stringify({ [key]: value })));
  return json;
}

/**
 * How many models the counters name one by one. A client may name any model while ALLOWED_MODELS
 * is unset, and every model named made counter rows (read in full at each scrape of /metrics) and
 * Prometheus series for good: 50,000 models (one client's seven hours at RATE_LIMIT_PER_KEY's
 * default) made 100,000 rows that took 260 ms to read. The first models counted keep their own label, recorded in the table
 * counter_models; every later one is counted as OTHER_MODEL. A model once given a label keeps it,
 * so every series only grows, as a counter must. Concurrent first creates on PostgreSQL may admit
 * a few past the bound.
 */
export const MODEL_LABELS_MAX = 100;

/** The finish reasons OpenAI's API sends, each counted under its own label (finishReasonLabel). */
const FINISH_REASONS: ReadonlySet<string> = new Set(['stop', 'length', 'content_filter', 'tool_calls', 'function_call']);

/**
 * A completion's finish reason as a counter's label: OpenAI's own by name, `none` where the answer
 * names none, `other` for the rest. The upstream writes it, so a server's own words (Gemini's
 * `MAX_TOKENS`, a gateway's) would otherwise make a series each.
 */
export function finishReasonLabel(reason: string | null): string {
  if (reason === null) return 'none';
  return FINISH_REASONS.has(reason) ? reason : 'other';
}

/**
 * The prompt and completion tokens a completion's usage reports (OpenAI's `usage.prompt_tokens` and
 * `usage.completion_tokens`), or undefined when it reports no whole, non-negative count of either:
 * a server that sends no usage, or a streamed answer whose usage was not asked for, adds nothing to
 * the token counters rather than a guess.
 */
export function tokenCounts(usage: unknown): TokenCounts | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const { prompt_tokens: prompt, completion_tokens: completion } = usage as { prompt_tokens?: unknown; completion_tokens?: unknown };
  const count = (n: unknown) => (Number.isSafeInteger(n) && (n as number) >= 0 ? (n as number) : 0);
  const counts = { prompt: count(prompt), completion: count(completion) };
  return counts.prompt === 0 && counts.completion === 0 ? undefined : counts;
}

/** The model label of the models past MODEL_LABELS_MAX. No model can be named so (MODEL_PATTERN has no parentheses). */
export const OTHER_MODEL = '(other)';

/** A counter's change an attempt brings: its name, labels (as labelsJson makes them), and how much. */
export type Bump = [name: string, labels: string, by: number];

/**
 * The counters an attempt moves: its call by status, its latency, and a completion's finish reason.
 * Both stores count by it (SQLite in counters.ts, PostgreSQL with each ending's write). A
 * completion's tokens are counted by its job's model too, which only the write that ends the job
 * reads (tokenBumps on SQLite; PostgreSQL builds the same labels in that write's SQL).
 */
export function attemptBumps(attempt: AttemptObservation | undefined): Bump[] {
  if (!attempt) return [];
  const seconds = attempt.latencyMs / 1000;
  const le = LATENCY_BUCKETS.find((b) => seconds <= b);
  const bumps: Bump[] = [
    ['upstream_calls_total', oneLabelJson('code', attempt.upstreamStatus), 1],
    ['upstream_latency_seconds_bucket', oneLabelJson('le', le === undefined ? '+Inf' : String(le)), 1],
    ['upstream_latency_seconds_sum', '{}', seconds],
  ];
  if (attempt.finishReason !== undefined) bumps.push(['completions_total', oneLabelJson('finish_reason', attempt.finishReason), 1]);
  return bumps;
}

/** A model label's two token-counter label sets (prompt, completion), made once each: the labels are bounded (MODEL_LABELS_MAX). */
const tokenLabels = new Map<string, readonly [prompt: string, completion: string]>();

/**
 * The tokens_total counters a completion moves: its prompt and completion tokens, under its job's
 * model label (the label its model is counted by, as model-labels.ts gives it), since what a token
 * costs depends on the model.
 */
export function tokenBumps(tokens: TokenCounts, modelLabel: string): Bump[] {
  let labels = tokenLabels.get(modelLabel);
  if (labels === undefined) {
    labels = [labelsJson({ kind: 'prompt', model: modelLabel }), labelsJson({ kind: 'completion', model: modelLabel })];
    tokenLabels.set(modelLabel, labels);
  }
  return [
    ['tokens_total', labels[0], tokens.prompt],
    ['tokens_total', labels[1], tokens.completion],
  ];
}
