//! Rust specifics of detection: a `Cargo.toml` package with a binary is built in release
//! mode with the server's `cargo`, and the binary is the app.
//!
//! Builds see only the server's system folders, so cargo and rustc must be installed
//! there (Debian's `cargo` package, or binaries in /usr/local/bin); a toolchain under a
//! user's home (rustup's default) is invisible to them. `rust-toolchain.toml` is a
//! request the log compares with the server's rustc (see [`super::toolchain`]); nothing
//! is downloaded. Downloaded crates and compiled dependencies live in `CARGO_HOME` (with
//! the target folder inside it) in the app folder, which berth's build cache carries to
//! the site's next build, so a redeploy compiles only the app's own crate.

use super::{DetectError, Draft, SourceFiles, shell_quote, toml_lite};

/// Where cargo keeps downloaded crates and (in `target`) what it compiled, relative to the
/// app folder: one folder, so the build cache carries both to the next build.
pub const CARGO_HOME_DIR: &str = ".cache/cargo";

/// The environment of every cargo command.
const CARGO_ENV: &str = "export CARGO_HOME=\"$HOME/.cache/cargo\" CARGO_TARGET_DIR=\"$HOME/.cache/cargo/target\";";

const RUST_NO_BIN: &str =
    "Cargo.toml has no binary (no [[bin]] and no src/main.rs); add one, or set build_command and start_command";

/// The plan of a `Cargo.toml` project.
pub(super) fn plan(files: &SourceFiles<'_>, procfile_web: Option<&str>) -> Result<Draft, DetectError> {
    let text = files.read("Cargo.toml")?;
    let tables = toml_lite::tables(&text);
    let package = tables
        .iter()
        .find(|t| t.name == "package")
        .and_then(|t| t.string("name"));
    let Some(package) = package else {
        return Err(DetectError::InvalidManifest {
            file: "Cargo.toml",
            reason: "it has no [package] name (a workspace root is not built by berth; set root_dir to the member that is the app)".into(),
        });
    };
    let bins: Vec<String> = tables
        .iter()
        .filter(|t| t.name == "bin")
        .filter_map(|t| t.string("name"))
        .collect();
    // The binary named like the package wins, as `cargo run` picks it too.
    let binary = if files.is_file("src/main.rs") || bins.contains(&package) {
        Some(package.clone())
    } else {
        bins.first().cloned()
    };
    let binary = binary.filter(|b| !b.is_empty() && !b.contains(['/', '\0']));
    let mut notes = vec![format!("detected a Rust package {package} (Cargo.toml)")];
    let locked = if files.is_file("Cargo.lock") { " --locked" } else { "" };
    let build = binary.as_ref().map(|bin| {
        notes.push(format!("binary: {bin}"));
        let only = if bins.len() > 1 {
            format!(" --bin {}", shell_quote(bin))
        } else {
            String::new()
        };
        format!("{CARGO_ENV} cargo build --release{locked}{only}")
    });
    let install = Some(format!("{CARGO_ENV} cargo fetch{locked}"));
    let start = match procfile_web {
        Some(web) => {
            notes.push("start command: the Procfile's web: line".into());
            Some(web.to_string())
        }
        None => binary.map(|bin| shell_quote(&format!("{CARGO_HOME_DIR}/target/release/{bin}"))),
    };
    Ok(Draft {
        install,
        build,
        start,
        no_start: RUST_NO_BIN,
        notes,
        ..Draft::default()
    })
}
