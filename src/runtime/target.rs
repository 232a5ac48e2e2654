//! The registry of targets (places deployments run) and what each can do. Every target
//! registers here once, with its name, its capability table and its settings schema;
//! the settings service (`HOSTING_GET_CONFIG`), the choice of a site's provider and the
//! tools that act on a site read this table instead of knowing targets by name, so an
//! operation a target cannot do is refused up front, naming the target and the
//! capability.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// A registered target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name, as sites and `HOSTING_SET_CONFIG` spell it.
    pub name: &'static str,
    /// One line on what it is.
    pub summary: &'static str,
    /// What it can do.
    pub capabilities: Capabilities,
    /// The settings it accepts (`HOSTING_SET_CONFIG`); anything else is refused.
    pub settings: &'static [ConfigKey],
}

/// Every target; one line per target. The first is the default of new sites.
pub const TARGETS: &[Target] = &[super::local::TARGET, super::docker::TARGET];

/// The registered target `name`.
pub fn find(name: &str) -> Option<&'static Target> {
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
}
