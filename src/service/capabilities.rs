//! Tools consult the capability table of a site's target (`runtime::target`) before they
//! change anything: an operation the target cannot do is refused with an error naming
//! the target and the capability, and nothing is stored, started or moved.

use berth_build::detect::BuildPlan;

use crate::error::{ServiceError, ServiceResult};
use crate::runtime::target::{self, PromoteWithoutRebuild, Registration, ScaleToZero};
use crate::store::{self, ScalingRow};

use super::*;

/// The registered target a site runs on.
pub(super) fn target_of(site: &store::SiteRow) -> ServiceResult<&'static Registration> {
    target::find(&site.provider).ok_or_else(|| {
        ServiceError::conflict(format!(
            "site '{}' runs on provider '{}', which this berth does not know (known: {}); delete and recreate the site on one of them",
            site.name,
            site.provider,
            target::names()
        ))
    })
}

/// Refuses scale settings the site's target cannot run.
pub(super) fn check_scaling(site: &store::SiteRow, next: &ScalingRow) -> ServiceResult<()> {
    let t = target_of(site)?;
    let caps = t.capabilities;
    if next.min_instances == 0 && caps.scale_to_zero == ScaleToZero::Unsupported {
        return Err(ServiceError::invalid(
            "min_instances",
            format!(
                "target '{}' cannot scale to zero (capability scale_to_zero: unsupported); set min_instances to 1 or more",
                t.name
            ),
        ));
    }
    if next.max_instances > i64::from(caps.max_instances) {
        return Err(ServiceError::invalid(
            "max_instances",
            format!(
                "target '{}' runs at most {} instances per environment (capability max_instances); set max_instances to {} or less",
                t.name, caps.max_instances, caps.max_instances
            ),
        ));
    }
    Ok(())
}

impl Service {
    /// Refuses more instances than the org's settings of the site's target allow (at
    /// most the capability table's `max_instances`; e.g. kubernetes' `max_replicas`).
    pub(super) async fn check_instances_allowed(&self, site: &store::SiteRow, next: &ScalingRow) -> ServiceResult<()> {
        let target = self.platform.target(&site.provider)?;
        let settings = self.platform.provider_config(&site.org_id, &site.provider).await?;
        let most = target.max_instances(&settings);
        if next.max_instances > i64::from(most) {
            return Err(ServiceError::invalid(
                "max_instances",
                format!(
                    "target '{}' runs at most {most} instances per environment under this org's settings; set max_instances to {most} or less, or raise the target's limit with HOSTING_SET_CONFIG",
                    site.provider
                ),
            ));
        }
        Ok(())
    }

    /// Refuses to point an environment at `d` (promote, rollback) when the site's target
    /// cannot serve it without building it again.
    pub(super) async fn check_promotable(&self, site: &store::SiteRow, d: &store::DeploymentRow) -> ServiceResult<()> {
        let t = target_of(site)?;
        let refuse = |why: &str| {
            ServiceError::conflict(format!(
                "target '{}' cannot serve deployment {} without a rebuild (capability promote_without_rebuild: {}): {why}; deploy again to build it",
                t.name,
                d.id,
                serde_json::to_value(t.capabilities.promote_without_rebuild)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ))
        };
        match t.capabilities.promote_without_rebuild {
            PromoteWithoutRebuild::Always => Ok(()),
            PromoteWithoutRebuild::Unsupported => Err(refuse("every release on it is a build")),
            PromoteWithoutRebuild::WhileImageKept => {
                let Ok(plan) = serde_json::from_str::<BuildPlan>(d.build_plan.as_deref().unwrap_or_default()) else {
                    return Ok(()); // no plan: the caller's own check says it cannot serve
                };
                let target = self.platform.target(&site.provider)?;
                let settings = self.platform.provider_config(&site.org_id, &site.provider).await?;
                match target.kept(self.platform.site_ref(site, &settings), &plan, &d.id).await {
                    Ok(target::Kept::Yes) => Ok(()),
                    Ok(target::Kept::Gone(why)) => Err(refuse(&why)),
                    Err(e) => Err(ServiceError::conflict(e)),
                }
            }
        }
    }
}
