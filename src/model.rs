//! Domain types shared by the service, the store and the adapters: sites, environments,
//! deployments and the deployment state machine.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};

/// Who is calling: resolved from an API key or a dashboard session, scoped to one org.
/// What it may do is decided by [`Actor::require`] from its role and scopes.
#[derive(Clone, Debug)]
pub struct Actor {
    /// What kind of caller this is (the audit log records it).
    pub kind: ActorKind,
    /// The org every read and write is limited to.
    pub org_id: String,
    /// The org's name.
    pub org_name: String,
    /// The API key used (a password session: the user's id).
    pub key_id: String,
    /// The key's name.
    pub key_name: String,
    /// The recognisable start of the key's tokens (`berth_sk_…`), for API keys only.
    pub key_prefix: Option<&'static str>,
    /// The role acted as: a service key's own, else the user's current role in the org.
    pub role: Role,
    /// What the key may be used for (a session or a key made before scopes: all).
    pub scopes: Vec<Scope>,
    /// The user acting (a personal key or a password session).
    pub user_id: Option<String>,
    /// The user's email.
    pub user_email: Option<String>,
    /// The only sites the key reaches, when restricted.
    pub sites: Option<Vec<String>>,
    /// The only environments the key reaches, when restricted.
    pub environments: Option<Vec<String>>,
    /// When the key stops working (ms).
    pub expires_at: Option<i64>,
    /// The OAuth grant acted through (an MCP client's access token), whose consent may
    /// have left production out.
    pub grant: Option<OAuthGrant>,
}

/// What kind of caller an [`Actor`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person in the dashboard, signed in with their password.
    User,
    /// An API key, personal or service (the bootstrap key among them).
    Key,
    /// An MCP client's OAuth access token, acting for the person who consented.
    OauthClient,
    /// The server itself on a verified trigger (a push token, a signed webhook).
    System,
}

impl ActorKind {
    /// Every kind, in the order lists show them.
    pub const ALL: [Self; 4] = [Self::User, Self::Key, Self::OauthClient, Self::System];

    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Key => "key",
            Self::OauthClient => "oauth_client",
            Self::System => "system",
        }
    }

    /// The kind of a stored or typed name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The consent an OAuth access token acts under, beyond its scopes and sites.
#[derive(Clone, Debug)]
pub struct OAuthGrant {
    /// The grant's id.
    pub id: String,
    /// The client's display name.
    pub client_name: String,
    /// Whether the person let the client change production environments.
    pub production: bool,
}

/// The start of an OAuth access token.
pub const OAUTH_ACCESS_PREFIX: &str = "berth_oat_";
/// The start of an OAuth refresh token.
pub const OAUTH_REFRESH_PREFIX: &str = "berth_ort_";
/// How long an OAuth authorization code may wait to be exchanged.
pub const OAUTH_CODE_TTL_SECS: i64 = 60;
/// How long an OAuth access token works.
pub const OAUTH_ACCESS_TTL_SECS: i64 = 3600;
/// How long an OAuth refresh token works (each use gives a new one).
pub const OAUTH_REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;

/// Whether a string has the shape of an OAuth access token: the prefix and 64 hex digits.
pub fn is_oauth_access_token(token: &str) -> bool {
    token
        .strip_prefix(OAUTH_ACCESS_PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Actor {
    /// The server acting on a verified trigger (a push with a push token, a signed
    /// webhook): the checks that matter were made when the token or webhook was set up.
    pub fn system(org_id: String, org_name: String, key_id: String, key_name: &str) -> Self {
        Self {
            kind: ActorKind::System,
            org_id,
            org_name,
            key_id,
            key_name: key_name.into(),
            key_prefix: None,
            role: Role::Admin,
            scopes: Scope::ALL.to_vec(),
            user_id: None,
            user_email: None,
            sites: None,
            environments: None,
            expires_at: None,
            grant: None,
        }
    }
}

/// A member's (or service key's) role in an org, weakest first: each role may do what the
/// roles before it may, and more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads sites, deployments, logs and env var names.
    Viewer,
    /// Also deploys, promotes, rolls back and cancels.
    Deployer,
    /// Also creates and changes sites and environments, sets env vars and domains
    /// (not of protected environments).
    Developer,
    /// Also deletes, reveals secrets, changes protected environments, manages providers,
    /// members and keys.
    Admin,
    /// Also makes and unmakes owners.
    Owner,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Deployer, Role::Developer, Role::Admin, Role::Owner];

    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Deployer => "deployer",
            Self::Developer => "developer",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Parses a stored or given name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Parses a caller's argument, with an error that lists the roles.
    pub fn from_arg(field: &'static str, s: &str) -> ServiceResult<Self> {
        Self::parse(s.trim()).ok_or_else(|| {
            ServiceError::invalid(
                field,
                format!(
                    "unknown role '{}'; use one of: owner, admin, developer, deployer, viewer",
                    s.chars().take(40).collect::<String>()
                ),
            )
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an API key may be used for; a key's rights are its scopes intersected with its
/// owner's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Scope {
    /// Read sites, environments, deployments, domains, env var names.
    #[serde(rename = "sites:read")]
    SitesRead,
    /// Read build and runtime logs.
    #[serde(rename = "logs:read")]
    LogsRead,
    /// Deploy, promote, roll back; create and change sites and environments.
    #[serde(rename = "deploy")]
    Deploy,
    /// Set env vars.
    #[serde(rename = "env:write")]
    EnvWrite,
    /// Reveal env var values.
    #[serde(rename = "secrets:read")]
    SecretsRead,
    /// Add and remove custom domains.
    #[serde(rename = "domains:write")]
    DomainsWrite,
    /// Delete sites and environments.
    #[serde(rename = "sites:delete")]
    SitesDelete,
    /// Providers, members, keys and the org itself.
    #[serde(rename = "org:admin")]
    OrgAdmin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 8] = [
        Scope::SitesRead,
        Scope::LogsRead,
        Scope::Deploy,
        Scope::EnvWrite,
        Scope::SecretsRead,
        Scope::DomainsWrite,
        Scope::SitesDelete,
        Scope::OrgAdmin,
    ];

    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SitesRead => "sites:read",
            Self::LogsRead => "logs:read",
            Self::Deploy => "deploy",
            Self::EnvWrite => "env:write",
            Self::SecretsRead => "secrets:read",
            Self::DomainsWrite => "domains:write",
            Self::SitesDelete => "sites:delete",
            Self::OrgAdmin => "org:admin",
        }
    }

    /// Parses a stored or given name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Scopes from a comma-separated stored list (unknown names are dropped: a key never
    /// gains a right from a name it does not understand).
    pub fn parse_list(s: &str) -> Vec<Self> {
        let mut out: Vec<Self> = s.split(',').filter_map(|x| Self::parse(x.trim())).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The stored form of a list of scopes.
    pub fn join(scopes: &[Self]) -> String {
        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The OAuth form of a list of scopes: space-separated (RFC 6749 §3.3).
    pub fn space_separated(scopes: &[Self]) -> String {
        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Seconds an instance no route points at any more may finish its requests before it is
/// stopped, unless the site sets `drain_seconds`.
pub const DRAIN_SECONDS_DEFAULT: u32 = 30;
/// The longest drain period a site may set.
pub const DRAIN_SECONDS_MAX: u32 = 600;

/// A site's drain period from its stored `drain_seconds` (`None`: the default).
pub fn drain_period(drain_seconds: Option<i64>) -> std::time::Duration {
    let seconds = drain_seconds
        .and_then(|s| u32::try_from(s).ok())
        .unwrap_or(DRAIN_SECONDS_DEFAULT)
        .min(DRAIN_SECONDS_MAX);
    std::time::Duration::from_secs(u64::from(seconds))
}

/// Lifecycle of a deployment. Transitions are decided in [`DeploymentStatus::can_become`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    /// Waiting for a build slot.
    Queued,
    /// Fetching source and running build steps.
    Building,
    /// Built; starting and health-checking.
    Deploying,
    /// Serving its environment.
    Live,
    /// Failed in some stage; `error` says which.
    Failed,
    /// Stopped by a caller before it went live.
    Cancelled,
    /// Was live; its environment now points elsewhere. Kept for rollback.
    Superseded,
    /// Was live, then crash-looped; `error` says why. Its environment went back to the
    /// deployment before it (or, with `--on-crash-loop stay-down`, still points at it
    /// while it is restarted slowly, and it is live again once it recovers).
    Crashed,
}

impl DeploymentStatus {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Building => "building",
            Self::Deploying => "deploying",
            Self::Live => "live",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
            Self::Crashed => "crashed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "building" => Self::Building,
            "deploying" => Self::Deploying,
            "live" => Self::Live,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "superseded" => Self::Superseded,
            "crashed" => Self::Crashed,
            _ => return None,
        })
    }

    /// No more work will happen (a `wait` can return).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Live | Self::Failed | Self::Cancelled | Self::Superseded | Self::Crashed
        )
    }

    /// The allowed transitions. A retried build may re-enter `building` from `building`
    /// or `deploying` after a crash; a build that finishes after a newer deployment of
    /// the same environment went live goes straight to `superseded`, and so does a queued
    /// one that a newer deploy of its environment overtook before it started building.
    pub fn can_become(self, next: Self) -> bool {
        use DeploymentStatus::*;
        matches!(
            (self, next),
            (Queued, Building | Failed | Cancelled | Superseded)
                | (Building, Building | Deploying | Failed | Cancelled)
                | (Deploying, Building | Live | Failed | Cancelled | Superseded)
                | (Live, Superseded | Live | Crashed)
                | (Superseded, Live)
                | (Crashed, Live | Superseded)
        )
    }
}

/// Where a site's source comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A git URL (https, file://) cloned with the git CLI.
    Git,
    /// A folder on the server's machine, copied (honouring .gitignore).
    Path,
    /// A tar.gz uploaded by the CLI or an API call.
    Upload,
}

impl SourceKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Git => "git",
            Self::Path => "path",
            Self::Upload => "upload",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Self {
        match s {
            "git" => Self::Git,
            "path" => Self::Path,
            _ => Self::Upload,
        }
    }
}

/// The host an environment is served at: `<site>.<base>` for production,
/// `<env>--<site>.<base>` otherwise. Neither name may contain `--` or start or end with
/// `-` ([`validate_site_name`]), so the host names exactly one (site, environment).
pub fn hostname(site: &str, environment: &str, base: &str) -> String {
    if environment == "production" {
        format!("{site}.{base}")
    } else {
        format!("{environment}--{site}.{base}")
    }
}

/// Names the platform keeps for itself.
const RESERVED_SITE_NAMES: &[&str] = &[
    "www",
    "api",
    "admin",
    "app",
    "mcp",
    "git",
    "hooks",
    "dashboard",
    "berth",
    "localhost",
    "static",
];

/// Checks a site name: a DNS label (lowercase letters, digits, hyphens; 1–63; no leading or
/// trailing hyphen, no `--` since that separates preview environments), not reserved.
pub fn validate_site_name(name: &str) -> ServiceResult<()> {
    let bad = |why: &str| {
        Err(ServiceError::invalid(
            "name",
            format!(
                "invalid site name '{}': {why}; use 1-63 lowercase letters, digits and single hyphens, e.g. 'my-app'",
                name.chars().take(80).collect::<String>()
            ),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it must not start or end with '-'");
    }
    if name.contains("--") {
        return bad("'--' is reserved to separate preview environments");
    }
    if RESERVED_SITE_NAMES.contains(&name) {
        return Err(ServiceError::invalid(
            "name",
            format!("site name '{name}' is reserved; choose another, e.g. '{name}-site'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names() {
        for ok in ["a", "hello", "my-app-2", "x1"] {
            assert!(validate_site_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a--b", "api", "ü", &"a".repeat(64)] {
            assert!(validate_site_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn distinct_site_and_environment_names_give_distinct_hosts() {
        // Every valid name over a small alphabet, up to four characters.
        let mut names = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| ["a", "b", "-"].map(|c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        names.retain(|n| validate_site_name(n).is_ok());
        let mut seen = std::collections::HashMap::new();
        for site in &names {
            for env in names.iter().map(String::as_str).chain(["production"]) {
                let host = hostname(site, env, "localhost");
                if let Some(other) = seen.insert(host.clone(), (site.clone(), env.to_string())) {
                    panic!("{host} is both {other:?} and ({site}, {env})");
                }
            }
        }
        assert!(seen.len() > 1000, "{}", seen.len());
    }

    #[test]
    fn deployment_transitions() {
        use DeploymentStatus::*;
        assert!(Queued.can_become(Building));
        assert!(Building.can_become(Deploying));
        assert!(Deploying.can_become(Live));
        assert!(Live.can_become(Superseded));
        assert!(Superseded.can_become(Live));
        assert!(!Failed.can_become(Live));
        assert!(!Live.can_become(Building));
        assert!(!Cancelled.can_become(Building));
        assert!(!Queued.can_become(Live));
        assert!(Deploying.can_become(Superseded));
        assert!(!Building.can_become(Superseded));
        for s in [Queued, Building, Deploying, Live, Failed, Cancelled, Superseded] {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Some(s));
        }
        assert!(Live.is_final() && Failed.is_final() && !Building.is_final());
    }
}

/// Lifecycle of a custom domain, stored with it. Transitions are decided in
/// [`DomainStatus::can_become`] only. Without certificates (a later step) a domain goes
/// `pending_dns` → `active` (served over HTTP) once its DNS checks out, and back to
/// `pending_dns` when a later check finds it wrong; `validating`, `issuing` and
/// `renewing` belong to certificate issuance and are not entered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainStatus {
    /// Its DNS records are missing or wrong (the diagnosis says which); not served.
    PendingDns,
    /// DNS is right; the certificate authority is checking control of the name.
    Validating,
    /// A certificate is being issued.
    Issuing,
    /// Served.
    Active,
    /// Served; its certificate is being renewed.
    Renewing,
    /// Issuance failed; the diagnosis says why and when it is retried.
    Failed,
}

impl DomainStatus {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingDns => "pending_dns",
            Self::Validating => "validating",
            Self::Issuing => "issuing",
            Self::Active => "active",
            Self::Renewing => "renewing",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending_dns" => Self::PendingDns,
            "validating" => Self::Validating,
            "issuing" => Self::Issuing,
            "active" => Self::Active,
            "renewing" => Self::Renewing,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether the edge serves the domain in this state.
    pub fn is_served(self) -> bool {
        matches!(self, Self::Active | Self::Renewing)
    }

    /// The allowed moves. A DNS check may always send a domain back to `pending_dns`.
    pub fn can_become(self, to: Self) -> bool {
        use DomainStatus::*;
        matches!(
            (self, to),
            (_, PendingDns)
                | (PendingDns | Failed, Validating | Active)
                | (Validating, Issuing | Active | Failed)
                | (Issuing, Active | Failed)
                | (Active, Renewing | Active)
                | (Renewing, Active | Failed)
        )
    }
}
