//! Changeable site settings: `HOSTING_UPDATE_SITE` over MCP, `PATCH /api/sites/{site}` and
//! `berth sites update`, applied at the next deploy; `null` back to detection; bad input
//! that changes nothing; branch and provider changes kept consistent; and one-off
//! `overrides` of a deploy that apply to that deployment only.

mod common;

use common::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

async fn mcp(server: &TestServer) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(KEY.to_string());
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP client connects")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &'static str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap_or_default());
    client.call_tool(params).await.expect("tool call")
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().expect("structured content")
}

/// A dependency-free Node app with two servers: `a.js` (its start script) and `b.js`,
/// each answering its own name, so the start command in use shows through the edge.
fn two_server_app() -> tempfile::TempDir {
    let server = |name: &str| {
        format!(
            "require('http').createServer((q, r) => r.end('app {name}')).listen(process.env.PORT, () => console.log('{name} listening'));\n"
        )
    };
    app(&[
        (
            "package.json",
            r#"{"name":"two","version":"1.0.0","scripts":{"start":"node a.js"}}"#,
        ),
        ("a.js", &server("A")),
        ("b.js", &server("B")),
    ])
}

/// Creates a site from a folder and waits for its first deployment to be live.
async fn live_site(server: &TestServer, name: &str, folder: &std::path::Path) {
    let (status, out) = server
        .post("/api/sites", &json!({"name": name, "repo": s(folder), "wait": true}))
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
}

/// Deploys a site (with an optional body) and waits; returns the finished deployment.
async fn deploy(server: &TestServer, site: &str, body: Value) -> Value {
    let (status, out) = server.post(&format!("/api/sites/{site}/deploy"), &body).await;
    assert_eq!(status, 202, "{out}");
    let id = out["deployment"]["id"].as_str().expect("deployment id").to_string();
    server.wait_deployment(&id).await
}

async fn edge_text(server: &TestServer, site: &str) -> String {
    let (status, body) = server.edge(&format!("{site}.localhost"), "/").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The settings of a site as stored: build settings, branch, provider, previews and what
/// production follows.
async fn settings_of(server: &TestServer, site: &str) -> Value {
    let (status, d) = server.get(&format!("/api/sites/{site}")).await;
    assert_eq!(status, 200, "{d}");
    json!({
        "build_settings": d["build_settings"],
        "branch": d["branch"],
        "provider": d["provider"],
        "previews": d["previews"],
        "production_branch": d["environments"][0]["branch"],
    })
}

#[tokio::test]
async fn an_update_over_mcp_applies_at_the_next_deploy_and_null_returns_to_detection() {
    let server = TestServer::start().await;
    let folder = two_server_app();
    live_site(&server, "upd", folder.path()).await;
    assert_eq!(edge_text(&server, "upd").await, "app A");
    let client = mcp(&server).await;

    // The schema tells an agent that null clears.
    let tools = client.list_all_tools().await.expect("tools");
    let update = tools
        .iter()
        .find(|t| t.name == "HOSTING_UPDATE_SITE")
        .expect("the tool");
    let start = &update.input_schema["properties"]["start_command"];
    assert!(start.to_string().contains("null: detected"), "{start}");
    assert_eq!(update.annotations.as_ref().unwrap().idempotent_hint, Some(true));

    let r = call(
        &client,
        "HOSTING_UPDATE_SITE",
        json!({"site": "upd", "start_command": "node b.js"}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(r.is_error, Some(false), "{out}");
    assert_eq!(out["settings"]["start_command"], "node b.js", "{out}");
    assert_eq!(out["changed"], json!(["start_command"]));
    assert!(
        out["next_steps"]
            .as_str()
            .unwrap()
            .contains(r#"HOSTING_DEPLOY {"site": "upd"}"#),
        "{out}"
    );
    // Nothing changes until the next deploy.
    assert_eq!(edge_text(&server, "upd").await, "app A");

    let r = call(&client, "HOSTING_DEPLOY", json!({"site": "upd", "wait": true})).await;
    assert_eq!(structured(&r)["deployment"]["status"], "live", "{:?}", r);
    assert_eq!(edge_text(&server, "upd").await, "app B");

    // null: back to what detection finds (package.json's start script).
    let r = call(
        &client,
        "HOSTING_UPDATE_SITE",
        json!({"site": "upd", "start_command": null}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["settings"]["start_command"], Value::Null, "{out}");
    assert_eq!(out["changed"], json!(["start_command"]));
    let (_, site) = server.get("/api/sites/upd").await;
    assert_eq!(site["build_settings"]["start_command"], Value::Null, "{site}");
    let d = deploy(&server, "upd", json!({"wait": true})).await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(edge_text(&server, "upd").await, "app A");

    // Audited like every mutation.
    let (_, audit) = server.get("/api/audit").await;
    let updates = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .expect("audit entries")
        .iter()
        .filter(|e| e["action"] == "HOSTING_UPDATE_SITE" && e["outcome"] == "ok")
        .count();
    assert_eq!(updates, 2, "{audit}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn invalid_settings_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let folder = two_server_app();
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "strict", "repo": s(folder.path()), "deploy": false, "start_command": "node a.js", "port": 3000}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let before = settings_of(&server, "strict").await;

    let cases = [
        (json!({"port": 0}), "port"),
        (json!({"build_pack": "cobol"}), "build_pack"),
        (json!({"root_dir": "../elsewhere"}), "root_dir"),
        (json!({"root_dir": "/srv/app"}), "root_dir"),
        (json!({"output_dir": "a/../../b"}), "output_dir"),
        (json!({"start_command": "   "}), "start_command"),
        (json!({"health_check_path": "healthz"}), "health_check_path"),
        (json!({"provider": "mainframe"}), "provider"),
        // A folder site has no branches.
        (json!({"branch": "dev"}), "branch"),
        // ... and no pushes of other branches to make previews of.
        (json!({"previews": true}), "previews"),
        // A good value beside a bad one is not applied either.
        (json!({"start_command": "node b.js", "port": 0}), "port"),
        (json!({"colour": "red"}), "body"),
        (json!({"port": "eighty"}), "body"),
    ];
    for (body, field) in cases {
        let (status, err) = server.patch("/api/sites/strict", &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.len() > 20, "{body}: a message that says what to do: {err}");
        assert_eq!(settings_of(&server, "strict").await, before, "{body} changed nothing");
    }
    let (status, err) = server
        .post(
            "/api/sites",
            &json!({"name": "uploads-only", "deploy": false, "previews": true}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "previews", "{err}");
    let (status, err) = server.patch("/api/sites/nope", &json!({"port": 80})).await;
    assert_eq!(status, 404, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("strict"), "{err}");
}

#[tokio::test]
async fn rest_patch_changes_settings_and_repeating_it_changes_nothing() {
    let server = TestServer::start().await;
    let folder = two_server_app();
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "patched", "repo": s(folder.path()), "deploy": false, "port": 3000}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let body = json!({"start_command": "node b.js", "port": null, "health_check_path": "/ready", "build_pack": "node"});
    let (status, out) = server.patch("/api/sites/patched", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["settings"]["start_command"], "node b.js");
    assert_eq!(out["settings"]["port"], Value::Null);
    assert_eq!(out["settings"]["health_check_path"], "/ready");
    assert_eq!(out["settings"]["build_pack"], "node");
    let mut changed: Vec<String> = serde_json::from_value(out["changed"].clone()).unwrap();
    changed.sort();
    assert_eq!(changed, ["build_pack", "health_check_path", "port", "start_command"]);
    let (_, site) = server.get("/api/sites/patched").await;
    assert_eq!(site["build_settings"]["start_command"], "node b.js", "{site}");
    assert_eq!(site["build_settings"]["port"], Value::Null, "{site}");

    // Idempotent by nature: the same change again changes nothing and says so.
    let (status, again) = server.patch("/api/sites/patched", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["changed"], json!([]));
    assert_eq!(again["settings"], out["settings"]);
    assert!(
        again["next_steps"].as_str().unwrap().contains("nothing changed"),
        "{again}"
    );
}

#[tokio::test]
async fn the_cli_updates_and_clears_settings() {
    let server = TestServer::start().await;
    let folder = two_server_app();
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "clisite", "repo": s(folder.path()), "deploy": false, "output_dir": "dist"}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let out = server.cli(&[
        "sites",
        "update",
        "clisite",
        "--start-command",
        "node b.js",
        "--port",
        "4000",
        "--clear",
        "output_dir",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("changed:"), "{stdout}");
    assert!(stdout.contains("node b.js"), "{stdout}");
    let (_, site) = server.get("/api/sites/clisite").await;
    assert_eq!(site["build_settings"]["start_command"], "node b.js", "{site}");
    assert_eq!(site["build_settings"]["port"], 4000, "{site}");
    assert_eq!(site["build_settings"]["output_dir"], Value::Null, "{site}");

    let out = server.cli(&["sites", "update", "clisite", "--clear", "port", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["settings"]["port"], Value::Null, "{json}");

    // Bad input: a clear error from the CLI or the server, and nothing changes.
    let before = settings_of(&server, "clisite").await;
    for args in [
        &["sites", "update", "clisite", "--clear", "colour"][..],
        &["sites", "update", "clisite", "--port", "0"][..],
        &["sites", "update", "clisite"][..],
    ] {
        let out = server.cli(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    assert_eq!(settings_of(&server, "clisite").await, before);
    // `berth sites` alone still lists.
    let out = server.cli(&["sites"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("clisite"));
}

#[tokio::test]
async fn deploy_overrides_apply_once_and_are_recorded_with_the_deployment() {
    let server = TestServer::start().await;
    let folder = two_server_app();
    live_site(&server, "once", folder.path()).await;
    let before = settings_of(&server, "once").await;

    let d = deploy(
        &server,
        "once",
        json!({"wait": true, "overrides": {"start_command": "node b.js"}}),
    )
    .await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(edge_text(&server, "once").await, "app B");
    assert_eq!(d["overrides"], json!({"start_command": "node b.js"}), "{d}");
    assert_eq!(d["build_settings"]["start_command"], "node b.js", "{d}");
    let log = server.deployment_log(d["id"].as_str().unwrap(), "build").await;
    assert!(log.contains("one-off settings of this deploy"), "{log}");
    assert_eq!(
        settings_of(&server, "once").await,
        before,
        "the site keeps its settings"
    );

    // The next plain deploy builds with the site's settings again.
    let plain = deploy(&server, "once", json!({"wait": true})).await;
    assert_eq!(plain["status"], "live", "{plain}");
    assert_eq!(plain.get("overrides"), None, "{plain}");
    assert_eq!(edge_text(&server, "once").await, "app A");

    // A rollback to the overridden deployment serves what it was built with, no rebuild.
    let (status, out) = server.post("/api/sites/once/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["deployment"]["id"], d["id"], "{out}");
    assert_eq!(
        out["deployment"]["overrides"],
        json!({"start_command": "node b.js"}),
        "{out}"
    );

    // Bad overrides are refused before anything is queued.
    let (_, list) = server.get("/api/sites/once/deployments").await;
    let count = list["deployments"].as_array().unwrap().len();
    let (status, err) = server
        .post("/api/sites/once/deploy", &json!({"overrides": {"port": 0}}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "port", "{err}");
    let (_, list) = server.get("/api/sites/once/deployments").await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), count);
}

#[tokio::test]
async fn branch_changes_move_production_and_unsafe_changes_are_refused() {
    let server = TestServer::start().await;
    let repo = two_server_app();
    git_init(repo.path());
    git(repo.path(), &["checkout", "-q", "-b", "next"]);
    std::fs::write(
        repo.path().join("a.js"),
        "require('http').createServer((q, r) => r.end('app next')).listen(process.env.PORT);\n",
    )
    .unwrap();
    git_commit(repo.path(), "next");
    git(repo.path(), &["checkout", "-q", "main"]);
    let url = format!("file://{}", s(repo.path()));
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "branchy", "repo": url, "branch": "main", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(edge_text(&server, "branchy").await, "app A");

    // A branch the repository does not have is refused.
    let before = settings_of(&server, "branchy").await;
    let (status, err) = server.patch("/api/sites/branchy", &json!({"branch": "nope"})).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "branch", "{err}");
    assert_eq!(settings_of(&server, "branchy").await, before);

    // Running apps cannot move to another provider: refused, saying what to do.
    let (status, err) = server.patch("/api/sites/branchy", &json!({"provider": "docker"})).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("create a new site"),
        "{err}"
    );
    assert_eq!(settings_of(&server, "branchy").await, before);

    // The site's branch is what production follows, and what the next deploy builds.
    let (status, out) = server.patch("/api/sites/branchy", &json!({"branch": "next"})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["changed"], json!(["branch"]));
    let after = settings_of(&server, "branchy").await;
    assert_eq!(after["branch"], "next");
    assert_eq!(after["production_branch"], "next");
    let d = deploy(&server, "branchy", json!({"wait": true})).await;
    assert_eq!(d["status"], "live", "{d}");
    assert_eq!(d["branch"], "next", "{d}");
    assert_eq!(edge_text(&server, "branchy").await, "app next");

    // A preview that follows a branch keeps production from taking it.
    let (status, out) = server
        .post(
            "/api/sites/branchy/environments",
            &json!({"name": "staging", "branch": "main"}),
        )
        .await;
    assert!(status == 201 || status == 202 || status == 200, "{out}");
    let (status, err) = server.patch("/api/sites/branchy", &json!({"branch": "main"})).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("staging"), "{err}");
    assert_eq!(settings_of(&server, "branchy").await["branch"], "next");
}

#[tokio::test]
async fn a_root_dir_that_links_out_of_the_source_fails_the_build_and_serves_nothing_of_the_host() {
    let server = TestServer::start().await;
    let host = app(&[("index.html", "<h1>host secret</h1>")]);
    let folder = app(&[("index.html", "<h1>own</h1>")]);
    // Committed to git, as a repository can: a clone keeps the link as it is.
    std::os::unix::fs::symlink(host.path(), folder.path().join("web")).unwrap();
    git_init(folder.path());
    let repo = format!("file://{}", s(folder.path()));
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "escape", "repo": repo, "root_dir": "web", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let d = &out["deployment"];
    assert_eq!(d["status"], "failed", "{out}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(error.contains("root_dir is 'web'"), "{error}");
    let (_, body) = server.edge("escape.localhost", "/").await;
    assert!(!body.contains("host secret"), "{body}");
    assert!(
        host.path().join("index.html").is_file(),
        "the host folder is left alone"
    );
}

#[tokio::test]
async fn berth_deploy_flags_set_a_new_sites_settings_and_override_one_later_deploy() {
    let server = TestServer::start().await;
    let mono = app(&[
        ("package.json", r#"{"name":"mono","private":true}"#),
        (
            "apps/web/package.json",
            r#"{"name":"web","version":"1.0.0","scripts":{"start":"node a.js"}}"#,
        ),
        (
            "apps/web/a.js",
            "require('http').createServer((q, r) => r.end('web A')).listen(process.env.PORT);\n",
        ),
        (
            "apps/web/b.js",
            "require('http').createServer((q, r) => r.end('web B')).listen(process.env.PORT);\n",
        ),
    ]);
    let dir = s(mono.path());
    let out = server.cli(&["deploy", dir, "--site", "monoup", "--root-dir", "apps/web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(edge_text(&server, "monoup").await, "web A");
    let (_, site) = server.get("/api/sites/monoup").await;
    assert_eq!(site["build_settings"]["root_dir"], "apps/web", "{site}");

    // On an existing site the flags apply to that deployment only.
    let out = server.cli(&["deploy", dir, "--site", "monoup", "--start-command", "node b.js"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(edge_text(&server, "monoup").await, "web B");
    let (_, site) = server.get("/api/sites/monoup").await;
    assert_eq!(site["build_settings"]["start_command"], Value::Null, "{site}");
    let out = server.cli(&["deploy", dir, "--site", "monoup"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(edge_text(&server, "monoup").await, "web A");
}
