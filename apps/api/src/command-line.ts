import { EXIT_USAGE } from '@proxy/core';

/**
 * proxy-api takes no arguments: every setting comes from the environment or .env. One given anyway
 * (`--port 9000`, as other servers take it) is refused, where it was ignored and the server started
 * on the settings' port, leaving its caller to wonder why nothing answered on 9000.
 */

const USAGE = `Usage: proxy-api

The HTTP API of chat-async-proxy. It takes no arguments: its settings come from the environment,
then from .env in the working directory (the environment wins); .env.example lists each one with
its default. For example:

  PORT=9000 HOST=0.0.0.0 proxy-api

The first SIGTERM or SIGINT drains (answers what is under way, then exits 0), a second exits at
once; SIGHUP reloads PROXY_CLIENTS_FILE.

Options:
  -h, --help     this text
  -V, --version  the version
`;

/** What to print and the exit code, for a command line that is not the bare `proxy-api`; null for that one. */
export function commandLineAnswer(args: readonly string[], version: string): { code: number; stdout?: string; stderr?: string } | null {
  if (args.length === 0) return null;
  const [first] = args;
  if (args.length === 1 && (first === '--help' || first === '-h')) return { code: 0, stdout: USAGE };
  if (args.length === 1 && (first === '--version' || first === '-V')) return { code: 0, stdout: `${version}\n` };
  // An option's name is safe to repeat; anything else may be a value, and a value may be a key.
  const named = first !== undefined && /^--?[A-Za-z][A-Za-z0-9-]{0,40}$/.test(first) ? ` (${first})` : '';
  return {
    code: EXIT_USAGE,
    stderr: `proxy-api: takes no arguments${named}: settings come from the environment or .env, as PORT=9000 proxy-api (proxy-api --help)\n`,
  };
}
