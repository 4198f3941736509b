import type pg from 'pg';
import { isDatabaseUnavailable } from '../unavailable.js';

/**
 * Runs `fn` on a connection checked out of the pool, and gives it back. While a connection is
 * checked out, the pool no longer listens for its errors: one the server closes between two
 * queries (a restart, a failover) emitted 'error' on the client with no listener, and that ended
 * the process. Here the error is kept, the next query fails with it on its own, and the broken
 * connection is destroyed rather than returned to the pool.
 */
export async function withClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (err: Error) => (broken = err);
  client.on('error', onError);
  try {
    return await fn(client);
  } catch (err) {
    if (!broken && isDatabaseUnavailable(err)) broken = err as Error;
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}
