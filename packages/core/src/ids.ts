import { randomBytes, randomFillSync } from 'node:crypto';

// Random bytes drawn 4 KB at a time: one call into the CSPRNG per 409 ids instead of one per id.
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
function random10(): Buffer {
  if (poolAt + 10 > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  poolAt += 10;
  return pool.subarray(poolAt - 10, poolAt);
}

/**
 * Job ids: `req_` + 16 bytes in base64url: the creation time in ms (6 bytes), then 80 random bits.
 * The random part keeps ids unguessable (and a lookup must come from the owning client anyway);
 * the time prefix puts ids created together side by side in the primary-key index, so an insert
 * touches the few pages already hot instead of a random page of a large index.
 */
export function newJobId(now = Date.now()): string {
  const bytes = Buffer.allocUnsafe(16);
  bytes.writeUIntBE(now, 0, 6);
  random10().copy(bytes, 6);
  return `req_${bytes.toString('base64url')}`;
}

const JOB_ID = /^req_[A-Za-z0-9_-]{22}$/;

/** True for strings shaped like an id we issue; anything else is answered as not found without a query. */
export function isJobId(value: unknown): value is string {
  return typeof value === 'string' && JOB_ID.test(value);
}

/** An id for a worker process, unique across hosts and restarts. */
export function newWorkerId(host: string, pid: number): string {
  return `${host}:${pid}:${randomBytes(4).toString('hex')}`;
}
