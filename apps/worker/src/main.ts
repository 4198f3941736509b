#!/usr/bin/env node
import { createRequire } from 'node:module';
import { runMain } from '@proxy/core';
import { buildCli } from './cli.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

// runMain prints any error as one line (a CliError is the caller's mistake, no stack) and sets the exit code.
await runMain('proxy-worker', async () => {
  await buildCli(version).parseAsync(process.argv);
});
