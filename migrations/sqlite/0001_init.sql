-- berth's first schema. Every row carries its org; timestamps are unix milliseconds.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL UNIQUE,
    hash          TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE TABLE sites (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    source_kind     TEXT NOT NULL,
    source          TEXT,
    branch          TEXT,
    build_settings  TEXT NOT NULL,
    provider        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'active',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE environments (
    id                      TEXT PRIMARY KEY,
    org_id                  TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    site_id                 TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name                    TEXT NOT NULL,
    branch                  TEXT,
    deployment_id           TEXT,
    min_instances           INTEGER NOT NULL DEFAULT 1,
    max_instances           INTEGER NOT NULL DEFAULT 1,
    idle_timeout_seconds    INTEGER NOT NULL DEFAULT 300,
    target_concurrency      INTEGER NOT NULL DEFAULT 10,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE deployments (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    site_id         TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    environment_id  TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    status          TEXT NOT NULL,
    source_kind     TEXT NOT NULL,
    source          TEXT,
    git_ref         TEXT,
    commit_sha      TEXT,
    build_plan      TEXT,
    error           TEXT,
    created_by      TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE INDEX deployments_site ON deployments (site_id, created_at DESC);

CREATE TABLE deployment_logs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id  TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    stream         TEXT NOT NULL,
    ts             INTEGER NOT NULL,
    line           TEXT NOT NULL
);
CREATE INDEX deployment_logs_by_deployment ON deployment_logs (deployment_id, kind, id);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    lease_until      INTEGER,
    idempotency_key  TEXT UNIQUE,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, run_at);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      TEXT NOT NULL,
    key_id      TEXT,
    action      TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX audit_by_org ON audit_log (org_id, id);

CREATE TABLE idempotency_keys (
    org_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    action      TEXT NOT NULL,
    response    TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, key)
);

-- Env vars of a site (scope '') or of one environment (scope = environment id), values
-- sealed with AES-256-GCM under the master key; never stored in the clear.
CREATE TABLE env_vars (
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    scope       TEXT NOT NULL,
    name        TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (site_id, scope, name)
);
