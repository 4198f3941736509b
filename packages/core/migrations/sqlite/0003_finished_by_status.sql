-- Listing finished jobs of one status newest first (admin CLI, status page) without scanning the
-- completed ones. Partial on finished_at, so the claim's queries cannot mistake it for theirs.
CREATE INDEX jobs_status_finished ON jobs (status, finished_at) WHERE finished_at IS NOT NULL;
