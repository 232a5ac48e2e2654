//! Node specifics of detection: which package manager installs the project
//! (and how it is provisioned), which frontend framework builds it, and
//! whether a `start` script is a development server that must not be run in
//! production.
//!
//! yarn and pnpm are not installed on the server: they come through Node's
//! corepack, which downloads the requested version from the npm registry
//! once and keeps it in `COREPACK_HOME`. That folder lives in the app folder
//! (the only place a build can write) and berth's build cache carries it to
//! the site's next build, so the download happens once per site. bun is no
//! Node package manager corepack knows: when the server has none, berth
//! provisions it from the npm registry the same way (see [`super::tools`]).

use super::tools::{self, Runtime};
use super::{DetectError, PackageJson, SourceFiles};

/// Where corepack keeps the package managers it downloaded, relative to the
/// app folder (`$HOME` of builds and apps is the app folder).
pub const COREPACK_HOME_DIR: &str = ".cache/corepack";

/// The environment every corepack call gets. The registry defaults to npm's
/// (corepack would fetch yarn 2+ from repo.yarnpkg.com otherwise, one more
/// host a build would need); `COREPACK_INTEGRITY_KEYS=0` skips the registry
/// signature check, which fails against mirrors that strip signatures, as
/// npm's own installs do not check them either (a `packageManager` hash is
/// still verified). A site's own env vars override both. Node trusts only
/// its built-in certificates, so the system's bundle (which npm and pip use
/// through /etc/npmrc and /etc/pip.conf) is added when there is one.
pub(super) const COREPACK_ENV: &str = "export COREPACK_HOME=\"$HOME/.cache/corepack\" COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_ENABLE_AUTO_PIN=0 COREPACK_NPM_REGISTRY=\"${COREPACK_NPM_REGISTRY:-${npm_config_registry:-https://registry.npmjs.org}}\" COREPACK_INTEGRITY_KEYS=\"${COREPACK_INTEGRITY_KEYS-0}\"; [ -n \"$NODE_EXTRA_CA_CERTS\" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ] || export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt;";

/// yarn 1 is frozen at this release; pinned so corepack needs no tag lookup
/// (on repo.yarnpkg.com) and the cached download stays valid.
const YARN_CLASSIC: &str = "yarn@1.22.22";
/// yarn for a berry lockfile (`__metadata` version 8 and later).
const YARN_BERRY: &str = "yarn@4.9.1";
/// yarn for berry lockfiles of yarn 2 and 3 (`__metadata` version 4 to 7).
const YARN_BERRY_3: &str = "yarn@3.8.7";

/// Places a `bun` binary is looked for; only system folders are visible
/// inside the build sandbox.
const BUN_PATHS: [&str; 2] = ["/usr/local/bin/bun", "/usr/bin/bun"];

/// The package manager that installs a Node project's dependencies.
pub(super) struct NodeManager {
    /// "npm", "yarn", "pnpm" or "bun".
    pub name: &'static str,
    /// What corepack runs ("pnpm@9", "yarn@1.22.22", or a bare "yarn" when
    /// package.json's `packageManager` names the version); `None` for the
    /// managers that are on the server already.
    pub corepack: Option<String>,
    /// The manager and version, for the log and the build cache.
    pub label: String,
    /// yarn 2 or later, whose flags differ from yarn 1's.
    pub berry: bool,
    /// A runtime berth downloads itself (bun), with its version.
    pub provisioned: Option<(Runtime, String)>,
}

impl NodeManager {
    pub(super) fn npm() -> Self {
        NodeManager {
            name: "npm",
            corepack: None,
            label: "npm".into(),
            berry: false,
            provisioned: None,
        }
    }

    fn corepack(name: &'static str, spec: &str, label: &str, berry: bool) -> Self {
        NodeManager {
            name,
            corepack: Some(spec.to_string()),
            label: label.to_string(),
            berry,
            provisioned: None,
        }
    }

    /// The command that runs this manager with `args`.
    fn run(&self, args: &str) -> String {
        match &self.corepack {
            Some(spec) => format!("{COREPACK_ENV} corepack {spec} {args}"),
            None => format!("{} {args}", self.name),
        }
    }

    /// The step that provisions the manager before anything uses it, or
    /// `None` when it is on the server already.
    pub fn setup_command(&self) -> Option<String> {
        if let Some((runtime, version)) = &self.provisioned {
            return Some(tools::setup_command(*runtime, version));
        }
        let spec = self.corepack.as_ref()?;
        // Its failure is explained by the pipeline with `setup_failure_hint`.
        Some(format!("{COREPACK_ENV} corepack {spec} --version"))
    }

    /// The install command, honouring the lockfile when there is one.
    pub fn install_command(&self, files: &SourceFiles<'_>) -> String {
        match self.name {
            "npm" if files.exists("package-lock.json") || files.exists("npm-shrinkwrap.json") => {
                "npm ci --no-audit --no-fund".into()
            }
            "npm" => "npm install --no-audit --no-fund".into(),
            "yarn" if !files.exists("yarn.lock") => self.run("install"),
            "yarn" if self.berry => self.run("install --immutable"),
            "yarn" => self.run("install --frozen-lockfile"),
            "pnpm" if files.exists("pnpm-lock.yaml") => self.run("install --frozen-lockfile"),
            "bun" if files.exists("bun.lock") || files.exists("bun.lockb") => "bun install --frozen-lockfile".into(),
            _ => self.run("install"),
        }
    }

    /// The command that runs the `build` script.
    pub fn build_command(&self) -> String {
        self.run("run build")
    }
}

/// What a failed `setup` step means and what to do about it.
pub fn setup_failure_hint(label: &str) -> String {
    let name = label.split('@').next().unwrap_or(label);
    format!(
        "could not get {label} through corepack: a site's first build downloads it from the npm registry (https://registry.npmjs.org, or COREPACK_NPM_REGISTRY); make the registry reachable from builds, or set install_command and build_command to commands that do not use {name}"
    )
}

/// Chooses the package manager: package.json's `packageManager` field, then
/// the lockfile, then npm. Says why in `notes`.
pub(super) fn choose_manager(files: &SourceFiles<'_>, pkg: &PackageJson, notes: &mut Vec<String>) -> NodeManager {
    if let Some(field) = pkg.package_manager.as_deref() {
        let (name, version) = field.split_once('@').unwrap_or((field, ""));
        let major: u32 = version.split('.').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        // Only the manager's name is used in commands: corepack reads the
        // exact version (and hash) from package.json itself.
        let chosen = match name {
            "yarn" => Some(NodeManager::corepack("yarn", "yarn", field, major >= 2)),
            "pnpm" => Some(NodeManager::corepack("pnpm", "pnpm", field, false)),
            "npm" => Some(NodeManager::npm()),
            "bun" => bun(notes, Some(version).filter(|v| !v.is_empty())),
            _ => None,
        };
        match chosen {
            Some(m) => {
                notes.push(format!("package manager: {} (packageManager in package.json)", m.label));
                if m.name == "npm" && !version.is_empty() {
                    notes.push(format!(
                        "packageManager asks for {field}; using the npm that ships with the server's Node"
                    ));
                }
                return m;
            }
            None => notes.push(format!(
                "packageManager '{field}' in package.json is not npm, yarn, pnpm or bun; choosing by lockfile"
            )),
        }
    }
    let chosen = if files.exists("package-lock.json") || files.exists("npm-shrinkwrap.json") {
        Some((NodeManager::npm(), "package-lock.json"))
    } else if files.exists("pnpm-lock.yaml") {
        let text = files.read("pnpm-lock.yaml").unwrap_or_default();
        let spec = pnpm_for_lockfile(&text);
        Some((NodeManager::corepack("pnpm", spec, spec, false), "pnpm-lock.yaml"))
    } else if files.exists("yarn.lock") {
        let text = files.read("yarn.lock").unwrap_or_default();
        let (spec, berry) = yarn_for_lockfile(&text);
        Some((NodeManager::corepack("yarn", spec, spec, berry), "yarn.lock"))
    } else if files.exists("bun.lock") || files.exists("bun.lockb") {
        let lockfile = if files.exists("bun.lock") {
            "bun.lock"
        } else {
            "bun.lockb"
        };
        bun(notes, None).map(|m| (m, lockfile))
    } else {
        None
    };
    match chosen {
        Some((m, why)) => {
            notes.push(format!("package manager: {} ({why})", m.label));
            m
        }
        None => NodeManager::npm(),
    }
}

/// bun: the server's own when it has one, else the release `packageManager` names (or
/// [`tools::BUN_VERSION`]), downloaded from the npm registry by the setup step.
fn bun(notes: &mut Vec<String>, requested: Option<&str>) -> Option<NodeManager> {
    if BUN_PATHS.iter().any(|p| std::path::Path::new(p).is_file()) {
        return Some(NodeManager {
            name: "bun",
            corepack: None,
            label: "bun".into(),
            berry: false,
            provisioned: None,
        });
    }
    let version = match requested {
        Some(v) => match tools::plain_version(v.split('+').next().unwrap_or(v)) {
            Some(v) => v.to_string(),
            None => {
                notes.push(format!(
                    "packageManager asks for bun@{v}, not a plain release number: using bun {}",
                    tools::BUN_VERSION
                ));
                tools::BUN_VERSION.to_string()
            }
        },
        None => tools::BUN_VERSION.to_string(),
    };
    Some(NodeManager {
        name: "bun",
        corepack: None,
        label: tools::label(Runtime::Bun, &version),
        berry: false,
        provisioned: Some((Runtime::Bun, version)),
    })
}

/// True when the project asks for bun: `packageManager: bun@…` or a bun lockfile.
pub(super) fn wants_bun(files: &SourceFiles<'_>, pkg: &PackageJson) -> bool {
    pkg.package_manager
        .as_deref()
        .is_some_and(|m| m.starts_with("bun@") || m == "bun")
        || files.exists("bun.lock")
        || files.exists("bun.lockb")
}

/// The pnpm major version that writes a lockfile of this `lockfileVersion`.
fn pnpm_for_lockfile(text: &str) -> &'static str {
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("lockfileVersion:"))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
        .unwrap_or_default();
    let major: u32 = version.split('.').next().and_then(|v| v.parse().ok()).unwrap_or(9);
    match major {
        0..=5 => "pnpm@7",
        6..=8 => "pnpm@8",
        _ => "pnpm@9",
    }
}

/// The yarn for a yarn.lock: yarn 1 for a classic lockfile, berry for one
/// with a `__metadata` block (its `version` tells 2/3 from 4).
fn yarn_for_lockfile(text: &str) -> (&'static str, bool) {
    let Some(meta) = text.find("__metadata:") else {
        return (YARN_CLASSIC, false);
    };
    let version: u32 = text[meta..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .find_map(|l| l.trim().strip_prefix("version:"))
        .and_then(|v| v.trim().trim_matches(['\'', '"']).parse().ok())
        .unwrap_or(8);
    if version >= 8 {
        (YARN_BERRY, true)
    } else {
        (YARN_BERRY_3, true)
    }
}

/// A frontend framework recognised from package.json.
pub(super) struct Framework {
    /// Its name, as the log says it.
    pub name: &'static str,
    /// Where package.json lists it ("package.json devDependencies").
    pub evidence: String,
    /// Static output folder and whether it is a single-page app; `None`
    /// when the framework runs as a server.
    pub output: Option<(&'static str, bool)>,
    /// Why, beyond the dependency (e.g. the config that makes it static).
    pub detail: Option<String>,
}

/// Server frameworks named in the log when nothing static is detected.
const SERVER_FRAMEWORKS: [(&str, &str); 7] = [
    ("express", "Express"),
    ("fastify", "Fastify"),
    ("hono", "Hono"),
    ("koa", "Koa"),
    ("@nestjs/core", "NestJS"),
    ("@hapi/hapi", "hapi"),
    ("@adonisjs/core", "AdonisJS"),
];

/// Recognises the framework that builds the project, most specific first
/// (Remix, Astro and SvelteKit also depend on vite).
pub(super) fn detect_framework(files: &SourceFiles<'_>, pkg: &PackageJson) -> Result<Option<Framework>, DetectError> {
    let found = |name: &str| pkg.section_of(name).map(|s| format!("package.json {s}"));
    let fw = |name, evidence, output, detail| {
        Ok(Some(Framework {
            name,
            evidence,
            output,
            detail,
        }))
    };
    if let Some(ev) = found("next") {
        for config in ["next.config.js", "next.config.mjs", "next.config.ts", "next.config.cjs"] {
            if let Some(text) = files.read_opt(config)?
                && sets_output_export(&text)
            {
                return fw(
                    "Next.js",
                    ev,
                    Some(("out", false)),
                    Some(format!("{config} sets output: \"export\"")),
                );
            }
        }
        return fw(
            "Next.js",
            ev,
            None,
            Some("no output: \"export\" in next.config: runs as a server".into()),
        );
    }
    if let Some(dep) = pkg.dependency_names().find(|d| d.starts_with("@remix-run/")) {
        return fw("Remix", found(dep).unwrap_or_default(), None, None);
    }
    if let Some(ev) = found("nuxt") {
        return fw("Nuxt", ev, None, None);
    }
    if let Some(ev) = found("@sveltejs/kit") {
        if found("@sveltejs/adapter-static").is_some() {
            // SPA mode is adapter-static with a `fallback` page.
            let mut spa = false;
            for config in ["svelte.config.js", "svelte.config.mjs", "svelte.config.ts"] {
                if let Some(text) = files.read_opt(config)? {
                    spa |= text.contains("fallback");
                }
            }
            let detail = Some("@sveltejs/adapter-static".to_string());
            return fw("SvelteKit", ev, Some(("build", spa)), detail);
        }
        return fw(
            "SvelteKit",
            ev,
            None,
            Some("no adapter-static: runs as a server".into()),
        );
    }
    if let Some(ev) = found("astro") {
        if let Some(adapter) = ["@astrojs/node", "@astrojs/vercel", "@astrojs/netlify"]
            .into_iter()
            .find(|a| found(a).is_some())
        {
            return fw("Astro", ev, None, Some(format!("{adapter} adapter: runs as a server")));
        }
        return fw("Astro", ev, Some(("dist", false)), None);
    }
    if let Some(ev) = found("gatsby") {
        return fw("Gatsby", ev, Some(("public", false)), None);
    }
    if let Some(ev) = found("react-scripts") {
        return fw("Create React App (react-scripts)", ev, Some(("build", true)), None);
    }
    if let Some(ev) = found("vite") {
        return fw("vite", ev, Some(("dist", true)), None);
    }
    for (dep, name) in SERVER_FRAMEWORKS {
        if let Some(ev) = found(dep) {
            return fw(name, ev, None, None);
        }
    }
    Ok(None)
}

/// True if a next.config sets `output: "export"` (quotes of either kind,
/// any spacing). A string match, not a JavaScript parser: a commented-out
/// line would count too, which the build then reveals.
fn sets_output_export(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    ["output:\"export\"", "output:'export'", "output:`export`"]
        .iter()
        .any(|p| compact.contains(p))
}

/// True if a `start` script runs a development server, file watcher or
/// static file server: something that is no production server (and often
/// listens on a fixed port) while the edge can serve the built files itself.
pub fn is_dev_server(script: &str) -> bool {
    let mut words = script
        .split_whitespace()
        .skip_while(|w| w.contains('=') || ["cross-env", "npx", "env"].contains(w));
    let Some(first) = words.next() else {
        return false;
    };
    let second = words.next().unwrap_or("");
    let sub = |list: &[&str]| list.contains(&second);
    match first {
        "vite" => second.is_empty() || second.starts_with('-') || sub(&["dev", "serve", "preview"]),
        "react-scripts" => sub(&["start"]),
        "next" => sub(&["dev"]),
        "astro" => sub(&["dev", "preview", "start"]),
        "gatsby" => sub(&["develop", "serve"]),
        "nuxt" | "nuxi" => sub(&["dev"]),
        "remix" | "svelte-kit" => sub(&["dev"]),
        "ng" => sub(&["serve"]),
        "vue-cli-service" => sub(&["serve"]),
        "webpack" => sub(&["serve"]),
        "parcel" => second != "build",
        "webpack-dev-server" | "serve" | "http-server" | "live-server" | "lite-server" | "browser-sync" => true,
        _ => false,
    }
}
