-- Each worker's heartbeat carries how far its host's clock is from the store's (the store's minus
-- the host's, in ms), so /health and `proxy-worker stats` show a host whose NTP is off. On SQLite
-- every process runs on one machine and writes 0; the column is here so both backends answer alike.
-- Null in the rows of workers of a release before this, which go on writing heartbeats without it.
ALTER TABLE workers ADD COLUMN clock_offset_ms INTEGER;
