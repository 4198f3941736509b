// Which test files scripts/run-tests.mjs keeps off the PostgreSQL run, and which it runs alone;
// apart from the runner so that a test can check the lists against the files (run-tests.test.ts).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

// These already cover both backends themselves, are about SQLite's file only, use no database, or
// test what stands in front of the API (the shell client, the status page, nginx, the README's
// examples), which reads the same whichever store is behind it: run again on PostgreSQL they would
// test the same code twice. A name matches a path's last parts, whole (see `names`).
export const SQLITE_ONLY = [
  'sqlite-store.test.ts',
  'file-identity.test.ts',
  'upstream-client.test.ts',
  'event-stream.test.ts',
  'store-contract.test.ts',
  'entry-points.test.ts',
  'unavailable.test.ts',
  'run-tests.test.ts',
  'bench.test.ts',
  'lifecycle.test.ts',
  'disk.test.ts',
  'event-loop-metrics.test.ts',
  'rate-limit.test.ts',
  'listen.test.ts',
  'powershell-client.test.ts',
  'config.test.ts',
  'counter-labels.test.ts',
  'clients.test.ts',
  'password-file.test.ts',
  'db-clock.test.ts',
  'env-example.test.ts',
  'in-batches.test.ts',
  'lease.test.ts',
  'local-shortage.test.ts',
  'logger.test.ts',
  'packages/core/test/open-files.test.ts',
  'reserve.test.ts',
  'retry-policy.test.ts',
  'signing.test.ts',
  'text-file.test.ts',
  'turn-batch.test.ts',
  'deploy-files.test.ts',
  'shell-client.test.ts',
  'dashboard.test.ts',
  'behind-nginx.test.ts',
  'readme.test.ts',
  'signing-vector.test.ts',
];
// These measure latency or load the machine with many processes: they run alone, after the rest,
// so neither skews the other on a 2-core machine.
export const ALONE = ['long-poll.test.ts', 'multi-host.test.ts', 'backlogs.test.ts', 'bench.test.ts'];

/**
 * Whether `name` is the end of `path` from a folder boundary on: 'lease.test.ts' names
 * test/lease.test.ts, not later-release.test.ts (which a bare endsWith took for it, so that file
 * never ran on PostgreSQL).
 */
export function names(path, name) {
  return path.endsWith(name) && /[\\/]/.test(path.charAt(path.length - name.length - 1));
}

/**
 * The test files the runner runs, sorted: each of `roots` (folders or files, relative to `root`)
 * that is a file, and every *.test.ts in a test folder under the others.
 */
export function findTestFiles(root, roots) {
  const files = [];
  for (const dir of roots.map((r) => join(root, r))) {
    if (!existsSync(dir)) continue;
    if (statSync(dir).isFile()) {
      files.push(dir);
      continue;
    }
    for (const entry of readdirSync(dir, { recursive: true })) {
      const path = join(dir, String(entry));
      if (path.endsWith('.test.ts') && !path.includes('node_modules') && /(^|[\\/])test[\\/]/.test(relative(root, path))) files.push(path);
    }
  }
  return files.sort();
}
