//! Build settings a repository carries in a platform config file.
//!
//! `berth.toml` is berth's own: every key is a build setting, unknown keys
//! and wrong types are errors (a typo must not be ignored silently). When it
//! is absent, the start/build commands (and port and health path where the
//! file has them) of the first config file of another platform found in the
//! source root are used, in this order: `render.yaml`, `railway.json`,
//! `railway.toml`, `nixpacks.toml`, `fly.toml`. Those files are read
//! leniently: what berth cannot use is ignored, and a file that cannot be
//! parsed is skipped with a note, because it was written for another platform.
//! Heroku's `app.json` carries no start or build command (the `Procfile` does,
//! and it is read as before), so it is not consulted.
//!
//! Precedence, field by field: the site's own settings, then `berth.toml`,
//! then the other platform's file, then detection. A `Procfile`'s `web:` line
//! wins over another platform's start command. Every value taken from a file
//! is named in the build log.

use serde::Deserialize;

use super::{BuildSettings, DetectError, SourceFiles};

/// Our own config file.
pub const BERTH_TOML: &str = "berth.toml";

/// Other platforms' files, in the order they are consulted.
const FOREIGN_FILES: [&str; 5] = [
    "render.yaml",
    "railway.json",
    "railway.toml",
    "nixpacks.toml",
    "fly.toml",
];

/// `berth.toml`: the build settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BerthToml {
    build_pack: Option<String>,
    install_command: Option<String>,
    build_command: Option<String>,
    start_command: Option<String>,
    output_dir: Option<String>,
    port: Option<u16>,
    health_check_path: Option<String>,
}

/// The settings a repository's config file gives, with one note per value.
#[derive(Debug, Default)]
pub(super) struct RepoSettings {
    pub settings: BuildSettings,
    pub notes: Vec<String>,
}

/// Reads the repository's config file (see the module docs). `procfile_web`
/// is the Procfile's `web:` command, which another platform's start command
/// does not replace.
pub(super) fn read(files: &SourceFiles<'_>, procfile_web: Option<&str>) -> Result<RepoSettings, DetectError> {
    if let Some(text) = files.read_opt(BERTH_TOML)? {
        let parsed: BerthToml = toml::from_str(&text).map_err(|e| DetectError::InvalidManifest {
            file: BERTH_TOML,
            reason: one_line(&e.to_string()),
        })?;
        let settings = BuildSettings {
            build_pack: parsed.build_pack,
            install_command: parsed.install_command,
            build_command: parsed.build_command,
            start_command: parsed.start_command,
            output_dir: parsed.output_dir,
            port: parsed.port,
            health_check_path: parsed.health_check_path,
            // The repository's file is read inside the root folder, so it cannot move it.
            root_dir: None,
        };
        return Ok(described(BERTH_TOML, settings));
    }
    for file in FOREIGN_FILES {
        let Some(text) = files.read_opt(file)? else {
            continue;
        };
        let parsed = match file {
            "render.yaml" => render_yaml(&text),
            "railway.json" => railway_json(&text),
            "railway.toml" => railway_toml(&text),
            "nixpacks.toml" => nixpacks_toml(&text),
            _ => fly_toml(&text),
        };
        let mut settings = match parsed {
            Ok(s) => s,
            Err(reason) => {
                return Ok(RepoSettings {
                    notes: vec![format!("{file} could not be read ({reason}): ignored")],
                    ..RepoSettings::default()
                });
            }
        };
        let mut repo = RepoSettings::default();
        if let (Some(web), Some(start)) = (procfile_web, &settings.start_command) {
            repo.notes.push(format!(
                "{file} starts '{start}', but the Procfile's web: line '{web}' wins"
            ));
            settings.start_command = None;
        }
        let mut found = described(file, settings);
        repo.settings = found.settings;
        repo.notes.append(&mut found.notes);
        if repo.notes.is_empty() {
            repo.notes.push(format!("{file} found: nothing in it that berth uses"));
        }
        return Ok(repo);
    }
    Ok(RepoSettings::default())
}

/// Lays `file`'s settings under the site's: every field the site sets wins.
/// Returns the merged settings and a note per file value used or overridden.
pub(super) fn merge(site: &BuildSettings, repo: RepoSettings) -> (BuildSettings, Vec<String>) {
    let RepoSettings {
        settings: file,
        mut notes,
    } = repo;
    let mut out = site.clone();
    let mut overridden = Vec::new();
    macro_rules! lay {
        ($($field:ident),*) => {$(
            if file.$field.is_some() {
                if site.$field.is_some() {
                    overridden.push(stringify!($field));
                } else {
                    out.$field = file.$field.clone();
                }
            }
        )*};
    }
    lay!(
        build_pack,
        install_command,
        build_command,
        start_command,
        output_dir,
        port,
        health_check_path
    );
    if !overridden.is_empty() {
        notes.push(format!("the site's own {} win over the file", overridden.join(", ")));
    }
    (out, notes)
}

/// One note per value of `settings` found in `file`.
fn described(file: &str, settings: BuildSettings) -> RepoSettings {
    let mut notes = Vec::new();
    let mut note = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            notes.push(format!("{file}: {name} = {v}"));
        }
    };
    note("build_pack", settings.build_pack.clone());
    note(
        "install_command",
        settings.install_command.as_ref().map(|c| format!("'{c}'")),
    );
    note(
        "build_command",
        settings.build_command.as_ref().map(|c| format!("'{c}'")),
    );
    note(
        "start_command",
        settings.start_command.as_ref().map(|c| format!("'{c}'")),
    );
    note("output_dir", settings.output_dir.clone());
    note("port", settings.port.map(|p| p.to_string()));
    note("health_check_path", settings.health_check_path.clone());
    RepoSettings { settings, notes }
}

/// Parser messages can span lines (a snippet of the file); the build log and
/// errors want one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn non_blank(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `render.yaml` (a Render Blueprint): the first `type: web` service's
/// `buildCommand`, `startCommand`, `healthCheckPath`, and for a static site
/// (`runtime: static`, or the older `env: static`) its `staticPublishPath`.
fn render_yaml(text: &str) -> Result<BuildSettings, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let Some(doc) = docs.first() else {
        return Ok(BuildSettings::default());
    };
    let services = doc["services"].as_vec().cloned().unwrap_or_default();
    let Some(web) = services.iter().find(|s| s["type"].as_str() == Some("web")) else {
        return Ok(BuildSettings::default());
    };
    let text_of = |key: &str| non_blank(web[key].as_str().map(str::to_string));
    let is_static = [&web["runtime"], &web["env"]]
        .iter()
        .any(|v| matches!(v, Yaml::String(s) if s == "static"));
    let mut settings = BuildSettings {
        build_command: text_of("buildCommand"),
        start_command: text_of("startCommand"),
        health_check_path: text_of("healthCheckPath"),
        ..BuildSettings::default()
    };
    if is_static {
        settings.output_dir = text_of("staticPublishPath").map(|p| {
            let p = p.trim_start_matches("./").trim_end_matches('/');
            if p.is_empty() { ".".to_string() } else { p.to_string() }
        });
        settings.start_command = None;
    }
    Ok(settings)
}

/// Railway's config-as-code, in either syntax.
#[derive(Debug, Default, Deserialize)]
struct Railway {
    #[serde(default)]
    build: RailwayBuild,
    #[serde(default)]
    deploy: RailwayDeploy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RailwayBuild {
    build_command: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RailwayDeploy {
    start_command: Option<String>,
    healthcheck_path: Option<String>,
}

impl Railway {
    fn settings(self) -> BuildSettings {
        BuildSettings {
            build_command: non_blank(self.build.build_command),
            start_command: non_blank(self.deploy.start_command),
            health_check_path: non_blank(self.deploy.healthcheck_path),
            ..BuildSettings::default()
        }
    }
}

fn railway_json(text: &str) -> Result<BuildSettings, String> {
    serde_json::from_str::<Railway>(text)
        .map(Railway::settings)
        .map_err(|e| e.to_string())
}

fn railway_toml(text: &str) -> Result<BuildSettings, String> {
    toml::from_str::<Railway>(text)
        .map(Railway::settings)
        .map_err(|e| one_line(&e.to_string()))
}

/// `nixpacks.toml`: `[phases.install]`/`[phases.build]` `cmds` and `[start] cmd`.
#[derive(Debug, Default, Deserialize)]
struct Nixpacks {
    #[serde(default)]
    phases: NixpacksPhases,
    #[serde(default)]
    start: NixpacksStart,
}

#[derive(Debug, Default, Deserialize)]
struct NixpacksPhases {
    #[serde(default)]
    install: NixpacksPhase,
    #[serde(default)]
    build: NixpacksPhase,
}

#[derive(Debug, Default, Deserialize)]
struct NixpacksPhase {
    cmds: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct NixpacksStart {
    cmd: Option<String>,
}

impl NixpacksPhase {
    /// The phase's commands joined with `&&`; `None` when the list extends
    /// the provider's defaults (`"..."`), which only detection knows.
    fn command(&self) -> Option<String> {
        let cmds = self.cmds.as_ref()?;
        if cmds.iter().any(|c| c.trim() == "...") {
            return None;
        }
        non_blank(Some(cmds.join(" && ")))
    }
}

fn nixpacks_toml(text: &str) -> Result<BuildSettings, String> {
    let parsed: Nixpacks = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    Ok(BuildSettings {
        install_command: parsed.phases.install.command(),
        build_command: parsed.phases.build.command(),
        start_command: non_blank(parsed.start.cmd),
        ..BuildSettings::default()
    })
}

/// `fly.toml`: the `app` (or `web`) process, the internal port and the first
/// HTTP check's path.
#[derive(Debug, Default, Deserialize)]
struct Fly {
    #[serde(default)]
    processes: std::collections::BTreeMap<String, String>,
    http_service: Option<FlyHttpService>,
    #[serde(default)]
    services: Vec<FlyService>,
}

#[derive(Debug, Default, Deserialize)]
struct FlyHttpService {
    internal_port: Option<u16>,
    #[serde(default)]
    checks: Vec<FlyCheck>,
}

#[derive(Debug, Default, Deserialize)]
struct FlyService {
    internal_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
struct FlyCheck {
    path: Option<String>,
}

fn fly_toml(text: &str) -> Result<BuildSettings, String> {
    let parsed: Fly = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let start = ["app", "web"]
        .iter()
        .find_map(|name| parsed.processes.get(*name).cloned())
        .or_else(|| {
            (parsed.processes.len() == 1)
                .then(|| parsed.processes.values().next().cloned())
                .flatten()
        });
    let port = parsed
        .http_service
        .as_ref()
        .and_then(|h| h.internal_port)
        .or_else(|| parsed.services.iter().find_map(|s| s.internal_port));
    let health = parsed
        .http_service
        .as_ref()
        .and_then(|h| h.checks.iter().find_map(|c| c.path.clone()));
    Ok(BuildSettings {
        start_command: non_blank(start),
        port,
        health_check_path: non_blank(health),
        ..BuildSettings::default()
    })
}

#[cfg(test)]
mod tests;
