import { readFileSync } from 'node:fs';

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
