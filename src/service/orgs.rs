//! A person's orgs: the orgs a user belongs to (with their role in each), switching a
//! dashboard session to another of them, and making a new org (its maker becomes its
//! owner). A session acts in one org at a time; switching is allowed only into an org the
//! user is a member of *now*, acts as their role there, rotates the session's CSRF token
//! and is audited. An org the user is not in answers "not found", whether it exists or not.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Service;
use super::access::{Action, Role, Target};
use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::store::{self};
use crate::util::{new_id, random_hex};

/// The most orgs one person may belong to through [`Service::create_org`] (and the most a
/// listing shows).
pub const MAX_ORGS_PER_USER: usize = 100;

/// One org the caller belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrgMembership {
    /// The org's id (what the dashboard's switcher posts).
    pub id: String,
    /// The org's unique name.
    pub name: String,
    /// The caller's role in it.
    pub role: Role,
    /// Whether the caller acts in this org now.
    pub current: bool,
}

/// `HOSTING_CREATE_ORG` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgInput {
    /// The new org's name: 1-63 lowercase letters, digits and single hyphens, unique on this server.
    pub name: String,
}

/// `HOSTING_CREATE_ORG` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedOrg {
    /// The new org, with the caller as its owner.
    pub org: OrgMembership,
    /// What to do next.
    pub next_steps: String,
}

/// Checks an org name: a DNS label, since it appears in URLs (`/git/<org>/…`).
fn validate_org_name(name: &str) -> ServiceResult<()> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase letters, digits and '-' are allowed")
    } else if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        Some("'-' may not start or end it, nor come twice in a row")
    } else {
        None
    };
    match why {
        Some(why) => Err(ServiceError::invalid(
            "name",
            format!(
                "invalid org name '{}': {why}; use 1-63 lowercase letters, digits and single hyphens, e.g. 'acme-staging'",
                name.chars().take(80).collect::<String>()
            ),
        )),
        None => Ok(()),
    }
}

/// The answer for an org the caller is not a member of: the same whether it exists or not.
fn org_not_found(org_id: &str) -> ServiceError {
    ServiceError::not_found(format!(
        "no org '{}' among yours; HOSTING_WHOAMI lists the orgs you belong to",
        org_id.chars().take(80).collect::<String>()
    ))
}

impl Service {
    /// The orgs the acting person belongs to, by name (at most [`MAX_ORGS_PER_USER`]);
    /// `None` for a caller that is no person (a service key).
    pub async fn orgs_of(&self, actor: &Actor) -> ServiceResult<Option<Vec<OrgMembership>>> {
        let Some(user_id) = actor.user_id.as_deref() else {
            return Ok(None);
        };
        let rows = self.platform.store.orgs_of_user(user_id).await?;
        Ok(Some(
            rows.into_iter()
                .filter_map(|(id, name, role)| {
                    Some(OrgMembership {
                        current: id == actor.org_id,
                        role: Role::parse(&role)?,
                        id,
                        name,
                    })
                })
                .collect(),
        ))
    }

    /// Moves a dashboard session (stored under `session_id_hash`) to another org of its
    /// person. Only a member's own password session may switch (an API key belongs to one
    /// org); the target must be an org the person is a member of now, else "not found"
    /// (the same for a foreign org and a made-up id) and nothing changes. The session then
    /// acts as the person's role in that org and gets a new CSRF token.
    pub async fn switch_session_org(
        &self,
        actor: &Actor,
        session_id_hash: &str,
        org_id: &str,
    ) -> ServiceResult<OrgMembership> {
        let org_id = org_id.trim();
        let args = serde_json::json!({ "org_id": org_id.chars().take(80).collect::<String>() });
        let member = actor
            .user_id
            .as_deref()
            .filter(|u| *u == actor.key_id && actor.grant.is_none());
        let Some(user_id) = member else {
            let refused = Err(ServiceError::invalid(
                "org",
                "this session acts as an API key, which belongs to one org; log in with your email and password to switch orgs",
            ));
            self.audit(actor, "SWITCH_ORG", args, &refused).await;
            return refused;
        };
        let switched = async {
            if org_id.is_empty() || org_id.len() > 100 {
                return Err(org_not_found(org_id));
            }
            let name = actor.display_name();
            let audit = store::NewAuditEntry {
                org_id,
                key_id: Some(user_id),
                actor_kind: actor.kind.as_str(),
                actor_name: &name,
                actor_email: actor.user_email.as_deref(),
                action: "SWITCH_ORG",
                arguments: &serde_json::Value::Null,
                outcome: super::AuditOutcome::Ok.as_str(),
                error: None,
            };
            let switched = self
                .platform
                .store
                .switch_session_org(session_id_hash, user_id, org_id, &random_hex(24), &audit)
                .await?;
            let (org, role) = match switched {
                store::OrgSwitch::Switched(org, role) => (org, role),
                store::OrgSwitch::NotMember => return Err(org_not_found(org_id)),
                store::OrgSwitch::SessionGone => return Err(ServiceError::Unauthorized),
            };
            Ok(OrgMembership {
                id: org.id,
                name: org.name,
                role,
                current: true,
            })
        }
        .await;
        // A refused switch is recorded where the session still acts; a done one, in the
        // org it moved to (above).
        if switched.is_err() {
            self.audit(actor, "SWITCH_ORG", args, &switched).await;
        }
        switched
    }

    /// `HOSTING_CREATE_ORG`: an owner makes another org and becomes its owner. Needs a
    /// person (a service key has no one to own the new org).
    pub async fn create_org(&self, actor: &Actor, input: &CreateOrgInput) -> ServiceResult<CreatedOrg> {
        self.authorize(actor, Action::ManageOrg, Target::Org).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            if let Some(grant) = &actor.grant {
                return Err(ServiceError::Forbidden {
                    message: format!(
                        "{} acts in the org it was connected to and cannot create orgs; create one from the dashboard or with a personal key",
                        grant.client_name
                    ),
                });
            }
            let Some(user_id) = actor.user_id.as_deref() else {
                return Err(ServiceError::invalid(
                    "name",
                    "an org needs a person as its first owner; call this signed in as a user (a password login, or a personal key)",
                ));
            };
            let name = input.name.trim();
            validate_org_name(name)?;
            let id = new_id("org");
            let arguments = serde_json::json!({ "name": name });
            let who = actor.display_name();
            let entry = store::NewAuditEntry {
                org_id: &id,
                key_id: Some(&actor.key_id),
                actor_kind: actor.kind.as_str(),
                actor_name: &who,
                actor_email: actor.user_email.as_deref(),
                action: "HOSTING_CREATE_ORG",
                arguments: &arguments,
                outcome: super::AuditOutcome::Ok.as_str(),
                error: None,
            };
            let created = self
                .platform
                .store
                .create_org(&id, name, user_id, MAX_ORGS_PER_USER as i64, &entry)
                .await?;
            match created {
                store::OrgCreated::Created => {}
                store::OrgCreated::TooManyOrgs => {
                    return Err(ServiceError::invalid(
                        "name",
                        format!(
                            "you belong to {MAX_ORGS_PER_USER} orgs, the most one person may; leave one (an owner of it can remove you) first"
                        ),
                    ));
                }
                store::OrgCreated::NameTaken => {
                    return Err(ServiceError::conflict(format!(
                        "an org named '{name}' exists on this server; choose another name"
                    )));
                }
            }
            Ok(CreatedOrg {
                org: OrgMembership {
                    id,
                    name: name.to_string(),
                    role: Role::Owner,
                    current: false,
                },
                next_steps: format!(
                    "you own '{name}'; in the dashboard, pick it in the org switcher at the top, then invite members and create keys there (a key acts in the org it was made in)"
                ),
            })
        }
        .await;
        self.audit(actor, "HOSTING_CREATE_ORG", args, &result).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::validate_org_name;

    #[test]
    fn org_names_are_dns_labels() {
        for ok in ["a", "acme", "acme-staging", "x1"] {
            assert!(validate_org_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "Acme", "a/b", "..", "a b", &"a".repeat(64)] {
            assert!(validate_org_name(bad).is_err(), "{bad}");
        }
    }
}
