import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { SETTINGS } from '../../packages/core/src/config.ts';
import { SERVER_TIMEOUTS } from '../../apps/api/src/app.ts';
import { nodeFlagsOf } from '../../scripts/node-flags.mjs';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { API_MAIN, ROOT, WORKER_MAIN, enqueueJob, openTestStore, tempDir, testEnv, within } from '../helpers/index.ts';
import { NGINX, NGINX_ENV, findTool, writeNginxConfig } from '../helpers/nginx.ts';

const DEPLOY = join(ROOT, 'scripts/deploy');

test('systemd-analyze verify accepts both units without a single warning', (t) => {
  if (!findTool('systemd-analyze', t)) return;
  const dir = tempDir(t);
  const units = ['proxy-api.service', 'proxy-worker.service'].map((unit) => {
    copyFileSync(join(DEPLOY, unit), join(dir, unit));
    return join(dir, unit);
  });
  const result = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8' });
  const ours = `${result.stdout}${result.stderr}`.split('\n').filter((l) => l.includes(dir));
  assert.equal(result.status, 0, result.stderr);
  assert.deepEqual(ours, [], 'systemd ignores settings it cannot parse, with only a warning');
});

test('the units are hardened, stop with SIGTERM, and give the worker longer than its grace period', () => {
  for (const unit of ['proxy-api.service', 'proxy-worker.service']) {
    const text = readFileSync(join(DEPLOY, unit), 'utf8');
    for (const line of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'PrivateTmp=yes', 'Restart=on-failure', 'KillSignal=SIGTERM']) {
      assert.ok(text.includes(`\n${line}\n`), `${unit} lacks ${line}`);
    }
    // A bad setting (78) is not restarted, nor a mistake in the command line (64).
    const prevent = /\nRestartPreventExitStatus=([\d ]+)\n/.exec(text)?.[1]?.split(' ');
    assert.deepEqual(prevent, ['64', '78'], unit);
    assert.match(text, /\nReadWritePaths=\S*data \S*log/);
  }
  const worker = readFileSync(join(DEPLOY, 'proxy-worker.service'), 'utf8');
  const stopSeconds = Number(/\nTimeoutStopSec=(\d+)\n/.exec(worker)?.[1]);
  assert.ok(stopSeconds > Number(SETTINGS.SHUTDOWN_GRACE_SECONDS.default), `TimeoutStopSec=${stopSeconds} must exceed the default grace`);
  assert.match(readFileSync(join(DEPLOY, 'proxy-api.service'), 'utf8'), /\nExecReload=\/bin\/kill -HUP \$MAINPID\n/);
});

test('each unit starts node with the flags on the first line of its entry file, and so does npm start', () => {
  for (const [unit, entry] of [
    ['proxy-api.service', API_MAIN],
    ['proxy-worker.service', WORKER_MAIN],
  ] as const) {
    const execStart = /\nExecStart=\/usr\/bin\/node ((?:--\S+ )*)\/opt\/chat-async-proxy\/(\S+)/.exec(readFileSync(join(DEPLOY, unit), 'utf8'));
    assert.ok(execStart, `${unit} starts node on an entry file`);
    assert.equal(execStart[2], relative(ROOT, entry));
    assert.deepEqual(execStart[1]?.trim().split(' ').filter(Boolean), nodeFlagsOf(entry), `${unit} passes the flags of ${execStart[2]}`);
  }
  assert.deepEqual(nodeFlagsOf(API_MAIN), ['--max-semi-space-size=4']);
  assert.deepEqual(nodeFlagsOf(WORKER_MAIN), ['--max-semi-space-size=4']);
  assert.match(readFileSync(join(ROOT, 'scripts/start.mjs'), 'utf8'), /\.\.\.nodeFlagsOf\(resolve\(root, 'apps\/api\/dist\/main\.js'\)\)/);
});

test('nginx -t accepts the server block (with throwaway certificates in place of the placeholders)', (t) => {
  if (!findTool('nginx', t)) return;
  const dir = tempDir(t);
  const conf = writeNginxConfig(dir, { http: 18080, https: 18443, api: 8000, ipv6: true });
  const result = spawnSync(NGINX, ['-t', '-p', dir, '-c', conf], { encoding: 'utf8', env: NGINX_ENV });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stderr, /test is successful/);
});

test('nginx matches the API: body size equals BODY_LIMIT, X-Forwarded-For is overwritten, reads outlast a 60 s long-poll, idle connections are dropped by nginx first', () => {
  const conf = readFileSync(join(DEPLOY, 'nginx.conf'), 'utf8');
  assert.equal(SETTINGS.BODY_LIMIT.default, '1mb');
  assert.match(conf, /client_max_body_size 1m;/);
  assert.match(conf, /proxy_set_header X-Forwarded-For \$remote_addr;/);
  assert.ok(Number(/proxy_read_timeout (\d+)s;/.exec(conf)?.[1]) > 60);
  // nginx must close an idle upstream connection before proxy-api does (see the block's comment).
  const upstream = /upstream chat_async_proxy \{[^}]*\}/.exec(conf)?.[0] ?? '';
  const nginxIdleSeconds = Number(/keepalive_timeout (\d+)s;/.exec(upstream)?.[1]);
  assert.ok(nginxIdleSeconds * 1000 < SERVER_TIMEOUTS.keepAliveMs, `nginx keeps idle API connections ${nginxIdleSeconds} s, the API ${SERVER_TIMEOUTS.keepAliveMs} ms`);
});

test('the crontab line is five time fields and a worker command that cannot run forever', () => {
  const lines = readFileSync(join(DEPLOY, 'crontab'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'));
  assert.equal(lines.length, 1);
  const fields = lines[0]!.split(/\s+/);
  for (const field of fields.slice(0, 5)) assert.match(field, /^(\*|\d+)(\/\d+)?$/);
  assert.match(lines[0]!, /main\.js once --max-seconds \d+/);
  // cron starts the file with node, as the unit does: the same flags, after Node's --env-file.
  const flags = /\/usr\/bin\/node --env-file=\S+ ((?:--\S+ )*)apps\/worker\/dist\/main\.js /.exec(lines[0]!);
  assert.ok(flags, lines[0]);
  assert.deepEqual(flags[1]?.trim().split(' ').filter(Boolean), nodeFlagsOf(WORKER_MAIN), 'the crontab line passes the flags of the worker entry file');
});

test("the crontab line runs: in the units' folder, with their settings file, it processes what is due and logs where it says", async (t) => {
  // Its settings had come from a .env in that folder, where README puts them in the units' file:
  // a worker run so from cron found no upstream key and stopped each minute.
  const [line] = readFileSync(join(DEPLOY, 'crontab'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'));
  const unit = readFileSync(join(DEPLOY, 'proxy-worker.service'), 'utf8');
  const setting = (name: string) => new RegExp(`^${name}=-?(\\S+)$`, 'm').exec(unit)?.[1] as string;
  const command = (line as string).split(/\s+/).slice(5).join(' ');
  assert.ok(command.startsWith(`cd ${setting('WorkingDirectory')} && /usr/bin/node --env-file=${setting('EnvironmentFile')} `), command);

  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const env = testEnv(dir, { OPENAI_API_KEY: 'sk-cron', OPENAI_BASE_URL: stub.url });
  const store = await openTestStore(env);
  t.after(() => store.close());
  const id = await enqueueJob(store, 'from cron');
  writeFileSync(
    join(dir, 'env'),
    Object.entries(env)
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
      .join('\n'),
  );
  const log = join(dir, 'log');
  mkdirSync(log);
  // The line as cron runs it (sh -c), its paths moved to this checkout and this test's folder, and
  // with nothing of the test's environment: only what the settings file holds.
  const run = command
    .replace(setting('WorkingDirectory'), ROOT)
    .replace('/usr/bin/node', process.execPath)
    .replace(setting('EnvironmentFile'), join(dir, 'env'))
    .replace('/var/log/chat-async-proxy', log);
  // Not spawnSync: the stub answers from this process's event loop.
  const child = spawn('sh', ['-c', run], { env: { PATH: process.env.PATH ?? '' }, stdio: 'ignore' });
  const status = await within(new Promise<number | null>((resolve) => child.on('close', resolve)), 60_000, 'the cron line');
  assert.equal(status, 0, readFileSync(join(log, 'worker-cron.log'), 'utf8'));
  assert.equal((await store.getJob(id))?.outputText, 'echo: from cron');
  assert.match(readFileSync(join(log, 'worker-cron.log'), 'utf8'), /job completed/);
});
