-- People, roles and scoped keys. Users sign in to the dashboard with an email and an
-- argon2id password; members hold one role per org. API keys gain a kind (a personal key
-- acts as its user's current role, a service key as its own), scopes, an optional
-- restriction to sites and environments, an expiry and an HMAC-SHA256 of the token to be
-- found by (keys made before keep their argon2id hash and are verified as before).

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE org_members (
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'deployer', 'viewer')),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_by_user ON org_members (user_id);

ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'service';
ALTER TABLE api_keys ADD COLUMN user_id TEXT REFERENCES users(id) ON DELETE CASCADE;
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL
    DEFAULT 'sites:read,logs:read,deploy,env:write,secrets:read,domains:write,sites:delete,org:admin';
-- JSON arrays of names; NULL: every site (environment).
ALTER TABLE api_keys ADD COLUMN sites TEXT;
ALTER TABLE api_keys ADD COLUMN environments TEXT;
-- NULL only for keys made before (the bootstrap key among them).
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN token_hmac TEXT;
CREATE UNIQUE INDEX api_keys_by_hmac ON api_keys (token_hmac) WHERE token_hmac IS NOT NULL;

-- The first start's admin key owns its org.
UPDATE api_keys SET role = 'owner' WHERE role = 'admin';
UPDATE api_keys SET role = 'viewer' WHERE role NOT IN ('owner', 'admin', 'developer', 'deployer', 'viewer');

-- NULL: the default (production is protected, other environments are not).
ALTER TABLE environments ADD COLUMN protected INTEGER;

-- A dashboard session acts as a key (key login) or as a member (password login).
CREATE TABLE ui_sessions_new (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    key_id      TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
    user_id     TEXT REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    CHECK ((key_id IS NULL) <> (user_id IS NULL))
);
INSERT INTO ui_sessions_new (id, org_id, key_id, user_id, csrf_token, created_at, expires_at)
    SELECT id, org_id, key_id, NULL, csrf_token, created_at, expires_at FROM ui_sessions;
DROP TABLE ui_sessions;
ALTER TABLE ui_sessions_new RENAME TO ui_sessions;
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
