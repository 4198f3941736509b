import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { ROOT, WORKER_MAIN, newCredentials, spawnNode, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';

const CLIENT = join(ROOT, 'scripts/send-request.sh');

function run(args: string[], env: Record<string, string>, input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [CLIENT, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // A client that exits before reading stdin (bad usage) closes the pipe: that is not a test failure.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A PATH with only what the client says it needs (no jq), to exercise its fallback JSON reader. */
function minimalPath(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const tool of ['bash', 'curl', 'openssl', 'awk', 'sed', 'grep', 'cat', 'date', 'head', 'sleep']) {
    const path = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    symlinkSync(path, join(bin, tool));
  }
  return bin;
}

async function setUp(t: Parameters<typeof tempDir>[0] & { after: (fn: () => unknown) => void }) {
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-shell', OPENAI_BASE_URL: stub.url, RETRY_BASE_MS: '10', RETRY_MAX_MS: '20' });
  const { url } = await startApiProcess(t, env, dir);
  const worker = spawnNode(WORKER_MAIN, ['daemon'], env, dir);
  t.after(async () => {
    worker.kill('SIGKILL');
    await worker.exited;
  });
  await worker.waitFor((l) => l.includes('worker started'));
  const clientEnv = { PATH: process.env.PATH ?? '', PROXY_BASE_URL: url, PROXY_KEY: key, PROXY_SECRET: secret };
  return { dir, stub, url, clientEnv };
}

test('the shell client gets a real answer, with or without jq, for prompts with quotes, backslashes, newlines and non-ASCII', async (t) => {
  const { dir, stub, clientEnv } = await setUp(t);
  const prompt = 'Grüße "quoted" \\ back\\slash\nsecond line\ttab ✓';
  const withJq = await run(['-p', prompt, '--poll', '0.2'], clientEnv);
  assert.equal(withJq.code, 0, withJq.stderr);
  assert.equal(withJq.stdout, `echo: ${prompt}\n`);
  assert.equal(stub.calls.at(-1)?.prompt, prompt, 'the upstream got the prompt byte for byte');

  const withoutJq = await run(['-p', '-', '--poll', '0.2'], { ...clientEnv, PATH: minimalPath(dir) }, prompt);
  assert.equal(withoutJq.code, 0, withoutJq.stderr);
  assert.equal(withoutJq.stdout, `echo: ${prompt}\n`);

  const messages = join(dir, 'messages.json');
  writeFileSync(messages, JSON.stringify([{ role: 'system', content: 'terse' }, { role: 'user', content: 'from a file' }]));
  const fromFile = await run(['-f', messages, '-m', 'gpt-test', '--ttl', '120', '--poll', '0.2'], clientEnv);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.equal(fromFile.stdout, 'echo: from a file\n');
  assert.equal(stub.calls.at(-1)?.body.model, 'gpt-test');
});

test('the shell client exits 2 on failed, 4 on timeout, 5 on an HTTP error, 64 on bad usage', async (t) => {
  const { stub, clientEnv } = await setUp(t);
  stub.behave(() => ({ status: 400, body: { error: { message: 'Unsupported parameter', type: 'invalid_request_error' } } }));
  const failed = await run(['-p', 'fail please', '--poll', '0.2'], clientEnv);
  assert.equal(failed.code, 2, failed.stderr);
  assert.match(failed.stderr, /failed: upstream_invalid_request_error: Unsupported parameter/);

  stub.behave(() => ({ delayMs: 20_000 }));
  const slow = await run(['-p', 'too slow', '--poll', '0.2', '--timeout', '2'], clientEnv);
  assert.equal(slow.code, 4, slow.stderr);
  assert.match(slow.stderr, /timed out after 2s/);

  const badSecret = await run(['-p', 'x'], { ...clientEnv, PROXY_SECRET: 'w'.repeat(40) });
  assert.equal(badSecret.code, 5, badSecret.stderr);
  assert.match(badSecret.stderr, /HTTP 401\): invalid_signature/);

  const noKey = await run(['-p', 'x'], { ...clientEnv, PROXY_KEY: '' });
  assert.equal(noKey.code, 64, noKey.stderr);
  assert.match(noKey.stderr, /no key/);
  const unreachable = await run(['-p', 'x', '-u', 'http://127.0.0.1:9'], clientEnv);
  assert.equal(unreachable.code, 5, unreachable.stderr);
});

test('the shell client long-polls: a 1.5 s job answers in about 1.5 s even with an 8 s poll pause', async (t) => {
  const { stub, clientEnv } = await setUp(t);
  stub.behave(() => ({ delayMs: 1500 }));
  const started = Date.now();
  const res = await run(['-p', 'long-polled', '--poll', '8'], clientEnv);
  assert.equal(res.code, 0, res.stderr);
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
});
