import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  FINAL_STATUSES,
  WORKER_ALIVE_MS,
  describeDatabase,
  loadConfig,
  openStore,
  parseDatabaseUrl,
  readDatabaseUrl,
  type DatabaseSettings,
  type JobRecord,
  type JobStatus,
  type JobStore,
} from '@proxy/core';
import { CliError } from './cli-error.js';
import { output } from './admin-context.js';

/** Jobs read and written per round: small enough that no statement or transaction is long. */
const PAGE = 500;

export interface CopyJobsOptions {
  from: string;
  fromSchema: string;
  unfinishedOnly?: boolean;
  force?: boolean;
  json?: boolean;
}

/**
 * `proxy-worker copy-jobs --from <sqlite file | postgres url>`: the one-off move to another store.
 * Copies every job of the source into the configured store, as it is (results stay fetchable by
 * id, nonces keep deduplicating), skipping jobs the target already has, so it may be run again.
 * The source's workers must be stopped: a job they still hold would run on both sides.
 */
export async function runCopyJobs(opts: CopyJobsOptions): Promise<void> {
  const config = loadConfig();
  const source = sourceSettings(opts.from, opts.fromSchema);
  if (sameDatabase(source, config.db)) throw new CliError('the source is the configured store itself: point DATABASE_URL or PROXY_DB_PATH at the target');

  const from = await openStore(source, { setting: '--from' });
  try {
    const alive = await from.listWorkers(from.now() - WORKER_ALIVE_MS);
    if (alive.length > 0 && !opts.force) {
      throw new CliError(`${alive.length} worker(s) still use the source (${alive.map((w) => `${w.host} pid ${w.pid}`).join(', ')}): stop them first, or pass --force`);
    }
    const to = await openStore(config.db);
    try {
      const result = await copy(from, to, Boolean(opts.unfinishedOnly));
      const summary = { from: describeDatabase(source), to: describeDatabase(config.db), ...result };
      output(Boolean(opts.json), summary, () => {
        const statuses = Object.entries(result.copied_by_status)
          .map(([status, n]) => `${status} ${n}`)
          .join(', ');
        return `copied ${result.copied} job${result.copied === 1 ? '' : 's'} from ${summary.from} to ${summary.to}${statuses ? ` (${statuses})` : ''}; ${result.skipped} already there${opts.unfinishedOnly ? `, ${result.finished_left} finished left behind` : ''}`;
      });
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

async function copy(from: JobStore, to: JobStore, unfinishedOnly: boolean) {
  const copiedByStatus: Partial<Record<JobStatus, number>> = {};
  let copied = 0;
  let skipped = 0;
  let finishedLeft = 0;
  let cursor: string | null = null;
  do {
    const page: { jobs: JobRecord[]; next: string | null } = await from.exportJobs(cursor, PAGE);
    cursor = page.next;
    // The target's clock: its workers compare the leases by it.
    const now = to.now();
    const wanted = page.jobs.filter((job) => !unfinishedOnly || !FINAL_STATUSES.has(job.status));
    finishedLeft += page.jobs.length - wanted.length;
    // The source's workers are gone, so the leases they held end now: the target's workers take those
    // jobs at once under the usual rules (another attempt if any are left, else failed as worker_lost).
    const jobs = wanted.map((job) => (job.status === 'in_progress' ? { ...job, leaseUntil: Math.min(job.leaseUntil ?? now, now) } : job));
    const written = new Set(await to.importJobs(jobs));
    for (const job of jobs) {
      if (!written.has(job.id)) skipped += 1;
      else {
        copied += 1;
        copiedByStatus[job.status] = (copiedByStatus[job.status] ?? 0) + 1;
      }
    }
  } while (cursor !== null);
  return { copied, skipped, finished_left: finishedLeft, copied_by_status: copiedByStatus };
}

/** The source as store settings: a postgres:// URL, or the path of an SQLite file that must exist. */
function sourceSettings(from: string, schema: string): DatabaseSettings {
  if (/^postgres(ql)?:\/\//i.test(from)) {
    // As DATABASE_URL is read, so that the two compare alike (sameDatabase), and what the summary
    // names is where it connected.
    const read = readDatabaseUrl(from, '--from');
    if (read.note) process.stderr.write(`proxy-worker: ${read.note}\n`);
    return { url: read.url, schema, path: '', sync: 'full' };
  }
  const path = resolve(from);
  // Opening a missing file would create an empty store and copy nothing, which looks like success.
  if (!existsSync(path)) throw new CliError(`no SQLite file at ${path}`);
  return { url: null, schema, path, sync: 'full' };
}

/**
 * Whether two stores are one: the same SQLite file, or the same server's database and schema,
 * however their URLs are written (a user, a password file's password, libpq's variables, parameters).
 */
function sameDatabase(a: DatabaseSettings, b: DatabaseSettings): boolean {
  if (!a.url || !b.url) return !a.url && !b.url && a.path === b.path;
  const [x, y] = [parseDatabaseUrl(a.url), parseDatabaseUrl(b.url)];
  // pg's defaults for what a URL leaves out: localhost, 5432, the user's own database.
  const where = (p: typeof x) => [p.host || 'localhost', p.port || '5432', p.database || p.user].join(' ');
  return where(x) === where(y) && a.schema === b.schema;
}
