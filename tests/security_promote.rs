//! A promotion copies the deployment's files: `/app` is writable, so an inode shared
//! with another environment would let one environment's app rewrite another's code.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_promoted_deployment_shares_no_writable_file_with_its_source() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "main")]);
    git_init(repo.path());
    git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.path().join("index.html"), "feature").unwrap();
    git_commit(repo.path(), "feature");
    git(repo.path(), &["checkout", "-q", "main"]);
    let url = format!("file://{}", s(repo.path()));
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "twin", "repo": url, "branch": "main", "wait": true}),
        )
        .await;
    assert_eq!((status, &out["deployment"]["status"]), (201, &json!("live")), "{out}");
    let (status, out) = server
        .post(
            "/api/sites/twin/environments",
            &json!({"name": "feature", "branch": "feature", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let preview = out["deployment"]["id"].as_str().unwrap().to_string();
    let (status, out) = server
        .post("/api/sites/twin/promote", &json!({"deployment_id": preview}))
        .await;
    assert_eq!(status, 200, "{out}");
    let promoted = out["deployment"]["id"].as_str().unwrap().to_string();
    assert_ne!(promoted, preview);
    assert_eq!(server.edge("twin.localhost", "/").await.1, "feature");

    let file = |id: &str| server.data.path().join("deployments").join(id).join("app/index.html");
    let (source, copy) = (file(&preview), file(&promoted));
    assert_ne!(
        std::fs::metadata(&source).unwrap().ino(),
        std::fs::metadata(&copy).unwrap().ino(),
        "the promoted deployment's file is the preview's inode"
    );
    // The preview's app rewrites its own file in place (as code in `/app` can)...
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&source)
        .unwrap();
    f.write_all(b"rewritten by the preview").unwrap();
    drop(f);
    // ...and production's copy is untouched.
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "feature");
    assert_eq!(server.edge("twin.localhost", "/").await.1, "feature");
}
