/** Child processes for the benchmarks: each server runs in its own process, its output to a file. */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface Proc {
  child: ChildProcess;
  /** Whether it has not exited, nor been killed by a signal. */
  running(): boolean;
  /** Resident memory now (VmRSS), in MB. */
  rssMb(): number;
  /** Peak resident memory so far (VmHWM), in MB. */
  peakRssMb(): number;
  stop(): Promise<void>;
}

// A process killed by a signal has no exit code, only its signal.
const isRunning = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

/** A figure of /proc/PID/status in kB (VmRSS, VmHWM), in MB. */
function statusMb(pid: number | undefined, field: string): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** A free loopback port (the OS picks it; the server then binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts `node args…` with `env`, stdout and stderr to `logFile`, and resolves once `ready()` is true.
 * `wrapper` runs node under another program (`valgrind --tool=callgrind …`), which starts slower.
 */
export async function start(args: string[], env: Record<string, string>, logFile: string, ready: () => Promise<boolean>, wrapper: string[] = []): Promise<Proc> {
  const log = openSync(logFile, 'a');
  const [command, ...before] = [...wrapper, process.execPath];
  const child = spawn(command as string, [...before, ...args], { env, stdio: ['ignore', log, log] });
  const until = Date.now() + (wrapper.length > 0 ? 120_000 : 20_000);
  while (!(await ready().catch(() => false))) {
    if (!isRunning(child)) throw new Error(`${args.join(' ')} exited: see ${logFile}`);
    if (Date.now() > until) throw new Error(`${args.join(' ')} did not start: see ${logFile}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    running: () => isRunning(child),
    rssMb: () => statusMb(child.pid, 'VmRSS'),
    peakRssMb: () => statusMb(child.pid, 'VmHWM'),
    stop: () =>
      new Promise((resolve) => {
        if (!isRunning(child)) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
      }),
  };
}

/**
 * The settings the bench, the profiler and the soak start proxy-api with (a worker takes them too):
 * its client key, file and port, and the limiter on every request with budgets too large to bind.
 */
export function apiEnv(options: { key: string; secret: string; dbPath: string; port: number }): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    PROXY_KEY: options.key,
    PROXY_SECRET: options.secret,
    PROXY_DB_PATH: options.dbPath,
    PORT: String(options.port),
    RATE_LIMIT_PER_IP: '999999999/s',
    RATE_LIMIT_PER_KEY: '999999999/s',
    RATE_LIMIT_READS_PER_IP: '999999999/s',
    LOG_FORMAT: 'json',
  };
}

/** CPU seconds a process has used so far: in all (user + system), and the system (kernel) part. */
export function cpuSeconds(pid: number): { total: number; kernel: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  const [user, kernel] = [Number(fields[11]) / 100, Number(fields[12]) / 100];
  return { total: user + kernel, kernel };
}

/** True once something answers HTTP at `url`. */
export function answers(url: string): () => Promise<boolean> {
  return async () => (await fetch(url)).status > 0;
}

export const logPath = (dir: string, name: string) => join(dir, `${name}.log`);
