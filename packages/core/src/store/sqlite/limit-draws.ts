import { steppedBack, type RateCheck, type RateDecision } from '../types.js';
import type { Db } from './open-database.js';
import { createWriteQueue, type WriteQueueHooks } from './write-queue.js';

/** The rate limiter's draws on SQLite, in the limits file beside the jobs file (sqlite-job-store.ts). */
export interface LimitDraws {
  /** Draws every budget in `checks` at `at`, or none: each decision says whether its budget allowed it. */
  consume(checks: readonly RateCheck[], at: number): Promise<RateDecision[]>;
  /** Deletes the budgets that are full again at `at`; how many. */
  purge(at: number): Promise<number>;
  /** Resolves once every draw queued has been committed. */
  drain(): Promise<void>;
}

/**
 * GCRA over the limits file: a request is allowed when its budget's tat is at most `tolerance`
 * ahead of now. Draws run in the limits file's own write queue, so the draws of one event-loop turn
 * share one transaction. Within it, each budget's row is read once and written once, at commit: a
 * turn's requests mostly draw from the same few budgets (one client, one address behind nginx), and
 * each is decided against the tat the draws before it in the turn left, exactly as row by row.
 * `guards` refuse a transaction as the jobs file's writes are refused (the file moved, a later
 * release's migration).
 */
export function createLimitDraws(limitsDb: Db, guards: Pick<WriteQueueHooks, 'check' | 'begin'>): LimitDraws {
  const limits = {
    get: limitsDb.prepare<[string], number>('SELECT tat FROM rate_limits WHERE key = ?').pluck(),
    set: limitsDb.prepare<[string, number]>('INSERT INTO rate_limits (key, tat) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET tat = excluded.tat'),
    purge: limitsDb.prepare<[number]>('DELETE FROM rate_limits WHERE tat < ?'),
  };
  const drawn = new Map<string, number>();
  const consume = (checks: readonly RateCheck[], at: number): RateDecision[] => {
    const decisions = checks.map((check) => {
      const stored = drawn.get(check.key) ?? limits.get.get(check.key) ?? at;
      // A budget is at most spent whole: a draw leaves its tat at most its tolerance and one interval
      // ahead. Further ahead (by more than CLOCK_STEP_SLACK_MS, as two readings of a clock may
      // differ), the clock stepped back since (a clock corrected, a machine restored from a
      // snapshot), and the budget would refuse for as long as the step: it is taken as spent whole
      // instead, and kept so, refused or not, so that it fills again as the clock now runs.
      const full = at + check.toleranceMs + check.intervalMs;
      const stepped = steppedBack(stored, full);
      if (stepped) drawn.set(check.key, full);
      const tat = Math.max(stepped ? full : stored, at);
      return tat - at <= check.toleranceMs ? { allowed: true, tat: tat + check.intervalMs } : { allowed: false, tat };
    });
    if (decisions.every((d) => d.allowed)) checks.forEach((check, i) => drawn.set(check.key, (decisions[i] as RateDecision).tat));
    return decisions;
  };
  const writes = createWriteQueue(limitsDb, {
    ...guards,
    beforeCommit() {
      for (const [key, tat] of drawn) limits.set.run(key, tat);
      drawn.clear();
    },
    afterRollback() {
      drawn.clear();
    },
  });
  return {
    consume: (checks, at) => writes.run(() => consume(checks, at)),
    purge: (at) => writes.run(() => limits.purge.run(at).changes),
    drain: () => writes.drain(),
  };
}
