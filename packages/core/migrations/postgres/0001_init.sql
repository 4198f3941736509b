-- The same shared state as the SQLite schema (0001–0004 and the limits file), for PostgreSQL.
-- Times are Unix milliseconds (BIGINT), written by the application's clock as on SQLite.
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
  run_after        BIGINT  NOT NULL,
  expires_at       BIGINT  NOT NULL,
  lease_until      BIGINT,
  lease_token      INTEGER NOT NULL DEFAULT 0,
  worker_id        TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at       BIGINT  NOT NULL,
  started_at       BIGINT,
  finished_at      BIGINT,
  updated_at       BIGINT  NOT NULL,
  output_text      TEXT,
  usage            TEXT,
  response         TEXT,
  error_code       TEXT,
  error_message    TEXT,
  upstream_status  INTEGER,
  seq              BIGSERIAL
);
CREATE UNIQUE INDEX jobs_client_nonce ON jobs (client, nonce);
CREATE INDEX jobs_queued_due ON jobs (run_after) WHERE status = 'queued';
CREATE INDEX jobs_queued_expiry ON jobs (expires_at) WHERE status = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE status = 'in_progress';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_status_finished ON jobs (status, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_seq ON jobs (seq);

CREATE TABLE workers (
  id           TEXT    PRIMARY KEY,
  host         TEXT    NOT NULL,
  pid          INTEGER NOT NULL,
  started_at   BIGINT  NOT NULL,
  last_seen_at BIGINT  NOT NULL,
  jobs_done    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE upstream_pacing (
  name TEXT   PRIMARY KEY CHECK (name IN ('requests', 'tokens', 'pause')),
  tat  BIGINT NOT NULL
);

CREATE TABLE counters (
  name   TEXT             NOT NULL,
  labels TEXT             NOT NULL,
  value  DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (name, labels)
);

-- UNLOGGED: like the SQLite limits file, budgets need no crash safety and should cost no WAL flush.
CREATE UNLOGGED TABLE rate_limits (
  key TEXT   PRIMARY KEY,
  tat BIGINT NOT NULL
);
CREATE INDEX rate_limits_tat ON rate_limits (tat);

-- Wakes idle workers and long-poll watchers on every host: one notification per changing statement.
CREATE FUNCTION proxy_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('proxy_jobs', '');
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION proxy_jobs_changed();
