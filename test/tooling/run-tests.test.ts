/**
 * scripts/run-tests.mjs, the runner behind `npm test`: a test file that never exits must fail the
 * run, named, within its limit, and leave no process behind; it once held CI to its 90 minutes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ROOT, processesWhere, tempDir } from '../helpers/index.ts';
import { ALONE, LONGEST_FIRST, SQLITE_ONLY, findTestFiles, names, startOrder } from '../../scripts/test-batches.mjs';

const NEVER_EXITS = 'test/tooling/fixtures/never-exits.ts';
const EXITS = 'test/tooling/fixtures/exits.ts';
const FAILS = 'test/tooling/fixtures/fails.ts';
const MEET = ['a', 'b', 'c'].map((x) => `test/tooling/fixtures/meet-${x}.ts`);

/** Runs run-tests.mjs on `files` (SQLite only) with `env`; its exit code, output and time taken. */
function runTests(files: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; ms: number }> {
  const began = performance.now();
  // Without the variable Node's runner sets in the files it runs: with it, a nested runner runs
  // nothing. Without this run's own TEST_CONCURRENCY too: a test here checks the default.
  const { NODE_TEST_CONTEXT: _, TEST_CONCURRENCY: __, ...outer } = process.env;
  const child = spawn(process.execPath, ['scripts/run-tests.mjs', ...files], { cwd: ROOT, env: { ...outer, BACKENDS: 'sqlite', ...env } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  // A runner that never stops its files would hold this test too: stopped after a minute. Its files
  // may then hold its output open, so the answer comes a second after it exits at the latest.
  const timer = setTimeout(() => child.kill('SIGTERM'), 60_000);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      resolve({ code: child.exitCode, out, ms: performance.now() - began });
    };
    child.on('close', done);
    child.on('exit', () => setTimeout(done, 1000).unref());
  });
}

/** The processes whose command line names `file`. */
const processesRunning = (file: string) => processesWhere((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(file));

// Whatever a failing runner left of the file that never exits goes with this test file.
after(() => {
  for (const pid of processesRunning(NEVER_EXITS)) process.kill(pid, 'SIGKILL');
});

test('a file that passes and exits passes the run', async () => {
  const run = await runTests([EXITS], { TEST_FILE_MINUTES: '0.05' });
  assert.equal(run.code, 0, run.out);
  assert.match(run.out, /✔ passes \(/, 'the file ran');
});

test("a failing test's reason is repeated as the run's last lines, after the batches that ran after it (CI shows only the end)", async (t) => {
  // The fixture fails on SQLite first; the PostgreSQL batch that runs next pushes that listing out of
  // the end of the output.
  const run = await runTests([FAILS, EXITS], { TEST_FILE_MINUTES: '0.5', BACKENDS: 'sqlite,postgres' });
  if (run.out.includes('=== backend: postgres — skipped')) return t.skip('PostgreSQL is not reachable here: no batch runs after the SQLite one');
  assert.equal(run.code, 1, run.out);
  const summary = run.out.lastIndexOf('=== failing tests, repeated from the batches above ===');
  assert.ok(summary > run.out.lastIndexOf('✔ passes ('), `no summary after the last batch:\n${run.out}`);
  assert.ok(run.out.indexOf('=== backend: postgres') < summary);
  const tail = run.out.slice(summary);
  for (const backend of ['sqlite', 'postgres']) assert.match(tail, new RegExp(`--- ${backend} ---\n✖ failing tests:\n\n[^]*the reason this fixture fails`));
  assert.match(tail, /✖ fails with its reason/);
  assert.match(tail, /'what was expected'/);
});

test('a run without failures prints no summary of them', async () => {
  const run = await runTests([EXITS], { TEST_FILE_MINUTES: '0.5' });
  assert.equal(run.code, 0, run.out);
  assert.doesNotMatch(run.out, /failing tests/);
});

test('a test file that never exits is stopped after TEST_FILE_MINUTES and named; the run fails, and the files beside it still run', async () => {
  const run = await runTests([NEVER_EXITS, EXITS], { TEST_FILE_MINUTES: '0.05' });
  assert.equal(run.code, 1, run.out);
  assert.match(run.out, /never-exits\.ts.*\n\s*'test timed out after 3000ms'/);
  assert.match(run.out, /✔ passes \(/, 'the file beside it ran');
  assert.ok(run.ms < 30_000, `the run took ${Math.round(run.ms)} ms`);
  assert.deepEqual(processesRunning(NEVER_EXITS), [], 'processes of the file are left');
});

test('a batch still running after TEST_BATCH_MINUTES names the files still running, kills them, and fails the run', async () => {
  const run = await runTests([NEVER_EXITS, EXITS], { TEST_FILE_MINUTES: '10', TEST_BATCH_MINUTES: '0.05' });
  assert.equal(run.code, 1, run.out);
  assert.match(run.out, /run-tests: still running after 0\.05 minutes, killed: test\/tooling\/fixtures\/never-exits\.ts\n/);
  assert.ok(run.ms < 30_000, `the run took ${Math.round(run.ms)} ms`);
  assert.deepEqual(processesRunning(NEVER_EXITS), [], 'processes of the file are left');
});

test('TEST_CONCURRENCY is how many files run at once (three by default); a value that is not a whole number stops the run, naming it', async (t) => {
  // Each of the three files passes only once all three have started.
  const three = await runTests(MEET, { MEET_DIR: tempDir(t), MEET_COUNT: '3' });
  assert.equal(three.code, 0, three.out);
  const two = await runTests(MEET, { MEET_DIR: tempDir(t), MEET_COUNT: '3', TEST_CONCURRENCY: '2' });
  assert.equal(two.code, 1, two.out);
  assert.match(two.out, /met 2 of 3/);
  for (const bad of ['0', 'two', '2.5']) {
    const run = await runTests([EXITS], { TEST_CONCURRENCY: bad });
    assert.equal(run.code, 1, run.out);
    assert.equal(run.out, `run-tests: TEST_CONCURRENCY must be a whole number of files, 1 or more, not '${bad}'\n`);
  }
});

test('a TEST_FILE_MINUTES or TEST_BATCH_MINUTES that is not a number above 0 stops the run, naming it, before any batch', async () => {
  for (const name of ['TEST_FILE_MINUTES', 'TEST_BATCH_MINUTES']) {
    for (const bad of ['abc', '0', '-1', '']) {
      const run = await runTests([EXITS], { [name]: bad });
      assert.equal(run.code, 1, run.out);
      assert.equal(run.out, `run-tests: ${name} must be a number of minutes above 0, not '${bad}'\n`);
    }
  }
});

test("each name in the runner's SQLite-only, run-alone and longest-first lists names exactly one test file", () => {
  const files = findTestFiles(ROOT, ['packages', 'apps', 'test']);
  assert.ok(files.length > 50, `found ${files.length} test files`);
  for (const name of [...SQLITE_ONLY, ...ALONE, ...LONGEST_FIRST]) {
    const named = files.filter((path) => names(path, name));
    assert.equal(named.length, 1, `${name} names ${named.length} files: ${named.join(', ')}`);
  }
});

test('a batch starts the longest files first, in the order LONGEST_FIRST gives, then the rest in name order, each file once', () => {
  const files = findTestFiles(ROOT, ['packages', 'apps', 'test']);
  const ordered = startOrder(files);
  assert.deepEqual(
    ordered.slice(0, LONGEST_FIRST.length),
    LONGEST_FIRST.map((name) => files.find((path) => names(path, name))),
  );
  const rest = ordered.slice(LONGEST_FIRST.length);
  assert.deepEqual(rest, [...rest].sort());
  assert.deepEqual([...ordered].sort(), files);
  // A batch without some of them (PostgreSQL's leaves the SQLite-only files out) keeps the others' order.
  const some = files.filter((path) => !names(path, 'shell-client.test.ts'));
  assert.deepEqual(startOrder(some).slice(0, 2), ordered.slice(1, 3));
});

test('a batch runs its files in the order given, where node --test would sort them by name', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'started');
  for (const name of ['z', 'a', 'm']) writeFileSync(join(dir, `${name}.mjs`), `import { appendFileSync } from 'node:fs';\nappendFileSync(${JSON.stringify(log)}, '${name}');\n`);
  const { NODE_TEST_CONTEXT: _, ...outer } = process.env;
  const child = spawn(process.execPath, ['scripts/test-batch.mjs', '1', '60000', ...['z', 'a', 'm'].map((name) => join(dir, `${name}.mjs`))], { cwd: ROOT, env: outer });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0, out);
  assert.equal(readFileSync(log, 'utf8'), 'zam');
});
