import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { EXIT_USAGE } from '@proxy/core';
import { runBackup } from './commands/backup.js';
import { runCancel } from './commands/cancel.js';
import { runCopyJobs } from './commands/copy-jobs.js';
import { runJobs } from './commands/jobs.js';
import { parseAge, runPurge } from './commands/purge.js';
import { runRestore } from './commands/restore.js';
import { runRetry } from './commands/retry.js';
import { runShow } from './commands/show.js';
import { runStats } from './commands/stats.js';

// The commands that call the upstream (once, daemon, check) are loaded when run: they bring in the
// runner and undici, about 54 ms of a start (profiled), which the admin commands, --version and
// --help do without.
const upstreamCommands = {
  once: () => import('./commands/once.js'),
  daemon: () => import('./commands/daemon.js'),
  check: () => import('./commands/check.js'),
};

const STATUSES = ['queued', 'in_progress', 'completed', 'failed', 'cancelled', 'expired'];

/** The proxy-worker command line; each command is one function in commands/. */
export function buildCli(version: string): Command {
  // Before the commands: each inherits these settings when it is made. exitOverride makes a mistake
  // in the command line a CommanderError for runCli, where commander would exit 1 itself.
  const program = new Command('proxy-worker')
    .description('Processes queued chat requests: calls the upstream model and stores the answers.')
    .version(version)
    .exitOverride()
    .showHelpAfterError();

  program
    .command('once')
    .alias('worker')
    .description('process the jobs that are due, then exit 0 (for cron; overlapping runs are safe)')
    .option('--max-jobs <n>', 'stop claiming after n jobs', positiveInt)
    .option('--max-seconds <n>', 'stop claiming after n seconds', positiveInt)
    .action(async (opts: { maxJobs?: number; maxSeconds?: number }) => {
      await (await upstreamCommands.once()).runOnce(opts);
    });

  program
    .command('daemon')
    .description('process jobs until SIGTERM, SIGINT or SIGHUP (for systemd; a closed terminal sends SIGHUP): calls in flight finish first; a second signal exits at once')
    .action(async () => {
      await (await upstreamCommands.daemon()).runDaemon();
    });

  program
    .command('check')
    .description('make one small chat completion as a worker would (same key, base URL, proxy, CA file, timeout) and say what came back; exit 1 if it failed')
    .option('--model <model>', 'the model to ask (default: DEFAULT_MODEL)')
    .option('--json', 'print JSON')
    .action(async (opts: { model?: string; json?: boolean }) => {
      await (await upstreamCommands.check()).runCheck(opts);
    });

  program.command('stats').description('the queue by status, the longest wait in the queue, the live workers').option('--json', 'print JSON').action(runStats);

  program
    .command('jobs')
    .description('list the newest jobs')
    .addOption(new Option('--status <status>', 'only jobs with this status').choices(STATUSES))
    .option('--limit <n>', 'how many', positiveInt, 20)
    .option('--client <name>', "only this client's jobs")
    .option('--json', 'print JSON')
    .action(runJobs);

  program.command('show').description('one job in full').argument('<id>').option('--json', 'print JSON').action(runShow);

  program
    .command('retry')
    .description('put a failed or expired job back in the queue (or every failed one)')
    .argument('[id]')
    .option('--all-failed', 'every failed job')
    .option('--json', 'print JSON')
    .action(idOr('allFailed', '--all-failed', runRetry));

  program
    .command('cancel')
    .description("cancel a job, as its client's DELETE does: a queued one at once, a running one through its worker (or every unfinished one of a client)")
    .argument('[id]')
    .option('--client <name>', 'every unfinished job of this client')
    .option('--json', 'print JSON')
    .action(idOr('client', '--client NAME', runCancel));

  program
    .command('purge')
    .description('delete jobs that finished longer ago than the given age')
    .requiredOption('--older-than <age>', 'e.g. 12h or 7d', parseAge)
    .option('--json', 'print JSON')
    .action(runPurge);

  program
    .command('backup')
    .description('copy the SQLite file to <file> while everything runs: a consistent snapshot, synced to disk, that replaces <file> whole')
    .argument('<file>')
    .option('--check', 'read every page of the copy (PRAGMA integrity_check) before it replaces <file>; a copy that fails leaves <file> as it was')
    .option('--json', 'print JSON')
    .action(runBackup);

  program
    .command('restore')
    .description('put a backup in place of the SQLite file, with proxy-api and the workers stopped; the file it replaces is kept beside it')
    .argument('<backup>')
    .option('--force', 'replace a live file too damaged for SQLite to tell whether a program has it open')
    .option('--json', 'print JSON')
    .action(runRestore);

  program
    .command('copy-jobs')
    .description('copy every job of another store into the configured one (the one-off move from SQLite to PostgreSQL); safe to run again')
    .requiredOption('--from <source>', 'the SQLite file, or a postgres:// URL, to copy from')
    .option('--from-schema <schema>', 'the schema, when the source is PostgreSQL', 'public')
    .option('--unfinished-only', 'copy only queued and running jobs, leave finished ones behind')
    .option('--force', "copy even though the source's workers seem alive")
    .option('--json', 'print JSON')
    .action(runCopyJobs);

  return program;
}

/**
 * Runs the command line. Answers the exit code for one that ended in commander: EXIT_USAGE for a
 * mistake in the command line itself, printed by then (with the command's help), 0 for --help and
 * --version; undefined when a command ran, which sets its own code if it failed (check). What a
 * command throws goes on to runMain: a failed run, exit 1.
 */
export async function runCli(program: Command, argv: readonly string[]): Promise<number | undefined> {
  try {
    await program.parseAsync(argv);
    return undefined;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : EXIT_USAGE;
    throw err;
  }
}

/**
 * The action of a command that takes one request id or the option `key` (named `option` on the
 * command line), never both and never neither: a mistake in the command line (64) otherwise.
 */
function idOr<O extends object>(key: keyof O, option: string, run: (id: string | undefined, opts: O) => Promise<void>) {
  return async (id: string | undefined, opts: O, command: Command): Promise<void> => {
    if (Boolean(id) === Boolean(opts[key])) command.error(`error: give one request id, or ${option}`);
    await run(id, opts);
  };
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a whole number of at least 1');
  return n;
}
