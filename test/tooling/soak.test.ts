/**
 * `npm run soak` (scripts/bench/soak.ts) in a short run: 12 s of load at half the default rate, with a
 * backup or a killed daemon every 4 s (a killed daemon each time on PostgreSQL, in the suite's
 * database). Not a soak (that takes minutes), but it checks that the
 * script still starts everything, makes each of its faults happen, runs every check against a
 * service that passes them, and leaves no process or folder behind. The SQLite run streams the
 * calls (SOAK_STREAM) with the upstream's 429s; the PostgreSQL run makes the limits bind
 * (SOAK_LIMITS), where the fleet's draws from UPSTREAM_RPM meet the most. The script's paths are
 * the same on either backend, so each way is run on one.
 */
import assert from 'node:assert/strict';
import { existsSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import { BACKEND, PG_URL, processesWhere, runScript } from '../helpers/index.ts';
import { tightestWindow } from '../../scripts/bench/tightest-window.ts';

const CHECKS = [
  'every job answered 202 is stored',
  'none left queued or in progress',
  'every completed job holds the answer to its own prompt',
  "detailed /health's queue counts match the rows",
  "/metrics's job counters match the rows",
  'the API answered every client as expected',
  'no program logged an error',
  'no program stopped on its own',
];
/** The checks SOAK_LIMITS adds. */
const LIMIT_CHECKS = ['creates accepted stay within RATE_LIMIT_PER_KEY', "/metrics's refusals match the 429s the clients saw", 'upstream calls stay within UPSTREAM_RPM'];

test('npm run soak, a short run: load, backups and a daemon killed; every check passes and is printed; nothing left behind', { timeout: 180_000 }, async () => {
  const onPostgres = BACKEND === 'postgres';
  const variant: Record<string, string> = onPostgres ? { SOAK_DATABASE_URL: PG_URL, SOAK_LIMITS: 'true' } : { SOAK_STREAM: 'true' };
  const { code, stdout, stderr } = await runScript('scripts/bench/soak.ts', { SOAK_MINUTES: '0.2', SOAK_RATE: '40', SOAK_CHAOS_SECONDS: '4', ...variant }, 150_000);
  assert.equal(code, 0, `soak exited ${code}:\n${stdout}\n${stderr}`);

  for (const check of onPostgres ? [...CHECKS, ...LIMIT_CHECKS] : CHECKS) assert.ok(stdout.includes(`✔ ${check}`), `passed: ${check}\n${stdout}`);
  assert.doesNotMatch(stdout, /✖/);
  if (onPostgres) {
    assert.match(stdout, /^soak: .* on PostgreSQL, schema soak_\w+, at most 30 creates\/s and 2400 calls\/min, every 4 s a daemon killed/m);
    assert.match(stdout, /^\d+ creates refused \(429\)$/m);
    assert.match(stdout, /^upstream: the tightest 41 calls in a row spanned \d+ ms \(at least 1000 ms allowed\)$/m);
    assert.match(
      stdout,
      /^the stub's event loop, which stamps the arrivals in a process of its own: \d+ stalls over 30 ms, the longest \d+ ms; (one of \d+ ms ended as|none at) the tightest window's first call/m,
    );
  } else {
    assert.match(stdout, /^soak: .* on SQLite, calls streamed, every 4 s a backup or a daemon killed/m);
    assert.match(stdout, /\d+ s: backup made/);
    for (const check of LIMIT_CHECKS) assert.ok(!stdout.includes(check), `not checked without SOAK_LIMITS: ${check}`);
  }
  assert.match(stdout, /\d+ s: a daemon killed \(-9\), another started/);
  // The table's rows: seconds, jobs created so far, calls, then each program's memory and open files.
  const samples = stdout.split('\n').filter((line) => /^\s*\d+\s+\d+\s+\d+\s+\d+\/\d+\s/.test(line));
  assert.ok(samples.length >= 3, `samples while it ran:\n${stdout}`);
  const created = Number(/^(\d+) jobs created/m.exec(stdout)?.[1]);
  // 40 a second for 12 s, less what a loaded machine's timers let through.
  assert.ok(created >= 200 && created <= 500, `jobs created: ${created}`);
  assert.match(stdout, /^peak RSS: proxy-api \d+ MB, a daemon \d+ MB; RSS early and at the end: proxy-api \d+ and \d+ MB, the daemon that ran throughout \d+ and \d+ MB$/m);

  const folder = /folder (\S+)/.exec(stdout)?.[1];
  assert.ok(folder, 'the soak names its folder');
  assert.equal(existsSync(folder), false, `${folder} removed`);
  assert.deepEqual(
    processesWhere((pid) => readlinkSync(`/proc/${pid}/fd/1`).startsWith(`${folder}/`)),
    [],
    'no process of the soak is left',
  );
});

test("the tightest window, the soak's and the UPSTREAM_RPM test's measure: the shortest n+1 stamps in a row, and where they begin", () => {
  assert.deepEqual(tightestWindow([0, 100, 150, 400, 420], 2), { span: 150, from: 0 });
  assert.deepEqual(tightestWindow([0, 100, 150, 400, 420], 1), { span: 20, from: 400 });
  // The first of equal spans is kept.
  assert.deepEqual(tightestWindow([0, 10, 20, 30], 1), { span: 10, from: 0 });
  assert.deepEqual(tightestWindow([0, 100], 2), { span: Infinity, from: 0 });
});
