import { pacingBounds, steppedBack, type FailingRun, type LookSpacing, type PacingRequest, type UpstreamOutage } from '../types.js';
import type { Db } from './open-database.js';

const PACING_ROWS = ['pause', 'requests', 'tokens'] as const;

/**
 * The shared upstream budgets on SQLite (UPSTREAM_RPM, UPSTREAM_TPM) and the fleet's pause after a
 * 429, in the jobs file's `upstream_pacing` table, which every worker on the machine reads, and the
 * outage mark (`upstream_outage`), and the run of failed calls a pass or daemon ended in
 * (`upstream_failing`). Each function that writes runs inside the caller's write transaction;
 * `pausedUntil`, `down` and `failingRun` are reads.
 */
export function createUpstreamBudget(db: Db) {
  const sql = {
    pacing: db.prepare<[], { name: 'requests' | 'tokens' | 'pause'; tat: number }>('SELECT name, tat FROM upstream_pacing'),
    setPacing: db.prepare(`
      INSERT INTO upstream_pacing (name, tat) VALUES (@name, @tat)
      ON CONFLICT (name) DO UPDATE SET tat = excluded.tat`),
    pauseUntil: db.prepare<[], number | undefined>("SELECT tat FROM upstream_pacing WHERE name = 'pause'").pluck(),
    // A shorter pause never cuts a longer one short.
    pause: db.prepare(`
      INSERT INTO upstream_pacing (name, tat) VALUES ('pause', @tat)
      ON CONFLICT (name) DO UPDATE SET tat = MAX(tat, excluded.tat)`),
    // The outage's first mark stands: a worker that finds it down later marks nothing new.
    markDown: db.prepare('INSERT INTO upstream_outage (id, since, look_at, reason) VALUES (1, @since, @look_at, @reason) ON CONFLICT (id) DO NOTHING'),
    markUp: db.prepare('DELETE FROM upstream_outage'),
    outage: db.prepare<[], { since: number; look_at: number; reason: string } | undefined>('SELECT since, look_at, reason FROM upstream_outage WHERE id = 1'),
    // The next look one spacing on: the outage's length so far, within the spacing's bounds.
    takeLook: db.prepare('UPDATE upstream_outage SET look_at = @at + MIN(@max_ms, MAX(@min_ms, @at - since)) WHERE id = 1'),
    failing: db.prepare<[], FailingRun | undefined>('SELECT calls, since, ended_at AS endedAt FROM upstream_failing WHERE id = 1'),
    setFailing: db.prepare(
      'INSERT INTO upstream_failing (id, calls, since, ended_at) VALUES (1, @calls, @since, @endedAt) ON CONFLICT (id) DO UPDATE SET calls = excluded.calls, since = excluded.since, ended_at = excluded.ended_at',
    ),
    clearFailing: db.prepare('DELETE FROM upstream_failing'),
  };
  return {
    /** How long the call must wait (0: it may go now, and its share is drawn); the read and the draw are one transaction. */
    acquire(request: PacingRequest, at: number): number {
      const tat = { requests: 0, tokens: 0, pause: 0 };
      for (const row of sql.pacing.all()) tat[row.name] = row.tat;
      // A row past its bound was written before the clock stepped back (pacingBounds).
      const bounds = pacingBounds(request, at);
      for (const name of PACING_ROWS) if (steppedBack(tat[name], bounds[name])) sql.setPacing.run({ name, tat: (tat[name] = bounds[name]) });
      const wait = Math.max(tat.pause - at, request.rpm ? tat.requests - at : 0, request.tpm ? tat.tokens - at : 0, 0);
      if (wait > 0) return wait;
      if (request.rpm) sql.setPacing.run({ name: 'requests', tat: Math.max(tat.requests, at) + Math.ceil(60_000 / request.rpm) });
      if (request.tpm) sql.setPacing.run({ name: 'tokens', tat: Math.max(tat.tokens, at) + Math.ceil((request.tokens * 60_000) / request.tpm) });
      return 0;
    },
    /** Until when every worker holds off (ms since the epoch), if a pause was ever set. */
    pausedUntil(): number | undefined {
      return sql.pauseUntil.get();
    },
    pause(until: number): void {
      sql.pause.run({ tat: until });
    },
    /** Since when a worker has found the upstream down (upstream-outage.ts), and why; or null. */
    down(): UpstreamOutage | null {
      const row = sql.outage.get();
      return row ? { since: row.since, reason: row.reason } : null;
    },
    /** Marks the upstream down, or up again (null): JobStore.markUpstreamDown. */
    markDown(mark: (UpstreamOutage & { lookAt: number }) | null): void {
      if (mark === null) sql.markUp.run();
      else sql.markDown.run({ since: mark.since, look_at: mark.lookAt, reason: mark.reason });
    },
    /** JobStore.failingRun. */
    failingRun(): FailingRun | null {
      return sql.failing.get() ?? null;
    },
    /** JobStore.setFailingRun, inside the caller's write transaction. */
    setFailingRun(run: FailingRun | null): void {
      if (run === null) sql.clearFailing.run();
      else sql.setFailing.run(run);
    },
    /** JobStore.takeUpstreamLook, inside the caller's write transaction. */
    takeLook(at: number, spacing: LookSpacing): number {
      const row = sql.outage.get();
      if (!row) return 0;
      if (row.look_at > at && !steppedBack(row.look_at, at + spacing.maxMs)) return row.look_at - at;
      sql.takeLook.run({ at, min_ms: spacing.minMs, max_ms: spacing.maxMs });
      return 0;
    },
  };
}
