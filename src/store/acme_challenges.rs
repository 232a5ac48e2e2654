//! SQL of the ACME challenges in flight (HTTP-01 and TLS-ALPN-01), shared by every
//! replica's edge, and of each replica's confirmation that its edge has applied them.
//! Publishing and withdrawing write their event in the same transaction, under one
//! subject ([`CHALLENGES_SUBJECT`]) that the replicas' followers read by cursor.

use sqlx::FromRow;

use super::Store;

/// The subject of every challenge event (`acme.challenge.published` / `.withdrawn`).
pub const CHALLENGES_SUBJECT: &str = "acme-challenges";
/// The org of challenge events: they belong to the installation, not to an org.
const NO_ORG: &str = "";

/// A stored challenge, as the edges answer it.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct AcmeChallengeRow {
    /// `http-01` or `tls-alpn-01`.
    pub kind: String,
    /// The name it proves.
    pub name: String,
    /// The token (HTTP-01's file name).
    pub token: String,
    /// The key authorization (HTTP-01's file content; TLS-ALPN-01's digest is its SHA-256).
    pub key_authorization: String,
    /// Published (ms).
    pub created_at: i64,
    /// Swept after (ms).
    pub expires_at: i64,
}

/// What publishing a challenge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengePublished {
    /// Stored (or refreshed) with the event of this cursor.
    Published {
        /// The event's id: a replica that applied it answers the challenge.
        event: i64,
    },
}

/// What withdrawing a challenge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeWithdrawn {
    /// Deleted with the event of this cursor.
    Withdrawn {
        /// The event's id.
        event: i64,
    },
    /// It was not stored (already withdrawn, or swept).
    Absent,
}

impl Store {
    /// Stores a challenge for every replica's edge to answer until `expires_at` (a second
    /// publish of the same one refreshes it), sweeps expired ones, and writes the
    /// `acme.challenge.published` event, in one transaction.
    pub async fn publish_acme_challenge(&self, row: &AcmeChallengeRow) -> sqlx::Result<ChallengePublished> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM acme_challenges WHERE expires_at <= $1")
            .bind(row.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO acme_challenges (kind, name, token, key_authorization, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, name, token) DO UPDATE SET \
             key_authorization = excluded.key_authorization, created_at = excluded.created_at, \
             expires_at = excluded.expires_at",
        )
        .bind(&row.kind)
        .bind(&row.name)
        .bind(&row.token)
        .bind(&row.key_authorization)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(&mut *tx)
        .await?;
        let data = serde_json::json!({"kind": row.kind, "name": row.name, "token": row.token});
        let event =
            super::insert_event(&mut *tx, NO_ORG, "acme.challenge.published", CHALLENGES_SUBJECT, &data).await?;
        tx.commit().await?;
        Ok(ChallengePublished::Published { event })
    }

    /// Deletes a challenge and writes the `acme.challenge.withdrawn` event, in one
    /// transaction; nothing is written when it was not stored.
    pub async fn withdraw_acme_challenge(
        &self,
        kind: &str,
        name: &str,
        token: &str,
    ) -> sqlx::Result<ChallengeWithdrawn> {
        let mut tx = self.begin().await?;
        let gone = sqlx::query("DELETE FROM acme_challenges WHERE kind = $1 AND name = $2 AND token = $3")
            .bind(kind)
            .bind(name)
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            tx.rollback().await?;
            return Ok(ChallengeWithdrawn::Absent);
        }
        let data = serde_json::json!({"kind": kind, "name": name, "token": token});
        let event =
            super::insert_event(&mut *tx, NO_ORG, "acme.challenge.withdrawn", CHALLENGES_SUBJECT, &data).await?;
        tx.commit().await?;
        Ok(ChallengeWithdrawn::Withdrawn { event })
    }

    /// The live (unexpired at `now`) challenges of `kind`, the newest first, at most `limit`.
    pub async fn live_acme_challenges(&self, kind: &str, now: i64, limit: i64) -> sqlx::Result<Vec<AcmeChallengeRow>> {
        sqlx::query_as(
            "SELECT kind, name, token, key_authorization, created_at, expires_at FROM acme_challenges \
             WHERE kind = $1 AND expires_at > $2 ORDER BY created_at DESC, name, token LIMIT $3",
        )
        .bind(kind)
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Deletes the challenges expired at `now` (an order's end that never withdrew them:
    /// its replica was killed); returns how many went.
    pub async fn sweep_acme_challenges(&self, now: i64) -> sqlx::Result<u64> {
        let mut tx = self.begin().await?;
        let gone = sqlx::query("DELETE FROM acme_challenges WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone)
    }

    /// Records that replica `id`'s edge answers every challenge change up to the event
    /// `cursor` (it never goes back).
    pub async fn record_challenges_applied(&self, id: &str, cursor: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE replicas SET challenges_applied = $1 WHERE id = $2 AND challenges_applied < $1")
            .bind(cursor)
            .bind(id)
            .execute(self.pool())
            .await
            .map(drop)
    }

    /// The live replicas (heartbeat newer than `since`) other than `me` whose edges have
    /// not applied the challenge event `event` yet, by id.
    pub async fn replicas_behind_on_challenges(&self, me: &str, since: i64, event: i64) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM replicas WHERE heartbeat_at > $1 AND id <> $2 AND challenges_applied < $3 ORDER BY id",
        )
        .bind(since)
        .bind(me)
        .bind(event)
        .fetch_all(self.pool())
        .await
    }
}
