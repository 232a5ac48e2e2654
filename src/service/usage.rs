//! `HOSTING_GET_RESOURCE_USAGE`: CPU and memory of each running instance of an
//! environment, as its provider measures them (docker: the engine's stats; local reports
//! none yet).

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
}

impl Service {
    /// `HOSTING_GET_RESOURCE_USAGE`.
    pub async fn get_resource_usage(
        &self,
        actor: &Actor,
        input: &ResourceUsageInput,
    ) -> ServiceResult<ResourceUsageOutput> {
        let site = self.find_site(actor, &input.site).await?;
        let env = self
            .find_environment(&site, input.environment.as_deref().unwrap_or("production"))
            .await?;
        let mut instances = Vec::new();
        if let Some(deployment_id) = env.deployment_id.as_deref() {
            let observed = self.platform.runtime.observe(deployment_id);
            let usage = self.platform.runtime.usage(deployment_id, &site.provider).await;
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
        Ok(ResourceUsageOutput {
            site: site.name,
            environment: env.name,
            provider: site.provider,
            deployment_id: env.deployment_id,
            instances,
        })
    }
}
