//! Push to deploy through berth's own git server: real `git push` over smart HTTP to a
//! running server, ending with the pushed commit served through the edge.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

/// Runs git with a fixed identity and no credential prompts; returns the whole output.
fn git_run(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(["-c", "credential.helper=", "-c", "protocol.version=2"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git")
}

/// `git push`, asserting success; returns what git printed (remote lines included).
fn push(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["push"];
    all.extend_from_slice(args);
    let out = git_run(dir, &all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git push {args:?} failed:\n{text}");
    text
}

/// The first deployment id (`dpl_…`) in a text.
fn deployment_id(text: &str) -> String {
    let start = text
        .find("dpl_")
        .unwrap_or_else(|| panic!("no deployment id in:\n{text}"));
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

async fn create_repo(server: &TestServer, name: &str) -> Value {
    let (status, body) = server.post("/api/repos", &json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn token(server: &TestServer, repo: &str, ttl: Option<u64>) -> Value {
    let (status, body) = server
        .post(&format!("/api/repos/{repo}/tokens"), &json!({ "ttl_seconds": ttl }))
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn static_site(text: &str) -> tempfile::TempDir {
    let dir = app(&[("index.html", text)]);
    git_init(dir.path());
    dir
}

#[tokio::test]
async fn a_push_deploys_exactly_the_pushed_commit_and_says_so() {
    let server = TestServer::start().await;
    let repo = create_repo(&server, "web-src").await;
    assert!(
        repo["clone_url"]
            .as_str()
            .unwrap()
            .ends_with("/git/default/web-src.git")
    );

    // A site from an empty internal repository waits for its first push.
    let (status, site) = server
        .post("/api/sites", &json!({ "name": "web", "repo": "web-src" }))
        .await;
    assert_eq!(status, 201, "{site}");
    assert!(site.get("deployment").is_none(), "{site}");
    assert!(site["next_steps"].as_str().unwrap().contains("git push"), "{site}");

    let creds = token(&server, "web-src", None).await;
    let url = creds["push_url"].as_str().unwrap();
    let work = static_site("<h1>v1</h1>");
    let first = git(work.path(), &["rev-parse", "HEAD"]);
    let out = push(work.path(), &[url, "HEAD:main"]);
    assert!(out.contains("remote: berth: site 'web': deploying"), "{out}");
    assert!(out.contains("web.localhost"), "{out}");
    let d = server.wait_deployment(&deployment_id(&out)).await;
    assert_eq!(d["status"], "live", "{d}\n{}", server.log());
    assert_eq!(d["commit"], first.as_str());
    assert_eq!(d["environment"], "production");
    assert_eq!(server.edge("web.localhost", "/").await, (200, "<h1>v1</h1>".into()));

    // A one-line change: the new commit is what goes live.
    std::fs::write(work.path().join("index.html"), "<h1>v2</h1>").unwrap();
    let second = git_commit(work.path(), "v2");
    let out = push(work.path(), &[url, "HEAD:main"]);
    let d = server.wait_deployment(&deployment_id(&out)).await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(d["commit"], second.as_str());
    assert_eq!(server.edge("web.localhost", "/").await, (200, "<h1>v2</h1>".into()));

    // A force-push that rewrites history deploys the new tip.
    std::fs::write(work.path().join("index.html"), "<h1>v2, amended</h1>").unwrap();
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "--amend", "-m", "v2 amended"]);
    let amended = git(work.path(), &["rev-parse", "HEAD"]);
    let out = push(work.path(), &["--force", url, "HEAD:main"]);
    assert!(out.contains("forced update"), "{out}");
    let d = server.wait_deployment(&deployment_id(&out)).await;
    assert_eq!(d["commit"], amended.as_str(), "{d}");
    assert_eq!(
        server.edge("web.localhost", "/").await,
        (200, "<h1>v2, amended</h1>".into())
    );

    // The same credentials clone the repository back.
    let clone_to = tempfile::tempdir().unwrap();
    let out = git_run(clone_to.path(), &["clone", "-q", url, "copy"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(git(&clone_to.path().join("copy"), &["rev-parse", "HEAD"]), amended);

    // Three pushes, three deployments: nothing was built twice.
    let (_, list) = server.get("/api/sites/web/deployments").await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), 3, "{list}");
}

#[tokio::test]
async fn other_branches_build_previews_and_deleting_the_branch_removes_it() {
    let server = TestServer::start().await;
    create_repo(&server, "shop").await;
    let (status, site) = server
        .post(
            "/api/sites",
            &json!({ "name": "shop", "repo": "shop", "previews": true }),
        )
        .await;
    assert_eq!(status, 201, "{site}");
    // Shown by its name, never by the server path it is cloned from.
    let (_, shown) = server.get("/api/sites/shop").await;
    assert_eq!(shown["source"], "shop", "{shown}");
    assert!(!shown.to_string().contains("file://"), "{shown}");
    assert!(!site.to_string().contains("file://"), "{site}");
    let url = token(&server, "shop", None).await["push_url"]
        .as_str()
        .unwrap()
        .to_string();
    let work = static_site("main page");
    let out = push(work.path(), &[&url, "HEAD:main"]);
    server.wait_deployment(&deployment_id(&out)).await;

    git(work.path(), &["checkout", "-q", "-b", "feature/New-Look"]);
    std::fs::write(work.path().join("index.html"), "new look").unwrap();
    let sha = git_commit(work.path(), "new look");
    let out = push(work.path(), &[&url, "feature/New-Look"]);
    assert!(out.contains("to feature-new-look"), "{out}");
    let d = server.wait_deployment(&deployment_id(&out)).await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(d["commit"], sha.as_str());
    assert_eq!(d["environment"], "feature-new-look");
    assert_eq!(
        server.edge("feature-new-look--shop.localhost", "/").await,
        (200, "new look".into())
    );
    assert_eq!(server.edge("shop.localhost", "/").await, (200, "main page".into()));

    let out = push(work.path(), &[&url, ":feature/New-Look"]);
    assert!(out.contains("preview environment 'feature-new-look' removed"), "{out}");
    let (_, envs) = server.get("/api/sites/shop/environments").await;
    let names: Vec<&str> = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["production"], "{envs}");
    assert_eq!(server.edge("feature-new-look--shop.localhost", "/").await.0, 404);
    assert_eq!(server.edge("shop.localhost", "/").await, (200, "main page".into()));
}

#[tokio::test]
async fn without_previews_other_branches_deploy_nothing() {
    let server = TestServer::start().await;
    create_repo(&server, "plain").await;
    server
        .post("/api/sites", &json!({ "name": "plain", "repo": "plain" }))
        .await;
    let url = token(&server, "plain", None).await["push_url"]
        .as_str()
        .unwrap()
        .to_string();
    let work = static_site("x");
    let out = push(work.path(), &[&url, "HEAD:topic"]);
    assert!(out.contains("not 'topic'; nothing deployed"), "{out}");
    let (_, list) = server.get("/api/sites/plain/deployments").await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), 0, "{list}");
}

#[tokio::test]
async fn a_push_to_a_repo_no_site_uses_says_what_to_do() {
    let server = TestServer::start().await;
    create_repo(&server, "lonely").await;
    let url = token(&server, "lonely", None).await["push_url"]
        .as_str()
        .unwrap()
        .to_string();
    let work = static_site("x");
    let out = push(work.path(), &[&url, "HEAD:main"]);
    assert!(
        out.contains("remote: berth: no site deploys from 'lonely' yet"),
        "{out}"
    );

    // Now that it has commits, a site made from it deploys right away.
    let (status, site) = server
        .post(
            "/api/sites",
            &json!({ "name": "lonely", "repo": "lonely", "wait": true }),
        )
        .await;
    assert_eq!(status, 201, "{site}");
    assert_eq!(site["deployment"]["status"], "live", "{site}");
}

#[tokio::test]
async fn pushes_with_missing_wrong_expired_or_foreign_tokens_are_refused() {
    let server = TestServer::start().await;
    let a = create_repo(&server, "alpha").await;
    create_repo(&server, "beta").await;
    let clone_url = a["clone_url"].as_str().unwrap().to_string();
    let info_refs = format!("{clone_url}/info/refs?service=git-receive-pack");
    let get = |auth: Option<(&str, String)>| {
        let mut req = server.http.get(&info_refs);
        if let Some((user, pass)) = auth {
            req = req.basic_auth(user, Some(pass));
        }
        req.send()
    };

    let r = get(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));

    let r = get(Some(("berth", "bgt_wrong".into()))).await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("HOSTING_GET_GIT_TOKEN"), "{body}");

    let beta = token(&server, "beta", None).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(Some(("berth", beta.clone()))).await.unwrap().status(), 403);

    // The admin API key is not a git token either.
    assert_eq!(get(Some(("berth", KEY.into()))).await.unwrap().status(), 403);

    // A token past its expiry is refused; a fresh one for the same repository works.
    let expired = token(&server, "alpha", Some(1)).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(Some(("any-user", expired))).await.unwrap().status(), 403);
    let alpha = token(&server, "alpha", None).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(Some(("any-user", alpha))).await.unwrap().status(), 200);

    // The git CLI gives up without credentials instead of hanging on a prompt, and a
    // foreign token changes nothing.
    let work = static_site("x");
    let out = git_run(work.path(), &["push", &clone_url, "HEAD:main"]);
    assert!(!out.status.success());
    let foreign = clone_url.replacen("://", &format!("://berth:{beta}@"), 1);
    let out = git_run(work.path(), &["push", &foreign, "HEAD:main"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{out:?}");
    let fresh = token(&server, "alpha", None).await["push_url"]
        .as_str()
        .unwrap()
        .to_string();
    let out = git_run(work.path(), &["ls-remote", "--heads", &fresh]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "nothing was pushed: {out:?}");
}

#[tokio::test]
async fn unsafe_repo_names_are_refused() {
    let server = TestServer::start().await;
    for bad in ["../etc", "a/b", ".hidden", "x.git", "UPPER", "", "a b"] {
        let (status, body) = server.post("/api/repos", &json!({ "name": bad })).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "name", "{body}");
    }
    for path in [
        "/git/default/..%2F..%2Fberth.git/info/refs",
        "/git/default/.x.git/info/refs",
    ] {
        let r = server
            .http
            .get(server.api(path))
            .basic_auth("berth", Some("bgt_x"))
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 400 | 404), "{path}: {}", r.status());
    }
    let (status, body) = server
        .post("/api/sites", &json!({ "name": "s", "repo": "missing-repo" }))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HOSTING_CREATE_REPO"),
        "{body}"
    );
    let (_, sites) = server.get("/api/sites").await;
    assert_eq!(sites["sites"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_push_over_the_size_bound_is_refused_and_changes_nothing() {
    let server = TestServer::start_with(&[("BERTH_MAX_PUSH_BYTES", "50000")]).await;
    create_repo(&server, "big").await;
    let url = token(&server, "big", None).await["push_url"]
        .as_str()
        .unwrap()
        .to_string();
    let work = tempfile::tempdir().unwrap();
    // Incompressible bytes, so the pack stays over the bound.
    let mut noise = vec![0u8; 400_000];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut noise).unwrap();
    std::fs::write(work.path().join("blob.bin"), noise).unwrap();
    std::fs::write(work.path().join("index.html"), "big").unwrap();
    git_init(work.path());
    let out = git_run(work.path(), &["push", &url, "HEAD:main"]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("413"), "{text}");
    let out = git_run(work.path(), &["ls-remote", "--heads", &url]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "no branch was created: {out:?}");
}

#[tokio::test]
async fn the_cli_creates_repos_and_hands_out_tokens() {
    let server = TestServer::start().await;
    let out = server.cli(&["repo", "create", "from-cli", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let repo: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(repo["repo"], "from-cli");
    let out = server.cli(&["repo", "token", "from-cli", "--ttl", "120", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(creds["token"].as_str().unwrap().starts_with("bgt_"));
    let work = static_site("cli");
    push(work.path(), &[creds["push_url"].as_str().unwrap(), "HEAD:main"]);
    let out = server.cli(&["repo", "token", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`berth repo create NAME`"));
    // Tokens are stored hashed: the database never holds one.
    let token = creds["token"].as_str().unwrap();
    let bytes = database_contents(server.data.path());
    assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
}

#[tokio::test]
async fn an_agent_gets_a_repo_and_push_credentials_over_mcp() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let server = TestServer::start().await;
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(KEY.to_string());
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let call = |tool: &'static str, args: Value| {
        let params = CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap());
        client.call_tool(params)
    };
    let r = call("HOSTING_CREATE_REPO", json!({ "name": "agent-app" }))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let r = call(
        "HOSTING_CREATE_SITE",
        json!({ "name": "agent-app", "repo": "agent-app" }),
    )
    .await
    .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let r = call(
        "HOSTING_GET_GIT_TOKEN",
        json!({ "repo": "agent-app", "ttl_seconds": 600 }),
    )
    .await
    .unwrap();
    let creds = r.structured_content.clone().unwrap();
    assert_eq!(creds["username"], "berth");
    let work = static_site("from an agent");
    let out = push(work.path(), &[creds["push_url"].as_str().unwrap(), "HEAD:main"]);
    let d = server.wait_deployment(&deployment_id(&out)).await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(
        server.edge("agent-app.localhost", "/").await,
        (200, "from an agent".into())
    );
    let r = call(
        "HOSTING_GET_GIT_TOKEN",
        json!({ "repo": "agent-app", "ttl_seconds": 0 }),
    )
    .await
    .unwrap();
    assert_eq!(r.is_error, Some(true));
    let r = call("HOSTING_CREATE_REPO", json!({ "name": "agent-app" }))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "a second repo of the same name is refused");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_push_still_deploys_when_the_hook_cannot_report() {
    let server = TestServer::start().await;
    create_repo(&server, "quiet").await;
    server
        .post("/api/sites", &json!({ "name": "quiet", "repo": "quiet" }))
        .await;
    // A hook that says nothing (as if it could not reach the server).
    let hook = server.data.path().join("git/hooks/post-receive");
    assert!(hook.is_file());
    std::fs::write(&hook, "#!/bin/sh\ncat >/dev/null\nexit 0\n").unwrap();
    let url = token(&server, "quiet", None).await["push_url"]
        .as_str()
        .unwrap()
        .to_string();
    let work = static_site("applied by the server");
    let sha = git(work.path(), &["rev-parse", "HEAD"]);
    let out = push(work.path(), &[&url, "HEAD:main"]);
    assert!(!out.contains("remote: berth:"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = loop {
        let (_, list) = server.get("/api/sites/quiet/deployments").await;
        if let Some(id) = list["deployments"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no deployment: {}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["commit"], sha.as_str(), "{d}");
    assert_eq!(
        server.edge("quiet.localhost", "/").await,
        (200, "applied by the server".into())
    );
}
