//! SQL of the DNS provider objects berth created for a domain (records and custom
//! hostnames, as JSON), read back when the domain is removed.

use sqlx::FromRow;

/// What a provider holds for one domain.
#[derive(Clone, Debug, FromRow)]
pub struct DomainDnsRow {
    /// The domain.
    pub domain_id: String,
    /// Provider name (`cloudflare`).
    pub provider: String,
    /// The provider's zone id.
    pub zone_id: String,
    /// The zone's name.
    pub zone_name: String,
    /// JSON list of the objects created.
    pub records: String,
}

impl super::Store {
    /// Stores what was created for a domain.
    pub async fn insert_domain_dns(&self, row: &DomainDnsRow, now: i64) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "INSERT INTO domain_dns_records (domain_id, provider, zone_id, zone_name, records, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.domain_id)
        .bind(&row.provider)
        .bind(&row.zone_id)
        .bind(&row.zone_name)
        .bind(&row.records)
        .bind(now)
        .bind(now)
        .execute(db)
        .await
        .map(drop)
    }

    /// What a provider holds for a domain, if anything.
    pub async fn domain_dns(&self, domain_id: &str) -> sqlx::Result<Option<DomainDnsRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT domain_id, provider, zone_id, zone_name, records FROM domain_dns_records WHERE domain_id = $1",
        )
        .bind(domain_id)
        .fetch_optional(db)
        .await
    }

    /// Replaces the list (the objects still left after a partial removal).
    pub async fn set_domain_dns_records(&self, domain_id: &str, records: &str, now: i64) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE domain_dns_records SET records = $1, updated_at = $2 WHERE domain_id = $3")
            .bind(records)
            .bind(now)
            .bind(domain_id)
            .execute(db)
            .await
            .map(drop)
    }
}
