import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { STALLED_AFTER_SECONDS } from '../../packages/core/src/store/types.ts';
import { ROOT, eventually, getJson, newCredentials, postSigned, startApiProcess, startWorkerDaemon, tempDir, testEnv, type TestHooks } from '../helpers/index.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// The flags this machine's sandbox needs: no setuid sandbox as root, no background calls to the outside.
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

test('the status page, in headless Chromium: asks for a key, then shows the counts, charts, failures and workers of a scripted run', async (t) => {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium`);
    t.skip(`Chromium is not installed at ${CHROMIUM} (apt-get install chromium); CI installs it`);
    return;
  }
  const dir = tempDir(t);
  const stub = await startStubUpstream({
    behave: (call) => (call.prompt === 'bad' ? { status: 400, body: { error: { message: 'bad request <script>alert(1)</script>', type: 'invalid_request_error' } } } : {}),
  });
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-dash', OPENAI_BASE_URL: stub.url });
  const { url } = await startApiProcess(t, env, dir);
  for (const prompt of ['one', 'two', 'three', 'bad']) assert.equal((await postSigned(url, key, secret, { prompt })).status, 202);
  startWorkerDaemon(t, env, dir);
  await eventually(async () => {
    const health = await getJson(url, '/health', key);
    return health.json.queue?.completed === 3 && health.json.queue.failed === 1 && health.json.workers?.length === 1;
  }, 15_000);

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const dialogs: string[] = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  await page.goto(`${url}/dashboard`);
  assert.equal(await page.isVisible('#login'), true);
  assert.equal(await page.isVisible('#board'), false);

  await page.fill('#key', 'not-the-right-key-123');
  await page.click('button[type=submit]');
  await page.waitForSelector('#login-error:has-text("not accepted")');

  await page.fill('#key', key);
  await page.click('button[type=submit]');
  await page.waitForSelector('.tile[data-status=completed] b:has-text("3")');
  assert.equal(await page.textContent('.tile[data-status=failed] b'), '1');
  assert.equal(await page.textContent('.tile[data-status=queued] b'), '0');
  assert.match((await page.textContent('#state')) ?? '', /healthy/);
  assert.equal(await page.locator('#chart-completed rect').count(), 1, 'one minute with completions');
  assert.equal(await page.locator('#chart-failed rect').count(), 1);
  const failedRow = await page.textContent('#failed tbody');
  assert.match(failedRow ?? '', /upstream_invalid_request_error: bad request <script>alert\(1\)<\/script>/, 'error text shown as text');
  assert.equal(await page.locator('#workers tbody tr').count(), 1);
  // The worker's clock against the store's, as its heartbeat reported it: one machine here.
  assert.match((await page.textContent('#workers tbody td:nth-child(5)')) ?? '', /^(in step|\d+ ms (ahead|behind))$/);
  assert.match((await page.textContent('#api-clock')) ?? '', /^(in step|\d+ ms (ahead|behind))$/, "the API's own clock, from /health");
  assert.deepEqual(dialogs, [], 'no script from the data ran');
  assert.equal(await page.evaluate('sessionStorage.getItem("proxyKey") !== null && localStorage.length === 0'), true, 'the key is kept for the session only');

  // A browser whose clock runs two hours ahead draws the same hour: the minutes are placed by the
  // server's clock (the stats' server_time), not by the browser's.
  const ahead = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await ahead.clock.setFixedTime(new Date(Date.now() + 2 * 3600_000));
  await ahead.goto(`${url}/dashboard`);
  await ahead.fill('#key', key);
  await ahead.click('button[type=submit]');
  await ahead.waitForSelector('.tile[data-status=completed] b:has-text("3")');
  assert.equal(await ahead.locator('#chart-completed rect').count(), 1, 'a browser two hours ahead drew no completions');
  assert.equal(await ahead.locator('#chart-failed rect').count(), 1);

  // On a phone's width the page is no wider than the screen: the failed job's id and error wrap.
  const narrow = await browser.newPage({ viewport: { width: 400, height: 800 } });
  await narrow.goto(`${url}/dashboard`);
  await narrow.fill('#key', key);
  await narrow.click('button[type=submit]');
  await narrow.waitForSelector('#failed tbody td:has-text("upstream_invalid_request_error")');
  const widths = (await narrow.evaluate('[document.documentElement.scrollWidth, window.innerWidth]')) as [number, number];
  assert.ok(widths[0] <= widths[1], `the page is ${widths[0]} px wide on a ${widths[1]} px screen`);
  await narrow.close();

  // Jobs waiting past a cron worker's minute with no worker alive: the database answers, so /health
  // is ok, but nothing runs them; the state says so rather than "healthy". The health body is
  // the API's own, changed in what it tells.
  const stateAt = async (age: number, told: Record<string, unknown> = { workers: [] }) => {
    const stalled = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    await stalled.route('**/health', async (route) => {
      const real = await route.fetch();
      const body = (await real.json()) as Record<string, unknown>;
      await route.fulfill({ response: real, json: { ...body, queue: { ...(body.queue as object), queued: 4 }, oldest_queued_age_seconds: age, ...told } });
    });
    await stalled.goto(`${url}/dashboard`);
    await stalled.fill('#key', key);
    await stalled.click('button[type=submit]');
    await stalled.waitForSelector('.tile[data-status=queued] b:has-text("4")');
    const state = [await stalled.textContent('#state'), await stalled.getAttribute('#state', 'class')];
    // The empty workers' table says so across all five columns.
    assert.equal(await stalled.getAttribute('#workers tbody td.empty', 'colspan'), '5');
    await stalled.close();
    return state;
  };
  assert.deepEqual(await stateAt(300), ['jobs waiting up to 300 s: no live worker', 'state warn']);
  // The page keeps its own copy of the bound proxy-worker stats goes by: the two agree.
  assert.deepEqual(await stateAt(STALLED_AFTER_SECONDS), [`jobs waiting up to ${STALLED_AFTER_SECONDS} s: no live worker`, 'state warn']);
  assert.deepEqual(await stateAt(STALLED_AFTER_SECONDS - 1), ['healthy', 'state ok']);
  // A worker found the upstream down two minutes ago (its mark, which /health tells): the jobs wait
  // for it. The page counts from the server's time as it answers, so the age it shows is 120 s and
  // the whole seconds the page took to load and ask (on a loaded machine, more than one).
  const downFor = async (told: Record<string, unknown>) => {
    const asked = Date.now();
    const [state, cls] = await stateAt(30, { workers: [], upstream_down_since: Math.floor(asked / 1000) - 120, ...told });
    const shown = Number(/^the upstream was found down (\d+) s ago/.exec(String(state))?.[1]);
    const upTo = 120 + Math.ceil((Date.now() - asked) / 1000 + 1);
    assert.ok(shown >= 120 && shown <= upTo, `${state}: 120 to ${upTo} s`);
    return [String(state).replace(/ \d+ s ago/, ' N s ago'), cls];
  };
  const [downState, downClass] = await downFor({});
  assert.equal(downState, 'the upstream was found down N s ago: jobs wait in the queue, and one call at a time looks whether it is back');
  assert.equal(downClass, 'state warn');
  // With why, as a worker of this release marks it.
  const [why] = await downFor({ upstream_down_reason: 'answers no call within 120 s' });
  assert.match(String(why), /^the upstream was found down N s ago, as it answers no call within 120 s: jobs wait in the queue/);

  mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
  const shot = join(ROOT, 'test-artifacts', 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));
  t.diagnostic(`screenshot: ${shot}`);

  // Served by a proxy under a path of its own, as the PHP tool lived in a web folder: the page, its
  // files and its calls stay under that path (the way to /dashboard/ named it from the root before).
  const proxied = await startPrefixProxy(t, '/tools/gpt', url);
  const under = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await under.goto(`${proxied}/tools/gpt/dashboard`);
  assert.equal(new URL(under.url()).pathname, '/tools/gpt/dashboard/');
  await under.fill('#key', key);
  await under.click('button[type=submit]');
  await under.waitForSelector('.tile[data-status=completed] b:has-text("3")', { timeout: 10_000 });
  assert.match((await under.textContent('#state')) ?? '', /healthy/);
  const legacy = await fetch(`${proxied}/tools/gpt/index.php?action=health`);
  assert.deepEqual([legacy.status, ((await legacy.json()) as { status: string }).status], [200, 'ok'], "the PHP tool's URL under the same path");
});

/** A reverse proxy that serves `target` under `prefix` only, taking the prefix off, as nginx's `location /tools/gpt/ { proxy_pass …/; }` does. */
async function startPrefixProxy(t: TestHooks, prefix: string, target: string): Promise<string> {
  const server = createServer((req, res) => {
    if (!req.url?.startsWith(`${prefix}/`)) return void res.writeHead(404).end();
    const upstream = request(`${target}${req.url.slice(prefix.length)}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
