-- Jobs finished per minute, by status, for the status page's chart (as SQLite's 0007): /v1/stats
-- reads at most sixty rows a status instead of counting the hour's jobs. Appended as jobs finish and
-- folded by the workers' housekeeping, as job_count_deltas (0004), so no writer waits on a hot row.
-- A row counts an event: a job requeued or deleted later still finished in that minute.
CREATE TABLE finished_per_minute (
  minute BIGINT NOT NULL,
  status TEXT   NOT NULL,
  n      BIGINT NOT NULL,
  PRIMARY KEY (minute, status)
);
CREATE TABLE finished_minute_deltas (
  minute BIGINT NOT NULL,
  status TEXT   NOT NULL,
  n      BIGINT NOT NULL
);

LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE FUNCTION proxy_count_finished() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO finished_minute_deltas (minute, status, n) VALUES (NEW.finished_at / 60000, NEW.status, 1);
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_finished_minute AFTER UPDATE OF status ON jobs
  FOR EACH ROW WHEN (NEW.status IN ('completed', 'failed', 'cancelled', 'expired')
                     AND OLD.status NOT IN ('completed', 'failed', 'cancelled', 'expired')
                     AND NEW.finished_at IS NOT NULL)
  EXECUTE FUNCTION proxy_count_finished();

-- Imported jobs (copy-jobs) arrive finished: the insert trigger of 0004 counts them too.
CREATE OR REPLACE FUNCTION proxy_count_inserted() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO job_count_deltas (status, d) SELECT status, COUNT(*) FROM inserted_rows GROUP BY status;
  INSERT INTO finished_minute_deltas (minute, status, n)
  SELECT finished_at / 60000, status, COUNT(*) FROM inserted_rows
   WHERE status IN ('completed', 'failed', 'cancelled', 'expired') AND finished_at IS NOT NULL
   GROUP BY 1, 2;
  RETURN NULL;
END $$;

INSERT INTO finished_per_minute (minute, status, n)
SELECT finished_at / 60000, status, COUNT(*)
  FROM jobs
 WHERE status IN ('completed', 'failed', 'cancelled', 'expired') AND finished_at IS NOT NULL
 GROUP BY 1, 2;
