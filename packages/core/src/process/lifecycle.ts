import { closeLogger, type Logger } from '../logger.js';
import { ConfigError } from '../errors.js';

/** Exit code for a bad setting (sysexits EX_CONFIG); systemd units stop restarting on it. */
export const EXIT_CONFIG = 78;

/**
 * Exit code for a wrong command line (sysexits EX_USAGE: an unknown command or option, a value that
 * does not parse), as the shell client uses it. Apart from 1, a run that failed, so a cron mail tells
 * a typo from a failure; systemd units stop restarting on it too.
 */
export const EXIT_USAGE = 64;

/**
 * The stop contract of both programs: the first SIGTERM or SIGINT (and SIGHUP with `hangUpStops`)
 * runs `drain` and exits 0 when it is done (and the log files hold its last lines); a second signal
 * exits at once with 1.
 *
 * A program started by a supervising parent over an IPC channel (`npm start`'s launcher) also drains
 * when that parent dies, even by SIGKILL, which it could not pass on: the channel closes, and the
 * program would otherwise run on alone, in a process group of its own. A parent's death is never a
 * second stop. Under systemd, cron or a shell there is no channel, and nothing here changes.
 */
export function handleStopSignals(
  logger: Logger,
  drain: () => Promise<void>,
  /**
   * SIGHUP too, for a program that reloads nothing on it (the worker): sent when the terminal or
   * ssh session it runs in goes away, it ended the process outright, its calls abandoned until
   * their leases lapsed and then made again. proxy-api reloads its clients on SIGHUP instead.
   */
  options: {
    hangUpStops?: boolean;
    /**
     * Stops the program as a failure: its abort drains as a signal does, and the program exits 1
     * (systemd's Restart=on-failure starts it again). Its reason is said in the log line.
     */
    failWhen?: AbortSignal;
  } = {},
): void {
  let draining = false;
  let exitCode = 0;
  const startDrain = (why: string, meta: Record<string, string> = {}, level: 'info' | 'error' = 'info') => {
    draining = true;
    logger[level](`${why}: draining`, meta);
    drain().then(
      () => closeLogger(logger).then(() => process.exit(exitCode)),
      (err: unknown) => {
        logger.error('drain failed', { err });
        return closeLogger(logger).then(() => process.exit(1));
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (draining) {
      logger.warn('second stop signal: exiting now', { signal });
      process.exit(1);
    }
    startDrain('stop signal', { signal });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  if (options.hangUpStops) process.on('SIGHUP', onSignal);
  const { failWhen } = options;
  if (failWhen) {
    const fail = () => {
      exitCode = 1;
      if (!draining) startDrain(String(failWhen.reason ?? 'failed'), {}, 'error');
    };
    if (failWhen.aborted) fail();
    else failWhen.addEventListener('abort', fail, { once: true });
  }
  // `process.send` is there for as long as the program runs if it was started with a channel; the
  // channel itself may already be gone, closed by a parent that died during start-up.
  if (typeof process.send !== 'function') return;
  if (!process.connected) {
    startDrain('parent process gone');
    return;
  }
  // The channel must not keep the program alive by itself: `once` still exits when its pass ends.
  process.channel?.unref();
  process.on('disconnect', () => {
    if (!draining) startDrain('parent process gone');
  });
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
