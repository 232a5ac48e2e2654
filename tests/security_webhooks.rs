//! `/hooks/github` takes no API key, so it is where anyone can send bytes: it reads
//! nothing before a delivery can be authentic, and what it reads before the signature
//! checks out is hashed as it streams, never held in memory.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A resident-set figure of the server from /proc, in KiB (`VmRSS`, or `VmHWM`: the peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .trim()
                .strip_suffix(" kB")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Sends a `POST /hooks/github` declaring a body of `size` bytes over a raw connection,
/// writing as much of it as the server takes; returns the status line it answered with
/// and how many body bytes were written before that.
async fn post_large(port: u16, size: usize, signature: Option<&str>) -> (String, usize) {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut head = format!(
        "POST /hooks/github HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-github-event: push\r\nx-github-delivery: d-{size}\r\ncontent-length: {size}\r\n"
    );
    if let Some(sig) = signature {
        head.push_str(&format!("x-hub-signature-256: {sig}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            match tokio::time::timeout(Duration::from_secs(30), write.write_all(&chunk[..n])).await {
                Ok(Ok(())) => sent += n,
                _ => break,
            }
        }
        // The write half stays open until the answer is read: a half-closed connection
        // is a closed one to the server.
        (sent, write)
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut answer)).await;
    let (sent, _write) = writer.await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    (text.lines().next().unwrap_or_default().to_string(), sent)
}

#[tokio::test]
async fn unsigned_large_posts_are_refused_unread_and_cost_no_memory() {
    let server = TestServer::start().await;
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = memory_kib(pid, "VmRSS");
    const SIZE: usize = 16 * 1024 * 1024;
    let posts: Vec<_> = (0..12)
        .map(|_| tokio::spawn(post_large(server.api_port, SIZE, None)))
        .collect();
    for post in posts {
        let (status, sent) = post.await.unwrap();
        assert!(status.contains(" 401 "), "{status}");
        assert!(sent < SIZE, "the whole body was taken in before the refusal");
    }
    let peak = memory_kib(pid, "VmHWM");
    assert!(
        peak.saturating_sub(before) < 32 * 1024,
        "12 unsigned 16 MB posts raised berth's resident memory from {before} KiB to a peak of {peak} KiB"
    );
    // Nothing is configured to sign deliveries: a signed one is refused at once too.
    let (status, sent) = post_large(server.api_port, SIZE, Some("sha256=00")).await;
    assert!(status.contains(" 404 "), "{status}");
    assert!(sent < SIZE);
}

#[tokio::test]
async fn mis_signed_large_posts_are_hashed_as_they_stream_not_held() {
    let server = TestServer::start().await;
    let (status, out) = server
        .patch(
            "/api/config/github",
            &json!({ "config": { "webhook_secret": "a-webhook-secret-of-this-server" } }),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = memory_kib(pid, "VmRSS");
    const SIZE: usize = 16 * 1024 * 1024;
    // Two waves as wide as the intake (4 bodies read at once): wider, a loaded machine
    // can keep the later ones waiting past their slot wait, and they are turned away.
    for _ in 0..2 {
        let posts: Vec<_> = (0..4)
            .map(|_| tokio::spawn(post_large(server.api_port, SIZE, Some("sha256=00"))))
            .collect();
        for post in posts {
            let (status, sent) = post.await.unwrap();
            // Read to the end (the signature covers all of it), then refused.
            assert!(status.contains(" 401 "), "{status}");
            assert_eq!(sent, SIZE);
        }
    }
    let peak = memory_kib(pid, "VmHWM");
    assert!(
        peak.saturating_sub(before) < 32 * 1024,
        "mis-signed 16 MB posts raised berth's resident memory from {before} KiB to a peak of {peak} KiB"
    );
    // Over GitHub's cap: refused from the declared length alone.
    let (status, sent) = post_large(server.api_port, 26 * 1024 * 1024, Some("sha256=00")).await;
    assert!(status.contains(" 413 "), "{status}");
    assert!(sent < 26 * 1024 * 1024);
    // No spool file is left behind.
    let left: Vec<_> = std::fs::read_dir(server.data.path().join("uploads"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
