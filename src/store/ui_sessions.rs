//! SQL of dashboard sessions (`ui_sessions`): rows are found by the hash of the cookie
//! value and resolve to the API key (and org) they were created from.

use sqlx::{FromRow, SqliteExecutor};

use crate::util::now_ms;

/// A live session joined with its key and org: everything needed to rebuild the key's actor.
#[derive(Clone, Debug, FromRow)]
pub struct SessionRow {
    /// CSRF token that every state-changing request of this session must echo.
    pub csrf_token: String,
    /// The org.
    pub org_id: String,
    /// The org's name.
    pub org_name: String,
    /// The API key the session acts as.
    pub key_id: String,
    /// The key's name.
    pub key_name: String,
    /// The key's role.
    pub role: String,
}

/// Stores a new session under the hash of its cookie value.
pub async fn insert_session(
    db: impl SqliteExecutor<'_>,
    id_hash: &str,
    org_id: &str,
    key_id: &str,
    csrf_token: &str,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ui_sessions (id, org_id, key_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id_hash)
    .bind(org_id)
    .bind(key_id)
    .bind(csrf_token)
    .bind(now_ms())
    .bind(expires_at)
    .execute(db)
    .await
    .map(drop)
}

/// An unexpired session whose key is not revoked, by the hash of its cookie value.
pub async fn find_session(db: impl SqliteExecutor<'_>, id_hash: &str) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "SELECT s.csrf_token, o.id AS org_id, o.name AS org_name, k.id AS key_id, k.name AS key_name, k.role \
         FROM ui_sessions s JOIN api_keys k ON k.id = s.key_id JOIN orgs o ON o.id = k.org_id \
         WHERE s.id = ? AND s.expires_at > ? AND k.revoked_at IS NULL AND k.org_id = s.org_id",
    )
    .bind(id_hash)
    .bind(now_ms())
    .fetch_optional(db)
    .await
}

/// Ends a session (logout).
pub async fn delete_session(db: impl SqliteExecutor<'_>, id_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM ui_sessions WHERE id = ?")
        .bind(id_hash)
        .execute(db)
        .await
        .map(drop)
}

/// Removes expired sessions; returns how many.
pub async fn delete_expired_sessions(db: impl SqliteExecutor<'_>) -> sqlx::Result<u64> {
    sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= ?")
        .bind(now_ms())
        .execute(db)
        .await
        .map(|r| r.rows_affected())
}
