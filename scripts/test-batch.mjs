// One batch of scripts/run-tests.mjs: the test files on its command line, run with Node's runner in
// the order given, `concurrency` at once. `node --test` sorts the files it is given by name, so the
// longest could not be started first (LONGEST_FIRST in test-batches.mjs); its run() keeps the
// order. Output and exit code are those of `node --test --test-reporter=spec`: the spec report on
// stdout, 1 when a test failed. Started as
//   node --import tsx --test-timeout=MS scripts/test-batch.mjs CONCURRENCY MS FILE...
// each file's process gets this one's flags, as `node --test` passes its own: tsx, and the limit on
// each test; MS also stops a file whose process still runs after it.
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

const [concurrency, timeout, ...files] = process.argv.slice(2);
run({ files, concurrency: Number(concurrency), timeout: Number(timeout) })
  .on('test:fail', (data) => {
    if (!data.todo) process.exitCode = 1;
  })
  .compose(new spec())
  .pipe(process.stdout);
