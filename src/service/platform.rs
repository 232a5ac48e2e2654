//! The shared state every part of a running server holds: configuration, store, queue,
//! runtime and edge, plus the few primitives that change deployment state (status
//! transitions with their events, activation) so those happen in exactly one place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_build::sandbox::Sandbox;
use berth_edge::Edge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::crypto::SecretBox;
use crate::jobs::JobQueue;
use crate::model::DeploymentStatus;
use crate::runtime::InstanceSpec;
use crate::runtime::target::{BuildKind, SiteRef};
use crate::runtime::{LogSink, Runtime, Target, Targets};
use crate::store::{self, DeploymentRow, EnvironmentRow, SiteRow, Store};
use berth_build::detect::{BuildPlan, ServePlan};

use super::config::ConfigMap;

/// What a reconcile pass saw about a serving deployment's health, handled beside the pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthChange {
    /// A `live` deployment's instances crash-loop.
    CrashLoop {
        /// Which deployment.
        deployment_id: String,
        /// The runtime's last word on it.
        message: String,
    },
    /// A `crashed` deployment its environment kept serves healthy again.
    Recovered {
        /// Which deployment.
        deployment_id: String,
    },
}

/// Everything a running server shares.
pub struct Platform {
    /// Settings.
    pub config: ServeConfig,
    /// The edge's bound port (for URLs).
    pub edge_port: u16,
    /// The edge's bound HTTPS port (for URLs of domains with a certificate).
    pub edge_tls_port: u16,
    /// Database.
    pub store: Store,
    /// Job queue.
    pub jobs: JobQueue,
    /// Runs build steps and apps.
    pub sandbox: Arc<Sandbox>,
    /// Host users, network namespaces and limits of build steps and apps.
    pub isolation: Arc<crate::runtime::isolation::Isolation>,
    /// Runs instances on the registered providers (the shared lifecycle of `targets`).
    pub runtime: Runtime,
    /// The registered targets of this installation.
    pub targets: Targets,
    /// Decides how many instances each environment runs.
    pub autoscaler: Arc<crate::autoscaler::Autoscaler>,
    /// Log writer.
    pub logs: LogSink,
    /// The edge proxy (its route table is swapped by the reconciler).
    pub edge: Arc<Edge>,
    /// Wakes the reconciler.
    pub reconcile_wake: Arc<Notify>,
    /// Serialises reconcile passes.
    pub reconcile_lock: tokio::sync::Mutex<()>,
    /// The event bus (the `events` table, read by cursor), for waiters and streams.
    pub events: crate::events::EventBus,
    /// Seals and opens env var values.
    pub secrets: SecretBox,
    /// The git server's state: hook grants, verified push tokens, listener address.
    pub git: super::git::GitState,
    /// Which server folders a site's `repo` may name.
    pub local_repos: crate::source::LocalRepoPolicy,
    /// Slots for webhook bodies being read before their signature is known.
    pub webhook_intake: tokio::sync::Semaphore,
    /// Failed authentications, for backoff (shared by the API, dashboard and git server).
    pub auth_throttle: Arc<crate::throttle::AuthThrottle>,
    /// Build slots (`--build-concurrency`), handed out fairly across sites and orgs.
    pub build_gate: crate::build_gate::BuildGate,
    /// Certificate ordering state (the ACME client, the loop's wake-up).
    pub certificates: super::certificates::CertState,
    /// The secret scoped API keys are found by.
    pub key_lookup: Arc<crate::auth::KeyLookup>,
    /// The control plane's public URL, once its listener is bound (invitation links).
    public_url: std::sync::OnceLock<String>,
    /// Health changes the last reconcile pass saw, for the reconciler loop to handle.
    health_changes: Mutex<Vec<HealthChange>>,
    in_progress: Mutex<HashMap<String, CancellationToken>>,
}

impl Platform {
    /// Assembles a platform.
    #[expect(clippy::too_many_arguments, reason = "assembled once at start-up")]
    pub fn new(
        config: ServeConfig,
        (edge_port, edge_tls_port): (u16, u16),
        store: Store,
        sandbox: Arc<Sandbox>,
        isolation: Arc<crate::runtime::isolation::Isolation>,
        targets: Targets,
        logs: LogSink,
        edge: Arc<Edge>,
        reconcile_wake: Arc<Notify>,
        secrets: SecretBox,
        local_repos: crate::source::LocalRepoPolicy,
        replica_id: &str,
    ) -> Self {
        let build_gate = crate::build_gate::BuildGate::new(config.build_concurrency);
        let key_lookup = Arc::new(crate::auth::KeyLookup::in_dir(&config.data_dir));
        Self {
            config,
            edge_port,
            edge_tls_port,
            jobs: JobQueue::new(store.clone(), replica_id),
            events: crate::events::EventBus::new(store.clone()),
            store,
            sandbox,
            isolation,
            runtime: targets.lifecycle().clone(),
            targets,
            autoscaler: Arc::default(),
            logs,
            edge,
            reconcile_wake,
            reconcile_lock: tokio::sync::Mutex::new(()),
            secrets,
            git: super::git::GitState::default(),
            local_repos,
            webhook_intake: tokio::sync::Semaphore::new(super::github::WEBHOOK_INTAKE_SLOTS),
            auth_throttle: Arc::default(),
            build_gate,
            certificates: super::certificates::CertState::default(),
            key_lookup,
            public_url: std::sync::OnceLock::new(),
            health_changes: Mutex::new(Vec::new()),
            in_progress: Mutex::new(HashMap::new()),
        }
    }

    /// The host uid `site`'s build steps and local instances run as; `None` when isolation
    /// is off on this server (not root).
    pub async fn site_uid(&self, site: &SiteRow) -> anyhow::Result<Option<u32>> {
        if self
            .isolation
            .limits(crate::runtime::isolation::SlotKind::App)
            .is_none()
        {
            return Ok(None);
        }
        let seq = store::sandbox::site_uid_seq(self.store.pool(), &site.id).await?;
        self.isolation.site_uid(seq).map_err(anyhow::Error::msg)
    }

    /// The target sites on `provider` run on.
    pub fn target(&self, provider: &str) -> anyhow::Result<Arc<dyn Target>> {
        self.targets.get(provider).ok_or_else(|| {
            anyhow::anyhow!(
                "provider '{provider}' is not registered in this berth (known: {})",
                crate::runtime::target::names()
            )
        })
    }

    /// The host an environment is served at (no port).
    pub fn host_for(&self, site: &str, environment: &str) -> String {
        crate::model::hostname(site, environment, &self.config.base_domain)
    }

    /// Records the control plane's public URL (`--public-url`, else the bound address).
    pub fn set_public_url(&self, url: String) {
        let _ = self.public_url.set(url);
    }

    /// The control plane's public URL; before the listener is bound, `--public-url` or
    /// the configured listen address.
    pub fn public_url(&self) -> String {
        match self.public_url.get() {
            Some(url) => url.clone(),
            None => match self
                .config
                .public_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
            {
                Some(url) => url.trim_end_matches('/').to_string(),
                None => format!("http://{}", self.config.listen),
            },
        }
    }

    /// The name berth greets mail relays with (SMTP `EHLO`): its public URL's host.
    pub fn hello_name(&self) -> String {
        reqwest::Url::parse(&self.public_url())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The URL an environment is served at.
    pub fn url_for(&self, site: &str, environment: &str) -> String {
        let host = self.host_for(site, environment);
        if self.certificates.base_https() {
            // The base domain's wildcard certificate covers every site's host.
            return match self.edge_tls_port {
                443 => format!("https://{host}"),
                port => format!("https://{host}:{port}"),
            };
        }
        if self.edge_port == 80 {
            format!("http://{host}")
        } else {
            format!("http://{host}:{}", self.edge_port)
        }
    }

    /// Appends a log line of a deployment.
    pub fn log(&self, deployment_id: &str, kind: &'static str, stream: &'static str, line: String) {
        self.logs.write(deployment_id, kind, stream, line);
    }

    /// Marks a deployment as being worked on; returns the token that cancels it.
    pub fn register_cancel(&self, deployment_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.in_progress
            .lock()
            .expect("lock")
            .insert(deployment_id.to_string(), token.clone());
        token
    }

    /// The deployment's work ended.
    pub fn unregister_cancel(&self, deployment_id: &str) {
        self.in_progress.lock().expect("lock").remove(deployment_id);
    }

    /// Whether a deployment is being built or started right now in this process.
    pub fn is_in_progress(&self, deployment_id: &str) -> bool {
        self.in_progress.lock().expect("lock").contains_key(deployment_id)
    }

    /// Cancels in-progress work on a deployment; true if there was some.
    pub fn cancel(&self, deployment_id: &str) -> bool {
        match self.in_progress.lock().expect("lock").get(deployment_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Moves a deployment along the state machine, recording the event with the change.
    pub async fn set_status(
        &self,
        d: &DeploymentRow,
        to: DeploymentStatus,
        error: Option<&str>,
    ) -> anyhow::Result<bool> {
        let mut tx = self.store.begin().await?;
        let moved = store::transition_deployment(&mut *tx, &d.id, to, error).await?;
        if moved {
            let data = serde_json::json!({ "site_id": d.site_id, "status": to.as_str(), "error": error });
            store::insert_event(
                &mut *tx,
                &d.org_id,
                &format!("deployment.{}", to.as_str()),
                &d.id,
                &data,
            )
            .await?;
        }
        tx.commit().await?;
        if moved {
            self.events.notify();
        }
        Ok(moved)
    }

    /// Makes a built deployment its environment's live one: one transaction moves it to
    /// `live`, points the environment at it and supersedes the previous one; then the
    /// route table is rebuilt before this returns, so a caller told "live" can fetch it.
    /// Returns false when a newer deployment of the environment was already live: this
    /// one is then `superseded` without ever serving. Its build log is in the store before
    /// its status moves, so a caller told "live" reads the whole log.
    pub async fn activate(&self, d: &DeploymentRow) -> anyhow::Result<bool> {
        self.logs.flush().await;
        let routes = self.reconcile_lock.lock().await;
        let mut tx = self.store.begin().await?;
        // Deploys of one environment can finish out of order: the newest one wins.
        if let Some(current) = store::newer_live_deployment(&mut *tx, &d.environment_id, d.created_at).await? {
            store::transition_deployment(&mut *tx, &d.id, DeploymentStatus::Superseded, None).await?;
            let data = serde_json::json!({ "site_id": d.site_id, "newer": current });
            store::insert_event(&mut *tx, &d.org_id, "deployment.superseded", &d.id, &data).await?;
            tx.commit().await?;
            self.events.notify();
            return Ok(false);
        }
        if !store::transition_deployment(&mut *tx, &d.id, DeploymentStatus::Live, None).await? {
            anyhow::bail!("deployment {} can no longer go live (cancelled?)", d.id);
        }
        let previous = store::get_environment_by_id(&mut *tx, &d.environment_id)
            .await?
            .and_then(|e| e.deployment_id);
        store::set_environment_deployment(&mut *tx, &d.environment_id, &d.id).await?;
        let superseded = store::refresh_liveness(&mut tx, &previous.into_iter().collect::<Vec<_>>()).await?;
        store::insert_event(
            &mut *tx,
            &d.org_id,
            "deployment.live",
            &d.id,
            &serde_json::json!({ "site_id": d.site_id, "superseded": superseded }),
        )
        .await?;
        insert_superseded_events(&mut tx, &d.org_id, &d.site_id, &superseded, &d.id).await?;
        tx.commit().await?;
        crate::reconciler::reconcile_holding_lock(self).await?;
        drop(routes);
        self.events.notify();
        Ok(true)
    }

    /// What to run for a deployment whose plan serves a process; `None` for static sites.
    /// The app gets the env vars of the environment the deployment was built for.
    pub async fn instance_spec(
        &self,
        d: &DeploymentRow,
        site: &SiteRow,
        plan: &BuildPlan,
    ) -> anyhow::Result<Option<InstanceSpec>> {
        let ServePlan::Process { command, port } = &plan.serve else {
            return Ok(None);
        };
        let deployment_id = d.id.as_str();
        let environment = store::get_environment_by_id(self.store.pool(), &d.environment_id)
            .await?
            .map(|e| e.name)
            .unwrap_or_default();
        let target = self.target(&site.provider)?;
        // A deployment built into something the target runs (an image) runs as the
        // target's; one built by steps runs as the site's own host uid.
        let built_here = target.build_for(plan) == BuildKind::SandboxSteps;
        Ok(Some(InstanceSpec {
            deployment_id: deployment_id.to_string(),
            provider: site.provider.clone(),
            org: site.org_id.clone(),
            environment,
            image: target.instance_image(&site.name, deployment_id, plan),
            provider_config: self.provider_config(&site.org_id, &site.provider).await?,
            site: site.name.clone(),
            app_dir: crate::pipeline::app_dir(self, deployment_id),
            command: command.clone(),
            port: *port,
            env: self.app_env(site, &d.environment_id, deployment_id).await?,
            health_check_path: plan.health_check_path.clone(),
            start_timeout: self.config.timeouts.start(),
            uid: if built_here { self.site_uid(site).await? } else { None },
            size: {
                let scaling = store::get_scaling(self.store.pool(), &d.environment_id).await?;
                crate::runtime::InstanceSize {
                    memory_mb: scaling.memory_mb.map(|m| m as u64),
                    cpus: scaling.cpu_millis.map(|m| m as f64 / 1000.0),
                }
            },
        }))
    }

    /// A deployment built for another environment made servable by `env`, for a
    /// promotion: a new deployment of `env` with the same code, build plan, files (copied)
    /// and whatever its target built (an image gets a second tag), built already, so
    /// nothing is rebuilt and its instances run with `env`'s variables. Stored
    /// `superseded` until pointed at.
    pub async fn copy_deployment_for(
        &self,
        site: &SiteRow,
        env: &EnvironmentRow,
        from: &DeploymentRow,
        created_by: Option<String>,
    ) -> anyhow::Result<DeploymentRow> {
        let plan: BuildPlan = serde_json::from_str(from.build_plan.as_deref().unwrap_or_default())
            .map_err(|_| anyhow::anyhow!("deployment {} has no build plan", from.id))?;
        let now = crate::util::now_ms();
        let copy = DeploymentRow {
            id: crate::util::new_id("dpl"),
            environment_id: env.id.clone(),
            status: DeploymentStatus::Superseded.as_str().to_string(),
            error: None,
            created_by,
            created_at: now,
            started_at: Some(now),
            finished_at: Some(now),
            ..from.clone()
        };
        let (source, to_dir) = (
            crate::pipeline::app_dir(self, &from.id),
            crate::pipeline::app_dir(self, &copy.id),
        );
        if !source.is_dir() {
            anyhow::bail!("the files of deployment {} are gone; deploy again", from.id);
        }
        let target = self.target(&site.provider)?;
        let settings = self.provider_config(&site.org_id, &site.provider).await?;
        let made = async {
            tokio::fs::create_dir_all(self.config.deployments_dir().join(&copy.id)).await?;
            // A copy, not hard links: `/app` is writable, and a shared inode would let
            // one environment's app rewrite another's code.
            crate::util::copy_tree(&source, &to_dir).await?;
            let reused = target
                .copy_build(self.site_ref(site, &settings), &plan, &from.id, &copy.id)
                .await
                .map_err(anyhow::Error::msg)?;
            store::insert_deployment(self.store.pool(), &copy).await?;
            anyhow::Ok(reused)
        }
        .await;
        let reused = match made {
            Ok(reused) => reused,
            Err(err) => {
                let _ = tokio::fs::remove_dir_all(self.config.deployments_dir().join(&copy.id)).await;
                return Err(err);
            }
        };
        let from_env = store::get_environment_by_id(self.store.pool(), &from.environment_id)
            .await?
            .map(|e| e.name)
            .unwrap_or_else(|| "another environment".into());
        self.log(
            &copy.id,
            "build",
            "system",
            format!(
                "promoted from {} (built for '{from_env}'): the same files{reused}, with the variables of '{}'; nothing rebuilt",
                from.id, env.name
            ),
        );
        Ok(copy)
    }

    /// Removes a promotion's copy that did not go live: its row, logs and files (its
    /// image tag goes with the site's image garbage collection). One an environment
    /// points at is kept.
    pub async fn forget_deployment(&self, id: &str) {
        match store::delete_deployment(self.store.pool(), id).await {
            Ok(true) => {
                self.runtime.stop(id).await;
                let _ = tokio::fs::remove_dir_all(self.config.deployments_dir().join(id)).await;
            }
            Ok(false) => {} // an environment serves it after all: it stays
            Err(err) => tracing::warn!(deployment.id = %id, error = %err, "removing a deployment failed"),
        }
    }

    /// Records a health change seen by a reconcile pass (at most one per deployment and
    /// kind until taken).
    pub fn note_health(&self, change: HealthChange) {
        let mut changes = self.health_changes.lock().expect("health changes lock");
        if !changes.contains(&change) {
            changes.push(change);
        }
    }

    /// The health changes noted since the last call.
    pub fn take_health_changes(&self) -> Vec<HealthChange> {
        std::mem::take(&mut *self.health_changes.lock().expect("health changes lock"))
    }

    /// A crash loop: the deployment becomes `crashed` (its error says why, with its last
    /// lines) and, unless the server runs with `--on-crash-loop stay-down`, its environment
    /// goes back to the deployment before it. A recovery makes it `live` again. Each is
    /// recorded as an event and in the runtime log.
    pub async fn handle_health_change(self: &Arc<Self>, change: HealthChange) {
        let result = match &change {
            HealthChange::CrashLoop { deployment_id, message } => self.crash_loop(deployment_id, message).await,
            HealthChange::Recovered { deployment_id } => self.recovered(deployment_id).await,
        };
        if let Err(err) = result {
            tracing::warn!(change = ?change, error = %format!("{err:#}"), "handling a health change failed");
        }
    }

    async fn crash_loop(self: &Arc<Self>, deployment_id: &str, message: &str) -> anyhow::Result<()> {
        let pool = self.store.pool();
        let Some(d) = store::get_deployment_any_org(pool, deployment_id).await? else {
            return Ok(());
        };
        self.logs.flush().await;
        let last: Vec<String> = store::tail_logs(pool, deployment_id, "runtime", 5)
            .await?
            .into_iter()
            .map(|r| r.line)
            .collect();
        let error = format!(
            "crash loop after going live: {message}; last lines: {}",
            last.join(" | ")
        );
        let Some(env) = store::get_environment_by_id(pool, &d.environment_id).await? else {
            return Ok(());
        };
        let target = match self.config.on_crash_loop {
            crate::config::CrashLoopPolicy::Rollback => {
                store::previous_deployment(pool, &env.id, d.created_at, &d.id).await?
            }
            crate::config::CrashLoopPolicy::StayDown => None,
        };
        let mut tx = self.store.begin().await?;
        if !store::transition_deployment(&mut *tx, &d.id, DeploymentStatus::Crashed, Some(&error)).await? {
            return Ok(()); // handled already (or no longer live)
        }
        let data = serde_json::json!({
            "site_id": d.site_id,
            "environment": env.name,
            "error": error,
            "rolled_back_to": target.as_ref().map(|t| t.id.clone()),
        });
        store::insert_event(&mut *tx, &d.org_id, "deployment.crashed", &d.id, &data).await?;
        tx.commit().await?;
        self.events.notify();
        tracing::warn!(deployment.id = %d.id, environment = %env.name, "a live deployment crash-loops");
        let Some(target) = target else {
            let why = match self.config.on_crash_loop {
                crate::config::CrashLoopPolicy::StayDown => "the server runs with --on-crash-loop stay-down",
                crate::config::CrashLoopPolicy::Rollback => "there is no earlier deployment to go back to",
            };
            self.log(
                &d.id,
                "runtime",
                "system",
                format!("crash loop: '{}' stays on this deployment ({why}); it is restarted slowly until it recovers, or deploy a fix", env.name),
            );
            return Ok(());
        };
        self.log(
            &d.id,
            "runtime",
            "system",
            format!(
                "crash loop: rolling '{}' back to {}, the deployment before this one",
                env.name, target.id
            ),
        );
        let site = store::get_site_by_id(pool, &d.site_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("site of {} is gone", d.id))?;
        self.point_environment(&env, &site, &target).await?;
        self.log(
            &target.id,
            "runtime",
            "system",
            format!("serving '{}' again: {} crash-looped after going live", env.name, d.id),
        );
        Ok(())
    }

    async fn recovered(&self, deployment_id: &str) -> anyhow::Result<()> {
        let Some(d) = store::get_deployment_any_org(self.store.pool(), deployment_id).await? else {
            return Ok(());
        };
        if self.set_status(&d, DeploymentStatus::Live, None).await? {
            self.log(
                deployment_id,
                "runtime",
                "system",
                "recovered: healthy again and live".into(),
            );
        }
        Ok(())
    }

    /// Keeps an environment's newest `--keep-deployments` finished deployments (and any an
    /// environment serves); older ones lose their record, logs and files. What a target
    /// keeps of builds (images) is bounded by its own settings. Returns how many were
    /// removed.
    pub async fn prune_environment(&self, environment_id: &str) -> usize {
        let keep = self.config.keep_deployments as i64;
        let doomed = match store::prunable_deployments(self.store.pool(), environment_id, keep).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(environment.id = %environment_id, error = %err, "listing deployments to prune failed");
                return 0;
            }
        };
        for id in &doomed {
            self.forget_deployment(id).await;
        }
        if !doomed.is_empty() {
            tracing::info!(environment.id = %environment_id, removed = doomed.len(), keep, "pruned old deployments");
        }
        doomed.len()
    }

    /// [`Self::prune_environment`] for every environment (once at start: deployments
    /// left by older versions or a lower setting).
    pub async fn prune_all(&self) {
        match store::all_environment_ids(self.store.pool()).await {
            Ok(ids) => {
                for id in ids {
                    self.prune_environment(&id).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "listing environments to prune failed"),
        }
    }

    /// A site as its target's operations see it, with the org's `settings` of the target.
    pub fn site_ref<'a>(&self, site: &'a SiteRow, settings: &'a ConfigMap) -> SiteRef<'a> {
        SiteRef {
            org: &site.org_id,
            site: &site.name,
            settings,
        }
    }

    /// Points an environment at a deployment that is already built (promote, rollback):
    /// its instance is started and healthy first, then one transaction moves the pointer
    /// and re-derives live/superseded, then the routes are swapped. No rebuild.
    pub async fn point_environment(
        &self,
        env: &EnvironmentRow,
        site: &SiteRow,
        d: &DeploymentRow,
    ) -> anyhow::Result<()> {
        let plan: BuildPlan = serde_json::from_str(d.build_plan.as_deref().unwrap_or_default())
            .map_err(|_| anyhow::anyhow!("deployment {} has no build plan", d.id))?;
        let _guard = self.register_cancel(&d.id);
        let started = match self.instance_spec(d, site, &plan).await? {
            Some(spec) => self
                .runtime
                .start(spec, 0)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}")),
            None => Ok(()),
        };
        if let Err(err) = started {
            self.unregister_cancel(&d.id);
            return Err(err);
        }
        // Still in progress until the pointer is stored and routed: a reconcile pass in
        // between must not drain the instance it sees no environment wanting yet.
        let pointed = async {
            let mut tx = self.store.begin().await?;
            let previous = env.deployment_id.clone();
            store::set_environment_deployment(&mut *tx, &env.id, &d.id).await?;
            let mut touched: Vec<String> = previous.into_iter().collect();
            touched.push(d.id.clone());
            let superseded = store::refresh_liveness(&mut tx, &touched).await?;
            let data = serde_json::json!({ "site_id": site.id, "environment": env.name, "deployment_id": d.id });
            store::insert_event(&mut *tx, &site.org_id, "environment.pointed", &env.id, &data).await?;
            insert_superseded_events(&mut tx, &site.org_id, &site.id, &superseded, &d.id).await?;
            tx.commit().await?;
            self.events.notify();
            crate::reconciler::reconcile(self).await?;
            anyhow::Ok(())
        }
        .await;
        self.unregister_cancel(&d.id);
        pointed
    }

    /// Wakes the sleeping environment served at `host` (the edge's activator calls this
    /// for a held request). Marking its deployment in progress keeps the reconciler from
    /// putting it back to sleep and makes it start the app; once the app is healthy (or
    /// failed) the routes are published again and the held request goes through.
    pub async fn wake(&self, host: &str) -> anyhow::Result<()> {
        let desired = store::list_desired_environments(self.store.pool()).await?;
        let Some(env) = desired
            .into_iter()
            .find(|e| self.host_for(&e.site_name, &e.environment_name) == host)
        else {
            return Ok(());
        };
        if self.is_in_progress(&env.deployment_id) {
            return Ok(()); // already waking, or deploying
        }
        tracing::info!(site.name = %env.site_name, environment = %env.environment_name, "waking a sleeping environment");
        self.log(&env.deployment_id, "runtime", "system", "a request woke the app".into());
        let _token = self.register_cancel(&env.deployment_id);
        let outcome = async {
            crate::reconciler::reconcile(self).await?;
            let deadline = tokio::time::Instant::now() + self.config.timeouts.start();
            while tokio::time::Instant::now() < deadline {
                match self.runtime.overall_state(&env.deployment_id) {
                    Some(crate::runtime::InstanceState::Healthy | crate::runtime::InstanceState::Crashed { .. }) => {
                        break;
                    }
                    _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                }
            }
            anyhow::Ok(())
        }
        .await;
        self.unregister_cancel(&env.deployment_id);
        crate::reconciler::reconcile(self).await?;
        outcome
    }

    /// The environment variables a deployment's build and app see: berth's defaults
    /// (caches in the private /tmp rather than the app folder, unbuffered Python output so
    /// logs arrive as they are written), then the site's variables, then the
    /// environment's, each overriding the one before. The secret values are registered
    /// with the log sink so they are redacted from that deployment's logs.
    pub async fn app_env(
        &self,
        site: &SiteRow,
        environment_id: &str,
        deployment_id: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut env: Vec<(String, String)> = [
            ("npm_config_cache", "/tmp/.npm"),
            ("npm_config_update_notifier", "false"),
            ("PIP_NO_CACHE_DIR", "1"),
            ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            ("PYTHONUNBUFFERED", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let own = self.env_vars(site, Some(environment_id)).await?;
        env.retain(|(k, _)| !own.contains_key(k));
        self.logs.set_secrets(deployment_id, own.values().cloned());
        env.extend(own);
        env.push(("BERTH_SITE".into(), site.name.clone()));
        Ok(env)
    }

    /// A site's env vars opened, environment values overriding site-wide ones.
    pub async fn env_vars(
        &self,
        site: &SiteRow,
        environment_id: Option<&str>,
    ) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        let mut out = std::collections::BTreeMap::new();
        // Site-wide rows sort before environment rows of the same name, so later wins.
        let mut rows = store::list_env_vars(self.store.pool(), &site.id, environment_id).await?;
        rows.sort_by(|a, b| (a.name.as_str(), !a.scope.is_empty()).cmp(&(b.name.as_str(), !b.scope.is_empty())));
        for row in rows {
            let value = self
                .secrets
                .open(&row.sealed, &secret_context(&site.id, &row.scope, &row.name))?;
            out.insert(row.name, value);
        }
        Ok(out)
    }
}

/// What a sealed env var is bound to: its site, scope and name.
pub fn secret_context(site_id: &str, scope: &str, name: &str) -> String {
    format!("env:{site_id}:{scope}:{name}")
}

/// Records, in the transaction that superseded them, a `deployment.superseded` event for
/// each deployment `by` took the place of: readers follow each deployment by its own events.
async fn insert_superseded_events(
    tx: &mut store::Tx,
    org_id: &str,
    site_id: &str,
    superseded: &[String],
    by: &str,
) -> sqlx::Result<()> {
    for id in superseded {
        let data = serde_json::json!({ "site_id": site_id, "status": "superseded", "by": by });
        store::insert_event(&mut **tx, org_id, "deployment.superseded", id, &data).await?;
    }
    Ok(())
}
