import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { ACCEPT_ERROR_LINE_MS, listen } from '../src/listen.ts';

test('an accept() error after the server listens is logged at most once a minute, with how many came, and the server goes on instead of crashing', async (t) => {
  const app = express();
  app.get('/', (_req, res) => void res.send('ok'));
  const lines: Array<{ message: string; meta: Record<string, unknown> }> = [];
  const logger = { error: (message: string, meta: Record<string, unknown>) => void lines.push({ message, meta }) } as never;
  let clock = 0;
  const { server, stop } = await listen(app, { host: '127.0.0.1', port: 0 }, logger, () => clock);
  t.after(() => {
    stop();
    server.close();
  });
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

test('a port already taken still fails the start', async (t) => {
  const logger = { error: () => {} } as never;
  const first = await listen(express(), { host: '127.0.0.1', port: 0 }, logger);
  t.after(() => {
    first.stop();
    first.server.close();
  });
  const port = (first.server.address() as AddressInfo).port;
  await assert.rejects(listen(express(), { host: '127.0.0.1', port }, logger), { code: 'EADDRINUSE' });
});
