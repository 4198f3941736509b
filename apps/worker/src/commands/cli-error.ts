/** A mistake in what a command was asked for (no such job, a store it cannot copy): printed as one line, exit 1. */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

/**
 * EX_USAGE (sysexits.h), as the shell client uses it: the command line itself is wrong (an unknown
 * command or option, a value that does not parse, two options that exclude each other). Apart from
 * 1, a run that failed, so a cron mail tells a typo from a failure, and systemd does not restart a
 * unit whose command line can never work.
 */
export const EXIT_USAGE = 64;
