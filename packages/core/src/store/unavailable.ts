import { LATER_RELEASE_CODE } from './migration-files.js';

/**
 * Whether an error thrown by a store means the database cannot serve now (a restart, a failover, a
 * full disk, a lock held too long), rather than a fault in the request or in our code. The API
 * answers those 503 `unavailable` with Retry-After, which clients retry, instead of 500 `internal`,
 * which they must not; a retried create with the same nonce finds the job if the first one was
 * stored after all.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || UNAVAILABLE_CODE_PREFIXES.some((p) => code.startsWith(p)))) return true;
    // pg's own messages for a connection that ended or could not be made in time carry no code, nor
    // does checkout.ts's for one it ended after the query timeout.
    if (/^Connection terminated|^timeout exceeded when trying to connect|connection error and is not queryable|^Query read timeout/.test(e.message)) return true;
  }
  return false;
}

// Codes grouped by what fails, a group a line (the formatter would put one a line).
// prettier-ignore
const UNAVAILABLE_CODES = new Set([
  // The network, reaching PostgreSQL.
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE',
  // This machine, opening a connection to PostgreSQL: out of descriptors, ports or socket buffers
  // (they free as other connections close).
  'EMFILE', 'ENFILE', 'EADDRNOTAVAIL', 'ENOBUFS',
  // The disk under SQLite's WAL refusing a flush (wal-sync.ts keeps it as the cause).
  'EIO', 'ENOSPC', 'EDQUOT', 'EROFS',
  // PostgreSQL: shut down by an administrator, crashed, still starting; too many connections; a
  // read-only server (a standby, as after a failover that has not reached the clients yet); a lock
  // held elsewhere past lock_timeout; a session ended for sitting in a transaction too long (its
  // process was frozen or cut off meanwhile: nothing of the transaction was written); a statement
  // the server cancelled (a statement_timeout an operator set, pg_cancel_backend: the store cancels
  // none itself), which a retry may well get through.
  '57P01', '57P02', '57P03', '53300', '25006', '55P03', '25P03', '57014',
  // PostgreSQL 17's transaction_timeout, which ends the session as 25P03 does.
  '25P04',
  // A later release migrated the database under this one (migration-files.ts): this program stops,
  // and the release that migrated it answers the retry.
  LATER_RELEASE_CODE,
]);

// prettier-ignore
const UNAVAILABLE_CODE_PREFIXES = [
  // PostgreSQL connection exceptions (class 08); disk full and out of memory (53100, 53200).
  '08', '531', '532',
  // PostgreSQL refusing a new connection's login (class 28: a password rotated under running
  // programs, pg_hba.conf changed; and pg-client.ts's refusals): nothing in the request is at
  // fault, and its retry is answered once the login works again. At start it stops the program,
  // as any failure to connect does.
  '28',
  // SQLite: the write lock held past busy_timeout, I/O errors, a full disk, a file it cannot open or write.
  'SQLITE_BUSY', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_CANTOPEN', 'SQLITE_READONLY',
];
