#!/usr/bin/env -S node --max-semi-space-size=4
// --max-semi-space-size=4 (MB, from V8's 16), as proxy-api: each job leaves short-lived garbage, and a
// small young generation collects it while keeping the daemon small. Measured draining 20,000 jobs
// against a zero-latency stub (profile.ts worker, pinned, three alternating pairs): peak RSS 128–130 MB
// against 141–147 MB, at 4,818–4,938 jobs a second against 4,812–4,959; against the 200 ms stub at
// concurrency 64, 114 MB against 119–124 at 310–311 jobs a second. It costs 1% more instructions a
// job on the main thread (454,011 and 459,194 against 451,012 and 453,090). scripts/node-flags.mjs
// passes the same flags wherever this file is started with `node` rather than run as a command.
import { createRequire } from 'node:module';
import { runMain } from '@proxy/core';
import { buildCli, runCli } from './cli.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

// runMain prints any error a command throws as one line (no stack) and exits 1, or 78 for a bad
// setting; runCli answers 64 for a mistake in the command line, which commander has printed.
await runMain('proxy-worker', async () => {
  const code = await runCli(buildCli(version), process.argv);
  if (code !== undefined) process.exitCode = code;
});
