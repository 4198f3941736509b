import { timingSafeEqual } from 'node:crypto';
import type { ClientIdentity } from './config.js';
import { sha256 } from './signing.js';

/** Finds the client behind an X-Proxy-Key. */
export interface ClientRegistry {
  findByKey(key: string | undefined): ClientIdentity | null;
  readonly size: number;
}

/**
 * Builds the registry. Keys are compared as SHA-256 digests with timingSafeEqual against every
 * client, so neither the key's length nor how many leading characters match shows in the timing.
 */
export function createClientRegistry(clients: readonly ClientIdentity[]): ClientRegistry {
  const entries = clients.map((client) => ({ client, digest: sha256(client.key) }));
  return {
    size: entries.length,
    findByKey(key) {
      if (typeof key !== 'string' || key.length === 0 || key.length > 1024) return null;
      const digest = sha256(key);
      let found: ClientIdentity | null = null;
      for (const entry of entries) if (timingSafeEqual(entry.digest, digest)) found = entry.client;
      return found;
    },
  };
}
