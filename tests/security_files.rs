//! Files: the edge never serves a file whose real path is outside the deployment's own
//! folder, and nothing on the host follows an app's symlinks out of it. Each test is the
//! attack: a repository that commits a symlink to a host folder, a build that makes one,
//! and a static folder turned into a link to the data dir after it went live.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;

const SECRET: &str = "host-secret-7f3a9c";

/// A host folder outside any deployment, laid out like a static site with a secret
/// beside its index page.
fn host_folder() -> tempfile::TempDir {
    app(&[("index.html", "host index page"), ("secret.txt", SECRET)])
}

/// Asserts that no path answers 200 or shows host content, for `host`.
async fn assert_nothing_served(server: &TestServer, host: &str, paths: &[&str]) {
    for path in paths {
        let (status, body) = server.edge(host, path).await;
        assert_ne!(status, 200, "{path} answered 200: {body}");
        assert!(!body.contains(SECRET), "{path} leaked the secret");
        assert!(!body.contains("host index page"), "{path} served a host file");
    }
}

#[tokio::test]
async fn a_committed_dist_linking_to_a_host_folder_is_never_served() {
    let server = TestServer::start().await;
    let outside = host_folder();
    let repo = app(&[("README.md", "a site whose output is elsewhere")]);
    std::os::unix::fs::symlink(outside.path(), repo.path().join("dist")).unwrap();
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (status, out) = server
        .post("/api/sites", &json!({"name": "linked", "repo": url, "wait": true}))
        .await;
    assert_eq!(status, 201, "{out}");
    let deployment = &out["deployment"];
    assert_eq!(deployment["status"], "failed", "{out}");
    let error = deployment["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("dist") && error.contains("outside the app's folder"),
        "the error names the link: {error}"
    );
    let log = server
        .deployment_log(deployment["id"].as_str().expect("deployment id"), "build")
        .await;
    assert!(log.contains("ignoring 'dist'"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    assert_nothing_served(&server, "linked.localhost", &["/", "/index.html", "/secret.txt"]).await;
}

#[tokio::test]
async fn a_build_that_links_its_output_to_a_host_folder_is_never_served() {
    let server = TestServer::start().await;
    let outside = host_folder();
    let build = format!("ln -s {} dist", s(outside.path()));
    let repo = app(&[(
        "package.json",
        &json!({"name": "b", "version": "1.0.0", "scripts": {"build": build}}).to_string(),
    )]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (status, out) = server
        .post("/api/sites", &json!({"name": "builtlink", "repo": url, "wait": true}))
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no index.html") && error.contains("dist"),
        "the error names the folder: {error}"
    );
    assert_nothing_served(&server, "builtlink.localhost", &["/", "/index.html", "/secret.txt"]).await;
}

/// Deploys a static site whose `dist` is a real folder; returns the deployment's folder
/// on disk.
async fn live_static_site(server: &TestServer, name: &str) -> PathBuf {
    let repo = app(&[("dist/index.html", "own index"), ("dist/about.html", "own about")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (status, out) = server
        .post("/api/sites", &json!({"name": name, "repo": url, "wait": true}))
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.edge(&format!("{name}.localhost"), "/").await.1, "own index");
    let id = out["deployment"]["id"].as_str().unwrap();
    let dir = server.data.path().join("deployments").join(id).join("app");
    assert!(dir.join("dist/index.html").is_file(), "the layout this test relies on");
    dir
}

/// Links made in a live site's folder after activation (standing in for anything that
/// writes there later, like a preview app that learnt the host path): links to a secret
/// and to berth's own data dir answer 404.
#[tokio::test]
async fn links_made_after_activation_inside_the_static_folder_are_404() {
    let server = TestServer::start().await;
    let app_dir = live_static_site(&server, "pivot").await;
    let data_dir = host_folder();
    std::os::unix::fs::symlink(data_dir.path().join("secret.txt"), app_dir.join("dist/leak.txt")).unwrap();
    std::os::unix::fs::symlink(data_dir.path(), app_dir.join("dist/data")).unwrap();
    std::os::unix::fs::symlink(server.data.path(), app_dir.join("dist/berth")).unwrap();
    for path in [
        "/leak.txt",
        "/data/secret.txt",
        "/data/",
        "/berth/master.key",
        "/berth/berth.db",
    ] {
        let (status, body) = server.edge("pivot.localhost", path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains(SECRET), "{path} leaked the secret");
    }
    assert_eq!(server.edge("pivot.localhost", "/about").await.1, "own about");
}

/// The pivot itself: the live site's static folder is replaced by a link to a data dir.
/// Neither the route already published nor the ones the reconciler builds afterwards may
/// follow it.
#[tokio::test]
async fn a_static_folder_pivoted_to_a_data_dir_after_activation_serves_nothing() {
    let server = TestServer::start().await;
    let app_dir = live_static_site(&server, "swapped").await;
    let data_dir = host_folder();
    pivot(&app_dir.join("dist"), data_dir.path());
    assert_nothing_served(&server, "swapped.localhost", &["/", "/index.html", "/secret.txt"]).await;
    // A reconcile pass runs every few seconds and rebuilds the route table.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_nothing_served(&server, "swapped.localhost", &["/", "/index.html", "/secret.txt"]).await;

    // berth's own data dir, likewise.
    pivot(&app_dir.join("dist"), server.data.path());
    assert_nothing_served(
        &server,
        "swapped.localhost",
        &["/master.key", "/berth.db", "/server.log"],
    )
    .await;
}

/// Replaces the folder (or link) at `at` with a symlink to `target`.
fn pivot(at: &Path, target: &Path) {
    match std::fs::symlink_metadata(at) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(at).unwrap(),
        Ok(_) => std::fs::remove_file(at).unwrap(),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, at).unwrap();
}
