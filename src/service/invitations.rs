//! Invitations: single-use links that make a person a member of the org with a role.
//! Admins invite (only owners invite owners); the link carries a random token that berth
//! keeps only as an HMAC (like API keys), answers once, and never lists, logs or audits.
//! Accepting sets a password for a new account (or proves the existing one's) and adds
//! the membership in one transaction whose conditional UPDATE lets a link work once;
//! a used, revoked or expired link is refused and changes nothing. When the org has
//! `smtp` settings the link is also emailed to the invitee; the answer says whether that
//! worked, and a failed send leaves the invitation pending and its link working.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Service;
use super::access::{Action, Role, Target};
use crate::auth;
use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, ActorKind};
use crate::smtp;
use crate::store;
use crate::store::invitations as invitation_store;
use crate::store::people as people_store;
use crate::throttle::Subject;
use crate::util::{new_id, now_ms, random_hex, rfc3339};

/// Days an invitation lives when no expiry is given.
pub const DEFAULT_INVITATION_DAYS: u32 = 7;
/// The longest an invitation may live.
pub const MAX_INVITATION_DAYS: u32 = 30;
/// The start of every invitation token (and so of the link's last segment).
pub const INVITATION_TOKEN_PREFIX: &str = "berth_inv_";

/// `HOSTING_INVITE_MEMBER` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteMemberInput {
    /// The person's email (their dashboard login once they accept).
    pub email: String,
    /// The role they get: owner, admin, developer, deployer or viewer.
    pub role: String,
    /// Days until the link stops working: default 7, at most 30.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvitationStatus {
    /// Waiting to be accepted.
    Pending,
    /// Used: the person is a member.
    Accepted,
    /// Revoked before use.
    Revoked,
    /// Not used in time.
    Expired,
}

impl InvitationStatus {
    /// Shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// An invitation as listed (never its token).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InvitationInfo {
    /// Id (revoke by it).
    pub id: String,
    /// Who is invited.
    pub email: String,
    /// The role they get.
    pub role: Role,
    /// Who invited (a member's email or a key's name).
    pub invited_by: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Stops working (RFC 3339).
    pub expires_at: String,
    /// Used (RFC 3339).
    pub accepted_at: Option<String>,
    /// Revoked (RFC 3339).
    pub revoked_at: Option<String>,
    /// pending, accepted, revoked or expired.
    pub status: InvitationStatus,
}

/// A new invitation: its link, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedInvitation {
    /// The invitation.
    pub invitation: InvitationInfo,
    /// The single-use link: opening it lets the person set a password (or sign in) and
    /// join. berth keeps only an HMAC of it and cannot show it again; give it to them
    /// yourself unless `email` says it was sent.
    pub link: String,
    /// Whether berth emailed the link (through the org's `smtp` settings).
    pub email: InvitationEmail,
}

/// What became of emailing an invitation. A failed send leaves the invitation pending
/// and its link working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum InvitationEmail {
    /// The relay accepted the message for the invitee.
    Sent,
    /// No `smtp` settings: nothing was sent; give the link yourself.
    NotConfigured,
    /// Sending failed: give the link yourself, and fix the settings.
    Failed {
        /// What failed and how to fix it (never the link or the password).
        reason: String,
    },
}

impl std::fmt::Display for InvitationEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sent => f.write_str("sent"),
            Self::NotConfigured => f.write_str("not_configured"),
            Self::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// `HOSTING_LIST_INVITATIONS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInvitationsInput {
    /// Invitations per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One page of the org's invitations.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InvitationList {
    /// Newest first.
    pub invitations: Vec<InvitationInfo>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Names an invitation.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationRef {
    /// The invitation's id (from HOSTING_LIST_INVITATIONS).
    pub invitation_id: String,
}

/// What the invitation page shows before the person accepts.
#[derive(Debug, Clone)]
pub struct InvitationPreview {
    /// The org's name.
    pub org_name: String,
    /// Who is invited.
    pub email: String,
    /// The role they get.
    pub role: Role,
    /// Whether the email has an account here (then they sign in instead of setting a password).
    pub has_account: bool,
    /// Stops working (RFC 3339).
    pub expires_at: String,
}

/// A used invitation: the new membership.
#[derive(Debug, Clone)]
pub struct AcceptedInvitation {
    /// The org joined.
    pub org_id: String,
    /// The member.
    pub user_id: String,
    /// Their email.
    pub email: String,
    /// Their role.
    pub role: Role,
}

fn invitation_info(row: invitation_store::InvitationRow, now: i64) -> Option<InvitationInfo> {
    Some(InvitationInfo {
        status: status_of(&row, now),
        role: Role::parse(&row.role)?,
        id: row.id,
        email: row.email,
        invited_by: row.invited_by,
        created_at: rfc3339(row.created_at),
        expires_at: rfc3339(row.expires_at),
        accepted_at: row.accepted_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
    })
}

fn status_of(row: &invitation_store::InvitationRow, now: i64) -> InvitationStatus {
    if row.accepted_at.is_some() {
        InvitationStatus::Accepted
    } else if row.revoked_at.is_some() {
        InvitationStatus::Revoked
    } else if row.expires_at <= now {
        InvitationStatus::Expired
    } else {
        InvitationStatus::Pending
    }
}

/// Why a link no longer works, said to the person who opened it.
fn unusable(row: &invitation_store::InvitationRow, now: i64) -> Option<ServiceError> {
    let message = match status_of(row, now) {
        InvitationStatus::Pending => return None,
        InvitationStatus::Accepted => format!(
            "this invitation was already used on {}; an invitation works once. Log in at /login, or ask an admin of the org for a new one",
            rfc3339(row.accepted_at.unwrap_or_default())
        ),
        InvitationStatus::Revoked => {
            "this invitation was revoked by an admin of the org; ask them for a new one".to_string()
        }
        InvitationStatus::Expired => format!(
            "this invitation expired on {}; ask an admin of the org for a new one",
            rfc3339(row.expires_at)
        ),
    };
    Some(ServiceError::conflict(message))
}

/// The plain-text invitation email.
fn invitation_body(org: &str, inviter: &str, role: Role, link: &str, expires_at: i64) -> String {
    format!(
        "{inviter} invited you to join {org} on berth as {role}.\n\n\
         Open this link to set a password (or sign in) and join:\n\n    {link}\n\n\
         The link works once and expires on {expires}. If you did not expect this \
         invitation, ignore this email.\n",
        role = role.as_str(),
        expires = rfc3339(expires_at),
    )
}

fn unknown_link() -> ServiceError {
    ServiceError::not_found(
        "this invitation link is not valid: check that it was copied whole, or ask an admin of the org for a new one",
    )
}

impl Service {
    /// `HOSTING_INVITE_MEMBER`: a single-use link that makes `email` a member with
    /// `role`; admins invite, only owners invite owners.
    pub async fn invite_member(&self, actor: &Actor, input: &InviteMemberInput) -> ServiceResult<CreatedInvitation> {
        self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let email = super::people::normalize_email(&input.email)?;
            let role = Role::from_arg("role", &input.role)?;
            if role == Role::Owner {
                self.authorize(actor, Action::ManageOrg, Target::Org)
                    .await
                    .map_err(|e| match e {
                        ServiceError::Forbidden { .. } => ServiceError::Forbidden {
                            message: format!(
                                "inviting an owner needs the role owner; you are {} (invite them as admin, or ask an owner)",
                                actor.role
                            ),
                        },
                        other => other,
                    })?;
            }
            let days = input.expires_in_days.unwrap_or(DEFAULT_INVITATION_DAYS);
            if !(1..=MAX_INVITATION_DAYS).contains(&days) {
                return Err(ServiceError::invalid(
                    "expires_in_days",
                    format!(
                        "an invitation lives 1 to {MAX_INVITATION_DAYS} days (default {DEFAULT_INVITATION_DAYS}); asked for {days}"
                    ),
                ));
            }
            let store = &self.platform.store;
            if let Some(user) = store.find_user_by_email(&email).await?
                && let Some(current) = store.member_role(&actor.org_id, &user.id).await?
            {
                return Err(ServiceError::conflict(format!(
                    "{email} is already a member ({current}); change their role with HOSTING_SET_MEMBER_ROLE"
                )));
            }
            let token = format!("{INVITATION_TOKEN_PREFIX}{}", random_hex(32));
            let token_hmac = self.platform.key_lookup.digest(&token)?;
            let now = now_ms();
            let id = new_id("inv");
            let invited_by = actor.user_email.clone().unwrap_or_else(|| actor.key_name.clone());
            let row = invitation_store::InvitationRow {
                id: id.clone(),
                org_id: actor.org_id.clone(),
                email: email.clone(),
                role: role.as_str().into(),
                invited_by: invited_by.clone(),
                created_at: now,
                expires_at: now + i64::from(days) * 86_400_000,
                accepted_at: None,
                revoked_at: None,
            };
            store.insert_invitation(&invitation_store::NewInvitation {
                    id: &row.id,
                    org_id: &row.org_id,
                    email: &row.email,
                    role: &row.role,
                    token_hmac: &token_hmac,
                    invited_by: &row.invited_by,
                    created_at: row.created_at,
                    expires_at: row.expires_at,
                },
            )
            .await?;
            let link = format!("{}/invite/{token}", self.platform.public_url());
            // Stored first: whatever happens to the email, the invitation and its link stand.
            let email = self.email_invitation(actor, &row, role, &link, &token).await;
            Ok(CreatedInvitation {
                invitation: invitation_info(row, now).expect("the role was parsed above"),
                link,
                email,
            })
        }
        .await;
        self.audit(actor, "HOSTING_INVITE_MEMBER", args, &result).await;
        result
    }

    /// Emails a new invitation's link through the org's `smtp` settings, when there are
    /// any; bounded by `smtp::SEND_TIMEOUT`. Neither the link nor the password reaches the
    /// outcome or the log.
    async fn email_invitation(
        &self,
        actor: &Actor,
        row: &invitation_store::InvitationRow,
        role: Role,
        link: &str,
        token: &str,
    ) -> InvitationEmail {
        let config = match self.platform.provider_config(&actor.org_id, smtp::PROVIDER).await {
            Ok(map) => smtp::SmtpConfig::from_map(&map).map_err(|e| e.to_string()),
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "opening the smtp settings failed");
                Err("the smtp settings could not be read; see the server log".to_string())
            }
        };
        let outcome = match config {
            Ok(None) => return InvitationEmail::NotConfigured,
            Ok(Some(config)) => {
                let email = smtp::OutgoingEmail {
                    to: row.email.clone(),
                    subject: format!("{} invited you to {} on berth", row.invited_by, actor.org_name),
                    body: invitation_body(&actor.org_name, &row.invited_by, role, link, row.expires_at),
                };
                config.send(&self.platform.hello_name(), &email, &[token]).await
            }
            Err(reason) => Err(format!("the smtp settings are not usable: {reason}")),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(invitation.id = %row.id, "invitation emailed");
                InvitationEmail::Sent
            }
            Err(reason) => {
                tracing::warn!(invitation.id = %row.id, reason = %reason, "emailing an invitation failed");
                InvitationEmail::Failed { reason }
            }
        }
    }

    /// `HOSTING_LIST_INVITATIONS`: one page of the org's invitations, newest first, each
    /// with its status (never a token); the cursor is the last invitation's id. Needs
    /// admin.
    pub async fn list_invitations(&self, actor: &Actor, input: &ListInvitationsInput) -> ServiceResult<InvitationList> {
        self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        let limit = super::page_limit(input.limit)?;
        let before = match input.cursor.as_deref() {
            None | Some("") => None,
            Some(c)
                if c.len() <= 64
                    && c.strip_prefix("inv_")
                        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())) =>
            {
                Some(c)
            }
            Some(_) => return Err(super::bad_cursor()),
        };
        // One more than asked tells whether another page follows.
        let mut rows = self
            .platform
            .store
            .list_invitations_page(&actor.org_id, before, i64::from(limit) + 1)
            .await?;
        let next_cursor = super::cut_page(&mut rows, limit as usize, |r| r.id.clone());
        let now = now_ms();
        Ok(InvitationList {
            invitations: rows.into_iter().filter_map(|r| invitation_info(r, now)).collect(),
            next_cursor,
        })
    }

    /// `HOSTING_REVOKE_INVITATION`: a pending invitation stops working at once. Needs
    /// admin; another org's invitation is "not found".
    pub async fn revoke_invitation(&self, actor: &Actor, input: &InvitationRef) -> ServiceResult<InvitationInfo> {
        self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let store = &self.platform.store;
            let not_found = || {
                ServiceError::not_found(format!(
                    "no invitation '{}' in this org; list them with HOSTING_LIST_INVITATIONS",
                    input.invitation_id.chars().take(80).collect::<String>()
                ))
            };
            let row = store
                .get_invitation(&actor.org_id, input.invitation_id.trim())
                .await?
                .ok_or_else(not_found)?;
            let now = now_ms();
            if !store.revoke_invitation(&row.id, now).await? {
                return Err(ServiceError::conflict(format!(
                    "invitation '{}' for {} is already {}; only a pending invitation can be revoked",
                    row.id,
                    row.email,
                    status_of(&row, now).as_str()
                )));
            }
            let row = store
                .get_invitation(&actor.org_id, &row.id)
                .await?
                .ok_or_else(not_found)?;
            invitation_info(row, now).ok_or_else(not_found)
        }
        .await;
        self.audit(actor, "HOSTING_REVOKE_INVITATION", args, &result).await;
        result
    }

    /// A pending invitation by its link's token, for the page that accepts it.
    pub async fn preview_invitation(&self, token: &str) -> ServiceResult<InvitationPreview> {
        let row = self.pending_invitation(token).await?;
        let store = &self.platform.store;
        let org_name = store
            .get_org(&row.org_id)
            .await?
            .map(|o| o.name)
            .ok_or_else(unknown_link)?;
        let has_account = store.find_user_by_email(&row.email).await?.is_some();
        Ok(InvitationPreview {
            org_name,
            email: row.email,
            role: Role::parse(&row.role).ok_or_else(unknown_link)?,
            has_account,
            expires_at: rfc3339(row.expires_at),
        })
    }

    /// Uses an invitation: a new account gets `password` (at least 12 characters); an
    /// existing one proves itself by its password, or by `signed_in` (the user id of the
    /// browser's own session). Wrong passwords count against the address and the account
    /// like failed logins. Works once; anything refused changes nothing.
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: Option<&str>,
        signed_in: Option<&str>,
        client: IpAddr,
    ) -> ServiceResult<AcceptedInvitation> {
        let row = self.pending_invitation(token).await?;
        let role = Role::parse(&row.role).ok_or_else(unknown_link)?;
        let store = &self.platform.store;
        let existing = store.find_user_by_email(&row.email).await?;
        let password = password.filter(|p| !p.is_empty()).map(str::to_string);
        // Hash or verify before the transaction: argon2 is slow and must not hold the database.
        let new_hash = match (&existing, password) {
            (None, None) => {
                return Err(ServiceError::invalid(
                    "password",
                    format!(
                        "choose a password (at least {} characters) for {}",
                        auth::MIN_PASSWORD_CHARS,
                        row.email
                    ),
                ));
            }
            (None, Some(p)) => Some(
                tokio::task::spawn_blocking(move || auth::hash_password(&p))
                    .await
                    .map_err(|e| ServiceError::Internal(e.into()))??,
            ),
            (Some(user), _) if signed_in == Some(user.id.as_str()) => None,
            (Some(_), None) => {
                return Err(ServiceError::invalid(
                    "password",
                    format!("{} already has an account here: enter its password to join", row.email),
                ));
            }
            (Some(user), Some(p)) => {
                let who = [
                    Subject::address(client),
                    Subject::Account(format!("user:{}", row.email)),
                ];
                self.platform
                    .auth_throttle
                    .check(&who)
                    .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
                let hash = user.password_hash.clone();
                let ok = tokio::task::spawn_blocking(move || p.len() <= 1024 && auth::verify_hash(&hash, &p))
                    .await
                    .map_err(|e| ServiceError::Internal(e.into()))?;
                if !ok {
                    self.platform.auth_throttle.failure(&who);
                    return Err(ServiceError::invalid(
                        "password",
                        format!(
                            "that is not the password of {}; enter the one you log in with",
                            row.email
                        ),
                    ));
                }
                None
            }
        };
        let user_id = match &existing {
            Some(user) => user.id.clone(),
            None => new_id("usr"),
        };
        let member = match (&existing, &new_hash) {
            (Some(_), _) => people_store::NewMember::Existing { user_id: &user_id },
            (None, Some(hash)) => people_store::NewMember::New {
                user_id: &user_id,
                email: &row.email,
                password_hash: hash,
            },
            (None, None) => unreachable!("a new user always has a hash here"),
        };
        // The person acts for themselves here: no key, no session yet.
        let arguments = serde_json::json!({ "invitation_id": row.id, "email": row.email, "role": role });
        let entry = store::NewAuditEntry {
            org_id: &row.org_id,
            key_id: Some(&user_id),
            actor_kind: ActorKind::User.as_str(),
            actor_name: &row.email,
            actor_email: Some(&row.email),
            action: "ACCEPT_INVITATION",
            arguments: &arguments,
            outcome: super::AuditOutcome::Ok.as_str(),
            error: None,
        };
        let accepted = self
            .platform
            .store
            .accept_invitation(&row.id, &row.org_id, member, role.as_str(), &entry)
            .await?;
        match accepted {
            people_store::InvitationAccepted::Accepted => {}
            people_store::InvitationAccepted::AlreadyMember(current) => {
                return Err(ServiceError::conflict(format!(
                    "{} is already a member of this org ({current}); log in at /login",
                    row.email
                )));
            }
            people_store::InvitationAccepted::NoLongerPending => {
                let now = now_ms();
                let again = store.get_invitation(&row.org_id, &row.id).await?;
                return Err(again.and_then(|r| unusable(&r, now)).unwrap_or_else(unknown_link));
            }
        }
        Ok(AcceptedInvitation {
            org_id: row.org_id,
            user_id,
            email: row.email,
            role,
        })
    }

    /// The invitation a link names, if it can still be used.
    async fn pending_invitation(&self, token: &str) -> ServiceResult<invitation_store::InvitationRow> {
        let token = token.trim();
        let well_formed = token
            .strip_prefix(INVITATION_TOKEN_PREFIX)
            .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            return Err(unknown_link());
        }
        let digest = self.platform.key_lookup.digest(token)?;
        let row = self
            .platform
            .store
            .find_invitation_by_hmac(&digest)
            .await?
            .ok_or_else(unknown_link)?;
        match unusable(&row, now_ms()) {
            Some(e) => Err(e),
            None => Ok(row),
        }
    }
}
