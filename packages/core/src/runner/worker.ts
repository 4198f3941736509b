import type { Config } from '../config.js';
import { hostname } from 'node:os';
import { newWorkerId } from '../ids.js';
import { REPLAY_WINDOW_MS } from '../signing.js';
import { createChangeWatch } from '../store/change-watch.js';
import type { Logger } from '../logger.js';
import type { ClaimedJob as Claimed, FailingRun, JobStore, UpstreamOutage } from '../store/types.js';
import { createPacing } from './pacing.js';
import { createShutdown, processJob, type AttemptOutcome, type ProcessJobDeps } from './process-job.js';
import { retryOutcomeWrites } from './outcome-writes.js';
import { createShortageBrake } from './local-shortage.js';
import { OUTAGE_PROBE_FIRST_MS, OUTAGE_PROBE_MAX_MS, createOutageBrake } from './upstream-outage.js';
import { createReserve, maxHoldFor } from './reserve.js';
import type { UpstreamClient } from './upstream-client.js';
import { createCancelWatch } from './cancel-watch.js';
import { watchClockSteps } from '../store/clock-step.js';
import { createLapseGrace } from './lapse-grace.js';

export interface WorkerOptions {
  store: JobStore;
  upstream: UpstreamClient;
  logger: Logger;
  concurrency: number;
  leaseMs: number;
  attemptTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  pollMs: number;
  shutdownGraceMs: number;
  retentionMs: number;
  now?: () => number;
  random?: () => number;
  pacing?: { rpm: number | null; tpm: number | null };
  heartbeatMs?: number;
  housekeepingMs?: number;
  /** CLAIM_GATHER_MS unless given (tests widen it to observe the rule). */
  claimGatherMs?: number;
  /** RESERVE_HOLD_MS unless given (0: no jobs claimed ahead, for tests of the claims themselves). */
  reserveHoldMs?: number;
}

export interface RunLimits {
  /** Stop claiming after this many jobs. */
  maxJobs?: number;
  /** Stop claiming after this long. */
  maxSeconds?: number;
  /**
   * A pass's housekeeping (expiry, retention purge, checkpoint) goes on after the pass resolves,
   * instead of before: for a pass someone waits on over HTTP, where purging a large backlog takes
   * seconds. One runs at a time; stop() ends it between two batches and waits for it.
   */
  housekeepingAfter?: boolean;
}

/** What a run did, by how each attempt ended. */
export type RunReport = Record<AttemptOutcome, number> & { claimed: number };

/** The claim → call → record loop. `runOnce` drains what is due; `runDaemon` runs until `stop`. */
export interface Worker {
  readonly id: string;
  runOnce(limits?: RunLimits): Promise<RunReport>;
  runDaemon(): Promise<RunReport>;
  /** First call: stop claiming, let calls finish within the grace period, put back the rest. */
  stop(): Promise<void>;
  /** Put back what is in flight now, without waiting for the grace period. */
  abortNow(): void;
}

/**
 * How long a claim may wait for more slots to free while calls are running. Each claim is a
 * transaction of its own; against a fast upstream, slots free one at a time and each would cost a
 * claim of one job. Waiting until half the slots are free (or this long) claims them together:
 * measured against a zero-latency stub at concurrency 8 (four alternating pinned runs each),
 * 184–257 µs of CPU per job instead of 209–299, 3,273–3,983 jobs a second instead of 2,654–3,713.
 * Against a real model, whose calls take seconds, a slot idles at most this long.
 */
export const CLAIM_GATHER_MS = 2;

/**
 * The time between two of the fleet's looks at an upstream that is down: how long the outage has
 * lasted, from a second up to 30 s, the spacing of one worker's own doubling waits.
 */
const LOOK_SPACING = { minMs: OUTAGE_PROBE_FIRST_MS, maxMs: OUTAGE_PROBE_MAX_MS };

/**
 * A run of failed calls a pass or a daemon ended in is counted on by a pass or daemon that starts
 * within this long of its end (cron's next minutes, a restart), not by one that starts later: runs
 * further apart make no run.
 */
const FAILING_RUN_KEPT_MS = 5 * 60_000;

/** Builds a worker over a store and an upstream client. */
export function createWorker(options: WorkerOptions): Worker {
  const now = options.now ?? options.store.now;
  const id = newWorkerId(hostname(), process.pid);
  const log = options.logger.child({ worker_id: id });
  const shutdown = createShutdown();
  const shortage = createShortageBrake({ now, log });
  // The store's outage mark follows this worker's hold (upstream-outage.ts), written in order:
  // a hold and its end written out of order would leave the mark standing, or lift it mid-outage.
  let marking: Promise<void> = Promise.resolve();
  // Whether the mark stood when this worker last wrote or read it: one that is gone since was lifted
  // by another worker's call, which found the upstream back.
  let markStood = false;
  const mark = (down: UpstreamOutage | null) => {
    // A mark not written costs the workers that start next their first calls, as before the mark.
    marking = marking
      .then(() => options.store.markUpstreamDown(down === null ? null : { ...down, lookAt: down.since + OUTAGE_PROBE_FIRST_MS }))
      .then(() => void (markStood = down !== null))
      .catch((err: unknown) => void log.warn('could not mark in the store whether the upstream is down', { err }));
  };
  // Whether the run under way is a pass, which ends when its calls come to be held.
  let passing = false;
  const outage = createOutageBrake({ log, shared: true, onHeld: (reason) => mark({ since: now(), reason }), onResumed: () => mark(null), endsWhenHeld: () => passing });
  // A finished job holds its request's nonce: deleted while the same signed body could still be
  // accepted, that body sent again (a client's retry, a captured request) would make a new job and
  // a second upstream call. So no retention is shorter than that window.
  const keepFinishedMs = Math.max(options.retentionMs, REPLAY_WINDOW_MS);
  if (keepFinishedMs > options.retentionMs) {
    log.warn(
      `RESULT_RETENTION_SECONDS (${options.retentionMs / 1000}) is shorter than the ${REPLAY_WINDOW_MS / 1000} s in which a signed request can be sent again: finished jobs are kept ${REPLAY_WINDOW_MS / 1000} s, so that a request sent again finds its job instead of making another`,
    );
  }
  const deps: ProcessJobDeps = {
    store: retryOutcomeWrites(options.store, { leaseMs: options.leaseMs, now, shutdown, logger: log }),
    pacing: createPacing(options.store, options.pacing),
    upstream: options.upstream,
    logger: log,
    now,
    leaseMs: options.leaseMs,
    attemptTimeoutMs: options.attemptTimeoutMs,
    retryBaseMs: options.retryBaseMs,
    retryMaxMs: options.retryMaxMs,
    ...(options.random ? { random: options.random } : {}),
    onLocalShortage: shortage.report,
    onUpstreamOutcome: outage.report,
    cancels: createCancelWatch(options.store),
  };

  const inflight = new Set<Promise<void>>();
  // Jobs whose upstream call has not ended. WORKER_CONCURRENCY bounds these; a job whose outcome is
  // still being written (waiting for its flush to disk) no longer holds a slot, so the next call
  // starts meanwhile. At most three times as many again may wait to be written, so a slow disk slows
  // claiming rather than piling up outcomes (measured at full speed against a zero-latency stub:
  // about 4% more jobs a second than with once as many, where the cap was reached).
  let calling = 0;
  const maxInFlight = 4 * options.concurrency;
  // See CLAIM_GATHER_MS: while calls run, a claim waits for this many free slots (or that long).
  const gatherSlots = Math.max(1, Math.floor(options.concurrency / 2));
  const gatherMs = options.claimGatherMs ?? CLAIM_GATHER_MS;
  // Jobs claimed ahead of free slots, started as calls end (see reserve.ts). None under an
  // RPM or TPM budget: there calls wait for the budget, not for claims, and a held job would only
  // be one that the fleet's other workers cannot take.
  const paced = Boolean(options.pacing?.rpm || options.pacing?.tpm);
  const reserve = createReserve<Claimed>(options.concurrency, paced ? 0 : options.reserveHoldMs, maxHoldFor(options.leaseMs));
  // The report of the run under way, which jobs given back from the reserve are counted in.
  let running: RunReport | null = null;
  let stopping = false;
  let stopped: Promise<void> | null = null;
  let wake: (() => void) | null = null;
  let jobsDone = 0;
  // Our own commits do not move PRAGMA data_version, so a job we put back (retry, release) would
  // stay unseen until the next scheduled wake: putting one back asks the loop to look again.
  // Completions and failures put nothing back, so they cost no query.
  let requeuedSinceWake = false;
  // A call ended or a job settled since the loop last looked: a slot may be free.
  let slotFreed = false;
  // A daemon's housekeeping runs beside the claim loop, not in it: purging a large backlog takes
  // seconds (in short batches, see in-batches.ts), and claims go on meanwhile. Stopping ends it
  // between two batches.
  let housekeepingRun: Promise<void> | null = null;
  const housekeepingStop = new AbortController();
  const startedAt = now();
  const heartbeatMs = options.heartbeatMs ?? 5000;
  // The heartbeat, housekeeping, a pass's --max-seconds and a claim's gathering are timed by the
  // monotonic clock (performance.now()): timed by now(), a clock stepped back an hour held each of
  // them for the hour. now() is for what is compared with stored times.
  const clockStep = watchClockSteps(now);
  const lapseGrace = createLapseGrace(options.leaseMs, options.store.clockSyncMs);

  // Once stopping, no sleep begins: stop() wakes a sleep under way, but one the loop began after it
  // (stop() came while the loop awaited the store) would hold the drain for a whole poll.
  const sleep = (ms: number) =>
    stopping
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const timer = setTimeout(done, ms);
          function done() {
            clearTimeout(timer);
            wake = null;
            resolve();
          }
          wake = done;
        });
  const wakeUp = () => wake?.();

  function start(job: Claimed, report: RunReport) {
    calling += 1;
    const began = performance.now();
    let ended = false;
    // From processJob when its call is over (no argument); from below, false, when it made none.
    const callEnded = (called: unknown = true) => {
      if (ended) return;
      ended = true;
      calling -= 1;
      slotFreed = true;
      if (called !== false) reserve.callTook(performance.now() - began);
      startHeld(report);
      wakeUp();
    };
    const p = processJob(job, deps, shutdown, callEnded)
      .then((outcome) => {
        report[outcome] += 1;
        if (outcome !== 'released' && outcome !== 'lost') jobsDone += 1;
        if (outcome === 'retried' || outcome === 'released') requeuedSinceWake = true;
      })
      .catch((err: unknown) => {
        // Where the job was left is unknown: look at the queue again.
        requeuedSinceWake = true;
        log.error('job processing crashed', { job_id: job.id, err });
      })
      .finally(() => {
        callEnded(false);
        inflight.delete(p);
        slotFreed = true;
        // A held job may have been waiting for room among the outcomes (maxInFlight).
        startHeld(report);
        wakeUp();
      });
    inflight.add(p);
  }

  /**
   * A call may start now: a slot is free, outcomes waiting to be written leave room, no shortage
   * holds calls back, and the upstream is not down (unreachable, or failing every call with a 5xx:
   * then one call at a time looks whether it is back, now and then: upstream-outage.ts).
   */
  const canStart = () => calling < Math.min(options.concurrency, outage.callsAllowed()) && inflight.size < maxInFlight && !shortage.holding();

  /** Free slots take held jobs, oldest first; none once stopping (stop() gives them back). */
  function startHeld(report: RunReport) {
    while (!stopping && canStart()) {
      const job = reserve.take(performance.now());
      if (!job) return;
      start(job, report);
    }
  }

  /** Held jobs go back to the queue with their attempt unspent, tracked as in flight until written. */
  function giveBack(jobs: Claimed[]) {
    if (jobs.length === 0) return;
    const report = running;
    const p: Promise<void> = Promise.all(
      jobs.map(async (job) => {
        const outcome = (await deps.store.releaseJob(job.id, job.leaseToken, now())) ? 'released' : 'lost';
        if (report) report[outcome] += 1;
      }),
    )
      .then(
        () => undefined,
        (err: unknown) => void log.warn('could not give back held jobs; their leases will lapse', { err }),
      )
      .finally(() => {
        inflight.delete(p);
        requeuedSinceWake = true;
        wakeUp();
      });
    inflight.add(p);
  }

  async function loop(mode: 'once' | 'daemon', limits: RunLimits): Promise<RunReport> {
    const report: RunReport = { claimed: 0, completed: 0, failed: 0, retried: 0, expired: 0, cancelled: 0, released: 0, lost: 0 };
    running = report;
    passing = mode === 'once';
    const deadline = limits.maxSeconds === undefined ? Infinity : performance.now() + limits.maxSeconds * 1000;
    const maxJobs = limits.maxJobs ?? Infinity;
    let lastVersion = -1;
    let nextWakeAt = 0;
    let dirty = true;
    let lastHeartbeat = -Infinity;
    let lastHousekeeping = mode === 'daemon' ? performance.now() : -Infinity;
    // Jobs written before the clock stepped back wait out the step unless brought onto it
    // (JobStore.rebaseAfterClockStep): at the start of each pass or daemon (the step may have come
    // while no worker ran, as at a boot whose clock NTP then corrected), when the loop sees the
    // clock step back, and at each housekeeping (a step of another host's, on PostgreSQL's clock).
    let rebaseDue = true;
    // Each pass and daemon reads the store's outage mark before its first claim (upstream-outage.ts).
    let outageRead = false;
    // The run of failed calls the last pass or daemon ended in, when this one counts on from it.
    let runBefore: FailingRun | null = null;
    // When a held worker next reads whether the mark still stands (performance.now()).
    let markReadAt = 0;

    let failures = 0;
    // When the first slot freed that a claim is now waiting to fill along with others.
    let gatherSince: number | null = null;
    // An idle daemon sleeps until told of a commit (a job created meanwhile is picked up a median
    // 0-1 ms after it, against 11 ms polling every 20 ms), a job is due, or the safety poll.
    const watch = createChangeWatch(options.store, wakeUp);
    // PRAGMA data_version moves when another connection commits: new jobs wake us without a queue
    // query.
    const look = async () => {
      const version = await options.store.changeCounter();
      if (version !== lastVersion) {
        lastVersion = version;
        dirty = true;
      }
    };
    while (!stopping) {
      try {
        slotFreed = false;
        if (requeuedSinceWake) {
          requeuedSinceWake = false;
          nextWakeAt = Math.min(nextWakeAt, (await options.store.nextWakeAt()) ?? Infinity);
        }
        const at = now();
        const mono = performance.now();
        const stepMs = clockStep(at, mono);
        if (stepMs < 0) {
          lapseGrace.stepped(-stepMs, mono);
          // A machine woken from a suspend reads the same: the monotonic clock stops while it sleeps.
          log.warn(`the clock stepped forward ${Math.round(-stepMs / 1000)} s (or the machine slept that long)`, { step_ms: -stepMs });
          // Every heartbeat reads as old as the step: this worker's counts as alive again at once.
          lastHeartbeat = -Infinity;
        }
        if (rebaseDue || stepMs > 0) {
          rebaseDue = false;
          if (tellRebased(await options.store.rebaseAfterClockStep(), stepMs)) dirty = true;
          // The times read above are as old as the rebase: read again.
          continue;
        }
        if (!outageRead) {
          // Read again at the loop's next turn if the read failed (a daemon's loop outlives the error).
          const down = await options.store.upstreamDown();
          // A pass counts on from the run of failed calls the last pass ended in: each of cron's
          // passes is a process of its own, and makes a call a job due, often fewer than the hold's
          // ten. Without it, no pass came to hold its calls, and each spent an attempt a job due
          // through an outage of server errors (seen: passes of two calls each, the upstream
          // answering 503: 20 attempts in ten passes, where now 11). A daemon does too, and keeps
          // its own when it stops, so that a restart, or passes after a daemon, count one run.
          const run = down === null ? await options.store.failingRun() : null;
          outageRead = true;
          if (run !== null && now() - run.endedAt <= FAILING_RUN_KEPT_MS) {
            outage.continueRun(run.calls, Math.max(0, now() - run.since));
            runBefore = run;
          }
          markStood = down !== null;
          if (down !== null && outage.callsAllowed() === Infinity) {
            outage.assumeDown();
            const ago = Math.max(0, Math.round((now() - down.since) / 1000));
            log.info(`the upstream was found down by a worker ${ago} s ago, and has not been seen answering since: one call goes first to see whether it is back`, {
              down_since: new Date(down.since).toISOString(),
              reason: down.reason,
            });
          }
        }
        // The fleet makes one look at a time at an upstream that is down: this worker's waits for
        // its turn, or for the turn after another worker's (JobStore.takeUpstreamLook).
        if (outage.needsTurn()) {
          const wait = await options.store.takeUpstreamLook(now(), LOOK_SPACING);
          if (wait === 0) outage.turnTaken();
          else outage.postpone(wait);
        }
        if (mono >= deadline || report.claimed >= maxJobs) break;
        // A pass that finds the upstream down ends instead of waiting for it to come back: the jobs
        // it holds go back with their attempts unspent, and the next pass (cron's next minute, the
        // API's next worker run) looks again. Waiting, one pass with 30 jobs due ran 11 minutes
        // (until stopped), a call every 30 s, while cron started another each minute.
        if (mode === 'once' && outage.callsAllowed() === 0) {
          const held = reserve.drain();
          giveBack(held);
          log.info('the upstream is down: the pass ends; the jobs it has not called wait in the queue with their attempts unspent, for the next pass', { held: held.length });
          break;
        }
        // A held worker reads the mark once a second: gone, another worker's call found the upstream
        // back, and one call of this one's looks now (OutageBrake.liftedElsewhere). Before, it looked
        // at its next look, up to 30 s on, its slots idle meanwhile (seen: a daemon of two idle while
        // the other ran the queue).
        if (outage.callsAllowed() !== Infinity && mono >= markReadAt) {
          markReadAt = mono + OUTAGE_PROBE_FIRST_MS;
          // Its own mark written first, so that a hold just begun does not read as lifted.
          await marking;
          const stands = (await options.store.upstreamDown()) !== null;
          if (markStood && !stands) outage.liftedElsewhere();
          markStood = stands;
        }
        giveBack(reserve.stale(mono));
        startHeld(report);
        // Free slots, and the jobs the reserve wants on top of them; none while a shortage holds calls
        // back, and only the one that looks while the upstream is down.
        const slots = Math.min(options.concurrency, outage.callsAllowed());
        const wanted = slots < options.concurrency ? 0 : reserve.wanted();
        const room = shortage.holding() ? 0 : Math.min(Math.min(slots - calling, maxInFlight - inflight.size) + wanted, maxJobs - report.claimed);
        let claimedNow = 0;
        const wantClaim = room > 0 && (dirty || at >= nextWakeAt);
        const gathering = wantClaim && calling > 0 && options.concurrency - calling + wanted < gatherSlots && mono - (gatherSince ??= mono) < gatherMs;
        if (wantClaim && !gathering) {
          gatherSince = null;
          const jobs = await options.store.claimJobs({ workerId: id, limit: room, leaseMs: options.leaseMs, lapseGraceMs: lapseGrace.at(mono) });
          claimedNow = jobs.length;
          report.claimed += jobs.length;
          if (stopping) {
            // stop() came while this claim was under way. None of its jobs has started, so they go
            // back now, as held ones do, instead of making calls (or being held) through the drain.
            giveBack(jobs);
            continue;
          }
          for (const job of jobs) {
            if (canStart()) start(job, report);
            else reserve.hold(job, performance.now());
          }
          // A full batch means more may be due: keep claiming as slots free instead of waiting.
          dirty = jobs.length === room;
          if (!dirty) nextWakeAt = (await options.store.nextWakeAt()) ?? Infinity;
          // A lease run out only by a step forward is not due yet (lapse-grace.ts): looked at again
          // every other poll, not claimed for in a loop, and a pass leaves it to the next.
          if (nextWakeAt <= at && lapseGrace.at(mono) > 0) nextWakeAt = at + 2 * options.pollMs;
        }
        // A job due within one poll (a retry with a short backoff it just put back) is still this
        // pass's work: wait for it rather than exit a millisecond early and leave it to the next run.
        if (mode === 'once' && claimedNow === 0 && inflight.size === 0 && nextWakeAt - at > options.pollMs) break;

        if (mode === 'daemon') {
          if (mono - lastHeartbeat >= heartbeatMs) {
            lastHeartbeat = mono;
            await options.store.recordHeartbeat({ id, host: hostname(), pid: process.pid, startedAt, lastSeenAt: at, jobsDone, clockOffsetMs: options.store.clockOffsetMs() });
          }
          if (mono - lastHousekeeping >= (options.housekeepingMs ?? 60_000) && !housekeepingRun) {
            lastHousekeeping = mono;
            startHousekeeping();
          }
        }
        failures = 0;
        if (gathering) {
          // Woken early when another slot frees.
          if (!slotFreed) await sleep(Math.max(1, (gatherSince as number) + gatherMs - performance.now()));
          continue;
        }
        if (dirty && canStart()) continue;
        // A slot freed or a job was put back while we awaited the store (and wakeUp found no sleep to end).
        if (slotFreed || requeuedSinceWake) continue;
        // With every slot taken, a due job cannot start before a call ends, which wakes the loop
        // itself: only the poll (heartbeat, housekeeping, stop) is left to wait for. Timed to a due
        // job instead (or to a long-past one, while claims come back full), the loop woke every
        // millisecond while all its calls were out.
        const slotLeft = room - claimedNow > 0;
        if (slotLeft) {
          // Watched only while asleep: under load every commit, the worker's own too, brings a notice,
          // and a watch kept open cost a drain against a zero-latency stub 10% more instructions a
          // job (553,742 against 502,762, counted on its main thread).
          const watching = mode === 'daemon' && watch.open();
          try {
            // A commit since the version was last read came before the watch: look before sleeping
            // (and sleep only if nothing else came meanwhile either).
            let missed = false;
            if (watching && !dirty) {
              await look();
              missed = dirty;
            }
            const pollMs = watch.nextLookWithin(options.pollMs);
            // Until a job is due, the heartbeat, a notice or the poll.
            const dutyAt = mode === 'daemon' ? lastHeartbeat + heartbeatMs : Infinity;
            if (!missed && !slotFreed && !requeuedSinceWake) await sleep(Math.max(1, Math.min(pollMs, nextWakeAt - now(), dutyAt - performance.now())));
          } finally {
            watch.close();
          }
        } else if (mode === 'daemon' && calling === 0 && outage.callsAllowed() === 0) {
          // Held, the upstream down, no call out: nothing is due before the wait to look again is
          // over, the mark's next read, or the heartbeat or housekeeping (a slot freed or stop()
          // wakes it as ever). Polled every 20 ms instead, a held daemon spent 1.0-1.4% of a core
          // against 0.4% idle.
          const t = performance.now();
          const dueIn = Math.min(outage.waitLeft(), markReadAt - t, lastHeartbeat + heartbeatMs - t, lastHousekeeping + (options.housekeepingMs ?? 60_000) - t);
          await sleep(Math.max(options.pollMs, dueIn));
        } else {
          await sleep(options.pollMs);
        }
        // While the last claim came back full the loop claims anyway, so the version is not read (a
        // version left stale costs one extra claim later, never a missed job).
        if (!dirty) await look();
      } catch (err) {
        // A daemon outlives a busy or briefly unreadable database; a cron pass reports it and exits.
        if (mode === 'once') {
          giveBack(reserve.drain());
          await drain();
          throw err;
        }
        // Stopping already: the store that refused this had told the program to stop (its file
        // moved away, a later release's migration), which said why.
        if (stopping) break;
        failures += 1;
        log.error('worker loop error; backing off', { err, failures });
        await sleep(Math.min(30_000, 250 * 2 ** Math.min(failures, 7)));
      }
    }
    // Held jobs were claimed within the limits: they start as calls end, unless stopping (stop()
    // gave them back). Any a full outcome backlog kept from starting go back after.
    await drain();
    giveBack(reserve.drain());
    await drain();
    if (report.claimed > 0) await keepFailingRun(runBefore);
    await marking;
    if (mode === 'once' && limits.housekeepingAfter) {
      startHousekeeping();
      return report;
    }
    await housekeepingRun;
    if (mode === 'once') await housekeeping();
    return report;
  }

  /**
   * At the end of a pass or daemon that claimed jobs, the run of failed calls it ended in kept for
   * the next, or cleared. Not after one that claimed none: it would keep a run as new that no call
   * added to, and passes far apart would make one.
   */
  async function keepFailingRun(before: FailingRun | null) {
    const run = outage.failingRun();
    if (run === null && before === null) return;
    const at = now();
    // Not kept costs the next pass or daemon its count, as before the run was kept.
    await options.store
      .setFailingRun(run === null ? null : { calls: run.calls, since: at - run.agoMs, endedAt: at })
      .catch((err: unknown) => void log.warn('could not keep in the store the run of failed calls this worker ended in', { err }));
  }

  // Never once stopping: a loop iteration already past its `while (!stopping)` could otherwise start
  // a pass after stop() had waited for the last one, with the abort already spent.
  function startHousekeeping() {
    if (stopping) return;
    housekeepingRun ??= housekeeping().finally(() => {
      housekeepingRun = null;
    });
  }

  async function housekeeping() {
    try {
      const expired = await options.store.expireOverdue(housekeepingStop.signal);
      // After the expiry, which does not depend on it (no deadline is moved): the expiry is what a
      // pass begins with, and no pass begins once stopping.
      if (tellRebased(await options.store.rebaseAfterClockStep(housekeepingStop.signal), 0)) {
        requeuedSinceWake = true;
        wakeUp();
      }
      const deleted = await options.store.deleteFinishedBefore(now() - keepFinishedMs, housekeepingStop.signal);
      const backlog = await options.store.checkpoint();
      if (expired || deleted) log.info('housekeeping', { expired, deleted });
      // Said at every pass (once a minute) while it lasts: the log grows with every write meanwhile.
      if (backlog) {
        const mb = Math.round(backlog.bytes / (1024 * 1024));
        const held = backlog.readers.length ? `read locks on it are held by ${backlog.readers.join(', ')}` : 'no other process holds a read lock on it now';
        log.warn(
          `${backlog.path} holds ${mb} MB that a checkpoint cannot fold into the database while another connection keeps an older read open (${held}): end that read (a sqlite3 shell inside a transaction, a backup or a report left running); until then the log grows with every write`,
          { log_mb: mb },
        );
      }
    } catch (err) {
      log.warn('housekeeping failed', { err });
    }
  }

  /** Says what a rebase after a clock step found (`stepMs`: the step this process saw, or 0); whether it moved any job. */
  function tellRebased(jobs: number, stepMs: number): boolean {
    if (stepMs > 0) log.warn(`the clock stepped back ${Math.round(stepMs / 1000)} s`, { step_ms: stepMs, jobs_brought_back: jobs });
    else if (jobs > 0) log.warn('jobs written before the clock stepped back were brought onto it', { jobs_brought_back: jobs });
    return jobs > 0;
  }

  /** What stop() and abortNow() both do first: no more claims or housekeeping, held jobs given back. */
  function beginStopping() {
    stopping = true;
    housekeepingStop.abort();
    giveBack(reserve.drain());
  }

  // Calls in flight are bounded by the attempt timeout and the job's deadline; stop() adds the grace cut-off.
  async function drain() {
    while (inflight.size > 0) await Promise.race(inflight);
  }

  return {
    id,
    async runOnce(limits = {}) {
      return loop('once', limits);
    },
    async runDaemon() {
      log.info('worker started', { concurrency: options.concurrency });
      try {
        return await loop('daemon', {});
      } finally {
        await options.store.removeHeartbeat(id).catch(() => undefined);
        log.info('worker stopped', { jobs_done: jobsDone });
      }
    },
    stop() {
      if (!stopped) {
        beginStopping();
        wakeUp();
        stopped = (async () => {
          const grace = setTimeout(() => shutdown.abort(), options.shutdownGraceMs);
          await drain();
          clearTimeout(grace);
          await housekeepingRun;
        })();
      }
      return stopped;
    },
    abortNow() {
      beginStopping();
      shutdown.abort();
      wakeUp();
    },
  };
}

/** The worker settings from configuration, with the store, upstream client and logger it works with. */
export function createWorkerFromConfig(config: Config, parts: Pick<WorkerOptions, 'store' | 'upstream' | 'logger'> & Partial<WorkerOptions>): Worker {
  return createWorker({
    concurrency: config.worker.concurrency,
    leaseMs: config.worker.leaseMs,
    attemptTimeoutMs: config.upstream.timeoutMs,
    retryBaseMs: config.worker.retryBaseMs,
    retryMaxMs: config.worker.retryMaxMs,
    pollMs: config.worker.pollMs,
    shutdownGraceMs: config.worker.shutdownGraceMs,
    retentionMs: config.jobs.retentionSeconds * 1000,
    pacing: { rpm: config.upstream.rpm, tpm: config.upstream.tpm },
    ...parts,
  });
}
