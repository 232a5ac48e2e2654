//! SQL of people and keys: users, org members, scoped API keys, and environment
//! protection. Roles and scopes are stored by name; the service parses them into enums.

use sqlx::{AnyExecutor, FromRow};

use crate::util::now_ms;

/// A user: an email and an argon2id password hash.
#[derive(Clone, Debug, FromRow)]
pub struct UserRow {
    /// Id.
    pub id: String,
    /// Lowercased email.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// A member of an org, with the user's email.
#[derive(Clone, Debug, FromRow)]
pub struct MemberRow {
    /// The user.
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// A role name.
    pub role: String,
    /// Joined (ms).
    pub created_at: i64,
}

/// Every column of an API key that decides what it may do (never the token).
#[derive(Clone, Debug, FromRow)]
pub struct KeyRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// What the key is listed by: the start of a new key, the lookup id of an older one.
    pub prefix: String,
    /// Argon2id PHC string of a key made before HMAC lookup; empty for newer keys.
    pub hash: String,
    /// A role name (service keys; personal keys act as their user's current role).
    pub role: String,
    /// `personal` or `service`.
    pub kind: String,
    /// The owner of a personal key.
    pub user_id: Option<String>,
    /// Comma-separated scope names.
    pub scopes: String,
    /// JSON array of site names, when restricted.
    pub sites: Option<String>,
    /// JSON array of environment names, when restricted.
    pub environments: Option<String>,
    /// When it stops working (ms); `None` for keys made before expiry existed.
    pub expires_at: Option<i64>,
    /// Created (ms).
    pub created_at: i64,
    /// Last authenticated (ms).
    pub last_used_at: Option<i64>,
    /// Set when revoked.
    pub revoked_at: Option<i64>,
}

/// The columns of [`KeyRow`], for `concat!` (queries stay static strings).
macro_rules! key_columns {
    () => {
        "id, org_id, name, prefix, hash, role, kind, user_id, scopes, sites, environments, \
         expires_at, created_at, last_used_at, revoked_at"
    };
}

/// A new scoped key, found by the HMAC of its token.
pub struct NewKey<'a> {
    /// Id.
    pub id: &'a str,
    /// Owning org.
    pub org_id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// The token's visible start.
    pub prefix: &'a str,
    /// HMAC-SHA256 of the token, hex.
    pub token_hmac: &'a str,
    /// Role name (service keys).
    pub role: &'a str,
    /// `personal` or `service`.
    pub kind: &'a str,
    /// Owner of a personal key.
    pub user_id: Option<&'a str>,
    /// Comma-separated scopes.
    pub scopes: &'a str,
    /// JSON site restriction.
    pub sites: Option<&'a str>,
    /// JSON environment restriction.
    pub environments: Option<&'a str>,
    /// Expiry (ms).
    pub expires_at: i64,
}

impl super::Store {
    /// Stores a new scoped key.
    pub async fn insert_key(&self, key: &NewKey<'_>) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, prefix, hash, role, kind, user_id, scopes, sites, environments, \
             expires_at, token_hmac, created_at) VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(key.id)
        .bind(key.org_id)
        .bind(key.name)
        .bind(key.prefix)
        .bind(key.role)
        .bind(key.kind)
        .bind(key.user_id)
        .bind(key.scopes)
        .bind(key.sites)
        .bind(key.environments)
        .bind(key.expires_at)
        .bind(key.token_hmac)
        .bind(now_ms())
        .execute(db)
        .await
        .map(drop)
    }

    /// A key by the HMAC of its token.
    pub async fn find_key_by_hmac(&self, token_hmac: &str) -> sqlx::Result<Option<KeyRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE token_hmac = $1"
        ))
        .bind(token_hmac)
        .fetch_optional(db)
        .await
    }

    /// An older key by its lookup id (verified with its argon2id hash by the caller).
    pub async fn find_key_by_prefix(&self, prefix: &str) -> sqlx::Result<Option<KeyRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE prefix = $1 AND token_hmac IS NULL"
        ))
        .bind(prefix)
        .fetch_optional(db)
        .await
    }

    /// A key by id.
    pub async fn get_key(&self, id: &str) -> sqlx::Result<Option<KeyRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await
    }

    /// An org's keys (or one user's personal keys), newest first.
    pub async fn list_keys(&self, org_id: &str, user_id: Option<&str>) -> sqlx::Result<Vec<KeyRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE org_id = $1 AND ($2 IS NULL OR user_id = $3) ORDER BY created_at DESC, id LIMIT 1000"
        ))
        .bind(org_id)
        .bind(user_id)
        .bind(user_id)
        .fetch_all(db)
        .await
    }

    /// Revokes a key; false when it was already revoked.
    pub async fn revoke_key(&self, id: &str) -> sqlx::Result<bool> {
        let db = &self.pool;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(db)
            .await
            .map(|r| r.rows_affected() == 1)
    }

    /// Records a use of a key, at most once a minute (a write per request would cost more
    /// than it tells).
    pub async fn touch_key(&self, id: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        let now = now_ms();
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(db)
        .await
        .map(drop)
    }
}

/// Inserts a user.
pub(in crate::store) async fn insert_user(
    db: impl AnyExecutor<'_>,
    id: &str,
    email: &str,
    password_hash: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .bind(now_ms())
        .execute(db)
        .await
        .map(drop)
}

impl super::Store {
    /// A user by (lowercased) email.
    pub async fn find_user_by_email(&self, email: &str) -> sqlx::Result<Option<UserRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, email, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(db)
            .await
    }

    /// A user by id.
    pub async fn get_user(&self, id: &str) -> sqlx::Result<Option<UserRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, email, password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await
    }
}

/// A member's role name in an org, if a member.
pub(in crate::store) async fn member_role(
    db: impl AnyExecutor<'_>,
    org_id: &str,
    user_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

impl super::Store {
    /// A member's role name in an org, if a member.
    pub async fn member_role(&self, org_id: &str, user_id: &str) -> sqlx::Result<Option<String>> {
        member_role(&self.pool, org_id, user_id).await
    }

    /// The first org a user joined (dashboard password login).
    pub async fn first_org_of(&self, user_id: &str) -> sqlx::Result<Option<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT org_id FROM org_members WHERE user_id = $1 ORDER BY created_at, org_id LIMIT 1")
            .bind(user_id)
            .fetch_optional(db)
            .await
    }
}

/// How many orgs a user belongs to.
pub(in crate::store) async fn count_orgs_of(db: impl AnyExecutor<'_>, user_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM org_members WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(db)
        .await
}

/// Adds a member, or changes the role of one.
pub(in crate::store) async fn upsert_member(
    db: impl AnyExecutor<'_>,
    org_id: &str,
    user_id: &str,
    role: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role)
    .bind(now_ms())
    .execute(db)
    .await
    .map(drop)
}

/// Removes a member and revokes their personal keys of the org.
pub(in crate::store) async fn delete_member(
    db: &mut sqlx::AnyConnection,
    org_id: &str,
    user_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *db)
        .await?;
    sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND user_id = $3 AND kind = 'personal' AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(org_id)
    .bind(user_id)
    .execute(&mut *db)
    .await?;
    sqlx::query("DELETE FROM ui_sessions WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *db)
        .await
        .map(drop)
}

impl super::Store {
    /// An org's members, by email.
    pub async fn list_members(&self, org_id: &str) -> sqlx::Result<Vec<MemberRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT m.user_id, u.email, m.role, m.created_at FROM org_members m JOIN users u ON u.id = m.user_id \
             WHERE m.org_id = $1 ORDER BY u.email LIMIT 1000",
        )
        .bind(org_id)
        .fetch_all(db)
        .await
    }
}

/// How many owners an org has among its members.
pub(in crate::store) async fn count_owners(db: impl AnyExecutor<'_>, org_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = 'owner'")
        .bind(org_id)
        .fetch_one(db)
        .await
}

/// An environment's name and protection setting.
#[derive(Clone, Debug, FromRow)]
pub struct EnvironmentProtection {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its own setting; `None`: the default (production is protected).
    pub protected: Option<super::Flag>,
}

impl super::Store {
    /// The protection of every environment of a site.
    pub async fn environment_protection(&self, site_id: &str) -> sqlx::Result<Vec<EnvironmentProtection>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, name, protected FROM environments WHERE site_id = $1")
            .bind(site_id)
            .fetch_all(db)
            .await
    }
}

/// The person a new membership is for.
#[derive(Clone, Copy, Debug)]
pub enum NewMember<'a> {
    /// A user who has an account.
    Existing {
        /// Their id.
        user_id: &'a str,
    },
    /// A user whose account is made with the membership.
    New {
        /// The new user's id.
        user_id: &'a str,
        /// Their email.
        email: &'a str,
        /// Their argon2id password hash.
        password_hash: &'a str,
    },
}

/// What a change of an org's members did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Done.
    Done,
    /// The person is a member already (with this role); nothing changed.
    AlreadyMember(String),
    /// It would leave the org without an owner; nothing changed.
    LastOwner,
}

/// What became of an invitation's use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvitationAccepted {
    /// The person is a member now.
    Accepted,
    /// The person is a member already (with this role); nothing changed.
    AlreadyMember(String),
    /// The invitation was used, revoked or expired meanwhile; nothing changed.
    NoLongerPending,
}

impl super::Store {
    /// Adds a person to an org with a role, making their account first when they are new.
    pub async fn add_member(&self, org_id: &str, member: NewMember<'_>, role: &str) -> sqlx::Result<MembershipChange> {
        let mut tx = self.begin().await?;
        let user_id = match member {
            NewMember::Existing { user_id } => user_id,
            NewMember::New {
                user_id,
                email,
                password_hash,
            } => {
                insert_user(&mut *tx, user_id, email, password_hash).await?;
                user_id
            }
        };
        if let Some(current) = member_role(&mut *tx, org_id, user_id).await? {
            return Ok(MembershipChange::AlreadyMember(current));
        }
        upsert_member(&mut *tx, org_id, user_id, role).await?;
        tx.commit().await?;
        Ok(MembershipChange::Done)
    }

    /// Accepts an invitation: makes the person's account when they are new, adds them to
    /// the org with the invitation's role and records `audit`. Conditional on the
    /// invitation still being pending (of two uses, one wins).
    pub async fn accept_invitation(
        &self,
        invitation_id: &str,
        org_id: &str,
        member: NewMember<'_>,
        role: &str,
        audit: &super::NewAuditEntry<'_>,
    ) -> sqlx::Result<InvitationAccepted> {
        let mut tx = self.begin().await?;
        let user_id = match member {
            NewMember::Existing { user_id } => user_id,
            NewMember::New {
                user_id,
                email,
                password_hash,
            } => {
                insert_user(&mut *tx, user_id, email, password_hash).await?;
                user_id
            }
        };
        if let Some(current) = member_role(&mut *tx, org_id, user_id).await? {
            return Ok(InvitationAccepted::AlreadyMember(current));
        }
        if !super::invitations::mark_accepted(&mut *tx, invitation_id, now_ms()).await? {
            return Ok(InvitationAccepted::NoLongerPending);
        }
        upsert_member(&mut *tx, org_id, user_id, role).await?;
        super::insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(InvitationAccepted::Accepted)
    }

    /// Sets a member's role; `unmakes_owner` (an owner given another role) is refused
    /// when they are the org's last owner, counted under the write lock.
    pub async fn set_member_role(
        &self,
        org_id: &str,
        user_id: &str,
        role: &str,
        unmakes_owner: bool,
    ) -> sqlx::Result<MembershipChange> {
        let mut tx = self.begin().await?;
        if unmakes_owner && count_owners(&mut *tx, org_id).await? <= 1 {
            return Ok(MembershipChange::LastOwner);
        }
        upsert_member(&mut *tx, org_id, user_id, role).await?;
        tx.commit().await?;
        Ok(MembershipChange::Done)
    }

    /// Removes a member (their personal keys of the org are revoked, their sessions end);
    /// an owner is refused when they are the org's last, counted under the write lock.
    pub async fn remove_member(&self, org_id: &str, user_id: &str, is_owner: bool) -> sqlx::Result<MembershipChange> {
        let mut tx = self.begin().await?;
        if is_owner && count_owners(&mut *tx, org_id).await? <= 1 {
            return Ok(MembershipChange::LastOwner);
        }
        delete_member(&mut tx, org_id, user_id).await?;
        tx.commit().await?;
        Ok(MembershipChange::Done)
    }
}
