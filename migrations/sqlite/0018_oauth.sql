-- OAuth 2.1 for MCP clients. Clients are registered dynamically (RFC 7591) or described by
-- a metadata document at their https client_id (cached here). A grant is one person's
-- consent for one client in one org, narrowed to scopes, sites and (or not) production.
-- Codes, access tokens and refresh tokens are stored only as an HMAC-SHA256 of the token.

CREATE TABLE oauth_clients (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('registered', 'metadata')),
    name           TEXT NOT NULL,
    -- JSON array of the exact redirect URIs.
    redirect_uris  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    -- When the metadata document was last fetched (metadata clients).
    fetched_at     INTEGER NOT NULL
);

CREATE TABLE oauth_grants (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id     TEXT NOT NULL,
    client_name   TEXT NOT NULL,
    -- Comma-separated scope names.
    scopes        TEXT NOT NULL,
    -- JSON array of site names; NULL: every site.
    sites         TEXT,
    production    INTEGER NOT NULL,
    -- The audience of its tokens (the `/mcp` URL).
    resource      TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX oauth_grants_by_org ON oauth_grants (org_id, user_id);

CREATE TABLE oauth_codes (
    code_hmac       TEXT PRIMARY KEY,
    grant_id        TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);

CREATE TABLE oauth_tokens (
    token_hmac  TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    -- A refresh token once exchanged (a second use is a replay).
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX oauth_tokens_by_grant ON oauth_tokens (grant_id);
