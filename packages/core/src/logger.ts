import { existsSync, writeSync } from 'node:fs';
import { EOL } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { LOG_FILE_MAX_PENDING_CHARS, createLogFile } from './log-file.js';
import { makeFolder, whyNotWritable } from './writable.js';
import { printable } from './unicode.js';

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
  const scrub = createScrubber((options.secrets ?? []).filter((s) => s.length >= 8));
  const target = (options.stream ?? process.stdout) as { isTTY?: boolean };
  const useJson = options.format === 'json' || (options.format === 'auto' && !target.isTTY);
  const jsonLines = jsonLine(scrub);
  const format = useJson ? jsonLines : textLine(scrub);
  const defaultMeta = options.defaultMeta ?? {};
  const out = options.stream ?? batchedStdout((message, fields) => formattedLine(format, defaultMeta, 'warn', message, fields));
  const transports: winston.transport[] = [new winston.transports.Stream({ stream: out })];
  const files: LogFileTransport[] = [];
  if (options.dir) {
    const file = options.file ?? 'proxy.log';
    assertLogDirWritable(options.dir, file);
    const stream = createLogFile({ dir: options.dir, file, maxBytes: LOG_FILE_MAX_BYTES, keep: LOG_FILES_KEPT });
    // Files are for machines: always JSON lines, whatever the terminal gets. When stdout gets JSON
    // too, the logger's line is already that line, and is not formatted a second time (measured
    // in-process, the access line, three alternating pairs: 6.7-8.5 µs of CPU a line against 8.5-10.0).
    const transport = new winston.transports.Stream({ stream, ...(useJson ? {} : { format: jsonLines }) });
    transports.push(transport);
    files.push({ transport, stream });
  }
  const logger = winston.createLogger({ level: options.level, format, transports, defaultMeta });
  made.set(logger, {
    files,
    // One JSON line for every stream: what lineWriter can write itself. Text for a terminal and JSON
    // for files are two formats, which winston's transports apply; lineWriter then goes through it.
    direct: useJson ? { format: jsonLines, streams: [out, ...files.map((f) => f.stream)], defaultMeta, level: options.level } : null,
    closed: false,
  });
  return skipDisabledLevels(logger, options.level);
}

/** A log file's transport, and the stream under it that closeLogger ends. */
interface LogFileTransport {
  transport: winston.transport;
  stream: Writable;
}

/** What createLogger keeps of each logger it made. */
interface Made {
  /** Its log files, which closeLogger ends. */
  files: LogFileTransport[];
  /** Its one format and the streams its transports write to, when every stream gets JSON lines. */
  direct: { format: winston.Logform.Format; streams: Writable[]; defaultMeta: Record<string, unknown>; level: LoggerOptions['level'] } | null;
  /** Set by closeLogger once lines are dropped. */
  closed: boolean;
}
const made = new WeakMap<Logger, Made>();

type Level = LoggerOptions['level'];

/**
 * A writer of one kind of line that is written very often (the API's access line, one a request):
 * `write(fields)` writes what `logger[level](message, fields)` writes, the same bytes to the same
 * streams in the same order, without winston's stream pipeline: a Transform, a Writable for each
 * transport, a setImmediate for each transport and line (its 'logged' event, which nothing here
 * listens to), and the message scanned for printf tokens. winston hands lines on synchronously (a
 * test holds the order with its own lines), so the two paths interleave as written. Counted
 * (callgrind, the API's main thread, a lookup): 273,384 instructions against 277,235 through winston.
 * For a logger createLogger did not make, one writing text to a terminal (two formats), or fields
 * that winston treats apart (`message`, `stack`, `cause`), it is winston's own call.
 */
export function lineWriter(logger: Logger, level: Level, message: string): (fields: Record<string, unknown>) => void {
  const mine = made.get(logger);
  const direct = mine?.direct;
  const viaWinston = (fields: Record<string, unknown>) => void logger[level](message, fields);
  if (!mine || !direct || message.includes('%')) return viaWinston;
  const levels = winston.config.npm.levels;
  // Below the logger's level nothing is written (see skipDisabledLevels).
  if ((levels[level] as number) > (levels[direct.level] as number)) return () => {};
  const { format, streams, defaultMeta } = direct;
  return (fields) => {
    if (fields.message || fields.stack || fields.cause) return viaWinston(fields);
    if (mine.closed) return;
    const line = formattedLine(format, defaultMeta, level, message, fields);
    for (const stream of streams) stream.write(line);
  };
}

/** The line logger[level](message, fields) writes: the info object winston makes, through its format. */
function formattedLine(format: winston.Logform.Format, defaultMeta: Record<string, unknown>, level: Level, message: string, fields: Record<string, unknown>): string {
  const info = Object.assign({}, defaultMeta, fields, { [LEVEL]: level, level, message });
  return `${(format.transform(info, {}) as Record<symbol, string>)[MESSAGE]}${EOL}`;
}

/** A log file the program cannot open at all would lose every line (said once on stderr): refused at start instead. */
function assertLogDirWritable(dir: string, file: string): void {
  try {
    makeFolder(dir);
  } catch (err) {
    throw new Error(`LOG_DIR: ${(err as Error).message}`);
  }
  const path = join(dir, file);
  for (const [what, refused] of [
    [`the folder ${dir}`, whyNotWritable(dir)],
    [path, existsSync(path) ? whyNotWritable(path) : null],
  ] as const) {
    if (refused) throw new Error(`LOG_DIR: this user (uid ${process.getuid?.() ?? '?'}) cannot write ${what} (${refused})`);
  }
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
      Object.defineProperty(logger, name, {
        value: function (this: Logger) {
          return this;
        },
        writable: true,
        configurable: true,
      });
    }
  }
  return logger;
}

let stdoutLines: Writable | null = null;

/**
 * Lines waiting for stdout beyond this many characters are dropped, and counted: a log file's bound.
 * stdout to a pipe or socket (journald's, a `| tee`) is written as the reader takes it, and Node
 * keeps what it has not taken in memory, without bound: with the reader stopped, 486,000 requests
 * in 20 s grew proxy-api from 92 to 205 MB, and on until the kernel kills it.
 */
export const STDOUT_MAX_PENDING_CHARS = LOG_FILE_MAX_PENDING_CHARS;

/**
 * stdout with one write per event-loop turn instead of one per line: under load the access log
 * alone cost a write(2) per request (about 6% of the API's time). Lines keep their order, and
 * what is pending at exit is written synchronously; only a SIGKILL can lose the current turn's lines.
 * The line that counts dropped lines is the first logger's `warn` line (`warnLine`).
 */
function batchedStdout(warnLine: (message: string, fields: Record<string, unknown>) => string): Writable {
  if (stdoutLines) return stdoutLines;
  let pending: string[] = [];
  // stdout can go away under a running program: its terminal closed (every write then fails with
  // EIO), or the program reading a pipe ended (EPIPE). The stream reports that as an 'error' event,
  // which unhandled ends the process at once: under `npm start` in a closed terminal, both programs
  // died in the middle of the drain the hang-up began, the worker's calls cut off. The work matters
  // more than lines nobody can read, so from then on they are dropped (LOG_DIR's files still get
  // them), after one line on stderr, which may still reach someone (journald, a `2>` file).
  // stderr's own errors are ignored the same way: Node's warnings go there.
  let lost = false;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (lost) return;
    lost = true;
    process.stderr.write(`stdout is gone (${err.code ?? err.message}): log lines are no longer written to it\n`);
  });
  process.stderr.on('error', () => {});
  // Lines dropped while stdout's reader is behind by STDOUT_MAX_PENDING_CHARS, until it has taken
  // everything ('drain'); null while none are.
  let dropped: { lines: number; drained: boolean } | null = null;
  const flush = () => {
    const text = pending.join('');
    const lines = pending.length;
    pending = [];
    if (!text || lost) return;
    if (dropped?.drained) {
      process.stdout.write(warnLine('log lines dropped: stdout was not read', { dropped: dropped.lines }));
      dropped = null;
    }
    // So far behind, the stream is far over its high-water mark: 'drain' comes once all is taken.
    if (dropped || (process.stdout.writableLength > STDOUT_MAX_PENDING_CHARS && process.stdout.writableNeedDrain)) {
      if (!dropped) {
        const now = { lines: 0, drained: false };
        dropped = now;
        process.stderr.write("stdout is not read: log lines are dropped until it is (LOG_DIR's files keep them)\n");
        process.stdout.once('drain', () => (now.drained = true));
      }
      dropped.lines += lines;
      return;
    }
    process.stdout.write(text);
  };
  process.on('exit', () => {
    const text = pending.join('');
    pending = [];
    if (text && !lost && !dropped) {
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

/** How long a stopping process waits for its log files before it exits anyway. */
export const LOG_CLOSE_TIMEOUT_MS = 2000;

/**
 * Ends the logger and resolves once its log files (LOG_DIR) hold every line written to it, or after
 * `timeoutMs`. A log file is written on the thread pool, so a process.exit() right after the last
 * lines loses them (measured with winston's File transport: 2,001 lines logged just before exit,
 * none in the file). stdout needs no wait (see batchedStdout). Lines logged after this are dropped.
 */
export function closeLogger(logger: Logger, timeoutMs = LOG_CLOSE_TIMEOUT_MS): Promise<void> {
  const mine = made.get(logger);
  const files = mine?.files ?? [];
  if (!mine || files.length === 0) return Promise.resolve();
  mine.closed = true;
  return new Promise((resolve) => {
    let left = files.length;
    const timer = setTimeout(resolve, timeoutMs);
    const closed = () => {
      left -= 1;
      if (left > 0) return;
      clearTimeout(timer);
      resolve();
    };
    // The transport has passed on every line once it finishes; the file stream then writes them.
    for (const { transport, stream } of files) {
      transport.once('finish', () => {
        stream.once('finish', closed);
        stream.end();
      });
    }
    logger.end();
    // A line logged after this (a late timer's) is dropped: written, it would fail the stream
    // ("write after end") and crash the stopping process. Children write through this too.
    logger.write = (() => true) as Logger['write'];
  });
}

/** A logger that writes nothing, for tests that do not read logs. */
export function createSilentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}

type Scrub = (text: string) => string;
const MESSAGE = Symbol.for('message');
const LEVEL = Symbol.for('level');

/**
 * One format that does what redact → timestamp → json did as three, in one pass: fields named like
 * secrets are replaced, the line is serialized with JSON.stringify, and the finished line is
 * scrubbed once (rather than every string field on its own). Measured in-process on the access
 * line: 5 µs against 8 µs for the three formats (safe-stable-stringify sorted keys through a
 * replacer; the scrubbing regex ran once per field).
 */
function jsonLine(scrub: Scrub): winston.Logform.Format {
  return winston.format((info) => {
    let text = flatLine(info);
    if (text === null) {
      const line = redactFields(info);
      line.timestamp = isoNow();
      text = serialize(line);
    }
    (info as unknown as Record<symbol, string>)[MESSAGE] = scrub(text);
    return info;
  })();
}

/**
 * The JSON line of an info with only plain values (no object, array or BigInt), no field named like a
 * secret and no timestamp of its own: most lines, the access line among them. Redaction would copy
 * it unchanged, so it is serialized as it is (winston's symbol-keyed fields are left out by
 * JSON.stringify, as by the copy) and the timestamp put last, where the copy put it: the same text
 * without the copy. Null for any other info.
 */
function flatLine(info: Record<string | symbol, unknown>): string | null {
  const keys = Object.keys(info);
  if (keys.length === 0) return null;
  for (const key of keys) {
    const value = info[key];
    if ((typeof value === 'object' && value !== null) || typeof value === 'bigint' || key === 'timestamp' || isSecretField(key)) return null;
  }
  const json = JSON.stringify(info);
  return `${json.slice(0, -1)},"timestamp":"${isoNow()}"}`;
}

/** `HH:mm:ss.SSS level message {fields}`, for a terminal: its control characters written out (printable). */
function textLine(scrub: Scrub): winston.Logform.Format {
  return winston.format((info) => {
    const { level, message, ...fields } = redactFields(info);
    const rest = Object.keys(fields).length ? ` ${serialize(fields)}` : '';
    const time = isoNow().slice(11, 23);
    (info as unknown as Record<symbol, string>)[MESSAGE] = scrub(printable(`${time} ${String(level).padEnd(5)} ${String(message)}${rest}`));
    return info;
  })();
}

let isoSecond = NaN;
let isoPrefix = '';

/**
 * `new Date().toISOString()`, made from the current second's text: V8 formats a Date with printf
 * (about 0.45 µs a line in-process), and all but the milliseconds change once a second.
 */
function isoNow(): string {
  const ms = Date.now();
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    // Up to the milliseconds: "2026-12-05T13:02:30." (longer for years past 9999).
    isoPrefix = new Date(second * 1000).toISOString().slice(0, -4);
  }
  const fraction = ms - second * 1000;
  return `${isoPrefix}${fraction < 10 ? '00' : fraction < 100 ? '0' : ''}${fraction}Z`;
}

/** JSON.stringify, or for what it cannot take (a cycle, a BigInt) a slower pass that can. */
function serialize(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    const seen = new WeakSet<object>();
    return JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (v && typeof v === 'object') {
        if (seen.has(v)) return '[circular]';
        seen.add(v);
      }
      return v;
    });
  }
}

/**
 * One regex, built once, for everything a log line must not carry: the configured secrets (as
 * written, and as they read inside a JSON string), bearer tokens and sk- keys that were never
 * configured here (e.g. echoed by an upstream). It runs over the finished line, so a token ends
 * at whitespace, a quote or a backslash: the end of its JSON string.
 */
function createScrubber(secrets: readonly string[]): Scrub {
  const forms = [...new Set(secrets.flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]))];
  const escaped = forms.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const pattern = new RegExp([...escaped, 'Bearer\\s+[^\\s"\\\\]+', 'sk-[A-Za-z0-9_-]{16,}'].join('|'), 'g');
  return (text) =>
    text.replace(pattern, (match) => (match.startsWith('Bearer') ? 'Bearer [redacted]' : match.startsWith('sk-') && !forms.includes(match) ? 'sk-[redacted]' : '[redacted]'));
}

// What SECRET_FIELDS answered for the field names met so far: a line's names repeat from line to
// line, and a Map lookup costs less than running the regex. Bounded, as nested values bring any names.
const secretField = new Map<string, boolean>();
const SECRET_FIELD_NAMES_KEPT = 1000;

function isSecretField(key: string): boolean {
  let secret = secretField.get(key);
  if (secret === undefined) {
    secret = SECRET_FIELDS.test(key);
    if (secretField.size < SECRET_FIELD_NAMES_KEPT) secretField.set(key, secret);
  }
  return secret;
}

/** A copy of the line's fields with secret-named ones replaced and errors made plain (stacks included: logs only). */
function redactFields(info: Record<string | symbol, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(info)) out[key] = redactValue(key, info[key], 0);
  return out;
}

function redactValue(key: string, value: unknown, depth: number): unknown {
  if (isSecretField(key)) return '[redacted]';
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(code ? { code } : {}), stack: value.stack ?? '' };
  }
  if (depth < 4) {
    const out: Record<string, unknown> = Array.isArray(value) ? ([] as unknown as Record<string, unknown>) : {};
    for (const [k, v] of Object.entries(value)) out[k] = redactValue(k, v, depth + 1);
    return out;
  }
  return value;
}
