//! Images: building a deployment's image through the Engine API from a tar of its app
//! folder (its own `Dockerfile`, or one generated from the detected plan), streaming the
//! build output as log lines, and garbage-collecting old images of a site.

use std::collections::HashMap;
use std::path::Path;

use berth_build::BuildPlan;
use berth_build::detect::BuildPack;
use berth_build::dockerfile::{self, BaseImages, DockerfileError};
use bollard::query_parameters::{BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use futures::StreamExt;

use super::engine::{Engine, EngineError};
use super::{LABEL_DEPLOYMENT, LABEL_ORG, LABEL_OWNER, LABEL_SITE};

/// What a deployment's image is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRecipe {
    /// The app's own `Dockerfile` at its root.
    OwnDockerfile,
    /// A Dockerfile generated from the detected plan on this base image.
    Generated {
        /// The base image (`FROM`).
        base: String,
        /// The generated file's text, also written to the build log.
        dockerfile: String,
    },
}

/// Chooses how to build `app_dir`: its own Dockerfile wins; otherwise the plan's pack picks
/// a base image. `None` for static sites, which the edge serves without a container.
pub fn recipe(
    app_dir: &Path,
    plan: &BuildPlan,
    bases: &BaseImages,
    build_args: &[&str],
) -> Result<Option<ImageRecipe>, String> {
    if dockerfile::has_dockerfile(app_dir) {
        return Ok(Some(ImageRecipe::OwnDockerfile));
    }
    if matches!(plan.pack, BuildPack::Go | BuildPack::Rust | BuildPack::Deno) {
        return Err(format!(
            "the docker provider has no generated image for {} apps yet; add a Dockerfile to the repository, or use the local provider",
            plan.pack
        ));
    }
    let Some(base) = bases.for_pack(plan.pack) else {
        return Ok(None);
    };
    match dockerfile::generate(plan, base, build_args) {
        Ok(text) => Ok(Some(ImageRecipe::Generated {
            base: base.to_string(),
            dockerfile: text,
        })),
        Err(DockerfileError::StaticSite) => Ok(None),
    }
}

/// Who an image belongs to; recorded as labels so that garbage collection and cleanup
/// find it again.
#[derive(Clone, Debug)]
pub struct ImageOwner<'a> {
    /// The berth installation (see [`super::DockerProvider::owner`]).
    pub owner: &'a str,
    /// Org name.
    pub org: &'a str,
    /// Site name.
    pub site: &'a str,
    /// Deployment id.
    pub deployment_id: &'a str,
}

/// The tag of a deployment's image: `berth/<site>:<deployment>`.
pub fn image_tag(site: &str, deployment_id: &str) -> String {
    format!(
        "berth/{}:{}",
        site.to_ascii_lowercase(),
        deployment_id.to_ascii_lowercase()
    )
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The engine could not be used.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The Dockerfile or one of its steps failed; the log has the details.
    #[error("the image build failed: {0}")]
    Failed(String),
    /// The app folder could not be packed.
    #[error("could not pack the app folder for the image build: {0}")]
    Context(String),
}

/// What to build for one deployment.
pub struct ImageBuild<'a> {
    /// berth's copy of the deployment's source (the build context).
    pub app_dir: &'a Path,
    /// Its own Dockerfile or a generated one.
    pub recipe: &'a ImageRecipe,
    /// Who the image belongs to (its labels).
    pub who: ImageOwner<'a>,
    /// Build arguments: the app's variables.
    pub build_args: &'a HashMap<String, String>,
}

/// Writes the generated Dockerfile into the app folder as a new file. The app's tree may
/// already hold an entry of that name, even a symlink to a host file: it is removed, and
/// the new file is created exclusively, so nothing is ever written through a link.
async fn write_generated(app_dir: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let path = app_dir.join(dockerfile::GENERATED_DOCKERFILE);
    match tokio::fs::remove_file(&path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

/// Puts the recipe's Dockerfile into the app folder (a generated one is written there, see
/// `write_generated`) and returns its name in the build context.
pub async fn dockerfile_in_context(app_dir: &Path, recipe: &ImageRecipe) -> std::io::Result<&'static str> {
    match recipe {
        ImageRecipe::OwnDockerfile => Ok(dockerfile::DOCKERFILE),
        ImageRecipe::Generated { dockerfile: text, .. } => {
            write_generated(app_dir, text).await?;
            Ok(dockerfile::GENERATED_DOCKERFILE)
        }
    }
}

/// Builds the image of one deployment and tags it [`image_tag`]. Each line of the engine's
/// build output goes to `on_line`. A generated Dockerfile is written into the app folder
/// (berth's own copy of the source) first. `network`: where the build's `RUN` steps run
/// (the org's network, so they meet the same firewall as its containers); the engine's
/// default bridge when `None`.
pub async fn build(
    engine: &Engine,
    build: &ImageBuild<'_>,
    network: Option<&str>,
    on_line: &mut (dyn FnMut(String) + Send),
) -> Result<String, BuildError> {
    let ImageBuild {
        app_dir,
        recipe,
        who,
        build_args,
    } = build;
    let dockerfile_name = dockerfile_in_context(app_dir, recipe)
        .await
        .map_err(|e| BuildError::Context(e.to_string()))?;
    let dir = app_dir.to_path_buf();
    let context = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        berth_build::pack_dir_tar_gz(&dir, &mut out).map(|_| out)
    })
    .await
    .map_err(|e| BuildError::Context(e.to_string()))?
    .map_err(|e| BuildError::Context(e.to_string()))?;

    let tag = image_tag(who.site, who.deployment_id);
    let labels: HashMap<&str, &str> = HashMap::from([
        (LABEL_OWNER, who.owner),
        (LABEL_ORG, who.org),
        (LABEL_SITE, who.site),
        (LABEL_DEPLOYMENT, who.deployment_id),
    ]);
    let mut options = BuildImageOptionsBuilder::default();
    if let Some(network) = network {
        options = options.networkmode(network);
    }
    let options = options
        .dockerfile(dockerfile_name)
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .buildargs(*build_args)
        .build();
    let mut stream = engine
        .docker()
        .build_image(options, None, Some(bollard::body_full(context.into())));
    let mut pending = String::new();
    let mut failure: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    pending.push_str(&text);
                    emit_lines(&mut pending, on_line);
                }
                if let Some(status) = info.status {
                    on_line(status);
                }
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    failure = Some(message.trim().to_string());
                }
            }
            Err(err) => {
                let err = engine.error(err);
                match err {
                    // The engine reports a failed step as a server error at the end.
                    EngineError::Refused { message, .. } => failure = Some(message),
                    other => return Err(other.into()),
                }
                break;
            }
        }
    }
    if !pending.trim().is_empty() {
        on_line(pending.trim_end().to_string());
    }
    if let Some(message) = failure {
        return Err(BuildError::Failed(message));
    }
    // The stream can end without an error while the tag is missing (a dropped
    // connection); only an image that exists counts as built.
    engine
        .docker()
        .inspect_image(&tag)
        .await
        .map_err(|e| BuildError::Failed(format!("the engine did not produce {tag}: {}", engine.error(e))))?;
    Ok(tag)
}

/// Sends every complete line of `pending` and keeps the unfinished rest.
fn emit_lines(pending: &mut String, on_line: &mut (dyn FnMut(String) + Send)) {
    while let Some(pos) = pending.find('\n') {
        let line: String = pending.drain(..=pos).collect();
        let line = line.trim_end();
        if !line.is_empty() {
            on_line(line.to_string());
        }
    }
}

/// Tags the image `from` (`repo:tag`) as `to` too.
pub async fn tag(engine: &Engine, from: &str, to: &str) -> Result<(), EngineError> {
    let (repo, tag) = to.rsplit_once(':').unwrap_or((to, "latest"));
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    engine
        .docker()
        .tag_image(from, Some(options))
        .await
        .map_err(|e| engine.error(e))
}

/// Whether the image `tag` is still on the engine (not removed by garbage collection).
pub async fn exists(engine: &Engine, tag: &str) -> Result<bool, EngineError> {
    match engine.docker().inspect_image(tag).await.map_err(|e| engine.error(e)) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes all but the newest `keep` images of a site built by this installation, and
/// never one listed in `in_use` (tags of deployments an environment points at or that
/// still run). An image a container still uses is refused by the engine and kept.
pub async fn collect_garbage(
    engine: &Engine,
    owner: &str,
    org: &str,
    site: &str,
    keep: usize,
    in_use: &[String],
) -> Result<usize, EngineError> {
    let filters: HashMap<&str, Vec<String>> = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_OWNER}={owner}"),
            format!("{LABEL_ORG}={org}"),
            format!("{LABEL_SITE}={site}"),
        ],
    )]);
    let mut images = engine
        .docker()
        .list_images(Some(ListImagesOptionsBuilder::default().filters(&filters).build()))
        .await
        .map_err(|e| engine.error(e))?;
    images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    let mut removed = 0;
    for image in images.into_iter().skip(keep) {
        if image.repo_tags.iter().any(|t| in_use.contains(t)) {
            continue;
        }
        // By tag: an image a promotion tagged twice goes with its last tag (removing it by
        // id would be refused while it has two).
        let names = if image.repo_tags.is_empty() {
            vec![image.id.clone()]
        } else {
            image.repo_tags.clone()
        };
        let mut gone = true;
        for name in names {
            let options = RemoveImageOptionsBuilder::default().force(false).noprune(false).build();
            if let Err(err) = engine.docker().remove_image(&name, Some(options), None).await {
                let err = engine.error(err);
                if !(err.is_conflict() || err.is_not_found()) {
                    return Err(err);
                }
                // In use by a container, or gone already.
                gone &= err.is_not_found();
            }
        }
        if gone {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Pushes the image `reference` (`registry/repo:tag`) to its registry and returns the
/// reference by digest (`registry/repo@sha256:…`) that the registry now serves.
pub async fn push(
    engine: &Engine,
    reference: &str,
    credentials: Option<bollard::auth::DockerCredentials>,
) -> Result<String, EngineError> {
    let (repo, tag) = match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    };
    let options = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    let mut stream = engine.docker().push_image(repo, Some(options), credentials);
    while let Some(step) = stream.next().await {
        step.map_err(|e| engine.error(e))?;
    }
    let inspected = engine
        .docker()
        .inspect_image(reference)
        .await
        .map_err(|e| engine.error(e))?;
    inspected
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.split_once('@').is_some_and(|(name, _)| name == repo))
        .ok_or_else(|| EngineError::Refused {
            host: engine.host().to_string(),
            message: format!("the push of {reference} reported no digest for {repo}"),
            status: 500,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_is_split_into_lines_across_chunks() {
        let mut lines = Vec::new();
        let mut pending = String::new();
        for chunk in ["Step 1/3 : FROM x\n ---> abc", "\n\nStep 2/3", " : RUN y\n"] {
            pending.push_str(chunk);
            emit_lines(&mut pending, &mut |l| lines.push(l));
        }
        assert_eq!(lines, vec!["Step 1/3 : FROM x", " ---> abc", "Step 2/3 : RUN y"]);
        assert!(pending.is_empty());
    }

    #[tokio::test]
    async fn the_generated_dockerfile_is_never_written_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (app, host) = (tmp.path().join("app"), tmp.path().join("host-file"));
        std::fs::create_dir(&app).unwrap();
        std::fs::write(&host, "host content").unwrap();
        std::os::unix::fs::symlink(&host, app.join(dockerfile::GENERATED_DOCKERFILE)).unwrap();
        write_generated(&app, "FROM x\n").await.unwrap();
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "host content");
        let written = app.join(dockerfile::GENERATED_DOCKERFILE);
        assert!(!std::fs::symlink_metadata(&written).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&written).unwrap(), "FROM x\n");
    }

    #[test]
    fn tags_name_the_site_and_deployment() {
        assert_eq!(image_tag("Blog", "01ABC"), "berth/blog:01abc");
    }
}
