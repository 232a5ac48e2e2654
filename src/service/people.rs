//! Members and API keys: adding people to the org with a role, changing and removing
//! them (only owners touch owners; an org never loses its last owner), and scoped keys
//! (personal or service, with scopes, an optional site and environment restriction and a
//! mandatory expiry). A new key's token is answered once and never stored, logged or
//! audited; a key never gets more than the caller who makes it has.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Service;
use super::access::{Action, Role, Scope, Target};
use crate::auth::{self, KeyKind};
use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, validate_site_name};
use crate::store::people as people_store;
use crate::util::{new_id, now_ms, rfc3339};

/// Days a key lives when no expiry is given.
pub const DEFAULT_KEY_DAYS: u32 = 90;
/// The longest a key may live.
pub const MAX_KEY_DAYS: u32 = 365;
/// Most sites or environments one key may be restricted to.
const MAX_RESTRICTION: usize = 100;

/// `HOSTING_ADD_MEMBER` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberInput {
    /// The person's email (their dashboard login).
    pub email: String,
    /// Their role: owner, admin, developer, deployer or viewer.
    pub role: String,
    /// Their dashboard password (at least 12 characters), when the person has no account
    /// on this server yet.
    #[serde(default)]
    pub password: Option<String>,
}

/// `HOSTING_SET_MEMBER_ROLE` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMemberRoleInput {
    /// The member's email.
    pub email: String,
    /// The new role.
    pub role: String,
}

/// Names a member.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRef {
    /// The member's email.
    pub email: String,
}

/// A member of the org.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemberInfo {
    /// Their email.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// When they joined (RFC 3339).
    pub joined_at: String,
}

/// The org's members.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemberList {
    /// By email.
    pub members: Vec<MemberInfo>,
}

/// `HOSTING_CREATE_API_KEY` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyInput {
    /// A name to recognise the key by (e.g. `ci` or `laptop`).
    pub name: String,
    /// `personal` (yours: acts as your current role; the default when you are a user) or
    /// `service` (the org's, with a role of its own; needs admin).
    #[serde(default)]
    pub kind: Option<String>,
    /// A service key's role (default developer; at most your own).
    #[serde(default)]
    pub role: Option<String>,
    /// What the key may be used for (default: everything its role can do):
    /// sites:read, logs:read, deploy, env:write, secrets:read, domains:write, sites:delete,
    /// org:admin.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Only these sites (others are "not found" to the key); default all.
    #[serde(default)]
    pub sites: Option<Vec<String>>,
    /// Only these environments (e.g. a preview, not production); default all.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// Days until it stops working: default 90, at most 365.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A key as listed (never its token).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyInfo {
    /// Id (revoke by it).
    pub id: String,
    /// Name.
    pub name: String,
    /// `personal` or `service`.
    pub kind: String,
    /// The token's visible start.
    pub prefix: String,
    /// A personal key's owner.
    pub user: Option<String>,
    /// A service key's role (a personal key acts as its user's current role).
    pub role: Option<Role>,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Site restriction.
    pub sites: Option<Vec<String>>,
    /// Environment restriction.
    pub environments: Option<Vec<String>>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Stops working (RFC 3339); none only for the bootstrap key and keys made before expiry.
    pub expires_at: Option<String>,
    /// Last used (RFC 3339, to the minute).
    pub last_used_at: Option<String>,
    /// Revoked (RFC 3339).
    pub revoked_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

/// A new key: its token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedApiKey {
    /// The key.
    pub key: ApiKeyInfo,
    /// The token: send it as `Authorization: Bearer <token>`. berth keeps only an HMAC of
    /// it and cannot show it again.
    pub token: String,
}

/// Keys the caller may see.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyList {
    /// Newest first.
    pub keys: Vec<ApiKeyInfo>,
}

/// Names a key.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRef {
    /// The key's id (from HOSTING_LIST_API_KEYS).
    pub key_id: String,
}

pub(super) fn normalize_email(raw: &str) -> ServiceResult<String> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(ServiceError::invalid(
            "email",
            format!(
                "'{}' is not an email address; give one like 'ada@example.com'",
                raw.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(email)
}

fn member_not_found(email: &str) -> ServiceError {
    ServiceError::not_found(format!(
        "no member '{}' in this org; list them with HOSTING_LIST_MEMBERS",
        email.chars().take(80).collect::<String>()
    ))
}

impl Service {
    /// `HOSTING_LIST_MEMBERS`.
    pub async fn list_members(&self, actor: &Actor) -> ServiceResult<MemberList> {
        self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        let rows = self.platform.store.list_members(&actor.org_id).await?;
        Ok(MemberList {
            members: rows.into_iter().filter_map(member_info).collect(),
        })
    }

    /// `HOSTING_ADD_MEMBER`: adds a person (making their account when they have none) with
    /// a role; only owners add owners.
    pub async fn add_member(&self, actor: &Actor, input: &AddMemberInput) -> ServiceResult<MemberInfo> {
        self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        let args = serde_json::json!({ "email": input.email, "role": input.role });
        let result = async {
            let email = normalize_email(&input.email)?;
            let role = Role::from_arg("role", &input.role)?;
            if role == Role::Owner {
                self.authorize(actor, Action::ManageOrg, Target::Org).await?;
            }
            let store = &self.platform.store;
            let existing = store.find_user_by_email(&email).await?;
            // Hash before the transaction: argon2 is slow and must not hold the database.
            let new_hash = match (&existing, &input.password) {
                (None, Some(p)) => {
                    let p = p.clone();
                    Some(
                        tokio::task::spawn_blocking(move || auth::hash_password(&p))
                            .await
                            .map_err(|e| ServiceError::Internal(e.into()))??,
                    )
                }
                (None, None) => {
                    return Err(ServiceError::invalid(
                        "password",
                        format!("{email} has no account on this server yet: give a password (at least 12 characters) for their dashboard login"),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(ServiceError::invalid(
                        "password",
                        format!("{email} already has an account; leave password out (theirs stays unchanged)"),
                    ));
                }
                (Some(_), None) => None,
            };
            let new_id = new_id("usr");
            let member = match (&existing, &new_hash) {
                (Some(user), _) => people_store::NewMember::Existing { user_id: &user.id },
                (None, Some(hash)) => people_store::NewMember::New {
                    user_id: &new_id,
                    email: &email,
                    password_hash: hash,
                },
                (None, None) => unreachable!("a new user always has a hash here"),
            };
            if let people_store::MembershipChange::AlreadyMember(current) =
                self.platform.store.add_member(&actor.org_id, member, role.as_str()).await?
            {
                return Err(ServiceError::conflict(format!(
                    "{email} is already a member ({current}); change their role with HOSTING_SET_MEMBER_ROLE"
                )));
            }
            Ok(MemberInfo {
                email,
                role,
                joined_at: rfc3339(now_ms()),
            })
        }
        .await;
        self.audit(actor, "HOSTING_ADD_MEMBER", args, &result).await;
        result
    }

    /// `HOSTING_SET_MEMBER_ROLE`: only owners make or unmake owners, and the last owner
    /// stays one. Their personal keys follow the new role on their next call.
    pub async fn set_member_role(&self, actor: &Actor, input: &SetMemberRoleInput) -> ServiceResult<MemberInfo> {
        self.authorize(actor, Action::ManageMembers, Target::Member(&input.email))
            .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let role = Role::from_arg("role", &input.role)?;
            let (user_id, email, current) = self.member(actor, &input.email).await?;
            if role == Role::Owner || current == Role::Owner {
                self.authorize(actor, Action::ManageOrg, Target::Member(&email)).await?;
            }
            let unmakes_owner = current == Role::Owner && role != Role::Owner;
            let changed = self
                .platform
                .store
                .set_member_role(&actor.org_id, &user_id, role.as_str(), unmakes_owner)
                .await?;
            if changed == people_store::MembershipChange::LastOwner {
                return Err(last_owner(&email));
            }
            Ok(MemberInfo {
                email,
                role,
                joined_at: String::new(),
            })
        }
        .await;
        self.audit(actor, "HOSTING_SET_MEMBER_ROLE", args, &result).await;
        result
    }

    /// `HOSTING_REMOVE_MEMBER`: their personal keys of the org are revoked and their
    /// sessions end; the last owner cannot be removed.
    pub async fn remove_member(&self, actor: &Actor, input: &MemberRef) -> ServiceResult<MemberInfo> {
        self.authorize(actor, Action::ManageMembers, Target::Member(&input.email))
            .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let (user_id, email, current) = self.member(actor, &input.email).await?;
            if current == Role::Owner {
                self.authorize(actor, Action::ManageOrg, Target::Member(&email)).await?;
            }
            let removed = self
                .platform
                .store
                .remove_member(&actor.org_id, &user_id, current == Role::Owner)
                .await?;
            if removed == people_store::MembershipChange::LastOwner {
                return Err(last_owner(&email));
            }
            Ok(MemberInfo {
                email,
                role: current,
                joined_at: String::new(),
            })
        }
        .await;
        self.audit(actor, "HOSTING_REMOVE_MEMBER", args, &result).await;
        result
    }

    /// A member of the caller's org by email: (user id, email, role).
    pub(super) async fn member(&self, actor: &Actor, email: &str) -> ServiceResult<(String, String, Role)> {
        let email = normalize_email(email)?;
        let store = &self.platform.store;
        let user = store
            .find_user_by_email(&email)
            .await?
            .ok_or_else(|| member_not_found(&email))?;
        let role = store
            .member_role(&actor.org_id, &user.id)
            .await?
            .and_then(|r| Role::parse(&r))
            .ok_or_else(|| member_not_found(&email))?;
        Ok((user.id, email, role))
    }

    /// `HOSTING_CREATE_API_KEY`: a personal key (yours) or a service key (the org's, made
    /// by admins). Never more than the caller has: its role, scopes and site and
    /// environment restriction are at most the caller's.
    pub async fn create_api_key(&self, actor: &Actor, input: &CreateApiKeyInput) -> ServiceResult<CreatedApiKey> {
        // A key would outlive the grant and carry none of its consent (production).
        if let Some(grant) = &actor.grant {
            return Err(ServiceError::Forbidden {
                message: format!(
                    "{} acts through an OAuth grant, which cannot make API keys; make one in the dashboard or with an API key",
                    grant.client_name
                ),
            });
        }
        let kind = match input.kind.as_deref().map(str::trim) {
            Some("service") => KeyKind::Service,
            Some("personal") => KeyKind::Personal,
            None if actor.user_id.is_some() => KeyKind::Personal,
            None => KeyKind::Service,
            Some(other) => {
                return Err(ServiceError::invalid(
                    "kind",
                    format!(
                        "unknown key kind '{}'; use 'personal' or 'service'",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        };
        // Your own key needs no right beyond membership (it can never exceed you); the
        // org's keys are managed by admins.
        if kind == KeyKind::Service {
            self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        }
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self.create_api_key_inner(actor, input, kind).await;
        self.audit(actor, "HOSTING_CREATE_API_KEY", args, &result).await;
        result
    }

    async fn create_api_key_inner(
        &self,
        actor: &Actor,
        input: &CreateApiKeyInput,
        kind: KeyKind,
    ) -> ServiceResult<CreatedApiKey> {
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ServiceError::invalid(
                "name",
                "give the key a name of 1-100 characters, e.g. 'ci' or 'laptop'",
            ));
        }
        let user_id = match kind {
            KeyKind::Personal => Some(actor.user_id.clone().ok_or_else(|| {
                ServiceError::invalid(
                    "kind",
                    "a personal key belongs to a user, and this caller is not one; create a service key (kind 'service') or log in as a member",
                )
            })?),
            KeyKind::Service => None,
        };
        let role = match (kind, input.role.as_deref()) {
            (KeyKind::Personal, Some(_)) => {
                return Err(ServiceError::invalid(
                    "role",
                    "a personal key acts as its user's current role; leave role out (or narrow it with scopes)",
                ));
            }
            (KeyKind::Personal, None) => actor.role,
            (KeyKind::Service, None) => Role::Developer.min(actor.role),
            (KeyKind::Service, Some(r)) => Role::from_arg("role", r)?,
        };
        if role > actor.role {
            return Err(ServiceError::Forbidden {
                message: format!(
                    "a key cannot have more than its maker: you are {}, asked for {role}",
                    actor.role
                ),
            });
        }
        let reachable: Vec<Scope> = Scope::of_role(role)
            .into_iter()
            .filter(|s| actor.scopes.contains(s))
            .collect();
        let scopes = match &input.scopes {
            None => reachable,
            Some(names) => {
                let mut scopes = Vec::new();
                for n in names {
                    let scope = Scope::parse(n.trim()).ok_or_else(|| {
                        ServiceError::invalid(
                            "scopes",
                            format!(
                                "unknown scope '{}'; use: {}",
                                n.chars().take(40).collect::<String>(),
                                Scope::join(&Scope::ALL).replace(',', ", ")
                            ),
                        )
                    })?;
                    if !reachable.contains(&scope) {
                        return Err(ServiceError::Forbidden {
                            message: format!(
                                "the scope '{scope}' is beyond {}; a key's scopes can only be ones its role and its maker have: {}",
                                if kind == KeyKind::Personal {
                                    "you"
                                } else {
                                    "the key's role"
                                },
                                Scope::join(&reachable).replace(',', ", ")
                            ),
                        });
                    }
                    scopes.push(scope);
                }
                scopes.sort();
                scopes.dedup();
                if scopes.is_empty() {
                    return Err(ServiceError::invalid(
                        "scopes",
                        "give at least one scope, or leave scopes out",
                    ));
                }
                scopes
            }
        };
        let sites = restriction("sites", input.sites.as_ref(), actor.sites.as_ref(), true)?;
        let environments = restriction(
            "environments",
            input.environments.as_ref(),
            actor.environments.as_ref(),
            false,
        )?;
        let days = input.expires_in_days.unwrap_or(DEFAULT_KEY_DAYS);
        if !(1..=MAX_KEY_DAYS).contains(&days) {
            return Err(ServiceError::invalid(
                "expires_in_days",
                format!("a key lives 1 to {MAX_KEY_DAYS} days (default {DEFAULT_KEY_DAYS}); asked for {days}"),
            ));
        }
        let token = auth::new_token(kind);
        let token_hmac = self.platform.key_lookup.digest(&token)?;
        let id = new_id("key");
        let prefix = format!("{}…", kind.token_prefix());
        let sites_json = sites.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default());
        let envs_json = environments
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default());
        let expires_at = now_ms() + i64::from(days) * 86_400_000;
        let scopes_stored = Scope::join(&scopes);
        self.platform
            .store
            .insert_key(&people_store::NewKey {
                id: &id,
                org_id: &actor.org_id,
                name,
                prefix: &format!("{}:{id}", kind.as_str()),
                token_hmac: &token_hmac,
                role: role.as_str(),
                kind: kind.as_str(),
                user_id: user_id.as_deref(),
                scopes: &scopes_stored,
                sites: sites_json.as_deref(),
                environments: envs_json.as_deref(),
                expires_at,
            })
            .await?;
        Ok(CreatedApiKey {
            key: ApiKeyInfo {
                id,
                name: name.to_string(),
                kind: kind.as_str().into(),
                prefix,
                user: if kind == KeyKind::Personal {
                    actor.user_email.clone()
                } else {
                    None
                },
                role: (kind == KeyKind::Service).then_some(role),
                scopes,
                sites,
                environments,
                created_at: rfc3339(now_ms()),
                expires_at: Some(rfc3339(expires_at)),
                last_used_at: None,
                revoked_at: None,
                status: "active".into(),
            },
            token,
        })
    }

    /// `HOSTING_LIST_API_KEYS`: admins see the org's keys, others their own.
    pub async fn list_api_keys(&self, actor: &Actor) -> ServiceResult<ApiKeyList> {
        let only = match actor.require(Action::ManageMembers, None, None) {
            Ok(()) => None,
            Err(_) => Some(actor.user_id.clone().ok_or_else(|| ServiceError::Forbidden {
                message: "listing the org's keys needs the role admin and the scope 'org:admin'".into(),
            })?),
        };
        let store = &self.platform.store;
        let rows = store.list_keys(&actor.org_id, only.as_deref()).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let user = match &row.user_id {
                Some(u) => store.get_user(u).await?.map(|u| u.email),
                None => None,
            };
            keys.push(key_info(row, user));
        }
        Ok(ApiKeyList { keys })
    }

    /// `HOSTING_REVOKE_API_KEY`: your own keys, or (admins) any of the org's. Refused from
    /// the next request on.
    pub async fn revoke_api_key(&self, actor: &Actor, input: &ApiKeyRef) -> ServiceResult<ApiKeyInfo> {
        let store = &self.platform.store;
        let not_found = || {
            ServiceError::not_found(format!(
                "no key '{}' in this org; list them with HOSTING_LIST_API_KEYS",
                input.key_id.chars().take(80).collect::<String>()
            ))
        };
        let row = store
            .get_key(&input.key_id)
            .await?
            .filter(|k| k.org_id == actor.org_id)
            .ok_or_else(not_found)?;
        let own = row.user_id.is_some() && row.user_id == actor.user_id;
        if !own {
            self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        }
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            store.revoke_key(&row.id).await?;
            let row = store.get_key(&row.id).await?.ok_or_else(not_found)?;
            let user = match &row.user_id {
                Some(u) => store.get_user(u).await?.map(|u| u.email),
                None => None,
            };
            Ok(key_info(row, user))
        }
        .await;
        self.audit(actor, "HOSTING_REVOKE_API_KEY", args, &result).await;
        result
    }
}

fn last_owner(email: &str) -> ServiceError {
    ServiceError::conflict(format!(
        "{email} is the org's last owner; make another member owner first (HOSTING_SET_MEMBER_ROLE)"
    ))
}

fn member_info(row: people_store::MemberRow) -> Option<MemberInfo> {
    Some(MemberInfo {
        role: Role::parse(&row.role)?,
        email: row.email,
        joined_at: rfc3339(row.created_at),
    })
}

fn key_info(row: people_store::KeyRow, user: Option<String>) -> ApiKeyInfo {
    let status = if row.revoked_at.is_some() {
        "revoked"
    } else if row.expires_at.is_some_and(|at| at <= now_ms()) {
        "expired"
    } else {
        "active"
    };
    let personal = row.kind == "personal";
    let names = |j: &Option<String>| j.as_deref().map(|j| serde_json::from_str(j).unwrap_or_default());
    let prefix = crate::auth::key_display_prefix(&row).to_string();
    ApiKeyInfo {
        id: row.id,
        name: row.name,
        kind: row.kind.clone(),
        prefix,
        user,
        role: if personal { None } else { Role::parse(&row.role) },
        scopes: Scope::parse_list(&row.scopes),
        sites: names(&row.sites),
        environments: names(&row.environments),
        created_at: rfc3339(row.created_at),
        expires_at: row.expires_at.map(rfc3339),
        last_used_at: row.last_used_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
        status: status.into(),
    }
}

/// A key's restriction to names: each valid, at most [`MAX_RESTRICTION`], and inside the
/// caller's own restriction.
fn restriction(
    field: &'static str,
    asked: Option<&Vec<String>>,
    callers: Option<&Vec<String>>,
    sites: bool,
) -> ServiceResult<Option<Vec<String>>> {
    let Some(asked) = asked else {
        return Ok(callers.cloned());
    };
    if asked.is_empty() || asked.len() > MAX_RESTRICTION {
        return Err(ServiceError::invalid(
            field,
            format!("give 1 to {MAX_RESTRICTION} names, or leave {field} out for all"),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    for name in asked {
        let name = name.trim().to_string();
        if sites {
            validate_site_name(&name).map_err(|_| {
                ServiceError::invalid(
                    field,
                    format!("'{}' is not a site name", name.chars().take(80).collect::<String>()),
                )
            })?;
        } else if name.is_empty() || name.len() > 63 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ServiceError::invalid(
                field,
                format!(
                    "'{}' is not an environment name",
                    name.chars().take(80).collect::<String>()
                ),
            ));
        }
        if callers.is_some_and(|c| !c.contains(&name)) {
            return Err(ServiceError::Forbidden {
                message: format!("this key is restricted and cannot reach '{name}', so neither can a key it makes"),
            });
        }
        names.push(name);
    }
    names.sort();
    names.dedup();
    Ok(Some(names))
}
