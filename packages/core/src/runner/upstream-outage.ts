import { sayAtMostEvery } from '../log-throttle.js';
import { neverConnected } from './network-error.js';
import type { UpstreamOutcome } from './upstream-client.js';

/** The first wait before a call looks whether an unreachable upstream is back; each that finds it still gone doubles it. */
export const OUTAGE_PROBE_FIRST_MS = 1000;
export const OUTAGE_PROBE_MAX_MS = 30_000;
/** An outage that lasts is told once a minute, with how many looks failed since it was last told. */
export const OUTAGE_LINE_MS = 60_000;

/**
 * The worker's brake for an upstream it cannot reach. Every job the worker met while the upstream
 * was down spent its attempts one after another and failed: with the default retries, seen, ten
 * jobs with an hour's ttl all failed `upstream_unreachable` 18.5 s after they were made, the port
 * closed. Now the first call that cannot connect holds this worker's calls back: after a wait, one
 * call goes (the oldest job due) to see whether the upstream is back, the wait doubling each time it
 * is not (up to OUTAGE_PROBE_MAX_MS); the rest of the queue waits unclaimed, its attempts unspent,
 * until a call connects. Each call made still spends its job's attempt, and the job's deadline
 * still ends its wait. Per process: each worker looks for itself.
 */
export interface OutageBrake {
  /** What a call met: held back when it could not connect, released by one that did (an answer, an error status, a reset after the connect). */
  report(outcome: UpstreamOutcome): void;
  /** How many calls may run now: Infinity, or 0 while waiting to look again, or 1 to look. */
  callsAllowed(): number;
}

export function createOutageBrake(deps: { log: { [L in 'warn' | 'info']: (message: string, meta?: object) => unknown }; monotonic?: () => number }): OutageBrake {
  const monotonic = deps.monotonic ?? (() => performance.now());
  // 0 while the upstream answers: the common case costs no clock read.
  let looks = 0;
  let until = 0;
  let since = 0;
  const tell = sayAtMostEvery(OUTAGE_LINE_MS, monotonic);
  return {
    report(outcome) {
      if (outcome.kind === 'network_error' && neverConnected(outcome.code)) {
        const at = monotonic();
        // Calls begun before the hold end as it begins: only a look that failed waits longer.
        if (looks > 0 && at < until) return;
        if (looks === 0) since = at;
        const wait = Math.min(OUTAGE_PROBE_MAX_MS, OUTAGE_PROBE_FIRST_MS * 2 ** looks);
        looks += 1;
        until = at + wait;
        tell((times) =>
          deps.log.warn(
            `the upstream cannot be reached (${outcome.code}): calls are held, and one goes after ${wait / 1000} s to see whether it is back, the wait doubling up to ${OUTAGE_PROBE_MAX_MS / 1000} s; jobs wait in the queue with their attempts unspent`,
            { code: outcome.code, failed_looks: times },
          ),
        );
        return;
      }
      if (looks === 0 || outcome.kind === 'local_shortage') return;
      deps.log.info('the upstream answers again: calls resume', { held_ms: Math.round(monotonic() - since), looks });
      looks = 0;
    },
    callsAllowed() {
      if (looks === 0) return Infinity;
      return monotonic() < until ? 0 : 1;
    },
  };
}
