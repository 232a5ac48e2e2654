//! The docker target as the deploy pipeline and the tools drive it: deployments that
//! serve a process are built into images by berth (the app's own Dockerfile, or one
//! generated from the build plan), promoted by tagging the same image again, and run by
//! [`DockerProvider`] on the shared lifecycle. Static sites are built and served as on
//! local.

use std::path::Path;
use std::sync::Arc;

use berth_build::detect::{BuildPlan, BuildSettings, DetectError};

use super::super::Provider;
use super::super::target::{Assembly, BuildJob, BuildKind, CheckError, Kept, Registration, Settings, SiteRef, Target};
use super::{DockerProvider, DockerSettings, Engine, ImageBuild, ImageOwner, ImageRecipe, TARGET, image};

/// Makes the docker target of this installation (its registration's `make`).
pub(super) fn make(parts: &Assembly) -> anyhow::Result<Arc<dyn Target>> {
    let owner = parts.owner.clone();
    Ok(Arc::new(DockerTarget {
        provider: Arc::new(DockerProvider::new(owner.clone()).shielding(parts.shielded_ports.clone())),
        owner,
    }))
}

/// Checks an org's docker settings (its registration's `check_settings`): the engine
/// settings, and `default`, the org's choice of docker for new sites.
pub(super) fn check_settings(settings: &Settings) -> Result<(), String> {
    if let Some(v) = settings.get("default")
        && !v.is_boolean()
    {
        return Err(format!("'default' must be true or false, not {v}"));
    }
    super::settings_from_config(settings).map(drop)
}

/// The docker target: containers of [`DockerProvider`] on the shared lifecycle.
struct DockerTarget {
    provider: Arc<DockerProvider>,
    /// This installation's id (`berth.owner` of its images and containers).
    owner: String,
}

impl DockerTarget {
    /// The org's engine settings and a handle for image work outside an instance's
    /// lifecycle (builds, promotion tags, clean-up).
    fn images(&self, site: SiteRef<'_>) -> Result<(DockerSettings, DockerProvider), String> {
        let settings = super::settings_from_config(site.settings)?;
        Ok((settings, DockerProvider::new(self.owner.clone())))
    }
}

/// Builds a deployment's image on the org's engine as the docker target does (the app's
/// own Dockerfile, or one generated from the plan on the org's base image), with the
/// build output in the build log, and returns its tag (`berth/<site>:<deployment>`). Old
/// images of the site beyond `keep_images` go afterwards, never one an environment uses.
/// Shared with the targets that run berth-built images elsewhere.
pub async fn build_deployment_image(
    provider: &DockerProvider,
    settings: &DockerSettings,
    job: &BuildJob<'_>,
) -> Result<String, String> {
    let recipe = deployment_recipe(settings, job)?;
    let in_use: Vec<String> = job.in_use.iter().map(|d| image::image_tag(job.site.site, d)).collect();
    let build = ImageBuild {
        app_dir: job.app_dir,
        recipe: &recipe,
        who: ImageOwner {
            owner: provider.owner(),
            org: job.site.org,
            site: job.site.site,
            deployment_id: job.deployment_id,
        },
        build_args: job.build_args,
    };
    let mut on_line = |line: String| (job.log)("stdout", line);
    let built = tokio::select! {
        r = provider.build_image(settings, &build, &in_use, &mut on_line) => r,
        _ = job.cancel.cancelled() => return Err("cancelled".to_string()),
    };
    let tag = built.map_err(|e| e.to_string())?;
    (job.log)("system", format!("built image {tag}"));
    Ok(tag)
}

/// How a deployment's image is built (its own Dockerfile, or one generated on the org's
/// base image with the app's variables as build arguments), written to its build log.
pub fn deployment_recipe(settings: &DockerSettings, job: &BuildJob<'_>) -> Result<ImageRecipe, String> {
    // Sorted: the generated file must not change between builds (the layer cache).
    let mut names: Vec<&str> = job.build_args.keys().map(String::as_str).collect();
    names.sort_unstable();
    let recipe = image::recipe(job.app_dir, job.plan, &settings.base_images, &names)?
        .ok_or_else(|| "this plan serves no process, so there is no image to build".to_string())?;
    match &recipe {
        ImageRecipe::OwnDockerfile => (job.log)("system", "building the app's Dockerfile".into()),
        ImageRecipe::Generated { base, dockerfile } => {
            (job.log)("system", format!("no Dockerfile: generated one on {base}:"));
            for line in dockerfile.lines() {
                (job.log)("system", format!("  {line}"));
            }
        }
    }
    Ok(recipe)
}

/// Whether a deployment with this plan runs from an image: one that serves a process
/// (static sites stay with the edge).
pub fn serves_process(plan: &BuildPlan) -> bool {
    matches!(plan.serve, berth_build::ServePlan::Process { .. })
}

#[async_trait::async_trait]
impl Target for DockerTarget {
    fn registration(&self) -> &'static Registration {
        &TARGET
    }

    fn provider(&self) -> Option<Arc<dyn Provider>> {
        Some(self.provider.clone())
    }

    fn build_for(&self, plan: &BuildPlan) -> BuildKind {
        if serves_process(plan) {
            BuildKind::Image
        } else {
            BuildKind::SandboxSteps
        }
    }

    /// The app's own Dockerfile is its plan, unless the site names a build pack.
    fn own_plan(&self, dir: &Path, settings: &BuildSettings) -> Option<Result<BuildPlan, DetectError>> {
        (settings.build_pack.is_none() && berth_build::dockerfile::has_dockerfile(dir))
            .then(|| berth_build::dockerfile::dockerfile_plan(settings))
    }

    /// The app's own Dockerfile, or one generated from the plan on the org's base image,
    /// built by the engine with its output in the build log. Old images of the site beyond
    /// `keep_images` go afterwards, never one an environment uses.
    async fn build(&self, job: BuildJob<'_>) -> Result<(), String> {
        let (settings, provider) = self.images(job.site)?;
        build_deployment_image(&provider, &settings, &job).await.map(drop)
    }

    fn instance_image(&self, site: &str, deployment_id: &str, plan: &BuildPlan) -> Option<String> {
        serves_process(plan).then(|| image::image_tag(site, deployment_id))
    }

    /// A second tag on the same image: nothing is rebuilt.
    async fn copy_build(
        &self,
        site: SiteRef<'_>,
        plan: &BuildPlan,
        from: &str,
        to: &str,
    ) -> Result<&'static str, String> {
        if !serves_process(plan) {
            return Ok("");
        }
        let (settings, provider) = self.images(site)?;
        provider
            .tag_image(
                &settings,
                &image::image_tag(site.site, from),
                &image::image_tag(site.site, to),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(" and image")
    }

    /// Only the newest `keep_images` images of a site are kept.
    async fn kept(&self, site: SiteRef<'_>, plan: &BuildPlan, id: &str) -> Result<Kept, String> {
        if !serves_process(plan) {
            return Ok(Kept::Yes); // a static site: served from its files by the edge
        }
        let (settings, provider) = self.images(site)?;
        match provider.has_image(&settings, &image::image_tag(site.site, id)).await {
            Ok(true) => Ok(Kept::Yes),
            Ok(false) => Ok(Kept::Gone(format!(
                "its image was removed (only the newest keep_images images of a site are kept, currently {})",
                settings.keep_images
            ))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Removes the site's images from the engine. An engine that is down leaves them to
    /// the next deploy's clean-up of the same site name.
    async fn site_deleted(&self, site: SiteRef<'_>) -> Result<(), String> {
        let (settings, provider) = self.images(site)?;
        provider
            .remove_site_images(&settings, site.org, site.site)
            .await
            .map_err(|e| e.to_string())
    }

    fn is_org_default(&self, settings: &Settings) -> bool {
        super::is_org_default(settings)
    }

    /// Connects to the engine and reports its version.
    async fn test_connection(&self, settings: &Settings) -> Result<String, CheckError> {
        let settings = super::settings_from_config(settings).map_err(CheckError::Invalid)?;
        let report = async { Engine::connect(&settings.host)?.negotiate().await?.probe().await }
            .await
            .map_err(|e| CheckError::Unavailable(e.to_string()))?;
        Ok(format!(
            "Docker Engine {} (API {}, {}) at {}",
            report.version, report.api_version, report.platform, report.host
        ))
    }
}
