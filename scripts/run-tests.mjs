#!/usr/bin/env node
// Runs every *.test.ts under packages/*/test, apps/*/test and test/ with Node's own test runner:
// first on SQLite, then again with TEST_BACKEND=postgres in a throwaway PostgreSQL database (the
// same tests, parametrized). Node 20's --test does not expand globs, so the files are listed here.
// Optional args name folders or files; BACKENDS=sqlite (or postgres) runs one backend only.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ALONE, SQLITE_ONLY, findTestFiles, names, startOrder } from './test-batches.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['packages', 'apps', 'test'];
const files = findTestFiles(root, roots);
if (files.length === 0) {
  console.error('run-tests: no test files found');
  process.exit(1);
}

// A test file whose process never exits (a connection or timer left open once its tests end) would
// hold the run until CI's own limit, 90 minutes, and say nothing of where. Node's runner stops a
// file still running after TEST_FILE_MINUTES (8; the longest file took 104 s on the slowest 2-core
// machine seen) and names it. Should a batch itself still run after TEST_BATCH_MINUTES (15; the
// longest batch took under 5 minutes there, the whole suite 7 to 10 on the 2-core machines seen), the
// files still running are named, their processes killed, and the run fails.
const FILE_MS = setting('TEST_FILE_MINUTES', 8, 'a number of minutes above 0') * 60_000;
const BATCH_MS = setting('TEST_BATCH_MINUTES', 15, 'a number of minutes above 0') * 60_000;

// How many files of a batch run at once (TEST_CONCURRENCY, default 3). The suite waits more than it
// computes (leases, retry delays, timeouts, child processes starting): at two files at once the
// 2-core machine stood idle more than a third of the SQLite run (vmstat). At three, that batch
// took 145–165 s against 203–206 at two, PostgreSQL's 115 against 142 (2026-12-06, alternating
// runs). The files that time latency or load the machine still run one at a time, after the rest
// (ALONE). A slower machine whose timing tests fail under the load can set 2.
const CONCURRENCY = setting('TEST_CONCURRENCY', 3, 'a whole number of files, 1 or more', Number.isInteger);

/**
 * The number in the environment variable `name`, or `fallback` when it is unset. Anything else stops
 * the run with one line naming it: a word for TEST_BATCH_MINUTES made a timer of NaN, which fired at
 * once and killed every batch as "still running after NaN minutes".
 */
function setting(name, fallback, what, valid = () => true) {
  const raw = process.env[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw.trim() === '' || !(value > 0) || !valid(value)) {
    console.error(`run-tests: ${name} must be ${what}, not '${raw}'`);
    process.exit(1);
  }
  return value;
}

// CI shows the end of a run's output only. Node's runner lists a batch's failures, with their
// messages, at the end of that batch, where the batches after it push them out of sight (CI once
// named a failing test and nothing of why). Each batch's list is kept and printed again as the
// run's last lines.
const FAILURES_MARK = '✖ failing tests:';
const FAILURES_MAX_CHARS = 20_000;
const failures = [];

async function spawnTests(list, env, concurrency, label) {
  if (list.length === 0) return 0;
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', `--test-timeout=${FILE_MS}`, 'scripts/test-batch.mjs', String(concurrency), String(FILE_MS), ...list.map((f) => relative(root, f))],
    { cwd: root, stdio: ['inherit', 'pipe', 'inherit'], detached: true, env: { ...process.env, FORCE_COLOR: '0', ...env } },
  );
  // Passed on as it comes; from the failures mark on, also kept.
  let kept = null;
  let recent = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text) => {
    process.stdout.write(text);
    if (kept !== null) {
      if (kept.length < FAILURES_MAX_CHARS) kept += text;
      return;
    }
    // The mark may arrive split across two chunks.
    recent += text;
    const at = recent.indexOf(FAILURES_MARK);
    if (at >= 0) kept = recent.slice(at);
    else recent = recent.slice(-FAILURES_MARK.length);
  });
  // A file's leftover process may hold the pipe open after the runner exits: its output is awaited
  // for a moment only.
  const outputEnded = new Promise((resolve) => child.stdout.on('end', resolve));
  const keepFailures = () =>
    Promise.race([outputEnded, new Promise((resolve) => setTimeout(resolve, 2000).unref())]).then(() => {
      if (kept === null) return;
      const text = kept.length > FAILURES_MAX_CHARS ? `${kept.slice(0, FAILURES_MAX_CHARS)}\n… (cut; the whole list is above)` : kept;
      failures.push(`--- ${label} ---\n${text.trimEnd()}`);
    });
  // Its own process group, so the files it runs can be killed with it; Ctrl-C here reaches them too.
  const stop = () => {
    process.kill(-child.pid, 'SIGKILL');
    process.exit(130);
  };
  process.once('SIGINT', stop).once('SIGTERM', stop);
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1))).finally(() => process.off('SIGINT', stop).off('SIGTERM', stop));
  let timer;
  const late = new Promise((resolve) => (timer = setTimeout(() => resolve('late'), BATCH_MS)));
  const status = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (status !== 'late') {
    await keepFailures();
    return status;
  }
  const alive = stillRunning(child.pid);
  const running = list.map((f) => relative(root, f)).filter((f) => alive.includes(f));
  console.error(`run-tests: still running after ${BATCH_MS / 60_000} minutes, killed: ${running.join(', ') || 'the test runner'}`);
  process.kill(-child.pid, 'SIGKILL');
  await exited;
  return 1;
}

/**
 * The command lines of the processes the test runner `pgid` started (its process group, less itself),
 * as one text; read from /proc, so no `ps` is needed.
 */
function stillRunning(pgid) {
  let text = '';
  if (!existsSync('/proc')) return text;
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name) && Number(name) !== pgid)) {
    try {
      // Field 5 of stat is the process group; the command name before it may hold spaces.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) === pgid) text += `${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')}\n`;
    } catch {
      // The process ended while it was read.
    }
  }
  return text;
}

async function run(list, env) {
  const alone = list.filter((f) => ALONE.some((name) => names(f, name)));
  const shared = startOrder(list.filter((f) => !alone.includes(f)));
  const first = await spawnTests(shared, env, CONCURRENCY, env.TEST_BACKEND);
  return (await spawnTests(alone, env, 1, `${env.TEST_BACKEND}, files run alone`)) || first;
}

const backends = (process.env.BACKENDS ?? 'sqlite,postgres').split(',');
let status = 0;
if (backends.includes('sqlite')) {
  console.log('\n=== backend: sqlite ===');
  status = await run(files, { TEST_BACKEND: 'sqlite' });
}
const pgFiles = files.filter((f) => !SQLITE_ONLY.some((name) => names(f, name)));
if (backends.includes('postgres') && pgFiles.length > 0) {
  const base = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const admin = new pg.Client({ connectionString: base, connectionTimeoutMillis: 3000 });
  const database = `proxy_test_${randomBytes(5).toString('hex')}`;
  let reachable = true;
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
  } catch (err) {
    reachable = false;
    const why = `PostgreSQL at ${base.replace(/:[^:@/]*@/, ':***@')} is not reachable (${err.message})`;
    if (process.env.CI) {
      console.error(`run-tests: ${why}; .ci/run starts it`);
      status = 1;
    } else {
      console.log(`\n=== backend: postgres — skipped: ${why} ===`);
    }
  }
  if (reachable) {
    console.log(`\n=== backend: postgres (database ${database}) ===`);
    const url = new URL(base);
    url.pathname = `/${database}`;
    const pgStatus = await run(pgFiles, { TEST_BACKEND: 'postgres', TEST_DATABASE_URL: url.toString() });
    status = status || pgStatus;
    // WITH (FORCE) ends sessions a test left open; PostgreSQL before 13 has no such option.
    await admin
      .query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
      .catch((err) => (err.code === '42601' ? admin.query(`DROP DATABASE IF EXISTS ${database}`) : Promise.reject(err)))
      .catch((err) => console.error(`run-tests: could not drop ${database}: ${err.message}`));
  }
  await admin.end().catch(() => undefined);
}
if (failures.length > 0) console.log(`\n=== failing tests, repeated from the batches above ===\n${failures.join('\n')}`);
process.exit(status);
