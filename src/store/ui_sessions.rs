//! SQL of dashboard sessions (`ui_sessions`): rows are found by the hash of the cookie
//! value and resolve to the API key (key login) or the member (password login) they act as.

use sqlx::{AnyExecutor, FromRow};

use crate::util::now_ms;

/// A live session: what the actor is rebuilt from on each request.
#[derive(Clone, Debug, FromRow)]
pub struct SessionRow {
    /// CSRF token that every state-changing request of this session must echo.
    pub csrf_token: String,
    /// The org.
    pub org_id: String,
    /// The API key the session acts as (key login).
    pub key_id: Option<String>,
    /// The user the session acts as (password login).
    pub user_id: Option<String>,
}

impl super::Store {
    /// Stores a new session under the hash of its cookie value.
    pub async fn insert_session(
        &self,
        id_hash: &str,
        org_id: &str,
        key_id: Option<&str>,
        user_id: Option<&str>,
        csrf_token: &str,
        expires_at: i64,
    ) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "INSERT INTO ui_sessions (id, org_id, key_id, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id_hash)
        .bind(org_id)
        .bind(key_id)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now_ms())
        .bind(expires_at)
        .execute(db)
        .await
        .map(drop)
    }

    /// An unexpired session by the hash of its cookie value (whether its key or member still
    /// may act is decided when the actor is rebuilt).
    pub async fn find_session(&self, id_hash: &str) -> sqlx::Result<Option<SessionRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT csrf_token, org_id, key_id, user_id FROM ui_sessions WHERE id = $1 AND expires_at > $2")
            .bind(id_hash)
            .bind(now_ms())
            .fetch_optional(db)
            .await
    }
}

/// Moves a member's live session to another org with a new CSRF token; false when no
/// such session of that user is live.
pub(in crate::store) async fn switch_org(
    db: impl AnyExecutor<'_>,
    id_hash: &str,
    user_id: &str,
    org_id: &str,
    csrf_token: &str,
) -> sqlx::Result<bool> {
    sqlx::query(
        "UPDATE ui_sessions SET org_id = $1, csrf_token = $2 WHERE id = $3 AND user_id = $4 AND key_id IS NULL AND expires_at > $5",
    )
    .bind(org_id)
    .bind(csrf_token)
    .bind(id_hash)
    .bind(user_id)
    .bind(now_ms())
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

impl super::Store {
    /// Ends a session (logout).
    pub async fn delete_session(&self, id_hash: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("DELETE FROM ui_sessions WHERE id = $1")
            .bind(id_hash)
            .execute(db)
            .await
            .map(drop)
    }

    /// Removes expired sessions; returns how many.
    pub async fn delete_expired_sessions(&self) -> sqlx::Result<u64> {
        let db = &self.pool;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(db)
            .await
            .map(|r| r.rows_affected())
    }
}
