-- Pruning deletes ended OAuth grants; their codes go by cascade and are looked for by
-- grant, which without this index scans every code for each grant.
CREATE INDEX oauth_codes_by_grant ON oauth_codes (grant_id);
