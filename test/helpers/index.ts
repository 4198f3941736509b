/** Helpers every test shares: temp folders, the built programs as child processes, signed requests. */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readdirSync, rmdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { newJobId } from '../../packages/core/src/ids.ts';
import { signBody } from '../../packages/core/src/signing.ts';
import type { JobStore, NewJob } from '../../packages/core/src/store/types.ts';
import { openPostgresStore } from '../../packages/core/src/store/postgres/pg-job-store.ts';
import { openSqliteStore } from '../../packages/core/src/store/sqlite/sqlite-job-store.ts';
import { createSilentLogger } from '../../packages/core/src/logger.ts';
import { createWorker, type Worker, type WorkerOptions } from '../../packages/core/src/runner/worker.ts';
import { startStubUpstream, type StubUpstream } from '../../scripts/stub-upstream.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const API_MAIN = join(ROOT, 'apps/api/dist/main.js');
export const WORKER_MAIN = join(ROOT, 'apps/worker/dist/main.js');

/** What a helper needs of node:test's TestContext: a step to run when the test ends (a promise it returns is awaited). */
export interface TestHooks {
  after: (fn: () => unknown) => void;
}

/** A fresh folder, removed when `t` ends. */
export function tempDir(t: TestHooks, prefix = 'proxy-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A client key and secret as `npm start` would generate them. */
export function newCredentials(): { key: string; secret: string } {
  return { key: `pk_${randomBytes(16).toString('hex')}`, secret: randomBytes(32).toString('hex') };
}

/** The backend this run tests: `npm test` runs the suite on SQLite, then again with TEST_BACKEND=postgres. */
export const BACKEND: 'sqlite' | 'postgres' = process.env.TEST_BACKEND === 'postgres' ? 'postgres' : 'sqlite';
/** The PostgreSQL server the postgres run uses (run-tests.mjs names a throwaway database on it). */
export const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A test that only makes sense on one backend says so instead of passing silently. */
export function onlyOn(backend: 'sqlite' | 'postgres', t: { skip: (why: string) => void }, why: string): boolean {
  if (BACKEND === backend) return true;
  t.skip(`${backend} only: ${why}`);
  return false;
}

/** The environment a test runs the programs with: nothing inherited that could leak in from the machine. */
export function testEnv(dir: string, overrides: Record<string, string> = {}): Record<string, string> {
  // On PostgreSQL each test folder gets its own schema, named after the folder.
  const database: Record<string, string> =
    BACKEND === 'postgres'
      ? {
          DATABASE_URL: PG_URL,
          DATABASE_SCHEMA: `t_${basename(dir)
            .toLowerCase()
            .replace(/[^a-z0-9]/g, '_')}`,
        }
      : {};
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    ...database,
    PROXY_DB_PATH: join(dir, 'requests.sqlite'),
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    ...overrides,
  };
}

/**
 * When a worker daemon began its upstream calls (of job `id`, or all of them), in ms on the machine's
 * clock: its "calling upstream" lines, logged at debug just before a call is sent, in LOG_FORMAT=json.
 */
export function callsBegun(lines: readonly string[], id?: string): number[] {
  return lines
    .filter((line) => line.includes('"calling upstream"') && (id === undefined || line.includes(`"${id}"`)))
    .map((line) => Date.parse((JSON.parse(line) as { timestamp: string }).timestamp));
}

/** A child process with its output captured line by line. */
export interface Child {
  proc: ChildProcess;
  lines: string[];
  stderr: string[];
  /** Resolves with the first stdout line matching, or rejects after timeoutMs. */
  waitFor(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Starts `node <script> ...args` in `cwd` with exactly `env`. `ownGroup` starts it in a process group
 * of its own, as a terminal starts a command: the group can then be signalled as a Ctrl-C signals it.
 * `openFiles` caps the descriptors it may hold (soft and hard, as `ulimit -n` does), through prlimit.
 */
export function spawnNode(script: string, args: string[], env: Record<string, string>, cwd: string, options: { ownGroup?: boolean; openFiles?: number } = {}): Child {
  const command = [process.execPath, script, ...args];
  if (options.openFiles !== undefined) command.unshift('prlimit', `--nofile=${options.openFiles}:${options.openFiles}`);
  const proc = spawn(command[0] as string, command.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: options.ownGroup ?? false });
  const lines: string[] = [];
  const stderr: string[] = [];
  const waiters: Array<{ match: (l: string) => boolean; resolve: (l: string) => void }> = [];
  const feed = (target: string[], isStdout: boolean) => {
    let buf = '';
    return (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        target.push(line);
        if (isStdout)
          for (const w of [...waiters])
            if (w.match(line)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(line);
            }
      }
    };
  };
  proc.stdout?.on('data', feed(lines, true));
  proc.stderr?.on('data', feed(stderr, false));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    proc,
    lines,
    stderr,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
    waitFor(match, timeoutMs = 10_000) {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for output; stdout:\n${lines.join('\n')}\nstderr:\n${stderr.join('\n')}`)), timeoutMs);
        waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) });
        void exited.then(() => setTimeout(() => reject(new Error(`process exited; stderr:\n${stderr.join('\n')}\nstdout:\n${lines.join('\n')}`)), 50));
      });
    },
  };
}

/** Starts `proxy-worker daemon`; killed when `t` ends, which waits for it to be gone. */
export function startWorkerDaemon(t: TestHooks, env: Record<string, string>, cwd: string): Child {
  const worker = spawnNode(WORKER_MAIN, ['daemon'], env, cwd);
  t.after(async () => {
    worker.kill('SIGKILL');
    await worker.exited;
  });
  return worker;
}

/** Starts proxy-api and resolves with its base URL once it listens. Stopped when `t` ends. */
export async function startApiProcess(
  t: TestHooks,
  env: Record<string, string>,
  cwd: string,
  options: Parameters<typeof spawnNode>[4] = {},
): Promise<{ url: string; child: Child }> {
  const child = spawnNode(API_MAIN, [], env, cwd, options);
  t.after(async () => {
    child.kill('SIGKILL');
    await child.exited;
  });
  const line = await child.waitFor((l) => l.includes('proxy-api listening'));
  const { port } = JSON.parse(line) as { port: number };
  return { url: `http://127.0.0.1:${port}`, child };
}

/** The fields every signed create body needs, fresh. */
export function freshStamp(now = Date.now()): { ts: number; nonce: string } {
  return { ts: Math.floor(now / 1000), nonce: randomUUID() };
}

/** POSTs a signed create body; returns status and parsed JSON. */
export async function postSigned(
  baseUrl: string,
  key: string,
  secret: string,
  body: Record<string, unknown>,
  path = '/v1/requests',
): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-proxy-key': key },
    body: signBody({ ...freshStamp(), ...body }, secret),
  });
  return { status: res.status, json: await res.json(), headers: res.headers };
}

/** What came back from creates sent without pause (streamCreates). */
export interface CreateStream {
  /** Each create answered 202: its id and its prompt, in the order answered. */
  accepted: Map<string, string>;
  /** The other answers, counted by status and error code (`503 unavailable`). */
  refused: Map<string, number>;
  /** How many answers said `Connection: close`. */
  closing: number;
  /** How each sender's last request failed, counted by error code (ECONNREFUSED: nothing was sent). */
  ends: Map<string, number>;
  /** Stops sending; resolves once every sender has stopped. */
  stop(): Promise<void>;
}

/**
 * `senders` clients each sending signed creates one after another, on fetch's keep-alive
 * connections, until stopped or until a request of theirs fails (the API gone): whether a create
 * that failed so was stored is unknown, and no 202 promised it.
 */
export function streamCreates(baseUrl: string, key: string, secret: string, senders: number, prompt = (sender: number, i: number) => `stream ${sender}-${i}`): CreateStream {
  let sending = true;
  const count = (counts: Map<string, number>, what: string) => counts.set(what, (counts.get(what) ?? 0) + 1);
  const stream: Omit<CreateStream, 'stop'> = { accepted: new Map(), refused: new Map(), closing: 0, ends: new Map() };
  const running = Array.from({ length: senders }, async (_, sender) => {
    for (let i = 0; sending; i++) {
      const text = prompt(sender, i);
      try {
        const { status, json, headers } = await postSigned(baseUrl, key, secret, { prompt: text });
        if (status === 202) stream.accepted.set(json.id as string, text);
        else count(stream.refused, `${status} ${json.error?.code}`);
        if (headers.get('connection') === 'close') stream.closing += 1;
      } catch (err) {
        count(stream.ends, String((err as { cause?: { code?: unknown } }).cause?.code ?? (err as Error).message));
        return;
      }
    }
  });
  return Object.assign(stream, {
    async stop() {
      sending = false;
      await Promise.all(running);
    },
  });
}

/** GETs a path with the client key; returns status and parsed JSON. */
export async function getJson(baseUrl: string, path: string, key?: string): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`${baseUrl}${path}`, { headers: key ? { 'x-proxy-key': key } : {} });
  return { status: res.status, json: await res.json(), headers: res.headers };
}

/** Polls `check` until it returns a value or the time runs out. */
export async function eventually<T>(check: () => Promise<T | undefined | null | false>, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Stops `child` (SIGSTOP) at a moment it holds no write transaction, for a test of what a frozen
 * process does to its calls. A process stops wherever it is, and one stopped within a commit holds
 * SQLite's write lock until it runs again, so every other process's writes wait (see README, "The
 * other end of that"): stopped at random while running jobs, a worker held it about one time in
 * 200 (measured here), the likeliest cause of a CI run in which a test waited in vain for another
 * worker to take the frozen one's job. On
 * PostgreSQL the server ends such a transaction after 10 s, longer than such a test waits. Caught
 * inside one, the child runs a moment and is stopped again. Only `child` may write meanwhile.
 */
export async function freezeOutsideTransactions(child: Child, env: Record<string, string>): Promise<void> {
  for (let tries = 0; ; tries++) {
    child.kill('SIGSTOP');
    // A statement it had sent finishes on the server meanwhile; then its session is idle, in a
    // transaction or not.
    await new Promise((r) => setTimeout(r, 20));
    if (!(await writeTransactionOpen(env))) return;
    child.kill('SIGCONT');
    if (tries === 50) throw new Error('the child was inside a write transaction at each of 50 stops');
    await new Promise((r) => setTimeout(r, 1 + Math.random() * 10));
  }
}

async function writeTransactionOpen(env: Record<string, string>): Promise<boolean> {
  if (env.DATABASE_URL) {
    const client = new pg.Client({ connectionString: env.DATABASE_URL });
    await client.connect();
    try {
      const { rows } = await client.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'", [`proxy:${env.DATABASE_SCHEMA}`]);
      return rows.length > 0;
    } finally {
      await client.end();
    }
  }
  const db = new Database(env.PROXY_DB_PATH as string, { timeout: 0 });
  try {
    db.exec('BEGIN IMMEDIATE');
    db.exec('ROLLBACK');
    return false;
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('SQLITE_BUSY')) return true;
    throw err;
  } finally {
    db.close();
  }
}

/** Polls `GET /v1/requests/:id` with the client key until the job is completed; resolves with its view. */
export async function completedJob(baseUrl: string, key: string, id: string, timeoutMs = 10_000): Promise<any> {
  let last: unknown = null;
  try {
    return await eventually(async () => {
      const res = await getJson(baseUrl, `/v1/requests/${id}`, key);
      last = { status: res.status, body: res.json };
      return res.json.status === 'completed' ? res.json : null;
    }, timeoutMs);
  } catch (err) {
    // Which of a queued job, a failed one or a refused read it was says where to look.
    throw new Error(`job ${id} not completed within ${timeoutMs} ms; the last answer: ${JSON.stringify(last)}`, { cause: err });
  }
}

/**
 * Runs one of the development scripts (`scripts/bench/run.ts`, `scripts/bench/soak.ts`) as `node
 * --import tsx` from the project's folder with `env` added, to its end: its exit code and output. One
 * that hangs (a process it started and never stopped keeps it alive) is stopped after `limitMs`, well
 * before the test's own limit, so the failure shows what it printed.
 */
export async function runScript(script: string, env: Record<string, string>, limitMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // Without the variable Node's runner sets in the files it runs, which the scripts have no use for.
  const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, env: { ...inherited, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGTERM'), limitMs);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/**
 * The pids of the running processes `matches` picks; it reads what it needs from /proc/<pid>, and a
 * process that ends while read (or is not ours to read) is passed over.
 */
export function processesWhere(matches: (pid: string) => boolean): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (matches(pid)) pids.push(Number(pid));
    } catch {
      // Gone while read, or not ours to read.
    }
  }
  return pids;
}

/** Rejects when `promise` takes longer than `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** The attempts the jobs `ids` have spent, in all: what an outage cost them. */
export async function attemptsSpent(store: Pick<JobStore, 'getJob'>, ids: readonly string[]): Promise<number> {
  const jobs = await Promise.all(ids.map((id) => store.getJob(id)));
  return jobs.reduce((sum, job) => sum + (job?.attempts ?? 0), 0);
}

/** Enqueues a job straight into a store (as the API would), asking for `prompt`; returns its id. */
export async function enqueueJob(store: Pick<JobStore, 'createJob'>, prompt: string, options: { maxAttempts?: number; ttlMs?: number } = {}): Promise<string> {
  const id = newJobId();
  await store.createJob({
    id,
    client: 'default',
    nonce: id,
    requestHash: 'h',
    model: 'm',
    ...withJson({ model: 'm', messages: [{ role: 'user', content: prompt }] }),
    maxAttempts: options.maxAttempts ?? 5,
    expiresAt: Date.now() + (options.ttlMs ?? 600_000),
  });
  return id;
}

/**
 * After crashes: every job in `ids` (id → prompt) is completed with its own answer, and was called
 * upstream at least once and never more often than its attempts say. Returns the repeated calls.
 */
export async function assertEachCompletedOnce(store: Pick<JobStore, 'getJob'>, ids: ReadonlyMap<string, string>, calls: ReadonlyArray<{ prompt: string }>): Promise<number> {
  const made = new Map<string, number>();
  for (const call of calls) made.set(call.prompt, (made.get(call.prompt) ?? 0) + 1);
  let repeated = 0;
  for (const [id, prompt] of ids) {
    const job = await store.getJob(id);
    assert.equal(job?.status, 'completed');
    assert.equal(job?.outputText, `echo: ${prompt}`);
    const n = made.get(prompt) ?? 0;
    assert.ok(n >= 1 && n <= job.attempts, `${prompt}: ${n} upstream calls but ${job.attempts} attempts counted`);
    repeated += n - 1;
  }
  return repeated;
}

/** Opens the store a test's programs use (from its testEnv), on whichever backend this run tests. */
export async function openTestStore(env: Record<string, string>, options: { now?: () => number } = {}): Promise<JobStore> {
  if (env.DATABASE_URL) return openPostgresStore({ url: env.DATABASE_URL, schema: env.DATABASE_SCHEMA ?? 'public', poolSize: 4, ...options });
  return openSqliteStore({ path: env.PROXY_DB_PATH as string, ...options });
}

/**
 * An in-process worker with a test's timings: retries and idle polls of milliseconds, a silent log,
 * one slot, a 3 s lease; a test names what it cares about (its concurrency, lease, grace) and no more.
 */
export function createTestWorker(options: Pick<WorkerOptions, 'store' | 'upstream'> & Partial<WorkerOptions>): Worker {
  return createWorker({
    logger: createSilentLogger(),
    concurrency: 1,
    leaseMs: 3000,
    attemptTimeoutMs: 5000,
    retryBaseMs: 10,
    retryMaxMs: 20,
    pollMs: 10,
    shutdownGraceMs: 1000,
    retentionMs: 3600_000,
    ...options,
  });
}

/** The store with some methods replaced (to count, delay or race them); the rest are its own, through the prototype. */
export function overriding(store: JobStore, overrides: Partial<JobStore>): JobStore {
  return Object.assign(Object.create(store) as JobStore, overrides);
}

/** A NewJob for store tests: a fresh id and nonce, queued for an hour. */
export function newTestJob(overrides: Partial<NewJob> = {}): NewJob {
  return {
    id: newJobId(),
    client: 'default',
    nonce: `nonce-${Math.random().toString(36).slice(2)}`,
    requestHash: 'h1',
    model: 'm',
    ...withJson(overrides.request ?? { model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
    maxAttempts: 3,
    expiresAt: Date.now() + 3_600_000,
    ...overrides,
  };
}

/** A NewJob's request with its JSON text, as the API writes them. */
export function withJson(request: NewJob['request']): Pick<NewJob, 'request' | 'requestJson'> {
  return { request, requestJson: JSON.stringify(request) };
}

/** A clock tests move by hand: pass `now` to a store, then `advance` it. */
export function manualClock(start = 1_000_000): { now: () => number; advance: (ms: number) => number } {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** A port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * A stub whose calls for prompts starting "during" take 1.5 s, long enough to be in flight when a
 * test takes the database away; the rest answer at once. `answered()` counts the slow ones answered.
 * Closed when `t` ends.
 */
export async function startOutageStub(t: TestHooks): Promise<{ stub: StubUpstream; answered: () => number }> {
  let answered = 0;
  const stub = await startStubUpstream({
    behave: async (call) => {
      if (!call.prompt.startsWith('during')) return {};
      await new Promise((r) => setTimeout(r, 1500));
      answered += 1;
      return {};
    },
  });
  t.after(() => stub.close());
  return { stub, answered: () => answered };
}

/**
 * A small disk of the test's own (a tmpfs) to put the SQLite file or a log folder on, so that
 * filling it disturbs nothing else on the machine; or null, the test skipped with the reason, where none can be had.
 * The mount point is a folder of its own: the test's folder is removed by an earlier hook, while
 * the disk is still mounted.
 */
export function smallDisk(t: TestHooks & { skip: (why: string) => void }, size: string): string | null {
  if (process.getuid?.() !== 0) {
    t.skip('mounting a small disk needs root');
    return null;
  }
  const mnt = mkdtempSync(join(tmpdir(), 'proxy-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt], { stdio: 'pipe' });
  } catch {
    rmdirSync(mnt);
    t.skip('this machine refuses to mount a tmpfs');
    return null;
  }
  t.after(() => {
    // Lazy: the programs may still hold the files open while their own hooks stop them.
    execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
    rmdirSync(mnt);
  });
  return mnt;
}

/** Writes a file until the disk refuses; returns its path. */
export function fillDisk(mnt: string): string {
  const path = join(mnt, 'filler');
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    closeSync(fd);
  }
  return path;
}

/** Runs `node <main> ...args` as the user nobody (needs root), with exactly `env`; its exit code and stderr lines. */
export function runAsNobody(main: string, args: string[], env: Record<string, string>): { code: number | null; stderr: string[] } {
  const run = spawnSync('runuser', ['-u', 'nobody', '--', 'env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, main, ...args], {
    cwd: '/',
    encoding: 'utf8',
    timeout: 15_000,
  });
  return { code: run.status, stderr: run.stderr.split('\n').filter(Boolean) };
}

/** The uid of the user nobody. */
export function nobodyUid(): number {
  return Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }));
}
