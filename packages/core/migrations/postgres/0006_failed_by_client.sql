-- The status page lists the caller's latest failed jobs (GET /v1/stats). Without this index the
-- planner chooses between every job of the client (jobs_client_nonce) and every failed job of every
-- client (jobs_status_finished); either grows with somebody else's traffic. Partial on failed, so a
-- completion (almost every job) never writes to it.
CREATE INDEX jobs_failed_by_client ON jobs (client, finished_at) WHERE status = 'failed';
