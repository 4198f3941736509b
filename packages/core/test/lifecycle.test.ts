import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { within, type TestHooks } from '../../../test/helpers/index.ts';

const source = (path: string) => JSON.stringify(fileURLToPath(new URL(path, import.meta.url)));

/**
 * A program as the entry files build one: a start-up of `startupMs`, then the stop contract, then
 * work that ends by itself after `workMs` (as `proxy-worker once` does). Its drain takes 200 ms.
 * With `failAfterMs`, something it depends on fails that long after the start (its database file
 * gone, say) and stops it as a failure.
 */
const program = (startupMs: number, workMs: number, failAfterMs?: number) => `
  const { createLogger } = await import(${source('../src/logger.ts')});
  const { handleStopSignals } = await import(${source('../src/process/lifecycle.ts')});
  const { writeSync } = await import('node:fs');
  process.on('exit', (code) => writeSync(1, 'exit ' + code + '\\n'));
  const logger = createLogger({ level: 'info', format: 'json', stream: process.stdout });
  await new Promise((r) => setTimeout(r, ${startupMs}));
  let work;
  const failure = new AbortController();
  if (${failAfterMs ?? -1} >= 0) setTimeout(() => failure.abort('the file is gone'), ${failAfterMs ?? -1});
  handleStopSignals(logger, async () => {
    clearTimeout(work);
    await new Promise((r) => setTimeout(r, 200));
    logger.info('drained');
  }, { failWhen: failure.signal });
  logger.info('started');
  work = setTimeout(() => logger.info('work done'), ${workMs});`;

/**
 * Starts `program` under a parent that holds an IPC channel to it, as scripts/start.mjs does.
 * Output of both comes through one pipe, which ends when both have exited.
 */
function underParent(t: TestHooks, code: string) {
  const parent = `
    const { spawn } = require('node:child_process');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', ${JSON.stringify(code)}], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    console.log('child ' + child.pid);
    child.on('exit', (code) => console.log('parent saw the child exit ' + code));
    setInterval(() => {}, 1000);`;
  const proc = spawn(process.execPath, ['-e', parent], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let buf = '';
  proc.stdout.on('data', (d) => {
    buf += String(d);
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const line of parts) lines.push(JSON.parse(line.startsWith('{') ? line : JSON.stringify({ message: line })).message);
    for (const wake of waiters.splice(0)) wake();
  });
  const ended = new Promise<string[]>((resolve) => proc.stdout.on('end', () => resolve(lines)));
  const childPid = () => Number(lines.find((l) => l.startsWith('child '))?.slice(6));
  t.after(() => {
    proc.kill('SIGKILL');
    try {
      if (childPid()) process.kill(childPid(), 'SIGKILL');
    } catch {
      // Already gone, as it should be.
    }
  });
  const until = async (what: string, done: () => boolean) => {
    while (!done()) await within(new Promise<void>((r) => waiters.push(r)), 15_000, what);
  };
  return {
    lines,
    ended,
    childPid,
    seen: (message: string) => until(`"${message}"`, () => lines.includes(message)),
    seenChild: () => until('the child pid', () => childPid() > 0),
    killParent: () => proc.kill('SIGKILL'),
  };
}

test('a program whose supervising parent is killed outright drains once and exits 0, instead of running on alone', async (t) => {
  const run = underParent(t, program(0, 60_000));
  await run.seen('started');
  run.killParent();
  const lines = await within(run.ended, 15_000, 'the program exiting');
  assert.deepEqual(
    lines.filter((l) => !l.startsWith('child ')),
    ['started', 'parent process gone: draining', 'drained', 'exit 0'],
  );
});

test('a parent that dies during a drain is not a second stop: the drain finishes and the program exits 0', async (t) => {
  const run = underParent(t, program(0, 60_000));
  await run.seen('started');
  process.kill(run.childPid(), 'SIGTERM');
  await run.seen('stop signal: draining');
  run.killParent();
  const lines = await within(run.ended, 15_000, 'the program exiting');
  assert.deepEqual(
    lines.filter((l) => !l.startsWith('child ')),
    ['started', 'stop signal: draining', 'drained', 'exit 0'],
  );
});

test('a parent that dies during start-up stops the program as soon as its stop handling is set up', async (t) => {
  const run = underParent(t, program(1500, 60_000));
  await run.seenChild();
  run.killParent();
  const lines = await within(run.ended, 15_000, 'the program exiting');
  assert.deepEqual(
    lines.filter((l) => !l.startsWith('child ')),
    ['parent process gone: draining', 'started', 'drained', 'exit 0'],
  );
});

test('the channel does not keep a program alive: one whose work ends exits by itself while its parent lives', async (t) => {
  const run = underParent(t, program(0, 100));
  await run.seen('parent saw the child exit 0');
  assert.deepEqual(
    run.lines.filter((l) => !l.startsWith('child ')),
    ['started', 'work done', 'exit 0', 'parent saw the child exit 0'],
  );
});

test('without a channel (systemd, cron, a shell) a stop signal drains as before', async (t) => {
  const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program(0, 60_000)], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => proc.kill('SIGKILL'));
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', resolve));
  while (!out.includes('"started"')) await within(new Promise((r) => proc.stdout.once('data', r)), 15_000, 'start');
  proc.kill('SIGTERM');
  assert.equal(await within(exited, 15_000, 'the drain'), 0);
  assert.match(out, /"signal":"SIGTERM"[^\n]*"message":"stop signal: draining"/);
  assert.match(out, /"drained"/);
});

test('a failure it is told of (failWhen) drains as a stop signal does, logged as an error, and the program exits 1; told during a drain, it only makes the exit 1', async (t) => {
  const run = async (failAfterMs: number, signalAfterMs: number | null) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program(0, 60_000, failAfterMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
    t.after(() => proc.kill('SIGKILL'));
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => proc.on('exit', resolve));
    if (signalAfterMs !== null) {
      while (!out.includes('"started"')) await within(new Promise((r) => proc.stdout.once('data', r)), 15_000, 'start');
      proc.kill('SIGTERM');
    }
    const code = await within(exited, 15_000, 'the drain');
    const lines = out
      .trim()
      .split('\n')
      .map((line) => (line.startsWith('{') ? JSON.parse(line) : { message: line }));
    return { code, lines: lines.map((l) => (l.level ? `${l.level} ${l.message}` : l.message)) };
  };
  assert.deepEqual(await run(300, null), { code: 1, lines: ['info started', 'error the file is gone: draining', 'info drained', 'exit 1'] });
  // The signal first: its drain (200 ms) is under way when the failure comes 100 ms in.
  const both = await run(100, 0);
  assert.equal(both.code, 1);
  assert.deepEqual(
    both.lines.filter((l) => l.includes('draining') || l.includes('drained')),
    ['info stop signal: draining', 'info drained'],
  );
});
