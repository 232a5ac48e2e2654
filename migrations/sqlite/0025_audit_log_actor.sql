-- The audit log records who acted, not only the key id: the kind of caller (a person's
-- password session, an API key, an MCP client's OAuth token acting for a person, or the
-- server on a verified trigger), a display name (the email, the key's name and prefix,
-- the client's name) and the acting person's email where there is one. Rows written
-- before read as keys, named by their key when it still exists.

ALTER TABLE audit_log ADD COLUMN actor_kind TEXT NOT NULL DEFAULT 'key'
    CHECK (actor_kind IN ('user', 'key', 'oauth_client', 'system'));
ALTER TABLE audit_log ADD COLUMN actor_name TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN actor_email TEXT;

UPDATE audit_log SET actor_name = COALESCE(
    (SELECT api_keys.name FROM api_keys WHERE api_keys.id = audit_log.key_id),
    audit_log.key_id,
    ''
);

-- Filtering by action keeps paging by id.
CREATE INDEX audit_by_org_action ON audit_log (org_id, action, id);
