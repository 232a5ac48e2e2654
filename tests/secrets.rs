//! Env vars and secrets: sealed at rest, masked in outputs, redacted from logs, applied
//! on restart, overridable per environment.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const SECRET: &str = "sk-live-7f3c9a1e-very-secret";

fn secret_app() -> tempfile::TempDir {
    app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "console.log('booting with key ' + process.env.API_KEY);\nrequire('http').createServer((q,r)=>r.end('greeting=' + process.env.GREETING)).listen(process.env.PORT);\n",
        ),
    ])
}

#[tokio::test]
async fn secrets_are_sealed_masked_and_redacted() {
    let server = TestServer::start().await;
    let dir = secret_app();
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "vault", "repo": s(dir.path()), "env_vars": {"API_KEY": SECRET, "GREETING": "hello"}, "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.edge("vault.localhost", "/").await.1, "greeting=hello");

    let (_, vars) = server.get("/api/sites/vault/env").await;
    assert_eq!(vars["vars"]["API_KEY"]["value"], "********", "{vars}");
    assert_eq!(vars["vars"]["API_KEY"]["scope"], "site");
    let (_, revealed) = server.get("/api/sites/vault/env?reveal=true").await;
    assert_eq!(revealed["vars"]["API_KEY"]["value"], SECRET);

    // The app printed the secret: the stored log line has it redacted.
    let deadline = Instant::now() + Duration::from_secs(5);
    let id = out["deployment"]["id"].as_str().unwrap();
    loop {
        let (_, logs) = server.get(&format!("/api/deployments/{id}/logs?kind=runtime")).await;
        let text = logs["lines"].to_string();
        if text.contains("booting with key") {
            assert!(text.contains("booting with key ***"), "{text}");
            assert!(!text.contains(SECRET));
            break;
        }
        assert!(Instant::now() < deadline, "no boot line: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, site) = server
        .get("/api/sites/vault?include_env=true&runtime_log_lines=50")
        .await;
    assert!(!site.to_string().contains(SECRET), "{site}");
    assert_eq!(site["env_vars"]["API_KEY"], "********");

    // Nothing on disk holds the plaintext: database, WAL, logs, audit.
    server.get("/api/audit").await;
    for entry in walk(server.data.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(SECRET), "plaintext secret in {}", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.ends_with("deployments") {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn set_env_vars_with_restart_and_per_environment_overrides() {
    let server = TestServer::start().await;
    let repo = secret_app();
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "greet", "repo": url, "env_vars": {"GREETING": "v1"}, "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");

    let (status, out) = server
        .patch(
            "/api/sites/greet/env",
            &json!({"vars": {"GREETING": "v2"}, "restart": true}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["restarted"], json!(["production"]), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.edge("greet.localhost", "/").await.1 != "greeting=v2" {
        assert!(Instant::now() < deadline, "the restarted app sees the new value");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (_, out) = server
        .post(
            "/api/sites/greet/environments",
            &json!({"name": "staging", "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, out) = server
        .patch(
            "/api/sites/greet/env",
            &json!({"environment": "staging", "vars": {"GREETING": "staging-only"}, "restart": true}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.edge("staging--greet.localhost", "/").await.1 != "greeting=staging-only" {
        assert!(Instant::now() < deadline, "staging sees its override");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.edge("greet.localhost", "/").await.1,
        "greeting=v2",
        "production keeps the site value"
    );
    let (_, vars) = server.get("/api/sites/greet/env?environment=staging").await;
    assert_eq!(vars["vars"]["GREETING"]["scope"], "staging", "{vars}");

    // Bad input changes nothing.
    for bad in [
        json!({"vars": {"1X": "v"}}),
        json!({"vars": {"PORT": "1"}}),
        json!({"vars": {}}),
        json!({"vars": {"A": "x".repeat(40_000)}}),
    ] {
        let (status, out) = server.patch("/api/sites/greet/env", &bad).await;
        assert_eq!(status, 400, "{bad}: {out}");
    }
    let (_, vars) = server.get("/api/sites/greet/env?reveal=true").await;
    assert_eq!(vars["vars"].as_object().unwrap().len(), 1, "{vars}");
    assert_eq!(vars["vars"]["GREETING"]["value"], "v2");

    // Deleting with null.
    let (status, out) = server
        .patch("/api/sites/greet/env", &json!({"vars": {"GREETING": null}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, vars) = server.get("/api/sites/greet/env").await;
    assert!(vars["vars"].as_object().unwrap().is_empty(), "{vars}");
}
