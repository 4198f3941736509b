import { DatabaseInUseError, loadConfig, restoreSqliteFile } from '@proxy/core';
import { CliError } from './cli-error.js';
import { output } from './admin-context.js';

/**
 * `proxy-worker restore <backup>`: puts a backup in place of the SQLite file, with the API and the
 * workers stopped. The file it replaces is kept beside it.
 */
export async function runRestore(backup: string, opts: { force?: boolean; json?: boolean }): Promise<void> {
  const config = loadConfig();
  if (config.db.url) throw new CliError('restore replaces the SQLite file; on PostgreSQL restore with pg_restore or psql (see README, Scaling out)');
  let report;
  try {
    report = restoreSqliteFile(config.db.path, backup, { force: Boolean(opts.force) });
  } catch (err) {
    if (err instanceof DatabaseInUseError) throw new CliError(`restore refused, nothing was changed: ${err.message}`);
    throw new CliError(`restore of ${backup} to ${config.db.path} failed, nothing was changed: ${(err as Error).message}`);
  }
  output(Boolean(opts.json), report, () => {
    const jobs = report.jobs === null ? '' : `${report.jobs} job${report.jobs === 1 ? '' : 's'}, `;
    const kept = report.kept ? `; the file it replaced is kept as ${report.kept}` : '';
    return `restored ${report.restored} from ${report.from} (${jobs}${(report.bytes / 1024 / 1024).toFixed(1)} MB, integrity checked) in ${(report.ms / 1000).toFixed(1)} s${kept}`;
  });
}
