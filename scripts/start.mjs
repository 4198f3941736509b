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

// Settings come from .env and the environment. An argument (`npm start -- --port 9000`) was ignored,
// and the programs started on the settings' port; refused before anything is written or started.
if (process.argv.length > 2) {
  console.error('start: takes no arguments; settings come from .env or the environment, as PORT=9000 npm start');
  process.exit(64); // EX_USAGE, as the programs answer a wrong command line
}

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

// Each program must hear one signal per stop: its first drains, a second exits at once. So the
// children run in process groups of their own, where a terminal's Ctrl-C (sent to the whole
// foreground group) does not reach them, and this process passes each stop on once. (Windows has no
// process groups to leave, and there a detached child would open a console window of its own.)
// The IPC channel is how a child learns that this process died without passing a stop on (SIGKILL):
// the channel closes, and the child drains as on a first stop signal instead of running on alone.
const children = [
  { name: 'proxy-api', args: [...nodeFlagsOf(resolve(root, 'apps/api/dist/main.js')), resolve(root, 'apps/api/dist/main.js')] },
  { name: 'proxy-worker', args: [...nodeFlagsOf(resolve(root, 'apps/worker/dist/main.js')), resolve(root, 'apps/worker/dist/main.js'), 'daemon'] },
].map(({ name, args }) => ({ name, proc: spawn(process.execPath, args, { stdio: ['inherit', 'inherit', 'inherit', 'ipc'], detached: process.platform !== 'win32' }) }));

const running = () => children.filter(({ proc }) => proc.exitCode === null && proc.signalCode === null);
let stopping = false;
let exitCode = 0;
for (const { name, proc } of children) {
  proc.on('exit', (code, signal) => {
    if (code !== 0 && exitCode === 0) exitCode = code ?? 1;
    // One program ending by itself stops the other (one signal: it drains).
    if (!stopping) {
      stopping = true;
      console.error(`start: ${name} exited (${signal ?? code}); stopping the other process`);
      for (const other of running()) other.proc.kill('SIGTERM');
    }
    if (running().length === 0) process.exit(exitCode);
  });
}

// A Ctrl-C under npm start arrives here twice at once: from the terminal, and from npm, which
// passes it on. Copies this close together are one stop; a second stop is a later signal.
const SAME_STOP_MS = 200;
let lastStopAt = -Infinity;
const stop = (signal) => {
  const now = performance.now();
  if (now - lastStopAt < SAME_STOP_MS) return;
  lastStopAt = now;
  stopping = true;
  for (const { proc } of running()) proc.kill(signal);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The terminal closing: the children, in groups of their own, would not hear it and run on alone.
process.on('SIGHUP', () => stop('SIGTERM'));
