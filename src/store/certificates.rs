//! SQL of certificates: berth's ACME accounts and the issued certificates (sealed), and
//! the issuance state kept on each domain.

use sqlx::{AnyExecutor, FromRow};

use super::domains::DomainRow;
use crate::model::DomainStatus;

/// A stored certificate (chain and key still sealed).
#[derive(Clone, Debug, FromRow)]
pub struct CertificateRow {
    /// Id.
    pub id: String,
    /// The domain's name, or `*.<base domain>`.
    pub subject: String,
    /// The domain it belongs to (none for the base domain's wildcard).
    pub domain_id: Option<String>,
    /// JSON array of the names it covers.
    pub names: String,
    /// Sealed PEM chain.
    pub chain: String,
    /// Sealed PEM private key.
    pub key: String,
    /// Valid from (ms).
    pub not_before: i64,
    /// Valid until (ms).
    pub not_after: i64,
    /// When renewal starts (ms).
    pub renew_at: i64,
    /// Issued (ms).
    pub issued_at: i64,
}

impl super::Store {
    /// The sealed credentials of berth's account at `directory`.
    pub async fn acme_account(&self, directory: &str) -> sqlx::Result<Option<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT credentials FROM acme_accounts WHERE directory = $1")
            .bind(directory)
            .fetch_optional(db)
            .await
    }

    /// Stores the account made at `directory` (the first one stored wins).
    pub async fn insert_acme_account(&self, directory: &str, sealed: &str, now: i64) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (directory) DO NOTHING",
        )
        .bind(directory)
        .bind(sealed)
        .bind(now)
        .execute(db)
        .await
        .map(drop)
    }
}

/// Stores a certificate, replacing the subject's previous one.
pub(in crate::store) async fn put_certificate(db: impl AnyExecutor<'_>, row: &CertificateRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO certificates (id, subject, domain_id, names, chain, key, not_before, not_after, renew_at, issued_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (subject) DO UPDATE SET id = excluded.id, \
         domain_id = excluded.domain_id, names = excluded.names, chain = excluded.chain, key = excluded.key, \
         not_before = excluded.not_before, not_after = excluded.not_after, renew_at = excluded.renew_at, \
         issued_at = excluded.issued_at",
    )
    .bind(&row.id)
    .bind(&row.subject)
    .bind(&row.domain_id)
    .bind(&row.names)
    .bind(&row.chain)
    .bind(&row.key)
    .bind(row.not_before)
    .bind(row.not_after)
    .bind(row.renew_at)
    .bind(row.issued_at)
    .execute(db)
    .await
    .map(drop)
}

impl super::Store {
    /// Stores a certificate, replacing the subject's previous one.
    pub async fn put_certificate(&self, row: &CertificateRow) -> sqlx::Result<()> {
        put_certificate(&self.pool, row).await
    }

    /// Every certificate still valid at `now`, for the edge's table.
    pub async fn valid_certificates(&self, now: i64) -> sqlx::Result<Vec<CertificateRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, subject, domain_id, names, chain, key, not_before, not_after, renew_at, issued_at \
             FROM certificates WHERE not_after > $1 ORDER BY subject",
        )
        .bind(now)
        .fetch_all(db)
        .await
    }

    /// The certificate of `subject`.
    pub async fn get_certificate(&self, subject: &str) -> sqlx::Result<Option<CertificateRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, subject, domain_id, names, chain, key, not_before, not_after, renew_at, issued_at \
             FROM certificates WHERE subject = $1",
        )
        .bind(subject)
        .fetch_optional(db)
        .await
    }

    /// Moves a certificate's renewal time (the CA's renewal window said so).
    pub async fn set_renew_at(&self, id: &str, renew_at: i64) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE certificates SET renew_at = $1 WHERE id = $2")
            .bind(renew_at)
            .bind(id)
            .execute(db)
            .await
            .map(drop)
    }

    /// The retry state of `subject`'s order when it belongs to no domain: failures in a row
    /// and when it is tried next (ms); `None` when nothing has failed since the last success.
    pub async fn order_retry(&self, subject: &str) -> sqlx::Result<Option<(i64, i64)>> {
        let db = &self.pool;
        sqlx::query_as("SELECT attempts, next_attempt_at FROM certificate_orders WHERE subject = $1")
            .bind(subject)
            .fetch_optional(db)
            .await
    }

    /// Records a failed order of `subject`: `attempts` in a row, tried again at `next`.
    pub async fn set_order_retry(&self, subject: &str, attempts: i64, next: i64, problem: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "INSERT INTO certificate_orders (subject, attempts, next_attempt_at, problem) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject) DO UPDATE SET attempts = excluded.attempts, \
             next_attempt_at = excluded.next_attempt_at, problem = excluded.problem",
        )
        .bind(subject)
        .bind(attempts)
        .bind(next)
        .bind(problem)
        .execute(db)
        .await
        .map(drop)
    }

    /// Forgets `subject`'s failed orders (it succeeded, or something changed that may fix it).
    pub async fn clear_order_retry(&self, subject: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("DELETE FROM certificate_orders WHERE subject = $1")
            .bind(subject)
            .execute(db)
            .await
            .map(drop)
    }

    /// Removes the certificate of `subject`.
    pub async fn delete_certificate(&self, subject: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("DELETE FROM certificates WHERE subject = $1")
            .bind(subject)
            .execute(db)
            .await
            .map(drop)
    }

    /// Ids of the domains with certificate work due at `now`: DNS just checked out
    /// (`validating`), an interrupted issuance (`issuing`), a failure whose retry time came,
    /// or a served certificate whose renewal time came (`active`/`renewing`).
    pub async fn domains_due(&self, now: i64, limit: i64) -> sqlx::Result<Vec<String>> {
        let db = &self.pool;
        sqlx::query_scalar(
            "SELECT d.id FROM domains d LEFT JOIN certificates c ON c.domain_id = d.id \
             WHERE (d.status IN ('validating', 'issuing') AND COALESCE(d.next_attempt_at, 0) <= $1) \
                OR (d.status = 'failed' AND d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= $2) \
                OR (d.status IN ('active', 'renewing') AND c.renew_at IS NOT NULL AND c.renew_at <= $3 \
                    AND COALESCE(d.next_attempt_at, 0) <= $4) \
             ORDER BY COALESCE(d.next_attempt_at, 0), d.id LIMIT $5",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// The earliest time certificate work comes due (None: nothing is waiting).
    pub async fn next_due(&self) -> sqlx::Result<Option<i64>> {
        let db = &self.pool;
        sqlx::query_scalar(
            "SELECT MIN(t) FROM (\
               SELECT COALESCE(d.next_attempt_at, 0) AS t FROM domains d WHERE d.status IN ('validating', 'issuing') \
               UNION ALL SELECT d.next_attempt_at FROM domains d WHERE d.status = 'failed' AND d.next_attempt_at IS NOT NULL \
               UNION ALL SELECT CASE WHEN c.renew_at > COALESCE(d.next_attempt_at, 0) THEN c.renew_at \
                                    ELSE COALESCE(d.next_attempt_at, 0) END FROM domains d \
                 JOIN certificates c ON c.domain_id = d.id WHERE d.status IN ('active', 'renewing')) AS due",
        )
        .fetch_one(db)
        .await
    }
}

/// Stores a domain's issuance state.
pub(in crate::store) async fn set_issuance(
    db: impl AnyExecutor<'_>,
    domain_id: &str,
    status: &str,
    attempts: i64,
    next_attempt_at: Option<i64>,
    problem: Option<&str>,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE domains SET status = $1, attempts = $2, next_attempt_at = $3, problem = $4, updated_at = $5 WHERE id = $6",
    )
    .bind(status)
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(problem)
    .bind(now)
    .bind(domain_id)
    .execute(db)
    .await
    .map(drop)
}

impl super::Store {
    /// Stores a domain's issuance state.
    pub async fn set_issuance(
        &self,
        domain_id: &str,
        status: &str,
        attempts: i64,
        next_attempt_at: Option<i64>,
        problem: Option<&str>,
        now: i64,
    ) -> sqlx::Result<()> {
        set_issuance(&self.pool, domain_id, status, attempts, next_attempt_at, problem, now).await
    }

    /// The server's first org (made at first start: the operator's).
    pub async fn first_org(&self) -> sqlx::Result<Option<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT id FROM orgs ORDER BY created_at, id LIMIT 1")
            .fetch_optional(db)
            .await
    }
}

impl super::Store {
    /// A domain whose DNS went wrong before its certificate was ordered: back to
    /// `pending_dns` with the check that says why, and its `domain.pending_dns` event.
    pub async fn return_domain_to_dns(&self, row: &DomainRow, diagnosis: &str, now: i64) -> sqlx::Result<()> {
        let status = DomainStatus::PendingDns.as_str();
        let mut tx = self.begin().await?;
        super::domains::set_domain_check(&mut *tx, &row.id, status, diagnosis, now).await?;
        set_issuance(&mut *tx, &row.id, status, 0, None, None, now).await?;
        let data = serde_json::json!({ "site_id": row.site_id, "name": row.name, "status": status });
        super::insert_event(&mut *tx, &row.org_id, "domain.pending_dns", &row.id, &data).await?;
        tx.commit().await
    }

    /// Stores a domain's issued certificate and makes the domain `active`, with its
    /// `domain.active` (or `domain.renewed`) event carrying `expires_at`. False when the
    /// domain was removed while the order ran (nothing is stored).
    pub async fn store_issued_certificate(
        &self,
        row: &DomainRow,
        cert: &CertificateRow,
        renewal: bool,
        expires_at: &str,
        now: i64,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        if super::domains::domain_by_id(&mut *tx, &row.id).await?.is_none() {
            return Ok(false);
        }
        put_certificate(&mut *tx, cert).await?;
        set_issuance(&mut *tx, &row.id, DomainStatus::Active.as_str(), 0, None, None, now).await?;
        let data = serde_json::json!({
            "site_id": row.site_id, "name": row.name, "status": DomainStatus::Active.as_str(), "renewal": renewal,
            "expires_at": expires_at,
        });
        let kind = if renewal { "domain.renewed" } else { "domain.active" };
        super::insert_event(&mut *tx, &row.org_id, kind, &row.id, &data).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a failed certificate order: the domain's status, attempts, next try and
    /// problem, with its `domain.certificate_failed` event (`message` and `next_at` as
    /// readers see them).
    #[expect(clippy::too_many_arguments, reason = "the columns of one failure, each plain")]
    pub async fn record_certificate_failure(
        &self,
        row: &DomainRow,
        status: &str,
        attempts: i64,
        next_attempt_at: i64,
        problem: &str,
        message: &str,
        next_at: &str,
        now: i64,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        set_issuance(
            &mut *tx,
            &row.id,
            status,
            attempts,
            Some(next_attempt_at),
            Some(problem),
            now,
        )
        .await?;
        let data = serde_json::json!({
            "site_id": row.site_id, "name": row.name, "status": status, "error": message,
            "attempts": attempts, "next_attempt_at": next_at,
        });
        super::insert_event(&mut *tx, &row.org_id, "domain.certificate_failed", &row.id, &data).await?;
        tx.commit().await
    }
}
