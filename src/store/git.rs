//! SQL of push to deploy: internal repositories, their push tokens, the preview switch of
//! a site and the webhook deliveries already handled.

use sqlx::{AnyExecutor, FromRow};

use crate::util::now_ms;

/// An internal repository row.
#[derive(Clone, Debug, FromRow)]
pub struct RepoRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Name: a safe path segment, unique in the org.
    pub name: String,
    /// Created.
    pub created_at: i64,
}

/// Inserts a repository.
pub(in crate::store) async fn insert_repo(db: impl AnyExecutor<'_>, repo: &RepoRow) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO repos (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&repo.id)
        .bind(&repo.org_id)
        .bind(&repo.name)
        .bind(repo.created_at)
        .execute(db)
        .await
        .map(drop)
}

impl super::Store {
    /// A repository of an org by name.
    pub async fn get_repo(&self, org_id: &str, name: &str) -> sqlx::Result<Option<RepoRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, org_id, name, created_at FROM repos WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_optional(db)
            .await
    }

    /// A repository by id.
    pub async fn get_repo_by_id(&self, id: &str) -> sqlx::Result<Option<RepoRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, org_id, name, created_at FROM repos WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await
    }

    /// One page of an org's repositories by name: those after `after` (empty: from the
    /// first), at most `limit`.
    pub async fn list_repos_page(&self, org_id: &str, after: &str, limit: i64) -> sqlx::Result<Vec<RepoRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, org_id, name, created_at FROM repos WHERE org_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(org_id)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// How many repositories an org has.
    pub async fn count_repos(&self, org_id: &str) -> sqlx::Result<i64> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT COUNT(*) FROM repos WHERE org_id = $1")
            .bind(org_id)
            .fetch_one(db)
            .await
    }
}

/// A push token row (its hash, never the token).
#[derive(Clone, Debug, FromRow)]
pub struct GitTokenRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// The one repository it opens.
    pub repo_id: String,
    /// Argon2id PHC string.
    pub hash: String,
    /// Unix ms after which it is refused.
    pub expires_at: i64,
}

impl super::Store {
    /// Creates an internal repository row with its `repo.created` event; the name is
    /// checked by its uniqueness under the write lock.
    pub async fn create_repo(&self, repo: &RepoRow) -> sqlx::Result<RepoCreated> {
        let mut tx = self.begin().await?;
        match insert_repo(&mut *tx, repo).await {
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(RepoCreated::NameTaken),
            other => other?,
        }
        let data = serde_json::json!({ "name": repo.name });
        super::insert_event(&mut *tx, &repo.org_id, "repo.created", &repo.id, &data).await?;
        tx.commit().await?;
        Ok(RepoCreated::Created)
    }

    /// Stores a push token by its hash; drops tokens that expired more than a day ago.
    pub async fn issue_git_token(&self, row: &GitTokenRow, lookup: &str) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        insert_git_token(&mut tx, row, lookup).await?;
        tx.commit().await
    }
}

/// What became of a repository to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoCreated {
    /// Stored.
    Created,
    /// The org has a repository of that name.
    NameTaken,
}

/// A push token's writes, inside a transaction.
async fn insert_git_token(db: &mut sqlx::AnyConnection, row: &GitTokenRow, lookup: &str) -> sqlx::Result<()> {
    let now = now_ms();
    sqlx::query("DELETE FROM git_tokens WHERE expires_at < $1")
        .bind(now - 86_400_000)
        .execute(&mut *db)
        .await?;
    sqlx::query(
        "INSERT INTO git_tokens (id, org_id, repo_id, lookup, hash, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.id)
    .bind(&row.org_id)
    .bind(&row.repo_id)
    .bind(lookup)
    .bind(&row.hash)
    .bind(row.expires_at)
    .bind(now)
    .execute(&mut *db)
    .await
    .map(drop)
}

impl super::Store {
    /// A push token by its lookup id.
    pub async fn find_git_token(&self, lookup: &str) -> sqlx::Result<Option<GitTokenRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, org_id, repo_id, hash, expires_at FROM git_tokens WHERE lookup = $1")
            .bind(lookup)
            .fetch_optional(db)
            .await
    }
}

/// Turns previews of branches (and pull requests) on or off for a site.
pub(in crate::store) async fn set_site_previews(
    db: impl AnyExecutor<'_>,
    site_id: &str,
    enabled: bool,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE sites SET previews_enabled = $1 WHERE id = $2")
        .bind(super::Flag(enabled))
        .bind(site_id)
        .execute(db)
        .await
        .map(drop)
}

impl super::Store {
    /// Turns previews of branches (and pull requests) on or off for a site.
    pub async fn set_site_previews(&self, site_id: &str, enabled: bool) -> sqlx::Result<()> {
        set_site_previews(&self.pool, site_id, enabled).await
    }

    /// Active sites of an org that deploy from `source` (a git URL), by name.
    pub async fn sites_with_source(&self, org_id: &str, sources: &[String]) -> sqlx::Result<Vec<super::SiteRow>> {
        let db = &self.pool;
        let all: Vec<super::SiteRow> = sqlx::query_as(concat!(
            "SELECT ",
            site_columns!(),
            " FROM sites WHERE org_id = $1 AND source_kind = 'git' AND status = 'active' ORDER BY name"
        ))
        .bind(org_id)
        .fetch_all(db)
        .await?;
        Ok(all
            .into_iter()
            .filter(|s| s.source.as_ref().is_some_and(|src| sources.iter().any(|x| x == src)))
            .collect())
    }

    /// Records a webhook delivery; false when it was seen before (a redelivery).
    pub async fn record_delivery(&self, provider: &str, delivery_id: &str, event: &str) -> sqlx::Result<bool> {
        let db = &self.pool;
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (provider, delivery_id, event, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(provider)
        .bind(delivery_id)
        .bind(event)
        .bind(now_ms())
        .execute(db)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Forgets a delivery whose handling failed, so GitHub's redelivery is processed.
    pub async fn forget_delivery(&self, provider: &str, delivery_id: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("DELETE FROM webhook_deliveries WHERE provider = $1 AND delivery_id = $2")
            .bind(provider)
            .bind(delivery_id)
            .execute(db)
            .await
            .map(drop)
    }

    /// Orgs that have settings stored for a provider.
    pub async fn orgs_with_provider(&self, provider: &str) -> sqlx::Result<Vec<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT org_id FROM provider_configs WHERE provider = $1 ORDER BY org_id")
            .bind(provider)
            .fetch_all(db)
            .await
    }

    /// Active git sites of one org.
    pub async fn git_sites(&self, org_id: &str) -> sqlx::Result<Vec<super::SiteRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            site_columns!(),
            " FROM sites WHERE org_id = $1 AND source_kind = 'git' AND status = 'active' ORDER BY name"
        ))
        .bind(org_id)
        .fetch_all(db)
        .await
    }
}
