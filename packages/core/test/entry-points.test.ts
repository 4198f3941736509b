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

test('no program loads Ajv: the settings, the create body and the clients file are checked by validators compiled ahead', () => {
  // Loading Ajv and compiling the settings' schema took about a quarter of each program's start
  // (proxy-worker --version: 340 ms of CPU a run, 250 without); proxy-api compiled the create body's too.
  const script = `
    const core = await import('./dist/index.js');
    const config = core.loadConfig({ env: { PORT: '8123' }, cwd: ${JSON.stringify(CORE)} });
    let refused = '';
    try { core.loadConfig({ env: { PORT: 'eighty' }, cwd: ${JSON.stringify(CORE)} }); } catch (err) { refused = err.message.split(':')[0]; }
    const parsed = core.parseCreateRequest({ prompt: 'hi', ts: 1, nonce: 'nonce-0001', sign: 's' }).prompt;
    const { createRequire } = await import('node:module');
    const loaded = Object.keys(createRequire(import.meta.url)('module')._cache).filter((k) => k.includes('/node_modules/ajv/'));
    process.stdout.write(JSON.stringify({ port: config.http.port, refused, parsed, ajvFiles: loaded.length }));`;
  const seen = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: CORE, encoding: 'utf8' })) as Record<string, unknown>;
  assert.deepEqual(seen, { port: 8123, refused: 'PORT must be integer (got "eighty")', parsed: 'hi', ajvFiles: 0 });
});

test('proxy-worker’s command line loads undici only when a command that calls the upstream runs', () => {
  const cli = loadedPackages(['../../apps/worker/dist/cli.js']);
  assert.ok(cli.includes('commander'), `the command line loaded: ${cli.join(', ')}`);
  assert.ok(!cli.includes('undici'), `the command line loaded: ${cli.join(', ')}`);
  assert.ok(loadedPackages(['../../apps/worker/dist/commands/once.js']).includes('undici'), 'once loads it');
});
