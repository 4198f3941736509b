/**
 * How often a claim marks overdue queued jobs expired while claims come back full. At full speed
 * the scan ran with every claim (2% of the SQLite worker's time; a round trip on PostgreSQL). Both
 * stores' claims skip overdue jobs whether or not the scan ran, and a claim that comes back short
 * always scans, so an idle worker marks them at once and none spins on them: this only bounds how
 * long a busy system may still show an overdue job as "queued".
 */
export const CLAIM_EXPIRY_EVERY_MS = 250;

/**
 * The most overdue jobs one claim's scan marks expired. The scan runs inside the claim's
 * transaction: a worker back after an hour away, with 300,000 overdue jobs, held SQLite's write
 * lock for 4-6 s marking them all at once (a create meanwhile waited 4.1 s; more jobs, and creates
 * answer 503). A backlog goes on through later claims, each a millisecond after the last, and
 * through housekeeping's paced batches. Measured live (API taking creates, the worker starting on
 * those 300,000): 50 a claim cleared them in 14 s with creates at p99 15 ms, at most 121 ms; 200 a
 * claim in 8 s, at p99 139 ms, at most 550 ms.
 */
export const CLAIM_EXPIRE_LIMIT = 50;

/**
 * Decides, for each claim, whether it scans before taking jobs (`before`) or, when it did not and
 * came back short, after (`after`); either answer true counts as the scan having run at `at`.
 */
export function createExpirySpacing() {
  let last = -Infinity;
  const ran = (at: number) => ((last = at), true);
  return {
    // A clock that went back (tests, or a step of the system clock) scans too.
    before: (at: number): boolean => (at - last >= CLAIM_EXPIRY_EVERY_MS || at < last ? ran(at) : false),
    after: (at: number, scannedBefore: boolean, short: boolean): boolean => (!scannedBefore && short ? ran(at) : false),
    /**
     * Given how many jobs the scan that ran expired: true when it hit CLAIM_EXPIRE_LIMIT, so more may
     * be overdue, and then the next claim scans first again, whenever it comes. Until the backlog is
     * gone a claim takes nothing from the queue after its scan: the queue's query would walk every
     * overdue job still queued (they are the oldest due) to reach the live ones.
     */
    backlog: (expired: number): boolean => {
      if (expired < CLAIM_EXPIRE_LIMIT) return false;
      last = -Infinity;
      return true;
    },
  };
}
