/**
 * How often a claim marks overdue queued jobs expired while claims come back full. At full speed
 * the scan ran with every claim (2% of the SQLite worker's time; a round trip on PostgreSQL). Both
 * stores' claims skip overdue jobs whether or not the scan ran, and a claim that comes back short
 * always scans, so an idle worker marks them at once and none spins on them: this only bounds how
 * long a busy system may still show an overdue job as "queued".
 */
export const CLAIM_EXPIRY_EVERY_MS = 250;

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
  };
}
