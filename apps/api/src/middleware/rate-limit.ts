import type { Request, RequestHandler, Response } from 'express';
import { AppError, isDatabaseUnavailable, type Budget, type RateLimiter } from '@proxy/core';
import { ctx } from '../context.js';

export interface RateLimitOptions {
  /** Counts each refusal by the budgets that refused it. */
  onRefused?: (names: string[]) => void;
  /**
   * When the limiter's own store cannot serve (a full disk, a lock held past its 5 s wait): true
   * lets the request through, false refuses it with the store's error (503 unavailable). Any other
   * error is a fault and is never passed over.
   */
  passOnStoreError?: boolean;
}

// A store that fails, fails for every request: one warning a minute says so, not one a request
// (on a full disk, a line per request would only fill it faster).
const STORE_ERROR_WARN_EVERY_MS = 60_000;

/**
 * Draws from the budgets `budgetsFor` names, sets the RateLimit headers, and refuses with 429
 * rate_limited and Retry-After when any budget is spent. A refused request stores nothing.
 */
export function rateLimit(limiter: RateLimiter, budgetsFor: (req: Request, res: Response) => Budget[], options: RateLimitOptions = {}): RequestHandler {
  let lastWarnedAt = -Infinity;
  let passedSinceWarning = 0;
  return async (req, res, next) => {
    const budgets = budgetsFor(req, res);
    let result: Awaited<ReturnType<RateLimiter['take']>>;
    try {
      result = await limiter.take(budgets);
    } catch (err) {
      if (!options.passOnStoreError || !isDatabaseUnavailable(err)) throw err;
      passedSinceWarning += 1;
      const at = Date.now();
      if (at - lastWarnedAt >= STORE_ERROR_WARN_EVERY_MS) {
        ctx(res).log.warn('rate limiter unavailable: requests pass unchecked', { err, budgets: budgets.map((b) => b.name), passed: passedSinceWarning });
        lastWarnedAt = at;
        passedSinceWarning = 0;
      }
      next();
      return;
    }
    // Sent with the answer, refused or not (respond.ts).
    ctx(res).rateLimit = result.headers;
    if (!result.allowed) {
      options.onRefused?.(result.refused);
      throw new AppError('rate_limited', `too many requests; retry in ${result.retryAfterSeconds} s`, {
        headers: { 'Retry-After': String(result.retryAfterSeconds) },
      });
    }
    next();
  };
}

/** The caller's address as Express sees it: the socket's, or X-Forwarded-For's only under TRUST_PROXY. */
export function clientIp(req: Request): string {
  return req.ip ?? req.socket.remoteAddress ?? 'unknown';
}

/**
 * clientIp for an app whose `trust proxy` is `trustProxy`. Trusting no proxy, Express's req.ip is
 * the socket's address too, but reached by parsing X-Forwarded-For on every request (proxy-addr)
 * only to set it aside; it is read from the socket instead.
 */
export function clientIpFor(trustProxy: boolean | number | string): (req: Request) => string {
  return trustProxy === false ? (req) => req.socket.remoteAddress ?? 'unknown' : clientIp;
}

/**
 * What a per-IP budget is kept for: an IPv4 address as it is, also one written IPv4-mapped
 * (`::ffff:a.b.c.d`, as a socket listening on `::` reports IPv4 clients); an IPv6 address by its
 * /64, the block a single host or network is given, within which a machine may take new addresses
 * at will (privacy addresses, or on purpose, to draw a fresh budget with each); either without the
 * port a proxy may have written beside it. An IPv6 address that carries an IPv4 one in its last 32
 * bits (IPv4-mapped in hex, IPv4-compatible, NAT64's 64:ff9b::/96) is a host of its own, and kept
 * whole, as is anything else.
 */
export function budgetAddress(ip: string): string {
  if (!ip.includes(':')) return ip;
  // A proxy that writes the client's port too (Azure Application Gateway: `203.0.113.9:50112`,
  // `[2001:db8::1]:50112`) would otherwise give each of a client's connections a budget of its own.
  const withPort = WITH_PORT.exec(ip);
  if (withPort) return budgetAddress((withPort[1] ?? withPort[2]) as string);
  const plain = ipv4Unmapped(ip);
  if (plain !== ip) return plain;
  const block = ipv6Slash64(ip);
  return block === null || EMBEDS_IPV4.has(block) ? ip : block;
}

const WITH_PORT = /^(?:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):\d{1,5}|\[([0-9a-fA-F:.]+(?:%[^\]]+)?)\](?::\d{1,5})?)$/;

/** An IPv4 address written IPv4-mapped (`::ffff:a.b.c.d`, as a socket listening on `::` reports IPv4 peers) as plain IPv4; any other as it is. */
export function ipv4Unmapped(address: string): string {
  return IPV4_MAPPED.exec(address)?.[1] ?? address;
}

/** The /64s whose addresses stand for IPv4 ones: every IPv4 client would share one budget. */
const EMBEDS_IPV4 = new Set(['0:0:0:0::/64', '64:ff9b:0:0::/64']);

const IPV4_MAPPED = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;
const GROUP = /^[0-9a-f]{1,4}$/i;

/** An IPv6 address's first 64 bits, in one spelling (`2001:db8:0:1::/64`), or null when it is none. */
function ipv6Slash64(ip: string): string | null {
  const halves = (ip.split('%', 1)[0] as string).split('::');
  if (halves.length > 2) return null;
  const [head, tail] = halves.map((half) => (half === '' ? [] : half.split(':'))) as [string[], string[] | undefined];
  // A dotted IPv4 address at the end (64:ff9b::192.0.2.1) stands for the last two groups.
  const size = (groups: string[]) => groups.length + (groups.at(-1)?.includes('.') ? 1 : 0);
  const missing = 8 - size(head) - (tail ? size(tail) : 0);
  if (tail ? missing < 1 : missing !== 0) return null;
  const groups = [...head, ...Array<string>(tail ? missing : 0).fill('0'), ...(tail ?? [])].slice(0, 4);
  if (!groups.every((g) => GROUP.test(g))) return null;
  return `${groups.map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}
