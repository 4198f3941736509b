import { mkdirSync, writeSync } from 'node:fs';
import { Writable } from 'node:stream';
import winston from 'winston';

/** The logger both apps use; child loggers carry request and job ids. */
export type Logger = winston.Logger;

export interface LoggerOptions {
  level: 'error' | 'warn' | 'info' | 'debug';
  format: 'auto' | 'json' | 'text';
  /** Values that must never be written (keys, secrets); replaced by `[redacted]` wherever they appear. */
  secrets?: readonly string[];
  /** Where lines go; stdout when unset. Tests pass a stream to read what was logged. */
  stream?: Writable;
  /** Fixed fields on every line, e.g. `{ app: 'api' }`. */
  defaultMeta?: Record<string, unknown>;
  /** Also write JSON lines to `<dir>/<file>`, rotated by size. */
  dir?: string | null;
  file?: string;
}

/** Rotation of log files under LOG_DIR: at this size a file is rolled, and this many are kept. */
export const LOG_FILE_MAX_BYTES = 10 * 1024 * 1024;
export const LOG_FILES_KEPT = 5;

// Field names whose values are secret whatever they hold.
const SECRET_FIELDS = /^(authorization|x-proxy-key|proxy_key|proxy_secret|secret|secrets|api_?key|sign|password)$/i;

/** Builds the logger: JSON lines, or readable text when writing to a terminal (LOG_FORMAT=auto). */
export function createLogger(options: LoggerOptions): Logger {
  const scrubber = createScrubber((options.secrets ?? []).filter((s) => s.length >= 8));
  const target = (options.stream ?? process.stdout) as { isTTY?: boolean };
  const useJson = options.format === 'json' || (options.format === 'auto' && !target.isTTY);
  const redact = winston.format((info) => redactInfo(info, scrubber) as winston.Logform.TransformableInfo);
  const format = useJson
    ? winston.format.combine(redact(), winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        redact(),
        winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
        winston.format.printf(({ timestamp, level, message, ...meta }) => {
          const rest = Object.keys(meta).length ? ` ${JSON.stringify(meta)}` : '';
          return `${String(timestamp)} ${level.padEnd(5)} ${String(message)}${rest}`;
        }),
      );
  const transports: winston.transport[] = [new winston.transports.Stream({ stream: options.stream ?? batchedStdout() })];
  if (options.dir) {
    mkdirSync(options.dir, { recursive: true });
    transports.push(
      new winston.transports.File({
        dirname: options.dir,
        filename: options.file ?? 'proxy.log',
        maxsize: LOG_FILE_MAX_BYTES,
        maxFiles: LOG_FILES_KEPT,
        tailable: true,
        // Files are for machines: always JSON lines, whatever the terminal gets.
        format: winston.format.combine(redact(), winston.format.timestamp(), winston.format.json()),
      }),
    );
  }
  const logger = winston.createLogger({ level: options.level, format, transports, defaultMeta: options.defaultMeta ?? {} });
  return skipDisabledLevels(logger, options.level);
}

/**
 * winston runs every call through its formats (redaction, timestamp, JSON) and only then lets the
 * transports drop lines below their level: a `debug` line on the worker's hot path cost as much at
 * LOG_LEVEL=info as one that was written. Levels below the configured one become no-ops here, on
 * the instance, so child loggers (which inherit from it) skip them too. The level is fixed at start.
 */
function skipDisabledLevels(logger: Logger, level: LoggerOptions['level']): Logger {
  const levels = winston.config.npm.levels;
  const threshold = levels[level] ?? levels.info;
  for (const [name, rank] of Object.entries(levels)) {
    if (rank > (threshold as number)) {
      Object.defineProperty(logger, name, { value: function (this: Logger) { return this; }, writable: true, configurable: true });
    }
  }
  return logger;
}

let stdoutLines: Writable | null = null;

/**
 * stdout with one write per event-loop turn instead of one per line: under load the access log
 * alone cost a write(2) per request (about 6% of the API's time). Lines keep their order, and
 * what is pending at exit is written synchronously; only a SIGKILL can lose the current turn's lines.
 */
function batchedStdout(): Writable {
  if (stdoutLines) return stdoutLines;
  let pending: string[] = [];
  const flush = () => {
    const text = pending.join('');
    pending = [];
    if (text) process.stdout.write(text);
  };
  process.on('exit', () => {
    const text = pending.join('');
    pending = [];
    if (text) {
      try {
        writeSync(1, text);
      } catch {
        // stdout is gone (a closed pipe): nothing left to tell.
      }
    }
  });
  stdoutLines = new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _encoding, done) {
      if (pending.length === 0) setImmediate(flush);
      pending.push(String(chunk));
      done();
    },
  });
  return stdoutLines;
}

/** A logger that writes nothing, for tests that do not read logs. */
export function createSilentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}

type Scrub = (text: string) => string;

/**
 * One regex, built once, for everything a log line must not carry: the configured secrets, bearer
 * tokens and sk- keys that were never configured here (e.g. echoed by an upstream).
 */
function createScrubber(secrets: readonly string[]): Scrub {
  const escaped = secrets.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const pattern = new RegExp([...escaped, 'Bearer\\s+[\\x21-\\x7e]+', 'sk-[A-Za-z0-9_-]{16,}'].join('|'), 'g');
  return (text) => text.replace(pattern, (match) => (match.startsWith('Bearer') ? 'Bearer [redacted]' : match.startsWith('sk-') && !secrets.includes(match) ? 'sk-[redacted]' : '[redacted]'));
}

function redactInfo(info: Record<string | symbol, unknown>, scrub: Scrub): Record<string | symbol, unknown> {
  for (const key of Object.keys(info)) {
    info[key] = redactValue(key, info[key], scrub, 0);
  }
  return info;
}

function redactValue(key: string, value: unknown, scrub: Scrub, depth: number): unknown {
  if (SECRET_FIELDS.test(key)) return '[redacted]';
  if (typeof value === 'string') return scrub(value);
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof Error) {
    // Stacks go to the log (never to clients), scrubbed like everything else.
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: scrub(value.message), ...(code ? { code } : {}), stack: scrub(value.stack ?? '') };
  }
  if (depth < 4) {
    const out: Record<string, unknown> = Array.isArray(value) ? ([] as unknown as Record<string, unknown>) : {};
    for (const [k, v] of Object.entries(value)) out[k] = redactValue(k, v, scrub, depth + 1);
    return out;
  }
  return value;
}
