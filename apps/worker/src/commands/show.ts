import { isJobId, printableJson, toJobView } from '@proxy/core';
import { CliError } from './cli-error.js';
import { output, withStore } from './admin-context.js';

/** `proxy-worker show <id>`: one job, with its client and the request sent upstream. */
export async function runShow(id: string, opts: { json?: boolean }): Promise<void> {
  if (!isJobId(id)) throw new CliError(`not a request id: ${id}`);
  await withStore(async (store) => {
    const job = await store.getJob(id);
    if (!job) throw new CliError(`no request ${id}`);
    const view = { ...toJobView(job), client: job.client, request: job.request, ...(job.error ? { error: job.error } : {}) };
    output(Boolean(opts.json), view, () => printableJson(view));
  });
}
