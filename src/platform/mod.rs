//! The shared state every part of a running server holds: configuration, store, queue,
//! runtime and edge, plus the few primitives that change deployment state (status
//! transitions with their events, activation) so those happen in exactly one place.

pub mod certificates;
pub mod git;
pub mod providers;
pub mod resources;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_build::sandbox::Sandbox;
use berth_edge::Edge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::crypto::SecretBox;
use crate::jobs::JobQueue;
use crate::runtime::target::SiteRef;
use crate::runtime::{LogSink, Runtime, Target, Targets};
use crate::store::{SiteRow, Store};

use providers::ConfigMap;

/// Webhook bodies read at once before their signature is known (each is spooled to disk,
/// not memory; the bound keeps that disk use small too).
pub const WEBHOOK_INTAKE_SLOTS: usize = 4;

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
    /// A `crashed` deployment its environment kept has served healthy for
    /// [`RECOVERED_AFTER`](crate::loops::health::RECOVERED_AFTER) without a break.
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
    pub autoscaler: Arc<crate::loops::autoscaler::Autoscaler>,
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
    /// This server's id among the replicas on its database (its data dir's id).
    pub replica_id: String,
    /// Which shared targets (docker on a shared engine) this replica runs now.
    pub shared: crate::loops::shared::SharedLeases,
    /// Seals and opens env var values.
    pub secrets: SecretBox,
    /// The git server's state: hook grants, verified push tokens, listener address.
    pub git: git::GitState,
    /// Which server folders a site's `repo` may name.
    pub local_repos: crate::source::LocalRepoPolicy,
    /// Slots for webhook bodies being read before their signature is known.
    pub webhook_intake: tokio::sync::Semaphore,
    /// Failed authentications, for backoff (shared by the API, dashboard and git server).
    pub auth_throttle: Arc<crate::throttle::AuthThrottle>,
    /// Build slots (`--build-concurrency`), handed out fairly across sites and orgs.
    pub build_gate: crate::build_gate::BuildGate,
    /// Certificate ordering state (the ACME client, the loop's wake-up).
    pub certificates: certificates::CertState,
    /// The secret scoped API keys are found by.
    pub key_lookup: Arc<crate::auth::KeyLookup>,
    /// The control plane's public URL, once its listener is bound (invitation links).
    public_url: std::sync::OnceLock<String>,
    /// Health changes the last reconcile pass saw, for the reconciler loop to handle.
    pub(crate) health_changes: Mutex<Vec<HealthChange>>,
    /// Crashed deployments reconcile passes have seen healthy, since when (unbroken).
    pub(crate) recovering: Mutex<HashMap<String, std::time::Instant>>,
    /// The instances of each site this server runs (or, on a cluster, watches), as the
    /// last reconcile pass saw them, for the usage sampler.
    pub(crate) running: Mutex<crate::loops::usage::RunningSites>,
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
            replica_id: replica_id.to_string(),
            // One server alone on its database (SQLite) runs every target.
            shared: crate::loops::shared::SharedLeases::new(
                &targets.shared(),
                store.backend() == crate::store::Backend::Sqlite,
            ),
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
            git: git::GitState::default(),
            local_repos,
            webhook_intake: tokio::sync::Semaphore::new(WEBHOOK_INTAKE_SLOTS),
            auth_throttle: Arc::default(),
            build_gate,
            certificates: certificates::CertState::default(),
            key_lookup,
            public_url: std::sync::OnceLock::new(),
            health_changes: Mutex::new(Vec::new()),
            recovering: Mutex::default(),
            running: Mutex::default(),
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
        let seq = self.store.site_uid_seq(&site.id).await?;
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

    /// A site as its target's operations see it, with the org's `settings` of the target.
    pub fn site_ref<'a>(&self, site: &'a SiteRow, settings: &'a ConfigMap) -> SiteRef<'a> {
        SiteRef {
            org: &site.org_id,
            site: &site.name,
            settings,
        }
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
        let mut rows = self.store.list_env_vars(&site.id, environment_id).await?;
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
