-- Each worker's heartbeat carries how far its host's clock is from the server's, as it measured it
-- (db-clock.ts; the server's minus the host's, in ms), so /health and `proxy-worker stats` name a
-- host whose NTP is off. The proxy goes by the server's clock either way. Null in the rows of
-- workers of a release before this, which go on writing heartbeats without it; their statements
-- name their columns, and `SELECT *` prepared before the change is retried (checkout.ts).
ALTER TABLE workers ADD COLUMN clock_offset_ms BIGINT;
