import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { SETTINGS } from '../../packages/core/src/config.ts';
import { nodeFlagsOf } from '../../scripts/node-flags.mjs';
import { API_MAIN, ROOT, WORKER_MAIN, tempDir } from '../helpers/index.ts';

const DEPLOY = join(ROOT, 'scripts/deploy');

/** A tool the check needs: under CI it must be there (.ci/run installs it); elsewhere the test says why it skips. */
function tool(name: string, t: { skip: (why: string) => void }): boolean {
  const found = spawnSync('sh', ['-c', `command -v ${name}`]).status === 0 || spawnSync('sh', ['-c', `test -x /usr/sbin/${name}`]).status === 0;
  if (!found) {
    if (process.env.CI) throw new Error(`${name} is missing: .ci/run installs it`);
    t.skip(`${name} is not installed here (apt-get install ${name === 'nginx' ? 'nginx-light' : 'systemd'}); CI installs it`);
  }
  return found;
}

test('systemd-analyze verify accepts both units without a single warning', (t) => {
  if (!tool('systemd-analyze', t)) return;
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
    for (const line of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'PrivateTmp=yes', 'Restart=on-failure', 'KillSignal=SIGTERM', 'RestartPreventExitStatus=78']) {
      assert.ok(text.includes(`\n${line}\n`), `${unit} lacks ${line}`);
    }
    assert.match(text, /\nReadWritePaths=\S*data \S*log/);
  }
  const worker = readFileSync(join(DEPLOY, 'proxy-worker.service'), 'utf8');
  const stopSeconds = Number(/\nTimeoutStopSec=(\d+)\n/.exec(worker)?.[1]);
  assert.ok(stopSeconds > Number(SETTINGS.SHUTDOWN_GRACE_SECONDS.default), `TimeoutStopSec=${stopSeconds} must exceed the default grace`);
  assert.match(readFileSync(join(DEPLOY, 'proxy-api.service'), 'utf8'), /\nExecReload=\/bin\/kill -HUP \$MAINPID\n/);
});

test('each unit starts node with the flags on the first line of its entry file, and so does npm start', () => {
  for (const [unit, entry] of [['proxy-api.service', API_MAIN], ['proxy-worker.service', WORKER_MAIN]] as const) {
    const execStart = /\nExecStart=\/usr\/bin\/node ((?:--\S+ )*)\/opt\/chat-async-proxy\/(\S+)/.exec(readFileSync(join(DEPLOY, unit), 'utf8'));
    assert.ok(execStart, `${unit} starts node on an entry file`);
    assert.equal(execStart[2], relative(ROOT, entry));
    assert.deepEqual(execStart[1]?.trim().split(' ').filter(Boolean), nodeFlagsOf(entry), `${unit} passes the flags of ${execStart[2]}`);
  }
  assert.deepEqual(nodeFlagsOf(API_MAIN), ['--max-semi-space-size=4']);
  assert.match(readFileSync(join(ROOT, 'scripts/start.mjs'), 'utf8'), /\.\.\.nodeFlagsOf\(resolve\(root, 'apps\/api\/dist\/main\.js'\)\)/);
});

test('nginx -t accepts the server block (with throwaway certificates in place of the placeholders)', (t) => {
  if (!tool('nginx', t)) return;
  const dir = tempDir(t);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=proxy.example.com', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  const block = readFileSync(join(DEPLOY, 'nginx.conf'), 'utf8')
    .replace('/etc/ssl/certs/proxy.example.com.pem', join(dir, 'cert.pem'))
    .replace('/etc/ssl/private/proxy.example.com.key', join(dir, 'key.pem'))
    .replace('listen 80;', 'listen 127.0.0.1:18080;')
    .replace('listen [::]:80;', 'listen [::1]:18080;')
    .replace('listen 443 ssl http2;', 'listen 127.0.0.1:18443 ssl http2;')
    .replace('listen [::]:443 ssl http2;', 'listen [::1]:18443 ssl http2;');
  writeFileSync(join(dir, 'proxy.conf'), block);
  writeFileSync(
    join(dir, 'nginx.conf'),
    `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path ${dir};\n  include ${dir}/proxy.conf;\n}\n`,
  );
  const result = spawnSync(process.env.NGINX ?? 'nginx', ['-t', '-p', dir, '-c', join(dir, 'nginx.conf')], { encoding: 'utf8', env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin` } });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stderr, /test is successful/);
});

test('nginx matches the API: body size equals BODY_LIMIT, X-Forwarded-For is overwritten, reads outlast a 60 s long-poll', () => {
  const conf = readFileSync(join(DEPLOY, 'nginx.conf'), 'utf8');
  assert.equal(SETTINGS.BODY_LIMIT.default, '1mb');
  assert.match(conf, /client_max_body_size 1m;/);
  assert.match(conf, /proxy_set_header X-Forwarded-For \$remote_addr;/);
  assert.ok(Number(/proxy_read_timeout (\d+)s;/.exec(conf)?.[1]) > 60);
});

test('the crontab line is five time fields and a worker command that cannot run forever', () => {
  const lines = readFileSync(join(DEPLOY, 'crontab'), 'utf8').split('\n').filter((l) => l.trim() && !l.startsWith('#'));
  assert.equal(lines.length, 1);
  const fields = lines[0]!.split(/\s+/);
  for (const field of fields.slice(0, 5)) assert.match(field, /^(\*|\d+)(\/\d+)?$/);
  assert.match(lines[0]!, /main\.js once --max-seconds \d+/);
});
