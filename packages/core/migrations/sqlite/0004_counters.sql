-- Counters every process adds to and /metrics reads: jobs created and finished by model, upstream
-- calls by status, latency buckets, retries. Each is bumped in the same transaction as the job
-- write it describes, so it is as durable as the job and costs no extra commit.
CREATE TABLE counters (
  name   TEXT NOT NULL,
  labels TEXT NOT NULL,
  value  REAL NOT NULL,
  PRIMARY KEY (name, labels)
) STRICT, WITHOUT ROWID;
