import type pg from 'pg';
import { CLOCK_STEP_SLACK_MS, pacingBounds, steppedBack, type FailingRun, type LookSpacing, type PacingRequest, type UpstreamOutage } from '../types.js';
import type { Queryable } from './batched-writes.js';
import { withClient } from './checkout.js';

/**
 * An upstream draw is timed when it was sent, but never more than this before the server made it
 * (the draw below): a draw held up longer (behind another process's lock, a busy server) takes its
 * turn at most this far in the past, so the next call can come at most this much early.
 */
export const DRAW_CREDIT_MS = 10;

/** How far ahead of now each pacing row may stand (pacingBounds), null for a budget not set. */
type RowBounds = { pause: number; requests: number | null; tokens: number | null };

export interface UpstreamBudgetDeps {
  /** The store's queries (named, refused past a later release's migration). */
  db: Queryable;
  pool: pg.Pool;
  /** The name a statement's text is prepared under (pg-job-store.ts). */
  nameOf: (text: string) => string;
  now: () => number;
  /** Whether `now` reads the server's clock (db-clock.ts), not a clock injected by a test. */
  serverClock: boolean;
  /** The later release's migration that refuses this one's work, if one does. */
  refused: () => Error | null;
}

/**
 * The shared upstream budgets on PostgreSQL (UPSTREAM_RPM, UPSTREAM_TPM) and the fleet's pause after
 * a 429, in the `upstream_pacing` table every worker of every host draws from, the outage mark
 * (`upstream_outage`), and the run of failed calls a pass or daemon ended in (`upstream_failing`).
 */
export function createUpstreamBudget(deps: UpstreamBudgetDeps) {
  const { db, now } = deps;

  /**
   * One draw from the upstream budgets (`requests` and `tokens`: the intervals this call takes from
   * each, null for a budget not set), as one statement: the rows are locked, the wait read, and the
   * budgets moved only if nothing was due, all while the statement runs. As a transaction of its own
   * (BEGIN, lock, read, move, COMMIT) each draw held the budget rows over three round trips, and
   * the fleet's draws queued behind each other's; see the performance history.
   * The rows are locked in one order (by name): locked in the order a scan met them, two draws
   * could each hold one row and wait for the other's, which the scan of one had met in another
   * place since its update (a deadlock, seen in the suite).
   * It is timed when sent, by this host's reading of the server's clock, but never more than
   * DRAW_CREDIT_MS before the server made it (read by the server's own clock once every row is
   * locked: `made` is in the aggregate's result, computed after every locked row was read).
   * Timed only when sent, a draw held up behind another process's lock took a turn in the past,
   * and the next draw's call went out at once (the store contract's test: a lock held 1 s).
   * Timed when made, every draw lost its way to the server from each turn, and a worker that woke
   * for its turn as the last draw's wait said drew again whenever this draw reached the server
   * sooner: with four daemons of 64 slots on a budget of a turn every 13 ms, 9.2-9.8 statements a
   * call against 8.0-8.2, and 0.969-0.988 of the turns taken against 0.983-0.989 (five runs each;
   * draws took 2-34 ms from sent to made there). A store on an injected clock (tests) is timed by it.
   */
  function draw(requests: number | null, tokens: number | null, ahead: RowBounds): Promise<{ ms: number; taken: number }> {
    const refused = deps.refused();
    if (refused) return Promise.reject(refused);
    // `timed` reads the server's clock in an aggregate over the locked rows, so only once every row
    // is locked. `bounded` brings a row past its bound (pacingBounds, `ahead` of the server's time) by
    // more than CLOCK_STEP_SLACK_MS (the clock stepped back, as steppedBack says) back to it, and
    // `lowered` writes that (run whether read or not, as every data-modifying WITH is); a draw
    // (`taken`) is made only when nothing is due, so when no row was past its bound: the two never
    // move the same row. A budget not set (null) has no bound.
    const text = `WITH locked AS (
        SELECT name, tat FROM upstream_pacing ORDER BY name FOR UPDATE
      ), timed AS (
        SELECT LEAST(made, GREATEST($1::bigint, made - $5::bigint)) AS at
          FROM (SELECT CASE WHEN $4::boolean THEN (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint ELSE $1::bigint END AS made, COUNT(*)
                  FROM locked) AS aggregate
      ), bounded AS (
        SELECT l.name, l.tat AS was, CASE WHEN l.tat > t.at + b.ahead + $9::bigint THEN t.at + b.ahead ELSE l.tat END AS tat
          FROM locked AS l, timed AS t,
               LATERAL (SELECT CASE l.name WHEN 'pause' THEN $6::bigint WHEN 'requests' THEN $7::bigint WHEN 'tokens' THEN $8::bigint END AS ahead) AS b
      ), due AS (
        SELECT GREATEST(MAX(tat) FILTER (WHERE name = 'pause'),
                        MAX(tat) FILTER (WHERE name = 'requests' AND $2::bigint IS NOT NULL),
                        MAX(tat) FILTER (WHERE name = 'tokens' AND $3::bigint IS NOT NULL)) AS until
          FROM bounded
      ), wait AS (
        SELECT t.at, GREATEST(0, due.until - t.at) AS ms FROM due, timed AS t
      ), lowered AS (
        UPDATE upstream_pacing AS p SET tat = b.tat
          FROM bounded AS b
         WHERE b.name = p.name AND b.tat < b.was
        RETURNING 1
      ), taken AS (
        UPDATE upstream_pacing AS p
           SET tat = GREATEST(b.tat, wait.at) + CASE p.name WHEN 'requests' THEN $2::bigint ELSE $3::bigint END
          FROM bounded AS b, wait
         WHERE wait.ms = 0 AND b.name = p.name
           AND ((p.name = 'requests' AND $2::bigint IS NOT NULL) OR (p.name = 'tokens' AND $3::bigint IS NOT NULL))
        RETURNING 1
      )
      SELECT ms, (SELECT COUNT(*) FROM taken)::int AS taken FROM wait`;
    return withClient(deps.pool, async (client) => {
      const { rows } = await client.query<{ ms: number; taken: number }>({
        name: deps.nameOf(text),
        text,
        values: [now(), requests, tokens, deps.serverClock, DRAW_CREDIT_MS, ahead.pause, ahead.requests, ahead.tokens, CLOCK_STEP_SLACK_MS],
      });
      return rows[0]!;
    });
  }

  return {
    /** How long the call must wait (0: it may go now, and its share is drawn). */
    async acquire(request: PacingRequest): Promise<number> {
      if (!request.rpm && !request.tpm) {
        // No budgets: only a fleet-wide pause can hold the call, and one read answers that; a pause
        // past its bound (the clock stepped back) is brought back to it by a draw below.
        const { rows } = await db.query<{ tat: number }>("SELECT tat FROM upstream_pacing WHERE name = 'pause'");
        const [until, at] = [rows[0]?.tat ?? 0, now()];
        if (!steppedBack(until, pacingBounds(request, at).pause)) return Math.max(0, until - at);
      }
      const requests = request.rpm ? Math.ceil(60_000 / request.rpm) : null;
      const tokens = request.tpm ? Math.ceil((request.tokens * 60_000) / request.tpm) : null;
      // How far ahead of the server's time each row may stand (a budget not set: no bound, null).
      const bounds = pacingBounds(request, 0);
      const ahead = { pause: bounds.pause, requests: request.rpm ? bounds.requests : null, tokens: request.tpm ? bounds.tokens : null };
      for (;;) {
        const drawn = await draw(requests, tokens, ahead);
        // Every budget drawn from moved, or none was due: the draw is whole.
        if (drawn.ms > 0 || drawn.taken === Number(requests !== null) + Number(tokens !== null)) return drawn.ms;
        // A budget's row did not exist yet (the schema's first draw), so nothing was there to lock or
        // move: the rows are made and the draw made again. Two first draws at once both come here,
        // and the second is then held by the first's lock.
        await db.query(`INSERT INTO upstream_pacing (name, tat) VALUES ('requests', 0), ('tokens', 0), ('pause', 0) ON CONFLICT (name) DO NOTHING`);
      }
    },

    /** Since when a worker has found the upstream down (upstream-outage.ts), and why; or null. */
    async down(): Promise<UpstreamOutage | null> {
      const { rows } = await db.query<UpstreamOutage>('SELECT since, reason FROM upstream_outage WHERE id = 1');
      return rows[0] ?? null;
    },

    /** Marks the upstream down (the outage's first mark stands), or up again (null): JobStore.markUpstreamDown. */
    async markDown(mark: (UpstreamOutage & { lookAt: number }) | null): Promise<void> {
      if (mark === null) await db.query('DELETE FROM upstream_outage');
      else await db.query('INSERT INTO upstream_outage (id, since, look_at, reason) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING', [mark.since, mark.lookAt, mark.reason]);
    },

    /**
     * JobStore.takeUpstreamLook, as one statement: the look is taken when due (or past its bound,
     * CLOCK_STEP_SLACK_MS beyond a spacing's most: written before the clock stepped back), the next
     * set one spacing on. `look_at` is read from the statement's snapshot, before the update: not
     * taken though due there, another worker took it meanwhile (this update waited for its lock, then
     * found the new time), and this one asks again a moment later.
     */
    async takeLook(at: number, spacing: LookSpacing): Promise<number> {
      const { rows } = await db.query<{ taken: number; look_at: number | null }>(
        `WITH taken AS (
           UPDATE upstream_outage SET look_at = $1 + LEAST($3::bigint, GREATEST($2::bigint, $1 - since))
            WHERE id = 1 AND (look_at <= $1 OR look_at > $1 + $3::bigint + $4::bigint)
           RETURNING 1
         )
         SELECT (SELECT COUNT(*) FROM taken)::int AS taken, (SELECT look_at FROM upstream_outage WHERE id = 1) AS look_at`,
        [at, spacing.minMs, spacing.maxMs, CLOCK_STEP_SLACK_MS],
      );
      const { taken, look_at: lookAt } = rows[0]!;
      if (taken === 1 || lookAt === null) return 0;
      return Math.max(1, lookAt - at);
    },

    /** JobStore.failingRun. */
    async failingRun(): Promise<FailingRun | null> {
      const { rows } = await db.query<FailingRun>('SELECT calls, since, ended_at AS "endedAt" FROM upstream_failing WHERE id = 1');
      return rows[0] ?? null;
    },

    /** JobStore.setFailingRun. */
    async setFailingRun(run: FailingRun | null): Promise<void> {
      if (run === null) await db.query('DELETE FROM upstream_failing');
      else
        await db.query(
          'INSERT INTO upstream_failing (id, calls, since, ended_at) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET calls = excluded.calls, since = excluded.since, ended_at = excluded.ended_at',
          [run.calls, run.since, run.endedAt],
        );
    },

    /** Every worker holds off until `until`; a shorter pause never cuts a longer one short. */
    async pause(until: number): Promise<void> {
      await db.query(
        `INSERT INTO upstream_pacing (name, tat) VALUES ('pause', $1)
         ON CONFLICT (name) DO UPDATE SET tat = GREATEST(upstream_pacing.tat, excluded.tat)`,
        [until],
      );
    },
  };
}
