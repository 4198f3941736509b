import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { WORKER_OWN_FILES, openFilesLimit, warnIfFewOpenFiles } from '../src/process/open-files.ts';

const limits = (soft: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax processes             95000                95000                processes\nMax open files            ${soft}                 ${soft}                 files\n`;

test('openFilesLimit reads the soft limit of /proc/self/limits; null where there is none', () => {
  assert.equal(openFilesLimit(() => limits('1024')), 1024);
  assert.equal(openFilesLimit(() => limits('unlimited')), Infinity);
  assert.equal(openFilesLimit(() => 'nothing of the kind'), null);
  assert.equal(openFilesLimit(() => { throw new Error('ENOENT'); }), null);
  // This very process's, where Linux gives it.
  let own: string | null = null;
  try {
    own = readFileSync('/proc/self/limits', 'utf8');
  } catch {}
  if (own !== null) assert.ok((openFilesLimit() as number) > 0);
});

test('warnIfFewOpenFiles warns only when the calls and what the worker holds pass the limit', () => {
  const lines: string[] = [];
  const logger = { warn: (message: string) => void lines.push(message) } as never;
  warnIfFewOpenFiles(logger, 64, 64 + WORKER_OWN_FILES);
  warnIfFewOpenFiles(logger, 64, null);
  assert.deepEqual(lines, []);
  warnIfFewOpenFiles(logger, 64, 64 + WORKER_OWN_FILES - 1);
  assert.equal(lines.length, 1);
  assert.match(String(lines[0]), /may open 113 files, and WORKER_CONCURRENCY=64 .*LimitNOFILE/);
});
