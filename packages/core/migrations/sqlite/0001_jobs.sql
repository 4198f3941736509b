-- Jobs, their leases, and worker heartbeats. Times are Unix milliseconds.
CREATE TABLE jobs (
  id               TEXT    PRIMARY KEY,
  client           TEXT    NOT NULL,
  nonce            TEXT    NOT NULL,
  request_hash     TEXT    NOT NULL,
  status           TEXT    NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled', 'expired')),
  model            TEXT    NOT NULL,
  request          TEXT    NOT NULL,
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  run_after        INTEGER NOT NULL,
  expires_at       INTEGER NOT NULL,
  lease_until      INTEGER,
  lease_token      INTEGER NOT NULL DEFAULT 0,
  worker_id        TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at       INTEGER NOT NULL,
  started_at       INTEGER,
  finished_at      INTEGER,
  updated_at       INTEGER NOT NULL,
  output_text      TEXT,
  usage            TEXT,
  response         TEXT,
  error_code       TEXT,
  error_message    TEXT,
  upstream_status  INTEGER
) STRICT;

-- Idempotency: one job per client and nonce.
CREATE UNIQUE INDEX jobs_client_nonce ON jobs (client, nonce);
-- Partial indexes keep the claim's scans as small as the work that is due, however many jobs are finished.
CREATE INDEX jobs_queued_due ON jobs (run_after) WHERE status = 'queued';
CREATE INDEX jobs_queued_expiry ON jobs (expires_at) WHERE status = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE status = 'in_progress';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE workers (
  id           TEXT    PRIMARY KEY,
  host         TEXT    NOT NULL,
  pid          INTEGER NOT NULL,
  started_at   INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL,
  jobs_done    INTEGER NOT NULL DEFAULT 0
) STRICT;
