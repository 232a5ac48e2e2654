//! `HOSTING_GET_RESOURCE_USAGE`: CPU and memory of each running instance of an
//! environment, as its provider measures them (docker: the engine's stats; local reports
//! none yet), and the disk the whole site holds (its logs per environment, its
//! deployments' folders, its build cache) with the settings that bound each.

use crate::service::access::{Action, Target};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ServiceResult;
use crate::model::Actor;

use super::*;

/// `HOSTING_GET_RESOURCE_USAGE` input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceUsageInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
}

/// One instance's usage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InstanceUsage {
    /// Which instance of the deployment (0-based).
    pub index: u32,
    /// `starting`, `healthy`, `restarting`, `crashed`, or `paused` (asleep in place on docker).
    pub state: String,
    /// CPU use in percent of one core, when the provider measures it.
    pub cpu_percent: Option<f64>,
    /// Memory in use in bytes, when the provider measures it.
    pub memory_bytes: Option<u64>,
    /// Memory limit in bytes, when one is set.
    pub memory_limit_bytes: Option<u64>,
}

/// `HOSTING_GET_RESOURCE_USAGE` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResourceUsageOutput {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// The site's provider.
    pub provider: String,
    /// The deployment the environment serves, if any.
    pub deployment_id: Option<String>,
    /// Its instances: paused ones while a docker site sleeps in place; none while other
    /// sites sleep, or for static sites.
    pub instances: Vec<InstanceUsage>,
    /// The disk the whole site holds (every environment), and what bounds it.
    pub disk: SiteDisk,
    /// Why CPU and memory are not reported, when the site's target cannot tell (e.g. a
    /// Kubernetes cluster without a metrics API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_unavailable: Option<String>,
}

/// One environment's stored log.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentLogBytes {
    /// Environment name.
    pub environment: String,
    /// Its stored log: each build and runtime line's text plus 256 bytes for its record.
    pub bytes: u64,
}

/// The disk a site holds, by what bounds it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SiteDisk {
    /// Stored log per environment, each kept under `log_retention_bytes` (its oldest
    /// runtime lines go first) and `log_retention_days`.
    pub logs: Vec<EnvironmentLogBytes>,
    /// The size bound of each environment's log (`--log-retention-mb`).
    pub log_retention_bytes: u64,
    /// The age bound of every line (`--log-retention-days`).
    pub log_retention_days: u64,
    /// Deployment folders (source and build output) on the server's disk, measured at
    /// most a minute ago.
    pub deployments_bytes: u64,
    /// How many deployment folders there are.
    pub deployment_folders: u64,
    /// Deployments kept per environment (`--keep-deployments`), beside any an
    /// environment serves; older ones lose their folder.
    pub kept_per_environment: u64,
    /// The build cache: the last two dependency installs and package managers, measured
    /// at most a minute ago; each came out of a build bounded by `--build-disk-mb`.
    pub build_cache_bytes: u64,
    /// All of the above.
    pub total_bytes: u64,
}

/// How long a measured folder size is reused: walking a deployment's tree (its
/// `node_modules`, say) on every call would cost more than the call itself.
const FOLDER_SIZE_TTL: Duration = Duration::from_secs(60);

/// Folder sizes measured recently, by path (a path names one folder of one data dir, so
/// servers in one process share it safely). Entries past their time are dropped.
static FOLDER_SIZES: LazyLock<Mutex<HashMap<PathBuf, (u64, Instant)>>> = LazyLock::new(Mutex::default);

/// Bytes a folder takes on disk (allocated blocks, links not followed), from the cache
/// when measured less than [`FOLDER_SIZE_TTL`] ago; 0 when it does not exist.
fn folder_size(path: &Path) -> u64 {
    let now = Instant::now();
    if let Some((bytes, at)) = FOLDER_SIZES.lock().expect("sizes lock").get(path)
        && now.duration_since(*at) < FOLDER_SIZE_TTL
    {
        return *bytes;
    }
    let bytes = walk_size(path);
    let mut sizes = FOLDER_SIZES.lock().expect("sizes lock");
    sizes.retain(|_, (_, at)| now.duration_since(*at) < FOLDER_SIZE_TTL);
    sizes.insert(path.to_path_buf(), (bytes, now));
    bytes
}

fn walk_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        total += meta.blocks() * 512;
        if !meta.is_dir() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.path()),
                Ok(_) => total += entry.metadata().map(|m| m.blocks() * 512).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

impl Service {
    /// `HOSTING_GET_RESOURCE_USAGE`.
    pub async fn get_resource_usage(
        &self,
        actor: &Actor,
        input: &ResourceUsageInput,
    ) -> ServiceResult<ResourceUsageOutput> {
        self.authorize(
            actor,
            Action::ReadSites,
            Target::Environment(&input.site, Some(input.environment.as_deref().unwrap_or("production"))),
        )
        .await?;
        let site = self.find_site(actor, &input.site).await?;
        let env = self
            .find_environment(&site, input.environment.as_deref().unwrap_or("production"))
            .await?;
        let mut instances = Vec::new();
        let mut usage_unavailable = None;
        if let Some(deployment_id) = env.deployment_id.as_deref() {
            let target = self.platform.target(&site.provider)?;
            let observed = self.platform.observe(&site.provider, deployment_id);
            // Another replica runs this shared target: its engine is this replica's too.
            let usage = if self.platform.shared.run_elsewhere(&site.provider) {
                let indexes: Vec<u32> = observed.iter().map(|o| o.index).collect();
                Ok(self
                    .platform
                    .runtime
                    .usage_of(deployment_id, &site.provider, &indexes)
                    .await)
            } else {
                target.usage_report(&self.platform.runtime, deployment_id).await
            };
            let usage = match usage {
                Ok(usage) => usage,
                Err(why) => {
                    usage_unavailable = Some(why);
                    Vec::new()
                }
            };
            for o in observed.iter().filter(|o| !o.draining) {
                let measured = usage.iter().find(|(i, _)| *i == o.index).and_then(|(_, u)| u.clone());
                instances.push(InstanceUsage {
                    index: o.index,
                    state: o.state.label().into(),
                    cpu_percent: measured.as_ref().map(|u| u.cpu_percent),
                    memory_bytes: measured.as_ref().map(|u| u.memory_bytes),
                    memory_limit_bytes: measured.and_then(|u| u.memory_limit_bytes),
                });
            }
            instances.sort_by_key(|i| i.index);
        }
        let disk = self.site_disk(&site).await?;
        Ok(ResourceUsageOutput {
            site: site.name,
            environment: env.name,
            provider: site.provider,
            deployment_id: env.deployment_id,
            instances,
            disk,
            usage_unavailable,
        })
    }

    async fn site_disk(&self, site: &store::SiteRow) -> ServiceResult<SiteDisk> {
        let config = &self.platform.config;
        let logs: Vec<EnvironmentLogBytes> = self
            .platform
            .store
            .site_log_bytes(&site.id)
            .await?
            .into_iter()
            .map(|(environment, bytes)| EnvironmentLogBytes {
                environment,
                bytes: bytes.max(0) as u64,
            })
            .collect();
        let deployments = self.platform.store.site_deployment_ids(&site.id).await?;
        let folders: Vec<PathBuf> = deployments
            .iter()
            .map(|id| config.deployments_dir().join(id))
            .filter(|p| p.is_dir())
            .collect();
        let cache = config.cache_dir().join(&site.id);
        let (deployments_bytes, build_cache_bytes) = tokio::task::spawn_blocking({
            let folders = folders.clone();
            move || (folders.iter().map(|p| folder_size(p)).sum::<u64>(), folder_size(&cache))
        })
        .await
        .unwrap_or_default();
        let log_bytes: u64 = logs.iter().map(|l| l.bytes).sum();
        Ok(SiteDisk {
            logs,
            log_retention_bytes: config.logs.retention_mb << 20,
            log_retention_days: config.logs.retention_days,
            deployments_bytes,
            deployment_folders: folders.len() as u64,
            kept_per_environment: config.keep_deployments,
            build_cache_bytes,
            total_bytes: log_bytes + deployments_bytes + build_cache_bytes,
        })
    }
}
