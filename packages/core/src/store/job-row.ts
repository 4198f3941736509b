import type { JobRecord, JobStatus } from './types.js';

/** A jobs row as both backends store it (same columns, times in Unix ms). */
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

/** Error of a job that passed its deadline. */
export const EXPIRED_ERROR = { code: 'expired', message: 'the job reached its ttl before it could complete' };
/** Error of a job whose worker vanished when it had no attempts left. */
export const WORKER_LOST_ERROR = { code: 'worker_lost', message: 'the worker holding the job stopped answering and no attempts are left' };

/** Maps a row to the application's shape. */
export function toJob(row: JobRow): JobRecord {
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
    usage: row.usage === null ? null : JSON.parse(row.usage),
    response: row.response === null ? null : JSON.parse(row.response),
    error: row.error_code === null ? null : { code: row.error_code, message: row.error_message ?? '', upstreamStatus: row.upstream_status ?? undefined },
  };
}
