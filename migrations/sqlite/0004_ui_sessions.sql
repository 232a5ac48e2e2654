-- Dashboard sessions: a browser logs in with an API key and gets a session cookie. Only
-- the SHA-256 of the cookie value is stored; the session acts as the key it was made from,
-- so revoking the key (or deleting it) ends its sessions too.

CREATE TABLE ui_sessions (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
