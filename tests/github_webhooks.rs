//! GitHub push to deploy: signed deliveries shaped as GitHub documents them (headers
//! included) to a running berth, and `fake_github`, a local stand-in for GitHub's REST API
//! that issues installation tokens (checking the app JWT) and records commit statuses.
//! The repository itself is a local bare repo the payload's `clone_url` points at.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use common::*;
use hmac::Mac;
use serde_json::{Value, json};

const SECRET: &str = "webhook-secret-for-tests";
const APP_ID: &str = "424242";
const INSTALLATION: &str = "99";
const INSTALLATION_TOKEN: &str = "ghs_fake_installation_token";

/// What `fake_github` saw.
#[derive(Default)]
struct Recorded {
    /// Installation tokens issued (after a valid app JWT).
    tokens_issued: usize,
    /// Token requests refused.
    tokens_refused: usize,
    /// (repo, sha, state, target_url, context)
    statuses: Vec<(String, String, String, String, String)>,
    /// Status posts without the installation token.
    statuses_refused: usize,
    /// Git requests carrying the installation token.
    git_authorized: usize,
    /// Git requests without it.
    git_refused: usize,
}

struct FakeGitHub {
    addr: SocketAddr,
    seen: Arc<Mutex<Recorded>>,
    /// Folder whose bare repositories it serves at /git/<owner>/<repo>.git (git's "dumb"
    /// HTTP protocol: plain files), to clients presenting the installation token.
    git_root: Arc<Mutex<Option<std::path::PathBuf>>>,
}

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Recorded>>,
    public_key: String,
    git_root: Arc<Mutex<Option<std::path::PathBuf>>>,
}

/// A local fake of GitHub's REST API, on port 0.
async fn fake_github(public_key: String) -> FakeGitHub {
    let seen = Arc::new(Mutex::new(Recorded::default()));
    let git_root = Arc::new(Mutex::new(None));
    let state = FakeState {
        seen: seen.clone(),
        public_key,
        git_root: git_root.clone(),
    };
    let app = axum::Router::new()
        .route("/app/installations/{id}/access_tokens", post(fake_access_token))
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(fake_status))
        .route("/user", get(|| async { Json(json!({ "login": "octo" })) }))
        .route("/git/{*path}", get(fake_git_file))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeGitHub { addr, seen, git_root }
}

async fn fake_git_file(
    State(st): State<FakeState>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Vec<u8>, (StatusCode, [(&'static str, &'static str); 1])> {
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{INSTALLATION_TOKEN}"))
    );
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let unauthorized = (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Basic realm=\"GitHub\"")],
    );
    if auth != Some(want.as_str()) {
        st.seen.lock().unwrap().git_refused += 1;
        return Err(unauthorized);
    }
    st.seen.lock().unwrap().git_authorized += 1;
    let root = st.git_root.lock().unwrap().clone().ok_or(unauthorized)?;
    let not_found = (StatusCode::NOT_FOUND, [("x-fake", "github")]);
    if path.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return Err(not_found);
    }
    std::fs::read(root.join(path)).map_err(|_| not_found)
}

async fn fake_access_token(
    State(st): State<FakeState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(st.public_key.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[APP_ID]);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let ok = id == INSTALLATION && jsonwebtoken::decode::<Value>(jwt, &key, &validation).is_ok();
    let mut seen = st.seen.lock().unwrap();
    if !ok {
        seen.tokens_refused += 1;
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "A JSON web token could not be decoded" })),
        );
    }
    seen.tokens_issued += 1;
    (
        StatusCode::CREATED,
        Json(
            json!({ "token": INSTALLATION_TOKEN, "expires_at": "2099-01-01T00:00:00Z", "permissions": { "statuses": "write" } }),
        ),
    )
}

async fn fake_status(
    State(st): State<FakeState>,
    UrlPath((owner, repo, sha)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut seen = st.seen.lock().unwrap();
    if auth != format!("Bearer {INSTALLATION_TOKEN}") {
        seen.statuses_refused += 1;
        return StatusCode::UNAUTHORIZED;
    }
    seen.statuses.push((
        format!("{owner}/{repo}"),
        sha,
        body["state"].as_str().unwrap_or_default().to_string(),
        body["target_url"].as_str().unwrap_or_default().to_string(),
        body["context"].as_str().unwrap_or_default().to_string(),
    ));
    StatusCode::CREATED
}

/// An RSA key pair in the forms GitHub hands out (PKCS#1 private key) and verifies with.
fn rsa_keys(dir: &Path) -> (String, String) {
    let key = dir.join("app.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let public = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success());
    (
        std::fs::read_to_string(&key).unwrap(),
        String::from_utf8(public.stdout).unwrap(),
    )
}

/// A server configured for GitHub, a fake GitHub, and a site deploying from a local
/// "GitHub" repository (`octo/web`) whose first commit is live.
struct Setup {
    server: TestServer,
    fake: FakeGitHub,
    work: tempfile::TempDir,
    bare: tempfile::TempDir,
    _keys: tempfile::TempDir,
}

impl Setup {
    async fn new(previews: bool) -> Self {
        let server = TestServer::start().await;
        let keys = tempfile::tempdir().unwrap();
        let (private_key, public_key) = rsa_keys(keys.path());
        let fake = fake_github(public_key).await;
        let (status, body) = server
            .patch(
                "/api/config/github",
                &json!({ "config": {
                    "webhook_secret": SECRET,
                    "api_url": format!("http://{}", fake.addr),
                    "app_id": APP_ID,
                    "private_key": private_key,
                    "installation_id": INSTALLATION,
                }}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let work = app(&[("index.html", "v1")]);
        git_init(work.path());
        let bare = tempfile::tempdir().unwrap();
        git(bare.path(), &["init", "-q", "--bare", "-b", "main"]);
        git(work.path(), &["push", "-q", s(bare.path()), "HEAD:main"]);
        let (status, site) = server
            .post(
                "/api/sites",
                &json!({ "name": "web", "repo": clone_url(bare.path()), "previews": previews, "wait": true }),
            )
            .await;
        assert_eq!(status, 201, "{site}");
        assert_eq!(site["deployment"]["status"], "live", "{site}");
        Self {
            server,
            fake,
            work,
            bare,
            _keys: keys,
        }
    }

    /// Commits a new index.html on `branch` and pushes it to the "GitHub" repository.
    fn commit(&self, branch: &str, text: &str) -> String {
        let dir = self.work.path();
        if git(dir, &["branch", "--show-current"]) != branch {
            git(dir, &["checkout", "-q", "-B", branch]);
        }
        std::fs::write(dir.join("index.html"), text).unwrap();
        let sha = git_commit(dir, text);
        git(
            dir,
            &["push", "-q", "--force", s(self.bare.path()), &format!("HEAD:{branch}")],
        );
        sha
    }

    async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
        deliver_raw(
            &self.server,
            event,
            delivery,
            payload.to_string().as_bytes(),
            Some(SECRET),
        )
        .await
    }

    async fn deployment_count(&self) -> usize {
        let (_, list) = self.server.get("/api/sites/web/deployments?limit=100").await;
        list["deployments"].as_array().unwrap().len()
    }

    /// Waits until fake_github has a final status for `sha`; returns all statuses of it.
    async fn statuses_of(&self, sha: &str) -> Vec<(String, String, String, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all: Vec<_> = {
                let seen = self.fake.seen.lock().unwrap();
                seen.statuses.iter().filter(|s| s.1 == sha).cloned().collect()
            };
            if all.iter().any(|s| s.2 != "pending") {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "no final status for {sha}: {all:?}\n{}",
                self.server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn clone_url(bare: &Path) -> String {
    format!("file://{}", s(bare))
}

/// POSTs a delivery with GitHub's headers; signs it when a secret is given.
async fn deliver_raw(
    server: &TestServer,
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: Option<&str>,
) -> (u16, Value) {
    let mut req = server
        .http
        .post(server.api("/hooks/github"))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "292430182")
        .header("x-github-hook-installation-target-id", "79929171")
        .header("x-github-hook-installation-target-type", "repository")
        .body(body.to_vec());
    if let Some(secret) = secret {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        req = req.header("x-hub-signature-256", format!("sha256={sig}"));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The `repository` object of a payload, as GitHub sends it (trimmed of unused URLs).
fn repository(clone_url: &str) -> Value {
    json!({
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": "web",
        "full_name": "octo/web",
        "private": true,
        "owner": { "login": "octo", "id": 1, "type": "User", "site_admin": false },
        "html_url": "https://github.com/octo/web",
        "description": null,
        "fork": false,
        "url": "https://api.github.com/repos/octo/web",
        "git_url": "git://github.com/octo/web.git",
        "ssh_url": "git@github.com:octo/web.git",
        "clone_url": clone_url,
        "svn_url": "https://github.com/octo/web",
        "default_branch": "main",
        "visibility": "private"
    })
}

fn push_payload(clone_url: &str, branch: &str, before: &str, after: &str, deleted: bool) -> Value {
    let commit = json!({
        "id": after,
        "tree_id": "0000000000000000000000000000000000000000",
        "distinct": true,
        "message": "update",
        "timestamp": "2026-11-23T18:00:00Z",
        "url": format!("https://github.com/octo/web/commit/{after}"),
        "author": { "name": "t", "email": "t@example.com", "username": "octo" },
        "committer": { "name": "t", "email": "t@example.com", "username": "octo" },
        "added": [], "removed": [], "modified": ["index.html"]
    });
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "created": false,
        "deleted": deleted,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/octo/web/compare/{before}...{after}"),
        "commits": if deleted { json!([]) } else { json!([commit.clone()]) },
        "head_commit": if deleted { Value::Null } else { commit },
        "repository": repository(clone_url),
        "pusher": { "name": "octo", "email": "t@example.com" },
        "sender": { "login": "octo", "id": 1, "type": "User" }
    })
}

fn pull_request_payload(clone_url: &str, action: &str, number: u64, branch: &str, sha: &str) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "url": format!("https://api.github.com/repos/octo/web/pulls/{number}"),
            "id": 1,
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "title": "New look",
            "user": { "login": "octo", "id": 1 },
            "merged": false,
            "head": {
                "label": format!("octo:{branch}"),
                "ref": branch,
                "sha": sha,
                "repo": repository(clone_url)
            },
            "base": {
                "label": "octo:main",
                "ref": "main",
                "sha": "0000000000000000000000000000000000000001",
                "repo": repository(clone_url)
            }
        },
        "repository": repository(clone_url),
        "sender": { "login": "octo", "id": 1, "type": "User" }
    })
}

const ZERO: &str = "0000000000000000000000000000000000000000";

#[tokio::test]
async fn a_signed_push_deploys_the_commit_and_reports_statuses_to_fake_github() {
    let setup = Setup::new(false).await;
    let url = clone_url(setup.bare.path());
    let sha = setup.commit("main", "v2 from github");
    let (status, body) = setup
        .deliver(
            "push",
            "d1a2b3c4-0000-11ef-8000-000000000001",
            &push_payload(&url, "main", ZERO, &sha, false),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["queued"][0].as_str().unwrap_or_else(|| panic!("{body}"));
    let d = setup.server.wait_deployment(id).await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(d["commit"], sha.as_str());
    assert_eq!(
        setup.server.edge("web.localhost", "/").await,
        (200, "v2 from github".into())
    );

    let statuses = setup.statuses_of(&sha).await;
    let states: Vec<&str> = statuses.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(states, ["pending", "success"], "{statuses:?}");
    for (repo, _, _, target_url, context) in &statuses {
        assert_eq!(repo, "octo/web");
        assert!(target_url.starts_with("http://web.localhost:"), "{target_url}");
        assert_eq!(context, "berth/web/production");
    }
    let seen = setup.fake.seen.lock().unwrap();
    assert!(
        seen.tokens_issued >= 1,
        "an installation token was bought with the app JWT"
    );
    assert_eq!(seen.tokens_refused, 0);
    assert_eq!(seen.statuses_refused, 0);
}

#[tokio::test]
async fn redelivered_events_never_build_twice() {
    let setup = Setup::new(false).await;
    let url = clone_url(setup.bare.path());
    let before = setup.deployment_count().await;
    let sha = setup.commit("main", "once");
    let payload = push_payload(&url, "main", ZERO, &sha, false);
    let (status, first) = setup.deliver("push", "delivery-1", &payload).await;
    assert_eq!(status, 202, "{first}");
    // The same delivery again (GitHub's "Redeliver"): recognised by its id.
    let (status, again) = setup.deliver("push", "delivery-1", &payload).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    // The same event under a new delivery id: the idempotency key finds the first build.
    let (status, other) = setup.deliver("push", "delivery-2", &payload).await;
    assert_eq!(status, 202, "{other}");
    assert_eq!(other["queued"], first["queued"], "{other}");
    setup.server.wait_deployment(first["queued"][0].as_str().unwrap()).await;
    assert_eq!(setup.deployment_count().await, before + 1);
    let statuses = setup.statuses_of(&sha).await;
    assert_eq!(statuses.iter().filter(|s| s.2 == "pending").count(), 1, "{statuses:?}");
}

#[tokio::test]
async fn pull_requests_get_a_preview_that_closing_removes() {
    let setup = Setup::new(true).await;
    let url = clone_url(setup.bare.path());
    let sha = setup.commit("new-look", "pr head 1");
    let (status, body) = setup
        .deliver(
            "pull_request",
            "pr-1",
            &pull_request_payload(&url, "opened", 7, "new-look", &sha),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let d = setup.server.wait_deployment(body["queued"][0].as_str().unwrap()).await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(d["environment"], "pr-7");
    assert_eq!(d["commit"], sha.as_str());
    assert_eq!(
        setup.server.edge("pr-7--web.localhost", "/").await,
        (200, "pr head 1".into())
    );

    let sha2 = setup.commit("new-look", "pr head 2");
    let (status, body) = setup
        .deliver(
            "pull_request",
            "pr-2",
            &pull_request_payload(&url, "synchronize", 7, "new-look", &sha2),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let d = setup.server.wait_deployment(body["queued"][0].as_str().unwrap()).await;
    assert_eq!(d["commit"], sha2.as_str());
    assert_eq!(
        setup.server.edge("pr-7--web.localhost", "/").await,
        (200, "pr head 2".into())
    );
    let statuses = setup.statuses_of(&sha2).await;
    assert!(statuses.iter().all(|s| s.4 == "berth/web/pr-7"), "{statuses:?}");

    let (status, body) = setup
        .deliver(
            "pull_request",
            "pr-3",
            &pull_request_payload(&url, "closed", 7, "new-look", &sha2),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, envs) = setup.server.get("/api/sites/web/environments").await;
    assert_eq!(envs["environments"].as_array().unwrap().len(), 1, "{envs}");
    assert_eq!(setup.server.edge("pr-7--web.localhost", "/").await.0, 404);
    assert_eq!(setup.server.edge("web.localhost", "/").await, (200, "v1".into()));
}

#[tokio::test]
async fn a_deleted_branch_removes_its_preview() {
    let setup = Setup::new(true).await;
    let url = clone_url(setup.bare.path());
    let sha = setup.commit("topic", "topic page");
    let (status, body) = setup
        .deliver("push", "b-1", &push_payload(&url, "topic", ZERO, &sha, false))
        .await;
    assert_eq!(status, 202, "{body}");
    let d = setup.server.wait_deployment(body["queued"][0].as_str().unwrap()).await;
    assert_eq!(d["environment"], "topic", "{d}");
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(
        setup.server.edge("topic--web.localhost", "/").await,
        (200, "topic page".into())
    );
    let (status, body) = setup
        .deliver("push", "b-2", &push_payload(&url, "topic", &sha, ZERO, true))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["messages"][0].as_str().unwrap().contains("removed"), "{body}");
    assert_eq!(setup.server.edge("topic--web.localhost", "/").await.0, 404);
}

#[tokio::test]
async fn unsigned_missigned_malformed_and_unknown_deliveries_queue_nothing() {
    let setup = Setup::new(false).await;
    let url = clone_url(setup.bare.path());
    let before = setup.deployment_count().await;
    let sha = setup.commit("main", "should not deploy");
    let body = push_payload(&url, "main", ZERO, &sha, false).to_string();

    let (status, out) = deliver_raw(&setup.server, "push", "x-1", body.as_bytes(), None).await;
    assert_eq!(status, 401, "{out}");
    let (status, out) = deliver_raw(&setup.server, "push", "x-2", body.as_bytes(), Some("not-the-secret")).await;
    assert_eq!(status, 401, "{out}");
    assert!(!out.to_string().contains(SECRET));
    // A valid signature of another body does not carry over to a tampered one.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let r = setup
        .server
        .http
        .post(setup.server.api("/hooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "x-3")
        .header("x-hub-signature-256", signature)
        .body(body.replacen("\"after\"", "\"after\" ", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (status, out) = deliver_raw(&setup.server, "push", "x-4", b"{not json", Some(SECRET)).await;
    assert_eq!(status, 400, "{out}");

    let other = push_payload("https://github.com/someone/else.git", "main", ZERO, &sha, false);
    let (status, out) = setup.deliver("push", "x-5", &other).await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["queued"].as_array().unwrap().len(), 0, "{out}");

    let ping = json!({ "zen": "Design for failure.", "hook_id": 292430182, "hook": { "type": "Repository", "events": ["push", "pull_request"] }, "repository": repository(&url), "sender": { "login": "octo" } });
    let (status, out) = setup.deliver("ping", "x-6", &ping).await;
    assert_eq!(status, 200, "{out}");

    assert_eq!(setup.deployment_count().await, before, "nothing was queued");
    assert_eq!(setup.server.edge("web.localhost", "/").await, (200, "v1".into()));
}

#[tokio::test]
async fn github_settings_are_masked_checked_and_tested_against_fake_github() {
    let setup = Setup::new(false).await;
    let (status, cfg) = setup.server.get("/api/config/github").await;
    assert_eq!(status, 200, "{cfg}");
    let config = &cfg["providers"][0]["config"];
    assert_eq!(config["private_key"], "***", "{cfg}");
    assert_eq!(config["webhook_secret"], "***", "{cfg}");
    assert_eq!(config["app_id"], APP_ID);
    assert!(!cfg.to_string().contains("PRIVATE KEY"));
    // Neither the audit log nor the server's own log holds the credentials.
    let (_, audit) = setup.server.get("/api/audit").await;
    assert!(audit.to_string().contains("HOSTING_SET_CONFIG"), "{audit}");
    for leak in ["PRIVATE KEY", SECRET] {
        assert!(!audit.to_string().contains(leak), "audit leaks {leak}: {audit}");
        assert!(!setup.server.log().contains(leak), "server log leaks {leak}");
    }

    let (status, out) = setup.server.post("/api/config/github/test", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["ok"], true, "{out}");

    let (status, out) = setup
        .server
        .patch(
            "/api/config/github",
            &json!({ "config": { "private_key": "not a key" } }),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("PEM"), "{out}");
    let (status, out) = setup
        .server
        .patch("/api/config/github", &json!({ "config": { "installation_id": null } }))
        .await;
    assert_eq!(status, 400, "an app needs all three settings: {out}");
}

#[tokio::test]
async fn a_private_repository_is_cloned_with_the_installation_token_from_fake_github() {
    let setup = Setup::new(false).await;
    let fake = format!("http://{}", setup.fake.addr);
    let (status, body) = setup
        .server
        .patch("/api/config/github", &json!({ "config": { "web_url": fake } }))
        .await;
    assert_eq!(status, 200, "{body}");
    // octo/private on the fake: a bare repository served only with the token.
    let root = tempfile::tempdir().unwrap();
    let bare = root.path().join("octo/private.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let work = app(&[("index.html", "private page")]);
    let sha = git_init(work.path());
    git(work.path(), &["push", "-q", s(&bare), "HEAD:main"]);
    git(&bare, &["update-server-info"]);
    *setup.fake.git_root.lock().unwrap() = Some(root.path().to_path_buf());
    let url = format!("{fake}/git/octo/private.git");

    let (status, site) = setup
        .server
        .post("/api/sites", &json!({ "name": "priv", "repo": url, "deploy": false }))
        .await;
    assert_eq!(status, 201, "the repository was checked with the token: {site}");
    let mut payload = push_payload(&url, "main", ZERO, &sha, false);
    payload["repository"]["full_name"] = json!("octo/private");
    let (status, body) = setup.deliver("push", "p-1", &payload).await;
    assert_eq!(status, 202, "{body}");
    let d = setup.server.wait_deployment(body["queued"][0].as_str().unwrap()).await;
    assert_eq!(d["status"], "live", "{d}\n{}", setup.server.log());
    assert_eq!(
        setup.server.edge("priv.localhost", "/").await,
        (200, "private page".into())
    );
    let seen = setup.fake.seen.lock().unwrap();
    assert!(seen.git_authorized > 0);
    assert_eq!(seen.git_refused, 0, "every git request carried the token");
    // The token never reaches the logs.
    assert!(!setup.server.log().contains(INSTALLATION_TOKEN));
}
