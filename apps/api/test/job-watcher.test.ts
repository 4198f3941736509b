import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createSilentLogger, openStore, type JobStore } from '@proxy/core';
import { eventually, getJson, newTestJob, openTestStore, overriding, within } from '../../../test/helpers/index.ts';
import { createJobWatcher, WATCH_ALWAYS_BY_ID, type JobWatcher } from '../src/job-watcher.ts';
import { startTestApi } from './helpers.ts';

// The watcher sees what other connections commit (a worker's), so each test finishes jobs through a
// second store of its own on the same database.
async function setUp(t: Parameters<typeof startTestApi>[0], wrap: (store: JobStore, other: () => JobStore) => JobStore = (store) => store, pollMs = 15, now?: () => number) {
  let other: JobStore | undefined;
  let watcher: JobWatcher | undefined;
  const api = await startTestApi(t, {
    wrapStore: (store) => wrap(store, () => other as JobStore),
    watcher: (store) => (watcher = createJobWatcher({ store, logger: createSilentLogger(), pollMs, ...(now ? { now } : {}) })),
  });
  other = await openStore(api.config.db);
  t.after(() => other?.close());
  // Until the watcher holds this many waiters.
  const waiting = (n: number) => eventually(async () => (watcher as JobWatcher).waiting === n, 5000, 5);
  return { api, other, watcher: watcher as JobWatcher, waiting };
}

// Counts what the watcher's looks read: listings and their rows, and ids read by id (looks at more
// than WATCH_ALWAYS_BY_ID of them apart). `wrap` goes to setUp.
function lookCounts() {
  const seen = { listings: 0, listedRows: 0, byIdLooks: 0, idsRead: 0 };
  const wrap = (store: JobStore) =>
    overriding(store, {
      listFinishedSince: async (since: number) => {
        const rows = await store.listFinishedSince(since);
        seen.listings += 1;
        seen.listedRows += rows.length;
        return rows;
      },
      finalAmong: async (ids: readonly string[]) => {
        if (ids.length > WATCH_ALWAYS_BY_ID) seen.byIdLooks += 1;
        seen.idsRead += ids.length;
        return store.finalAmong(ids);
      },
    });
  return { seen, wrap };
}

// Records when the watcher asked whether anything was committed, and its watches opened and closed.
function lookTimes() {
  const seen = { looks: [] as number[], opened: 0, closed: 0, notices: 0 };
  const wrap = (store: JobStore) =>
    overriding(store, {
      changeCounter: () => {
        seen.looks.push(performance.now());
        return store.changeCounter();
      },
      watchChanges: (listener: () => void) => {
        const stop = store.watchChanges(() => {
          seen.notices += 1;
          listener();
        });
        if (!stop) return null;
        seen.opened += 1;
        return () => {
          seen.closed += 1;
          stop();
        };
      },
    });
  // Looks in the last `ms`.
  const looksWithin = (ms: number) => seen.looks.filter((at) => at > performance.now() - ms).length;
  return { seen, wrap, looksWithin };
}

// Completes held jobs twenty at a time, with pauses, so that the watcher looks many times meanwhile.
async function completeInTwenties(store: JobStore, jobs: ReadonlyArray<{ id: string; leaseToken: number }>) {
  for (let i = 0; i < jobs.length; i += 20) {
    await Promise.all(jobs.slice(i, i + 20).map((j) => store.completeJob(j.id, j.leaseToken, { outputText: 'other', usage: null, response: {} })));
    await new Promise((r) => setTimeout(r, 2));
  }
}

test('one long-poll while another connection finishes 2,000 jobs: the watcher reads the job waited for, not every job that finished', async (t) => {
  const { seen, wrap } = lookCounts();
  const { api, other, watcher, waiting } = await setUp(t, wrap);
  for (let i = 0; i < 2000; i++) await other.createJob(newTestJob());
  const running = await other.claimJobs({ workerId: 'w', limit: 2000, leaseMs: 60_000 });
  const waited = (await api.store.createJob(newTestJob())).job.id;
  const answer = getJson(api.url, `/v1/requests/${waited}?wait=30`, api.key);
  await waiting(1);

  await completeInTwenties(other, running);
  assert.equal(watcher.waiting, 1, 'other jobs finishing woke nobody');
  await other.cancelJob(waited, 'default');
  const { json } = await answer;
  assert.equal(json.status, 'cancelled');
  const rowsRead = seen.listedRows + seen.idsRead;
  t.diagnostic(`the watcher read ${rowsRead} rows while 2,000 other jobs finished`);
  assert.ok(rowsRead < 200, `the watcher read ${rowsRead} rows for one waiter`);
});

test("a job that finished between its long-poll's read and its wait, with nothing committed after, is answered at the next look", async (t) => {
  let target = '';
  const { api, other, waiting } = await setUp(t, (store, otherStore) =>
    overriding(store, {
      getJobOutcome: async (id: string) => {
        const outcome = await store.getJobOutcome(id);
        if (id === target) {
          target = '';
          // Finished elsewhere once read here; the watcher looks (and finds nothing waiting for it) before the wait begins.
          await otherStore().cancelJob(id, 'default');
          await new Promise((r) => setTimeout(r, 100));
        }
        return outcome;
      },
    }),
  );
  // A waiter that stays keeps the watcher looking throughout.
  const stays = (await api.store.createJob(newTestJob())).job.id;
  const staying = getJson(api.url, `/v1/requests/${stays}?wait=20`, api.key);
  await waiting(1);

  target = (await api.store.createJob(newTestJob())).job.id;
  const asked = Date.now();
  const { json } = await getJson(api.url, `/v1/requests/${target}?wait=10`, api.key);
  const took = Date.now() - asked;
  assert.equal(json.status, 'cancelled');
  assert.ok(took < 3000, `answered after ${took} ms, not at the end of its 10 s wait`);

  await other.cancelJob(stays, 'default');
  assert.equal((await staying).json.status, 'cancelled');
});

test(`more than WATCH_ALWAYS_BY_ID (${WATCH_ALWAYS_BY_ID}) jobs waited for: each is answered when it finishes`, async (t) => {
  const { api, other, waiting } = await setUp(t);
  const ids: string[] = [];
  for (let i = 0; i < WATCH_ALWAYS_BY_ID + 6; i++) ids.push((await api.store.createJob(newTestJob())).job.id);
  const answers = ids.map((id) => getJson(api.url, `/v1/requests/${id}?wait=30`, api.key));
  await waiting(ids.length);
  const started = Date.now();
  for (const id of ids) await other.cancelJob(id, 'default');
  const results = await Promise.all(answers);
  assert.ok(results.every((r) => r.json.status === 'cancelled'));
  assert.ok(Date.now() - started < 10_000, 'answered as the jobs finished, not at the end of the wait');
});

test(`more than WATCH_ALWAYS_BY_ID (${WATCH_ALWAYS_BY_ID}) waiters while many more jobs finish: the looks read the waiters by id, and list about once a second`, async (t) => {
  const { seen, wrap } = lookCounts();
  const { api, other, waiting } = await setUp(t, wrap);
  for (let i = 0; i < 3000; i++) await other.createJob(newTestJob());
  const running = await other.claimJobs({ workerId: 'w', limit: 3000, leaseMs: 60_000 });
  const ids: string[] = [];
  for (let i = 0; i < WATCH_ALWAYS_BY_ID + 6; i++) ids.push((await api.store.createJob(newTestJob())).job.id);
  const answers = ids.map((id) => getJson(api.url, `/v1/requests/${id}?wait=60`, api.key));
  // Handled from the start: a failed assertion closes the server under them.
  void Promise.allSettled(answers);
  await waiting(ids.length);

  const started = Date.now();
  await completeInTwenties(other, running);
  const seconds = (Date.now() - started) / 1000;
  t.diagnostic(`${seconds.toFixed(1)} s: ${seen.listings} listings read ${seen.listedRows} rows; ${seen.byIdLooks} looks by id read ${seen.idsRead} ids`);
  assert.ok(seen.byIdLooks >= 10, `only ${seen.byIdLooks} looks read the ${ids.length} waiters by id`);
  assert.ok(seen.listings <= seconds + 5, `${seen.listings} listings in ${seconds.toFixed(1)} s`);

  for (const id of ids) await other.cancelJob(id, 'default');
  assert.ok((await Promise.all(answers)).every((r) => r.json.status === 'cancelled'));
});

test('many waiters while few jobs finish: the looks list the finished jobs rather than read every waiter by id', async (t) => {
  const { seen, wrap } = lookCounts();
  const { api, other, watcher, waiting } = await setUp(t, wrap);
  const ids: string[] = [];
  for (let i = 0; i < 200; i++) ids.push((await api.store.createJob(newTestJob())).job.id);
  const answers = ids.map((id) => getJson(api.url, `/v1/requests/${id}?wait=60`, api.key));
  // Handled from the start: a failed assertion closes the server under them.
  void Promise.allSettled(answers);
  await waiting(ids.length);
  // Past the look that reads the newly waited jobs by id.
  await new Promise((r) => setTimeout(r, 100));
  seen.byIdLooks = 0;
  seen.listings = 0;

  // Ten of them finish, one every 30 ms: each look finds a commit and at most a few rows to list.
  for (const id of ids.slice(0, 10)) {
    await other.cancelJob(id, 'default');
    await new Promise((r) => setTimeout(r, 30));
  }
  await eventually(async () => watcher.waiting === ids.length - 10, 5000, 5);
  assert.ok(seen.listings >= 5, `${seen.listings} listings`);
  assert.equal(seen.byIdLooks, 0, 'no look read the 200 waiters by id');

  for (const id of ids.slice(10)) await other.cancelJob(id, 'default');
  assert.ok((await Promise.all(answers)).every((r) => r.json.status === 'cancelled'));
});

test('while nothing is committed a waiter costs a look about once a second, and its job is answered a moment after another connection finishes it', async (t) => {
  const { seen, wrap, looksWithin } = lookTimes();
  const { api, other, watcher, waiting } = await setUp(t, wrap);
  const took: number[] = [];
  for (let i = 0; i < 5; i++) {
    const id = (await api.store.createJob(newTestJob())).job.id;
    const answer = getJson(api.url, `/v1/requests/${id}?wait=30`, api.key);
    await waiting(1);
    const since = performance.now();
    // Past the looks every poll that follow a commit (the create's): looking once a second.
    await eventually(
      async () => {
        const n = seen.looks.length;
        return (seen.looks[n - 1] as number) > since && (seen.looks[n - 1] as number) - (seen.looks[n - 2] as number) > 500;
      },
      5000,
      5,
    );
    if (i === 0) {
      await new Promise((r) => setTimeout(r, 2000));
      const looks = looksWithin(2000);
      t.diagnostic(`${looks} looks in 2 s with nothing committed`);
      // Polling every 15 ms it would be some 130. Once a second, and on PostgreSQL two more after each
      // second's fallback move of the counter (taken for a commit).
      assert.ok(looks <= 12, `${looks} looks in 2 s with nothing committed`);
    }
    // Well before the next look a second later.
    await new Promise((r) => setTimeout(r, 50));
    const finished = performance.now();
    await other.cancelJob(id, 'default');
    assert.equal((await answer).json.status, 'cancelled');
    took.push(Math.round(performance.now() - finished));
  }
  const median = [...took].sort((a, b) => a - b)[2] as number;
  t.diagnostic(`answered ${took.join(', ')} ms after the job finished`);
  // Found at the next safety look instead, each would take some 950 ms.
  assert.ok(median < 400, `answered ${took.join(', ')} ms after the job finished`);
  assert.equal(watcher.waiting, 0);
  assert.ok(seen.opened >= 1);
  assert.equal(seen.closed, seen.opened, 'nobody waits: the watch is closed');
});

test(`after the clock stepped back, more than WATCH_ALWAYS_BY_ID (${WATCH_ALWAYS_BY_ID}) waiters: a job finished since is answered when it finishes, not at its wait's end`, async (t) => {
  // The machine's clock read two minutes ahead until it stepped back: the API's, and the worker's
  // that writes finished_at.
  let ahead = 120_000;
  const now = () => Date.now() + ahead;
  const { seen, wrap } = lookCounts();
  const { api, watcher, waiting } = await setUp(t, wrap, 15, now);
  const { db } = api.config;
  const other = await openTestStore(db.url ? { DATABASE_URL: db.url, DATABASE_SCHEMA: db.schema } : { PROXY_DB_PATH: db.path }, { now });
  t.after(() => other.close());
  const n = WATCH_ALWAYS_BY_ID + 36;
  for (let i = 0; i < n; i++) await other.createJob(newTestJob());
  const held = await other.claimJobs({ workerId: 'w', limit: n, leaseMs: 60_000 });
  const stop = new AbortController();
  t.after(() => stop.abort());
  const answered = new Map<string, number>();
  for (const j of held) void watcher.waitForFinal(j.id, 20_000, stop.signal).then(() => answered.set(j.id, Date.now()));
  await waiting(n);
  // Listed once before the step (a job finished), so the looks list rather than read by id.
  await other.completeJob(held[0]!.id, held[0]!.leaseToken, { outputText: 'x', usage: null, response: {} });
  await eventually(async () => answered.has(held[0]!.id) && seen.listings > 0, 5000, 5);
  ahead = 0;
  const finished = Date.now();
  await other.completeJob(held[1]!.id, held[1]!.leaseToken, { outputText: 'x', usage: null, response: {} });
  await eventually(async () => answered.has(held[1]!.id), 5000, 5);
  assert.ok(answered.get(held[1]!.id)! - finished < 2000, `answered ${answered.get(held[1]!.id)! - finished} ms after it finished`);
});

test('a waiter whose wait ends while a look is under way leaves no watch open', async (t) => {
  const { seen, wrap } = lookTimes();
  // From the second ask on, the store takes 3 s to answer: the wait (2 s) ends during that look.
  let asks = 0;
  const slow = (store: JobStore) =>
    overriding(wrap(store), {
      changeCounter: async () => {
        asks += 1;
        if (asks > 1) await new Promise((r) => setTimeout(r, 3000));
        return store.changeCounter();
      },
    });
  const { api, watcher } = await setUp(t, slow);
  const id = (await api.store.createJob(newTestJob())).job.id;
  const { json } = await getJson(api.url, `/v1/requests/${id}?wait=2`, api.key);
  assert.equal(json.status, 'queued');
  assert.equal(watcher.waiting, 0);
  await eventually(async () => asks >= 2, 5000, 5);
  // Past the end of the slow look.
  await new Promise((r) => setTimeout(r, 3500));
  assert.equal(seen.closed, seen.opened, `${seen.opened} watches opened, ${seen.closed} closed, with nobody waiting`);
});

test('while this API commits (creates) with long-polls waiting, the watcher polls rather than hear of each commit', async (t) => {
  const { seen, wrap } = lookTimes();
  const { api, waiting } = await setUp(t, wrap);
  const id = (await api.store.createJob(newTestJob())).job.id;
  void getJson(api.url, `/v1/requests/${id}?wait=30`, api.key).catch(() => undefined);
  await waiting(1);
  // Quiet, and watching.
  await eventually(async () => seen.opened > seen.closed, 5000, 5);
  await new Promise((r) => setTimeout(r, 300));
  const before = seen.notices;
  const creates = 300;
  for (let i = 0; i < creates; i++) await api.store.createJob(newTestJob());
  // Let the last notices arrive.
  await new Promise((r) => setTimeout(r, 200));
  const notices = seen.notices - before;
  t.diagnostic(`${notices} notices over ${creates} commits of its own`);
  // Watched throughout, each commit brings one or more.
  assert.ok(notices < creates / 3, `${notices} notices over ${creates} commits`);
});

test('a store that cannot tell the watcher of commits: it looks every poll while anyone waits', async (t) => {
  const { wrap, looksWithin } = lookTimes();
  const { api, other, waiting } = await setUp(t, (store) => overriding(wrap(store), { watchChanges: () => null }));
  const id = (await api.store.createJob(newTestJob())).job.id;
  const answer = getJson(api.url, `/v1/requests/${id}?wait=30`, api.key);
  await waiting(1);
  await new Promise((r) => setTimeout(r, 1000));
  const looks = looksWithin(1000);
  // Some 65 at 15 ms; once a second if it waited for notices.
  assert.ok(looks >= 20, `${looks} looks in 1 s`);
  await other.cancelJob(id, 'default');
  assert.equal((await answer).json.status, 'cancelled');
});

test('a long-poll that begins after the watcher closed (the API stopping) is answered at once with the job as it is', async (t) => {
  const { api, watcher } = await setUp(t);
  const id = (await api.store.createJob(newTestJob())).job.id;
  watcher.close();
  const answer = await within(getJson(api.url, `/v1/requests/${id}?wait=30`, api.key), 2000, 'the long-poll');
  assert.equal(answer.status, 200);
  assert.equal(answer.json.status, 'queued');
  assert.equal(watcher.waiting, 0);
});
