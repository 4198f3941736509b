import { closeSync, constants, fstatSync, openSync, renameSync, statSync, write, writeSync } from 'node:fs';
import { extname, join } from 'node:path';
import { Writable } from 'node:stream';

/**
 * Lines waiting for the file beyond this many characters (about as many bytes: log lines are JSON,
 * mostly ASCII) are dropped, and counted: a disk that stalls or fills must not hold the program's
 * memory.
 */
export const LOG_FILE_MAX_PENDING_CHARS = 4 * 1024 * 1024;
/** After a failed write, the file is tried again this long later; lines logged meanwhile are dropped. */
export const LOG_FILE_RETRY_MS = 1000;
/**
 * At most this often, a write first checks that the file it holds is still the one at the path.
 * Moved away by logrotate (whose `create` mode renames the file and expects a signal to reopen it)
 * or deleted to free space, it took every line until the program's own rotation at 10 MB: into a
 * file logrotate then compressed and deleted, or into one no longer on any path, its space never
 * freed. Now the path is opened again, as Python's WatchedFileHandler does.
 */
export const LOG_FILE_CHECK_MS = 1000;

/**
 * Opened without O_NONBLOCK, a named pipe at the path that no program reads holds the open, and
 * with it the process's only thread, for good: no signal handler runs, so not even a second stop
 * signal ends it. With it, that open fails (ENXIO) and is tried again like any failed open, so a
 * log shipper reading the pipe gets lines from when it starts; a regular file is written as before.
 */
const OPEN_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK;

/** What a failed open or write says on stderr and in the file. */
function reasonOf(err: NodeJS.ErrnoException): string {
  if (err.code === 'ENXIO') return 'ENXIO, a named pipe no program reads';
  return err.code ?? err.message;
}

export interface LogFileOptions {
  dir: string;
  file: string;
  /** At this size the file is rolled: x.log becomes x1.log, x1.log x2.log, and so on. */
  maxBytes: number;
  /** Files kept, the live one included. */
  keep: number;
}

/**
 * A log file under LOG_DIR, written once per event-loop turn, rotated by size (as winston's File
 * transport named them: api.log, api1.log … api4.log, the newest first).
 *
 * winston's own File transport swallows a write error (ENOSPC on a full disk, EIO) without a word,
 * and never writes the file again: its lines then pile up in memory, waiting for a drain that never
 * comes. Measured with LOG_DIR on a full 1 MB disk, proxy-api under load grew from 246 to 486 MB
 * in 40 s, and the file stayed empty after space was freed. Here a failed write drops its lines,
 * says so once on stderr, drops the lines logged until it tries again LOG_FILE_RETRY_MS later, and
 * once it can write, says how many lines were lost, on stderr and in the file. Lines waiting for a
 * slow disk are held up to LOG_FILE_MAX_PENDING_CHARS.
 */
export function createLogFile(options: LogFileOptions): Writable {
  const path = join(options.dir, options.file);
  const ext = extname(options.file);
  const base = join(options.dir, options.file.slice(0, options.file.length - ext.length));
  // The one line about a failure, and the one about the recovery: stderr, as for stdout's failure.
  const warn = (line: string) => void process.stderr.write(`${line}\n`);
  let fd: number | null = null;
  let size = 0;
  let pending: string[] = [];
  let pendingChars = 0;
  let writing = false;
  let scheduled = false;
  // The failure under way: since when lines are dropped, how many, and why.
  let failure: { reason: string; dropped: number } | null = null;
  let retry: NodeJS.Timeout | null = null;
  // A write cut short by the failure left a line unfinished: the next begins on a line of its own.
  let midLine = false;
  let ending: (() => void) | null = null;
  let ended = false;

  // When the file at the path is next compared with the one held (performance.now(): on Date.now(),
  // a clock stepped back an hour left a file moved away unnoticed for the hour).
  let nextCheck = 0;
  // A named pipe or a device (/dev/null through a link) has no size to roll at; renamed, a pipe
  // that a log shipper reads would be replaced by a file.
  let rolls = true;
  const open = () => {
    fd = openSync(path, OPEN_FLAGS, 0o666);
    const stats = fstatSync(fd);
    size = stats.size;
    rolls = stats.isFile();
    nextCheck = performance.now() + LOG_FILE_CHECK_MS;
  };

  /**
   * Whether the file held is no longer the one at the path (moved away or deleted). Its size is
   * taken again too: truncated in place (logrotate's copytruncate), it is not rolled early.
   */
  const movedAway = (held: number) => {
    nextCheck = performance.now() + LOG_FILE_CHECK_MS;
    const atPath = statSync(path, { throwIfNoEntry: false });
    const ours = fstatSync(held);
    size = ours.size;
    return atPath === undefined || atPath.ino !== ours.ino || atPath.dev !== ours.dev;
  };

  const rotate = () => {
    if (fd !== null) closeSync(fd);
    fd = null;
    for (let n = options.keep - 1; n >= 1; n--) {
      try {
        renameSync(n === 1 ? path : `${base}${n - 1}${ext}`, `${base}${n}${ext}`);
      } catch {
        // Not there yet: fewer files than kept.
      }
    }
    open();
  };

  /** The failure under way, or a new one, said once on stderr. */
  const failing = (reason: string) => {
    if (!failure) {
      failure = { reason, dropped: 0 };
      warn(`LOG_DIR: cannot write ${path} (${reason}): its lines are dropped until it can be written again`);
    }
    return failure;
  };

  const fail = (err: NodeJS.ErrnoException, lines: number) => {
    failing(reasonOf(err)).dropped += lines;
    // An open that failed is tried again; a file we hold stays open.
    retry ??= setTimeout(() => {
      retry = null;
      flush();
    }, LOG_FILE_RETRY_MS).unref();
  };

  function flush() {
    scheduled = false;
    if (writing || retry || ended) return;
    if (pending.length === 0) return void ending?.();
    try {
      if (fd === null) open();
      // A file rolls before the line that would take it past its size, not after.
      else if (rolls && size > 0 && size + Buffer.byteLength(pending[0] as string) > options.maxBytes) rotate();
      else if (performance.now() >= nextCheck && movedAway(fd)) {
        closeSync(fd);
        fd = null;
        open();
      }
    } catch (err) {
      fail(err as NodeJS.ErrnoException, dropPending());
      return;
    }
    // The lines that fit in what is left of the file (one at least); the rest go in the next write.
    let take = 0;
    let bytes = 0;
    while (take < pending.length) {
      const next = Buffer.byteLength(pending[take] as string);
      if (take > 0 && rolls && size + bytes + next > options.maxBytes) break;
      bytes += next;
      take += 1;
    }
    const batch = pending.splice(0, take);
    pendingChars -= batch.reduce((sum, line) => sum + line.length, 0);
    let text = batch.join('');
    if (failure) {
      text = `${JSON.stringify({ level: 'warn', message: `log lines dropped: ${path} could not be written (${failure.reason})`, dropped: failure.dropped, timestamp: new Date().toISOString() })}\n${text}`;
    }
    if (midLine) text = `\n${text}`;
    const buffer = Buffer.from(text);
    writing = true;
    const writeFrom = (offset: number) => {
      write(fd as number, buffer, offset, buffer.length - offset, null, (err, written) => {
        if (!err && offset + written < buffer.length) {
          size += written;
          return writeFrom(offset + written);
        }
        writing = false;
        if (err) {
          // The batch is counted as dropped, though the disk may have taken its first lines. If it
          // took part of a line, the file ends mid-line; if it took nothing, the file ends as before.
          if (offset > 0) midLine = buffer[offset - 1] !== 0x0a;
          fail(err, batch.length + dropPending());
          return;
        }
        size += written;
        midLine = false;
        if (failure) {
          warn(`LOG_DIR: writing ${path} again; ${failure.dropped} line${failure.dropped === 1 ? ' was' : 's were'} dropped`);
          failure = null;
        }
        flush();
      });
    };
    writeFrom(0);
  }

  /** Drops the lines waiting; returns how many. */
  function dropPending(): number {
    const lines = pending.length;
    pending = [];
    pendingChars = 0;
    return lines;
  }

  // What is pending when the process exits (a second stop signal) is written at once.
  process.on('exit', () => {
    if (pending.length === 0 || fd === null) return;
    try {
      writeSync(fd, pending.join(''));
    } catch {
      // The disk is full or gone: nothing left to tell.
    }
  });

  return new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _encoding, done) {
      const line = String(chunk);
      if (ended) return done();
      if (retry && failure) {
        // The file failed a moment ago: lines are dropped (and counted) until the next try, so that
        // what the disk refused does not pile up, and the try writes the freshest lines.
        failure.dropped += 1;
      } else if (pendingChars + line.length > LOG_FILE_MAX_PENDING_CHARS) {
        // The file is failing, or its writes fell far behind: the line is lost, and counted.
        failing('its writes fell behind').dropped += 1;
      } else {
        pending.push(line);
        pendingChars += line.length;
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      }
      done();
    },
    final(done) {
      // Ends once what is pending is written, or at once if the file is failing (closeLogger's own
      // timeout bounds the wait either way).
      ending = () => {
        ending = null;
        ended = true;
        if (retry) clearTimeout(retry);
        retry = null;
        if (fd !== null) closeSync(fd);
        fd = null;
        done();
      };
      if (retry || (!writing && pending.length === 0)) ending();
      else if (!writing && !scheduled) flush();
    },
  });
}
