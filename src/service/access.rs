//! Who may do what: roles, key scopes, the one permission matrix, and the check every
//! service entry point makes first ([`Service::authorize`]). MCP, REST, the CLI and the
//! dashboard all reach the service layer, so this table is the only place a permission is
//! decided. A caller never learns that another org's object exists: anything outside its
//! org (or outside its key's site restriction) is "not found", never "forbidden".

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::store;

use super::Service;
pub use crate::model::{Role, Scope};

impl Scope {
    /// The scopes a role can use at all: a key asking for more gains nothing.
    pub fn of_role(role: Role) -> Vec<Self> {
        let mut out: Vec<Self> = Action::ALL
            .iter()
            .map(|a| a.needs())
            .filter(|need| role >= need.role)
            .filter_map(|need| need.scope)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// One kind of operation; every service entry point names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// List and read sites, environments, deployments, domains, scaling, usage, repos, env
    /// var names.
    ReadSites,
    /// Read build and runtime logs.
    ReadLogs,
    /// Deploy, promote, roll back, cancel a deployment.
    Deploy,
    /// Create or change sites and environments (settings, scaling, repositories, push
    /// tokens).
    CreateSite,
    /// Set or delete env vars.
    SetEnvVars,
    /// Read env var values.
    RevealSecrets,
    /// Add, check and remove custom domains.
    ManageDomains,
    /// Delete sites and environments.
    Delete,
    /// Read and change provider settings.
    ManageProviders,
    /// Add, change and remove members; create and revoke service keys; read the audit log.
    ManageMembers,
    /// Make and unmake owners; change the org.
    ManageOrg,
}

/// What an action needs: a minimum role and (for keys) a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// The weakest role allowed.
    pub role: Role,
    /// The scope a key must carry.
    pub scope: Option<Scope>,
}

impl Action {
    /// Every action, in the order of the README's table.
    pub const ALL: [Action; 11] = [
        Action::ReadSites,
        Action::ReadLogs,
        Action::Deploy,
        Action::CreateSite,
        Action::SetEnvVars,
        Action::RevealSecrets,
        Action::ManageDomains,
        Action::Delete,
        Action::ManageProviders,
        Action::ManageMembers,
        Action::ManageOrg,
    ];

    /// The permission matrix: the one place a right is decided.
    pub fn needs(self) -> Needs {
        use Role::*;
        let (role, scope) = match self {
            Self::ReadSites => (Viewer, Scope::SitesRead),
            Self::ReadLogs => (Viewer, Scope::LogsRead),
            Self::Deploy => (Deployer, Scope::Deploy),
            Self::CreateSite => (Developer, Scope::Deploy),
            Self::SetEnvVars => (Developer, Scope::EnvWrite),
            Self::RevealSecrets => (Admin, Scope::SecretsRead),
            Self::ManageDomains => (Developer, Scope::DomainsWrite),
            Self::Delete => (Admin, Scope::SitesDelete),
            Self::ManageProviders => (Admin, Scope::OrgAdmin),
            Self::ManageMembers => (Admin, Scope::OrgAdmin),
            Self::ManageOrg => (Owner, Scope::OrgAdmin),
        };
        Needs {
            role,
            scope: Some(scope),
        }
    }

    /// Whether changing a protected environment this way needs an admin.
    pub fn guarded_by_protection(self) -> bool {
        matches!(self, Self::SetEnvVars | Self::ManageDomains | Self::Delete)
    }

    /// Shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadSites => "read_sites",
            Self::ReadLogs => "read_logs",
            Self::Deploy => "deploy",
            Self::CreateSite => "create_site",
            Self::SetEnvVars => "set_env_vars",
            Self::RevealSecrets => "reveal_secrets",
            Self::ManageDomains => "manage_domains",
            Self::Delete => "delete",
            Self::ManageProviders => "manage_providers",
            Self::ManageMembers => "manage_members",
            Self::ManageOrg => "manage_org",
        }
    }

    /// What the action covers, for error messages.
    fn describe(self) -> &'static str {
        match self {
            Self::ReadSites => "reading sites",
            Self::ReadLogs => "reading logs",
            Self::Deploy => "deploying, promoting and rolling back",
            Self::CreateSite => "creating and changing sites and environments",
            Self::SetEnvVars => "setting env vars",
            Self::RevealSecrets => "revealing env var values",
            Self::ManageDomains => "managing domains",
            Self::Delete => "deleting sites and environments",
            Self::ManageProviders => "managing providers",
            Self::ManageMembers => "managing members and keys",
            Self::ManageOrg => "managing owners and the org",
        }
    }
}

/// The object an entry point acts on, so that the check can answer "not found" for what
/// the caller may not see, and apply environment protection.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// The org as a whole (listings, settings, members).
    Org,
    /// A site by name.
    Site(&'a str),
    /// A site about to be made (no "not found" for a missing one).
    NewSite(&'a str),
    /// Every site (`None`, refused to site-restricted keys) or one site's things.
    AnySite(Option<&'a str>),
    /// An environment of a site by name (`None`: the site-wide scope, which reaches every
    /// environment of the site, protected ones included).
    Environment(&'a str, Option<&'a str>),
    /// A deployment by id.
    Deployment(&'a str),
    /// A custom domain of a site.
    Domain(&'a str, &'a str),
    /// A member of the org, by email.
    Member(&'a str),
}

impl Actor {
    /// The matrix check, without the store: `NotFound` for a site or environment outside
    /// the key's restriction, `Forbidden` (naming the role or scope needed) for a missing
    /// right.
    pub fn require(&self, action: Action, site: Option<&str>, env: Option<&str>) -> ServiceResult<()> {
        if let Some(site) = site
            && !self.may_see_site(site)
        {
            return Err(hidden_site(site));
        }
        if let Some(env) = env
            && !self.may_see_environment(env)
        {
            return Err(ServiceError::not_found(format!(
                "no environment '{}' for this key; it is restricted to: {}",
                env.chars().take(80).collect::<String>(),
                self.environments.as_deref().unwrap_or_default().join(", ")
            )));
        }
        let needs = action.needs();
        if self.role < needs.role {
            return Err(ServiceError::Forbidden {
                message: format!(
                    "{} needs the role {} or higher; you are {} (an org admin can change your role)",
                    action.describe(),
                    needs.role,
                    self.role
                ),
            });
        }
        if let Some(scope) = needs.scope
            && !self.scopes.contains(&scope)
        {
            if let Some(grant) = &self.grant {
                return Err(ServiceError::Forbidden {
                    message: format!(
                        "{} needs the scope '{scope}', which {} was not granted; connect it again and tick '{scope}' on berth's consent page (/oauth/authorize)",
                        action.describe(),
                        grant.client_name
                    ),
                });
            }
            return Err(ServiceError::Forbidden {
                message: format!(
                    "{} needs the scope '{scope}', which this key lacks; create a key with it (HOSTING_CREATE_API_KEY)",
                    action.describe()
                ),
            });
        }
        Ok(())
    }

    /// Whether the actor may see a site at all (its key's site restriction).
    pub fn may_see_site(&self, site: &str) -> bool {
        self.sites.as_ref().is_none_or(|list| list.iter().any(|s| s == site))
    }

    /// Whether the actor may see an environment (its key's environment restriction).
    pub fn may_see_environment(&self, env: &str) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|list| list.iter().any(|e| e == env))
    }

    /// The actions the actor may take (for `HOSTING_WHOAMI`).
    pub fn allowed_actions(&self) -> Vec<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| self.require(*a, None, None).is_ok())
            .collect()
    }
}

/// The answer for a site the caller may not see: the same as for one that does not exist.
fn hidden_site(site: &str) -> ServiceError {
    ServiceError::not_found(format!(
        "no site '{}'; list the sites you can reach with HOSTING_LIST_SITES",
        site.chars().take(80).collect::<String>()
    ))
}

/// Whether an environment is protected: its own setting, else production is.
pub fn is_protected(name: &str, protected: Option<bool>) -> bool {
    protected.unwrap_or(name == "production")
}

impl Service {
    /// The first line of every entry point: may `actor` take `action` on `target`?
    /// Anything outside the actor's org or key restriction is `NotFound`; a missing right
    /// on something the actor can see is `Forbidden`, naming the role or scope needed; a
    /// protected environment's env vars, domains and deletion need an admin.
    pub async fn authorize(&self, actor: &Actor, action: Action, target: Target<'_>) -> ServiceResult<()> {
        let store = &self.platform.store;
        // A key restricted to environments changes nothing that reaches beyond them (a
        // site's settings, site-wide env vars, the site itself, the org).
        let names_environment = matches!(target, Target::Environment(_, Some(_)) | Target::Deployment(_));
        if let Some(envs) = &actor.environments
            && !names_environment
            && !matches!(action, Action::ReadSites | Action::ReadLogs)
        {
            return Err(ServiceError::Forbidden {
                message: format!(
                    "this key is restricted to the environments {}, so it cannot act on a whole site or the org; name one of them",
                    envs.join(", ")
                ),
            });
        }
        // Without production, nothing org-wide or new changes (a new site's first
        // deployment is production); site targets are checked once the site is visible.
        let without_production = actor
            .grant
            .as_ref()
            .filter(|g| !g.production && !matches!(action, Action::ReadSites | Action::ReadLogs));
        if let Some(grant) = without_production
            && matches!(
                target,
                Target::Org | Target::Member(_) | Target::NewSite(_) | Target::AnySite(None)
            )
        {
            self.refuse_production(actor, &grant.client_name, action, target)
                .await?;
        }
        let (site, env) = match target {
            Target::Org => (None, None),
            Target::Member(email) => {
                let checked = actor.require(action, None, None);
                if let Err(ServiceError::Forbidden { .. }) = &checked {
                    // Forbidden only for a member the caller's org has.
                    self.member(actor, email).await?;
                }
                return checked;
            }
            Target::NewSite(site) => return actor.require(action, Some(site), None),
            Target::AnySite(None) => {
                if actor.sites.is_some() {
                    return Err(ServiceError::Forbidden {
                        message: "this key is restricted to some sites, so it cannot act on the whole org; name a site, or use a key without a site restriction".into(),
                    });
                }
                (None, None)
            }
            Target::AnySite(Some(site)) | Target::Site(site) => (Some(site.to_string()), None),
            Target::Environment(site, env) => (Some(site.to_string()), env.map(str::to_string)),
            Target::Domain(site, _) => (Some(site.to_string()), None),
            Target::Deployment(id) => match store.deployment_names(&actor.org_id, id).await? {
                Some(names) => names,
                // The entry point's own lookup gives its usual "not found".
                None => return Ok(()),
            },
        };
        let checked = actor.require(action, site.as_deref(), env.as_deref());
        if let Err(ServiceError::Forbidden { .. }) = &checked
            && let Some(name) = &site
        {
            // Forbidden only where the caller can see the object: another org's (or a
            // missing) site answers as every unknown name does.
            self.find_site(actor, name).await?;
        }
        checked?;
        if let Some(grant) = without_production {
            self.refuse_production(actor, &grant.client_name, action, target)
                .await?;
        }
        if !action.guarded_by_protection() || actor.role >= Role::Admin {
            return Ok(());
        }
        let Some(site_name) = site else { return Ok(()) };
        let Some(site_row) = store.get_site(&actor.org_id, &site_name).await? else {
            return Ok(());
        };
        let envs = store.environment_protection(&site_row.id).await?;
        let touched: Vec<&store::people::EnvironmentProtection> = match target {
            Target::Domain(_, domain) => {
                let name = super::domains::normalize_domain(domain, &self.platform.config.base_domain)
                    .unwrap_or_else(|_| domain.to_string());
                match store.get_domain(&site_row.id, &name).await? {
                    Some(row) => envs.iter().filter(|e| e.id == row.environment_id).collect(),
                    None => vec![],
                }
            }
            // Deleting a site deletes every environment; site-wide env vars reach all.
            Target::Site(_) if action == Action::Delete => envs.iter().collect(),
            Target::Environment(_, None) => envs.iter().collect(),
            Target::Environment(_, Some(name)) => envs.iter().filter(|e| e.name == name).collect(),
            // Checking a domain's DNS again changes no setting.
            Target::Site(_)
            | Target::AnySite(_)
            | Target::NewSite(_)
            | Target::Org
            | Target::Deployment(_)
            | Target::Member(_) => vec![],
        };
        if let Some(env) = touched
            .into_iter()
            .find(|e| is_protected(&e.name, e.protected.map(bool::from)))
        {
            return Err(ServiceError::Forbidden {
                message: format!(
                    "environment '{}' of site '{}' is protected: {} there needs the role admin or higher; you are {}",
                    env.name,
                    site_name,
                    action.describe(),
                    actor.role
                ),
            });
        }
        Ok(())
    }
}

impl Service {
    /// For an OAuth grant made without production: only a change to a named environment
    /// other than production (or a deployment of one) goes through; anything site- or
    /// org-wide reaches production too and is refused.
    async fn refuse_production(
        &self,
        actor: &Actor,
        client: &str,
        action: Action,
        target: Target<'_>,
    ) -> ServiceResult<()> {
        let env = match target {
            Target::Environment(_, Some(env)) => Some(env.to_string()),
            Target::Deployment(id) => {
                let store = &self.platform.store;
                match store.get_deployment(&actor.org_id, id).await? {
                    Some(d) => store.get_environment_by_id(&d.environment_id).await?.map(|e| e.name),
                    // The entry point's own lookup gives its usual "not found".
                    None => return Ok(()),
                }
            }
            _ => None,
        };
        match env {
            Some(env) if env != "production" => Ok(()),
            _ => Err(ServiceError::Forbidden {
                message: format!(
                    "{client} was connected without production, so {} is allowed only on another environment (e.g. a preview); to include production, connect it again and tick 'production' on berth's consent page (/oauth/authorize)",
                    action.describe()
                ),
            }),
        }
    }

    /// `HOSTING_LIST_SITES` for a key restricted to some sites: those of them that exist,
    /// by name, a page at a time.
    pub(super) async fn list_restricted_sites(
        &self,
        actor: &Actor,
        allowed: &[String],
        search: &str,
        after: &str,
        limit: u32,
    ) -> ServiceResult<super::SiteList> {
        let store = &self.platform.store;
        let mut names: Vec<&String> = allowed.iter().filter(|n| n.contains(search)).collect();
        names.sort();
        let mut rows = Vec::new();
        for name in names {
            if let Some(site) = store.get_site(&actor.org_id, name).await?
                && site.status == "active"
            {
                rows.push(site);
            }
        }
        let total = rows.len() as u64;
        rows.retain(|r| r.name.as_str() > after);
        let next_cursor = super::cut_page(&mut rows, limit as usize, |r| r.name.clone());
        Ok(super::SiteList {
            sites: self.summarize_all(&rows).await?,
            total,
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(Role::Viewer < Role::Deployer && Role::Admin < Role::Owner);
        assert_eq!(Role::parse("member"), None);
    }

    #[test]
    fn scopes_round_trip_and_unknown_names_give_nothing() {
        let all = Scope::join(&Scope::ALL);
        assert_eq!(Scope::parse_list(&all), Scope::ALL.to_vec());
        assert_eq!(Scope::parse_list("deploy,root,deploy"), vec![Scope::Deploy]);
    }

    #[test]
    fn a_viewer_role_grants_only_read_scopes() {
        assert_eq!(Scope::of_role(Role::Viewer), vec![Scope::SitesRead, Scope::LogsRead]);
        assert_eq!(Scope::of_role(Role::Owner), Scope::ALL.to_vec());
    }
}
