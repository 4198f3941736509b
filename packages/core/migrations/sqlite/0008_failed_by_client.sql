-- The status page lists the caller's latest failed jobs (GET /v1/stats, every few seconds while a
-- page is open). Through jobs_status_finished that read every failed job of every other client
-- newer than the caller's own: measured 2.8 ms with 20,000 such failures and 20.8 ms with 100,000,
-- on the API's event loop. Partial on failed, so a completion (almost every job) never writes to it.
CREATE INDEX jobs_failed_by_client ON jobs (client, finished_at) WHERE status = 'failed';
