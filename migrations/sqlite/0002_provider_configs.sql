-- Provider settings per org (HOSTING_SET_CONFIG): the whole JSON object sealed with the
-- master key, since it holds credentials.
CREATE TABLE provider_configs (
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, provider)
);
