import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { brotliCompressSync, createGzip, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { createServer as createHttpServer } from 'node:http';
import { test } from 'node:test';
import { startStubUpstream, streamEvents, type StubBehaviour, type StubReply } from '../../../scripts/stub-upstream.ts';
import { judgeFailure } from '../src/runner/retry-policy.ts';
import { startConnectProxy } from '../../../test/helpers/connect-proxy.ts';
import { IDLE_CLOSE_WINDOW_MS } from '../src/runner/idle-closed.ts';
import { createUpstreamClient, type UpstreamClientOptions, type UpstreamOutcome } from '../src/runner/upstream-client.ts';
import type { TestHooks } from '../../../test/helpers/index.ts';

type T = TestHooks;

const fixture = (name: string) => readFileSync(new URL(`../../../test/e2e/fixtures/tls/${name}`, import.meta.url), 'utf8');
const stubTls = { key: fixture('stub-key.pem'), cert: fixture('stub.pem') };

/** Replies from a script, call by call; the last entry repeats. */
function script(...replies: StubReply[]): StubBehaviour {
  return (call) => replies[Math.min(call.n - 1, replies.length - 1)]!;
}

async function setUp(t: T, behave: StubBehaviour, options: { tls?: boolean; proxy?: 'plain' | 'tls'; stream?: boolean; maxResponseBytes?: number } = {}) {
  const stub = await startStubUpstream({ behave, ...(options.tls ? { tls: stubTls } : {}) });
  const clientOptions: UpstreamClientOptions = { baseUrl: stub.url, apiKey: 'sk-test', connections: 1, stream: options.stream ?? false };
  if (options.maxResponseBytes) clientOptions.maxResponseBytes = options.maxResponseBytes;
  if (options.tls) clientOptions.caCertificates = [fixture('ca.pem')];
  const proxy = options.proxy ? await startConnectProxy(t, 'pw', options.proxy === 'tls' ? stubTls : undefined) : null;
  if (proxy) clientOptions.proxyUrl = `${options.proxy === 'tls' ? 'https' : 'http'}://bob:pw@${new URL(proxy.url).host}`;
  const upstream = createUpstreamClient(clientOptions);
  t.after(async () => {
    await upstream.close();
    await stub.close();
  });
  const chat = (prompt: string) => upstream.chat(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: prompt }] }), new AbortController().signal);
  return { stub, chat, proxy };
}

const kindOf = (outcome: UpstreamOutcome) => (outcome.kind === 'network_error' ? `network_error ${outcome.code}` : outcome.kind);

// The stub's `reset` closes the connection on the call, unanswered: what the call meets when the
// upstream's idle close crosses it on the wire, made certain instead of left to timing.
const ways: Array<{ tls?: boolean; proxy?: 'plain' | 'tls' }> = [{}, { tls: true }, { proxy: 'plain' }, { tls: true, proxy: 'plain' }, { tls: true, proxy: 'tls' }];
for (const way of ways) {
  test(`a call whose connection, kept from an earlier call, is closed unanswered is sent once more on a new one (${way.tls ? 'https' : 'http'}${way.proxy ? `, through a CONNECT proxy${way.proxy === 'tls' ? ' reached over TLS' : ''}` : ''})`, async (t) => {
    const { stub, chat, proxy } = await setUp(t, script({}, { reset: true }, {}), way);
    assert.equal(kindOf(await chat('first')), 'ok');
    assert.equal(kindOf(await chat('second')), 'ok');
    assert.deepEqual(
      stub.calls.map((c) => c.prompt),
      ['first', 'second', 'second'],
    );
    if (proxy) assert.equal(proxy.tunnels.length, 2, 'the second send went through a new tunnel');
  });
}

// A close that finds the call in the upstream's buffer resets the connection: the call meets
// ECONNRESET, an error that names no connection. (Through a proxy the tunnel ends instead: above.)
for (const tls of [false, true]) {
  test(`a call whose kept connection is reset unanswered (ECONNRESET) is sent once more on a new one (${tls ? 'https' : 'http'})`, async (t) => {
    const { stub, chat } = await setUp(t, script({}, { reset: 'rst' }, {}), { tls });
    assert.equal(kindOf(await chat('first')), 'ok');
    assert.equal(kindOf(await chat('second')), 'ok');
    assert.deepEqual(
      stub.calls.map((c) => c.prompt),
      ['first', 'second', 'second'],
    );
  });
}

const drops = [
  { reset: true, code: 'UND_ERR_SOCKET' },
  { reset: 'rst', code: 'ECONNRESET' },
] as const;
for (const { reset, code } of drops) {
  test(`a call dropped (${code}) on a connection made for it is not sent again: the upstream may have read it`, async (t) => {
    const { stub, chat } = await setUp(t, script({ reset }, {}));
    assert.equal(kindOf(await chat('first')), `network_error ${code}`);
    assert.equal(stub.calls.length, 1);
  });

  test(`a kept connection dropped (${code}) more than ${IDLE_CLOSE_WINDOW_MS} ms after the call was sent is not sent again: the upstream was working on it`, async (t) => {
    const { stub, chat } = await setUp(t, script({}, { reset, delayMs: IDLE_CLOSE_WINDOW_MS + 200 }, {}));
    assert.equal(kindOf(await chat('first')), 'ok');
    assert.equal(kindOf(await chat('slow')), `network_error ${code}`);
    assert.equal(stub.calls.length, 2);
  });
}

test('a call sent again and dropped again, on the connection made for it, fails: it is not sent a third time', async (t) => {
  const { stub, chat } = await setUp(t, script({}, { reset: true }, { reset: true }, {}));
  assert.equal(kindOf(await chat('first')), 'ok');
  assert.equal(kindOf(await chat('second')), 'network_error UND_ERR_SOCKET');
  assert.deepEqual(
    stub.calls.map((c) => c.prompt),
    ['first', 'second', 'second'],
  );
  assert.equal(kindOf(await chat('third')), 'ok', 'the pool goes on with a new connection');
});

test("a call that gets no whole answer says how in words beside the code (undici's alone read as jargon on a job): refused, closed before the answer was complete, headers too large", async (t) => {
  const { chat } = await setUp(t, (call) => (call.prompt === 'big headers' ? { headers: { 'x-padding': 'a'.repeat(20_000) } } : { reset: true }));
  const messageOf = (outcome: UpstreamOutcome) => (outcome.kind === 'network_error' ? outcome.message : outcome.kind);
  assert.equal(messageOf(await chat('dropped')), 'upstream connection failed: UND_ERR_SOCKET (the connection ended before the answer was complete: other side closed)');
  assert.equal(messageOf(await chat('big headers')), "upstream connection failed: UND_ERR_HEADERS_OVERFLOW (the answer's headers are larger than the 16 KB the worker reads)");
  const closed = await startStubUpstream({ behave: () => ({}) });
  await closed.close();
  const upstream = createUpstreamClient({ baseUrl: closed.url, apiKey: 'sk-test', connections: 1, stream: false });
  t.after(() => upstream.close());
  const refused = await upstream.chat('{"model":"m","messages":[]}', new AbortController().signal);
  assert.equal(messageOf(refused), 'upstream connection failed: ECONNREFUSED (nothing accepts connections at that address and port)');
});

test('the key goes as "Authorization: Bearer <key>", or alone in the header OPENAI_API_KEY_HEADER names (api-key for Azure OpenAI)', async (t) => {
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  for (const apiKeyHeader of [undefined, 'api-key']) {
    const upstream = createUpstreamClient({ baseUrl: stub.url, apiKey: 'sk-azure', connections: 1, ...(apiKeyHeader ? { apiKeyHeader } : {}) });
    assert.equal((await upstream.chat('{"messages":[]}', new AbortController().signal)).kind, 'ok');
    await upstream.close();
  }
  assert.deepEqual(
    stub.calls.map((c) => [c.headers.authorization, c.headers['api-key']]),
    [
      ['Bearer sk-azure', undefined],
      [undefined, 'sk-azure'],
    ],
  );
});

test("UPSTREAM_HEADERS go with every call; a gateway's key among them never reaches a job's error", async (t) => {
  const stub = await startStubUpstream({
    behave: (call) =>
      call.prompt === 'refuse'
        ? { status: 401, body: { error: { message: `bad gateway key ${String(call.headers['helicone-auth']).slice(7)}`, code: 'sk-helicone-secret' } } }
        : {},
  });
  t.after(() => stub.close());
  const upstream = createUpstreamClient({
    baseUrl: stub.url,
    apiKey: 'sk-up',
    connections: 1,
    extraHeaders: { 'openai-project': 'proj_1', 'helicone-auth': 'Bearer sk-helicone-secret' },
  });
  t.after(() => upstream.close());
  const chat = (prompt: string) => upstream.chat(JSON.stringify({ messages: [{ role: 'user', content: prompt }] }), new AbortController().signal);
  assert.equal((await chat('hello')).kind, 'ok');
  assert.deepEqual(
    [stub.calls[0]?.headers['openai-project'], stub.calls[0]?.headers['helicone-auth'], stub.calls[0]?.authorization],
    ['proj_1', 'Bearer sk-helicone-secret', 'Bearer sk-up'],
  );
  const refused = await chat('refuse');
  assert.equal(refused.kind, 'http_error');
  assert.deepEqual(refused.kind === 'http_error' ? [refused.message, refused.errorCode] : [], ['bad gateway key [redacted]', null]);
  assert.ok(!JSON.stringify(refused).includes('sk-helicone-secret'), 'nowhere in the outcome');
});

test("an error answered as a web page (a proxy's, a CDN's) is told as a line of its text, without its tags, scripts and styles; plain text as one line", async (t) => {
  const nginx =
    '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';
  const cdn =
    '<!DOCTYPE html><html><head><title>example.com | 524: A timeout occurred</title><style>body{color:red}</style><script>var x = "<b>";</script></head>' +
    '<body><h1>A timeout &amp; more</h1><p>The origin web server timed out&nbsp;responding &#8212; try again.</p></body></html>';
  const replies: StubReply[] = [
    { status: 502, raw: nginx, headers: { 'content-type': 'text/html' } },
    { status: 524, raw: cdn },
    { status: 503, raw: 'upstream connect error\r\n  or disconnect/reset before headers', headers: { 'content-type': 'text/plain' } },
  ];
  const { chat } = await setUp(t, script(...replies));
  const messages = [];
  for (let i = 0; i < replies.length; i++) {
    const outcome = await chat(`page ${i}`);
    messages.push(outcome.kind === 'http_error' ? outcome.message : outcome.kind);
  }
  assert.deepEqual(messages, [
    '502 Bad Gateway nginx',
    'example.com | 524: A timeout occurred: A timeout & more The origin web server timed out responding \u2014 try again.',
    'upstream connect error or disconnect/reset before headers',
  ]);
});

test('an error message is cut to 500 UTF-16 units before a pair rather than through it, and half a pair the upstream sent is written U+FFFD', async (t) => {
  // An emoji across the cut left its first half at the message's end: stored, it read back as
  // three U+FFFD on SQLite and one on PostgreSQL.
  const long = `${'x'.repeat(499)}😀 and the rest`;
  const replies: StubReply[] = [
    { status: 400, body: { error: { message: long, type: 'invalid_request_error' } } },
    { status: 502, raw: long, headers: { 'content-type': 'text/plain' } },
    { status: 400, body: { error: { message: 'half \ud83d alone', type: 'invalid_request_error' } } },
    { status: 200, body: { choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: `${'r'.repeat(63)}😀` }] } },
  ];
  const { chat } = await setUp(t, script(...replies));
  const messages = [];
  for (let i = 0; i < 3; i++) {
    const outcome = await chat(`cut ${i}`);
    messages.push(outcome.kind === 'http_error' ? outcome.message : outcome.kind);
  }
  assert.deepEqual(messages, ['x'.repeat(499), 'x'.repeat(499), 'half \uFFFD alone']);
  const answered = await chat('reason');
  assert.equal(answered.kind === 'ok' ? answered.finishReason : answered.kind, 'r'.repeat(63));
});

test("an error body in another server's shape gives the job its message and code, as OpenAI's does; one in no known shape stays its text", async (t) => {
  const cases: Array<[string, StubReply, string, string | null]> = [
    ['OpenAI', { status: 400, body: { error: { message: 'bad param', type: 'invalid_request_error', param: null, code: null } } }, 'bad param', 'invalid_request_error'],
    [
      "Gemini's OpenAI-compatible endpoint",
      { status: 400, body: [{ error: { code: 400, message: 'Invalid JSON payload received. Unknown name "reasoning": Cannot find field.', status: 'INVALID_ARGUMENT' } }] },
      'Invalid JSON payload received. Unknown name "reasoning": Cannot find field.',
      'INVALID_ARGUMENT',
    ],
    [
      'vLLM',
      { status: 400, body: { object: 'error', message: "This model's maximum context length is 4096 tokens.", type: 'BadRequestError', param: null, code: 400 } },
      "This model's maximum context length is 4096 tokens.",
      'BadRequestError',
    ],
    [
      'Mistral',
      { status: 401, body: { object: 'error', message: 'Unauthorized', type: 'invalid_request_error', param: null, code: null } },
      'Unauthorized',
      'invalid_request_error',
    ],
    [
      "Hugging Face's TGI",
      { status: 422, body: { error: 'Input validation error: `inputs` must have less than 2048 tokens.', error_type: 'validation' } },
      'Input validation error: `inputs` must have less than 2048 tokens.',
      'validation',
    ],
    ['Kong', { status: 429, body: { message: 'API rate limit exceeded' } }, 'API rate limit exceeded', null],
    ['FastAPI', { status: 404, body: { detail: 'Not Found' } }, 'Not Found', null],
    [
      "FastAPI's schema refusing the request",
      {
        status: 422,
        body: {
          detail: [
            { type: 'missing', loc: ['body', 'messages', 0, 'role'], msg: 'Field required', input: {} },
            { type: 'float_parsing', loc: ['body', 'temperature'], msg: 'Input should be a valid number', input: 'hot' },
          ],
        },
      },
      'body.messages.0.role: Field required; body.temperature: Input should be a valid number',
      null,
    ],
    [
      "Cloudflare's envelope (Workers AI, AI Gateway)",
      { status: 503, body: { result: null, success: false, errors: [{ code: 7009, message: 'Upstream service unavailable' }], messages: [] } },
      'Upstream service unavailable (code 7009)',
      null,
    ],
    ['an envelope whose errors say nothing', { status: 500, body: { success: false, errors: [{ code: 1 }] } }, '{"success":false,"errors":[{"code":1}]}', null],
    ['none known', { status: 500, body: { failure: { why: 'x' } } }, '{"failure":{"why":"x"}}', null],
    ['a list of two', { status: 500, body: [{ error: { message: 'a' } }, { error: { message: 'b' } }] }, '[{"error":{"message":"a"}},{"error":{"message":"b"}}]', null],
    ['an empty message', { status: 502, body: { error: { message: '', type: 'server_error' } } }, '{"error":{"message":"","type":"server_error"}}', 'server_error'],
  ];
  const { chat } = await setUp(t, script(...cases.map(([, reply]) => reply)));
  for (const [who, , message, code] of cases) {
    const outcome = await chat(who);
    assert.deepEqual(outcome.kind === 'http_error' ? [outcome.message, outcome.errorCode] : outcome.kind, [message, code], who);
  }
});

test("a wait asked for in the body (Google's RetryInfo) is the attempt's wait where no header names one; a header's wins", async () => {
  const google = (retryDelay: unknown) => [
    { error: { code: 429, message: 'Resource exhausted', status: 'RESOURCE_EXHAUSTED', details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay }] } },
  ];
  const waits = [];
  for (const [retryDelay, headers] of [
    ['37s', {}],
    ['0.5s', {}],
    ['29.114197034s', {}],
    ['37s', { 'retry-after': '2' }],
    ['soon', {}],
    [37, {}],
  ] as const) {
    const outcome = await judgeBody(429, google(retryDelay), headers);
    waits.push(judgeFailure(outcome, 0).waitMs);
  }
  assert.deepEqual(waits, [37_000, 500, 29_115, 2000, undefined, undefined]);
});

/** An error answer as the upstream client reads it, from a stub that sends it once. */
async function judgeBody(status: number, body: unknown, headers: Record<string, string>) {
  const stub = await startStubUpstream({ behave: () => ({ status, body, headers }) });
  const upstream = createUpstreamClient({ baseUrl: stub.url, apiKey: 'sk-test', connections: 1 });
  try {
    const outcome = await upstream.chat('{"model":"m","messages":[]}', new AbortController().signal);
    assert.equal(outcome.kind, 'http_error');
    return outcome as Extract<UpstreamOutcome, { kind: 'http_error' }>;
  } finally {
    await upstream.close();
    await stub.close();
  }
}

test("an answer's text is its first choice's content, or the text parts of a content sent as a list of parts, joined; none is null", async (t) => {
  const completion = (content: unknown) => ({
    body: { id: 'c', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] },
  });
  const contents: Array<[unknown, string | null]> = [
    ['plain', 'plain'],
    // As Mistral's reasoning models answer: the thinking is not the answer.
    [
      [
        { type: 'thinking', thinking: [{ type: 'text', text: 'hmm' }] },
        { type: 'text', text: 'The answer ' },
        { type: 'text', text: 'is 4.' },
      ],
      'The answer is 4.',
    ],
    [[{ type: 'image_url', image_url: { url: 'https://x.example/a.png' } }], null],
    [[null, 7, { type: 'text', text: 42 }], null],
    [null, null],
  ];
  const { chat } = await setUp(t, script(...contents.map(([content]) => completion(content))));
  for (const [content, text] of contents) {
    const outcome = await chat('q');
    assert.equal(outcome.kind, 'ok');
    assert.equal(outcome.kind === 'ok' ? outcome.outputText : undefined, text, JSON.stringify(content));
    assert.deepEqual(
      outcome.kind === 'ok' ? (outcome.body as { choices: Array<{ message: { content: unknown } }> }).choices[0]!.message.content : undefined,
      content,
      'the response keeps the content as sent',
    );
  }
});

// UPSTREAM_STREAM=true: each answer asked for streamed, and put back together.

const completionOf = (message: Record<string, unknown>, extra: object = {}) => ({
  id: 'chatcmpl-9',
  object: 'chat.completion',
  created: 1796330000,
  model: 'm-2026',
  choices: [{ index: 0, message: { role: 'assistant', ...message }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 9, completion_tokens: 12, total_tokens: 21 },
  ...extra,
});
const answers: Array<[string, Record<string, unknown>]> = [
  ['text', completionOf({ content: 'The answer is 4, and here is why: two and two make four.' })],
  [
    'tool calls',
    {
      ...completionOf({
        content: null,
        tool_calls: [
          { id: 'call_a', type: 'function', function: { name: 'add', arguments: '{"a":2,"b":2}' } },
          { id: 'call_b', type: 'function', function: { name: 'log', arguments: '{"text":"two and two"}' } },
        ],
      }),
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: null,
            tool_calls: [
              { id: 'call_a', type: 'function', function: { name: 'add', arguments: '{"a":2,"b":2}' } },
              { id: 'call_b', type: 'function', function: { name: 'log', arguments: '{"text":"two and two"}' } },
            ],
          },
          logprobs: null,
          finish_reason: 'tool_calls',
        },
      ],
    },
  ],
  ['a reasoning model', completionOf({ content: 'Four.', reasoning_content: 'Two plus two: count them.' })],
  [
    'two choices',
    {
      ...completionOf({ content: 'Four.' }),
      choices: [0, 1].map((index) => ({ index, message: { role: 'assistant', content: ['Four.', '4'][index] }, logprobs: null, finish_reason: 'stop' })),
    },
  ],
  ['non-ASCII text', completionOf({ content: 'Vier – четыре – 四 – 🍀🍀' })],
];
for (const [what, answer] of answers) {
  test(`streamed, an answer (${what}) is put together as the upstream would have sent it unstreamed`, async (t) => {
    const { chat } = await setUp(t, () => ({ body: answer }), { stream: true });
    const outcome = await chat('q');
    assert.equal(outcome.kind, 'ok', JSON.stringify(outcome));
    assert.deepEqual(outcome.kind === 'ok' && outcome.body, answer);
    assert.deepEqual(outcome.kind === 'ok' && outcome.usage, answer.usage);
  });
}

test('streamed, the request is sent as it was with stream and the usage asked for, nothing else changed', async (t) => {
  const { stub } = await setUp(t, () => ({}), { stream: true });
  const upstream = createUpstreamClient({ baseUrl: stub.url, apiKey: 'sk-test', connections: 1, stream: true });
  t.after(() => upstream.close());
  const request = { model: 'm', messages: [{ role: 'user', content: 'q' }], temperature: 0.2, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] };
  const outcome = await upstream.chat(JSON.stringify(request), new AbortController().signal);
  assert.equal(outcome.kind === 'ok' && outcome.outputText, 'echo: q');
  assert.deepEqual(stub.calls[0]?.body, { stream: true, stream_options: { include_usage: true }, ...request });
});

test("streamed, a stream as OpenAI sends it (CRLF or LF lines, keep-alive comments, data with or without its space, usage last) reads to OpenAI's unstreamed answer", async (t) => {
  const chunk = (choices: unknown[], extra: object = {}) =>
    JSON.stringify({
      id: 'chatcmpl-Bx',
      object: 'chat.completion.chunk',
      created: 1796330001,
      model: 'gpt-4o-mini-2024-07-18',
      service_tier: 'default',
      system_fingerprint: 'fp_560af6e559',
      choices,
      usage: null,
      obfuscation: 'Xq1',
      ...extra,
    });
  const lines = [
    ': OPENROUTER PROCESSING',
    '',
    `data: ${chunk([{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }])}`,
    '',
    `data:${chunk([{ index: 0, delta: { content: 'Two' }, logprobs: null, finish_reason: null }])}`,
    '',
    `event: message`,
    `data: ${chunk([{ index: 0, delta: { content: ' and two' }, logprobs: null, finish_reason: null }])}`,
    '',
    `data: ${chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }])}`,
    '',
    `data: ${chunk([], { usage: { prompt_tokens: 8, completion_tokens: 3, total_tokens: 11, prompt_tokens_details: { cached_tokens: 0 } } })}`,
    '',
    'data: [DONE]',
    '',
    '',
  ];
  const expected = {
    id: 'chatcmpl-Bx',
    object: 'chat.completion',
    created: 1796330001,
    model: 'gpt-4o-mini-2024-07-18',
    service_tier: 'default',
    system_fingerprint: 'fp_560af6e559',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Two and two' }, logprobs: null, finish_reason: 'stop' }],
    usage: { prompt_tokens: 8, completion_tokens: 3, total_tokens: 11, prompt_tokens_details: { cached_tokens: 0 } },
  };
  for (const eol of ['\n', '\r\n']) {
    const { chat } = await setUp(t, () => ({ raw: lines.join(eol), headers: { 'content-type': 'text/event-stream; charset=utf-8' } }), { stream: true });
    const outcome = await chat('q');
    assert.equal(outcome.kind, 'ok', JSON.stringify(outcome));
    assert.deepEqual(outcome.kind === 'ok' && outcome.body, expected, JSON.stringify(eol));
    assert.equal(outcome.kind === 'ok' && outcome.outputText, 'Two and two');
  }
});

test('streamed, an answer the server sends unstreamed all the same, and its errors, read as ever', async (t) => {
  const { chat } = await setUp(t, script({ unstreamed: true }, { status: 429, body: { error: { message: 'slow down', code: 'rate_limit_exceeded' } } }), { stream: true });
  const ok = await chat('plain');
  assert.equal(ok.kind === 'ok' && ok.outputText, 'echo: plain');
  const refused = await chat('again');
  assert.deepEqual(refused.kind === 'http_error' && [refused.status, refused.errorCode], [429, 'rate_limit_exceeded']);
});

test('streamed, a stream cut short, one not JSON, or one that sends an error fails the attempt as upstream_bad_response, retried; one whose connection drops as unreachable', async (t) => {
  const sse = (...events: string[]) => ({ raw: events.map((e) => `data: ${e}\n\n`).join(''), headers: { 'content-type': 'text/event-stream' } });
  const first = JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { role: 'assistant', content: 'Hal' }, finish_reason: null }] });
  const cases: Array<[string, StubReply, RegExp]> = [
    ['ended without [DONE] or a finish reason', sse(first), /ended before its end/],
    ['not JSON', sse(first, '{"choices": [', '[DONE]'), /not JSON/],
    ['empty', sse(), /empty stream/],
    [
      'an error mid-stream',
      sse(first, JSON.stringify({ error: { message: 'the model crashed', type: 'server_error' } }), '[DONE]'),
      /with an error instead of a completion: the model crashed/,
    ],
    // TGI's: an error as text, then the stream's end, with or without [DONE].
    [
      'an error as text mid-stream',
      sse(first, JSON.stringify({ error: 'CUDA out of memory', error_type: 'generation' })),
      /with an error instead of a completion: CUDA out of memory$/,
    ],
    ['an error as text mid-stream, then [DONE]', sse(first, JSON.stringify({ error: 'CUDA out of memory', error_type: 'generation' }), '[DONE]'), /: CUDA out of memory$/],
    ["vLLM's and Mistral's error mid-stream", sse(first, JSON.stringify({ object: 'error', message: 'overloaded', type: 'ServiceUnavailable', code: 503 })), /: overloaded$/],
    ['a 2xx with an error as text, sent unstreamed', { unstreamed: true, body: { error: 'Model is loading', error_type: 'overloaded' } }, /: Model is loading$/],
    // Gemini's endpoint: its error in a list of one, as its error statuses carry it.
    [
      "Gemini's error mid-stream, in a list of one",
      sse(first, JSON.stringify([{ error: { code: 503, message: 'The model is overloaded.', status: 'UNAVAILABLE' } }])),
      /with an error instead of a completion: The model is overloaded\.$/,
    ],
    // Gemini's stream (and gateways before it) writes a failure midway as plain JSON, without data:.
    [
      "Gemini's error written raw mid-stream, over several lines",
      {
        raw: `data: ${first}\n\n${JSON.stringify({ error: { code: 503, message: 'This model is currently experiencing high demand.', status: 'UNAVAILABLE' } }, null, 2)}\n`,
        headers: { 'content-type': 'text/event-stream' },
      },
      /with an error instead of a completion: This model is currently experiencing high demand\.$/,
    ],
    [
      'an error written raw as the whole stream',
      { raw: `${JSON.stringify({ error: { code: 500, message: 'Internal error encountered.', status: 'INTERNAL' } })}\n`, headers: { 'content-type': 'text/event-stream' } },
      /with an error instead of a completion: Internal error encountered\.$/,
    ],
    [
      "a 2xx with Gemini's error in a list of one, sent unstreamed",
      { unstreamed: true, body: [{ error: { code: 500, message: 'Internal error encountered.', status: 'INTERNAL' } }] },
      /with an error instead of a completion: Internal error encountered\.$/,
    ],
    [
      "OpenRouter's error in the choice it ended",
      sse(
        first,
        JSON.stringify({
          id: 'c',
          object: 'chat.completion.chunk',
          choices: [{ index: 0, delta: { content: '' }, finish_reason: 'error', error: { code: 502, message: 'Provider disconnected' } }],
        }),
      ),
      /with an error instead of a completion: Provider disconnected$/,
    ],
    [
      'a choice ended by "error", nothing said',
      sse(first, JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'error' }] }), '[DONE]'),
      /with a completion that ended in an error$/,
    ],
    [
      'a choice ended by "error", sent unstreamed with the answer so far',
      {
        unstreamed: true,
        body: {
          id: 'c',
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: 'Hal' }, finish_reason: 'error', error: { code: 502, message: 'Provider disconnected' } }],
        },
      },
      /with a completion that ended in an error: Provider disconnected$/,
    ],
    // Chunks that carry no choice at all (a proxy in front of Azure OpenAI sends its filter's
    // results so), then [DONE]: no answer.
    [
      'a stream whose chunks hold no choice',
      sse(JSON.stringify({ id: '', object: '', created: 0, model: '', choices: [], prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }] }), '[DONE]'),
      /with a completion that holds no choices$/,
    ],
    [
      'a completion that holds no choices, sent unstreamed',
      { unstreamed: true, body: { id: 'c', object: 'chat.completion', choices: [], usage: null } },
      /with a completion that holds no choices$/,
    ],
    ['an event named error', { raw: `data: ${first}\n\nevent: error\ndata: {"message":"went away"}\n\n`, headers: { 'content-type': 'text/event-stream' } }, /: went away$/],
  ];
  const { chat } = await setUp(t, script(...cases.map(([, reply]) => reply)), { stream: true });
  for (const [what, , message] of cases) {
    const outcome = await chat('q');
    assert.equal(outcome.kind, 'bad_response', `${what}: ${JSON.stringify(outcome)}`);
    assert.match(outcome.kind === 'bad_response' ? outcome.message : '', message, what);
    assert.equal(outcome.kind === 'bad_response' && judgeFailure(outcome, Date.now()).retryable, true, what);
  }
  // As an unstreamed answer whose connection drops midway.
  const { chat: cut } = await setUp(t, () => ({ cutAfter: 3 }), { stream: true });
  assert.equal(kindOf(await cut('q')), 'network_error UND_ERR_SOCKET');
});

test('streamed, UPSTREAM_RESPONSE_LIMIT counts the answer put together, not its events; an answer sent unstreamed, compressed, or as one endless event is counted too', async (t) => {
  const limit = 4096;
  const answer = (chars: number) => completionOf({ content: 'x'.repeat(chars) });
  const cases: Array<[string, StubReply, string]> = [
    // Its events take about 30 times its 3,000 bytes.
    ['a stream whose answer is under the limit', { body: answer(3000) }, 'ok'],
    ['a stream whose answer is over it', { body: answer(5000) }, 'too_large'],
    ['answered unstreamed, over it', { body: answer(5000), unstreamed: true }, 'too_large'],
    ['answered unstreamed, under it', { body: answer(3000), unstreamed: true }, 'ok'],
    ['one event with no line break', { raw: `data: ${JSON.stringify(answer(5000))}`, headers: { 'content-type': 'text/event-stream' } }, 'too_large'],
    // Compressed, by a server that ignores accept-encoding: identity; inflated as it arrives, so
    // its events (about 200 KB for the 3,000 bytes) do not count, as they do not uncompressed.
    ['a gzip stream whose answer is under it', compressedStream(gzipSync, 'gzip', answer(3000)), 'ok'],
    ['a gzip stream whose answer is over it', compressedStream(gzipSync, 'gzip', answer(5000)), 'too_large'],
    ['a brotli stream under it', compressedStream(brotliCompressSync, 'br', answer(3000)), 'ok'],
    ['a deflate stream under it', compressedStream(deflateSync, 'deflate', answer(3000)), 'ok'],
    ['a bare deflate stream under it', compressedStream(deflateRawSync, 'deflate', answer(3000)), 'ok'],
    ['one endless event, compressed', { raw: gzipSync(`data: ${'x'.repeat(200_000)}`), headers: { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' } }, 'too_large'],
    ['an error status over it', { status: 503, raw: 'x'.repeat(5000), headers: { 'content-type': 'text/html' } }, 'http_error'],
  ];
  const { chat, stub } = await setUp(t, script(...cases.map(([, reply]) => reply)), { stream: true, maxResponseBytes: limit });
  for (const [what, , kind] of cases) {
    const outcome = await chat('q');
    assert.equal(outcome.kind, kind, `${what}: ${JSON.stringify(outcome).slice(0, 300)}`);
    if (outcome.kind === 'too_large' || outcome.kind === 'http_error') assert.match(outcome.message, new RegExp(`over ${limit} bytes \\(UPSTREAM_RESPONSE_LIMIT\\)$`), what);
  }
  assert.equal(stub.calls.length, cases.length);
});

test('an informational answer before the real one (103 Early Hints, as a CDN in front may send) is passed over: the 200 after it is the answer', async (t) => {
  const completion = completionOf({ content: 'after the hints' });
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
      res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': 'req_after_hints' });
      res.end(JSON.stringify(completion));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  const upstream = createUpstreamClient({ baseUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`, apiKey: 'sk-test', connections: 1 });
  t.after(() => upstream.close());
  const outcome = await upstream.chat(JSON.stringify({ model: 'm', messages: [] }), new AbortController().signal);
  assert.deepEqual(
    [outcome.kind, outcome.kind === 'ok' && outcome.status, outcome.kind === 'ok' && outcome.outputText, outcome.requestId],
    ['ok', 200, 'after the hints', 'req_after_hints'],
  );
});

test('unstreamed, a 2xx the server streams unasked is counted by the answer it makes, as a streamed one is; a JSON body by its bytes', async (t) => {
  const limit = 4096;
  const events = (chars: number) => ({
    raw: streamEvents(completionOf({ content: 'x'.repeat(chars) }), true)
      .map((data) => `data: ${data}\n\n`)
      .join(''),
    headers: { 'content-type': 'text/event-stream' },
  });
  const cases: Array<[string, StubReply, string]> = [
    // Its events take about 30 times its 3,000 bytes: counted as sent, they were over the limit.
    ['a stream whose answer is under the limit', events(3000), 'ok'],
    ['a stream whose answer is over it', events(5000), 'too_large'],
    ['a gzip stream whose answer is under it', compressedStream(gzipSync, 'gzip', completionOf({ content: 'x'.repeat(3000) })), 'ok'],
    ['a JSON body over it', { raw: 'x'.repeat(5000), headers: { 'content-type': 'application/json' } }, 'too_large'],
  ];
  const { chat, stub } = await setUp(t, script(...cases.map(([, reply]) => reply)), { maxResponseBytes: limit });
  for (const [what, , kind] of cases) {
    const outcome = await chat('q');
    assert.equal(outcome.kind, kind, `${what}: ${JSON.stringify(outcome).slice(0, 300)}`);
    if (outcome.kind === 'ok') assert.equal(outcome.outputText, 'x'.repeat(3000), what);
    if (outcome.kind === 'too_large')
      assert.equal(outcome.message, `upstream answered 200 with ${what.startsWith('a JSON') ? 'a body' : 'an answer'} over ${limit} bytes (UPSTREAM_RESPONSE_LIMIT)`, what);
  }
  assert.ok(
    stub.calls.every((call) => call.body.stream === undefined),
    'none was asked to stream',
  );
});

for (const [what, type] of [
  ['a body', 'application/json'],
  ['an event stream of one event', 'text/event-stream'],
] as const) {
  test(`an endless answer (${what}) fails as too large once past UPSTREAM_RESPONSE_LIMIT, and its connection is closed: the worker never holds more`, async (t) => {
    const limit = 256 * 1024;
    let written = 0;
    let closed = false;
    const server = createHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': type });
      res.write(type === 'text/event-stream' ? 'data: "' : '{"x":"');
      const piece = 'x'.repeat(16 * 1024);
      const more = () => {
        while (!closed && res.write(piece)) written += piece.length;
      };
      res.on('drain', more);
      res.on('close', () => (closed = true));
      more();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    });
    for (const stream of [false, true]) {
      closed = false;
      written = 0;
      const upstream = createUpstreamClient({
        baseUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`,
        apiKey: 'sk-test',
        connections: 1,
        maxResponseBytes: limit,
        stream,
      });
      t.after(() => upstream.close());
      const outcome = await upstream.chat(JSON.stringify({ model: 'm', messages: [] }), AbortSignal.timeout(10_000));
      assert.equal(outcome.kind, 'too_large', `${stream ? 'streamed' : 'unstreamed'}: ${JSON.stringify(outcome).slice(0, 300)}`);
      for (let waited = 0; !closed && waited < 2000; waited += 20) await new Promise((r) => setTimeout(r, 20));
      assert.ok(closed, 'the connection was closed');
      // What the socket buffers on both sides may add to the limit, not the endless rest.
      assert.ok(written < limit + 8 * 1024 * 1024, `${written} bytes written`);
    }
  });
}

test('an answer whose Content-Length is over UPSTREAM_RESPONSE_LIMIT fails at once, before its body comes: a 2xx as too large, an error status by its status', async (t) => {
  const limit = 64 * 1024;
  // Says four times the limit, sends a few bytes, then nothing: read to the limit, it never ends.
  const server = createHttpServer((req, res) => {
    req.resume();
    const status = req.url?.includes('fail') ? 503 : 200;
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(4 * limit) });
    res.write('{"x":"');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  for (const path of ['/v1', '/fail/v1']) {
    const upstream = createUpstreamClient({
      baseUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}${path}`,
      apiKey: 'sk-test',
      connections: 1,
      maxResponseBytes: limit,
    });
    t.after(() => upstream.close());
    const outcome = await upstream.chat(JSON.stringify({ model: 'm', messages: [] }), AbortSignal.timeout(5_000));
    const expected = path === '/v1' ? 'too_large' : 'http_error';
    assert.deepEqual(
      [outcome.kind, 'message' in outcome && outcome.message],
      [expected, `upstream answered ${path === '/v1' ? 200 : 503} with a body over ${limit} bytes (UPSTREAM_RESPONSE_LIMIT)`],
    );
    if (outcome.kind === 'http_error') assert.equal(judgeFailure(outcome, Date.now()).retryable, true, 'a 503 is retried');
  }
});

/** `completion` as the stub streams it, compressed whole with `compress` and sent as `coding`. */
function compressedStream(compress: (text: string) => Buffer, coding: string, completion: unknown): StubReply {
  const events = streamEvents(completion, true)
    .map((data) => `data: ${data}\n\n`)
    .join('');
  return { raw: compress(events), headers: { 'content-type': 'text/event-stream', 'content-encoding': coding } };
}

test('streamed and compressed: the answer is the one sent uncompressed; bytes that do not inflate, or a stream cut mid-block, fail the attempt as upstream_bad_response (retried)', async (t) => {
  const completion = completionOf({ content: 'héllo, compressed world '.repeat(50) });
  const whole = gzipSync(
    streamEvents(completion, true)
      .map((data) => `data: ${data}\n\n`)
      .join(''),
  );
  const gzipHeaders = { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' };
  const { chat } = await setUp(
    t,
    script(
      compressedStream(gzipSync, 'gzip', completion),
      { raw: Buffer.from('not gzip at all, not gzip at all'), headers: gzipHeaders },
      { raw: whole.subarray(0, Math.floor(whole.length / 2)), headers: gzipHeaders },
    ),
    { stream: true },
  );
  const ok = await chat('q');
  assert.equal(ok.kind, 'ok');
  assert.equal(ok.kind === 'ok' && ok.outputText, 'héllo, compressed world '.repeat(50));
  for (const what of ['not gzip', 'cut mid-block']) {
    const outcome = await chat('q');
    assert.equal(outcome.kind, 'bad_response', `${what}: ${JSON.stringify(outcome)}`);
    assert.match(outcome.kind === 'bad_response' ? outcome.message : '', /does not decode as content-encoding gzip/, what);
    assert.equal(judgeFailure(outcome, Date.now()).retryable, true, what);
  }
});

test("streamed and compressed piece by piece (each event flushed as sent): whole when it ends, and ended at the call's deadline when it does not", async (t) => {
  const completion = completionOf({ content: 'one flushed piece after another' });
  const events = streamEvents(completion, true).map((data) => `data: ${data}\n\n`);
  // Sends the first `count` events 50 ms apart, each flushed, then ends the stream (or never does).
  let count = events.length;
  const server = createHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
    const gzip = createGzip();
    gzip.pipe(res);
    let sent = 0;
    const timer = setInterval(() => {
      if (sent === count) {
        clearInterval(timer);
        if (count === events.length) gzip.end();
        return;
      }
      gzip.write(events[sent++]!);
      gzip.flush();
    }, 50);
    res.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  const upstream = createUpstreamClient({ baseUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`, apiKey: 'sk-test', connections: 1, stream: true });
  t.after(() => upstream.close());
  const request = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'q' }] });
  const whole = await upstream.chat(request, new AbortController().signal);
  assert.equal(whole.kind === 'ok' && whole.outputText, 'one flushed piece after another');
  count = 3;
  const started = Date.now();
  await assert.rejects(upstream.chat(request, AbortSignal.timeout(500)), { name: 'TimeoutError' });
  assert.ok(Date.now() - started < 2000, 'ended at its deadline');
});

/** A balancer on loopback that cuts a connection once neither side has sent anything for idleMs. */
async function startIdleCuttingBalancer(t: T, to: number, idleMs: number) {
  const cut: number[] = [];
  const server = createServer((client) => {
    const upstream = connect(to, '127.0.0.1');
    const pair: Socket[] = [client, upstream];
    for (const socket of pair) {
      socket.setTimeout(idleMs, () => {
        cut.push(Date.now());
        for (const s of pair) s.destroy();
      });
      socket.on('error', () => pair.forEach((s) => s.destroy()));
      socket.on('close', () => pair.forEach((s) => s.destroy()));
    }
    // Any bytes either way keep both sides alive, as a balancer's idle timer does.
    const touch = () => pair.forEach((s) => s.setTimeout(idleMs));
    client.on('data', (d) => (touch(), upstream.write(d)));
    upstream.on('data', (d) => (touch(), client.write(d)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as { port: number }).port, cut };
}

test('behind a balancer that cuts a connection silent for 400 ms, a 1.2 s answer fails unstreamed and arrives streamed over 1.5 s, its events 100 ms apart', async (t) => {
  const stub = await startStubUpstream({
    behave: (call) => (call.body.stream ? { eventGapMs: 100, body: completionOf({ content: 'slow but steady, one piece at a time' }) } : { delayMs: 1200 }),
  });
  t.after(() => stub.close());
  const balancer = await startIdleCuttingBalancer(t, stub.port, 400);
  const ask = async (stream: boolean) => {
    const upstream = createUpstreamClient({ baseUrl: `http://127.0.0.1:${balancer.port}/v1`, apiKey: 'sk-test', connections: 1, stream });
    t.after(() => upstream.close());
    const started = Date.now();
    const outcome = await upstream.chat(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'q' }] }), new AbortController().signal);
    return { outcome, ms: Date.now() - started };
  };
  const plain = await ask(false);
  assert.equal(kindOf(plain.outcome), 'network_error UND_ERR_SOCKET', 'cut while the model thought');
  assert.equal(balancer.cut.length, 1);
  const streamed = await ask(true);
  assert.equal(streamed.outcome.kind === 'ok' && streamed.outcome.outputText, 'slow but steady, one piece at a time');
  assert.ok(streamed.ms >= 1200, `the stream took ${streamed.ms} ms, past the balancer's limit several times over`);
  assert.equal(balancer.cut.length, 1, 'the streamed call was never cut');
});

test("streamed, the call's deadline ends a stream still arriving, as it ends an unstreamed call", async (t) => {
  const { stub } = await setUp(t, () => ({ eventGapMs: 200, body: completionOf({ content: 'a long and slow answer, piece by piece' }) }), { stream: true });
  const upstream = createUpstreamClient({ baseUrl: stub.url, apiKey: 'sk-test', connections: 1, stream: true });
  t.after(() => upstream.close());
  const started = Date.now();
  await assert.rejects(upstream.chat(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'q' }] }), AbortSignal.timeout(500)), { name: 'TimeoutError' });
  assert.ok(Date.now() - started < 2000, 'ended at its deadline, not at the end of the stream');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(typeof stub.calls[0]?.hungUpAt, 'number', 'the connection was closed');
});

test('streamed, an upstream that refuses stream_options (Azure OpenAI did, for a time) gets each call again at once without it, and from then on never; the answers come without their usage; said once', async (t) => {
  const refusals = [
    { error: { message: 'Unrecognized request argument supplied: stream_options', type: 'invalid_request_error', param: null, code: null } },
    { error: { message: "Unknown parameter: 'stream_options'.", type: 'invalid_request_error', param: 'stream_options', code: 'unknown_parameter' } },
  ];
  for (const refusal of refusals) {
    const stub = await startStubUpstream({
      behave: (call) => (call.body.stream_options ? { status: 400, body: refusal, delayMs: 50 } : { body: completionOf({ content: 'fine' }, { usage: undefined }) }),
    });
    t.after(() => stub.close());
    const notices: string[] = [];
    const upstream = createUpstreamClient({ baseUrl: stub.url, apiKey: 'sk-test', connections: 4, stream: true, onNotice: (m) => notices.push(m) });
    t.after(() => upstream.close());
    const ask = () => upstream.chat(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'q' }] }), new AbortController().signal);
    // Two in flight together: both meet the refusal, both are sent again.
    const outcomes = [...(await Promise.all([ask(), ask()])), await ask()];
    for (const outcome of outcomes) assert.deepEqual(outcome.kind === 'ok' ? [outcome.outputText, outcome.usage] : outcome, ['fine', null]);
    assert.deepEqual(
      stub.calls.map((c) => [c.body.stream, c.body.stream_options !== undefined]),
      [
        [true, true],
        [true, true],
        [true, false],
        [true, false],
        [true, false],
      ],
    );
    assert.deepEqual(notices, ['the upstream refused stream_options: streamed answers are asked for without it from now on, and come without their usage']);
  }
});

test("streamed, any other 400 is the job's own: not sent again, stream_options still asked for", async (t) => {
  const { chat, stub } = await setUp(
    t,
    script({ status: 400, body: { error: { message: "Invalid value for 'temperature'", type: 'invalid_request_error', param: 'temperature' } } }, {}),
    { stream: true },
  );
  assert.equal(kindOf(await chat('q')), 'http_error');
  assert.equal(kindOf(await chat('q')), 'ok');
  assert.deepEqual(
    stub.calls.map((c) => c.body.stream_options),
    [{ include_usage: true }, { include_usage: true }],
  );
});

test('unstreamed, an answer streamed all the same (a gateway set to stream every call) is put together, not thrown away and paid for again', async (t) => {
  const events = [
    JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { role: 'assistant', content: 'streamed ' }, finish_reason: null }] }),
    JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'anyway' }, finish_reason: 'stop' }] }),
    '[DONE]',
  ];
  const sse = (type: string) => ({ raw: events.map((e) => `data: ${e}\n\n`).join(''), headers: { 'content-type': type } });
  const { chat, stub } = await setUp(t, script(sse('text/event-stream'), sse('text/plain')));
  const outcome = await chat('q');
  assert.equal(outcome.kind === 'ok' && outcome.outputText, 'streamed anyway');
  assert.equal(stub.calls[0]?.body.stream, undefined, 'it was not asked to stream');
  // Events the server does not call events are not read as such.
  assert.equal(kindOf(await chat('q')), 'bad_response');
});
