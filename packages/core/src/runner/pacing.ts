import type { EventEmitter } from 'node:events';
import type { ClaimedJob, JobStore } from '../store/types.js';

/** A pacing wait longer than this gives the job back to the database instead of holding it. */
export const PACING_HOLD_MAX_MS = 2000;

/** What pacing needs of an attempt's abort signal (process-job's AttemptSignal). */
export type PacingSignal = Pick<EventEmitter, 'once' | 'removeListener'> & { readonly aborted: boolean; readonly reason: unknown };

/**
 * Waits for one call's share of the shared upstream budgets and the fleet-wide pause. 0 when taken;
 * otherwise the wait, too long to hold the job for, so the caller gives it back (its attempt
 * unspent) until then. Rejects with the signal's reason if the attempt is aborted meanwhile.
 */
export type Pacing = (job: ClaimedJob, signal: PacingSignal) => Promise<number>;

/**
 * The worker's pacing over `store`. With an RPM or TPM budget, this process's calls line up and only
 * the first in line draws from the store; the rest wait their turn here. Without the line, every slot
 * waiting for the budget was told the same next turn, and all of them drew again at that moment, one
 * winning: measured on PostgreSQL, four daemons of 64 slots against a backlog under
 * UPSTREAM_RPM=4800 spent 9.6 s of their own CPU and 10.7 s of the server's in 15 s to make 76 calls
 * a second; with the line (and the draw one statement), 4.0-4.4 s and 3.2-3.5 s at the same rate.
 * A draw is still made, and timed, at its turn in the store, so the fleet's spacing is
 * the store's as before; the line only decides which of this process's calls makes it.
 */
export function createPacing(store: JobStore, budgets: { rpm: number | null; tpm: number | null } | undefined): Pacing {
  const rpm = budgets?.rpm ?? null;
  const tpm = budgets?.tpm ?? null;
  const acquire = sharedPauseReads(store);
  if (!rpm && !tpm) return (job, signal) => drawUntilTaken(acquire, { rpm, tpm, tokens: 0 }, signal);
  const line = createLine();
  return (job, signal) => line(() => drawUntilTaken(acquire, { rpm, tpm, tokens: estimateTokens(job.request) }, signal), signal);
}

/** Draws until the share is taken (0) or the wait is too long to hold the job for. */
async function drawUntilTaken(acquire: JobStore['acquireUpstream'], request: Parameters<JobStore['acquireUpstream']>[0], signal: PacingSignal): Promise<number> {
  for (;;) {
    const asked = performance.now();
    const wait = await acquire(request);
    if (wait === 0 || wait > PACING_HOLD_MAX_MS) return wait;
    // The wait was measured in the store, before its answer came back: sleeping all of it after the
    // answer would draw a round trip late at every turn.
    await abortableDelay(Math.max(0, wait - (performance.now() - asked)), signal);
  }
}

/**
 * Runs the tasks given one at a time, in the order given. A task whose signal aborts while it waits
 * leaves the line (rejecting with the signal's reason) without holding up those behind it.
 */
function createLine(): <T>(task: () => Promise<T>, signal: PacingSignal) => Promise<T> {
  let tail: Promise<void> = Promise.resolve();
  return async (task, signal) => {
    const ahead = tail;
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    // Those behind wait for everyone ahead of them, this task included; a task that leaves early
    // still lets them through only once the ones ahead of it are done.
    tail = ahead.then(() => mine);
    try {
      await abortable(ahead, signal);
      return await task();
    } finally {
      done();
    }
  };
}

/**
 * With no RPM or TPM budget, acquiring the upstream only reads the fleet-wide pause (a 429's
 * Retry-After). Jobs started in the same event-loop turn (a claim's batch, or the calls that
 * ended together) share that read instead of making one each: measured, the per-job read was 3%
 * of the worker's time at full speed. With budgets, every call still draws from them itself.
 */
export function sharedPauseReads(store: JobStore): JobStore['acquireUpstream'] {
  let current: Promise<number> | null = null;
  return (request) => {
    if (request.rpm || request.tpm) return store.acquireUpstream(request);
    if (!current) {
      current = store.acquireUpstream(request);
      setImmediate(() => (current = null));
    }
    return current;
  };
}

/** A rough token count for pacing: four characters a token, plus the completion the request allows. */
export function estimateTokens(request: ClaimedJob['request']): number {
  let chars = 0;
  for (const message of request.messages) {
    const content = (message as { content?: unknown }).content;
    chars += typeof content === 'string' ? content.length : JSON.stringify(content ?? '').length;
  }
  const completion = Number(request.max_completion_tokens ?? request.max_tokens ?? 0);
  return Math.ceil(chars / 4) + (Number.isFinite(completion) ? completion : 0);
}

/** `promise`, or the signal's reason as soon as it aborts. */
function abortable(promise: Promise<void>, signal: PacingSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal.reason);
    signal.once('abort', onAbort);
    void promise.then(() => {
      signal.removeListener('abort', onAbort);
      resolve();
    });
  });
}

function abortableDelay(ms: number, signal: PacingSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.once('abort', onAbort);
  });
}
