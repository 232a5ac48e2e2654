//! The service layer: one method per tool, org-scoped and validated. MCP tools, REST
//! handlers and the CLI are thin adapters over these methods, so an agent and a person
//! get the same rules and the same errors.

pub mod access;
pub mod agents;
pub mod audit;
mod capabilities;
pub mod certificates;
pub mod challenges;
pub mod config;
pub mod dns;
pub mod domains;
mod env_vars;
mod environments;
pub mod error_patterns;
pub mod git;
pub mod github;
pub mod invitations;
pub mod metrics;
pub mod metrics_fields;
pub mod oauth;
pub mod org_usage;
pub mod orgs;
pub mod people;
mod prometheus;
pub mod resources;
mod scaling;
mod settings;
pub mod types;
pub mod usage;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_build::detect::{BuildPlan, BuildSettings};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::platform::{HealthChange, Platform, secret_context};
pub use access::{Action, Role, Scope, Target};
pub use agents::{ConnectedApp, ConnectedAppList, ConnectedAppRef, FreezeAgentsInput, FreezeAgentsOutput};
pub use audit::{AuditActor, AuditEntry, AuditOutcome, AuditPage, ListAuditInput};
pub use config::{
    ConfigKey, ConfigMap, ConfigOutput, GetConfigInput, ProviderConfig, ProviderSettings, SetConfigInput,
    TestConnectionInput, TestConnectionOutput,
};
pub use domains::{
    AddDomainInput, DnsRecord, DomainInfo, DomainList, DomainRef, ListDomainsInput, RecordCheck, RemovedDomain,
    ValidateDomainInput,
};
pub use error_patterns::{ErrorPattern, ErrorPatternsInput, ErrorPatternsOutput, PatternDeployment, ServerErrorPath};
pub use invitations::{
    CreatedInvitation, InvitationEmail, InvitationInfo, InvitationList, InvitationRef, InvitationStatus,
    InviteMemberInput, ListInvitationsInput,
};
pub use metrics::{
    DeploymentComparison, DeploymentTrafficTotals, MetricsRangeInput, MetricsSummaryOutput, StatusCodesOutput,
    TimelineInput, TimelineOutput, TopPathsInput, TopPathsOutput,
};
pub use metrics_fields::{MetricsFieldsInput, MetricsFieldsOutput, NO_PATH_FILTER};
pub use org_usage::{SiteUsage, UsageAmounts, UsageInput, UsageOutput};
pub use orgs::{CreateOrgInput, CreatedOrg, OrgMembership};
pub use people::{
    AddMemberInput, ApiKeyInfo, ApiKeyList, ApiKeyRef, CreateApiKeyInput, CreatedApiKey, MemberInfo, MemberList,
    MemberRef, SetMemberRoleInput,
};
pub use resources::{
    CreateResourceInput, CreatedResource, DeleteResourceInput, DeletedResource, ListResourcesInput, ResourceInfo,
    ResourceKind, ResourceList, ResourceRef,
};
pub use types::*;
pub use usage::{InstanceUsage, ResourceUsageInput, ResourceUsageOutput};

use crate::deploy::{DEPLOY_JOB, DeployJob, app_dir};
use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, DeploymentStatus, SourceKind, validate_site_name};
use crate::runtime::InstanceState;
use crate::source::{RepoLocation, classify_repo};
use crate::store::{self, DeploymentRow, EnvironmentRow, SiteRow};
use crate::util::{new_id, now_ms, rfc3339};

/// Default and maximum `wait` durations.
const DEFAULT_WAIT: u64 = 300;
const MAX_WAIT: u64 = 1800;
/// While a `wait` runs, progress goes out at least this often (with the newest log line),
/// status changes or not.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Longest log line a progress notification carries.
const PROGRESS_LINE_CHARS: usize = 160;
/// Deploy job attempts before giving up (crash recovery retries).
const DEPLOY_ATTEMPTS: i64 = 3;
/// Longest env var value accepted.
const MAX_ENV_VALUE: usize = 32 * 1024;

/// A source tree received with the call (an upload already extracted to a directory).
pub struct UploadedSource {
    /// Directory holding the extracted files.
    pub dir: std::path::PathBuf,
}

/// An upload to deploy: a tar.gz of the app folder and what to do with it.
pub struct UploadRequest {
    /// Site name.
    pub site: String,
    /// The tar.gz bytes.
    pub archive: bytes::Bytes,
    /// Create the site (deploying from uploads) if it does not exist.
    pub create: bool,
    /// Wait until live or failed.
    pub wait: bool,
    /// Maximum seconds to wait.
    pub timeout_seconds: Option<u64>,
    /// Build settings for this deployment only; for a site this upload creates, its
    /// settings.
    pub overrides: Option<BuildSettingsChange>,
}

/// The service: cheap to clone.
#[derive(Clone)]
pub struct Service {
    /// Shared state.
    pub platform: Arc<Platform>,
}

impl Service {
    /// A service over a platform.
    pub fn new(platform: Arc<Platform>) -> Self {
        Self { platform }
    }

    // ------------------------------------------------------------ identity

    /// `HOSTING_WHOAMI`.
    pub async fn whoami(&self, actor: &Actor) -> ServiceResult<WhoAmI> {
        Ok(WhoAmI {
            org: actor.org_name.clone(),
            key_name: actor.key_name.clone(),
            user: actor.user_email.clone(),
            role: actor.role,
            scopes: actor.scopes.clone(),
            sites: actor.sites.clone(),
            environments: actor.environments.clone(),
            expires_at: actor.expires_at.map(rfc3339),
            allowed_actions: actor.allowed_actions(),
            site_url_pattern: self.platform.url_for("<site>", "production"),
            sandboxed: self.platform.sandbox.is_sandboxed(),
            orgs: self.orgs_of(actor).await?,
        })
    }

    // ------------------------------------------------------------ sites

    /// `HOSTING_LIST_SITES`: one page, by name.
    pub async fn list_sites(&self, actor: &Actor, input: &ListSitesInput) -> ServiceResult<SiteList> {
        self.authorize(actor, Action::ReadSites, Target::Org).await?;
        let limit = page_limit(input.limit)?;
        let search = input.name_contains.as_deref().unwrap_or("").trim().to_lowercase();
        let after = input.cursor.as_deref().unwrap_or("");
        if after.len() > 200 || search.len() > 200 {
            return Err(ServiceError::invalid(
                if after.len() > 200 { "cursor" } else { "name_contains" },
                "too long; pass the next_cursor of the previous page as it was given",
            ));
        }
        if let Some(allowed) = &actor.sites {
            return self.list_restricted_sites(actor, allowed, &search, after, limit).await;
        }
        let store = &self.platform.store;
        // One more than asked tells whether another page follows.
        let mut rows = store
            .list_sites_page(&actor.org_id, &search, after, i64::from(limit) + 1)
            .await?;
        let next_cursor = cut_page(&mut rows, limit as usize, |r| r.name.clone());
        let total = store.count_sites(&actor.org_id, &search).await? as u64;
        let sites = self.summarize_all(&rows).await?;
        Ok(SiteList {
            sites,
            total,
            next_cursor,
        })
    }

    /// `HOSTING_GET_SITE`.
    pub async fn get_site(&self, actor: &Actor, input: &GetSiteInput) -> ServiceResult<SiteDetail> {
        self.authorize(actor, Action::ReadSites, Target::Site(&input.site))
            .await?;
        let site = self.find_site(actor, &input.site).await?;
        let store = &self.platform.store;
        // Independent reads go out together (on Postgres each is a round trip through its
        // own pooled connection): three waves of queries, not one after another.
        let (envs, recent) = tokio::try_join!(
            store.list_environments(&site.id),
            store.list_deployments(&site.id, None, 10),
        )?;
        let serving = envs
            .iter()
            .find(|e| e.name == "production")
            .and_then(|e| e.deployment_id.clone());
        // What the environments serve is usually among the recent deployments; only the
        // others are read.
        let older_ids: Vec<&str> = envs
            .iter()
            .filter_map(|e| e.deployment_id.as_deref())
            .filter(|id| !recent.iter().any(|d| d.id == *id))
            .collect();
        let build_lines = clamp_lines(input.deploy_log_lines, 20);
        let runtime_lines = clamp_lines(input.runtime_log_lines, 20);
        // Both tails in one query when there are both.
        let log_tails = async {
            match (recent.first(), &serving) {
                (Some(newest), Some(serving)) => {
                    store
                        .tail_build_and_runtime_logs((&newest.id, build_lines), (serving, runtime_lines))
                        .await
                }
                (Some(newest), None) => Ok((store.tail_logs(&newest.id, "build", build_lines).await?, vec![])),
                (None, Some(serving)) => Ok((vec![], store.tail_logs(serving, "runtime", runtime_lines).await?)),
                (None, None) => Ok((vec![], vec![])),
            }
        };
        let older = async {
            if older_ids.is_empty() {
                Ok(vec![])
            } else {
                store.deployments_by_ids(&older_ids).await
            }
        };
        let (older, (build_log_tail, runtime_log_tail)) = tokio::try_join!(older, log_tails)?;
        let served: Vec<DeploymentRow> = recent.iter().cloned().chain(older).collect();
        let (build_log_tail, runtime_log_tail) = (lines_of(build_log_tail), lines_of(runtime_log_tail));
        let environments = self.environment_infos_of(&site, &envs, &served);
        let env_names: HashMap<&str, &str> = envs.iter().map(|e| (e.id.as_str(), e.name.as_str())).collect();
        // The newest deployment of all is the first of the recent ones.
        let summary = self.summary_of(
            &site,
            recent.first(),
            envs.iter().find(|e| e.name == "production"),
            &served,
            &env_names,
        );
        let env_vars = if input.include_env.unwrap_or(false) {
            Some(
                self.platform
                    .env_vars(&site, None)
                    .await?
                    .into_keys()
                    .map(|k| (k, MASK.to_string()))
                    .collect(),
            )
        } else {
            None
        };
        let recent_deployments = recent
            .iter()
            .map(|d| {
                let env = envs.iter().find(|e| e.id == d.environment_id);
                self.deployment_info_named(d, Some(&site.name), env.map(|e| e.name.as_str()))
            })
            .collect();
        Ok(SiteDetail {
            summary,
            branch: site.branch.clone(),
            source_kind: site.source_kind.clone(),
            provider: site.provider.clone(),
            build_settings: serde_json::from_str(&site.build_settings).unwrap_or_default(),
            previews: site.previews_enabled.into(),
            drain_seconds: drain_period(site.drain_seconds).as_secs() as u32,
            environments,
            recent_deployments,
            build_log_tail,
            runtime_log_tail,
            env_vars,
        })
    }

    /// `HOSTING_CREATE_SITE`: the site, its production environment and (with a source) its
    /// first deployment and build job are written in one transaction: all or nothing.
    pub async fn create_site(
        &self,
        actor: &Actor,
        input: CreateSiteInput,
        upload: Option<UploadedSource>,
        on_progress: &mut (dyn FnMut(&DeploymentInfo) + Send),
    ) -> ServiceResult<CreateSiteOutput> {
        self.authorize(actor, Action::CreateSite, Target::NewSite(&input.name))
            .await?;
        let key = input.idempotency_key.clone();
        let args = serde_json::to_value(&input).unwrap_or_default();
        let (wait, timeout) = (input.wait.unwrap_or(false), input.timeout_seconds);
        let result = self
            .idempotent(actor, "HOSTING_CREATE_SITE", key.as_deref(), async {
                self.create_site_inner(actor, input, upload).await
            })
            .await;
        self.audit(actor, "HOSTING_CREATE_SITE", args, &result).await;
        let mut out = result?;
        if wait
            && let Some(d) = &out.deployment
            && !d.status.is_final()
        {
            let done = self.wait_for(actor, &d.id, timeout, on_progress).await?;
            out.next_steps = next_steps_for(&done, &out.url);
            out.deployment = Some(done);
        }
        Ok(out)
    }

    async fn create_site_inner(
        &self,
        actor: &Actor,
        input: CreateSiteInput,
        upload: Option<UploadedSource>,
    ) -> ServiceResult<CreateSiteOutput> {
        validate_site_name(&input.name)?;
        let provider = self.site_provider(actor, input.provider.as_deref()).await?;
        let settings = build_settings_of(&input)?;
        let env_vars = validate_env_vars(input.env_vars.clone().unwrap_or_default())?;
        let internal = match (&input.repo, &upload) {
            (Some(repo), None) => self.internal_repo(actor, repo).await?,
            _ => None,
        };
        let repo_is_empty = internal.as_ref().is_some_and(|(_, empty)| *empty);
        let (source_kind, source) = match (&input.repo, &upload) {
            (Some(_), Some(_)) => return Err(ServiceError::invalid("repo", "give either repo or an upload, not both")),
            (Some(_), None) if internal.is_some() => {
                let (url, empty) = internal.clone().unwrap_or_default();
                // An internal repository: nothing to check before its first push.
                if !empty {
                    crate::source::check_remote(&url, input.branch.as_deref(), self.platform.config.timeouts.fetch())
                        .await
                        .map_err(|e| ServiceError::invalid("branch", e.to_string()))?;
                }
                (SourceKind::Git, Some(url))
            }
            (Some(repo), None) => {
                self.platform
                    .local_repos
                    .check(repo)
                    .map_err(|m| ServiceError::invalid("repo", m))?;
                let kind = match classify_repo(repo).map_err(|m| ServiceError::invalid("repo", m))? {
                    RepoLocation::Git(_) => SourceKind::Git,
                    RepoLocation::Folder(_) => SourceKind::Path,
                };
                if kind == SourceKind::Path && (input.branch.is_some() || input.commit.is_some()) {
                    return Err(ServiceError::invalid(
                        "branch",
                        format!("'{repo}' is a plain folder, not a git repository; branch and commit need a git repo"),
                    ));
                }
                if kind == SourceKind::Git {
                    let auth = self.platform.git_auth_for(&actor.org_id, repo.trim()).await;
                    crate::source::check_remote_with(
                        repo.trim(),
                        input.branch.as_deref(),
                        self.platform.config.timeouts.fetch(),
                        auth.as_ref(),
                    )
                    .await
                    .map_err(|e| {
                        ServiceError::invalid(if input.branch.is_some() { "branch" } else { "repo" }, e.to_string())
                    })?;
                }
                (kind, Some(repo.trim().to_string()))
            }
            (None, Some(_)) => (SourceKind::Upload, None),
            (None, None) => (SourceKind::Upload, None),
        };
        if input.previews == Some(true) && source_kind != SourceKind::Git {
            return Err(previews_need_git(&input.name, source_kind));
        }
        let deploy = match input.deploy {
            Some(true) if source.is_none() && upload.is_none() => {
                return Err(ServiceError::invalid(
                    "deploy",
                    "nothing to deploy: give repo (a git URL or folder path), or create the site with deploy=false and upload with `berth deploy DIR --site NAME`",
                ));
            }
            Some(true) if repo_is_empty => {
                return Err(ServiceError::invalid(
                    "deploy",
                    "the repository has no commits yet; create the site with deploy=false (the default) and `git push` to deploy",
                ));
            }
            Some(d) => d,
            None => (source.is_some() && !repo_is_empty) || upload.is_some(),
        };

        let store = &self.platform.store;
        if store.get_site(&actor.org_id, &input.name).await?.is_some() {
            return Err(ServiceError::conflict(format!(
                "a site named '{}' already exists; change its settings with HOSTING_UPDATE_SITE and deploy it with HOSTING_DEPLOY, or pick another name",
                input.name
            )));
        }
        ensure_hostname_free(&self.platform.store, actor, &input.name).await?;
        let site = SiteRow {
            id: new_id("site"),
            org_id: actor.org_id.clone(),
            name: input.name.clone(),
            source_kind: source_kind.as_str().into(),
            source: source.clone(),
            branch: input.branch.clone(),
            build_settings: serde_json::to_string(&settings).map_err(anyhow::Error::from)?,
            provider,
            status: "active".into(),
            created_at: now_ms(),
            previews_enabled: store::Flag(input.previews == Some(true)),
            drain_seconds: None,
        };
        let env = EnvironmentRow {
            id: new_id("env"),
            org_id: actor.org_id.clone(),
            site_id: site.id.clone(),
            name: "production".into(),
            branch: input.branch.clone(),
            deployment_id: None,
        };
        let env_vars = env_vars
            .iter()
            .map(|(name, value)| {
                let sealed = self.platform.secrets.seal(value, &secret_context(&site.id, "", name))?;
                Ok((name.clone(), sealed))
            })
            .collect::<ServiceResult<Vec<_>>>()?;
        let deployment = if deploy {
            let branch = input.branch.clone();
            Some(
                self.prepare_deployment(actor, &site, &env, branch, input.commit.clone(), upload, None)
                    .await?,
            )
        } else {
            None
        };
        let new_site = store::NewSite {
            site: &site,
            environment: &env,
            env_vars,
            deploy: deployment.as_ref().map(|d| self.new_deploy(&site, d)).transpose()?,
        };
        let created = self.platform.store.create_site(&new_site).await;
        if !matches!(created, Ok(store::SiteCreated::Created))
            && let Some(d) = &deployment
        {
            self.discard_upload(d).await;
        }
        match created? {
            store::SiteCreated::Created => {}
            store::SiteCreated::NameTaken => {
                return Err(ServiceError::conflict(format!(
                    "a site named '{}' already exists",
                    input.name
                )));
            }
            // Another org took it meanwhile.
            store::SiteCreated::NameTakenByOtherOrg => return Err(hostname_taken(actor, &input.name)),
            store::SiteCreated::OtherReplicasLive(others) => {
                return Err(ServiceError::conflict(crate::replicas::local_target_refusal_message(
                    others,
                )));
            }
        }
        self.platform.jobs.notify();

        let url = self.platform.url_for(&site.name, "production");
        let deployment_info = match &deployment {
            Some(d) => Some(self.deployment_info(d).await?),
            None => None,
        };
        let next_steps = match &deployment_info {
            None if source_kind == SourceKind::Upload => {
                format!("upload the app: `berth deploy DIR --site {}`", site.name)
            }
            None if repo_is_empty => format!(
                "push to the repository to deploy: HOSTING_GET_GIT_TOKEN {{\"repo\": \"{}\"}}, then `git push` branch {}",
                input.repo.as_deref().unwrap_or_default().trim(),
                input.branch.as_deref().unwrap_or(git::DEFAULT_BRANCH)
            ),
            None => format!("deploy it with HOSTING_DEPLOY {{\"site\": \"{}\"}}", site.name),
            Some(d) => next_steps_for(d, &url),
        };
        Ok(CreateSiteOutput {
            site: site.name,
            url,
            deployment: deployment_info,
            next_steps,
        })
    }

    /// `HOSTING_DELETE_SITE`: stops its instances, removes its route, its rows and its files.
    pub async fn delete_site(&self, actor: &Actor, input: &SiteRef) -> ServiceResult<DeleteSiteOutput> {
        self.authorize(actor, Action::Delete, Target::Site(&input.site)).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, "HOSTING_DELETE_SITE", input.idempotency_key.as_deref(), async {
                let site = self.find_site(actor, &input.site).await?;
                self.remove_site(&site).await
            })
            .await;
        self.audit(actor, "HOSTING_DELETE_SITE", args, &result).await;
        result
    }

    /// Removes a site whatever state it is in. Also finishes deletions a crash interrupted.
    pub async fn remove_site(&self, site: &SiteRow) -> ServiceResult<DeleteSiteOutput> {
        let store = &self.platform.store;
        store.set_site_status(&site.id, "deleting").await?;
        let deployments = store.list_deployments(&site.id, None, i64::MAX).await?;
        for d in &deployments {
            self.platform.cancel(&d.id);
        }
        crate::loops::reconciler::reconcile(&self.platform).await?;
        for d in &deployments {
            self.platform.runtime.stop(&d.id).await;
        }
        // The DNS records berth created for its domains go first (the domains themselves
        // go with the site); a provider failure leaves them there, named in the log.
        for domain in store
            .list_domains_page(&site.org_id, Some(&site.id), "", i64::MAX)
            .await?
        {
            if let Err(e) = self.release_domain_dns(&domain).await {
                tracing::warn!(domain = %domain.name, error = %e, "the records berth created for a deleted site's domain stay at the DNS provider");
            }
        }
        self.platform.store.delete_site(site).await?;
        // Its domains and their certificates went with it.
        certificates::publish(&self.platform).await?;
        crate::loops::reconciler::reconcile(&self.platform).await?;
        for d in &deployments {
            let dir = self.platform.config.deployments_dir().join(&d.id);
            if let Err(err) = tokio::fs::remove_dir_all(&dir).await
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %dir.display(), error = %err, "removing deployment files failed");
            }
        }
        let cache = self.platform.config.cache_dir().join(&site.id);
        if let Err(err) = tokio::fs::remove_dir_all(&cache).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %cache.display(), error = %err, "removing the site's build cache failed");
        }
        self.forget_site_builds(site).await;
        tracing::info!(site.name = %site.name, deployments = deployments.len(), "site deleted");
        Ok(DeleteSiteOutput {
            site: site.name.clone(),
            deployments_removed: deployments.len() as u64,
        })
    }

    // ------------------------------------------------------------ deployments

    /// `HOSTING_DEPLOY` with `dry_run`: the objects a release of the environment would
    /// apply on its site's target, secrets sealed; nothing is built, stored or applied.
    pub async fn dry_run_deploy(&self, actor: &Actor, input: &DeployInput) -> ServiceResult<DryRunOutput> {
        let env_name = input.environment.clone().unwrap_or_else(|| "production".into());
        self.authorize(actor, Action::Deploy, Target::Environment(&input.site, Some(&env_name)))
            .await?;
        if input.branch.is_some() || input.commit.is_some() || input.overrides.is_some() {
            return Err(ServiceError::invalid(
                "dry_run",
                "dry_run shows a release of the environment's current app (nothing is built); leave out branch, commit and overrides",
            ));
        }
        let site = self.find_site(actor, &input.site).await?;
        let env = self.find_environment(&site, &env_name).await?;
        let target = self.platform.target(&site.provider)?;
        // An environment that runs no app yet is shown with a stand-in for its first
        // release (the site's settings, no build), and the note says so.
        let (spec, stand_in) = match self.platform.dry_run_spec(&site, &env).await? {
            Some(spec) => (spec, false),
            None if env.deployment_id.is_none() => (self.platform.stand_in_spec(&site, &env).await?, true),
            None => {
                return Err(ServiceError::invalid(
                    "dry_run",
                    format!(
                        "environment '{env_name}' of site '{}' serves no process berth releases (its current deployment has no runnable build), so there is no release to show; deploy once without dry_run",
                        site.name
                    ),
                ));
            }
        };
        let mut found = target
            .dry_run(spec)
            .await
            .map_err(|e| ServiceError::invalid("dry_run", e))?;
        if stand_in {
            found.note = format!(
                "environment '{env_name}' has no deployment yet: shown with the site's settings and a stand-in image (the first build decides the image, and the port and health check path unless the site's settings give them); {}",
                found.note
            );
        }
        Ok(DryRunOutput {
            site: site.name,
            environment: env_name,
            target: site.provider,
            checked_by: if found.server_side {
                DryRunCheck::Server
            } else {
                DryRunCheck::Rendered
            },
            note: found.note,
            objects: found.objects,
        })
    }

    /// `HOSTING_DEPLOY` (and uploads through REST/CLI, with `upload`).
    pub async fn deploy(
        &self,
        actor: &Actor,
        input: DeployInput,
        upload: Option<UploadedSource>,
        on_progress: &mut (dyn FnMut(&DeploymentInfo) + Send),
    ) -> ServiceResult<DeployOutput> {
        self.authorize(
            actor,
            Action::Deploy,
            Target::Environment(&input.site, Some(input.environment.as_deref().unwrap_or("production"))),
        )
        .await?;
        if input.dry_run == Some(true) {
            // Adapters route a dry run to `dry_run_deploy`; this one never deploys for it.
            return Err(ServiceError::invalid(
                "dry_run",
                "a dry run is answered by HOSTING_DEPLOY (MCP) or POST /api/sites/{site}/deploy with dry_run: true",
            ));
        }
        let args = serde_json::to_value(&input).unwrap_or_default();
        let key = input.idempotency_key.clone();
        let wait = input.wait.unwrap_or(false);
        let timeout = input.timeout_seconds;
        let result = self
            .idempotent(actor, "HOSTING_DEPLOY", key.as_deref(), async {
                let site = self.find_site(actor, &input.site).await?;
                let env_name = input.environment.clone().unwrap_or_else(|| "production".into());
                let env = self.find_environment(&site, &env_name).await?;
                if upload.is_none() && site.source_kind == SourceKind::Upload.as_str() {
                    return Err(ServiceError::invalid(
                        "site",
                        format!("site '{}' deploys from uploads; run `berth deploy DIR --site {}` (or POST a tar.gz to /api/sites/{}/upload)", site.name, site.name, site.name),
                    ));
                }
                if upload.is_some() && site.source_kind != SourceKind::Upload.as_str() {
                    return Err(ServiceError::invalid(
                        "site",
                        format!("site '{}' deploys from {}; uploads go to sites created without a repo", site.name, site.source.as_deref().unwrap_or("git")),
                    ));
                }
                if (input.branch.is_some() || input.commit.is_some()) && site.source_kind != SourceKind::Git.as_str() {
                    return Err(ServiceError::invalid("branch", "branch and commit apply to sites that deploy from git"));
                }
                if let (Some(branch), Some(repo)) = (&input.branch, &site.source) {
                    let auth = self.platform.git_auth_for(&actor.org_id, repo).await;
                    crate::source::check_remote_with(repo, Some(branch), self.platform.config.timeouts.fetch(), auth.as_ref())
                        .await
                        .map_err(|e| ServiceError::invalid("branch", e.to_string()))?;
                }
                let branch = input.branch.clone().or_else(|| env.branch.clone()).or_else(|| site.branch.clone());
                let d = self
                    .prepare_deployment(actor, &site, &env, branch, input.commit.clone(), upload, input.overrides.as_ref())
                    .await?;
                self.enqueue_deploy(&site, &d).await?;
                self.platform.jobs.notify();
                let info = self.deployment_info(&d).await?;
                Ok(DeployOutput { url: info.url.clone(), deployment: info })
            })
            .await;
        self.audit(actor, "HOSTING_DEPLOY", args, &result).await;
        let mut out = result?;
        if wait && !out.deployment.status.is_final() {
            out.deployment = self.wait_for(actor, &out.deployment.id, timeout, on_progress).await?;
        }
        Ok(out)
    }

    /// Deploys an uploaded tar.gz to a site, creating the site (deploying from uploads)
    /// when it does not exist and `create` is set. The archive is checked and extracted
    /// before anything is written, so a hostile or broken archive changes nothing.
    pub async fn deploy_upload(
        &self,
        actor: &Actor,
        upload: UploadRequest,
        on_progress: &mut (dyn FnMut(&DeploymentInfo) + Send),
    ) -> ServiceResult<DeployOutput> {
        self.authorize(
            actor,
            Action::Deploy,
            Target::Environment(&upload.site, Some("production")),
        )
        .await?;
        let UploadRequest {
            site,
            archive,
            create,
            wait,
            timeout_seconds,
            overrides,
        } = upload;
        let site = site.as_str();
        validate_site_name(site)?;
        let exists = self.platform.store.get_site(&actor.org_id, site).await?.is_some();
        if !exists && !create {
            return Err(self
                .find_site(actor, site)
                .await
                .err()
                .unwrap_or_else(|| ServiceError::not_found("no such site")));
        }
        let dir = self.extract_upload(archive).await?;
        let upload = Some(UploadedSource { dir: dir.clone() });
        let result = if exists {
            let input = DeployInput {
                site: site.to_string(),
                wait: Some(wait),
                timeout_seconds,
                overrides,
                ..Default::default()
            };
            self.deploy(actor, input, upload, on_progress).await
        } else {
            // A new site keeps the settings it was first deployed with.
            let set = overrides.unwrap_or_default();
            let input = CreateSiteInput {
                name: site.to_string(),
                deploy: Some(true),
                build_pack: set.build_pack.flatten(),
                install_command: set.install_command.flatten(),
                build_command: set.build_command.flatten(),
                start_command: set.start_command.flatten(),
                output_dir: set.output_dir.flatten(),
                root_dir: set.root_dir.flatten(),
                port: set.port.flatten(),
                health_check_path: set.health_check_path.flatten(),
                ..Default::default()
            };
            let input = CreateSiteInput {
                wait: Some(wait),
                timeout_seconds,
                ..input
            };
            match self.create_site(actor, input, upload, on_progress).await {
                Ok(CreateSiteOutput {
                    deployment: Some(d),
                    url,
                    ..
                }) => Ok(DeployOutput { deployment: d, url }),
                Ok(_) => Err(ServiceError::Internal(anyhow::anyhow!(
                    "an upload created a site without a deployment"
                ))),
                Err(e) => Err(e),
            }
        };
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        result
    }

    /// Unpacks an uploaded tar.gz (bounded, no links out of the tree) into a fresh uploads
    /// folder; a refused archive leaves nothing behind.
    async fn extract_upload(&self, archive: bytes::Bytes) -> ServiceResult<std::path::PathBuf> {
        let dir = self.platform.config.uploads_dir().join(new_id("upl"));
        let target = dir.clone();
        let extracted = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&target).map_err(berth_build::archive::ArchiveError::from)?;
            berth_build::archive::extract_tar_gz(&archive[..], &target, &berth_build::archive::ArchiveLimits::default())
        })
        .await
        .map_err(anyhow::Error::from)?;
        if let Err(err) = extracted {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            let message = format!("the upload was refused: {err}");
            return Err(match err {
                berth_build::archive::ArchiveError::TooLarge { .. }
                | berth_build::archive::ArchiveError::TooManyEntries { .. }
                | berth_build::archive::ArchiveError::CompressionBomb { .. } => ServiceError::TooLarge { message },
                berth_build::archive::ArchiveError::Io(_) => ServiceError::Internal(anyhow::anyhow!(message)),
                _ => ServiceError::invalid("archive", message),
            });
        }
        Ok(dir)
    }

    /// A site created from an uploaded archive, with the settings of `input` (the
    /// dashboard's create form): one transaction with its first deployment, so a refused
    /// archive or a bad setting leaves no site behind.
    pub async fn create_site_from_upload(
        &self,
        actor: &Actor,
        input: CreateSiteInput,
        archive: bytes::Bytes,
        on_progress: &mut (dyn FnMut(&DeploymentInfo) + Send),
    ) -> ServiceResult<CreateSiteOutput> {
        self.authorize(actor, Action::CreateSite, Target::NewSite(&input.name))
            .await?;
        validate_site_name(&input.name)?;
        let dir = self.extract_upload(archive).await?;
        let input = CreateSiteInput {
            repo: None,
            deploy: Some(true),
            ..input
        };
        let result = self
            .create_site(actor, input, Some(UploadedSource { dir: dir.clone() }), on_progress)
            .await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        result
    }

    /// Prepares a deployment of an environment for the store to queue: its row (status
    /// `queued`) and, for an upload, its files moved into place.
    #[expect(clippy::too_many_arguments, reason = "the parts of a deploy request, each plain")]
    async fn prepare_deployment(
        &self,
        actor: &Actor,
        site: &SiteRow,
        env: &EnvironmentRow,
        branch: Option<String>,
        commit: Option<String>,
        upload: Option<UploadedSource>,
        overrides: Option<&BuildSettingsChange>,
    ) -> ServiceResult<DeploymentRow> {
        let (build_settings, overrides) = Self::deployment_settings(site, overrides)?;
        let d = DeploymentRow {
            id: new_id("dpl"),
            org_id: actor.org_id.clone(),
            site_id: site.id.clone(),
            environment_id: env.id.clone(),
            status: DeploymentStatus::Queued.as_str().into(),
            source_kind: site.source_kind.clone(),
            source: site.source.clone(),
            git_ref: branch,
            commit_sha: commit,
            build_plan: None,
            error: None,
            created_by: Some(actor.key_name.clone()),
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            build_settings: Some(build_settings),
            overrides,
        };
        if let Some(upload) = upload {
            let dest = app_dir(&self.platform, &d.id);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(anyhow::Error::from)?;
            }
            tokio::fs::rename(&upload.dir, &dest)
                .await
                .map_err(anyhow::Error::from)?;
        }
        Ok(d)
    }

    /// What the store queues for a prepared deployment: the row and its build job; a
    /// deploy to a target that runs apps on its own server needs this replica to be the
    /// only live one on Postgres (on SQLite the data-dir lock keeps one server on the
    /// database, and a restored snapshot's heartbeats name no live server).
    fn new_deploy<'a>(&'a self, site: &SiteRow, d: &'a DeploymentRow) -> ServiceResult<store::NewDeploy<'a>> {
        let payload = serde_json::to_value(DeployJob {
            deployment_id: d.id.clone(),
        })
        .map_err(anyhow::Error::from)?;
        let sole_replica = (crate::runtime::target::find(&site.provider).is_some_and(|t| t.on_its_server)
            && self.platform.store.backend() == store::Backend::Postgres)
            .then(|| (self.platform.replica_id.as_str(), crate::replicas::live_since()));
        Ok(store::NewDeploy {
            deployment: d,
            job: store::NewJob {
                kind: DEPLOY_JOB,
                payload,
                max_attempts: DEPLOY_ATTEMPTS,
                idempotency_key: Some(format!("deploy:{}", d.id)),
                fair_key: Some(site.id.clone()),
            },
            sole_replica,
        })
    }

    /// Queues a prepared deployment; a refused one leaves no files behind.
    async fn enqueue_deploy(&self, site: &SiteRow, d: &DeploymentRow) -> ServiceResult<()> {
        let queued = match self.new_deploy(site, d) {
            Ok(deploy) => self.platform.store.enqueue_deploy(&deploy).await,
            Err(e) => {
                self.discard_upload(d).await;
                return Err(e);
            }
        };
        match queued {
            Ok(store::DeployQueued::Queued) => Ok(()),
            Ok(store::DeployQueued::OtherReplicasLive(others)) => {
                self.discard_upload(d).await;
                Err(ServiceError::conflict(crate::replicas::local_target_refusal_message(
                    others,
                )))
            }
            Err(e) => {
                self.discard_upload(d).await;
                Err(e.into())
            }
        }
    }

    /// Removes the files an upload placed for a deployment that was not queued.
    async fn discard_upload(&self, d: &DeploymentRow) {
        if d.source_kind == SourceKind::Upload.as_str() {
            let _ = tokio::fs::remove_dir_all(app_dir(&self.platform, &d.id)).await;
        }
    }

    /// `HOSTING_LIST_DEPLOYMENTS`.
    pub async fn list_deployments(&self, actor: &Actor, input: &ListDeploymentsInput) -> ServiceResult<DeploymentList> {
        self.authorize(actor, Action::ReadSites, Target::Site(&input.site))
            .await?;
        let site = self.find_site(actor, &input.site).await?;
        let env_id = match &input.environment {
            Some(name) => Some(self.find_environment(&site, name).await?.id),
            None => None,
        };
        let limit = input.limit.unwrap_or(20).clamp(1, 100) as usize;
        // The cursor is the last deployment of the previous page: "<created_at ms>.<id>".
        let before = match input.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.split_once('.')
                    .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
                    .filter(|(_, id)| id.starts_with("dpl_") && id.len() <= 64)
                    .ok_or_else(|| {
                        ServiceError::invalid("cursor", "not a cursor of this list; pass next_cursor as it was given")
                    })?,
            ),
        };
        let mut rows = self
            .platform
            .store
            .list_deployments_before(&site.id, env_id.as_deref(), before, limit as i64 + 1)
            .await?;
        let next_cursor = cut_page(&mut rows, limit, |d| format!("{}.{}", d.created_at, d.id));
        let env_ids: Vec<&str> = rows.iter().map(|d| d.environment_id.as_str()).collect();
        let envs = self.platform.store.environments_by_ids(&env_ids).await?;
        let deployments = rows
            .iter()
            .map(|d| {
                let env = envs.iter().find(|e| e.id == d.environment_id);
                self.deployment_info_named(d, Some(&site.name), env.map(|e| e.name.as_str()))
            })
            .collect();
        Ok(DeploymentList {
            deployments,
            kept_per_environment: self.platform.config.keep_deployments,
            next_cursor,
        })
    }

    /// `HOSTING_GET_DEPLOYMENT`.
    pub async fn get_deployment(&self, actor: &Actor, input: &DeploymentRef) -> ServiceResult<DeploymentInfo> {
        self.authorize(actor, Action::ReadSites, Target::Deployment(&input.deployment_id))
            .await?;
        let d = self.find_deployment(actor, &input.deployment_id).await?;
        self.until_routed_here(&d).await;
        // Its names, its traffic and (failed) its last lines are read together.
        let failure_lines = async {
            match d.status() {
                DeploymentStatus::Failed => self.failure_lines(&d.id).await.map(Some),
                _ => Ok(None),
            }
        };
        let (mut info, traffic, last_log_lines) =
            tokio::try_join!(self.deployment_info(&d), self.deployment_comparison(&d), failure_lines)?;
        info.traffic = traffic;
        info.last_log_lines = last_log_lines;
        Ok(info)
    }

    /// `HOSTING_GET_DEPLOYMENT_LOGS`: a page of lines after a cursor.
    pub async fn get_deployment_logs(&self, actor: &Actor, input: &LogsInput) -> ServiceResult<LogPage> {
        self.authorize(actor, Action::ReadLogs, Target::Deployment(&input.deployment_id))
            .await?;
        let d = self.find_deployment(actor, &input.deployment_id).await?;
        let kind = match input.kind.as_deref() {
            None | Some("all") => None,
            Some(k @ ("build" | "runtime")) => Some(k),
            Some(other) => {
                return Err(ServiceError::invalid(
                    "kind",
                    format!("unknown log kind '{other}'; use build, runtime or all"),
                ));
            }
        };
        let limit = clamp_lines(input.limit, DEFAULT_LOG_LINES).max(1);
        let after = input.cursor.unwrap_or(0).max(0);
        let mut rows = self.platform.store.read_logs(&d.id, kind, after, limit + 1).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = rows.last().map_or(after, |r| r.id);
        let lines = rows
            .into_iter()
            .map(|r| LogLine {
                cursor: r.id,
                kind: r.kind,
                stream: r.stream,
                time: rfc3339(r.ts),
                line: r.line,
            })
            .collect();
        Ok(LogPage {
            lines,
            next_cursor,
            has_more,
            status: d.status(),
        })
    }

    /// A deployment's events after the cursor `after`, oldest first (at most a batch),
    /// waiting up to `within` for the first; written by this process or another one on
    /// the same database.
    pub async fn deployment_events(
        &self,
        actor: &Actor,
        deployment_id: &str,
        after: i64,
        within: Duration,
    ) -> ServiceResult<Vec<DeploymentEventInfo>> {
        self.authorize(actor, Action::ReadSites, Target::Deployment(deployment_id))
            .await?;
        let d = self.find_deployment(actor, deployment_id).await?;
        let events = self.platform.events.next(&d.id, after.max(0), within).await?;
        Ok(events
            .into_iter()
            .map(|e| DeploymentEventInfo {
                cursor: e.id,
                kind: e.kind,
                time: rfc3339(e.created_at),
                data: serde_json::from_str(&e.data).unwrap_or_default(),
            })
            .collect())
    }

    /// Waits until a deployment reaches a final status or the timeout passes, calling
    /// `on_progress` at each status change. A failed deployment comes back with its error
    /// and last log lines. Follows the deployment's events by cursor, so a change made by
    /// another process on the same database wakes it too.
    pub async fn wait_for(
        &self,
        actor: &Actor,
        deployment_id: &str,
        timeout_seconds: Option<u64>,
        on_progress: &mut (dyn FnMut(&DeploymentInfo) + Send),
    ) -> ServiceResult<DeploymentInfo> {
        let timeout = Duration::from_secs(timeout_seconds.unwrap_or(DEFAULT_WAIT).clamp(1, MAX_WAIT));
        let deadline = Instant::now() + timeout;
        // From the newest event on: what happens after this is seen, what happened
        // before is in the first read of the deployment.
        let mut cursor = self.platform.events.cursor().await?;
        let mut last_status = None;
        let mut last_sent: Option<Instant> = None;
        loop {
            let d = self.find_deployment(actor, deployment_id).await?;
            let mut info = self.deployment_info(&d).await?;
            // A long build or start is reported as it goes, not only when its status
            // changes: the newest log line, at least every PROGRESS_EVERY.
            let due = last_sent.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
            if last_status != Some(info.status) || (due && !info.status.is_final()) {
                last_status = Some(info.status);
                if !info.status.is_final() {
                    info.progress_line = self.newest_log_line(&d.id).await?;
                }
                on_progress(&info);
                info.progress_line = None;
                last_sent = Some(Instant::now());
            }
            if info.status.is_final() {
                self.until_routed_here(&d).await;
                if info.status == DeploymentStatus::Failed {
                    info.last_log_lines = Some(self.failure_lines(&d.id).await?);
                }
                return Ok(info);
            }
            let now = Instant::now();
            if now >= deadline {
                info.wait_timed_out = Some(true);
                return Ok(info);
            }
            // An event about it wakes this early; otherwise progress is due again then.
            let nap = (deadline - now).min(PROGRESS_EVERY);
            let seen = self.platform.events.next(&d.id, cursor, nap).await?;
            if let Some(last) = seen.last() {
                cursor = last.id;
            }
        }
    }

    // ------------------------------------------------------------ helpers

    /// The site a listing is filtered by, if any.
    async fn find_optional_site(&self, actor: &Actor, name: Option<&str>) -> ServiceResult<Option<SiteRow>> {
        match name {
            Some(name) => Ok(Some(self.find_site(actor, name).await?)),
            None => Ok(None),
        }
    }

    async fn find_site(&self, actor: &Actor, name: &str) -> ServiceResult<SiteRow> {
        let store = &self.platform.store;
        if let Some(site) = store.get_site(&actor.org_id, name).await?
            && site.status == "active"
            && actor.may_see_site(name)
        {
            return Ok(site);
        }
        if actor.sites.is_some() {
            return Err(ServiceError::not_found(format!(
                "no site '{}' for this key; it reaches: {}",
                name.chars().take(80).collect::<String>(),
                actor.sites.as_deref().unwrap_or_default().join(", ")
            )));
        }
        // A few names, never the whole org's list: an error stays small at any size.
        const SHOWN: usize = 10;
        let names: Vec<String> = store
            .list_sites_page(&actor.org_id, "", "", SHOWN as i64)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        let total = store.count_sites(&actor.org_id, "").await? as usize;
        let shown = name.chars().take(80).collect::<String>();
        Err(ServiceError::not_found(if names.is_empty() {
            format!("no site '{shown}'; this org has no sites yet: create one with HOSTING_CREATE_SITE")
        } else if total > names.len() {
            format!(
                "no site '{shown}'; sites: {} and {} more (HOSTING_LIST_SITES with name_contains finds one)",
                names.join(", "),
                total - names.len()
            )
        } else {
            format!("no site '{shown}'; sites: {}", names.join(", "))
        }))
    }

    async fn find_environment(&self, site: &SiteRow, name: &str) -> ServiceResult<EnvironmentRow> {
        let store = &self.platform.store;
        if let Some(env) = store.get_environment(&site.id, name).await? {
            return Ok(env);
        }
        let names: Vec<String> = store
            .list_environments(&site.id)
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect();
        Err(ServiceError::not_found(format!(
            "site '{}' has no environment '{}'; environments: {}",
            site.name,
            name.chars().take(80).collect::<String>(),
            names.join(", ")
        )))
    }

    /// A deployment this process is activating reads `live` from its commit on, a moment
    /// before its route is published; the activation holds `reconcile_lock` until then, so
    /// a reader that waits for the lock is told "live" only once this edge serves it (a
    /// client polling for `live` then fetches its URL at once).
    async fn until_routed_here(&self, d: &DeploymentRow) {
        if d.status() == DeploymentStatus::Live && self.platform.is_in_progress(&d.id) {
            drop(self.platform.reconcile_lock.lock().await);
        }
    }

    async fn find_deployment(&self, actor: &Actor, id: &str) -> ServiceResult<DeploymentRow> {
        self.platform
            .store
            .get_deployment(&actor.org_id, id)
            .await?
            .ok_or_else(|| {
                ServiceError::not_found(format!(
                    "no deployment '{}'; list them with HOSTING_LIST_DEPLOYMENTS {{\"site\": …}}",
                    id.chars().take(80).collect::<String>()
                ))
            })
    }

    async fn deployment_info(&self, d: &DeploymentRow) -> ServiceResult<DeploymentInfo> {
        let (site, env) = self
            .platform
            .store
            .deployment_names(&d.org_id, &d.id)
            .await?
            .unwrap_or_default();
        Ok(self.deployment_info_named(d, site.as_deref(), env.as_deref()))
    }

    /// [`Self::deployment_info`] with its site's and environment's names already read (a
    /// page of deployments reads them once, not per row).
    fn deployment_info_named(&self, d: &DeploymentRow, site: Option<&str>, env: Option<&str>) -> DeploymentInfo {
        let env_name = env.unwrap_or("production").to_string();
        let url = site.map(|s| self.platform.url_for(s, &env_name)).unwrap_or_default();
        let build_pack = d
            .build_plan
            .as_deref()
            .and_then(|p| serde_json::from_str::<BuildPlan>(p).ok())
            .map(|p| format!("{:?}", p.pack).to_lowercase());
        DeploymentInfo {
            id: d.id.clone(),
            status: d.status(),
            url,
            environment: env_name,
            source: d.source_kind.clone(),
            branch: d.git_ref.clone(),
            commit: d.commit_sha.clone(),
            build_pack,
            error: d.error.clone(),
            created_at: rfc3339(d.created_at),
            finished_at: d.finished_at.map(rfc3339),
            created_by: d.created_by.clone(),
            build_settings: d.build_settings.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            overrides: d.overrides.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            last_log_lines: None,
            traffic: None,
            wait_timed_out: None,
            progress_line: None,
        }
    }

    /// The newest line of a deployment's build or runtime log, cut to one short line.
    async fn newest_log_line(&self, deployment_id: &str) -> ServiceResult<Option<String>> {
        let store = &self.platform.store;
        let build = store.tail_logs(deployment_id, "build", 1).await?;
        let runtime = store.tail_logs(deployment_id, "runtime", 1).await?;
        let newest = build.into_iter().chain(runtime).max_by_key(|r| r.id);
        Ok(newest.map(|r| {
            let line = r.line.split(['\r', '\n']).next().unwrap_or_default().trim();
            crate::runtime::health::cut(line, PROGRESS_LINE_CHARS)
        }))
    }

    async fn failure_lines(&self, deployment_id: &str) -> ServiceResult<Vec<String>> {
        self.platform.logs.flush().await;
        let store = &self.platform.store;
        let mut lines = lines_of(store.tail_logs(deployment_id, "build", 30).await?);
        let runtime = lines_of(store.tail_logs(deployment_id, "runtime", 20).await?);
        if !runtime.is_empty() {
            lines.push("--- runtime ---".into());
            lines.extend(runtime);
        }
        Ok(lines)
    }

    async fn environment_info(&self, site: &SiteRow, env: &EnvironmentRow) -> ServiceResult<EnvironmentInfo> {
        Ok(EnvironmentInfo {
            name: env.name.clone(),
            url: self.platform.url_for(&site.name, &env.name),
            deployment_id: env.deployment_id.clone(),
            status: self.environment_status(site, env).await?,
            branch: env.branch.clone(),
        })
    }

    /// Environment infos of one site, the deployments they serve read in one query.
    async fn environment_infos(&self, site: &SiteRow, envs: &[EnvironmentRow]) -> ServiceResult<Vec<EnvironmentInfo>> {
        let ids: Vec<&str> = envs.iter().filter_map(|e| e.deployment_id.as_deref()).collect();
        let serving = self.platform.store.deployments_by_ids(&ids).await?;
        Ok(self.environment_infos_of(site, envs, &serving))
    }

    /// [`Self::environment_infos`] with the deployments the environments serve at hand.
    fn environment_infos_of(
        &self,
        site: &SiteRow,
        envs: &[EnvironmentRow],
        serving: &[DeploymentRow],
    ) -> Vec<EnvironmentInfo> {
        envs.iter()
            .map(|env| EnvironmentInfo {
                name: env.name.clone(),
                url: self.platform.url_for(&site.name, &env.name),
                deployment_id: env.deployment_id.clone(),
                status: self.serving_status(site, env, serving),
                branch: env.branch.clone(),
            })
            .collect()
    }

    async fn environment_status(&self, site: &SiteRow, env: &EnvironmentRow) -> ServiceResult<String> {
        let Some(dep_id) = &env.deployment_id else {
            return Ok("none".into());
        };
        let serving = self.platform.store.get_deployment_any_org(dep_id).await?;
        Ok(self.serving_status(site, env, serving.as_slice()))
    }

    /// What an environment serves (live, starting, sleeping, crashed or none), its
    /// deployment looked up among `deployments`.
    fn serving_status(&self, site: &SiteRow, env: &EnvironmentRow, deployments: &[DeploymentRow]) -> String {
        let Some(dep_id) = &env.deployment_id else {
            return "none".into();
        };
        let Some(d) = deployments.iter().find(|d| &d.id == dep_id) else {
            return "none".into();
        };
        let is_process = d
            .build_plan
            .as_deref()
            .and_then(|p| serde_json::from_str::<BuildPlan>(p).ok())
            .is_some_and(|p| matches!(p.serve, berth_build::detect::ServePlan::Process { .. }));
        // A target that runs deployments elsewhere released this one only once it was
        // rolled out; its instances are not on the shared lifecycle.
        let elsewhere = self
            .platform
            .target(&site.provider)
            .is_ok_and(|t| t.provider().is_none());
        if !is_process || elsewhere {
            return "live".into();
        }
        match self.platform.overall_state(&site.provider, dep_id) {
            Some(InstanceState::Healthy) => "live",
            Some(InstanceState::Crashed { .. }) => "crashed",
            Some(InstanceState::Paused) => "sleeping",
            Some(InstanceState::Starting | InstanceState::Restarting { .. }) | None => "starting",
        }
        .into()
    }

    /// Summaries of a page of sites in four queries, whatever the page's size: the newest
    /// deployment of each, each production environment, the deployments those serve and
    /// the environments the newest deployments went to (a query per site made a page of
    /// 50 cost hundreds of queries).
    async fn summarize_all(&self, sites: &[SiteRow]) -> ServiceResult<Vec<SiteSummary>> {
        let store = &self.platform.store;
        let site_ids: Vec<&str> = sites.iter().map(|s| s.id.as_str()).collect();
        let (latest, production) = tokio::try_join!(
            store.latest_deployments(&site_ids),
            store.environments_named(&site_ids, "production"),
        )?;
        let serving_ids: Vec<&str> = production.iter().filter_map(|e| e.deployment_id.as_deref()).collect();
        let env_ids: Vec<&str> = latest.iter().map(|d| d.environment_id.as_str()).collect();
        let (serving, envs) = tokio::try_join!(
            store.deployments_by_ids(&serving_ids),
            store.environments_by_ids(&env_ids),
        )?;
        let latest: HashMap<&str, &DeploymentRow> = latest.iter().map(|d| (d.site_id.as_str(), d)).collect();
        let production: HashMap<&str, &EnvironmentRow> = production.iter().map(|e| (e.site_id.as_str(), e)).collect();
        let env_names: HashMap<&str, &str> = envs.iter().map(|e| (e.id.as_str(), e.name.as_str())).collect();
        Ok(sites
            .iter()
            .map(|site| {
                self.summary_of(
                    site,
                    latest.get(site.id.as_str()).copied(),
                    production.get(site.id.as_str()).copied(),
                    &serving,
                    &env_names,
                )
            })
            .collect())
    }

    /// A site's summary from its newest deployment, its production environment, the
    /// deployments environments serve and environment names by id.
    fn summary_of(
        &self,
        site: &SiteRow,
        latest: Option<&DeploymentRow>,
        production: Option<&EnvironmentRow>,
        serving: &[DeploymentRow],
        env_names: &HashMap<&str, &str>,
    ) -> SiteSummary {
        let serving = match production {
            Some(env) => self.serving_status(site, env, serving),
            None => "none".into(),
        };
        let status = match (latest, serving.as_str()) {
            (Some(d), _) if !d.status().is_final() => "building".to_string(),
            (Some(d), "none") if d.status() == DeploymentStatus::Failed => "failed".to_string(),
            (None, _) => "new".to_string(),
            (_, "none") => "new".to_string(),
            (_, s) => s.to_string(),
        };
        let latest_deployment = latest.map(|d| {
            let env = env_names.get(d.environment_id.as_str()).copied();
            self.deployment_info_named(d, Some(&site.name), env)
        });
        SiteSummary {
            name: site.name.clone(),
            status,
            url: self.platform.url_for(&site.name, "production"),
            source: self.shown_source(site),
            latest_deployment,
            created_at: rfc3339(site.created_at),
        }
    }

    /// Runs a mutating call at most once per idempotency key: a repeat gets the first
    /// call's stored result. A failed first call releases the key.
    async fn idempotent<T, F>(&self, actor: &Actor, action: &str, key: Option<&str>, work: F) -> ServiceResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = ServiceResult<T>>,
    {
        let Some(key) = key else { return work.await };
        if key.is_empty() || key.len() > 200 {
            return Err(ServiceError::invalid(
                "idempotency_key",
                "idempotency_key must be 1-200 characters",
            ));
        }
        let store = &self.platform.store;
        if !store.claim_idempotency_key(&actor.org_id, key, action).await? {
            let Some((stored_action, response)) = store.get_idempotency_key(&actor.org_id, key).await? else {
                return Err(ServiceError::conflict(
                    "idempotency key changed while in use; retry the call",
                ));
            };
            if stored_action != action {
                return Err(ServiceError::conflict(format!(
                    "idempotency_key '{key}' was already used for {stored_action}; use a new key for a different call"
                )));
            }
            return match response {
                Some(json) => Ok(serde_json::from_str(&json).map_err(anyhow::Error::from)?),
                None => Err(ServiceError::conflict(format!(
                    "a call with idempotency_key '{key}' is still running; retry in a moment to get its result"
                ))),
            };
        }
        match work.await {
            Ok(value) => {
                let json = serde_json::to_string(&value).map_err(anyhow::Error::from)?;
                store.finish_idempotency_key(&actor.org_id, key, &json).await?;
                Ok(value)
            }
            Err(err) => {
                store.release_idempotency_key(&actor.org_id, key).await?;
                Err(err)
            }
        }
    }

    /// Finishes work a crash interrupted: sites left half-deleted.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let rows = self.platform.store.list_sites_with_status("deleting").await?;
        for site in rows {
            tracing::info!(site.name = %site.name, "finishing an interrupted site deletion");
            self.remove_site(&site).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        self.look_at_orphan_resource_disks().await?;
        Ok(())
    }
}

/// What a caller should do next about a deployment, in one sentence.
pub fn next_steps_for(d: &DeploymentInfo, url: &str) -> String {
    match d.status {
        DeploymentStatus::Live => format!("live at {url}"),
        DeploymentStatus::Failed => format!(
            "the deployment failed: {}; read HOSTING_GET_DEPLOYMENT_LOGS {{\"deployment_id\": \"{}\"}}, fix the app (or, where the error names a setting, change it with HOSTING_UPDATE_SITE) and HOSTING_DEPLOY again",
            d.error.as_deref().unwrap_or("see logs"),
            d.id
        ),
        _ => format!(
            "deployment {} is {}; follow it with HOSTING_GET_DEPLOYMENT {{\"deployment_id\": \"{}\"}} or pass wait=true",
            d.id,
            d.status.as_str(),
            d.id
        ),
    }
}

fn clamp_lines(asked: Option<u32>, default: u32) -> i64 {
    i64::from(asked.unwrap_or(default).min(MAX_LOG_LINES))
}

fn lines_of(rows: Vec<store::LogRow>) -> Vec<String> {
    rows.into_iter().map(|r| r.line).collect()
}

/// Items per page of a list (sites, environments, repositories, audit entries) when not
/// asked: one page stays small however long the list.
pub const DEFAULT_PAGE: u32 = 50;
/// The most items one page holds; a larger `limit` is lowered to it.
pub const MAX_PAGE: u32 = 200;

/// A page's size from a `limit` argument: [`DEFAULT_PAGE`] when absent, at most
/// [`MAX_PAGE`]; 0 is refused.
fn page_limit(limit: Option<u32>) -> ServiceResult<u32> {
    match limit {
        Some(0) => Err(ServiceError::invalid(
            "limit",
            format!("limit must be at least 1 (default {DEFAULT_PAGE}, at most {MAX_PAGE})"),
        )),
        Some(n) => Ok(n.min(MAX_PAGE)),
        None => Ok(DEFAULT_PAGE),
    }
}

/// The error for a cursor this list did not give.
fn bad_cursor() -> ServiceError {
    ServiceError::invalid(
        "cursor",
        "not a cursor of this list; pass the next_cursor of the previous page as it was given, or omit it for the first page",
    )
}

/// Build settings from create-site arguments, validated.
fn build_settings_of(input: &CreateSiteInput) -> ServiceResult<BuildSettings> {
    let settings = BuildSettings {
        build_pack: input.build_pack.clone(),
        install_command: input.install_command.clone(),
        build_command: input.build_command.clone(),
        start_command: input.start_command.clone(),
        port: input.port,
        health_check_path: input.health_check_path.clone(),
        output_dir: input.output_dir.clone(),
        root_dir: input.root_dir.clone(),
    };
    settings::validate_build_settings(&settings)?;
    Ok(settings)
}

/// Refuses a site name another org already uses: the name is the hostname
/// (`<site>.<base>`, `<env>--<site>.<base>`), and hostnames are global. Site and
/// environment names never contain `--` nor start or end with `-`, so distinct
/// (site, environment) pairs always give distinct hostnames.
async fn ensure_hostname_free(store: &store::Store, actor: &Actor, name: &str) -> ServiceResult<()> {
    match store.site_name_owner(name).await? {
        Some(org) if org != actor.org_id => Err(hostname_taken(actor, name)),
        _ => Ok(()),
    }
}

/// The error for a site name another org's site has.
fn hostname_taken(actor: &Actor, name: &str) -> ServiceError {
    ServiceError::conflict(format!(
        "the site name '{name}' is taken on this server (site names are hostnames, shared by every org); choose another, e.g. '{}-{name}'",
        actor.org_name
    ))
}

/// Env var names are shell identifiers; values are bounded.
fn validate_env_vars(vars: BTreeMap<String, String>) -> ServiceResult<BTreeMap<String, String>> {
    for (k, v) in &vars {
        validate_env_var(k, Some(v))?;
    }
    Ok(vars)
}

/// One env var name (and value, when set).
fn validate_env_var(k: &str, v: Option<&String>) -> ServiceResult<()> {
    {
        let ok = !k.is_empty()
            && k.len() <= 256
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ServiceError::invalid(
                "env_vars",
                format!(
                    "env var name '{}' is not valid; use letters, digits and '_', not starting with a digit",
                    k.chars().take(80).collect::<String>()
                ),
            ));
        }
        if k == "PORT" || k.starts_with("BERTH_") {
            return Err(ServiceError::invalid(
                "env_vars",
                format!("env var '{k}' is set by berth and cannot be overridden"),
            ));
        }
        // A NUL cannot cross exec (the value would be cut short or the start would fail);
        // other control characters (newlines in a PEM key) are legitimate values.
        if v.is_some_and(|v| v.contains('\0')) {
            return Err(ServiceError::invalid(
                "env_vars",
                format!("the value of '{k}' contains a NUL byte, which no process environment can hold; remove it"),
            ));
        }
        if v.is_some_and(|v| v.len() > MAX_ENV_VALUE) {
            return Err(ServiceError::invalid(
                "env_vars",
                format!("the value of '{k}' is over {MAX_ENV_VALUE} bytes"),
            ));
        }
    }
    Ok(())
}

impl Service {
    /// The provider a new site runs on: the one asked for (it must be registered), else
    /// the first registered target the org made its default (`HOSTING_SET_CONFIG
    /// {provider, config: {default: true}}`), else the first registered one.
    async fn site_provider(&self, actor: &Actor, asked: Option<&str>) -> ServiceResult<String> {
        if let Some(name) = asked {
            let name = name.trim();
            if crate::runtime::target::find(name).is_none() || self.platform.targets.get(name).is_none() {
                return Err(ServiceError::invalid(
                    "provider",
                    format!(
                        "unknown provider '{name}'; available: {}",
                        crate::runtime::target::names()
                    ),
                ));
            }
            return Ok(name.to_string());
        }
        for registration in crate::runtime::target::TARGETS {
            let Some(target) = self.platform.targets.get(registration.name) else {
                continue;
            };
            let settings = self.platform.provider_config(&actor.org_id, registration.name).await?;
            if target.is_org_default(&settings) {
                return Ok(registration.name.into());
            }
        }
        Ok(crate::runtime::target::TARGETS[0].name.into())
    }
}

impl Service {
    /// Removes what a deleted site's target kept of its builds (images). Best effort: a
    /// target that cannot be reached leaves them to its own clean-up.
    async fn forget_site_builds(&self, site: &SiteRow) {
        let removed = async {
            let target = self.platform.target(&site.provider).map_err(|e| e.to_string())?;
            let settings = self
                .platform
                .provider_config(&site.org_id, &site.provider)
                .await
                .map_err(|e| e.to_string())?;
            target.site_deleted(self.platform.site_ref(site, &settings)).await
        }
        .await;
        if let Err(err) = removed {
            tracing::warn!(site.name = %site.name, error = %err, "removing the site's builds failed");
        }
    }
}

/// Previews are environments made by pushes of other branches: only git sites get pushes.
pub(crate) fn previews_need_git(site: &str, kind: SourceKind) -> ServiceError {
    let from = if kind == SourceKind::Upload {
        "uploads"
    } else {
        "a server folder"
    };
    ServiceError::invalid(
        "previews",
        format!(
            "site '{site}' deploys from {from}; previews are made by pushes of other branches, so they apply to sites that deploy from git (create a preview by hand with HOSTING_CREATE_ENVIRONMENT)"
        ),
    )
}

/// A page by name: its size (`limit` or `default`, at most `max`) and the name it starts
/// after (`cursor`, checked).
fn name_page(limit: Option<u32>, cursor: Option<&str>, default: u32, max: u32) -> ServiceResult<(u32, &str)> {
    let after = cursor.unwrap_or("");
    if after.len() > 300 {
        return Err(ServiceError::invalid(
            "cursor",
            "too long; pass the next_cursor of the previous page as it was given",
        ));
    }
    Ok((limit.unwrap_or(default).clamp(1, max), after))
}

/// The page in `rows`, read with one row more than `limit` to tell whether another page
/// follows: cuts the extra row off and gives the next page's cursor (the last row's, made
/// by `cursor_of`), or `None` on the last page.
fn cut_page<T>(rows: &mut Vec<T>, limit: usize, cursor_of: impl FnOnce(&T) -> String) -> Option<String> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    more.then(|| rows.last().map(cursor_of)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_cut_at_its_limit_and_names_the_next_only_when_more_follow() {
        let mut rows = vec![1, 2, 3];
        assert_eq!(cut_page(&mut rows, 2, |r| r.to_string()), Some("2".into()));
        assert_eq!(rows, [1, 2]);
        let mut rows = vec![1, 2];
        assert_eq!(cut_page(&mut rows, 2, |r| r.to_string()), None);
        assert_eq!(rows, [1, 2]);
        let mut rows: Vec<i32> = vec![];
        assert_eq!(cut_page(&mut rows, 2, |r| r.to_string()), None);
    }

    #[test]
    fn env_var_names() {
        let ok: BTreeMap<String, String> = [("A_1".to_string(), "x".to_string())].into();
        assert!(validate_env_vars(ok).is_ok());
        for bad in ["1A", "A-B", "", "PORT", "BERTH_X", "A B"] {
            let vars: BTreeMap<String, String> = [(bad.to_string(), "x".to_string())].into();
            assert!(validate_env_vars(vars).is_err(), "{bad}");
        }
        let big: BTreeMap<String, String> = [("A".to_string(), "x".repeat(MAX_ENV_VALUE + 1))].into();
        assert!(validate_env_vars(big).is_err());
    }
}
