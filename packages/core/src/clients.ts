import type { ClientIdentity } from './config.js';
import { sha256Hex } from './signing.js';

/** Finds the client behind an X-Proxy-Key. */
export interface ClientRegistry {
  findByKey(key: string | undefined): ClientIdentity | null;
  readonly size: number;
}

/**
 * Builds the registry. A key is looked up by its SHA-256 digest, never compared as sent: the
 * lookup's time depends only on the digest, and a digest near a client's says nothing of that
 * client's key (finding the key would take a preimage), so neither the key's length nor how many
 * of its leading characters match shows in the timing. Its cost stays flat with the number of
 * clients: comparing the digest with each client's in turn (timingSafeEqual) cost every request
 * 6.7 µs at 100 clients and 51 µs at 1,000, and at 10,000 held proxy-api to 1,300–1,500 lookups a
 * second against 30,000–31,000 with one.
 */
export function createClientRegistry(clients: readonly ClientIdentity[]): ClientRegistry {
  // Keys are unique (mergeClients), so each digest names one client.
  const byDigest = new Map(clients.map((client) => [sha256Hex(client.key), client]));
  return {
    size: byDigest.size,
    findByKey(key) {
      if (typeof key !== 'string' || key.length === 0 || key.length > 1024) return null;
      return byDigest.get(sha256Hex(key)) ?? null;
    },
  };
}
