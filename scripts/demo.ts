/**
 * `npm run demo`: the whole flow on a machine with no OpenAI access. Starts the stub upstream, the
 * API and the worker daemon on a temporary SQLite file, sends one signed request, waits for the
 * answer and prints it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { signBody } from '../packages/core/src/signing.ts';
import { startStubUpstream } from './stub-upstream.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'proxy-demo-'));
const key = `pk_${randomBytes(16).toString('hex')}`;
const secret = randomBytes(32).toString('hex');
const stub = await startStubUpstream({ delayMs: 300 });
const env = {
  PATH: process.env.PATH ?? '',
  PROXY_KEY: key,
  PROXY_SECRET: secret,
  OPENAI_API_KEY: 'sk-demo-not-a-real-key',
  OPENAI_BASE_URL: stub.url,
  PROXY_DB_PATH: join(dir, 'requests.sqlite'),
  PORT: '0',
  LOG_FORMAT: 'json',
  LOG_LEVEL: 'warn',
};
const children: ChildProcess[] = [];

function start(args: string[], extraEnv: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, args, { cwd: dir, env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  children.push(child);
  return child;
}

try {
  console.log(`demo: stub upstream at ${stub.url}, database ${env.PROXY_DB_PATH}`);
  const api = start([join(root, 'apps/api/dist/main.js')], { LOG_LEVEL: 'info' });
  const port = await new Promise<number>((resolve, reject) => {
    api.stdout?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line.includes('proxy-api listening')) resolve(JSON.parse(line).port);
    });
    api.on('exit', (code) => reject(new Error(`proxy-api exited with ${code}`)));
  });
  start([join(root, 'apps/worker/dist/main.js'), 'daemon']);
  const base = `http://127.0.0.1:${port}`;
  console.log(`demo: proxy-api at ${base}, proxy-worker daemon running`);

  const body = signBody({ prompt: 'Say hello to the async proxy.', ts: Math.floor(Date.now() / 1000), nonce: randomUUID() }, secret);
  console.log(`\n> POST ${base}/v1/requests\n  X-Proxy-Key: ${key.slice(0, 6)}…\n  ${body}`);
  const created = await fetch(`${base}/v1/requests`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-proxy-key': key }, body });
  const job = (await created.json()) as { id: string; status: string };
  console.log(`< ${created.status} ${JSON.stringify(job)}`);

  let result: { status: string; output_text?: string; attempts?: number };
  const until = Date.now() + 15_000;
  do {
    await new Promise((r) => setTimeout(r, 100));
    const res = await fetch(`${base}/v1/requests/${job.id}`, { headers: { 'x-proxy-key': key } });
    result = (await res.json()) as typeof result;
  } while (!['completed', 'failed', 'expired', 'cancelled'].includes(result.status) && Date.now() < until);
  console.log(`\n> GET ${base}/v1/requests/${job.id}\n< ${JSON.stringify({ ...result, response: '…' })}`);
  console.log(`\ndemo: the answer is: ${result.output_text ?? '(none)'}`);
  process.exitCode = result.status === 'completed' ? 0 : 1;
} finally {
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on('exit', r)))));
  await stub.close();
  rmSync(dir, { recursive: true, force: true });
}
