-- Since when a worker found the upstream down (cannot be reached, a 5xx to every call, or no answer
-- to any), Unix ms, and why in a few words (`reason`, told by stats, /health and the status page);
-- no row while it answers. A worker that starts (each of cron's passes is a process of its own)
-- reads it and makes one call to look before it calls at full width, so that each pass in a long
-- outage spends one job's attempt rather than one a slot. `look_at` is when the fleet's next look is
-- due: one worker takes it, and the others wait for the one after. A release before this one does
-- not read the table, and spends its first calls as it did.
CREATE TABLE upstream_outage (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  since   INTEGER NOT NULL,
  look_at INTEGER NOT NULL,
  reason  TEXT    NOT NULL
) STRICT;

-- The run of calls answered with a server error, or not at all, that the last pass (cron's
-- `proxy-worker once`) ended in: `calls` in a row since `since`, the pass ended at `ended_at` (Unix
-- ms); no row when it ended on an answer. The next pass counts on from it, so that a pass that
-- makes fewer calls than the hold asks (ten in a row) still comes to hold them when every call fails.
CREATE TABLE upstream_failing (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  calls    INTEGER NOT NULL,
  since    INTEGER NOT NULL,
  ended_at INTEGER NOT NULL
) STRICT;
