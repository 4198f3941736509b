import type { ClaimedJob, JobStore, LeaseState } from '../store/types.js';

/** After a renewal fails (the database unreachable for a moment), the next is tried this soon (or a third of the lease, if sooner). */
export const RENEW_RETRY_MS = 1000;

/** Why the lease keeper ends an attempt. */
export type LeaseEnd = 'lease_lost' | 'lease_lapsed' | 'cancelled';

export interface LeaseKeeper {
  /**
   * Resolves when the lease is known to be held for at least a third of it more, renewing first if
   * need be; rejects (with the attempt's abort reason, through `end`) if it is not ours, or with an
   * Error if the database could not confirm it.
   */
  confirm(): Promise<void>;
  /** Stops renewing: the attempt is over. */
  stop(): void;
}

export interface LeaseKeeperDeps {
  store: Pick<JobStore, 'renewLease'>;
  job: Pick<ClaimedJob, 'id' | 'leaseToken' | 'leaseUntil'>;
  leaseMs: number;
  now: () => number;
  /** The monotonic clock, in ms (performance.now() unless a test gives one). */
  monotonic?: () => number;
  /** Ends the attempt; called at most once with effect (the attempt's signal keeps the first reason). */
  end: (reason: LeaseEnd) => void;
  /** Throws the attempt's abort reason if it has ended. */
  throwIfEnded: () => void;
  /**
   * Told, at the start and whenever a renewal moves it, until when a call may still begin: a third
   * of the lease before the lease known held runs out.
   */
  sendBy: (at: number) => void;
  warn: (message: string, meta?: object) => void;
}

/**
 * Keeps a claimed job's lease while its attempt runs. The lease is the only thing that keeps other
 * workers off the job, so its rules are about never letting a call run where another may run too:
 *
 * - Renewals come a third into the lease as taken at the claim, then every third of it. A job held
 *   for a free slot (reserve.ts), or started behind a busy event loop, starts with less of its
 *   lease left; renewing only a third after its start let another worker claim it while it ran.
 * - `heldUntil` is how long the lease is surely ours, by the store's clock: from when the claim, or
 *   the last renewal heard back, was sent. It is kept by the monotonic clock too, and the sooner of
 *   the two ends counts for a call about to go out: after a clock stepped forward, other workers see
 *   the lease end that much sooner; after one stepped back, a lease from before the step may be
 *   moved back by as much (JobStore.rebaseAfterClockStep) while the store's clock says it holds that
 *   much longer.
 * - A lease that reads as run out by the store's clock while the monotonic clock says it holds
 *   (the clock stepped forward, or the machine woke from a suspend) is renewed at the next look,
 *   and the attempt goes on only if that renewal is heard back: the lease was then still ours, and
 *   holds on the clock as it now reads. Workers that saw the step do not take such a lease
 *   meanwhile (lapse-grace.ts, which tells what ending it as lapsed cost). A renewal that fails, or
 *   is still unanswered at the lease's end as timed here, ends the attempt as a lapse would:
 *   another worker may have taken the job.
 * - One renewal at a time: a check joins one already on its way.
 * - A renewal that fails (the database unreachable) is tried again after RENEW_RETRY_MS, not a
 *   third of a lease later: a hiccup ends with the lease renewed, not lapsed and the job taken.
 * - When `heldUntil` passes unrenewed, the attempt ends ('lease_lapsed'): from then on another
 *   worker may claim the job and call it, and two calls of one job must not run at once.
 * - A renewal also carries word of a lost lease ('lease_lost') or a client's cancel ('cancelled').
 * - No call goes out on less than a third of the lease: `confirm()` renews for it before the call
 *   starts, and the time told to `sendBy` is looked at again as its first byte is written. In
 *   between lie a connect, perhaps a TLS handshake, and turns of the event loop; a process held up
 *   there (stopped, a paused VM, a starved CPU) resumes into the write before its renewal timer
 *   runs, and would send a call on a lease that another worker may since have claimed.
 */
export function keepLease(deps: LeaseKeeperDeps): LeaseKeeper {
  const { store, job, leaseMs, now, end } = deps;
  const monotonic = deps.monotonic ?? (() => performance.now());
  const every = Math.max(50, Math.floor(leaseMs / 3));
  let heldUntil = job.leaseUntil ?? now() + leaseMs;
  let heldUntilMonotonic = monotonic() + (heldUntil - now());
  /** How long the lease is surely ours from now (ms): the sooner of its two ends. */
  const left = () => Math.min(heldUntil - now(), heldUntilMonotonic - monotonic());
  /** How long until the lease runs out as timed here, whatever the clock's steps. */
  const leftMonotonic = () => heldUntilMonotonic - monotonic();
  deps.sendBy(now() + left() - every);
  let renewing: Promise<LeaseState> | null = null;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const heed = (state: LeaseState) => {
    if (state === 'lost') end('lease_lost');
    else if (state === 'cancel_requested') end('cancelled');
  };
  const renewNow = (): Promise<LeaseState> =>
    (renewing ??= (async () => {
      const [sentAt, sentAtMonotonic] = [now(), monotonic()];
      const state = await store.renewLease(job.id, job.leaseToken, leaseMs);
      if (state !== 'lost' && (sentAt + leaseMs > heldUntil || sentAtMonotonic + leaseMs > heldUntilMonotonic)) {
        heldUntil = Math.max(heldUntil, sentAt + leaseMs);
        heldUntilMonotonic = Math.max(heldUntilMonotonic, sentAtMonotonic + leaseMs);
        deps.sendBy(now() + left() - every);
      }
      return state;
    })().finally(() => (renewing = null)));

  /** The next renewal in `ms`, or when the lease runs out if that is sooner. */
  const schedule = (ms: number) => {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(tick, Math.max(0, Math.min(ms, left())));
  };
  function tick() {
    if (stopped) return;
    if (leftMonotonic() <= 0) {
      end('lease_lapsed');
      return;
    }
    if (left() <= 0) {
      // Run out by the store's clock alone: the clock stepped forward. Renewed now, or ended; and
      // ended at the lease's end as timed here should the renewal not come back by then.
      clearTimeout(timer);
      timer = setTimeout(tick, leftMonotonic());
      renewNow().then(
        (state) => {
          heed(state);
          if (state !== 'lost') schedule(every);
        },
        () => end('lease_lapsed'),
      );
      return;
    }
    schedule(every);
    renewNow().then(heed, (err: unknown) => {
      deps.warn('lease renewal failed; trying again shortly', { err });
      schedule(Math.min(every, RENEW_RETRY_MS));
    });
  }
  // The first renewal a third into the lease taken at the claim.
  schedule(left() - (leaseMs - every));

  return {
    async confirm() {
      // Less than a third of the lease known to be left means the claim, the pacing read or the
      // renewals were held up for two thirds of it. A renewal joined may come back with little
      // lease left, or none: then once more. Still short after that, the call is not begun (the
      // database is too slow to keep the lease through it).
      for (let tries = 0; tries < 2 && left() < every; tries++) {
        heed(await renewNow());
        deps.throwIfEnded();
      }
      if (left() < every) throw new Error('the database took longer than two thirds of the lease to renew it, twice');
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
