import { randomBytes } from 'node:crypto';

/** Job ids: `req_` + 128 random bits in base64url. Unguessable, so an id is no capability leak. */
export function newJobId(): string {
  return `req_${randomBytes(16).toString('base64url')}`;
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
