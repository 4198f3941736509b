import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions, SecureVersion } from 'node:tls';
import type { ClientConfig } from 'pg';
import { parse, toClientConfig } from 'pg-connection-string';

/**
 * A PostgreSQL URL read into pg's connection settings, its `sslmode` as libpq (and so psql, and the
 * providers that hand out such URLs) reads it: `require` encrypts without checking the server's
 * certificate, `verify-ca` checks it against `sslrootcert`, `verify-full` against the CA and the
 * host name. pg 8 reads `require` as `verify-full` and prints a nine-line warning at every start
 * that it will read it as libpq does from pg 9; a provider's self-signed certificate (Heroku's) or
 * a CA outside Node's list (Amazon RDS's) then failed every connection. A URL that says
 * `uselibpqcompat` itself is read as it says.
 *
 * Throws what pg-connection-string throws: a URL it cannot read, a certificate file that cannot be
 * read (`code` set), `verify-ca` without `sslrootcert`; and a revocation list (`sslcrl`) that
 * cannot be read.
 */
export function postgresConnection(url: string): ClientConfig {
  const ownChoice = queryParam(url, 'uselibpqcompat') !== undefined;
  const config = toClientConfig(parse(withSystemRoots(url), ownChoice ? {} : { useLibpqCompat: true }));
  // pg's own `no-verify` (Heroku's guides for Node give it): encrypted, not verified, as pg reads
  // it. Read the libpq way it is no mode at all, and left the check of verify-full in place.
  if (queryParam(url, 'sslmode') === 'no-verify') config.ssl = withTls(config.ssl, { rejectUnauthorized: false });
  // libpq's sslpassword opens an encrypted sslkey; pg-connection-string reads the key and not it,
  // and TLS failed at every connection with OpenSSL's 'bad decrypt'.
  const passphrase = queryParam(url, 'sslpassword');
  if (passphrase !== undefined && typeof config.ssl === 'object') config.ssl.passphrase = passphrase;
  // libpq's sslcrl, the certificates revoked since their CA signed them; pg-connection-string
  // reads nothing of it, and a revoked server certificate passed.
  const crl = queryParam(url, 'sslcrl');
  if (crl !== undefined && typeof config.ssl === 'object') config.ssl.crl = readFileSync(crl, 'utf8');
  // libpq's bounds on the TLS version, in Node's names for them (checked at start, database-url.ts); pg
  // reads neither, and a URL's ssl_max_protocol_version=TLSv1.2 took TLS 1.3.
  const minVersion = queryParam(url, 'ssl_min_protocol_version');
  const maxVersion = queryParam(url, 'ssl_max_protocol_version');
  if (minVersion && config.ssl) config.ssl = withTls(config.ssl, { minVersion: minVersion as SecureVersion });
  if (maxVersion && config.ssl) config.ssl = withTls(config.ssl, { maxVersion: maxVersion as SecureVersion });
  // libpq's hostaddr: the address to connect to, the host's name (where there is one) still the
  // name TLS checks and announces; pg reads nothing of it, and looked the name up instead (or, with
  // no host, connected to localhost). An address, checked at start (database-url.ts).
  const hostaddr = queryParam(url, 'hostaddr');
  if (hostaddr) {
    const name = config.host;
    config.host = hostaddr;
    if (config.ssl && name && !isSocketHost(name) && !isIP(name)) config.ssl = withTls(config.ssl, { servername: name });
  }
  // libpq uses no TLS over a local socket, whatever the sslmode (a PGSSLMODE=require set for every
  // host, say); pg asked the server for it there, and the server's no failed every start.
  // Nor its sslnegotiation=direct, which pg refused there ('requires SSL to be enabled'); set, since
  // pg would read PGSSLNEGOTIATION where it is not.
  if (isSocketHost(config.host)) {
    config.ssl = false;
    config.sslnegotiation = 'postgres';
  }
  // pg reads libpq's connect_timeout into nothing it waits by: a URL's `connect_timeout=3` waited
  // the store's own 10 s. One it cannot read is refused at start (database-url.ts) and left out here.
  const timeout = queryParam(url, 'connect_timeout');
  const timeoutMs = timeout === undefined ? null : connectTimeoutMs(timeout);
  if (timeoutMs !== null) config.connectionTimeoutMillis = timeoutMs;
  // libpq's channel_binding, `prefer` unless the URL says otherwise: SCRAM binds its proof to the
  // server's certificate wherever the server offers it (PgClient holds `require` to it). pg binds
  // none unless asked, and went through a relay that ended TLS with a certificate of its own, where
  // psql with the same URL stopped ('SCRAM channel binding check failed').
  config.enableChannelBinding = queryParam(url, 'channel_binding') !== 'disable';
  // A server asking for a password where none is given (database-url.ts has looked in PGPASSWORD and in
  // libpq's password file too) hears why. pg read ~/.pgpass once more at each connection, warning
  // in two lines that it will not from pg 9, and then failed in SCRAM's words ('client password
  // must be a string').
  if (!config.password) config.password = noPassword;
  return config;
}

/**
 * libpq's parameters (PostgreSQL 18's): read here as libpq reads them, refused at start, or, where
 * pg cannot do what they ask and nothing is weakened by that, left unread as before. A service
 * file may give these alone.
 */
// prettier-ignore
export const LIBPQ_PARAMS: ReadonlySet<string> = new Set([
  'host', 'hostaddr', 'port', 'dbname', 'user', 'password', 'passfile', 'require_auth', 'channel_binding', 'connect_timeout',
  'client_encoding', 'options', 'application_name', 'fallback_application_name', 'keepalives', 'keepalives_idle',
  'keepalives_interval', 'keepalives_count', 'tcp_user_timeout', 'replication', 'gssencmode', 'sslmode', 'requiressl',
  'sslnegotiation', 'sslcompression', 'sslcert', 'sslkey', 'sslkeylogfile', 'sslpassword', 'sslcertmode', 'sslrootcert', 'sslcrl',
  'sslcrldir', 'sslsni', 'requirepeer', 'ssl_min_protocol_version', 'ssl_max_protocol_version', 'min_protocol_version',
  'max_protocol_version', 'krbsrvname', 'gsslib', 'gssdelegation', 'service', 'servicefile', 'target_session_attrs',
  'load_balance_hosts', 'oauth_issuer', 'oauth_client_id', 'oauth_client_secret', 'oauth_scope',
]);

/**
 * The parameters a PostgreSQL URL may carry: libpq's and pg's own. Any other is refused at start,
 * as libpq refuses it ('invalid URI query parameter'), where pg ignored it: `sslmdoe=require` had
 * connected unencrypted.
 */
// prettier-ignore
export const KNOWN_PARAMS: ReadonlySet<string> = new Set([
  ...LIBPQ_PARAMS,
  // pg's and pg-connection-string's own
  'ssl', 'uselibpqcompat', 'db', 'encoding', 'binary', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout',
  'query_timeout',
]);

/**
 * The parts of the connection a URL gives itself (empty where it gives none), as pg-connection-string
 * reads them, nothing checked; all empty where it cannot read the URL (parseDatabaseUrl says why).
 */
export function givenParts(url: string): { host: string; port: string; user: string; password: string; database: string } {
  try {
    const { host, port, user, password, database } = parse(url);
    return { host: host ?? '', port: port ?? '', user: user ?? '', password: password ?? '', database: database ?? '' };
  } catch {
    return { host: '', port: '', user: '', password: '', database: '' };
  }
}

/** The URL without the query parameters named (its fragment kept). */
export function withoutQueryParams(url: string, names: readonly string[]): string {
  const [base, fragment] = url.split('#', 2) as [string, string | undefined];
  const at = base.indexOf('?');
  if (at < 0) return url;
  const kept = base
    .slice(at + 1)
    .split('&')
    .filter((pair) => !names.includes(pair.split('=', 1)[0]!));
  return `${base.slice(0, at)}${kept.length > 0 ? `?${kept.join('&')}` : ''}${fragment === undefined ? '' : `#${fragment}`}`;
}

/** The names of a URL's query parameters, in order, each once. */
export function queryParamNames(url: string): string[] {
  return [...new Set(queryOf(url).keys())];
}

/** libpq's `require_auth` methods: `password` is the password in clear, `none` letting the client in unasked. */
export const AUTH_METHODS = ['password', 'md5', 'gss', 'sspi', 'scram-sha-256', 'oauth', 'none'] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];

/**
 * libpq's `require_auth`, read: the methods the server may authenticate the client by (`md5,scram-sha-256`),
 * or, each written `!md5`, those it may not; empty, any. Or why libpq refuses the value.
 */
export function readRequireAuth(value: string): { allows: (method: AuthMethod) => boolean } | string {
  if (value === '') return { allows: () => true };
  const names = value.split(',');
  const refused = names.filter((name) => name.startsWith('!'));
  if (refused.length > 0 && refused.length < names.length) return 'mixes methods refused (!) with methods required, as libpq refuses it';
  const methods = names.map((name) => name.replace(/^!/, ''));
  for (const [i, method] of methods.entries()) {
    if (!(AUTH_METHODS as readonly string[]).includes(method)) return `names ${method || 'nothing'}, none of libpq's methods (${AUTH_METHODS.join(', ')})`;
    if (methods.indexOf(method) !== i) return `names ${method} twice, as libpq refuses it`;
  }
  const listed = new Set<string>(methods);
  return { allows: (method) => listed.has(method) !== refused.length > 0 };
}

/** libpq's `channel_binding` values; `prefer` is its default, as here (PgClient holds `require`). */
export const CHANNEL_BINDINGS = ['disable', 'prefer', 'require'] as const;

/** The password of a URL that gives none, for a server that asks for one: libpq's 'no password supplied', said whole. */
async function noPassword(): Promise<string> {
  // PostgreSQL's code for a password that does not do, which a missing one is on the client's side.
  throw Object.assign(new Error('the server asks for a password and none is given: put it in DATABASE_URL, in PGPASSWORD, or in a password file (~/.pgpass, PGPASSFILE)'), {
    code: '28P01',
  });
}

/** The host a URL names (its name, or its socket's folder), whatever hostaddr says to connect to: what libpq calls the connection's host. */
export function namedHost(url: string): string | undefined {
  return parse(url).host ?? undefined;
}

/** pg's TLS settings with `more` added: `ssl=true` (TLS, Node's defaults) read as no settings yet. */
function withTls(ssl: ClientConfig['ssl'], more: ConnectionOptions): ConnectionOptions {
  return { ...(typeof ssl === 'object' ? ssl : {}), ...more };
}

/** Whether a host, as pg reads it, is the directory of a local socket. */
export function isSocketHost(host: string | undefined): boolean {
  return host?.startsWith('/') ?? false;
}

/** The longest wait a Node timer keeps (about 24.8 days); a longer one would fire at once. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/**
 * libpq's `connect_timeout`, in seconds, as milliseconds to give pg's `connectionTimeoutMillis`:
 * zero or less waits without end (0 to pg), and less than 2 s is 2, as libpq has them. Null for a
 * value libpq would refuse (not a whole number).
 */
export function connectTimeoutMs(value: string): number | null {
  if (!/^\s*[+-]?\d+\s*$/.test(value)) return null;
  const seconds = Number.parseInt(value, 10);
  return seconds <= 0 ? 0 : Math.min(Math.max(seconds, 2) * 1000, LONGEST_TIMER_MS);
}

/** A parameter of the URL's query string, decoded; undefined when it has none of that name. */
export function queryParam(url: string, name: string): string | undefined {
  return queryOf(url).get(name) ?? undefined;
}

/** The URL's query string, read (empty when it has none). */
function queryOf(url: string): URLSearchParams {
  const at = url.indexOf('?');
  return new URLSearchParams(at === -1 ? '' : url.slice(at + 1).split('#')[0]);
}

/** Starts the message of the error a weaker sslmode beside `sslrootcert=system` throws (database-url.ts says it in one line). */
export const SYSTEM_ROOTS_MODE = 'sslrootcert=system needs sslmode=verify-full';

/**
 * libpq's `sslrootcert=system` (PostgreSQL 16 and later): the server's certificate is checked
 * against the CAs the TLS library trusts, here Node's list, and `sslmode` is `verify-full` unless
 * the URL says otherwise; a weaker one is refused, as libpq refuses it. pg-connection-string reads
 * every `sslrootcert` as a file's path, so a URL written so, as some providers give theirs, could
 * not start ("cannot read system"). The URL is given to it without that parameter.
 */
function withSystemRoots(url: string): string {
  if (queryParam(url, 'sslrootcert') !== 'system') return url;
  const mode = queryParam(url, 'sslmode');
  if (mode !== undefined && mode !== 'verify-full') throw new Error(`${SYSTEM_ROOTS_MODE} (it has sslmode=${mode}), as libpq has it`);
  const params = queryOf(url);
  params.delete('sslrootcert');
  params.set('sslmode', 'verify-full');
  return `${url.slice(0, url.indexOf('?'))}?${params.toString()}`;
}
