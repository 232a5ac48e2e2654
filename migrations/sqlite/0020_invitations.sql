-- Invitations: single-use links that make a person a member with a role once they set a
-- password. The token is stored only as an HMAC-SHA256 (like keys and OAuth tokens).
-- Also the per-org "freeze agents" switch: while set, every OAuth grant of the org is
-- revoked and no new consent is stored.

CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'deployer', 'viewer')),
    token_hmac   TEXT NOT NULL UNIQUE,
    -- Who invited (the key's name, or the member's email).
    invited_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_at  INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX invitations_by_org ON invitations (org_id, created_at);

-- NULL: agents may connect; else when the org's agents were frozen (ms).
ALTER TABLE orgs ADD COLUMN agents_frozen_at INTEGER;
