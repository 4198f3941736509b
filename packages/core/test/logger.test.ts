import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../src/logger.ts';

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    decodeStrings: false,
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { stream, lines: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

test('lines below the level are skipped before any formatting, on the logger and its children', async () => {
  const out = capture();
  const logger = createLogger({ level: 'info', format: 'json', stream: out.stream });
  const child = logger.child({ job_id: 'req_1' });
  // A field that throws when read: formatting a skipped line would touch it.
  const trap = {
    get model(): string {
      throw new Error('a skipped line was formatted');
    },
  };
  child.debug('calling upstream', trap);
  logger.debug('calling upstream', trap);
  logger.verbose('noise', trap);
  child.info('job completed', { ms: 3 });
  logger.warn('careful');
  logger.log('info', 'by name');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    out.lines().map((l) => [l.level, l.message, l.job_id]),
    [
      ['info', 'job completed', 'req_1'],
      ['warn', 'careful', undefined],
      ['info', 'by name', undefined],
    ],
  );
  assert.equal(logger.isDebugEnabled(), false);
  assert.equal(child.isInfoEnabled(), true);
});

test('at debug every level is written, and secrets are still redacted', async () => {
  const out = capture();
  const logger = createLogger({ level: 'debug', format: 'json', stream: out.stream, secrets: ['pk_0123456789abcdef'] });
  logger.child({ request_id: 'r' }).debug('calling upstream', { key: 'pk_0123456789abcdef', authorization: 'Bearer abc' });
  await new Promise((r) => setImmediate(r));
  const [line] = out.lines();
  assert.equal(line?.message, 'calling upstream');
  assert.equal(line?.key, '[redacted]');
  assert.equal(line?.authorization, '[redacted]');
});
