/**
 * Jobs claimed a little ahead of free slots, started from memory the moment a call ends.
 *
 * Without it, a slot freed by an ended call stays empty until the next claim returns: the claim
 * waits for others to gather (CLAIM_GATHER_MS) and then for its turn on the event loop, behind the
 * answers that arrived with it. Measured against a 200 ms stub at concurrency 64 (the benchmark's
 * figure 4, per-job stamps): 4.4–6.4 ms from a call's end to the next call in that slot, in a round
 * of some 213 ms.
 *
 * Holding claimed jobs back from other workers is the cost, so the reserve is sized to be gone
 * quickly: as many jobs as slots free in RESERVE_HOLD_MS at the pace calls have been ending
 * (concurrency × RESERVE_HOLD_MS / mean call time), none until a call has ended, and none while
 * calls take less than RESERVE_HOLD_MS themselves (see below). Against a real model, whose calls
 * take seconds, that is none at all below 40 slots. A job held past RESERVE_MAX_HOLD_MS (calls
 * suddenly slower; less under a short lease, see maxHoldFor) goes back to the queue with its attempt
 * unspent, and the reserve stays off until another call ends.
 */

/** How long a job claimed ahead is expected to wait for a slot, at most. */
export const RESERVE_HOLD_MS = 25;
/**
 * A job held this long without a slot goes back to the queue; sooner under a short lease (see
 * maxHoldFor), so that a held job starts with most of its lease left.
 */
export const RESERVE_MAX_HOLD_MS = 1000;

/**
 * The longest hold under a lease of `leaseMs`: RESERVE_MAX_HOLD_MS, or a third of the lease if
 * that is shorter. A job's lease runs from its claim; one started late has less of it before its
 * first renewal, and another worker may claim a job whose lease lapses during its call.
 */
export function maxHoldFor(leaseMs: number): number {
  return Math.min(RESERVE_MAX_HOLD_MS, Math.floor(leaseMs / 3));
}
/** Weight of the latest call in the running mean of call times. */
const SMOOTHING = 0.2;

export interface Reserve<J> {
  /** How many jobs to claim beyond the free slots now. */
  wanted(): number;
  /** Jobs held now. */
  readonly size: number;
  /** A job claimed ahead, held from `at` (performance.now()). */
  hold(job: J, at: number): void;
  /** The next job held no longer than the bound, or null; older ones are in `stale()`. */
  take(at: number): J | null;
  /** Jobs held past the bound, removed from the reserve (to be given back). */
  stale(at: number): J[];
  /** Every job held, removed (stopping: to be given back). */
  drain(): J[];
  /** A slot was held this long by its call (its end feeds the reserve's size). */
  callTook(ms: number): void;
}

/** A reserve for a worker of `concurrency` slots; `holdMs` 0 keeps none; none held past `maxHoldMs`. */
export function createReserve<J>(concurrency: number, holdMs = RESERVE_HOLD_MS, maxHoldMs = RESERVE_MAX_HOLD_MS): Reserve<J> {
  const held: Array<{ job: J; at: number }> = [];
  // Unknown until a call ends; Infinity turns the reserve off.
  let meanCallMs = Infinity;
  // Calls quicker than the hold free slots faster than a claim gathers them: there the gathering
  // already keeps the slots busy, and held jobs only cost CPU (measured against the zero-latency
  // stub at concurrency 8, pinned, three alternating pairs: 349–391 µs a job with them against
  // 326–354 without). Hence also never more than the concurrency.
  const target = () => (meanCallMs < holdMs ? 0 : Math.floor((concurrency * holdMs) / meanCallMs));

  const removeStale = (at: number): J[] => {
    let n = 0;
    while (n < held.length && at - (held[n] as { at: number }).at > maxHoldMs) n++;
    if (n === 0) return [];
    // Slots freed more slowly than the size assumed: no reserve until a call ends again.
    meanCallMs = Infinity;
    return held.splice(0, n).map((h) => h.job);
  };

  return {
    wanted: () => Math.max(0, target() - held.length),
    get size() {
      return held.length;
    },
    hold(job, at) {
      held.push({ job, at });
    },
    take(at) {
      // Oldest first; those past the bound stay at the front for stale() to give back.
      const first = held[0];
      if (!first || at - first.at > maxHoldMs) return null;
      held.shift();
      return first.job;
    },
    stale: removeStale,
    drain() {
      return held.splice(0).map((h) => h.job);
    },
    callTook(ms) {
      meanCallMs = meanCallMs === Infinity ? ms : meanCallMs + SMOOTHING * (ms - meanCallMs);
    },
  };
}
