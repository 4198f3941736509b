#!/usr/bin/env node
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
