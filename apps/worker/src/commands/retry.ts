import { isJobId } from '@proxy/core';
import { CliError } from './cli-error.js';
import { listed, output, withStore } from './admin-context.js';

/** `proxy-worker retry <id> | --all-failed`: puts failed (or expired) jobs back in the queue (the CLI checks it was given one of the two). */
export async function runRetry(id: string | undefined, opts: { allFailed?: boolean; json?: boolean }): Promise<void> {
  if (id && !isJobId(id)) throw new CliError(`not a request id: ${id}`);
  await withStore(async (store) => {
    const requeued = await store.requeueJobs(id ? [id] : 'all-failed');
    if (id && requeued.length === 0) {
      // Read after the requeue, not before: a job that failed in between is put back, not refused.
      const job = await store.getJob(id);
      throw new CliError(job ? `request ${id} is ${job.status}; only a failed or expired job goes back in the queue` : `no request ${id}`);
    }
    output(Boolean(opts.json), { requeued }, () => `requeued ${requeued.length} job${requeued.length === 1 ? '' : 's'}${listed(requeued)}`);
  });
}
