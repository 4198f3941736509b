import { InvalidArgumentError } from 'commander';
import { output, withStore } from './admin-context.js';

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** An age as written (`7d`) and in ms. */
export interface Age {
  text: string;
  ms: number;
}

/** "7d" → 7 days; also s, m, h. Commander's parser for --older-than, so a bad age is a usage error. */
export function parseAge(text: string): Age {
  const m = /^([0-9]+)([smhd])$/.exec(text);
  if (!m) throw new InvalidArgumentError('takes a number and a unit, like 30m, 12h or 7d');
  return { text, ms: Number(m[1]) * (UNIT_MS[m[2] as string] as number) };
}

/** `proxy-worker purge --older-than 7d`: deletes jobs that finished longer ago than that. */
export async function runPurge(opts: { olderThan: Age; json?: boolean }): Promise<void> {
  await withStore(async (store) => {
    const deleted = await store.deleteFinishedBefore(store.now() - opts.olderThan.ms);
    output(Boolean(opts.json), { deleted }, () => `deleted ${deleted} finished job${deleted === 1 ? '' : 's'} older than ${opts.olderThan.text}`);
  });
}
