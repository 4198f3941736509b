-- Notifications only for what a listener acts on, and only to the listeners of this schema.
-- 0001's trigger notified after every INSERT or UPDATE statement, including a claim that took
-- nothing and a lease renewal: an idle worker's own empty claim woke it (and every other listener)
-- to claim again, so an idle daemon claimed every WORKER_POLL_MS and used about 10% of a core, and
-- idle workers on several hosts woke one another the same way. Now a job queued (created, copied
-- in, put back) or finished notifies; a claim (queued to in_progress) and a lease renewal (no status
-- change) notify nobody. The row trigger's WHEN is checked without calling the function, and
-- notifications with the same payload in one transaction are delivered once.
-- The payload is the schema: every schema's trigger sends on the same channel, and a listener
-- (change-listener.ts) now ignores the other schemas' jobs.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE OR REPLACE FUNCTION proxy_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('proxy_jobs', TG_TABLE_SCHEMA);
  RETURN NULL;
END $$;

DROP TRIGGER jobs_changed ON jobs;
CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs
  FOR EACH STATEMENT EXECUTE FUNCTION proxy_jobs_changed();
CREATE TRIGGER jobs_status_changed AFTER UPDATE OF status ON jobs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status <> 'in_progress')
  EXECUTE FUNCTION proxy_jobs_changed();
