/**
 * A PostgreSQL URL as the settings give it (DATABASE_URL, `copy-jobs --from`), checked and completed
 * at start as libpq would read it: its parameters checked, libpq's environment variables, service
 * file and password file filling what it leaves out. A URL pg would refuse, or read otherwise than
 * libpq, stops the program at start naming the setting, never the URL (it may hold the password).
 * The environment comes in from config.ts, the one reader of the environment.
 */
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../errors.js';
import { editDistance } from '../../setting-names.js';
import {
  CHANNEL_BINDINGS,
  KNOWN_PARAMS,
  LIBPQ_PARAMS,
  SYSTEM_ROOTS_MODE,
  connectTimeoutMs,
  givenParts,
  isSocketHost,
  namedHost,
  postgresConnection,
  queryParam,
  queryParamNames,
  readRequireAuth,
  withoutQueryParams,
} from './connection-url.js';
import { readPasswordFile } from './password-file.js';
import { readService } from './service-file.js';

/** The environment's variables, as config.ts hands them over. */
type Env = Readonly<Record<string, string | undefined>>;

/** What of a PostgreSQL URL the programs print or redact. */
export interface DatabaseUrlParts {
  user: string;
  password: string;
  /** A host name, several (h1,h2), or the directory of a local socket. */
  host: string;
  port: string;
  database: string;
}

/**
 * A PostgreSQL URL read as the store reads it (postgres/connection-url.ts), so every form pg accepts
 * is accepted here (a password in the user part or as ?password=, a socket directory as ?host=),
 * and one it would refuse stops the program at start. The message names `name`, never the URL: it
 * may hold the password.
 */
export function parseDatabaseUrl(url: string, name = 'DATABASE_URL'): DatabaseUrlParts {
  const hosts = hostList(url);
  if (hosts !== null) {
    throw new ConfigError(
      `${name} names several hosts (${hosts}), libpq's list to fail over along; pg connects to one host: name the primary, or an address that follows it (your provider's primary endpoint, or a proxy such as PgBouncer or HAProxy)`,
    );
  }
  for (const param of queryParamNames(url)) {
    if (!KNOWN_PARAMS.has(param)) throw new ConfigError(`${name}: ${unknownParam(param)}`);
  }
  for (const param of PARAM_CHECKS.keys()) {
    const value = queryParam(url, param);
    const problem = value === undefined ? null : paramProblem(param, value);
    if (problem) throw new ConfigError(`${name}: ${param}=${value} ${problem}`);
  }
  let parsed: ReturnType<typeof postgresConnection>;
  try {
    parsed = postgresConnection(url);
  } catch (err) {
    // A file's error has a system call; a URL Node cannot read has a code too (ERR_INVALID_URL).
    const { code, path, syscall } = err as NodeJS.ErrnoException;
    if (syscall) throw new ConfigError(`${name}: cannot read ${path ?? 'a file'}, named by its sslrootcert, sslcert, sslkey or sslcrl: ${code}`);
    if ((err as Error).message.startsWith(SYSTEM_ROOTS_MODE)) throw new ConfigError(`${name}: ${(err as Error).message}`);
    if (/sslmode=verify-ca requires/.test((err as Error).message)) {
      throw new ConfigError(
        `${name}: sslmode=verify-ca needs sslrootcert=FILE, the CA to check the server's certificate against (or sslmode=verify-full, against Node's list and the host name)`,
      );
    }
    throw new ConfigError(`${name} is not a PostgreSQL URL pg can read (postgres://user:password@host:5432/database)`);
  }
  const keyProblem = keyFileProblem(queryParam(url, 'sslkey'), parsed.ssl) ?? clientKeyProblem(parsed.ssl);
  if (keyProblem) throw new ConfigError(`${name}: ${keyProblem}`);
  // Binds to the server's TLS certificate, so a connection without TLS can never be made: said at
  // start, where libpq says it at each connection ('channel binding required, but SSL not in use').
  if (queryParam(url, 'channel_binding') === 'require' && !parsed.ssl) {
    const why = isSocketHost(parsed.host)
      ? 'which a local socket does not use: connect over TCP, or leave channel binding out'
      : parsed.ssl === false
        ? 'which sslmode=disable turns off'
        : 'set sslmode (require, verify-ca or verify-full); without sslmode the connection is unencrypted, as pg has it';
    throw new ConfigError(`${name}: channel_binding=require needs TLS, ${why}`);
  }
  // PostgreSQL 17's TLS at once, without asking first: libpq takes it only with an sslmode that
  // cannot fall back to a connection unencrypted. Over a local socket it is not used (no TLS there).
  const mode = queryParam(url, 'sslmode') ?? (queryParam(url, 'sslrootcert') === 'system' ? 'verify-full' : undefined);
  if (queryParam(url, 'sslnegotiation') === 'direct' && !isSocketHost(parsed.host) && !DIRECT_SSLMODES.includes(mode ?? '')) {
    throw new ConfigError(`${name}: sslnegotiation=direct needs sslmode=require, verify-ca or verify-full, as libpq has it (${mode ? `not ${mode}` : 'it has none'})`);
  }
  const password = typeof parsed.password === 'string' ? parsed.password : '';
  // With hostaddr, the host it names is the one described (and a password file matched against),
  // as libpq has it; the address where there is none.
  const host = (queryParam(url, 'hostaddr') ? namedHost(url) : undefined) ?? parsed.host ?? '';
  return { user: parsed.user ?? '', password, host, port: parsed.port === undefined ? '' : String(parsed.port), database: parsed.database ?? '' };
}

/**
 * Why the client key's file is refused, as libpq refuses it, or null: one that others may read (or,
 * owned by root, its group write) is a key already out, and libpq will not use it. Not checked on
 * Windows, nor where no TLS will use it (a local socket), as libpq does.
 */
function keyFileProblem(file: string | undefined, ssl: ReturnType<typeof postgresConnection>['ssl']): string | null {
  if (file === undefined || typeof ssl !== 'object' || process.platform === 'win32') return null;
  const stat = statSync(file);
  if (!stat.isFile()) return `sslkey ${file} is not a plain file`;
  const open = stat.uid === 0 ? stat.mode & 0o037 : stat.mode & 0o077;
  return open
    ? `sslkey ${file} has group or world access: it must be u=rw (0600) or less, or u=rw,g=r (0640) or less where root owns it, as libpq has it (chmod 600 ${file})`
    : null;
}

/**
 * Why the client certificate a URL names (sslcert, sslkey, sslpassword for an encrypted key) cannot
 * serve, or null: said at start in one line, where TLS had said it at each connection in OpenSSL's
 * words ('bad decrypt', 'key values mismatch').
 */
function clientKeyProblem(ssl: ReturnType<typeof postgresConnection>['ssl']): string | null {
  if (typeof ssl !== 'object' || (!ssl.key && !ssl.cert)) return null;
  if (!ssl.key) return 'sslcert needs sslkey, the file of its private key';
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: ssl.key as string, passphrase: ssl.passphrase });
  } catch (err) {
    // OpenSSL 3's words for an encrypted key read without a passphrase, and with a wrong one.
    const code = (err as NodeJS.ErrnoException).code;
    if (ssl.passphrase === undefined && (code === 'ERR_OSSL_CRYPTO_INTERRUPTED_OR_CANCELLED' || code === 'ERR_MISSING_PASSPHRASE'))
      return 'sslkey is encrypted: give its passphrase as sslpassword';
    if (code === 'ERR_OSSL_BAD_DECRYPT') return 'sslpassword does not open sslkey';
    return 'sslkey holds no private key Node can read (PEM)';
  }
  if (!ssl.cert) return 'sslkey needs sslcert, the client certificate it is the key of';
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(ssl.cert as string);
  } catch {
    return 'sslcert holds no certificate Node can read (PEM)';
  }
  return cert.checkPrivateKey(key) ? null : "sslkey is not the private key of sslcert's certificate";
}

/** libpq's sslmodes. */
const LIBPQ_SSLMODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

/** Those, and pg's own `no-verify` (encrypted, not verified: libpq's `require`). */
const SSLMODES = [...LIBPQ_SSLMODES, 'no-verify'];

/**
 * Why a URL parameter neither libpq nor pg reads is refused, in one line: the name meant where it
 * is a letter or two from one (the parameter meant was left unread, `sslmdoe=require` as no TLS),
 * or what to do where it is another tool's.
 */
function unknownParam(param: string): string {
  const prisma = PRISMA_PARAMS.get(param);
  if (prisma) return `${param} is Prisma's, and neither libpq nor pg reads it: ${prisma}`;
  let meant: string | null = null;
  for (const known of KNOWN_PARAMS) {
    const allowed = known.length >= 6 ? 2 : 1;
    if (editDistance(param.toLowerCase(), known, allowed) <= allowed) meant = meant ?? known;
  }
  return `${param} is no parameter of libpq's or pg's, and libpq refuses it ('invalid URI query parameter')${meant ? `: was ${meant} meant?` : ''}`;
}

/** Prisma's parameters of a PostgreSQL URL, as a DATABASE_URL shared with a Prisma application has them, and what stands for each here. */
const PRISMA_PARAMS = new Map([
  ['schema', "the proxy's tables are in DATABASE_SCHEMA's schema (public unless set), whatever this says: take it out of the URL"],
  ['connection_limit', 'each program keeps its own pool of PostgreSQL connections: take it out of the URL'],
  ['pool_timeout', 'connect_timeout bounds the wait for a pooled connection: take it out of the URL'],
  ['pgbouncer', 'behind PgBouncer in session mode nothing need be said, and transaction mode is refused at start: take it out of the URL'],
  ['sslaccept', 'sslmode says what is checked (verify-full: the certificate and the host name): take it out of the URL'],
  ['socket_timeout', 'take it out of the URL'],
  ['statement_cache_size', 'take it out of the URL'],
  ['sslidentity', 'name a client certificate by sslcert and sslkey instead'],
]);

/** The sslmodes libpq takes beside sslnegotiation=direct (and pg's no-verify, its require). */
const DIRECT_SSLMODES = ['require', 'verify-ca', 'verify-full', 'no-verify'];

/** libpq's values of a parameter, as the reason one of another is refused. */
function oneOf(values: readonly string[]): (value: string) => string | null {
  return (value) => (values.includes(value) ? null : `is none of libpq's (${values.join(', ')})`);
}

/** The require_auth methods pg can meet; gss, sspi and oauth it cannot. */
const PG_AUTH_METHODS = ['scram-sha-256', 'md5', 'password', 'none'] as const;

/** libpq's TLS versions, for ssl_min_protocol_version and ssl_max_protocol_version, each Node's name for it too. */
const TLS_VERSIONS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];

/**
 * The URL parameters whose values are checked at start, each with why a value is refused (null
 * where it is taken): pg would misread one libpq refuses, or not do what it asks, which libpq would
 * have done or failed the connection for. A parameter not here takes any value.
 */
const PARAM_CHECKS = new Map<string, (value: string) => string | null>([
  ['sslmode', (value) => (SSLMODES.includes(value) ? null : `is none of libpq's (${LIBPQ_SSLMODES.join(', ')}); pg would have read it as verify-full`)],
  ['connect_timeout', (value) => (connectTimeoutMs(value) === null ? 'is not a whole number of seconds (0 waits without end)' : null)],
  [
    'require_auth',
    (value) => {
      const read = readRequireAuth(value);
      if (typeof read === 'string') return read;
      // What it allows pg cannot do (no GSSAPI, SSPI or OAuth in pg): no connection could be made,
      // each refused in pg's words ('SASL: Only mechanism SCRAM-SHA-256 is currently supported').
      return PG_AUTH_METHODS.some(read.allows) ? null : `allows only what pg cannot do (it authenticates by ${PG_AUTH_METHODS.join(', ')})`;
    },
  ],
  ['sslnegotiation', oneOf(['postgres', 'direct'])],
  ['channel_binding', oneOf(CHANNEL_BINDINGS)],
  ['ssl_min_protocol_version', oneOf(TLS_VERSIONS)],
  ['ssl_max_protocol_version', oneOf(TLS_VERSIONS)],
  // A folder of revocation lists, which Node's TLS cannot be given: refused, rather than nothing
  // checked against it.
  ['sslcrldir', () => "is not read here: name the revocation list's file as sslcrl"],
  [
    'hostaddr',
    (value) =>
      isIP(value)
        ? null
        : value.includes(',')
          ? "lists several addresses, libpq's list to fail over along; pg connects to one: name one"
          : 'is not an IP address, as libpq has it (a name goes in the host)',
  ],
  // What pg cannot do, and libpq would have done or failed the connection for: left undone, each
  // had asked for a safeguard the connection went on without.
  ['gssencmode', (value) => (value === 'require' ? 'is not possible here: pg has no GSSAPI encryption (encrypt with sslmode)' : oneOf(['disable', 'prefer', 'require'])(value))],
  ['requirepeer', () => 'is not checked here: pg cannot ask who runs the server behind a local socket'],
  ['sslsni', (value) => (value === '0' ? 'is not possible here: pg names the host in TLS whatever this says' : oneOf(['0', '1'])(value))],
  [
    'sslcertmode',
    (value) => (value === 'require' ? 'is not checked here: pg cannot tell whether the server asked for the certificate' : oneOf(['disable', 'allow', 'require'])(value)),
  ],
  [
    'min_protocol_version',
    (value) => (value === '3.0' ? null : value === '3.2' || value === 'latest' ? 'is not possible here: pg speaks protocol 3.0' : oneOf(['3.0', '3.2', 'latest'])(value)),
  ],
  ['max_protocol_version', oneOf(['3.0', '3.2', 'latest'])],
  ['requiressl', () => "is libpq's old name for sslmode=require, which pg does not read: write sslmode=require"],
]);

/** Why a parameter's value is refused, or null: PARAM_CHECKS', and for a file the environment names, whether it can be read. */
function paramProblem(param: string, value: string): string | null {
  const check = PARAM_CHECKS.get(param);
  if (check) return check(value);
  // A file named by the environment: the URL's own are told by parseDatabaseUrl, naming the URL.
  if ((param === 'sslrootcert' && value !== 'system') || param === 'sslcert' || param === 'sslkey' || param === 'sslcrl') {
    try {
      accessSync(value, fsConstants.R_OK);
    } catch (err) {
      return `cannot be read: ${(err as NodeJS.ErrnoException).code}`;
    }
  }
  return null;
}

/** libpq's environment variables that stand for a parameter the URL does not give. */
const ENVIRONMENT_PARAMS = [
  ['PGSSLMODE', 'sslmode'],
  ['PGSSLROOTCERT', 'sslrootcert'],
  ['PGSSLCERT', 'sslcert'],
  ['PGSSLKEY', 'sslkey'],
  ['PGSSLCRL', 'sslcrl'],
  ['PGSSLCRLDIR', 'sslcrldir'],
  ['PGCONNECT_TIMEOUT', 'connect_timeout'],
  ['PGCHANNELBINDING', 'channel_binding'],
  ['PGSSLNEGOTIATION', 'sslnegotiation'],
  ['PGREQUIREAUTH', 'require_auth'],
  ['PGSSLMINPROTOCOLVERSION', 'ssl_min_protocol_version'],
  ['PGSSLMAXPROTOCOLVERSION', 'ssl_max_protocol_version'],
  ['PGGSSENCMODE', 'gssencmode'],
  ['PGREQUIREPEER', 'requirepeer'],
  ['PGSSLSNI', 'sslsni'],
  ['PGSSLCERTMODE', 'sslcertmode'],
  ['PGMINPROTOCOLVERSION', 'min_protocol_version'],
  ['PGMAXPROTOCOLVERSION', 'max_protocol_version'],
  ['PGREQUIRESSL', 'requiressl'],
  ['PGHOSTADDR', 'hostaddr'],
] as const;

/** libpq's environment variables that stand for a part of the connection the URL leaves out. */
const ENVIRONMENT_PARTS = [
  ['PGHOST', 'host'],
  ['PGPORT', 'port'],
  ['PGUSER', 'user'],
  ['PGPASSWORD', 'password'],
] as const;

/**
 * The URL with what it does not give taken from libpq's environment variables, as libpq reads them.
 * pg reads some of them its own way (PGSSLMODE as pg 8 reads sslmode: require as verify-full,
 * prefer with no fallback; PGCONNECT_TIMEOUT into nothing it waits by), and PGSSLROOTCERT,
 * PGSSLCERT, PGSSLKEY and PGSSLCRL not at all; the parts of the connection it took from the environment were
 * missing from what reads the URL: the start's description (`postgres /jobs`, with PGHOST and
 * PGUSER set) and the logger's redaction of the password (PGPASSWORD). A value refused stops the
 * start naming its variable, not the URL. The URL returned has passed parseDatabaseUrl.
 */
function withEnvironmentDefaults(url: string, env: Env, name = 'DATABASE_URL'): { url: string; parts: DatabaseUrlParts } {
  let out = withService(url, env, name);
  for (const [variable, param] of ENVIRONMENT_PARAMS) {
    const value = env[variable];
    if (value) out = withDefaultParam(out, param, value, `${variable}=${value}`);
  }
  const parts = parseDatabaseUrl(out, name);
  const checked = out;
  for (const [variable, part] of ENVIRONMENT_PARTS) {
    const value = part === 'user' ? env[variable] || defaultUser(env) : env[variable];
    if (!value || parts[part] !== '') continue;
    if (part === 'port' && !/^\d{1,5}$/.test(value)) throw new ConfigError(`PGPORT=${value} is not a port number`);
    // pg-connection-string takes ?host=, ?port=, ?user= and ?password= for what the URL's authority lacks.
    out = withQueryParam(out, part, value);
  }
  // A name withDatabase cannot write is left to pg, which reads PGDATABASE itself.
  if (env.PGDATABASE && parts.database === '' && canBePath(env.PGDATABASE)) out = withDatabase(out, env.PGDATABASE);
  // What the parts added is checked too (a PGHOST listing several hosts, say); a URL they left as
  // it was is not read again (the read opens its certificate files and keys).
  return { url: out, parts: out === checked ? parts : parseDatabaseUrl(out, name) };
}

/**
 * The URL with `param=value` where it gives no `param` (a default from the environment or a
 * service file), the value checked as the URL's own are; a refusal names it as `named`.
 */
function withDefaultParam(url: string, param: string, value: string, named: string): string {
  if (queryParam(url, param) !== undefined) return url;
  const problem = paramProblem(param, value);
  if (problem) throw new ConfigError(`${named} ${problem}`);
  return withQueryParam(url, param, value);
}

/** The connection's parts a service file's keyword stands for, which pg-connection-string reads from the URL's query (dbname is its path). */
const SERVICE_PARTS = ['host', 'port', 'user', 'password'] as const;

/**
 * The URL with what libpq's connection service file gives it (service-file.ts): the URL's
 * `service`, else PGSERVICE, names the service, whose parameters stand for those the URL does not
 * give, before libpq's environment variables, as libpq has them. The URL returned names no service
 * (pg would not read it).
 */
function withService(url: string, env: Env, name: string): string {
  const named = queryParam(url, 'service');
  const service = named ?? (env.PGSERVICE || undefined);
  if (service === undefined) return url;
  const read = readService(service, { file: queryParam(url, 'servicefile'), env, known: (keyword) => LIBPQ_PARAMS.has(keyword) });
  const said = named === undefined ? `PGSERVICE=${service}` : `${name}: service=${service}`;
  if ('problem' in read) throw new ConfigError(`${said}: ${read.problem}`);
  let out = withoutQueryParams(url, ['service', 'servicefile']);
  const given = givenParts(out);
  for (const [keyword, value] of read.params) {
    if (keyword === 'dbname') {
      if (given.database !== '') continue;
      if (!canBePath(value)) throw new ConfigError(`${said}: dbname=${value} in ${read.file} cannot be given to pg (a name without / ? # or %)`);
      out = withDatabase(out, value);
    } else if ((SERVICE_PARTS as readonly string[]).includes(keyword)) {
      if (given[keyword as (typeof SERVICE_PARTS)[number]] === '') out = withQueryParam(out, keyword, value);
    } else {
      // Told by the file, which the URL does not name.
      out = withDefaultParam(out, keyword, value, `${said}: ${keyword}=${value} in ${read.file}`);
    }
  }
  return out;
}

/** Whether a database's name can be a URL's path: pg-connection-string decodes it with decodeURI, which leaves these encoded. */
const canBePath = (database: string) => !/[/?#%]/.test(database);

/** The URL with `database` as its path, where it has none (canBePath must hold). */
function withDatabase(url: string, database: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^/?#]*)\/?/, `$1/${encodeURI(database)}`);
}

/**
 * A PostgreSQL URL as the program will use it: libpq's environment variables, service file and
 * password file fill what it leaves out, and the whole is checked, a problem naming `name`. With a
 * note to say when a password file was left unread.
 */
export function completeDatabaseUrl(url: string, name: string, env: Env): { url: string; note?: string } {
  return withPasswordFile(withEnvironmentDefaults(url, env, name), env);
}

/**
 * The URL with the password libpq's password file gives it, where it names none: the URL's
 * `passfile`, else PGPASSFILE, else ~/.pgpass (%APPDATA%\postgresql\pgpass.conf on Windows), read
 * once at start (password-file.ts), so the start's redaction holds it as it holds the URL's own.
 * With a note to say at start when the file is there and left unread.
 */
function withPasswordFile(database: { url: string; parts: DatabaseUrlParts }, env: Env): { url: string; note?: string } {
  const { url, parts } = database;
  if (parts.password !== '') return { url };
  const home = process.platform === 'win32' ? join(env.APPDATA ?? '', 'postgresql', 'pgpass.conf') : env.HOME ? join(env.HOME, '.pgpass') : null;
  const file = queryParam(url, 'passfile') || env.PGPASSFILE || home;
  if (!file) return { url };
  // libpq's database defaults to the user's name, as pg's does.
  const found = readPasswordFile(file, { ...parts, database: parts.database || parts.user });
  return { url: found.password ? withQueryParam(url, 'password', found.password) : url, note: found.note };
}

/**
 * The user pg logs in as when neither the URL nor PGUSER names one: USER (USERNAME on Windows), as
 * pg has it, or else the account the process runs as, as libpq has it. Where USER was unset (cron,
 * a systemd service, a container) pg sent no user name and the start failed: 'no PostgreSQL user
 * name specified in startup packet'.
 */
function defaultUser(env: Env): string | undefined {
  const named = process.platform === 'win32' ? env.USERNAME : env.USER;
  if (named) return named;
  try {
    return userInfo().username;
  } catch {
    // No account entry for this user id (a container run with an arbitrary uid).
    return undefined;
  }
}

/** The URL with `name=value` added to its query string (its fragment kept last). */
function withQueryParam(url: string, name: string, value: string): string {
  const [base, fragment] = url.split('#', 2) as [string, string | undefined];
  return `${base}${base.includes('?') ? '&' : '?'}${name}=${encodeURIComponent(value)}${fragment === undefined ? '' : `#${fragment}`}`;
}

/**
 * The hosts of a URL that lists several, as libpq takes them (`postgres://h1:5432,h2:5432/db`, or
 * `?host=h1,h2`), or null. pg reads no such list: the first form was "not a PostgreSQL URL pg can
 * read", the second a failed lookup of the name `h1,h2`.
 */
function hostList(url: string): string | null {
  const authority = url.replace(/^postgres(?:ql)?:\/\//, '').split(/[/?#]/)[0] ?? '';
  const hosts = [authority.slice(authority.lastIndexOf('@') + 1), queryParam(url, 'host') ?? ''];
  return hosts.find((list) => list.includes(',')) ?? null;
}
