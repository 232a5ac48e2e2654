-- Per-environment instance size: memory in MiB and CPU in thousandths of a core; NULL
-- means the server's default (--app-memory-mb, --app-cpus, or the docker settings).
ALTER TABLE environments ADD COLUMN memory_mb INTEGER;
ALTER TABLE environments ADD COLUMN cpu_millis INTEGER;
