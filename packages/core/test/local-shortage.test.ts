import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LOCAL_SHORTAGE_LINE_MS, LOCAL_SHORTAGE_PAUSE_MS, createShortageBrake, type LocalShortage } from '../src/runner/local-shortage.ts';
import { manualClock } from '../../../test/helpers/index.ts';

const EMFILE: LocalShortage = { kind: 'local_shortage', code: 'EMFILE', message: 'could not open an upstream connection: EMFILE, too many open files in this process' };

test('shortage brake: holds calls for the pause after each shortage, and tells of a lasting one once a minute with the jobs it put back', () => {
  const clock = manualClock();
  const lines: Array<{ message: string; meta: Record<string, unknown> }> = [];
  const brake = createShortageBrake({
    now: clock.now,
    log: { error: (message: string, meta?: object) => void lines.push({ message, meta: meta as Record<string, unknown> }) } as never,
  });
  assert.equal(brake.holding(), false);

  brake.report(EMFILE);
  assert.equal(brake.holding(), true);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!.message, /EMFILE.*attempt unspent; no call starts for 1 s/);
  assert.deepEqual(lines[0]!.meta, { code: 'EMFILE', jobs_put_back: 1 });

  clock.advance(LOCAL_SHORTAGE_PAUSE_MS - 1);
  assert.equal(brake.holding(), true);
  // Another call short meanwhile holds calls from its own time on.
  brake.report(EMFILE);
  clock.advance(LOCAL_SHORTAGE_PAUSE_MS - 1);
  assert.equal(brake.holding(), true);
  clock.advance(1);
  assert.equal(brake.holding(), false);

  for (let i = 0; i < 5; i++) brake.report(EMFILE);
  assert.equal(lines.length, 1, 'within the minute, no more lines');
  clock.advance(LOCAL_SHORTAGE_LINE_MS);
  brake.report(EMFILE);
  assert.equal(lines.length, 2);
  assert.deepEqual(lines[1]!.meta, { code: 'EMFILE', jobs_put_back: 7 }, 'the six untold and this one');
});
