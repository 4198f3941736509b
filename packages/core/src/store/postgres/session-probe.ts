import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { PgClient } from './pg-client.js';

// How long the second connection's statement may be held before the probe takes it as held by a
// pool in session mode with no session free (below).
const HELD_MS = 2000;

/**
 * Refuses a way to the server that hands each transaction whichever server session is free: a pool
 * in transaction mode (PgBouncer's pool_mode = transaction, a provider's transaction pooler). The
 * store needs a session of its own for its schema and settings (set once per connection), its
 * prepared statements and its LISTEN; through such a pool each statement of its migrations ran on
 * whichever server session was free, with whatever schema that session had (seen, PgBouncer 1.18:
 * a start failing on `index "rate_limits_tat" does not exist`, and one waiting without end), and
 * the statements after them failed at random.
 *
 * One connection sets a value for its session and sits idle; a second connection reads it. Straight
 * to the server, or through a pool in session mode, a session is its connection's alone and the
 * second cannot see it. Through a pool in transaction mode the first connection's server session
 * went back to the pool when its statement ended, and the second is handed it (PgBouncer hands out
 * the session freed last) and reads the value. A pool that handed the second another session passes
 * this, and fails later with the words checkout.ts adds to such a failure.
 */
export async function assertSessionPerConnection(config: pg.ClientConfig): Promise<void> {
  const marker = randomUUID();
  const first = new PgClient(config);
  const second = new PgClient(config);
  try {
    // Connected together (a pool in transaction mode binds a server session at a statement, not at
    // a connection): the probe costs one connection's time, about 10 ms against a local server.
    await Promise.all([first.connect(), second.connect()]);
    await first.query("SELECT set_config('proxy.session_probe', $1, false)", [marker]);
    const read = second.query<{ seen: string | null }>("SELECT current_setting('proxy.session_probe', true) AS seen");
    // A pool in session mode with no session free (PgBouncer's pool of one) holds the second's
    // statement until the first lets its session go, which it does only after: a pool that binds
    // sessions to connections, so no pool in transaction mode. PgBouncer would hold it for its
    // query_wait_timeout (120 s).
    let timer: NodeJS.Timeout | undefined;
    const held = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), HELD_MS)));
    const answer = await Promise.race([read, held]).finally(() => clearTimeout(timer));
    if (answer === null) {
      read.catch(() => undefined);
      return;
    }
    if (answer.rows[0]?.seen === marker) {
      throw new Error(
        "it is reached through a pool in transaction mode (PgBouncer's pool_mode = transaction, a provider's transaction pooler): another connection's session answered, and the store needs a session of its own (its schema, settings and prepared statements, and LISTEN); point DATABASE_URL at a pool in session mode, or at the server",
      );
    }
  } finally {
    await Promise.all([first.end(), second.end()]);
  }
}
