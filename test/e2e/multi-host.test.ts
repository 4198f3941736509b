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

test('two APIs and three worker daemons on one database, daemons killed with -9 along the way: every job completes, never on two workers at once, and the rate limit holds across both APIs', async (t) => {
  const dir = tempDir(t);
  const began = Date.now();
  // Each daemon names itself in a header of its calls, so that an overlap says whose calls met, when
  // each arrived, and whether the first caller had been killed by then.
  const killedAt = new Map<string, number>();
  const active = new Map<string, Array<{ daemon: string; at: number }>>();
  const overlaps: string[] = [];
  // The stub runs in this process: a call counts as running until this loop gets round to ending it,
  // so how long the loop was held up bounds how far apart two calls said to overlap may have been.
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  t.after(() => lag.disable());
  const stub = await startStubUpstream({
    behave: async (call) => {
      const daemon = String(call.headers['x-test-daemon']);
      const running = active.get(call.prompt) ?? [];
      if (running.length > 0) {
        const before = running.map((c) => `${c.daemon} at +${c.at - began} ms${killedAt.has(c.daemon) ? ` (killed at +${killedAt.get(c.daemon)! - began} ms)` : ''}`);
        overlaps.push(`"${call.prompt}": ${before.join(', ')}, then ${daemon} at +${call.at - began} ms`);
      }
      const me = { daemon, at: call.at };
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
    LEASE_SECONDS: '2',
    LOG_LEVEL: 'info',
  });
  const apis = [await startApiProcess(t, env, dir), await startApiProcess(t, env, dir)];
  const daemons: Array<Child & { name: string }> = [];
  const daemon = () => {
    const name = `d${daemons.length + 1}`;
    const child = { ...spawnNode(WORKER_MAIN, ['daemon'], { ...env, LOG_LEVEL: 'warn', UPSTREAM_HEADERS: `X-Test-Daemon=${name}` }, dir), name };
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
  assert.deepEqual(overlaps, [], `a job was being called by two workers at the same time; ${held}`);
  t.diagnostic(
    `${BACKEND}: ${total} jobs through 2 APIs, 3 daemons, 4 kill -9: ${stub.calls.length} upstream calls, ${repeated} repeated after kills, 0 overlapping; probe ${probeAccepted}/30 accepted at 10/min; ${held}`,
  );
});
