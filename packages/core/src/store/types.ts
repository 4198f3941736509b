/**
 * The job store's contract. It is asynchronous although better-sqlite3 is not, so that a server
 * database can stand behind it without any caller changing. All times are Unix milliseconds.
 */

/** OpenAI's words for where a job is. */
export type JobStatus = 'queued' | 'in_progress' | 'completed' | 'failed' | 'cancelled' | 'expired';

/** Statuses a job never leaves. */
export const FINAL_STATUSES: ReadonlySet<JobStatus> = new Set(['completed', 'failed', 'cancelled', 'expired']);

/**
 * Why a job in `status` cannot be cancelled (the API's DELETE, `proxy-worker cancel`), or null when
 * it can: it ended otherwise. One cancelled already is what a cancel asks, not refused.
 */
export function cancelRefusal(status: JobStatus): string | null {
  return status !== 'cancelled' && FINAL_STATUSES.has(status) ? `already ended as ${status} and cannot be cancelled` : null;
}

/** What went wrong, as recorded on a failed or expired job. */
export interface JobError {
  code: string;
  message: string;
  /** The upstream's HTTP status, where the failure came from an upstream answer. */
  upstreamStatus?: number | undefined;
}

/** The chat-completions body the worker will send (model, messages and the client's options). */
export interface ChatRequest {
  model: string;
  messages: unknown[];
  [option: string]: unknown;
}

/** A job as stored. */
export interface JobRecord {
  id: string;
  client: string;
  nonce: string;
  requestHash: string;
  status: JobStatus;
  model: string;
  request: ChatRequest;
  attempts: number;
  maxAttempts: number;
  runAfter: number;
  expiresAt: number;
  leaseUntil: number | null;
  /** Fencing token: bumped at every claim; writes by a worker must name the current one. */
  leaseToken: number;
  workerId: string | null;
  cancelRequested: boolean;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
  outputText: string | null;
  usage: unknown;
  response: unknown;
  error: JobError | null;
}

/**
 * What a client may see of a job, and whose it is: what a lookup reads. It leaves out the prompt
 * (which may be large and which no answer repeats) and the worker's lease.
 */
export type JobOutcome = Pick<
  JobRecord,
  | 'id'
  | 'client'
  | 'status'
  | 'model'
  | 'attempts'
  | 'runAfter'
  | 'expiresAt'
  | 'cancelRequested'
  | 'createdAt'
  | 'startedAt'
  | 'finishedAt'
  | 'outputText'
  | 'usage'
  | 'response'
  | 'error'
>;

/** What the API hands the store to enqueue. */
export interface NewJob {
  id: string;
  client: string;
  nonce: string;
  requestHash: string;
  model: string;
  request: ChatRequest;
  /**
   * `JSON.stringify(request)`, written once by the caller: the API hashes this text for the
   * idempotency check, the store writes it as it is, and the worker sends it upstream as it is.
   */
  requestJson: string;
  maxAttempts: number;
  expiresAt: number;
}

/** createJob's answer: the stored job, and whether this call created it (false: the nonce was known). */
export interface CreateResult {
  job: JobRecord;
  created: boolean;
}

/** A job a worker holds: its fencing token must accompany every write about it. */
export interface ClaimedJob extends JobRecord {
  leaseToken: number;
  /**
   * The request as stored, JSON text, which is what the upstream is sent: the worker does not write
   * it again from `request` (for a 20 KB prompt that took about 80 µs a job).
   */
  requestJson: string;
}

export interface ClaimOptions {
  workerId: string;
  limit: number;
  leaseMs: number;
  /**
   * How long past its end a running job's lease must be for the claim to take it as lapsed (0 when
   * not given). After the clock stepped forward, every lease written before the step reads as run
   * out, the leases of workers still calling among them; the worker that saw the step passes the
   * step here until those workers have renewed theirs on the clock as it now reads (worker.ts).
   */
  lapseGraceMs?: number;
}

/** What a lease renewal learned: still ours, lost to another claim, or the client asked to cancel. */
export type LeaseState = 'held' | 'lost' | 'cancel_requested';

/** The result of a successful upstream call. */
export interface JobResult {
  outputText: string | null;
  usage: unknown;
  response: unknown;
}

/** What one upstream attempt looked like, for the metrics: its HTTP status (or a failure word) and duration. */
export interface AttemptObservation {
  upstreamStatus: string;
  latencyMs: number;
  /** A completion's: why its first choice stopped, as a counter's label (finishReasonLabel). */
  finishReason?: string;
  /** A completion's: its usage's prompt and completion tokens as the upstream reported them (tokenCounts), or undefined. */
  tokens?: TokenCounts;
}

/** The tokens a completion's usage reports, each a whole number of at least 0. */
export interface TokenCounts {
  prompt: number;
  completion: number;
}

/** Upper bounds (seconds) of the upstream latency histogram's buckets; slower calls count under +Inf. */
export const LATENCY_BUCKETS: readonly number[] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** A shared counter as stored: name, labels, value. */
export interface CounterValue {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A worker counts as alive when its heartbeat is this recent (health, metrics, stats). */
export const WORKER_ALIVE_MS = 30_000;

/**
 * The workers alive at `at` (health, metrics, stats): a heartbeat within WORKER_ALIVE_MS. One from
 * ahead of `at` (steppedBack) was written before the clock stepped back and says nothing of now:
 * counted, a fleet that died at the step looked alive for as long as the step. A worker alive
 * brings its own onto the clock as soon as it sees the step (rebaseAfterClockStep).
 */
export async function liveWorkers(store: Pick<JobStore, 'listWorkers'>, at: number): Promise<WorkerHeartbeat[]> {
  return (await store.listWorkers(at - WORKER_ALIVE_MS)).filter((w) => !steppedBack(w.lastSeenAt, at));
}

/**
 * A queued job due this long with no worker alive waits for nothing: longer than a cron worker's
 * minute (proxy-worker once is alive only while it runs). The status page has its own copy.
 */
export const STALLED_AFTER_SECONDS = 120;

/** A worker process as it last reported itself. */
export interface WorkerHeartbeat {
  id: string;
  host: string;
  pid: number;
  startedAt: number;
  lastSeenAt: number;
  jobsDone: number;
  /**
   * The store's clock minus the worker host's, in ms, as the worker last measured it (`clockOffsetMs`
   * below): positive when its host's clock is behind. Null from a worker of a release before this.
   */
  clockOffsetMs: number | null;
}

/** A write-ahead log a checkpoint could not empty (JobStore.checkpoint). */
export interface LogBacklog {
  /** The log file, e.g. /var/lib/chat-async-proxy/requests.sqlite-wal. */
  path: string;
  /** What the log holds, in bytes (its frames, not the file's length, which a checkpoint keeps). */
  bytes: number;
  /** The processes holding read locks on it besides the caller, as processName says them. */
  readers: string[];
}

/**
 * A write-ahead log holding more than this after a checkpoint is reported (JobStore.checkpoint):
 * checkpoints keep it near 41 MB (10,000 pages) and its file at 64 MB, so four times that means a
 * reader has held an older snapshot open for a long while (a `sqlite3` shell inside a transaction,
 * a backup or a report left running), and the log grows with every write until it ends: 1.86 GB
 * over 80,000 creates, seen, with nothing said.
 */
export const LOG_BACKLOG_BYTES = 256 * 1024 * 1024;

/**
 * The longest a 429 stops every worker. The job that got it waits the whole named time (or expires
 * if that passes its deadline), but the fleet's pause is stored and outlives restarts, so a wild hint
 * (Retry-After: 86400, or a date years ahead, from a gateway in front) would stop all work until
 * then. After this long the workers try again, and an upstream still refusing names a new wait.
 * OpenAI's SDKs likewise distrust a Retry-After of a minute or more.
 */
export const MAX_FLEET_PAUSE_MS = 60_000;

/**
 * How far ahead of now each upstream budget's row can stand while the clock runs forward: the pause
 * at most MAX_FLEET_PAUSE_MS; the requests budget one interval (a draw is made only once its row is
 * due, and moves it one interval past then); the tokens budget one call's share, which the store
 * does not keep, so a minute, or the share of the call drawing now if larger (a call estimated at
 * more than a minute's tokens, which the upstream refuses anyway, is the only way past a minute).
 * A row further ahead than its bound and CLOCK_STEP_SLACK_MS was written before the clock stepped
 * back (a clock corrected by hand, a machine restored from a snapshot) and would hold every call for
 * as long as the step: it is brought back to its bound, and written so, by both stores.
 */
export function pacingBounds(request: PacingRequest, at: number): { pause: number; requests: number; tokens: number } {
  return {
    pause: at + MAX_FLEET_PAUSE_MS,
    requests: request.rpm ? at + Math.ceil(60_000 / request.rpm) : Infinity,
    tokens: request.tpm ? at + Math.max(PACING_TOKENS_AHEAD_MS, Math.ceil((request.tokens * 60_000) / request.tpm)) : Infinity,
  };
}

/** How far ahead the tokens budget's row may stand whatever the call drawing (pacingBounds). */
export const PACING_TOKENS_AHEAD_MS = 60_000;

/**
 * How far past its bound a stored time must be to be taken for one written before the clock stepped
 * back (pacingBounds; the rate limiter's budgets likewise). Readings of one clock differ a little
 * without any step: on PostgreSQL each host reads the server's through its measured offset, and an
 * upstream draw is timed up to DRAW_CREDIT_MS before the server made it. Without this margin a row
 * that far past its bound was brought back at every draw, and the calls came that much early
 * (measured: 1.014 and 1.017 of the turns UPSTREAM_RPM=4800 allows, against 0.995).
 */
export const CLOCK_STEP_SLACK_MS = 1000;

/** Whether a stored time stands past its bound by more than CLOCK_STEP_SLACK_MS: written before the clock stepped back. */
export function steppedBack(tat: number, bound: number): boolean {
  return tat > bound + CLOCK_STEP_SLACK_MS;
}

/**
 * A worker's outage mark: since when it found the upstream down (ms since the epoch), and why in a
 * few words after "the upstream" (`cannot be reached (ECONNREFUSED)`).
 */
export interface UpstreamOutage {
  since: number;
  reason: string;
}

/** A run of calls answered with a server error, or not at all: `calls` in a row since `since`, the pass or daemon that met them ended at `endedAt` (ms since the epoch). */
export interface FailingRun {
  calls: number;
  since: number;
  endedAt: number;
}

/** The bounds of the time between two of the fleet's looks at an upstream that is down (JobStore.takeUpstreamLook). */
export interface LookSpacing {
  minMs: number;
  maxMs: number;
}

/** A request for one upstream call's share of the pacing budgets; a null budget is unlimited. */
export interface PacingRequest {
  rpm: number | null;
  tpm: number | null;
  /** Estimated tokens of this call. */
  tokens: number;
}

/** One budget to draw from: GCRA with emission interval `intervalMs` and burst tolerance `toleranceMs`. */
export interface RateCheck {
  key: string;
  intervalMs: number;
  toleranceMs: number;
}

/** What the limiter found for one budget: `tat` is when it is whole again (after this request, if allowed). */
export interface RateDecision {
  allowed: boolean;
  tat: number;
}

/** Jobs per status, for health and stats. */
export type QueueCounts = Record<JobStatus, number>;

/** The shared state of the proxy: jobs, their leases, and worker heartbeats. */
export interface JobStore {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * The time every process sharing the store goes by, in Unix ms: the store's own stamps (leases,
   * deadlines, heartbeats, budgets) are on it, and what is compared with them should be too. This
   * host's clock for SQLite (one machine); the server's for PostgreSQL, whose hosts' clocks may
   * disagree (postgres/db-clock.ts).
   */
  now(): number;
  /**
   * How far `now()` is from this host's clock (the store's minus the host's, in ms): 0 on SQLite;
   * on PostgreSQL the offset last measured. It is reported, not acted on: the proxy goes by `now()`
   * either way, but a host far off has its NTP to mend.
   */
  clockOffsetMs(): number;
  /**
   * How long a step of `now()` may take to show in every process sharing the store: 0 on SQLite,
   * where each reads the machine's clock; on PostgreSQL how often each host measures the server's
   * clock again (postgres/db-clock.ts), so a step of the server's shows in one host before another.
   */
  readonly clockSyncMs: number;

  /** Enqueues a job, or returns the existing job when this client already used the nonce. */
  createJob(job: NewJob): Promise<CreateResult>;
  getJob(id: string): Promise<JobRecord | null>;
  /** The job as lookups need it (no prompt, no lease), by one indexed read of fewer columns. */
  getJobOutcome(id: string): Promise<JobOutcome | null>;

  /**
   * Atomically takes up to `limit` due jobs (queued and due, or whose lease lapsed), bumping each
   * one's attempt count and fencing token. Jobs past their deadline are expired on the way.
   * Queued jobs come in queue order: by due time, jobs due in the same millisecond in the order
   * stored. The worker starts a claim's jobs in the order given and holds the rest for free slots.
   */
  claimJobs(options: ClaimOptions): Promise<ClaimedJob[]>;
  renewLease(id: string, token: number, leaseMs: number): Promise<LeaseState>;
  completeJob(id: string, token: number, result: JobResult, attempt?: AttemptObservation): Promise<boolean>;
  /** Ends a held job as failed, expired or cancelled. */
  finishJob(id: string, token: number, status: 'failed' | 'expired' | 'cancelled', error: JobError | null, attempt?: AttemptObservation): Promise<boolean>;
  /** Puts a held job back in the queue until `runAfter`, keeping the error of this attempt. */
  retryJob(id: string, token: number, runAfter: number, error: JobError, attempt?: AttemptObservation): Promise<boolean>;
  /** Gives a held job back without spending the attempt (graceful stop, pacing waits). */
  releaseJob(id: string, token: number, runAfter: number): Promise<boolean>;
  /** Cancels a client's job: at once when queued, through its worker when running. Null if not theirs. */
  cancelJob(id: string, client: string): Promise<JobRecord | null>;
  /** Of these running job ids, the ones whose client asked to cancel (for the worker holding them). */
  cancelsAmong(ids: readonly string[]): Promise<string[]>;

  /** Jobs that reached a final status at or after `since` (for long-poll watchers). */
  listFinishedSince(since: number): Promise<Array<{ id: string; status: JobStatus; finishedAt: number }>>;
  /** Of these job ids, the ones whose job is in a final status now (for long-poll watchers). */
  finalAmong(ids: readonly string[]): Promise<string[]>;
  /** The earliest time a queued job becomes due or a lease lapses; null when nothing waits. */
  nextWakeAt(): Promise<number | null>;
  /** Ends queued jobs whose deadline passed, in short batches (`signal` stops it between two); returns how many. */
  expireOverdue(signal?: AbortSignal): Promise<number>;
  /**
   * Brings onto the clock as it now reads the jobs written before it stepped back (a clock corrected
   * by hand or by NTP at boot, a machine restored from a snapshot), which would otherwise wait out
   * the step: a queued job whose `updated_at` stands ahead of now by more than CLOCK_STEP_SLACK_MS
   * has its `run_after` moved back by as much, so it waits from now what it had left to wait when
   * written. On SQLite, whose programs share one clock, a running job's `lease_until` likewise (its
   * worker may have died at the step); not on PostgreSQL (see there). A deadline is never moved: it
   * can only be longer by the step, never cut short. A worker's heartbeat from ahead becomes now.
   * In short batches (`signal` stops it between two); returns how many jobs.
   */
  rebaseAfterClockStep(signal?: AbortSignal): Promise<number>;
  /**
   * Deletes jobs that finished before `before` (and workers last seen before it); returns how many
   * jobs. Deletes in short batches that leave the database to other writers in between; `signal`
   * stops it between two.
   */
  deleteFinishedBefore(before: number, signal?: AbortSignal): Promise<number>;
  countByStatus(): Promise<QueueCounts>;
  /** The newest jobs, optionally of one status and one client. */
  listJobs(filter: { status?: JobStatus; client?: string; limit: number }): Promise<JobRecord[]>;
  /**
   * Puts failed or expired jobs back in the queue with fresh attempts and a deadline as long as the
   * first; returns the ids it requeued. `ids: 'all-failed'` takes every failed job.
   */
  requeueJobs(ids: readonly string[] | 'all-failed'): Promise<string[]>;
  /** Jobs finished per minute since `since`, by status: the status page's throughput chart. */
  finishedPerMinute(since: number): Promise<Array<{ minute: number; status: JobStatus; count: number }>>;
  /**
   * Since when the queued job that has waited longest for a worker has been due: its creation, or for
   * a retry the time its backoff ended (as Sidekiq's and BullMQ's queue latency count). A job still
   * in its backoff has not started waiting; the answer may then lie ahead. Null when nothing is queued.
   * One read of the queue's due-time index, however long the queue.
   */
  oldestDueAt(): Promise<number | null>;

  /**
   * Up to `limit` jobs in the order they were stored, from `cursor` (null: the start); `next` is the
   * cursor for the following page, null after the last. A copy to another store reads with it.
   */
  exportJobs(cursor: string | null, limit: number): Promise<{ jobs: JobRecord[]; next: string | null }>;
  /**
   * Writes jobs exactly as given (status, attempts, results, fencing token), skipping any whose id or
   * client and nonce the store already holds; returns the ids it wrote. For moving between stores.
   */
  importJobs(jobs: readonly JobRecord[]): Promise<string[]>;

  /**
   * Takes one call's share of the shared upstream budgets: 0 when taken, otherwise how many ms until
   * it could be (nothing is taken then). Calls are spread evenly: one every 60/RPM seconds.
   */
  acquireUpstream(request: PacingRequest): Promise<number>;
  /** Holds every worker's upstream calls until `until` (after a 429). */
  pauseUpstream(until: number): Promise<void>;
  /**
   * Since when a worker has found the upstream down (upstream-outage.ts), and why; null while none
   * has, or since one found it answering again. Read when a worker starts, and while it is held.
   */
  upstreamDown(): Promise<UpstreamOutage | null>;
  /**
   * Marks the upstream down since `since`, for `reason`, the fleet's first look due at `lookAt` (a
   * mark already there stands as it is), or, given null, lifts the mark.
   */
  markUpstreamDown(mark: (UpstreamOutage & { lookAt: number }) | null): Promise<void>;
  /**
   * Takes the fleet's next look at an upstream that is down: 0 when it was due (this worker's call
   * looks, and the next look is set one spacing later: how long the outage has lasted, within
   * `spacing`), or the ms until it is due (another worker took the last). 0 too with no mark, or
   * with one whose look stands further ahead than a spacing can set it (written before the clock
   * stepped back).
   */
  takeUpstreamLook(at: number, spacing: LookSpacing): Promise<number>;
  /** The run of failed calls the last pass or daemon ended in (setFailingRun), or null. */
  failingRun(): Promise<FailingRun | null>;
  /** Keeps the run of failed calls a pass or daemon ended in, for the next to count on from; null when it ended on an answer. */
  setFailingRun(run: FailingRun | null): Promise<void>;

  /**
   * Draws one request from every budget, all or nothing, atomically across processes. Nothing is
   * drawn unless every budget allows it.
   */
  consumeRateLimits(checks: readonly RateCheck[]): Promise<RateDecision[]>;
  /** Forgets budgets that are whole again (their rows say nothing). */
  purgeRateLimits(): Promise<number>;

  recordHeartbeat(beat: WorkerHeartbeat): Promise<void>;
  removeHeartbeat(id: string): Promise<void>;
  listWorkers(seenSince: number): Promise<WorkerHeartbeat[]>;

  /** Every shared counter (jobs created and finished, upstream calls and latency, retries). */
  readCounters(): Promise<CounterValue[]>;

  /** A number that changes whenever another connection commits: a cheap "anything new?" probe. */
  changeCounter(): Promise<number>;
  /**
   * Calls `listener` soon after a connection may have committed, where the store can be told of
   * it: SQLite watches its write-ahead log on this machine, PostgreSQL relays the change listener's
   * notifications. A hint to read changeCounter (which stays the truth; a notice may come a moment
   * before the commit is visible), so a reader can wait for it instead of polling. Returns the
   * function that stops the calls, or null where the store cannot watch (the reader then polls).
   */
  watchChanges(listener: () => void): (() => void) | null;
  /** Resolves when the database answers a query and its file is still the one in use; rejects otherwise. */
  ping(): Promise<void>;
  /**
   * Bounds the write-ahead log (SQLite) so it cannot grow while readers are busy. Reports a log that
   * a checkpoint could not bring under LOG_BACKLOG_BYTES (a reader keeps an older snapshot open),
   * with who holds its read locks; null when there is none to report (and always on PostgreSQL).
   */
  checkpoint(): Promise<LogBacklog | null>;
  close(): Promise<void>;
}
