-- Rate limits shared by every API process: one row per budget key, holding GCRA's theoretical
-- arrival time (Unix ms). A row whose tat is past is the same as no row, so old rows can go.
CREATE TABLE rate_limits (
  key TEXT    PRIMARY KEY,
  tat INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX rate_limits_tat ON rate_limits (tat);
