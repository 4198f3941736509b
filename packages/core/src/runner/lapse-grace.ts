/**
 * After the clock stepped forward, how long past its end a lease must be before this worker takes
 * it as lapsed (ClaimOptions.lapseGraceMs).
 *
 * A lease is kept by renewals every third of it, each writing its end on the clock as it reads
 * then. Stepped forward by more than what is left of them, every lease written before the step
 * reads as run out, those of workers still calling among them, and a claim took those jobs and
 * called them again (seen: a step of 120 s during a 15 s call made a second call 3 s after the
 * first; the first was abandoned, its answer thrown away). So for a while after a step it sees,
 * a worker takes a lease as lapsed only once it would have been by the clock before the step: a
 * whole lease on (every live holder renews within a third of one, lease.ts renewing a lease the
 * step ran out at its next look rather than giving it up), and on PostgreSQL the time it takes every host to see a step of the
 * server's clock too (JobStore.clockSyncMs). Steps within that while add up. A worker that died
 * holding a job meanwhile leaves it to be taken that much later, as if the clock had not stepped.
 */
export interface LapseGrace {
  /** The clock stepped forward `stepMs` at `mono` (the monotonic clock's reading). */
  stepped(stepMs: number, mono: number): void;
  /** The grace for a claim made at `mono`: 0 once the while is over. */
  at(mono: number): number;
}

export function createLapseGrace(leaseMs: number, clockSyncMs: number): LapseGrace {
  let graceMs = 0;
  let until = -Infinity;
  return {
    stepped(stepMs, mono) {
      graceMs = (mono < until ? graceMs : 0) + stepMs;
      until = mono + leaseMs + clockSyncMs;
    },
    at(mono) {
      return mono < until ? graceMs : 0;
    },
  };
}
