import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createHmac } from 'node:crypto';
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { startStubUpstream, type StubUpstream } from '../../scripts/stub-upstream.ts';
import { ROOT, eventually, freePort, newCredentials, postSigned, processesWhere, startApiProcess, startWorkerDaemon, tempDir, testEnv, type TestHooks } from '../helpers/index.ts';

const CLIENT = join(ROOT, 'scripts/send-request.sh');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Starts the client; `stderr()` reads what it has said so far, `done` its end. */
function launch(args: string[], env: Record<string, string>, input?: string): { stderr: () => string; done: Promise<Run> } {
  const child = spawn('bash', [CLIENT, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // A client that exits before reading stdin (bad usage) closes the pipe: that is not a test failure.
  child.stdin.on('error', () => undefined);
  child.stdin.end(input ?? '');
  // 'close', not 'exit': a client that stops at once can exit before its last words are read.
  return { stderr: () => stderr, done: new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr }))) };
}

function run(args: string[], env: Record<string, string>, input?: string): Promise<Run> {
  return launch(args, env, input).done;
}

/** A PATH with only what the client says it needs (no jq), to exercise its fallback JSON reader. */
function minimalPath(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const tool of ['bash', 'curl', 'openssl', 'od', 'awk', 'sed', 'grep', 'cat', 'date', 'head', 'sleep', 'mktemp', 'rm']) {
    const path = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    symlinkSync(path, join(bin, tool));
  }
  return bin;
}

/** The stub holds every answer, as a model still thinking, until the function it answers is called. */
function holdAnswers(stub: StubUpstream): () => void {
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  stub.behave(async () => {
    await held;
    return {};
  });
  return () => release();
}

async function setUp(t: TestHooks, settings: Record<string, string> = {}) {
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-shell', OPENAI_BASE_URL: stub.url, RETRY_BASE_MS: '10', RETRY_MAX_MS: '20', ...settings });
  const api = await startApiProcess(t, env, dir);
  const { url } = api;
  const worker = startWorkerDaemon(t, env, dir);
  await worker.waitFor((l) => l.includes('worker started'));
  const clientEnv = { PATH: process.env.PATH ?? '', PROXY_BASE_URL: url, PROXY_KEY: key, PROXY_SECRET: secret };
  return { dir, stub, url, clientEnv, env, api, key, secret };
}

test('the shell client gets a real answer, with or without jq, for prompts with quotes, backslashes, newlines and non-ASCII', async (t) => {
  const { dir, stub, clientEnv } = await setUp(t);
  const prompt = 'Grüße "quoted" \\ back\\slash\nsecond line\ttab ✓';
  const withJq = await run(['-p', prompt, '--poll', '0.2'], clientEnv);
  assert.equal(withJq.code, 0, withJq.stderr);
  assert.equal(withJq.stdout, `echo: ${prompt}\n`);
  assert.equal(stub.calls.at(-1)?.prompt, prompt, 'the upstream got the prompt byte for byte');

  const bare = minimalPath(dir);
  const withoutJq = await run(['-p', '-', '--poll', '0.2'], { ...clientEnv, PATH: bare }, prompt);
  assert.equal(withoutJq.code, 0, withoutJq.stderr);
  assert.equal(withoutJq.stdout, `echo: ${prompt}\n`);

  const messages = join(dir, 'messages.json');
  // Saved with a byte-order mark, as a Windows editor may (sent as it was, the API read no JSON).
  writeFileSync(
    messages,
    `\ufeff${JSON.stringify([
      { role: 'system', content: 'terse' },
      { role: 'user', content: 'from a file' },
    ])}`,
  );
  const fromFile = await run(['-f', messages, '-m', 'gpt-test', '--ttl', '120', '--poll', '0.2'], clientEnv);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.equal(fromFile.stdout, 'echo: from a file\n');
  assert.equal(stub.calls.at(-1)?.body.model, 'gpt-test');

  // A base URL ending in a slash names the same API (its calls went to //v1/requests, a 404).
  const slash = await run(['-p', 'slash', '--poll', '0.2'], { ...clientEnv, PROXY_BASE_URL: `${clientEnv.PROXY_BASE_URL}/` });
  assert.deepEqual([slash.code, slash.stdout], [0, 'echo: slash\n'], slash.stderr);

  // A tool call has no text: said on stderr with where the whole job is, where an empty line alone came.
  const call = { id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"q":"x"}' } };
  stub.behave(() => ({
    body: {
      id: 'chatcmpl-t',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-test',
      choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [call] }, finish_reason: 'tool_calls' }],
      usage: null,
    },
  }));
  for (const PATH of [clientEnv.PATH, bare]) {
    const tool = await run(['-p', 'use the tool', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.equal(tool.code, 0, tool.stderr);
    assert.equal(tool.stdout, '\n');
    assert.match(
      tool.stderr,
      new RegExp(
        `send-request: the answer has no text: it is a tool call \\(finish_reason "tool_calls"\\); the whole job is at ${clientEnv.PROXY_BASE_URL}/v1/requests/req_[\\w-]+\\n$`,
      ),
    );
  }

  // Why an answer stopped short, where the upstream says (its first choice's finish_reason): a
  // reasoning model that spent its whole token limit thinking answers no text, a filter withholds
  // it, and an answer cut at the limit reads like a whole one. The answer's own text naming a
  // finish_reason (escaped in its JSON string) is not taken for the upstream's.
  const stopped = (content: string | null, finish: string) => ({
    body: {
      id: 'chatcmpl-l',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-test',
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: finish }],
      usage: { prompt_tokens: 9, completion_tokens: 64, total_tokens: 73, completion_tokens_details: { reasoning_tokens: 64 } },
    },
  });
  const where = `; the whole job is at ${clientEnv.PROXY_BASE_URL}/v1/requests/req_[\\w-]+\\n$`;
  const refused = (finish: string | null) => ({
    body: {
      id: 'chatcmpl-r',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-test',
      choices: [{ index: 0, message: { role: 'assistant', content: null, refusal: 'I can\'t help with "that".' }, finish_reason: finish }],
      usage: null,
    },
  });
  for (const PATH of [clientEnv.PATH, bare]) {
    const jq = PATH === bare ? 'without jq' : 'with jq';
    // OpenAI's structured outputs: the refusal in its own field, the content null.
    stub.behave(() => refused('stop'));
    const refusal = await run(['-p', 'something refused', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([refusal.code, refusal.stdout], [0, '\n'], refusal.stderr);
    assert.match(refusal.stderr, new RegExp(`send-request: the answer has no text: the model refused \\("I can't help with "that"\\."\\)${where}`), jq);
    // No finish_reason said, nor a refusal: the words of before.
    stub.behave(() => ({ body: { ...(refused(null).body as object), choices: [{ index: 0, message: { role: 'assistant', content: null } }] } }));
    const unsaid = await run(['-p', 'nothing said', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([unsaid.code, unsaid.stdout], [0, '\n'], unsaid.stderr);
    assert.match(unsaid.stderr, new RegExp(`send-request: the answer has no text \\(a tool call or a refusal\\?\\)${where}`), jq);
    stub.behave(() => stopped('', 'length'));
    const thought = await run(['-p', 'think hard', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([thought.code, thought.stdout], [0, '\n'], thought.stderr);
    assert.match(
      thought.stderr,
      new RegExp(
        `send-request: the answer has no text: the model reached its token limit before writing any \\(a reasoning model can spend it all thinking: raise max_completion_tokens in --options\\)${where}`,
      ),
      jq,
    );
    stub.behave(() => stopped(null, 'content_filter'));
    const filtered = await run(['-p', 'something filtered', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([filtered.code, filtered.stdout], [0, '\n'], filtered.stderr);
    assert.match(filtered.stderr, new RegExp(`send-request: the answer has no text: the upstream's content filter held it back${where}`), jq);
    stub.behave(() => stopped('The first half, then "finish_reason":"stop" and', 'length'));
    const cut = await run(['-p', 'write a lot', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([cut.code, cut.stdout], [0, 'The first half, then "finish_reason":"stop" and\n'], cut.stderr);
    assert.match(
      cut.stderr,
      /send-request: the answer stops at the token limit \(finish_reason "length"\): raise max_tokens or max_completion_tokens in --options for the rest\n$/,
      jq,
    );
    stub.behave(() => stopped('A whole answer that mentions "finish_reason":"length" in passing.', 'stop'));
    const whole = await run(['-p', 'a whole answer', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([whole.code, whole.stdout], [0, 'A whole answer that mentions "finish_reason":"length" in passing.\n'], whole.stderr);
    assert.doesNotMatch(whole.stderr, /token limit|no text/, jq);
    // The answer as it came, its trailing blank lines too (a shell's command substitution drops
    // them), and one newline after it, as the PowerShell client's Write-Output prints it.
    stub.behave(() => stopped('An answer that ends in blank lines\n\n\n', 'stop'));
    const blank = await run(['-p', 'end with blank lines', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([blank.code, blank.stdout], [0, 'An answer that ends in blank lines\n\n\n\n'], `${jq}: ${blank.stderr}`);
    // A NUL in the answer (JSON's \u0000) is printed as it came: read into a variable, bash dropped
    // it and said so on stderr.
    stub.behave(() => stopped('before\u0000after', 'stop'));
    const nul = await run(['-p', 'answer a NUL', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.deepEqual([nul.code, nul.stdout, nul.stderr.includes('null byte')], [0, 'before\u0000after\n', false], `${jq}: ${nul.stderr}`);
  }
});

test('the shell client takes the prompt as its one argument, as the PowerShell client takes it first; after -- even one starting with -; - reads standard input; two are refused', async (t) => {
  const { stub, clientEnv } = await setUp(t);
  // Each of these had been 64, "unknown argument".
  const plain = await run(['What is 2+2?', '--poll', '0.2'], clientEnv);
  assert.deepEqual([plain.code, plain.stdout], [0, 'echo: What is 2+2?\n'], plain.stderr);
  const dashed = await run(['--poll', '0.2', '--', '-5 degrees, or --prompt?'], clientEnv);
  assert.deepEqual([dashed.code, dashed.stdout], [0, 'echo: -5 degrees, or --prompt?\n'], dashed.stderr);
  const piped = await run(['-', '--poll', '0.2'], clientEnv, 'from standard input');
  assert.deepEqual([piped.code, piped.stdout], [0, 'echo: from standard input\n'], piped.stderr);
  assert.deepEqual(
    stub.calls.map((c) => c.prompt),
    ['What is 2+2?', '-5 degrees, or --prompt?', 'from standard input'],
  );

  // Refused before anything is sent: words left unquoted, a prompt twice, a misspelt option, none.
  for (const [args, stderr] of [
    [['What', 'is', '2+2?'], 'one prompt only: quote it as one argument ("is" came after another)'],
    [['-p', 'first', 'second'], 'one prompt only: quote it as one argument ("second" came after another)'],
    [['--', 'first', 'second'], 'one prompt only: quote it as one argument ("second" came after another)'],
    [['--promt', 'x'], 'unknown argument: --promt (see --help)'],
    [['-f', 'messages.json', 'x'], 'give a prompt or --messages, not both'],
    [['--'], 'no prompt: give it as the argument (- reads standard input), or pass --messages FILE'],
  ] as const) {
    const refused = await run([...args], clientEnv);
    assert.deepEqual([refused.code, refused.stderr], [64, `send-request: ${stderr}\n`], args.join(' '));
  }
  assert.equal(stub.calls.length, 3, 'nothing more was sent');
});

test('the shell client waits again for a job it timed out on or was interrupted waiting for (--id, as exit 4 and Ctrl-C say), without its secret; what only a create takes is refused beside it', async (t) => {
  const { stub, clientEnv } = await setUp(t);
  const release = holdAnswers(stub);
  const first = await run(['slow answer', '--poll', '0.2', '--timeout', '2'], clientEnv);
  const id = /queued (req_[\w-]+)/.exec(first.stderr)?.[1] ?? '';
  assert.deepEqual(
    [first.code, first.stderr.split('\n').at(-2)],
    [4, `send-request: timed out after 2s; the job ${id} goes on: wait for it again with --id ${id}, or stop it with --id ${id} --cancel`],
    first.stderr,
  );

  // Ctrl-C, as a terminal sends it: to the whole foreground group (bash and the curl it waits on).
  const interrupted = spawn('bash', [CLIENT, 'interrupted', '--poll', '0.2'], { env: clientEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  interrupted.stderr.on('data', (d: Buffer) => (said += d.toString()));
  const ended = new Promise<number | null>((resolve) => interrupted.on('close', resolve));
  await eventually(async () => /queued req_/.test(said));
  // Sent once it waits in its long-poll (a curl in its group), as a user's Ctrl-C mostly comes. Sent
  // as soon as it said it queued the job, the signal was once lost under load and the client waited
  // out its 300 s: bash runs no INT trap when the child it waits for then exits without dying of
  // the signal (taken as handled by the child), as a $( ) forked that moment can. A probe of the
  // same shape (a trap, then $( )s in a loop) lost 1 signal in 40 under load.
  const group = interrupted.pid as number;
  await eventually(
    async () =>
      processesWhere((pid) => readFileSync(`/proc/${pid}/comm`, 'utf8') === 'curl\n' && readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[2] === String(group))
        .length > 0,
  );
  process.kill(-group, 'SIGINT');
  const other = /queued (req_[\w-]+)/.exec(said)?.[1] ?? '';
  assert.deepEqual(
    [await ended, said.split('\n').at(-2)],
    [130, `send-request: interrupted; the job ${other} goes on: wait for it again with --id ${other}, or stop it with --id ${other} --cancel`],
    said,
  );

  const again = launch(['--id', id, '--poll', '0.2'], { ...clientEnv, PROXY_SECRET: '' });
  setTimeout(release, 500);
  const answered = await again.done;
  assert.deepEqual([answered.code, answered.stdout, answered.stderr], [0, 'echo: slow answer\n', ''], 'no new job queued');
  const afterInterrupt = await run(['--id', other, '--poll', '0.2'], clientEnv);
  assert.deepEqual([afterInterrupt.code, afterInterrupt.stdout], [0, 'echo: interrupted\n'], afterInterrupt.stderr);
  assert.equal(stub.calls.length, 2, 'the model was called once a job');

  const unknown = await run(['--id', 'req_AAAAAAAAAAAAAAAAAAAAAA'], clientEnv);
  assert.deepEqual([unknown.code, unknown.stderr], [5, 'send-request: result refused (HTTP 404): not_found: no request with this id\n']);
  for (const [args, stderr] of [
    [['--id', id, 'a prompt'], '--id waits for a job sent before: it takes no prompt, --messages, --model, --ttl, --system, --options or --nonce'],
    [['--id', id, '-m', 'gpt-test'], '--id waits for a job sent before: it takes no prompt, --messages, --model, --ttl, --system, --options or --nonce'],
    [['--id', '../health'], "--id takes a request id, as req_…, not '../health'"],
  ] as const) {
    const refused = await run([...args], clientEnv);
    assert.deepEqual([refused.code, refused.stderr], [64, `send-request: ${stderr}\n`], args.join(' '));
  }
});

test('the shell client sends a job without waiting (--no-wait): its id on stdout, exit 0 once it is stored; --id waits for it later', async (t) => {
  const { stub, clientEnv } = await setUp(t);
  const release = holdAnswers(stub);
  const sent = await run(['--no-wait', 'for later'], clientEnv);
  const id = sent.stdout.trim();
  assert.deepEqual([sent.code, sent.stdout, sent.stderr], [0, `${id}\n`, `send-request: queued ${id}\n`]);
  assert.match(id, /^req_[\w-]+$/);
  const created = await run(['--no-wait', '--json', 'as JSON'], clientEnv);
  const job = JSON.parse(created.stdout) as { id: string; status: string };
  assert.deepEqual([created.code, job.status, created.stderr], [0, 'queued', `send-request: queued ${job.id}\n`]);

  release();
  const later = await run(['--id', id, '--poll', '0.2'], { ...clientEnv, PROXY_SECRET: '' });
  assert.deepEqual([later.code, later.stdout], [0, 'echo: for later\n'], later.stderr);
  const refused = await run(['--id', id, '--no-wait'], clientEnv);
  assert.deepEqual([refused.code, refused.stderr], [64, 'send-request: --no-wait sends a job; with --id there is none to send\n']);
});

test('the shell client cancels a job sent before with --id and --cancel: a queued one at once, a running one through its worker, and again when sent again', async (t) => {
  const { stub, clientEnv } = await setUp(t, { WORKER_CONCURRENCY: '1' });
  stub.behave(() => ({ hang: true }));
  const idOf = (run: Run) => /queued (req_[\w-]+)/.exec(run.stderr)?.[1] ?? '';
  // One slot: the first job holds it, the second waits in the queue.
  const running = idOf(await run(['first', '--timeout', '1'], clientEnv));
  await eventually(async () => stub.calls.length === 1);
  const queued = idOf(await run(['second', '--timeout', '1'], clientEnv));

  const now = await run(['--id', queued, '--cancel', '--json'], { ...clientEnv, PROXY_SECRET: '' });
  assert.deepEqual([now.code, now.stderr, (JSON.parse(now.stdout) as { status: string }).status], [0, `send-request: cancelled ${queued}\n`, 'cancelled']);
  const asked = await run(['--id', running, '--cancel'], clientEnv);
  assert.deepEqual([asked.code, asked.stdout, asked.stderr], [0, '', `send-request: cancel requested: ${running} is running; its worker aborts the call within a second\n`]);
  const ended = await run(['--id', running, '--poll', '0.2', '--timeout', '10'], clientEnv);
  assert.deepEqual([ended.code, ended.stderr], [3, 'send-request: cancelled\n']);
  // Sent again (as after an answer lost), the same: what was asked holds.
  const again = await run(['--id', running, '--cancel'], clientEnv);
  assert.deepEqual([again.code, again.stderr], [0, `send-request: cancelled ${running}\n`]);
  const alone = await run(['--cancel', 'x'], clientEnv);
  assert.deepEqual([alone.code, alone.stderr], [64, 'send-request: --cancel needs --id ID: the job to cancel\n']);
  assert.deepEqual(
    stub.calls.map((c) => c.prompt),
    ['first'],
    'the queued job was never sent',
  );
});

test('the shell client prints the final job as the API wrote it with --json (its usage, the whole response), with the exit codes and stderr lines it has without', async (t) => {
  const { stub, clientEnv, dir } = await setUp(t);
  for (const PATH of [clientEnv.PATH, minimalPath(dir)]) {
    const done = await run(['Grüße "q"', '--json', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.equal(done.code, 0, done.stderr);
    const job = JSON.parse(done.stdout) as { id: string; status: string; output_text: string; usage: { total_tokens: number }; response: { choices: unknown[] } };
    assert.deepEqual([job.status, job.output_text, typeof job.usage.total_tokens, job.response.choices.length], ['completed', 'echo: Grüße "q"', 'number', 1]);
    assert.equal(done.stderr, `send-request: queued ${job.id}\n`);
  }
  stub.behave(() => ({ status: 400, body: { error: { message: 'no such model', type: 'invalid_request_error' } } }));
  const failed = await run(['x', '--json', '--poll', '0.2'], clientEnv);
  const job = JSON.parse(failed.stdout) as { status: string; error: { code: string } };
  assert.deepEqual([failed.code, job.status, job.error.code], [2, 'failed', 'upstream_invalid_request_error']);
  assert.match(failed.stderr, /\nsend-request: failed: upstream_invalid_request_error: no such model\n$/);
});

test('the shell client sends control characters as JSON escapes, and sends a long prompt holding them (a terminal colour code, quotes, backslashes) and reads its answer, with jq or without, in seconds', async (t) => {
  const { dir, stub, clientEnv } = await setUp(t);
  const short = 'bell\x07 colour\x1b[31mred\x1b[0m form\x0cfeed delete\x7f unit\x1f end';
  const sent = await run(['-p', '-', '--poll', '0.2'], clientEnv, short);
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(stub.calls.at(-1)?.prompt, short, 'the upstream got the prompt byte for byte');

  // 100 KB of output piped in with one colour code: the escaping went character by character once
  // any control character was present, each step counting from the start in a UTF-8 locale (56 s
  // on the 2-core machine); and 600 KB with quotes and backslashes in every line took bash's
  // substitutions, in a UTF-8 locale, time growing with the square of its length (40 s or more).
  const long = `${'x'.repeat(99)}\n`.repeat(1000) + `${'say "hi" \\ there\t'.repeat(5)}\n`.repeat(6000) + '\x1b[0m';
  const started = performance.now();
  const piped = await run(['-p', '-', '--poll', '0.2'], { ...clientEnv, LC_ALL: 'C.UTF-8' }, long);
  const seconds = (performance.now() - started) / 1000;
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(stub.calls.at(-1)?.prompt, long);
  assert.ok(seconds < 20, `took ${seconds.toFixed(1)} s`);

  // Its answer as long, read without jq: undoing the answer's escapes took as long (54 s for 774 KB).
  const readStarted = performance.now();
  const read = await run(['-p', '-', '--poll', '0.2'], { ...clientEnv, PATH: minimalPath(dir), LC_ALL: 'C.UTF-8' }, long);
  const readSeconds = (performance.now() - readStarted) / 1000;
  assert.equal(read.code, 0, read.stderr);
  assert.ok(read.stdout === `echo: ${long}\n`, `the answer read back differs: ${read.stdout.length} characters against ${long.length + 7}`);
  assert.ok(readSeconds < 20, `took ${readSeconds.toFixed(1)} s without jq`);
});

test("the shell client sends a request's system message and chat-completions options; options the API refuses end it with 5 and the API's words, options or a messages file the API cannot read as JSON with 5 and which it was, and options that are no JSON object with 64", async (t) => {
  const { stub, clientEnv, dir } = await setUp(t);
  const sent = await run(['-p', 'be short', '--system', 'Answer "briefly".', '--options', '{"max_tokens":5,"temperature":0}', '--poll', '0.2'], clientEnv);
  assert.deepEqual([sent.code, sent.stdout], [0, 'echo: be short\n'], sent.stderr);
  const call = stub.calls.at(-1)!;
  assert.deepEqual(call.body.messages, [
    { role: 'system', content: 'Answer "briefly".' },
    { role: 'user', content: 'be short' },
  ]);
  assert.deepEqual([call.body.max_tokens, call.body.temperature], [5, 0]);
  const refused = await run(['-p', 'x', '--options', '{"temperature":9}'], clientEnv);
  assert.equal(refused.code, 5, refused.stderr);
  assert.match(refused.stderr, /HTTP 400\): invalid_request: .*temperature/);
  const notObject = await run(['-p', 'x', '--options', '[1]'], clientEnv);
  assert.deepEqual([notObject.code, notObject.stderr], [64, `send-request: --options takes a JSON object, as '{"temperature":0.2}'\n`]);
  // Spliced into the body as written, unlike the prompt: the API's "not valid JSON" is theirs, and said so.
  const notJson = 'send-request: create refused (HTTP 400): invalid_json: the request body is not valid JSON';
  const badFile = join(dir, 'messages.json');
  writeFileSync(badFile, '[{"role":"user","content":"x"}');
  for (const PATH of [clientEnv.PATH, minimalPath(dir)]) {
    const jq = PATH === clientEnv.PATH ? 'with jq' : 'without jq';
    const badOptions = await run(['-p', 'x', '--options', '{"temperature":0.2'], { ...clientEnv, PATH });
    assert.deepEqual([badOptions.code, badOptions.stderr], [5, `${notJson}; --options went into it as written: check that it is JSON\n`], jq);
    const badMessages = await run(['-f', badFile], { ...clientEnv, PATH });
    assert.deepEqual([badMessages.code, badMessages.stderr], [5, `${notJson}; ${badFile} went into it as written: check that it is JSON\n`], jq);
    const both = await run(['-f', badFile, '--options', '{}'], { ...clientEnv, PATH });
    assert.deepEqual([both.code, both.stderr], [5, `${notJson}; ${badFile} and --options went into it as written: check that both are JSON\n`], jq);
  }
  assert.equal(stub.calls.length, 1, 'no refused run reached the upstream');
});

test('the shell client exits 2 on failed, 4 on timeout, 5 on an HTTP error, 64 on bad usage', async (t) => {
  const { stub, clientEnv, dir } = await setUp(t);
  // A message with braces in it, as upstream messages quoting JSON have: it was cut at the first one.
  stub.behave(() => ({ status: 400, body: { error: { message: 'Unsupported parameter: {"type": "json"} is not {"a": 1}', type: 'invalid_request_error' } } }));
  for (const PATH of [clientEnv.PATH, minimalPath(mkdtempSync(join(dir, 'bare-')))]) {
    const failed = await run(['-p', 'fail please', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.equal(failed.code, 2, failed.stderr);
    assert.match(failed.stderr, /failed: upstream_invalid_request_error: Unsupported parameter: \{"type": "json"\} is not \{"a": 1\}\n$/);
  }
  // An upstream's control characters reach the terminal written out: sent as they came, they drove it
  // (a colour, the window's title).
  stub.behave(() => ({ status: 400, body: { error: { message: 'bad \x1b[31mred\x1b]0;title\x07 \x9b \u202e\u2066\u061c end', type: 'invalid_request_error' } } }));
  for (const PATH of [clientEnv.PATH, minimalPath(mkdtempSync(join(dir, 'bare-')))]) {
    const failed = await run(['-p', 'escapes please', '--poll', '0.2'], { ...clientEnv, PATH });
    assert.equal(failed.code, 2, failed.stderr);
    assert.match(failed.stderr, /failed: upstream_invalid_request_error: bad \\u001b\[31mred\\u001b\]0;title\\u0007 \\u009b \\u202e\\u2066\\u061c end\n$/);
  }

  stub.behave(() => ({ delayMs: 20_000 }));
  const slow = await run(['-p', 'too slow', '--poll', '0.2', '--timeout', '2'], clientEnv);
  assert.equal(slow.code, 4, slow.stderr);
  assert.match(slow.stderr, /timed out after 2s/);

  const badSecret = await run(['-p', 'x'], { ...clientEnv, PROXY_SECRET: 'w'.repeat(40) });
  assert.equal(badSecret.code, 5, badSecret.stderr);
  assert.match(badSecret.stderr, /HTTP 401\): invalid_signature/);

  const noKey = await run(['-p', 'x'], { ...clientEnv, PROXY_KEY: '' });
  assert.equal(noKey.code, 64, noKey.stderr);
  assert.match(noKey.stderr, /no key/);
  const unreachable = await run(['-p', 'x', '-u', 'http://127.0.0.1:9', '--timeout', '2'], clientEnv);
  assert.equal(unreachable.code, 5, unreachable.stderr);
  assert.match(unreachable.stderr, /cannot reach http:\/\/127\.0\.0\.1:9: .*; trying again in 1s\n/, 'tried again while time was left');
  assert.match(unreachable.stderr, /create not accepted within 2s: cannot reach/);
  // Run by sh (Debian's is dash): dash refused `set -o pipefail` and exited 2, the code of a failed job.
  if (spawnSync('sh', ['-c', 'command -v dash']).status === 0) {
    const bySh = spawnSync('dash', [CLIENT, '-p', 'x'], { env: clientEnv, encoding: 'utf8' });
    assert.deepEqual([bySh.status, bySh.stderr], [64, 'send-request: run it with bash: bash send-request.sh, or the script itself\n']);
  } else t.diagnostic('no dash here: the client run by sh is not checked');
  // A tool it needs missing: it sent a bad signature (no openssl), or said it could not reach the server (no curl).
  for (const tool of ['openssl', 'curl']) {
    const bin = minimalPath(mkdtempSync(join(dir, `without-${tool}-`)));
    unlinkSync(join(bin, tool));
    const lacking = await run(['-p', 'x'], { ...clientEnv, PATH: bin });
    assert.deepEqual([lacking.code, lacking.stderr], [64, `send-request: needs ${tool}, which is not on PATH\n`]);
  }
  // An option last without its value: bash's own "parameter not set" and exit 1, before.
  for (const args of [['-p'], ['-p', 'x', '--timeout']]) {
    const missing = await run(args, clientEnv);
    assert.deepEqual([missing.code, missing.stderr], [64, `send-request: ${args.at(-1)} needs a value (see --help)\n`]);
  }
  const malformed = await run(['-p', 'x', '-u', 'htp://127.0.0.1:9'], clientEnv);
  assert.equal(malformed.code, 64, malformed.stderr);
  assert.match(malformed.stderr, /--base-url must be an http:\/\/ or https:\/\/ URL, not 'htp:/);

  // Not the proxy's API: an http:// address nginx sends on to https://, a web server's own page (an
  // error, or a page answered 200 to any path), and a server that answers a create but no job.
  const elsewhere = createHttpServer((req, res) => {
    if (req.url?.startsWith('/spa/')) res.writeHead(200, { 'content-type': 'text/html' }).end('<html>the app</html>');
    else if (req.url?.startsWith('/half/'))
      res.writeHead(req.method === 'POST' ? 202 : 200, { 'content-type': 'application/json' }).end(req.method === 'POST' ? '{"id":"req_elsewhere"}' : '{"ok":true}');
    else if (req.url?.startsWith('/moved/'))
      res.writeHead(301, { location: `https://proxy.example.com${req.url.slice('/moved'.length)}`, 'content-type': 'text/html' }).end('<html>301 Moved Permanently</html>');
    else res.writeHead(404, { 'content-type': 'text/html' }).end('<html>404 Not Found</html>');
  });
  await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => elsewhere.close(resolve)));
  const at = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}`;
  const moved = await run(['-p', 'x', '-u', `${at}/moved`], clientEnv);
  assert.deepEqual(
    [moved.code, moved.stderr],
    [
      5,
      'send-request: create refused (HTTP 301): the server sends it on to https://proxy.example.com/v1/requests; set PROXY_BASE_URL (or --base-url) to https://proxy.example.com\n',
    ],
  );
  const page = await run(['-p', 'x', '-u', `${at}/site`], clientEnv);
  assert.deepEqual([page.code, page.stderr], [5, `send-request: create refused (HTTP 404): an answer without the proxy's JSON error; is ${at}/site the proxy's address?\n`]);
  // With jq, which refused the page and so stopped the script (exit 4, the timeout's code, saying
  // nothing); and with the client's own reader.
  for (const PATH of [clientEnv.PATH, minimalPath(dir)]) {
    const app = await run(['-p', 'x', '-u', `${at}/spa`], { ...clientEnv, PATH });
    assert.deepEqual([app.code, app.stderr], [5, `send-request: the server answered 200 without a request id; is ${at}/spa the proxy's address?\n`]);
    // Without the check it asked again until its timeout, the job never final.
    const half = await run(['-p', 'x', '-u', `${at}/half`, '--timeout', '5'], { ...clientEnv, PATH });
    assert.deepEqual(
      [half.code, half.stderr],
      [5, `send-request: queued req_elsewhere\nsend-request: the server answered 200 without a status for the job req_elsewhere; is ${at}/half the proxy's address?\n`],
    );
  }
});

test('the shell client sends a create again when its answer is lost: re-signed with the same nonce, stored and run once', async (t) => {
  const { url, clientEnv, stub, api } = await setUp(t);
  // Between client and API: the first connection's answer is dropped after the API has stored the
  // job (curl: empty reply); later connections pass both ways.
  let connections = 0;
  const sent: string[] = [];
  const lossy = createServer((client) => {
    connections += 1;
    const upstream = connect(Number(new URL(url).port), '127.0.0.1');
    const index = sent.push('') - 1;
    client.on('data', (d: Buffer) => (sent[index] += d.toString('utf8')));
    client.pipe(upstream);
    if (connections === 1) upstream.once('data', () => client.destroy());
    else upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => lossy.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => lossy.close(resolve)));
  const res = await run(['-p', 'said once', '--poll', '0.2', '--timeout', '20'], { ...clientEnv, PROXY_BASE_URL: `http://127.0.0.1:${(lossy.address() as AddressInfo).port}` });
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout, 'echo: said once\n');
  assert.match(res.stderr, /cannot reach .*; trying again in 1s/, 'the first answer was lost');
  const creates = sent.filter((r) => r.startsWith('POST ')).map((r) => JSON.parse(r.slice(r.indexOf('\r\n\r\n') + 4)) as { ts: number; nonce: string });
  assert.equal(creates.length, 2);
  assert.equal(creates[0]?.nonce, creates[1]?.nonce, 'the same nonce');
  assert.ok((creates[1]?.ts ?? 0) > (creates[0]?.ts ?? 0), 'signed again with a later ts');
  assert.equal(stub.calls.filter((c) => c.prompt === 'said once').length, 1, 'the upstream was called once');
  const health = await fetch(`${api.url}/health`, { headers: { 'x-proxy-key': clientEnv.PROXY_KEY } }).then((r) => r.json() as Promise<{ queue: Record<string, number> }>);
  assert.equal(health.queue.completed, 1, 'one job stored');
});

test('the shell client waits out a 429 (after its Retry-After) and an API restart in the middle of its wait', async (t) => {
  const port = await freePort();
  // 20 a minute: a burst of 20, then one every 3 s, so a refusal's Retry-After (2 or 3 s) is not
  // the 1 s the client would pause without one.
  const { clientEnv, stub, env, dir, api, key, secret } = await setUp(t, { PORT: String(port), RATE_LIMIT_PER_KEY: '20/min' });
  stub.behave((call) => (call.prompt === 'patient' ? { delayMs: 2500 } : {}));
  // Other creates of the same key spend its budget first.
  let spent = 0;
  while ((await postSigned(clientEnv.PROXY_BASE_URL, key, secret, { prompt: 'spend' })).status === 202) assert.ok(++spent <= 25, 'the budget ran out');
  const client = launch(['-p', 'patient', '--poll', '0.2', '--timeout', '40'], clientEnv);
  await eventually(async () => stub.calls.some((c) => c.prompt === 'patient'));
  api.child.kill('SIGKILL');
  await api.child.exited;
  await new Promise((r) => setTimeout(r, 1500));
  await startApiProcess(t, env, dir);
  const res = await client.done;
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout, 'echo: patient\n');
  assert.match(res.stderr, /create refused \(HTTP 429\): rate_limited: [^\n]*; trying again in [23]s\n/, 'paused for the Retry-After');
  assert.match(res.stderr, /cannot reach [^\n]*; trying again in/, 'the restart was waited out');
  assert.equal(stub.calls.filter((c) => c.prompt === 'patient').length, 1);
});

test('the shell client long-polls: a 1.5 s job answers in about 1.5 s even with an 8 s poll pause', async (t) => {
  const { stub, clientEnv } = await setUp(t);
  stub.behave(() => ({ delayMs: 1500 }));
  const started = Date.now();
  const res = await run(['-p', 'long-polled', '--poll', '8'], clientEnv);
  assert.equal(res.code, 0, res.stderr);
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
});

/** A PATH whose curl and openssl note each command line they are given in `log`, then run the real ones. */
function notingPath(dir: string, log: string): string {
  const bin = join(dir, 'noting-bin');
  mkdirSync(bin);
  for (const tool of ['curl', 'openssl']) {
    const real = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    writeFileSync(join(bin, tool), `#!/bin/sh\nprintf '%s\\n' "${tool} $*" >> '${log}'\nexec '${real}' "$@"\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  return `${bin}:${process.env.PATH ?? ''}`;
}

test('the shell client puts neither the secret nor the key in a command line, where ps shows them to every user', async (t) => {
  const { dir, clientEnv, key, secret } = await setUp(t);
  const log = join(dir, 'command-lines.log');
  const res = await run(['-p', 'unseen', '--poll', '0.2'], { ...clientEnv, PATH: notingPath(dir, log) });
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout, 'echo: unseen\n');
  const lines = readFileSync(log, 'utf8');
  assert.match(lines, /^curl .*\/v1\/requests$/m, 'curl was noted');
  assert.match(lines, /^openssl dgst/m, 'openssl was noted');
  assert.ok(!lines.includes(secret), `the secret in a command line:\n${lines}`);
  assert.ok(!lines.includes(key), `the key in a command line:\n${lines}`);
});

test("the shell client's signature holds for any secret: longer than SHA-256's block, non-ASCII, with quotes, backslashes, % and $; a key with a quote and a backslash is sent as it is", async (t) => {
  const seen: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString('utf8')));
    req.on('end', () => {
      seen.push({ headers: req.headers, body });
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"code":"invalid_signature","message":"noted"}}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  const key = 'pk_"quoted"\\back\\slash';
  const secrets = ['s'.repeat(63), 's'.repeat(64), 's'.repeat(65), 'long '.repeat(40), 'Grüße ✓ "q" \\ %s %d $HOME `x`', "!#%&'()*+,-./:;<=>?@[]^_{|}~"];
  for (const secret of secrets) {
    const res = await run(['-p', 'sign me'], {
      PATH: process.env.PATH ?? '',
      PROXY_BASE_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      PROXY_KEY: key,
      PROXY_SECRET: secret,
    });
    assert.equal(res.code, 5, res.stderr);
    const { headers, body } = seen.at(-1)!;
    assert.equal(headers['x-proxy-key'], key);
    const at = body.lastIndexOf(',"sign":"');
    const unsigned = `${body.slice(0, at)}}`;
    assert.equal(body.slice(at), `,"sign":"${createHmac('sha256', secret).update(unsigned, 'utf8').digest('hex')}"}`, `secret ${JSON.stringify(secret)}`);
  }
  assert.equal(seen.length, secrets.length);
});
