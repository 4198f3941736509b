import { backupSqliteFile, loadConfig } from '@proxy/core';
import { CliError } from './cli-error.js';
import { output } from './admin-context.js';

/**
 * `proxy-worker backup <file>`: a consistent copy of the SQLite file, taken while the API and the
 * workers run. The rate-limit file is left out: its budgets refill within a minute anyway.
 */
export async function runBackup(file: string, opts: { check?: boolean; json?: boolean }): Promise<void> {
  const config = loadConfig();
  if (config.db.url) throw new CliError('backup copies the SQLite file; on PostgreSQL use pg_dump (see README, Scaling out)');
  let report;
  try {
    report = backupSqliteFile(config.db.path, file, { check: Boolean(opts.check) });
  } catch (err) {
    throw new CliError(`backup of ${config.db.path} to ${file} failed: ${(err as Error).message}`);
  }
  output(Boolean(opts.json), report, () => {
    const jobs = report.jobs === null ? '' : `${report.jobs} job${report.jobs === 1 ? '' : 's'}, `;
    return `backed up ${config.db.path} to ${report.target} (${jobs}${(report.bytes / 1024 / 1024).toFixed(1)} MB${report.checked ? ', integrity checked' : ''}) in ${(report.ms / 1000).toFixed(1)} s`;
  });
}
