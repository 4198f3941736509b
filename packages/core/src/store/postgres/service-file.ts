import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Where libpq looks for a service's definition when neither the URL's `servicefile` nor
 * PGSERVICEFILE names a file, besides ~/.pg_service.conf: PGSYSCONFDIR's pg_service.conf, else
 * the folder libpq was built with; Debian's and Ubuntu's libpq (`pg_config --sysconfdir`) is taken.
 */
const SYSCONFDIR = '/etc/postgresql-common';

/**
 * A service's parameters from libpq's connection service file (pg_service.conf), read once at
 * start as libpq reads it, in the order written (the first of a name counts), or why it cannot be:
 * the URL's `servicefile` (PostgreSQL 18's), else PGSERVICEFILE, which must exist; else
 * ~/.pg_service.conf (%APPDATA%\postgresql\.pg_service.conf on Windows) where it exists, then
 * PGSYSCONFDIR's pg_service.conf, the first that defines the service. Lines are `[name]` and
 * `keyword=value`, as written (no spaces about the `=`), `#` starting a comment; a keyword not
 * libpq's is an error in the file, as libpq has it. pg reads no such file: left to it, a URL naming
 * a service went to localhost as whoever ran it (and was refused at start here before).
 */
export function readService(
  service: string,
  options: { file: string | undefined; env: Readonly<Record<string, string | undefined>>; known: (keyword: string) => boolean },
): { params: Array<[string, string]>; file: string } | { problem: string } {
  const { env } = options;
  const named = options.file || env.PGSERVICEFILE;
  // libpq's home folder: %APPDATA%\postgresql on Windows, as for the password file.
  const home = process.platform === 'win32' ? (env.APPDATA ? join(env.APPDATA, 'postgresql', '.pg_service.conf') : null) : env.HOME ? join(env.HOME, '.pg_service.conf') : null;
  const system = join(env.PGSYSCONFDIR || SYSCONFDIR, 'pg_service.conf');
  const files = named ? [named, system] : [home, system];
  for (const [i, file] of files.entries()) {
    if (file === null) continue;
    // A file named must be there; the defaults are looked in where they are.
    if (!existsSync(file)) {
      if (i === 0 && named) return { problem: `service file ${file} is not there` };
      continue;
    }
    const read = readGroup(file, service, options.known);
    if (read !== null) return read;
  }
  return { problem: `no service ${service} is defined in ${files.filter((f) => f !== null).join(' or ')}` };
}

/** The group `[service]` of one file, or null where the file has none. */
function readGroup(file: string, service: string, known: (keyword: string) => boolean): { params: Array<[string, string]>; file: string } | { problem: string } | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { problem: `service file ${file} cannot be read: ${(err as NodeJS.ErrnoException).code}` };
  }
  const params: Array<[string, string]> = [];
  // Once in the group, the reading stays in it until the next begins, where it ends.
  let inGroup = false;
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('[')) {
      // The group ends at the next; what follows `]` on its line is not read, as libpq has it.
      if (inGroup) break;
      inGroup = line.startsWith(`[${service}]`);
      continue;
    }
    if (!inGroup) continue;
    const at = line.indexOf('=');
    if (at < 0) return { problem: `service file ${file}, line ${i + 1}: ${JSON.stringify(line)} is no keyword=value` };
    const keyword = line.slice(0, at);
    if (keyword === 'service') return { problem: `service file ${file}, line ${i + 1}: a service within a service is not possible, as in libpq` };
    if (!known(keyword))
      return { problem: `service file ${file}, line ${i + 1}: ${JSON.stringify(keyword)} is no keyword of libpq's (write keyword=value, without spaces about the =)` };
    if (!params.some(([name]) => name === keyword)) params.push([keyword, line.slice(at + 1)]);
  }
  return inGroup ? { params, file } : null;
}
