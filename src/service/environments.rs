//! Environments (production and previews), promote, rollback and cancel: moving an
//! environment's pointer between built deployments without rebuilding.

use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, DeploymentStatus, SourceKind, validate_site_name};
use crate::service::access::{Action, Target};
use crate::store::{self, EnvironmentRow};
use crate::util::new_id;

use super::*;

/// Environments a site may have (production included): every listing of them is bounded.
pub const MAX_ENVIRONMENTS_PER_SITE: usize = 100;

impl Service {
    /// `HOSTING_LIST_ENVIRONMENTS`: one page, production first and then previews by name.
    pub async fn list_environments(
        &self,
        actor: &Actor,
        input: &ListEnvironmentsInput,
    ) -> ServiceResult<EnvironmentList> {
        self.authorize(actor, Action::ReadSites, Target::Site(&input.site))
            .await?;
        let limit = page_limit(input.limit)?;
        // The cursor is the name of the previous page's last environment.
        let after = input.cursor.as_deref().unwrap_or("");
        if !after.is_empty() && validate_site_name(after).is_err() {
            return Err(bad_cursor());
        }
        let site = self.find_site(actor, &input.site).await?;
        let mut rows = self
            .platform
            .store
            .list_environments_page(&site.id, after, i64::from(limit) + 1)
            .await?;
        let next_cursor = super::cut_page(&mut rows, limit as usize, |e| e.name.clone());
        Ok(EnvironmentList {
            environments: self.environment_infos(&site, &rows).await?,
            next_cursor,
        })
    }

    /// `HOSTING_CREATE_ENVIRONMENT`: a preview environment. Git sites build the given
    /// branch or commit into it; other sites start it on production's current deployment.
    pub async fn create_environment(
        &self,
        actor: &Actor,
        input: CreateEnvironmentInput,
        on_progress: &mut (dyn FnMut(&DeploymentInfo) + Send),
    ) -> ServiceResult<EnvironmentOutput> {
        self.authorize(
            actor,
            Action::CreateSite,
            Target::Environment(&input.site, Some(&input.name)),
        )
        .await?;
        let args = serde_json::to_value(&input).unwrap_or_default();
        let (wait, timeout) = (input.wait.unwrap_or(false), input.timeout_seconds);
        let result = self
            .idempotent(
                actor,
                "HOSTING_CREATE_ENVIRONMENT",
                input.idempotency_key.as_deref(),
                async { self.create_environment_inner(actor, &input).await },
            )
            .await;
        self.audit(actor, "HOSTING_CREATE_ENVIRONMENT", args, &result).await;
        let mut out = result?;
        if wait
            && let Some(d) = &out.deployment
            && !d.status.is_final()
        {
            out.deployment = Some(self.wait_for(actor, &d.id, timeout, on_progress).await?);
            let site = self.find_site(actor, &input.site).await?;
            let env = self.find_environment(&site, &input.name).await?;
            out.environment = self.environment_info(&site, &env).await?;
        }
        Ok(out)
    }

    async fn create_environment_inner(
        &self,
        actor: &Actor,
        input: &CreateEnvironmentInput,
    ) -> ServiceResult<EnvironmentOutput> {
        let site = self.find_site(actor, &input.site).await?;
        validate_environment_name(&input.name, &site.name)?;
        let store = &self.platform.store;
        // Bounded, so a site's listings and a push storm of branches stay small.
        if store.list_environments(&site.id).await?.len() >= MAX_ENVIRONMENTS_PER_SITE {
            return Err(ServiceError::conflict(format!(
                "site '{}' has {MAX_ENVIRONMENTS_PER_SITE} environments, the most a site may have; delete previews it no longer needs with HOSTING_DELETE_ENVIRONMENT (or delete their branches)",
                site.name
            )));
        }
        if store.get_environment(&site.id, &input.name).await?.is_some() {
            return Err(ServiceError::conflict(format!(
                "site '{}' already has an environment '{}'; deploy to it with HOSTING_DEPLOY {{\"site\": \"{}\", \"environment\": \"{}\"}}",
                site.name, input.name, site.name, input.name
            )));
        }
        let is_git = site.source_kind == SourceKind::Git.as_str();
        if !is_git && (input.branch.is_some() || input.commit.is_some()) {
            return Err(ServiceError::invalid(
                "branch",
                "branch and commit apply to sites that deploy from git",
            ));
        }
        if let (true, Some(branch), Some(repo)) = (is_git, &input.branch, &site.source) {
            let auth = self.platform.git_auth_for(&actor.org_id, repo).await;
            crate::source::check_remote_with(repo, Some(branch), self.platform.config.timeouts.fetch(), auth.as_ref())
                .await
                .map_err(|e| ServiceError::invalid("branch", e.to_string()))?;
        }
        let production = self.find_environment(&site, "production").await?;
        let env = EnvironmentRow {
            id: new_id("env"),
            org_id: actor.org_id.clone(),
            site_id: site.id.clone(),
            name: input.name.clone(),
            branch: input.branch.clone().or_else(|| site.branch.clone()),
            deployment_id: None,
        };
        let deployment = if is_git || site.source_kind == SourceKind::Path.as_str() {
            let d = self
                .prepare_deployment(actor, &site, &env, env.branch.clone(), input.commit.clone(), None, None)
                .await?;
            let deploy = self.new_deploy(&site, &d)?;
            if let store::DeployQueued::OtherReplicasLive(others) =
                self.platform.store.create_environment(&env, Some(&deploy)).await?
            {
                return Err(ServiceError::conflict(crate::replicas::local_target_refusal_message(
                    others,
                )));
            }
            self.platform.jobs.notify();
            Some(self.deployment_info(&d).await?)
        } else {
            self.platform.store.create_environment(&env, None).await?;
            match &production.deployment_id {
                Some(id) => {
                    let d = store
                        .get_deployment(&actor.org_id, id)
                        .await?
                        .ok_or_else(|| ServiceError::not_found("production's deployment is gone"))?;
                    // Nothing to build from: the environment starts on production's build,
                    // as a deployment of its own so its instances run with its variables.
                    let copy = self
                        .platform
                        .copy_deployment_for(&site, &env, &d, Some(actor.key_name.clone()))
                        .await
                        .map_err(|e| {
                            ServiceError::conflict(format!("could not start '{}' on {}: {e:#}", env.name, d.id))
                        })?;
                    if let Err(err) = self.platform.point_environment(&env, &site, &copy).await {
                        self.platform.forget_deployment(&copy.id).await;
                        return Err(err.into());
                    }
                    Some(self.deployment_info(&copy).await?)
                }
                None => None,
            }
        };
        let env = self.find_environment(&site, &input.name).await?;
        Ok(EnvironmentOutput {
            environment: self.environment_info(&site, &env).await?,
            deployment,
        })
    }

    /// `HOSTING_DELETE_ENVIRONMENT`: stops its instances and removes its route and the
    /// deployments built for it (those another environment serves are kept).
    pub async fn delete_environment(&self, actor: &Actor, input: &EnvironmentRef) -> ServiceResult<EnvironmentList> {
        self.authorize(
            actor,
            Action::Delete,
            Target::Environment(&input.site, Some(&input.environment)),
        )
        .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, "HOSTING_DELETE_ENVIRONMENT", input.idempotency_key.as_deref(), async {
                let site = self.find_site(actor, &input.site).await?;
                if input.environment == "production" {
                    return Err(ServiceError::invalid(
                        "environment",
                        format!(
                            "production cannot be deleted while the site exists; delete the site with HOSTING_DELETE_SITE {{\"site\": \"{}\"}}",
                            site.name
                        ),
                    ));
                }
                let env = self.find_environment(&site, &input.environment).await?;
                let doomed = self.platform.store.delete_environment(&env).await?;
                // Its domains and their certificates went with it.
                super::certificates::publish(&self.platform).await?;
                for id in &doomed {
                    self.platform.cancel(id);
                }
                crate::loops::reconciler::reconcile(&self.platform).await?;
                for id in &doomed {
                    self.platform.runtime.stop(id).await;
                    let _ = tokio::fs::remove_dir_all(self.platform.config.deployments_dir().join(id)).await;
                }
                let first_page = ListEnvironmentsInput {
                    site: site.name.clone(),
                    ..Default::default()
                };
                self.list_environments(actor, &first_page).await
            })
            .await;
        self.audit(actor, "HOSTING_DELETE_ENVIRONMENT", args, &result).await;
        result
    }

    /// `HOSTING_PROMOTE`: points an environment at any built deployment of the site.
    pub async fn promote(&self, actor: &Actor, input: &PromoteInput) -> ServiceResult<SwitchOutput> {
        self.authorize(
            actor,
            Action::Deploy,
            Target::Environment(&input.site, Some(input.environment.as_deref().unwrap_or("production"))),
        )
        .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, "HOSTING_PROMOTE", input.idempotency_key.as_deref(), async {
                let site = self.find_site(actor, &input.site).await?;
                let env = self
                    .find_environment(&site, input.environment.as_deref().unwrap_or("production"))
                    .await?;
                let d = self.find_deployment(actor, &input.deployment_id).await?;
                if d.site_id != site.id {
                    return Err(ServiceError::invalid(
                        "deployment_id",
                        format!(
                            "deployment {} belongs to another site; list this site's with HOSTING_LIST_DEPLOYMENTS",
                            d.id
                        ),
                    ));
                }
                if !matches!(d.status(), DeploymentStatus::Live | DeploymentStatus::Superseded)
                    || d.build_plan.is_none()
                {
                    return Err(ServiceError::invalid(
                        "deployment_id",
                        format!(
                            "deployment {} is {} and cannot serve; promote a live or superseded deployment",
                            d.id,
                            d.status().as_str()
                        ),
                    ));
                }
                self.check_promotable(&site, &d).await?;
                if d.environment_id == env.id {
                    return self.switch(&site, &env, &d).await;
                }
                // Built for another environment (a preview going to production): instances
                // run per deployment with its environment's variables, so the environment
                // gets its own deployment of the same build, never the other's variables.
                let copy = self
                    .platform
                    .copy_deployment_for(&site, &env, &d, Some(actor.key_name.clone()))
                    .await
                    .map_err(|e| ServiceError::conflict(format!("could not promote {}: {e:#}", d.id)))?;
                let switched = self.switch(&site, &env, &copy).await;
                if switched.is_err() {
                    self.platform.forget_deployment(&copy.id).await;
                }
                switched
            })
            .await;
        self.audit(actor, "HOSTING_PROMOTE", args, &result).await;
        result
    }

    /// `HOSTING_ROLLBACK`: points an environment at the newest built deployment older
    /// than the one it serves. Repeated rollbacks walk further back.
    pub async fn rollback(&self, actor: &Actor, input: &RollbackInput) -> ServiceResult<SwitchOutput> {
        self.authorize(
            actor,
            Action::Deploy,
            Target::Environment(&input.site, Some(input.environment.as_deref().unwrap_or("production"))),
        )
        .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, "HOSTING_ROLLBACK", input.idempotency_key.as_deref(), async {
                let site = self.find_site(actor, &input.site).await?;
                let env = self.find_environment(&site, input.environment.as_deref().unwrap_or("production")).await?;
                let store = &self.platform.store;
                let Some(current_id) = &env.deployment_id else {
                    return Err(ServiceError::conflict(format!("environment '{}' serves nothing yet; nothing to roll back", env.name)));
                };
                let current = self.find_deployment(actor, current_id).await?;
                let target = store.previous_deployment(&env.id, current.created_at, &current.id).await?.ok_or_else(|| {
                    ServiceError::conflict(format!(
                        "environment '{}' has no earlier built deployment to roll back to; see HOSTING_LIST_DEPLOYMENTS",
                        env.name
                    ))
                })?;
                self.check_promotable(&site, &target).await?;
                self.switch(&site, &env, &target).await
            })
            .await;
        self.audit(actor, "HOSTING_ROLLBACK", args, &result).await;
        result
    }

    async fn switch(
        &self,
        site: &store::SiteRow,
        env: &EnvironmentRow,
        d: &store::DeploymentRow,
    ) -> ServiceResult<SwitchOutput> {
        if env.deployment_id.as_deref() == Some(d.id.as_str()) {
            return Err(ServiceError::conflict(format!(
                "environment '{}' already serves {}",
                env.name, d.id
            )));
        }
        self.platform
            .point_environment(env, site, d)
            .await
            .map_err(|e| ServiceError::conflict(format!("could not switch to {}: {e:#}", d.id)))?;
        let env_now = self.find_environment(site, &env.name).await?;
        let d_now = self
            .platform
            .store
            .get_deployment_any_org(&d.id)
            .await?
            .ok_or_else(|| ServiceError::not_found("the deployment disappeared"))?;
        Ok(SwitchOutput {
            environment: self.environment_info(site, &env_now).await?,
            deployment: self.deployment_info(&d_now).await?,
            previous_deployment_id: env.deployment_id.clone(),
        })
    }

    /// `HOSTING_GET_ENVIRONMENT_LOGS`: runtime lines of the deployment an environment
    /// serves; without a cursor, the newest `limit` lines.
    pub async fn get_environment_logs(&self, actor: &Actor, input: &EnvironmentLogsInput) -> ServiceResult<LogPage> {
        self.authorize(
            actor,
            Action::ReadLogs,
            Target::Environment(&input.site, Some(input.environment.as_deref().unwrap_or("production"))),
        )
        .await?;
        let site = self.find_site(actor, &input.site).await?;
        let env = self
            .find_environment(&site, input.environment.as_deref().unwrap_or("production"))
            .await?;
        let Some(deployment_id) = env.deployment_id.clone() else {
            return Err(ServiceError::not_found(format!(
                "environment '{}' serves nothing yet, so it has no runtime logs; deploy to it first",
                env.name
            )));
        };
        let cursor = match input.cursor {
            Some(c) => Some(c),
            None => {
                let limit = i64::from(input.limit.unwrap_or(DEFAULT_LOG_LINES).clamp(1, MAX_LOG_LINES));
                let tail = self.platform.store.tail_logs(&deployment_id, "runtime", limit).await?;
                Some(tail.first().map_or(0, |l| l.id - 1))
            }
        };
        let logs = LogsInput {
            deployment_id,
            kind: Some("runtime".into()),
            cursor,
            limit: input.limit,
        };
        self.get_deployment_logs(actor, &logs).await
    }

    /// `HOSTING_CANCEL_DEPLOYMENT`: stops a queued or running build; nothing else changes.
    pub async fn cancel_deployment(&self, actor: &Actor, input: &DeploymentRef) -> ServiceResult<DeploymentInfo> {
        self.authorize(actor, Action::Deploy, Target::Deployment(&input.deployment_id))
            .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let d = self.find_deployment(actor, &input.deployment_id).await?;
            if d.status().is_final() {
                return Err(ServiceError::conflict(format!(
                    "deployment {} is already {}; to stop serving it, roll back or promote another deployment",
                    d.id,
                    d.status().as_str()
                )));
            }
            if !self.platform.cancel(&d.id) {
                // Not being worked on in this process (queued): cancel it in the store; the
                // job sees a final status and does nothing.
                self.platform
                    .set_status(&d, DeploymentStatus::Cancelled, Some("cancelled"))
                    .await?;
            }
            self.wait_for(actor, &d.id, Some(30), &mut |_| {}).await
        }
        .await;
        self.audit(actor, "HOSTING_CANCEL_DEPLOYMENT", args, &result).await;
        result
    }
}

/// Environment names: DNS labels that fit in front of the site name (`<env>--<site>`).
fn validate_environment_name(name: &str, site: &str) -> ServiceResult<()> {
    validate_site_name(name).map_err(|_| {
        ServiceError::invalid(
            "name",
            format!(
                "invalid environment name '{}'; use lowercase letters, digits and single hyphens, e.g. 'staging' or 'pr-12'",
                name.chars().take(80).collect::<String>()
            ),
        )
    })?;
    if name == "production" {
        return Err(ServiceError::conflict("every site already has 'production'"));
    }
    if name.len() + 2 + site.len() > 63 {
        return Err(ServiceError::invalid(
            "name",
            format!("'{name}--{site}' is longer than a DNS label (63); use a shorter environment name"),
        ));
    }
    Ok(())
}
