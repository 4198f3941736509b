/**
 * `npm run soak`: the whole service under steady, mixed traffic for minutes, with the faults of a
 * real day, then checks that nothing was lost or miscounted, and shows whether memory and open files
 * stay flat. The benchmark's loads last seconds; a leak, a counter drifting from the rows, or a job
 * stuck after a crash shows only over a longer run.
 *
 * It starts proxy-api and two proxy-worker daemons on a SQLite file in a temporary folder, against
 * the stub upstream, in a process of its own (soak-upstream.ts), answering after 0–400 ms with 5% of
 * calls failing (500, 429 with Retry-After, a call never answered, a reset connection). Clients
 * create SOAK_RATE jobs a second (default 80); a third of them wait for their answer with one
 * long-poll, a thirtieth cancel; /health, /metrics and /v1/stats are read every 2 s. Every
 * SOAK_CHAOS_SECONDS (60) in turn, `proxy-worker backup` copies the live file, or the second daemon
 * is killed with SIGKILL and another started in its place; the first runs throughout, so that its
 * memory over the whole run shows. After SOAK_MINUTES (10) the load stops, the queue drains, and the checks run; exit 1 when one fails, keeping the folder.
 * With SOAK_DATABASE_URL the service runs on that PostgreSQL server instead, in a schema of its own
 * (dropped after a run that passed), and the chaos is a killed daemon every time (backups are pg_dump's).
 * SOAK_STREAM=true runs the calls streamed (UPSTREAM_STREAM), answers arriving in pieces, some
 * streams cut midway and some answered unstreamed all the same. SOAK_LIMITS=true makes the limits
 * bind: each client key may create three quarters of SOAK_RATE a second (RATE_LIMIT_PER_KEY), and
 * the workers together may call the upstream SOAK_RATE times a second (UPSTREAM_RPM), less than the
 * bursts they are given; the checks then add that neither limit let more through than it allows and
 * that /metrics counts every refusal the clients saw. The upstream then sends no 429s: each pauses
 * every worker for its Retry-After (1 s), and with one call in a hundred answered so the fleet
 * spent 46 calls a second of the 77 the budget allows, less than the load, and the queue grew for
 * the whole run (measured; by arithmetic, the pauses held it some two fifths of the time). The
 * default soak has them.
 */
import { execFile, fork } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { nodeFlagsOf } from '../node-flags.mjs';
import { signBody } from '../../packages/core/src/signing.ts';
import { answers, apiEnv, freePort, logPath, start, type Proc } from './processes.ts';
import { tightestWindow } from './tightest-window.ts';
import type { SoakUpstreamMessage, UpstreamAsk, UpstreamCount, UpstreamReport } from './soak-upstream.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MINUTES = Number(process.env.SOAK_MINUTES ?? 10);
const RATE = Number(process.env.SOAK_RATE ?? 80);
const CHAOS_MS = Number(process.env.SOAK_CHAOS_SECONDS ?? 60) * 1000;
const SAMPLE_MS = Math.min(15_000, (MINUTES * 60_000) / 4);
const DRAIN_MS = 120_000;
const STREAM = process.env.SOAK_STREAM === 'true';
const LIMITS = process.env.SOAK_LIMITS === 'true';
/** With SOAK_LIMITS: creates a second a client key may make (bursts as large), and upstream calls a minute. */
const CREATE_BUDGET = Math.max(1, Math.round(RATE * 0.75));
const UPSTREAM_RPM = RATE * 60;
const API_MAIN = join(ROOT, 'apps/api/dist/main.js');
const WORKER_MAIN = join(ROOT, 'apps/worker/dist/main.js');

const dir = mkdtempSync(join(tmpdir(), 'proxy-soak-'));
const dbPath = join(dir, 'requests.sqlite');
const PG_URL = process.env.SOAK_DATABASE_URL;
const pgSchema = `soak_${randomBytes(4).toString('hex')}`;
const key = `pk_${randomBytes(16).toString('hex')}`;
const secret = randomBytes(32).toString('hex');
const say = (line: string) => process.stdout.write(`${line}\n`);
/** Every program started, stopped at the end whatever happened. */
const procs: Proc[] = [];

interface SoakUpstream {
  url: string;
  /** Calls so far, and the stub's longest stall since the last count. */
  count(): Promise<UpstreamCount>;
  /** Every call's arrival stamp, and every stall of the stub's over 30 ms. */
  report(): Promise<UpstreamReport>;
  close(): Promise<void>;
}
/** The stub upstream, started in time for the finally below to stop it whatever happened. */
let upstream: SoakUpstream | undefined;

/** Starts soak-upstream.ts in a process of its own; its answers come back in the order asked. */
async function startUpstream(): Promise<SoakUpstream> {
  const log = openSync(logPath(dir, 'upstream'), 'a');
  const child = fork(join(ROOT, 'scripts/bench/soak-upstream.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', log, log, 'ipc'] });
  const waiting: Array<(message: SoakUpstreamMessage) => void> = [];
  child.on('message', (message: SoakUpstreamMessage) => waiting.shift()?.(message));
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) => reject(new Error(`the stub upstream exited (${signal ?? code}): see ${logPath(dir, 'upstream')}`))),
  );
  exited.catch(() => {});
  const ask = <T extends SoakUpstreamMessage>(what?: UpstreamAsk['ask']) => {
    const answer = new Promise<T>((resolve, reject) => {
      waiting.push(resolve as (message: SoakUpstreamMessage) => void);
      if (what) child.send({ ask: what } satisfies UpstreamAsk, (err) => err && reject(err));
    });
    return Promise.race([answer, exited]);
  };
  const { url } = await ask<{ url: string }>();
  return {
    url,
    count: () => ask<UpstreamCount>('count'),
    report: () => ask<UpstreamReport>('report'),
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.disconnect();
        setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
      }),
  };
}

/** What the clients saw, by what they did. */
const seen = { created: new Map<string, string>(), acceptedAt: [] as number[], refused: 0, waits: 0, cancels: 0, unexpected: new Map<string, number>() };
const unexpected = (what: string): void => {
  seen.unexpected.set(what, (seen.unexpected.get(what) ?? 0) + 1);
};

async function client(base: string): Promise<void> {
  const headers = { 'content-type': 'application/json', 'x-proxy-key': key };
  const prompt = `soak ${randomUUID()}`;
  const created = await fetch(`${base}/v1/requests`, { method: 'POST', headers, body: signBody({ prompt, ts: Math.floor(Date.now() / 1000), nonce: randomUUID() }, secret) });
  const job = (await created.json()) as { id: string };
  if (LIMITS && created.status === 429) {
    seen.refused++;
    return;
  }
  if (created.status !== 202) return unexpected(`create answered ${created.status}`);
  seen.created.set(job.id, prompt);
  seen.acceptedAt.push(Date.now());
  const roll = Math.random();
  if (roll < 1 / 3) {
    seen.waits++;
    const waited = await fetch(`${base}/v1/requests/${job.id}?wait=30`, { headers });
    await waited.arrayBuffer();
    if (waited.status !== 200) unexpected(`long-poll answered ${waited.status}`);
  } else if (roll < 1 / 3 + 1 / 30) {
    seen.cancels++;
    const cancelled = await fetch(`${base}/v1/requests/${job.id}`, { method: 'DELETE', headers });
    await cancelled.arrayBuffer();
    // 409: the job finished before the cancel came.
    if (![200, 202, 409].includes(cancelled.status)) unexpected(`cancel answered ${cancelled.status}`);
  }
}

type StoredJob = { id: string; status: string; output_text: string | null };

/** Reads the jobs as stored: in the SQLite file, or in the soak's PostgreSQL schema. */
async function openRows(): Promise<{ unfinished(): Promise<number>; all(): Promise<StoredJob[]>; close(): Promise<void> }> {
  const unfinished = "SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'in_progress')";
  const all = 'SELECT id, status, output_text FROM jobs';
  if (PG_URL) {
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`SET search_path TO ${pgSchema}`);
    return {
      unfinished: async () => Number((await client.query<{ n: string }>(unfinished)).rows[0]?.n),
      all: async () => (await client.query<StoredJob>(all)).rows,
      close: () => client.end(),
    };
  }
  const db = new Database(dbPath, { readonly: true });
  return {
    unfinished: async () => db.prepare(unfinished).pluck().get() as number,
    all: async () => db.prepare(all).all() as StoredJob[],
    close: async () => void db.close(),
  };
}

/** Runs `sql` on the PostgreSQL server named, in a connection of its own. */
async function onServer(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

const openFiles = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const fileMb = (path: string) => {
  try {
    return statSync(path).size / 1e6;
  } catch {
    return 0;
  }
};

async function main(): Promise<string[]> {
  const stub = (upstream = await startUpstream());
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = {
    ...apiEnv({ key, secret, dbPath, port }),
    ...(PG_URL ? { DATABASE_URL: PG_URL, DATABASE_SCHEMA: pgSchema } : {}),
    OPENAI_API_KEY: 'sk-soak',
    OPENAI_BASE_URL: stub.url,
    UPSTREAM_TIMEOUT_SECONDS: '5',
    RETRY_BASE_MS: '500',
    RETRY_MAX_MS: '5000',
    WORKER_CONCURRENCY: '32',
    // A killed daemon's jobs go back when their leases lapse: short leases, so the drain after the load is short.
    LEASE_SECONDS: '5',
    LOG_LEVEL: 'warn',
    ...(STREAM ? { UPSTREAM_STREAM: 'true' } : {}),
    ...(LIMITS ? { RATE_LIMIT_PER_KEY: `${CREATE_BUDGET}/s`, UPSTREAM_RPM: String(UPSTREAM_RPM) } : {}),
  };
  const api = await start([...nodeFlagsOf(API_MAIN), API_MAIN], env, logPath(dir, 'api'), answers(`${base}/health`));
  procs.push(api);
  let daemons = 0;
  const startDaemon = async () => {
    const daemon = await start([...nodeFlagsOf(WORKER_MAIN), WORKER_MAIN, 'daemon'], env, logPath(dir, `worker-${++daemons}`), async () => true);
    procs.push(daemon);
    return daemon;
  };
  // One daemon runs from start to end, so its memory over the whole run shows; the other is the one
  // killed, and the one started in its place.
  const steady = await startDaemon();
  let victim = await startDaemon();
  const peaks = { api: 0, worker: 0 };
  const notePeaks = () => {
    peaks.api = Math.max(peaks.api, api.peakRssMb());
    for (const w of [steady, victim]) if (w.running()) peaks.worker = Math.max(peaks.worker, w.peakRssMb());
  };
  say(
    `soak: ${MINUTES} min at ${RATE} creates/s on ${PG_URL ? `PostgreSQL, schema ${pgSchema}` : 'SQLite'}${STREAM ? ', calls streamed' : ''}${LIMITS ? `, at most ${CREATE_BUDGET} creates/s and ${UPSTREAM_RPM} calls/min` : ''}, every ${CHAOS_MS / 1000} s ${PG_URL ? '' : 'a backup or '}a daemon killed (-9); folder ${dir}`,
  );
  // Clients in flight: those whose create, long-poll or cancel is not answered yet; proxy-api holds
  // a connection for each, so its open files follow them.
  say("   s  created  calls  proxy-api MB/files  daemon MB/files  killed one's  db MB  wal MB  soak heap MB  stub's longest stall ms  clients in flight");
  const started = Date.now();
  /** proxy-api's and the steady daemon's RSS at each sample, MB. */
  const rss: Array<{ api: number; daemon: number }> = [];
  const sample = async () => {
    const { calls, longestStallMs } = await stub.count();
    notePeaks();
    const of = (p: Proc) => (p.running() ? `${p.rssMb().toFixed(0)}/${openFiles(p.child.pid as number)}` : 'exited');
    const at = (Date.now() - started) / 1000;
    if (api.running() && steady.running()) rss.push({ api: api.rssMb(), daemon: steady.rssMb() });
    say(
      `${at.toFixed(0).padStart(4)}  ${String(seen.created.size).padStart(7)}  ${String(calls).padStart(5)}  ${of(api).padStart(18)}  ${of(steady).padStart(15)}  ${of(victim).padStart(12)}  ${(PG_URL ? '-' : fileMb(dbPath).toFixed(1)).padStart(5)}  ${(PG_URL ? '-' : fileMb(`${dbPath}-wal`).toFixed(1)).padStart(6)}  ${(process.memoryUsage().heapUsed / 1e6).toFixed(0).padStart(12)}  ${longestStallMs.toFixed(0).padStart(23)}  ${String(inflight.size).padStart(17)}`,
    );
  };

  const inflight = new Set<Promise<void>>();
  const tick = setInterval(() => {
    for (let i = 0; i < RATE / 10; i++) {
      const call = client(base)
        .catch((err: Error & { cause?: { code?: string } }) => unexpected(`client failed: ${err.cause?.code ?? err.message}`))
        .finally(() => inflight.delete(call));
      inflight.add(call);
    }
  }, 100);
  const scrape = setInterval(() => {
    for (const path of ['/health', '/metrics', '/v1/stats']) {
      fetch(`${base}${path}`, { headers: { 'x-proxy-key': key } })
        .then(async (res) => {
          await res.arrayBuffer();
          if (res.status !== 200) unexpected(`${path} answered ${res.status}`);
        })
        .catch(() => unexpected(`${path} failed`));
    }
  }, 2000);
  // A sample that fails (the stub's process gone) is counted against the run; the report at the end
  // then fails too, and the programs are stopped below.
  const sampling = setInterval(() => void sample().catch((err: Error) => unexpected(`a sample failed: ${err.message}`)), SAMPLE_MS);
  let round = 0;
  let chaosDone: Promise<void> = Promise.resolve();
  const chaos = setInterval(() => {
    round++;
    chaosDone = chaosDone.then(async () => {
      if (round % 2 === 1 && !PG_URL) {
        await promisify(execFile)(process.execPath, [WORKER_MAIN, 'backup', join(dir, 'backup.sqlite')], { env });
        say(`  ${((Date.now() - started) / 1000).toFixed(0)} s: backup made`);
      } else {
        notePeaks();
        victim.child.kill('SIGKILL');
        victim = await startDaemon();
        say(`  ${((Date.now() - started) / 1000).toFixed(0)} s: a daemon killed (-9), another started`);
      }
    });
  }, CHAOS_MS);

  await new Promise((resolve) => setTimeout(resolve, MINUTES * 60_000));
  clearInterval(tick);
  clearInterval(chaos);
  clearInterval(scrape);
  await Promise.all([...inflight, chaosDone]);
  const reading = await openRows();
  const drainUntil = Date.now() + DRAIN_MS;
  while ((await reading.unfinished()) > 0 && Date.now() < drainUntil) await new Promise((resolve) => setTimeout(resolve, 500));
  clearInterval(sampling);
  await sample();
  const { arrivals: stamped, stalls } = await stub.report();

  const failures: string[] = [];
  const check = (ok: boolean, what: string, why = '') => {
    say(`  ${ok ? '✔' : '✖'} ${what}${ok || !why ? '' : `: ${why}`}`);
    if (!ok) failures.push(what);
  };
  const rows = await reading.all();
  const byStatus: Record<string, number> = {};
  for (const row of rows) byStatus[row.status] = (byStatus[row.status] ?? 0) + 1;
  const stored = new Map(rows.map((row) => [row.id, row]));
  const headers = { 'x-proxy-key': key };
  const health = (await (await fetch(`${base}/health`, { headers })).json()) as { queue: Record<string, number> };
  const metrics = await (await fetch(`${base}/metrics`, { headers })).text();
  const counter = (pattern: RegExp) => metrics.split('\n').reduce((sum, line) => sum + (pattern.test(line) ? Number(line.split(' ').at(-1)) : 0), 0);
  await reading.close();

  say(
    `${seen.created.size} jobs created (${seen.waits} waited for by long-poll, ${seen.cancels} cancels), ${stamped.length} upstream calls; by status ${JSON.stringify(byStatus)}`,
  );
  const lost = [...seen.created.keys()].filter((id) => !stored.has(id));
  check(lost.length === 0, 'every job answered 202 is stored', `${lost.length} missing, e.g. ${lost[0]}`);
  check((byStatus.queued ?? 0) + (byStatus.in_progress ?? 0) === 0, `none left queued or in progress within ${DRAIN_MS / 1000} s of the load's end`);
  const wrong = [...seen.created].filter(([id, prompt]) => stored.get(id)?.status === 'completed' && stored.get(id)?.output_text !== `echo: ${prompt}`);
  check(wrong.length === 0, 'every completed job holds the answer to its own prompt', `${wrong.length} do not, e.g. ${wrong[0]?.[0]}`);
  const countsDiffer = Object.keys(health.queue).filter((status) => health.queue[status] !== (byStatus[status] ?? 0));
  check(countsDiffer.length === 0, "detailed /health's queue counts match the rows", `differ for ${countsDiffer.join(', ')}`);
  const finishedDiffer = ['completed', 'failed', 'cancelled', 'expired'].filter(
    (status) => counter(new RegExp(`^proxy_jobs_finished_total\\{.*status="${status}"`)) !== (byStatus[status] ?? 0),
  );
  check(
    counter(/^proxy_jobs_created_total/) === rows.length && finishedDiffer.length === 0,
    "/metrics's job counters match the rows",
    `created ${counter(/^proxy_jobs_created_total/)} against ${rows.length} rows; finished differ for ${finishedDiffer.join(', ') || 'none'}`,
  );
  check(seen.unexpected.size === 0, 'the API answered every client as expected', JSON.stringify(Object.fromEntries(seen.unexpected)));
  if (LIMITS) {
    say(`${seen.refused} creates refused (429)`);
    // GCRA allows the budget each second and a burst as large: over the whole load at most
    // CREATE_BUDGET × (seconds + 1). Times are when the clients read their 202s, which may lag the
    // decisions by a moment: half a second's budget spare.
    const accepted = seen.acceptedAt;
    const span = ((accepted.at(-1) ?? 0) - (accepted[0] ?? 0)) / 1000;
    const allowed = Math.floor(CREATE_BUDGET * (span + 1.5));
    check(accepted.length <= allowed, 'creates accepted stay within RATE_LIMIT_PER_KEY', `${accepted.length} in ${span.toFixed(1)} s against at most ${allowed}`);
    const refusedCounted = counter(/^proxy_rate_limited_total/);
    check(refusedCounted === seen.refused, "/metrics's refusals match the 429s the clients saw", `${refusedCounted} counted against ${seen.refused}`);
    // Calls are spaced one interval apart, with no burst: any run of k calls after the first spans
    // at least k intervals (a second's worth here), less 150 ms for a call sent a moment
    // after its turn. Binding only where calls were due faster than that: after a killed daemon's
    // jobs come back together, or a burst of creates with retries among them.
    const interval = Math.ceil(60_000 / UPSTREAM_RPM);
    const arrivals = stamped.sort((a, b) => a - b);
    const k = Math.min(Math.floor(1000 / interval), arrivals.length - 1);
    const { span: tightest, from: tightestFrom } = tightestWindow(arrivals, k);
    check(tightest >= k * interval - 150, 'upstream calls stay within UPSTREAM_RPM', `${k + 1} calls within ${tightest} ms, where ${k * interval} ms is the least allowed`);
    say(`upstream: the tightest ${k + 1} calls in a row spanned ${Number.isFinite(tightest) ? tightest : '-'} ms (at least ${k * interval} ms allowed)`);
    // A stall that ended as the window's first call was stamped may have held that stamp back by up to its length.
    const heldBack = stalls.filter((s) => s.endedAt >= tightestFrom - 5 && s.endedAt <= tightestFrom + 15).reduce((most, s) => Math.max(most, s.ms), 0);
    say(
      `the stub's event loop, which stamps the arrivals in a process of its own: ${stalls.length} stalls over 30 ms, the longest ${stalls.reduce((most, s) => Math.max(most, s.ms), 0).toFixed(0)} ms; ${heldBack ? `one of ${heldBack.toFixed(0)} ms ended as the tightest window's first call was stamped` : "none at the tightest window's first call"}`,
    );
  }
  const errorLines = readdirSync(dir)
    .filter((name) => name.endsWith('.log'))
    .flatMap((name) =>
      readFileSync(join(dir, name), 'utf8')
        .split('\n')
        .filter((line) => line.includes('"level":"error"'))
        .map((line) => `${name}: ${line.slice(0, 200)}`),
    );
  check(errorLines.length === 0, 'no program logged an error', errorLines.slice(0, 3).join(' | '));
  const exited = [api, steady, victim].filter((p) => !p.running());
  check(exited.length === 0, 'no program stopped on its own', `${exited.length} did: see their logs`);
  // Four samples from the second on, past the start's own growth, against the last four.
  const early = rss.slice(1, 5);
  const late = rss.slice(-4);
  const mean = (xs: typeof rss, of: 'api' | 'daemon') => (xs.reduce((sum, x) => sum + x[of], 0) / Math.max(1, xs.length)).toFixed(0);
  say(
    `peak RSS: proxy-api ${peaks.api.toFixed(0)} MB, a daemon ${peaks.worker.toFixed(0)} MB; RSS early and at the end: proxy-api ${mean(early, 'api')} and ${mean(late, 'api')} MB, the daemon that ran throughout ${mean(early, 'daemon')} and ${mean(late, 'daemon')} MB`,
  );

  await Promise.all(procs.map((p) => p.stop()));
  return failures;
}

let failures: string[];
try {
  failures = await main();
} catch (err) {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  failures = ['the soak itself failed (above)'];
} finally {
  await Promise.all([...procs.map((p) => p.stop()), upstream?.close()]);
}
if (failures.length > 0) {
  say(`soak failed: ${failures.join('; ')}; logs${PG_URL ? '' : ' and the file'} kept in ${dir}${PG_URL ? `, the jobs in schema ${pgSchema}` : ''}`);
  process.exitCode = 1;
} else {
  rmSync(dir, { recursive: true, force: true });
  if (PG_URL) await onServer(`DROP SCHEMA IF EXISTS ${pgSchema} CASCADE`);
}
