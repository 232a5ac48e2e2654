//! Previews, promote, rollback and cancel: environments move between built deployments
//! without rebuilding, and bad requests change nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Makes `repo` a git repo whose `main` is its files and whose `feature` branch has
/// `feature_server_js` as server.js; creates site `name` from main and its `feature`
/// preview, both live. Returns the preview's creation output.
async fn site_with_feature_preview(
    server: &TestServer,
    name: &str,
    repo: &std::path::Path,
    feature_server_js: &str,
) -> serde_json::Value {
    git_init(repo);
    git(repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("server.js"), feature_server_js).unwrap();
    git_commit(repo, "feature");
    git(repo, &["checkout", "-q", "main"]);
    let url = format!("file://{}", s(repo));
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": url, "branch": "main", "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, out) = server
        .post(
            &format!("/api/sites/{name}/environments"),
            &json!({"name": "feature", "branch": "feature", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    out
}

#[tokio::test]
async fn a_preview_environment_builds_its_branch_beside_production() {
    let server = TestServer::start().await;
    let repo = node_app("production build");
    let out = site_with_feature_preview(
        &server,
        "shop",
        repo.path(),
        "require('http').createServer((q,r)=>{console.log('preview hit '+q.url); r.end('preview build')}).listen(process.env.PORT);",
    )
    .await;
    assert_eq!(
        out["environment"]["url"],
        format!("http://feature--shop.localhost:{}", server.edge_port).as_str()
    );
    assert_eq!(out["environment"]["status"], "live");
    assert_eq!(server.edge("feature--shop.localhost", "/").await.1, "preview build");
    assert_eq!(server.edge("shop.localhost", "/").await.1, "production build /");

    let (_, envs) = server.get("/api/sites/shop/environments").await;
    let names: Vec<&str> = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["production", "feature"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, logs) = server.get("/api/sites/shop/environments/feature/logs").await;
        if logs["lines"].to_string().contains("preview hit /") {
            break;
        }
        assert!(Instant::now() < deadline, "environment logs: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, out) = server
        .post("/api/sites/shop/environments", &json!({"name": "feature"}))
        .await;
    assert_eq!(status, 409, "{out}");
    let (status, out) = server
        .post("/api/sites/shop/environments", &json!({"name": "Bad_Name"}))
        .await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = server
        .post(
            "/api/sites/shop/environments",
            &json!({"name": "nobranch", "branch": "nope"}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = server.delete("/api/sites/shop/environments/production").await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(
        server.edge("shop.localhost", "/").await.0,
        200,
        "production still serves"
    );

    let (status, out) = server.delete("/api/sites/shop/environments/feature").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(server.edge("feature--shop.localhost", "/").await.0, 404);
    assert!(
        processes_matching("preview hit").is_empty(),
        "the preview's app is stopped"
    );
    assert_eq!(server.edge("shop.localhost", "/").await.1, "production build /");
}

#[tokio::test]
async fn promote_and_rollback_switch_without_rebuilding() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "v1")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "flip", "repo": url, "wait": true}))
        .await;
    let v1 = out["deployment"]["id"].as_str().unwrap().to_string();
    let mut ids = vec![v1];
    for v in ["v2", "v3"] {
        std::fs::write(repo.path().join("index.html"), v).unwrap();
        git_commit(repo.path(), v);
        let (_, out) = server.post("/api/sites/flip/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}");
        ids.push(out["deployment"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(server.edge("flip.localhost", "/").await.1, "v3");

    let (status, out) = server.post("/api/sites/flip/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["deployment"]["id"], ids[1].as_str());
    assert_eq!(out["previous_deployment_id"], ids[2].as_str());
    assert_eq!(server.edge("flip.localhost", "/").await.1, "v2");
    let (_, out) = server.post("/api/sites/flip/rollback", &json!({})).await;
    assert_eq!(out["deployment"]["id"], ids[0].as_str(), "{out}");
    assert_eq!(server.edge("flip.localhost", "/").await.1, "v1");
    let (status, out) = server.post("/api/sites/flip/rollback", &json!({})).await;
    assert_eq!(status, 409, "nothing older: {out}");
    assert_eq!(server.edge("flip.localhost", "/").await.1, "v1");

    let (status, out) = server
        .post("/api/sites/flip/promote", &json!({"deployment_id": ids[2]}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(server.edge("flip.localhost", "/").await.1, "v3");
    let (_, list) = server.get("/api/sites/flip/deployments").await;
    let statuses: Vec<&str> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["live", "superseded", "superseded"]);
    let builds = list["deployments"].as_array().unwrap().len();
    assert_eq!(builds, 3, "no rebuilds");

    // Bad promotions change nothing.
    let (status, out) = server
        .post("/api/sites/flip/promote", &json!({"deployment_id": "dpl_nope"}))
        .await;
    assert_eq!(status, 404, "{out}");
    let other = app(&[("index.html", "other")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "other", "repo": s(other.path()), "wait": true}),
        )
        .await;
    let foreign = out["deployment"]["id"].as_str().unwrap();
    let (status, out) = server
        .post("/api/sites/flip/promote", &json!({"deployment_id": foreign}))
        .await;
    assert_eq!(status, 400, "{out}");
    std::fs::write(repo.path().join("package.json"), r#"{"scripts":{"build":"exit 1"}}"#).unwrap();
    git_commit(repo.path(), "broken");
    let (_, out) = server.post("/api/sites/flip/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "failed");
    let (status, out) = server
        .post(
            "/api/sites/flip/promote",
            &json!({"deployment_id": out["deployment"]["id"]}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("is failed"), "{out}");
    assert_eq!(server.edge("flip.localhost", "/").await.1, "v3");
}

#[tokio::test]
async fn rollback_restarts_an_app_that_was_stopped() {
    let server = TestServer::start().await;
    let repo = node_app("app one");
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "apps", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    std::fs::write(
        repo.path().join("server.js"),
        "require('http').createServer((q,r)=>r.end('app two')).listen(process.env.PORT);",
    )
    .unwrap();
    git_commit(repo.path(), "two");
    let (_, out) = server.post("/api/sites/apps/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.edge("apps.localhost", "/").await.1, "app two");
    let (status, out) = server.post("/api/sites/apps/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(server.edge("apps.localhost", "/").await.1, "app one /");
}

#[tokio::test]
async fn cancelling_a_build_kills_it_and_keeps_production() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "stable")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "calm", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live");
    let live_id = out["deployment"]["id"].as_str().unwrap().to_string();
    std::fs::write(
        repo.path().join("package.json"),
        r#"{"scripts":{"build":"sleep 287 && echo cancel-me-marker"}}"#,
    )
    .unwrap();
    git_commit(repo.path(), "slow");
    let (_, out) = server.post("/api/sites/calm/deploy", &json!({})).await;
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_matching("sleep 287").is_empty() {
        assert!(Instant::now() < deadline, "the build never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, out) = server
        .post(&format!("/api/deployments/{id}/cancel"), &json!(null))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["status"], "cancelled", "{out}");
    // Gone well before the step's 287 s. (An odd number: a `sleep 300` found on the host
    // was once another test's container, which made this test fail for no fault of berth.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_matching("sleep 287");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the build's processes are gone: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.edge("calm.localhost", "/").await.1, "stable");
    let (status, out) = server
        .post(&format!("/api/deployments/{live_id}/cancel"), &json!(null))
        .await;
    assert_eq!(status, 409, "{out}");
    let (_, d) = server.get(&format!("/api/deployments/{live_id}")).await;
    assert_eq!(d["status"], "live");
}

/// Answers `<label> greeting=<GREETING>`.
fn greeting_server(label: &str) -> String {
    format!(
        "require('http').createServer((q, r) => r.end('{label} greeting=' + process.env.GREETING)).listen(process.env.PORT);"
    )
}

async fn wait_for_body(server: &TestServer, host: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = server.edge(host, "/").await.1;
        if got == body {
            return;
        }
        assert!(Instant::now() < deadline, "{host} answers {got:?}, not {body:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn promoting_a_preview_into_production_runs_its_build_with_production_variables() {
    let server = TestServer::start().await;
    let repo = app(&[
        (
            "package.json",
            r#"{"name":"g","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        ("server.js", &greeting_server("main")),
    ]);
    let out = site_with_feature_preview(&server, "promo", repo.path(), &greeting_server("feature")).await;
    let preview = out["deployment"]["id"].as_str().unwrap().to_string();
    for (environment, value) in [("production", "prod-db"), ("feature", "preview-db")] {
        let (status, out) = server
            .patch(
                "/api/sites/promo/env",
                &json!({"environment": environment, "vars": {"GREETING": value}, "restart": true}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
    }
    wait_for_body(&server, "promo.localhost", "main greeting=prod-db").await;
    wait_for_body(&server, "feature--promo.localhost", "feature greeting=preview-db").await;
    let (_, before) = server.get("/api/sites/promo/deployments").await;
    let count_before = before["deployments"].as_array().unwrap().len();

    // A promotion into an environment that does not exist changes nothing.
    let (status, out) = server
        .post(
            "/api/sites/promo/promote",
            &json!({"deployment_id": preview, "environment": "nope"}),
        )
        .await;
    assert_eq!(status, 404, "{out}");
    let (_, after) = server.get("/api/sites/promo/deployments").await;
    assert_eq!(after["deployments"].as_array().unwrap().len(), count_before);

    // Production serves the preview's build with production's variables, as a deployment
    // of its own; the preview keeps serving with its own.
    let (status, out) = server
        .post("/api/sites/promo/promote", &json!({"deployment_id": preview}))
        .await;
    assert_eq!(status, 200, "{out}");
    let promoted = out["deployment"]["id"].as_str().unwrap().to_string();
    assert_ne!(promoted, preview, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (_, source) = server.get(&format!("/api/deployments/{preview}")).await;
    assert!(source["commit"].is_string(), "{source}");
    assert_eq!(out["deployment"]["commit"], source["commit"], "the same code: {out}");
    assert_eq!(
        server.edge("promo.localhost", "/").await.1,
        "feature greeting=prod-db",
        "{}",
        server.log()
    );
    assert_eq!(
        server.edge("feature--promo.localhost", "/").await.1,
        "feature greeting=preview-db"
    );
    let (_, logs) = server
        .get(&format!("/api/deployments/{promoted}/logs?kind=build"))
        .await;
    assert!(
        logs["lines"].to_string().contains(&format!("promoted from {preview}")),
        "{logs}"
    );

    // Rolling production back returns to its own previous deployment.
    let (status, out) = server.post("/api/sites/promo/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(server.edge("promo.localhost", "/").await.1, "main greeting=prod-db");
}

#[tokio::test]
async fn an_environment_of_an_upload_site_runs_its_own_instance_with_its_own_variables() {
    let server = TestServer::start().await;
    let dir = app(&[
        (
            "package.json",
            r#"{"name":"g","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        ("server.js", &greeting_server("up")),
    ]);
    let out = server.cli(&["deploy", s(dir.path()), "--site", "uploaded"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, out) = server
        .post(
            "/api/sites/uploaded/environments",
            &json!({"name": "staging", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let (_, site) = server.get("/api/sites/uploaded").await;
    let served: Vec<&str> = site["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["deployment_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(served.len(), 2, "{site}");
    assert_ne!(
        served[0], served[1],
        "each environment runs a deployment of its own: {site}"
    );
    for (environment, value) in [("production", "prod"), ("staging", "stage")] {
        let (status, out) = server
            .patch(
                "/api/sites/uploaded/env",
                &json!({"environment": environment, "vars": {"GREETING": value}, "restart": true}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
    }
    wait_for_body(&server, "uploaded.localhost", "up greeting=prod").await;
    wait_for_body(&server, "staging--uploaded.localhost", "up greeting=stage").await;
}
