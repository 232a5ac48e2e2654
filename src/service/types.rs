//! Inputs and outputs of the service calls. The MCP tools take and return exactly these
//! (their JSON schemas come from here), and REST and the CLI speak the same JSON.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::DeploymentStatus;
pub use crate::model::{DRAIN_SECONDS_DEFAULT, DRAIN_SECONDS_MAX, drain_period};

/// Default and maximum lines in a log output.
pub const DEFAULT_LOG_LINES: u32 = 100;
/// Hard maximum lines in one log output.
pub const MAX_LOG_LINES: u32 = 1000;

/// `HOSTING_WHOAMI` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WhoAmI {
    /// Org name.
    pub org: String,
    /// Name of the API key in use (`dashboard` for a password login).
    pub key_name: String,
    /// The user acting (a personal key or a password login), by email.
    pub user: Option<String>,
    /// The role acted as: a service key's own, else the user's current role.
    pub role: crate::service::access::Role,
    /// The key's scopes.
    pub scopes: Vec<crate::service::access::Scope>,
    /// The only sites the key reaches, when restricted.
    pub sites: Option<Vec<String>>,
    /// The only environments the key reaches, when restricted.
    pub environments: Option<Vec<String>>,
    /// When the key stops working (RFC 3339); none for the bootstrap key and sessions.
    pub expires_at: Option<String>,
    /// What the caller may do (each needs both the role and the scope).
    pub allowed_actions: Vec<crate::service::access::Action>,
    /// Edge URL pattern of sites.
    pub site_url_pattern: String,
    /// Whether apps run inside a bubblewrap sandbox.
    pub sandboxed: bool,
    /// The orgs the acting person belongs to, with their role in each (none for a
    /// service key).
    pub orgs: Option<Vec<crate::service::orgs::OrgMembership>>,
}

/// `HOSTING_CREATE_SITE` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSiteInput {
    /// Site name: a DNS label (lowercase letters, digits, '-'), unique in the org. The site is served at http://<name>.<base-domain>.
    pub name: String,
    /// Source: a git URL (https://, file://), an absolute folder path on the server, or the name of an internal repository (HOSTING_CREATE_REPO; every `git push` to it then deploys). Omit to deploy by upload later (`berth deploy DIR --site NAME`).
    #[serde(default)]
    pub repo: Option<String>,
    /// Branch to deploy (default: the repository's default branch).
    #[serde(default)]
    pub branch: Option<String>,
    /// Exact commit SHA to deploy (overrides branch).
    #[serde(default)]
    pub commit: Option<String>,
    /// Force a build pack: static, procfile, node, python, go, rust or deno (default: detected).
    #[serde(default)]
    pub build_pack: Option<String>,
    /// Install command override.
    #[serde(default)]
    pub install_command: Option<String>,
    /// Build command override.
    #[serde(default)]
    pub build_command: Option<String>,
    /// Start command override (the app must listen on $PORT).
    #[serde(default)]
    pub start_command: Option<String>,
    /// Fixed port the app listens on (default: berth picks one and passes PORT).
    #[serde(default)]
    pub port: Option<u16>,
    /// Health check path (default "/"); the deployment is live once it answers below 500.
    #[serde(default)]
    pub health_check_path: Option<String>,
    /// Static output folder relative to the (root_dir's) source root (default: detected).
    #[serde(default)]
    pub output_dir: Option<String>,
    /// Subfolder of the repository that holds the app (monorepos), e.g. "apps/web":
    /// detection, install, build and start happen there, and only its files are deployed.
    #[serde(default)]
    pub root_dir: Option<String>,
    /// Environment variables for the build and the app.
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Runtime provider (default "local").
    #[serde(default)]
    pub provider: Option<String>,
    /// Deploy right away (default true when a repo is given).
    #[serde(default)]
    pub deploy: Option<bool>,
    /// Block until the deployment is live or failed (default false).
    #[serde(default)]
    pub wait: Option<bool>,
    /// Maximum seconds to wait (default 300, at most 1800).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Repeat-safe key: a second call with the same key returns the first result.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Build a preview environment for every pushed branch other than the deployed one (and for pull requests); a deleted branch removes its preview. Default false.
    #[serde(default)]
    pub previews: Option<bool>,
}

/// `HOSTING_CREATE_SITE` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateSiteOutput {
    /// The created site's name.
    pub site: String,
    /// Its production URL.
    pub url: String,
    /// The first deployment, when one was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentInfo>,
    /// What to do next.
    pub next_steps: String,
}

/// A change of one setting: absent keeps it, `null` clears it (back to detection or the
/// default), a value sets it. Deserialize with [`change`] and `#[serde(default)]`.
pub type Change<T> = Option<Option<T>>;

/// Reads a present field as `Some(value)`, `null` included (`Some(None)`), so that with
/// `#[serde(default)]` an absent field stays `None`: the three states of a [`Change`].
pub fn change<'de, D, T>(deserializer: D) -> Result<Change<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Changes of build settings: on a site (HOSTING_UPDATE_SITE) or for one deployment
/// (HOSTING_DEPLOY `overrides`). Absent fields are unchanged; `null` clears a setting
/// back to detection.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSettingsChange {
    /// Build pack: static, procfile, node, python, go, rust or deno; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub build_pack: Change<String>,
    /// Install command; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub install_command: Change<String>,
    /// Build command; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub build_command: Change<String>,
    /// Start command (the app must listen on $PORT); null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub start_command: Change<String>,
    /// Static output folder relative to the app's folder; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub output_dir: Change<String>,
    /// Subfolder of the repository holding the app (monorepos), e.g. "apps/web"; null: the repository's root.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub root_dir: Change<String>,
    /// Fixed port the app listens on; null: berth picks one and passes PORT.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub port: Change<u16>,
    /// Health check path; null: "/".
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub health_check_path: Change<String>,
}

impl BuildSettingsChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The settings `HOSTING_UPDATE_SITE` clears with `null`, in the order they are listed to
/// users: the build settings (the first 8, which a deploy's overrides take too), then
/// `branch` (git sites only) and `drain_seconds` (back to the default).
pub const CLEARABLE_SETTINGS: [&str; 10] = [
    "build_pack",
    "install_command",
    "build_command",
    "start_command",
    "output_dir",
    "root_dir",
    "port",
    "health_check_path",
    "branch",
    "drain_seconds",
];

/// `HOSTING_UPDATE_SITE` arguments: absent fields are unchanged; `null` clears a build
/// setting back to detection. Changes apply at the next deploy.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSiteInput {
    /// Site name.
    pub site: String,
    /// Build pack: static, procfile, node, python, go, rust or deno; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub build_pack: Change<String>,
    /// Install command; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub install_command: Change<String>,
    /// Build command; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub build_command: Change<String>,
    /// Start command (the app must listen on $PORT); null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub start_command: Change<String>,
    /// Static output folder relative to the app's folder; null: detected.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub output_dir: Change<String>,
    /// Subfolder of the repository holding the app (monorepos), e.g. "apps/web"; null: the repository's root.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub root_dir: Change<String>,
    /// Fixed port the app listens on; null: berth picks one and passes PORT.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub port: Change<u16>,
    /// Health check path; null: "/".
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub health_check_path: Change<String>,
    /// Branch production deploys from (git sites; pushes to it deploy); null: the repository's default branch.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub branch: Change<String>,
    /// Build a preview environment for every other pushed branch; null: false.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub previews: Change<bool>,
    /// Seconds (0-600) an old instance may finish its requests after a deploy, promote, rollback or scale-in before it stops (it stops as soon as none is left; WebSockets then get a close frame); null: 30. Applies at once.
    #[serde(default, deserialize_with = "change", skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Change<i64>,
    /// Runtime provider (local or docker); only while no environment runs an app, as running instances cannot move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Repeat-safe key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl UpdateSiteInput {
    /// The build-settings part of the update.
    pub fn build_change(&self) -> BuildSettingsChange {
        BuildSettingsChange {
            build_pack: self.build_pack.clone(),
            install_command: self.install_command.clone(),
            build_command: self.build_command.clone(),
            start_command: self.start_command.clone(),
            output_dir: self.output_dir.clone(),
            root_dir: self.root_dir.clone(),
            port: self.port,
            health_check_path: self.health_check_path.clone(),
        }
    }
}

/// A site's changeable settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SiteSettings {
    /// Build pack, when forced.
    pub build_pack: Option<String>,
    /// Install command, when set.
    pub install_command: Option<String>,
    /// Build command, when set.
    pub build_command: Option<String>,
    /// Start command, when set.
    pub start_command: Option<String>,
    /// Static output folder, when set.
    pub output_dir: Option<String>,
    /// App subfolder of the repository, when set.
    pub root_dir: Option<String>,
    /// Fixed port, when set.
    pub port: Option<u16>,
    /// Health check path, when set.
    pub health_check_path: Option<String>,
    /// Branch production follows, when set (else the repository's default).
    pub branch: Option<String>,
    /// Preview environments for pushed branches.
    pub previews: bool,
    /// Runtime provider.
    pub provider: String,
    /// Seconds an old instance may finish its requests before it stops.
    pub drain_seconds: u32,
}

/// `HOSTING_UPDATE_SITE` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UpdateSiteOutput {
    /// Site name.
    pub site: String,
    /// Its settings after the change (unset ones are detected at each build).
    pub settings: SiteSettings,
    /// Names of the settings this call changed.
    pub changed: Vec<String>,
    /// What to do next.
    pub next_steps: String,
}

/// `HOSTING_DEPLOY` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployInput {
    /// Site name.
    pub site: String,
    /// Branch to deploy (default: the site's branch).
    #[serde(default)]
    pub branch: Option<String>,
    /// Exact commit SHA.
    #[serde(default)]
    pub commit: Option<String>,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Build settings for this deployment only (same fields as HOSTING_UPDATE_SITE; null: detection): recorded with the deployment, the site keeps its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BuildSettingsChange>,
    /// Block until live or failed.
    #[serde(default)]
    pub wait: Option<bool>,
    /// Maximum seconds to wait (default 300, at most 1800).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Repeat-safe key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Kubernetes sites: build and apply nothing; return the objects a release of the
    /// environment would apply (checked by the cluster's server-side dry run when it
    /// answers), the values of the app's variables and of Secrets shown as `<sealed>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// Who checked the objects of a dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DryRunCheck {
    /// The cluster (server-side dry run): the objects as it would store them.
    Server,
    /// berth alone (the cluster did not answer the dry run; `note` says why).
    Rendered,
}

/// `HOSTING_DEPLOY` with `dry_run`: what a release would apply; nothing was built or
/// applied.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DryRunOutput {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// The site's target.
    pub target: String,
    /// Who checked the objects.
    pub checked_by: DryRunCheck,
    /// What to know about them (the image is the one this deploy would build).
    pub note: String,
    /// The objects, in the order they would be applied.
    pub objects: Vec<serde_json::Value>,
}

/// `HOSTING_DEPLOY` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeployOutput {
    /// The deployment.
    pub deployment: DeploymentInfo,
    /// The environment's URL.
    pub url: String,
}

/// A deployment as callers see it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentInfo {
    /// Id (`dpl_…`).
    pub id: String,
    /// Status.
    pub status: DeploymentStatus,
    /// URL of its environment.
    pub url: String,
    /// Environment name.
    pub environment: String,
    /// Source kind: git, path or upload.
    pub source: String,
    /// Branch or ref asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit deployed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Build pack used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_pack: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Finished (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Who asked for it (API key name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The build settings it was built with (the site's, with the deploy's overrides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_settings: Option<serde_json::Value>,
    /// One-off overrides the deploy carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides: Option<serde_json::Value>,
    /// For a failed deployment after `wait`: its last build and runtime log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_log_lines: Option<Vec<String>>,
    /// Once it has served traffic (`HOSTING_GET_DEPLOYMENT`): its requests, 5xx rate and
    /// p95 against the deployment of the same environment that served before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<super::metrics::DeploymentComparison>,
    /// Set when `wait` gave up before a final status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_timed_out: Option<bool>,
    /// While a `wait` runs: the newest build or runtime log line, cut to one short line,
    /// for progress notifications (never part of a result).
    #[serde(skip)]
    #[schemars(skip)]
    pub progress_line: Option<String>,
}

/// `HOSTING_LIST_SITES` arguments: one page of the org's sites, by name.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSitesInput {
    /// Sites per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Only sites whose name contains this text.
    #[serde(default)]
    pub name_contains: Option<String>,
}

/// `HOSTING_LIST_SITES` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SiteList {
    /// Sites, by name.
    pub sites: Vec<SiteSummary>,
    /// Sites matching the query, on all pages.
    pub total: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One site in a list.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SiteSummary {
    /// Name.
    pub name: String,
    /// live, building, failed, crashed, starting, sleeping or new.
    pub status: String,
    /// Production URL.
    pub url: String,
    /// Where it deploys from: a git URL, a server folder, an internal repository's name,
    /// or `upload`.
    pub source: String,
    /// The latest deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_deployment: Option<DeploymentInfo>,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// `HOSTING_GET_SITE` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetSiteInput {
    /// Site name.
    pub site: String,
    /// Build-log lines of the latest deployment to include (default 20, max 1000).
    #[serde(default)]
    pub deploy_log_lines: Option<u32>,
    /// Runtime-log lines of the serving deployment to include (default 20, max 1000).
    #[serde(default)]
    pub runtime_log_lines: Option<u32>,
    /// Include env var names (values masked).
    #[serde(default)]
    pub include_env: Option<bool>,
}

/// `HOSTING_GET_SITE` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SiteDetail {
    /// Summary.
    #[serde(flatten)]
    pub summary: SiteSummary,
    /// Branch followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Where it deploys from: git, path (a server folder) or upload.
    #[serde(default)]
    pub source_kind: String,
    /// Runtime provider.
    pub provider: String,
    /// Build settings overrides (null: detected); change them with HOSTING_UPDATE_SITE.
    pub build_settings: serde_json::Value,
    /// Whether pushed branches get preview environments.
    #[serde(default)]
    pub previews: bool,
    /// Seconds an old instance may finish its requests after a deploy, promote, rollback or scale-in before it stops.
    #[serde(default = "default_drain_seconds")]
    pub drain_seconds: u32,
    /// Environments.
    pub environments: Vec<EnvironmentInfo>,
    /// Recent deployments, newest first.
    pub recent_deployments: Vec<DeploymentInfo>,
    /// Tail of the latest deployment's build log.
    pub build_log_tail: Vec<String>,
    /// Tail of the serving deployment's runtime log.
    pub runtime_log_tail: Vec<String>,
    /// Env var names with masked values, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
}

fn default_drain_seconds() -> u32 {
    DRAIN_SECONDS_DEFAULT
}

/// An environment of a site.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentInfo {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Serving deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// live, starting, sleeping (scaled to zero, paused), crashed, or none.
    pub status: String,
    /// Branch it follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// Names a site.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRef {
    /// Site name.
    pub site: String,
    /// Repeat-safe key (mutating calls).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `HOSTING_DELETE_SITE` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeleteSiteOutput {
    /// The deleted site.
    pub site: String,
    /// Deployments removed with it.
    pub deployments_removed: u64,
}

/// `HOSTING_LIST_DEPLOYMENTS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDeploymentsInput {
    /// Site name.
    pub site: String,
    /// Only this environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// At most this many (default 20, max 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the newest.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `HOSTING_LIST_DEPLOYMENTS` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentList {
    /// Newest first.
    pub deployments: Vec<DeploymentInfo>,
    /// Each environment keeps its newest this many finished deployments (and any an
    /// environment serves): all of them can be promoted or rolled back to. Older ones are
    /// removed with their files and logs (server setting `--keep-deployments`).
    pub kept_per_environment: u64,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Names a deployment.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRef {
    /// Deployment id (`dpl_…`).
    pub deployment_id: String,
}

/// `HOSTING_GET_DEPLOYMENT_LOGS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsInput {
    /// Deployment id.
    pub deployment_id: String,
    /// build, runtime or all (default all).
    #[serde(default)]
    pub kind: Option<String>,
    /// Return lines after this cursor (from a previous `next_cursor`); omit for the start.
    #[serde(default)]
    pub cursor: Option<i64>,
    /// At most this many lines (default 100, max 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One log line.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    /// Cursor of this line.
    pub cursor: i64,
    /// build or runtime.
    pub kind: String,
    /// stdout, stderr or system.
    pub stream: String,
    /// Time (RFC 3339).
    pub time: String,
    /// The text.
    pub line: String,
}

/// A change to a deployment, as the events table recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentEventInfo {
    /// Cursor of this event (pass it back to resume after it).
    pub cursor: i64,
    /// `deployment.queued`, `deployment.building`, `deployment.live`, …
    pub kind: String,
    /// Time (RFC 3339).
    pub time: String,
    /// Details (the site, the new status, an error, …).
    pub data: serde_json::Value,
}

/// A page of log lines.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct LogPage {
    /// Lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Pass as `cursor` to continue.
    pub next_cursor: i64,
    /// More lines exist after this page right now.
    pub has_more: bool,
    /// The deployment's status (a final status means no more build lines will come).
    pub status: DeploymentStatus,
}

/// `HOSTING_CREATE_ENVIRONMENT` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironmentInput {
    /// Site name.
    pub site: String,
    /// Environment name: a DNS label; served at http://<name>--<site>.<base-domain>.
    pub name: String,
    /// Branch to deploy into it (git sites).
    #[serde(default)]
    pub branch: Option<String>,
    /// Exact commit to deploy into it (git sites).
    #[serde(default)]
    pub commit: Option<String>,
    /// Block until its first deployment is live or failed.
    #[serde(default)]
    pub wait: Option<bool>,
    /// Maximum seconds to wait (default 300, at most 1800).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Repeat-safe key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// An environment and the deployment it got.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentOutput {
    /// The environment.
    pub environment: EnvironmentInfo,
    /// Its deployment (new, or the one it was pointed at).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentInfo>,
}

/// `HOSTING_LIST_ENVIRONMENTS` arguments: one page of a site's environments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEnvironmentsInput {
    /// Site name.
    pub site: String,
    /// Environments per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `HOSTING_LIST_ENVIRONMENTS` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentList {
    /// production first, then previews by name.
    pub environments: Vec<EnvironmentInfo>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Names an environment of a site.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRef {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// Repeat-safe key (mutating calls).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `HOSTING_GET_ENVIRONMENT_LOGS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentLogsInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Return lines after this cursor; omit for the newest `limit` lines.
    #[serde(default)]
    pub cursor: Option<i64>,
    /// At most this many lines (default 100, max 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `HOSTING_PROMOTE` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteInput {
    /// Site name.
    pub site: String,
    /// The built deployment to serve (`dpl_…`).
    pub deployment_id: String,
    /// Environment to point at it (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Repeat-safe key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `HOSTING_ROLLBACK` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Repeat-safe key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Result of promote and rollback.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SwitchOutput {
    /// The environment after the switch.
    pub environment: EnvironmentInfo,
    /// The deployment it now serves.
    pub deployment: DeploymentInfo,
    /// The deployment it served before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_deployment_id: Option<String>,
}

/// Shown instead of a secret value.
pub const MASK: &str = "********";

/// `HOSTING_GET_ENV_VARS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetEnvVarsInput {
    /// Site name.
    pub site: String,
    /// Also the variables of this environment (they override site-wide ones).
    #[serde(default)]
    pub environment: Option<String>,
    /// Show the values (admin keys only); masked otherwise.
    #[serde(default)]
    pub reveal: Option<bool>,
}

/// One env var as shown.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvVarInfo {
    /// The value, or `********` unless revealed.
    pub value: String,
    /// `site` (all environments) or the environment's name.
    pub scope: String,
}

/// `HOSTING_GET_ENV_VARS` / `HOSTING_SET_ENV_VARS` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvVarsOutput {
    /// Site name.
    pub site: String,
    /// The environment asked about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Variables by name.
    pub vars: BTreeMap<String, EnvVarInfo>,
    /// Set by HOSTING_SET_ENV_VARS: environments restarted to pick the change up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted: Option<Vec<String>>,
}

/// `HOSTING_SET_ENV_VARS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEnvVarsInput {
    /// Site name.
    pub site: String,
    /// Set them for this environment only (default: the whole site).
    #[serde(default)]
    pub environment: Option<String>,
    /// Variables to set; a null value deletes the variable.
    pub vars: BTreeMap<String, Option<String>>,
    /// Restart running apps now so they see the change (default false: next deploy or restart).
    #[serde(default)]
    pub restart: Option<bool>,
    /// Repeat-safe key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `HOSTING_GET_SCALING_CONFIG` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalingRef {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
}

/// `HOSTING_SET_SCALING_CONFIG` / `HOSTING_SCALE_ENVIRONMENT` arguments: omitted fields keep their value.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetScalingInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Instances kept running however quiet it is: 0 (sleep when idle, wake on the next
    /// request) to 20.
    #[serde(default)]
    pub min_instances: Option<i64>,
    /// Most instances (1-20); above 1 the environment scales out on concurrency.
    #[serde(default)]
    pub max_instances: Option<i64>,
    /// Seconds without requests before an environment with min_instances 0 sleeps (5-86400).
    #[serde(default)]
    pub idle_timeout_seconds: Option<i64>,
    /// In-flight requests per instance to aim for (1-1000): more than this on average
    /// starts another instance, up to max_instances.
    #[serde(default)]
    pub target_concurrency: Option<i64>,
    /// Memory of each instance in MiB (16-65536; 0 = the server's default). Applies to
    /// instances started after the change (the next deploy or restart).
    #[serde(default)]
    pub memory_mb: Option<i64>,
    /// CPU of each instance in cores (0.05-64; 0 = the server's default). Applies to
    /// instances started after the change.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Repeat-safe key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// An environment's scale settings and what runs now.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScalingConfig {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// Instances kept running when idle.
    pub min_instances: i64,
    /// Most instances.
    pub max_instances: i64,
    /// Idle seconds before sleeping (when min_instances is 0).
    pub idle_timeout_seconds: i64,
    /// Target in-flight requests per instance.
    pub target_concurrency: i64,
    /// Memory of each instance in MiB, when the environment sets it (else the server's
    /// default applies).
    pub memory_mb: Option<i64>,
    /// CPU of each instance in cores, when the environment sets it.
    pub cpus: Option<f64>,
    /// Instances running right now (not counting ones draining after a scale-in).
    pub running_instances: i64,
    /// Each instance of the deployment the environment serves.
    #[serde(default)]
    pub instances: Vec<InstanceInfo>,
}

/// One running instance of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InstanceInfo {
    /// Instance number (0-based).
    pub index: u32,
    /// starting, healthy, restarting, crashed, or paused (asleep in place on docker).
    pub state: String,
    /// Leaving after a scale-in or a swap: no longer routed, finishing its requests.
    pub draining: bool,
}

/// `HOSTING_CREATE_REPO` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRepoInput {
    /// Repository name, unique in the org: 1-100 of lowercase letters, digits, '-', '_' and '.', starting with a letter or digit (no ".git" suffix).
    pub name: String,
}

/// `HOSTING_CREATE_REPO` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RepoOutput {
    /// Repository name (give it as `repo` to HOSTING_CREATE_SITE).
    pub repo: String,
    /// Smart-HTTP URL for `git clone` / `git push` (credentials from HOSTING_GET_GIT_TOKEN).
    pub clone_url: String,
    /// What to do next.
    pub next_steps: String,
}

/// `HOSTING_LIST_REPOS` arguments: one page of the org's internal repositories, by name.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListReposInput {
    /// Repositories per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One internal repository in a list.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RepoSummary {
    /// Repository name (give it as `repo` to HOSTING_CREATE_SITE).
    pub repo: String,
    /// Smart-HTTP URL for `git clone` / `git push` (credentials from HOSTING_GET_GIT_TOKEN).
    pub clone_url: String,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// `HOSTING_LIST_REPOS` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RepoList {
    /// Repositories, by name.
    pub repos: Vec<RepoSummary>,
    /// Repositories of the org, on all pages.
    pub total: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `HOSTING_GET_GIT_TOKEN` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitTokenInput {
    /// Repository name.
    pub repo: String,
    /// Lifetime in seconds (default 3600, 1 to 86400).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `HOSTING_GET_GIT_TOKEN` result: HTTP basic credentials for one repository.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GitTokenOutput {
    /// Smart-HTTP URL of the repository.
    pub clone_url: String,
    /// Basic-auth user name (any name works; the token decides).
    pub username: String,
    /// Basic-auth password; shown once, stored hashed, opens only this repository.
    pub token: String,
    /// When the token stops working (RFC 3339).
    pub expires_at: String,
    /// A ready-made remote URL with the credentials embedded, for `git push`.
    pub push_url: String,
}
