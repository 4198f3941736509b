import { Command, InvalidArgumentError } from 'commander';
import { runDaemon } from './commands/daemon.js';
import { runOnce } from './commands/once.js';

/** The proxy-worker command line; each command is one function in commands/. */
export function buildCli(version: string): Command {
  const program = new Command('proxy-worker')
    .description('Processes queued chat requests: calls the upstream model and stores the answers.')
    .version(version)
    .showHelpAfterError();

  program
    .command('once')
    .alias('worker')
    .description('process the jobs that are due, then exit 0 (for cron; overlapping runs are safe)')
    .option('--max-jobs <n>', 'stop claiming after n jobs', positiveInt)
    .option('--max-seconds <n>', 'stop claiming after n seconds', positiveInt)
    .action(async (opts: { maxJobs?: number; maxSeconds?: number }) => {
      await runOnce(opts);
    });

  program
    .command('daemon')
    .description('process jobs until SIGTERM or SIGINT (for systemd); a second signal exits at once')
    .action(async () => {
      await runDaemon();
    });

  return program;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a whole number of at least 1');
  return n;
}
