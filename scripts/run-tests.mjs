#!/usr/bin/env node
// Runs every *.test.ts under packages/*/test, apps/*/test and test/ with Node's own test runner.
// Node 20's --test does not expand globs, so the files are listed here. Optional args name folders or files.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

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
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-reporter=spec', ...files.map((f) => relative(root, f))],
  { cwd: root, stdio: 'inherit', env: { ...process.env, FORCE_COLOR: '0' } },
);
process.exit(result.status ?? 1);
