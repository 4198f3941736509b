import type { WorkerHeartbeat } from './types.js';

/** A worker's heartbeat as both backends store it, times in Unix ms. */
export interface WorkerRow {
  id: string;
  host: string;
  pid: number;
  started_at: number;
  last_seen_at: number;
  jobs_done: number;
  /** Null in rows written by workers of a release before migration 0012 (SQLite) / 0008 (PostgreSQL). */
  clock_offset_ms: number | null;
}

export function toHeartbeat(row: WorkerRow): WorkerHeartbeat {
  return {
    id: row.id,
    host: row.host,
    pid: row.pid,
    startedAt: row.started_at,
    lastSeenAt: row.last_seen_at,
    jobsDone: row.jobs_done,
    clockOffsetMs: row.clock_offset_ms,
  };
}
