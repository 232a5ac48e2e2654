//! The activator's side of scale to zero: a request held by the edge for a sleeping
//! environment wakes it here.

use berth_edge::RouteTarget;

use crate::platform::Platform;

impl Platform {
    /// Wakes the sleeping environment served at `host` (the edge's activator calls this
    /// for a held request). Marking its deployment in progress keeps the reconciler from
    /// putting it back to sleep and makes it start the app; once the app is healthy (or
    /// failed) the routes are published again and the held request goes through.
    pub async fn wake(&self, host: &str) -> anyhow::Result<()> {
        let desired = self.store.list_desired_environments().await?;
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
        // A shared target another replica runs is woken there: it is asked to, and this
        // edge holds the request until the address it records is routed.
        let shared_elsewhere = self.shared.run_elsewhere(&env.provider);
        if shared_elsewhere {
            self.store
                .ask_shared_holder(&env.org_id, crate::events::HolderAsk::Wake, &env.deployment_id)
                .await?;
        }
        // A target that runs deployments elsewhere is woken by the reconciler's passes,
        // which scale it up and route its host once an instance is ready.
        let elsewhere = shared_elsewhere || self.target(&env.provider).is_ok_and(|t| t.provider().is_none());
        let _token = self.register_cancel(&env.deployment_id);
        let outcome = async {
            crate::loops::reconciler::reconcile(self).await?;
            let deadline = tokio::time::Instant::now() + self.config.timeouts.start();
            while tokio::time::Instant::now() < deadline {
                if elsewhere {
                    if matches!(self.edge.routes().get(host), Some(RouteTarget::Upstream { .. })) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    crate::loops::reconciler::reconcile(self).await?;
                    continue;
                }
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
        crate::loops::reconciler::reconcile(self).await?;
        outcome
    }

    /// Wakes a sleeping deployment another replica asked for (its edge holds a request),
    /// when this replica runs its target; any other replica ignores the ask. The woken app
    /// counts as just used here, so it is not put back to sleep before its idle timeout.
    pub async fn wake_for_another_replica(&self, deployment_id: &str) -> anyhow::Result<()> {
        let desired = self.store.list_desired_environments().await?;
        let Some(env) = desired.into_iter().find(|e| e.deployment_id == deployment_id) else {
            return Ok(());
        };
        if self.shared.run_elsewhere(&env.provider) || !self.targets.shared().contains(&env.provider.as_str()) {
            return Ok(());
        }
        let host = self.host_for(&env.site_name, &env.environment_name);
        self.edge.touch(&host);
        self.wake(&host).await
    }
}
