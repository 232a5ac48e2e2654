//! One app flooding its output must not take berth (and every other site) down with it:
//! its lines are rate-limited and the drops are counted in its log, berth's memory and
//! database stay bounded, and other sites keep deploying and serving.

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

fn size_of(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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

    // Serves `/` and prints 190-byte lines as fast as it can.
    let flood = app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            "import os, sys, threading\nfrom http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\nclass H(BaseHTTPRequestHandler):\n    def log_message(self, *a):\n        pass\n    def do_GET(self):\n        self.send_response(200)\n        self.send_header('content-length', '5')\n        self.end_headers()\n        self.wfile.write(b'flood')\nsrv = ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H)\nthreading.Thread(target=srv.serve_forever, daemon=True).start()\nline = 'x' * 190 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n",
        ),
    ]);
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
    let db = size_of(&data.join("berth.db")) + size_of(&data.join("berth.db-wal"));
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
