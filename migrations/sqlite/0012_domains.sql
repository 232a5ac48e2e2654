-- Custom domains: a name (lowercase ASCII, IDNs as punycode) served for one environment
-- of a site once its DNS records check out. A name is attached at most once across all
-- orgs; `redirect_name` is the www/apex partner of a domain that redirects to it (308),
-- reserved the same way by the service. `status` is a DomainStatus (`pending_dns`,
-- `validating`, `issuing`, `active`, `renewing`, `failed`); `diagnosis` is the JSON of the
-- last DNS check.
CREATE TABLE domains (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    site_id         TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    environment_id  TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL UNIQUE,
    redirect_name   TEXT UNIQUE,
    status          TEXT NOT NULL,
    token           TEXT NOT NULL,
    diagnosis       TEXT,
    checked_at      INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX domains_site ON domains (site_id, name);
CREATE INDEX domains_org ON domains (org_id, name);
