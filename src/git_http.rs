//! The internal git server's HTTP face: smart HTTP at `/git/<org>/<repo>.git/…` by running
//! `git http-backend` as a CGI per request (HTTP basic auth with a push token), and the
//! loopback callback its post-receive hook makes so a push deploys and the pusher sees
//! the deployment in `git push` output. Business rules stay in `service::git`.

use std::collections::BTreeMap;
use std::process::Stdio;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::service::Service;
use crate::service::git::{GitAuthError, GitGrant, RefUpdate};
use crate::throttle::{Subject, retry_after_secs};

/// Env var naming the callback URL, set for the post-receive hook.
const HOOK_URL_ENV: &str = "BERTH_GIT_HOOK_URL";
/// Env var holding the push's one-time callback grant.
const HOOK_TOKEN_ENV: &str = "BERTH_GIT_HOOK_TOKEN";
/// Path of the post-receive callback.
const HOOK_PATH: &str = "/hooks/git-push";

/// Routes of the git server and its hook callback (they do their own authentication).
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/git/{org}/{*rest}", any(git_request))
        .route(HOOK_PATH, post(hook_callback))
        .route("/hooks/github", post(github_webhook))
        .with_state(service)
}

/// The paths under `/git/<org>/<repo>.git/` git's smart HTTP protocol uses.
const SMART_HTTP_ENDPOINTS: [&str; 3] = ["info/refs", "git-upload-pack", "git-receive-pack"];

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// The token of an `Authorization: Basic` header (the password; the user name is free).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}

async fn git_request(State(s): State<Service>, Path((org, rest)): Path<(String, String)>, req: Request) -> Response {
    let (repo_segment, tail) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let Some(repo) = repo_segment.strip_suffix(".git") else {
        return plain(
            StatusCode::NOT_FOUND,
            "git repositories are served at /git/<org>/<repo>.git",
        );
    };
    // Only the smart-HTTP endpoints exist: no other path (`..`, decoded slashes, NULs,
    // object files) ever reaches git http-backend.
    if !SMART_HTTP_ENDPOINTS.contains(&tail) {
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "no such git endpoint; /git/<org>/<repo>.git/ serves {}",
                SMART_HTTP_ENDPOINTS.join(", ")
            ),
        );
    }
    if org.len() > 100 || org.chars().any(char::is_control) {
        return plain(StatusCode::BAD_REQUEST, "not an org name");
    }
    let Some(token) = basic_password(req.headers()) else {
        let mut resp = plain(
            StatusCode::UNAUTHORIZED,
            format!(
                "credentials required: use the token from HOSTING_GET_GIT_TOKEN {{\"repo\": \"{repo}\"}} as the password"
            ),
        );
        resp.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"berth git\""),
        );
        return resp;
    };
    // Token guesses back off per client and per repository.
    let who = [
        Subject::address(crate::api::client_ip(&req)),
        Subject::Account(format!("{org}/{repo}")),
    ];
    if let Err(wait) = s.platform.auth_throttle.check(&who) {
        let mut resp = plain(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed attempts with tokens for {org}/{repo}.git; try again in {} s",
                retry_after_secs(wait)
            ),
        );
        resp.headers_mut().insert("retry-after", retry_after_secs(wait).into());
        return resp;
    }
    let grant = match s.authorize_git(&org, repo, &token).await {
        Ok(grant) => grant,
        Err(GitAuthError::BadName(message)) => return plain(StatusCode::BAD_REQUEST, message),
        Err(GitAuthError::Forbidden(message)) => {
            s.platform.auth_throttle.failure(&who);
            tracing::info!(org = %org, repo = %repo, "git request refused: bad token");
            return plain(StatusCode::FORBIDDEN, message);
        }
        Err(GitAuthError::Internal(err)) => {
            tracing::error!(error = %err, "git request: store error");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server log has details",
            );
        }
    };
    let is_push = tail == "git-receive-pack";
    let limit = s.platform.config.max_push_bytes;
    let too_large = || {
        let mut resp = plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the push is over the {limit}-byte limit (BERTH_MAX_PUSH_BYTES); leave build output and large binaries out of the repository"
            ),
        );
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        resp
    };
    if req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    // Buffered whole so an oversized push is refused before git sees any of it.
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return too_large();
    };
    match run_backend(&s, &grant, &parts, tail, body, is_push).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "git http-backend failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server log has details",
            )
        }
    }
}

/// Runs `git http-backend` for one request and streams its CGI response back.
async fn run_backend(
    s: &Service,
    grant: &GitGrant,
    parts: &axum::http::request::Parts,
    tail: &str,
    body: bytes::Bytes,
    is_push: bool,
) -> anyhow::Result<Response> {
    let git = &s.platform.git;
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", git.org_root(&grant.org_id))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", git.org_root(&grant.org_id))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{}.git/{tail}", grant.repo_name))
        .env("REMOTE_USER", "berth")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "core.hooksPath")
        .env("GIT_CONFIG_VALUE_0", git.hooks_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = parts.headers.get(header).and_then(|v| v.to_str().ok()) {
            cmd.env(var, v);
        }
    }
    let hook_grant = if is_push {
        let token = git.issue_hook_grant(grant);
        cmd.env(HOOK_URL_ENV, format!("http://{}{HOOK_PATH}", git.api_addr()))
            .env(HOOK_TOKEN_ENV, &token);
        Some((
            token,
            list_branches(&git.org_root(&grant.org_id), &grant.repo_name).await?,
        ))
    } else {
        None
    };
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let mut stderr = child.stderr.take().expect("piped");
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!(line, "git http-backend");
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).await? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
            status = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.trim()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
    // After the response: reap git and, if the hook never reported this push (a hook
    // that could not reach us), act on the ref changes ourselves.
    let service = s.clone();
    let grant = grant.clone();
    let (reaped_tx, reaped_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = reaped_rx.await;
        let _ = child.wait().await;
        if let Some((token, before)) = hook_grant
            && service.platform.git.take_hook_grant(&token).is_some()
        {
            let root = service.platform.git.org_root(&grant.org_id);
            match list_branches(&root, &grant.repo_name).await {
                Ok(after) => {
                    let updates = diff_refs(&before, &after);
                    if !updates.is_empty() {
                        tracing::warn!(repo = %grant.repo_name, "the post-receive hook did not report; applying the push");
                        if let Err(err) = service.on_internal_push(&grant, &updates).await {
                            tracing::error!(error = %err, "applying a push failed");
                        }
                    }
                }
                Err(err) => tracing::error!(error = %format!("{err:#}"), "reading refs after a push failed"),
            }
        }
    });
    let stream = futures::stream::unfold((stdout, Some(reaped_tx)), |(mut out, mut done)| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match out.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if let Some(tx) = done.take() {
                    let _ = tx.send(());
                }
                None
            }
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (out, done)))
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Branch heads of a bare repository: ref name → SHA.
async fn list_branches(org_root: &std::path::Path, repo: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let out = Command::new("git")
        .args(["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads"])
        .current_dir(org_root.join(format!("{repo}.git")))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "git for-each-ref failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(sha, name)| (name.to_string(), sha.to_string()))
        .collect())
}

/// The ref updates that turn `before` into `after`.
fn diff_refs(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<RefUpdate> {
    const ZERO: &str = "0000000000000000000000000000000000000000";
    let mut updates = Vec::new();
    for (name, new) in after {
        match before.get(name) {
            Some(old) if old == new => {}
            old => updates.push(RefUpdate {
                old: old.cloned().unwrap_or_else(|| ZERO.into()),
                new: new.clone(),
                refname: name.clone(),
            }),
        }
    }
    for (name, old) in before {
        if !after.contains_key(name) {
            updates.push(RefUpdate {
                old: old.clone(),
                new: ZERO.into(),
                refname: name.clone(),
            });
        }
    }
    updates
}

/// What the post-receive hook reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct HookReport {
    /// The push's one-time grant.
    pub token: String,
    /// The refs it changed.
    pub updates: Vec<RefUpdate>,
}

/// The callback's answer: lines the hook prints (git shows them as `remote:` lines).
#[derive(Debug, Serialize, Deserialize)]
pub struct HookAnswer {
    /// Lines for the pusher.
    pub lines: Vec<String>,
}

async fn hook_callback(State(s): State<Service>, body: axum::body::Bytes) -> Response {
    let Ok(report) = serde_json::from_slice::<HookReport>(&body) else {
        return plain(StatusCode::BAD_REQUEST, "expected {token, updates}");
    };
    let Some(grant) = s.platform.git.take_hook_grant(&report.token) else {
        return plain(StatusCode::FORBIDDEN, "unknown or used hook grant");
    };
    match s.on_internal_push(&grant, &report.updates).await {
        Ok(lines) => axum::Json(HookAnswer { lines }).into_response(),
        Err(err) => {
            let message = err.envelope().error.message;
            axum::Json(HookAnswer {
                lines: vec![format!("could not deploy the push: {message}")],
            })
            .into_response()
        }
    }
}

/// `POST /hooks/github`: signed GitHub deliveries (no API key; the signature decides).
/// The body is handed over unread: the service decides how much of it to take.
async fn github_webhook(State(s): State<Service>, headers: HeaderMap, body: Body) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let hook_headers = crate::service::github::WebhookHeaders {
        event: header("x-github-event"),
        delivery: header("x-github-delivery"),
        signature: header("x-hub-signature-256"),
    };
    let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
    let out = s.github_webhook(&hook_headers, length, body.into_data_stream()).await;
    let refused = out.status.is_client_error() || out.status.is_server_error();
    let mut resp = (out.status, axum::Json(out.body)).into_response();
    if refused {
        // A refused body may be unread: the connection cannot carry another request.
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    resp
}

/// `berth git-hook post-receive`: run by git inside a push; reads `old new ref` lines
/// from stdin, reports them to the server and prints what it did (shown to the pusher).
pub async fn run_post_receive_hook() -> anyhow::Result<()> {
    let (Ok(url), Ok(token)) = (std::env::var(HOOK_URL_ENV), std::env::var(HOOK_TOKEN_ENV)) else {
        // Not a push berth received (e.g. run by hand): nothing to report.
        return Ok(());
    };
    let mut input = String::new();
    tokio::io::stdin().read_to_string(&mut input).await?;
    let updates: Vec<RefUpdate> = input
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(RefUpdate {
                old: it.next()?.to_string(),
                new: it.next()?.to_string(),
                refname: it.next()?.to_string(),
            })
        })
        .collect();
    let http = reqwest::Client::builder().no_proxy().build()?;
    let answer = http
        .post(&url)
        .json(&HookReport { token, updates })
        .send()
        .await
        .and_then(|r| r.error_for_status());
    match answer {
        Ok(resp) => match resp.json::<HookAnswer>().await {
            Ok(answer) => {
                for line in answer.lines {
                    println!("berth: {line}");
                }
            }
            Err(err) => println!("berth: the server's answer was unreadable: {err}"),
        },
        Err(err) => println!("berth: could not report the push (it will still deploy): {err}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_password() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_password(&h), None);
        h.insert("authorization", HeaderValue::from_static("Basic YmVydGg6c2VjcmV0")); // berth:secret
        assert_eq!(basic_password(&h).as_deref(), Some("secret"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_password(&h), None);
    }

    #[test]
    fn ref_diffs() {
        let before: BTreeMap<String, String> =
            [("refs/heads/a".into(), "1".into()), ("refs/heads/b".into(), "2".into())].into();
        let after: BTreeMap<String, String> =
            [("refs/heads/a".into(), "3".into()), ("refs/heads/c".into(), "4".into())].into();
        let d = diff_refs(&before, &after);
        assert_eq!(d.len(), 3);
        assert!(
            d.iter()
                .any(|u| u.refname == "refs/heads/a" && u.old == "1" && u.new == "3")
        );
        assert!(
            d.iter()
                .any(|u| u.refname == "refs/heads/c" && crate::service::git::is_zero_sha(&u.old))
        );
        assert!(d.iter().any(|u| u.refname == "refs/heads/b" && u.is_delete()));
    }
}
