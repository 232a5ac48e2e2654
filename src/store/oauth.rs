//! SQL of OAuth for MCP clients: clients (registered or described by a metadata
//! document), grants (one person's consent), authorization codes and tokens. Codes and
//! tokens are stored only as an HMAC of their value; a grant's revocation ends every
//! token issued under it.

use sqlx::{AnyExecutor, FromRow};

use crate::util::now_ms;

/// A client: registered dynamically, or a cached metadata document.
#[derive(Clone, Debug, FromRow)]
pub struct ClientRow {
    /// The client_id (random for registered clients, the document's URL otherwise).
    pub id: String,
    /// `registered` or `metadata`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// JSON array of redirect URIs.
    pub redirect_uris: String,
    /// When a metadata document was fetched (ms).
    pub fetched_at: i64,
}

/// One person's consent for one client in one org.
#[derive(Clone, Debug, FromRow)]
pub struct GrantRow {
    /// Id.
    pub id: String,
    /// The org it acts in.
    pub org_id: String,
    /// The person who consented (acts as their current role).
    pub user_id: String,
    /// The client.
    pub client_id: String,
    /// The client's name at consent.
    pub client_name: String,
    /// Comma-separated scopes.
    pub scopes: String,
    /// JSON array of site names; `None`: every site.
    pub sites: Option<String>,
    /// Whether production may be changed.
    #[sqlx(try_from = "super::Flag")]
    pub production: bool,
    /// The audience of its tokens.
    pub resource: String,
    /// Created (ms).
    pub created_at: i64,
    /// Last used (ms).
    pub last_used_at: Option<i64>,
    /// Set when revoked.
    pub revoked_at: Option<i64>,
}

/// An authorization code.
#[derive(Clone, Debug, FromRow)]
pub struct CodeRow {
    /// The grant it redeems.
    pub grant_id: String,
    /// The redirect URI it was issued to.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// Expiry (ms).
    pub expires_at: i64,
    /// Set once exchanged.
    pub used_at: Option<i64>,
}

/// An access or refresh token.
#[derive(Clone, Debug, FromRow)]
pub struct TokenRow {
    /// The grant it acts under.
    pub grant_id: String,
    /// `access` or `refresh`.
    pub kind: String,
    /// Expiry (ms).
    pub expires_at: i64,
    /// Set once a refresh token was exchanged.
    pub used_at: Option<i64>,
    /// Set when revoked.
    pub revoked_at: Option<i64>,
}

impl super::Store {
    /// Stores (or refreshes) a client.
    pub async fn upsert_oauth_client(&self, id: &str, kind: &str, name: &str, redirect_uris: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO oauth_clients (id, kind, name, redirect_uris, created_at, fetched_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, redirect_uris = excluded.redirect_uris, \
             fetched_at = excluded.fetched_at",
        )
        .bind(id)
        .bind(kind)
        .bind(name)
        .bind(redirect_uris)
        .bind(now)
        .bind(now)
        .execute(db)
        .await
        .map(drop)
    }

    /// A client by id.
    pub async fn oauth_client(&self, id: &str) -> sqlx::Result<Option<ClientRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, kind, name, redirect_uris, fetched_at FROM oauth_clients WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await
    }
}

/// A new grant's columns.
pub struct NewGrant<'a> {
    /// Id.
    pub id: &'a str,
    /// Org.
    pub org_id: &'a str,
    /// Person.
    pub user_id: &'a str,
    /// Client.
    pub client_id: &'a str,
    /// Client name.
    pub client_name: &'a str,
    /// Comma-separated scopes.
    pub scopes: &'a str,
    /// JSON site list, or every site.
    pub sites: Option<&'a str>,
    /// Production included.
    pub production: bool,
    /// Audience.
    pub resource: &'a str,
}

/// Stores a grant, unless its org's agents are frozen (checked in the same statement, so
/// a freeze cannot slip between the check and the insert): false when frozen.
pub(in crate::store) async fn insert_grant(db: impl AnyExecutor<'_>, g: &NewGrant<'_>) -> sqlx::Result<bool> {
    sqlx::query(
        "INSERT INTO oauth_grants (id, org_id, user_id, client_id, client_name, scopes, sites, production, resource, \
         created_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
         WHERE NOT EXISTS (SELECT 1 FROM orgs WHERE id = $2 AND agents_frozen_at IS NOT NULL)",
    )
    .bind(g.id)
    .bind(g.org_id)
    .bind(g.user_id)
    .bind(g.client_id)
    .bind(g.client_name)
    .bind(g.scopes)
    .bind(g.sites)
    .bind(super::Flag(g.production))
    .bind(g.resource)
    .bind(now_ms())
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

impl super::Store {
    /// A grant by id.
    pub async fn get_grant(&self, id: &str) -> sqlx::Result<Option<GrantRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, org_id, user_id, client_id, client_name, scopes, sites, production, resource, created_at, \
             last_used_at, revoked_at FROM oauth_grants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(db)
        .await
    }

    /// Revokes a grant (and so every token under it).
    pub async fn revoke_grant(&self, id: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE oauth_grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(db)
            .await
            .map(drop)
    }

    /// Records a use of a grant, at most once a minute.
    pub async fn touch_grant(&self, id: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        let now = now_ms();
        sqlx::query(
            "UPDATE oauth_grants SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(db)
        .await
        .map(drop)
    }
}

/// Stores an authorization code.
pub(in crate::store) async fn insert_code(
    db: impl AnyExecutor<'_>,
    code_hmac: &str,
    grant_id: &str,
    redirect_uri: &str,
    code_challenge: &str,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO oauth_codes (code_hmac, grant_id, redirect_uri, code_challenge, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(code_hmac)
    .bind(grant_id)
    .bind(redirect_uri)
    .bind(code_challenge)
    .bind(expires_at)
    .execute(db)
    .await
    .map(drop)
}

impl super::Store {
    /// A code by its HMAC.
    pub async fn oauth_code(&self, code_hmac: &str) -> sqlx::Result<Option<CodeRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT grant_id, redirect_uri, code_challenge, expires_at, used_at FROM oauth_codes WHERE code_hmac = $1",
        )
        .bind(code_hmac)
        .fetch_optional(db)
        .await
    }

    /// Marks a code (or a refresh token) used; false when it already was (a replay).
    pub async fn use_oauth_code(&self, code_hmac: &str) -> sqlx::Result<bool> {
        let db = &self.pool;
        sqlx::query("UPDATE oauth_codes SET used_at = $1 WHERE code_hmac = $2 AND used_at IS NULL")
            .bind(now_ms())
            .bind(code_hmac)
            .execute(db)
            .await
            .map(|r| r.rows_affected() == 1)
    }
}

/// Stores a token.
pub(in crate::store) async fn insert_token(
    db: impl AnyExecutor<'_>,
    token_hmac: &str,
    grant_id: &str,
    kind: &str,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO oauth_tokens (token_hmac, grant_id, kind, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hmac)
    .bind(grant_id)
    .bind(kind)
    .bind(now_ms())
    .bind(expires_at)
    .execute(db)
    .await
    .map(drop)
}

/// Most expired codes and tokens removed per issuance.
pub const EXPIRED_SWEEP_BATCH: i64 = 100;

/// Removes up to [`EXPIRED_SWEEP_BATCH`] expired codes and as many expired tokens:
/// called at every issuance (which adds at most two rows), so the tables hold what is
/// live plus at most a batch of the expired. Answers how many rows went.
pub(in crate::store) async fn delete_expired(db: &mut sqlx::AnyConnection, now: i64) -> sqlx::Result<u64> {
    let codes = sqlx::query(
        "DELETE FROM oauth_codes WHERE code_hmac IN \
         (SELECT code_hmac FROM oauth_codes WHERE expires_at < $1 LIMIT $2)",
    )
    .bind(now)
    .bind(EXPIRED_SWEEP_BATCH)
    .execute(&mut *db)
    .await?
    .rows_affected();
    let tokens = sqlx::query(
        "DELETE FROM oauth_tokens WHERE token_hmac IN \
         (SELECT token_hmac FROM oauth_tokens WHERE expires_at < $1 LIMIT $2)",
    )
    .bind(now)
    .bind(EXPIRED_SWEEP_BATCH)
    .execute(&mut *db)
    .await?
    .rows_affected();
    Ok(codes + tokens)
}

impl super::Store {
    /// A token by its HMAC.
    pub async fn oauth_token(&self, token_hmac: &str) -> sqlx::Result<Option<TokenRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT grant_id, kind, expires_at, used_at, revoked_at FROM oauth_tokens WHERE token_hmac = $1")
            .bind(token_hmac)
            .fetch_optional(db)
            .await
    }

    /// Marks a refresh token exchanged; false when it already was (a replay).
    pub async fn use_oauth_token(&self, token_hmac: &str) -> sqlx::Result<bool> {
        let db = &self.pool;
        sqlx::query("UPDATE oauth_tokens SET used_at = $1 WHERE token_hmac = $2 AND used_at IS NULL")
            .bind(now_ms())
            .bind(token_hmac)
            .execute(db)
            .await
            .map(|r| r.rows_affected() == 1)
    }

    /// Revokes one token.
    pub async fn revoke_oauth_token(&self, token_hmac: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE oauth_tokens SET revoked_at = $1 WHERE token_hmac = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(token_hmac)
            .execute(db)
            .await
            .map(drop)
    }

    /// The orgs a user belongs to: (id, name, role), by name.
    pub async fn orgs_of_user(&self, user_id: &str) -> sqlx::Result<Vec<(String, String, String)>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT o.id, o.name, m.role FROM org_members m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 \
             ORDER BY o.name LIMIT 100",
        )
        .bind(user_id)
        .fetch_all(db)
        .await
    }

    /// The names of an org's active sites (the consent page's choices), by name.
    pub async fn oauth_site_names(&self, org_id: &str) -> sqlx::Result<Vec<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT name FROM sites WHERE org_id = $1 AND status = 'active' ORDER BY name LIMIT 1000")
            .bind(org_id)
            .fetch_all(db)
            .await
    }

    /// An org's active grants (of one person, or everyone's), newest first.
    pub async fn list_grants(&self, org_id: &str, user_id: Option<&str>) -> sqlx::Result<Vec<GrantRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, org_id, user_id, client_id, client_name, scopes, sites, production, resource, created_at, \
             last_used_at, revoked_at FROM oauth_grants WHERE org_id = $1 AND revoked_at IS NULL \
             AND ($2 IS NULL OR user_id = $2) ORDER BY created_at DESC, id LIMIT 1000",
        )
        .bind(org_id)
        .bind(user_id)
        .fetch_all(db)
        .await
    }
}

/// Freezes an org's agents (revoking every grant of it) or unfreezes them: the number of
/// grants revoked.
pub(in crate::store) async fn set_frozen(
    db: &mut sqlx::AnyConnection,
    org_id: &str,
    frozen: bool,
) -> sqlx::Result<u64> {
    let now = now_ms();
    if !frozen {
        sqlx::query("UPDATE orgs SET agents_frozen_at = NULL WHERE id = $1")
            .bind(org_id)
            .execute(&mut *db)
            .await?;
        return Ok(0);
    }
    sqlx::query("UPDATE orgs SET agents_frozen_at = COALESCE(agents_frozen_at, $1) WHERE id = $2")
        .bind(now)
        .bind(org_id)
        .execute(&mut *db)
        .await?;
    sqlx::query("UPDATE oauth_grants SET revoked_at = $1 WHERE org_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(org_id)
        .execute(&mut *db)
        .await
        .map(|r| r.rows_affected())
}

/// When an org's agents were frozen, if they are.
pub(in crate::store) async fn frozen_at(db: impl AnyExecutor<'_>, org_id: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT agents_frozen_at FROM orgs WHERE id = $1")
        .bind(org_id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}

impl super::Store {
    /// When an org's agents were frozen, if they are.
    pub async fn frozen_at(&self, org_id: &str) -> sqlx::Result<Option<i64>> {
        frozen_at(&self.pool, org_id).await
    }

    /// Deletes grants that ended, with their codes and tokens (by cascade): those revoked
    /// before `revoked_before` (ms), and those that can no longer be used — not revoked, made
    /// before `unused_before`, with no token and no exchanged or unexpired-by-then code (a
    /// code never exchanged, or tokens that all expired and were cleared). Returns how many
    /// grants went; a batch at a time.
    pub async fn prune_ended_grants(&self, revoked_before: i64, unused_before: i64) -> sqlx::Result<u64> {
        let db = &self.pool;
        let revoked = super::delete_in_batches(
            db,
            "DELETE FROM oauth_grants WHERE id IN (SELECT id FROM oauth_grants \
               WHERE revoked_at BETWEEN 1 AND $1 LIMIT 5000)",
            &[revoked_before],
        )
        .await?;
        let unused = super::delete_in_batches(
            db,
            "DELETE FROM oauth_grants WHERE id IN (SELECT g.id FROM oauth_grants g \
               WHERE g.revoked_at IS NULL AND g.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM oauth_tokens t WHERE t.grant_id = g.id) \
                 AND NOT EXISTS (SELECT 1 FROM oauth_codes c WHERE c.grant_id = g.id \
                                   AND (c.used_at IS NOT NULL OR c.expires_at >= $1)) \
               LIMIT 5000)",
            &[unused_before],
        )
        .await?;
        Ok(revoked + unused)
    }
}

/// An authorization code to store with its grant (by its HMAC).
#[derive(Clone, Copy, Debug)]
pub struct NewCode<'a> {
    /// HMAC of the code.
    pub code_hmac: &'a str,
    /// Where the code may be redeemed.
    pub redirect_uri: &'a str,
    /// The PKCE challenge.
    pub code_challenge: &'a str,
    /// Expiry (ms).
    pub expires_at: i64,
}

impl super::Store {
    /// Stores a person's consent (a grant) with its first authorization code, unless the
    /// org's agents are frozen: false then, and nothing is stored.
    pub async fn grant_consent(&self, grant: &NewGrant<'_>, code: &NewCode<'_>) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        if !insert_grant(&mut *tx, grant).await? {
            return Ok(false);
        }
        insert_code(
            &mut *tx,
            code.code_hmac,
            grant.id,
            code.redirect_uri,
            code.code_challenge,
            code.expires_at,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
