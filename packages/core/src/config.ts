import { accessSync, constants as fsConstants, existsSync, statSync } from 'node:fs';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseDotenv } from 'dotenv';
import type { ValidateFunction } from 'ajv';
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
} from './store/postgres/connection-url.js';
import { readPasswordFile } from './store/postgres/password-file.js';
import { readService } from './store/postgres/service-file.js';
import { ajvProblem } from './ajv-message.js';
import { ConfigError } from './errors.js';
import { loadClientsFile, mergeClients, noClient } from './clients-file.js';
import { parseRate, type RateLimitSpec } from './rate-spec.js';
import { readTextFile } from './text-file.js';
import { MODEL_PATTERN } from './schemas.js';
import { SETTINGS, type SettingName, type SettingSpec } from './settings.js';
import { editDistance, settingNameNotes } from './setting-names.js';
import { validate as compiledSettingsValidator } from './generated/validate-settings.js';

export { SETTINGS, type SettingName } from './settings.js';

/** A client allowed to use the API: its key (X-Proxy-Key) and the secrets its signatures may use. */
export interface ClientIdentity {
  readonly name: string;
  readonly key: string;
  readonly secrets: readonly string[];
  /** The client's own create budget, overriding RATE_LIMIT_PER_KEY. */
  readonly rateLimit?: RateLimitSpec | null;
}

/** The validated, frozen configuration both apps run on. */
export interface Config {
  readonly upstream: {
    readonly apiKey: string | null;
    /** The header that carries the key, lowercase: `authorization` (as `Bearer <key>`) or another name (the key alone). */
    readonly apiKeyHeader: string;
    /** Headers sent with every call besides the key (UPSTREAM_HEADERS), names lowercase. */
    readonly extraHeaders: Readonly<Record<string, string>>;
    readonly baseUrl: string;
    /** The proxy the upstream is called through (HTTPS_PROXY or HTTP_PROXY, unless NO_PROXY names its host); null: directly. */
    readonly proxyUrl: string | null;
    /** CA certificates (PEM, one each) trusted besides Node's own (UPSTREAM_CA_FILE); empty when unset. */
    readonly caCertificates: readonly string[];
    readonly defaultModel: string;
    readonly timeoutMs: number;
    /** The most bytes of one upstream answer a worker holds in memory. */
    readonly maxResponseBytes: number;
    /** Ask for each answer streamed (UPSTREAM_STREAM), put together as it would have come unstreamed. */
    readonly stream: boolean;
    readonly rpm: number | null;
    readonly tpm: number | null;
  };
  readonly db: DatabaseSettings;
  readonly clients: readonly ClientIdentity[];
  readonly http: {
    readonly host: string;
    readonly port: number;
    readonly bodyLimitBytes: number;
    /** What Express's `trust proxy` setting gets. */
    readonly trustProxy: boolean | number | string;
    /** Models clients may ask for; null allows any. */
    readonly allowedModels: readonly string[] | null;
    /** /health is 503 without a live worker. */
    readonly healthRequiresWorker: boolean;
    /** Addresses and subnets that may read /metrics without a key. */
    readonly metricsAllow: readonly string[];
  };
  /** The clients file, re-read on SIGHUP; null when only PROXY_KEY is used. */
  readonly clientsFile: string | null;
  readonly rateLimits: {
    readonly createsPerIp: RateLimitSpec | null;
    readonly createsPerKey: RateLimitSpec | null;
    readonly readsPerIp: RateLimitSpec | null;
  };
  readonly log: { readonly level: 'error' | 'warn' | 'info' | 'debug'; readonly format: 'auto' | 'json' | 'text'; readonly dir: string | null };
  readonly jobs: { readonly ttlSeconds: number; readonly retentionSeconds: number; readonly maxAttempts: number };
  readonly worker: {
    readonly concurrency: number;
    readonly retryBaseMs: number;
    readonly retryMaxMs: number;
    readonly leaseMs: number;
    readonly pollMs: number;
    readonly shutdownGraceMs: number;
  };
  /** Names set that no setting has, close to one unset, or that Node reads only from its own environment: a warning each at start. */
  readonly notes: readonly string[];
}

/** What the calling program cannot run without; the rest has defaults. */
export interface ConfigNeeds {
  /** The upstream key (the worker). */
  upstream?: boolean;
  /** At least one client (the API). */
  clients?: boolean;
}

export interface LoadConfigOptions {
  env?: Readonly<Record<string, string | undefined>>;
  /** Folder whose `.env` is read and against which relative paths resolve. */
  cwd?: string;
  needs?: ConfigNeeds;
}

// Compiled ahead from settingsSchema (scripts/generate-validators.ts): coercion turns "8" into 8,
// defaults fill what is unset.
const validateSettings = compiledSettingsValidator as ValidateFunction;

/**
 * Reads settings from the environment, then from `.env` in cwd (the environment wins), validates
 * them and returns them frozen. Throws ConfigError with one line naming the first bad setting.
 */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const cwd = options.cwd ?? process.cwd();
  const env = options.env ?? process.env;
  const fromFile = readDotenv(resolve(cwd, '.env'));
  const raw: Record<string, string | number> = {};
  for (const [name, spec] of Object.entries(SETTINGS as Record<string, SettingSpec>)) {
    const lower = spec.lowercase ? name.toLowerCase() : name;
    const value = env[lower] ?? env[name] ?? fromFile[lower] ?? fromFile[name];
    if (value !== undefined && value.trim() !== '') raw[name] = value.trim();
  }

  const nameNotes = settingNameNotes(Object.keys(env), Object.keys(fromFile), (name) => raw[name] !== undefined);
  // "X is not set", beside a line that sets a name close to it, says which.
  const unset = (name: SettingName) => {
    const note = nameNotes.find((n) => n.meant === name);
    return note ? ` (${note.where} sets ${note.name}: was ${name} meant?)` : '';
  };

  if (!validateSettings(raw)) {
    const err = validateSettings.errors?.[0];
    const name = err?.instancePath.replace(/^\//, '') ?? 'configuration';
    // A pattern's regex is no help to an operator; the setting's doc, which follows, says its form.
    const problem = err?.keyword === 'pattern' ? 'is malformed' : err ? ajvProblem(err) : 'is invalid';
    throw new ConfigError(describeBadSetting(name, problem, raw[name]));
  }
  const s = raw as Record<SettingName, string> & Record<string, unknown>;
  const int = (name: SettingName): number => s[name] as unknown as number;

  const apiKey = readUpstreamKey(s.OPENAI_API_KEY, s.OPENAI_API_KEY_FILE, cwd);
  if (options.needs?.upstream && !apiKey) {
    throw new ConfigError(`OPENAI_API_KEY is not set: put the upstream key in .env (or point OPENAI_API_KEY_FILE at a file holding it)${unset('OPENAI_API_KEY')}`);
  }
  const envClients: ClientIdentity[] = [];
  if (s.PROXY_KEY || s.PROXY_SECRET) {
    if (!s.PROXY_KEY) throw new ConfigError('PROXY_KEY is not set but PROXY_SECRET is: set both');
    if (!s.PROXY_SECRET) throw new ConfigError('PROXY_SECRET is not set but PROXY_KEY is: set both');
    if (s.PROXY_SECRET === s.PROXY_KEY)
      throw new ConfigError('PROXY_KEY is also PROXY_SECRET: the key travels in the clear with every request, so the secret must differ (npm start writes fresh ones)');
    envClients.push({ name: 'default', key: s.PROXY_KEY, secrets: [s.PROXY_SECRET] });
  }
  const clientsFile = s.PROXY_CLIENTS_FILE ? settingPath('PROXY_CLIENTS_FILE', s.PROXY_CLIENTS_FILE, cwd) : null;
  const clients = clientsFile ? mergeClients(envClients, loadClientsFile(clientsFile)) : envClients;
  if (options.needs?.clients && clients.length === 0) {
    if (clientsFile) throw noClient(clientsFile);
    throw new ConfigError(
      `PROXY_KEY is not set: set PROXY_KEY and PROXY_SECRET in .env (npm start writes fresh ones), or PROXY_CLIENTS_FILE${unset('PROXY_KEY') || unset('PROXY_CLIENTS_FILE')}`,
    );
  }

  // libpq's environment variables for what the URL does not say, folded into it: read as the
  // URL's own (withEnvironmentDefaults says why), and the whole checked as the store reads it.
  const database = s.DATABASE_URL ? withPasswordFile(withEnvironmentDefaults(s.DATABASE_URL, env), env) : null;
  const databaseUrl = database?.url ?? null;

  const baseUrl = checkBaseUrl(s.OPENAI_BASE_URL);
  const proxyUrl = proxyFor(baseUrl, s.HTTPS_PROXY, s.HTTP_PROXY, s.NO_PROXY);
  const allowedModels = parseAllowedModels(s.ALLOWED_MODELS, s.DEFAULT_MODEL);

  const retryBaseMs = int('RETRY_BASE_MS');
  const retryMaxMs = int('RETRY_MAX_MS');
  if (retryMaxMs < retryBaseMs) throw new ConfigError(`RETRY_MAX_MS must be at least RETRY_BASE_MS (${retryBaseMs})`);

  const apiKeyHeader = checkKeyHeader(s.OPENAI_API_KEY_HEADER);
  return deepFreeze({
    upstream: {
      apiKey,
      apiKeyHeader,
      extraHeaders: parseUpstreamHeaders(s.UPSTREAM_HEADERS, apiKeyHeader),
      baseUrl,
      proxyUrl,
      caCertificates: s.UPSTREAM_CA_FILE ? readCaFile(settingPath('UPSTREAM_CA_FILE', s.UPSTREAM_CA_FILE, cwd)) : [],
      defaultModel: s.DEFAULT_MODEL,
      timeoutMs: int('UPSTREAM_TIMEOUT_SECONDS') * 1000,
      maxResponseBytes: parseByteSize('UPSTREAM_RESPONSE_LIMIT', s.UPSTREAM_RESPONSE_LIMIT),
      stream: s.UPSTREAM_STREAM === 'true',
      rpm: (s.UPSTREAM_RPM as unknown as number | undefined) ?? null,
      tpm: (s.UPSTREAM_TPM as unknown as number | undefined) ?? null,
    },
    db: { path: settingPath('PROXY_DB_PATH', s.PROXY_DB_PATH, cwd), sync: s.PROXY_DB_SYNC as 'full' | 'normal', url: databaseUrl, schema: s.DATABASE_SCHEMA },
    clients,
    http: {
      host: s.HOST,
      port: int('PORT'),
      bodyLimitBytes: parseByteSize('BODY_LIMIT', s.BODY_LIMIT),
      trustProxy: parseTrustProxy(s.TRUST_PROXY),
      allowedModels,
      healthRequiresWorker: s.HEALTH_REQUIRE_WORKER === 'true',
      metricsAllow: parseAllowList(s.METRICS_ALLOW),
    },
    clientsFile,
    rateLimits: {
      createsPerIp: parseRate(s.RATE_LIMIT_PER_IP),
      createsPerKey: parseRate(s.RATE_LIMIT_PER_KEY),
      readsPerIp: parseRate(s.RATE_LIMIT_READS_PER_IP),
    },
    log: { level: s.LOG_LEVEL as Config['log']['level'], format: s.LOG_FORMAT as Config['log']['format'], dir: s.LOG_DIR ? settingPath('LOG_DIR', s.LOG_DIR, cwd) : null },
    jobs: { ttlSeconds: int('JOB_TTL_SECONDS'), retentionSeconds: int('RESULT_RETENTION_SECONDS'), maxAttempts: int('MAX_ATTEMPTS') },
    worker: {
      concurrency: int('WORKER_CONCURRENCY'),
      retryBaseMs,
      retryMaxMs,
      leaseMs: int('LEASE_SECONDS') * 1000,
      pollMs: int('WORKER_POLL_MS'),
      shutdownGraceMs: int('SHUTDOWN_GRACE_SECONDS') * 1000,
    },
    notes: [...nameNotes.map((n) => n.line), ...(database?.note ? [database.note] : [])],
  });
}

/**
 * A setting that names a file or folder takes a path. A `file:` URL there (SQLite's URI form for
 * PROXY_DB_PATH, `file:…?mode=rwc`, or an ORM's `sqlite:///…`) was taken as a relative path:
 * folders named `file:` or `sqlite:` made under the working directory, and the database or the
 * logs in them. A PostgreSQL URL belongs in DATABASE_URL. The value is not echoed: a URL may hold
 * a password.
 */
function settingPath(name: SettingName, value: string, cwd: string): string {
  // Two letters at least: `C:/data` is a drive, not a scheme.
  const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(value)?.[1]?.toLowerCase();
  if (name === 'PROXY_DB_PATH' && (scheme === 'postgres' || scheme === 'postgresql')) throw new ConfigError('PROXY_DB_PATH holds a PostgreSQL URL: set DATABASE_URL to it instead');
  if (scheme === 'file' || (name === 'PROXY_DB_PATH' && (scheme === 'sqlite' || scheme === 'sqlite3'))) {
    throw new ConfigError(`${name} is a path, not a URI (${scheme}:…): write the path alone`);
  }
  return resolve(cwd, value);
}

/**
 * The upstream's base URL must be one the client can call as given: a query string is kept and sent
 * with every call (some gateways route on one), but a user or password in it would be dropped
 * (the key goes in OPENAI_API_KEY) and a fragment is never sent, so either is refused rather than
 * ignored. The value is not echoed: it may hold a password.
 */
function checkBaseUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError('OPENAI_BASE_URL is not a valid URL (like https://api.openai.com/v1)');
  }
  if (url.username || url.password) throw new ConfigError('OPENAI_BASE_URL must not hold a user or password; put the upstream key in OPENAI_API_KEY');
  if (url.hash) throw new ConfigError('OPENAI_BASE_URL must not end with a #fragment: it is never sent');
  // Trailing slashes off the path only: a query string's own slashes are the gateway's business.
  url.pathname = url.pathname.replace(/\/+$/, '');
  // The endpoint itself, pasted as the base (as an example's curl line shows it): each call would
  // go to …/chat/completions/chat/completions, and every job fail with the upstream's 404.
  const base = baseOfEndpoint(url);
  if (base) {
    throw new ConfigError(
      `OPENAI_BASE_URL ends with /chat/completions, which the worker adds to each call itself: set it to the base, ${base}${url.search ? ' and its query string' : ''}`,
    );
  }
  return url.search ? url.href : url.href.replace(/\/$/, '');
}

/**
 * The proxy for the upstream's base URL, chosen as curl chooses: HTTPS_PROXY for an https URL,
 * HTTP_PROXY for an http one, none when NO_PROXY names the host. A NO_PROXY entry matches its host
 * and every subdomain (a leading `.` or `*.` changes nothing), with `:port` only that port, and `*`
 * every host. The proxy's URL is not echoed: it may hold a password.
 */
export function proxyFor(baseUrl: string, httpsProxy: string | undefined, httpProxy: string | undefined, noProxy: string | undefined): string | null {
  const base = new URL(baseUrl);
  const name = base.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY';
  const proxy = base.protocol === 'https:' ? httpsProxy : httpProxy;
  if (!proxy) return null;
  let url: URL;
  try {
    // Without a scheme (proxy.example:3128), as curl takes it: http.
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(proxy) ? proxy : `http://${proxy}`);
  } catch {
    throw new ConfigError(`${name} is not a valid URL (like http://proxy.example:3128)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${name} must be an http:// or https:// proxy (got ${url.protocol}//)`);
  if (!url.hostname || (url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new ConfigError(`${name} must be a proxy's address only, like http://user:password@proxy.example:3128`);
  }
  return bypassesProxy(base, noProxy ?? '') ? null : url.href;
}

/** Whether NO_PROXY names the URL's host (see proxyFor). */
function bypassesProxy(base: URL, noProxy: string): boolean {
  const host = base.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = base.port || (base.protocol === 'https:' ? '443' : '80');
  for (const raw of noProxy.split(/[\s,]+/).filter(Boolean)) {
    if (raw === '*') return true;
    if (raw.includes('/')) {
      // A subnet: matches an address written in the URL (names are not resolved for it).
      const [address = '', prefix = ''] = raw.split('/');
      const family = isIP(address);
      if (family && isIP(host) === family && /^[0-9]{1,3}$/.test(prefix)) {
        const subnet = new BlockList();
        try {
          subnet.addSubnet(address, Number(prefix), family === 4 ? 'ipv4' : 'ipv6');
        } catch {
          continue;
        }
        if (subnet.check(host, family === 4 ? 'ipv4' : 'ipv6')) return true;
      }
      continue;
    }
    // host, host:port, [v6]:port, or a bare IPv6 address.
    const m = isIP(raw) === 6 ? [raw, raw, undefined] : /^(\[[^\]]*\]|[^:]+)(?::([0-9]+))?$/.exec(raw);
    if (!m) continue;
    const entry = (m[1] as string)
      .replace(/^\[|\]$/g, '')
      .replace(/^\*?\./, '')
      .toLowerCase();
    if (m[2] !== undefined && m[2] !== port) continue;
    if (host === entry || host.endsWith(`.${entry}`)) return true;
  }
  return false;
}

/**
 * ALLOWED_MODELS as a list, or null when unset. A list must name at least one model the create
 * schema accepts, and DEFAULT_MODEL among them: otherwise every request without a model is refused.
 */
function parseAllowedModels(text: string | undefined, defaultModel: string): string[] | null {
  if (text === undefined) return null;
  const models = text
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
  if (models.length === 0) throw new ConfigError('ALLOWED_MODELS names no model; leave it unset to allow any');
  const bad = models.find((m) => !MODEL_PATTERN.test(m));
  if (bad !== undefined) throw new ConfigError(`ALLOWED_MODELS: ${JSON.stringify(bad)} is not a model name (A-Z a-z 0-9 . _ : / -, at most 100)`);
  if (!models.includes(defaultModel)) {
    throw new ConfigError(`ALLOWED_MODELS does not include DEFAULT_MODEL (${defaultModel}): every request that names no model would be refused`);
  }
  return models;
}

function parseAllowList(text: string | undefined): string[] {
  const entries = (text ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  for (const entry of entries) {
    const [address, prefix, extra] = entry.split('/');
    const family = isIP(address ?? '');
    const max = family === 4 ? 32 : 128;
    if (!family || extra !== undefined || (prefix !== undefined && !(/^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= max))) {
      throw new ConfigError(`METRICS_ALLOW: ${JSON.stringify(entry)} is not an address or subnet (like 127.0.0.1 or 10.0.0.0/8)`);
    }
  }
  return entries;
}

function parseTrustProxy(text: string): boolean | number | string {
  if (text === 'false') return false;
  if (text === 'true') return true;
  if (/^[0-9]+$/.test(text)) return Number(text);
  return text;
}

function readDotenv(path: string): Record<string, string> {
  if (!existsSync(path)) return {};
  try {
    return parseDotenv(readTextFile(path));
  } catch (err) {
    throw new ConfigError(`.env at ${path} cannot be read: ${(err as Error).message}`);
  }
}

function readUpstreamKey(inline: string | undefined, file: string | undefined, cwd: string): string | null {
  if (inline) return checkUpstreamKey(inline, 'OPENAI_API_KEY');
  if (!file) return null;
  const path = settingPath('OPENAI_API_KEY_FILE', file, cwd);
  let key: string;
  try {
    key = readTextFile(path).trim();
  } catch (err) {
    throw new ConfigError(`OPENAI_API_KEY_FILE cannot be read (${file}): ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (!key) throw new ConfigError(`OPENAI_API_KEY_FILE points at an empty file (${file})`);
  return checkUpstreamKey(key, `the key in OPENAI_API_KEY_FILE (${file})`);
}

/**
 * Headers each call sets itself: the key in one of them would be sent twice, or in place of what
 * the call needs.
 */
const CALL_HEADERS = new Set([
  'content-type',
  'content-length',
  'accept',
  'accept-encoding',
  'host',
  'connection',
  'transfer-encoding',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'proxy-authorization',
]);

function checkKeyHeader(name: string): string {
  const header = name.toLowerCase();
  if (CALL_HEADERS.has(header))
    throw new ConfigError(
      `OPENAI_API_KEY_HEADER cannot be ${header}: each call sets that header itself; use authorization, or the header your upstream reads the key from (api-key for Azure OpenAI)`,
    );
  return header;
}

/**
 * UPSTREAM_HEADERS as a header object: `Name=value` pairs, comma-separated, each value %-decoded (so
 * a comma or a % in one is %2C or %25), as OTEL_EXPORTER_OTLP_HEADERS reads. What a header cannot
 * carry, a header each call sets itself, the key's own header, or a name given twice stops the
 * start; a message names the header, never its value.
 */
function parseUpstreamHeaders(text: string | undefined, keyHeader: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of (text ?? '').split(',')) {
    if (pair.trim() === '') continue;
    const at = pair.indexOf('=');
    const name = (at < 0 ? pair : pair.slice(0, at)).trim().toLowerCase();
    if (at < 0 || !/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(name))
      throw new ConfigError(`UPSTREAM_HEADERS must be Name=value pairs, comma-separated (OpenAI-Project=proj_abc,Helicone-Auth=Bearer%20sk-…)`);
    let value: string;
    try {
      value = decodeURIComponent(pair.slice(at + 1).trim());
    } catch {
      throw new ConfigError(`UPSTREAM_HEADERS: the value of ${name} holds a % that does not start a %-escape (write a % as %25)`);
    }
    if (!/^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?$/.test(value))
      throw new ConfigError(`UPSTREAM_HEADERS: the value of ${name} is empty or holds what a header cannot carry (printable ASCII only)`);
    if (CALL_HEADERS.has(name) || name === keyHeader)
      throw new ConfigError(`UPSTREAM_HEADERS cannot set ${name}: each call sets it itself${name === keyHeader ? ' (it carries OPENAI_API_KEY)' : ''}`);
    if (name in headers) throw new ConfigError(`UPSTREAM_HEADERS names ${name} twice`);
    headers[name] = value;
  }
  return headers;
}

/**
 * The key goes out as `Authorization: Bearer <key>` (or alone, in OPENAI_API_KEY_HEADER's header).
 * A character a header cannot carry (a curly quote pasted from a document, a second line in the
 * key file) made undici refuse every call, retried as `upstream_unreachable` until each job's
 * attempts ran out, the worker running as if all were well; a space (a key pasted as
 * "Bearer sk-…") got a 401 for every job. Said at start instead, by position and character, never
 * quoting the key.
 */
function checkUpstreamKey(key: string, name: string): string {
  const bad = /[^\x21-\x7e]/.exec(key);
  if (!bad) return key;
  const c = bad[0];
  const what =
    c === ' ' ? 'a space' : c === '\n' || c === '\r' ? 'a line break' : c === '\t' ? 'a tab' : `the character U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
  const hint = /^bearer\s/i.test(key) ? ': set the key alone, without "Bearer "' : ': a key is printable ASCII without spaces';
  throw new ConfigError(`${name} holds ${what} at position ${bad.index + 1}, which cannot go in an HTTP header${hint}`);
}

/** The certificates of a PEM file, each checked to be one, so a wrong file stops the start, not the first call. */
function readCaFile(file: string): string[] {
  let text: string;
  try {
    text = readTextFile(file);
  } catch (err) {
    throw new ConfigError(`UPSTREAM_CA_FILE cannot be read (${file}): ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (pems.length === 0) throw new ConfigError(`UPSTREAM_CA_FILE holds no PEM certificate (-----BEGIN CERTIFICATE-----) (${file})`);
  pems.forEach((pem, i) => {
    try {
      new X509Certificate(pem);
    } catch {
      throw new ConfigError(`UPSTREAM_CA_FILE: certificate ${i + 1} of ${pems.length} cannot be read (${file})`);
    }
  });
  return pems;
}

function describeBadSetting(name: string, problem: string, value: unknown): string {
  const spec = (SETTINGS as Record<string, SettingSpec>)[name];
  const shown = spec?.secret || value === undefined ? '' : ` (got ${JSON.stringify(String(value))})`;
  const hint = spec ? `: ${spec.doc}` : '';
  return `${name} ${problem}${shown}${hint}`;
}

/** "1mb" → 1048576; the units Express's body parsers use, base 1024. */
export function parseByteSize(name: SettingName, text: string): number {
  const m = /^([0-9]+)(b|kb|mb)?$/.exec(text);
  if (!m) throw new ConfigError(`${name} must look like 512kb or 1mb (got ${JSON.stringify(text)})`);
  const unit = m[2] === 'mb' ? 1024 * 1024 : m[2] === 'kb' ? 1024 : 1;
  const bytes = Number(m[1]) * unit;
  // 0 would refuse everything: never what anyone meant.
  if (bytes < 1) throw new ConfigError(`${name} must be at least 1 byte (got ${JSON.stringify(text)})`);
  return bytes;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** Where the shared state lives: a PostgreSQL URL when set, else the SQLite file. */
export interface DatabaseSettings {
  /** The SQLite file (used when no DATABASE_URL is set). */
  readonly path: string;
  readonly sync: 'full' | 'normal';
  /** PostgreSQL instead of SQLite, when set. */
  readonly url: string | null;
  readonly schema: string;
}

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
function withEnvironmentDefaults(url: string, env: Readonly<Record<string, string | undefined>>, name = 'DATABASE_URL'): { url: string; parts: DatabaseUrlParts } {
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
function withService(url: string, env: Readonly<Record<string, string | undefined>>, name: string): string {
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
 * A PostgreSQL URL given otherwise than as DATABASE_URL (`copy-jobs --from`), read as DATABASE_URL
 * is: libpq's environment variables and password file fill what it leaves out, and the whole is
 * checked, a problem naming `name`. With a note to say when a password file was left unread.
 */
export function readDatabaseUrl(url: string, name: string, env: Readonly<Record<string, string | undefined>> = process.env): { url: string; note?: string } {
  return withPasswordFile(withEnvironmentDefaults(url, env, name), env);
}

/**
 * The URL with the password libpq's password file gives it, where it names none: the URL's
 * `passfile`, else PGPASSFILE, else ~/.pgpass (%APPDATA%\postgresql\pgpass.conf on Windows), read
 * once at start (password-file.ts), so the start's redaction holds it as it holds the URL's own.
 * With a note to say at start when the file is there and left unread.
 */
function withPasswordFile(database: { url: string; parts: DatabaseUrlParts }, env: Readonly<Record<string, string | undefined>>): { url: string; note?: string } {
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
function defaultUser(env: Readonly<Record<string, string | undefined>>): string | undefined {
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

/**
 * Whether the upstream key would cross a network unencrypted: an http:// base URL whose host is not
 * this machine (a model server on the LAN, or a typo for https). Said at the worker's start, not
 * refused: a trusted network may be meant.
 */
export function keyGoesInClear(baseUrl: string): boolean {
  const url = new URL(baseUrl);
  if (url.protocol !== 'http:') return false;
  return !isLoopbackHost(url.hostname);
}

/** Whether a host name or address (IPv6 in brackets or not) is this machine's loopback. */
export function isLoopbackHost(name: string): boolean {
  const host = name.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * Why TRUST_PROXY lets a client choose the address its rate limits count, or null. `true` or a hop
 * count believes X-Forwarded-For from any peer: safe only while no client reaches the API but
 * through the proxy. Listening on this machine alone, only a local proxy can; listening on another
 * address, a client that connects directly sends the header it likes. Said at start, not refused:
 * a firewall may keep clients out.
 */
export function trustProxySpoofable(http: { host: string; trustProxy: boolean | number | string }): string | null {
  // A hop count of 0 believes no one.
  const believesAnyone = http.trustProxy === true || (typeof http.trustProxy === 'number' && http.trustProxy > 0);
  if (!believesAnyone || isLoopbackHost(http.host)) return null;
  return `TRUST_PROXY=${http.trustProxy} believes X-Forwarded-For from any peer, and HOST=${http.host} lets clients connect directly: one that does can name any address for the rate limits to count; name the proxy instead (TRUST_PROXY=loopback, or its address), or listen on 127.0.0.1 behind it`;
}

/**
 * The base URL to set when `url` is the chat endpoint itself (…/v1/chat/completions gives …/v1),
 * without its query string; null for any other address. Trailing slashes and case are let pass, as
 * servers route them alike. Used at start, and for an upstream's redirect.
 */
export function baseOfEndpoint(url: URL): string | null {
  const endpoint = /\/chat\/completions\/*$/i.exec(url.pathname);
  return endpoint ? `${url.origin}${url.pathname.slice(0, endpoint.index)}` : null;
}

/**
 * The values among UPSTREAM_HEADERS to keep out of logs and jobs' errors: a gateway's key there is as
 * secret as the upstream's. Each of 8 characters or more, with and without its "Bearer "; a shorter
 * one (a project id, a flag) would only blot out ordinary words.
 */
export function headerSecrets(headers: Readonly<Record<string, string>>): string[] {
  return Object.values(headers)
    .flatMap((value) => [value, value.replace(/^bearer\s+/i, '')])
    .filter((value) => value.length >= 8);
}

/** Every secret value in the configuration, for the logger's redaction list. */
export function secretValues(config: Config): string[] {
  const dbPassword = config.db.url ? parseDatabaseUrl(config.db.url).password : '';
  // An encrypted client key's passphrase (libpq's sslpassword) is as secret as the password.
  const keyPassphrase = config.db.url ? (queryParam(config.db.url, 'sslpassword') ?? '') : '';
  const proxy = config.upstream.proxyUrl ? new URL(config.upstream.proxyUrl) : null;
  // The URL holds the password percent-encoded; a message may carry either form.
  const proxyPassword = proxy?.password ? [proxy.password, decodeURIComponent(proxy.password)] : [];
  return [
    config.upstream.apiKey ?? '',
    ...headerSecrets(config.upstream.extraHeaders),
    dbPassword,
    keyPassphrase,
    ...proxyPassword,
    ...config.clients.flatMap((c) => [c.key, ...c.secrets]),
  ].filter(Boolean);
}

/**
 * Which database the programs use, fit to print: the SQLite path, or where the PostgreSQL server is
 * (user, host, port, database) without the password or the URL's other options.
 */
export function describeDatabase(db: DatabaseSettings): string {
  if (!db.url) return `sqlite ${db.path}`;
  const parts = parseDatabaseUrl(db.url);
  const { user, port } = parts;
  // What pg connects to when the URL and the environment name none: localhost, and the user's database.
  const host = parts.host || 'localhost';
  const database = parts.database || user;
  const who = user ? `${user}@` : '';
  // An IPv6 address in brackets, as in the URL: `::1:5432` reads as an address without a port.
  const shown = host.includes(':') ? `[${host}]` : host;
  const where = isSocketHost(host) ? `${who}/${database}?host=${host}` : `${who}${shown}${port ? `:${port}` : ''}/${database}`;
  // The address connected to, where hostaddr gives one beside the host's name.
  const address = queryParam(db.url, 'hostaddr');
  return `postgres ${where}${address ? ` at ${address}` : ''} (schema ${db.schema})`;
}
