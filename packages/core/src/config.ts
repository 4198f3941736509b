import { existsSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { resolve } from 'node:path';
import { parse as parseDotenv } from 'dotenv';
import proxyAddr from 'proxy-addr';
import type { ValidateFunction } from 'ajv';
import { isSocketHost, queryParam } from './store/postgres/connection-url.js';
import { completeDatabaseUrl, parseDatabaseUrl } from './store/postgres/database-url.js';
import { ajvProblem } from './ajv-message.js';
import { ConfigError } from './errors.js';
import { loadClientsFile, mergeClients, noClient } from './clients-file.js';
import { parseRate, type RateLimitSpec } from './rate-spec.js';
import { readTextFile } from './text-file.js';
import { MODEL_PATTERN } from './schemas.js';
import { SETTINGS, type SettingName, type SettingSpec } from './settings.js';
import { settingNameNotes } from './setting-names.js';
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

  // The validator turns numbers' text into numbers in place (coerceTypes); a refusal names the text.
  const given = { ...raw };
  if (!validateSettings(raw)) {
    const err = validateSettings.errors?.[0];
    const name = err?.instancePath.replace(/^\//, '') ?? 'configuration';
    // A pattern's regex is no help to an operator; the setting's doc, which follows, says its form.
    const problem = err?.keyword === 'pattern' ? 'is malformed' : err ? ajvProblem(err) : 'is invalid';
    throw new ConfigError(describeBadSetting(name, problem, given[name]));
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
  // URL's own (withEnvironmentDefaults in database-url.ts says why), and the whole checked as the store reads it.
  const database = s.DATABASE_URL ? completeDatabaseUrl(s.DATABASE_URL, 'DATABASE_URL', env) : null;
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
  // Express hands this list to proxy-addr as the app is built, split and trimmed as here, and an
  // entry it does not know threw there: "invalid IP address: maybe", naming no setting, exit 1.
  for (const entry of text.split(',').map((e) => e.trim())) {
    try {
      proxyAddr.compile(entry);
    } catch {
      throw new ConfigError(
        `TRUST_PROXY: ${JSON.stringify(entry)} is not an address or subnet (like 10.0.0.0/8), nor loopback, linklocal or uniquelocal; the setting is false, true, a hop count, or a comma-separated list of those`,
      );
    }
  }
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

/**
 * A PostgreSQL URL given otherwise than as DATABASE_URL (`copy-jobs --from`), read as DATABASE_URL
 * is, against this process's environment (store/postgres/database-url.ts).
 */
export function readDatabaseUrl(url: string, name: string, env: Readonly<Record<string, string | undefined>> = process.env): { url: string; note?: string } {
  return completeDatabaseUrl(url, name, env);
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
