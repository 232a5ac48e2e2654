//! The docker provider: deployments built into images and run as containers on a Docker
//! Engine (a local socket or a TCP endpoint). It owns the primitives only (build an image,
//! start or adopt a container, its output, exit and stats, remove leftovers); health
//! checks, swaps, restarts and scale-to-zero are the shared lifecycle's.
//!
//! Every container and image carries labels (`berth.org`, `berth.site`,
//! `berth.environment`, `berth.deployment`, `berth.instance`, and `berth.owner`, the
//! installation that made it) so that a restarted berth adopts its running containers
//! and removes the ones nothing wants, without touching another installation's.
//!
//! Static sites are served by the edge from the deployment's files, as with the local
//! provider: there is no process to containerise.

pub mod container;
pub mod engine;
pub mod image;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_build::dockerfile::BaseImages;
use serde::{Deserialize, Serialize};

pub use container::{Container, ContainerLine, ContainerSpec, ContainerUsage};
pub use engine::{Engine, EngineError, EngineReport};
pub use image::{BuildError, ImageOwner, ImageRecipe};

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
    /// Images kept per site; older ones are removed after each deploy.
    pub keep_images: usize,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            host: engine::DEFAULT_HOST.into(),
            base_images: BaseImages::default(),
            memory_mb: 512,
            cpus: 1.0,
            pids_limit: 256,
            keep_images: 5,
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
        if !(1..=1000).contains(&self.keep_images) {
            return Err(format!(
                "keep_images must be between 1 and 1000, got {}",
                self.keep_images
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

struct Connection {
    settings: DockerSettings,
    /// Negotiated lazily: an engine that is down must not stop berth from starting.
    engine: tokio::sync::OnceCell<Engine>,
}

/// Runs deployments as containers on one Docker Engine.
#[derive(Clone)]
pub struct DockerProvider {
    owner: String,
    current: Arc<Mutex<Arc<Connection>>>,
}

impl DockerProvider {
    /// A provider for the installation `owner` (a stable id of this berth's data dir).
    pub fn new(owner: impl Into<String>, settings: DockerSettings) -> Self {
        Self {
            owner: owner.into(),
            current: Arc::new(Mutex::new(Arc::new(Connection {
                settings,
                engine: tokio::sync::OnceCell::new(),
            }))),
        }
    }

    /// The installation id recorded on every container and image as `berth.owner`. Kept
    /// in `<data>/docker-owner` so that it survives restarts (adoption depends on it).
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

    /// The settings in force.
    pub fn settings(&self) -> DockerSettings {
        self.connection().settings.clone()
    }

    /// Replaces the settings; the next call connects to the (possibly new) host.
    pub fn reconfigure(&self, settings: DockerSettings) {
        *self.current.lock().expect("docker settings lock") = Arc::new(Connection {
            settings,
            engine: tokio::sync::OnceCell::new(),
        });
    }

    fn connection(&self) -> Arc<Connection> {
        self.current.lock().expect("docker settings lock").clone()
    }

    /// The engine, connected and version-negotiated; fails with a message naming the host
    /// and the next step when it is down.
    pub async fn engine(&self) -> Result<Engine, EngineError> {
        let conn = self.connection();
        conn.engine
            .get_or_try_init(|| async { Engine::connect(&conn.settings.host)?.negotiate().await })
            .await
            .cloned()
    }

    /// "Test connection": pings the engine and reports its version.
    pub async fn test_connection(&self) -> Result<EngineReport, EngineError> {
        self.engine().await?.probe().await
    }

    /// Builds a deployment's image (see [`image::build`]) and then removes the site's
    /// images beyond `keep_images`, never one in `in_use`.
    pub async fn build_image(
        &self,
        app_dir: &Path,
        recipe: &ImageRecipe,
        who: &ImageOwner<'_>,
        in_use: &[String],
        on_line: &mut (dyn FnMut(String) + Send),
    ) -> Result<String, BuildError> {
        let engine = self.engine().await?;
        let tag = image::build(&engine, app_dir, recipe, who, on_line).await?;
        let keep = self.connection().settings.keep_images;
        let mut protected = in_use.to_vec();
        protected.push(tag.clone());
        if let Err(err) = image::collect_garbage(&engine, &self.owner, who.org, who.site, keep, &protected).await {
            tracing::warn!(site = %who.site, error = %err, "removing old images failed");
        }
        Ok(tag)
    }

    /// A container spec for one instance, with this provider's limits.
    pub fn container_spec(&self, base: ContainerSpec) -> ContainerSpec {
        let settings = self.settings();
        ContainerSpec {
            memory_mb: settings.memory_mb,
            cpus: settings.cpus,
            pids_limit: settings.pids_limit,
            ..base
        }
    }

    /// Starts (or adopts) one instance.
    pub async fn launch(&self, spec: &ContainerSpec) -> Result<Container, EngineError> {
        let engine = self.engine().await?;
        container::launch(&engine, &self.owner, spec).await
    }

    /// Removes this installation's containers of instances not in `keep`.
    pub async fn sweep(&self, keep: &HashSet<(String, u32)>) -> Result<usize, EngineError> {
        let engine = self.engine().await?;
        container::sweep(&engine, &self.owner, keep).await
    }

    /// CPU and memory of one instance, when its container runs.
    pub async fn usage(&self, deployment_id: &str, index: u32) -> Option<ContainerUsage> {
        let engine = self.engine().await.ok()?;
        container::usage(&engine, &self.owner, deployment_id, index).await
    }

    /// Removes every image of a site made by this installation (the site was deleted).
    pub async fn remove_site_images(&self, org: &str, site: &str) -> Result<(), EngineError> {
        let engine = self.engine().await?;
        image::collect_garbage(&engine, &self.owner, org, site, 0, &[])
            .await
            .map(|_| ())
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
    fn owner_id_is_stable_per_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = DockerProvider::owner_id(dir.path()).unwrap();
        assert_eq!(DockerProvider::owner_id(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(DockerProvider::owner_id(other.path()).unwrap(), a);
    }
}
