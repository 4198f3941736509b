import { sayAtMostEvery } from '../log-throttle.js';
import { neverConnected } from './network-error.js';
import type { UpstreamOutcome } from './upstream-client.js';

/** The first wait before a call looks whether an upstream that is down is back; each that finds it still down doubles it. */
export const OUTAGE_PROBE_FIRST_MS = 1000;
export const OUTAGE_PROBE_MAX_MS = 30_000;
/** An outage that lasts is told once a minute, with how many looks failed since it was last told. */
export const OUTAGE_LINE_MS = 60_000;

/**
 * An upstream that answers every call with a server error (5xx), or lets it time out unanswered
 * (a streamed answer cut while still coming is a slow model, not counted), for this many calls in
 * a row, over at least FAILING_FOR_MS, is held back as one that cannot be reached is. A 5xx now
 * and then (OpenAI answers a few even on a good day) holds nothing, nor a burst of
 * them within a moment (a balancer's hiccup failing every call then in flight), nor an upstream
 * failing some of its calls while others complete, which retried per job mostly complete. Held at
 * three in a row over 250 ms (measured, 20 ms calls failing at random): a worker at concurrency 64
 * took 22.0 s for 1,000 jobs against an upstream failing half its calls, against 7.9 s without the
 * hold, and 44.0 s for 300 at concurrency 8 with four in five failing, against 8.4 s, each time
 * completing about as many; at ten in a row over a second, 7.6 and 8.7 s. With the default retries
 * the calls are then held by the jobs' third attempts. Timeouts at random (four calls in five
 * never answered, 2 s timeouts, the others answered in 1.5 s; 40 jobs at concurrency 8): 27
 * completed in 31 s, against 28 with timeouts not counted.
 */
export const FAILING_IN_A_ROW = 10;
export const FAILING_FOR_MS = 1000;

/** How a call ended, for the brake: what the upstream client made of it, or no answer within the attempt's timeout (`ms`). */
export type CallEnd = UpstreamOutcome | { kind: 'timeout'; ms: number };

/**
 * The worker's brake for an upstream that is down. Every job the worker met while the upstream
 * was down spent its attempts one after another and failed: with the default retries, seen, ten
 * jobs with an hour's ttl all failed `upstream_unreachable` 18.5 s after they were made, the port
 * closed, and all failed `upstream_server_error` with five attempts each while the upstream
 * answered 503 for 30 s; eight jobs all failed `upstream_timeout` within 3 s (300 ms timeouts)
 * against an upstream that took every call and answered none. Now the first call that cannot
 * connect, or a run of server errors or timeouts (FAILING_IN_A_ROW), holds this worker's calls
 * back: after a wait, one call goes (the oldest job due) to see whether the upstream is back, the
 * wait doubling each time it is not (up to OUTAGE_PROBE_MAX_MS); the rest of the queue waits
 * unclaimed, its attempts unspent, until a call gets another answer. Each call made still spends
 * its job's attempt, and the job's deadline still ends its wait. The hold and its end are also
 * marked in the store (`onHeld`, `onResumed`), and a worker that starts while the mark stands
 * begins held (`assumeDown`): its first call looks. Without the mark, each of cron's passes in an
 * outage spent one attempt a slot before its calls were held (seen: 4 a pass at concurrency 4,
 * where now 1). With `shared`, a look also waits for the fleet's turn (`needsTurn`, then
 * `turnTaken` or `postpone`: JobStore.takeUpstreamLook), so that the fleet makes one look each time
 * rather than one a worker; a worker held while another's look finds the upstream back (the mark
 * lifted) looks at once (`liftedElsewhere`), not at its own next look.
 */
export interface OutageBrake {
  /**
   * What a call met: held back when it could not connect, or when server errors or timeouts ran
   * on, released by a call that did otherwise (an answer that is not a 5xx, a reset after the connect).
   */
  report(outcome: CallEnd): void;
  /** How many calls may run now: Infinity, or 0 while waiting to look again (or for the fleet's turn), or 1 to look. */
  callsAllowed(): number;
  /** While held, the ms until this worker's wait to look again is over (0 once it is); 0 while not held. */
  waitLeft(): number;
  /**
   * The run of server errors or timeouts this worker's calls have ended in, not yet a hold: how many
   * in a row, and how many whole ms ago the first came; null after an answer, or once held (the mark
   * says more).
   */
  failingRun(): { calls: number; agoMs: number } | null;
  /** Counts on from a run an earlier pass or daemon ended in (FailingRun), as though this worker had met it. No-op once held or counting. */
  continueRun(calls: number, agoMs: number): void;
  /** Another worker found the upstream down (the store's mark): the next call looks, as after a wait. No-op while held already. */
  assumeDown(): void;
  /** With `shared`: this worker's wait is over, and its look waits for the fleet's turn. */
  needsTurn(): boolean;
  /** The fleet's turn is this worker's: its next call looks. */
  turnTaken(): void;
  /** Another worker has the fleet's turn: this one's look waits `ms` more. */
  postpone(ms: number): void;
  /**
   * Another worker's call found the upstream answering (it lifted the store's mark): this worker's
   * next call looks now, without waiting for its wait or the fleet's turn. Not all its calls at
   * once: the upstream may answer that worker and not this one (its host's network cut), and each
   * lift would then cost a slot's worth of attempts. No-op unless held.
   */
  liftedElsewhere(): void;
}

export interface OutageBrakeDeps {
  log: { [L in 'warn' | 'info']: (message: string, meta?: object) => unknown };
  monotonic?: () => number;
  /** Whether a look waits for the fleet's turn (needsTurn); without, it goes when this worker's wait is over. */
  shared?: boolean;
  /**
   * The calls came to be held (not when assumed down: the mark is there already), for `reason`:
   * what the upstream does, in a few words after "the upstream" (`cannot be reached (ECONNREFUSED)`).
   */
  onHeld?: (reason: string) => void;
  /** A call got an answer while calls were held. */
  onResumed?: () => void;
  /** Whether the run ends once calls are held (a pass): its line then leaves the looks to the pass that ends it. */
  endsWhenHeld?: () => boolean;
}

export function createOutageBrake(deps: OutageBrakeDeps): OutageBrake {
  const monotonic = deps.monotonic ?? (() => performance.now());
  // 0 while the upstream answers: the common case costs no clock read.
  let looks = 0;
  let until = 0;
  let since = 0;
  // The server errors in a row before the hold, and when the first of them came.
  let failing = 0;
  let failingSince = 0;
  // Whether the look now due has its turn: always, unless the fleet shares its looks.
  const shared = deps.shared ?? false;
  let turn = !shared;
  const tell = sayAtMostEvery(OUTAGE_LINE_MS, monotonic);
  return {
    report(outcome) {
      if (outcome.kind === 'local_shortage') return;
      // The code of a connection never opened, or null.
      const down = outcome.kind === 'network_error' && neverConnected(outcome.code) ? outcome.code : null;
      // A proxy in HTTPS_PROXY answering 502 or 503 for the tunnel is its upstream failing too.
      const status = outcome.kind === 'http_error' || outcome.kind === 'proxy_refused' ? outcome.status : 0;
      // The attempt's timeout, when the call got no answer within it: counted as server errors are.
      const timedOut = outcome.kind === 'timeout' ? outcome.ms : 0;
      if (down === null && status < 500 && timedOut === 0) {
        failing = 0;
        if (looks === 0) return;
        deps.log.info('the upstream answers again: calls resume', { held_ms: Math.round(monotonic() - since), looks });
        looks = 0;
        turn = !shared;
        deps.onResumed?.();
        return;
      }
      const at = monotonic();
      if (looks === 0 && down === null) {
        if (failing++ === 0) failingSince = at;
        if (failing < FAILING_IN_A_ROW || at - failingSince < FAILING_FOR_MS) return;
      }
      // Calls begun before the hold end as it begins: only a look that failed waits longer.
      if (looks > 0 && at < until) return;
      const reason = down ? `cannot be reached (${down})` : timedOut ? `answers no call within ${timedOut / 1000} s` : `answers every call with a server error (${status})`;
      if (looks === 0) {
        since = at;
        deps.onHeld?.(reason);
      }
      const wait = Math.min(OUTAGE_PROBE_MAX_MS, OUTAGE_PROBE_FIRST_MS * 2 ** looks);
      looks += 1;
      until = at + wait;
      turn = !shared;
      // The first time, the run of calls that held them.
      const what =
        looks > 1 || down
          ? `the upstream ${reason}`
          : timedOut
            ? `the upstream ${reason} (${failing} calls in a row)`
            : `the upstream answers every call with a server error (${status}, ${failing} calls in a row over ${Math.round((at - failingSince) / 100) / 10} s)`;
      // A pass says next that it ends, and that the next pass looks: not that a call goes after the wait.
      const then = deps.endsWhenHeld?.()
        ? ''
        : `, and one goes after ${wait / 1000} s to see whether it is back, the wait doubling up to ${OUTAGE_PROBE_MAX_MS / 1000} s; jobs wait in the queue with their attempts unspent`;
      const cause = down ? { code: down } : { upstream_status: timedOut ? 'timeout' : status };
      tell((times) => deps.log.warn(`${what}: calls are held${then}`, { ...cause, failed_looks: times }));
    },
    callsAllowed() {
      if (looks === 0) return Infinity;
      return turn && monotonic() >= until ? 1 : 0;
    },
    assumeDown() {
      if (looks > 0) return;
      // As after a first look that failed: the look goes now, and one that fails waits 2 s.
      looks = 1;
      since = until = monotonic();
      turn = !shared;
    },
    waitLeft() {
      return looks === 0 ? 0 : Math.max(0, until - monotonic());
    },
    failingRun() {
      return looks === 0 && failing > 0 ? { calls: failing, agoMs: Math.max(0, Math.round(monotonic() - failingSince)) } : null;
    },
    continueRun(calls, agoMs) {
      if (looks > 0 || failing > 0) return;
      failing = calls;
      failingSince = monotonic() - agoMs;
    },
    needsTurn() {
      return looks > 0 && !turn && monotonic() >= until;
    },
    turnTaken() {
      turn = true;
    },
    postpone(ms) {
      until = monotonic() + ms;
    },
    liftedElsewhere() {
      if (looks === 0) return;
      deps.log.info('another worker found the upstream answering: one call goes now to see whether it answers this worker too', { held_ms: Math.round(monotonic() - since) });
      until = monotonic();
      turn = true;
    },
  };
}
