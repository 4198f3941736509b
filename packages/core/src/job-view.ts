import type { JobOutcome, JobRecord, WorkerHeartbeat } from './store/types.js';

/** A job as the API returns it: OpenAI's status words, Unix seconds, no internal fields. */
export interface JobView {
  id: string;
  object: 'proxy.request';
  status: JobRecord['status'];
  model: string;
  attempts: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  expires_at: number;
  output_text?: string | null;
  usage?: unknown;
  response?: unknown;
  error?: { code: string; message: string; upstream_status?: number };
  /** On a queued job that is waiting to retry: what the last attempt ran into, and when the next may start. */
  last_error?: { code: string; message: string; upstream_status?: number };
  next_attempt_at?: number;
  /** On a running job: its client asked to cancel, and the worker holding it will stop its call. */
  cancel_requested?: true;
}

const seconds = (ms: number) => Math.floor(ms / 1000);
const secondsOrNull = (ms: number | null) => (ms === null ? null : seconds(ms));

/** Renders a stored job for clients. */
export function toJobView(job: JobOutcome): JobView {
  const view: JobView = {
    id: job.id,
    object: 'proxy.request',
    status: job.status,
    model: job.model,
    attempts: job.attempts,
    created_at: seconds(job.createdAt),
    started_at: secondsOrNull(job.startedAt),
    finished_at: secondsOrNull(job.finishedAt),
    expires_at: seconds(job.expiresAt),
  };
  const error = job.error ? { code: job.error.code, message: job.error.message, ...(job.error.upstreamStatus ? { upstream_status: job.error.upstreamStatus } : {}) } : undefined;
  if (job.status === 'completed') {
    view.output_text = job.outputText;
    view.usage = job.usage;
    view.response = job.response;
  } else if ((job.status === 'failed' || job.status === 'expired') && error) {
    view.error = error;
  } else if (job.status === 'in_progress' && job.cancelRequested) {
    view.cancel_requested = true;
  } else if (job.status === 'queued' && error) {
    view.last_error = error;
    view.next_attempt_at = seconds(job.runAfter);
  }
  return view;
}

/** A live worker as /health and `proxy-worker stats --json` show it: the same words and Unix seconds as a job. */
export interface WorkerView {
  id: string;
  host: string;
  pid: number;
  started_at: number;
  last_seen_at: number;
  jobs_done: number;
  /** The store's clock minus the worker host's, in ms (0 on SQLite; null from an older worker). */
  clock_offset_ms: number | null;
}

export function toWorkerView(worker: WorkerHeartbeat): WorkerView {
  return {
    id: worker.id,
    host: worker.host,
    pid: worker.pid,
    started_at: seconds(worker.startedAt),
    last_seen_at: seconds(worker.lastSeenAt),
    jobs_done: worker.jobsDone,
    clock_offset_ms: worker.clockOffsetMs,
  };
}
