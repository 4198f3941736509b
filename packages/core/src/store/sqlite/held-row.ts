import type { JobRow } from '../job-row.js';
import type { JobStatus } from '../types.js';

/**
 * A claim's rows come back as arrays and are made objects here, by position. better-sqlite3 12 on
 * Node 20 builds an object row by giving an empty object its columns one at a time through V8's
 * API, and a row of 20 columns or more ends up a dictionary (`%HasFastProperties` false), slow to
 * build and to read: a claim returns 25. Counted (callgrind, `profile.ts worker` with
 * COUNT=instructions, the daemon's main thread against the zero-latency stub, two runs each):
 * 438,293 and 435,138 instructions a job against 477,084 and 475,474 with object rows. Timed, the
 * store alone (claims of eight, each completed together, 20,000 jobs; four alternating pairs):
 * 60.0-64.2 µs of CPU a job against 63.9-67.5; the daemon's CPU a job moved less than its noise.
 */

/** The jobs table's columns, in the order the claims return them (RETURNING HELD_COLUMNS). */
export const HELD_COLUMNS =
  'seq, id, client, nonce, request_hash, status, model, attempts, max_attempts, run_after, expires_at, lease_until, lease_token, worker_id, ' +
  'cancel_requested, created_at, started_at, finished_at, updated_at, output_text, usage, response, error_code, error_message, upstream_status';

/** A claim's row as better-sqlite3 returns it in raw mode: HELD_COLUMNS, in order. */
export type HeldValues = [
  seq: number,
  id: string,
  client: string,
  nonce: string,
  request_hash: string,
  status: JobStatus,
  model: string,
  attempts: number,
  max_attempts: number,
  run_after: number,
  expires_at: number,
  lease_until: number | null,
  lease_token: number,
  worker_id: string | null,
  cancel_requested: number,
  created_at: number,
  started_at: number | null,
  finished_at: number | null,
  updated_at: number,
  output_text: string | null,
  usage: string | null,
  response: string | null,
  error_code: string | null,
  error_message: string | null,
  upstream_status: number | null,
];

/** A claimed job's row with its request (read apart, from job_requests: migration 0011); one literal, so every row has one shape. */
export function heldRow(v: HeldValues, request: string): JobRow & { seq: number } {
  return {
    seq: v[0],
    id: v[1],
    client: v[2],
    nonce: v[3],
    request_hash: v[4],
    status: v[5],
    model: v[6],
    attempts: v[7],
    max_attempts: v[8],
    run_after: v[9],
    expires_at: v[10],
    lease_until: v[11],
    lease_token: v[12],
    worker_id: v[13],
    cancel_requested: v[14],
    created_at: v[15],
    started_at: v[16],
    finished_at: v[17],
    updated_at: v[18],
    output_text: v[19],
    usage: v[20],
    response: v[21],
    error_code: v[22],
    error_message: v[23],
    upstream_status: v[24],
    request,
  };
}
