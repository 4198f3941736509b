import { BlockList, isIP } from 'node:net';
import type { RequestHandler } from 'express';
import { isLoopbackHost, type Logger } from '@proxy/core';
import { ipv4Unmapped } from './rate-limit.js';

// Where a proxy in front of the API sits: this host, or a private network. A request with
// X-Forwarded-For from a public address may be anyone's, and is not taken for a proxy.
const PROXY_PLACES = new BlockList();
PROXY_PLACES.addSubnet('127.0.0.0', 8, 'ipv4');
PROXY_PLACES.addSubnet('10.0.0.0', 8, 'ipv4');
PROXY_PLACES.addSubnet('172.16.0.0', 12, 'ipv4');
PROXY_PLACES.addSubnet('192.168.0.0', 16, 'ipv4');
PROXY_PLACES.addAddress('::1', 'ipv6');
PROXY_PLACES.addSubnet('fc00::', 7, 'ipv6');

/**
 * With TRUST_PROXY off, the API behind nginx sees every client as nginx's address: they all draw
 * on one per-IP budget (60 creates a minute for everyone, by default), and the 429s that follow
 * look like the limiter's fault. A request carrying X-Forwarded-For from this host or a private
 * network is such a proxy: the first one is logged with the setting to use. Mounted only while
 * TRUST_PROXY is off; after its line, what it costs a request is this layer's call and a boolean.
 */
export function untrustedProxyHint(logger: Logger): RequestHandler {
  let said = false;
  return (req, _res, next) => {
    if (said || req.headers['x-forwarded-for'] === undefined) return next();
    // An IPv4 peer on a dual-stack socket reads ::ffff:127.0.0.1.
    const peer = ipv4Unmapped(req.socket.remoteAddress ?? '');
    const family = isIP(peer);
    if (family !== 0 && PROXY_PLACES.check(peer, family === 4 ? 'ipv4' : 'ipv6')) {
      said = true;
      const setting = isLoopbackHost(peer) ? 'loopback' : peer;
      logger.warn(
        `requests come through a proxy at ${peer} (they carry X-Forwarded-For), but TRUST_PROXY is off: the rate limits count every client behind it as ${peer}, one budget for all; set TRUST_PROXY=${setting} (README, Behind nginx)`,
      );
    }
    next();
  };
}
