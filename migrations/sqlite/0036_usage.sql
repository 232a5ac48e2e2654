-- Usage per org and month (HOSTING_GET_USAGE): what each site used, kept apart from the
-- rows it is counted from so that it outlives them (metrics retention, deployment pruning,
-- a deleted site). No foreign keys: a deleted site's usage stays with its name.

-- One row per site per UTC day: requests and response bytes as the edge's counts are
-- stored, and instance-milliseconds as the instances were sampled.
CREATE TABLE usage_days (
    site_id      TEXT NOT NULL,
    day_ms       INTEGER NOT NULL,
    org_id       TEXT NOT NULL,
    site_name    TEXT NOT NULL,
    requests     INTEGER NOT NULL DEFAULT 0,
    bytes_out    INTEGER NOT NULL DEFAULT 0,
    instance_ms  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day_ms)
);
CREATE INDEX usage_days_by_org ON usage_days (org_id, day_ms);

-- One row per deployment that built: counted once, when its build ended (built, failed
-- or cancelled), however often its status moves after.
CREATE TABLE usage_builds (
    deployment_id  TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL,
    site_id        TEXT NOT NULL,
    site_name      TEXT NOT NULL,
    started_ms     INTEGER NOT NULL,
    finished_ms    INTEGER NOT NULL
);
CREATE INDEX usage_builds_by_org ON usage_builds (org_id, finished_ms);

-- When each site's running instances were last sampled, by any server on the database:
-- a sample counts only the time since the one before it.
CREATE TABLE usage_clocks (
    site_id     TEXT PRIMARY KEY,
    sampled_ms  INTEGER NOT NULL
);
