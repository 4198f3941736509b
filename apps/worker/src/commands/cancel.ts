import { FINAL_STATUSES, isJobId, toJobView } from '@proxy/core';
import { CliError } from './cli-error.js';
import { output, withStore } from './admin-context.js';

/**
 * `proxy-worker cancel <id>`: what its client's DELETE does, for an operator who holds no client
 * key: a queued job is cancelled at once, a running one through its worker, which hears of it
 * within a second and aborts the call. One that already ended is refused, as the API refuses it.
 */
export async function runCancel(id: string, opts: { json?: boolean }): Promise<void> {
  if (!isJobId(id)) throw new CliError(`not a request id: ${id}`);
  await withStore(async (store) => {
    // The store cancels a job for its client (the API's check of ownership); here the job's own.
    const before = await store.getJob(id);
    const job = before && (await store.cancelJob(id, before.client));
    if (!job) throw new CliError(`no request ${id}`);
    // Cancelled already (by its client, or by another run of this) is no error: what was asked holds.
    if (FINAL_STATUSES.has(job.status) && job.status !== 'cancelled') throw new CliError(`request ${id} already ended as ${job.status} and cannot be cancelled`);
    const view = { ...toJobView(job), client: job.client };
    output(Boolean(opts.json), view, () =>
      job.status === 'cancelled' ? `cancelled ${id}` : `cancel requested: ${id} is ${job.status}; its worker aborts the call within a second, and the job ends as cancelled`,
    );
  });
}
