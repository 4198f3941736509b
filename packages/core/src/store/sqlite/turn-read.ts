import type { Db } from './open-database.js';

/** One read transaction for the point reads of an event-loop turn; see createTurnRead. */
export interface TurnRead {
  /** Before a read: opens the turn's read transaction unless one is open (or any transaction). */
  begin(): void;
  /** Ends the turn's read transaction, if open; every writer of the connection calls it first. */
  end(): void;
}

/**
 * The lookups of one event-loop turn share a read transaction, ended when the turn's I/O is done
 * (setImmediate). A statement outside a transaction takes and drops SQLite's WAL read lock and looks
 * for the -wal file each time (an fcntl pair and a stat a read). Measured under the bench's lookup
 * load (profile.ts, three alternating pairs, AMD EPYC): 65–74 µs of the API's CPU a lookup against
 * 77–89 before, 13–15 of it in the kernel against 17–19, 13,671–14,453 lookups a second against
 * 11,327–13,160. The instructions counted in user space were the same (243,583 and 242,983 in a
 * draft), so what it saves is the system calls and what they cost around them; earlier sessions,
 * timing reads in-process, had put the saving at 4 µs and left it.
 *
 * The rule it brings: nothing may write on the connection while the read is open. A write begun
 * inside it would join it (better-sqlite3 nests a transaction as a savepoint) and be committed with
 * it, outside the write queue and its flush to disk. So every writer of the connection calls `end()`
 * first: the write queue before each flush, the checkpoint, close. A read a turn later sees what was
 * committed since; reads in the same turn see what was there at its first read, as if they had all
 * come then.
 */
export function createTurnRead(db: Db): TurnRead {
  let open = false;
  const end = () => {
    if (!open) return;
    open = false;
    if (!db.open || !db.inTransaction) return;
    try {
      db.exec('COMMIT');
    } catch {
      // A read-only transaction has nothing to lose: ended either way, and never thrown from here,
      // where nothing would catch it.
      try {
        if (db.inTransaction) db.exec('ROLLBACK');
      } catch {
        // The connection failed; its next statement says so.
      }
    }
  };
  return {
    begin() {
      if (open || db.inTransaction) return;
      db.exec('BEGIN');
      open = true;
      setImmediate(end);
    },
    end,
  };
}
