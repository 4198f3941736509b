import { cutText, toJobView, type JobStatus } from '@proxy/core';
import { output, table, unknownClient, when, withStore } from './admin-context.js';

/** `proxy-worker jobs [--status S] [--limit N] [--client NAME]`: the newest jobs. */
export async function runJobs(opts: { status?: JobStatus; limit: number; client?: string; json?: boolean }): Promise<void> {
  await withStore(async (store, config) => {
    const jobs = await store.listJobs({ limit: opts.limit, ...(opts.status ? { status: opts.status } : {}), ...(opts.client ? { client: opts.client } : {}) });
    output(
      Boolean(opts.json),
      jobs.map((j) => ({ client: j.client, ...toJobView(j) })),
      () =>
        jobs.length === 0
          ? `no jobs${unknownClient(opts.client, config.clients)}`
          : table(
              ['id', 'status', 'client', 'model', 'attempts', 'created', 'error'],
              jobs.map((j) => [j.id, j.status, j.client, j.model, j.attempts, when(j.createdAt), j.error ? cutText(`${j.error.code}: ${j.error.message}`, 80) : null]),
            ),
    );
  });
}
