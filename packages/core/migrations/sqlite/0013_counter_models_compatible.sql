-- The models the counters name one by one (counter-labels.ts): the first MODEL_LABELS_MAX models
-- created; every later one is counted as '(other)'. The models already counted keep their labels,
-- however many there are. A release before this one runs on as it did: it does not read the table,
-- and counts every model by its name.
CREATE TABLE counter_models (
  model TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;

INSERT INTO counter_models (model)
SELECT DISTINCT json_extract(labels, '$.model') FROM counters WHERE json_extract(labels, '$.model') IS NOT NULL;
