/**
 * How often a claim marks overdue queued jobs expired while claims come back full. At full speed
 * the scan ran with every claim (2% of the SQLite worker's time; a round trip on PostgreSQL). Both
 * stores' claims skip overdue jobs whether or not the scan ran, and a claim that comes back short
 * always scans, so an idle worker marks them at once and none spins on them: this only bounds how
 * long a busy system may still show an overdue job as "queued".
 */
export const CLAIM_EXPIRY_EVERY_MS = 250;

/** Remembers when a claim last scanned; `due(at)` says whether this one should. */
export function createExpirySpacing() {
  let last = -Infinity;
  return {
    // A clock that went back (tests, or a step of the system clock) scans too.
    due: (at: number) => at - last >= CLAIM_EXPIRY_EVERY_MS || at < last,
    ran: (at: number) => void (last = at),
  };
}
