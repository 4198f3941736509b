#!/usr/bin/env node
import { createRequire } from 'node:module';
import { runMain } from '@proxy/core';
import { buildCli } from './cli.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

await runMain('proxy-worker', async () => {
  await buildCli(version).parseAsync(process.argv);
});
