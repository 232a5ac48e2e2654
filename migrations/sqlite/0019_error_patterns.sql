-- Error patterns of each site+environment: runtime log errors clustered into templates
-- (at most 500 an environment; the least recently seen is deleted to make room). `key`
-- numbers a template within its environment. A template keeps its total count, when it
-- was first and last seen, the deployments it occurred in (the last 20, JSON) and its
-- latest event as a sample (at most 8 KiB, redacted like every log line).
CREATE TABLE error_patterns (
    environment_id  TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    key             INTEGER NOT NULL,
    site_id         TEXT NOT NULL,
    template        TEXT NOT NULL,
    count           INTEGER NOT NULL,
    first_seen_ms   INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    deployments     TEXT NOT NULL,
    sample          TEXT NOT NULL,
    PRIMARY KEY (environment_id, key)
) WITHOUT ROWID;

-- What pruning removes: templates not seen within the log retention.
CREATE INDEX error_patterns_by_age ON error_patterns (last_seen_ms);

-- Each template's events per minute and deployment, for counts over a time range.
CREATE TABLE error_pattern_minutes (
    environment_id  TEXT NOT NULL,
    key             INTEGER NOT NULL,
    start_ms        INTEGER NOT NULL,
    deployment_id   TEXT NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (environment_id, key, start_ms, deployment_id),
    FOREIGN KEY (environment_id, key) REFERENCES error_patterns (environment_id, key) ON DELETE CASCADE
) WITHOUT ROWID;

-- A range of an environment, and pruning by age.
CREATE INDEX error_pattern_minutes_by_time ON error_pattern_minutes (environment_id, start_ms);
CREATE INDEX error_pattern_minutes_by_age ON error_pattern_minutes (start_ms);

-- Each deployment's traffic as the edge's tap counts it, in total since it first served
-- (one row a deployment, gone with it): what `HOSTING_GET_DEPLOYMENT` compares with the
-- deployment of the same environment that served before it.
CREATE TABLE deployment_traffic (
    deployment_id   TEXT PRIMARY KEY REFERENCES deployments(id) ON DELETE CASCADE,
    environment_id  TEXT NOT NULL,
    requests        INTEGER NOT NULL,
    server_errors   INTEGER NOT NULL,
    -- Time to first byte: the same sketch as `metrics_buckets.first_byte`.
    first_byte      BLOB NOT NULL,
    first_ms        INTEGER NOT NULL,
    last_ms         INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX deployment_traffic_by_environment ON deployment_traffic (environment_id);
