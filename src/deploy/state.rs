//! The deployment state machine as the deploy work drives it: status moves with their
//! events, activation (a deployment starts serving its environment, atomically with the
//! superseded ones), pointing an environment at a built deployment (promote, rollback),
//! what an instance is started with, and the pruning of builds nothing serves. Transitions
//! themselves are decided in [`DeploymentStatus::can_become`]; these are the only places
//! that make them.

use berth_build::detect::{BuildPlan, ServePlan};

use crate::model::DeploymentStatus;
use crate::platform::Platform;
use crate::runtime::InstanceSpec;
use crate::runtime::target::BuildKind;
use crate::store::{Activation, DeploymentRow, EnvironmentRow, SiteRow};

impl Platform {
    /// Moves a deployment along the state machine, recording the event with the change.
    pub async fn set_status(
        &self,
        d: &DeploymentRow,
        to: DeploymentStatus,
        error: Option<&str>,
    ) -> anyhow::Result<bool> {
        let moved = self.store.set_deployment_status(d, to, error).await?;
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
    /// its status moves, and its "deployment is live" line before the lock is released, so
    /// a caller told "live" (wait, or a read that waits for the lock) reads the whole log.
    pub async fn activate(&self, d: &DeploymentRow) -> anyhow::Result<bool> {
        self.logs.flush().await;
        let routes = self.reconcile_lock.lock().await;
        match self.store.activate_deployment(d).await? {
            Activation::Live => {}
            Activation::Superseded(_) => {
                self.events.notify();
                return Ok(false);
            }
            Activation::NoLongerLive => anyhow::bail!("deployment {} can no longer go live (cancelled?)", d.id),
        }
        if let Err(err) = crate::loops::reconciler::reconcile_holding_lock(self).await {
            // Committed live, not yet routed here: the reconciler's next pass routes it.
            tracing::warn!(deployment.id = %d.id, error = %format!("{err:#}"), "the deployment is live but publishing its route failed; the reconciler retries");
            drop(routes);
            self.reconcile_wake.notify_one();
            self.events.notify();
            return Err(err);
        }
        // Its last build line is in the store before a reader waiting on the lock is told.
        self.log(&d.id, "build", "system", "deployment is live".into());
        self.logs.flush().await;
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
        let environment = self
            .store
            .get_environment_by_id(&d.environment_id)
            .await?
            .map(|e| e.name)
            .unwrap_or_default();
        let target = self.target(&site.provider)?;
        // A deployment built into something the target runs (an image) runs as the
        // target's; one built by steps runs as the site's own host uid.
        let built_here = target.build_for(plan) == BuildKind::SandboxSteps;
        let scaling = self.store.get_scaling(&d.environment_id).await?;
        let resources = self.site_resources(site).await?;
        Ok(Some(InstanceSpec {
            deployment_id: deployment_id.to_string(),
            provider: site.provider.clone(),
            org: site.org_id.clone(),
            host: self.host_for(&site.name, &environment),
            domains: self.served_domains(&d.environment_id).await?,
            environment,
            image: target.instance_image(&site.name, deployment_id, plan),
            provider_config: self.provider_config(&site.org_id, &site.provider).await?,
            site: site.name.clone(),
            app_dir: crate::deploy::app_dir(self, deployment_id),
            command: command.clone(),
            port: *port,
            env: with_resource_env(self.app_env(site, &d.environment_id, deployment_id).await?, &resources),
            health_check_path: plan.health_check_path.clone(),
            start_timeout: self.config.timeouts.start(),
            build_timeout: self.config.timeouts.build(),
            uid: if built_here { self.site_uid(site).await? } else { None },
            size: instance_size(&scaling),
            resources,
            scale: instance_scale(&scaling),
        }))
    }

    /// What a release of the environment would run, for a dry run: its current
    /// deployment's plan with the environment's variables and domains as they are now,
    /// no image; `None` when no app runs there yet.
    pub async fn dry_run_spec(&self, site: &SiteRow, env: &EnvironmentRow) -> anyhow::Result<Option<InstanceSpec>> {
        Ok(self.serving_spec(site, env).await?.map(|mut spec| {
            spec.deployment_id = "dry-run".into();
            spec.image = None;
            spec
        }))
    }

    /// What the environment's serving deployment runs with the environment's variables,
    /// domains and scale settings as they are now (a restart, a scale change); `None`
    /// when no app runs there.
    pub async fn serving_spec(&self, site: &SiteRow, env: &EnvironmentRow) -> anyhow::Result<Option<InstanceSpec>> {
        let Some(id) = &env.deployment_id else {
            return Ok(None);
        };
        let Some(d) = self.store.get_deployment_any_org(id).await? else {
            return Ok(None);
        };
        let Some(plan) = d
            .build_plan
            .as_deref()
            .and_then(|p| serde_json::from_str::<BuildPlan>(p).ok())
        else {
            return Ok(None);
        };
        self.instance_spec(&d, site, &plan).await
    }

    /// A stand-in for the release of an environment that runs no app yet, for a dry run:
    /// the site's build settings as they are (start command, port, health check path;
    /// berth's defaults where the first build would decide) with the environment's
    /// variables and domains, no image.
    pub async fn stand_in_spec(&self, site: &SiteRow, env: &EnvironmentRow) -> anyhow::Result<InstanceSpec> {
        let settings: berth_build::detect::BuildSettings =
            serde_json::from_str(&site.build_settings).unwrap_or_default();
        let deployment_id = "dry-run";
        let scaling = self.store.get_scaling(&env.id).await?;
        let resources = self.site_resources(site).await?;
        Ok(InstanceSpec {
            deployment_id: deployment_id.to_string(),
            provider: site.provider.clone(),
            org: site.org_id.clone(),
            host: self.host_for(&site.name, &env.name),
            domains: self.served_domains(&env.id).await?,
            environment: env.name.clone(),
            image: None,
            provider_config: self.provider_config(&site.org_id, &site.provider).await?,
            site: site.name.clone(),
            app_dir: crate::deploy::app_dir(self, deployment_id),
            command: settings.start_command.unwrap_or_default(),
            port: settings.port,
            env: with_resource_env(self.app_env(site, &env.id, deployment_id).await?, &resources),
            health_check_path: settings.health_check_path.unwrap_or_else(|| "/".into()),
            start_timeout: self.config.timeouts.start(),
            build_timeout: self.config.timeouts.build(),
            uid: None,
            size: instance_size(&scaling),
            resources,
            scale: instance_scale(&scaling),
        })
    }

    /// The custom domains the edge serves for an environment, each with the certificate
    /// berth holds for it (valid now), opened.
    pub async fn served_domains(&self, environment_id: &str) -> anyhow::Result<Vec<crate::runtime::ServedDomain>> {
        let store = &self.store;
        let now = crate::util::now_ms();
        let mut served = Vec::new();
        for domain in store.list_all_domains().await? {
            let serving =
                crate::model::DomainStatus::parse(&domain.status).is_some_and(crate::model::DomainStatus::is_served);
            if domain.environment_id != environment_id || !serving {
                continue;
            }
            let certificate = match store.get_certificate(&domain.name).await? {
                Some(row) if row.not_after > now => match crate::platform::certificates::open(self, &row) {
                    Ok((chain, key)) => Some(crate::runtime::DomainCertificate { chain, key }),
                    Err(e) => {
                        tracing::warn!(domain = %domain.name, error = %format!("{e:#}"), "a stored certificate cannot be opened; not given to the target");
                        None
                    }
                },
                _ => None,
            };
            served.push(crate::runtime::ServedDomain {
                name: domain.name,
                certificate,
            });
        }
        Ok(served)
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
            crate::deploy::app_dir(self, &from.id),
            crate::deploy::app_dir(self, &copy.id),
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
            self.store.insert_deployment(&copy).await?;
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
        let from_env = self
            .store
            .get_environment_by_id(&from.environment_id)
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

    /// Removes a deployment (a pruned one, or a promotion's copy that did not go live):
    /// its row, logs and files, and what its target keeps of it (an image record; its
    /// image tag goes with the site's image garbage collection). One an environment
    /// points at is kept.
    pub async fn forget_deployment(&self, id: &str) {
        let store = &self.store;
        // Whose it was, so that its target can forget what it keeps of it.
        let site = match store.get_deployment_any_org(id).await {
            Ok(Some(d)) => store.get_site_by_id(&d.site_id).await.ok().flatten(),
            _ => None,
        };
        match store.delete_deployment(id).await {
            Ok(true) => {
                self.runtime.stop(id).await;
                let _ = tokio::fs::remove_dir_all(self.config.deployments_dir().join(id)).await;
                if let Some(site) = site
                    && let Ok(target) = self.target(&site.provider)
                {
                    target.deployment_forgotten(&site.name, id).await;
                }
            }
            Ok(false) => {} // an environment serves it after all: it stays
            Err(err) => tracing::warn!(deployment.id = %id, error = %err, "removing a deployment failed"),
        }
    }

    /// Keeps an environment's newest `--keep-deployments` finished deployments (and any an
    /// environment serves); older ones lose their record, logs and files. What a target
    /// keeps of builds (images) is bounded by its own settings. Returns how many were
    /// removed.
    pub async fn prune_environment(&self, environment_id: &str) -> usize {
        let keep = self.config.keep_deployments as i64;
        let doomed = match self.store.prunable_deployments(environment_id, keep).await {
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
        match self.store.all_environment_ids().await {
            Ok(ids) => {
                for id in ids {
                    self.prune_environment(&id).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "listing environments to prune failed"),
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
        let target = self.target(&site.provider)?;
        let started = match self.instance_spec(d, site, &plan).await? {
            Some(spec) => target
                .release(&self.runtime, spec)
                .await
                .map(drop)
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
            self.store.point_environment(site, env, d).await?;
            self.events.notify();
            crate::loops::reconciler::reconcile(self).await?;
            anyhow::Ok(())
        }
        .await;
        self.unregister_cancel(&d.id);
        pointed
    }
}

/// An instance's size from its environment's scaling settings.
fn instance_size(scaling: &crate::store::ScalingRow) -> crate::runtime::InstanceSize {
    crate::runtime::InstanceSize {
        memory_mb: scaling.memory_mb.map(|m| m as u64),
        cpus: scaling.cpu_millis.map(|m| m as f64 / 1000.0),
    }
}

/// The scale bounds a target that scales by itself (Knative) is given.
fn instance_scale(scaling: &crate::store::ScalingRow) -> crate::runtime::InstanceScale {
    crate::runtime::InstanceScale {
        min_instances: scaling.min_instances.clamp(0, 1000) as u32,
        max_instances: scaling.max_instances.clamp(1, 1000) as u32,
        target_concurrency: scaling.target_concurrency.clamp(1, 1000) as u32,
    }
}

/// `env` (berth's defaults and the site's own variables) with the variables of the site's
/// resources added; a variable the site sets itself keeps its value.
fn with_resource_env(
    mut env: Vec<(String, String)>,
    resources: &[crate::runtime::AttachedResource],
) -> Vec<(String, String)> {
    for (name, value) in crate::platform::resources::resource_env(resources) {
        if !env.iter().any(|(k, _)| *k == name) {
            env.push((name, value));
        }
    }
    env
}
