import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT, getJson, spawnNode, tempDir, testEnv, within } from '../helpers/index.ts';

const START = join(ROOT, 'scripts/start.mjs');

test('first start without .env writes one with fresh credentials; without an upstream key it stops, naming the setting', async (t) => {
  const dir = tempDir(t);
  const env = testEnv(dir);
  delete (env as Record<string, string | undefined>).PROXY_DB_PATH;
  const start = spawnNode(START, [], env, dir);
  t.after(() => start.kill('SIGKILL'));
  const exit = await start.exited;
  assert.equal(exit.code, 78);
  const envFile = join(dir, '.env');
  assert.ok(existsSync(envFile));
  assert.equal(statSync(envFile).mode & 0o777, 0o600, '.env holds secrets: owner-only');
  const text = readFileSync(envFile, 'utf8');
  assert.match(text, /^PROXY_KEY=pk_[0-9a-f]{32}$/m);
  assert.match(text, /^PROXY_SECRET=[0-9a-f]{64}$/m);
  assert.ok(start.lines.some((l) => l.includes(`wrote ${envFile}`)));
  assert.ok(start.stderr.some((l) => /^proxy-worker: OPENAI_API_KEY is not set/.test(l)), start.stderr.join('\n'));
  const secret = /^PROXY_SECRET=(.*)$/m.exec(text)?.[1] as string;
  assert.ok(![...start.lines, ...start.stderr].some((l) => l.includes(secret)), 'the secret is never printed');
});

test('with a key, npm start runs API and worker; SIGTERM stops both with exit 0', async (t) => {
  const dir = tempDir(t);
  const start = spawnNode(START, [], testEnv(dir, { OPENAI_API_KEY: 'sk-test-start', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' }), dir);
  t.after(() => start.kill('SIGKILL'));
  const line = await start.waitFor((l) => l.includes('proxy-api listening'));
  await start.waitFor((l) => l.includes('worker started'));
  const { port } = JSON.parse(line) as { port: number };
  assert.equal((await getJson(`http://127.0.0.1:${port}`, '/health')).status, 200);
  start.kill('SIGTERM');
  const exit = await within(start.exited, 10_000, 'stop');
  assert.deepEqual(exit, { code: 0, signal: null });
});
