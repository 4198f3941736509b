/**
 * `node --import tsx scripts/bench/profile.ts create|lookup|worker|longpoll|pacing`: runs proxy-api under
 * the benchmark's load for a few seconds (or proxy-worker daemon draining jobs against a zero-latency
 * stub; or proxy-api holding long-polls while a daemon drains) with --cpu-prof, then prints the
 * functions that took the most CPU (self time, and by file). `pacing` only measures (see measurePacing).
 * create and worker run on PostgreSQL when DATABASE_URL is set (create in DATABASE_SCHEMA, which
 * the caller drops after). PROMPT_BYTES pads the prompts it sends or queues; ANSWER_BYTES makes
 * lookup fetch completed jobs with answers that long; WAITERS keeps that many long-polls waiting.
 * A development tool for finding where the time goes. PROFILE=off only measures; BARE=1 loads the
 * bench's bare Express route instead of the API.
 * COUNT=instructions (create, lookup and worker): runs the server (or the daemon) under valgrind's
 * callgrind instead and reports the instructions its main thread executes a request, after WARM
 * requests (5,000) and over REQUESTS (2,000), at 8 connections; or a job, over the middle three
 * fifths of the drain. Slow (about three minutes a run; one for 4,000 jobs), but steady where CPU
 * time is not: on a 2-core VM where the CPU a lookup moved 35% between two runs of the same code,
 * seven runs' counts were within 5%; four worker runs were within 1%. It counts the work, not what it
 * costs: a syscall is one instruction, a cache miss none, and time spent waiting for a flush or a
 * reply nothing. The main thread's count is the figure; the other threads' is mostly V8's
 * optimizing compiler, still busy a fifth of the way into a drain.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeFlagsOf } from '../node-flags.mjs';
import autocannon, { type Request } from 'autocannon';
import { signBody } from '../../packages/core/src/signing.ts';
import { openSqliteStore } from '../../packages/core/src/store/sqlite/sqlite-job-store.ts';
import { openPostgresStore } from '../../packages/core/src/store/postgres/pg-job-store.ts';
import pg from 'pg';
import { newJobId } from '../../packages/core/src/ids.ts';
import type { JobStore, NewJob } from '../../packages/core/src/store/types.ts';
import { echoCompletion, startStubUpstream, type StubBehaviour } from '../stub-upstream.ts';
import { answers, apiEnv, cpuSeconds, freePort, start } from './processes.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const mode = process.argv[2] ?? 'create';
const seconds = Number(process.env.PROFILE_SECONDS ?? 6);
/** PROMPT_BYTES=n pads each prompt sent or queued to about n bytes (long prompts: documents to summarize). */
const padding = 'x'.repeat(Number(process.env.PROMPT_BYTES ?? 0));
const dir = mkdtempSync(join(tmpdir(), 'proxy-profile-'));
const profiling = process.env.PROFILE !== 'off';
const key = `pk_${randomBytes(16).toString('hex')}`;
const secret = randomBytes(32).toString('hex');
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const dbPath = join(dir, 'requests.sqlite');
const ids: string[] = [];
if (mode === 'lookup') {
  const store = openSqliteStore({ path: dbPath });
  for (let i = 0; i < 2000; i++) {
    const job = queuedJob(i);
    ids.push(job.id);
    await store.createJob(job);
  }
  // ANSWER_BYTES=n: the jobs looked up are completed, each with an answer of n characters (a client
  // fetching its result), instead of queued.
  const answerBytes = process.env.ANSWER_BYTES === undefined ? null : Number(process.env.ANSWER_BYTES);
  if (answerBytes !== null) {
    const text = 'lorem ipsum '.repeat(Math.ceil(answerBytes / 12)).slice(0, answerBytes);
    const usage = { prompt_tokens: 5, completion_tokens: Math.ceil(answerBytes / 4), total_tokens: 5 + Math.ceil(answerBytes / 4) };
    const held = await store.claimJobs({ workerId: 'profile', limit: ids.length, leaseMs: 60_000 });
    await Promise.all(
      held.map((job) => {
        const response = {
          id: `chatcmpl-${job.id}`,
          object: 'chat.completion',
          created: 1,
          model: 'm',
          choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, finish_reason: 'stop' }],
          usage,
        };
        return store.completeJob(job.id, job.leaseToken, { outputText: text, usage, response });
      }),
    );
    if (held.length !== ids.length) throw new Error(`completed ${held.length} of ${ids.length} jobs`);
  }
  await store.close();
}
const env = {
  ...apiEnv({ key, secret, dbPath, port }),
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('PROXY_') || k.startsWith('LOG_') || k.startsWith('RATE_') || k.startsWith('DATABASE_'))),
};
const profDir = join(dir, 'prof');
const counting = process.env.COUNT === 'instructions';
if (counting && mode === 'longpoll') throw new Error('COUNT=instructions measures the create, lookup and worker modes');
// --separate-threads: V8's compiler and GC helper threads get files of their own, so the main
// thread's count is not moved by how their work happened to interleave with it.
const valgrind = counting ? ['valgrind', '--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${join(dir, 'callgrind.out')}`] : [];
// NODE_FLAGS: V8 or Node flags for the measured process (the API, or the worker daemon), e.g. heap sizes.
const nodeFlags = (process.env.NODE_FLAGS ?? '').split(' ').filter(Boolean);
if (mode === 'pacing') await measurePacing();
if (mode === 'worker') await profileWorker();
if (mode === 'longpoll') await profileLongPolls();
// BARE=1 measures the benchmark's bare Express route instead, under the same load and harness.
const bare = process.env.BARE === '1';
const program = bare ? [join(ROOT, 'scripts/bench/bare-server.mjs'), String(port)] : [...nodeFlagsOf(join(ROOT, 'apps/api/dist/main.js')), join(ROOT, 'apps/api/dist/main.js')];
const proc = await start(
  [...nodeFlags, ...(profiling && !counting ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []), ...program],
  env as Record<string, string>,
  join(dir, 'api.log'),
  answers(`${url}/${bare ? 'bare/x' : 'health'}`),
  valgrind,
);
// PIN=1: the measured process on CPU 0 and this load generator on CPU 1, so they do not take turns
// on the same core (steadier CPU-per-request figures on a 2-core machine).
if (process.env.PIN === '1') pin(proc.child.pid as number);
// WAITERS=n (create and lookup on SQLite): n long-polls wait on queued jobs (up to 60 s) during the
// load, as clients waiting for their answers do while others create (the long-poll watcher runs).
if (process.env.WAITERS && !bare) {
  if (process.env.DATABASE_URL) throw new Error('WAITERS queues its jobs in the SQLite file');
  const waitedStore = openSqliteStore({ path: dbPath });
  for (let w = 0; w < Number(process.env.WAITERS); w++) {
    const waited = queuedJob(1_000_000 + w);
    await waitedStore.createJob(waited);
    void fetch(`${url}/v1/requests/${waited.id}?wait=60`, { headers: { 'x-proxy-key': key } }).catch(() => undefined);
  }
  await waitedStore.close();
  // Until every long-poll waits.
  await new Promise((r) => setTimeout(r, 500));
}
const prefix = bare ? '/bare' : '/v1/requests';
const ts = Math.floor(Date.now() / 1000);
const bodies = Array.from({ length: padding ? 8_000 : 80_000 }, (_, i) => signBody({ prompt: `Benchmark prompt ${i}${padding}`, ts, nonce: randomUUID() }, secret));
let i = 0;
const request: Request =
  mode === 'lookup'
    ? { method: 'GET', path: `${prefix}/x`, headers: { 'x-proxy-key': key }, setupRequest: (r) => ({ ...r, path: `${prefix}/${ids[Math.floor(Math.random() * ids.length)]}` }) }
    : {
        method: 'POST',
        path: prefix,
        headers: { 'content-type': 'application/json', 'x-proxy-key': key },
        setupRequest: (r) => ({ ...r, body: bodies[i++ % bodies.length] as string }),
      };
// RATE=n holds the load at n requests a second (below what either side can do), so CPU per request
// does not move with how much of the machine the load generator happened to get.
const rate = process.env.RATE ? { overallRate: Number(process.env.RATE) } : {};
if (counting) await countInstructions();
await autocannon({ url, connections: 32, duration: 2, requests: [request], ...rate });
const cpuBefore = cpuSeconds(proc.child.pid as number);
const result = await autocannon({ url, connections: 32, duration: seconds, requests: [request], ...rate });
// CPU time per request is steadier than throughput on a shared machine: it does not depend on how
// much of the other core the load generator got.
const cpuAfter = cpuSeconds(proc.child.pid as number);
const cpuPerRequest = ((cpuAfter.total - cpuBefore.total) * 1e6) / result.requests.total;
const sysPerRequest = ((cpuAfter.kernel - cpuBefore.kernel) * 1e6) / result.requests.total;
process.stdout.write(
  `${mode}: ${Math.round(result.requests.total / seconds)} req/s, ${Math.round(cpuPerRequest)} µs CPU per request (${Math.round(sysPerRequest)} in the kernel), non2xx ${result.non2xx}, peak RSS ${Math.round(proc.peakRssMb())} MB\n`,
);
await proc.stop();
if (!profiling) process.exit(0);

/** COUNT=instructions: the main thread's instructions a request, from callgrind's counters. */
async function countInstructions(): Promise<never> {
  const pid = String(proc.child.pid);
  // A number of requests rather than a time: under valgrind the server runs tens of times slower.
  const load = (amount: number) => autocannon({ url, connections: 8, amount, timeout: 60, requests: [request] });
  await load(Number(process.env.WARM ?? 5000));
  zeroCounts(pid);
  const result = await load(Number(process.env.REQUESTS ?? 2000));
  const { main, all } = dumpCounts(pid);
  if (result.requests.total === 0) throw new Error('no request answered');
  const per = (n: number) => Math.round(n / result.requests.total).toLocaleString('en-US');
  process.stdout.write(
    `${mode}: ${result.requests.total} requests, non2xx ${result.non2xx}: ${per(main)} instructions a request on the main thread (${per(all)} on all threads)\n`,
  );
  await proc.stop();
  process.exit(0);
}

/** COUNT=instructions: callgrind's counters start over from here. */
function zeroCounts(pid: string): void {
  execFileSync('callgrind_control', ['-z', pid], { stdio: 'ignore' });
}

/** COUNT=instructions: the instructions counted since zeroCounts, on the main thread and on all. */
function dumpCounts(pid: string): { main: number; all: number } {
  execFileSync('callgrind_control', ['-d', pid], { stdio: 'ignore' });
  // The dump after zeroing is part 1, one file per thread; thread 1 is the main thread.
  const counts = readdirSync(dir)
    .filter((f) => f.startsWith('callgrind.out'))
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .filter((text) => /^part: 1$/m.test(text))
    .map((text) => ({ thread: Number(/^thread: (\d+)$/m.exec(text)?.[1]), instructions: Number(/^summary: (\d+)$/m.exec(text)?.[1] ?? 0) }));
  const main = counts.find((c) => c.thread === 1);
  if (!main) throw new Error(`no callgrind count for the main thread in ${dir}`);
  return { main: main.instructions, all: counts.reduce((sum, c) => sum + c.instructions, 0) };
}

/**
 * Drains WORKER_JOBS jobs (default 4,000) through a daemon at WORKER_CONCURRENCY (8) against a stub
 * that answers after STUB_DELAY_MS (0), then reports. STUB_STATUS=500 makes every call fail: each job
 * is retried twice at once (RETRY_BASE_MS=1) and then fails, the write path of an upstream outage.
 * PACE_MS=n queues the jobs one at a time instead (light load).
 */
async function profileWorker(): Promise<never> {
  const n = Number(process.env.WORKER_JOBS ?? 4000);
  const failWith = process.env.STUB_STATUS ? Number(process.env.STUB_STATUS) : null;
  const delayMs = Number(process.env.STUB_DELAY_MS ?? 0);
  // Long prompts get a short answer, as a summary would, rather than the echo of the whole prompt.
  const reply: StubBehaviour | null = failWith ? () => ({ status: failWith }) : padding ? (call) => ({ delayMs, body: echoCompletion(call, 'a summary') }) : null;
  const stub = await startStubUpstream({ delayMs, ...(reply ? { behave: reply } : {}) });
  const outcome = failWith ? 'failed' : 'completed';
  const { store, database, teardown } = await harnessStore();
  // PACE_MS=n: jobs are queued one at a time, n ms apart on average (half to one and a half times
  // n), after the daemon has started: light load, where each job is picked up on its own.
  const paceMs = process.env.PACE_MS ? Number(process.env.PACE_MS) : null;
  if (paceMs === null) for (let i = 0; i < n; i++) await store.createJob(queuedJob(i));
  const env = {
    ...daemonEnv(stub.url, database, '8'),
    PROXY_DB_SYNC: process.env.PROXY_DB_SYNC ?? 'full',
    ...(failWith ? { RETRY_BASE_MS: '1', RETRY_MAX_MS: '1' } : {}),
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('WORKER_') || k.startsWith('UPSTREAM_'))),
  };
  const proc = await start(
    [...nodeFlags, ...(profiling && !counting ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []), ...daemonArgs()],
    env,
    join(dir, 'worker.log'),
    async () => true,
    valgrind,
  );
  // PIN=1: the worker on CPU 0, the stub and this harness on CPU 1 (see the same below for the API).
  if (process.env.PIN === '1') pin(proc.child.pid as number);
  if (paceMs !== null) {
    void (async () => {
      for (let i = 0; i < n; i++) {
        await store.createJob(queuedJob(i));
        await new Promise((r) => setTimeout(r, paceMs * (0.5 + Math.random())));
      }
    })();
  }
  // CPU per job over the middle of the run (from a fifth of the jobs done to four fifths), so start-up
  // and the tail do not count.
  // How far the drain is, read every 20 ms from SQLite's kept counts. On PostgreSQL a count by status
  // also reads the changes not folded yet (up to 5,000 since readers fold them; a few ms a count, on
  // the server the worker needs), so there every 250 ms. Measured before that fold: at 20 ms the
  // worker drained 698 and 728 jobs/s against 788 and 837 at 250 ms (two alternating pairs, 12,000 jobs).
  const completed = async () => (await store.countByStatus())[outcome];
  const pollMs = database.DATABASE_URL ? 250 : 20;
  const pid = String(proc.child.pid);
  const mark = async <T>(count: number, counts: (pid: string) => T) => {
    while ((await completed()) < count) await new Promise((r) => setTimeout(r, pollMs));
    // COUNT=instructions: the jobs done are read on both sides of the counters' zeroing or dump, and
    // averaged, as jobs go on finishing meanwhile (the daemon runs tens of times slower under valgrind).
    const before = await completed();
    const instructions = counting ? counts(pid) : null;
    return { cpu: cpuSeconds(proc.child.pid as number), done: counting ? (before + (await completed())) / 2 : before, instructions };
  };
  type Mark = { cpu: ReturnType<typeof cpuSeconds>; done: number };
  const from = await mark(n / 5, zeroCounts);
  const to = await mark((4 * n) / 5, dumpCounts);
  // Under valgrind, times say nothing: the count is the whole report.
  if (to.instructions) {
    const { main, all } = to.instructions;
    const per = (count: number) => Math.round(count / (to.done - from.done)).toLocaleString('en-US');
    process.stdout.write(`worker: ${Math.round(to.done - from.done)} jobs counted: ${per(main)} instructions a job on the main thread (${per(all)} on all threads)\n`);
  } else {
    await report(from, to);
  }
  await proc.stop();
  await stub.close();
  return teardown();

  /** Claim-to-outcome times, jobs a second and CPU a job between the two marks. */
  async function report(from: Mark, to: Mark) {
    const cpuPerJob = ((to.cpu.total - from.cpu.total) * 1e6) / (to.done - from.done);
    const sysPerJob = ((to.cpu.kernel - from.cpu.kernel) * 1e6) / (to.done - from.done);
    while ((await completed()) < n) await new Promise((r) => setTimeout(r, 50));
    const jobs = await store.listJobs({ status: outcome, limit: n });
    // How long each job took from its claim to its recorded outcome, against the whole run's pace.
    const durations = jobs.map((j) => (j.finishedAt ?? 0) - (j.startedAt ?? 0)).sort((a, b) => a - b);
    process.stdout.write(`claim → outcome per job: median ${durations[Math.floor(durations.length / 2)]} ms, p90 ${durations[Math.floor(durations.length * 0.9)]} ms\n`);
    const first = Math.min(...jobs.map((j) => j.startedAt ?? Infinity));
    const last = Math.max(...jobs.map((j) => j.finishedAt ?? 0));
    process.stdout.write(
      `worker: ${Math.round(n / ((last - first) / 1000))} jobs/s, ${Math.round(cpuPerJob)} µs CPU per job (${Math.round(sysPerJob)} in the kernel), peak RSS ${Math.round(proc.peakRssMb())} MB\n`,
    );
  }
}

/**
 * How much of a busy upstream budget the fleet takes, and what it costs: DAEMONS (4) proxy-worker
 * daemons of WORKER_CONCURRENCY (64) slots drain a backlog under UPSTREAM_RPM (4800: a turn every
 * 13 ms) against a stub answering in STUB_DELAY_MS (50). After 3 s, counts the calls the stub gets
 * over PROFILE_SECONDS (15) and prints them as a share of the turns the interval allows, with the
 * daemons' CPU and, on PostgreSQL (DATABASE_URL), the database's transactions a call (from
 * pg_stat_database, which its server updates about once a second: read 1 s after the window).
 */
async function measurePacing(): Promise<never> {
  const rpm = Number(process.env.UPSTREAM_RPM ?? 4800);
  const daemons = Number(process.env.DAEMONS ?? 4);
  const window = Number(process.env.PROFILE_SECONDS ?? 15);
  const stub = await startStubUpstream({ delayMs: Number(process.env.STUB_DELAY_MS ?? 50) });
  const { store, database, teardown } = await harnessStore();
  const turnsPerSecond = 1000 / Math.ceil(60_000 / rpm);
  // Twice the calls the run can make, so the budget binds throughout.
  for (let i = 0; i < 2 * turnsPerSecond * (window + 3); i++) await store.createJob(queuedJob(i));
  const env = { ...daemonEnv(stub.url, database, '64'), UPSTREAM_RPM: String(rpm) };
  const procs = await Promise.all(Array.from({ length: daemons }, (_, d) => start(daemonArgs(), env, join(dir, `worker-${d}.log`), async () => true)));
  const admin = database.DATABASE_URL ? new pg.Client({ connectionString: database.DATABASE_URL }) : null;
  await admin?.connect();
  const transactions = async () =>
    admin ? Number((await admin.query<{ n: string }>('SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()')).rows[0]!.n) : 0;
  const cpu = () => procs.reduce((sum, p) => sum + cpuSeconds(p.child.pid as number).total, 0);
  await new Promise((r) => setTimeout(r, 3000));
  const [calls0, cpu0, xacts0] = [stub.calls.length, cpu(), await transactions()];
  await new Promise((r) => setTimeout(r, window * 1000));
  const [calls, used] = [stub.calls.length - calls0, cpu() - cpu0];
  await new Promise((r) => setTimeout(r, 1000));
  // A snapshot of the statistics is kept for the transaction that read them: a fresh one is asked for.
  await admin?.query('SELECT pg_stat_clear_snapshot()');
  const xacts = (await transactions()) - xacts0;
  await admin?.end();
  process.stdout.write(
    `pacing: ${calls} calls in ${window} s, ${(calls / (window * turnsPerSecond)).toFixed(3)} of the turns ${rpm}/min allows; ${daemons} daemons used ${used.toFixed(1)} s of CPU` +
      (admin ? `; ${(xacts / calls).toFixed(2)} database transactions a call\n` : '\n'),
  );
  await Promise.all(procs.map((p) => p.stop()));
  await stub.close();
  return teardown();
}

/**
 * What long-polls cost proxy-api while other jobs finish: LONGPOLL_WAITERS (64) requests wait
 * (`?wait=60`) on jobs queued behind WORKER_JOBS (20,000) others, and a daemon drains those against
 * a zero-latency stub. Reports the API's CPU from the daemon's start to the last of the others
 * finished, which is the long-polls' watcher (the API serves nothing else meanwhile). On
 * PostgreSQL when DATABASE_URL is set, as for the worker.
 */
async function profileLongPolls(): Promise<never> {
  const n = Number(process.env.WORKER_JOBS ?? 20_000);
  const waiters = Number(process.env.LONGPOLL_WAITERS ?? 64);
  const stub = await startStubUpstream({ delayMs: 0 });
  const { store, database, teardown } = await harnessStore();
  for (let i = 0; i < n; i++) await store.createJob(queuedJob(i));
  // Queued after the others, so the daemon reaches them last: they are waited for throughout.
  await new Promise((r) => setTimeout(r, 5));
  const waited: string[] = [];
  for (let i = 0; i < waiters; i++) waited.push((await store.createJob(queuedJob(n + i))).job.id);
  const api = await start(
    [...(profiling ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []), ...nodeFlagsOf(join(ROOT, 'apps/api/dist/main.js')), join(ROOT, 'apps/api/dist/main.js')],
    { ...env, ...database } as Record<string, string>,
    join(dir, 'api.log'),
    answers(`${url}/health`),
  );
  const polls = waited.map((id) => fetch(`${url}/v1/requests/${id}?wait=60`, { headers: { 'x-proxy-key': key } }).then((r) => r.json() as Promise<{ status: string }>));
  await new Promise((r) => setTimeout(r, 1000));
  const workerEnv = daemonEnv(stub.url, database, '8');
  const before = cpuSeconds(api.child.pid as number);
  const worker = await start(daemonArgs(), workerEnv, join(dir, 'worker.log'), async () => true);
  const began = Date.now();
  while ((await store.countByStatus()).completed < n) await new Promise((r) => setTimeout(r, 20));
  const seconds = (Date.now() - began) / 1000;
  const used = cpuSeconds(api.child.pid as number).total - before.total;
  const answered = await Promise.all(polls);
  const completed = answered.filter((a) => a.status === 'completed').length;
  process.stdout.write(
    `longpoll: ${waiters} waiting while ${n} other jobs finished in ${seconds.toFixed(1)} s (${Math.round(n / seconds)} jobs/s): proxy-api used ${used.toFixed(2)} s of CPU, ${Math.round((100 * used) / seconds)}% of a core; ${completed} of ${waiters} long-polls answered completed\n`,
  );
  await worker.stop();
  await api.stop();
  await stub.close();
  return teardown();
}

/**
 * The store the worker and long-poll modes fill and watch: the SQLite file, or with
 * DATABASE_URL=postgres://… a PostgreSQL schema of its own (`database` points the programs at it).
 * `teardown` closes it, drops that schema, prints the profile and exits.
 */
async function harnessStore(): Promise<{ store: JobStore; database: Record<string, string>; teardown: () => Promise<never> }> {
  const pgUrl = process.env.DATABASE_URL;
  const schema = `profile_${randomBytes(4).toString('hex')}`;
  const store = pgUrl ? await openPostgresStore({ url: pgUrl, schema }) : openSqliteStore({ path: dbPath });
  const teardown = async (): Promise<never> => {
    await store.close();
    if (pgUrl) {
      const admin = new pg.Client({ connectionString: pgUrl });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    }
    // Counting runs under callgrind, without --cpu-prof, and pacing only measures: no profile to report.
    if (profiling && !counting && mode !== 'pacing') report();
    process.exit(0);
  };
  return { store, database: pgUrl ? { DATABASE_URL: pgUrl, DATABASE_SCHEMA: schema } : {}, teardown };
}

/** The settings the modes start proxy-worker daemon with: the harness's store, the stub, warnings only; WORKER_CONCURRENCY, or `concurrency`. */
function daemonEnv(stubUrl: string, database: Record<string, string>, concurrency: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    PROXY_DB_PATH: dbPath,
    OPENAI_API_KEY: 'sk-profile',
    OPENAI_BASE_URL: stubUrl,
    WORKER_CONCURRENCY: process.env.WORKER_CONCURRENCY ?? concurrency,
    LOG_LEVEL: 'warn',
    ...database,
  };
}

/** `proxy-worker daemon`'s arguments to node, with the flags its entry file asks for. */
function daemonArgs(): string[] {
  return [...nodeFlagsOf(join(ROOT, 'apps/worker/dist/main.js')), join(ROOT, 'apps/worker/dist/main.js'), 'daemon'];
}

/** A queued job whose prompt is `job <i>`. */
function queuedJob(i: number): NewJob {
  const id = newJobId();
  const request = { model: 'm', messages: [{ role: 'user', content: `job ${i}${padding}` }] };
  return { id, client: 'default', nonce: id, requestHash: 'h', model: 'm', request, requestJson: JSON.stringify(request), maxAttempts: 3, expiresAt: Date.now() + 3_600_000 };
}

/** The measured process (every thread) on CPU 0, this process on CPU 1. */
function pin(pid: number): void {
  execFileSync('taskset', ['-a', '-p', '-c', '0', String(pid)]);
  execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)]);
}

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
  children?: number[];
}
report();

function report(): void {
  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile')) as string;
  const profile = JSON.parse(readFileSync(join(profDir, file), 'utf8')) as { nodes: Node[] };
  const total = profile.nodes.reduce((s, n) => s + n.hitCount, 0);
  const self = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const n of profile.nodes) {
    const where = n.callFrame.url
      .replace(/^file:\/\//, '')
      .replace(ROOT, '')
      .replace(/.*node_modules\//, 'nm:');
    const k = `${n.callFrame.functionName || '(anon)'} ${where}:${n.callFrame.lineNumber}`;
    self.set(k, (self.get(k) ?? 0) + n.hitCount);
    const pkg = where.startsWith('nm:')
      ? where
          .split('/')
          .slice(0, where.startsWith('nm:@') ? 2 : 1)
          .join('/')
      : where || n.callFrame.functionName;
    byFile.set(pkg, (byFile.get(pkg) ?? 0) + n.hitCount);
  }
  // Inclusive time of our own functions (apps/, packages/): what each step costs with what it calls.
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const subtree = (n: Node): number => n.hitCount + (n.children ?? []).reduce((s, c) => s + subtree(byId.get(c) as Node), 0);
  const inclusive = new Map<string, number>();
  const walk = (n: Node, open: Set<string>): void => {
    const where = n.callFrame.url.replace(/^file:\/\//, '').replace(ROOT, '');
    const k = `${n.callFrame.functionName || '(anon)'} ${where}:${n.callFrame.lineNumber}`;
    const ours = /^(apps|packages)\//.test(where) && !open.has(k);
    if (ours) inclusive.set(k, (inclusive.get(k) ?? 0) + subtree(n));
    const next = ours ? new Set(open).add(k) : open;
    for (const c of n.children ?? []) walk(byId.get(c) as Node, next);
  };
  walk(profile.nodes[0] as Node, new Set());
  const top = (m: Map<string, number>, k: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([name, h]) => `${((100 * h) / total).toFixed(1).padStart(5)}%  ${name}`)
      .join('\n');
  process.stdout.write(
    `\nself time, top functions:\n${top(self, 35)}\n\nself time by package or file:\n${top(byFile, 30)}\n\ninclusive time, our functions:\n${top(inclusive, 30)}\n`,
  );
}
