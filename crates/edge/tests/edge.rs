//! End-to-end tests of the edge over real sockets: static sites, reverse
//! proxying to real upstream servers, WebSocket passthrough, route swaps and
//! graceful shutdown.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_edge::{EdgeConfig, EdgeRouteTable, RouteTarget};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "TOP SECRET CONTENT";
const BIG_LEN: usize = 300 * 1024;

fn big_content() -> Vec<u8> {
    (0..BIG_LEN).map(|i| (i % 251) as u8).collect()
}

/// Creates `<tmp>/site` (a full static site with a custom 404 page and
/// symlinks), `<tmp>/spa` (only an index) and `<tmp>/outside/secret.txt`.
fn make_sites() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    let spa = tmp.path().join("spa");
    let outside = tmp.path().join("outside");
    for dir in [&site, &spa, &outside, &site.join("docs")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let write = |p: &Path, s: &[u8]| std::fs::write(p, s).unwrap();
    write(&site.join("index.html"), b"<h1>home</h1>");
    write(&site.join("about.html"), b"about page");
    write(&site.join("docs/index.html"), b"docs index");
    write(&site.join("style.css"), b"body{color:red}");
    write(&site.join("app.js"), b"console.log(1)");
    write(&site.join("404.html"), b"custom not found");
    write(&site.join("big.bin"), &big_content());
    write(&spa.join("index.html"), b"spa shell");
    write(&outside.join("secret.txt"), SECRET.as_bytes());
    write(&tmp.path().join("secret.txt"), SECRET.as_bytes());
    std::os::unix::fs::symlink(outside.join("secret.txt"), site.join("link-out")).unwrap();
    std::os::unix::fs::symlink(&outside, site.join("dir-out")).unwrap();
    std::os::unix::fs::symlink(site.join("about.html"), site.join("link-in.html")).unwrap();
    tmp
}

async fn static_edge() -> (TestEdge, tempfile::TempDir) {
    let tmp = make_sites();
    let mut table = EdgeRouteTable::new();
    table.insert(
        "site.test",
        RouteTarget::Static {
            root: tmp.path().join("site"),
            jail: tmp.path().join("site").canonicalize().unwrap(),
            spa_fallback: false,
        },
    );
    table.insert(
        "spa.test",
        RouteTarget::Static {
            root: tmp.path().join("spa"),
            jail: tmp.path().join("spa").canonicalize().unwrap(),
            spa_fallback: true,
        },
    );
    table.insert(
        "nospa.test",
        RouteTarget::Static {
            root: tmp.path().join("spa"),
            jail: tmp.path().join("spa").canonicalize().unwrap(),
            spa_fallback: false,
        },
    );
    (start_edge(EdgeConfig::default(), table).await, tmp)
}

fn upstream_table(host: &str, instances: &[std::net::SocketAddr]) -> EdgeRouteTable {
    let mut table = EdgeRouteTable::new();
    table.insert(
        host,
        RouteTarget::Upstream {
            instances: instances.to_vec(),
        },
    );
    table
}

fn assert_edge_page(resp: &Resp, status: u16, title: &str) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        resp.text().contains(&format!("<title>{status} {title}</title>")),
        "{}",
        resp.text()
    );
}

// ---------------------------------------------------------------- static

#[tokio::test]
async fn static_index_and_content_types() {
    let (edge, _tmp) = static_edge().await;
    let r = get(edge.addr, "site.test", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<h1>home</h1>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=0, must-revalidate"));
    assert_eq!(r.header("content-length"), Some("13"));
    assert!(r.header("last-modified").is_some());

    let r = get(edge.addr, "site.test", "/style.css").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body{color:red}");
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));

    let r = get(edge.addr, "site.test", "/app.js").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"));

    let r = get(edge.addr, "site.test", "/index.html?v=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<h1>home</h1>");
}

#[tokio::test]
async fn static_clean_urls() {
    let (edge, _tmp) = static_edge().await;
    for (path, body) in [
        ("/about", "about page"),
        ("/about.html", "about page"),
        ("/docs", "docs index"),
        ("/docs/", "docs index"),
        ("/docs/index.html", "docs index"),
        ("/link-in", "about page"),
    ] {
        let r = get(edge.addr, "site.test", path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), body, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
    }
}

#[tokio::test]
async fn static_etag_and_conditional_requests() {
    let (edge, _tmp) = static_edge().await;
    let first = get(edge.addr, "site.test", "/style.css").await;
    let etag = first.header("etag").expect("etag").to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let last_modified = first.header("last-modified").unwrap().to_string();

    let r = request(edge.addr, "GET", "site.test", "/style.css", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = request(
        edge.addr,
        "GET",
        "site.test",
        "/style.css",
        &[("If-None-Match", "\"stale\", W/\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body{color:red}");

    let r = request(
        edge.addr,
        "GET",
        "site.test",
        "/style.css",
        &[("If-Modified-Since", &last_modified)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn static_head_has_length_but_no_body() {
    let (edge, _tmp) = static_edge().await;
    let r = request(edge.addr, "HEAD", "site.test", "/about", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.is_empty());

    let r = request(edge.addr, "HEAD", "site.test", "/big.bin", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(BIG_LEN.to_string().as_str()));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn static_streams_large_files() {
    let (edge, _tmp) = static_edge().await;
    let r = get(edge.addr, "site.test", "/big.bin").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-length"), Some(BIG_LEN.to_string().as_str()));
    assert!(r.body == big_content(), "big file body differs");
}

#[tokio::test]
async fn static_rejects_other_methods() {
    let (edge, _tmp) = static_edge().await;
    let r = post(edge.addr, "site.test", "/", b"x").await;
    assert_edge_page(&r, 405, "Method Not Allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn static_404_pages() {
    let (edge, _tmp) = static_edge().await;
    // The site's own 404.html, with status 404.
    let r = get(edge.addr, "site.test", "/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "custom not found");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));

    // No 404.html and no SPA fallback: the edge's own page.
    let r = get(edge.addr, "nospa.test", "/nope").await;
    assert_edge_page(&r, 404, "Not Found");
}

#[tokio::test]
async fn static_spa_fallback() {
    let (edge, _tmp) = static_edge().await;
    for path in ["/dashboard", "/users/42/settings", "/"] {
        let r = get(edge.addr, "spa.test", path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), "spa shell", "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
}

#[tokio::test]
async fn static_path_traversal_is_refused() {
    let (edge, _tmp) = static_edge().await;
    // Rejected while decoding the path: the edge's plain 404, never the
    // site's fallback and never the file.
    for path in [
        "/../secret.txt",
        "/../outside/secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/docs/..%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/index.html%00.css",
        "/.hidden",
    ] {
        let r = get(edge.addr, "site.test", path).await;
        assert_edge_page(&r, 404, "Not Found");
        assert!(!r.text().contains(SECRET), "{path} leaked the secret");
    }
    // Symlinks leading out of the root resolve outside it: treated as
    // missing, so the site's own 404 page answers.
    for path in ["/link-out", "/dir-out/secret.txt"] {
        let r = get(edge.addr, "site.test", path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.text(), "custom not found", "{path}");
    }
    // SPA fallback must not turn a traversal attempt into content either.
    let r = get(edge.addr, "spa.test", "/%2e%2e/secret.txt").await;
    assert_edge_page(&r, 404, "Not Found");
}

/// A deployment as the control plane lays it out: `<tmp>/deploy/app` (the jail) with its
/// static output in `dist` and other files beside it, plus `<tmp>/host`, a host folder
/// standing in for the data dir (a site of its own and a secret).
fn make_deployment() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("deploy/app");
    let host = tmp.path().join("host");
    for dir in [&app.join("dist"), &app.join("shared"), &host] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(app.join("dist/index.html"), "own index").unwrap();
    std::fs::write(app.join("shared/logo.txt"), "own logo").unwrap();
    std::fs::write(host.join("index.html"), "host index").unwrap();
    std::fs::write(host.join("master.key"), SECRET).unwrap();
    std::os::unix::fs::symlink("../shared/logo.txt", app.join("dist/logo.txt")).unwrap();
    std::os::unix::fs::symlink(app.join("shared"), app.join("dist/shared")).unwrap();
    std::os::unix::fs::symlink(host.join("master.key"), app.join("dist/key.txt")).unwrap();
    std::os::unix::fs::symlink(&host, app.join("dist/data")).unwrap();
    (tmp, app.canonicalize().unwrap(), host)
}

fn jailed(root: std::path::PathBuf, jail: std::path::PathBuf) -> EdgeRouteTable {
    let mut table = EdgeRouteTable::new();
    table.insert(
        "site.test",
        RouteTarget::Static {
            root,
            jail,
            spa_fallback: false,
        },
    );
    table
}

async fn assert_not_served(edge: &TestEdge, paths: &[&str]) {
    for path in paths {
        let r = get(edge.addr, "site.test", path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains(SECRET), "{path} leaked the secret");
        assert!(!r.text().contains("host index"), "{path} served a host file");
    }
}

#[tokio::test]
async fn static_links_out_of_the_deployment_are_404_and_links_inside_it_work() {
    let (_tmp, app, _host) = make_deployment();
    let edge = start_edge(EdgeConfig::default(), jailed(app.join("dist"), app.clone())).await;
    assert_not_served(&edge, &["/key.txt", "/data/master.key", "/data/index.html", "/data/"]).await;
    // Links that stay inside the deployment are served, even from beside the root.
    for (path, body) in [
        ("/", "own index"),
        ("/logo.txt", "own logo"),
        ("/shared/logo.txt", "own logo"),
    ] {
        let r = get(edge.addr, "site.test", path).await;
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
    }
}

#[tokio::test]
async fn a_static_root_that_is_a_symlink_out_of_the_deployment_serves_nothing() {
    let (_tmp, app, host) = make_deployment();
    std::os::unix::fs::symlink(&host, app.join("public")).unwrap();
    let edge = start_edge(EdgeConfig::default(), jailed(app.join("public"), app.clone())).await;
    assert_not_served(&edge, &["/", "/index.html", "/master.key", "/nothing-here"]).await;
}

#[tokio::test]
async fn a_static_root_pivoted_to_a_host_folder_after_the_route_was_built_serves_nothing() {
    // The attack: the root is a real folder when the route is built, and is then
    // replaced by a link to a host folder standing in for the data dir. The edge must
    // not depend on the deployment staying as it was when its route was built.
    let (_tmp, app, host) = make_deployment();
    let edge = start_edge(EdgeConfig::default(), jailed(app.join("dist"), app.clone())).await;
    assert_eq!(get(edge.addr, "site.test", "/").await.text(), "own index");
    std::fs::rename(app.join("dist"), app.join("old-dist")).unwrap();
    std::os::unix::fs::symlink(&host, app.join("dist")).unwrap();
    assert_not_served(&edge, &["/", "/index.html", "/master.key"]).await;
}

// ---------------------------------------------------------------- hosts

#[tokio::test]
async fn unknown_host_is_404_with_escaped_host() {
    let (edge, _tmp) = static_edge().await;
    let r = get(edge.addr, "<img src=x onerror=alert(1)>.test", "/").await;
    assert_edge_page(&r, 404, "Not Found");
    let text = r.text();
    assert!(
        text.contains("No site is deployed at <strong>&lt;img src=x onerror=alert(1)&gt;.test</strong>"),
        "{text}"
    );
    assert!(!text.contains("<img"), "{text}");
}

#[tokio::test]
async fn missing_host_is_400() {
    let (edge, _tmp) = static_edge().await;
    let r = raw(edge.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_edge_page(&r, 400, "Bad Request");
}

#[tokio::test]
async fn host_port_and_case_are_ignored() {
    let (edge, _tmp) = static_edge().await;
    for host in ["SITE.test:8080", "site.test.", "Site.Test"] {
        let r = get(edge.addr, host, "/about").await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.text(), "about page", "{host}");
    }
}

#[tokio::test]
async fn unavailable_pages() {
    let mut table = EdgeRouteTable::new();
    table.insert(
        "down.test",
        RouteTarget::Unavailable {
            site: "shop".into(),
            status: 503,
            message: "Deploying <v2> & migrating".into(),
            retry_after_seconds: Some(30),
        },
    );
    table.insert(
        "broken.test",
        RouteTarget::Unavailable {
            site: "blog".into(),
            status: 502,
            message: "The app crashed".into(),
            retry_after_seconds: Some(30),
        },
    );
    let edge = start_edge(EdgeConfig::default(), table).await;

    let r = get(edge.addr, "down.test", "/anything").await;
    assert_edge_page(&r, 503, "Service Unavailable");
    assert_eq!(r.header("retry-after"), Some("30"));
    assert!(r.text().contains("<strong>shop</strong>"), "{}", r.text());
    assert!(
        r.text().contains("Deploying &lt;v2&gt; &amp; migrating"),
        "{}",
        r.text()
    );

    let r = get(edge.addr, "broken.test", "/").await;
    assert_edge_page(&r, 502, "Bad Gateway");
    assert_eq!(r.header("retry-after"), None);
    assert!(r.text().contains("<strong>blog</strong>"));
    assert!(r.text().contains("The app crashed"));
}

// ---------------------------------------------------------------- proxy

#[tokio::test]
async fn proxy_get_forwards_method_path_and_query() {
    let up = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[up.addr])).await;
    let r = get(edge.addr, "app.test", "/hello/world?x=1&y=%20").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a GET /hello/world?x=1&y=%20");

    let r = request(edge.addr, "DELETE", "app.test", "/items/7", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a DELETE /items/7");

    let r = request(edge.addr, "HEAD", "app.test", "/name", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1"));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn proxy_post_body_echo() {
    let up = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[up.addr])).await;
    let r = post(edge.addr, "app.test", "/echo", b"ping pong").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ping pong");

    // A chunked request body is streamed through as well.
    let r = raw(
        edge.addr,
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");

    // Larger than one buffer, both ways.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let r = post(edge.addr, "app.test", "/echo", &big).await;
    assert_eq!(r.status, 200);
    assert!(r.body == big, "echoed body differs");
}

#[tokio::test]
async fn proxy_sets_forwarded_headers_and_keeps_host() {
    let up = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[up.addr])).await;
    let r = request(
        edge.addr,
        "GET",
        "App.Test:8080",
        "/headers",
        &[("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen: Vec<String> = r.text().lines().map(str::to_string).collect();
    for expected in [
        "host: App.Test:8080",
        "x-forwarded-for: 203.0.113.7, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: App.Test:8080",
    ] {
        assert!(seen.iter().any(|l| l == expected), "{expected} in {seen:?}");
    }
    assert_eq!(seen.iter().filter(|l| l.starts_with("x-forwarded-for:")).count(), 1);
}

#[tokio::test]
async fn proxy_strips_hop_by_hop_headers() {
    let up = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[up.addr])).await;
    let r = request(
        edge.addr,
        "GET",
        "app.test",
        "/headers",
        &[
            ("Connection", "close, X-Drop-Me"),
            ("X-Drop-Me", "1"),
            ("Keep-Alive", "timeout=300"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("X-Keep", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.lines().any(|l| l == "x-keep: yes"), "{text}");
    for dropped in ["x-drop-me:", "keep-alive:", "proxy-connection:", "te:", "connection:"] {
        assert!(
            !text.lines().any(|l| l.starts_with(dropped)),
            "{dropped} reached the app: {text}"
        );
    }

    // And on the way back.
    let r = get(edge.addr, "app.test", "/hop").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hop");
    assert_eq!(r.header("x-visible"), Some("yes"));
    assert_eq!(r.header("x-upstream-secret"), None);
    assert_eq!(r.header("keep-alive"), None);
}

#[tokio::test]
async fn proxy_rejects_declared_oversized_body_up_front() {
    let up = spawn_upstream("a").await;
    let config = EdgeConfig {
        max_request_body_bytes: 1024,
        ..EdgeConfig::default()
    };
    let edge = start_edge(config, upstream_table("app.test", &[up.addr])).await;
    // Only the head is sent: the edge must answer without waiting for a body.
    let r = raw(
        edge.addr,
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_edge_page(&r, 413, "Payload Too Large");
    assert!(r.text().contains("1 KiB"), "{}", r.text());
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Exactly at the limit is fine.
    let r = post(edge.addr, "app.test", "/echo", &[b'x'; 1024]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1024);
}

#[tokio::test]
async fn proxy_cuts_off_oversized_streamed_body() {
    let up = spawn_upstream("a").await;
    let config = EdgeConfig {
        max_request_body_bytes: 1024,
        ..EdgeConfig::default()
    };
    let edge = start_edge(config, upstream_table("app.test", &[up.addr])).await;
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n"
            .to_vec();
    req.extend_from_slice(&[b'y'; 2048]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw(edge.addr, &req).await;
    assert_edge_page(&r, 413, "Payload Too Large");
}

#[tokio::test]
async fn proxy_502_when_app_is_down() {
    let dead = dead_addr().await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[dead])).await;
    let r = get(edge.addr, "app.test", "/").await;
    assert_edge_page(&r, 502, "Bad Gateway");
    let text = r.text();
    assert!(text.contains("is not responding"), "{text}");
    assert!(!text.contains("127.0.0.1"), "leaks the address: {text}");
    assert!(!text.contains(&dead.port().to_string()), "leaks the port: {text}");

    // No instances at all is the same answer.
    let edge2 = start_edge(EdgeConfig::default(), upstream_table("app.test", &[])).await;
    let r = get(edge2.addr, "app.test", "/").await;
    assert_edge_page(&r, 502, "Bad Gateway");
}

#[tokio::test]
async fn proxy_504_on_slow_app() {
    let up = spawn_upstream("a").await;
    let config = EdgeConfig {
        request_timeout: Duration::from_millis(300),
        ..EdgeConfig::default()
    };
    let edge = start_edge(config, upstream_table("app.test", &[up.addr])).await;
    let started = Instant::now();
    let r = get(edge.addr, "app.test", "/slow?ms=5000").await;
    assert_edge_page(&r, 504, "Gateway Timeout");
    assert!(r.text().contains("took too long"));
    // The app would answer after 5 s: anything well below means the timeout fired.
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );

    // A fast answer within the timeout still works.
    let r = get(edge.addr, "app.test", "/slow?ms=10").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done a");
}

#[tokio::test]
async fn proxy_round_robin() {
    let a = spawn_upstream("a").await;
    let b = spawn_upstream("b").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[a.addr, b.addr])).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = get(edge.addr, "app.test", "/name").await;
        assert_eq!(r.status, 200);
        seen.push(r.text());
    }
    assert_eq!(seen, ["a", "b", "a", "b", "a", "b"]);
}

#[tokio::test]
async fn proxy_fails_over_for_bodyless_requests_only() {
    let dead = dead_addr().await;
    let a = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[dead, a.addr])).await;
    // Every other GET starts at the dead instance and must move on.
    for _ in 0..4 {
        let r = get(edge.addr, "app.test", "/name").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "a");
    }
    // The round-robin cursor is now back at the dead instance; a request
    // with a body is not replayed.
    let r = post(edge.addr, "app.test", "/echo", b"data").await;
    assert_edge_page(&r, 502, "Bad Gateway");
    let r = post(edge.addr, "app.test", "/echo", b"data").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "data");
}

#[tokio::test]
async fn route_swap_while_serving() {
    let a = spawn_upstream("a").await;
    let b = spawn_upstream("b").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[a.addr])).await;
    assert_eq!(get(edge.addr, "app.test", "/name").await.text(), "a");

    // A request in flight when the table changes finishes on its old target.
    let addr = edge.addr;
    let in_flight = tokio::spawn(async move { get(addr, "app.test", "/slow?ms=600").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    edge.edge.replace_routes(upstream_table("app.test", &[b.addr]));
    assert_eq!(edge.edge.routes().len(), 1);
    let r = get(edge.addr, "app.test", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "b");
    let old = in_flight.await.unwrap();
    assert_eq!(old.status, 200);
    assert_eq!(old.text(), "slow done a");

    // Swapping to another kind of target takes effect too.
    let mut table = EdgeRouteTable::new();
    table.insert(
        "app.test",
        RouteTarget::Unavailable {
            site: "app".into(),
            status: 503,
            message: "Paused".into(),
            retry_after_seconds: None,
        },
    );
    edge.edge.replace_routes(table);
    let r = get(edge.addr, "app.test", "/name").await;
    assert_edge_page(&r, 503, "Service Unavailable");
    assert_eq!(r.header("retry-after"), None);

    edge.edge.replace_routes(EdgeRouteTable::new());
    let r = get(edge.addr, "app.test", "/name").await;
    assert_edge_page(&r, 404, "Not Found");
}

#[tokio::test]
async fn keep_alive_connection_serves_many_requests() {
    let a = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[a.addr])).await;
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    for i in 0..21 {
        // GET, HEAD (no body follows) and POST (a body both ways) mixed on
        // one client connection.
        let (req, expected, has_body) = match i % 3 {
            0 => (
                format!("GET /n{i} HTTP/1.1\r\nHost: app.test\r\n\r\n"),
                format!("a GET /n{i}"),
                true,
            ),
            1 => (
                format!("HEAD /n{i} HTTP/1.1\r\nHost: app.test\r\n\r\n"),
                format!("a HEAD /n{i}"),
                false,
            ),
            _ => (
                format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 7\r\n\r\nbody {i:02}"),
                format!("body {i:02}"),
                true,
            ),
        };
        stream.write_all(req.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        let resp = parse_response(&head);
        assert_eq!(resp.status, 200, "request {i}");
        let len: usize = resp.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, expected.len(), "request {i}");
        if has_body {
            let mut body = vec![0; len];
            stream.read_exact(&mut body).await.unwrap();
            assert_eq!(String::from_utf8(body).unwrap(), expected);
        }
    }
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 21);
    // Sequential requests reuse one pooled keep-alive connection to the app.
    assert_eq!(a.conns.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An app that answers `ok` to one request per connection and then closes
/// the connection without announcing it (no `Connection: close`), the way
/// an app whose keep-alive timeout just expired does.
async fn spawn_one_shot_app() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn closed_app_connections_are_not_reused() {
    let (app, conns) = spawn_one_shot_app().await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[app])).await;
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    for i in 0..5 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let resp = parse_response(&read_head(&mut stream).await);
        assert_eq!(resp.status, 200, "request {i}");
        let mut body = [0u8; 2];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"ok");
        // Give the edge a moment to notice the app's FIN, as it would
        // between real requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn http2_prior_knowledge_is_proxied() {
    use http_body_util::{BodyExt, Full};
    let a = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[a.addr])).await;
    let stream = TcpStream::connect(edge.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://app.test/echo")
        .body(Full::new(bytes::Bytes::from_static(b"over h2")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"over h2");

    let req = hyper::Request::builder()
        .uri("http://app.test/headers")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.lines().any(|l| l == "host: app.test"), "{text}");
    assert!(text.lines().any(|l| l == "x-forwarded-host: app.test"), "{text}");
}

async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(n, 1, "connection closed before the response head ended");
        head.push(byte[0]);
    }
    head
}

// ---------------------------------------------------------------- upgrade

/// A hand-written app that accepts one WebSocket-style upgrade, checks the
/// upgrade headers arrived, answers 101 and echoes bytes until EOF.
async fn spawn_upgrade_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let ok = head.starts_with("get /chat http/1.1\r\n")
                    && head.contains("\r\nupgrade: websocket\r\n")
                    && head.contains("\r\nconnection: upgrade\r\n")
                    && head.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n")
                    && head.contains("\r\nhost: ws.test\r\n");
                if !ok {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let app = spawn_upgrade_echo().await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("ws.test", &[app])).await;
    let mut client = TcpStream::connect(edge.addr).await.unwrap();
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    let resp = parse_response(&head);
    assert_eq!(resp.status, 101, "{}", String::from_utf8_lossy(&head));
    assert_eq!(resp.header("upgrade"), Some("websocket"));
    assert!(
        resp.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade"))
    );
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );

    for msg in [&b"hello edge"[..], b"second frame", &[0u8, 255, 1, 2]] {
        client.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        tokio::time::timeout(TIMEOUT, client.read_exact(&mut back))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(back, msg);
    }
    // Closing our side closes the tunnel end to end.
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, client.read_to_end(&mut rest))
        .await
        .expect("tunnel closed in time")
        .unwrap();
    assert!(rest.is_empty());
}

// ---------------------------------------------------------------- shutdown

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let a = spawn_upstream("a").await;
    let mut edge = start_edge(EdgeConfig::default(), upstream_table("app.test", &[a.addr])).await;
    let addr = edge.addr;
    let in_flight = tokio::spawn(async move { get(addr, "app.test", "/slow?ms=700").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    edge.begin_shutdown();
    let served = edge.served.take().unwrap();
    // New connections are refused once the listener is gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "edge still accepts after shutdown"
    );

    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done a");
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returned after in-flight work finished")
        .unwrap()
        .unwrap();
}

fn sleeping_table(host: &str) -> EdgeRouteTable {
    let mut t = EdgeRouteTable::new();
    t.insert(host, RouteTarget::Sleeping { site: "napper".into() });
    t
}

#[tokio::test]
async fn a_sleeping_site_is_woken_and_the_held_request_answered() {
    let app = spawn_upstream("awake").await;
    let edge = start_edge(EdgeConfig::default(), sleeping_table("nap.test")).await;
    let wakes = Arc::new(AtomicUsize::new(0));
    let (edge_ref, wakes_ref, app_addr) = (edge.edge.clone(), wakes.clone(), app.addr);
    edge.edge.set_waker(move |host| {
        assert_eq!(host, "nap.test");
        wakes_ref.fetch_add(1, Ordering::SeqCst);
        let edge = edge_ref.clone();
        tokio::spawn(async move {
            // Waking goes through a "starting" page first, as the control plane publishes it.
            let mut starting = EdgeRouteTable::new();
            starting.insert("nap.test", RouteTarget::Starting { site: "napper".into() });
            edge.replace_routes(starting);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut up = EdgeRouteTable::new();
            up.insert(
                "nap.test",
                RouteTarget::Upstream {
                    instances: vec![app_addr],
                },
            );
            edge.replace_routes(up);
        });
    });
    let r = get(edge.addr, "nap.test", "/name").await;
    assert_eq!((r.status, r.text().as_str()), (200, "awake"));
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert!(edge.edge.idle_for("nap.test").unwrap() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_starting_site_holds_the_request_without_waking_anything_until_it_answers() {
    let app = spawn_upstream("started").await;
    let mut table = EdgeRouteTable::new();
    table.insert("boot.test", RouteTarget::Starting { site: "booter".into() });
    let edge = start_edge(EdgeConfig::default(), table).await;
    let wakes = Arc::new(AtomicUsize::new(0));
    let wakes_ref = wakes.clone();
    edge.edge.set_waker(move |_| {
        wakes_ref.fetch_add(1, Ordering::SeqCst);
    });
    let (edge_ref, app_addr) = (edge.edge.clone(), app.addr);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut up = EdgeRouteTable::new();
        up.insert(
            "boot.test",
            RouteTarget::Upstream {
                instances: vec![app_addr],
            },
        );
        edge_ref.replace_routes(up);
    });
    let r = get(edge.addr, "boot.test", "/name").await;
    assert_eq!((r.status, r.text().as_str()), (200, "started"));
    assert_eq!(wakes.load(Ordering::SeqCst), 0, "a starting site is not woken");
}

#[tokio::test]
async fn a_site_that_does_not_start_in_time_gets_503_starting_with_retry_after() {
    let config = EdgeConfig {
        activation_timeout: Duration::from_millis(300),
        ..EdgeConfig::default()
    };
    let mut table = EdgeRouteTable::new();
    table.insert("boot.test", RouteTarget::Starting { site: "booter".into() });
    let edge = start_edge(config, table).await;
    let r = get(edge.addr, "boot.test", "/").await;
    assert_edge_page(&r, 503, "Service Unavailable");
    assert!(r.text().contains("starting"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn a_site_that_does_not_wake_in_time_gets_503() {
    let config = EdgeConfig {
        activation_timeout: Duration::from_millis(300),
        ..EdgeConfig::default()
    };
    let edge = start_edge(config, sleeping_table("nap.test")).await;
    let r = get(edge.addr, "nap.test", "/").await;
    assert_edge_page(&r, 503, "Service Unavailable");
    assert!(r.text().contains("waking up"), "{}", r.text());
}

#[tokio::test]
async fn idle_time_survives_route_swaps_and_resets_on_requests() {
    let app = spawn_upstream("a").await;
    let edge = start_edge(EdgeConfig::default(), upstream_table("idle.test", &[app.addr])).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(edge.edge.idle_for("idle.test").unwrap() >= Duration::from_millis(400));
    edge.edge.replace_routes(upstream_table("idle.test", &[app.addr]));
    assert!(
        edge.edge.idle_for("idle.test").unwrap() >= Duration::from_millis(400),
        "kept across a swap"
    );
    let before = Instant::now();
    get(edge.addr, "idle.test", "/name").await;
    // The request reset the clock: idle time is no more than the time since it was sent
    // (plus the clock's 1 ms granularity), however slow the machine is.
    assert!(edge.edge.idle_for("idle.test").unwrap() <= before.elapsed() + Duration::from_millis(1));
    assert!(edge.edge.idle_for("other.test").is_none());
}
