import { sayAtMostEvery } from '../log-throttle.js';
import type { Logger } from '../logger.js';
import type { UpstreamOutcome } from './upstream-client.js';

/**
 * How long a worker starts no call after one could not open its connection (this machine out of
 * descriptors or ports). The calls still running hold what ran short and free it as they end;
 * claiming on at once would only claim jobs and give them back as fast as the database allows.
 */
export const LOCAL_SHORTAGE_PAUSE_MS = 1000;
/** A shortage that lasts is told once a minute, with the jobs it put back meanwhile. */
export const LOCAL_SHORTAGE_LINE_MS = 60_000;

export type LocalShortage = Extract<UpstreamOutcome, { kind: 'local_shortage' }>;

/** The worker's brake for shortages of its own machine: told of each, it holds new calls a while. */
export interface ShortageBrake {
  /** A call could not open its connection (its job goes back unspent, by the caller). */
  report(shortage: LocalShortage): void;
  /** Whether no call may start now. */
  holding(): boolean;
}

export function createShortageBrake(deps: { now: () => number; log: Pick<Logger, 'error'> }): ShortageBrake {
  // 0 when no shortage is under way: the common case costs no clock read.
  let until = 0;
  const tell = sayAtMostEvery(LOCAL_SHORTAGE_LINE_MS, deps.now);
  return {
    report(shortage) {
      until = deps.now() + LOCAL_SHORTAGE_PAUSE_MS;
      tell((times) =>
        deps.log.error(`${shortage.message}. The job went back to the queue with its attempt unspent; no call starts for ${LOCAL_SHORTAGE_PAUSE_MS / 1000} s`, {
          code: shortage.code,
          jobs_put_back: times,
        }),
      );
    },
    holding() {
      if (until === 0) return false;
      if (deps.now() < until) return true;
      until = 0;
      return false;
    },
  };
}
