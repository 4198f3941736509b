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
