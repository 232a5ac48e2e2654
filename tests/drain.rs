//! Draining an old deployment's instance after a switch: requests in flight through the
//! edge finish (up to the site's `drain_seconds`), an instance with nothing in flight stops
//! at once, and a WebSocket to it is told to go away (close frame 1001) at the deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn mcp(server: &TestServer) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(KEY.to_string());
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP client connects")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &'static str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap_or_default());
    client.call_tool(params).await.expect("tool call")
}

/// A dependency-free Node app: `/slow` answers after `slow_ms`, `/` answers `version`, and
/// a WebSocket upgrade is accepted and greeted with a text frame `hello <version>`.
fn drain_app(version: &str, slow_ms: u64) -> tempfile::TempDir {
    app(&[
        (
            "package.json",
            r#"{"name":"drain","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        ("server.js", &server_js(version, slow_ms)),
    ])
}

fn server_js(version: &str, slow_ms: u64) -> String {
    format!(
        r#"const http = require('http');
const crypto = require('crypto');
const server = http.createServer((req, res) => {{
  if (req.url === '/slow') {{ setTimeout(() => res.end('slow {version}'), {slow_ms}); return; }}
  res.end('{version}');
}});
server.on('upgrade', (req, socket) => {{
  const accept = crypto.createHash('sha1')
    .update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n');
  const text = Buffer.from('hello {version}');
  socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
  socket.on('data', () => {{}});
  socket.on('error', () => {{}});
}});
server.listen(process.env.PORT, () => console.log('listening on ' + process.env.PORT));
"#
    )
}

/// Writes version `version` of the app into the repository and commits it.
fn new_version(repo: &std::path::Path, version: &str, slow_ms: u64) {
    std::fs::write(repo.join("server.js"), server_js(version, slow_ms)).unwrap();
    git_commit(repo, version);
}

/// Creates a site from a git repository of the app and waits for it to be live.
async fn live_site(server: &TestServer, name: &str, repo: &std::path::Path, extra: Value) {
    git_init(repo);
    let mut body = json!({"name": name, "repo": format!("file://{}", s(repo)), "wait": true});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let (status, out) = server.post("/api/sites", &body).await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
}

/// Deploys the site's newest commit and waits until it is live.
async fn redeploy(server: &TestServer, site: &str) {
    let (_, out) = server
        .post(&format!("/api/sites/{site}/deploy"), &json!({"wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
}

#[tokio::test]
async fn a_long_request_in_flight_finishes_after_a_redeploy() {
    let server = TestServer::start().await;
    let repo = drain_app("v1", 14_000);
    live_site(&server, "longreq", repo.path(), json!({})).await;

    // A request that takes 14 s, to the deployment about to be replaced.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let edge = format!("http://127.0.0.1:{}/slow", server.edge_port);
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let r = http.get(edge).header("host", "longreq.localhost").send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default(), Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(800)).await;

    new_version(repo.path(), "v2", 14_000);
    redeploy(&server, "longreq").await;
    let live_at = Instant::now();
    assert_eq!(server.edge("longreq.localhost", "/").await, (200, "v2".to_string()));

    let (status, body, done_at) = slow.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "slow v1"),
        "the request in flight to the old deployment was cut off after {:?}",
        started.elapsed()
    );
    assert!(
        done_at > live_at,
        "the request finished before the switch; make it slower"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(13),
        "answered early: {:?}",
        started.elapsed()
    );
}

/// Node processes (not their `sh` parents) whose command line contains `needle`.
fn app_processes(needle: &str) -> usize {
    processes_matching(needle)
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with("node "))
        .count()
}

#[tokio::test]
async fn an_old_instance_with_nothing_in_flight_stops_right_after_the_switch() {
    let server = TestServer::start().await;
    let repo = drain_app("v1", 0);
    live_site(
        &server,
        "quickdrain",
        repo.path(),
        json!({"start_command": "node server.js quickdrain-old"}),
    )
    .await;
    let (_, site) = server.get("/api/sites/quickdrain").await;
    assert_eq!(site["drain_seconds"], 30, "the default: {site}");
    assert_eq!(app_processes("quickdrain-old"), 1);

    // The CLI sets it, clears it back to the default, and refuses a bad value.
    let out = server.cli(&["sites", "update", "quickdrain", "--drain-seconds", "45"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("changed: drain_seconds"), "{stdout}");
    assert!(stdout.contains("up to 45 s"), "{stdout}");
    let (_, site) = server.get("/api/sites/quickdrain").await;
    assert_eq!(site["drain_seconds"], 45, "{site}");
    let out = server.cli(&["sites", "update", "quickdrain", "--drain-seconds", "-1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from 0 to 600"), "{stderr}");
    let out = server.cli(&["sites", "update", "quickdrain", "--clear", "drain_seconds", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["settings"]["drain_seconds"], 30, "{json}");

    let (status, out) = server
        .patch(
            "/api/sites/quickdrain",
            &json!({"start_command": "node server.js quickdrain-new"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    redeploy(&server, "quickdrain").await;
    let live_at = Instant::now();
    // Nothing is in flight to the old instance: it stops long before its 30 s.
    while app_processes("quickdrain-old") > 0 {
        assert!(
            live_at.elapsed() < Duration::from_secs(3),
            "the old instance still runs {:?} after the switch with nothing in flight",
            live_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app_processes("quickdrain-new"), 1);
    assert_eq!(server.edge("quickdrain.localhost", "/").await, (200, "v1".to_string()));
}

/// Opens a WebSocket through the edge to `host`; returns the stream after the 101 and the
/// bytes that came with or after it.
async fn websocket(server: &TestServer, host: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", server.edge_port)).await.unwrap();
    let request = format!(
        "GET /socket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the upgrade is answered")
            .unwrap();
        assert!(
            n > 0,
            "the edge closed before answering: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (stream, got[head_end..].to_vec())
}

/// Reads server frames (unmasked, payload under 126 bytes) until `count` have arrived or
/// the stream ends; returns (opcode, payload) pairs.
async fn read_frames(
    stream: &mut TcpStream,
    mut pending: Vec<u8>,
    count: usize,
    within: Duration,
) -> Vec<(u8, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while pending.len() >= 2 && pending.len() >= 2 + usize::from(pending[1] & 0x7F) {
            let len = usize::from(pending[1] & 0x7F);
            assert!(len < 126, "unexpected long frame");
            frames.push((pending[0] & 0x0F, pending[2..2 + len].to_vec()));
            pending.drain(..2 + len);
        }
        if frames.len() >= count {
            return frames;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => return frames,
        }
    }
}

#[tokio::test]
async fn a_websocket_to_the_old_deployment_is_told_to_go_away_at_the_drain_deadline() {
    let server = TestServer::start().await;
    let repo = drain_app("v1", 0);
    live_site(&server, "sockets", repo.path(), json!({})).await;

    // Bad drain periods are refused with the bound named, and change nothing (not even
    // the other settings of the same call), over MCP and REST alike.
    let client = mcp(&server).await;
    for bad in [json!(-1), json!(100000)] {
        let r = call(
            &client,
            "HOSTING_UPDATE_SITE",
            json!({"site": "sockets", "drain_seconds": bad, "start_command": "node x.js"}),
        )
        .await;
        assert_eq!(r.is_error, Some(true), "{r:?}");
        assert!(
            format!("{r:?}").contains("drain_seconds must be from 0 to 600"),
            "{r:?}"
        );
        let (status, out) = server
            .patch(
                "/api/sites/sockets",
                &json!({"drain_seconds": bad, "start_command": "node x.js"}),
            )
            .await;
        assert_eq!(status, 400, "{out}");
        let message = out["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("drain_seconds must be from 0 to 600"), "{out}");
    }
    let site = call(&client, "HOSTING_GET_SITE", json!({"site": "sockets"})).await;
    let site = site.structured_content.expect("structured content");
    assert_eq!(site["drain_seconds"], 30, "{site}");
    assert_eq!(site["build_settings"]["start_command"], Value::Null, "{site}");

    let r = call(
        &client,
        "HOSTING_UPDATE_SITE",
        json!({"site": "sockets", "drain_seconds": 2}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{r:?}");
    let out = r.structured_content.expect("structured content");
    assert_eq!(out["changed"], json!(["drain_seconds"]), "{out}");
    assert_eq!(out["settings"]["drain_seconds"], 2, "{out}");
    let site = call(&client, "HOSTING_GET_SITE", json!({"site": "sockets"})).await;
    assert_eq!(site.structured_content.expect("structured content")["drain_seconds"], 2);

    let (mut socket, pending) = websocket(&server, "sockets.localhost").await;
    let greeting = read_frames(&mut socket, pending, 1, Duration::from_secs(10)).await;
    assert_eq!(greeting, vec![(0x1, b"hello v1".to_vec())]);

    new_version(repo.path(), "v2", 0);
    redeploy(&server, "sockets").await;
    let live_at = Instant::now();

    let frames = read_frames(&mut socket, Vec::new(), 1, Duration::from_secs(15)).await;
    let elapsed = live_at.elapsed();
    assert_eq!(
        frames.len(),
        1,
        "no close frame: the connection was cut after {elapsed:?}"
    );
    let (opcode, payload) = &frames[0];
    assert_eq!(*opcode, 0x8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001, "going away");
    assert_eq!(&payload[2..], b"going away");
    // At the deadline, not before: the open WebSocket kept the old instance draining.
    assert!(
        elapsed >= Duration::from_millis(1500),
        "closed {elapsed:?} after the switch, before the 2 s drain period"
    );
    // Then the edge hangs up.
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut rest))
        .await
        .expect("the edge closes the connection after its close frame")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing follows the close frame");

    // A new connection reaches the new deployment.
    let (mut socket, pending) = websocket(&server, "sockets.localhost").await;
    let greeting = read_frames(&mut socket, pending, 1, Duration::from_secs(10)).await;
    assert_eq!(greeting, vec![(0x1, b"hello v2".to_vec())]);
}
