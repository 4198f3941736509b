#!/usr/bin/env node
// Quick start: proxy-api and `proxy-worker daemon` under one command, on the embedded SQLite file.
// Under systemd they run as two units instead (scripts/deploy/). On the first start, writes .env from
// .env.example with a freshly generated client key and secret, and says where.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeFlagsOf } from './node-flags.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const envPath = resolve(process.cwd(), '.env');

if (!existsSync(envPath)) {
  const key = `pk_${randomBytes(16).toString('hex')}`;
  const secret = randomBytes(32).toString('hex');
  const text = readFileSync(resolve(root, '.env.example'), 'utf8')
    .replace(/^PROXY_KEY=.*$/m, `PROXY_KEY=${key}`)
    .replace(/^PROXY_SECRET=.*$/m, `PROXY_SECRET=${secret}`);
  writeFileSync(envPath, text, { mode: 0o600 });
  console.log(`start: wrote ${envPath} with a fresh PROXY_KEY and PROXY_SECRET (give them to your clients; fill OPENAI_API_KEY)`);
}

for (const dist of ['apps/api/dist/main.js', 'apps/worker/dist/main.js']) {
  if (!existsSync(resolve(root, dist))) {
    console.error(`start: ${dist} is missing; run npm install (it builds) or npm run build`);
    process.exit(1);
  }
}

const children = [
  { name: 'proxy-api', args: [...nodeFlagsOf(resolve(root, 'apps/api/dist/main.js')), resolve(root, 'apps/api/dist/main.js')] },
  { name: 'proxy-worker', args: [...nodeFlagsOf(resolve(root, 'apps/worker/dist/main.js')), resolve(root, 'apps/worker/dist/main.js'), 'daemon'] },
].map(({ name, args }) => ({ name, proc: spawn(process.execPath, args, { stdio: 'inherit' }) }));

let exitCode = null;
for (const { name, proc } of children) {
  proc.on('exit', (code, signal) => {
    if (exitCode === null) {
      exitCode = code ?? (signal ? 1 : 0);
      if (code !== 0 && !stopping) console.error(`start: ${name} exited (${signal ?? code}); stopping the other process`);
      for (const other of children) if (other.proc !== proc && other.proc.exitCode === null) other.proc.kill('SIGTERM');
    }
    if (children.every((c) => c.proc.exitCode !== null || c.proc.signalCode !== null)) process.exit(exitCode);
  });
}

// The children get the same signal; each drains on the first and exits at once on the second.
let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    stopping = true;
    for (const { proc } of children) if (proc.exitCode === null) proc.kill(signal);
  });
}
