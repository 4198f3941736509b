import { RATE_PATTERN } from './rate-spec.js';
import { MODEL_PATTERN } from './schemas.js';

/**
 * Every setting the product reads, with its default and what it does. `.env.example` must list each
 * of these (a test enforces it); secrets, and settings that may hold one, are marked so no error message
 * ever repeats their value. A table, one setting a line, which the formatter is told to leave so.
 * A value is checked trimmed, and an empty one is unset (its default applies): none needs a minimum
 * length, and minLength would need a helper of Ajv's that its compiled code cannot import.
 */
// prettier-ignore
export const SETTINGS = {
  OPENAI_API_KEY: { type: 'string', secret: true, doc: 'Upstream API key (the worker needs it; or use OPENAI_API_KEY_FILE).' },
  OPENAI_API_KEY_FILE: { type: 'string', doc: 'File holding the upstream key (systemd credentials); used when OPENAI_API_KEY is unset.' },
  // Gateways in front of a model read their own headers (Helicone-Auth, cf-aig-authorization,
  // OpenAI-Project); marked secret, as a value may be a gateway's key. OpenTelemetry's format.
  UPSTREAM_HEADERS: { type: 'string', secret: true, doc: 'Headers sent with every upstream call besides the key: Name=value pairs, comma-separated, values %-encoded where they hold a comma (OpenAI-Project=proj_abc,Helicone-Auth=Bearer%20sk-…).' },
  // Azure OpenAI takes its keys in an api-key header; a Bearer token there is for Entra ID only.
  OPENAI_API_KEY_HEADER: { type: 'string', default: 'authorization', pattern: '^[A-Za-z0-9-]{1,64}$', doc: 'The header that carries the upstream key: authorization sends "Authorization: Bearer <key>"; another name (api-key for Azure OpenAI) carries the key alone.' },
  // Marked secret because a URL may carry a password or a gateway's key in its query string.
  OPENAI_BASE_URL: { type: 'string', secret: true, default: 'https://api.openai.com/v1', pattern: '^https?://[^\\s]+$', doc: 'Any OpenAI-compatible API base URL; a query string in it goes with every call.' },
  // The standard names curl and the PHP tool's curl honour; the lowercase form is read first, as curl does.
  HTTPS_PROXY: { type: 'string', secret: true, lowercase: true, pattern: '^\\S+$', doc: 'Proxy for an https OPENAI_BASE_URL: http://[user:password@]host:port (https_proxy is read first). Unset: the upstream is called directly.' },
  HTTP_PROXY: { type: 'string', secret: true, lowercase: true, pattern: '^\\S+$', doc: 'Proxy for an http OPENAI_BASE_URL, as HTTPS_PROXY (http_proxy is read first).' },
  NO_PROXY: { type: 'string', lowercase: true, doc: 'Hosts called directly despite a proxy, comma-separated: a name (its subdomains too), an address or subnet (10.0.0.0/8), host:port, or * for all (no_proxy is read first).' },
  // Node trusts its own copy of Mozilla's list, not the system's, and reads NODE_EXTRA_CA_CERTS only
  // from its environment at start (never from .env): a CA that curl found in /etc/ssl/certs for the
  // PHP tool needs naming here.
  UPSTREAM_CA_FILE: { type: 'string', doc: "PEM file of CA certificates trusted for the upstream (and an https proxy) besides Node's own list: the CA of a proxy that inspects TLS, or a private CA." },
  DEFAULT_MODEL: { type: 'string', default: 'gpt-4o-mini', pattern: MODEL_PATTERN.source, doc: 'Model used when a request names none.' },
  DATABASE_URL: { type: 'string', secret: true, pattern: '^postgres(ql)?://\\S*$', doc: 'postgres://user:password@host:5432/db (or postgres://user@/db?host=/var/run/postgresql for a local socket) to run on PostgreSQL (several hosts) instead of PROXY_DB_PATH.' },
  DATABASE_SCHEMA: { type: 'string', default: 'public', pattern: '^[a-z_][a-z0-9_]{0,62}$', doc: 'PostgreSQL schema for the tables (created if missing).' },
  PROXY_DB_SYNC: { type: 'string', default: 'full', enum: ['full', 'normal'], doc: 'full: a 202 survives power loss (the WAL is flushed with fdatasync before the answer; writes made together share a flush); normal: survives a process crash only.' },
  PROXY_DB_PATH: { type: 'string', default: './data/requests.sqlite', doc: 'SQLite file shared by API and worker; its folder is created.' },
  PROXY_KEY: { type: 'string', secret: true, pattern: '^[\\x21-\\x7e]{16,256}$', doc: 'Client key sent in X-Proxy-Key (16+ printable characters).' },
  PROXY_SECRET: { type: 'string', secret: true, pattern: '^[\\x21-\\x7e]{32,512}$', doc: 'HMAC secret of that client (32+ printable characters).' },
  PROXY_CLIENTS_FILE: { type: 'string', doc: 'JSON list of clients (name, key, secret or secrets, optional rate_limit); SIGHUP reloads it.' },
  RATE_LIMIT_PER_IP: { type: 'string', default: '60/min', pattern: RATE_PATTERN, doc: 'Creates per client IP: N/s, N/min or N/h (bursts up to N), or off.' },
  RATE_LIMIT_PER_KEY: { type: 'string', default: '120/min', pattern: RATE_PATTERN, doc: 'Creates per client key, unless the clients file gives the client its own; or off.' },
  RATE_LIMIT_READS_PER_IP: { type: 'string', default: '600/min', pattern: RATE_PATTERN, doc: 'Reads (result, cancel, worker pass) per client IP; or off.' },
  TRUST_PROXY: { type: 'string', default: 'false', pattern: '^[A-Za-z0-9.:/, _-]{1,512}$', doc: "Express's trust proxy: false, true, a hop count, loopback, or addresses/subnets; only then is X-Forwarded-For believed." },
  ALLOWED_MODELS: { type: 'string', pattern: '^[A-Za-z0-9._:/ ,-]*$', doc: 'Comma-separated models clients may ask for, DEFAULT_MODEL among them (unset: any).' },
  HEALTH_REQUIRE_WORKER: { type: 'string', default: 'false', enum: ['true', 'false'], doc: 'true: /health answers 503 when no worker has been seen for 30 s (for load balancers).' },
  METRICS_ALLOW: { type: 'string', pattern: '^[0-9A-Fa-f.:/, ]*$', doc: 'Addresses or subnets that may read /metrics without a client key, e.g. 127.0.0.1,10.0.0.0/8 (unset: key required).' },
  HOST: { type: 'string', default: '127.0.0.1', doc: 'Address proxy-api listens on.' },
  PORT: { type: 'integer', default: 8000, minimum: 0, maximum: 65535, doc: 'Port proxy-api listens on (0 picks a free one).' },
  LOG_LEVEL: { type: 'string', default: 'info', enum: ['error', 'warn', 'info', 'debug'], doc: 'error, warn, info or debug.' },
  LOG_FORMAT: { type: 'string', default: 'auto', enum: ['auto', 'json', 'text'], doc: 'auto: text on a terminal, JSON lines otherwise.' },
  LOG_DIR: { type: 'string', doc: 'Also write JSON logs to <LOG_DIR>/api.log and worker.log, rotated at 10 MB, 5 files kept (unset: stdout only, for the journal).' },
  BODY_LIMIT: { type: 'string', default: '1mb', pattern: '^[0-9]+(b|kb|mb)?$', doc: 'Largest request body accepted (b, kb or mb).' },
  JOB_TTL_SECONDS: { type: 'integer', default: 3600, minimum: 1, maximum: 604800, doc: 'Deadline of a job when the request gives no ttl.' },
  MAX_ATTEMPTS: { type: 'integer', default: 5, minimum: 1, maximum: 100, doc: 'Upstream attempts per job before it fails.' },
  RETRY_BASE_MS: { type: 'integer', default: 1000, minimum: 1, maximum: 3600000, doc: 'First retry delay; doubles each attempt, with jitter.' },
  RETRY_MAX_MS: { type: 'integer', default: 60000, minimum: 1, maximum: 86400000, doc: 'Longest delay between two attempts.' },
  UPSTREAM_TIMEOUT_SECONDS: { type: 'integer', default: 120, minimum: 1, maximum: 3600, doc: 'Per-attempt timeout of an upstream call.' },
  UPSTREAM_STREAM: { type: 'string', default: 'false', enum: ['true', 'false'], doc: 'true: the worker asks for each answer streamed and puts it together, for a model that only answers streamed, or a balancer on the way that cuts a connection silent too long (Cloudflare: 100 s); the job reads the same.' },
  UPSTREAM_RESPONSE_LIMIT: { type: 'string', default: '16mb', pattern: '^[0-9]+(b|kb|mb)?$', doc: 'Largest upstream answer a worker reads (b, kb or mb); a larger one fails the job with upstream_response_too_large.' },
  UPSTREAM_RPM: { type: 'integer', minimum: 1, maximum: 10000000, doc: 'Upstream requests per minute for all workers together (unset: no limit); calls are spread evenly.' },
  UPSTREAM_TPM: { type: 'integer', minimum: 1, maximum: 1000000000, doc: 'Upstream tokens per minute for all workers together (unset: no limit); estimated from the request.' },
  WORKER_CONCURRENCY: { type: 'integer', default: 8, minimum: 1, maximum: 1024, doc: 'Upstream calls one worker process runs at once.' },
  LEASE_SECONDS: { type: 'integer', default: 30, minimum: 2, maximum: 3600, doc: 'How long a claim holds a job without renewal; a dead worker\'s jobs return after it, and a call whose renewals go unanswered that long is abandoned.' },
  WORKER_POLL_MS: { type: 'integer', default: 20, minimum: 5, maximum: 10000, doc: 'How often an idle worker checks the database for changes (a cheap PRAGMA, not a query of the queue) where nothing tells it of them; told of each commit (the SQLite log watched, PostgreSQL notifications), it checks every second, or at this interval if longer, and at this interval for 100 ms after a notice.' },
  SHUTDOWN_GRACE_SECONDS: { type: 'integer', default: 30, minimum: 0, maximum: 3600, doc: 'On SIGTERM, how long calls in flight may finish before they are put back.' },
  RESULT_RETENTION_SECONDS: { type: 'integer', default: 604800, minimum: 60, maximum: 31536000, doc: 'Finished jobs are deleted this long after they finish (600 s at the least, as long as a signed request can be sent again).' },
} as const satisfies Record<string, SettingSpec>;

export interface SettingSpec {
  type: 'string' | 'integer';
  doc: string;
  default?: string | number;
  secret?: boolean;
  /** Also read in lowercase, which wins (the proxy variables' convention). */
  lowercase?: boolean;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  enum?: readonly string[];
}

export type SettingName = keyof typeof SETTINGS;

/**
 * The JSON schema the settings are checked against: each setting's own keys, less the ones only the
 * product reads. Compiled ahead, not at start: see scripts/generate-validators.ts.
 */
export const settingsSchema = {
  type: 'object',
  properties: Object.fromEntries(
    Object.entries(SETTINGS as Record<string, SettingSpec>).map(([name, spec]) => {
      const { doc: _doc, secret: _secret, lowercase: _lowercase, ...jsonSchema } = spec;
      return [name, jsonSchema];
    }),
  ),
} as const;
