/**
 * What each entry point loads, and compiles. `@proxy/core` must not pull in pg or undici: proxy-api
 * on SQLite without an upstream key needs neither, and each costs the process 15–20 MB of memory.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CORE = fileURLToPath(new URL('..', import.meta.url));

/** The packages under node_modules a fresh Node process has loaded after importing `entries`. */
function loadedPackages(entries: string[]): string[] {
  const script = `
    for (const entry of ${JSON.stringify(entries)}) await import(entry);
    const { createRequire } = await import('node:module');
    const cache = createRequire(import.meta.url)('module')._cache;
    const names = Object.keys(cache).map((k) => /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(k)?.[1]).filter(Boolean);
    process.stdout.write(JSON.stringify([...new Set(names)].sort()));`;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: CORE, encoding: 'utf8' })) as string[];
}

test('@proxy/core loads neither pg nor undici; @proxy/core/runner loads undici', () => {
  const core = loadedPackages(['./dist/index.js']);
  assert.ok(core.includes('better-sqlite3') && core.includes('winston'), `core loaded: ${core.join(', ')}`);
  assert.ok(!core.includes('pg') && !core.includes('undici'), `core loaded: ${core.join(', ')}`);
  assert.ok(loadedPackages(['./dist/index.js', './dist/runner/index.js']).includes('undici'));
});

test('@proxy/core compiles one schema as it loads (the settings’), not the create body’s, which proxy-api builds when it builds its routes', () => {
  // Every Ajv compile in a fresh process, counted from before the package loads.
  const script = `
    const { Ajv } = await import('ajv');
    let compiled = 0;
    const compile = Ajv.prototype.compile;
    Ajv.prototype.compile = function (...args) { compiled += 1; return compile.apply(this, args); };
    const core = await import('./dist/index.js');
    const atLoad = compiled;
    const parse = core.createRequestParser();
    process.stdout.write(JSON.stringify({ atLoad, afterParser: compiled, parsed: parse({ prompt: 'hi', ts: 1, nonce: 'nonce-0001', sign: 's' }).prompt }));`;
  const counts = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: CORE, encoding: 'utf8' })) as Record<string, unknown>;
  // Compiling the create body's schema took 50–140 ms of each worker's start, which never uses it.
  assert.deepEqual(counts, { atLoad: 1, afterParser: 2, parsed: 'hi' });
});

test('proxy-worker’s command line loads undici only when a command that calls the upstream runs', () => {
  const cli = loadedPackages(['../../apps/worker/dist/cli.js']);
  assert.ok(cli.includes('commander'), `the command line loaded: ${cli.join(', ')}`);
  assert.ok(!cli.includes('undici'), `the command line loaded: ${cli.join(', ')}`);
  assert.ok(loadedPackages(['../../apps/worker/dist/commands/once.js']).includes('undici'), 'once loads it');
});
