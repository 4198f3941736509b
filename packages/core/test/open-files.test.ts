import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { OPEN_FILES_LINE_MS, WORKER_OWN_FILES, countOpenFiles, openFilesLimit, warnIfFewOpenFiles, watchOpenFiles } from '../src/process/open-files.ts';

const limits = (soft: string) =>
  `Limit                     Soft Limit           Hard Limit           Units\nMax processes             95000                95000                processes\nMax open files            ${soft}                 ${soft}                 files\n`;

test('openFilesLimit reads the soft limit of /proc/self/limits; null where there is none', () => {
  assert.equal(
    openFilesLimit(() => limits('1024')),
    1024,
  );
  assert.equal(
    openFilesLimit(() => limits('unlimited')),
    Infinity,
  );
  assert.equal(
    openFilesLimit(() => 'nothing of the kind'),
    null,
  );
  assert.equal(
    openFilesLimit(() => {
      throw new Error('ENOENT');
    }),
    null,
  );
  // This very process's, where Linux gives it.
  let own: string | null = null;
  try {
    own = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    // not Linux: no such file, and no limit to compare
  }
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

test('watchOpenFiles: one line from 90% of the limit up, at most once a minute; a count that needs a listing is taken a tenth as often', async () => {
  const lines: Array<{ message: string; meta: Record<string, unknown> }> = [];
  const logger = { error: (message: string, meta: Record<string, unknown>) => void lines.push({ message, meta }) } as never;
  let open = 89;
  let counts = 0;
  let clock = 0;
  const tick = () => new Promise((resolve) => setTimeout(resolve, 12));
  const watch = watchOpenFiles(logger, { count: () => (counts++, { open, listed: false }), limit: () => 100, everyMs: 5, now: () => clock });
  await tick();
  assert.equal(lines.length, 0);
  open = 90;
  await tick();
  await tick();
  assert.equal(lines.length, 1);
  assert.match(lines[0]?.message ?? '', /^90 of the 100 files this process may open are open: .*LimitNOFILE/);
  clock += OPEN_FILES_LINE_MS;
  await tick();
  assert.equal(lines.length, 2);
  assert.ok((lines[1]?.meta.times_seen as number) >= 1);
  watch.stop();

  counts = 0;
  const listed = watchOpenFiles(logger, { count: () => (counts++, { open: 1, listed: true }), limit: () => 100, everyMs: 2 });
  await new Promise((resolve) => setTimeout(resolve, 100));
  listed.stop();
  assert.ok(counts >= 1 && counts <= 6, `${counts} listings in 100 ms at a 2 ms interval`);
});

test("countOpenFiles counts this process's descriptors where Linux tells them", () => {
  const before = countOpenFiles();
  if (before === null) return;
  const fd = openSync('/dev/null', 'r');
  try {
    assert.equal(countOpenFiles()?.open, before.open + 1);
  } finally {
    closeSync(fd);
  }
});
