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
// The files that take longest, longest first (SQLite's and PostgreSQL's together): each batch starts
// them before the rest. In name order the longest started last (shell-client.test.ts took 103 s
// of the SQLite batch's 276, postgres-restart.test.ts 100 s of PostgreSQL's 222) and ran on alone
// while the other slots stood idle; started first, the short files fill in beside them. Replayed
// from each file's time in that run (2026-12-07, AMD EPYC, three at once): 280 s → 264 for the
// SQLite batch, 222 → 202 for PostgreSQL's. Measured after: PostgreSQL's 208 and 212 s; the SQLite
// batch 280, no gain, since the 2-core machine's CPU, not the order, bounds it at three at once.
// A file missing here only runs later, in name order.
export const LONGEST_FIRST = [
  'shell-client.test.ts',
  'worker-faults.test.ts',
  'postgres-restart.test.ts',
  'store-contract.test.ts',
  'test/e2e/worker.test.ts',
  'admin-cli.test.ts',
  'test/e2e/backup.test.ts',
  'job-watcher.test.ts',
  'test/e2e/flow.test.ts',
  'run-tests.test.ts',
];

/**
 * Whether `name` is the end of `path` from a folder boundary on: 'lease.test.ts' names
 * test/lease.test.ts, not later-release.test.ts (which a bare endsWith took for it, so that file
 * never ran on PostgreSQL).
 */
export function names(path, name) {
  return path.endsWith(name) && /[\\/]/.test(path.charAt(path.length - name.length - 1));
}

/**
 * `files` in the order a batch starts them: those LONGEST_FIRST names, in its order, then the rest
 * as they came. Node's runner starts a batch's files in the order given, as a slot frees.
 */
export function startOrder(files) {
  const first = LONGEST_FIRST.flatMap((name) => files.filter((f) => names(f, name)));
  return [...first, ...files.filter((f) => !first.includes(f))];
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
