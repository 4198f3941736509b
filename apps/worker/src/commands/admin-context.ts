import { loadConfig, openStore, printable, type Config, type JobStore } from '@proxy/core';

/** What the admin commands work on: the store from configuration. They need no upstream key. */
export async function withStore<T>(fn: (store: JobStore, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig();
  // A wait at start (another program still on a file moved from the path) is said, not silent.
  const store = await openStore(config.db, { logger: { warn: (message) => void process.stderr.write(`proxy-worker: ${message}\n`) } });
  try {
    return await fn(store, config);
  } finally {
    await store.close();
  }
}

/** The ids a terminal line names: a few, not the 100,000 of a day of failures (`--json` has them all). */
const MAX_LISTED = 20;
/** ": id id …" for a line naming what a command did to these jobs, or nothing when there are none. */
export function listed(ids: readonly string[]): string {
  if (ids.length === 0) return '';
  return ids.length <= MAX_LISTED ? `: ${ids.join(' ')}` : `: ${ids.slice(0, MAX_LISTED).join(' ')} and ${ids.length - MAX_LISTED} more (--json lists them all)`;
}

/**
 * Prints `value` as JSON, or as the human form `render` gives. A reader that stops early
 * (`proxy-worker jobs --json | head`) is not an error, as for any Unix tool; any other failed write
 * (a full disk under `> file`) is one line and exit status 1, not a stack trace.
 */
export function output(json: boolean, value: unknown, render: () => string): void {
  process.stdout.once('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') return;
    process.stderr.write(`proxy-worker: could not write the output: ${err.message}\n`);
    process.exitCode = 1;
  });
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${render()}\n`);
}

/**
 * A plain text table with a header row and columns padded to their widest cell. A cell is put on
 * one line: an upstream's error message may hold line breaks, which cut its row in two.
 */
export function table(headers: string[], rows: Array<Array<string | number | null>>): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null ? '-' : printable(String(c).replace(/\s+/g, ' ')))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

/** Unix ms → "2026-11-24 20:01:02" (UTC). */
export function when(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
}

/**
 * Said after "no jobs" (`jobs`, `cancel --client`) when --client names no configured client: a name
 * mistyped (they are matched exactly) reads otherwise as a client with nothing stored. A client
 * removed from the configuration may still have jobs; those are listed as ever.
 */
export function unknownClient(name: string | undefined, clients: Config['clients']): string {
  // With no client configured here (an admin shell given only the database), nothing can be told.
  if (name === undefined || clients.length === 0 || clients.some((c) => c.name === name)) return '';
  return `; no configured client is named ${name} (configured: ${clients.map((c) => c.name).join(', ')})`;
}
