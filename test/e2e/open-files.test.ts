import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { eventually, getJson, newCredentials, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';

test('proxy-api at its open-file limit: one line says so (libuv drops the connections past it without a word), and it serves again once they close', async (t) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const api = await startApiProcess(t, testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret }), dir, { openFiles: 80 });
  const port = Number(new URL(api.url).port);
  const sockets: Socket[] = [];
  t.after(() => sockets.forEach((s) => s.destroy()));
  let dropped = 0;
  for (let i = 0; i < 150; i++) {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.on('close', () => (dropped += 1));
    sockets.push(socket);
  }
  const said = () => api.child.lines.filter((l) => l.includes('files this process may open are open'));
  await eventually(async () => said().length === 1 && dropped > 0, 5000);
  const line = JSON.parse(said()[0] as string) as { level: string; message: string; open_files_limit: number };
  assert.equal(line.level, 'error');
  assert.equal(line.open_files_limit, 80);
  assert.match(line.message, /new connections are closed unanswered.*LimitNOFILE/);
  t.diagnostic(`${dropped} of 150 connections dropped`);

  sockets.forEach((s) => s.destroy());
  await eventually(async () => (await getJson(api.url, '/health').catch(() => ({ status: 0 }))).status === 200, 5000);
  // Said once a minute at most, however long it lasts.
  assert.equal(said().length, 1);
  assert.equal(api.child.proc.exitCode, null);
});
