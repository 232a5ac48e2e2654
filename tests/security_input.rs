//! Input that must be refused cleanly: git path tricks answer 4xx (never 500, never a
//! file), and env var values no process can hold are refused when set.

mod common;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `GET <path>` exactly as written (no client-side normalisation); returns the status.
async fn raw_get(port: u16, path: &str, token: &str) -> u16 {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"));
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Basic {auth}\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status for {path}: {text}"))
}

#[tokio::test]
async fn git_path_tricks_get_4xx() {
    let server = TestServer::start().await;
    let (status, out) = server.post("/api/repos", &json!({"name": "guarded"})).await;
    assert_eq!(status, 201, "{out}");
    let (status, out) = server.post("/api/repos/guarded/tokens", &json!({})).await;
    assert_eq!(status, 201, "{out}");
    let token = out["token"].as_str().unwrap().to_string();
    assert_eq!(
        raw_get(
            server.api_port,
            "/git/default/guarded.git/info/refs?service=git-upload-pack",
            &token
        )
        .await,
        200,
        "the token works"
    );
    let long = "a/".repeat(3000);
    for path in [
        "/git/default/guarded.git/../../../etc/passwd",
        "/git/default/guarded.git/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/git/default/guarded.git/objects/..%2f..%2fconfig",
        "/git/default/guarded.git/config",
        "/git/default/guarded.git/HEAD",
        "/git/default/guarded.git/info/refs%00?service=git-upload-pack",
        "/git/default/guarded.git/info%00/refs",
        "/git/default/guarded.git/info/refs%0a?service=git-upload-pack",
        "/git/default/..%2fguarded.git/info/refs",
        "/git/default/guarded%00.git/info/refs",
        "/git/%2e%2e/guarded.git/info/refs",
        "/git/default%00/guarded.git/info/refs",
        "/git/default/%ff.git/info/refs",
        "/git/default/guarded.git/info/refs?service=../../../x",
        &format!("/git/default/guarded.git/{long}"),
        &format!("/git/default/{}.git/info/refs", "r".repeat(5000)),
    ] {
        let status = raw_get(server.api_port, path, &token).await;
        assert!(
            (400..500).contains(&status),
            "{} answered {status}\n{}",
            &path[..path.len().min(80)],
            server.log()
        );
    }
}

#[tokio::test]
async fn nul_bytes_in_env_values_are_refused_when_set() {
    let server = TestServer::start().await;
    let dir = app(&[("index.html", "x")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nul", "repo": s(dir.path()), "env_vars": {"TOKEN": "ab\u{0}cd"}}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "env_vars");
    assert!(out["error"]["message"].as_str().unwrap().contains("NUL"), "{out}");
    assert!(
        !out.to_string().contains("ab\\u0000cd"),
        "the value is not echoed: {out}"
    );
    assert_eq!(server.get("/api/sites/nul").await.0, 404, "nothing was created");

    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nul", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let (status, out) = server
        .patch("/api/sites/nul/env", &json!({"vars": {"TOKEN": "x\u{0}"}}))
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("NUL"), "{out}");
    // A multi-line value (a PEM key) stays fine.
    let (status, out) = server
        .patch(
            "/api/sites/nul/env",
            &json!({"vars": {"PEM": "-----BEGIN-----\nabc\n-----END-----\n"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
}

#[test]
fn secrets_on_the_command_line_are_refused_before_anything_starts() {
    let data = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "serve",
            "--master-key",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
        vec!["serve", "--bootstrap-key=berth_a_long_enough_bootstrap_key_value"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&args)
            .arg("--data")
            .arg(data.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("process list") && stderr.contains("BERTH_"), "{stderr}");
        assert!(
            std::fs::read_dir(data.path()).unwrap().next().is_none(),
            "nothing is created"
        );
    }
}
