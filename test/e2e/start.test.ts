import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startStubUpstream, type StubUpstream } from '../../scripts/stub-upstream.ts';
import type { JobStore } from '../../packages/core/src/store/types.ts';
import { ROOT, enqueueJob, eventually, getJson, openTestStore, processesWhere, spawnNode, tempDir, testEnv, within, type Child, type TestHooks } from '../helpers/index.ts';

const START = join(ROOT, 'scripts/start.mjs');

type T = TestHooks;

/** The programs start.mjs started in `dir` (and itself), found by their HOME. */
const programsOf = (dir: string) => processesWhere((pid) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`HOME=${dir}`));

/** Kills whatever a test left running in `dir`: a start.mjs that died may have left its programs. */
function killProgramsOf(dir: string): void {
  for (const pid of programsOf(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Ended since it was found.
    }
  }
}

/**
 * Runs start.mjs in `dir`. When the test ends, it and every program it started are killed: they run
 * in process groups of their own, so a start.mjs that died without stopping them leaves them behind.
 */
function runStart(t: T, env: Record<string, string>, dir: string, ownGroup = false): Child {
  const start = spawnNode(START, [], env, dir, { ownGroup });
  t.after(async () => {
    start.kill('SIGKILL');
    await start.exited;
    killProgramsOf(dir);
  });
  return start;
}

test('first start without .env writes one with fresh credentials; without an upstream key it stops, naming the setting', async (t) => {
  const dir = tempDir(t);
  const env = testEnv(dir);
  delete (env as Record<string, string | undefined>).PROXY_DB_PATH;
  const start = runStart(t, env, dir);
  const exit = await start.exited;
  assert.equal(exit.code, 78);
  const envFile = join(dir, '.env');
  assert.ok(existsSync(envFile));
  assert.equal(statSync(envFile).mode & 0o777, 0o600, '.env holds secrets: owner-only');
  const text = readFileSync(envFile, 'utf8');
  assert.match(text, /^PROXY_KEY=pk_[0-9a-f]{32}$/m);
  assert.match(text, /^PROXY_SECRET=[0-9a-f]{64}$/m);
  assert.ok(start.lines.some((l) => l.includes(`wrote ${envFile}`)));
  assert.ok(
    start.stderr.some((l) => /^proxy-worker: OPENAI_API_KEY is not set/.test(l)),
    start.stderr.join('\n'),
  );
  const secret = /^PROXY_SECRET=(.*)$/m.exec(text)?.[1] as string;
  assert.ok(![...start.lines, ...start.stderr].some((l) => l.includes(secret)), 'the secret is never printed');
});

test('npm start takes no arguments: one (npm start -- --port 9000) stops it with exit 64 before .env is written or a program started', async (t) => {
  const dir = tempDir(t);
  const start = spawnNode(START, ['--port', '9000'], testEnv(dir), dir);
  t.after(() => killProgramsOf(dir));
  assert.deepEqual(await within(start.exited, 10_000, 'start'), { code: 64, signal: null });
  assert.deepEqual(start.stderr.filter(Boolean), ['start: takes no arguments; settings come from .env or the environment, as PORT=9000 npm start']);
  assert.equal(existsSync(join(dir, '.env')), false);
  assert.deepEqual(programsOf(dir), []);
});

/** npm start with a stub whose answers take a second, and the store it runs on. */
async function startWithSlowUpstream(t: T, ownGroup = false) {
  const dir = tempDir(t);
  const stub = await startStubUpstream({ delayMs: 1000 });
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-test-start', OPENAI_BASE_URL: stub.url });
  const start = runStart(t, env, dir, ownGroup);
  const store = await openTestStore(env);
  t.after(async () => {
    await store.close();
    await stub.close();
  });
  const line = await start.waitFor((l) => l.includes('proxy-api listening'));
  await start.waitFor((l) => l.includes('worker started'));
  const { port } = JSON.parse(line) as { port: number };
  return { start, stub, store, dir, url: `http://127.0.0.1:${port}` };
}

/** A job in flight at the stop: once stopped, it completed, called once, and no program heard a second signal. */
async function assertDrained(start: Child, stub: StubUpstream, store: JobStore, id: string) {
  const exit = await within(start.exited, 10_000, 'stop');
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.equal((await store.getJob(id))?.status, 'completed', 'the call in flight finished before the worker exited');
  assert.equal(stub.calls.length, 1);
  assert.ok(!start.lines.some((l) => l.includes('second stop signal')), 'each program got one stop signal');
}

test('with a key, npm start runs API and worker; SIGTERM stops both with exit 0, the worker finishing its call first', async (t) => {
  const { start, stub, store, url } = await startWithSlowUpstream(t);
  assert.equal((await getJson(url, '/health')).status, 200);
  const id = await enqueueJob(store, 'in flight at the stop');
  await eventually(async () => stub.inflight() === 1);
  // The API drains at once; the worker then still has most of a second of its call to go.
  start.kill('SIGTERM');
  await assertDrained(start, stub, store, id);
});

test('Ctrl-C on npm start (the terminal signals the whole group, npm passes it on again) is one stop: the worker finishes its call', async (t) => {
  const { start, stub, store } = await startWithSlowUpstream(t, true);
  const id = await enqueueJob(store, 'in flight at Ctrl-C');
  await eventually(async () => stub.inflight() === 1);
  const pid = start.proc.pid as number;
  process.kill(-pid, 'SIGINT');
  process.kill(pid, 'SIGINT');
  await assertDrained(start, stub, store, id);
});

test('a second stop signal to npm start, later than the copies of one Ctrl-C, still exits at once', async (t) => {
  const { start, stub, store } = await startWithSlowUpstream(t, true);
  stub.behave(() => new Promise(() => {}));
  const id = await enqueueJob(store, 'never answered');
  await eventually(async () => stub.inflight() === 1);
  start.kill('SIGTERM');
  await start.waitFor((l) => l.includes('draining') && l.includes('worker'));
  await new Promise((r) => setTimeout(r, 300));
  start.kill('SIGTERM');
  const exit = await within(start.exited, 3000, 'the forced exit');
  assert.equal(exit.code, 1);
  assert.ok(start.lines.some((l) => l.includes('second stop signal')));
  assert.equal((await store.getJob(id))?.status, 'in_progress', 'the call was cut off, not finished');
});

test('SIGHUP to npm start (what a closing terminal sends it) stops both programs the same way, instead of leaving them running', async (t) => {
  const { start } = await startWithSlowUpstream(t, true);
  start.kill('SIGHUP');
  const exit = await within(start.exited, 10_000, 'stop');
  assert.deepEqual(exit, { code: 0, signal: null });
  for (const app of ['api', 'worker'])
    assert.ok(
      start.lines.some((l) => l.includes('stop signal: draining') && l.includes(`"app":"${app}"`)),
      `${app} drained`,
    );
});

test('npm start killed outright (SIGKILL, which it cannot pass on) leaves nothing running: both programs drain, the worker finishing its call', async (t) => {
  const { start, stub, store, dir } = await startWithSlowUpstream(t);
  const id = await enqueueJob(store, 'in flight when the launcher dies');
  await eventually(async () => stub.inflight() === 1);
  assert.equal(programsOf(dir).length, 3, 'start.mjs and its two programs');
  start.kill('SIGKILL');
  await start.exited;
  await eventually(async () => programsOf(dir).length === 0, 10_000);
  assert.equal((await store.getJob(id))?.status, 'completed', 'the call in flight finished before the worker exited');
  assert.equal(stub.calls.length, 1);
  for (const app of ['api', 'worker'])
    assert.ok(
      start.lines.some((l) => l.includes('parent process gone: draining') && l.includes(`"app":"${app}"`)),
      `${app} drained`,
    );
  assert.ok(!start.lines.some((l) => l.includes('second stop signal')));
});

test('npm start in a terminal that is closed (the pty hung up) drains both programs: lines to the dead terminal are dropped, not fatal', async (t) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream({ delayMs: 1000 });
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-test-start', OPENAI_BASE_URL: stub.url, LOG_DIR: join(dir, 'logs') });
  // script(1) runs start.mjs on a pseudo-terminal, as a terminal emulator does. Killing it closes the
  // terminal's master side: the kernel hangs the terminal up, and every later write to it fails.
  const terminal = spawn('script', ['-qfec', `${process.execPath} ${START}`, '/dev/null'], { cwd: dir, env, stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  terminal.stdout.on('data', (d) => (screen += d));
  t.after(() => {
    terminal.kill('SIGKILL');
    killProgramsOf(dir);
  });
  const store = await openTestStore(env);
  t.after(async () => {
    await store.close();
    await stub.close();
  });
  await eventually(async () => screen.includes('proxy-api listening') && screen.includes('worker started'), 15_000);
  const id = await enqueueJob(store, 'in flight when the terminal closes');
  await eventually(async () => stub.inflight() === 1);
  terminal.kill('SIGKILL');
  await eventually(async () => programsOf(dir).length === 0, 10_000);
  assert.equal((await store.getJob(id))?.status, 'completed', 'the call in flight finished before the worker exited');
  assert.equal(stub.calls.length, 1);
  const logs = ['api', 'worker'].map((app) => readFileSync(join(dir, 'logs', `${app}.log`), 'utf8'));
  for (const log of logs) assert.match(log, /stop signal: draining/);
  assert.match(logs[0] as string, /proxy-api stopped/);
  assert.ok(logs.every((log) => !log.includes('second stop signal')));
});
