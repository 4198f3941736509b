import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { test } from 'node:test';
import { echoCompletion, startStubUpstream } from '../../scripts/stub-upstream.ts';
import Database from 'better-sqlite3';
import { WORKER_MAIN, enqueueJob, eventually, newTestJob, onlyOn, openTestStore, spawnNode, startWorkerDaemon, tempDir, testEnv, within } from '../helpers/index.ts';

/** Runs an admin command as an operator would, without the upstream key it needs none of; its exit code and lines. */
function adminCli(env: Record<string, string>, dir: string) {
  return async (...args: string[]) => {
    const { OPENAI_API_KEY: _key, ...adminEnv } = env;
    const child = spawnNode(WORKER_MAIN, args, adminEnv, dir);
    const { code } = await child.exited;
    return { code, out: child.lines.join('\n'), err: child.stderr.join('\n') };
  };
}

test('admin CLI beside a live daemon: stats, jobs, show, retry brings a failed job to completed, purge', async (t) => {
  const dir = tempDir(t);
  // Over two lines, and with a terminal's control sequences (a colour, the window's title) and a
  // bidirectional control (right-to-left override, which a terminal laying out such text obeys).
  const message = 'model is\n  \x1b[31mdown\x1b]0;pwned\x07\x9b \u202edaolnwod';
  const stub = await startStubUpstream({ behave: () => ({ status: 400, body: { error: { message, type: 'invalid_request_error' } } }) });
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-admin', OPENAI_BASE_URL: stub.url });
  const store = await openTestStore(env);
  t.after(() => store.close());
  const daemon = startWorkerDaemon(t, env, dir);
  await daemon.waitFor((l) => l.includes('worker started'));

  const cli = adminCli(env, dir);
  const cliWith = (extra: Record<string, string>, ...args: string[]) => adminCli({ ...env, ...extra }, dir)(...args);

  const failing = await enqueueJob(store, 'doomed');
  const other = await enqueueJob(store, 'also doomed');
  await eventually(async () => (await store.countByStatus()).failed === 2);

  const stats = await cli('stats', '--json');
  assert.equal(stats.code, 0, stats.err);
  const parsed = JSON.parse(stats.out);
  assert.equal(parsed.queue.failed, 2);
  assert.equal(parsed.workers_alive, 1);
  // The same words and units as /health's workers: snake_case, Unix seconds.
  const [seen] = parsed.workers as Array<Record<string, unknown>>;
  assert.deepEqual(Object.keys(seen!).sort(), ['clock_offset_ms', 'host', 'id', 'jobs_done', 'last_seen_at', 'pid', 'started_at']);
  // The worker measured its clock against the store's: 0 on SQLite; the PostgreSQL server runs on this machine.
  assert.ok(typeof seen!.clock_offset_ms === 'number' && Math.abs(seen!.clock_offset_ms) < 250, `clock_offset_ms ${seen!.clock_offset_ms}`);
  assert.equal(seen!.pid, daemon.proc.pid);
  assert.ok(Math.abs((seen!.last_seen_at as number) - Date.now() / 1000) < 60, `last_seen_at ${seen!.last_seen_at} is in Unix seconds`);
  assert.deepEqual([parsed.tokens, parsed.tokens_by_model], [{ prompt: 0, completion: 0 }, {}], 'failed jobs report no tokens');
  const statsText = (await cli('stats')).out;
  assert.match(statsText, /failed\s+2/);
  // The worker's row ends with its clock against the store's.
  assert.match(statsText, new RegExp(`${daemon.proc.pid}\\s.*\\s(in step|\\d+ ms (ahead|behind))\\s*$`, 'm'));
  assert.deepEqual([parsed.upstream_down_since, parsed.upstream_down_reason], [null, null]);
  assert.match(statsText, /^upstream: answering, as far as the workers have seen$/m);
  // As a worker marks it when its calls come to be held (upstream-outage.ts).
  const downAt = store.now() - 42_000;
  await store.markUpstreamDown({ since: downAt, lookAt: downAt + 1000, reason: 'cannot be reached (ECONNREFUSED)' });
  const marked = JSON.parse((await cli('stats', '--json')).out);
  assert.deepEqual([marked.upstream_down_since, marked.upstream_down_reason], [Math.floor(downAt / 1000), 'cannot be reached (ECONNREFUSED)']);
  assert.match((await cli('stats')).out, /^upstream: found down by a worker 4\d s ago, as it cannot be reached \(ECONNREFUSED\), and not seen answering since/m);
  await store.markUpstreamDown(null);

  const list = await cli('jobs', '--status', 'failed', '--limit', '20', '--json');
  const listed = JSON.parse(list.out) as Array<{ id: string; error: { code: string } }>;
  assert.deepEqual(listed.map((j) => j.id).sort(), [failing, other].sort());
  assert.equal(listed[0]!.error.code, 'upstream_invalid_request_error');
  // The upstream's message over two lines stays on its row of the table, and its control
  // characters reach the terminal written out, not as sent (they did).
  const rows = (await cli('jobs', '--status', 'failed')).out.split('\n');
  assert.equal(rows.length, 3, rows.join('\n'));
  assert.ok(rows[1]!.endsWith('upstream_invalid_request_error: model is \\u001b[31mdown\\u001b]0;pwned\\u0007\\u009b \\u202edaolnwod'), rows[1]);
  assert.equal((await cli('jobs', '--client', 'default', '--status', 'failed', '--json')).out.includes(failing), true);
  // A client name mistyped: said so, with the names configured (none here: nothing to tell).
  const withClients = { PROXY_KEY: 'k'.repeat(20), PROXY_SECRET: 's'.repeat(40) };
  assert.equal((await cli('jobs', '--client', 'Default')).out, 'no jobs');
  assert.equal((await cliWith(withClients, 'jobs', '--client', 'Default')).out, 'no jobs; no configured client is named Default (configured: default)');
  assert.equal((await cliWith(withClients, 'jobs', '--client', 'default', '--status', 'cancelled')).out, 'no jobs');

  const shown = JSON.parse((await cli('show', failing, '--json')).out);
  assert.deepEqual([shown.id, shown.status, shown.client], [failing, 'failed', 'default']);
  assert.deepEqual(shown.request.messages, [{ role: 'user', content: 'doomed' }]);
  // Without --json, the same JSON for a terminal: C1's CSI, which JSON.stringify leaves, written out too.
  const shownText = (await cli('show', failing)).out;
  // eslint-disable-next-line no-control-regex -- no control character but the layout's line breaks
  assert.ok(!/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]/.test(shownText), JSON.stringify(shownText));
  assert.deepEqual((JSON.parse(shownText) as { error: { message: string } }).error.message, message);
  assert.equal((await cli('show', 'req_AAAAAAAAAAAAAAAAAAAAAA')).code, 1);

  stub.behave(() => ({}));
  const retried = await cli('retry', failing);
  assert.equal(retried.code, 0, retried.err);
  assert.match(retried.out, /requeued 1 job/);
  await eventually(async () => (await store.getJob(failing))?.status === 'completed');
  const done = await store.getJob(failing);
  assert.equal(done?.outputText, 'echo: doomed');
  assert.equal(done?.attempts, 1, 'a retry starts with fresh attempts');
  const again = await cli('retry', failing);
  assert.deepEqual(
    [again.code, again.err],
    [1, `proxy-worker: request ${failing} is completed; only a failed or expired job goes back in the queue`],
    'a completed job is not retried, and the line says why',
  );
  const unknown = await cli('retry', 'req_AAAAAAAAAAAAAAAAAAAAAA');
  assert.deepEqual([unknown.code, unknown.err], [1, 'proxy-worker: no request req_AAAAAAAAAAAAAAAAAAAAAA']);

  const all = JSON.parse((await cli('retry', '--all-failed', '--json')).out);
  assert.deepEqual(all.requeued, [other]);
  await eventually(async () => (await store.getJob(other))?.status === 'completed');
  // The tokens the two answers' usage reported, as /metrics counts them (the stub's: a quarter of the characters, rounded up).
  const tokens = (words: string) => Math.ceil(words.length / 4);
  const spent = { prompt: tokens('doomed') + tokens('also doomed'), completion: tokens('echo: doomed') + tokens('echo: also doomed') };
  const counted = JSON.parse((await cli('stats', '--json')).out);
  assert.deepEqual([counted.tokens, counted.tokens_by_model], [spent, { m: spent }], 'in all, and by model (both jobs asked for m)');
  assert.match(
    (await cli('stats')).out,
    new RegExp(
      `^tokens the upstream reported for completed jobs: ${spent.prompt} prompt, ${spent.completion} completion\nmodel\\s+prompt\\s+completion\nm\\s+${spent.prompt}\\s+${spent.completion}$`,
      'm',
    ),
  );

  assert.equal((await cli('retry')).code, 64);
  const badAge = await cli('purge', '--older-than', 'soon');
  assert.equal(badAge.code, 64);
  assert.match(badAge.err, /^error: option '--older-than <age>' argument 'soon' is invalid\. takes a number and a unit, like 30m, 12h or 7d$/m);
  assert.equal((await store.countByStatus()).completed, 2, 'a purge with a bad age deletes nothing');
  await new Promise((r) => setTimeout(r, 1100));
  const purged = JSON.parse((await cli('purge', '--older-than', '1s', '--json')).out);
  assert.equal(purged.deleted, 2);
  assert.equal(await store.getJob(failing), null);
});

test("cancel: what a client's DELETE does, for an operator without its key: a queued job at once, a running one through its worker, which aborts the call; an ended one is refused", async (t) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream({ behave: (call) => (call.prompt === 'hold' ? { hang: true } : {}) });
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-admin', OPENAI_BASE_URL: stub.url });
  const store = await openTestStore(env);
  t.after(() => store.close());
  const cli = adminCli(env, dir);

  // No worker yet: the queued job ends at once.
  const queued = await enqueueJob(store, 'never sent');
  assert.deepEqual(await cli('cancel', queued), { code: 0, out: `cancelled ${queued}`, err: '' });
  assert.equal((await store.getJob(queued))?.status, 'cancelled');
  // Again: what was asked holds, no error.
  const twice = JSON.parse((await cli('cancel', queued, '--json')).out);
  assert.deepEqual([twice.id, twice.status, twice.client], [queued, 'cancelled', 'default']);

  const daemon = startWorkerDaemon(t, env, dir);
  await daemon.waitFor((l) => l.includes('worker started'));
  const running = await enqueueJob(store, 'hold');
  await eventually(async () => stub.calls.length === 1);
  const asked = await cli('cancel', running);
  assert.deepEqual(
    [asked.code, asked.out],
    [0, `cancel requested: ${running} is in_progress; its worker aborts the call within a second, and the job ends as cancelled`],
    asked.err,
  );
  await eventually(async () => (await store.getJob(running))?.status === 'cancelled');
  await eventually(async () => stub.calls[0]?.hungUpAt !== undefined);
  // Its log says who may have cancelled it: it had named only the client.
  await daemon.waitFor((l) => l.includes('job cancelled during its attempt (by its client, or proxy-worker cancel)') && l.includes(running));

  const answered = await enqueueJob(store, 'answer me');
  await eventually(async () => (await store.getJob(answered))?.status === 'completed');
  assert.deepEqual(await cli('cancel', answered), { code: 1, out: '', err: `proxy-worker: request ${answered} already ended as completed and cannot be cancelled` });
  assert.equal((await store.getJob(answered))?.status, 'completed', 'left as it was');
  assert.deepEqual(await cli('cancel', 'req_AAAAAAAAAAAAAAAAAAAAAA'), { code: 1, out: '', err: 'proxy-worker: no request req_AAAAAAAAAAAAAAAAAAAAAA' });
  assert.equal((await cli('cancel')).code, 64);
  assert.equal(stub.calls.length, 2, 'the cancelled queued job was never sent');
});

test("cancel --client: every unfinished job of a runaway client, page after page, queued ones at once and running ones through their workers; other clients' jobs go on", async (t) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream({ behave: (call) => (call.prompt === 'hold' ? { hang: true } : {}) });
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-admin', OPENAI_BASE_URL: stub.url, WORKER_CONCURRENCY: '4' });
  const store = await openTestStore(env);
  t.after(() => store.close());
  const cli = adminCli(env, dir);

  // More than two of its pages (500), and some of them running when it runs.
  const runaway = await Promise.all(
    Array.from({ length: 1203 }, () => newTestJob({ client: 'runaway', request: { model: 'm', messages: [{ role: 'user', content: 'hold' }] } })).map(
      async (job) => (await store.createJob(job), job.id),
    ),
  );
  const daemon = startWorkerDaemon(t, env, dir);
  await daemon.waitFor((l) => l.includes('worker started'));
  await eventually(async () => stub.calls.length === 4);
  const others = [await enqueueJob(store, 'answer me'), await enqueueJob(store, 'me too')];

  const run = await cli('cancel', '--client', 'runaway', '--json');
  assert.equal(run.code, 0, run.err);
  const { cancelled, cancel_requested: requested } = JSON.parse(run.out) as { cancelled: string[]; cancel_requested: string[] };
  assert.ok(requested.length >= 4, `the running ones asked to stop: ${requested.length}`);
  assert.deepEqual([...cancelled, ...requested].sort(), [...runaway].sort(), 'each job of the client once');
  await eventually(async () => (await store.countByStatus()).cancelled === 1203, 20_000);
  await eventually(async () => (await Promise.all(others.map((id) => store.getJob(id)))).every((j) => j?.status === 'completed'));
  assert.equal(stub.calls.filter((c) => c.prompt === 'hold').length, 4, 'no job of the client was sent after it ran');

  assert.deepEqual(await cli('cancel', '--client', 'runaway'), { code: 0, out: 'no unfinished jobs of client runaway', err: '' });
  const text = await cli('cancel', '--client', 'default');
  assert.deepEqual([text.code, text.out], [0, 'no unfinished jobs of client default'], text.err);
  const both = await cli('cancel', others[0] as string, '--client', 'runaway');
  assert.deepEqual([both.code, both.err.split('\n')[0]], [64, 'error: give one request id, or --client NAME']);
});

test('a mistake in the command line is exit 64 (EX_USAGE) with the message and the help, apart from a failed run (1) and a bad setting (78)', async (t) => {
  const dir = tempDir(t);
  const env = testEnv(dir);
  const store = await openTestStore(env);
  t.after(() => store.close());
  const queued = await enqueueJob(store, 'stays queued');
  const run = async (args: string[], settings: Record<string, string> = env) => {
    const child = spawnNode(WORKER_MAIN, args, settings, dir);
    const { code } = await within(child.exited, 15_000, args.join(' '));
    return { code, err: child.stderr.join('\n') };
  };

  for (const [args, message] of [
    [['bogus'], "error: unknown command 'bogus'"],
    [['once', '--max-jobs', 'abc'], "error: option '--max-jobs <n>' argument 'abc' is invalid. must be a whole number of at least 1"],
    [['daemon', '--concurrency', '4'], "error: unknown option '--concurrency'"],
    [['show'], "error: missing required argument 'id'"],
    [['purge'], "error: required option '--older-than <age>' not specified"],
    [['retry', queued, '--all-failed'], 'error: give one request id, or --all-failed'],
  ] as const) {
    const { code, err } = await run([...args]);
    assert.equal(code, 64, `${args.join(' ')}: ${err}`);
    assert.equal(err.split('\n')[0], message);
    assert.match(err, /^Usage: proxy-worker /m, 'the help follows');
  }
  // No command at all: the help, as a mistake.
  const bare = await run([]);
  assert.deepEqual([bare.code, bare.err.split('\n')[0]], [64, 'Usage: proxy-worker [options] [command]']);
  // Asked for, the help and the version are no mistake.
  assert.equal((await run(['--help'])).code, 0);
  assert.equal((await run(['help', 'once'])).code, 0);
  assert.equal((await run(['--version'])).code, 0);
  // The other codes stay theirs: a run that failed, a bad setting (a daemon without its key).
  assert.equal((await run(['show', 'req_AAAAAAAAAAAAAAAAAAAAAA'])).code, 1);
  assert.equal((await run(['daemon'])).code, 78);
  assert.equal((await store.getJob(queued))?.status, 'queued', 'nothing was run or changed');
});

test('admin CLI output: a reader that stops early is no error; a write that fails is one line and status 1, not a stack trace', async (t) => {
  const dir = tempDir(t);
  const env = testEnv(dir);
  const store = await openTestStore(env);
  try {
    // More than a pipe's buffer of JSON (64 KB), so the reader's early end meets writes still to come.
    for (let i = 0; i < 400; i++) await store.createJob(newTestJob());
  } finally {
    await store.close();
  }

  // A real pipe, as a shell makes one (the test's own stdio pipes are sockets that take it all).
  const head = spawn('sh', ['-c', '{ "$0" "$1" jobs --limit 400 --json; echo "exit $?" >&2; } | head -c 100 >/dev/null', process.execPath, WORKER_MAIN], {
    cwd: dir,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.after(() => head.kill('SIGKILL'));
  let headErr = '';
  head.stderr.on('data', (d) => (headErr += d));
  await within(new Promise((resolve) => head.on('exit', resolve)), 15_000, 'jobs | head');
  assert.equal(headErr, 'exit 0\n');

  const full = openSync('/dev/full', 'w');
  t.after(() => closeSync(full));
  const disk = spawn(process.execPath, [WORKER_MAIN, 'jobs', '--limit', '400', '--json'], { cwd: dir, env, stdio: ['ignore', full, 'pipe'] });
  t.after(() => disk.kill('SIGKILL'));
  let diskErr = '';
  disk.stderr?.on('data', (d) => (diskErr += d));
  assert.equal(await within(new Promise((resolve) => disk.on('exit', resolve)), 15_000, 'jobs > /dev/full'), 1);
  assert.equal(diskErr, 'proxy-worker: could not write the output: ENOSPC: no space left on device, write\n');
});

test('check: one small completion made as a worker makes its calls; what came back, and whether a job would try again; exit 1 on a failure; the key never shown', async (t) => {
  const dir = tempDir(t);
  const key = 'sk-check-0123456789abcdef';
  const stub = await startStubUpstream({
    behave: (call) => {
      if (call.body.model === 'refused')
        return {
          status: 401,
          headers: { 'x-request-id': 'req_refused' },
          body: { error: { message: `Incorrect API key provided: ${key}`, type: 'invalid_request_error', code: 'invalid_api_key' } },
        };
      if (call.body.model === 'slow') return { hang: true };
      if (call.body.model === 'escapes') return { status: 400, body: { error: { message: 'bad \x1b[2Jmodel\x9b\u2067', type: 'invalid_request_error' } } };
      if (call.body.model === 'thinker') {
        // A reasoning model behind a gateway's small default limit: all of it spent thinking.
        const body = echoCompletion(call, '') as { choices: Array<{ finish_reason: string }> };
        body.choices[0]!.finish_reason = 'length';
        return { body };
      }
      return { headers: { 'x-request-id': 'req_checked' } };
    },
  });
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: key, OPENAI_BASE_URL: `${stub.url}?route=a`, DEFAULT_MODEL: 'gpt-check', UPSTREAM_TIMEOUT_SECONDS: '1' });
  const check = async (args: string[], settings: Record<string, string> = {}) => {
    const child = spawnNode(WORKER_MAIN, ['check', ...args], { ...env, ...settings }, dir);
    const { code } = await within(child.exited, 15_000, 'check');
    const out = child.lines.join('\n');
    assert.ok(!out.includes(key) && !child.stderr.join('\n').includes(key), 'the key is never shown');
    return { code, out, json: args.includes('--json') ? (JSON.parse(out) as Record<string, unknown>) : null };
  };

  const ok = await check(['--json']);
  assert.equal(ok.code, 0, ok.out);
  assert.deepEqual(ok.json, {
    ok: true,
    upstream: stub.url,
    proxy: null,
    headers: [],
    model: 'gpt-check',
    stream: false,
    status: 200,
    ms: ok.json?.ms,
    upstream_request_id: 'req_checked',
    answer: 'echo: Reply with the word OK.',
    finish_reason: 'stop',
  });
  const call = stub.calls.at(-1)!;
  assert.deepEqual(
    [call.path, call.authorization, call.body],
    ['/v1/chat/completions?route=a', `Bearer ${key}`, { model: 'gpt-check', messages: [{ role: 'user', content: 'Reply with the word OK.' }] }],
    'called as a worker calls, its query string too',
  );
  assert.match((await check([])).out, /^ok: a worker can call the upstream with these settings$/m);
  // An answer with no text says why, where its finish reason does: every job would come back so.
  const thinker = await check(['--model', 'thinker']);
  assert.equal(thinker.code, 0, thinker.out);
  assert.match(
    thinker.out,
    /^answered: HTTP 200 after \d+ ms, with no text \(finish_reason "length": the model reached its token limit before writing any; a reasoning model can spend it all thinking\)$/m,
  );
  assert.equal((await check(['--model', 'thinker', '--json'])).json?.finish_reason, 'length');

  const refused = await check(['--model', 'refused', '--json']);
  assert.equal(refused.code, 1);
  assert.deepEqual(
    [refused.json?.ok, refused.json?.status, refused.json?.error, refused.json?.retried],
    [false, 401, { code: 'upstream_invalid_api_key', message: 'Incorrect API key provided: [redacted]' }, false],
  );
  assert.match(String(refused.json?.hint), /^the upstream refused the key: check OPENAI_API_KEY/);
  assert.match(
    (await check(['--model', 'refused'])).out,
    /^error: upstream_invalid_api_key: Incorrect API key provided: \[redacted\]\na job meeting this fails at once: it is not tried again\nhint: the upstream refused the key: check OPENAI_API_KEY/m,
  );

  // An upstream's control characters (here: clear the screen, and C1's CSI) are written out.
  assert.match((await check(['--model', 'escapes'])).out, /^error: upstream_invalid_request_error: bad \\u001b\[2Jmodel\\u009b\\u2067$/m);

  const slow = await check(['--model', 'slow', '--json']);
  assert.equal(slow.code, 1);
  assert.deepEqual([slow.json?.error, slow.json?.retried], [{ code: 'upstream_timeout', message: 'no answer within UPSTREAM_TIMEOUT_SECONDS (1 s)' }, true]);

  const unreachable = await check(['--json'], { OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' });
  assert.equal(unreachable.code, 1);
  assert.deepEqual([(unreachable.json?.error as { code: string }).code, unreachable.json?.retried], ['upstream_unreachable', true]);
  const withHeaders = await check([], { UPSTREAM_HEADERS: 'OpenAI-Project=proj_check,Helicone-Auth=Bearer%20sk-helicone-check' });
  assert.match(withHeaders.out, /^headers: openai-project, helicone-auth \(UPSTREAM_HEADERS\)$/m, 'named, their values not shown');
  assert.ok(!withHeaders.out.includes('sk-helicone-check'));
  assert.deepEqual([stub.calls.at(-1)?.headers['openai-project'], stub.calls.at(-1)?.headers['helicone-auth']], ['proj_check', 'Bearer sk-helicone-check']);
  // Azure OpenAI's way: the key alone, in an api-key header.
  assert.equal((await check([], { OPENAI_API_KEY_HEADER: 'api-key' })).code, 0);
  assert.deepEqual([stub.calls.at(-1)?.headers['api-key'], stub.calls.at(-1)?.authorization], [key, undefined]);
  // UPSTREAM_STREAM: asked for streamed, and put together, as a worker does.
  const streamed = await check(['--json'], { UPSTREAM_STREAM: 'true' });
  assert.deepEqual([streamed.code, streamed.json?.stream, streamed.json?.answer, stub.calls.at(-1)?.body.stream], [0, true, 'echo: Reply with the word OK.', true]);
  assert.match((await check([], { UPSTREAM_STREAM: 'true' })).out, /^model: gpt-check, answer streamed \(UPSTREAM_STREAM\)$/m);
  // An upstream that refuses stream_options: asked again without it, and the report says so.
  stub.behave((call) =>
    call.body.stream_options ? { status: 400, body: { error: { message: 'Unrecognized request argument supplied: stream_options', type: 'invalid_request_error' } } } : {},
  );
  const refusing = await check([], { UPSTREAM_STREAM: 'true' });
  assert.equal(refusing.code, 0, refusing.out);
  assert.match(refusing.out, /^note: the upstream refused stream_options: streamed answers are asked for without it from now on, and come without their usage$/m);
  assert.equal(stub.calls.length, 14, 'one call for each check that reached the stub, and the one sent again');
});

test('stats: queued jobs due over two minutes with no worker alive are said to wait for nothing; a fresh one is not', async (t) => {
  if (!onlyOn('sqlite', t, "ages a job by writing the SQLite file's run_after")) return;
  const dir = tempDir(t);
  const env = testEnv(dir);
  const store = await openTestStore(env);
  const id = await enqueueJob(store, 'nobody runs me');
  await store.close();
  const stats = async () => {
    const child = spawnNode(WORKER_MAIN, ['stats'], env, dir);
    assert.equal((await child.exited).code, 0, child.stderr.join('\n'));
    return child.lines.join('\n');
  };
  assert.match(await stats(), /^workers alive: 0$/m, 'a job just queued: a cron worker may yet come');
  const db = new Database(env.PROXY_DB_PATH as string);
  db.prepare('UPDATE jobs SET run_after = run_after - 300000 WHERE id = ?').run(id);
  db.close();
  assert.match(await stats(), /^workers alive: 0: the queued jobs wait for nothing; start proxy-worker daemon, or check its cron line$/m);
});
