//! Where deployments run. A provider implements a few primitives (launch an instance,
//! wait for it to exit, terminate it, report usage); health checks, crash restarts,
//! drains and scale-out follow one lifecycle in [`Runtime`] for every provider. `local`
//! (sandboxed child processes) is the default provider.

pub mod build_contexts;
pub mod docker;
pub mod error_patterns;
pub mod health;
pub mod isolation;
pub mod kubernetes;
pub mod lifecycle;
pub mod listeners;
pub mod local;
pub mod logs;
pub mod target;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::stream::BoxStream;

pub use lifecycle::Runtime;
pub use local::LocalProvider;
pub use logs::LogSink;
pub use target::{Capabilities, Registration, Target, Targets};

/// An app's variables as `Debug` prints them: each name with `<sealed>`, never a value
/// (values may be secrets, and a `{:?}` may end up in a log or an error).
pub struct SealedVariables<'a>(pub &'a [(String, String)]);

impl std::fmt::Debug for SealedVariables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, format_args!("<sealed>"))))
            .finish()
    }
}

/// Most instances one environment runs on the shared lifecycle (scale-out).
pub const MAX_INSTANCES: u32 = 20;

/// A custom domain an environment serves (berth's domains feature), with the certificate
/// berth holds for it, for targets that route in their own cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedDomain {
    /// The domain's name.
    pub name: String,
    /// Its certificate, when berth holds a valid one.
    pub certificate: Option<DomainCertificate>,
}

/// A certificate's PEM chain and private key (the key never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct DomainCertificate {
    /// PEM chain.
    pub chain: String,
    /// PEM private key.
    pub key: String,
}

impl std::fmt::Debug for DomainCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DomainCertificate(<sealed>)")
    }
}

/// A resource attached to an instance's site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedResource {
    /// The resource's id (its disk's name).
    pub id: String,
    /// Its name: the instance sees it at `/data/<name>`.
    pub name: String,
}

impl AttachedResource {
    /// Where the instance sees it.
    pub fn mount_path(&self) -> PathBuf {
        PathBuf::from("/data").join(&self.name)
    }
}

/// What to run for one deployment (every instance of it runs the same spec).
#[derive(Clone)]
pub struct InstanceSpec {
    /// The deployment this instance serves.
    pub deployment_id: String,
    /// Which registered provider runs it (`local` unless the site says otherwise).
    pub provider: String,
    /// Site name, for logs and messages.
    pub site: String,
    /// The built app directory.
    pub app_dir: PathBuf,
    /// Shell command that starts the app.
    pub command: String,
    /// Fixed port, or `None` to pick a free one.
    pub port: Option<u16>,
    /// Environment variables (PORT is added).
    pub env: Vec<(String, String)>,
    /// Path probed until it answers below 500.
    pub health_check_path: String,
    /// How long the first start may take to become healthy.
    pub start_timeout: Duration,
    /// The longest its image build may take (berth's build timeout), for a dry run that
    /// shows a build's deadline.
    pub build_timeout: Duration,
    /// Org id: container providers label instances with it and pick its network.
    pub org: String,
    /// Environment name, for labels.
    pub environment: String,
    /// The environment's host name (targets that route in their own cluster need it).
    pub host: String,
    /// The environment's served custom domains (targets that route in their own cluster).
    pub domains: Vec<ServedDomain>,
    /// Container providers: the deployment's built image. With an empty `command` the
    /// image's own command runs.
    pub image: Option<String>,
    /// The org's settings of `provider` (HOSTING_SET_CONFIG), for providers that have any.
    pub provider_config: serde_json::Map<String, serde_json::Value>,
    /// The site's own host uid, for providers that run processes on this host (`None`:
    /// isolation is off here).
    pub uid: Option<u32>,
    /// Instance size set on the environment (memory in MiB, CPU in cores); `None` each:
    /// the provider's default.
    pub size: InstanceSize,
    /// The site's resources, which the local provider mounts at `/data/<name>`.
    pub resources: Vec<AttachedResource>,
    /// The environment's scale settings, for targets whose platform scales by itself
    /// (Knative's autoscaler reads them as annotations).
    pub scale: InstanceScale,
}

impl std::fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("deployment_id", &self.deployment_id)
            .field("provider", &self.provider)
            .field("site", &self.site)
            .field("app_dir", &self.app_dir)
            .field("command", &self.command)
            .field("port", &self.port)
            .field("env", &SealedVariables(&self.env))
            .field("health_check_path", &self.health_check_path)
            .field("start_timeout", &self.start_timeout)
            .field("build_timeout", &self.build_timeout)
            .field("org", &self.org)
            .field("environment", &self.environment)
            .field("host", &self.host)
            .field("domains", &self.domains)
            .field("image", &self.image)
            .field("provider_config_keys", &self.provider_config.keys().collect::<Vec<_>>())
            .field("uid", &self.uid)
            .field("size", &self.size)
            .field("scale", &self.scale)
            .finish()
    }
}

/// An environment's scale settings (HOSTING_SET_SCALING_CONFIG `min_instances`,
/// `max_instances`, `target_concurrency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceScale {
    /// Instances kept running when idle (0: scale to zero).
    pub min_instances: u32,
    /// Most instances.
    pub max_instances: u32,
    /// In-flight requests per instance to aim for.
    pub target_concurrency: u32,
}

impl Default for InstanceScale {
    fn default() -> Self {
        Self {
            min_instances: 1,
            max_instances: 1,
            target_concurrency: 100,
        }
    }
}

/// An environment's own instance size (HOSTING_SET_SCALING_CONFIG `memory_mb`, `cpus`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InstanceSize {
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// CPU in cores.
    pub cpus: Option<f64>,
}

/// Observed state of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Started, health check not yet passed.
    Starting,
    /// Passing its health check.
    Healthy,
    /// Exited unexpectedly; coming back after a backoff.
    Restarting {
        /// Restarts so far in the current window.
        attempt: u32,
    },
    /// Kept failing; given up until the next deploy or restart.
    Crashed {
        /// Why, with the exit code.
        message: String,
    },
    /// Asleep in place (scale to zero on a provider that can freeze an instance): no CPU,
    /// its memory kept; not routed. The next request thaws it instead of starting one.
    Paused,
}

impl InstanceState {
    /// The word APIs and the dashboard show.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Restarting { .. } => "restarting",
            Self::Crashed { .. } => "crashed",
            Self::Paused => "paused",
        }
    }
}

/// An instance as the reconciler and the service see it.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Which instance of its deployment (0-based).
    pub index: u32,
    /// Where it listens, once launched.
    pub addr: Option<SocketAddr>,
    /// Its state.
    pub state: InstanceState,
    /// Whether it is draining towards a stop (no longer routed).
    pub draining: bool,
}

/// Why a start failed: the message and the app's last log lines.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    /// What happened.
    pub message: String,
    /// The app's last output lines.
    pub last_lines: Vec<String>,
}

/// One line an instance wrote.
#[derive(Clone, Debug)]
pub struct OutputLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The line, without its newline.
    pub line: String,
}

/// An instance's output, line by line, until it exits.
pub type OutputStream = BoxStream<'static, OutputLine>;

/// CPU and memory of one instance.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Usage {
    /// CPU use in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// Memory limit in bytes, when one is set.
    pub memory_limit_bytes: Option<u64>,
}

/// A place instances run (local processes, containers). Health checks, crash restarts,
/// drain, scale-out and scale to zero live in the shared [`Runtime`], not here.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Registered name (`local`, `docker`).
    fn name(&self) -> &'static str;
    /// Whether apps are isolated from the host (sandbox, container).
    fn is_isolated(&self) -> bool;
    /// What it can do (its line in [`target::TARGETS`]).
    fn capabilities(&self) -> Capabilities;
    /// Starts instance `index` of `spec` and returns once it is started (not yet healthy).
    /// A provider whose instances can outlive berth adopts a surviving identical instance
    /// instead of starting a second one.
    async fn launch(&self, spec: &InstanceSpec, index: u32) -> Result<Box<dyn Launched>, String>;
    /// Whether instances keep running when berth shuts down gracefully, to be adopted by
    /// `launch` after the restart (containers), instead of being stopped (child processes).
    fn keeps_instances_on_shutdown(&self) -> bool {
        false
    }
    /// Removes leftovers of instances not in `keep` (deployment id, index).
    async fn sweep(&self, keep: &HashSet<(String, u32)>) {
        let _ = keep;
    }
    /// CPU and memory of one instance, when the provider can tell.
    async fn usage(&self, deployment_id: &str, index: u32) -> Option<Usage> {
        let _ = (deployment_id, index);
        None
    }
}

/// A started instance, owned by the lifecycle that supervises it.
#[async_trait::async_trait]
pub trait Launched: Send {
    /// Where the edge and health checks reach it.
    fn addr(&self) -> SocketAddr;
    /// Its output; `None` after the first call.
    fn take_output(&mut self) -> Option<OutputStream>;
    /// Waits until it exits; describes how (`code 3`, `a signal`).
    async fn wait(&mut self) -> String;
    /// Stops it: a polite signal, a kill after `grace`, then clean-up of what it left.
    async fn terminate(&mut self, grace: Duration);
    /// How to find the TCP ports its own processes listen on (for an app that ignores
    /// `PORT`), when the provider can see them; `None`: only `addr` is ever probed.
    fn listeners(&self) -> Option<listeners::Listeners> {
        None
    }
    /// How to freeze and thaw it in place, when the provider can and its settings allow
    /// (a warm sleep for scale to zero); `None`: sleeping stops it.
    fn pauser(&self) -> Option<std::sync::Arc<dyn Pause>> {
        None
    }
    /// It is left running for another process to adopt: this one no longer counts it as
    /// its own.
    fn release(&mut self) {}
}

/// Freezes a running instance in place and thaws it again: a sleep that keeps the app's
/// memory, so waking it costs no start and no boot.
#[async_trait::async_trait]
pub trait Pause: Send + Sync {
    /// Freezes every process of the instance.
    async fn pause(&self) -> Result<(), String>;
    /// Thaws it; it serves again at once.
    async fn resume(&self) -> Result<(), String>;
    /// How long it may stay frozen before it is stopped to free its memory.
    fn hold(&self) -> Duration;
}
