import type { Logger } from '../logger.js';
import { isDatabaseUnavailable } from '../store/unavailable.js';
import type { JobStore } from '../store/types.js';
import type { Shutdown } from './process-job.js';

/** The store writes that record how an attempt ended. */
type OutcomeWrites = Pick<JobStore, 'completeJob' | 'finishJob' | 'retryJob' | 'releaseJob'>;

/** The longest pause between two tries of an outcome write. */
const MAX_PAUSE_MS = 2000;

/**
 * The store, with its outcome writes tried again while the database cannot serve (a PostgreSQL
 * restart or failover, SQLite's lock held past busy_timeout). An answer arrives after the upstream
 * was paid for it: given up at once, it was lost, and the job was called again once its lease
 * lapsed (measured: 8 jobs in flight across a 3 s PostgreSQL restart took 16 calls). Held, it is
 * written when the database is back. Tried for at most `leaseMs`: by then the lease has lapsed and
 * another worker may hold the job, whose token our write no longer matches (so it writes nothing).
 * The hard stop (`shutdown` aborted after the grace period) ends the tries.
 */
export function retryOutcomeWrites<S extends JobStore>(store: S, options: { leaseMs: number; now: () => number; shutdown: Shutdown; logger: Pick<Logger, 'warn'> }): S {
  const { leaseMs, now, shutdown, logger } = options;
  function retrying<A extends unknown[], R>(name: keyof OutcomeWrites, write: (...args: A) => Promise<R>) {
    return async (...args: A): Promise<R> => {
      const started = now();
      for (let attempt = 0; ; attempt++) {
        try {
          return await write(...args);
        } catch (err) {
          if (!isDatabaseUnavailable(err) || shutdown.aborted || now() - started >= leaseMs) throw err;
          if (attempt === 0) logger.warn('the database cannot take an outcome now; holding it and trying again', { write: name, job_id: args[0], err });
          await new Promise((resolve) => setTimeout(resolve, Math.min(MAX_PAUSE_MS, 100 * 2 ** attempt)));
        }
      }
    };
  }
  // Everything else is the store's own, reached through the prototype (whatever object it is).
  const overrides: OutcomeWrites = {
    completeJob: retrying('completeJob', store.completeJob.bind(store)),
    finishJob: retrying('finishJob', store.finishJob.bind(store)),
    retryJob: retrying('retryJob', store.retryJob.bind(store)),
    releaseJob: retrying('releaseJob', store.releaseJob.bind(store)),
  };
  return Object.assign(Object.create(store) as S, overrides);
}
