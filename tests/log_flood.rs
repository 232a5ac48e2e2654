//! One app flooding its output must not take berth (and every other site) down with it:
//! its lines are rate-limited (`--log-rate`) and the drops are counted in its log, its
//! environment's stored log stays under `--log-retention-mb` across redeploys, berth's
//! memory and database stay bounded, and other sites keep deploying and serving.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Resident memory of a process in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An app that serves `/` and prints 190-byte lines as fast as it can.
fn flood_app() -> tempfile::TempDir {
    app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            "import os, sys, threading\nfrom http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\nclass H(BaseHTTPRequestHandler):\n    def log_message(self, *a):\n        pass\n    def do_GET(self):\n        self.send_response(200)\n        self.send_header('content-length', '5')\n        self.end_headers()\n        self.wfile.write(b'flood')\nsrv = ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H)\nthreading.Thread(target=srv.serve_forever, daemon=True).start()\nline = 'x' * 190 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n",
        ),
    ])
}

#[tokio::test]
async fn a_log_flood_is_rate_limited_and_leaves_berth_and_other_sites_alone() {
    let server = TestServer::start().await;
    let data = server.data.path().to_path_buf();
    let berth_pid = processes_matching(data.to_str().unwrap())
        .into_iter()
        .find(|(_, cmd)| cmd.contains(" serve "))
        .expect("the server's process")
        .0;

    let flood = flood_app();
    let (status, out) = server
        .post_bytes("/api/sites/flood/upload?wait=true", pack(flood.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let rss_before = rss_kib(berth_pid);

    // Ten seconds of flood; meanwhile another site deploys and serves.
    let started = Instant::now();
    let calm = node_app("calm");
    let (status, out) = server
        .post_bytes("/api/sites/calm/upload?wait=true", pack(calm.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let mut peak = rss_before;
    while started.elapsed() < Duration::from_secs(10) {
        peak = peak.max(rss_kib(berth_pid));
        assert_eq!(server.edge("calm.localhost", "/").await.0, 200);
        assert_eq!(server.edge("flood.localhost", "/").await, (200, "flood".to_string()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // berth's memory did not follow the flood (it grew by hundreds of MB before).
    assert!(
        peak < rss_before + 60 * 1024,
        "berth grew from {rss_before} KiB to {peak} KiB under one app's log flood"
    );
    // The database holds a bounded log: about 1,000 lines a second, not millions.
    let db = database_size(&data);
    assert!(db < 64 << 20, "the database grew to {db} bytes");
    // The log says what was dropped and why.
    let (_, logs) = server
        .get("/api/sites/flood/environments/production/logs?limit=1000")
        .await;
    let text = logs.to_string();
    assert!(
        text.contains("lines dropped: over 1000 lines/s"),
        "no drop report in the log"
    );
}

/// What an environment's lines cost as berth counts them (text plus 256 bytes a line),
/// computed from the lines themselves.
fn stored_log_bytes(db: &std::path::Path, site: &str, environment: &str) -> u64 {
    let bytes = if on_postgres() {
        "octet_length(line)"
    } else {
        "length(CAST(line AS BLOB))"
    };
    db_query(
        db,
        &format!(
            "SELECT COALESCE(SUM({bytes} + 256), 0) FROM deployment_logs WHERE deployment_id IN \
             (SELECT d.id FROM deployments d JOIN environments e ON e.id = d.environment_id JOIN sites s ON s.id = e.site_id \
              WHERE s.name = '{site}' AND e.name = '{environment}')"
        ),
    )
    .parse()
    .expect("a number")
}

#[tokio::test]
async fn an_environment_keeps_its_log_under_its_size_while_an_app_floods_it_across_a_redeploy() {
    const BOUND: u64 = 1 << 20;
    // One batch of the writer may land before it trims: 1,000 lines of ~450 bytes.
    const BATCH: u64 = 1000 * 500;
    let server = TestServer::start_with(&[("BERTH_LOG_RETENTION_MB", "1"), ("BERTH_LOG_RATE", "5000")]).await;
    let db = server.data.path().to_path_buf();
    let flood = flood_app();
    let (status, out) = server
        .post_bytes("/api/sites/flood/upload?wait=true", pack(flood.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let first = out["deployment"]["id"].as_str().unwrap().to_string();

    let mut peak = 0;
    let mut watch = async |seconds: u64| {
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            peak = peak.max(stored_log_bytes(&db, "flood", "production"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    watch(6).await;
    // A redeploy: the superseded deployment's lines still count, and go first.
    let before_redeploy: u64 = db_query(
        &db,
        &format!("SELECT MAX(id) FROM deployment_logs WHERE deployment_id = '{first}' AND kind = 'runtime'"),
    )
    .parse()
    .unwrap();
    let (status, out) = server
        .post_bytes("/api/sites/flood/upload?wait=true", pack(flood.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let second = out["deployment"]["id"].as_str().unwrap().to_string();
    watch(6).await;

    assert!(peak > BOUND / 2, "the flood never filled the log ({peak} bytes)");
    assert!(
        peak <= BOUND + BATCH,
        "the environment's log reached {peak} bytes, over its 1 MiB bound"
    );
    let left: u64 = db_query(
        &db,
        &format!("SELECT COUNT(*) FROM deployment_logs WHERE kind = 'runtime' AND id <= {before_redeploy}"),
    )
    .parse()
    .unwrap();
    assert_eq!(
        left,
        0,
        "the superseded deployment's runtime lines from before the redeploy go first: {}",
        db_query(
            &db,
            "SELECT deployment_id, kind, COUNT(*), SUM(bytes), MIN(id), MAX(id) FROM deployment_logs GROUP BY 1, 2"
        )
    );
    let newest = db_query(
        &db,
        &format!("SELECT COUNT(*) FROM deployment_logs WHERE deployment_id = '{second}' AND kind = 'runtime'"),
    );
    assert_ne!(newest, "0");
    // Its build log stays readable (runtime lines go before any build line).
    let build = server.deployment_log(&first, "build").await;
    assert!(build.contains("build pack: python"), "{build}");
    // The site's usage reports what its log holds and what bounds it.
    let (status, usage) = server.get("/api/sites/flood/usage").await;
    assert_eq!(status, 200, "{usage}");
    let disk = &usage["disk"];
    assert_eq!(disk["log_retention_bytes"], BOUND, "{disk}");
    assert_eq!(disk["log_retention_days"], 7, "{disk}");
    assert_eq!(disk["logs"][0]["environment"], "production", "{disk}");
    let reported = disk["logs"][0]["bytes"].as_u64().unwrap();
    assert!(reported > 0 && reported <= BOUND + BATCH, "{disk}");
    assert!(disk["deployments_bytes"].as_u64().unwrap() > 0, "{disk}");
    assert_eq!(disk["deployment_folders"], 2, "{disk}");
    assert_eq!(disk["kept_per_environment"], 10, "{disk}");

    // Deleting the site leaves no log line and no total behind.
    let (status, out) = server.delete("/api/sites/flood").await;
    assert!(status < 300, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = db_query(
            &db,
            "SELECT (SELECT COUNT(*) FROM deployment_logs) || ' ' || (SELECT COUNT(*) FROM log_usage)",
        );
        if left == "0 0" {
            break;
        }
        assert!(Instant::now() < deadline, "left after deleting the site: {left}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_log_rate_setting_limits_each_instance() {
    let server = TestServer::start_with(&[("BERTH_LOG_RATE", "50")]).await;
    let flood = flood_app();
    let (status, out) = server
        .post_bytes("/api/sites/flood/upload?wait=true", pack(flood.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = server.deployment_log(&id, "runtime").await;
    let notes: Vec<&str> = log.lines().filter(|l| l.contains("lines dropped")).collect();
    assert!(
        notes.iter().any(|l| l.contains("lines dropped: over 50 lines/s")),
        "no note of lines dropped over 50 lines/s: {notes:?}"
    );
    // The burst (50) and 50 a second since the app started (its start and these 3 s),
    // not the 1,000 a second of the default.
    let (stored, seconds): (u64, u64) = {
        let row = db_query(
            server.data.path(),
            &format!(
                "SELECT COUNT(*) || ' ' || ((MAX(ts) - MIN(ts)) / 1000 + 1) FROM deployment_logs \
                 WHERE deployment_id = '{id}' AND kind = 'runtime' AND line LIKE 'xxxx%'"
            ),
        );
        let (a, b) = row.split_once(' ').expect("two numbers");
        (a.parse().unwrap(), b.parse().unwrap())
    };
    assert!(stored > 50, "{stored} lines");
    assert!(
        stored <= 50 + 50 * seconds,
        "{stored} lines stored in {seconds} s of flood at 50 lines/s"
    );
}

#[test]
fn bad_log_settings_refuse_to_start_and_name_the_bound() {
    for (flag, value, says) in [
        ("--log-rate", "0", "1..=100000"),
        ("--log-rate", "many", "--log-rate"),
        ("--log-retention-mb", "0", "1..=1048576"),
        ("--log-retention-days", "0", "1..=3650"),
        ("--log-retention-days", "4000", "1..=3650"),
    ] {
        let data = data_dir();
        let dir = data.path().join("fresh");
        let out = serve_command(&dir).args([flag, value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} started");
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{flag} {value}: {stderr}"
        );
        assert!(!dir.exists(), "{flag} {value} created the data dir");
    }
    // The same bounds hold for the environment variables.
    let data = data_dir();
    let dir = data.path().join("fresh");
    let out = serve_command(&dir).env("BERTH_LOG_RETENTION_MB", "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--log-retention-mb") && stderr.contains("1..=1048576"),
        "{stderr}"
    );
}
