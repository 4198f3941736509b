import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { test } from 'node:test';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import {
  BACKEND,
  WORKER_MAIN,
  assertEachCompletedOnce,
  callsBegun,
  eventually,
  newCredentials,
  openTestStore,
  postSigned,
  spawnNode,
  startApiProcess,
  tempDir,
  testEnv,
  type Child,
} from '../helpers/index.ts';

const LEASE_MS = 2000;

/**
 * Whether an overlap at the stub (two calls of one job in its hands at once) broke the lease, and how:
 * null when it did not. The stub alone cannot tell: a call a daemon sent just before it was killed
 * is the upstream's to read, and a stub starved of CPU read such calls seconds later (the kernel
 * held the connection, its request and the dead daemon's FIN; seen with tcpdump), when another
 * daemon was calling the job again after the lease lapsed. What the lease does promise is about when
 * calls begin: no call goes out with less than a third of its lease left (lease.ts), so the next
 * attempt's claim, and its call, come at least that long after the one before was begun. Each
 * daemon logs "calling upstream" just before it sends (before its first byte), on the machine's one
 * clock; the database's (PostgreSQL's on this machine, or the daemons' own on SQLite) is the same.
 */
function leaseBroken(
  overlap: { prompt: string; first: { daemon: string; at: number }; then: { daemon: string; at: number } },
  daemons: ReadonlyArray<Child & { name: string }>,
  id: string | undefined,
): string | null {
  const missing = `"${overlap.prompt}": a call with no "calling upstream" line before it`;
  if (id === undefined) return missing;
  // When each daemon began its calls of the job, on the machine's clock.
  const begun = (daemon: string) => callsBegun(daemons.find((d) => d.name === daemon)?.lines ?? [], id);
  // Each arrival's call is the latest its daemon began before it reached the stub; the earlier
  // arrival's, the latest before that one, should one daemon have made both.
  const then = Math.max(...begun(overlap.then.daemon).filter((at) => at <= overlap.then.at));
  const earlier = begun(overlap.first.daemon).filter((at) => at <= overlap.first.at);
  if (overlap.first.daemon === overlap.then.daemon && earlier.includes(then)) earlier.splice(earlier.lastIndexOf(then), 1);
  const first = Math.max(...earlier);
  if (!Number.isFinite(first) || !Number.isFinite(then)) return missing;
  // A third of the lease, less a few ms: the log's and the lease's clock readings are apart by the
  // sync code between them, and on PostgreSQL by the worker's estimate of the server's clock.
  const apart = Math.abs(then - first);
  const least = Math.floor(LEASE_MS / 3) - 25;
  return apart >= least ? null : `"${overlap.prompt}": begun by ${overlap.first.daemon} and ${overlap.then.daemon} ${apart} ms apart, under a third of the lease (${least} ms)`;
}

test('two APIs and three worker daemons on one database, daemons killed with -9 along the way: every job completes, never on two workers at once, and the rate limit holds across both APIs', async (t) => {
  const dir = tempDir(t);
  const began = Date.now();
  // Each daemon names itself in a header of its calls, so that an overlap says whose calls met, when
  // each arrived, and whether the first caller had been killed by then.
  const killedAt = new Map<string, number>();
  type Arrival = { daemon: string; at: number };
  const active = new Map<string, Arrival[]>();
  const overlaps: Array<{ prompt: string; first: Arrival; then: Arrival }> = [];
  // The stub runs in this process: a call counts as running until this loop gets round to ending it.
  // How long the loop was held up is reported with any overlap; it does not bound how late the stub
  // reads a call (seconds later than its longest hold-up, with the machine loaded: see leaseBroken).
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  t.after(() => lag.disable());
  const stub = await startStubUpstream({
    behave: async (call) => {
      const daemon = String(call.headers['x-test-daemon']);
      const running = active.get(call.prompt) ?? [];
      const me = { daemon, at: call.at };
      for (const first of running) overlaps.push({ prompt: call.prompt, first, then: me });
      running.push(me);
      active.set(call.prompt, running);
      await new Promise((r) => setTimeout(r, 20));
      running.splice(running.indexOf(me), 1);
      return {};
    },
  });
  t.after(() => stub.close());
  const bulk = newCredentials();
  const probe = newCredentials();
  const clients = join(dir, 'clients.json');
  writeFileSync(
    clients,
    JSON.stringify([
      { name: 'bulk', key: bulk.key, secret: bulk.secret, rate_limit: 'off' },
      { name: 'probe', key: probe.key, secret: probe.secret, rate_limit: '10/min' },
    ]),
  );
  const env = testEnv(dir, {
    PROXY_CLIENTS_FILE: clients,
    RATE_LIMIT_PER_IP: 'off',
    OPENAI_API_KEY: 'sk-multi',
    OPENAI_BASE_URL: stub.url,
    LEASE_SECONDS: String(LEASE_MS / 1000),
    LOG_LEVEL: 'info',
  });
  const apis = [await startApiProcess(t, env, dir), await startApiProcess(t, env, dir)];
  const daemons: Array<Child & { name: string }> = [];
  const daemon = () => {
    const name = `d${daemons.length + 1}`;
    // At debug, each call's line ("calling upstream") says when its daemon began it (see below).
    const child = { ...spawnNode(WORKER_MAIN, ['daemon'], { ...env, LOG_LEVEL: 'debug', UPSTREAM_HEADERS: `X-Test-Daemon=${name}` }, dir), name };
    daemons.push(child);
    return child;
  };
  t.after(async () => {
    for (const d of daemons) d.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
  });
  const running = [daemon(), daemon(), daemon()];

  // The budget of 10 creates per minute holds across both APIs.
  const probeResults = await Promise.all(Array.from({ length: 30 }, (_, i) => postSigned(apis[i % 2]!.url, probe.key, probe.secret, { prompt: `probe ${i}` })));
  const probeAccepted = probeResults.filter((r) => r.status === 202).length;
  const probeIds = new Map(probeResults.flatMap((r, i) => (r.status === 202 ? [[r.json.id as string, `probe ${i}`] as const] : [])));
  assert.ok(probeAccepted >= 10 && probeAccepted <= 11, `${probeAccepted} probe creates accepted against 10/min`);

  const total = 1500;
  const ids = new Map<string, string>();
  let next = 0;
  const submit = async () => {
    while (next < total) {
      const i = next++;
      const res = await postSigned(apis[i % 2]!.url, bulk.key, bulk.secret, { prompt: `multi ${i}` });
      assert.equal(res.status, 202);
      ids.set(res.json.id as string, `multi ${i}`);
    }
  };
  const submitting = Promise.all(Array.from({ length: 16 }, submit));
  // Kill a daemon with -9 and start a new one, a few times while jobs flow.
  for (let kill = 0; kill < 4; kill++) {
    await new Promise((r) => setTimeout(r, 600));
    const victim = running.splice(kill % running.length, 1)[0]!;
    killedAt.set(victim.name, Date.now());
    victim.kill('SIGKILL');
    await victim.exited;
    running.push(daemon());
  }
  await submitting;

  const store = await openTestStore(env);
  t.after(() => store.close());
  await eventually(async () => (await store.countByStatus()).completed === total + probeAccepted, 90_000, 200);
  const repeated = await assertEachCompletedOnce(store, ids, stub.calls);
  const held = `this process's event loop (the stub's) was held up by at most ${Math.round(lag.max / 1e6)} ms`;
  const idOf = new Map([...ids, ...probeIds].map(([id, prompt]) => [prompt, id]));
  const broken = overlaps.map((o) => leaseBroken(o, daemons, idOf.get(o.prompt))).filter((why) => why !== null);
  const shown = (a: Arrival) => `${a.daemon} at +${a.at - began} ms${killedAt.has(a.daemon) ? ` (killed at +${killedAt.get(a.daemon)! - began} ms)` : ''}`;
  const seen = overlaps.map((o) => `; "${o.prompt}": ${shown(o.first)}, then ${shown(o.then)}`).join('');
  assert.deepEqual(broken, [], `a job was called by two workers at once, the second within the first's lease; ${held}; every overlap${seen}`);
  t.diagnostic(
    `${BACKEND}: ${total} jobs through 2 APIs, 3 daemons, 4 kill -9: ${stub.calls.length} upstream calls, ${repeated} repeated after kills, ${overlaps.length} overlapping at the stub, none within a lease${seen}; probe ${probeAccepted}/30 accepted at 10/min; ${held}`,
  );
});
