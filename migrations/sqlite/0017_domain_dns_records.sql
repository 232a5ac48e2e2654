-- What a DNS provider holds for a domain because berth created it there (HOSTING_ADD_DOMAIN
-- with a provider configured): `records` is the JSON list of the provider's objects (DNS
-- records, custom hostnames) with their ids, so HOSTING_REMOVE_DOMAIN deletes exactly
-- those and nothing else. Goes with its domain.
CREATE TABLE domain_dns_records (
    domain_id   TEXT PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    zone_id     TEXT NOT NULL,
    zone_name   TEXT NOT NULL,
    records     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
