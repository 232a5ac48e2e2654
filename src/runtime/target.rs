//! Targets (places deployments run): the [`Target`] trait each one implements and the
//! registry of them. Every target registers here once, with its name, its capability
//! table, its settings schema and its constructor; the settings service
//! (`HOSTING_GET_CONFIG`), the choice of a site's provider, the deploy pipeline and the
//! tools that act on a site go through this registry and the trait instead of knowing
//! targets by name, so an operation a target cannot do is refused up front, naming the
//! target and the capability.
//!
//! A target's own folder holds everything it knows: `local.rs` and `docker/` run their
//! instances on the shared lifecycle ([`Runtime`]: health checks, swaps, restarts, scale
//! to zero and scale-out stay one piece of code), so their trait implementations
//! delegate release, observe, retire, logs and usage to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_build::detect::{BuildPlan, BuildSettings, DetectError};
use berth_build::sandbox::Sandbox;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::isolation::Isolation;
use super::{InstanceSpec, LogSink, Observation, Provider, Runtime, StartError, Usage};

/// One setting a provider understands.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    /// Key name.
    pub name: &'static str,
    /// Whether the value is a credential (masked in outputs).
    pub secret: bool,
    /// What it means, with its default.
    pub description: &'static str,
}

/// How an idle environment sleeps (`min_instances: 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaleToZero {
    /// It cannot sleep: at least one instance always runs.
    Unsupported,
    /// Its instances are stopped; the next request starts one (a cold start).
    Stop,
    /// Its instances are frozen in place (memory kept) and thawed by the next request;
    /// stopped after the provider's hold.
    Freeze,
}

/// Whether an environment can be pointed at an already built deployment (promote,
/// rollback) without building it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromoteWithoutRebuild {
    /// Never: every release is a build.
    Unsupported,
    /// Any deployment whose files are kept.
    Always,
    /// Only while the deployment's image is kept (the newest images of a site, per the
    /// provider's retention setting); an older one must be deployed again.
    WhileImageKept,
}

/// How a deployment is built for the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildKind {
    /// Build steps run in berth's sandbox on this machine; the output is a directory.
    SandboxSteps,
    /// berth builds an image (the site's Dockerfile or a generated one).
    Image,
    /// berth uploads the source and the platform builds it.
    PlatformUpload,
}

/// What a target can do: consulted by the tools before they change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Capabilities {
    /// How an idle environment sleeps.
    pub scale_to_zero: ScaleToZero,
    /// Most instances of one environment (scale-out); 1: no scale-out.
    pub max_instances: u32,
    /// Whether promote and rollback reuse a build.
    pub promote_without_rebuild: PromoteWithoutRebuild,
    /// Whether the app's own output is kept as runtime logs.
    pub runtime_logs: bool,
    /// Whether CPU and memory per instance are reported.
    pub resource_usage: bool,
    /// Whether custom domains are served through berth's edge (with its certificates).
    pub custom_domains: bool,
    /// How a deployment is built.
    pub build: BuildKind,
}

/// A registered target: what the registry knows of it before one is made.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// Its name, as sites and `HOSTING_SET_CONFIG` spell it.
    pub name: &'static str,
    /// One line on what it is.
    pub summary: &'static str,
    /// What it can do.
    pub capabilities: Capabilities,
    /// It runs apps on the machine of the server that deploys them: several replicas on
    /// one database cannot share its apps.
    pub on_its_server: bool,
    /// The settings it accepts (`HOSTING_SET_CONFIG`); anything else is refused.
    pub settings: &'static [ConfigKey],
    /// Checks an org's whole settings of it (after an update is merged in); the message
    /// names the key and what it accepts.
    pub check_settings: fn(&Settings) -> Result<(), String>,
    /// Makes this installation's target from the shared parts.
    pub make: fn(&Assembly) -> anyhow::Result<Arc<dyn Target>>,
}

/// Every target; one line per target. The first is the default of new sites.
pub const TARGETS: &[Registration] = &[super::local::TARGET, super::docker::TARGET, super::kubernetes::TARGET];

/// The registered target `name`.
pub fn find(name: &str) -> Option<&'static Registration> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The registered targets' names, for messages (`local, docker`).
pub fn names() -> String {
    TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// A yes/no cell of the capability table.
fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The targets × capabilities table in Markdown, as the README shows it (a unit test
/// keeps the two the same).
pub fn capability_table() -> String {
    let mut out = String::from(
        "| target | scale to zero | max instances | promote without rebuild | runtime logs | resource usage | custom domains | build |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for t in TARGETS {
        let c = &t.capabilities;
        let sleep = match c.scale_to_zero {
            ScaleToZero::Unsupported => "no",
            ScaleToZero::Stop => "stop",
            ScaleToZero::Freeze => "freeze in place, then stop",
        };
        let promote = match c.promote_without_rebuild {
            PromoteWithoutRebuild::Unsupported => "no",
            PromoteWithoutRebuild::Always => "yes",
            PromoteWithoutRebuild::WhileImageKept => "while its image is kept",
        };
        let build = match c.build {
            BuildKind::SandboxSteps => "steps in berth's sandbox",
            BuildKind::Image => "image built by berth",
            BuildKind::PlatformUpload => "upload the platform builds",
        };
        let domains = if c.custom_domains { "through berth's edge" } else { "no" };
        out.push_str(&format!(
            "| `{}` | {sleep} | {} | {promote} | {} | {} | {domains} | {build} |\n",
            t.name,
            c.max_instances,
            yes_no(c.runtime_logs),
            yes_no(c.resource_usage),
        ));
    }
    out
}

/// An org's settings of one target, as stored (`HOSTING_SET_CONFIG`), opened.
pub type Settings = serde_json::Map<String, serde_json::Value>;

/// How requests reach a deployment once it serves an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traffic {
    /// Through berth's edge, to the upstream addresses the target reports.
    Edge(Vec<SocketAddr>),
    /// At a URL the platform itself serves.
    External(String),
}

/// The shared parts a target is made from (its registration's `make`).
pub struct Assembly {
    /// Runs build steps and apps.
    pub sandbox: Arc<Sandbox>,
    /// Host users, network namespaces and limits of build steps and apps.
    pub isolation: Arc<Isolation>,
    /// berth's data folder.
    pub data_dir: PathBuf,
    /// The installation's id, the same for every replica of one database: the
    /// `berth.owner` of the containers and images it makes.
    pub owner: String,
    /// Ports of the control plane that apps must not reach (it listens beyond loopback).
    pub shielded_ports: Vec<u16>,
    /// Build contexts offered once to builders outside berth (`/internal/build-contexts`).
    pub build_contexts: Arc<super::build_contexts::BuildContexts>,
    /// Builds berth runs at once (`--build-concurrency`), for targets that bound builds
    /// outside berth too.
    pub build_concurrency: usize,
}

/// The deployment and site an operation is about, with the org's settings of the target.
#[derive(Clone, Copy)]
pub struct SiteRef<'a> {
    /// Org id.
    pub org: &'a str,
    /// Site name.
    pub site: &'a str,
    /// The org's settings of the site's target.
    pub settings: &'a Settings,
}

/// An environment's released deployment on a target that runs it elsewhere.
#[derive(Clone, Copy)]
pub struct Placement<'a> {
    /// The site, its org and the org's settings of the target.
    pub site: SiteRef<'a>,
    /// Environment name.
    pub environment: &'a str,
    /// The deployment it serves.
    pub deployment_id: &'a str,
}

/// A build the target does itself ([`BuildKind::Image`], [`BuildKind::PlatformUpload`]).
pub struct BuildJob<'a> {
    /// Whose deployment.
    pub site: SiteRef<'a>,
    /// The deployment being built.
    pub deployment_id: &'a str,
    /// berth's copy of its source.
    pub app_dir: &'a Path,
    /// Its build plan.
    pub plan: &'a BuildPlan,
    /// The app's variables (build arguments).
    pub build_args: &'a HashMap<String, String>,
    /// Deployments environments of the site serve: their builds are kept.
    pub in_use: &'a [String],
    /// Writes a line of the build log.
    pub log: &'a (dyn Fn(&'static str, String) + Send + Sync),
    /// Cancels the build.
    pub cancel: &'a CancellationToken,
    /// Longest the build may take (berth's build timeout).
    pub timeout: std::time::Duration,
}

/// What a dry run of a release found.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// Whether the platform itself checked the objects (server-side dry run).
    pub server_side: bool,
    /// What to know about them.
    pub note: String,
    /// The objects, in the order they would be applied, secrets sealed.
    pub objects: Vec<serde_json::Value>,
}

/// Whether an already built deployment can still be served without a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Yes.
    Yes,
    /// No: why (what the target removed and the setting that bounds it).
    Gone(String),
}

/// Why a settings check or connection test failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The settings are wrong: which key and what it accepts.
    Invalid(String),
    /// The target cannot be reached or used: what is wrong and how to fix it.
    Unavailable(String),
}

/// A place deployments run, as the deploy pipeline and the tools drive it: how a
/// deployment is built, how traffic reaches it, and the operations on it. A target whose
/// instances run on berth's shared lifecycle (local, docker) hands its primitives over
/// through [`Target::provider`] and keeps the default operations, which delegate to that
/// lifecycle; a target that runs deployments elsewhere overrides them.
#[async_trait::async_trait]
pub trait Target: Send + Sync + 'static {
    /// Its registration (name, capabilities, settings schema).
    fn registration(&self) -> &'static Registration;

    /// The primitives its instances run on in the shared lifecycle; `None` for a target
    /// that runs deployments elsewhere.
    fn provider(&self) -> Option<Arc<dyn Provider>>;

    /// How a deployment with this plan is built for it (a static site is served from its
    /// files by the edge, whatever the target).
    fn build_for(&self, plan: &BuildPlan) -> BuildKind {
        let _ = plan;
        self.registration().capabilities.build
    }

    /// A build plan of the target's own for the source in `dir` (e.g. the app's own
    /// Dockerfile), taking precedence over detection; `None`: detect as usual.
    fn own_plan(&self, dir: &Path, settings: &BuildSettings) -> Option<Result<BuildPlan, DetectError>> {
        let _ = (dir, settings);
        None
    }

    /// Builds a deployment whose [`Target::build_for`] is not [`BuildKind::SandboxSteps`].
    async fn build(&self, job: BuildJob<'_>) -> Result<(), String> {
        let _ = job;
        Err(format!(
            "target '{}' does not build deployments itself",
            self.registration().name
        ))
    }

    /// The image instances of a deployment run, for a target that builds images.
    fn instance_image(&self, site: &str, deployment_id: &str, plan: &BuildPlan) -> Option<String> {
        let _ = (site, deployment_id, plan);
        None
    }

    /// Makes the build of deployment `from` the build of `to` too (a promotion copies a
    /// deployment; its files are copied by berth). Returns what was reused, for the log
    /// (`" and image"`), empty when nothing beyond the files.
    async fn copy_build(
        &self,
        site: SiteRef<'_>,
        plan: &BuildPlan,
        from: &str,
        to: &str,
    ) -> Result<&'static str, String> {
        let _ = (site, plan, from, to);
        Ok("")
    }

    /// Whether deployment `id` can still be served without a rebuild
    /// ([`PromoteWithoutRebuild::WhileImageKept`]); `Err`: the target could not tell.
    async fn kept(&self, site: SiteRef<'_>, plan: &BuildPlan, id: &str) -> Result<Kept, String> {
        let _ = (site, plan, id);
        Ok(Kept::Yes)
    }

    /// The objects a release of `spec` would apply, applying nothing (a deploy's
    /// `dry_run`); values of the app's variables and of secrets sealed. A target that
    /// applies no objects says so.
    async fn dry_run(&self, spec: InstanceSpec) -> Result<DryRun, String> {
        let _ = spec;
        Err(format!(
            "dry_run shows the objects a kubernetes site's release applies; this site runs on target '{}', which applies none: deploy without dry_run",
            self.registration().name
        ))
    }

    /// Removes what the target keeps of a deployment berth forgot (pruned, or a
    /// promotion's copy that did not go live), best effort.
    async fn deployment_forgotten(&self, site: &str, deployment_id: &str) {
        let _ = (site, deployment_id);
    }

    /// Removes what the target keeps of a deleted site (best effort).
    async fn site_deleted(&self, site: SiteRef<'_>) -> Result<(), String> {
        let _ = site;
        Ok(())
    }

    /// Whether the org's settings make this target the one new sites run on.
    fn is_org_default(&self, settings: &Settings) -> bool {
        let _ = settings;
        false
    }

    /// Tries what the settings describe (`HOSTING_TEST_CONNECTION`); `Ok` says what was
    /// found.
    async fn test_connection(&self, settings: &Settings) -> Result<String, CheckError>;

    /// Releases a deployment: makes it serve its environment and says how traffic reaches
    /// it. On the shared lifecycle: its first instance started and healthy.
    async fn release(&self, lifecycle: &Runtime, spec: InstanceSpec) -> Result<Traffic, StartError> {
        lifecycle.start(spec, 0).await.map(|addr| Traffic::Edge(vec![addr]))
    }

    /// How traffic reaches an environment's released deployment when the target runs it
    /// elsewhere (the reconciler routes the environment's host there); `None`: through the
    /// shared lifecycle's instances.
    fn serving(&self, settings: &Settings) -> Option<Traffic> {
        let _ = settings;
        None
    }

    /// What a deployment's instances are doing.
    fn observe(&self, lifecycle: &Runtime, deployment_id: &str) -> Vec<Observation> {
        lifecycle.observe(deployment_id)
    }

    /// The hosts of an environment changed (a custom domain became served or was
    /// removed, a certificate was issued or renewed): a target that routes in its own
    /// cluster applies them now instead of at the next release. `spec` is what the
    /// environment runs, with its hosts, served domains and their certificates as they
    /// are now. Targets served through berth's edge alone have nothing to do.
    async fn routes_changed(&self, spec: InstanceSpec) -> Result<(), String> {
        let _ = spec;
        Ok(())
    }

    /// Restarts an environment's released deployment so that it reads its variables
    /// again (`HOSTING_SET_ENV_VARS` with `restart`); `spec` is what it runs, with the
    /// environment's variables as they are now. Answers whether anything was restarted.
    /// On the shared lifecycle: its running instances stop and the reconciler starts them
    /// again with the new values (an asleep environment reads them when it wakes).
    async fn restart(&self, lifecycle: &Runtime, spec: InstanceSpec) -> Result<bool, String> {
        if !lifecycle.is_running(&spec.deployment_id) {
            return Ok(false);
        }
        lifecycle.stop(&spec.deployment_id).await;
        Ok(true)
    }

    /// The scale settings of an environment changed (`HOSTING_SET_SCALING_CONFIG`): a
    /// target whose platform scales by itself applies them now instead of at the next
    /// release. `spec` is what the environment runs, with its scale settings as they are
    /// now. Targets scaled by the reconciler (instance counts) have nothing to do.
    async fn scale_changed(&self, spec: InstanceSpec) -> Result<(), String> {
        let _ = spec;
        Ok(())
    }

    /// Stops everything of a deployment (after its drain, if one is under way).
    async fn retire(&self, lifecycle: &Runtime, deployment_id: &str) {
        lifecycle.stop(deployment_id).await;
    }

    /// A deployment's last output lines (its whole runtime log goes to the log sink as it
    /// is written).
    fn logs(&self, lifecycle: &Runtime, deployment_id: &str) -> Vec<String> {
        lifecycle.last_lines(deployment_id)
    }

    /// CPU and memory of each instance of a deployment, when the target can tell.
    async fn usage(&self, lifecycle: &Runtime, deployment_id: &str) -> Vec<(u32, Option<Usage>)> {
        lifecycle.usage(deployment_id, self.registration().name).await
    }

    /// CPU and memory of each instance of a deployment, or why the target cannot tell
    /// (e.g. a cluster without a metrics API).
    async fn usage_report(
        &self,
        lifecycle: &Runtime,
        deployment_id: &str,
    ) -> Result<Vec<(u32, Option<Usage>)>, String> {
        Ok(self.usage(lifecycle, deployment_id).await)
    }

    /// Most instances of one environment under the org's settings (at most the
    /// capability table's `max_instances`).
    fn max_instances(&self, settings: &Settings) -> u32 {
        let _ = settings;
        self.registration().capabilities.max_instances
    }

    /// Whether the platform scales the environment at `placement` by itself, waking it on
    /// the first request (Knative's activator): berth then never counts it asleep, and its
    /// edge passes every request through instead of holding it for a wake-up.
    fn scales_itself(&self, placement: Placement<'_>) -> bool {
        let _ = placement;
        false
    }

    /// Runs `instances` instances (0: asleep) of an environment's released deployment on
    /// a target that runs deployments elsewhere, and says how many are ready. The
    /// reconciler calls it on every pass (scale-out, scale to zero, waking), so it is
    /// cheap when nothing changed.
    async fn scale(&self, lifecycle: &Runtime, placement: Placement<'_>, instances: u32) -> Result<u32, String> {
        let _ = (lifecycle, placement, instances);
        Err(format!(
            "target '{}' runs its instances on the shared lifecycle",
            self.registration().name
        ))
    }
}

/// This installation's targets, made from the registry, and the shared lifecycle the
/// ones that run instances here use.
#[derive(Clone)]
pub struct Targets {
    made: Arc<HashMap<&'static str, Arc<dyn Target>>>,
    lifecycle: Runtime,
}

impl Targets {
    /// Makes every registered target and the lifecycle their providers run on.
    pub fn assemble(parts: &Assembly, logs: LogSink, changed: Arc<tokio::sync::Notify>) -> anyhow::Result<Self> {
        let mut made = HashMap::new();
        let mut providers = Vec::new();
        for registration in TARGETS {
            let target = (registration.make)(parts)?;
            providers.extend(target.provider());
            made.insert(registration.name, target);
        }
        Ok(Self {
            made: Arc::new(made),
            lifecycle: Runtime::new(providers, logs, changed),
        })
    }

    /// The target `name`, when registered.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Target>> {
        self.made.get(name).cloned()
    }

    /// The shared lifecycle.
    pub fn lifecycle(&self) -> &Runtime {
        &self.lifecycle
    }

    /// The targets whose instances run on the shared lifecycle in a place every replica
    /// reaches (docker on an engine they share): one replica at a time runs them.
    pub fn shared(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = TARGETS
            .iter()
            .filter(|r| !r.on_its_server && self.get(r.name).is_some_and(|t| t.provider().is_some()))
            .map(|r| r.name)
            .collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_table_matches_the_registry() {
        let readme = include_str!("../../README.md");
        let (begin, end) = ("<!-- capabilities:begin -->\n", "<!-- capabilities:end -->");
        let start = readme
            .find(begin)
            .expect("README has the capability table's begin marker")
            + begin.len();
        let stop = readme[start..].find(end).expect("README has its end marker") + start;
        assert_eq!(
            &readme[start..stop],
            capability_table(),
            "the README's capability table differs from runtime::target::TARGETS; paste this table between the markers"
        );
    }

    #[test]
    fn every_target_is_registered_once_under_its_providers_name() {
        let mut names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len(), "a target is registered twice");
        assert_eq!(TARGETS[0].name, "local", "local stays the default of new sites");
        assert_eq!(find(super::super::docker::NAME).map(|t| t.name), Some("docker"));
    }

    /// The shared layers reach a target through the registry and the [`Target`] trait
    /// only: none of them names a target's module.
    #[test]
    fn the_shared_layers_name_no_target() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for file in [
            "deploy/mod.rs",
            "deploy/state.rs",
            "loops/reconciler.rs",
            "loops/autoscaler.rs",
            "loops/health.rs",
            "loops/wake.rs",
            "loops/usage.rs",
            "platform/mod.rs",
            "service/mod.rs",
            "service/config.rs",
            "service/capabilities.rs",
            "runtime/lifecycle.rs",
        ] {
            let text = std::fs::read_to_string(root.join(file)).expect("source file");
            for registration in TARGETS {
                let module = format!("runtime::{}", registration.name);
                assert!(
                    !text.contains(&module),
                    "src/{file} names {module}; go through runtime::target (the registry and the Target trait)"
                );
            }
        }
    }

    /// The adapters: the modules that translate requests (and the server and `main`
    /// that wire them), each a file or a folder directly under `src/`.
    const ADAPTERS: [&str; 8] = [
        "api.rs",
        "cli.rs",
        "git_http.rs",
        "mcp.rs",
        "oauth.rs",
        "server.rs",
        "main.rs",
        "ui",
    ];

    /// The Rust files under `src/` whose top-level file or folder is not in `skip`, with
    /// their text.
    fn sources_outside(skip: &[&str]) -> Vec<(std::path::PathBuf, String)> {
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("source folder") {
                let path = entry.expect("folder entry").path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        files.retain(|f| {
            let top = f
                .strip_prefix(&root)
                .expect("under src")
                .components()
                .next()
                .expect("a name");
            !skip.iter().any(|a| top.as_os_str() == *a)
        });
        files
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(&f).expect("source file");
                (f, text)
            })
            .collect()
    }

    /// Only the adapters (and the server that wires them) import the service layer:
    /// the platform's shared state, the deploy work, the control loops, the runtimes and
    /// the store get what they need through `Platform`, the target trait and small
    /// structs, so there is no import cycle through the service.
    #[test]
    fn nothing_below_the_service_layer_imports_it() {
        let mut skip = ADAPTERS.to_vec();
        skip.push("service");
        let files = sources_outside(&skip);
        assert!(files.len() > 40, "found only {} files below the adapters", files.len());
        // Spelled in two pieces so that this file does not match itself.
        let service = concat!("crate::", "service");
        for (file, text) in files {
            assert!(
                !text.contains(service),
                "{} imports the service layer; pass what it needs through runtime::target or a small struct",
                file.display()
            );
        }
    }

    /// Adapters depend on the layers below them, never the other way round: no file
    /// outside the adapters (the service layer included) names an adapter module in
    /// code. What both need lives in the lower module (`model`, `util`, the store).
    #[test]
    fn nothing_outside_the_adapters_imports_one() {
        let files = sources_outside(&ADAPTERS);
        assert!(
            files.len() > 60,
            "found only {} files outside the adapters",
            files.len()
        );
        let modules = ADAPTERS.map(|a| a.trim_end_matches(".rs"));
        for (file, text) in files {
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for module in modules {
                    // Spelled in two pieces so that this file does not match itself.
                    let path = format!("{}{module}", concat!("crate", "::"));
                    let named = line.match_indices(&path).any(|(at, _)| {
                        !line[at + path.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    });
                    assert!(
                        !named,
                        "{} names the adapter module {path} in `{}`; move what it needs below the adapters (model, util or the store)",
                        file.display(),
                        line.trim()
                    );
                }
            }
        }
    }
}
