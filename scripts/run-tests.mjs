#!/usr/bin/env node
// Runs every *.test.ts under packages/*/test, apps/*/test and test/ with Node's own test runner:
// first on SQLite, then again with TEST_BACKEND=postgres in a throwaway PostgreSQL database (the
// same tests, parametrized). Node 20's --test does not expand globs, so the files are listed here.
// Optional args name folders or files; BACKENDS=sqlite (or postgres) runs one backend only.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const root = fileURLToPath(new URL('..', import.meta.url));
const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['packages', 'apps', 'test'];
const files = [];
for (const dir of roots.map((r) => join(root, r))) {
  if (!existsSync(dir)) continue;
  if (statSync(dir).isFile()) {
    files.push(dir);
    continue;
  }
  for (const entry of readdirSync(dir, { recursive: true })) {
    const path = join(dir, String(entry));
    if (path.endsWith('.test.ts') && !path.includes('node_modules') && /(^|[\\/])test[\\/]/.test(relative(root, path))) files.push(path);
  }
}
if (files.length === 0) {
  console.error('run-tests: no test files found');
  process.exit(1);
}
files.sort();

// These already cover both backends themselves, are about SQLite's file only, or use no database.
const SQLITE_ONLY = ['sqlite-store.test.ts', 'store-contract.test.ts', 'entry-points.test.ts', 'unavailable.test.ts'];
// These measure latency or load the machine with many processes: they run alone, after the rest,
// so neither skews the other on a 2-core machine.
const ALONE = ['long-poll.test.ts', 'multi-host.test.ts', 'backlogs.test.ts'];

function spawnTests(list, env, concurrency) {
  if (list.length === 0) return 0;
  const result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...list.map((f) => relative(root, f))],
    { cwd: root, stdio: 'inherit', env: { ...process.env, FORCE_COLOR: '0', ...env } },
  );
  return result.status ?? 1;
}

function run(list, env) {
  const alone = list.filter((f) => ALONE.some((name) => f.endsWith(name)));
  const shared = list.filter((f) => !alone.includes(f));
  const first = spawnTests(shared, env, 2);
  return spawnTests(alone, env, 1) || first;
}

const backends = (process.env.BACKENDS ?? 'sqlite,postgres').split(',');
let status = 0;
if (backends.includes('sqlite')) {
  console.log('\n=== backend: sqlite ===');
  status = run(files, { TEST_BACKEND: 'sqlite' });
}
const pgFiles = files.filter((f) => !SQLITE_ONLY.some((name) => f.endsWith(name)));
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
    const pgStatus = run(pgFiles, { TEST_BACKEND: 'postgres', TEST_DATABASE_URL: url.toString() });
    status = status || pgStatus;
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch((err) => console.error(`run-tests: could not drop ${database}: ${err.message}`));
  }
  await admin.end().catch(() => undefined);
}
process.exit(status);
