import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { ROOT } from './index.ts';
import type { TestHooks } from './index.ts';

/** Whether a tool the check needs is here; under CI it must be (.ci/run installs it), elsewhere the test says why it skips. */
export function findTool(name: 'nginx' | 'systemd-analyze', t: { skip: (why: string) => void }): boolean {
  const found = spawnSync('sh', ['-c', `command -v ${name}`]).status === 0 || spawnSync('sh', ['-c', `test -x /usr/sbin/${name}`]).status === 0;
  if (!found) {
    if (process.env.CI) throw new Error(`${name} is missing: .ci/run installs it`);
    t.skip(`${name} is not installed here (apt-get install ${name === 'nginx' ? 'nginx-light' : 'systemd'}); CI installs it`);
  }
  return found;
}

export const NGINX = process.env.NGINX ?? 'nginx';
export const NGINX_ENV = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin` };

export interface NginxPorts {
  http: number;
  https: number;
  /** Where proxy-api listens, in place of the block's 127.0.0.1:8000. */
  api: number;
  /** Keep the block's IPv6 listen lines (on ::1): for `nginx -t`, which binds nothing; a machine may have no IPv6. */
  ipv6?: boolean;
}

/**
 * The repository's nginx server block, as an operator installs it, with only what a test must
 * change: a throwaway certificate for the placeholders, loopback ports, and the API's port. Writes
 * a whole nginx.conf around it into `dir` and returns its path.
 */
export function writeNginxConfig(dir: string, ports: NginxPorts): string {
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=proxy.example.com', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')],
    { stdio: 'ignore' },
  );
  const original = readFileSync(join(ROOT, 'scripts/deploy/nginx.conf'), 'utf8');
  const replacements: Array<[string, string]> = [
    ['/etc/ssl/certs/proxy.example.com.pem', join(dir, 'cert.pem')],
    ['/etc/ssl/private/proxy.example.com.key', join(dir, 'key.pem')],
    ['listen 80;', `listen 127.0.0.1:${ports.http};`],
    ['listen [::]:80;', ports.ipv6 ? `listen [::1]:${ports.http};` : ''],
    ['listen 443 ssl http2;', `listen 127.0.0.1:${ports.https} ssl http2;`],
    ['listen [::]:443 ssl http2;', ports.ipv6 ? `listen [::1]:${ports.https} ssl http2;` : ''],
    ['server 127.0.0.1:8000;', `server 127.0.0.1:${ports.api};`],
  ];
  let block = original;
  for (const [from, to] of replacements) {
    if (!block.includes(from)) throw new Error(`scripts/deploy/nginx.conf no longer holds ${JSON.stringify(from)}: update the test`);
    block = block.replace(from, to);
  }
  writeFileSync(join(dir, 'proxy.conf'), block);
  const conf = join(dir, 'nginx.conf');
  // As root, nginx's workers would switch to nobody, who cannot enter the test's private folder.
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${k}_temp;\n`).join('');
  writeFileSync(conf, `${user}pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n${temp}  include ${dir}/proxy.conf;\n}\n`);
  return conf;
}

/** Runs nginx in the foreground on `conf` until the test ends; resolves once its HTTPS port accepts. */
export async function startNginx(t: TestHooks, dir: string, conf: string, httpsPort: number): Promise<void> {
  const proc = spawn(NGINX, ['-p', dir, '-c', conf, '-g', 'daemon off;'], { env: NGINX_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  t.after(async () => {
    proc.kill('SIGQUIT');
    await exited;
  });
  const until = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(httpsPort, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      }).on('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > until) throw new Error(`nginx did not listen on ${httpsPort}: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
