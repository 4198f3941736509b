import { FINAL_STATUSES, cancelRefusal, isJobId, toJobView, type Config, type JobRecord, type JobStore } from '@proxy/core';
import { CliError } from './cli-error.js';
import { listed, output, unknownClient, withStore } from './admin-context.js';

/** How many of a client's jobs one page lists and cancels together (one commit on SQLite). */
const PAGE = 500;
/** More than every worker's slots together. */
const RUNNING_MAX = 100_000;

/**
 * `proxy-worker cancel <id> | --client NAME`: what a client's DELETE does, for an operator who holds
 * no client key: a queued job is cancelled at once, a running one through its worker, which hears of
 * it within a second and aborts the call; one cancelled already is no error. One that ended
 * otherwise (completed, failed, expired) is refused, as the API refuses it.
 * With --client, every job of that client unfinished when it runs (a runaway script's backlog,
 * which would otherwise spend the upstream's budget); the CLI checks it was given one of the two.
 */
export async function runCancel(id: string | undefined, opts: { client?: string; json?: boolean }): Promise<void> {
  if (id !== undefined && !isJobId(id)) throw new CliError(`not a request id: ${id}`);
  await withStore(async (store, config) => {
    if (id === undefined) return cancelClient(store, opts.client as string, Boolean(opts.json), config);
    // The store cancels a job for its client (the API's check of ownership); here the job's own.
    const before = await store.getJob(id);
    const job = before && (await store.cancelJob(id, before.client));
    if (!job) throw new CliError(`no request ${id}`);
    // Cancelled already (by its client, or by another run of this) is what was asked, as in the API.
    const why = cancelRefusal(job.status);
    if (why) throw new CliError(`request ${id} ${why}`);
    const view = { ...toJobView(job), client: job.client };
    output(Boolean(opts.json), view, () =>
      job.status === 'cancelled' ? `cancelled ${id}` : `cancel requested: ${id} is ${job.status}; its worker aborts the call within a second, and the job ends as cancelled`,
    );
  });
}

async function cancelClient(store: JobStore, client: string, json: boolean, config: Config): Promise<void> {
  const cancelled: string[] = [];
  const requested: string[] = [];
  const cancel = async (jobs: readonly JobRecord[]) => {
    for (const job of await Promise.all(jobs.map((j) => store.cancelJob(j.id, client)))) {
      if (job?.status === 'cancelled') cancelled.push(job.id);
      else if (job && !FINAL_STATUSES.has(job.status)) requested.push(job.id);
    }
  };
  // Queued jobs page by page, each page's cancels together: a cancelled job leaves the queue, so
  // the next page lists the ones after it. One a worker claimed meanwhile is asked to stop instead;
  // a page of jobs seen before (none left the queue) ends the loop.
  const seen = new Set<string>();
  for (;;) {
    const page = (await store.listJobs({ status: 'queued', client, limit: PAGE })).filter((j) => !seen.has(j.id));
    if (page.length === 0) break;
    for (const j of page) seen.add(j.id);
    await cancel(page);
  }
  // Running jobs stay running until their workers stop, so they are listed once, whole: as many as
  // the workers' slots, not a backlog.
  await cancel((await store.listJobs({ status: 'in_progress', client, limit: RUNNING_MAX })).filter((j) => !seen.has(j.id)));
  output(json, { cancelled, cancel_requested: requested }, () =>
    cancelled.length + requested.length === 0
      ? `no unfinished jobs of client ${client}${unknownClient(client, config.clients)}`
      : [
          `cancelled ${cancelled.length} queued job${cancelled.length === 1 ? '' : 's'} of client ${client}${listed(cancelled)}`,
          ...(requested.length
            ? [`cancel requested for ${requested.length} running job${requested.length === 1 ? '' : 's'}, which their workers abort within a second${listed(requested)}`]
            : []),
        ].join('\n'),
  );
}
