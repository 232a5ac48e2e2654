//! Error patterns from runtime logs: an app that logs a fixed mix of errors (varying ids,
//! numbers, UUIDs, IPs and quoted strings, a real Python traceback, a JS stack) comes back
//! from `HOSTING_GET_ERROR_PATTERNS` as exactly the expected templates and counts, next to
//! the 5xx by path template; a redeploy adds its deployment to each pattern; a flood of
//! distinct lines keeps at most 500 templates; bad ranges and limits get clear errors.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// An app that logs a fixed mix of errors once it starts and answers `/boom` with 500:
/// 5 payment errors on stdout (with info lines around them), 3 database timeouts on
/// stderr, 2 Python tracebacks, 2 JS stacks (reading a one-word and a two-word property).
fn errors_app() -> tempfile::TempDir {
    app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            r#"import os, signal, sys, traceback, uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

# Stopped after a redeploy, it complains on the way out as many apps (and shells, and
# npm) do: berth asked for the stop, so this is no error of the app.
def on_term(*a):
    sys.stderr.write('ERROR shutting down: SIGTERM received\n')
    sys.stderr.flush()
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        code = 500 if self.path == '/boom' else 200
        self.send_response(code)
        self.send_header('content-length', '2')
        self.end_headers()
        self.wfile.write(b'ok')

def out(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()

def err(text):
    sys.stderr.write(text + '\n')
    sys.stderr.flush()

out('INFO starting')
for i in range(5):
    out('2026-01-02T10:00:0%dZ ERROR payment %d failed for user %s' % (i, 1000 + i * 37, uuid.uuid4()))
    out('INFO retrying in %d s' % i)
for i in range(3):
    err('db timeout after %d ms on 10.0.%d.7:5432' % (30 + i * 11, i))
for i in range(2):
    try:
        int('abc%d' % i)
    except ValueError:
        traceback.print_exc()
        sys.stderr.flush()
for prop in ['id', 'user name']:
    err("TypeError: Cannot read properties of undefined (reading '%s')\n    at handler (/app/server.js:10:11)\n    at process (node:internal/process/task_queues:95:5)" % prop)
out('INFO ready')
HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#,
        ),
    ])
}

/// The templates of an answer with their counts in the range, sorted.
fn templates(out: &Value) -> Vec<(String, u64)> {
    let mut t: Vec<(String, u64)> = out["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["template"].as_str().unwrap().to_string(),
                p["events"].as_u64().unwrap(),
            )
        })
        .collect();
    t.sort();
    t
}

fn expected(times: u64) -> Vec<(String, u64)> {
    let mut t = vec![
        ("<*> ERROR payment <*> failed for user <*>".to_string(), 5 * times),
        ("db timeout after <*> ms on <*>".to_string(), 3 * times),
        (
            "ValueError: invalid literal for int() with base <*>: <*>".to_string(),
            2 * times,
        ),
        (
            "TypeError: Cannot read properties of undefined (reading <*>)".to_string(),
            2 * times,
        ),
    ];
    t.sort();
    t
}

#[tokio::test]
async fn a_fixed_mix_of_errors_comes_back_as_exact_templates_and_a_redeploy_adds_its_deployment() {
    let server = TestServer::start().await;
    let source = errors_app();
    let (status, out) = server
        .post_bytes("/api/sites/shop/upload?wait=true", pack(source.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let first = out["deployment"]["id"].as_str().unwrap().to_string();

    let mut got = Value::Null;
    eventually("the first deployment's errors are clustered", 30, async || {
        got = server.get("/api/sites/shop/metrics/error-patterns?since=10m").await.1;
        got["events"].as_u64() == Some(12)
    })
    .await;
    assert_eq!(templates(&got), expected(1), "{got:#}");
    let traceback = got["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["template"].as_str().unwrap().starts_with("ValueError"))
        .unwrap();
    let sample = traceback["sample"].as_str().unwrap();
    assert!(
        sample.starts_with("Traceback (most recent call last):") && sample.ends_with("'abc1'"),
        "the traceback is one event, its latest as the sample: {sample}"
    );
    let stack = got["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["template"].as_str().unwrap().starts_with("TypeError"))
        .unwrap();
    assert_eq!(
        stack["sample"].as_str().unwrap().lines().count(),
        3,
        "the JS stack is one event: {stack}"
    );
    for p in got["patterns"].as_array().unwrap() {
        assert_eq!(p["deployments"][0]["deployment_id"], first.as_str(), "{p}");
        assert_eq!(p["all_deployments"], json!([first]), "{p}");
    }
    assert!(got["summary"].as_str().unwrap().contains("12 error events"), "{got}");

    // 5xx by path template next to them, from the edge in the same range.
    for _ in 0..3 {
        assert_eq!(server.edge("shop.localhost", "/boom").await.0, 500);
    }
    eventually("the 5xx are counted by the edge", 20, async || {
        got = server.get("/api/sites/shop/metrics/error-patterns?since=10m").await.1;
        got["server_errors"] == json!([{"template": "GET /boom", "server_errors": 3, "requests": 3}])
    })
    .await;
    assert!(got["summary"].as_str().unwrap().contains("GET /boom (3 of 3)"), "{got}");

    // A redeploy logs the same mix: every pattern lists both deployments.
    let (status, out) = server
        .post_bytes("/api/sites/shop/upload?wait=true", pack(source.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let second = out["deployment"]["id"].as_str().unwrap().to_string();
    eventually("the second deployment's errors are clustered", 30, async || {
        got = server.get("/api/sites/shop/metrics/error-patterns?since=10m").await.1;
        got["events"].as_u64() == Some(24)
    })
    .await;
    assert_eq!(templates(&got), expected(2), "{got:#}");
    for p in got["patterns"].as_array().unwrap() {
        let ids: Vec<&str> = p["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deployment_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [first.as_str(), second.as_str()], "{p}");
        assert!(
            p["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["events"] == p["events"].as_u64().unwrap() / 2),
            "{p}"
        );
        assert_eq!(p["all_deployments"], json!([first, second]), "{p}");
        assert_eq!(p["total_events"], p["events"], "{p}");
    }

    // The new deployment's traffic against the one it replaced.
    let (_, before) = server.get(&format!("/api/deployments/{first}")).await;
    assert_eq!(before["traffic"]["current"]["requests"], 3, "{before}");
    assert_eq!(before["traffic"]["current"]["error_rate"], 1.0, "{before}");
    assert_eq!(before["traffic"]["verdict"], "no previous deployment", "{before}");
    for _ in 0..5 {
        assert_eq!(server.edge("shop.localhost", "/").await.0, 200);
    }
    let mut after = Value::Null;
    eventually("the new deployment's traffic is counted", 20, async || {
        after = server.get(&format!("/api/deployments/{second}")).await.1;
        after["traffic"]["current"]["requests"] == 5
    })
    .await;
    let traffic = &after["traffic"];
    assert_eq!(traffic["current"]["error_rate"], 0.0, "{after}");
    assert_eq!(traffic["previous"]["deployment_id"], first.as_str(), "{after}");
    assert_eq!(traffic["previous"]["requests"], 3, "{after}");
    assert_eq!(traffic["error_rate_points"], -100.0, "{after}");
    assert_eq!(traffic["verdict"], "better", "{after}");
    assert!(traffic["current"]["p95_ms"].as_f64().is_some(), "{after}");
    assert!(
        traffic["summary"]
            .as_str()
            .unwrap()
            .contains("0.00% 5xx over 5 requests"),
        "{after}"
    );

    // The limit keeps the busiest; the CLI's flag reads the same tool.
    let (_, top) = server
        .get("/api/sites/shop/metrics/error-patterns?since=10m&limit=1")
        .await;
    assert_eq!(top["patterns"].as_array().unwrap().len(), 1, "{top}");
    assert_eq!(
        top["patterns"][0]["template"],
        "<*> ERROR payment <*> failed for user <*>"
    );
    assert_eq!(top["more_patterns"], 3, "{top}");
    let cli = server.cli(&["metrics", "shop", "--errors", "--since", "10m"]);
    let cli = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.contains("db timeout after <*> ms on <*>"), "{cli}");
    assert!(cli.contains("GET /boom"), "{cli}");

    // A range before the errors has none.
    let (_, none) = server
        .get("/api/sites/shop/metrics/error-patterns?since=3h&until=2h")
        .await;
    assert_eq!(none["events"], 0, "{none}");
    assert!(none["summary"].as_str().unwrap().contains("no error events"), "{none}");

    // The first deployment was stopped after the redeploy's drain: what it wrote on its
    // way out is in its log but is no error pattern.
    eventually("the replaced deployment stops", 60, async || {
        server
            .deployment_log(&first, "runtime")
            .await
            .contains("instance stopped")
    })
    .await;
    let log = server.deployment_log(&first, "runtime").await;
    assert!(log.contains("ERROR shutting down: SIGTERM received"), "{log}");
    // Past the time an open event is completed and saved.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, after_stop) = server.get("/api/sites/shop/metrics/error-patterns?since=10m").await;
    assert_eq!(after_stop["events"], 24, "{after_stop:#}");
    assert_eq!(templates(&after_stop), expected(2), "{after_stop:#}");
}

/// An app that writes `n` distinct error lines (random words, random lengths) to stderr.
fn distinct_lines_app(n: usize) -> tempfile::TempDir {
    app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            &format!(
                r#"import os, random, string, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header('content-length', '2')
        self.end_headers()
        self.wfile.write(b'ok')

word = lambda: ''.join(random.choice(string.ascii_lowercase) for _ in range(8))
for i in range({n}):
    sys.stderr.write(' '.join(word() for _ in range(random.randint(2, 12))) + '\n')
sys.stderr.flush()
HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#
            ),
        ),
    ])
}

#[tokio::test]
async fn a_flood_of_distinct_errors_keeps_at_most_500_templates() {
    let server = TestServer::start_with(&[("BERTH_LOG_RATE", "5000")]).await;
    let db = open_db(server.data.path()).await;
    let source = distinct_lines_app(2000);
    let (status, out) = server
        .post_bytes("/api/sites/noisy/upload?wait=true", pack(source.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());

    let query = async |sql: &'static str| -> u64 {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap_or(0);
        n as u64
    };
    eventually("the flood is stored", 60, async || {
        query("SELECT COUNT(*) FROM deployment_logs WHERE kind = 'runtime' AND stream = 'stderr'").await >= 2000
    })
    .await;
    let mut got = Value::Null;
    eventually("the flood is clustered", 30, async || {
        got = server
            .get("/api/sites/noisy/metrics/error-patterns?since=10m&limit=100")
            .await
            .1;
        let kept = query("SELECT COUNT(*) FROM error_patterns").await;
        assert!(kept <= 500, "{kept} templates kept, over the bound of 500");
        kept == 500 && got["more_patterns"] == 400
    })
    .await;
    // The least recently seen were evicted with their counts; each kept one had one event.
    assert_eq!(got["patterns"].as_array().unwrap().len(), 100, "{}", got["summary"]);
    assert_eq!(got["events"], 500, "{}", got["summary"]);
    assert_eq!(
        query("SELECT COUNT(DISTINCT key) FROM error_pattern_minutes").await,
        500
    );
}

#[tokio::test]
async fn bad_ranges_and_limits_are_refused_with_their_bounds() {
    let server = TestServer::start().await;
    let source = errors_app();
    let (status, out) = server
        .post("/api/sites", &json!({"name": "shop", "repo": s(source.path())}))
        .await;
    assert!(status < 300, "{out}");
    for (query, needle) in [
        ("limit=0", "give 1 to 100"),
        ("limit=101", "give 1 to 100"),
        ("since=1h&until=2h", "is not before until"),
        ("until=2099-01-01T00:00:00Z", "in the future"),
        ("since=401d", "kept 400 days"),
        ("since=yesterday", "neither a duration"),
        ("environment=nowhere", "nowhere"),
    ] {
        let (status, out) = server
            .get(&format!("/api/sites/shop/metrics/error-patterns?{query}"))
            .await;
        assert!((400..500).contains(&status), "{query}: {status} {out}");
        assert!(out.to_string().contains(needle), "{query}: {out}");
    }
    let (status, out) = server.get("/api/sites/nowhere/metrics/error-patterns").await;
    assert_eq!(status, 404, "{out}");
}
