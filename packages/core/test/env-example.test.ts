import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { SETTINGS } from '../src/config.ts';

const example = readFileSync(new URL('../../../.env.example', import.meta.url), 'utf8');
const listed = new Set([...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));

test('.env.example lists every setting the code reads, and nothing it does not', () => {
  const read = Object.keys(SETTINGS);
  assert.deepEqual(
    read.filter((name) => !listed.has(name)),
    [],
    'settings missing from .env.example',
  );
  assert.deepEqual(
    [...listed].filter((name) => !read.includes(name as string)),
    [],
    '.env.example lists settings the code ignores',
  );
});

test('.env.example defaults match the code defaults', () => {
  for (const [name, spec] of Object.entries(SETTINGS) as Array<[string, { default?: unknown }]>) {
    const line = new RegExp(`^${name}=(.*)$`, 'm').exec(example);
    if (spec.default !== undefined) assert.equal(line?.[1], String(spec.default), name);
  }
});

test('only config.ts reads process.env', async () => {
  const { execFileSync } = await import('node:child_process');
  const root = new URL('../../..', import.meta.url).pathname;
  const hits = execFileSync('git', ['grep', '-l', 'process\\.env', '--', 'packages', 'apps'], { cwd: root, encoding: 'utf8' })
    .trim()
    .split('\n')
    .filter((path) => /^(packages|apps)\/[^/]+\/src\//.test(path));
  assert.deepEqual(hits, ['packages/core/src/config.ts']);
});
