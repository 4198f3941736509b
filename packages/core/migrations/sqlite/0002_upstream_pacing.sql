-- Upstream pacing shared by every worker process: for each budget, the time from which it is free
-- again (GCRA's theoretical arrival time, Unix ms). 'requests' and 'tokens' pace UPSTREAM_RPM and
-- UPSTREAM_TPM; 'pause' is set by a 429 so the whole fleet backs off together.
CREATE TABLE upstream_pacing (
  name TEXT    PRIMARY KEY CHECK (name IN ('requests', 'tokens', 'pause')),
  tat  INTEGER NOT NULL
) STRICT;
