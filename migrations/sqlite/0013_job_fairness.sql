-- Who a job is for (a deploy's site): claims prefer the oldest job of whoever has the
-- fewest jobs running, so one site's burst cannot hold every worker.
ALTER TABLE jobs ADD COLUMN fair_key TEXT;
CREATE INDEX jobs_running_by_key ON jobs (fair_key, status);
