//! Build-pack detection: turns a source tree plus the user's settings into a
//! [`BuildPlan`] (install/build shell steps and how to serve the result).
//!
//! This module only *looks* at files; it never runs anything. Detection is
//! deliberately small and predictable, and every user override wins:
//!
//! 0. Settings in the repository (`berth.toml`, else another platform's file
//!    such as `render.yaml`, see [`platform_files`]) lie under the site's own
//!    settings and act like them.
//! 1. `build_pack` set → that pack (unknown values are an error).
//! 2. `package.json` → **node**; `requirements.txt` / `pyproject.toml` /
//!    `uv.lock` / `poetry.lock` / `Pipfile.lock` → **python**. If a
//!    `Procfile` with a `web:` line is also present, it supplies the start
//!    command, but the language pack still installs the dependencies (a
//!    Procfile next to a requirements.txt is the classic Heroku layout, and
//!    skipping `pip install` would break it).
//!    Then `go.mod` → **go**; `Cargo.toml` → **rust**; `deno.json` /
//!    `deno.jsonc` (or a `main.ts` with no package.json) → **deno** (see
//!    the [`go`], [`rust`] and [`deno`] submodules). A bun project (a bun
//!    lockfile or `packageManager: bun@…`) is a node project run with bun.
//! 3. `Procfile` with a `web:` line (and no language manifest) → **procfile**:
//!    the `web:` command is the start command, nothing is installed.
//! 4. `index.html` at the root or in `output_dir`/`dist`/`build`/`public`/
//!    `out` → **static**.
//!
//! Steps are shell command strings run with `sh -c` in the source folder
//! (inside the sandbox that is `/app`); the runner puts
//! `node_modules/.bin` and `.venv/bin` on `PATH`, so start commands are used
//! verbatim instead of being wrapped in `npm start` (which costs ~300 ms and
//! does not forward signals).
//!
//! A Node build whose output is a static site cannot be confirmed before the
//! build has run, so the plan names the most likely folder and
//! [`resolve_output_dir`] settles it afterwards.
//!
//! Node projects: the package manager comes from `packageManager` or the
//! lockfile (yarn and pnpm through corepack, see [`node`]); frontend
//! frameworks that build a static site (vite, Create React App, a Next.js
//! static export, Astro, Gatsby, SvelteKit with adapter-static) are served
//! from their output folder and a `start` script that is a dev server is
//! never run. Python projects without a Procfile are started with the
//! WSGI/ASGI server in their dependencies (see the `python` submodule).
//!
//! Every decision is explained in [`Detection::notes`] for the build log.
//! Files are read only through `SourceFiles`.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fs_safe;

pub mod deno;
pub mod go;
pub mod node;
mod platform_files;
mod python;
pub mod rust;
mod toml_lite;
pub mod toolchain;
pub mod tools;

pub use platform_files::BERTH_TOML;

pub use node::{COREPACK_HOME_DIR, is_dev_server, setup_failure_hint};

/// Name of the step that provisions a package manager before the install.
pub const SETUP_STEP: &str = "setup";

/// What the user configured for an app; every `Some` overrides detection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSettings {
    /// Force a pack: "static", "procfile", "node", "python", "go", "rust" or "deno".
    pub build_pack: Option<String>,
    /// Replaces the install step; an empty string removes it.
    pub install_command: Option<String>,
    /// Replaces the build step; an empty string removes it.
    pub build_command: Option<String>,
    /// Replaces the start command; setting it always serves a process.
    pub start_command: Option<String>,
    /// Port the app listens on; `None` lets berth pick one and pass `PORT`.
    pub port: Option<u16>,
    /// Path probed to decide the app is healthy (default "/").
    pub health_check_path: Option<String>,
    /// Folder (relative to the source root) holding the static site.
    pub output_dir: Option<String>,
    /// Subfolder of the source that holds the app (monorepos): detection, install, build
    /// and start all happen there, and only its files are deployed.
    pub root_dir: Option<String>,
}

/// The detected (or forced) kind of project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildPack {
    /// Plain files served by the edge.
    Static,
    /// A `Procfile` `web:` command, nothing installed.
    Procfile,
    /// A `package.json` project.
    Node,
    /// A `requirements.txt` / `pyproject.toml` project, installed in `.venv`.
    Python,
    /// A `go.mod` module, built with the server's `go` into one binary.
    Go,
    /// A `Cargo.toml` package with a binary, built with the server's `cargo`.
    Rust,
    /// A `deno.json` project (or a lone `main.ts`), run with a provisioned deno.
    Deno,
    /// The project's own `Dockerfile`; container providers only (see
    /// [`crate::dockerfile`]), never detected or accepted as a setting here.
    Dockerfile,
}

impl BuildPack {
    /// Every pack, in the order they are listed to users.
    pub const ALL: [BuildPack; 7] = [
        BuildPack::Static,
        BuildPack::Procfile,
        BuildPack::Node,
        BuildPack::Python,
        BuildPack::Go,
        BuildPack::Rust,
        BuildPack::Deno,
    ];

    /// The name used in settings and JSON ("static", "procfile", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BuildPack::Static => "static",
            BuildPack::Procfile => "procfile",
            BuildPack::Node => "node",
            BuildPack::Python => "python",
            BuildPack::Go => "go",
            BuildPack::Rust => "rust",
            BuildPack::Deno => "deno",
            BuildPack::Dockerfile => "dockerfile",
        }
    }
}

impl fmt::Display for BuildPack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildPack {
    type Err = DetectError;

    /// Parses a `build_pack` setting (case-insensitive, surrounding spaces
    /// ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        BuildPack::ALL
            .into_iter()
            .find(|p| p.as_str() == wanted)
            .ok_or_else(|| DetectError::UnknownBuildPack { value: s.to_string() })
    }
}

/// Everything needed to build and serve an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// The pack that produced this plan.
    pub pack: BuildPack,
    /// Install then build, in order; each a shell command run with `sh -c`
    /// in the source folder.
    pub steps: Vec<BuildStep>,
    /// How to serve the result.
    pub serve: ServePlan,
    /// HTTP path probed for health (always starts with '/'; default "/").
    pub health_check_path: String,
}

/// One shell command of the build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStep {
    /// "install" or "build"; used in logs and error messages.
    pub name: String,
    /// Shell command, run with `sh -c` in the source folder.
    pub command: String,
}

/// How the built app is served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServePlan {
    /// Files served directly by the edge.
    Static {
        /// Folder relative to the source root ("." for the root itself).
        dir: String,
        /// Serve `index.html` for unknown paths (single-page apps).
        spa_fallback: bool,
    },
    /// A long-running process behind the edge.
    Process {
        /// Shell command, run with `sh -c` in the source folder.
        command: String,
        /// Fixed port, or `None`: berth picks one and passes it as `PORT`.
        port: Option<u16>,
    },
}

/// Why no plan could be made. Messages say what to add or set.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Nothing recognisable in the source root.
    #[error(
        "no index.html, Procfile, package.json, requirements.txt, pyproject.toml, go.mod, Cargo.toml or deno.json found in the source root; add one or set build_pack and start_command"
    )]
    NothingDetected,
    /// `build_pack` has an unknown value.
    #[error("unknown build_pack '{value}'; valid values are static, procfile, node, python, go, rust and deno")]
    UnknownBuildPack {
        /// The value as given.
        value: String,
    },
    /// A forced pack whose manifest is missing.
    #[error("build_pack is '{pack}' but the source root has no {file}; add it or choose another build_pack")]
    MissingFile {
        /// The forced pack.
        pack: BuildPack,
        /// The missing file.
        file: &'static str,
    },
    /// A manifest exists but cannot be understood.
    #[error("{file} is not valid: {reason}; fix it, or set build_pack, install_command and start_command explicitly")]
    InvalidManifest {
        /// The manifest's name, e.g. "package.json".
        file: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The pack needs a start command and none could be found.
    #[error("{hint}")]
    NoStartCommand {
        /// The pack in use.
        pack: BuildPack,
        /// What to add, phrased for the user.
        hint: &'static str,
    },
    /// A static site without an `index.html` where it was looked for.
    #[error("no index.html found in {searched}; set output_dir to the folder that contains index.html")]
    NoIndexHtml {
        /// The folders searched, comma separated.
        searched: String,
    },
    /// The `start` script is a development server and no built site exists.
    #[error(
        "the start script '{script}' runs a development server, which berth does not run in production, and no built site was found (searched {searched}); set output_dir to the folder your build writes its index.html to, or set start_command to a production server command"
    )]
    DevServerStart {
        /// The start script.
        script: String,
        /// The folders searched for an index.html.
        searched: String,
    },
    /// `root_dir` names no folder inside the source.
    #[error(
        "root_dir is '{root_dir}' but the source has no such folder (or it is a symlink that leads outside the source); set root_dir to the folder that holds the app, relative to the repository's root, or clear it to build the whole repository"
    )]
    MissingRootDir {
        /// The setting as given.
        root_dir: String,
    },
    /// A setting has an unusable value.
    #[error("invalid {field}: {reason}")]
    InvalidSetting {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read (not the user's fault).
    #[error("could not read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Folders searched, in order, for a static site's `index.html` (after the
/// root and `output_dir`).
pub const STATIC_DIR_CANDIDATES: [&str; 4] = ["dist", "build", "public", "out"];

/// Folders searched after a build when the planned one has no index.html.
/// `public/` comes late because in Node projects it usually holds the
/// *template* index.html, not the build output.
const BUILT_DIR_CANDIDATES: [&str; 5] = ["dist", "build", "out", "public", "."];

const NODE_ENTRY_CANDIDATES: [&str; 3] = ["server.js", "index.js", "app.js"];
const BUN_ENTRY_CANDIDATES: [&str; 6] = ["server.ts", "index.ts", "app.ts", "server.js", "index.js", "app.js"];
const PYTHON_ENTRY_CANDIDATES: [&str; 4] = ["app.py", "main.py", "server.py", "wsgi.py"];

const NODE_NO_START: &str = "package.json has no \"start\" script or \"main\" entry and none of server.js, index.js or app.js exists; add a start script (e.g. \"start\": \"node server.js\") or set start_command";
const PYTHON_NO_START: &str = "no Procfile with a web: line, no Flask/FastAPI/Starlette app object or Django manage.py, and none of app.py, main.py, server.py or wsgi.py exists; add a Procfile (e.g. 'web: .venv/bin/gunicorn app:app') or set start_command";

/// Files that make a source tree a Python project.
const PYTHON_MANIFESTS: [&str; 5] = [
    "requirements.txt",
    "pyproject.toml",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
];
const PROCFILE_NO_WEB: &str = "the Procfile has no web: line; add one (e.g. 'web: ./server') or set start_command";

/// A plan together with what detection decided on the way.
#[derive(Clone, Debug)]
pub struct Detection {
    /// The plan.
    pub plan: BuildPlan,
    /// One line per decision, for the build log ("detected vite
    /// (package.json devDependencies) → static output dist, SPA fallback").
    pub notes: Vec<String>,
    /// The package manager the `setup` step provisions through corepack
    /// ("pnpm@9", or package.json's `packageManager` value); berth caches
    /// its download per site under this name.
    pub package_manager: Option<String>,
    /// The language versions the app asks for, to check against the server's.
    pub toolchain: Vec<toolchain::Request>,
}

/// Detects how to build and serve the project at `source`.
///
/// Only reads files; see the module docs for the detection order. Every
/// field of `settings` that is `Some` wins over what detection would choose.
pub fn detect(source: &Path, settings: &BuildSettings) -> Result<BuildPlan, DetectError> {
    detect_explained(source, settings).map(|d| d.plan)
}

/// [`detect`], with the reasons for the build log.
pub fn detect_explained(source: &Path, settings: &BuildSettings) -> Result<Detection, DetectError> {
    let files = SourceFiles::new(source);
    let procfile_web = files.procfile_web()?;
    let repo = platform_files::read(&files, procfile_web.as_deref())?;
    let (settings, file_notes) = platform_files::merge(settings, repo);
    let settings = &settings;
    let output_dir = settings.output_dir.as_deref().map(normalize_output_dir).transpose()?;
    let health_check_path = normalize_health_path(settings.health_check_path.as_deref())?;

    let pack = match settings.build_pack.as_deref() {
        Some(name) => name.parse::<BuildPack>()?,
        None => {
            if files.exists("package.json") {
                BuildPack::Node
            } else if PYTHON_MANIFESTS.iter().any(|f| files.exists(f)) {
                BuildPack::Python
            } else if files.is_file("go.mod") {
                BuildPack::Go
            } else if files.is_file("Cargo.toml") {
                BuildPack::Rust
            } else if deno::is_deno(&files) {
                BuildPack::Deno
            } else if procfile_web.is_some() {
                BuildPack::Procfile
            } else if find_index(source, output_dir.as_deref()).is_some() {
                BuildPack::Static
            } else if settings.start_command.is_some() {
                // "Just run this": a Procfile written in the settings.
                BuildPack::Procfile
            } else if settings.build_command.is_some() && output_dir.is_some() {
                // A static site generator the user runs themselves; the
                // output appears only after the build.
                BuildPack::Static
            } else {
                return Err(DetectError::NothingDetected);
            }
        }
    };

    let draft = match pack {
        BuildPack::Node => node_plan(&files, output_dir.as_deref(), procfile_web.as_deref())?,
        BuildPack::Python => python_plan(&files, procfile_web.as_deref())?,
        BuildPack::Go => {
            files.require(BuildPack::Go, "go.mod")?;
            go::plan(&files, procfile_web.as_deref())?
        }
        BuildPack::Rust => {
            files.require(BuildPack::Rust, "Cargo.toml")?;
            rust::plan(&files, procfile_web.as_deref())?
        }
        BuildPack::Deno => deno::plan(&files, procfile_web.as_deref())?,
        BuildPack::Procfile => Draft {
            start: procfile_web.clone(),
            no_start: PROCFILE_NO_WEB,
            ..Draft::default()
        },
        BuildPack::Dockerfile => {
            return Err(DetectError::InvalidSetting {
                field: "build_pack",
                reason: "a Dockerfile is built only by a container provider; choose provider docker".into(),
            });
        }
        BuildPack::Static => Draft {
            static_dir: Some(static_dir_guess(source, output_dir.as_deref(), false)),
            ..Draft::default()
        },
    };
    let mut notes = file_notes;
    notes.extend(draft.notes);

    // The package manager is provisioned only when a step uses it: a detected
    // one, or a command of the settings that runs it ("yarn build").
    let runs_manager = |cmd: &Option<String>| {
        let name = draft.package_manager.as_deref().and_then(|m| m.split('@').next());
        cmd.as_deref().zip(name).is_some_and(|(cmd, name)| {
            cmd.split(|c: char| c.is_whitespace() || ";&|()".contains(c))
                .any(|word| word == name)
        })
    };
    if settings.start_command.is_some() && draft.start.is_none() && draft.static_dir.is_some() {
        notes.push("start_command is set: serving it as a process instead of the static output".into());
    }
    let start = pick(settings.start_command.as_deref(), draft.start);
    // A runtime the setup step provisions (bun, deno) is needed by the start command too.
    let manager_used = (settings.install_command.is_none() && draft.install.is_some())
        || (settings.build_command.is_none() && draft.build.is_some())
        || runs_manager(&settings.install_command)
        || runs_manager(&settings.build_command)
        || runs_manager(&start);
    let setup = draft.setup.filter(|_| manager_used);
    let install = pick(settings.install_command.as_deref(), draft.install);
    let build = pick(settings.build_command.as_deref(), draft.build);

    let serve = match (start, draft.static_dir) {
        (Some(command), _) => ServePlan::Process {
            command,
            port: settings.port,
        },
        (None, Some((dir, spa_fallback))) => ServePlan::Static {
            dir: output_dir.clone().unwrap_or(dir),
            spa_fallback,
        },
        (None, None) => {
            return Err(DetectError::NoStartCommand {
                pack,
                hint: draft.no_start,
            });
        }
    };

    // A static site without any build step must have its index.html now;
    // with a build step it is checked by `resolve_output_dir` afterwards.
    if let ServePlan::Static { dir, .. } = &serve
        && build.is_none()
        && install.is_none()
        && !fs_safe::is_file_in_tree(source, Path::new(dir).join("index.html"))
    {
        return Err(DetectError::NoIndexHtml {
            searched: searched_list(output_dir.as_deref()),
        });
    }

    let mut steps = Vec::new();
    let package_manager = setup.as_ref().and(draft.package_manager);
    if let Some(command) = setup {
        steps.push(BuildStep {
            name: SETUP_STEP.into(),
            command,
        });
    }
    if let Some(command) = install {
        steps.push(BuildStep {
            name: "install".into(),
            command,
        });
    }
    if let Some(command) = build {
        steps.push(BuildStep {
            name: "build".into(),
            command,
        });
    }
    Ok(Detection {
        plan: BuildPlan {
            pack,
            steps,
            serve,
            health_check_path,
        },
        notes,
        package_manager,
        toolchain: toolchain::requests(&files, pack),
    })
}

/// Settles the static folder of a plan once its build steps have run.
///
/// For [`ServePlan::Static`] plans: keeps the planned folder if it has an
/// `index.html`; otherwise, unless the user set `output_dir` explicitly,
/// picks the first of `dist`, `build`, `out`, `public`, `.` that has one.
/// `spa_fallback` is turned off when the folder has its own `404.html`.
/// Process plans are left untouched.
pub fn resolve_output_dir(source: &Path, settings: &BuildSettings, plan: &mut BuildPlan) -> Result<(), DetectError> {
    let ServePlan::Static { dir, spa_fallback } = &mut plan.serve else {
        return Ok(());
    };
    // The same settings detection used: the site's over the repository's file.
    let files = SourceFiles::new(source);
    let procfile_web = files.procfile_web()?;
    let (settings, _) = platform_files::merge(settings, platform_files::read(&files, procfile_web.as_deref())?);
    let settings = &settings;
    let explicit = settings.output_dir.as_deref().map(normalize_output_dir).transpose()?;
    let has_index = |d: &str| fs_safe::is_file_in_tree(source, Path::new(d).join("index.html"));
    if !has_index(dir) {
        let found = if explicit.is_some() {
            None
        } else {
            BUILT_DIR_CANDIDATES.iter().find(|d| has_index(d))
        };
        match found {
            Some(d) => *dir = (*d).to_string(),
            None => {
                let mut searched = vec![dir.clone()];
                if explicit.is_none() {
                    for d in BUILT_DIR_CANDIDATES {
                        if !searched.iter().any(|s| s == d) {
                            searched.push(d.to_string());
                        }
                    }
                }
                let searched = searched.join(", ");
                // A dev-server start script was skipped for this static
                // output: say so, with both settings that fix it.
                if settings.start_command.is_none()
                    && let Ok(Some(text)) = SourceFiles::new(source).read_opt("package.json")
                    && let Ok(pkg) = PackageJson::parse(&text)
                    && let Some(script) = pkg.start_script.filter(|s| is_dev_server(s))
                {
                    return Err(DetectError::DevServerStart { script, searched });
                }
                return Err(DetectError::NoIndexHtml { searched });
            }
        }
    }
    if fs_safe::is_file_in_tree(source, Path::new(dir.as_str()).join("404.html")) {
        *spa_fallback = false;
    }
    Ok(())
}

/// What a pack would do before user overrides are applied.
#[derive(Default)]
struct Draft {
    /// Provisions the package manager (runs before the install).
    setup: Option<String>,
    /// The package manager `setup` provisions.
    package_manager: Option<String>,
    install: Option<String>,
    build: Option<String>,
    start: Option<String>,
    /// Message when neither a start command nor a static folder exists.
    no_start: &'static str,
    /// Static folder and SPA flag, when the pack can serve files.
    static_dir: Option<(String, bool)>,
    /// What was decided and why.
    notes: Vec<String>,
}

/// Applies an override: `Some("")` (or blank) removes the step.
fn pick(user: Option<&str>, detected: Option<String>) -> Option<String> {
    match user {
        Some(cmd) if cmd.trim().is_empty() => None,
        Some(cmd) => Some(cmd.trim().to_string()),
        None => detected,
    }
}

fn node_plan(
    files: &SourceFiles<'_>,
    output_dir: Option<&str>,
    procfile_web: Option<&str>,
) -> Result<Draft, DetectError> {
    if !files.exists("package.json") {
        return Err(DetectError::MissingFile {
            pack: BuildPack::Node,
            file: "package.json",
        });
    }
    let pkg = PackageJson::parse(&files.read("package.json")?)?;
    let mut notes = Vec::new();
    // Nothing to install: skipping the package manager saves seconds per
    // deploy, and npm runs a build script as well as any.
    // bun is also the runtime of the project that asks for it, so it is provisioned
    // even when nothing is installed.
    let manager = if pkg.has_dependencies || node::wants_bun(files, &pkg) {
        node::choose_manager(files, &pkg, &mut notes)
    } else {
        node::NodeManager::npm()
    };
    let install = pkg.has_dependencies.then(|| manager.install_command(files));
    let build = pkg.has_build_script.then(|| manager.build_command());
    let setup = manager.setup_command();
    let package_manager = setup.as_ref().map(|_| manager.label.clone());

    let framework = node::detect_framework(files, &pkg)?;
    let dev_start = pkg.start_script.clone().filter(|s| is_dev_server(s));
    let real_start = pkg.start_script.clone().filter(|s| !is_dev_server(s));
    if let Some(script) = &dev_start {
        notes.push(format!(
            "the start script '{script}' is a development server: berth does not run it"
        ));
    }
    let described = |fw: &node::Framework| {
        let detail = fw.detail.as_deref().map(|d| format!(", {d}")).unwrap_or_default();
        format!("detected {} ({}{detail})", fw.name, fw.evidence)
    };
    let draft = |start: Option<String>, static_dir: Option<(String, bool)>, notes: Vec<String>| Draft {
        setup: setup.clone(),
        package_manager: package_manager.clone(),
        install: install.clone(),
        build: build.clone(),
        start,
        no_start: NODE_NO_START,
        static_dir,
        notes,
    };

    if let Some(fw) = &framework
        && let Some((dir, spa)) = fw.output
        && pkg.has_build_script
    {
        // A Next.js export cannot be served by `next start`, so its start
        // script is never the server.
        let start = procfile_web
            .map(str::to_string)
            .or_else(|| real_start.clone().filter(|_| fw.name != "Next.js"));
        if start.is_none() {
            let dir = output_dir.unwrap_or(dir).to_string();
            notes.push(format!(
                "{} → static output {dir}{}",
                described(fw),
                if spa { ", SPA fallback" } else { "" }
            ));
            return Ok(draft(None, Some((dir, spa)), notes));
        }
        notes.push(format!(
            "{}, but {} starts a server: running it instead of serving the static output",
            described(fw),
            if procfile_web.is_some() {
                "the Procfile's web: line"
            } else {
                "the start script"
            }
        ));
    } else if let Some(fw) = &framework
        && fw.output.is_none()
    {
        notes.push(format!("{}: runs as a server", described(fw)));
    }

    let start = procfile_web.map(str::to_string).or(real_start).or_else(|| {
        // `main` and the usual entry files are the server only when the
        // start script is not a dev server (a vite app's main is no server).
        if dev_start.is_some() {
            return None;
        }
        // A bun project's entry runs with bun, which also runs TypeScript.
        let (runner, candidates): (&str, &[&str]) = if manager.name == "bun" {
            ("bun", &BUN_ENTRY_CANDIDATES)
        } else {
            ("node", &NODE_ENTRY_CANDIDATES)
        };
        pkg.main
            .as_deref()
            .map(|m| format!("{runner} {}", shell_quote(m)))
            .or_else(|| {
                candidates
                    .iter()
                    .find(|f| files.is_file(f))
                    .map(|f| format!("{runner} {f}"))
            })
    });
    // Without a start command a Node project can still be a static site:
    // its build output (SPA frameworks) or a plain index.html at the root.
    let static_dir = if pkg.has_build_script {
        // Existing folders are not consulted: before the build, an
        // index.html in e.g. public/ is usually a template, not the output.
        let guess = output_dir
            .map(str::to_string)
            .unwrap_or_else(|| pkg.framework_output_dir().to_string());
        Some((guess, true))
    } else {
        find_index(files.root, output_dir).map(|d| (d, false))
    };
    if start.is_none()
        && let Some((dir, spa)) = &static_dir
    {
        notes.push(format!(
            "no server to start: serving the static output {dir}{}",
            if *spa { " (SPA fallback)" } else { "" }
        ));
    }
    if start.is_none()
        && static_dir.is_none()
        && let Some(script) = dev_start
    {
        return Err(DetectError::DevServerStart {
            script,
            searched: searched_list(output_dir),
        });
    }
    Ok(draft(start, static_dir, notes))
}

fn python_plan(files: &SourceFiles<'_>, procfile_web: Option<&str>) -> Result<Draft, DetectError> {
    let mut notes = Vec::new();
    let deps = python::dependencies(files, &mut notes)?;
    let install = match &deps.pip_args {
        Some(args) => format!("python3 -m venv .venv && .venv/bin/pip install {args}"),
        // Creating pip inside the venv takes seconds; skip it when nothing
        // will be installed.
        None => "python3 -m venv --without-pip .venv".to_string(),
    };
    let mut app_notes = Vec::new();
    let app = python::web_app(files, &deps, &mut app_notes)?;
    let build = app.as_ref().and_then(|a| a.build.clone());
    let start = if let Some(web) = procfile_web {
        notes.push("start command: the Procfile's web: line".into());
        if build.is_some() {
            notes.extend(app_notes.into_iter().filter(|n| n.contains("collectstatic")));
        }
        Some(web.to_string())
    } else {
        notes.extend(app_notes);
        app.map(|a| a.start).or_else(|| {
            let file = PYTHON_ENTRY_CANDIDATES.iter().find(|f| files.is_file(f))?;
            notes.push(format!("no web app object found: running {file} as a script"));
            Some(format!(".venv/bin/python {file}"))
        })
    };
    Ok(Draft {
        install: Some(install),
        build,
        start,
        no_start: PYTHON_NO_START,
        notes,
        ..Draft::default()
    })
}

/// First folder (root, `output_dir`, then the usual build folders) that has
/// an `index.html`, as a relative path ("." for the root).
fn find_index(source: &Path, output_dir: Option<&str>) -> Option<String> {
    let mut dirs: Vec<&str> = Vec::new();
    if let Some(d) = output_dir {
        dirs.push(d);
    }
    dirs.push(".");
    dirs.extend(STATIC_DIR_CANDIDATES);
    dirs.into_iter()
        .find(|d| fs_safe::is_file_in_tree(source, Path::new(d).join("index.html")))
        .map(str::to_string)
}

fn static_dir_guess(source: &Path, output_dir: Option<&str>, spa: bool) -> (String, bool) {
    let dir = output_dir
        .map(str::to_string)
        .or_else(|| find_index(source, None))
        .unwrap_or_else(|| ".".to_string());
    (dir, spa)
}

fn searched_list(output_dir: Option<&str>) -> String {
    let mut v: Vec<&str> = Vec::new();
    if let Some(d) = output_dir {
        v.push(d);
    } else {
        v.push(".");
        v.extend(STATIC_DIR_CANDIDATES);
    }
    v.join(", ")
}

/// Validates `output_dir`: relative, inside the source, normalised
/// ("./dist/" → "dist", "" → ".").
fn normalize_output_dir(raw: &str) -> Result<String, DetectError> {
    normalize_relative_dir(raw, "output_dir")
}

/// A folder setting as a clean relative path ("." for the root itself); absolute paths
/// and `..` are refused, as they would leave the source.
fn normalize_relative_dir(raw: &str, field: &'static str) -> Result<String, DetectError> {
    let mut out = PathBuf::new();
    for comp in Path::new(raw.trim()).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(DetectError::InvalidSetting {
                    field,
                    reason: format!("'{raw}' must be a relative folder inside the source (like 'dist'), without '..'"),
                });
            }
        }
    }
    let s = out.to_string_lossy().into_owned();
    Ok(if s.is_empty() { ".".into() } else { s })
}

/// The real path of the app's folder for a `root_dir` setting: `root_dir` below
/// `source`, which must be a folder inside the tree (a symlink on the way may point
/// elsewhere in the tree, never out of it). `None` when the setting is unset or names the
/// root itself.
pub fn select_root_dir(source: &Path, root_dir: Option<&str>) -> Result<Option<PathBuf>, DetectError> {
    let Some(raw) = root_dir else { return Ok(None) };
    let rel = normalize_relative_dir(raw, "root_dir")?;
    if rel == "." {
        return Ok(None);
    }
    match fs_safe::real_path_in_tree(source, &rel) {
        Some(real) if real.is_dir() => {
            let root = source.canonicalize().map_err(|e| DetectError::Io {
                path: source.to_path_buf(),
                source: e,
            })?;
            // A link back to the root itself selects nothing.
            Ok((real != root).then_some(real))
        }
        _ => Err(DetectError::MissingRootDir {
            root_dir: raw.to_string(),
        }),
    }
}

pub(crate) fn normalize_health_path(raw: Option<&str>) -> Result<String, DetectError> {
    let path = raw.map(str::trim).unwrap_or("/");
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DetectError::InvalidSetting {
            field: "health_check_path",
            reason: format!("'{path}' must be a URL path like /healthz, without spaces"),
        });
    }
    Ok(if path.is_empty() {
        "/".into()
    } else if path.starts_with('/') {
        path.into()
    } else {
        format!("/{path}")
    })
}

/// True if a requirements file has at least one line that is not blank or a
/// comment (options such as `-r other.txt` count: they need pip too).
fn requirements_have_entries(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    })
}

/// Quotes a word for `sh` only when needed.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./-@+:,=%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The fields of package.json detection cares about. Parsed leniently:
/// unexpected types are ignored rather than rejected.
struct PackageJson {
    has_dependencies: bool,
    has_build_script: bool,
    start_script: Option<String>,
    main: Option<String>,
    /// Dependency names with the section that lists them.
    dependencies: Vec<(String, &'static str)>,
    /// The `packageManager` field ("pnpm@9.1.0+sha512...").
    package_manager: Option<String>,
}

impl PackageJson {
    fn parse(text: &str) -> Result<Self, DetectError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DetectError::InvalidManifest {
            file: "package.json",
            reason: e.to_string(),
        })?;
        let Some(obj) = value.as_object() else {
            return Err(DetectError::InvalidManifest {
                file: "package.json",
                reason: "the top level must be a JSON object".into(),
            });
        };
        let mut dependencies = Vec::new();
        for key in ["dependencies", "devDependencies", "optionalDependencies"] {
            if let Some(deps) = obj.get(key).and_then(|d| d.as_object()) {
                dependencies.extend(deps.keys().map(|k| (k.clone(), key)));
            }
        }
        let script = |name: &str| {
            obj.get("scripts")
                .and_then(|s| s.get(name))
                .and_then(|s| s.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(PackageJson {
            has_dependencies: !dependencies.is_empty(),
            has_build_script: script("build").is_some(),
            start_script: script("start"),
            main: obj
                .get("main")
                .and_then(|m| m.as_str())
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            dependencies,
            package_manager: obj
                .get("packageManager")
                .and_then(|m| m.as_str())
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string),
        })
    }

    /// The section ("devDependencies", ...) that lists `name`.
    fn section_of(&self, name: &str) -> Option<&'static str> {
        self.dependencies.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }

    /// Every dependency's name.
    fn dependency_names(&self) -> impl Iterator<Item = &str> {
        self.dependencies.iter().map(|(n, _)| n.as_str())
    }

    /// Where well-known frontend tools write their build, for the plan made
    /// before the build has run ([`resolve_output_dir`] confirms it).
    fn framework_output_dir(&self) -> &'static str {
        let has = |n: &str| self.section_of(n).is_some();
        if has("react-scripts") || has("@sveltejs/kit") || has("@docusaurus/core") {
            "build"
        } else if has("next") {
            "out"
        } else if has("gatsby") {
            "public"
        } else {
            // vite, parcel, astro, vue-cli and most others.
            "dist"
        }
    }
}

/// Reads files of the source root, mapping errors to [`DetectError::Io`].
struct SourceFiles<'a> {
    root: &'a Path,
}

impl<'a> SourceFiles<'a> {
    fn new(root: &'a Path) -> Self {
        SourceFiles { root }
    }

    // Files that are symlinks leading out of the tree count as absent: they are never
    // read on the host.
    fn exists(&self, name: &str) -> bool {
        fs_safe::exists_in_tree(self.root, name)
    }

    fn is_file(&self, name: &str) -> bool {
        fs_safe::is_file_in_tree(self.root, name)
    }

    /// Fails for a forced `pack` whose manifest `name` is missing.
    fn require(&self, pack: BuildPack, name: &'static str) -> Result<(), DetectError> {
        if self.is_file(name) {
            Ok(())
        } else {
            Err(DetectError::MissingFile { pack, file: name })
        }
    }

    /// The file's text, or `None` when it is not a regular file.
    fn read_opt(&self, name: &str) -> Result<Option<String>, DetectError> {
        if !self.is_file(name) {
            return Ok(None);
        }
        self.read(name).map(Some)
    }

    fn read(&self, name: &str) -> Result<String, DetectError> {
        let path = self.root.join(name);
        let bytes = fs_safe::read_in_tree(self.root, name)
            .and_then(|b| b.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
            .map_err(|source| DetectError::Io {
                path: path.clone(),
                source,
            })?;
        // Manifests are text; a stray invalid byte should not stop detection.
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The command of the Procfile's `web:` line, if there is one.
    fn procfile_web(&self) -> Result<Option<String>, DetectError> {
        if !self.is_file("Procfile") {
            return Ok(None);
        }
        Ok(parse_procfile_web(&self.read("Procfile")?))
    }
}

/// Extracts the `web:` command from Procfile text.
fn parse_procfile_web(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let (name, cmd) = line.split_once(':')?;
        (name.trim() == "web" && !cmd.trim().is_empty()).then(|| cmd.trim().to_string())
    })
}

#[cfg(test)]
mod tests;
