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
