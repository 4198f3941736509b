-- Jobs due in the same millisecond (a turn's creates share one) are claimed in the order stored:
-- the claim's ORDER BY names seq after run_after, and this index holds both, so the claim still
-- walks it in order and sorts nothing. With run_after alone the index kept such jobs in the order
-- of their places in the table (PostgreSQL 12 and later; in no set order before), which space freed
-- by earlier jobs puts out of the order stored, and a claim at the limit took later jobs before
-- earlier ones. A release before this one runs on as it did: its claim's ORDER BY run_after walks
-- this index the same way.
CREATE INDEX jobs_queued_due_in_order ON jobs (run_after, seq) WHERE status = 'queued';
DROP INDEX jobs_queued_due;
ALTER INDEX jobs_queued_due_in_order RENAME TO jobs_queued_due;
