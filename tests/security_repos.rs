//! A site's `repo` may name a folder of the server only under roots an operator allowed
//! with `--allow-local-repos`, and never the data dir: each attack below asks berth to
//! deploy a folder it must not read, and checks nothing was created.

mod common;

use common::*;
use serde_json::{Value, json};

fn message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_string()
}

/// Asserts `repo` is refused as a site's source and that no site, deployment or
/// deployment folder came of it.
async fn assert_refused(server: &TestServer, repo: &str, expect: &str) {
    let (status, out) = server
        .post("/api/sites", &json!({"name": "grab", "repo": repo, "wait": true}))
        .await;
    assert_eq!(status, 400, "{repo}: {out}");
    assert_eq!(out["error"]["field"], "repo", "{out}");
    assert!(message(&out).contains(expect), "{repo}: {out}");
    let (_, sites) = server.get("/api/sites").await;
    assert_eq!(sites["sites"].as_array().map(Vec::len), Some(0), "{sites}");
    let deployments = std::fs::read_dir(server.data.path().join("deployments"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(deployments, 0, "a deployment folder was created for {repo}");
}

#[tokio::test]
async fn repo_cannot_name_the_data_dir_or_system_folders() {
    let server = TestServer::start().await;
    let data = server.data.path().canonicalize().unwrap();
    let data_s = s(&data).to_string();
    assert_refused(&server, &data_s, "--allow-local-repos").await;
    assert_refused(&server, &format!("file://{data_s}"), "--allow-local-repos").await;
    assert_refused(&server, &format!("{data_s}/deployments"), "--allow-local-repos").await;
    assert_refused(&server, "/etc", "--allow-local-repos").await;
    assert_refused(&server, "file:///etc", "--allow-local-repos").await;
    // `..` out of an allowed root.
    let root = std::env::temp_dir();
    assert_refused(&server, &format!("{}/../etc", s(&root)), "--allow-local-repos").await;
    assert_refused(&server, &format!("file://{}/%2e%2e/etc", s(&root)), "%-escapes").await;

    // A symlink under an allowed root pointing at the data dir, or at /etc.
    let links = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&data, links.path().join("pivot")).unwrap();
    std::os::unix::fs::symlink("/etc", links.path().join("etc")).unwrap();
    for link in ["pivot", "etc"] {
        let path = links.path().join(link);
        assert_refused(&server, s(&path), "--allow-local-repos").await;
        assert_refused(&server, &format!("file://{}", s(&path)), "--allow-local-repos").await;
    }

    // A folder under the allowed root still deploys.
    let ok = app(&[("index.html", "fine")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "fine", "repo": s(ok.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
}

#[tokio::test]
async fn server_folders_are_off_by_default() {
    let server = TestServer::start_with(&[("BERTH_ALLOW_LOCAL_REPOS", "")]).await;
    let dir = app(&[("index.html", "x")]);
    assert_refused(&server, s(dir.path()), "server folders are off").await;
    git_init(dir.path());
    assert_refused(&server, &format!("file://{}", s(dir.path())), "server folders are off").await;
    // berth's own git server keeps working: its repositories live in the data dir.
    let (status, out) = server.post("/api/repos", &json!({"name": "own"})).await;
    assert_eq!(status, 201, "{out}");
    let (status, out) = server.post("/api/sites", &json!({"name": "own", "repo": "own"})).await;
    assert_eq!(status, 201, "{out}");
}

#[tokio::test]
async fn a_root_holding_the_data_dir_refuses_to_start() {
    for root in ["data", "parent", "inside"] {
        let data = data_dir();
        let listed = match root {
            "data" => data.path().to_path_buf(),
            "parent" => data.path().parent().unwrap().to_path_buf(),
            _ => {
                std::fs::create_dir_all(data.path().join("git")).unwrap();
                data.path().join("git")
            }
        };
        let out = serve_command(data.path())
            .env("BERTH_BOOTSTRAP_KEY", KEY)
            .env("BERTH_ALLOW_LOCAL_REPOS", &listed)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{root}: started: {stderr}");
        assert!(
            stderr.contains("contains or is inside the data dir"),
            "{root}: {stderr}"
        );
    }
}
