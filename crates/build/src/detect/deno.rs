//! Deno specifics of detection: a `deno.json`/`deno.jsonc` project, or a `main.ts` with
//! no package.json, runs with deno, which berth provisions from the npm registry (see
//! [`super::tools`]).
//!
//! Apps have no network at run time, so the build fetches every dependency into
//! `DENO_DIR` in the app folder (`deno install` for the config's imports, `deno cache`
//! for the entry's) and the app runs from that cache. The app gets the permissions a web
//! server needs: the network (to listen), the environment (`PORT`), and reading its own
//! folder. A `start` task in the config is run with `deno task start` instead.

use super::tools::{self, Runtime};
use super::{DetectError, Draft, SourceFiles, shell_quote};

/// Where deno keeps downloaded modules, relative to the app folder.
pub const DENO_DIR: &str = ".cache/deno";

/// The environment of every deno command. deno trusts only its built-in certificates, so
/// the system's bundle (which npm and pip use through /etc/npmrc and /etc/pip.conf) is
/// added when there is one, as for corepack.
const DENO_ENV: &str = "export DENO_DIR=\"$HOME/.cache/deno\" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1; [ -n \"$DENO_CERT\" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ] || export DENO_CERT=/etc/ssl/certs/ca-certificates.crt;";

/// Entry files tried, in order, when no `start` task names one.
const ENTRY_CANDIDATES: [&str; 6] = ["main.ts", "server.ts", "mod.ts", "index.ts", "main.js", "server.js"];

const DENO_NO_START: &str = "no start task in deno.json and none of main.ts, server.ts, mod.ts, index.ts, main.js or server.js exists; add a \"tasks\": {\"start\": ...} entry or set start_command";

/// The permissions of a web server run by berth.
const PERMISSIONS: &str = "--allow-net --allow-env --allow-read=.";

/// True when the source is a Deno project (a config file, or a `main.ts` without a
/// package.json, which would make it a Node project).
pub(super) fn is_deno(files: &SourceFiles<'_>) -> bool {
    files.is_file("deno.json")
        || files.is_file("deno.jsonc")
        || (files.is_file("main.ts") && !files.exists("package.json"))
}

/// The plan of a Deno project.
pub(super) fn plan(files: &SourceFiles<'_>, procfile_web: Option<&str>) -> Result<Draft, DetectError> {
    let config = ["deno.json", "deno.jsonc"].into_iter().find(|f| files.is_file(f));
    let start_task = match config {
        Some(name) => start_task(&files.read(name)?, name)?,
        None => None,
    };
    let mut notes = vec![match config {
        Some(name) => format!("detected a Deno project ({name})"),
        None => "detected a Deno project (main.ts, no package.json)".to_string(),
    }];
    let version = tools::DENO_VERSION;
    notes.push(format!(
        "runtime: {} (downloaded from the npm registry once per site)",
        tools::label(Runtime::Deno, version)
    ));
    let entry = ENTRY_CANDIDATES.iter().find(|f| files.is_file(f)).copied();
    // `deno install` reads the config's imports (and a deno.lock); the entry's own
    // remote imports are fetched by `deno cache`.
    let mut fetch = Vec::new();
    if config.is_some() {
        fetch.push("deno install".to_string());
    }
    if let Some(entry) = entry {
        fetch.push(format!("deno cache {}", shell_quote(entry)));
    }
    let install = (!fetch.is_empty()).then(|| format!("{DENO_ENV} {}", fetch.join(" && ")));
    let start = if let Some(web) = procfile_web {
        notes.push("start command: the Procfile's web: line".into());
        Some(web.to_string())
    } else if start_task.is_some() {
        notes.push("start command: the start task of the config".into());
        Some(format!("{DENO_ENV} exec deno task start"))
    } else {
        entry.map(|e| {
            format!(
                "{DENO_ENV} exec deno run --cached-only {PERMISSIONS} {}",
                shell_quote(e)
            )
        })
    };
    Ok(Draft {
        setup: Some(tools::setup_command(Runtime::Deno, version)),
        package_manager: Some(tools::label(Runtime::Deno, version)),
        install,
        start,
        no_start: DENO_NO_START,
        notes,
        ..Draft::default()
    })
}

/// The `start` task of a deno.json(c), if it has one.
fn start_task(text: &str, name: &'static str) -> Result<Option<String>, DetectError> {
    let json = strip_jsonc(text);
    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| DetectError::InvalidManifest {
        file: name,
        reason: e.to_string(),
    })?;
    Ok(value
        .pointer("/tasks/start")
        .and_then(|t| t.as_str().or_else(|| t.get("command").and_then(|c| c.as_str())))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string))
}

/// JSON with comments and trailing commas (deno.jsonc) as plain JSON.
fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas before a closing bracket.
    let mut cleaned = String::with_capacity(out.len());
    let bytes: Vec<char> = out.chars().collect();
    let mut in_string = false;
    for (i, &c) in bytes.iter().enumerate() {
        if in_string {
            if c == '"' && bytes[i.saturating_sub(1)] != '\\' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ',' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                continue;
            }
        }
        cleaned.push(c);
    }
    cleaned
}
