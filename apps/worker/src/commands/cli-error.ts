/** A mistake in what a command was asked for (no such job, a store it cannot copy): printed as one line, exit 1. */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}
