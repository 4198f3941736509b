import { CLOCK_STEP_SLACK_MS } from './types.js';

/**
 * Tells, at each look, how far the clock stepped since the last: positive when it stepped back,
 * negative when forward, 0 when it did not. `now()` less the monotonic clock moves by more than
 * CLOCK_STEP_SLACK_MS at once only in a step (NTP slews the two alike, by milliseconds a minute), or
 * when the machine was suspended (the monotonic clock stops meanwhile), which reads as a step
 * forward. On PostgreSQL `now()` is the server's clock as this host reads it, so a step of the
 * server's shows when this host measures it again.
 */
export function watchClockSteps(now: () => number, monotonic: () => number = () => performance.now()): (at?: number, mono?: number) => number {
  let base = now() - monotonic();
  // `at` and `mono`: the two clocks as the caller just read them, so a look costs no reading of its own.
  return (at = now(), mono = monotonic()) => {
    const next = at - mono;
    const fell = base - next;
    base = next;
    return Math.abs(fell) > CLOCK_STEP_SLACK_MS ? Math.round(fell) : 0;
  };
}
