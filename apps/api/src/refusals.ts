/**
 * Whether the database refused this API's requests lately, for /health. A full disk, or the write
 * lock held elsewhere (an operator's sqlite3 shell inside a transaction, a process frozen in one),
 * fails every create with 503 `unavailable` while reads, and so /health's ping, still answer: before
 * 2026-12-07 /health said `ok` while no create could be stored (seen: a sqlite3 shell holding BEGIN
 * IMMEDIATE, each create answered 503 after its 5 s wait, /health 200 throughout). The error handler
 * tells it of each 503 the database caused, a create that is stored tells it the database takes
 * writes again, and /health asks it.
 */
export interface Refusals {
  /** A request got 503 `unavailable`: the database did not take it. */
  refused(): void;
  /** A create was stored: the database takes writes. */
  stored(): void;
  /** How long ago the last refusal came (ms), while it counts; null when none does. */
  lastRefusedAgoMs(): number | null;
}

/**
 * How long a refusal counts with no create stored since: twice a write's wait for the lock, so the
 * creates refused one after another keep /health at 503 while the lock is held, and it answers 200
 * again this long after the last one where no create comes to say the database is back.
 */
export const REFUSAL_COUNTS_MS = 10_000;

/** Refusals timed on the monotonic clock, which no clock step moves. */
export function createRefusals(monotonic: () => number = () => performance.now()): Refusals {
  let last = -Infinity;
  return {
    refused: () => void (last = monotonic()),
    stored: () => void (last = -Infinity),
    lastRefusedAgoMs() {
      const ago = monotonic() - last;
      return ago < REFUSAL_COUNTS_MS ? ago : null;
    },
  };
}
