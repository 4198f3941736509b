-- A job's request moves to a table of its own, written once at the create and read once at each
-- claim. SQLite rewrites a whole row, overflow pages included, whenever an update changes its size,
-- and the claim and the outcome both do: every job's prompt was written to the log twice more after
-- its insert. Measured with 100 KB prompts: a claim and an outcome logged 63 pages against 11 for a
-- short prompt. The store alone (claim and outcome, eight jobs a commit, one core, sync=full) with
-- 20 KB prompts: 963-1,321 jobs a second and 575-804 µs of CPU a job before, 3,366-3,455 and
-- 189-238 µs apart. A lookup's columns no longer sit behind the prompt's overflow pages either:
-- 25.5-27.4 µs a lookup of a completed job with a 20 KB prompt before, 12.5 apart (11.7-12.1 for a
-- short prompt, either way). Creates of short prompts cost the same (36-37 µs in-process).
--
-- The table is rebuilt rather than altered, which also lets the status CHECK be written as
-- comparisons: as a constant IN list, SQLite built a temporary b-tree to test it on every insert
-- and every status change (0010). `seq` is an explicit INTEGER PRIMARY KEY so that it keeps its
-- value through VACUUM (a plain rowid may be renumbered), since job_requests is keyed by it.
--
-- Run once, at the first start after the upgrade, in one transaction: on a large file it takes a
-- while, the whole table being copied (1,000,000 jobs, an 802 MB file: 18.5 s here, the file
-- 1,542 MB after; the old table's pages are reused by later writes, or given back by VACUUM).
-- Processes of an earlier release still running against the file fail their creates, claims and
-- other reads of whole jobs until they are restarted (they expect the column that moved); each
-- such write rolls back, so nothing stored is changed by them.
DROP TRIGGER jobs_count_insert;
DROP TRIGGER jobs_count_status;
DROP TRIGGER jobs_count_delete;
DROP TRIGGER jobs_finished_minute_insert;
ALTER TABLE jobs RENAME TO jobs_before_0011;

CREATE TABLE jobs (
  seq              INTEGER PRIMARY KEY,
  id               TEXT    NOT NULL UNIQUE,
  client           TEXT    NOT NULL,
  nonce            TEXT    NOT NULL,
  request_hash     TEXT    NOT NULL,
  status           TEXT    NOT NULL CHECK (status = 'queued' OR status = 'in_progress' OR status = 'completed'
                                           OR status = 'failed' OR status = 'cancelled' OR status = 'expired'),
  model            TEXT    NOT NULL,
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

-- One row a job, keyed by its jobs.seq; removed with the job (jobs_request_delete).
CREATE TABLE job_requests (
  job     INTEGER PRIMARY KEY,
  request TEXT    NOT NULL
) STRICT;

INSERT INTO jobs (seq, id, client, nonce, request_hash, status, model, attempts, max_attempts, run_after, expires_at,
                  lease_until, lease_token, worker_id, cancel_requested, created_at, started_at, finished_at,
                  updated_at, output_text, usage, response, error_code, error_message, upstream_status)
SELECT rowid, id, client, nonce, request_hash, status, model, attempts, max_attempts, run_after, expires_at,
       lease_until, lease_token, worker_id, cancel_requested, created_at, started_at, finished_at,
       updated_at, output_text, usage, response, error_code, error_message, upstream_status
  FROM jobs_before_0011
 ORDER BY rowid;
INSERT INTO job_requests (job, request) SELECT rowid, request FROM jobs_before_0011 ORDER BY rowid;
DROP TABLE jobs_before_0011;

-- The indexes as they stood after 0008, and the triggers after 0010, on the new table.
CREATE UNIQUE INDEX jobs_client_nonce ON jobs (client, nonce);
CREATE INDEX jobs_queued_due ON jobs (run_after) WHERE status = 'queued';
CREATE INDEX jobs_queued_expiry ON jobs (expires_at) WHERE status = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE status = 'in_progress';
CREATE INDEX jobs_status_finished ON jobs (status, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_failed_by_client ON jobs (client, finished_at) WHERE status = 'failed';

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
BEGIN
  UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER jobs_count_status AFTER UPDATE OF status ON jobs WHEN OLD.status <> NEW.status
BEGIN
  UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
  UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
BEGIN
  UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
END;

CREATE TRIGGER jobs_finished_minute_insert AFTER INSERT ON jobs
  WHEN NEW.finished_at IS NOT NULL
   AND (NEW.status = 'completed' OR NEW.status = 'failed' OR NEW.status = 'cancelled' OR NEW.status = 'expired')
BEGIN
  INSERT INTO finished_per_minute (minute, status, n) VALUES (NEW.finished_at / 60000, NEW.status, 1)
    ON CONFLICT (minute, status) DO UPDATE SET n = n + 1;
END;

-- Every path that deletes jobs (retention, tests, an operator's own DELETE) takes their requests along.
CREATE TRIGGER jobs_request_delete AFTER DELETE ON jobs
BEGIN
  DELETE FROM job_requests WHERE job = OLD.seq;
END;
