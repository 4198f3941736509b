import type pg from 'pg';
import { isDatabaseUnavailable } from '../unavailable.js';

/**
 * Runs `fn` on a connection checked out of the pool, and gives it back. While a connection is
 * checked out, the pool no longer listens for its errors: one the server closes between two
 * queries (a restart, a failover) emitted 'error' on the client with no listener, and that ended
 * the process. Here the error is kept, the next query fails with it on its own, and the broken
 * connection is destroyed rather than returned to the pool.
 *
 * A restart or a failover closes every idle connection at once, and the pool learns of it only when
 * its event loop next reads their sockets: a busy API handed such a connection to its next request,
 * which failed with 503 although the server was back. So when a connection that had sat idle in the
 * pool turns out closed, `fn` runs again on another; each retry destroys one such connection, so
 * there are at most as many as the pool holds. A fresh connection that fails is not retried: that is
 * an outage, answered as one. Running `fn` twice is safe here because every write of the store is
 * one a repeat leaves as it was (a create keyed by its nonce, an ending or a retry by its lease
 * token and status) or, for a rate-limit draw, errs towards limiting. The one write that is not: a
 * claim whose commit went through just as the server closed the connection, so that its answer was
 * lost, is claimed afresh; the jobs the lost answer held wait out their lease, as a dead worker's do.
 */
export async function withClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const watchdog = watchdogs.get(pool);
  for (;;) {
    const client = await pool.connect();
    const wasIdle = seen.has(client);
    seen.add(client);
    let broken: Error | undefined;
    const onError = (err: Error) => (broken = err);
    client.on('error', onError);
    watchdog?.checkouts.set(client, performance.now());
    try {
      return await fn(client);
    } catch (err) {
      if (watchdog?.overdue.has(client)) {
        // Not run again: another connection may be as dead, and each would take as long to tell.
        broken = new Error(`Query read timeout: PostgreSQL did not answer in ${watchdog.timeoutMs} ms`, { cause: err });
        throw broken;
      }
      if (!broken && isDatabaseUnavailable(err)) broken = err as Error;
      if (wasIdle && planChanged(err)) {
        // Its named statements were prepared against the tables as they were: the connection goes,
        // and the statement runs on another. As for a closed one, each retry destroys one connection
        // used before; a fresh one prepares the statement anew, so fails this way only in a race.
        broken = err as Error;
        continue;
      }
      if (!(wasIdle && closedByServer(err))) throw sessionLost(err) ?? err;
      // Told as the pool tells of an idle connection it saw close: this one closed while idle too.
      pool.emit('error', err, client);
    } finally {
      watchdog?.checkouts.delete(client);
      client.off('error', onError);
      client.release(broken);
    }
  }
}

/** The connections this process has used before: one checked out again comes from the idle pool. */
const seen = new WeakSet<pg.PoolClient>();

interface Watchdog {
  timeoutMs: number;
  /** Connections checked out now, and since when (performance.now()). */
  checkouts: Map<pg.PoolClient, number>;
  /** Connections ended for taking too long: their statement fails as a timeout. */
  overdue: WeakSet<pg.PoolClient>;
}

const watchdogs = new WeakMap<pg.Pool, Watchdog>();

/**
 * Ends any connection of `pool` that `withClient` has held for longer than `timeoutMs`: what ran on
 * it fails with "Query read timeout" (unavailable), and the connection is destroyed. A connection
 * can die without an error reaching either end (the server's host gone, a NAT or firewall that
 * forgot it); a statement sent on it then waits for TCP to give up on its retransmissions, about 15
 * minutes under Linux's defaults. One timer looks over every checkout, a few times per timeout:
 * pg's own `query_timeout` sets a timer for each statement, which cost the worker on PostgreSQL
 * 322-360 µs of CPU a job against 276-314 without (four alternating pinned pairs; about 5 µs a
 * statement), where with this it used 287-304 against 310-323 (two pairs). Returns the function
 * that stops it.
 */
export function timeCheckouts(pool: pg.Pool, timeoutMs: number): () => void {
  const watchdog: Watchdog = { timeoutMs, checkouts: new Map(), overdue: new WeakSet() };
  watchdogs.set(pool, watchdog);
  const timer = setInterval(
    () => {
      const tooOld = performance.now() - timeoutMs;
      for (const [client, since] of watchdog.checkouts) {
        if (since > tooOld) continue;
        watchdog.checkouts.delete(client);
        watchdog.overdue.add(client);
        // With a statement under way, pg destroys the socket rather than say goodbye on it.
        client.end().catch(() => undefined);
      }
    },
    Math.min(1000, Math.ceil(timeoutMs / 4)),
  );
  timer.unref();
  return () => {
    clearInterval(timer);
    watchdogs.delete(pool);
  };
}

/**
 * Whether `err` says the server end of the connection was gone: terminated by an administrator or a
 * shutdown (57P01, 57P02), the connection failed (08006) or no longer exists (08003), or the socket
 * closed or reset under pg. Not a server that refuses new connections (57P03, ECONNREFUSED): that
 * comes from `pool.connect()`, outside the retry.
 */
function closedByServer(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (code === '57P01' || code === '57P02' || code === '08006' || code === '08003' || code === 'ECONNRESET' || code === 'EPIPE') return true;
  return err instanceof Error && /^Connection terminated|connection error and is not queryable/.test(err.message);
}

/**
 * Whether a named statement failed because a table it reads changed shape since the connection
 * prepared it (a column added by a newer version's migration while this process runs): PostgreSQL
 * re-plans it, but will not change the columns a prepared `SELECT *` or `RETURNING *` answers with.
 * The statement did nothing, so running it again elsewhere is safe.
 */
function planChanged(err: unknown): boolean {
  return (err as { code?: unknown })?.code === '0A000' && err instanceof Error && /cached plan must not change result type/.test(err.message);
}

/**
 * A statement that failed as one does when a pool between gives each transaction whichever server
 * session is free (PgBouncer's pool_mode = transaction, a provider's transaction pooler): a named
 * statement this connection prepared that the server session does not know (26000), or a table of
 * the store's it cannot see, the search_path its session set being on another (42P01). PostgreSQL's
 * words alone sent an operator looking at the statements; the same error with its code, told what
 * to change. Null for any other error.
 */
function sessionLost(err: unknown): Error | null {
  const code = (err as { code?: unknown })?.code;
  if ((code !== '26000' && code !== '42P01') || !(err instanceof Error)) return null;
  const told = new Error(
    `${err.message}: DATABASE_URL may reach PostgreSQL through a pool in transaction mode (PgBouncer's pool_mode = transaction, a provider's transaction pooler), where a session's prepared statements and settings do not last: point it at a pool in session mode, or at the server`,
    { cause: err },
  );
  return Object.assign(told, { code });
}

/**
 * One named statement on a pooled connection, retried as `withClient` says; use it in place of
 * `pool.query`. Each connection prepares it the first time it runs it and afterwards only binds and
 * executes it (see pg-job-store.ts).
 */
export function query<R extends pg.QueryResultRow = pg.QueryResultRow>(pool: pg.Pool, name: string, text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
  return withClient(pool, (client) => client.query<R>({ name, text, values }));
}
