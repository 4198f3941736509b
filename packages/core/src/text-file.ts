import { constants, readFileSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';

/**
 * The text of a settings file as its editor saved it. Windows tools save UTF-8 with a byte-order
 * mark (PowerShell 5's `Out-File -Encoding utf8`, older Notepad) or UTF-16 (PowerShell 5's
 * `Out-File` and `>` by default): read as plain UTF-8, the mark became part of the first key or
 * JSON token, and UTF-16 read as nothing at all, so a file that looked right stopped the start with
 * a line that named the wrong thing ("is not set", "is not valid JSON").
 */
export function decodeText(bytes: Buffer): string {
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return bytes.subarray(2).toString('utf16le');
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return Buffer.from(bytes.subarray(2)).swap16().toString('utf16le');
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) return bytes.subarray(3).toString('utf8');
  return bytes.toString('utf8');
}

/** readFileSync(path) decoded by decodeText. */
export function readTextFile(path: string): string {
  return decodeText(readFileSync(path));
}

/** How long a reload waits for a program to write the named pipe it reads. */
export const PIPE_WAIT_MS = 30_000;

/**
 * readTextFile off the event loop, for a file read again while the program serves. A named pipe (a
 * secrets agent's) is read without blocking, in turns, until its writer closes it: a read that
 * waits for a writer holds a thread of libuv's pool, and the process can then never exit, not even
 * by process.exit (measured: `fs.readFile` of a pipe nobody writes, then `process.exit(0)`, ran
 * until killed).
 */
export async function readTextFileLater(path: string, pipeWaitMs = PIPE_WAIT_MS): Promise<string> {
  if (!(await stat(path)).isFIFO()) return decodeText(await readFile(path));
  const pipe = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const chunks: Buffer[] = [];
    const until = Date.now() + pipeWaitMs;
    const space = Buffer.alloc(64 * 1024);
    for (;;) {
      let bytes: number;
      try {
        bytes = (await pipe.read(space, 0, space.length, null)).bytesRead;
      } catch (err) {
        // EAGAIN: a writer has the pipe open and has not written yet.
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
        bytes = -1;
      }
      if (bytes > 0) chunks.push(Buffer.from(space.subarray(0, bytes)));
      // Nothing read and no writer is a writer still to come; the end after what it wrote is the end.
      else if (bytes === 0 && chunks.length > 0) return decodeText(Buffer.concat(chunks));
      else if (Date.now() >= until) throw new Error(`no program wrote the named pipe in ${pipeWaitMs / 1000} s`);
      else await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    await pipe.close();
  }
}

/**
 * Where JSON.parse stopped and why, as " at line L, column C: <why>", from V8's "<why> in JSON at
 * position N"; empty when it gives no position. Its other messages quote the text around the fault,
 * which may hold a secret, so they are never repeated.
 */
export function jsonErrorPlace(text: string, err: unknown): string {
  const found = /^(.*) in JSON at position (\d+)/.exec(String((err as Error)?.message ?? ''));
  if (!found) return '';
  const before = text.slice(0, Number(found[2]));
  const line = before.split('\n').length;
  // V8's words of this form name JSON's own characters only; anything else (an older "Unexpected
  // token x") is left out.
  const why = found[1] as string;
  const said = /^[A-Za-z ,'{}[\]:-]+$/.test(why) && !/token/i.test(why) ? `: ${why.charAt(0).toLowerCase()}${why.slice(1)}` : '';
  return ` at line ${line}, column ${before.length - before.lastIndexOf('\n')}${said}`;
}
