-- The chart's minutes (0007) are now counted by the store as its writes finish jobs and upserted
-- once per commit, beside the counters (store/sqlite/finished-minutes.ts), instead of by this
-- trigger, which upserted a row for every finishing update: measured, about a tenth of the store's
-- CPU per job. Every finishing write goes through the store's write queue, which counts it.
-- Imported jobs arrive finished through a plain insert and still count by jobs_finished_minute_insert.
-- A process of a release before this one, still running against the file after it migrated (a
-- rolling restart), does not count its finishes in the chart; the chart is the only thing it misses.
DROP TRIGGER jobs_finished_minute;
