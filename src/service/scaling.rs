//! Scale settings of an environment: how many instances run, and when an idle one sleeps
//! (scale to zero; the edge wakes it on the next request).

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::service::access::{Action, Target};
use crate::store::{self, ScalingRow};

use super::*;

/// Largest instance count of one environment.
const MAX_INSTANCES: i64 = crate::runtime::MAX_INSTANCES as i64;

impl Service {
    /// `HOSTING_GET_SCALING_CONFIG`.
    pub async fn get_scaling(&self, actor: &Actor, input: &ScalingRef) -> ServiceResult<ScalingConfig> {
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
        self.scaling_config(&site, &env).await
    }

    async fn scaling_config(&self, site: &store::SiteRow, env: &store::EnvironmentRow) -> ServiceResult<ScalingConfig> {
        let row = self.platform.store.get_scaling(&env.id).await?;
        let observed = env
            .deployment_id
            .as_deref()
            .map(|id| self.platform.observe(&site.provider, id))
            .unwrap_or_default();
        let running = observed
            .iter()
            .filter(|o| !o.draining && o.state != InstanceState::Paused)
            .count();
        let instances = observed
            .iter()
            .map(|o| InstanceInfo {
                index: o.index,
                state: o.state.label().to_string(),
                draining: o.draining,
            })
            .collect();
        Ok(ScalingConfig {
            site: site.name.clone(),
            environment: env.name.clone(),
            min_instances: row.min_instances,
            max_instances: row.max_instances,
            idle_timeout_seconds: row.idle_timeout_seconds,
            target_concurrency: row.target_concurrency,
            memory_mb: row.memory_mb,
            cpus: row.cpu_millis.map(|m| m as f64 / 1000.0),
            running_instances: running as i64,
            instances,
        })
    }

    /// `HOSTING_SET_SCALING_CONFIG` and `HOSTING_SCALE_ENVIRONMENT`: validated as a whole,
    /// then written at once; the reconciler applies it.
    pub async fn set_scaling(
        &self,
        actor: &Actor,
        action: &'static str,
        input: &SetScalingInput,
    ) -> ServiceResult<ScalingConfig> {
        self.authorize(
            actor,
            Action::CreateSite,
            Target::Environment(&input.site, Some(input.environment.as_deref().unwrap_or("production"))),
        )
        .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, action, input.idempotency_key.as_deref(), async {
                let site = self.find_site(actor, &input.site).await?;
                let env = self
                    .find_environment(&site, input.environment.as_deref().unwrap_or("production"))
                    .await?;
                let current = self.platform.store.get_scaling(&env.id).await?;
                let next = ScalingRow {
                    min_instances: input.min_instances.unwrap_or(current.min_instances),
                    max_instances: input.max_instances.unwrap_or(current.max_instances),
                    idle_timeout_seconds: input.idle_timeout_seconds.unwrap_or(current.idle_timeout_seconds),
                    target_concurrency: input.target_concurrency.unwrap_or(current.target_concurrency),
                    memory_mb: match input.memory_mb {
                        Some(0) => None,
                        Some(mb) => Some(mb),
                        None => current.memory_mb,
                    },
                    cpu_millis: match input.cpus {
                        Some(0.0) => None,
                        Some(c) if c.is_finite() && (0.05..=64.0).contains(&c) => Some((c * 1000.0).round() as i64),
                        Some(c) => {
                            return Err(ServiceError::invalid(
                                "cpus",
                                format!("cpus must be 0.05 to 64 cores (0 for the server's default), not {c}"),
                            ));
                        }
                        None => current.cpu_millis,
                    },
                };
                validate_scaling(&next)?;
                super::capabilities::check_scaling(&site, &next)?;
                self.check_instances_allowed(&site, &next).await?;
                self.platform.store.scale_environment(&site, &env, &next).await?;
                // A target whose platform scales by itself (Knative) gets the settings now.
                if let Some(env) = self.platform.store.get_environment_by_id(&env.id).await?
                    && let Some(spec) = self.platform.serving_spec(&site, &env).await?
                {
                    let target = self.platform.target(&site.provider)?;
                    target.scale_changed(spec).await.map_err(|e| {
                        ServiceError::conflict(format!(
                            "the scale settings are saved, but target '{}' did not apply them: {e}; retry, or deploy again to apply them",
                            site.provider
                        ))
                    })?;
                }
                crate::loops::reconciler::reconcile(&self.platform).await?;
                self.scaling_config(&site, &env).await
            })
            .await;
        self.audit(actor, action, args, &result).await;
        result
    }
}

fn validate_scaling(s: &ScalingRow) -> ServiceResult<()> {
    if !(0..=MAX_INSTANCES).contains(&s.min_instances) {
        return Err(ServiceError::invalid(
            "min_instances",
            format!(
                "min_instances must be 0 (sleep when idle) to {MAX_INSTANCES}, not {}",
                s.min_instances
            ),
        ));
    }
    if s.max_instances < 1 || s.max_instances > MAX_INSTANCES {
        return Err(ServiceError::invalid(
            "max_instances",
            format!("max_instances must be 1 to {MAX_INSTANCES}, not {}", s.max_instances),
        ));
    }
    if s.min_instances > s.max_instances {
        return Err(ServiceError::invalid(
            "min_instances",
            "min_instances cannot be above max_instances",
        ));
    }
    if !(5..=86_400).contains(&s.idle_timeout_seconds) {
        return Err(ServiceError::invalid(
            "idle_timeout_seconds",
            "idle_timeout_seconds must be 5-86400",
        ));
    }
    if let Some(mb) = s.memory_mb
        && !(16..=65_536).contains(&mb)
    {
        return Err(ServiceError::invalid(
            "memory_mb",
            format!("memory_mb must be 16 to 65536 MiB (0 for the server's default), not {mb}"),
        ));
    }
    if !(1..=1000).contains(&s.target_concurrency) {
        return Err(ServiceError::invalid(
            "target_concurrency",
            "target_concurrency must be 1-1000",
        ));
    }
    Ok(())
}
