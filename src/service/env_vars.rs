//! Env vars and secrets of a site or one environment: sealed at rest, masked in every
//! output unless a caller allowed to reveal them asks, redacted from logs.

use crate::service::access::{Action, Target};
use std::collections::BTreeMap;

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::store;

use super::*;

impl Service {
    /// `HOSTING_GET_ENV_VARS`.
    pub async fn get_env_vars(&self, actor: &Actor, input: &GetEnvVarsInput) -> ServiceResult<EnvVarsOutput> {
        self.authorize(
            actor,
            if input.reveal.unwrap_or(false) {
                Action::RevealSecrets
            } else {
                Action::ReadSites
            },
            Target::Environment(&input.site, input.environment.as_deref()),
        )
        .await?;
        let reveal = input.reveal.unwrap_or(false);
        let site = self.find_site(actor, &input.site).await?;
        let env = match &input.environment {
            Some(name) => Some(self.find_environment(&site, name).await?),
            None => None,
        };
        self.env_vars_output(&site, env.as_ref(), reveal).await
    }

    async fn env_vars_output(
        &self,
        site: &store::SiteRow,
        env: Option<&store::EnvironmentRow>,
        reveal: bool,
    ) -> ServiceResult<EnvVarsOutput> {
        let rows = self
            .platform
            .store
            .list_env_vars(&site.id, env.map(|e| e.id.as_str()))
            .await?;
        let mut vars = BTreeMap::new();
        // Site-wide first so environment values override.
        let (site_rows, env_rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.scope.is_empty());
        for row in site_rows.into_iter().chain(env_rows) {
            let value = if reveal {
                self.platform
                    .secrets
                    .open(&row.sealed, &secret_context(&site.id, &row.scope, &row.name))?
            } else {
                MASK.to_string()
            };
            let scope = if row.scope.is_empty() {
                "site".to_string()
            } else {
                env.map_or_else(String::new, |e| e.name.clone())
            };
            vars.insert(row.name, EnvVarInfo { value, scope });
        }
        Ok(EnvVarsOutput {
            site: site.name.clone(),
            environment: env.map(|e| e.name.clone()),
            vars,
            restarted: None,
        })
    }

    /// `HOSTING_SET_ENV_VARS`: sets and deletes (null) variables in one transaction;
    /// with `restart`, running apps of the affected environments restart to see them.
    pub async fn set_env_vars(&self, actor: &Actor, input: &SetEnvVarsInput) -> ServiceResult<EnvVarsOutput> {
        self.authorize(
            actor,
            Action::SetEnvVars,
            Target::Environment(&input.site, input.environment.as_deref()),
        )
        .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, "HOSTING_SET_ENV_VARS", input.idempotency_key.as_deref(), async {
                if input.vars.is_empty() {
                    return Err(ServiceError::invalid(
                        "vars",
                        "vars is empty; give {\"NAME\": \"value\"} or {\"NAME\": null} to delete",
                    ));
                }
                for (k, v) in &input.vars {
                    validate_env_var(k, v.as_ref())?;
                }
                let site = self.find_site(actor, &input.site).await?;
                let env = match &input.environment {
                    Some(name) => Some(self.find_environment(&site, name).await?),
                    None => None,
                };
                let scope = env.as_ref().map_or("", |e| e.id.as_str());
                let changes = input
                    .vars
                    .iter()
                    .map(|(name, value)| {
                        let sealed = match value {
                            Some(v) => Some(self.platform.secrets.seal(v, &secret_context(&site.id, scope, name))?),
                            None => None,
                        };
                        Ok((name, sealed))
                    })
                    .collect::<ServiceResult<Vec<_>>>()?;
                self.platform
                    .store
                    .change_env_vars(&site, scope, input.environment.as_deref(), &changes)
                    .await?;
                let mut restarted = Vec::new();
                if input.restart.unwrap_or(false) {
                    restarted = self.restart_environments(&site, env.as_ref()).await?;
                }
                let mut out = self.env_vars_output(&site, env.as_ref(), false).await?;
                out.restarted = Some(restarted);
                Ok(out)
            })
            .await;
        self.audit(actor, "HOSTING_SET_ENV_VARS", args, &result).await;
        result
    }

    /// Restarts the apps of one environment (or all of a site's) so they read their env
    /// vars again, through the site's target: on the shared lifecycle the running
    /// instances stop and the reconciler starts them with the new values; a target that
    /// runs them elsewhere rolls them over. Answers the environments really restarted.
    pub(super) async fn restart_environments(
        &self,
        site: &store::SiteRow,
        only: Option<&store::EnvironmentRow>,
    ) -> ServiceResult<Vec<String>> {
        let target = self.platform.target(&site.provider)?;
        let mut restarted = Vec::new();
        for env in self.platform.store.list_environments(&site.id).await? {
            if only.is_some_and(|o| o.id != env.id) {
                continue;
            }
            let Some(spec) = self.platform.serving_spec(site, &env).await? else {
                continue;
            };
            // Another replica runs this shared target: it restarts them when asked.
            if self.platform.shared.run_elsewhere(&site.provider) {
                self.platform
                    .store
                    .ask_shared_holder(&site.org_id, crate::events::HolderAsk::Restart, &spec.deployment_id)
                    .await?;
                restarted.push(env.name.clone());
                continue;
            }
            match target.restart(&self.platform.runtime, spec).await {
                Ok(true) => restarted.push(env.name.clone()),
                Ok(false) => {}
                Err(e) => {
                    return Err(ServiceError::conflict(format!(
                        "the variables are saved, but restarting environment '{}' on target '{}' failed: {e}; it keeps running with the previous values until it restarts: retry with restart: true or deploy again{}",
                        env.name,
                        site.provider,
                        if restarted.is_empty() {
                            String::new()
                        } else {
                            format!(" (restarted: {})", restarted.join(", "))
                        }
                    )));
                }
            }
        }
        crate::loops::reconciler::reconcile(&self.platform).await?;
        Ok(restarted)
    }
}
