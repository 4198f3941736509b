import { EventEmitter } from 'node:events';
import type { Logger } from '../logger.js';
import { MAX_FLEET_PAUSE_MS, type AttemptObservation, type ClaimedJob, type JobError, type JobStore } from '../store/types.js';
import { finishReasonLabel, tokenCounts } from '../store/counter-labels.js';
import { backoffMs, judgeFailure } from './retry-policy.js';
import { keepLease, type LeaseEnd } from './lease.js';
import type { LocalShortage } from './local-shortage.js';
import type { Pacing } from './pacing.js';
import type { CancelWatch } from './cancel-watch.js';
import type { UpstreamClient } from './upstream-client.js';
import type { CallEnd } from './upstream-outage.js';

/**
 * Why an attempt was cut short; each reason ends the job differently. 'lease_low': its call was
 * about to go out with less than a third of the lease known left (decided by the attempt's signal at
 * the send, from the lease keeper's `sendBy`; the keeper's own reasons are LeaseEnd).
 */
export type AbortReason = 'timeout' | 'deadline' | 'shutdown' | 'lease_low' | LeaseEnd;

/** How one attempt ended, for counters and the worker's report. */
export type AttemptOutcome = 'completed' | 'failed' | 'retried' | 'expired' | 'cancelled' | 'released' | 'lost';

export interface ProcessJobDeps {
  store: JobStore;
  upstream: UpstreamClient;
  logger: Logger;
  now: () => number;
  leaseMs: number;
  attemptTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  random?: () => number;
  /** Waits for the call's share of the shared upstream budgets (pacing.ts). */
  pacing: Pacing;
  /** Told when this machine could not open a connection; the job itself goes back unspent. */
  onLocalShortage?: (shortage: LocalShortage) => void;
  /** Told what each call met, so that an upstream that is down holds calls back (upstream-outage.ts). */
  onUpstreamOutcome?: (outcome: CallEnd) => void;
  /** Tells a running attempt, within a second, that its client cancelled it (cancel-watch.ts). */
  cancels?: CancelWatch;
}

/**
 * Tells the attempts in flight that the worker is shutting down. The worker's own, not an
 * AbortSignal: adding and removing an EventTarget listener for every job cost about 1% of the
 * worker's time at full speed (measured), and needed a raised listener limit.
 */
export interface Shutdown {
  readonly aborted: boolean;
  /** Calls `listener` once on shutdown; the returned function unsubscribes. */
  onAbort(listener: () => void): () => void;
}

/** A Shutdown whose `abort()` calls every listener once. */
export function createShutdown(): Shutdown & { abort(): void } {
  const listeners = new Set<() => void>();
  let aborted = false;
  return {
    get aborted() {
      return aborted;
    },
    onAbort(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    abort() {
      if (aborted) return;
      aborted = true;
      for (const listener of listeners) listener();
      listeners.clear();
    },
  };
}

class AttemptAborted extends Error {
  constructor(readonly reason: AbortReason) {
    super(`attempt aborted: ${reason}`);
  }
}

/**
 * An attempt's abort signal, in the EventEmitter form undici also accepts, instead of an
 * AbortController's: making one and having undici add and remove its 'abort' listener cost 12-15 µs
 * of CPU per call (in-process against the stub, pinned: 31-39 µs a call against 45-50). The whole
 * worker against a zero-latency stub, five alternating pinned pairs: median 141 µs of CPU a job
 * against 150, 5,849 jobs/s against 5,385, peak RSS 125-129 MB against 143-146.
 */
class AttemptSignal extends EventEmitter {
  aborted = false;
  reason: unknown = undefined;
  /** Until when the call may still go out (the lease keeper's `sendBy`). */
  sendBy = Infinity;
  /** Whether the answer's head arrived (CallSignal.onHead). */
  answered = false;

  constructor(private readonly now: () => number) {
    super();
  }

  /**
   * Asked as the call's first byte is about to be written (CallSignal). A method reading a number,
   * not a closure of the lease keeper's: with the signal holding the keeper's closure, the worker's
   * peak RSS read 129–134 MB against 119–124 over 10,000 jobs (three alternating pairs), and
   * 124–125 with this. Why was not traced: heap snapshots halfway through a drain held about as many
   * signals with either (12 and 16, the attempts in flight), so it is not signals kept past their end.
   */
  beforeSend(): void {
    if (this.now() >= this.sendBy) this.abort('lease_low');
  }

  onHead(): void {
    this.answered = true;
  }

  /** The first reason wins; later calls do nothing. */
  abort(reason: AbortReason): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = new AttemptAborted(reason);
    this.emit('abort');
  }
}

/**
 * Runs one attempt of a claimed job and records how it ended. Every write names the job's fencing
 * token, so a worker that lost its lease cannot overwrite what the new holder does.
 * `shutdown` aborts the attempt and gives the job back unspent. `callEnded` is told as soon as the
 * upstream call is over (with false if no connection could be opened), before the outcome is written: the worker's
 * concurrency bounds calls, not writes waiting for their flush.
 */
export async function processJob(job: ClaimedJob, deps: ProcessJobDeps, shutdown: Shutdown, callEnded?: (called?: false) => void): Promise<AttemptOutcome> {
  const { store, now } = deps;
  const log = jobLogger(deps.logger, job);
  const token = job.leaseToken;
  const started = now();
  // Durations (the call's latency, the attempt's ms) are measured on the monotonic clock: on now(),
  // a clock stepped during a call gave a latency as long as the step, or below zero.
  const startedMono = performance.now();

  if (job.expiresAt <= started) {
    return (await store.finishJob(job.id, token, 'expired', expiredError())) ? 'expired' : 'lost';
  }
  if (shutdown.aborted) {
    return (await store.releaseJob(job.id, token, started)) ? 'released' : 'lost';
  }

  const signal = new AttemptSignal(now);
  // One timer for whichever comes first, the attempt's timeout or the job's deadline (on a tie, the
  // timeout: the job may still be retried if its deadline allows).
  const untilDeadline = job.expiresAt - started;
  const timer =
    deps.attemptTimeoutMs <= untilDeadline ? setTimeout(() => signal.abort('timeout'), deps.attemptTimeoutMs) : setTimeout(() => signal.abort('deadline'), untilDeadline);
  const unsubscribe = shutdown.onAbort(() => signal.abort('shutdown'));
  const unwatch = deps.cancels?.watch(job.id, () => signal.abort('cancelled'));
  const lease = keepLease({
    store,
    job,
    leaseMs: deps.leaseMs,
    now,
    end: (reason) => signal.abort(reason),
    throwIfEnded: () => {
      if (signal.aborted) throw signal.reason;
    },
    sendBy: (at) => (signal.sendBy = at),
    warn: log.warn,
  });
  let callStarted: number | null = null;

  try {
    let pacingWait: number;
    try {
      pacingWait = await deps.pacing(job, signal);
      // A call is never begun on a lease that may have lapsed (lease.ts).
      if (pacingWait === 0) await lease.confirm();
    } catch (err) {
      if (err instanceof AttemptAborted) throw err;
      // The budget, the pause or the lease could not be read (the database went away between the
      // claim and now): no call was made, so the job goes back with its attempt unspent, instead of
      // sitting in progress until its lease lapses.
      log.warn('could not read the upstream budget or renew the lease; job put back', { err });
      return (await store.releaseJob(job.id, token, now() + deps.retryBaseMs)) ? 'released' : 'lost';
    }
    if (pacingWait > 0) {
      log.debug('pacing: job given back until the upstream budget frees up', { wait_ms: pacingWait });
      return (await store.releaseJob(job.id, token, now() + pacingWait)) ? 'released' : 'lost';
    }
    log.debug('calling upstream', { model: job.model });
    callStarted = performance.now();
    // The call's id names the job and the attempt: unique to this call, and the job's id is what its client holds.
    const outcome = await deps.upstream.chat(job.requestJson, signal, `${job.id}.${job.attempts}`).then(
      (outcome) => {
        // A connection never opened is no call: its instant end must not teach the worker that calls are fast.
        callEnded?.(outcome.kind === 'local_shortage' ? false : undefined);
        return outcome;
      },
      (err: unknown) => {
        // A call withheld at its send was not made either.
        callEnded?.(err instanceof AttemptAborted && err.reason === 'lease_low' ? false : undefined);
        throw err;
      },
    );
    deps.onUpstreamOutcome?.(outcome);
    if (outcome.kind === 'local_shortage') {
      // The upstream never heard of it: the job goes back with its attempt unspent, at once (another
      // worker may have room), and the worker holds off new calls (onLocalShortage).
      deps.onLocalShortage?.(outcome);
      return (await store.releaseJob(job.id, token, now())) ? 'released' : 'lost';
    }
    const attempt: AttemptObservation = {
      upstreamStatus: outcome.kind === 'ok' || outcome.kind === 'http_error' ? String(outcome.status) : outcome.kind,
      latencyMs: Math.round(performance.now() - callStarted),
      // Set on every attempt, undefined but for a completion's: one shape for V8, no spread.
      finishReason: outcome.kind === 'ok' ? finishReasonLabel(outcome.finishReason) : undefined,
      tokens: outcome.kind === 'ok' ? tokenCounts(outcome.usage) : undefined,
    };
    // The lines about what the upstream answered name its own id for the call, for its support.
    const callLog = outcome.requestId ? withFields(log, { upstream_request_id: outcome.requestId }) : log;
    if (outcome.kind === 'ok') {
      const done = await store.completeJob(job.id, token, { outputText: outcome.outputText, usage: outcome.usage, response: outcome.body }, attempt);
      const finish = outcome.finishReason;
      const ms = Math.round(performance.now() - startedMono);
      const meta = finish === null || finish === 'stop' ? { ms } : { ms, finish_reason: finish };
      if (done && finish === 'length' && !outcome.outputText) {
        // A reasoning model counts its thinking against the limit, and may spend it all before its
        // first word: the job completes with no text, which only its finish_reason explains.
        callLog.warn(
          'job completed without text: the model reached its token limit before writing any (a reasoning model can spend it all thinking; a larger max_completion_tokens in the request leaves room)',
          meta,
        );
      } else callLog.info(done ? 'job completed' : 'job completed upstream but the lease was lost', meta);
      return done ? 'completed' : 'lost';
    }
    const verdict = judgeFailure(outcome, now());
    if (outcome.kind === 'http_error' && outcome.status === 429 && verdict.retryable) {
      // The upstream's limit is the fleet's, so every worker holds off, not just this one.
      const pause = verdict.waitMs ?? backoffMs(job.attempts, deps.retryBaseMs, deps.retryMaxMs, deps.random);
      await store.pauseUpstream(now() + Math.min(pause, MAX_FLEET_PAUSE_MS));
      verdict.waitMs = pause;
    }
    return await settleFailure(job, verdict.retryable, verdict.error, verdict.waitMs, deps, callLog, attempt, verdict.hint);
  } catch (err) {
    if (!(err instanceof AttemptAborted)) throw err;
    // A call that got no answer in time tells the worker's brake, as an answer does: a run of them is
    // an upstream that takes calls and answers none (upstream-outage.ts). One whose answer had begun
    // (a stream still coming) is a slow model, and tells nothing.
    if (err.reason === 'timeout' && callStarted !== null && !signal.answered) deps.onUpstreamOutcome?.({ kind: 'timeout', ms: deps.attemptTimeoutMs });
    const attempt = callStarted === null ? undefined : { upstreamStatus: err.reason === 'timeout' ? 'timeout' : 'aborted', latencyMs: Math.round(performance.now() - callStarted) };
    return await settleAbort(job, err.reason, deps, log, attempt);
  } finally {
    clearTimeout(timer);
    lease.stop();
    unsubscribe();
    unwatch?.();
  }
}

async function settleFailure(
  job: ClaimedJob,
  retryable: boolean,
  error: JobError,
  waitMs: number | undefined,
  deps: ProcessJobDeps,
  log: JobLog,
  attempt: AttemptObservation | undefined,
  /** What the operator can do about it (Verdict.hint), said with the failure. */
  hint?: string,
): Promise<AttemptOutcome> {
  const { store } = deps;
  const token = job.leaseToken;
  if (!retryable || job.attempts >= job.maxAttempts) {
    log.warn(retryable ? 'job failed: no attempts left' : 'job failed: not retryable', {
      error_code: error.code,
      upstream_status: error.upstreamStatus,
      ...(hint ? { hint } : {}),
    });
    return (await store.finishJob(job.id, token, 'failed', error, attempt)) ? 'failed' : 'lost';
  }
  const runAfter = deps.now() + (waitMs ?? backoffMs(job.attempts, deps.retryBaseMs, deps.retryMaxMs, deps.random));
  if (runAfter >= job.expiresAt) {
    log.warn('job expired: the next attempt would start past its deadline', { error_code: error.code });
    return (await store.finishJob(job.id, token, 'expired', { ...expiredError(), upstreamStatus: error.upstreamStatus }, attempt)) ? 'expired' : 'lost';
  }
  log.info('attempt failed, will retry', { error_code: error.code, upstream_status: error.upstreamStatus, retry_in_ms: runAfter - deps.now() });
  return (await store.retryJob(job.id, token, runAfter, error, attempt)) ? 'retried' : 'lost';
}

async function settleAbort(job: ClaimedJob, reason: AbortReason, deps: ProcessJobDeps, log: JobLog, attempt: AttemptObservation | undefined): Promise<AttemptOutcome> {
  const { store } = deps;
  const token = job.leaseToken;
  switch (reason) {
    case 'timeout':
      return settleFailure(job, true, { code: 'upstream_timeout', message: `no answer within ${Math.round(deps.attemptTimeoutMs / 1000)} s` }, undefined, deps, log, attempt);
    case 'deadline':
      log.warn('job expired during its attempt');
      return (await store.finishJob(job.id, token, 'expired', expiredError(), attempt)) ? 'expired' : 'lost';
    case 'cancelled':
      log.info('job cancelled during its attempt (by its client, or proxy-worker cancel)');
      return (await store.finishJob(job.id, token, 'cancelled', null, attempt)) ? 'cancelled' : 'lost';
    case 'shutdown':
      log.info('attempt abandoned for shutdown; job put back');
      return (await store.releaseJob(job.id, token, deps.now())) ? 'released' : 'lost';
    case 'lease_lost':
      log.warn('lease lost to another worker; result discarded');
      return 'lost';
    case 'lease_low':
      // Never sent: the lease, still ours or lapsed but not yet taken, goes back with the attempt
      // unspent, instead of waiting out its lease.
      log.warn('call not sent: less than a third of its lease was left as it was about to go out (the worker held up since its lease check); job put back');
      return (await store.releaseJob(job.id, token, deps.now())) ? 'released' : 'lost';
    case 'lease_lapsed':
      // Nothing is written: the database did not answer the renewals, and the job goes to whichever
      // worker claims it next, as a dead worker's does.
      log.warn('the lease ran out unrenewed (the database not answering); call abandoned');
      return 'lost';
  }
}

/**
 * The job's child logger, made on its first line: at full speed most jobs log nothing at the
 * configured level, and making a child for each cost about 0.7% of the worker's time (measured).
 */
function jobLogger(logger: Logger, job: ClaimedJob): JobLog {
  let child: Logger | undefined;
  const get = () => (child ??= logger.child({ job_id: job.id, attempt: job.attempts }));
  // A line below the configured level makes no child either.
  const line = (level: keyof JobLog) => (message: string, meta?: object) => {
    if (logger.isLevelEnabled(level)) get()[level](message, meta);
  };
  return { debug: line('debug'), info: line('info'), warn: line('warn') };
}

/** The lines processJob writes about one job. */
type JobLog = Record<'debug' | 'info' | 'warn', (message: string, meta?: object) => void>;

/** The same lines, each with `fields` too. */
function withFields(log: JobLog, fields: object): JobLog {
  const line = (level: keyof JobLog) => (message: string, meta?: object) => log[level](message, { ...fields, ...meta });
  return { debug: line('debug'), info: line('info'), warn: line('warn') };
}

function expiredError(): JobError {
  return { code: 'expired', message: 'the job reached its ttl before it could complete' };
}
