//! The CLI client: talks to a running server's REST API with `BERTH_URL` and
//! `BERTH_TOKEN`, prints tables for people and `--json` for scripts, errors on stderr
//! with a non-zero exit. `berth mcp` relays MCP over stdio to the server's `/mcp`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::model::DeploymentStatus;
use crate::service::{DeployOutput, DeploymentInfo, DeploymentList, LogPage, SiteDetail, SiteList, UpdateSiteOutput};

/// Where the server is and who we are.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// Control plane URL.
    #[arg(long, env = "BERTH_URL", default_value = "http://127.0.0.1:7070", global = true)]
    pub url: String,
    /// API key.
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// A client error with the server's message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// A REST client.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client from the arguments; fails without a token.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let Some(token) = args.token.clone().filter(|t| !t.is_empty()) else {
            bail!("no API key: set BERTH_TOKEN (the admin key `berth serve` printed on first start) or pass --token");
        };
        let http = reqwest::Client::builder().no_proxy().build()?;
        Ok(Self {
            base: args.url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = self.request(req).await?;
        self.read(resp).await
    }

    /// Sends a request with the API key.
    async fn request(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        Ok(req.bearer_auth(&self.token).send().await.map_err(|e| {
            ClientError(format!(
                "cannot reach berth at {}: {e}; is `berth serve` running? (BERTH_URL)",
                self.base
            ))
        })?)
    }

    /// A response's JSON, or the server's error in CLI words.
    async fn read<T: DeserializeOwned>(&self, resp: reqwest::Response) -> anyhow::Result<T> {
        let status = resp.status();
        let body = resp.bytes().await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError(format!(
                "berth at {} refused the API key; check BERTH_TOKEN (or --token): it is the admin key `berth serve` printed on first start",
                self.base
            ))
            .into());
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(ClientError(in_cli_words(&message)).into());
        }
        serde_json::from_slice(&body).context("the server sent an unexpected response")
    }

    /// GET a path.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// GET a path; `None` when the server answers 404.
    pub async fn get_optional<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        let resp = self.request(self.http.get(format!("{}{path}", self.base))).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.read(resp).await.map(Some)
    }

    /// DELETE a path.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// POST JSON.
    pub async fn post_json<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// PATCH JSON.
    pub async fn patch_json<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// POST raw bytes.
    pub async fn post_bytes<T: DeserializeOwned>(&self, path: &str, body: Vec<u8>) -> anyhow::Result<T> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/gzip")
                .body(body),
        )
        .await
    }
}

/// Build settings given as flags (`berth deploy`, `berth sites update`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct BuildSettingsArgs {
    /// Build pack: static, procfile, node, python, go, rust or deno.
    #[arg(long)]
    pub build_pack: Option<String>,
    /// Install command.
    #[arg(long)]
    pub install_command: Option<String>,
    /// Build command.
    #[arg(long)]
    pub build_command: Option<String>,
    /// Start command (the app must listen on $PORT).
    #[arg(long)]
    pub start_command: Option<String>,
    /// Static output folder, relative to the app's folder.
    #[arg(long)]
    pub output_dir: Option<String>,
    /// Subfolder of the repository that holds the app (monorepos).
    #[arg(long)]
    pub root_dir: Option<String>,
    /// Fixed port the app listens on.
    #[arg(long)]
    pub port: Option<u16>,
    /// Health check path.
    #[arg(long)]
    pub health_check_path: Option<String>,
    /// Return a setting to detection (repeatable): build_pack, install_command, build_command,
    /// start_command, output_dir, root_dir, port, health_check_path; with `sites update` also
    /// branch, and drain_seconds (back to the default).
    #[arg(long, value_name = "SETTING")]
    pub clear: Vec<String>,
}

/// Settings `--clear` accepts.
const CLEARABLE: [&str; 10] = crate::service::CLEARABLE_SETTINGS;

/// How many of [`CLEARABLE`] are build settings (all a deploy's overrides take).
const CLEARABLE_BUILD_SETTINGS: usize = 8;

impl BuildSettingsArgs {
    /// The settings as a JSON object: given flags as values, `--clear` ones as null.
    fn to_json(&self, extra_clearable: bool) -> anyhow::Result<serde_json::Map<String, Value>> {
        let mut out = serde_json::Map::new();
        let strings = [
            ("build_pack", &self.build_pack),
            ("install_command", &self.install_command),
            ("build_command", &self.build_command),
            ("start_command", &self.start_command),
            ("output_dir", &self.output_dir),
            ("root_dir", &self.root_dir),
            ("health_check_path", &self.health_check_path),
        ];
        for (name, value) in strings {
            if let Some(v) = value {
                out.insert(name.into(), Value::String(v.clone()));
            }
        }
        if let Some(port) = self.port {
            out.insert("port".into(), Value::from(port));
        }
        for name in &self.clear {
            let name = name.trim().replace('-', "_");
            let allowed = if extra_clearable {
                &CLEARABLE[..]
            } else {
                &CLEARABLE[..CLEARABLE_BUILD_SETTINGS]
            };
            if !allowed.contains(&name.as_str()) {
                bail!("--clear {name}: not a setting; use one of {}", allowed.join(", "));
            }
            if out.contains_key(&name) {
                bail!("--clear {name} and --{} both given; pick one", name.replace('_', "-"));
            }
            out.insert(name, Value::Null);
        }
        Ok(out)
    }
}

/// `berth sites update NAME …`: PATCH /api/sites/{site}.
#[expect(clippy::too_many_arguments, reason = "one argument per flag of `berth sites update`")]
pub async fn update_site(
    args: &ClientArgs,
    site: &str,
    settings: &BuildSettingsArgs,
    branch: Option<String>,
    previews: Option<bool>,
    provider: Option<String>,
    drain_seconds: Option<i64>,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut body = settings.to_json(true)?;
    if let Some(branch) = branch {
        if body.contains_key("branch") {
            bail!("--clear branch and --branch both given; pick one");
        }
        body.insert("branch".into(), Value::String(branch));
    }
    if let Some(previews) = previews {
        body.insert("previews".into(), Value::Bool(previews));
    }
    if let Some(provider) = provider {
        body.insert("provider".into(), Value::String(provider));
    }
    if let Some(seconds) = drain_seconds {
        if body.contains_key("drain_seconds") {
            bail!("--clear drain_seconds and --drain-seconds both given; pick one");
        }
        body.insert("drain_seconds".into(), Value::from(seconds));
    }
    if body.is_empty() {
        bail!(
            "nothing to change: pass settings such as --start-command '…' or --clear output_dir (see `berth sites update --help`)"
        );
    }
    let out: UpdateSiteOutput = client
        .send(
            client
                .http
                .patch(format!("{}/api/sites/{site}", client.base))
                .json(&Value::Object(body)),
        )
        .await?;
    if json {
        return print_json(&out);
    }
    if out.changed.is_empty() {
        println!("nothing changed: {site} already has these settings");
    } else {
        println!("changed: {}", out.changed.join(", "));
    }
    let shown = serde_json::to_value(&out.settings)?;
    for (k, v) in shown.as_object().into_iter().flatten() {
        let v = match v {
            Value::Null => "(detected)".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("  {k:<18} {v}");
    }
    if out.changed == ["drain_seconds"] {
        println!("{}", out.next_steps);
    } else {
        println!("they apply at the next deploy: `berth deploy DIR --site {site}` (upload sites) or HOSTING_DEPLOY");
    }
    Ok(())
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `berth deploy DIR --site NAME`: pack, upload, follow the build, print the URL.
pub async fn deploy(
    args: &ClientArgs,
    dir: &Path,
    site: &str,
    wait: bool,
    settings: &BuildSettingsArgs,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let overrides = settings.to_json(false)?;
    if !dir.is_dir() {
        bail!("'{}' is not a folder", dir.display());
    }
    let spinner = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!("packing {}", dir.display()));
    let src: PathBuf = dir.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        berth_build::archive::pack_dir_tar_gz(&src, &mut out).map(|_| out)
    })
    .await??;
    spinner.set_message(format!("uploading {} KiB", packed.len() / 1024));
    let mut path = format!("/api/sites/{site}/upload?create=true");
    if !overrides.is_empty() {
        let query = serde_urlencoded::to_string([("overrides", serde_json::to_string(&overrides)?)])?;
        path.push_str(&format!("&{query}"));
    }
    let out: DeployOutput = client.post_bytes(&path, packed).await?;
    follow_deploy(&client, out, spinner, wait, json).await
}

/// `berth deploy --dry-run`: the objects a release of the site's production environment
/// would apply on its target (sealed), who checked them and what to know; nothing is
/// uploaded, built or applied. The service refuses what a dry run cannot show (a branch,
/// build settings).
pub async fn deploy_dry_run(
    args: &ClientArgs,
    site: &str,
    branch: Option<String>,
    settings: &BuildSettingsArgs,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut body = serde_json::Map::new();
    body.insert("dry_run".into(), Value::Bool(true));
    let overrides = settings.to_json(false)?;
    if !overrides.is_empty() {
        body.insert("overrides".into(), Value::Object(overrides));
    }
    if let Some(branch) = branch {
        body.insert("branch".into(), Value::String(branch));
    }
    let out: crate::service::DryRunOutput = client
        .post_json(&format!("/api/sites/{site}/deploy"), &Value::Object(body))
        .await?;
    if json {
        return print_json(&out);
    }
    let checked_by = serde_json::to_value(out.checked_by)?;
    println!(
        "dry run of {}/{} on {}: nothing was built or applied",
        out.site, out.environment, out.target
    );
    println!("checked_by: {}", checked_by.as_str().unwrap_or_default());
    println!("note: {}", out.note);
    println!("{}", serde_json::to_string_pretty(&out.objects)?);
    Ok(())
}

/// Whether `berth deploy`'s argument names a git repository rather than a folder.
pub fn is_git_url(target: &str) -> bool {
    let t = target.trim();
    ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|p| t.starts_with(p))
        || (t.starts_with("git@") && t.contains(':'))
}

/// `berth deploy URL`: creates the site from the repository when it does not exist (or
/// deploys it again when it does, with the same repository), then follows the build.
pub async fn deploy_repo(
    args: &ClientArgs,
    repo: &str,
    site: &str,
    branch: Option<String>,
    wait: bool,
    settings: &BuildSettingsArgs,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let overrides = settings.to_json(false)?;
    let spinner = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!("asking berth to deploy {repo}"));
    let existing: Option<SiteDetail> = client.get_optional(&format!("/api/sites/{site}")).await?;
    let out: DeployOutput = match existing {
        None => {
            let mut body = overrides;
            body.insert("name".into(), Value::String(site.to_string()));
            body.insert("repo".into(), Value::String(repo.to_string()));
            if let Some(branch) = branch {
                body.insert("branch".into(), Value::String(branch));
            }
            let created: Value = client.post_json("/api/sites", &Value::Object(body)).await?;
            serde_json::from_value(created).context("the server sent an unexpected response")?
        }
        Some(detail) => {
            if detail.summary.source.trim() != repo.trim() {
                bail!(
                    "site {site} deploys from {}, not {repo}; pick another name with --site, or delete it first (`berth delete {site} --yes`)",
                    detail.summary.source
                );
            }
            let mut body = serde_json::Map::new();
            if !overrides.is_empty() {
                body.insert("overrides".into(), Value::Object(overrides));
            }
            if let Some(branch) = branch {
                body.insert("branch".into(), Value::String(branch));
            }
            client
                .post_json(&format!("/api/sites/{site}/deploy"), &Value::Object(body))
                .await?
        }
    };
    follow_deploy(&client, out, spinner, wait, json).await
}

/// Prints a queued deployment, or follows its build log until it ends.
async fn follow_deploy(
    client: &Client,
    out: DeployOutput,
    spinner: ProgressBar,
    wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    let id = out.deployment.id.clone();
    if !wait {
        spinner.finish_and_clear();
        return if json {
            print_json(&out)
        } else {
            println!("deployment {id} queued; follow it with `berth logs {id} --follow`");
            Ok(())
        };
    }
    let mut cursor = 0i64;
    // The step that runs (`$ npm ci`, `starting: node server.js`), shown by the spinner
    // with the time it has taken, so a long step is visibly alive.
    let mut step = String::new();
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"));
    let final_info: DeploymentInfo = loop {
        let page: LogPage = client
            .get(&format!(
                "/api/deployments/{id}/logs?kind=build&cursor={cursor}&limit=500"
            ))
            .await?;
        for line in &page.lines {
            if !json {
                spinner.suspend(|| println!("  {}", line.line));
            }
            if line.line.starts_with("$ ") || line.line.starts_with("starting: ") {
                step = crate::runtime::health::cut(line.line.lines().next().unwrap_or_default(), 60);
                spinner.reset_elapsed();
            }
        }
        cursor = page.next_cursor;
        spinner.set_message(if step.is_empty() {
            format!("{} {}", id, page.status.as_str())
        } else {
            format!("{} {}: {step}", id, page.status.as_str())
        });
        if page.status.is_final() && !page.has_more {
            break client.get(&format!("/api/deployments/{id}")).await?;
        }
        if !page.has_more {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    spinner.finish_and_clear();
    if json {
        print_json(&DeployOutput {
            url: out.url.clone(),
            deployment: final_info.clone(),
        })?;
    }
    match final_info.status {
        DeploymentStatus::Live => {
            if !json {
                println!("✔ live: {}", out.url);
            }
            Ok(())
        }
        status => Err(ClientError(format!(
            "deployment {id} {}: {}",
            status.as_str(),
            final_info.error.as_deref().unwrap_or("see `berth logs`")
        ))
        .into()),
    }
}

/// `berth sites`.
pub async fn sites(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    // Every page, one request each (at most 200 sites per page).
    let client = Client::new(args)?;
    let mut list: SiteList = client.get("/api/sites?limit=200").await?;
    while let Some(cursor) = list.next_cursor.take() {
        let query = serde_urlencoded::to_string([("limit", "200"), ("cursor", cursor.as_str())])?;
        let page: SiteList = client.get(&format!("/api/sites?{query}")).await?;
        list.sites.extend(page.sites);
        list.next_cursor = page.next_cursor;
    }
    if json {
        return print_json(&list);
    }
    if list.sites.is_empty() {
        println!("no sites yet: `berth deploy ./my-app --site hello`");
        return Ok(());
    }
    println!("{:<24} {:<10} URL", "NAME", "STATUS");
    for s in list.sites {
        println!("{:<24} {:<10} {}", s.name, s.status, s.url);
    }
    Ok(())
}

/// `berth site NAME`.
pub async fn site(args: &ClientArgs, name: &str, json: bool) -> anyhow::Result<()> {
    let d: SiteDetail = Client::new(args)?
        .get(&format!("/api/sites/{name}?deploy_log_lines=10&runtime_log_lines=10"))
        .await?;
    if json {
        return print_json(&d);
    }
    println!("{}  {}  {}", d.summary.name, d.summary.status, d.summary.url);
    println!("source: {}", d.summary.source);
    for e in &d.environments {
        println!("env {:<12} {:<9} {}", e.name, e.status, e.url);
    }
    println!("recent deployments:");
    for dep in &d.recent_deployments {
        println!("  {} {:<10} {}", dep.id, dep.status.as_str(), dep.created_at);
    }
    if !d.build_log_tail.is_empty() {
        println!("build log (tail):");
        d.build_log_tail.iter().for_each(|l| println!("  {l}"));
    }
    if !d.runtime_log_tail.is_empty() {
        println!("runtime log (tail):");
        d.runtime_log_tail.iter().for_each(|l| println!("  {l}"));
    }
    Ok(())
}

/// `berth deployments SITE`.
pub async fn deployments(args: &ClientArgs, site: &str, json: bool) -> anyhow::Result<()> {
    let list: DeploymentList = Client::new(args)?
        .get(&format!("/api/sites/{site}/deployments"))
        .await?;
    if json {
        return print_json(&list);
    }
    println!("{:<38} {:<11} {:<12} CREATED", "ID", "STATUS", "COMMIT");
    for d in list.deployments {
        let commit = d.commit.as_deref().map(|c| &c[..c.len().min(10)]).unwrap_or("-");
        println!("{:<38} {:<11} {:<12} {}", d.id, d.status.as_str(), commit, d.created_at);
    }
    Ok(())
}

/// `berth logs DEPLOYMENT|SITE [--follow]`.
pub async fn logs(args: &ClientArgs, target: &str, kind: Option<&str>, follow: bool, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let id = if target.starts_with("dpl_") {
        target.to_string()
    } else {
        let list: DeploymentList = client.get(&format!("/api/sites/{target}/deployments?limit=1")).await?;
        list.deployments
            .first()
            .map(|d| d.id.clone())
            .ok_or_else(|| ClientError(format!("site '{target}' has no deployments yet")))?
    };
    let kind = kind.unwrap_or("all");
    let print = |l: &crate::service::LogLine| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(l)?);
        } else {
            println!("{} {:<7} {}", l.time, l.kind, l.line);
        }
        Ok(())
    };
    if follow {
        let resp = client
            .http
            .get(format!("{}/api/deployments/{id}/logs/stream?kind={kind}", client.base))
            .bearer_auth(&client.token)
            .send()
            .await
            .map_err(|e| ClientError(format!("cannot reach berth at {}: {e}", client.base)))?;
        if !resp.status().is_success() {
            return Err(ClientError(format!("could not follow the logs: HTTP {}", resp.status())).into());
        }
        read_sse(resp, |data| {
            if let Ok(l) = serde_json::from_str::<crate::service::LogLine>(&data) {
                let _ = print(&l);
            }
            std::future::ready(())
        })
        .await;
        return Ok(());
    }
    let mut cursor = 0i64;
    loop {
        let page: LogPage = client
            .get(&format!(
                "/api/deployments/{id}/logs?kind={kind}&cursor={cursor}&limit=1000"
            ))
            .await?;
        for l in &page.lines {
            print(l)?;
        }
        cursor = page.next_cursor;
        if !page.has_more {
            return Ok(());
        }
    }
}

/// `berth delete SITE`.
pub async fn delete(args: &ClientArgs, site: &str, yes: bool, json: bool) -> anyhow::Result<()> {
    if !yes {
        bail!("deleting '{site}' removes its deployments, logs and files; run again with --yes to confirm");
    }
    let out: Value = Client::new(args)?.delete(&format!("/api/sites/{site}")).await?;
    if json {
        print_json(&out)
    } else {
        println!("deleted {site}");
        Ok(())
    }
}

/// `berth environments SITE`.
pub async fn environments(args: &ClientArgs, site: &str, json: bool) -> anyhow::Result<()> {
    // Every page, one request each (at most 200 environments per page).
    let client = Client::new(args)?;
    let path = format!("/api/sites/{site}/environments");
    let mut list: crate::service::EnvironmentList = client.get(&format!("{path}?limit=200")).await?;
    while let Some(cursor) = list.next_cursor.take() {
        let query = serde_urlencoded::to_string([("limit", "200"), ("cursor", cursor.as_str())])?;
        let page: crate::service::EnvironmentList = client.get(&format!("{path}?{query}")).await?;
        list.environments.extend(page.environments);
        list.next_cursor = page.next_cursor;
    }
    if json {
        return print_json(&list);
    }
    println!("{:<16} {:<9} {:<38} URL", "NAME", "STATUS", "DEPLOYMENT");
    for e in list.environments {
        println!(
            "{:<16} {:<9} {:<38} {}",
            e.name,
            e.status,
            e.deployment_id.as_deref().unwrap_or("-"),
            e.url
        );
    }
    Ok(())
}

/// `berth environments create SITE NAME`: creates a preview environment and follows its
/// first deployment.
pub async fn create_environment(
    args: &ClientArgs,
    site: &str,
    name: &str,
    branch: Option<String>,
    commit: Option<String>,
    wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let body = serde_json::json!({ "name": name, "branch": branch, "commit": commit });
    let out: crate::service::EnvironmentOutput = client
        .post_json(&format!("/api/sites/{site}/environments"), &body)
        .await?;
    match out.deployment {
        Some(deployment) => {
            if !json {
                println!("environment {name} created; deploying {}", deployment.id);
            }
            let spinner = if json {
                ProgressBar::hidden()
            } else {
                ProgressBar::new_spinner()
            };
            let deploy = DeployOutput {
                deployment,
                url: out.environment.url.clone(),
            };
            follow_deploy(&client, deploy, spinner, wait, json).await
        }
        None if json => print_json(&out),
        None => {
            println!("environment {name} created: {}", out.environment.url);
            Ok(())
        }
    }
}

/// `berth environments delete SITE NAME --yes`.
pub async fn delete_environment(
    args: &ClientArgs,
    site: &str,
    name: &str,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    if !yes {
        bail!(
            "deleting environment '{name}' of '{site}' removes its deployments and logs; run again with --yes to confirm"
        );
    }
    let list: crate::service::EnvironmentList = Client::new(args)?
        .delete(&format!("/api/sites/{site}/environments/{name}"))
        .await?;
    if json {
        return print_json(&list);
    }
    let left: Vec<&str> = list.environments.iter().map(|e| e.name.as_str()).collect();
    println!("deleted environment {name}; {site} has: {}", left.join(", "));
    Ok(())
}

/// A path segment with everything but unreserved characters percent-encoded (a domain
/// may be typed in Unicode).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints a domain: its status, what to do next, its records and the last diagnosis.
fn print_domain(d: &crate::service::DomainInfo) {
    println!("{} → {}/{}: {}", d.name, d.site, d.environment, d.status.as_str());
    if let Some(partner) = &d.redirect_from {
        println!("  {partner} redirects to it (308)");
    }
    println!("  records to create:");
    for r in &d.records {
        let made = if r.managed {
            "  (created by berth at the DNS provider)"
        } else {
            ""
        };
        println!("    {:<5} {} {}{made}", r.record_type, r.name, r.value);
    }
    if let Some(checks) = &d.diagnosis {
        println!("  last check:");
        for c in checks {
            let observed = if c.observed.is_empty() {
                "(none)".to_string()
            } else {
                c.observed.join(", ")
            };
            println!(
                "    {} {:<5} {} = {observed} [{}]{}",
                if c.ok { "ok  " } else { "FAIL" },
                c.record_type,
                c.name,
                c.resolver,
                if c.next.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.next)
                }
            );
            if let Some(at) = &c.authoritative {
                let observed = if at.observed.is_empty() {
                    "(none)".to_string()
                } else {
                    at.observed.join(", ")
                };
                println!("          at the zone's name servers = {observed} [{}]", at.server);
            }
        }
    }
    if let Some(cert) = &d.certificate {
        println!(
            "  certificate: issued {}, expires {}, renews from {}",
            cert.issued_at, cert.expires_at, cert.renews_at
        );
    }
    if let Some(p) = &d.certificate_problem {
        println!("  certificate problem ({} in a row): {}", p.attempts, p.message);
    }
    for warning in &d.warnings {
        println!("  WARNING: {warning}");
    }
    println!("  next: {}", d.next);
}

/// `berth domains SITE`.
pub async fn domains(args: &ClientArgs, site: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    // Bounded: at most 50 pages of 200.
    for _ in 0..50 {
        let path = match &cursor {
            Some(c) => format!(
                "/api/sites/{}/domains?limit=200&cursor={}",
                path_segment(site),
                path_segment(c)
            ),
            None => format!("/api/sites/{}/domains?limit=200", path_segment(site)),
        };
        let page: crate::service::DomainList = client.get(&path).await?;
        all.extend(page.domains);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        println!("{site} has no domains; attach one with `berth domains add {site} NAME`");
    }
    println!("{:<40} {:<12} {:<12} NEXT", "DOMAIN", "ENVIRONMENT", "STATUS");
    for d in all {
        println!(
            "{:<40} {:<12} {:<12} {}",
            d.name,
            d.environment,
            d.status.as_str(),
            d.next
        );
    }
    Ok(())
}

/// `berth resources list [--site SITE]`.
pub async fn resources(args: &ClientArgs, site: Option<&str>, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    let filter = site.map_or_else(String::new, |s| format!("&site={}", path_segment(s)));
    // Bounded: at most 50 pages of 200.
    for _ in 0..50 {
        let path = match &cursor {
            Some(c) => format!("/api/resources?limit=200{filter}&cursor={}", path_segment(c)),
            None => format!("/api/resources?limit=200{filter}"),
        };
        let page: crate::service::ResourceList = client.get(&path).await?;
        all.extend(page.resources);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        println!("no resources; create one with `berth resources create NAME --site SITE`");
        return Ok(());
    }
    println!("{:<30} {:<8} {:>8} {:<30} ENV", "RESOURCE", "KIND", "SIZE", "SITE");
    for r in all {
        println!(
            "{:<30} {:<8} {:>6}Mi {:<30} {}",
            r.name,
            r.kind.as_str(),
            r.size_mb,
            r.site.as_deref().unwrap_or("-"),
            r.env_vars.join(", ")
        );
    }
    Ok(())
}

fn print_resource(r: &crate::service::ResourceInfo) {
    println!("{} ({}, {} MiB)", r.name, r.kind.as_str(), r.size_mb);
    match &r.site {
        Some(site) => println!("  attached to {site}, at {}", r.mount_path),
        None => println!("  not attached"),
    }
    if let Some(used) = r.used_bytes {
        println!("  used: {} KiB", used >> 10);
    }
    if !r.env_vars.is_empty() {
        println!("  env vars: {}", r.env_vars.join(", "));
    }
    println!("  created: {}", r.created_at);
}

/// `berth resources get NAME`.
pub async fn resource(args: &ClientArgs, name: &str, json: bool) -> anyhow::Result<()> {
    let out: crate::service::ResourceInfo = Client::new(args)?
        .get(&format!("/api/resources/{}", path_segment(name)))
        .await?;
    if json {
        return print_json(&out);
    }
    print_resource(&out);
    Ok(())
}

/// `berth resources create NAME [--kind sqlite] [--size-mb N] [--site SITE]`.
pub async fn create_resource(
    args: &ClientArgs,
    name: &str,
    kind: &str,
    size_mb: Option<u32>,
    site: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "name": name, "kind": kind, "size_mb": size_mb, "site": site });
    let out: crate::service::CreatedResource = Client::new(args)?.post_json("/api/resources", &body).await?;
    if json {
        return print_json(&out);
    }
    print_resource(&out.resource);
    if !out.restarted.is_empty() {
        println!("  restarted: {}", out.restarted.join(", "));
    }
    Ok(())
}

/// `berth resources delete NAME [--detach] --yes`.
pub async fn delete_resource(args: &ClientArgs, name: &str, detach: bool, yes: bool, json: bool) -> anyhow::Result<()> {
    if !yes {
        bail!("deleting resource '{name}' deletes its data for good; run again with --yes to confirm");
    }
    let out: crate::service::DeletedResource = Client::new(args)?
        .delete(&format!("/api/resources/{}?detach={detach}", path_segment(name)))
        .await?;
    if json {
        return print_json(&out);
    }
    match &out.detached_from {
        Some(site) => println!("deleted resource '{}' (detached from {site})", out.name),
        None => println!("deleted resource '{}'", out.name),
    }
    Ok(())
}

/// Options of `berth domains add`.
#[derive(Debug, Default)]
pub struct DomainOptions {
    /// Environment it serves.
    pub environment: Option<String>,
    /// Also answer for the www/apex partner.
    pub redirect_www: bool,
    /// Send Strict-Transport-Security.
    pub hsts: bool,
    /// Wait this many seconds for its certificate.
    pub wait: Option<u64>,
}

/// `berth domains add SITE NAME`: attaches a domain and prints the records to create.
pub async fn add_domain(
    args: &ClientArgs,
    site: &str,
    name: &str,
    options: DomainOptions,
    json: bool,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "domain": name, "environment": options.environment, "redirect_www": options.redirect_www,
        "hsts": options.hsts, "wait": options.wait.is_some(), "timeout_seconds": options.wait,
    });
    let out: crate::service::DomainInfo = Client::new(args)?
        .post_json(&format!("/api/sites/{}/domains", path_segment(site)), &body)
        .await?;
    if json {
        return print_json(&out);
    }
    print_domain(&out);
    Ok(())
}

/// `berth domains check SITE NAME`: checks its DNS now and prints the diagnosis.
pub async fn check_domain(
    args: &ClientArgs,
    site: &str,
    name: &str,
    wait: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let out: crate::service::DomainInfo = Client::new(args)?
        .post_json(
            &format!(
                "/api/sites/{}/domains/{}/validate",
                path_segment(site),
                path_segment(name)
            ),
            &serde_json::json!({ "wait": wait.is_some(), "timeout_seconds": wait }),
        )
        .await?;
    if json {
        return print_json(&out);
    }
    print_domain(&out);
    Ok(())
}

/// `berth domains remove SITE NAME --yes`.
pub async fn remove_domain(args: &ClientArgs, site: &str, name: &str, yes: bool, json: bool) -> anyhow::Result<()> {
    if !yes {
        bail!("removing {name} from '{site}' stops serving it at once; run again with --yes to confirm");
    }
    let out: crate::service::RemovedDomain = Client::new(args)?
        .delete(&format!(
            "/api/sites/{}/domains/{}",
            path_segment(site),
            path_segment(name)
        ))
        .await?;
    if json {
        return print_json(&out);
    }
    println!("removed {} from {}; it is no longer served", out.removed, out.site);
    Ok(())
}

/// `berth scale SITE` flags; all absent shows the current scaling.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ScalingFlags {
    /// Environment (default production).
    pub environment: Option<String>,
    /// `--min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<i64>,
    /// `--max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<i64>,
    /// `--idle-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
    /// `--target-concurrency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<i64>,
    /// `--memory-mb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// `--cpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

/// `berth scale SITE [--min N --max N …]`: GET or PATCH /api/sites/{site}/scaling.
pub async fn scale(args: &ClientArgs, site: &str, flags: &ScalingFlags, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let changing = flags.min_instances.is_some()
        || flags.max_instances.is_some()
        || flags.idle_timeout_seconds.is_some()
        || flags.target_concurrency.is_some()
        || flags.memory_mb.is_some()
        || flags.cpus.is_some();
    let out: crate::service::ScalingConfig = if changing {
        client
            .send(
                client
                    .http
                    .patch(format!("{}/api/sites/{site}/scaling", client.base))
                    .json(flags),
            )
            .await?
    } else {
        let mut path = format!("/api/sites/{site}/scaling");
        if let Some(e) = &flags.environment {
            path.push_str(&format!("?{}", serde_urlencoded::to_string([("environment", e)])?));
        }
        client.get(&path).await?
    };
    if json {
        return print_json(&out);
    }
    let memory = out
        .memory_mb
        .map(|m| format!("{m} MiB"))
        .unwrap_or_else(|| "default".into());
    let cpus = out.cpus.map(|c| format!("{c}")).unwrap_or_else(|| "default".into());
    println!("{} / {}", out.site, out.environment);
    println!(
        "  instances          {} running (min {}, max {})",
        out.running_instances, out.min_instances, out.max_instances
    );
    println!("  idle timeout       {} s", out.idle_timeout_seconds);
    println!("  target concurrency {}", out.target_concurrency);
    println!("  memory / cpus      {memory} / {cpus}");
    Ok(())
}

/// What `berth metrics SITE` shows: the summary, or with flags the top paths, the status
/// codes, the error patterns or a timeline.
#[derive(Debug, Default, Clone)]
pub struct MetricsView {
    /// Environment (default production).
    pub environment: Option<String>,
    /// `--since`.
    pub since: Option<String>,
    /// `--until`.
    pub until: Option<String>,
    /// `--paths`.
    pub paths: bool,
    /// `--codes`.
    pub codes: bool,
    /// `--errors`.
    pub errors: bool,
    /// `--fields`.
    pub fields: bool,
    /// `--timeline RESOLUTION`.
    pub timeline: Option<String>,
    /// `--limit`.
    pub limit: Option<u32>,
}

/// `berth metrics SITE [--since 1h] [--paths] [--codes] [--errors] [--fields] [--timeline 1m]`: GET
/// /api/sites/{site}/metrics/….
pub async fn metrics(args: &ClientArgs, site: &str, view: &MetricsView, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("environment", &view.environment),
        ("since", &view.since),
        ("until", &view.until),
        ("resolution", &view.timeline),
    ] {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    if let Some(limit) = view.limit {
        query.push(("limit", limit.to_string()));
    }
    let kind = if view.timeline.is_some() {
        "timeline"
    } else if view.paths {
        "top-paths"
    } else if view.codes {
        "status-codes"
    } else if view.errors {
        "error-patterns"
    } else if view.fields {
        "fields"
    } else {
        "summary"
    };
    let path = format!(
        "/api/sites/{}/metrics/{kind}?{}",
        path_segment(site),
        serde_urlencoded::to_string(&query)?
    );
    let out: serde_json::Value = client.get(&path).await?;
    if json {
        return print_json(&out);
    }
    println!("{}", out["summary"].as_str().unwrap_or_default());
    match kind {
        "timeline" => {
            for p in out["points"].as_array().into_iter().flatten() {
                println!(
                    "  {}  {:>8} req  {:>6} 5xx  {:>10} B in  {:>10} B out  p95 {}",
                    p["start"].as_str().unwrap_or_default(),
                    p["requests"],
                    p["server_errors"],
                    p["bytes_in"],
                    p["bytes_out"],
                    p["p95_ms"].as_f64().map_or("-".into(), |ms| format!("{ms:.1} ms"))
                );
            }
        }
        "top-paths" => {
            for p in out["paths"].as_array().into_iter().flatten().chain([&out["other"]]) {
                println!(
                    "  {:>8} req  {:>6} 4xx  {:>6} 5xx  {}",
                    p["requests"],
                    p["client_errors"],
                    p["server_errors"],
                    p["template"].as_str().unwrap_or_default()
                );
            }
        }
        "status-codes" => {
            for c in out["codes"].as_array().into_iter().flatten() {
                println!("  {}  {:>8}", c["code"], c["requests"]);
            }
        }
        "error-patterns" => {
            for p in out["patterns"].as_array().into_iter().flatten() {
                let deployments: Vec<&str> = p["deployments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["deployment_id"].as_str())
                    .collect();
                println!(
                    "  {:>8} ×  {}\n            since {}, last {}, in {}",
                    p["events"],
                    p["template"].as_str().unwrap_or_default(),
                    p["first_seen"].as_str().unwrap_or_default(),
                    p["last_seen"].as_str().unwrap_or_default(),
                    deployments.join(", ")
                );
            }
            for p in out["server_errors"].as_array().into_iter().flatten() {
                println!(
                    "  {:>8} 5xx of {} req  {}",
                    p["server_errors"],
                    p["requests"],
                    p["template"].as_str().unwrap_or_default()
                );
            }
        }
        "fields" => {
            let list = |key: &str, name: &str| {
                out[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| format!("{} ({})", v[name].to_string().trim_matches('"'), v["requests"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!("  environments  {}", list("environments", "name"));
            println!("  status codes  {}", list("status_codes", "code"));
            for p in out["paths"].as_array().into_iter().flatten() {
                println!(
                    "  {:>8} req  {}",
                    p["requests"],
                    p["template"].as_str().unwrap_or_default()
                );
            }
            for d in out["deployments"].as_array().into_iter().flatten() {
                println!(
                    "  deployment {} ({}), served {} to {}",
                    d["deployment_id"].as_str().unwrap_or_default(),
                    d["environment"].as_str().unwrap_or_default(),
                    d["first_served"].as_str().unwrap_or_default(),
                    d["last_served"].as_str().unwrap_or_default()
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// `berth promote SITE DEPLOYMENT` and `berth rollback SITE`.
pub async fn switch(
    args: &ClientArgs,
    site: &str,
    deployment: Option<&str>,
    environment: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::SwitchOutput = match deployment {
        Some(id) => {
            let body = serde_json::json!({ "deployment_id": id, "environment": environment });
            client.post_json(&format!("/api/sites/{site}/promote"), &body).await?
        }
        None => {
            client
                .post_json(
                    &format!("/api/sites/{site}/rollback"),
                    &serde_json::json!({ "environment": environment }),
                )
                .await?
        }
    };
    if json {
        return print_json(&out);
    }
    println!(
        "{} now serves {} at {}",
        out.environment.name, out.deployment.id, out.environment.url
    );
    Ok(())
}

/// `berth env SITE [KEY=VALUE…] [--unset KEY…]`: lists (masked) or changes env vars.
pub async fn env(
    args: &ClientArgs,
    site: &str,
    assignments: &[String],
    unset: &[String],
    environment: Option<&str>,
    restart: bool,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::EnvVarsOutput = if assignments.is_empty() && unset.is_empty() {
        let q = environment.map(|e| format!("?environment={e}")).unwrap_or_default();
        client.get(&format!("/api/sites/{site}/env{q}")).await?
    } else {
        let mut vars = serde_json::Map::new();
        for a in assignments {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| ClientError(format!("'{a}' is not KEY=VALUE")))?;
            vars.insert(k.to_string(), Value::String(v.to_string()));
        }
        for k in unset {
            vars.insert(k.clone(), Value::Null);
        }
        let body = serde_json::json!({ "vars": vars, "environment": environment, "restart": restart });
        let req = client
            .http
            .patch(format!("{}/api/sites/{site}/env", client.base))
            .json(&body);
        client.send(req).await?
    };
    if json {
        return print_json(&out);
    }
    for (k, v) in &out.vars {
        println!("{k}={}  ({})", v.value, v.scope);
    }
    if let Some(r) = out.restarted.filter(|r| !r.is_empty()) {
        println!("restarted: {}", r.join(", "));
    }
    Ok(())
}

/// `berth cancel DEPLOYMENT`.
pub async fn cancel(args: &ClientArgs, id: &str, json: bool) -> anyhow::Result<()> {
    let out: DeploymentInfo = Client::new(args)?
        .post_json(&format!("/api/deployments/{id}/cancel"), &Value::Null)
        .await?;
    if json {
        print_json(&out)
    } else {
        println!("{} is {}", out.id, out.status.as_str());
        Ok(())
    }
}

/// `berth config`: shows providers' settings, sets or removes keys, or tests a connection.
pub async fn config(
    args: &ClientArgs,
    provider: Option<&str>,
    assignments: &[String],
    unset: &[String],
    test: bool,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let changing = !assignments.is_empty() || !unset.is_empty();
    let Some(provider) = provider else {
        if changing || test {
            return Err(ClientError("name the provider: berth config PROVIDER key=value".into()).into());
        }
        let out: crate::service::ConfigOutput = client.get("/api/config").await?;
        return if json {
            print_json(&out)
        } else {
            print_config(&out.providers)
        };
    };
    if changing {
        let mut config = serde_json::Map::new();
        for a in assignments {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| ClientError(format!("'{a}' is not key=value")))?;
            // `-`: a secret from stdin, never argv (which every local user can read).
            let value = if v == "-" {
                Value::String(read_secret_line(k)?)
            } else {
                // A value that is JSON (a number, true, an object) keeps its type.
                serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()))
            };
            config.insert(k.to_string(), value);
        }
        for k in unset {
            config.insert(k.clone(), Value::Null);
        }
        let req = client
            .http
            .patch(format!("{}/api/config/{provider}", client.base))
            .json(&serde_json::json!({ "config": config }));
        let out: crate::service::ProviderConfig = client.send(req).await?;
        if json && !test {
            return print_json(&out);
        }
        if !test {
            return print_config(std::slice::from_ref(&out));
        }
    }
    if test {
        let out: crate::service::TestConnectionOutput = client
            .post_json(&format!("/api/config/{provider}/test"), &Value::Null)
            .await?;
        if json {
            return print_json(&out);
        }
        println!(
            "{}: {} ({})",
            out.provider,
            if out.ok { "ok" } else { "FAILED" },
            out.detail
        );
        if !out.ok {
            return Err(ClientError(format!("{} connection test failed", out.provider)).into());
        }
        return Ok(());
    }
    let out: crate::service::ConfigOutput = client.get(&format!("/api/config/{provider}")).await?;
    if json {
        print_json(&out)
    } else {
        print_config(&out.providers)
    }
}

fn print_config(providers: &[crate::service::ProviderConfig]) -> anyhow::Result<()> {
    for p in providers {
        println!("{}  {}", p.provider, p.summary);
        for key in &p.keys {
            let value = p.config.get(&key.name).map_or("(default)".to_string(), |v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            println!("  {} = {value}    # {}", key.name, key.description);
        }
    }
    Ok(())
}

/// `berth mcp`: relays JSON-RPC lines between stdio and the server's streamable HTTP
/// endpoint, so MCP clients that only spawn processes reach the same tools.
pub async fn mcp_stdio(args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let endpoint = format!("{}/mcp", client.base);
    let state = Arc::new(tokio::sync::Mutex::new((None::<String>, None::<String>))); // (session id, protocol version)
    let stdout = Arc::new(tokio::sync::Mutex::new(std::io::stdout()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("berth mcp: ignoring a line that is not JSON: {e}");
                continue;
            }
        };
        let is_initialize = msg.get("method").and_then(Value::as_str) == Some("initialize");
        let (http, token, endpoint, state, stdout) = (
            client.http.clone(),
            client.token.clone(),
            endpoint.clone(),
            state.clone(),
            stdout.clone(),
        );
        let job = async move {
            let (session, version) = state.lock().await.clone();
            let mut req = http
                .post(&endpoint)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(msg.to_string());
            if let Some(s) = &session {
                req = req.header("mcp-session-id", s);
            }
            if let Some(v) = &version {
                req = req.header("mcp-protocol-version", v);
            }
            let id = msg.get("id").cloned();
            let emit = |v: Value| {
                let stdout = stdout.clone();
                async move {
                    let mut out = stdout.lock().await;
                    let _ = writeln!(out, "{v}");
                    let _ = out.flush();
                }
            };
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if let Some(id) = id {
                        emit(rpc_error(id, &format!("cannot reach berth at {endpoint}: {e}"))).await;
                    }
                    return;
                }
            };
            if let Some(s) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
                state.lock().await.0 = Some(s.to_string());
            }
            let status = resp.status();
            let is_sse = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("text/event-stream"));
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| format!("HTTP {status}"));
                if let Some(id) = id {
                    emit(rpc_error(id, &message)).await;
                }
                return;
            }
            let deliver = |v: Value| {
                if is_initialize && let Some(pv) = v.pointer("/result/protocolVersion").and_then(Value::as_str) {
                    let pv = pv.to_string();
                    let state = state.clone();
                    tokio::spawn(async move { state.lock().await.1 = Some(pv) });
                }
                emit(v)
            };
            if is_sse {
                read_sse(resp, |data| {
                    let parsed = serde_json::from_str::<Value>(&data).ok();
                    let deliver = &deliver;
                    async move {
                        if let Some(v) = parsed {
                            deliver(v).await;
                        }
                    }
                })
                .await;
            } else {
                let body = resp.bytes().await.unwrap_or_default();
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    deliver(v).await;
                }
            }
        };
        if is_initialize {
            job.await; // later requests need its session id and protocol version
        } else {
            tasks.spawn(job);
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Reads a server-sent-events body, calling `on_data` with each event's data.
async fn read_sse<F, Fut>(resp: reqwest::Response, mut on_data: F)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut data = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find('\n') {
            let line = buf[..pos].trim_end_matches('\r').to_string();
            buf.drain(..=pos);
            if line.is_empty() {
                if !data.is_empty() {
                    on_data(std::mem::take(&mut data)).await;
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
    }
}

fn rpc_error(id: Value, message: &str) -> Value {
    serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32000, "message": message } })
}

/// `berth repo create NAME`.
pub async fn repo_create(args: &ClientArgs, name: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::RepoOutput = client
        .post_json("/api/repos", &serde_json::json!({ "name": name }))
        .await?;
    if json {
        return print_json(&out);
    }
    println!("created repository {}: {}", out.repo, out.clone_url);
    println!("next: {}", out.next_steps);
    Ok(())
}

/// `berth repo list`: every page.
pub async fn repo_list(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut list: crate::service::RepoList = client.get("/api/repos?limit=200").await?;
    while let Some(cursor) = list.next_cursor.take() {
        let query = serde_urlencoded::to_string([("limit", "200"), ("cursor", cursor.as_str())])?;
        let page: crate::service::RepoList = client.get(&format!("/api/repos?{query}")).await?;
        list.repos.extend(page.repos);
        list.next_cursor = page.next_cursor;
    }
    if json {
        return print_json(&list);
    }
    if list.repos.is_empty() {
        println!("no repositories yet; create one with `berth repo create NAME`");
        return Ok(());
    }
    println!("{:<32} CLONE URL", "NAME");
    for r in &list.repos {
        println!("{:<32} {}", r.repo, r.clone_url);
    }
    Ok(())
}

/// `berth repo token NAME [--ttl SECONDS]`.
pub async fn repo_token(args: &ClientArgs, name: &str, ttl: Option<u64>, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::GitTokenOutput = client
        .post_json(
            &format!("/api/repos/{name}/tokens"),
            &serde_json::json!({ "ttl_seconds": ttl }),
        )
        .await?;
    if json {
        return print_json(&out);
    }
    println!("user:    {}", out.username);
    println!("token:   {} (shown once; expires {})", out.token, out.expires_at);
    println!("push:    git push {} HEAD:main", out.push_url);
    Ok(())
}

// ---------------------------------------------------------------- people and keys

/// `berth usage [--month YYYY-MM] [--site NAME]`: the org's usage in a month, every page.
pub async fn usage(args: &ClientArgs, month: Option<&str>, site: Option<&str>, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut filter = String::new();
    if let Some(month) = month {
        filter.push_str(&format!("&month={}", path_segment(month)));
    }
    if let Some(site) = site {
        filter.push_str(&format!("&site={}", path_segment(site)));
    }
    let mut cursor: Option<String> = None;
    let mut first: Option<crate::service::UsageOutput> = None;
    let mut sites = Vec::new();
    // Bounded: at most 50 pages of 200.
    for _ in 0..50 {
        let path = match &cursor {
            Some(c) => format!("/api/usage?limit=200{filter}&cursor={}", path_segment(c)),
            None => format!("/api/usage?limit=200{filter}"),
        };
        let mut page: crate::service::UsageOutput = client.get(&path).await?;
        sites.append(&mut page.sites);
        cursor = page.next_cursor.take();
        first.get_or_insert(page);
        if cursor.is_none() {
            break;
        }
    }
    let Some(mut out) = first else {
        return Ok(());
    };
    out.sites = sites;
    if json {
        return print_json(&out);
    }
    let t = &out.totals;
    println!("{} in {} ({} to {})", out.org, out.month, out.start, out.end);
    println!(
        "total: {} requests, {} MiB out, {} builds ({:.1} min), {:.2} instance hours",
        t.requests,
        t.bandwidth_bytes >> 20,
        t.builds,
        t.build_minutes,
        t.instance_hours
    );
    if out.sites.is_empty() {
        println!("no sites");
        return Ok(());
    }
    println!(
        "{:<30} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "SITE", "REQUESTS", "MIB OUT", "BUILDS", "BUILD MIN", "INST HRS"
    );
    for s in &out.sites {
        let name = if s.deleted {
            format!("{} (deleted)", s.site)
        } else {
            s.site.clone()
        };
        let u = &s.usage;
        println!(
            "{name:<30} {:>10} {:>10} {:>7} {:>10.1} {:>10.2}",
            u.requests,
            u.bandwidth_bytes >> 20,
            u.builds,
            u.build_minutes,
            u.instance_hours
        );
    }
    Ok(())
}

/// `berth whoami`: the org, user, role, scopes, restriction, expiry and allowed actions.
pub async fn whoami(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let me: crate::service::WhoAmI = client.get("/api/whoami").await?;
    if json {
        return print_json(&me);
    }
    println!("org:          {}", me.org);
    println!("key:          {}", me.key_name);
    if let Some(user) = &me.user {
        println!("user:         {user}");
    }
    println!("role:         {}", me.role);
    let scopes: Vec<&str> = me.scopes.iter().map(|s| s.as_str()).collect();
    println!("scopes:       {}", scopes.join(", "));
    println!(
        "sites:        {}",
        me.sites.as_ref().map_or("all".to_string(), |s| s.join(", "))
    );
    println!(
        "environments: {}",
        me.environments.as_ref().map_or("all".to_string(), |s| s.join(", "))
    );
    println!("expires:      {}", me.expires_at.as_deref().unwrap_or("never"));
    let actions: Vec<&str> = me.allowed_actions.iter().map(|a| a.as_str()).collect();
    println!("may:          {}", actions.join(", "));
    if let Some(orgs) = &me.orgs {
        let orgs: Vec<String> = orgs
            .iter()
            .map(|o| format!("{} ({}{})", o.name, o.role, if o.current { ", current" } else { "" }))
            .collect();
        println!("orgs:         {}", orgs.join(", "));
    }
    Ok(())
}

/// `berth orgs create NAME`: another org, owned by the caller.
pub async fn orgs_create(args: &ClientArgs, name: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::CreatedOrg = client
        .post_json("/api/orgs", &serde_json::json!({ "name": name }))
        .await?;
    if json {
        return print_json(&out);
    }
    println!("created org '{}' ({}); you own it", out.org.name, out.org.id);
    println!("{}", out.next_steps);
    Ok(())
}

/// A setting's value from the first line of stdin (`berth config smtp password=-`).
fn read_secret_line(key: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("{key} (it is shown as you type): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let value = line.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        bail!("no value for {key} on stdin: pipe it in, e.g. `printf %s \"$SECRET\" | berth config PROVIDER {key}=-`");
    }
    Ok(value)
}

/// A new user's password: `BERTH_PASSWORD`, else the first line of stdin (never argv,
/// which every local user can read).
fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("BERTH_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("password for the new user (at least 12 characters; it is shown as you type): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password: pipe it on stdin or set BERTH_PASSWORD");
    }
    Ok(password)
}

/// `berth users create --email E --role R`: adds a person to the org, making their
/// account (password from `BERTH_PASSWORD` or stdin) when they have none.
pub async fn users_create(
    args: &ClientArgs,
    email: &str,
    role: &str,
    existing: bool,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let password = if existing { None } else { Some(read_password()?) };
    let out: crate::service::MemberInfo = client
        .post_json(
            "/api/members",
            &serde_json::json!({ "email": email, "role": role, "password": password }),
        )
        .await?;
    if json {
        return print_json(&out);
    }
    println!("{} is now a member of the org ({})", out.email, out.role);
    Ok(())
}

/// `berth users list`.
pub async fn users_list(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::MemberList = client.get("/api/members").await?;
    if json {
        return print_json(&out);
    }
    println!("{:<40} {:<10} JOINED", "EMAIL", "ROLE");
    for m in &out.members {
        println!("{:<40} {:<10} {}", m.email, m.role.as_str(), m.joined_at);
    }
    Ok(())
}

/// `berth users role EMAIL ROLE`.
pub async fn users_role(args: &ClientArgs, email: &str, role: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let path = format!("/api/members/{}", crate::ui::session::urlencode(email));
    let out: crate::service::MemberInfo = client.patch_json(&path, &serde_json::json!({ "role": role })).await?;
    if json {
        return print_json(&out);
    }
    println!("{} is now {}", out.email, out.role);
    Ok(())
}

/// `berth users remove EMAIL`.
pub async fn users_remove(args: &ClientArgs, email: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let path = format!("/api/members/{}", crate::ui::session::urlencode(email));
    let out: crate::service::MemberInfo = client.delete(&path).await?;
    if json {
        return print_json(&out);
    }
    println!("removed {} from the org; their personal keys are revoked", out.email);
    Ok(())
}

/// `berth users invite EMAIL --role R`: prints the single-use link once.
pub async fn users_invite(
    args: &ClientArgs,
    email: &str,
    role: &str,
    days: Option<u32>,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let input = crate::service::InviteMemberInput {
        email: email.to_string(),
        role: role.to_string(),
        expires_in_days: days,
    };
    let out: crate::service::CreatedInvitation = client
        .post_json("/api/invitations", &serde_json::to_value(input)?)
        .await?;
    if json {
        return print_json(&out);
    }
    println!(
        "invited {} as {} (id {}, expires {})",
        out.invitation.email, out.invitation.role, out.invitation.id, out.invitation.expires_at
    );
    match &out.email {
        crate::service::InvitationEmail::Sent => {
            println!(
                "emailed the link to {}; here it is once more, in case:",
                out.invitation.email
            )
        }
        crate::service::InvitationEmail::NotConfigured => {
            println!(
                "give them this link (no smtp settings, so berth sent no email; it works once and is not shown again):"
            )
        }
        crate::service::InvitationEmail::Failed { reason } => {
            println!("emailing the link failed: {reason}");
            println!("give them this link yourself (it works once and is not shown again):");
        }
    }
    println!("    {}", out.link);
    Ok(())
}

/// `berth users invitations`.
pub async fn users_invitations(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    // Every page, one request each (at most 200 invitations per page).
    let client = Client::new(args)?;
    let mut out: crate::service::InvitationList = client.get("/api/invitations?limit=200").await?;
    while let Some(cursor) = out.next_cursor.take() {
        let query = serde_urlencoded::to_string([("limit", "200"), ("cursor", cursor.as_str())])?;
        let page: crate::service::InvitationList = client.get(&format!("/api/invitations?{query}")).await?;
        out.invitations.extend(page.invitations);
        out.next_cursor = page.next_cursor;
    }
    if json {
        return print_json(&out);
    }
    println!("{:<36} {:<32} {:<10} {:<9} EXPIRES", "ID", "EMAIL", "ROLE", "STATUS");
    for i in &out.invitations {
        println!(
            "{:<36} {:<32} {:<10} {:<9} {}",
            i.id,
            i.email,
            i.role.as_str(),
            i.status.as_str(),
            i.expires_at
        );
    }
    Ok(())
}

/// `berth users revoke-invitation ID`.
pub async fn users_revoke_invitation(args: &ClientArgs, id: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::InvitationInfo = client
        .delete(&format!("/api/invitations/{}", crate::ui::session::urlencode(id)))
        .await?;
    if json {
        return print_json(&out);
    }
    println!(
        "revoked the invitation of {} ({}): its link no longer works",
        out.email, out.id
    );
    Ok(())
}

/// `berth keys create`: prints the token once.
pub async fn keys_create(
    args: &ClientArgs,
    input: &crate::service::CreateApiKeyInput,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::CreatedApiKey = client.post_json("/api/keys", &serde_json::to_value(input)?).await?;
    if json {
        return print_json(&out);
    }
    let scopes: Vec<&str> = out.key.scopes.iter().map(|s| s.as_str()).collect();
    println!("created {} key '{}' ({})", out.key.kind, out.key.name, out.key.id);
    println!("scopes:  {}", scopes.join(", "));
    if let Some(sites) = &out.key.sites {
        println!("sites:   {}", sites.join(", "));
    }
    println!("expires: {}", out.key.expires_at.as_deref().unwrap_or("never"));
    println!("token (shown once, keep it safe):\n\n    {}\n", out.token);
    Ok(())
}

/// `berth keys list`.
pub async fn keys_list(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::ApiKeyList = client.get("/api/keys").await?;
    if json {
        return print_json(&out);
    }
    println!(
        "{:<34} {:<20} {:<9} {:<8} {:<26} LAST USED",
        "ID", "NAME", "KIND", "STATUS", "EXPIRES"
    );
    for k in &out.keys {
        println!(
            "{:<34} {:<20} {:<9} {:<8} {:<26} {}",
            k.id,
            k.name,
            k.kind,
            k.status,
            k.expires_at.as_deref().unwrap_or("never"),
            k.last_used_at.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `berth keys revoke ID`.
pub async fn keys_revoke(args: &ClientArgs, id: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::ApiKeyInfo = client
        .delete(&format!("/api/keys/{}", crate::ui::session::urlencode(id)))
        .await?;
    if json {
        return print_json(&out);
    }
    println!("revoked key '{}' ({}); it is refused from now on", out.name, out.id);
    Ok(())
}

/// `berth agents list`: connected applications and whether agents are frozen.
pub async fn agents_list(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::ConnectedAppList = client.get("/api/connected-apps").await?;
    if json {
        return print_json(&out);
    }
    if out.frozen {
        println!("agents are frozen: no application can connect (berth agents unfreeze)");
    }
    println!(
        "{:<34} {:<20} {:<20} {:<24} {:<5} LAST USED",
        "ID", "CLIENT", "VERIFIED", "USER", "PROD"
    );
    for a in &out.apps {
        println!(
            "{:<34} {:<20} {:<20} {:<24} {:<5} {}",
            a.id,
            a.client_name,
            a.verified_host,
            a.user.as_deref().unwrap_or("-"),
            if a.production { "yes" } else { "no" },
            a.last_used_at.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `berth audit [--action A] [--actor-kind K] [--actor X] [--outcome O] [--since T]
/// [--until T] [--limit N] [--cursor C]`: one page, and the command for the next.
pub async fn audit(args: &ClientArgs, filters: &crate::service::ListAuditInput, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let pairs: Vec<(&str, String)> = [
        ("action", filters.action.clone()),
        ("actor_kind", filters.actor_kind.clone()),
        ("actor", filters.actor.clone()),
        ("outcome", filters.outcome.clone()),
        ("since", filters.since.clone()),
        ("until", filters.until.clone()),
        ("limit", filters.limit.map(|l| l.to_string())),
        ("cursor", filters.cursor.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let query = serde_urlencoded::to_string(&pairs)?;
    let out: crate::service::AuditPage = client.get(&format!("/api/audit?{query}")).await?;
    if json {
        return print_json(&out);
    }
    if out.entries.is_empty() {
        println!("no audit entries match");
        return Ok(());
    }
    println!(
        "{:<24} {:<14} {:<32} {:<28} {:<6} ARGUMENTS",
        "TIME", "KIND", "WHO", "ACTION", "OUTCOME"
    );
    for e in &out.entries {
        let who = match &e.actor.email {
            Some(email) if *email != e.actor.name => format!("{} ({email})", e.actor.name),
            _ => e.actor.name.clone(),
        };
        println!(
            "{:<24} {:<14} {:<32} {:<28} {:<6} {}",
            e.time,
            e.actor.kind.as_str(),
            who,
            e.action,
            e.outcome.as_str(),
            e.arguments
        );
        if let Some(error) = &e.error {
            println!("{:<24} error: {error}", "");
        }
    }
    if let Some(cursor) = &out.next_cursor {
        println!("older entries: add --cursor {cursor} (with the same filters)");
    }
    Ok(())
}

/// `berth agents revoke ID`.
pub async fn agents_revoke(args: &ClientArgs, id: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::ConnectedApp = client
        .delete(&format!("/api/connected-apps/{}", crate::ui::session::urlencode(id)))
        .await?;
    if json {
        return print_json(&out);
    }
    println!(
        "revoked '{}' ({}); its tokens are refused from now on",
        out.client_name, out.id
    );
    Ok(())
}

/// `berth agents freeze` / `unfreeze`.
pub async fn agents_freeze(args: &ClientArgs, frozen: bool, json: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let out: crate::service::FreezeAgentsOutput = client
        .post_json("/api/agents/freeze", &serde_json::json!({ "frozen": frozen }))
        .await?;
    if json {
        return print_json(&out);
    }
    if out.frozen {
        println!(
            "agents are frozen: {} connected application(s) revoked; new ones are refused until 'berth agents unfreeze'",
            out.revoked_grants
        );
    } else {
        println!("agents are not frozen: applications may connect again (revoked ones connect anew)");
    }
    Ok(())
}

/// The site name `berth deploy DIR` uses without `--site`: the folder's name made a DNS
/// label ("My_App" → "my-app"), said once so the user knows where it deploys.
pub fn site_name_for(dir: &Path, json: bool) -> anyhow::Result<String> {
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let folder = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(name) = site_label(&folder) else {
        bail!(
            "cannot make a site name from the folder '{}'; pass one with --site NAME (lowercase letters, digits and '-')",
            real.display()
        );
    };
    if !json {
        eprintln!("site: {name} (the folder's name; --site NAME picks another)");
    }
    Ok(name)
}

/// The site name a git URL suggests (its last path segment without `.git`).
pub fn site_name_for_repo(url: &str, json: bool) -> anyhow::Result<String> {
    let last = url
        .trim()
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default();
    let Some(name) = site_label(last.strip_suffix(".git").unwrap_or(last)) else {
        bail!(
            "cannot make a site name from the repository '{url}'; pass one with --site NAME (lowercase letters, digits and '-')"
        );
    };
    if !json {
        eprintln!("site: {name} (the repository's name; --site NAME picks another)");
    }
    Ok(name)
}

/// A site name made of a folder's or repository's name: lowercase letters and digits,
/// anything else as one '-'; `None` when nothing valid is left.
fn site_label(raw: &str) -> Option<String> {
    let mut name = String::new();
    for c in raw.chars() {
        match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => name.push(c),
            _ if !name.ends_with('-') => name.push('-'),
            _ => {}
        }
    }
    let name: String = name.trim_matches('-').chars().take(63).collect();
    let name = name.trim_end_matches('-').to_string();
    crate::model::validate_site_name(&name).is_ok().then_some(name)
}

#[cfg(test)]
mod site_name_tests {
    use super::site_name_for;
    use std::path::Path;

    #[test]
    fn folder_names_become_dns_labels() {
        let root = tempfile::tempdir().unwrap();
        for (folder, want) in [
            ("my-app", "my-app"),
            ("My_App.v2", "my-app-v2"),
            ("--Shop  Front--", "shop-front"),
            ("2048", "2048"),
        ] {
            let dir = root.path().join(folder);
            std::fs::create_dir(&dir).unwrap();
            assert_eq!(site_name_for(&dir, true).unwrap(), want);
        }
        let dir = root.path().join("___");
        std::fs::create_dir(&dir).unwrap();
        let err = site_name_for(&dir, true).unwrap_err().to_string();
        assert!(err.contains("--site NAME"), "{err}");
        assert!(site_name_for(Path::new("/"), true).is_err());
    }

    #[test]
    fn repository_urls_name_their_site_and_folders_are_not_urls() {
        use super::{is_git_url, site_name_for_repo};
        for (url, want) in [
            ("https://github.com/vercel/Next.js-Example.git", "next-js-example"),
            ("https://github.com/acme/shop/", "shop"),
            ("git@github.com:acme/shop-api.git", "shop-api"),
            ("ssh://git@host:22/srv/My_Repo", "my-repo"),
            ("file:///srv/git/blog.git", "blog"),
        ] {
            assert!(is_git_url(url), "{url}");
            assert_eq!(site_name_for_repo(url, true).unwrap(), want, "{url}");
        }
        for not_url in [".", "./my-app", "/srv/app", "git@nohost", "C:/app"] {
            assert!(!is_git_url(not_url), "{not_url}");
        }
        let err = site_name_for_repo("https://example.com/___.git", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--site NAME"), "{err}");
    }
}

/// The service's messages name MCP tools (`HOSTING_LIST_DEPLOYMENTS {"site": "shop"}`);
/// on the command line the same advice reads as the command that does it
/// (`berth deployments shop`). Tools without a command keep their name.
pub fn in_cli_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("HOSTING_") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(tail.len());
        let tool = &tail[..name_len];
        let after = &tail[name_len..];
        // The tool's arguments, when they follow as one JSON object.
        let mut args = Value::Null;
        let mut after_args = None;
        if let Some(obj) = after.strip_prefix(' ').filter(|a| a.starts_with('{'))
            && let Some(end) = json_object_end(obj)
        {
            // Placeholders ("…") make it no JSON: the command then names what to fill in.
            args = serde_json::from_str::<Value>(&obj[..end]).unwrap_or(Value::Null);
            after_args = Some(&obj[end..]);
        }
        match cli_command(tool, &args) {
            Some(cmd) => {
                out.push('`');
                out.push_str(&cmd);
                out.push('`');
                rest = after_args.unwrap_or(after);
            }
            None => {
                out.push_str(tool);
                rest = &tail[name_len..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Length of the JSON object at the start of `text`, braces matched outside strings.
fn json_object_end(text: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The command that does what `tool` does, with the arguments known from `args`.
fn cli_command(tool: &str, args: &Value) -> Option<String> {
    let arg = |key: &str, placeholder: &str| {
        args.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| placeholder.to_string())
    };
    let env_flag = args
        .get("environment")
        .and_then(Value::as_str)
        .map(|e| format!(" --environment {e}"))
        .unwrap_or_default();
    Some(match tool {
        "HOSTING_LIST_SITES" => "berth sites".into(),
        "HOSTING_GET_SITE" => format!("berth site {}", arg("site", "SITE")),
        "HOSTING_DELETE_SITE" => format!("berth delete {} --yes", arg("site", "SITE")),
        "HOSTING_LIST_DEPLOYMENTS" => format!("berth deployments {}", arg("site", "SITE")),
        "HOSTING_GET_DEPLOYMENT" | "HOSTING_GET_DEPLOYMENT_LOGS" => {
            format!("berth logs {}", arg("deployment_id", "DEPLOYMENT_ID"))
        }
        "HOSTING_CANCEL_DEPLOYMENT" => format!("berth cancel {}", arg("deployment_id", "DEPLOYMENT_ID")),
        "HOSTING_LIST_ENVIRONMENTS" => format!("berth environments {}", arg("site", "SITE")),
        "HOSTING_LIST_DOMAINS" => format!("berth domains {}", arg("site", "SITE")),
        "HOSTING_ADD_DOMAIN" => format!("berth domains add {} {}", arg("site", "SITE"), arg("domain", "DOMAIN")),
        "HOSTING_VALIDATE_DOMAIN" => format!(
            "berth domains check {} {}",
            arg("site", "SITE"),
            arg("domain", "DOMAIN")
        ),
        "HOSTING_REMOVE_DOMAIN" => format!(
            "berth domains remove {} {} --yes",
            arg("site", "SITE"),
            arg("domain", "DOMAIN")
        ),
        "HOSTING_GET_USAGE" => "berth usage".into(),
        "HOSTING_LIST_RESOURCES" => "berth resources list".into(),
        "HOSTING_GET_RESOURCE" => format!("berth resources get {}", arg("name", "NAME")),
        "HOSTING_CREATE_RESOURCE" => format!("berth resources create {}", arg("name", "NAME")),
        "HOSTING_DELETE_RESOURCE" => format!("berth resources delete {} --yes", arg("name", "NAME")),
        "HOSTING_ROLLBACK" => format!("berth rollback {}{env_flag}", arg("site", "SITE")),
        "HOSTING_PROMOTE" => format!(
            "berth promote {} {}{env_flag}",
            arg("site", "SITE"),
            arg("deployment_id", "DEPLOYMENT_ID")
        ),
        "HOSTING_GET_ENV_VARS" => format!("berth env {}{env_flag}", arg("site", "SITE")),
        "HOSTING_SET_ENV_VARS" => format!("berth env {} KEY=VALUE{env_flag}", arg("site", "SITE")),
        "HOSTING_LIST_REPOS" => "berth repo list".into(),
        "HOSTING_CREATE_REPO" => format!("berth repo create {}", arg("name", "NAME")),
        "HOSTING_GET_GIT_TOKEN" => format!("berth repo token {}", arg("repo", "REPO")),
        "HOSTING_GET_CONFIG" => "berth config".into(),
        "HOSTING_SET_CONFIG" => format!("berth config {} KEY=VALUE", arg("provider", "PROVIDER")),
        "HOSTING_TEST_CONNECTION" => format!("berth config {} --test", arg("provider", "PROVIDER")),
        _ => return None,
    })
}

#[cfg(test)]
mod cli_words_tests {
    use super::in_cli_words;

    #[test]
    fn tool_advice_reads_as_commands() {
        assert_eq!(
            in_cli_words(
                r#"site 'shop' has no deployment 'x'; list them with HOSTING_LIST_DEPLOYMENTS {"site": "shop"}"#
            ),
            "site 'shop' has no deployment 'x'; list them with `berth deployments shop`"
        );
        assert_eq!(
            in_cli_words(
                r#"see HOSTING_GET_DEPLOYMENT_LOGS {"deployment_id": "dpl_1"} and HOSTING_ROLLBACK {"site": "a", "environment": "staging"}."#
            ),
            "see `berth logs dpl_1` and `berth rollback a --environment staging`."
        );
        // Without arguments (or with placeholders that are not JSON) the command says what to fill in.
        assert_eq!(
            in_cli_words("list its deployments with HOSTING_LIST_DEPLOYMENTS {\"site\": …}"),
            "list its deployments with `berth deployments SITE`"
        );
        // A tool with no command keeps its name; text without tools is unchanged.
        assert_eq!(
            in_cli_words("call HOSTING_SET_SCALING_CONFIG first"),
            "call HOSTING_SET_SCALING_CONFIG first"
        );
        assert_eq!(in_cli_words("plain {text}"), "plain {text}");
    }
}
