//! The tap keeps a site's slot while one of its requests is under way, across drains, and
//! lets it go once no request holds it, including a request whose client went away
//! before it was answered.

mod support;

use std::sync::Arc;
use std::time::Duration;

use berth_edge::{EdgeConfig, EdgeRouteTable, RouteLabel, RouteTarget};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const HOST: &str = "slow.localhost";

/// An edge routing [`HOST`] (labelled) to `upstream`.
async fn labelled_edge(upstream: std::net::SocketAddr) -> TestEdge {
    let mut table = EdgeRouteTable::new();
    table.insert(
        HOST,
        RouteTarget::Upstream {
            instances: vec![upstream],
        },
    );
    assert!(table.label(
        HOST,
        RouteLabel {
            site: Arc::from("site_slow"),
            environment: Arc::from("env_slow"),
            deployment: Arc::from("dpl_slow"),
        },
    ));
    start_edge(EdgeConfig::default(), table).await
}

/// Reads one request head from `conn`.
async fn read_head(conn: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while find(&buf, b"\r\n\r\n").is_none() {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the edge closed before sending a request");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_response_streaming_across_drains_is_counted_whole_once_it_ends() {
    // The app sends its head and half its body, then waits to be told to finish.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (finish, finish_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        read_head(&mut conn).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n")
            .await
            .unwrap();
        conn.write_all(&[b'a'; 1000]).await.unwrap();
        let _ = finish_rx.await;
        conn.write_all(&[b'b'; 1000]).await.unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
    });
    let edge = labelled_edge(upstream).await;
    let mut client = TcpStream::connect(edge.addr).await.unwrap();
    client
        .write_all(format!("GET /download HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Wait until the first half arrived: the response is under way.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while got.len() < 1000 || find(&got, b"\r\n\r\n").is_none_or(|h| got.len() - h - 4 < 1000) {
        let n = tokio::time::timeout(TIMEOUT, client.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    // Two drains while it streams: the first takes the request's count, the second sees
    // an interval without a new request but one under way, which must keep the slot.
    let first = edge.edge.drain_tap();
    assert_eq!(first.sites.len(), 1, "{first:?}");
    assert_eq!(first.sites[0].requests, 1);
    let second = edge.edge.drain_tap();
    assert!(second.sites.iter().all(|s| s.requests == 0), "{second:?}");
    assert_eq!(
        edge.edge.tap_footprint().sites,
        1,
        "the slot is kept while its response streams"
    );

    finish.send(()).unwrap();
    let head = find(&got, b"\r\n\r\n").unwrap() + 4;
    while got.len() - head < 2000 {
        let n = tokio::time::timeout(TIMEOUT, client.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    drop(client);
    // The body is counted once the edge has let go of it, just after the client got it.
    let mut bytes_out = 0;
    for _ in 0..100 {
        let drained = edge.edge.drain_tap();
        bytes_out += drained.sites.iter().map(|s| s.bytes_out).sum::<u64>();
        if bytes_out >= 2000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        bytes_out, 2000,
        "the whole body is counted once, after the drains it streamed across"
    );
    // Nothing under way any more: the idle slot is let go.
    let _ = edge.edge.drain_tap();
    assert_eq!(edge.edge.tap_footprint().sites, 0);
}

#[tokio::test]
async fn a_request_whose_client_leaves_before_the_answer_lets_go_of_its_slot() {
    // The app reads the request and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (arrived, arrived_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        read_head(&mut conn).await;
        let _ = arrived.send(());
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
    });
    let edge = labelled_edge(upstream).await;
    let mut client = TcpStream::connect(edge.addr).await.unwrap();
    client
        .write_all(format!("GET /hang HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, arrived_rx).await.unwrap().unwrap();
    let _ = edge.edge.drain_tap();
    assert_eq!(edge.edge.tap_footprint().sites, 1, "kept while the request waits");
    // The client goes away: the edge drops the request unanswered.
    drop(client);
    let mut footprint = 1;
    for _ in 0..100 {
        let _ = edge.edge.drain_tap();
        footprint = edge.edge.tap_footprint().sites;
        if footprint == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(footprint, 0, "an abandoned request must not keep its slot forever");
}
