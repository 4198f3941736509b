-- The models the counters name one by one (counter-labels.ts): the first MODEL_LABELS_MAX models
-- created; every later one is counted as '(other)'. Creates admit their models in their own
-- statement; every other count looks its model up here. The models already counted keep their
-- labels, however many there are. A release before this one runs on as it did: it does not read
-- the table, and counts every model by its name.
CREATE TABLE counter_models (
  model TEXT PRIMARY KEY
);

INSERT INTO counter_models (model)
SELECT DISTINCT labels::json ->> 'model'
  FROM (SELECT labels FROM counters UNION ALL SELECT labels FROM counter_deltas) AS counted
 WHERE labels::json ->> 'model' IS NOT NULL;
