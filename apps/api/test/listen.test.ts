import assert from 'node:assert/strict';
import { test } from 'node:test';
import { once } from 'node:events';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import express from 'express';
import { ConfigError } from '@proxy/core';
import { ACCEPT_ERROR_LINE_MS, listen, listenFailure } from '../src/listen.ts';
import { sendJson } from '../src/respond.ts';
import { eventually, within } from '../../../test/helpers/index.ts';

test('an accept() error after the server listens is logged at most once a minute, with how many came, and the server goes on instead of crashing', async (t) => {
  const app = express();
  app.get('/', (_req, res) => void res.send('ok'));
  const lines: Array<{ message: string; meta: Record<string, unknown> }> = [];
  const logger = { error: (message: string, meta: Record<string, unknown>) => void lines.push({ message, meta }) } as never;
  let clock = 0;
  const { server, close } = await listen(app, { host: '127.0.0.1', port: 0 }, logger, () => clock);
  t.after(close);
  const acceptFailed = () => Object.assign(new Error('accept ENOBUFS'), { code: 'ENOBUFS', syscall: 'accept' });
  // With no listener, Node throws an 'error' event: this would end the process.
  server.emit('error', acceptFailed());
  server.emit('error', acceptFailed());
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.message, 'could not accept a connection: ENOBUFS; the server goes on');
  clock += ACCEPT_ERROR_LINE_MS;
  server.emit('error', acceptFailed());
  assert.equal(lines.length, 2);
  assert.equal(lines[1]?.meta.times_seen, 2);
  const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  assert.equal(await res.text(), 'ok');
});

test("requests and responses are made with the app's own prototypes, so Express's swap changes nothing (it made V8 drop what it had learned of them: express-objects.ts)", async (t) => {
  const app = express();
  app.set('trust proxy', false);
  // Express's own getters and methods, which come from those prototypes, answer as before.
  app.get('/x/:id', (req, res) => void res.status(201).json({ id: req.params.id, ip: req.ip, path: req.path, query: req.query, app: req.app === app }));
  const { server, close } = await listen(app, { host: '127.0.0.1', port: 0 }, { error: () => {} } as never);
  t.after(close);
  const made: string[] = [];
  server.prependListener('request', (req, res) => {
    made.push(`${Object.getPrototypeOf(req) === app.request ? "app's" : 'other'} request, ${Object.getPrototypeOf(res) === app.response ? "app's" : 'other'} response`);
  });
  const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x/7?a=1`);
  assert.equal(res.status, 201);
  assert.deepEqual(await res.json(), { id: '7', ip: '127.0.0.1', path: '/x/7', query: { a: '1' }, app: true });
  assert.deepEqual(made, ["app's request, app's response"]);
});

test("requests and responses keep V8's fast properties, as Node's own do: made otherwise, each response was a dictionary and every read of it a slow lookup", async (t) => {
  // %HasFastProperties is V8's own check; the flag lets functions compiled from here on call it.
  setFlagsFromString('--allow-natives-syntax');
  const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (o: object) => boolean;
  const seen: string[] = [];
  const app = express();
  app.get('/', (req, res) => {
    res.setHeader('X-A', '1');
    res.statusCode = 202;
    seen.push(`request ${hasFastProperties(req) ? 'fast' : 'slow'}, response ${hasFastProperties(res) ? 'fast' : 'slow'}`);
    res.end();
  });
  const { server, close } = await listen(app, { host: '127.0.0.1', port: 0 }, { error: () => {} } as never);
  t.after(close);
  for (let i = 0; i < 3; i++) assert.equal((await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)).status, 202);
  assert.deepEqual(seen, Array(3).fill('request fast, response fast'));
});

test('a start that cannot listen fails with one line naming the setting: a port taken, an address not on this machine, a port not allowed', async (t) => {
  const logger = { error: () => {} } as never;
  const first = await listen(express(), { host: '127.0.0.1', port: 0 }, logger);
  t.after(first.close);
  const port = (first.server.address() as AddressInfo).port;
  await assert.rejects(listen(express(), { host: '127.0.0.1', port }, logger), (err: Error) => {
    assert.ok(!(err instanceof ConfigError), 'a port in use frees up: a restart may succeed');
    assert.equal(err.message, `cannot listen on 127.0.0.1:${port}: another program listens there; stop it, or set PORT (or HOST) to another`);
    return true;
  });
  // 192.0.2.1 is TEST-NET-1 (RFC 5737), given to no machine.
  await assert.rejects(listen(express(), { host: '192.0.2.1', port: 0 }, logger), {
    message: 'cannot listen on 192.0.2.1:0: HOST is not an address of this machine (not yet, or not at all)',
  });
  // The tests run as root, which may bind any port; this is the error Node gives anyone else.
  const denied = Object.assign(new Error('listen EACCES: permission denied 0.0.0.0:80'), { code: 'EACCES' });
  const refused = listenFailure(denied, { host: '::', port: 80 });
  assert.ok(refused instanceof ConfigError);
  assert.equal(refused.message, 'PORT: not allowed to listen on [::]:80 (a port below 1024 needs root or CAP_NET_BIND_SERVICE); set PORT to 1024 or above');
  // What it does not know is passed on as Node said it.
  const other = Object.assign(new Error('listen EINVAL'), { code: 'EINVAL' });
  assert.equal(listenFailure(other, { host: '127.0.0.1', port: 1 }), other);
});

/** Sends `raw` on a new connection and reads until the server closes it. */
function rawExchange(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(raw));
    let got = '';
    socket.on('data', (d) => (got += d));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
  });
}

/** Status line and JSON body of a raw answer. */
function parseAnswer(raw: string): { status: string; body: unknown } {
  const [head, body] = raw.split('\r\n\r\n') as [string, string];
  assert.match(head, /content-type: application\/json/i);
  return { status: head.split('\r\n')[0] as string, body: JSON.parse(body) };
}

test('what Node refuses before any route (headers over its limit, no Host, CONNECT, not HTTP, not received in time) is answered as JSON with a code from the closed list, not an empty body', async (t) => {
  const app = express();
  app.get('/', (_req, res) => void res.send('ok'));
  const logger = { error: () => {} } as never;
  const { server, close } = await listen(app, { host: '127.0.0.1', port: 0 }, logger);
  t.after(close);
  const port = (server.address() as AddressInfo).port;

  const long = parseAnswer(await rawExchange(port, `GET /v1/requests/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`));
  assert.equal(long.status, 'HTTP/1.1 431 Request Header Fields Too Large');
  assert.deepEqual(long.body, { error: { code: 'headers_too_large', message: 'the request line and headers are over 16 KB' } });

  const hostless = parseAnswer(await rawExchange(port, 'GET / HTTP/1.1\r\n\r\n'));
  assert.equal(hostless.status, 'HTTP/1.1 400 Bad Request');
  assert.deepEqual(hostless.body, { error: { code: 'invalid_request', message: 'an HTTP/1.1 request needs a Host header' } });
  // HTTP/1.0 has no Host header to need.
  assert.match(await rawExchange(port, 'GET / HTTP/1.0\r\n\r\n'), /^HTTP\/1\.1 200 OK[\s\S]*\r\n\r\nok$/);

  const tunnel = parseAnswer(await rawExchange(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'));
  assert.equal(tunnel.status, 'HTTP/1.1 405 Method Not Allowed');
  assert.equal((tunnel.body as { error: { code: string } }).error.code, 'method_not_allowed');

  const garbage = parseAnswer(await rawExchange(port, 'NOT HTTP AT ALL\r\n\r\n'));
  assert.equal(garbage.status, 'HTTP/1.1 400 Bad Request');
  assert.deepEqual(garbage.body, { error: { code: 'invalid_request', message: 'the request is not valid HTTP/1.1' } });

  // Node checks its timeouts every 30 s; the error it emits then is sent here by hand, on a real connection.
  const client = connect(port, '127.0.0.1');
  const [serverSide] = (await once(server, 'connection')) as [Socket];
  let got = '';
  client.on('data', (d) => (got += d));
  client.write('POST /v1/requests HTTP/1.1\r\nHost: x\r\n');
  server.emit('clientError', Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), serverSide);
  await once(client, 'close');
  const late = parseAnswer(got);
  assert.equal(late.status, 'HTTP/1.1 408 Request Timeout');
  assert.equal((late.body as { error: { code: string } }).error.code, 'request_timeout');

  // The server still answers.
  assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'ok');
});

test('a client that takes nothing of an answer for the stall limit has its connection closed, the answer let go; one that takes it slowly gets it whole, and its next request is not cut', async (t) => {
  // More than the kernel's buffers on both ends of a loopback connection take (several MB each).
  const big = 'y'.repeat(16 * 1024 * 1024);
  const app = express();
  app.get('/big', (_req, res) => sendJson(res, 200, { text: big }));
  // Answered after longer than the limit: a long-poll after a large answer on the same connection.
  app.get('/late', (_req, res) => void setTimeout(() => sendJson(res, 200, { late: true }), 2500));
  const { server, close } = await listen(app, { host: '127.0.0.1', port: 0 }, { error: () => {} } as never, Date.now, { stalledAnswerMs: 1000, stalledAnswerClosingMs: 1000 });
  t.after(close);
  const port = (server.address() as AddressInfo).port;

  // Asks for the large answer and never reads it: before, the connection stayed open, the answer
  // held in memory, for as long as the client did (seen for minutes).
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const stalled = connect(port, '127.0.0.1');
  t.after(() => stalled.destroy());
  stalled.on('error', () => {});
  stalled.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
  stalled.pause();
  // The client reads nothing, so it is the server's end that tells.
  const [serverSide] = await accepted;
  await within(once(serverSide, 'close'), 6000, 'the stalled connection closing');

  // Reads at most 16 pieces (about 1 MB) at a time with 300 ms between (each pause within the limit)
  // for three times the limit, the answer still coming, then the rest at once, and asks for an
  // answer that comes after longer than the limit, on the same connection. Before, each answer went
  // out as one write, done only at its end: cut at the limit. Read slowly to its end, the megabytes
  // the kernel's buffers hold after the server's last write took longer to read than the server
  // keeps an idle connection (5 s) once this process was held up (seen when its core was shared with
  // two busy loops, all of three runs; once in the suite run four files at once): the next request
  // found the connection closed.
  const slow = connect(port, '127.0.0.1');
  t.after(() => slow.destroy());
  // Kept as the pieces came: joined at each piece, the 16 MB cost gigabytes of copying, which held
  // this process up for seconds on a loaded machine.
  const chunks: Buffer[] = [];
  let got = 0;
  let burst = 0;
  slow.on('data', (d: Buffer) => {
    chunks.push(d);
    got += d.length;
    if (++burst === 16) slow.pause();
  });
  slow.pause();
  slow.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
  const bodyLength = Buffer.byteLength(JSON.stringify({ text: big }));
  // The head comes in the first pieces.
  const headLength = () => Buffer.concat(chunks.slice(0, 4)).indexOf('\r\n\r\n');
  const whole = () => headLength() >= 0 && got - headLength() - 4 >= bodyLength;
  const began = Date.now();
  while (Date.now() - began < 3000) {
    assert.ok(!slow.destroyed, `the slow read ended with ${got} bytes`);
    burst = 0;
    slow.resume();
    await new Promise((r) => setTimeout(r, 10));
    slow.pause();
    await new Promise((r) => setTimeout(r, 300));
  }
  assert.ok(!whole(), `the whole answer came within ${Date.now() - began} ms: nothing was read slowly`);
  t.diagnostic(`read slowly for ${Date.now() - began} ms, ${got} bytes`);
  // No more pauses: the rest is read as it comes.
  burst = -Infinity;
  slow.resume();
  await eventually(async () => whole() || (slow.destroyed && assert.fail(`the read ended with ${got} bytes`)), 10_000, 10);
  const head = Buffer.concat(chunks).subarray(0, headLength()).toString();
  assert.match(head, /^HTTP\/1\.1 200 OK/);
  assert.equal(got - head.length - 4, bodyLength, 'the whole answer, read slowly');
  slow.resume();
  let rest = '';
  slow.on('data', (d) => (rest += d));
  slow.write('GET /late HTTP/1.1\r\nHost: x\r\n\r\n');
  await eventually(async () => rest.endsWith('{"late":true}') || (slow.destroyed && assert.fail('the connection was closed')), 5000, 20);
});

test('closing, an answer its client is not taking holds the stop only for the shorter limit, not the stall limit (seen: 58.7 s, past systemd’s 40 s)', async (t) => {
  const big = 'y'.repeat(16 * 1024 * 1024);
  const app = express();
  // What the access line listens for: a request cut at the end of the drain is logged before the stop ends.
  const ended: string[] = [];
  app.get('/big', (_req, res) => {
    res.once('close', () => ended.push(res.writableFinished ? 'finished' : 'cut'));
    sendJson(res, 200, { text: big });
  });
  const { server, close } = await listen(app, { host: '127.0.0.1', port: 0 }, { error: () => {} } as never, Date.now, {
    stalledAnswerMs: 60_000,
    stalledAnswerClosingMs: 500,
  });
  let closed = false;
  t.after(() => (closed ? undefined : close()));
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const stalled = connect((server.address() as AddressInfo).port, '127.0.0.1');
  t.after(() => stalled.destroy());
  stalled.on('error', () => {});
  stalled.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
  stalled.pause();
  const [serverSide] = await accepted;
  await eventually(async () => serverSide.writableLength > 0, 5000, 20);
  const began = Date.now();
  await within(close(), 10_000, 'the server closing');
  closed = true;
  t.diagnostic(`closed in ${Date.now() - began} ms`);
  assert.ok(serverSide.destroyed);
  // net.Server's own close called back before the sockets' 'close' (and so the answers'): the
  // process exited first, and the cut request had no access line.
  assert.deepEqual(ended, ['cut'], "the answer's close came before the server's");
});
