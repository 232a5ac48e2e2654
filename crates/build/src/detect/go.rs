//! Go specifics of detection: a `go.mod` project is built with the server's `go`
//! (Debian's `golang-go`) into one binary, which is the app.
//!
//! `GOTOOLCHAIN=local` keeps go from downloading the toolchain a `go.mod` asks for: the
//! `go` directive is a request the log compares with the server's version (see
//! [`super::toolchain`]). The module cache lives in the app folder (the only place a
//! build can write) with go's build cache, and berth's build cache carries both to the
//! site's next build, so a redeploy compiles only what changed.

use std::path::Path;

use super::{DetectError, Draft, SourceFiles};

/// Where the module and build caches live, relative to the app folder.
pub const GO_CACHE_DIR: &str = ".cache/go";

/// Where the built binary is written, relative to the app folder.
pub const GO_BINARY: &str = ".berth/bin/app";

/// The environment of every go command: no toolchain download, caches in the app
/// folder, a writable module cache (go makes it read-only, which the build cache could
/// not replace). A site's own `GOFLAGS` or `GOPROXY` still apply.
const GO_ENV: &str = "export GOTOOLCHAIN=local GOPATH=\"$HOME/.cache/go\" GOMODCACHE=\"$HOME/.cache/go/mod\" GOCACHE=\"$HOME/.cache/go/build\" GOFLAGS=\"${GOFLAGS:--modcacherw}\";";

const GO_NO_MAIN: &str = "go.mod is there but no main package was found (a .go file with 'package main' at the root or in one cmd/<name>/ folder); add one, or set build_command and start_command";

/// The plan of a `go.mod` project.
pub(super) fn plan(files: &SourceFiles<'_>, procfile_web: Option<&str>) -> Result<Draft, DetectError> {
    let go_mod = files.read("go.mod")?;
    let module = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("module "))
        .map(|m| m.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    let mut notes = vec![format!("detected a Go module {module} (go.mod)")];
    let main = main_package(files, &module);
    let build = main.as_ref().map(|pkg| {
        notes.push(format!("main package: {pkg}"));
        format!("{GO_ENV} go build -o {GO_BINARY} {pkg}")
    });
    // A no-op without requirements, but the step is where the build cache (modules and
    // compiled packages) is restored.
    let install = Some(format!("{GO_ENV} go mod download"));
    let start = match procfile_web {
        Some(web) => {
            notes.push("start command: the Procfile's web: line".into());
            Some(web.to_string())
        }
        None => build.as_ref().map(|_| GO_BINARY.to_string()),
    };
    Ok(Draft {
        install,
        build,
        start,
        no_start: GO_NO_MAIN,
        notes,
        ..Draft::default()
    })
}

/// The package to build: the root when it is `package main`, else the one `cmd/<name>`
/// folder that is (the one named like the module's last element when there are several).
fn main_package(files: &SourceFiles<'_>, module: &str) -> Option<String> {
    if is_main_package(files, ".") {
        return Some(".".into());
    }
    if !super::fs_safe::is_dir_in_tree(files.root, "cmd") {
        return None;
    }
    let mut commands: Vec<String> = std::fs::read_dir(files.root.join("cmd"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| is_main_package(files, &format!("cmd/{name}")))
        .collect();
    commands.sort();
    let last = module.rsplit('/').next().unwrap_or(module);
    let chosen = commands.iter().find(|c| *c == last).or(commands.first())?;
    // A folder name is the repository's: quoted for the shell.
    Some(super::shell_quote(&format!("./cmd/{chosen}")))
}

/// True when a folder of the tree holds a non-test `.go` file declaring `package main`.
fn is_main_package(files: &SourceFiles<'_>, dir: &str) -> bool {
    if !super::fs_safe::is_dir_in_tree(files.root, dir) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(files.root.join(dir)) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.ends_with(".go")
            && !name.ends_with("_test.go")
            && files
                .read_opt(&Path::new(dir).join(&name).to_string_lossy())
                .ok()
                .flatten()
                .is_some_and(|text| declares_main(&text))
    })
}

/// True when Go source declares `package main` (on its first non-comment line).
fn declares_main(text: &str) -> bool {
    let mut in_block = false;
    for line in text.lines() {
        let line = line.trim();
        if in_block {
            in_block = !line.contains("*/");
            continue;
        }
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if line.starts_with("/*") {
            in_block = !line.contains("*/");
            continue;
        }
        return line.strip_prefix("package").map(str::trim) == Some("main") || line.starts_with("package main ");
    }
    false
}
