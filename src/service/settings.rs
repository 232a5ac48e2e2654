//! A site's changeable settings (`HOSTING_UPDATE_SITE`) and the one-off build overrides a
//! deploy may carry. Build settings are checked by one validator, shared with site
//! creation; a change is validated as a whole and written at once, so a bad value
//! changes nothing. Settings apply at the next deploy: each deployment records the
//! settings it is built with.

use crate::service::access::{Action, Target};
use berth_build::detect::BuildSettings;

use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, DeploymentStatus, SourceKind};
use crate::store::{self, SiteRow};

use super::*;

/// Build packs a setting may force.
const BUILD_PACKS: [&str; 7] = ["static", "procfile", "node", "python", "go", "rust", "deno"];

impl Service {
    /// `HOSTING_UPDATE_SITE`: changes build settings, branch, previews or provider.
    pub async fn update_site(&self, actor: &Actor, input: &UpdateSiteInput) -> ServiceResult<UpdateSiteOutput> {
        self.authorize(actor, Action::CreateSite, Target::Site(&input.site))
            .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, "HOSTING_UPDATE_SITE", input.idempotency_key.as_deref(), async {
                self.update_site_inner(actor, input).await
            })
            .await;
        self.audit(actor, "HOSTING_UPDATE_SITE", args, &result).await;
        result
    }

    async fn update_site_inner(&self, actor: &Actor, input: &UpdateSiteInput) -> ServiceResult<UpdateSiteOutput> {
        let site = self.find_site(actor, &input.site).await?;
        let before: BuildSettings = serde_json::from_str(&site.build_settings).unwrap_or_default();
        let mut settings = before.clone();
        apply_change(&mut settings, &input.build_change());
        validate_build_settings(&settings)?;
        let drain_before = site.drain_seconds;
        let drain_seconds = match input.drain_seconds {
            None => drain_before,
            Some(value) => validate_drain_seconds(value)?,
        };

        let branch = match &input.branch {
            None => site.branch.clone(),
            Some(branch) => {
                let branch = branch.as_deref().map(str::trim).filter(|b| !b.is_empty());
                if branch.map(str::to_string) != site.branch {
                    self.check_branch_change(actor, &site, branch).await?;
                }
                branch.map(str::to_string)
            }
        };
        let previews_before = bool::from(site.previews_enabled);
        let previews = match input.previews {
            None => previews_before,
            Some(p) => p.unwrap_or(false),
        };
        if previews && !previews_before && site.source_kind != SourceKind::Git.as_str() {
            return Err(super::previews_need_git(
                &site.name,
                SourceKind::parse(&site.source_kind),
            ));
        }
        let provider = match input.provider.as_deref().map(str::trim) {
            None => site.provider.clone(),
            Some(p) if p == site.provider => site.provider.clone(),
            Some(p) => {
                let provider = self.site_provider(actor, Some(p)).await?;
                self.check_provider_change(&site, &provider).await?;
                provider
            }
        };

        let mut changed = changed_settings(&before, &settings);
        if branch != site.branch {
            changed.push("branch".into());
        }
        if previews != previews_before {
            changed.push("previews".into());
        }
        if provider != site.provider {
            changed.push("provider".into());
        }
        if drain_period(drain_seconds) != drain_period(drain_before) {
            changed.push("drain_seconds".into());
        }
        if !changed.is_empty() {
            let json = serde_json::to_string(&settings).map_err(anyhow::Error::from)?;
            let change = store::SiteSettingsChange {
                build_settings: &json,
                branch: branch.as_deref(),
                branch_changed: branch != site.branch,
                provider: &provider,
                previews: (previews != previews_before).then_some(previews),
                drain_seconds: (drain_seconds != drain_before).then_some(drain_seconds),
                changed: &changed,
            };
            self.platform.store.update_site(&site, &change).await?;
        }
        let drain = drain_period(drain_seconds).as_secs();
        let next_steps = match (changed.is_empty(), site.source_kind == SourceKind::Upload.as_str()) {
            (true, _) => "nothing changed: the site already has these settings".to_string(),
            // The drain period is read whenever an instance drains, not at a deploy.
            _ if changed == ["drain_seconds"] => format!(
                "saved; from now on an old instance gets up to {drain} s to finish its requests after a deploy, promote, rollback or scale-in"
            ),
            (false, true) => format!(
                "saved; they apply at the next deploy: `berth deploy DIR --site {}`",
                site.name
            ),
            (false, false) => format!(
                "saved; they apply at the next deploy: HOSTING_DEPLOY {{\"site\": \"{}\"}}",
                site.name
            ),
        };
        Ok(UpdateSiteOutput {
            site: site.name.clone(),
            settings: site_settings(&settings, branch, previews, provider, drain as u32),
            changed,
            next_steps,
        })
    }

    /// A new production branch must exist on a git site, and no preview may already
    /// follow it (a push would then deploy it twice).
    async fn check_branch_change(&self, actor: &Actor, site: &SiteRow, branch: Option<&str>) -> ServiceResult<()> {
        if site.source_kind != SourceKind::Git.as_str() {
            return Err(ServiceError::invalid(
                "branch",
                format!(
                    "site '{}' deploys from {}; branch applies to sites that deploy from git",
                    site.name,
                    if site.source_kind == SourceKind::Upload.as_str() {
                        "uploads"
                    } else {
                        "a server folder"
                    }
                ),
            ));
        }
        let Some(branch) = branch else { return Ok(()) };
        for env in self.platform.store.list_environments(&site.id).await? {
            if env.name != "production" && env.branch.as_deref() == Some(branch) {
                return Err(ServiceError::conflict(format!(
                    "the preview environment '{}' follows branch '{branch}'; delete it first (HOSTING_DELETE_ENVIRONMENT {{\"site\": \"{}\", \"environment\": \"{}\"}}), then set the branch",
                    env.name, site.name, env.name
                )));
            }
        }
        if let Some(repo) = &site.source {
            let auth = self.platform.git_auth_for(&actor.org_id, repo).await;
            crate::source::check_remote_with(repo, Some(branch), self.platform.config.timeouts.fetch(), auth.as_ref())
                .await
                .map_err(|e| ServiceError::invalid("branch", e.to_string()))?;
        }
        Ok(())
    }

    /// Running instances cannot move between providers, and an environment's rollback
    /// target was built for the provider it ran on: the provider changes only while no
    /// deployment of the site runs a process.
    async fn check_provider_change(&self, site: &SiteRow, provider: &str) -> ServiceResult<()> {
        let store = &self.platform.store;
        let deployments = store.list_deployments(&site.id, None, i64::MAX).await?;
        let runs_process = deployments.iter().any(|d| {
            let servable = matches!(d.status(), DeploymentStatus::Live | DeploymentStatus::Superseded);
            match d.build_plan.as_deref() {
                // Not planned yet: it may become a process on the old provider.
                None => !d.status().is_final(),
                Some(plan) => {
                    (servable || !d.status().is_final())
                        && !matches!(
                            serde_json::from_str::<berth_build::detect::BuildPlan>(plan).map(|p| p.serve),
                            Ok(berth_build::detect::ServePlan::Static { .. })
                        )
                }
            }
        });
        if runs_process {
            return Err(ServiceError::conflict(format!(
                "site '{}' has deployments built to run on '{}', which cannot move to '{provider}' (its environments serve them and rollbacks return to them); create a new site with provider '{provider}' (HOSTING_CREATE_SITE {{\"name\": …, \"provider\": \"{provider}\"}}) and deploy it there",
                site.name, site.provider
            )));
        }
        Ok(())
    }

    /// The settings a new deployment of `site` is built with: the site's, with the deploy's
    /// overrides applied and checked like site settings.
    pub(super) fn deployment_settings(
        site: &SiteRow,
        overrides: Option<&BuildSettingsChange>,
    ) -> ServiceResult<(String, Option<String>)> {
        let mut settings: BuildSettings = serde_json::from_str(&site.build_settings).unwrap_or_default();
        let overrides = overrides.filter(|o| !o.is_empty());
        if let Some(change) = overrides {
            apply_change(&mut settings, change);
            validate_build_settings(&settings)?;
        }
        let json = serde_json::to_string(&settings).map_err(anyhow::Error::from)?;
        let overrides = overrides
            .map(serde_json::to_string)
            .transpose()
            .map_err(anyhow::Error::from)?;
        Ok((json, overrides))
    }
}

/// A site's settings as callers see them.
pub(super) fn site_settings(
    settings: &BuildSettings,
    branch: Option<String>,
    previews: bool,
    provider: String,
    drain_seconds: u32,
) -> SiteSettings {
    SiteSettings {
        build_pack: settings.build_pack.clone(),
        install_command: settings.install_command.clone(),
        build_command: settings.build_command.clone(),
        start_command: settings.start_command.clone(),
        output_dir: settings.output_dir.clone(),
        root_dir: settings.root_dir.clone(),
        port: settings.port,
        health_check_path: settings.health_check_path.clone(),
        branch,
        previews,
        provider,
        drain_seconds,
    }
}

/// Checks a new `drain_seconds` (`None`: back to the default) and returns what to store.
fn validate_drain_seconds(value: Option<i64>) -> ServiceResult<Option<i64>> {
    match value {
        None => Ok(None),
        Some(seconds) if (0..=i64::from(DRAIN_SECONDS_MAX)).contains(&seconds) => Ok(Some(seconds)),
        Some(seconds) => Err(ServiceError::invalid(
            "drain_seconds",
            format!(
                "drain_seconds must be from 0 to {DRAIN_SECONDS_MAX} (seconds an old instance may finish its requests before it stops), got {seconds}; null returns to the default {DRAIN_SECONDS_DEFAULT}"
            ),
        )),
    }
}

/// Applies a change: absent fields keep their value, `null` clears, values set.
fn apply_change(settings: &mut BuildSettings, change: &BuildSettingsChange) {
    fn set<T: Clone>(field: &mut Option<T>, change: &Change<T>) {
        if let Some(value) = change {
            *field = value.clone();
        }
    }
    set(&mut settings.build_pack, &change.build_pack);
    set(&mut settings.install_command, &change.install_command);
    set(&mut settings.build_command, &change.build_command);
    set(&mut settings.start_command, &change.start_command);
    set(&mut settings.output_dir, &change.output_dir);
    set(&mut settings.root_dir, &change.root_dir);
    set(&mut settings.port, &change.port);
    set(&mut settings.health_check_path, &change.health_check_path);
}

/// Names of the build settings that differ.
fn changed_settings(before: &BuildSettings, after: &BuildSettings) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(before).unwrap_or_default(),
        serde_json::to_value(after).unwrap_or_default(),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Checks build settings, from site creation, an update or a deploy's overrides alike.
pub(super) fn validate_build_settings(s: &BuildSettings) -> ServiceResult<()> {
    if let Some(pack) = &s.build_pack
        && !BUILD_PACKS.contains(&pack.as_str())
    {
        return Err(ServiceError::invalid(
            "build_pack",
            format!("unknown build pack '{pack}'; use static, procfile, node, python, go, rust or deno"),
        ));
    }
    if let Some(path) = &s.health_check_path
        && (!path.starts_with('/') || path.len() > 1024 || path.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ServiceError::invalid(
            "health_check_path",
            "health_check_path must start with '/' and contain no spaces",
        ));
    }
    for (field, dir) in [("output_dir", &s.output_dir), ("root_dir", &s.root_dir)] {
        if let Some(dir) = dir
            && (dir.trim().is_empty()
                || dir.len() > 1024
                || Path::new(dir).is_absolute()
                || dir.split('/').any(|seg| seg == "..")
                || dir.chars().any(char::is_control))
        {
            return Err(ServiceError::invalid(
                field,
                format!("{field} must be a relative folder inside the source, like 'apps/web', without '..'"),
            ));
        }
    }
    if s.port == Some(0) {
        return Err(ServiceError::invalid(
            "port",
            "port must be 1-65535, or omitted to let berth pick one",
        ));
    }
    for (field, value) in [
        ("install_command", &s.install_command),
        ("build_command", &s.build_command),
        ("start_command", &s.start_command),
    ] {
        if let Some(v) = value
            && (v.trim().is_empty() || v.len() > 4096)
        {
            return Err(ServiceError::invalid(
                field,
                format!("{field} must be a non-empty shell command under 4 KiB (null clears it)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_clears_absent_keeps() {
        let change: BuildSettingsChange = serde_json::from_str(r#"{"start_command": null, "port": 3000}"#).unwrap();
        let mut s = BuildSettings {
            start_command: Some("node a.js".into()),
            build_command: Some("make".into()),
            ..Default::default()
        };
        apply_change(&mut s, &change);
        assert_eq!(s.start_command, None);
        assert_eq!(s.build_command.as_deref(), Some("make"));
        assert_eq!(s.port, Some(3000));
        // And it round-trips: a cleared field is written as null, an absent one not at all.
        let v = serde_json::to_value(&change).unwrap();
        assert_eq!(v, serde_json::json!({"start_command": null, "port": 3000}));
    }

    #[test]
    fn drain_seconds_is_bounded() {
        for bad in [-1, 601, 100_000] {
            let err = validate_drain_seconds(Some(bad)).unwrap_err();
            assert!(
                matches!(
                    err,
                    ServiceError::Invalid {
                        field: "drain_seconds",
                        ..
                    }
                ),
                "{bad}"
            );
            assert!(err.to_string().contains("0 to 600"), "{err}");
        }
        assert_eq!(validate_drain_seconds(Some(0)).unwrap(), Some(0));
        assert_eq!(validate_drain_seconds(Some(600)).unwrap(), Some(600));
        assert_eq!(validate_drain_seconds(None).unwrap(), None);
        assert_eq!(drain_period(None).as_secs(), 30);
    }

    #[test]
    fn root_dir_is_a_relative_folder() {
        for bad in ["../x", "/srv/app", "a/../../b", " ", "a\nb"] {
            let s = BuildSettings {
                root_dir: Some(bad.into()),
                ..Default::default()
            };
            let err = validate_build_settings(&s).unwrap_err();
            assert!(matches!(err, ServiceError::Invalid { field: "root_dir", .. }), "{bad}");
        }
        let ok = BuildSettings {
            root_dir: Some("apps/web".into()),
            ..Default::default()
        };
        assert!(validate_build_settings(&ok).is_ok());
    }
}
