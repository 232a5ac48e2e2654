//! SQL of invitations: single-use links found by the HMAC of their token (never the
//! token itself). Accepting one is a single conditional UPDATE, so two uses of the same
//! link cannot both succeed.

use sqlx::{AnyExecutor, FromRow};

/// An invitation as stored (no token).
#[derive(Clone, Debug, FromRow)]
pub struct InvitationRow {
    /// Id.
    pub id: String,
    /// The org it makes a member of.
    pub org_id: String,
    /// Lowercased email it was sent to.
    pub email: String,
    /// A role name.
    pub role: String,
    /// Who invited (key name or member email).
    pub invited_by: String,
    /// Created (ms).
    pub created_at: i64,
    /// Stops working (ms).
    pub expires_at: i64,
    /// Used (ms).
    pub accepted_at: Option<i64>,
    /// Revoked (ms).
    pub revoked_at: Option<i64>,
}

/// The columns of [`InvitationRow`], for `concat!` (queries stay static strings).
macro_rules! invitation_columns {
    () => {
        "id, org_id, email, role, invited_by, created_at, expires_at, accepted_at, revoked_at"
    };
}

/// A new invitation.
pub struct NewInvitation<'a> {
    /// Id.
    pub id: &'a str,
    /// The org.
    pub org_id: &'a str,
    /// Lowercased email.
    pub email: &'a str,
    /// Role name.
    pub role: &'a str,
    /// HMAC-SHA256 of the token, hex.
    pub token_hmac: &'a str,
    /// Who invited.
    pub invited_by: &'a str,
    /// Created (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: i64,
}

impl super::Store {
    /// Stores a new invitation.
    pub async fn insert_invitation(&self, inv: &NewInvitation<'_>) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "INSERT INTO invitations (id, org_id, email, role, token_hmac, invited_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(inv.id)
        .bind(inv.org_id)
        .bind(inv.email)
        .bind(inv.role)
        .bind(inv.token_hmac)
        .bind(inv.invited_by)
        .bind(inv.created_at)
        .bind(inv.expires_at)
        .execute(db)
        .await
        .map(drop)
    }

    /// An invitation by the HMAC of its token.
    pub async fn find_invitation_by_hmac(&self, token_hmac: &str) -> sqlx::Result<Option<InvitationRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE token_hmac = $1"
        ))
        .bind(token_hmac)
        .fetch_optional(db)
        .await
    }

    /// An invitation of an org by id.
    pub async fn get_invitation(&self, org_id: &str, id: &str) -> sqlx::Result<Option<InvitationRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE org_id = $1 AND id = $2"
        ))
        .bind(org_id)
        .bind(id)
        .fetch_optional(db)
        .await
    }

    /// One page of an org's invitations, newest first (ids sort by creation time): at most
    /// `limit`, those older than the invitation `before` when given.
    pub async fn list_invitations_page(
        &self,
        org_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> sqlx::Result<Vec<InvitationRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE org_id = $1 AND ($2 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(org_id)
        .bind(before)
        .bind(before)
        .bind(limit)
        .fetch_all(db)
        .await
    }
}

/// Marks a pending invitation used; false when it was used, revoked or expired meanwhile.
pub(in crate::store) async fn mark_accepted(db: impl AnyExecutor<'_>, id: &str, now: i64) -> sqlx::Result<bool> {
    sqlx::query(
        "UPDATE invitations SET accepted_at = $1 \
         WHERE id = $2 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
    )
    .bind(now)
    .bind(id)
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

impl super::Store {
    /// Revokes a pending invitation; false when it was no longer pending.
    pub async fn revoke_invitation(&self, id: &str, now: i64) -> sqlx::Result<bool> {
        let db = &self.pool;
        sqlx::query(
            "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
    }
}
