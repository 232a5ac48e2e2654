-- Push to deploy: internal git repositories, their short-lived push tokens, the preview
-- switch of a site, and the webhook deliveries already handled (for deduplication).

CREATE TABLE repos (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

-- Tokens are found by a SHA-256 prefix and checked against an argon2id hash; never stored
-- in the clear.
CREATE TABLE git_tokens (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    repo_id     TEXT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    lookup      TEXT NOT NULL UNIQUE,
    hash        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX git_tokens_expiry ON git_tokens (expires_at);

-- Pushes to branches other than the one a site deploys from build preview environments
-- only when this is set.
ALTER TABLE sites ADD COLUMN previews_enabled INTEGER NOT NULL DEFAULT 0;

CREATE TABLE webhook_deliveries (
    provider     TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    event        TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, delivery_id)
);
