//! SQL of custom domains: the attached names, their status and last DNS diagnosis, and the
//! joined view the edge's route table is built from.

use sqlx::{AnyExecutor, FromRow};

/// A domain row, with the names of its site and environment.
#[derive(Clone, Debug, FromRow)]
pub struct DomainRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Site it serves.
    pub site_id: String,
    /// Environment it serves.
    pub environment_id: String,
    /// The name (lowercase ASCII, punycode for IDNs).
    pub name: String,
    /// The www/apex partner that redirects to `name`, when asked for.
    pub redirect_name: Option<String>,
    /// A `DomainStatus` name.
    pub status: String,
    /// Ownership token (the value of the `_berth-challenge` TXT record).
    pub token: String,
    /// JSON of the last DNS check.
    pub diagnosis: Option<String>,
    /// When DNS was last checked (ms).
    pub checked_at: Option<i64>,
    /// Created (ms).
    pub created_at: i64,
    /// Updated (ms).
    pub updated_at: i64,
    /// The site's name.
    pub site_name: String,
    /// The environment's name.
    pub environment_name: String,
    /// Whether responses over HTTPS carry Strict-Transport-Security.
    #[sqlx(try_from = "super::Flag")]
    pub hsts: bool,
    /// Certificate orders failed in a row.
    pub attempts: i64,
    /// When certificate work is tried next (ms).
    pub next_attempt_at: Option<i64>,
    /// JSON of the last certificate problem (`message`, `problem`, `at`).
    pub problem: Option<String>,
    /// The served certificate's end of validity (ms), when it has one.
    pub cert_not_after: Option<i64>,
    /// When its renewal starts (ms).
    pub cert_renew_at: Option<i64>,
    /// When it was issued (ms).
    pub cert_issued_at: Option<i64>,
}

macro_rules! select_domains {
    () => {
        "SELECT d.id, d.org_id, d.site_id, d.environment_id, d.name, d.redirect_name, d.status, \
     d.token, d.diagnosis, d.checked_at, d.created_at, d.updated_at, s.name AS site_name, \
     e.name AS environment_name, d.hsts, d.attempts, d.next_attempt_at, d.problem, \
     c.not_after AS cert_not_after, c.renew_at AS cert_renew_at, c.issued_at AS cert_issued_at \
     FROM domains d JOIN sites s ON s.id = d.site_id JOIN environments e ON e.id = d.environment_id \
     LEFT JOIN certificates c ON c.domain_id = d.id"
    };
}

/// Inserts a domain (the joined names of `row` are ignored).
pub(in crate::store) async fn insert_domain(db: impl AnyExecutor<'_>, row: &DomainRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO domains (id, org_id, site_id, environment_id, name, redirect_name, status, token, diagnosis, \
         checked_at, created_at, updated_at, hsts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&row.id)
    .bind(&row.org_id)
    .bind(&row.site_id)
    .bind(&row.environment_id)
    .bind(&row.name)
    .bind(&row.redirect_name)
    .bind(&row.status)
    .bind(&row.token)
    .bind(&row.diagnosis)
    .bind(row.checked_at)
    .bind(row.created_at)
    .bind(row.updated_at)
    .bind(super::Flag(row.hsts))
    .execute(db)
    .await
    .map(drop)
}

/// Whether any of `names` is taken, in any org, as a domain or as a redirecting partner.
pub(in crate::store) async fn any_name_taken(db: impl AnyExecutor<'_>, names: &[&str]) -> sqlx::Result<bool> {
    let a = names.first().copied().unwrap_or_default();
    let b = names.get(1).copied().unwrap_or(a);
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM domains WHERE name IN ($1, $2) OR redirect_name IN ($3, $4)")
        .bind(a)
        .bind(b)
        .bind(a)
        .bind(b)
        .fetch_one(db)
        .await
        .map(|n| n > 0)
}

impl super::Store {
    /// A site's domain by name.
    pub async fn get_domain(&self, site_id: &str, name: &str) -> sqlx::Result<Option<DomainRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(select_domains!(), " WHERE d.site_id = $1 AND d.name = $2"))
            .bind(site_id)
            .bind(name)
            .fetch_optional(db)
            .await
    }

    /// One page of an org's domains (of one site when `site_id` is given), by name.
    pub async fn list_domains_page(
        &self,
        org_id: &str,
        site_id: Option<&str>,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<DomainRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            select_domains!(),
            " WHERE d.org_id = $1 AND ($2 IS NULL OR d.site_id = $3) AND d.name > $4 ORDER BY d.name LIMIT $5"
        ))
        .bind(org_id)
        .bind(site_id)
        .bind(site_id)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// How many domains an org has (of one site when `site_id` is given).
    pub async fn count_domains(&self, org_id: &str, site_id: Option<&str>) -> sqlx::Result<i64> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE org_id = $1 AND ($2 IS NULL OR site_id = $3)")
            .bind(org_id)
            .bind(site_id)
            .bind(site_id)
            .fetch_one(db)
            .await
    }

    /// Every domain of every org, for the route table.
    pub async fn list_all_domains(&self) -> sqlx::Result<Vec<DomainRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(select_domains!(), " ORDER BY d.name"))
            .fetch_all(db)
            .await
    }
}

/// Stores the outcome of a DNS check.
pub(in crate::store) async fn set_domain_check(
    db: impl AnyExecutor<'_>,
    id: &str,
    status: &str,
    diagnosis: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE domains SET status = $1, diagnosis = $2, checked_at = $3, updated_at = $4 WHERE id = $5")
        .bind(status)
        .bind(diagnosis)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(db)
        .await
        .map(drop)
}

/// Removes a domain.
pub(in crate::store) async fn delete_domain(db: impl AnyExecutor<'_>, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM domains WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .map(drop)
}

/// A domain by id.
pub(in crate::store) async fn domain_by_id(db: impl AnyExecutor<'_>, id: &str) -> sqlx::Result<Option<DomainRow>> {
    sqlx::query_as(concat!(select_domains!(), " WHERE d.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

impl super::Store {
    /// A domain by id.
    pub async fn domain_by_id(&self, id: &str) -> sqlx::Result<Option<DomainRow>> {
        domain_by_id(&self.pool, id).await
    }
}

/// What became of a domain to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainAdded {
    /// Attached.
    Added,
    /// The name (or its redirect partner) is attached to a site already (maybe another
    /// org's).
    NameTaken,
}

impl super::Store {
    /// Attaches a domain with its `domain.added` event; its names are checked under the
    /// write lock.
    pub async fn add_domain(&self, row: &DomainRow) -> sqlx::Result<DomainAdded> {
        let mut tx = self.begin().await?;
        let names: Vec<&str> = std::iter::once(row.name.as_str())
            .chain(row.redirect_name.as_deref())
            .collect();
        if any_name_taken(&mut *tx, &names).await? {
            return Ok(DomainAdded::NameTaken);
        }
        insert_domain(&mut *tx, row).await?;
        let data = serde_json::json!({ "site_id": row.site_id, "name": row.name });
        super::insert_event(&mut *tx, &row.org_id, "domain.added", &row.id, &data).await?;
        tx.commit().await?;
        Ok(DomainAdded::Added)
    }

    /// Records a DNS check of a domain and its new status, with a `domain.<status>` event
    /// when the status changed.
    pub async fn record_domain_check(&self, row: &DomainRow, to: &str, diagnosis: &str, now: i64) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        set_domain_check(&mut *tx, &row.id, to, diagnosis, now).await?;
        if row.status != to {
            let data = serde_json::json!({ "site_id": row.site_id, "name": row.name, "status": to });
            super::insert_event(&mut *tx, &row.org_id, &format!("domain.{to}"), &row.id, &data).await?;
        }
        tx.commit().await
    }

    /// Detaches a domain (its certificate goes with it) with its `domain.removed` event;
    /// `reason` says why when berth removed it itself.
    pub async fn remove_domain(&self, row: &DomainRow, reason: Option<&str>) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        delete_domain(&mut *tx, &row.id).await?;
        let data = match reason {
            Some(reason) => serde_json::json!({ "site_id": row.site_id, "name": row.name, "reason": reason }),
            None => serde_json::json!({ "site_id": row.site_id, "name": row.name }),
        };
        super::insert_event(&mut *tx, &row.org_id, "domain.removed", &row.id, &data).await?;
        tx.commit().await
    }
}
