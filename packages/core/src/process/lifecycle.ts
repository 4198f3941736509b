import { closeLogger, type Logger } from '../logger.js';
import { ConfigError } from '../errors.js';

/** Exit code for a bad setting (sysexits EX_CONFIG); systemd units stop restarting on it. */
export const EXIT_CONFIG = 78;

/**
 * The stop contract of both programs: the first SIGTERM or SIGINT runs `drain` and exits 0 when it
 * is done (and the log files hold its last lines); a second signal exits at once with 1.
 */
export function handleStopSignals(logger: Logger, drain: (signal: NodeJS.Signals) => Promise<void>): void {
  let draining = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (draining) {
      logger.warn('second stop signal: exiting now', { signal });
      process.exit(1);
    }
    draining = true;
    logger.info('stop signal: draining', { signal });
    drain(signal).then(
      () => closeLogger(logger).then(() => process.exit(0)),
      (err: unknown) => {
        logger.error('drain failed', { err });
        return closeLogger(logger).then(() => process.exit(1));
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/**
 * Runs a program's start-up; a ConfigError prints its one line and exits EX_CONFIG, anything else
 * prints one line and exits 1. Nothing here ever prints a setting's secret value.
 */
export async function runMain(program: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${program}: ${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    process.stderr.write(`${program}: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(1);
  }
}
