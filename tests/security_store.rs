//! The data dir is berth's alone (0700, files 0600), and another process reading the
//! database (a backup, an operator's `sqlite3`) never costs berth a committed write.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use serde_json::json;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sqlite3(db: &std::path::Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().expect("sqlite3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn create(server: &TestServer, name: &str) {
    let (status, out) = server.post("/api/sites", &json!({"name": name, "deploy": false})).await;
    assert_eq!(status, 201, "{out}");
}

#[tokio::test]
async fn a_backup_while_the_server_writes_is_complete_and_costs_nothing() {
    let server = TestServer::start().await;
    for i in 0..5 {
        create(&server, &format!("before-{i}")).await;
    }
    // Writes keep arriving while the backup runs.
    let writer = {
        let (http, url) = (server.http.clone(), server.api("/api/sites"));
        tokio::spawn(async move {
            for i in 0..20 {
                let r = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({"name": format!("during-{i}"), "deploy": false}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let out_dir = tempfile::tempdir().unwrap();
    let backup = out_dir.path().join("berth-backup.db");
    let run = server.cli(&["backup", "--data", s(server.data.path()), "--out", s(&backup)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    writer.await.unwrap();
    assert_eq!(mode(&backup), 0o600, "the backup holds sealed secrets");
    assert_eq!(sqlite3(&backup, "PRAGMA integrity_check"), "ok");
    let names = sqlite3(&backup, "SELECT name FROM sites ORDER BY name");
    assert!(
        names.contains("before-4"),
        "the latest site committed before the backup: {names}"
    );
    // An existing file is never overwritten.
    let again = server.cli(&["backup", "--data", s(server.data.path()), "--out", s(&backup)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    // Another process opens the live database, reads and closes it.
    let db = server.data.path().join("berth.db");
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM sites"), "25");
    create(&server, "after-the-reader").await;
    let data = server.stop();
    let server = TestServer::start_in(data, &[]).await;
    let (_, sites) = server.get("/api/sites").await;
    let names: Vec<&str> = sites["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names.len(), 26, "{names:?}");
    assert!(names.contains(&"after-the-reader"), "{names:?}");
}

#[tokio::test]
async fn the_data_dir_and_its_files_are_berths_alone() {
    let server = TestServer::start().await;
    create(&server, "one").await;
    let data = server.data.path().to_path_buf();
    // Traversable but not listable: each site's uid reaches its own deployment folders.
    assert_eq!(mode(&data), 0o711);
    for file in [
        "berth.db",
        "berth.db-wal",
        "berth.db-shm",
        "master.key",
        "ports.json",
        "berth.lock",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("deployments")), 0o711);
    assert_eq!(mode(&data.join("uploads")), 0o700);
    // A data dir left open by an older version is closed at start.
    let data = server.stop();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(data.path().join("berth.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(data.path().join("deployments"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Something of the operator's beside berth's files keeps its mode.
    std::fs::write(data.path().join("notes.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(data.path().join("notes.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = TestServer::start_in(data, &[]).await;
    assert_eq!(mode(server.data.path()), 0o711);
    assert_eq!(mode(&server.data.path().join("berth.db")), 0o600);
    assert_eq!(mode(&server.data.path().join("deployments")), 0o711);
    assert_eq!(mode(&server.data.path().join("notes.sh")), 0o755);
}

#[tokio::test]
async fn a_short_bootstrap_key_refuses_to_start() {
    let data = data_dir();
    let out = serve_command(data.path())
        .env("BERTH_BOOTSTRAP_KEY", "abc")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a 3-character key");
    assert!(stderr.contains("at least 24"), "{stderr}");
    assert!(!stderr.contains("abc"), "the key is not echoed: {stderr}");
    assert!(!data.path().join("berth.db").exists(), "nothing was created");
}
