/**
 * A call that got no answer, told by its error's code: the proxy refusing the tunnel, this machine
 * out of descriptors or ports, a certificate turned down, or the network itself; each with words
 * that say what the code means.
 */
import { errors as undiciErrors } from 'undici';
import type { UpstreamOutcome } from './upstream-client.js';

/**
 * Errors of this machine's, met opening a connection: what each means, and what lifts it. Retried as
 * upstream faults, they spent every attempt within a second: a worker allowed 80 descriptors at
 * concurrency 128 failed 95 of 150 jobs as `upstream_unreachable`, none of them ever sent.
 */
const LOCAL_SHORTAGE = new Map<string, string>([
  ['EMFILE', 'too many open files in this process; raise its open-file limit (LimitNOFILE= under systemd, ulimit -n) or lower WORKER_CONCURRENCY'],
  ['ENFILE', 'too many open files on this machine; raise fs.file-max or lower WORKER_CONCURRENCY'],
  ['EADDRNOTAVAIL', 'no local port left for a new connection; widen net.ipv4.ip_local_port_range or lower WORKER_CONCURRENCY'],
  ['ENOBUFS', 'no buffer space left for a new socket'],
  ['ENOMEM', 'no memory left for a new socket'],
]);

/**
 * Why TLS verification turns down a certificate, as OpenSSL (through Node) names it. Met when a
 * proxy that inspects TLS, or a private CA, signs what the upstream presents: every call meets the
 * same certificate until someone trusts its CA (NODE_EXTRA_CA_CERTS) or fixes it. Retried as
 * `upstream_unreachable` before, a job spent all its attempts on it, and its error did not say why.
 */
const CERTIFICATE_REJECTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export function networkError(err: unknown): UpstreamOutcome {
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  // undici's words when the proxy answers CONNECT with anything but 200 (407: it wants credentials).
  const refused = /^Proxy response \((\d{3})\)/.exec(e.message ?? '');
  if (refused) return { kind: 'proxy_refused', status: Number(refused[1]), message: `the proxy refused the connection to the upstream: HTTP ${refused[1]}` };
  const code = e.cause?.code ?? e.code ?? 'network_error';
  const shortage = LOCAL_SHORTAGE.get(code);
  if (shortage) return { kind: 'local_shortage', code, message: `could not open an upstream connection: ${code}, ${shortage}` };
  if (CERTIFICATE_REJECTED.has(code)) return { kind: 'certificate_rejected', code, message: `the upstream's TLS certificate was rejected: ${code}` };
  const isUndici = err instanceof undiciErrors.UndiciError;
  if (!isUndici && !e.message) return { kind: 'network_error', code, message: 'upstream connection failed' };
  // undici's own words for a closed socket ("other side closed") are fixed phrases: shown with it.
  const said = code === 'UND_ERR_SOCKET' && e.message && /^[a-z ]{1,40}$/.test(e.message) ? `: ${e.message}` : '';
  const words = NETWORK_WORDS.get(code);
  return { kind: 'network_error', code, message: `upstream connection failed: ${code}${words ? ` (${words}${said})` : ''}` };
}

/**
 * What a code says, in words: on a job's error, undici's codes (UND_ERR_SOCKET) read as jargon to
 * the client, and the system's (ECONNREFUSED) as a puzzle to some.
 */
const NETWORK_WORDS = new Map<string, string>([
  ['UND_ERR_SOCKET', 'the connection ended before the answer was complete'],
  ['ECONNRESET', 'the connection was reset before the answer was complete'],
  ['EPIPE', 'the connection closed while the call was being sent'],
  ['ECONNREFUSED', 'nothing accepts connections at that address and port'],
  ['ENOTFOUND', 'the host name does not resolve'],
  ['EAI_AGAIN', 'the host name could not be resolved just now (DNS)'],
  ['EHOSTUNREACH', 'no route to the host'],
  ['ENETUNREACH', 'no route to the network'],
  ['ETIMEDOUT', 'the connection timed out'],
  ['UND_ERR_CONNECT_TIMEOUT', 'the connection could not be opened in time'],
  ['UND_ERR_HEADERS_OVERFLOW', "the answer's headers are larger than the 16 KB the worker reads"],
  ['ERR_SSL_WRONG_VERSION_NUMBER', 'TLS spoken to a server that answers in plain HTTP'],
]);

/**
 * Codes of a call whose connection to the upstream was never opened: nothing takes connections at
 * that address (refused, no route, no such name, no answer to the connect). Unlike a reset or a
 * close, none can come after the request was sent. The worker holds its calls on them
 * (upstream-outage.ts).
 */
const NEVER_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'UND_ERR_CONNECT_TIMEOUT']);

/** Whether a network error's code says the connection was never opened (NEVER_CONNECTED). */
export function neverConnected(code: string): boolean {
  return NEVER_CONNECTED.has(code);
}
