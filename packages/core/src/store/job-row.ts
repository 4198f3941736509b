import { wellFormed } from '../unicode.js';
import type { ClaimedJob, JobError, JobOutcome, JobRecord, JobResult, JobStatus, NewJob } from './types.js';

/** A job's columns as both backends read them, times in Unix ms (SQLite keeps `request` in a table of its own: migration 0011). */
export interface JobRow {
  id: string;
  client: string;
  nonce: string;
  request_hash: string;
  status: JobStatus;
  model: string;
  request: string;
  attempts: number;
  max_attempts: number;
  run_after: number;
  expires_at: number;
  lease_until: number | null;
  lease_token: number;
  worker_id: string | null;
  cancel_requested: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
  output_text: string | null;
  usage: string | null;
  response: string | null;
  error_code: string | null;
  error_message: string | null;
  upstream_status: number | null;
}

/**
 * Sorts a claim's due jobs into queue order: by due time, jobs due in the same millisecond in the
 * order stored (`seq`, each store's insertion order). Both stores claim with one
 * `UPDATE … WHERE id IN (SELECT … ORDER BY run_after[, seq] LIMIT n) RETURNING …`, whose rows come
 * in the order the update met them (by rowid on SQLite, any on PostgreSQL), not the subquery's. Which
 * jobs the limit takes is the subquery's order: on SQLite its index on run_after keeps ties by rowid,
 * which is seq; on PostgreSQL the statement names seq (migration 0011).
 */
export function byQueueOrder(a: Pick<JobRow, 'run_after'> & { seq: number }, b: Pick<JobRow, 'run_after'> & { seq: number }): number {
  return a.run_after - b.run_after || a.seq - b.seq;
}

/** Error of a job that passed its deadline. */
export const EXPIRED_ERROR = { code: 'expired', message: 'the job reached its ttl before it could complete' };
/** Error of a job whose worker vanished when it had no attempts left. */
export const WORKER_LOST_ERROR = { code: 'worker_lost', message: 'the worker holding the job stopped answering and no attempts are left' };

/**
 * Maps a row to the application's shape. Written out rather than built on toOutcome with a spread:
 * measured in the worker's profile, the spread made this 4× slower (it runs for every claimed job).
 */
export function toJob(row: JobRow): JobRecord {
  const usage = parsed(row.usage);
  return {
    id: row.id,
    client: row.client,
    nonce: row.nonce,
    requestHash: row.request_hash,
    status: row.status,
    model: row.model,
    request: JSON.parse(row.request),
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    runAfter: row.run_after,
    expiresAt: row.expires_at,
    leaseUntil: row.lease_until,
    leaseToken: row.lease_token,
    workerId: row.worker_id,
    cancelRequested: row.cancel_requested === 1,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    updatedAt: row.updated_at,
    outputText: row.output_text,
    usage,
    response: readResponse(row, usage),
    error: errorOf(row),
  };
}

/** A row a claim took, with its request's text kept for the upstream call (see ClaimedJob). */
export function toClaimedJob(row: JobRow): ClaimedJob {
  const job = toJob(row) as ClaimedJob;
  job.requestJson = row.request;
  return job;
}

/** The columns a lookup reads (both stores select exactly these). */
export type OutcomeRow = Pick<
  JobRow,
  | 'id'
  | 'client'
  | 'status'
  | 'model'
  | 'attempts'
  | 'run_after'
  | 'expires_at'
  | 'cancel_requested'
  | 'created_at'
  | 'started_at'
  | 'finished_at'
  | 'output_text'
  | 'usage'
  | 'response'
  | 'error_code'
  | 'error_message'
  | 'upstream_status'
>;

/** Maps a lookup's row to what a client may see of the job. */
export function toOutcome(row: OutcomeRow): JobOutcome {
  const usage = parsed(row.usage);
  return {
    id: row.id,
    client: row.client,
    status: row.status,
    model: row.model,
    attempts: row.attempts,
    runAfter: row.run_after,
    expiresAt: row.expires_at,
    cancelRequested: row.cancel_requested === 1,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    outputText: row.output_text,
    usage,
    response: readResponse(row, usage),
    error: errorOf(row),
  };
}

function errorOf(row: Pick<JobRow, 'error_code' | 'error_message' | 'upstream_status'>): JobError | null {
  return row.error_code === null ? null : { code: row.error_code, message: row.error_message ?? '', upstreamStatus: row.upstream_status ?? undefined };
}

/**
 * What a store's text column holds of a text: `wellFormed` for SQLite, PostgreSQL's own (pgText)
 * for its. A completed job's response keeps its content whenever the column could not hold it as
 * it came (see storedResponse).
 */
export type ColumnText = (text: string) => string;

/** Maps a job back to its row: what a copy between stores writes. */
export function toRow(job: JobRecord, columnText: ColumnText = wellFormed): JobRow {
  const usage = json(job.usage);
  const text = job.outputText === null ? null : columnText(job.outputText);
  return {
    id: job.id,
    client: job.client,
    nonce: job.nonce,
    request_hash: job.requestHash,
    status: job.status,
    model: job.model,
    request: JSON.stringify(job.request),
    attempts: job.attempts,
    max_attempts: job.maxAttempts,
    run_after: job.runAfter,
    expires_at: job.expiresAt,
    lease_until: job.leaseUntil,
    lease_token: job.leaseToken,
    worker_id: job.workerId,
    cancel_requested: job.cancelRequested ? 1 : 0,
    created_at: job.createdAt,
    started_at: job.startedAt,
    finished_at: job.finishedAt,
    updated_at: job.updatedAt,
    output_text: text,
    usage,
    response: json(storedResponse(job.response, text, job.usage, usage)),
    error_code: job.error?.code ?? null,
    error_message: job.error ? columnText(job.error.message) : null,
    upstream_status: job.error?.upstreamStatus ?? null,
  };
}

/** A completed attempt's answer as both stores write it: the text, and usage and response as JSON. */
export function resultColumns(result: JobResult, columnText: ColumnText = wellFormed): Pick<JobRow, 'output_text' | 'usage' | 'response'> {
  const usage = json(result.usage);
  const text = result.outputText === null ? null : columnText(result.outputText);
  return {
    output_text: text,
    usage,
    response: result.response === undefined ? null : JSON.stringify(storedResponse(result.response, text, result.usage, usage)),
  };
}

/*
 * A completed job's answer is stored once. output_text is the first choice's message content
 * whenever it is not null, and the usage column the response's `usage` (upstream-client takes both
 * from there), so the response is stored with those two set to null, each key left in its place,
 * and gets them back when read. A long answer used to be written, read and parsed twice. Rows
 * written before keep both copies, and read the same. A text the column cannot hold as it came
 * (half of a UTF-16 pair; a NUL on PostgreSQL) differs from the content, which the response then
 * keeps, escaped in its JSON: the upstream's answer reads as it came, output_text well-formed.
 */
type Message = { content?: unknown };
type Completion = { choices?: Array<{ message?: Message }>; usage?: unknown };

function firstMessage(response: unknown): Message | undefined {
  const message = (response as Completion | null)?.choices?.[0]?.message;
  return typeof message === 'object' && message !== null ? message : undefined;
}

/**
 * The response as stored: a shallow copy without what output_text (`text`) and the usage column
 * (`usage`, and `usageJson` as written) hold. The worker's usage is the response's own object, so
 * that is checked before serializing the response's usage again to compare.
 */
function storedResponse(response: unknown, text: string | null, usage: unknown, usageJson: string | null): unknown {
  if (typeof response !== 'object' || response === null) return response;
  const dropText = text !== null && firstMessage(response)?.content === text;
  const own = (response as Completion).usage;
  const dropUsage = usageJson !== null && (own === usage || JSON.stringify(own) === usageJson);
  if (!dropText && !dropUsage) return response;
  const stored: Completion = { ...response };
  if (dropUsage) stored.usage = null;
  if (dropText) {
    const [first, ...rest] = stored.choices as NonNullable<Completion['choices']>;
    stored.choices = [{ ...first, message: { ...first!.message, content: null } }, ...rest];
  }
  return stored;
}

/** A stored response with its first message's content and its usage put back (`usage`: the usage column, parsed). */
function readResponse(row: Pick<JobRow, 'output_text' | 'response'>, usage: unknown): unknown {
  if (row.response === null) return null;
  const response = JSON.parse(row.response) as unknown;
  if (typeof response !== 'object' || response === null) return response;
  if (row.output_text !== null) {
    const message = firstMessage(response);
    if (message?.content === null) message.content = row.output_text;
  }
  // Shared with the job's own `usage`: both are only ever rendered.
  if (usage !== null && (response as Completion).usage === null) (response as Completion).usage = usage;
  return response;
}

/** A JSON column's value; null stays null. */
function parsed(text: string | null): unknown {
  return text === null ? null : JSON.parse(text);
}

/** A value as a JSON column; null and undefined are stored as null. */
function json(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}

/** A new job as both stores insert it: queued, due now, nothing tried yet. */
export function queuedJob(job: NewJob, at: number): JobRecord {
  return {
    id: job.id,
    client: job.client,
    nonce: job.nonce,
    requestHash: job.requestHash,
    status: 'queued',
    model: job.model,
    request: job.request,
    attempts: 0,
    maxAttempts: job.maxAttempts,
    runAfter: at,
    expiresAt: job.expiresAt,
    leaseUntil: null,
    leaseToken: 0,
    workerId: null,
    cancelRequested: false,
    createdAt: at,
    startedAt: null,
    finishedAt: null,
    updatedAt: at,
    outputText: null,
    usage: null,
    response: null,
    error: null,
  };
}
