//! The deploy job: source → build → start → activate. Each run starts from a clean work
//! directory, so a retried job (after a crash) repeats the build instead of trusting a
//! half-written tree. Build failures end the deployment as `failed` with its log kept and
//! leave whatever was serving untouched.

mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_build::detect::{BuildPlan, BuildSettings, BuildStep, DetectError, ServePlan};
use berth_build::step::{LogStream, run_step};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::jobs::{JobError, JobFuture, JobHandler};
use crate::model::{DeploymentStatus, SourceKind};
use crate::otlp::DeployTrace;
use crate::platform::Platform;
use crate::runtime::target::{BuildKind, Traffic};
use crate::source::{self, LocalRepoPolicy, RepoLocation};
use crate::store::{self, DeploymentRow, JobRow};

/// Job kind of a deploy.
pub const DEPLOY_JOB: &str = "deploy";

/// Payload of a deploy job.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeployJob {
    /// The deployment to carry out.
    pub deployment_id: String,
}

/// The directory a deployment's app lives in.
pub fn app_dir(platform: &Platform, deployment_id: &str) -> PathBuf {
    platform.config.deployments_dir().join(deployment_id).join("app")
}

/// The job handler.
pub struct DeployHandler {
    /// Shared state.
    pub platform: Arc<Platform>,
}

impl JobHandler for DeployHandler {
    fn run(&self, job: JobRow, cancel: CancellationToken) -> JobFuture {
        let platform = self.platform.clone();
        Box::pin(async move {
            let payload: DeployJob =
                serde_json::from_str(&job.payload).map_err(|e| JobError::Permanent(format!("bad payload: {e}")))?;
            run_deploy(&platform, &payload.deployment_id, cancel).await
        })
    }
}

/// A stage failure: the message the deployment records and, for app starts, its last lines.
struct StageFailure {
    message: String,
}

impl From<String> for StageFailure {
    fn from(message: String) -> Self {
        Self { message }
    }
}

async fn run_deploy(
    platform: &Arc<Platform>,
    deployment_id: &str,
    shutdown: CancellationToken,
) -> Result<(), JobError> {
    let retry = |e: sqlx::Error| JobError::Retry(format!("store: {e}"));
    let Some(deployment) = platform
        .store
        .get_deployment_any_org(deployment_id)
        .await
        .map_err(retry)?
    else {
        return Ok(()); // the site was deleted meanwhile
    };
    if deployment.status().is_final() {
        return Ok(()); // a repeat delivery of finished work
    }
    let cancel = platform.register_cancel(deployment_id);
    let guard_cancel = cancel.clone();
    let started = std::time::Instant::now();
    let mut trace = deploy_trace(platform, &deployment).await;
    let result = tokio::select! {
        r = build_and_start(platform, &deployment, &cancel, &mut trace) => r,
        _ = shutdown.cancelled() => {
            // Server shutting down: leave the job to be retried on the next start.
            guard_cancel.cancel();
            platform.unregister_cancel(deployment_id);
            return Err(JobError::Retry("server shut down during the deploy".into()));
        }
    };
    platform.unregister_cancel(deployment_id);
    crate::prometheus::deploy_finished(started.elapsed(), if result.is_ok() { "succeeded" } else { "failed" });
    let outcome = finish(platform, &deployment, &cancel, result).await;
    if crate::otlp::enabled() {
        // The status the deploy ended in: live, failed, cancelled or superseded.
        let status = platform
            .store
            .get_deployment_any_org(deployment_id)
            .await
            .ok()
            .flatten()
            .map_or("unknown", |d| d.status().as_str());
        trace.finish(status);
    }
    // Whatever the outcome, the environment keeps only its newest deployments.
    platform.prune_environment(&deployment.environment_id).await;
    outcome
}

/// A deploy's trace, named by its site and environment (looked up only when traces are
/// exported).
async fn deploy_trace(platform: &Arc<Platform>, deployment: &DeploymentRow) -> DeployTrace {
    if !crate::otlp::enabled() {
        return DeployTrace::start("", "", &deployment.id);
    }
    let store = &platform.store;
    let site = store.get_site_by_id(&deployment.site_id).await.ok().flatten();
    let environment = store
        .get_environment_by_id(&deployment.environment_id)
        .await
        .ok()
        .flatten();
    DeployTrace::start(
        site.as_ref().map_or(deployment.site_id.as_str(), |s| s.name.as_str()),
        environment
            .as_ref()
            .map_or(deployment.environment_id.as_str(), |e| e.name.as_str()),
        &deployment.id,
    )
}

/// Records how a deploy ended: a failure (or cancellation) stops its instances and says why.
async fn finish(
    platform: &Arc<Platform>,
    deployment: &DeploymentRow,
    cancel: &CancellationToken,
    result: Result<(), StageFailure>,
) -> Result<(), JobError> {
    let deployment_id = deployment.id.as_str();
    match result {
        Ok(()) => Ok(()),
        Err(failure) => {
            let cancelled = cancel.is_cancelled();
            platform.runtime.stop(deployment_id).await;
            let to = if cancelled {
                DeploymentStatus::Cancelled
            } else {
                DeploymentStatus::Failed
            };
            let message = if cancelled {
                "cancelled".to_string()
            } else {
                failure.message
            };
            platform.log(
                deployment_id,
                "build",
                "system",
                format!("deployment {}: {message}", to.as_str()),
            );
            platform.logs.flush().await;
            platform
                .set_status(deployment, to, Some(&message))
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            Ok(())
        }
    }
}

/// Ends a queued deployment `superseded` (without building) when a newer deploy of its
/// environment is pending; true if it did.
async fn supersede_if_newer(platform: &Arc<Platform>, deployment: &DeploymentRow) -> Result<bool, StageFailure> {
    let internal = |e: anyhow::Error| StageFailure::from(format!("internal error: {e:#}"));
    if deployment.status() != DeploymentStatus::Queued {
        return Ok(false);
    }
    let Some(newer) = platform
        .store
        .newer_pending_deployment(&deployment.environment_id, deployment.created_at, &deployment.id)
        .await
        .map_err(|e| internal(e.into()))?
    else {
        return Ok(false);
    };
    platform.log(
        &deployment.id,
        "build",
        "system",
        format!("skipped: {newer}, a newer deploy of this environment, is queued and the newest wins; this one is superseded without building"),
    );
    platform.logs.flush().await;
    platform
        .set_status(deployment, DeploymentStatus::Superseded, None)
        .await
        .map_err(internal)?;
    Ok(true)
}

async fn build_and_start(
    platform: &Arc<Platform>,
    deployment: &DeploymentRow,
    cancel: &CancellationToken,
    trace: &mut DeployTrace,
) -> Result<(), StageFailure> {
    let id = deployment.id.as_str();
    let internal = |e: anyhow::Error| StageFailure::from(format!("internal error: {e:#}"));
    // Deploys of one environment queued behind each other coalesce: the newest wins. Asked
    // before waiting for a build slot (a burst resolves at once, freeing its workers) and
    // again after (a newer deploy may have come while this one waited).
    if supersede_if_newer(platform, deployment).await? {
        return Ok(());
    }
    // 0. A build slot, held until the build is done (not while the app starts).
    let owner = crate::build_gate::BuildOwner {
        site: deployment.site_id.clone(),
        org: deployment.org_id.clone(),
    };
    let build_slot = tokio::select! {
        slot = platform.build_gate.acquire(owner) => slot,
        _ = cancel.cancelled() => return Err("cancelled".to_string().into()),
    };
    if supersede_if_newer(platform, deployment).await? {
        return Ok(());
    }
    platform
        .set_status(deployment, DeploymentStatus::Building, None)
        .await
        .map_err(internal)?;
    let build_started = std::time::Instant::now();
    let site = platform
        .store
        .get_site_by_id(&deployment.site_id)
        .await
        .map_err(|e| internal(e.into()))?
        .ok_or_else(|| StageFailure::from("the site was deleted".to_string()))?;
    // A site whose resources its provider cannot serve fails before anything is built.
    platform
        .site_resources(&site)
        .await
        .map_err(|e| StageFailure::from(format!("{e:#}")))?;
    let dir = app_dir(platform, id);
    let kind = SourceKind::parse(&deployment.source_kind);

    // 1. Source.
    trace.step("source");
    platform.log(id, "build", "system", "fetching source".into());
    match kind {
        SourceKind::Upload => {
            if !dir.is_dir() {
                return Err("the uploaded source is missing; deploy again with a new upload"
                    .to_string()
                    .into());
            }
        }
        SourceKind::Git | SourceKind::Path => {
            reset_dir(&dir).await.map_err(|e| internal(e.into()))?;
            let repo = deployment.source.clone().unwrap_or_default();
            // Checked again here: the allowed roots may have changed since the site was
            // created, and the real path is what gets read.
            let internal_root = platform.git.org_root(&deployment.org_id);
            let repo = if LocalRepoPolicy::is_internal(&repo, &internal_root) {
                repo
            } else {
                match platform.local_repos.check(&repo).map_err(StageFailure::from)? {
                    Some(real) if repo.trim().starts_with("file://") => format!("file://{}", real.display()),
                    Some(real) => real.display().to_string(),
                    None => repo,
                }
            };
            match source::classify_repo(&repo).map_err(StageFailure::from)? {
                RepoLocation::Git(url) => {
                    let mut on_line = |line: String| platform.log(id, "build", "stderr", line);
                    let auth = platform.git_auth_for(&deployment.org_id, &url).await;
                    let commit = source::git_clone_with(
                        &url,
                        deployment
                            .git_ref
                            .as_deref()
                            .filter(|_| deployment.commit_sha.is_none()),
                        deployment.commit_sha.as_deref(),
                        &dir,
                        platform.config.timeouts.fetch(),
                        cancel,
                        &mut on_line,
                        auth.as_ref(),
                    )
                    .await
                    .map_err(|e| StageFailure::from(e.to_string()))?;
                    let _ = platform.store.set_deployment_commit(id, &commit).await;
                    platform.log(id, "build", "system", format!("checked out commit {commit}"));
                    if let Some(n @ 1..) = source::work_tree_differences(&url, &dir).await {
                        platform.log(
                            id,
                            "build",
                            "system",
                            format!(
                                "note: {url} has {n} changed file(s) not committed; berth deploys its committed HEAD, \
                                 so commit them and deploy again, or upload the working tree with `berth deploy {url}`"
                            ),
                        );
                    }
                    let _ = tokio::fs::remove_dir_all(dir.join(".git")).await;
                }
                RepoLocation::Folder(path) => {
                    source::copy_folder(&path, &dir)
                        .await
                        .map_err(|e| StageFailure::from(e.to_string()))?;
                }
            }
        }
    }

    // The settings recorded with the deployment (the site's when it was queued, with the
    // deploy's overrides); older deployments recorded none and use the site's.
    let settings: BuildSettings = deployment
        .build_settings
        .as_deref()
        .map_or_else(|| serde_json::from_str(&site.build_settings), serde_json::from_str)
        .unwrap_or_default();
    if let Some(overrides) = &deployment.overrides {
        platform.log(
            id,
            "build",
            "system",
            format!("one-off settings of this deploy: {overrides}"),
        );
    }
    if let Some(root) = settings.root_dir.as_deref() {
        // An upload is not fetched again when a job is retried: its folder may be
        // narrowed already, which the marker beside it records.
        let marker = dir.with_extension("root-selected");
        if kind == SourceKind::Upload && marker.exists() {
            platform.log(
                id,
                "build",
                "system",
                format!("root_dir: '{root}' was selected before this retry"),
            );
        } else {
            narrow_to_root_dir(&dir, root, &site.name).await?;
            if kind == SourceKind::Upload {
                tokio::fs::write(&marker, root).await.map_err(|e| internal(e.into()))?;
            }
            platform.log(
                id,
                "build",
                "system",
                format!("root_dir: building and serving '{root}' only"),
            );
        }
    }

    // 2. Plan and build (one step of the deploy's trace).
    trace.step("build");
    // Symlinks leading out of the tree are never followed on the host: detection
    // treats them as absent, and the log says which ones were left out.
    let escaping = berth_build::fs_safe::links_leaving_tree(&dir);
    for name in &escaping {
        platform.log(
            id,
            "build",
            "system",
            format!("ignoring '{name}': it is a symlink that leads outside the app's folder"),
        );
    }
    let target = platform.target(&site.provider).map_err(internal)?;
    let detection = match target.own_plan(&dir, &settings) {
        Some(own) => own.map(|plan| berth_build::detect::Detection {
            plan,
            notes: Vec::new(),
            package_manager: None,
            toolchain: Vec::new(),
        }),
        None => berth_build::detect::detect_explained(&dir, &settings),
    }
    .map_err(|e| StageFailure::from(with_escaping_links(with_settings_hint(&e, &site.name), &escaping)))?;
    let mut plan: BuildPlan = detection.plan;
    let plan_json = serde_json::to_string(&plan).map_err(|e| internal(e.into()))?;
    platform
        .store
        .set_deployment_plan(id, &plan_json)
        .await
        .map_err(|e| internal(e.into()))?;
    platform.log(
        id,
        "build",
        "system",
        format!("build pack: {:?}", plan.pack).to_lowercase(),
    );
    for note in detection.notes {
        platform.log(id, "build", "system", note);
    }
    // The language versions the app asks for, against the server's (an image brings its own).
    let mut node_hint = None;
    if target.build_for(&plan) == BuildKind::SandboxSteps
        && let Some((step, hint)) = check_toolchains(platform, id, plan.pack, &detection.toolchain).await?
    {
        // The Node.js release the app asks for, downloaded before anything runs with node.
        plan.steps.insert(0, step);
        node_hint = Some(hint);
        let plan_json = serde_json::to_string(&plan).map_err(|e| internal(e.into()))?;
        platform
            .store
            .set_deployment_plan(id, &plan_json)
            .await
            .map_err(|e| internal(e.into()))?;
    }

    // 3. Build: by the target (an image), else the steps under the build timeouts and the
    // sandbox.
    if target.build_for(&plan) != BuildKind::SandboxSteps {
        build_by_target(platform, target.as_ref(), deployment, &site, &dir, &plan, cancel).await?;
    } else {
        let env = platform
            .app_env(&site, &deployment.environment_id, id)
            .await
            .map_err(internal)?;
        // Restored before the folder is handed to the site's uid, which then owns it all.
        let tools = detection.package_manager.as_deref().map(|manager| {
            crate::build_cache::ToolsCache::for_manager(&platform.config.cache_dir(), &site.id, manager)
        });
        if let Some(tools) = &tools
            && tools.restore(&dir).await
        {
            let what = match detection.package_manager.as_deref() {
                Some(label) if berth_build::detect::tools::is_runtime_label(label) => format!("runtime {label}"),
                _ => "package manager".to_string(),
            };
            platform.log(id, "build", "system", format!("{what} restored from the build cache"));
        }
        // Build steps run as the site's own host uid, in a slot of their own (network
        // namespace, limits) for the whole build.
        let uid = platform
            .site_uid(&site)
            .await
            .map_err(|e| StageFailure::from(e.to_string()))?;
        if let Some(uid) = uid {
            let handed = dir.clone();
            tokio::task::spawn_blocking(move || crate::runtime::isolation::hand_over(&handed, uid))
                .await
                .map_err(|e| internal(e.into()))?
                .map_err(|e| internal(e.into()))?;
        }
        // Steps write on a disk of bounded size holding a copy of the folder; its result
        // becomes the folder once they all succeed.
        let disk = if plan.steps.is_empty() {
            None
        } else {
            platform
                .isolation
                .build_disk(id, &dir)
                .await
                .map_err(StageFailure::from)?
        };
        let build_dir = disk.as_ref().map_or_else(|| dir.clone(), |d| d.app_dir());
        let slot = if plan.steps.is_empty() {
            None
        } else {
            platform
                .isolation
                .acquire(
                    crate::runtime::isolation::SlotKind::Build,
                    uid,
                    None,
                    Default::default(),
                    &[],
                )
                .await
                .map_err(StageFailure::from)?
        };
        let sandbox = match &slot {
            Some(slot) => Arc::new(slot.sandbox(&platform.sandbox)),
            None => platform.sandbox.clone(),
        };
        let cache = crate::build_cache::CacheEntry::for_plan(
            &platform.config.cache_dir(),
            &site.id,
            &dir,
            &plan,
            platform.sandbox.is_sandboxed(),
        );
        for step in &plan.steps {
            if step.name == "install"
                && let Some(cache) = &cache
                && cache.restore(&build_dir).await
            {
                // A cache saved by an older build may belong to another user.
                if let Some(uid) = uid {
                    let handed = build_dir.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || crate::runtime::isolation::hand_over(&handed, uid)).await;
                }
                platform.log(
                    id,
                    "build",
                    "system",
                    "dependencies restored from the build cache (lockfile unchanged)".into(),
                );
                continue;
            }
            platform.log(id, "build", "system", format!("$ {}", step.command));
            let mut on_line = |stream: LogStream, line: String| {
                platform.log(
                    id,
                    "build",
                    if stream == LogStream::Stderr {
                        "stderr"
                    } else {
                        "stdout"
                    },
                    line,
                )
            };
            // Builds run at a lower CPU priority so a heavy build cannot starve serving apps.
            let niced = BuildStep {
                name: step.name.clone(),
                command: format!("exec nice -n 10 sh -c {}", shell_quote(&step.command)),
            };
            let ran = run_step(
                &sandbox,
                &build_dir,
                &niced,
                &env,
                platform.config.timeouts.for_step(&step.name),
                cancel.clone(),
                &mut on_line,
            )
            .await;
            if let Err(e) = ran {
                let limit =
                    (slot.as_ref().and_then(|s| s.limit_hit())).or_else(|| disk.as_ref().and_then(|d| d.limit_hit()));
                if let Some(slot) = slot {
                    slot.release().await;
                }
                if let Some(mut disk) = disk {
                    disk.remove().await;
                }
                let message = match (step.name.as_str(), detection.package_manager.as_deref()) {
                    (berth_build::detect::tools::NODE_STEP, _) => {
                        format!("{e}: {}", node_hint.as_deref().unwrap_or_default())
                    }
                    // Provisioning fails for one reason in practice (no registry): name the fix.
                    (berth_build::detect::SETUP_STEP, Some(manager))
                        if berth_build::detect::tools::is_runtime_label(manager) =>
                    {
                        format!("{e}: {}", berth_build::detect::tools::setup_failure_hint(manager))
                    }
                    (berth_build::detect::SETUP_STEP, Some(manager)) => {
                        format!("{e}: {}", berth_build::detect::setup_failure_hint(manager))
                    }
                    _ => e.to_string(),
                };
                return Err(StageFailure::from(match limit {
                    Some(limit) => format!("{message} ({limit})"),
                    None => message,
                }));
            }
            if step.name == berth_build::detect::SETUP_STEP
                && let Some(tools) = &tools
            {
                tools.save(&build_dir).await;
            }
            if let Some(cache) = &cache
                && step.name == cache.save_after()
            {
                cache.save(&build_dir).await;
            }
        }

        if let Some(slot) = slot {
            slot.release().await;
        }
        if let Some(disk) = disk {
            disk.finish(&dir).await.map_err(StageFailure::from)?;
        }

        // The output folder of a built static site is known only now.
        berth_build::detect::resolve_output_dir(&dir, &settings, &mut plan).map_err(|e| {
            StageFailure::from(with_escaping_links(
                with_settings_hint(&e, &site.name),
                &berth_build::fs_safe::links_leaving_tree(&dir),
            ))
        })?;
        let plan_json = serde_json::to_string(&plan).map_err(|e| internal(e.into()))?;
        platform
            .store
            .set_deployment_plan(id, &plan_json)
            .await
            .map_err(|e| internal(e.into()))?;
    }

    // 4. Start (apps) and health-check, then activate: no build slot needed.
    drop(build_slot);
    trace.step("start");
    crate::prometheus::build_finished(build_started.elapsed());
    platform
        .set_status(deployment, DeploymentStatus::Deploying, None)
        .await
        .map_err(internal)?;
    if let Some(spec) = platform
        .instance_spec(deployment, &site, &plan)
        .await
        .map_err(internal)?
    {
        let what = match (&spec.image, spec.command.trim()) {
            (Some(image), "") => format!("a container of {image}"),
            (Some(image), command) => format!("a container of {image}: {command}"),
            (None, command) => command.to_string(),
        };
        platform.log(id, "build", "system", format!("starting: {what}"));
        let started = tokio::select! {
            r = target.release(&platform.runtime, spec) => r,
            _ = cancel.cancelled() => return Err("cancelled".to_string().into()),
        };
        match started {
            Ok(Traffic::Edge(addrs)) if target.provider().is_some() => {
                // An app that ignores $PORT: the warning belongs where the deploy is followed.
                if let Some(warning) = platform.runtime.port_warning(id) {
                    platform.log(id, "build", "system", warning);
                }
                let port = addrs.first().map_or(0, |a| a.port());
                platform.log(id, "build", "system", format!("healthy on port {port}"))
            }
            Ok(Traffic::Edge(addrs)) => {
                let to: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                platform.log(
                    id,
                    "build",
                    "system",
                    format!("rolled out; the edge serves it through {}", to.join(", ")),
                )
            }
            Ok(Traffic::External(url)) => platform.log(id, "build", "system", format!("serving at {url}")),
            Err(err) => {
                for line in &err.last_lines {
                    platform.log(id, "build", "system", format!("app: {line}"));
                }
                return Err(err.message.into());
            }
        }
    } else if let ServePlan::Static { dir: out, .. } = &plan.serve {
        // What the edge will serve must be inside the deployment: checked here on the
        // real path, so a build cannot point the output folder at a host path.
        if berth_build::fs_safe::real_path_in_tree(&dir, out).is_none() && dir.join(out).symlink_metadata().is_ok() {
            return Err(format!(
                "the static output folder '{out}' leads outside the app's folder (through a symlink); berth serves only files inside the app, so make '{out}' a real folder"
            )
            .into());
        }
        if !berth_build::fs_safe::is_file_in_tree(&dir, Path::new(out).join("index.html")) {
            return Err(format!("the static output folder '{out}' has no index.html").into());
        }
    }
    if cancel.is_cancelled() {
        return Err("cancelled".to_string().into());
    }
    trace.step("swap");
    if !platform.activate(deployment).await.map_err(internal)? {
        target.retire(&platform.runtime, id).await;
        platform.log(
            id,
            "build",
            "system",
            "a newer deployment went live first; this one is kept as superseded".into(),
        );
    }
    Ok(())
}

/// Makes the `root_dir` subfolder the app's folder: it is moved into place and the rest of
/// the source removed, so detection, the build steps, the start command, the edge and
/// an image build all see only that folder. A folder that is missing, or a symlink out
/// of the tree, fails the deployment naming the setting.
async fn narrow_to_root_dir(dir: &Path, root_dir: &str, site: &str) -> Result<(), StageFailure> {
    let internal = |e: std::io::Error| StageFailure::from(format!("internal error: selecting root_dir: {e}"));
    let Some(real) = berth_build::detect::select_root_dir(dir, Some(root_dir))
        .map_err(|e| StageFailure::from(with_settings_hint(&e, site)))?
    else {
        return Ok(());
    };
    let staged = dir.with_extension("root");
    if staged.exists() {
        tokio::fs::remove_dir_all(&staged).await.map_err(internal)?;
    }
    tokio::fs::rename(&real, &staged).await.map_err(internal)?;
    tokio::fs::remove_dir_all(dir).await.map_err(internal)?;
    tokio::fs::rename(&staged, dir).await.map_err(internal)
}

async fn reset_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        tokio::fs::remove_dir_all(dir).await?;
    }
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    Ok(())
}

/// A planning error, followed by the symlinks it may be about: a `dist` or `package.json`
/// that leads out of the tree is ignored, so the error alone would say it is missing.
fn with_escaping_links(message: String, escaping: &[String]) -> String {
    if escaping.is_empty() {
        return message;
    }
    format!(
        "{message} (ignored symlinks that lead outside the app's folder: {}; commit the real files instead)",
        escaping.join(", ")
    )
}

/// A planning error followed by how to change the setting it names: detection errors say
/// which setting would fix them, and settings change without re-creating the site.
fn with_settings_hint(err: &DetectError, site: &str) -> String {
    let setting = match err {
        DetectError::NothingDetected => "build_pack",
        DetectError::UnknownBuildPack { .. } | DetectError::MissingFile { .. } => "build_pack",
        DetectError::InvalidManifest { .. } => "install_command",
        DetectError::NoStartCommand { .. } => "start_command",
        DetectError::NoIndexHtml { .. } | DetectError::DevServerStart { .. } => "output_dir",
        DetectError::InvalidSetting { field, .. } => field,
        DetectError::MissingRootDir { .. } => "root_dir",
        DetectError::Io { .. } => return err.to_string(),
    };
    format!(
        "{err}. Settings change with HOSTING_UPDATE_SITE {{\"site\": \"{site}\", \"{setting}\": …}} (CLI: `berth sites update {site} --{} …`; null or --clear returns to detection), then deploy again; HOSTING_DEPLOY's `overrides` tries them for one deployment",
        setting.replace('_', "-")
    )
}

/// Quotes a string for `sh` as one word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A build the site's target does itself (docker: an image), with the app's variables as
/// build arguments and its output in the build log; the target keeps the builds the
/// site's environments serve.
async fn build_by_target(
    platform: &Arc<Platform>,
    target: &dyn crate::runtime::Target,
    deployment: &DeploymentRow,
    site: &store::SiteRow,
    dir: &Path,
    plan: &BuildPlan,
    cancel: &CancellationToken,
) -> Result<(), StageFailure> {
    let id = deployment.id.as_str();
    let internal = |e: anyhow::Error| StageFailure::from(format!("internal error: {e:#}"));
    let settings = platform
        .provider_config(&site.org_id, &site.provider)
        .await
        .map_err(|e| StageFailure::from(format!("{e:#}")))?;
    // The build sees the app's variables, as local builds do (build arguments: the target
    // may keep them visible to whoever can use it, as an image's history does).
    let build_args: std::collections::HashMap<String, String> = platform
        .app_env(site, &deployment.environment_id, id)
        .await
        .map_err(internal)?
        .into_iter()
        .collect();
    let in_use: Vec<String> = platform
        .store
        .list_environments(&site.id)
        .await
        .map_err(|e| internal(e.into()))?
        .into_iter()
        .filter_map(|e| e.deployment_id)
        .collect();
    let log = |stream: &'static str, line: String| platform.log(id, "build", stream, line);
    target
        .build(crate::runtime::target::BuildJob {
            site: platform.site_ref(site, &settings),
            deployment_id: id,
            app_dir: dir,
            plan,
            build_args: &build_args,
            in_use: &in_use,
            log: &log,
            cancel,
            timeout: platform.config.timeouts.build(),
        })
        .await
        .map_err(StageFailure::from)
}

/// Logs how each language version the app asks for compares with the server's, and fails
/// when the app's own constraint excludes it (see `berth_build::detect::toolchain`) or
/// when the server lacks the compiler its pack builds with (go, cargo), naming the package.
async fn check_toolchains(
    platform: &Platform,
    id: &str,
    pack: berth_build::detect::BuildPack,
    requests: &[berth_build::detect::toolchain::Request],
) -> Result<Option<(BuildStep, String)>, StageFailure> {
    use berth_build::detect::toolchain::{self, Tool, Verdict};
    use berth_build::detect::tools;
    if let Some(tool) = Tool::required_by(pack) {
        match server_version(tool).await {
            Some(version) => platform.log(id, "build", "system", format!("{}: {version}", tool.program())),
            None => return Err(tool.missing_hint().into()),
        }
        // cargo drives rustc: both must be there.
        if tool == Tool::Rust && system_program("cargo").is_none() {
            return Err(tool.missing_hint().into());
        }
    }
    // A Node.js release to download when the server's does not do: the app's own constraint
    // decides the range when it has one (it binds), else the pin. The other node requests
    // are then about the downloaded release, not the server's.
    let mut provision = None;
    let mut node_requests: Vec<&toolchain::Request> = requests.iter().filter(|r| r.tool == Tool::Node).collect();
    node_requests.sort_by_key(|r| r.strength != toolchain::Strength::Constraint);
    if let Some(available) = server_version(Tool::Node).await
        && node_requests
            .iter()
            .any(|r| toolchain::node_to_provision(r, &available).is_some())
        && let Some((request, range, command)) = node_requests.iter().find_map(|r| {
            let range = berth_build::detect::tools::node_range(&r.wanted)?;
            Some((*r, range, tools::node_setup_command(range)?))
        })
    {
        let have = toolchain::version_in(&available).unwrap_or(available.clone());
        platform.log(
            id,
            "build",
            "system",
            format!(
                "node {range} asked for ({}); this server has {have}: downloading a matching release from the npm registry",
                request.source
            ),
        );
        let step = BuildStep {
            name: tools::NODE_STEP.to_string(),
            command,
        };
        provision = Some((step, tools::node_setup_failure_hint(range, request.source, &have)));
    }
    for request in requests {
        if provision.is_some() && request.tool == Tool::Node {
            continue;
        }
        let Some(available) = server_version(request.tool).await else {
            continue;
        };
        match toolchain::check(request, &available) {
            Verdict::Fits(note) => platform.log(id, "build", "system", note),
            Verdict::Nearest(note) => platform.log(id, "build", "system", format!("note: {note}")),
            Verdict::Excluded(error) => return Err(error.into()),
        }
    }
    return Ok(provision);

    /// The server's version of `tool`, asked once per run of berth. Go and Rust are looked
    /// up where builds see them (a rustup toolchain in root's home is not theirs), and
    /// looked up again while missing, so installing one needs no restart.
    async fn server_version(tool: Tool) -> Option<String> {
        static NODE: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
        static PYTHON: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
        static GO: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        static RUST: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        let (cell, program) = match tool {
            Tool::Node => (&NODE, PathBuf::from("node")),
            Tool::Python => (&PYTHON, PathBuf::from("python3")),
            Tool::Go | Tool::Rust => {
                let cell = if tool == Tool::Go { &GO } else { &RUST };
                let program = system_program(tool.program())?;
                let arg = if tool == Tool::Go { "version" } else { "--version" };
                return cell
                    .get_or_try_init(|| async move { version_of(&program, arg).await.ok_or(()) })
                    .await
                    .ok()
                    .cloned();
            }
        };
        cell.get_or_init(|| async move { version_of(&program, "--version").await })
            .await
            .clone()
    }

    /// A program of the server's system folders, as builds find it.
    fn system_program(name: &str) -> Option<PathBuf> {
        toolchain::SYSTEM_BIN_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    }

    /// What a program prints when asked for its version.
    async fn version_of(program: &Path, arg: &str) -> Option<String> {
        let out = tokio::process::Command::new(program).arg(arg).output().await.ok()?;
        let text = String::from_utf8_lossy(if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        })
        .trim()
        .to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quote_round_trips_through_sh() {
        for cmd in ["echo hi", "echo 'it''s' \"q\" $HOME && exit 3", "a;b|c"] {
            let quoted = super::shell_quote(cmd);
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {quoted}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), cmd);
        }
    }
}
