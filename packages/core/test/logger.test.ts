import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { eventually, fillDisk, smallDisk, within } from '../../../test/helpers/index.ts';
import { LOG_FILE_CHECK_MS, createLogFile } from '../src/log-file.ts';
import { closeLogger, createLogger, lineWriter } from '../src/logger.ts';

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

test('the finished line is scrubbed: secrets (even ones JSON escapes), bearer tokens and sk- keys anywhere in it', async () => {
  const out = capture();
  const quoted = 'pk_"quoted\\secret"_0123';
  const logger = createLogger({ level: 'info', format: 'json', stream: out.stream, secrets: ['pk_0123456789abcdef', quoted] });
  const err = Object.assign(new Error('upstream said: Incorrect API key provided: sk-fake_abcdefghijklmnop'), { code: 'E_UP' });
  logger.error('call failed', { err, note: `key pk_0123456789abcdef and ${quoted}`, header: 'Bearer abc.def-ghi', nested: { deeper: ['sk-zyxwvutsrqponmlkji'] } });
  await new Promise((r) => setImmediate(r));
  const [raw] = out.lines().map((l) => JSON.stringify(l));
  assert.ok(raw);
  for (const leaked of ['pk_0123456789abcdef', 'quoted', 'abc.def-ghi', 'sk-fake_abcdefghijklmnop', 'sk-zyxwvutsrqponmlkji'])
    assert.ok(!raw.includes(leaked), `${leaked} leaked: ${raw}`);
  const [line] = out.lines();
  assert.equal(line?.note, 'key [redacted] and [redacted]');
  assert.equal(line?.header, 'Bearer [redacted]');
  assert.deepEqual((line?.err as { code: string; message: string }).code, 'E_UP');
  assert.match((line?.err as { message: string }).message, /Incorrect API key provided: sk-\[redacted\]/);
  assert.match(String(line?.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test('values JSON.stringify refuses (a cycle, a BigInt) are still written; text lines read as time, level, message, fields', async () => {
  const out = capture();
  const logger = createLogger({ level: 'info', format: 'json', stream: out.stream });
  const cyclic: Record<string, unknown> = { name: 'loop' };
  cyclic.self = cyclic;
  logger.info('odd values', { big: 12345678901234567890n, cyclic });
  await new Promise((r) => setImmediate(r));
  const [line] = out.lines();
  assert.equal(line?.big, '12345678901234567890');
  assert.equal(line?.message, 'odd values');

  const lines: string[] = [];
  const text = createLogger({
    level: 'info',
    format: 'text',
    stream: new Writable({ decodeStrings: false, write: (c, _e, done) => (lines.push(String(c)), done()) }),
  });
  text.warn('disk nearly full', { free_mb: 12 });
  // A field from outside (an upstream's finish reason) with a C1 control, which JSON leaves as it is,
  // and a message with ESC: written out for the terminal.
  text.info('job \x1b[2Jcompleted', { finish_reason: 'odd\x9b\u200f' });
  await new Promise((r) => setImmediate(r));
  assert.match(lines[0] ?? '', /^\d\d:\d\d:\d\d\.\d{3} warn {2}disk nearly full \{"free_mb":12\}\n?$/);
  assert.match(lines[1] ?? '', /^\d\d:\d\d:\d\d\.\d{3} info {2}job \\u001b\[2Jcompleted \{"finish_reason":"odd\\u009b\\u200f"\}\n?$/);
});

test("lineWriter writes logger[level]'s own line, to the same streams in order with the logger's other lines, and skips winston only where it changes nothing", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-lines-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const printed: string[] = [];
  const stream = new Writable({ decodeStrings: false, write: (c, _e, done) => (printed.push(String(c)), done()) });
  const secret = 'line-secret-0123456789abcdef';
  const logger = createLogger({ level: 'info', format: 'json', stream, secrets: [secret], dir, file: 'x.log', defaultMeta: { app: 'api' } });
  const access = lineWriter(logger, 'info', 'request');
  const fields = (n: number) => ({ request_id: `r${n}`, path: `/v1/requests/${secret}`, status: 200, ms: 0.4 });
  logger.info('request', fields(1));
  access(fields(2));
  logger.warn('between', { nested: { api_key: 'x' } });
  access(fields(3));
  // Fields winston treats apart go through winston, as written by logger.info.
  access({ ...fields(4), message: 'more' });
  lineWriter(logger, 'debug', 'below the level')({ n: 5 });
  await closeLogger(logger);
  access(fields(6));
  const file = readFileSync(join(dir, 'x.log'), 'utf8');
  assert.equal(printed.join(''), file, 'stdout and the file get the same lines');
  const lines = file.trim().split('\n');
  const timeless = lines.map((l) => l.replace(/"timestamp":"[^"]+"/, '"timestamp":"T"'));
  assert.deepEqual(timeless, [
    '{"app":"api","request_id":"r1","path":"/v1/requests/[redacted]","status":200,"ms":0.4,"level":"info","message":"request","timestamp":"T"}',
    '{"app":"api","request_id":"r2","path":"/v1/requests/[redacted]","status":200,"ms":0.4,"level":"info","message":"request","timestamp":"T"}',
    '{"app":"api","nested":{"api_key":"[redacted]"},"level":"warn","message":"between","timestamp":"T"}',
    '{"app":"api","request_id":"r3","path":"/v1/requests/[redacted]","status":200,"ms":0.4,"level":"info","message":"request","timestamp":"T"}',
    '{"app":"api","request_id":"r4","path":"/v1/requests/[redacted]","status":200,"ms":0.4,"message":"request more","level":"info","timestamp":"T"}',
  ]);
  // A terminal gets text and the file JSON: two formats, which winston's transports apply.
  const text: string[] = [];
  const onTerminal = createLogger({ level: 'info', format: 'text', stream: new Writable({ decodeStrings: false, write: (c, _e, done) => (text.push(String(c)), done()) }) });
  lineWriter(onTerminal, 'info', 'request')({ status: 200 });
  await new Promise((r) => setImmediate(r));
  assert.match(text.join(''), /^\d\d:\d\d:\d\d\.\d{3} info {2}request \{"status":200\}\n$/);
});

test("every line's timestamp is the time it was written, as Date's toISOString gives it, across seconds", async () => {
  const out = capture();
  const logger = createLogger({ level: 'info', format: 'json', stream: out.stream });
  const bounds: Array<[string, string]> = [];
  const until = Date.now() + 2100;
  while (Date.now() < until) {
    const before = new Date().toISOString();
    logger.info('tick', { n: bounds.length });
    bounds.push([before, new Date().toISOString()]);
    await new Promise((r) => setTimeout(r, 3));
  }
  const stamps = out.lines().map((l) => String(l.timestamp));
  assert.equal(stamps.length, bounds.length);
  assert.ok(new Set(stamps.map((s) => s.slice(0, 19))).size >= 2, 'the lines span more than one second');
  stamps.forEach((stamp, i) => {
    const [before, after] = bounds[i] as [string, string];
    assert.match(stamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(before <= stamp && stamp <= after, `${stamp} not within ${before} .. ${after}`);
  });
});

test('a LOG_DIR that is a file, or under one, is refused at start naming what is wrong', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-file-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'a-file');
  writeFileSync(file, 'not a folder');
  assert.throws(() => createLogger({ level: 'info', format: 'json', dir: file, file: 'x.log' }), { message: `LOG_DIR: ${file} is not a folder` });
  assert.throws(() => createLogger({ level: 'info', format: 'json', dir: join(file, 'logs'), file: 'x.log' }), {
    message: `LOG_DIR: cannot make the folder ${join(file, 'logs')}: a folder on its path is a file`,
  });
});

test('LOG_DIR gets redacted JSON lines whatever the terminal gets: text on stdout, or the same JSON line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-file-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const secret = 'file-secret-0123456789abcdef';
  for (const format of ['text', 'json'] as const) {
    const printed: string[] = [];
    const stream = new Writable({ decodeStrings: false, write: (c, _e, done) => (printed.push(String(c)), done()) });
    const logger = createLogger({ level: 'info', format, stream, secrets: [secret], dir, file: `${format}.log`, defaultMeta: { app: 'api' } });
    logger.child({ job_id: 'req_1' }).warn('disk nearly full', { free_mb: 12, note: `key ${secret}`, api_key: 'x' });
    await closeLogger(logger);
    const [line, ...more] = readFileSync(join(dir, `${format}.log`), 'utf8')
      .trim()
      .split('\n');
    assert.deepEqual(more, []);
    const logged = JSON.parse(line ?? '') as Record<string, unknown>;
    assert.deepEqual(
      [logged.level, logged.message, logged.app, logged.job_id, logged.free_mb, logged.note, logged.api_key],
      ['warn', 'disk nearly full', 'api', 'req_1', 12, 'key [redacted]', '[redacted]'],
    );
    assert.match(String(logged.timestamp), /^\d{4}-\d\d-\d\dT/);
    if (format === 'json') assert.equal(printed.join('').trim(), line, 'stdout and the file carry the same line');
    else assert.match(printed.join(''), /^\d\d:\d\d:\d\d\.\d{3} warn {2}disk nearly full \{/);
  }
});

test('closeLogger: a process that exits right after it has every line in its log file, and a line logged later is dropped, not a crash', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-close-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const logger = new URL('../src/logger.ts', import.meta.url).href;
  // Lines logged just before process.exit(): without closeLogger none reached the file (measured).
  const script = `
    const { createLogger, closeLogger } = await import(${JSON.stringify(logger)});
    const logger = createLogger({ level: 'info', format: 'json', stream: new (await import('node:stream')).PassThrough(), dir: ${JSON.stringify(dir)}, file: 'x.log' });
    const child = logger.child({ job_id: 'j' });
    for (let i = 0; i < 2000; i++) (i % 2 ? child : logger).info('line ' + i);
    logger.info('stopped');
    await closeLogger(logger);
    logger.warn('too late');
    child.info('too late');
    await new Promise((r) => setTimeout(r, 20));
    process.exit(0);`;
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const lines = readFileSync(join(dir, 'x.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l).message);
  assert.equal(lines.length, 2001);
  assert.equal(lines.at(-1), 'stopped');
});

test('stdout going away (its reader ended, or its terminal closed) is not fatal: lines go on to the log file, and the program runs on', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-stdout-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const logger = new URL('../src/logger.ts', import.meta.url).href;
  // A line a turn, on stdout (the default) and in a file; the parent stops reading after the first.
  const script = `
    const { createLogger, closeLogger } = await import(${JSON.stringify(logger)});
    const logger = createLogger({ level: 'info', format: 'json', dir: ${JSON.stringify(dir)}, file: 'x.log' });
    for (let i = 0; i < 50; i++) {
      logger.info('line ' + i);
      await new Promise((r) => setTimeout(r, 10));
    }
    logger.info('done');
    await closeLogger(logger);
    process.exit(0);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  await new Promise((resolve) => child.stdout.once('data', resolve));
  child.stdout.destroy();
  const code = await new Promise((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, stderr);
  assert.equal(stderr, 'stdout is gone (EPIPE): log lines are no longer written to it\n', 'one line says so, on stderr');
  const lines = readFileSync(join(dir, 'x.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l).message);
  assert.equal(lines.length, 51);
  assert.equal(lines.at(-1), 'done');
});

test('stdout whose reader stops reading (a stalled journald, a stuck `| tee`) holds at most 4 MB of lines: the rest are dropped, said once on stderr, and counted on stdout once it is read again', async (t) => {
  const logger = new URL('../src/logger.ts', import.meta.url).href;
  // 100,000 lines of about 340 characters (34 MB) while the parent does not read stdout; then, once
  // it reads again and stdout has been taken whole, ten more.
  const script = `
    const { createLogger, closeLogger } = await import(${JSON.stringify(logger)});
    const logger = createLogger({ level: 'info', format: 'json', defaultMeta: { app: 'api' } });
    const turn = () => new Promise((r) => setImmediate(r));
    let most = 0;
    for (let i = 0; i < 100000; i++) {
      logger.info('during ' + i, { pad: 'x'.repeat(260) });
      if (i % 500 === 0) {
        await turn();
        most = Math.max(most, process.stdout.writableLength);
      }
    }
    await new Promise((r) => setTimeout(r, 100));
    process.stderr.write(JSON.stringify({ most: Math.max(most, process.stdout.writableLength) }) + '\\n');
    while (process.stdout.writableLength > 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 10; i++) logger.info('after ' + i);
    await closeLogger(logger);
    await new Promise((r) => setTimeout(r, 50));
    process.exit(0);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  child.stdout.pause();
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await eventually(async () => /"most"/.test(stderr) || (child.exitCode !== null && assert.fail(`exited: ${stderr}`)), 60_000, 10);
  const { most } = JSON.parse(/\{"most".*\}/.exec(stderr)![0]) as { most: number };
  let stdout = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => (stdout += d));
  child.stdout.resume();
  assert.equal(await within(exited, 30_000, 'the child exiting'), 0, stderr);
  // Node held every line the reader had not taken: about 34 MB here.
  assert.ok(most < 5 * 1024 * 1024, `stdout held ${(most / 1e6).toFixed(1)} MB of lines nobody read`);
  t.diagnostic(`stdout held at most ${(most / 1e6).toFixed(1)} MB of lines`);
  assert.deepEqual(
    stderr.split('\n').filter((l) => l && !l.startsWith('{"most"')),
    ["stdout is not read: log lines are dropped until it is (LOG_DIR's files keep them)"],
  );
  const lines = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const notices = lines.filter((l) => l.message === 'log lines dropped: stdout was not read');
  assert.equal(notices.length, 1, 'one line counts them');
  const dropped = notices[0]!.dropped as number;
  const during = lines.filter((l) => String(l.message).startsWith('during ')).length;
  assert.deepEqual([notices[0]!.app, notices[0]!.level], ['api', 'warn'], "the logger's fixed fields, at warn");
  assert.ok(dropped > 50_000, `${dropped} dropped`);
  assert.equal(during + dropped, 100_000, 'every line is written or counted');
  const messages = lines.map((l) => l.message);
  assert.deepEqual(
    messages.slice(-10),
    Array.from({ length: 10 }, (_, i) => `after ${i}`),
    'lines flow again once stdout is read',
  );
  assert.ok(messages.indexOf('log lines dropped: stdout was not read') < messages.indexOf('after 0'));
});

test('LOG_DIR on a full disk: lines are dropped, said once on stderr, memory stays flat; once there is room the file gets lines again, and says how many were lost', async (t) => {
  const mnt = smallDisk(t, '1m');
  if (!mnt) return;
  const logger = new URL('../src/logger.ts', import.meta.url).href;
  // Commands on stdin, answers on stdout; its log lines go to the file only.
  const script = `
    const { createLogger, closeLogger } = await import(${JSON.stringify(logger)});
    const { Writable } = await import('node:stream');
    const { createInterface } = await import('node:readline');
    const logger = createLogger({ level: 'info', format: 'json', stream: new Writable({ write: (_c, _e, done) => done() }), dir: ${JSON.stringify(mnt)}, file: 'x.log' });
    const turn = () => new Promise((r) => setImmediate(r));
    for await (const command of createInterface({ input: process.stdin })) {
      if (command === 'start') {
        logger.info('before');
        await new Promise((r) => setTimeout(r, 100));
        console.log('started');
      } else if (command === 'flood') {
        global.gc();
        const before = process.memoryUsage().heapUsed;
        for (let i = 0; i < 100000; i++) {
          logger.info('during ' + i, { pad: 'x'.repeat(300) });
          if (i % 500 === 0) await turn();
        }
        await new Promise((r) => setTimeout(r, 100));
        global.gc();
        console.log(JSON.stringify({ heapGrewMb: (process.memoryUsage().heapUsed - before) / 1e6 }));
      } else if (command === 'room') {
        // Logged before the next try (a second after the last failed write): dropped.
        for (let i = 0; i < 10; i++) logger.info('after ' + i);
        await new Promise((r) => setTimeout(r, 1500));
        for (let i = 0; i < 10; i++) logger.info('later ' + i);
        await closeLogger(logger);
        process.exit(0);
      }
    }`;
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const answer = async (command: string, seen: RegExp) => {
    child.stdin.write(`${command}\n`);
    await eventually(async () => seen.test(stdout) || (child.exitCode !== null && assert.fail(`exited: ${stderr}`)), 60_000, 10);
  };
  await answer('start', /started\n/);
  const filler = fillDisk(mnt);
  await answer('flood', /heapGrewMb/);
  const { heapGrewMb } = JSON.parse(/\{"heapGrewMb".*\}/.exec(stdout)![0]) as { heapGrewMb: number };
  // winston's file transport held every line it could not write (and a closure each): over 100 MB.
  assert.ok(heapGrewMb < 30, `the heap grew ${heapGrewMb.toFixed(1)} MB over 100,000 lines it could not write`);
  t.diagnostic(`heap grew ${heapGrewMb.toFixed(1)} MB over 100,000 lines the full disk refused`);
  rmSync(filler);
  child.stdin.write('room\n');
  assert.equal(await within(exited, 15_000, 'the child exiting'), 0, stderr);

  const path = join(mnt, 'x.log');
  const told = stderr.split('\n').filter(Boolean);
  assert.equal(told.length, 2, stderr);
  assert.equal(told[0], `LOG_DIR: cannot write ${path} (ENOSPC): its lines are dropped until it can be written again`);
  const dropped = Number(/^LOG_DIR: writing .* again; (\d+) lines were dropped$/.exec(told[1]!)?.[1]);
  assert.ok(dropped > 90_000 && dropped <= 100_010, told[1]);
  // A line the disk cut short stands alone: every other line is whole JSON.
  const lines = readFileSync(path, 'utf8').trim().split('\n');
  const whole = lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
  assert.ok(lines.length - whole.length <= 1, `${lines.length - whole.length} lines are not JSON`);
  const messages = whole.map((l) => l.message);
  assert.equal(messages[0], 'before');
  const notice = whole.find((l) => String(l.message).startsWith('log lines dropped'));
  assert.deepEqual([notice?.level, notice?.message, notice?.dropped], ['warn', `log lines dropped: ${path} could not be written (ENOSPC)`, dropped]);
  for (let i = 0; i < 10; i++) assert.ok(messages.includes(`later ${i}`), `line ${i} after the next try is in the file`);
});

test('log files roll over at their size, newest first (x.log, x1.log, x2.log), keeping as many as told', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-rotate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = createLogFile({ dir, file: 'x.log', maxBytes: 1000, keep: 3 });
  // 100 lines of 40 bytes, one a turn: 25 to a file, 4,000 bytes in all.
  for (let i = 0; i < 100; i++) {
    file.write(`${JSON.stringify({ n: i, pad: 'x'.repeat(20) })}\n`);
    await new Promise((r) => setImmediate(r));
  }
  await new Promise<void>((resolve) => file.end(resolve));
  assert.deepEqual(readdirSync(dir).sort(), ['x.log', 'x1.log', 'x2.log']);
  const numbers = (name: string) =>
    readFileSync(join(dir, name), 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { n: number }).n);
  for (const name of ['x.log', 'x1.log', 'x2.log']) assert.ok(readFileSync(join(dir, name)).length <= 1000, `${name} is over its size`);
  // The newest lines, in order, across the files kept.
  const kept = [...numbers('x2.log'), ...numbers('x1.log'), ...numbers('x.log')];
  assert.deepEqual(
    kept,
    Array.from({ length: kept.length }, (_, i) => 100 - kept.length + i),
  );
  assert.ok(kept.length >= 50, `${kept.length} lines kept`);
});

test('after the clock stepped back an hour, a log file moved away is still opened again at its path within a second', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-stepped-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'x.log');
  const file = createLogFile({ dir, file: 'x.log', maxBytes: 10_000_000, keep: 2 });
  file.write('{"n":0}\n');
  await eventually(async () => existsSync(path) && readFileSync(path, 'utf8').length > 0, 2000);
  const realNow = Date.now.bind(Date);
  t.mock.method(Date, 'now', () => realNow() - 3_600_000);
  renameSync(path, join(dir, 'x.log.1'));
  await new Promise((r) => setTimeout(r, LOG_FILE_CHECK_MS + 100));
  file.write('{"n":1}\n');
  await eventually(async () => existsSync(path) && readFileSync(path, 'utf8') === '{"n":1}\n', 2000);
});

test('a log file moved away (logrotate) or deleted is opened again at its path within a second; no line is lost to a file that is gone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-moved-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'x.log');
  const file = createLogFile({ dir, file: 'x.log', maxBytes: 10_000_000, keep: 2 });
  const write = async (from: number, to: number) => {
    for (let n = from; n < to; n++) {
      file.write(`${JSON.stringify({ n })}\n`);
      await new Promise((r) => setImmediate(r));
    }
  };
  // The whole lines of a file; none while it is not there yet, or is new and empty.
  const numbers = (name: string) => {
    const text = existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8') : '';
    return text
      .split('\n')
      .filter((l) => l.endsWith('}'))
      .map((l) => (JSON.parse(l) as { n: number }).n);
  };
  await write(0, 10);
  renameSync(path, join(dir, 'x.log.1'));
  await new Promise((r) => setTimeout(r, LOG_FILE_CHECK_MS + 100));
  await write(10, 20);
  await eventually(async () => numbers('x.log.1').length + numbers('x.log').length === 20, 2000);
  // The lines written before the move stay in the moved file; those written after the check, a
  // second on, are at the path.
  assert.deepEqual(
    numbers('x.log.1'),
    Array.from({ length: 10 }, (_, i) => i),
  );
  assert.deepEqual(
    numbers('x.log'),
    Array.from({ length: 10 }, (_, i) => 10 + i),
  );

  unlinkSync(path);
  await new Promise((r) => setTimeout(r, LOG_FILE_CHECK_MS + 100));
  await write(20, 30);
  await eventually(async () => numbers('x.log').length === 10, 2000);
  assert.deepEqual(
    numbers('x.log'),
    Array.from({ length: 10 }, (_, i) => 20 + i),
    'the lines after the delete are at the path',
  );
  await new Promise<void>((resolve) => file.end(resolve));
});

test('a log file that is a named pipe: with no reader the program neither blocks nor stops (its lines are dropped, said once); once a program reads it, lines flow; it is never rolled over', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-fifo-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pipe = join(dir, 'x.log');
  execFileSync('mkfifo', [pipe]);
  const logFile = new URL('../src/log-file.ts', import.meta.url).href;
  // A line every 10 ms for about 3 s, to a file rolled at 1,000 bytes. Opened without O_NONBLOCK,
  // a pipe no program reads held the open, and the process's only thread, for good: no signal
  // handler ran, and the stop under way never ended.
  const script = `
    const { createLogFile } = await import(${JSON.stringify(logFile)});
    const file = createLogFile({ dir: ${JSON.stringify(dir)}, file: 'x.log', maxBytes: 1000, keep: 3 });
    for (let i = 0; i < 300; i++) {
      file.write(JSON.stringify({ n: i, pad: 'x'.repeat(20) }) + '\\n');
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => file.end(r));`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  await eventually(async () => stderr.includes('\n'), 5000);
  assert.equal(stderr, `LOG_DIR: cannot write ${pipe} (ENXIO, a named pipe no program reads): its lines are dropped until it can be written again\n`);
  // A reader comes: the lines after the next try reach it, the count of those dropped first.
  let read = '';
  const reader = createReadStream(pipe, { encoding: 'utf8' });
  reader.on('data', (d) => (read += d));
  const readerEnded = new Promise<void>((resolve) => reader.on('close', () => resolve()));
  assert.equal(await within(exited, 10_000), 0, stderr);
  await within(readerEnded, 5000);
  const lines = read
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { n?: number; message?: string; dropped?: number });
  assert.match(lines[0]?.message ?? '', /^log lines dropped: .*x\.log could not be written \(ENXIO, a named pipe no program reads\)$/);
  assert.ok((lines[0]?.dropped ?? 0) > 0);
  const numbers = lines.slice(1).map((l) => l.n);
  assert.ok(numbers.length >= 100, `${numbers.length} lines read`);
  assert.deepEqual(
    numbers,
    Array.from({ length: numbers.length }, (_, i) => 300 - numbers.length + i),
    'every line from the first read on, in order',
  );
  assert.deepEqual(readdirSync(dir), ['x.log'], 'not rolled over, though past its size');
  assert.ok(statSync(pipe).isFIFO());
  assert.match(stderr, /LOG_DIR: writing .*x\.log again; \d+ lines were dropped\n$/);
});

test('a log file truncated in place (logrotate copytruncate) rolls at its size counted from the truncation, not from before it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-truncated-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = createLogFile({ dir, file: 'x.log', maxBytes: 1000, keep: 2 });
  const line = (n: number) => `${JSON.stringify({ n, pad: 'x'.repeat(20) })}\n`; // 40 bytes or so
  for (let n = 0; n < 20; n++) file.write(line(n));
  await eventually(async () => (statSync(join(dir, 'x.log'), { throwIfNoEntry: false })?.size ?? 0) > 700, 2000);
  truncateSync(join(dir, 'x.log'), 0);
  await new Promise((r) => setTimeout(r, LOG_FILE_CHECK_MS + 100));
  for (let n = 20; n < 30; n++) file.write(line(n));
  await new Promise<void>((resolve) => file.end(resolve));
  assert.deepEqual(readdirSync(dir), ['x.log'], 'not rolled: 400 bytes since the truncation');
});

test(
  'a LOG_DIR where the file system takes no new folder (procfs) is refused at once, not retried without end',
  { skip: process.platform !== 'linux' && 'procfs is Linux only' },
  () => {
    // Node's own recursive mkdir retries for as long as mkdir answers ENOENT under a parent that
    // exists, which /proc does: the process spun at full CPU. A child, so that a spin fails the test.
    const dir = '/proc/proxy-test-no-such-folder/logs';
    const script = `import { createLogger } from ${JSON.stringify(new URL('../src/logger.ts', import.meta.url).href)};
try { createLogger({ level: 'info', format: 'json', dir: ${JSON.stringify(dir)}, file: 'x.log' }); } catch (err) { console.log(err.message); }`;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.signal, null, `still making the folder after 20 s (killed): ${run.stderr}`);
    assert.equal(run.stdout.trim(), `LOG_DIR: cannot make the folder ${dir}: the file system there takes no new folder (ENOENT)`);
  },
);
