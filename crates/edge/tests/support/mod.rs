//! Test harness: a real edge on 127.0.0.1, real upstream HTTP servers, and a
//! raw HTTP/1.1 client that sends exactly the bytes a test writes (so odd
//! paths and headers reach the edge unmodified).

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_edge::{Edge, EdgeConfig, EdgeRouteTable};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running edge plus the handle to stop it.
pub struct TestEdge {
    pub edge: Arc<Edge>,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub served: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestEdge {
    /// Triggers graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

pub async fn start_edge(config: EdgeConfig, table: EdgeRouteTable) -> TestEdge {
    let edge = Edge::new(config);
    edge.replace_routes(table);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(Arc::clone(&edge).serve(listener, async move {
        let _ = rx.await;
    }));
    TestEdge {
        edge,
        addr,
        shutdown: Some(tx),
        served: Some(served),
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` verbatim on a fresh connection and reads the response
/// until the server closes (requests should say `Connection: close`).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        parse_response(&buf)
    })
    .await
    .expect("edge answered in time")
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    request(addr, "GET", host, path, &[]).await
}

pub async fn request(addr: SocketAddr, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    let mut has_connection = false;
    for (name, value) in headers {
        has_connection |= name.eq_ignore_ascii_case("connection");
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_connection {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

pub async fn post(addr: SocketAddr, host: &str, path: &str, body: &[u8]) -> Resp {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req).await
}

pub fn parse_response(buf: &[u8]) -> Resp {
    let end = find(buf, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Resp { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").expect("chunk size line");
        let size_str = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A real HTTP/1.1 app server named `name`. Paths:
/// - `/echo`: answers the request body;
/// - `/headers`: answers the received headers as sorted `name: value` lines;
/// - `/slow?ms=N`: waits N ms, then answers `slow done <name>`;
/// - `/hop`: answers with hop-by-hop headers that must not reach clients;
/// - `/name`: answers `<name>`;
/// - anything else: `<name> <METHOD> <path?query>`.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests answered.
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
}

pub async fn spawn_upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let conns = Arc::new(AtomicUsize::new(0));
    let conn_counter = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            conn_counter.fetch_add(1, Ordering::SeqCst);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    app(name, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, hits, conns }
}

async fn app(name: &'static str, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let reply = |body: String| Response::new(Full::new(Bytes::from(body)));
    Ok(match path.as_str() {
        "/echo" => match req.into_body().collect().await {
            Ok(body) => Response::new(Full::new(body.to_bytes())),
            Err(_) => {
                let mut res = reply("truncated body".into());
                *res.status_mut() = StatusCode::BAD_REQUEST;
                res
            }
        },
        "/headers" => {
            let mut lines: Vec<String> = req
                .headers()
                .iter()
                .map(|(n, v)| format!("{}: {}", n, v.to_str().unwrap_or("?")))
                .collect();
            lines.sort();
            reply(lines.join("\n"))
        }
        "/slow" => {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            reply(format!("slow done {name}"))
        }
        "/hop" => Response::builder()
            .header("connection", "x-upstream-secret")
            .header("x-upstream-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-visible", "yes")
            .body(Full::new(Bytes::from_static(b"hop")))
            .unwrap(),
        "/name" => reply(name.to_string()),
        _ => reply(format!(
            "{name} {} {}",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        )),
    })
}

/// An address nothing listens on (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
