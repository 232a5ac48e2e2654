//! Connected applications (the org's OAuth grants) and the per-org "freeze agents"
//! switch. Members see and revoke their own grants, admins every grant of the org.
//! Freezing revokes every grant at once (so every access and refresh token under them)
//! and refuses new consents until an admin unfreezes; tokens revoked by a freeze stay
//! revoked after it.

use reqwest::Url;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Service;
use super::access::{Action, Scope, Target};
use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::store::oauth as oauth_store;
use crate::util::rfc3339;

/// `HOSTING_FREEZE_AGENTS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeAgentsInput {
    /// true: revoke every connected application of the org and refuse new ones; false:
    /// let applications connect again (revoked ones must connect anew).
    pub frozen: bool,
}

/// The freeze switch's state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FreezeAgentsOutput {
    /// Whether agents are frozen now.
    pub frozen: bool,
    /// Since when (RFC 3339), when frozen.
    pub frozen_at: Option<String>,
    /// Grants this call revoked.
    pub revoked_grants: u64,
}

/// One connected application: an OAuth grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConnectedApp {
    /// The grant's id (revoke by it).
    pub id: String,
    /// The client's name, as it gave it at consent.
    pub client_name: String,
    /// The host its metadata document was verified at, or `unverified` for a client that
    /// registered itself.
    pub verified_host: String,
    /// The person who consented (it acts as their current role).
    pub user: Option<String>,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The only sites it reaches; none: every site.
    pub sites: Option<Vec<String>>,
    /// Whether it may change production.
    pub production: bool,
    /// Consented (RFC 3339).
    pub created_at: String,
    /// Last used (RFC 3339, to the minute).
    pub last_used_at: Option<String>,
}

/// The org's connected applications the caller may see, and the freeze switch.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConnectedAppList {
    /// Active grants, newest first.
    pub apps: Vec<ConnectedApp>,
    /// Whether the org's agents are frozen.
    pub frozen: bool,
}

/// Names a connected application.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectedAppRef {
    /// The grant's id (from HOSTING_LIST_CONNECTED_APPS).
    pub app_id: String,
}

impl Service {
    /// `HOSTING_FREEZE_AGENTS`: admins freeze (every grant of the org revoked, new
    /// consents refused) or unfreeze.
    pub async fn freeze_agents(&self, actor: &Actor, input: &FreezeAgentsInput) -> ServiceResult<FreezeAgentsOutput> {
        self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let (revoked, at) = self
                .platform
                .store
                .set_agents_frozen(&actor.org_id, input.frozen)
                .await?;
            Ok(FreezeAgentsOutput {
                frozen: at.is_some(),
                frozen_at: at.map(rfc3339),
                revoked_grants: revoked,
            })
        }
        .await;
        self.audit(actor, "HOSTING_FREEZE_AGENTS", args, &result).await;
        result
    }

    /// `HOSTING_LIST_CONNECTED_APPS`: admins see the org's grants, others their own.
    pub async fn list_connected_apps(&self, actor: &Actor) -> ServiceResult<ConnectedAppList> {
        let only = self.own_grants_only(actor)?;
        let store = &self.platform.store;
        let rows = store.list_grants(&actor.org_id, only.as_deref()).await?;
        let mut apps = Vec::with_capacity(rows.len());
        for row in rows {
            apps.push(self.connected_app(row).await?);
        }
        let frozen = store.frozen_at(&actor.org_id).await?.is_some();
        Ok(ConnectedAppList { apps, frozen })
    }

    /// `HOSTING_REVOKE_CONNECTED_APP`: your own grants, or (admins) any of the org's;
    /// every token under it is refused from the next request on.
    pub async fn revoke_connected_app(&self, actor: &Actor, input: &ConnectedAppRef) -> ServiceResult<ConnectedApp> {
        let store = &self.platform.store;
        let not_found = || {
            ServiceError::not_found(format!(
                "no connected application '{}' in this org; list them with HOSTING_LIST_CONNECTED_APPS",
                input.app_id.chars().take(80).collect::<String>()
            ))
        };
        let row = store
            .get_grant(&input.app_id)
            .await?
            .filter(|g| g.org_id == actor.org_id && g.revoked_at.is_none())
            .ok_or_else(not_found)?;
        if actor.user_id.as_deref() != Some(row.user_id.as_str()) {
            // Someone else's grant is "not found" to a member who may not see it.
            if self.own_grants_only(actor)?.is_some() {
                return Err(not_found());
            }
            self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        }
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            store.revoke_grant(&row.id).await?;
            self.connected_app(row).await
        }
        .await;
        self.audit(actor, "HOSTING_REVOKE_CONNECTED_APP", args, &result).await;
        result
    }

    /// `None` when the caller may see every grant of the org (admins), else their user id.
    fn own_grants_only(&self, actor: &Actor) -> ServiceResult<Option<String>> {
        match actor.require(Action::ManageMembers, None, None) {
            Ok(()) => Ok(None),
            Err(_) => Ok(Some(actor.user_id.clone().ok_or_else(|| ServiceError::Forbidden {
                message: "the org's connected applications need the role admin and the scope 'org:admin'".into(),
            })?)),
        }
    }

    async fn connected_app(&self, row: oauth_store::GrantRow) -> ServiceResult<ConnectedApp> {
        let user = self.platform.store.get_user(&row.user_id).await?.map(|u| u.email);
        // Only a metadata document's URL (https) proves a host; a registered client's id
        // is random.
        let verified_host = row
            .client_id
            .starts_with("https://")
            .then(|| Url::parse(&row.client_id).ok())
            .flatten()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "unverified".into());
        Ok(ConnectedApp {
            id: row.id,
            client_name: row.client_name,
            verified_host,
            user,
            scopes: Scope::parse_list(&row.scopes),
            sites: row
                .sites
                .as_deref()
                .map(|j| serde_json::from_str(j).unwrap_or_default()),
            production: row.production,
            created_at: rfc3339(row.created_at),
            last_used_at: row.last_used_at.map(rfc3339),
        })
    }
}
