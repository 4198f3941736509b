import { readFileSync, statSync } from 'node:fs';

/** What a password file's line is matched against: a connection's parts, as the URL gives them. */
export interface PasswordFileTarget {
  host: string;
  port: string;
  database: string;
  user: string;
}

/**
 * The socket folders libpq is built to use by default (PostgreSQL's own, Debian's and Red Hat's):
 * a connection through one of them is matched as `localhost`, as libpq matches its own default.
 */
const DEFAULT_SOCKET_FOLDERS = ['/tmp', '/var/run/postgresql', '/run/postgresql'];

/**
 * The password libpq's password file (`~/.pgpass`, PGPASSFILE, or the URL's `passfile`) gives a
 * connection, read at start, or a line to say at start when the file is left unread; nothing when
 * the file does not exist or no line matches. libpq's rules: a file that others may read or write
 * (on Unix) is not read; lines are `host:port:database:user:password`, `#` starting a comment;
 * `*` matches anything in the first four fields; `\` escapes `:` and `\`; the first line that
 * matches wins. pg read the file itself at each connection, and at each start said that it will
 * not from pg 9, in two lines of a DeprecationWarning on stderr.
 */
export function readPasswordFile(file: string, target: PasswordFileTarget): { password?: string; note?: string } {
  if (target.database === '' || target.user === '') return {};
  let mode: number;
  let regular: boolean;
  try {
    const stat = statSync(file);
    mode = stat.mode;
    regular = stat.isFile();
  } catch {
    return {};
  }
  if (process.platform !== 'win32') {
    if (!regular) return { note: `password file ${file} is not a plain file, and is not read` };
    if (mode & 0o077) return { note: `password file ${file} has group or world access, and is not read: permissions should be u=rw (0600) or less, as libpq has them` };
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { note: `password file ${file} cannot be read: ${(err as NodeJS.ErrnoException).code}` };
  }
  const host = target.host === '' || DEFAULT_SOCKET_FOLDERS.includes(target.host.replace(/\/+$/, '')) ? 'localhost' : target.host;
  const wanted = [host, target.port === '' ? '5432' : target.port, target.database, target.user];
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const password = matchLine(line.replace(/\r$/, ''), wanted);
    if (password !== undefined) return { password };
  }
  return {};
}

/** The password a line gives when its first four fields match `wanted`, as libpq's pwdfMatchesString reads them. */
function matchLine(line: string, wanted: readonly string[]): string | undefined {
  let at = 0;
  for (const value of wanted) {
    if (line.startsWith('*:', at)) {
      at += 2;
      continue;
    }
    const field = readField(line, at);
    if (field === null || field.text !== value) return undefined;
    at = field.next;
  }
  // The password ends at the line's end or an unescaped colon.
  return readField(line, at, true)?.text;
}

/** The field starting at `at`, unescaped, and where the next begins; null when no colon ends it (a last field may end the line). */
function readField(line: string, at: number, last = false): { text: string; next: number } | null {
  let text = '';
  for (let i = at; i < line.length; i++) {
    let char = line[i] as string;
    if (char === ':') return { text, next: i + 1 };
    if (char === '\\' && i + 1 < line.length) char = line[++i] as string;
    text += char;
  }
  return last ? { text, next: line.length } : null;
}
