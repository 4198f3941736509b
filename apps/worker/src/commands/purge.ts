import { CliError } from './cli-error.js';
import { output, withStore } from './admin-context.js';

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "7d" → ms; also s, m, h. */
export function parseAge(text: string): number {
  const m = /^([0-9]+)([smhd])$/.exec(text);
  if (!m) throw new CliError(`--older-than takes a number and a unit, like 30m, 12h or 7d (got ${JSON.stringify(text)})`);
  return Number(m[1]) * (UNIT_MS[m[2] as string] as number);
}

/** `proxy-worker purge --older-than 7d`: deletes jobs that finished longer ago than that. */
export async function runPurge(opts: { olderThan: string; json?: boolean }): Promise<void> {
  const age = parseAge(opts.olderThan);
  await withStore(async (store) => {
    const deleted = await store.deleteFinishedBefore(store.now() - age);
    output(Boolean(opts.json), { deleted }, () => `deleted ${deleted} finished job${deleted === 1 ? '' : 's'} older than ${opts.olderThan}`);
  });
}
