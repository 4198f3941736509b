/**
 * Hosts whose clocks disagree, on one PostgreSQL server: an API and a worker daemon started under
 * libfaketime (LD_PRELOAD), their clocks ahead of everyone else's, as a host with a broken NTP is.
 * And a worker whose clock steps while it runs, on either backend.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import {
  WORKER_MAIN,
  completedJob,
  enqueueJob,
  eventually,
  newCredentials,
  onlyOn,
  openTestStore,
  postSigned,
  spawnNode,
  startApiProcess,
  tempDir,
  testEnv,
} from '../helpers/index.ts';

// Debian's faketime package, under the machine's multiarch folder (x86_64-linux-gnu, aarch64-linux-gnu, …).
const FAKETIME_LIB =
  readdirSync('/usr/lib')
    .map((arch) => `/usr/lib/${arch}/faketime/libfaketime.so.1`)
    .find((path) => existsSync(path)) ?? '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

/** The environment that runs a process with its clock `seconds` ahead (the monotonic clock, which timers use, untouched). */
function clockAhead(seconds: number): Record<string, string> {
  return { LD_PRELOAD: FAKETIME_LIB, FAKETIME: `+${seconds}s`, FAKETIME_DONT_FAKE_MONOTONIC: '1' };
}

/** Whether libfaketime is here; CI installs it, so there its absence fails the test. */
function haveFaketime(t: { skip: (why: string) => void }): boolean {
  if (existsSync(FAKETIME_LIB)) return true;
  if (process.env.CI) throw new Error(`${FAKETIME_LIB} is missing: .ci/run installs faketime`);
  t.skip('libfaketime is not installed here (apt-get install faketime); CI installs it');
  return false;
}

test("a worker host whose clock runs a minute ahead takes no job another worker is calling, and an API host 10 minutes ahead takes clients' fresh requests: both go by the server's clock and say theirs is off", async (t) => {
  if (!onlyOn('postgres', t, 'hosts sharing one database server')) return;
  if (!haveFaketime(t)) return;
  const dir = tempDir(t);
  // Calls of 8 s: the host ahead starts, and claims, while every one of them runs (the check below
  // makes sure, so a slow start fails the test rather than passing it unproven).
  const CALL_MS = 8000;
  const stub = await startStubUpstream({ behave: async () => (await new Promise((r) => setTimeout(r, CALL_MS)), {}) });
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-skew', OPENAI_BASE_URL: stub.url, WORKER_CONCURRENCY: '4' });
  const children: Array<ReturnType<typeof spawnNode>> = [];
  t.after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map((c) => c.exited));
  });
  const saysOff = (child: ReturnType<typeof spawnNode>) => [...child.lines, ...child.stderr].find((l) => l.includes('ahead of the PostgreSQL server'));

  // An API 10 minutes ahead: a client's `ts` from a true clock would be stale by its own.
  const api = await startApiProcess(t, { ...env, ...clockAhead(600) }, dir);
  const offApi = JSON.parse(saysOff(api.child) ?? '{}') as { offset_ms?: number };
  assert.ok(Math.abs((offApi.offset_ms ?? 0) + 600_000) < 1000, `the API says its clock is off by ${offApi.offset_ms} ms`);
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const created = await postSigned(api.url, key, secret, { prompt: `skew ${i}` });
    assert.equal(created.status, 202, JSON.stringify(created.json));
    ids.push(created.json.id as string);
  }

  const honest = spawnNode(WORKER_MAIN, ['daemon'], env, dir);
  children.push(honest);
  await eventually(async () => stub.calls.length === 4, 15_000, 10);
  const callsBegan = Date.now();

  const ahead = spawnNode(WORKER_MAIN, ['daemon'], { ...env, ...clockAhead(60) }, dir);
  children.push(ahead);
  await ahead.waitFor((l) => l.includes('worker started'), 10_000);
  const offWorker = JSON.parse(saysOff(ahead) ?? '{}') as { offset_ms?: number };
  assert.ok(Math.abs((offWorker.offset_ms ?? 0) + 60_000) < 1000, `the worker says its clock is off by ${offWorker.offset_ms} ms`);
  // Its claims ran (and looked for lapsed leases: its queue is empty) while the calls still ran; by
  // its own clock every lease of 30 s had lapsed half a minute ago.
  await new Promise((r) => setTimeout(r, 1000));
  const store = await openTestStore(env);
  t.after(() => store.close());
  assert.equal((await store.countByStatus()).in_progress, 4, 'the calls were still running while the host ahead claimed');
  assert.ok(Date.now() - callsBegan < CALL_MS, 'the host ahead started after the calls ended');

  for (const id of ids) assert.equal((await completedJob(api.url, key, id, 15_000)).status, 'completed');
  assert.equal(stub.calls.length, 4, `${stub.calls.length} upstream calls for 4 jobs: the host ahead took jobs whose calls ran`);

  // Where an operator sees the hosts off, besides their logs: in /health the API's own offset and
  // each worker's heartbeat, and in /metrics the API's own offset and the farthest worker's.
  const offsets = async () => {
    const res = await fetch(`${api.url}/health`, { headers: { 'x-proxy-key': key } });
    const workers = ((await res.json()) as { workers: Array<{ pid: number; clock_offset_ms: number }> }).workers;
    return new Map(workers.map((w) => [w.pid, w.clock_offset_ms]));
  };
  await eventually(async () => (await offsets()).size === 2, 10_000);
  const apiOff = ((await (await fetch(`${api.url}/health`, { headers: { 'x-proxy-key': key } })).json()) as { clock_offset_ms: number }).clock_offset_ms;
  assert.ok(Math.abs(apiOff + 600_000) < 1000, `/health shows the API's own clock ${apiOff} ms off`);
  const seen = await offsets();
  assert.ok(Math.abs(seen.get(ahead.proc.pid!)! + 60_000) < 1000, `/health shows the worker ahead ${seen.get(ahead.proc.pid!)} ms off`);
  assert.ok(Math.abs(seen.get(honest.proc.pid!)!) < 1000, `/health shows the honest worker ${seen.get(honest.proc.pid!)} ms off`);
  const metrics = await (await fetch(`${api.url}/metrics`, { headers: { 'x-proxy-key': key } })).text();
  const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1]);
  assert.ok(Math.abs(gauge('proxy_clock_offset_seconds') + 600) < 1, `the API's offset in /metrics: ${gauge('proxy_clock_offset_seconds')} s`);
  assert.ok(Math.abs(gauge('proxy_workers_clock_offset_max_seconds') + 60) < 1, `the farthest worker's in /metrics: ${gauge('proxy_workers_clock_offset_max_seconds')} s`);
});

test('a worker daemon whose clock steps forward two minutes during a call goes on with it, calls the job once, and says so', async (t) => {
  if (!haveFaketime(t)) return;
  const dir = tempDir(t);
  // libfaketime reads the offset from this file at each reading of the clock (FAKETIME_NO_CACHE).
  const offsetFile = join(dir, 'faketime');
  writeFileSync(offsetFile, '+0\n');
  let stepped = false;
  const stub = await startStubUpstream({
    behave: async () => {
      // Half a second into the first call, the clock steps 120 s forward: its 30 s lease reads as
      // run out 90 s ago. Before, the daemon took the job again and called it a second time.
      if (!stepped) setTimeout(() => writeFileSync(offsetFile, '+120\n'), 500);
      stepped = true;
      await new Promise((r) => setTimeout(r, 4000));
      return {};
    },
  });
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-step', OPENAI_BASE_URL: stub.url, WORKER_CONCURRENCY: '4' });
  const store = await openTestStore(env);
  t.after(() => store.close());
  const id = await enqueueJob(store, 'stepped forward');
  const worker = spawnNode(
    WORKER_MAIN,
    ['daemon'],
    { ...env, LD_PRELOAD: FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE: offsetFile, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' },
    dir,
  );
  t.after(async () => {
    worker.kill('SIGKILL');
    await worker.exited;
  });
  await worker.waitFor((l) => l.includes('job completed'), 20_000);
  assert.equal(stub.calls.length, 1, `${stub.calls.length} upstream calls`);
  const job = await store.getJob(id);
  assert.equal(job?.status, 'completed');
  assert.equal(job?.attempts, 1);
  assert.ok(
    worker.lines.some((l) => l.includes('the clock stepped forward 120 s')),
    worker.lines.join('\n'),
  );
  assert.ok(!worker.lines.some((l) => l.includes('abandoned')), worker.lines.join('\n'));
});
