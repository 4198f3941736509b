-- How many jobs are in each status, kept by triggers, so /health, /metrics and `stats` no longer
-- count the table (a pass over every finished job: measured 55-59 ms with 500,000 in it, growing with
-- the retention window). As with counter_deltas (0003), changes are appended rather than applied to
-- six hot rows whose locks every writer would hold through its commit; the workers' housekeeping
-- folds them into job_counts, and readers add the two.
CREATE TABLE job_counts (
  status TEXT   PRIMARY KEY,
  n      BIGINT NOT NULL
);
CREATE TABLE job_count_deltas (
  status TEXT   NOT NULL,
  d      BIGINT NOT NULL
);

-- Writers wait on this lock (CREATE TRIGGER takes it too) until the migration commits, so the count
-- below and the triggers see every row exactly once.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

-- The functions keep the schema they were created in (SET search_path FROM CURRENT), so a write made
-- by hand from a session with another search_path is counted too, not refused.

-- Per statement, from the rows it inserted or deleted: one append for a purge of thousands.
CREATE FUNCTION proxy_count_inserted() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO job_count_deltas (status, d) SELECT status, COUNT(*) FROM inserted_rows GROUP BY status;
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted_rows
  FOR EACH STATEMENT EXECUTE FUNCTION proxy_count_inserted();

CREATE FUNCTION proxy_count_deleted() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO job_count_deltas (status, d) SELECT status, -COUNT(*) FROM deleted_rows GROUP BY status;
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS deleted_rows
  FOR EACH STATEMENT EXECUTE FUNCTION proxy_count_deleted();

-- Per row, and only when the status changes: lease renewals and cancel requests run no trigger at
-- all (an update trigger with transition tables would fire on every update).
CREATE FUNCTION proxy_count_moved() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO job_count_deltas (status, d) VALUES (OLD.status, -1), (NEW.status, 1);
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_count_status AFTER UPDATE OF status ON jobs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION proxy_count_moved();

INSERT INTO job_counts (status, n) SELECT status, COUNT(*) FROM jobs GROUP BY status;
