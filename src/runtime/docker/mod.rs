//! The docker provider: deployments built into images and run as containers on a Docker
//! Engine (a local socket or a TCP endpoint). It owns the primitives only (build an image,
//! start or adopt a container, its output, exit and stats, remove leftovers); health
//! checks, swaps, restarts and scale-to-zero are the shared lifecycle's.
//!
//! Every container and image carries labels (`berth.org`, `berth.site`,
//! `berth.environment`, `berth.deployment`, `berth.instance`, and `berth.owner`, the
//! installation that made it: the same for every replica of one database) so that a
//! restarted berth, or the replica that takes the docker target's lease over, adopts the
//! running containers and removes the ones nothing wants, without touching another
//! installation's.
//!
//! Static sites are served by the edge from the deployment's files, as with the local
//! provider: there is no process to containerise.

pub mod container;
pub mod engine;
pub mod image;
pub mod shield;
mod target;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::listeners::Listeners;
use super::target::{BuildKind, Capabilities, ConfigKey, PromoteWithoutRebuild, Registration, ScaleToZero};
use super::{InstanceSpec, Launched, OutputLine, OutputStream, Pause, Provider, Usage};

use berth_build::dockerfile::BaseImages;
use serde::{Deserialize, Serialize};

pub use container::{Container, ContainerLine, ContainerSpec, ContainerUsage};
pub use engine::{Engine, EngineError, EngineReport};
pub use image::{BuildError, ImageBuild, ImageOwner, ImageRecipe};
pub use target::{build_deployment_image, deployment_recipe, serves_process};

/// Label: the berth installation that made a container or image.
pub const LABEL_OWNER: &str = "berth.owner";
/// Label: org name.
pub const LABEL_ORG: &str = "berth.org";
/// Label: site name.
pub const LABEL_SITE: &str = "berth.site";
/// Label: environment name.
pub const LABEL_ENVIRONMENT: &str = "berth.environment";
/// Label: deployment id.
pub const LABEL_DEPLOYMENT: &str = "berth.deployment";
/// Label: instance index within the deployment.
pub const LABEL_INSTANCE: &str = "berth.instance";

/// The registered name of this provider.
pub const NAME: &str = "docker";

/// The docker target as registered: containers that freeze to sleep, images built by
/// berth (static sites are served by the edge from files, as on local), and promotion
/// without a rebuild only while the deployment's image is kept (`keep_images`).
pub const TARGET: Registration = Registration {
    name: NAME,
    summary: "Builds apps into images and runs them as locked-down containers on a Docker Engine.",
    capabilities: Capabilities {
        scale_to_zero: ScaleToZero::Freeze,
        max_instances: super::MAX_INSTANCES,
        promote_without_rebuild: PromoteWithoutRebuild::WhileImageKept,
        runtime_logs: true,
        resource_usage: true,
        custom_domains: true,
        build: BuildKind::Image,
    },
    on_its_server: false,
    settings: &[
        ConfigKey {
            name: "host",
            secret: false,
            description: "Engine address: unix:///var/run/docker.sock (default), a socket path, or tcp://HOST:PORT.",
        },
        ConfigKey {
            name: "base_images",
            secret: false,
            description: "Base images of generated Dockerfiles: {\"node\": \"node:20-slim\", \"python\": \"python:3.11-slim\", \"procfile\": \"debian:bookworm-slim\"} (defaults).",
        },
        ConfigKey {
            name: "memory_mb",
            secret: false,
            description: "Memory limit per container in MiB (default 512).",
        },
        ConfigKey {
            name: "cpus",
            secret: false,
            description: "CPU limit per container in cores (default 1).",
        },
        ConfigKey {
            name: "pids_limit",
            secret: false,
            description: "Process limit per container (default 256).",
        },
        ConfigKey {
            name: "disk_mb",
            secret: false,
            description: "Writable space per container in MiB (default 1024): its writable layer, bounded by the engine where its storage driver can (overlay2 on xfs with pquota, btrfs, zfs), else stopped by a watchdog within 2 s of passing it. /tmp is apart: in memory, of memory_mb.",
        },
        ConfigKey {
            name: "keep_images",
            secret: false,
            description: "Images kept per site; older ones are removed after each deploy (default 5).",
        },
        ConfigKey {
            name: "keep_paused_seconds",
            secret: false,
            description: "Scale to zero pauses an idle container (no CPU, memory kept; the next request thaws it in milliseconds) and removes it after this many seconds asleep; 0 removes it at once (default 600, at most 604800).",
        },
        ConfigKey {
            name: "default",
            secret: false,
            description: "true: new sites of this org run on docker unless they name a provider (default false).",
        },
    ],
    check_settings: target::check_settings,
    make: target::make,
};

/// Longest a paused container may sleep before it is removed: a week.
const MAX_KEEP_PAUSED_SECONDS: u64 = 7 * 24 * 3600;

/// The docker provider's settings (`HOSTING_SET_CONFIG {provider: "docker", config}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    /// Engine address: `unix:///var/run/docker.sock` (default), a socket path, or
    /// `tcp://HOST:PORT`.
    pub host: String,
    /// Base images of generated Dockerfiles, per build pack.
    pub base_images: BaseImages,
    /// Memory limit per container, MiB.
    pub memory_mb: u64,
    /// CPU limit per container, cores.
    pub cpus: f64,
    /// Process limit per container.
    pub pids_limit: i64,
    /// Writable space per container, MiB: its writable layer (the engine's
    /// `--storage-opt size=` where its storage driver supports it, else a watchdog) and,
    /// apart from it, a `/tmp` in memory of `memory_mb`.
    pub disk_mb: u64,
    /// Images kept per site; older ones are removed after each deploy.
    pub keep_images: usize,
    /// Scale to zero pauses an idle container (no CPU, memory kept) so the next request
    /// thaws it in milliseconds; after this many seconds asleep it is removed to free its
    /// memory and the next request starts a new one. 0: remove at once.
    pub keep_paused_seconds: u64,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            host: engine::DEFAULT_HOST.into(),
            base_images: BaseImages::default(),
            memory_mb: 512,
            cpus: 1.0,
            pids_limit: 256,
            disk_mb: 1024,
            keep_images: 5,
            keep_paused_seconds: 600,
        }
    }
}

impl DockerSettings {
    /// Checks every value; the message names the field and its accepted range.
    pub fn validate(&self) -> Result<(), String> {
        engine::check_host(&self.host).map_err(|e| e.to_string())?;
        if !(16..=1024 * 1024).contains(&self.memory_mb) {
            return Err(format!(
                "memory_mb must be between 16 and 1048576, got {}",
                self.memory_mb
            ));
        }
        if !(self.cpus >= 0.01 && self.cpus <= 1024.0) {
            return Err(format!("cpus must be between 0.01 and 1024, got {}", self.cpus));
        }
        if !(16..=1_000_000).contains(&self.pids_limit) {
            return Err(format!(
                "pids_limit must be between 16 and 1000000, got {}",
                self.pids_limit
            ));
        }
        if !(16..=1024 * 1024).contains(&self.disk_mb) {
            return Err(format!("disk_mb must be between 16 and 1048576, got {}", self.disk_mb));
        }
        if !(1..=1000).contains(&self.keep_images) {
            return Err(format!(
                "keep_images must be between 1 and 1000, got {}",
                self.keep_images
            ));
        }
        if self.keep_paused_seconds > MAX_KEEP_PAUSED_SECONDS {
            return Err(format!(
                "keep_paused_seconds must be between 0 and {MAX_KEEP_PAUSED_SECONDS} (a week), got {}",
                self.keep_paused_seconds
            ));
        }
        for (pack, image) in [
            ("node", &self.base_images.node),
            ("python", &self.base_images.python),
            ("procfile", &self.base_images.procfile),
        ] {
            if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
                return Err(format!(
                    "base_images.{pack} must be an image reference such as node:20-slim, got '{image}'"
                ));
            }
        }
        Ok(())
    }
}

/// Runs deployments as containers. Settings are per org and travel with each instance
/// spec; engines are connected lazily (one that is down must not stop berth from
/// starting) and kept per host.
#[derive(Clone)]
pub struct DockerProvider {
    owner: String,
    engines: Arc<Mutex<HashMap<String, Engine>>>,
    /// Containers this process started or adopted: only the others are survivors of an
    /// earlier run that may be adopted.
    launched: Arc<Mutex<HashSet<String>>>,
    /// Keeps containers off the control plane's ports when it listens beyond loopback.
    shield: shield::Shield,
}

impl DockerProvider {
    /// A provider for the installation `owner` (see [`DockerProvider::owner_id`]).
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            engines: Arc::default(),
            launched: Arc::default(),
            shield: shield::Shield::default(),
        }
    }

    /// Containers of a local engine are kept from opening connections to these ports
    /// (the control plane's, when it listens on a non-loopback address).
    pub fn shielding(mut self, ports: Vec<u16>) -> Self {
        self.shield = shield::Shield::new(ports);
        self
    }

    /// This data dir's id, kept in `<data>/docker-owner` so that it survives restarts. The
    /// first server of a database records it as the installation's `berth.owner` of every
    /// container and image (see `Assembly::owner`), which every replica of that database
    /// then shares: adoption depends on it.
    pub fn owner_id(data_dir: &Path) -> std::io::Result<String> {
        let path = data_dir.join("docker-owner");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
            _ => {
                let id = uuid::Uuid::now_v7().simple().to_string();
                std::fs::write(&path, &id)?;
                Ok(id)
            }
        }
    }

    /// This installation's id (the `berth.owner` label).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The engine at `host`, connected and version-negotiated; fails with a message
    /// naming the host and the next step when it is down.
    pub async fn engine(&self, host: &str) -> Result<Engine, EngineError> {
        if let Some(engine) = self.engines.lock().expect("engines lock").get(host) {
            return Ok(engine.clone());
        }
        let engine = Engine::connect(host)?.negotiate().await?;
        self.engines
            .lock()
            .expect("engines lock")
            .insert(host.to_string(), engine.clone());
        Ok(engine)
    }

    /// Engines in use, for sweeping.
    fn known_engines(&self) -> Vec<Engine> {
        self.engines.lock().expect("engines lock").values().cloned().collect()
    }

    /// Builds a deployment's image (see [`image::build`]) and then removes the site's
    /// images beyond `keep_images`, never one in `in_use`.
    pub async fn build_image(
        &self,
        settings: &DockerSettings,
        build: &ImageBuild<'_>,
        in_use: &[String],
        on_line: &mut (dyn FnMut(String) + Send),
    ) -> Result<String, BuildError> {
        let engine = self.engine(&settings.host).await?;
        // On a local engine the org's bridge is under berth's firewall: build steps get
        // the same reach as the org's containers (public internet and DNS only).
        let network = if engine.is_local() {
            container::ensure_network(&engine, &self.owner, build.who.org).await?;
            Some(container::network_name(build.who.org))
        } else {
            None
        };
        let tag = image::build(&engine, build, network.as_deref(), on_line).await?;
        let who = &build.who;
        let mut protected = in_use.to_vec();
        protected.push(tag.clone());
        if let Err(err) = image::collect_garbage(
            &engine,
            &self.owner,
            who.org,
            who.site,
            settings.keep_images,
            &protected,
        )
        .await
        {
            tracing::warn!(site.name = %who.site, error = %err, "removing old images failed");
        }
        Ok(tag)
    }

    /// Gives the image tagged `from` a second tag `to` (a promotion reuses a build).
    pub async fn tag_image(&self, settings: &DockerSettings, from: &str, to: &str) -> Result<(), EngineError> {
        let engine = self.engine(&settings.host).await?;
        image::tag(&engine, from, to).await
    }

    /// Pushes the image `reference` to its registry; returns it by digest.
    pub async fn push_image(&self, settings: &DockerSettings, reference: &str) -> Result<String, EngineError> {
        self.push_image_with(settings, reference, None).await
    }

    /// Pushes the image `reference` with the registry's `credentials` (sent in the engine
    /// API's `X-Registry-Auth` header); returns it by digest.
    pub async fn push_image_with(
        &self,
        settings: &DockerSettings,
        reference: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
    ) -> Result<String, EngineError> {
        let engine = self.engine(&settings.host).await?;
        image::push(&engine, reference, credentials).await
    }

    /// Whether the image `tag` is still kept on the org's engine.
    pub async fn has_image(&self, settings: &DockerSettings, tag: &str) -> Result<bool, EngineError> {
        let engine = self.engine(&settings.host).await?;
        image::exists(&engine, tag).await
    }

    /// Removes every image of a site made by this installation (the site was deleted).
    pub async fn remove_site_images(
        &self,
        settings: &DockerSettings,
        org: &str,
        site: &str,
    ) -> Result<(), EngineError> {
        let engine = self.engine(&settings.host).await?;
        image::collect_garbage(&engine, &self.owner, org, site, 0, &[])
            .await
            .map(|_| ())
    }
}

/// Reads an org's docker settings from its stored config (`default` is the org's
/// provider choice, not an engine setting).
pub fn settings_from_config(config: &serde_json::Map<String, serde_json::Value>) -> Result<DockerSettings, String> {
    let mut config = config.clone();
    config.remove("default");
    let settings: DockerSettings = serde_json::from_value(serde_json::Value::Object(config))
        .map_err(|e| format!("invalid docker settings: {e}"))?;
    settings.validate()?;
    Ok(settings)
}

/// Whether the org chose docker as the provider of new sites (`default: true`).
pub fn is_org_default(config: &serde_json::Map<String, serde_json::Value>) -> bool {
    config.get("default").and_then(serde_json::Value::as_bool) == Some(true)
}

/// A started (or adopted) container as the shared lifecycle drives it.
struct LaunchedContainer {
    container: Container,
    /// Freezes it for scale to zero, unless the settings say to remove it at once.
    pauser: Option<Arc<dyn Pause>>,
    output: Option<OutputStream>,
    /// The provider's set of containers of this run; left once the container is gone.
    launched: Arc<Mutex<HashSet<String>>>,
    /// Its listening ports, on a local engine.
    listeners: Option<Listeners>,
}

#[async_trait::async_trait]
impl Launched for LaunchedContainer {
    fn addr(&self) -> SocketAddr {
        self.container.addr
    }
    fn take_output(&mut self) -> Option<OutputStream> {
        self.output.take()
    }
    async fn wait(&mut self) -> String {
        self.container.wait().await
    }
    async fn terminate(&mut self, grace: std::time::Duration) {
        self.container.terminate(grace).await;
        self.launched.lock().expect("launched lock").remove(&self.container.id);
    }
    fn pauser(&self) -> Option<Arc<dyn Pause>> {
        self.pauser.clone()
    }
    fn listeners(&self) -> Option<Listeners> {
        self.listeners
    }
    fn release(&mut self) {
        self.launched.lock().expect("launched lock").remove(&self.container.id);
    }
}

/// Pauses a container through the engine (the cgroup freezer: its processes stop
/// getting CPU, their memory stays).
struct PauseContainer {
    engine: Engine,
    id: String,
    hold: std::time::Duration,
}

#[async_trait::async_trait]
impl Pause for PauseContainer {
    async fn pause(&self) -> Result<(), String> {
        container::pause(&self.engine, &self.id, true)
            .await
            .map_err(|e| e.to_string())
    }
    async fn resume(&self) -> Result<(), String> {
        container::pause(&self.engine, &self.id, false)
            .await
            .map_err(|e| e.to_string())
    }
    fn hold(&self) -> std::time::Duration {
        self.hold
    }
}

#[async_trait::async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_isolated(&self) -> bool {
        true
    }

    fn capabilities(&self) -> Capabilities {
        TARGET.capabilities
    }

    fn keeps_instances_on_shutdown(&self) -> bool {
        // A graceful restart of berth adopts the running containers: no downtime.
        true
    }

    async fn launch(&self, spec: &InstanceSpec, index: u32) -> Result<Box<dyn Launched>, String> {
        let settings = settings_from_config(&spec.provider_config)?;
        let image = spec.image.clone().ok_or_else(|| {
            format!(
                "deployment {} has no image; deploy again to build it",
                spec.deployment_id
            )
        })?;
        let engine = self.engine(&settings.host).await.map_err(|e| e.to_string())?;
        let container_spec = ContainerSpec {
            org: spec.org.clone(),
            site: spec.site.clone(),
            environment: spec.environment.clone(),
            deployment_id: spec.deployment_id.clone(),
            index,
            image,
            port: spec.port,
            env: spec.env.clone(),
            command: Some(spec.command.clone()).filter(|c| !c.trim().is_empty()),
            memory_mb: spec.size.memory_mb.unwrap_or(settings.memory_mb),
            cpus: spec.size.cpus.unwrap_or(settings.cpus),
            pids_limit: settings.pids_limit,
            disk_mb: settings.disk_mb,
        };
        if engine.is_local() && self.shield.is_active() {
            let network = container::ensure_network(&engine, &self.owner, &spec.org)
                .await
                .map_err(|e| e.to_string())?;
            self.shield.close(&engine, &network, &self.owner).await?;
        }
        let made_by_this_run = self.launched.lock().expect("launched lock").clone();
        let container = container::launch(&engine, &self.owner, &container_spec, &made_by_this_run)
            .await
            .map_err(|e| e.to_string())?;
        self.launched
            .lock()
            .expect("launched lock")
            .insert(container.id.clone());
        if container.adopted {
            tracing::info!(deployment.id = %spec.deployment_id, instance = index, container = %container.id, "adopted a running container");
        }
        let output = container
            .output()
            .map(|l| OutputLine {
                stream: l.stream,
                line: l.line,
            })
            .boxed();
        let pauser = (settings.keep_paused_seconds > 0).then(|| {
            Arc::new(PauseContainer {
                engine: engine.clone(),
                id: container.id.clone(),
                hold: std::time::Duration::from_secs(settings.keep_paused_seconds),
            }) as Arc<dyn Pause>
        });
        // A local engine's containers are processes of this machine: the ports they listen
        // on can be looked up like a local instance's.
        let listeners = if engine.is_local() {
            container::main_pid(&engine, &container.id)
                .await
                .map(Listeners::of_container)
        } else {
            None
        };
        Ok(Box::new(LaunchedContainer {
            pauser,
            container,
            output: Some(output),
            launched: self.launched.clone(),
            listeners,
        }))
    }

    async fn sweep(&self, keep: &HashSet<(String, u32)>) {
        for engine in self.known_engines() {
            match container::sweep(&engine, &self.owner, keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(containers = n, host = %engine.host(), "removed containers nothing wants"),
                Err(err) => tracing::warn!(error = %err, "sweeping containers failed"),
            }
        }
    }

    async fn usage(&self, deployment_id: &str, index: u32) -> Option<Usage> {
        for engine in self.known_engines() {
            if let Some(u) = container::usage(&engine, &self.owner, deployment_id, index).await {
                return Some(Usage {
                    cpu_percent: u.cpu_percent,
                    memory_bytes: u.memory_bytes,
                    memory_limit_bytes: Some(u.memory_limit_bytes).filter(|l| *l > 0),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_validate() {
        let s = DockerSettings::default();
        assert_eq!(s.validate(), Ok(()));
        let partial: DockerSettings =
            serde_json::from_str(r#"{"memory_mb": 256, "base_images": {"node": "berth-test/node:20"}}"#).unwrap();
        assert_eq!(partial.memory_mb, 256);
        assert_eq!(partial.keep_images, 5);
        assert_eq!(partial.keep_paused_seconds, 600);
        let too_long = DockerSettings {
            keep_paused_seconds: MAX_KEEP_PAUSED_SECONDS + 1,
            ..DockerSettings::default()
        };
        assert!(too_long.validate().unwrap_err().contains("keep_paused_seconds"));
        assert_eq!(partial.base_images.python, "python:3.11-slim");
        let bad = DockerSettings {
            cpus: 0.0,
            ..DockerSettings::default()
        };
        assert!(bad.validate().unwrap_err().contains("cpus"));
        let bad_host = DockerSettings {
            host: "ftp://x".into(),
            ..DockerSettings::default()
        };
        assert!(bad_host.validate().unwrap_err().contains("tcp://"));
        assert!(serde_json::from_str::<DockerSettings>(r#"{"memroy_mb": 1}"#).is_err());
    }

    #[test]
    fn org_config_becomes_settings_and_default_choice() {
        let config: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"default": true, "cpus": 0.5}"#).unwrap();
        assert!(is_org_default(&config));
        assert_eq!(settings_from_config(&config).unwrap().cpus, 0.5);
        assert!(!is_org_default(&serde_json::Map::new()));
        let bad: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"cpus": "lots"}"#).unwrap();
        assert!(
            settings_from_config(&bad)
                .unwrap_err()
                .contains("invalid docker settings")
        );
    }

    #[test]
    fn owner_id_is_stable_per_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = DockerProvider::owner_id(dir.path()).unwrap();
        assert_eq!(DockerProvider::owner_id(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(DockerProvider::owner_id(other.path()).unwrap(), a);
    }
}
