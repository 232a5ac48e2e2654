//! HTTPS in the edge over real sockets: certificates chosen by SNI (exact and
//! wildcard), a TLS alert for names without one, hot certificate swaps, HTTP/2 by
//! ALPN, ACME challenges (HTTP-01 and TLS-ALPN-01), redirects to HTTPS, HSTS,
//! `X-Forwarded-Proto`, and the handshake timeout. Certificates come from a test CA
//! that only the test clients trust.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_edge::{CertTable, Edge, EdgeConfig, EdgeRouteTable, RouteTarget, certified_key_from_pem};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;

const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A test certificate authority.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    /// A certificate (ECDSA P-256) for `names`, signed by the CA, loaded the way the
    /// control plane loads one.
    fn certificate(&self, names: &[&str]) -> Arc<CertifiedKey> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        certified_key_from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

fn leaf(key: &CertifiedKey) -> CertificateDer<'static> {
    key.end_entity_cert().unwrap().clone().into_owned()
}

/// Verifies like a browser (the test CA as the only root) and records every
/// certificate the server presented.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.seen.lock().unwrap().push(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a TLS connection attempt gave: the stream (or the handshake error) and the
/// certificates the server presented.
struct Attempt {
    stream: std::io::Result<TlsStream<TcpStream>>,
    presented: Vec<CertificateDer<'static>>,
}

impl Attempt {
    fn stream(self) -> TlsStream<TcpStream> {
        self.stream.expect("TLS handshake")
    }

    /// The alert the server ended the handshake with (fails if it did not).
    fn alert(&self) -> AlertDescription {
        let err = self.stream.as_ref().expect_err("the handshake must fail");
        match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(alert)) => *alert,
            _ => panic!("expected a TLS alert from the edge, got {err:?}"),
        }
    }
}

/// Connects to `addr` with SNI `name` (no SNI when `None`) offering `alpn`, trusting
/// only the test CA.
async fn connect(pki: &Pki, addr: SocketAddr, name: Option<&str>, alpn: &[&[u8]]) -> Attempt {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(pki.roots()), Arc::clone(&provider))
        .build()
        .unwrap();
    let verifier = Arc::new(Recording {
        inner,
        seen: Mutex::new(Vec::new()),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // An IP address as the server name makes rustls send no SNI at all.
    let server_name = match name {
        Some(name) => ServerName::try_from(name.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::time::timeout(TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector.connect(server_name, tcp).await
    })
    .await
    .expect("handshake ended in time");
    let presented = verifier.seen.lock().unwrap().clone();
    Attempt { stream, presented }
}

/// Sends an HTTP/1.1 request (with `Connection: close`) over `stream` and reads the
/// response until the edge closes the connection.
async fn https_request(stream: &mut TlsStream<TcpStream>, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    tokio::time::timeout(TIMEOUT, async {
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        // A peer closing without close_notify is fine once the response is in.
        let _ = stream.read_to_end(&mut buf).await;
        parse_response(&buf)
    })
    .await
    .expect("edge answered in time")
}

async fn https_get(pki: &Pki, addr: SocketAddr, host: &str, path: &str) -> Resp {
    let mut stream = connect(pki, addr, Some(host), &[b"http/1.1"]).await.stream();
    https_request(&mut stream, host, path, &[]).await
}

/// An edge serving plain HTTP and HTTPS on two loopback ports.
struct TlsEdge {
    edge: Arc<Edge>,
    http: SocketAddr,
    https: SocketAddr,
    _stop: Vec<oneshot::Sender<()>>,
}

async fn start(config: EdgeConfig, routes: EdgeRouteTable, certs: CertTable) -> TlsEdge {
    let edge = Edge::new(config);
    edge.replace_routes(routes);
    edge.replace_certificates(certs);
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http, https) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    let (stop_plain, plain_stopped) = oneshot::channel::<()>();
    let (stop_tls, tls_stopped) = oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&edge).serve(plain, async move {
        let _ = plain_stopped.await;
    }));
    tokio::spawn(Arc::clone(&edge).serve_tls(tls, async move {
        let _ = tls_stopped.await;
    }));
    TlsEdge {
        edge,
        http,
        https,
        _stop: vec![stop_plain, stop_tls],
    }
}

fn routes(hosts: &[&str], upstream: SocketAddr) -> EdgeRouteTable {
    let mut table = EdgeRouteTable::new();
    for host in hosts {
        table.insert(
            host,
            RouteTarget::Upstream {
                instances: vec![upstream],
            },
        );
    }
    table
}

/// The values of header `name` the app received, from the `/headers` answer.
fn received(resp: &Resp, name: &str) -> Vec<String> {
    let prefix = format!("{name}: ");
    resp.text()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn sni_picks_the_exact_name_then_a_one_label_wildcard() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let exact = pki.certificate(&["a.test"]);
    let wildcard = pki.certificate(&["*.apps.test"]);
    let mut certs = CertTable::new();
    certs.insert("A.Test.", Arc::clone(&exact), false);
    certs.insert("*.apps.test", Arc::clone(&wildcard), false);
    assert_eq!(certs.len(), 2);
    assert!(certs.contains("a.test") && certs.contains("x.apps.test"));
    assert!(!certs.contains("apps.test") && !certs.contains("a.b.apps.test"));
    let edge = start(
        EdgeConfig::default(),
        routes(&["a.test", "x.apps.test"], up.addr),
        certs,
    )
    .await;

    let attempt = connect(&pki, edge.https, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(attempt.presented, vec![leaf(&exact)]);
    let mut stream = attempt.stream();
    let r = https_request(&mut stream, "a.test", "/name", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "app"));

    let attempt = connect(&pki, edge.https, Some("x.apps.test"), &[b"http/1.1"]).await;
    assert_eq!(attempt.presented, vec![leaf(&wildcard)]);
    let r = https_request(&mut attempt.stream(), "x.apps.test", "/name", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "app"));

    // A wildcard covers exactly one label: not its parent, not two labels.
    for name in ["apps.test", "a.b.apps.test"] {
        let attempt = connect(&pki, edge.https, Some(name), &[b"http/1.1"]).await;
        assert!(attempt.stream.is_err(), "{name} must not be served");
        assert!(attempt.presented.is_empty(), "{name} got a certificate");
    }
}

#[tokio::test]
async fn unknown_or_missing_sni_gets_an_alert_and_no_certificate() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), false);
    // Routed, but without a certificate: still no TLS for it.
    let edge = start(EdgeConfig::default(), routes(&["a.test", "other.test"], up.addr), certs).await;

    let unknown = connect(&pki, edge.https, Some("other.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(unknown.alert(), AlertDescription::AccessDenied);
    assert!(
        unknown.presented.is_empty(),
        "a certificate was presented for an unknown name"
    );

    let no_sni = connect(&pki, edge.https, None, &[b"http/1.1"]).await;
    assert_eq!(no_sni.alert(), AlertDescription::AccessDenied);
    assert!(no_sni.presented.is_empty(), "a certificate was presented without SNI");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_new_certificate_table_serves_new_connections_without_a_restart() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let first = pki.certificate(&["a.test"]);
    let mut certs = CertTable::new();
    certs.insert("a.test", Arc::clone(&first), false);
    let edge = start(EdgeConfig::default(), routes(&["a.test", "b.test"], up.addr), certs).await;

    let before = connect(&pki, edge.https, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(before.presented, vec![leaf(&first)]);
    let mut open = before.stream();

    let second = pki.certificate(&["a.test", "b.test"]);
    let mut certs = CertTable::new();
    certs.insert("a.test", Arc::clone(&second), false);
    certs.insert("b.test", Arc::clone(&second), false);
    edge.edge.replace_certificates(certs);

    for name in ["a.test", "b.test"] {
        let after = connect(&pki, edge.https, Some(name), &[b"http/1.1"]).await;
        assert_eq!(after.presented, vec![leaf(&second)], "{name}");
        let r = https_request(&mut after.stream(), name, "/name", &[]).await;
        assert_eq!(r.status, 200);
    }
    // The connection opened before the swap keeps working.
    let r = https_request(&mut open, "a.test", "/name", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "app"));

    edge.edge.replace_certificates(CertTable::new());
    let removed = connect(&pki, edge.https, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(removed.alert(), AlertDescription::AccessDenied);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_served() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), true);
    let edge = start(EdgeConfig::default(), routes(&["a.test"], up.addr), certs).await;

    let stream = connect(&pki, edge.https, Some("a.test"), &[b"h2", b"http/1.1"])
        .await
        .stream();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = hyper::Request::get("https://a.test/headers")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = tokio::time::timeout(TIMEOUT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["strict-transport-security"], "max-age=63072000");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let resp = Resp {
            status: 200,
            headers: Vec::new(),
            body: body.to_vec(),
        };
        assert_eq!(received(&resp, "x-forwarded-proto"), vec!["https"]);
        assert_eq!(received(&resp, "host"), vec!["a.test"]);
    }
}

#[tokio::test]
async fn tls_alpn_01_gets_the_challenge_certificate_and_no_http() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let served = pki.certificate(&["a.test"]);
    let mut certs = CertTable::new();
    certs.insert("a.test", Arc::clone(&served), false);
    certs.insert("b.test", pki.certificate(&["b.test"]), false);
    let edge = start(EdgeConfig::default(), routes(&["a.test", "b.test"], up.addr), certs).await;
    // Signed by the test CA here only so the test client can finish the handshake; a
    // real one is self-signed with the acmeIdentifier extension.
    let challenge = pki.certificate(&["a.test"]);
    edge.edge.set_alpn_challenge("A.test", Arc::clone(&challenge));

    let attempt = connect(&pki, edge.https, Some("a.test"), &[ACME_TLS_ALPN]).await;
    assert_eq!(attempt.presented, vec![leaf(&challenge)]);
    let mut stream = attempt.stream();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ACME_TLS_ALPN));
    let _ = stream
        .write_all(b"GET /name HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("the edge closed the validation connection");
    assert!(buf.is_empty(), "HTTP was served: {}", String::from_utf8_lossy(&buf));

    // The served certificate is never used for validation, and normal clients still
    // get it.
    let no_challenge = connect(&pki, edge.https, Some("b.test"), &[ACME_TLS_ALPN]).await;
    assert_eq!(no_challenge.alert(), AlertDescription::AccessDenied);
    assert!(no_challenge.presented.is_empty());
    let normal = connect(&pki, edge.https, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(normal.presented, vec![leaf(&served)]);

    edge.edge.remove_alpn_challenge("a.test");
    let removed = connect(&pki, edge.https, Some("a.test"), &[ACME_TLS_ALPN]).await;
    assert_eq!(removed.alert(), AlertDescription::AccessDenied);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http_01_tokens_are_answered_for_any_host_and_never_redirected() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), true);
    let config = EdgeConfig {
        https_port: Some(8443),
        ..EdgeConfig::default()
    };
    let edge = start(config, routes(&["a.test"], up.addr), certs).await;
    edge.edge.set_http_challenge("tok-123", "tok-123.thumbprint");

    for host in ["a.test", "unrouted.test", "127.0.0.1"] {
        let r = get(edge.http, host, "/.well-known/acme-challenge/tok-123").await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.text(), "tok-123.thumbprint");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("strict-transport-security"), None);
    }
    let r = get(edge.http, "a.test", "/.well-known/acme-challenge/other").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("location"), None);

    edge.edge.remove_http_challenge("tok-123");
    let r = get(edge.http, "a.test", "/.well-known/acme-challenge/tok-123").await;
    assert_eq!(r.status, 404);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn names_with_a_certificate_are_redirected_to_https_with_port_path_and_query() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), false);
    certs.insert("*.apps.test", pki.certificate(&["*.apps.test"]), false);
    let hosts = ["a.test", "x.apps.test", "plain.test"];
    let config = EdgeConfig {
        https_port: Some(8443),
        ..EdgeConfig::default()
    };
    let edge = start(config, routes(&hosts, up.addr), certs).await;

    let host = format!("A.Test:{}", edge.http.port());
    let r = get(edge.http, &host, "/x/y?z=1&w").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://a.test:8443/x/y?z=1&w"));
    let r = get(edge.http, "x.apps.test", "/").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://x.apps.test:8443/"));
    // No certificate, no redirect.
    let r = get(edge.http, "plain.test", "/name").await;
    assert_eq!((r.status, r.text().as_str()), (200, "app"));

    // Without an HTTPS port nothing is redirected.
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), false);
    let edge = start(EdgeConfig::default(), routes(&hosts, up.addr), certs).await;
    let r = get(edge.http, "a.test", "/name").await;
    assert_eq!((r.status, r.text().as_str()), (200, "app"));
}

#[tokio::test]
async fn x_forwarded_proto_is_the_edges_not_the_clients() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), false);
    let edge = start(EdgeConfig::default(), routes(&["a.test"], up.addr), certs).await;

    // A plain-HTTP client claiming HTTPS must not make the app believe it.
    let r = request(
        edge.http,
        "GET",
        "a.test",
        "/headers",
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(received(&r, "x-forwarded-proto"), vec!["http"]);

    let mut stream = connect(&pki, edge.https, Some("a.test"), &[b"http/1.1"]).await.stream();
    let r = https_request(&mut stream, "a.test", "/headers", &[("X-Forwarded-Proto", "http")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(received(&r, "x-forwarded-proto"), vec!["https"]);
}

#[tokio::test]
async fn hsts_is_sent_only_over_tls_for_names_that_ask() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), true);
    certs.insert("b.test", pki.certificate(&["b.test"]), false);
    let edge = start(EdgeConfig::default(), routes(&["a.test", "b.test"], up.addr), certs).await;

    let r = https_get(&pki, edge.https, "a.test", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=63072000"));
    let r = https_get(&pki, edge.https, "b.test", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("strict-transport-security"), None);
    // Never over plain HTTP (RFC 6797 §7.2).
    let r = get(edge.http, "a.test", "/name").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("strict-transport-security"), None);
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let pki = Pki::new();
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), false);
    let config = EdgeConfig {
        tls_handshake_timeout: Duration::from_secs(1),
        ..EdgeConfig::default()
    };
    let edge = start(config, EdgeRouteTable::new(), certs).await;

    let started = Instant::now();
    let mut silent = TcpStream::connect(edge.https).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(8), silent.read(&mut buf))
        .await
        .expect("the edge must close a connection that never handshakes");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed too early: {waited:?}");
}

#[test]
fn pem_loading_checks_the_key_against_the_certificate() {
    let pki = Pki::new();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["a.test".to_string()])
        .unwrap()
        .signed_by(&key, &pki.ca)
        .unwrap();
    let other = KeyPair::generate().unwrap();
    let err = certified_key_from_pem(&cert.pem(), &other.serialize_pem()).unwrap_err();
    assert!(err.contains("does not belong"), "{err}");
    let secret = other.serialize_pem();
    let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!err.contains(&body[..20]), "the error quotes the key");

    let rsa = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let rsa_cert = CertificateParams::new(vec!["rsa.test".to_string()])
        .unwrap()
        .signed_by(&rsa, &pki.ca)
        .unwrap();
    assert!(certified_key_from_pem(&rsa_cert.pem(), &rsa.serialize_pem()).is_ok());
    assert!(certified_key_from_pem(&cert.pem(), &key.serialize_pem()).is_ok());
    let err = certified_key_from_pem(&cert.pem(), "not a key").unwrap_err();
    assert!(err.contains("no private key"), "{err}");
}

#[tokio::test]
async fn a_request_for_a_name_the_connections_certificate_does_not_cover_gets_421() {
    let pki = Pki::new();
    let up = spawn_upstream("app").await;
    let pair = pki.certificate(&["example.test", "www.example.test"]);
    let mut certs = CertTable::new();
    certs.insert("a.test", pki.certificate(&["a.test"]), true);
    certs.insert("b.test", pki.certificate(&["b.test"]), false);
    certs.insert("*.apps.test", pki.certificate(&["*.apps.test"]), false);
    certs.insert("example.test", Arc::clone(&pair), false);
    certs.insert("www.example.test", pair, false);
    let hosts = [
        "a.test",
        "b.test",
        "x.apps.test",
        "y.apps.test",
        "example.test",
        "www.example.test",
    ];
    let edge = start(EdgeConfig::default(), routes(&hosts, up.addr), certs).await;

    // Fronting: a connection verified for b.test asks for a.test (whose HSTS and routing
    // it would otherwise get); sent back, nothing reaches the app.
    let mut stream = connect(&pki, edge.https, Some("b.test"), &[b"http/1.1"]).await.stream();
    let r = https_request(&mut stream, "a.test", "/name", &[]).await;
    assert_eq!(r.status, 421, "{}", r.text());
    assert!(!r.text().contains("app"), "{}", r.text());
    assert!(r.header("strict-transport-security").is_none());

    // Names one certificate covers may share a connection (HTTP/2 coalescing does).
    for (sni, host) in [
        ("x.apps.test", "y.apps.test"),
        ("www.example.test", "example.test"),
        ("a.test", "A.TEST:443"),
    ] {
        let mut stream = connect(&pki, edge.https, Some(sni), &[b"http/1.1"]).await.stream();
        let r = https_request(&mut stream, host, "/name", &[]).await;
        assert_eq!((r.status, r.text().as_str()), (200, "app"), "{sni} → {host}");
    }

    // Over HTTP/2 the :authority is checked the same way.
    let attempt = connect(&pki, edge.https, Some("x.apps.test"), &[b"h2"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(attempt.stream()))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (authority, status) in [("y.apps.test", 200), ("b.test", 421)] {
        let req = hyper::Request::get(format!("https://{authority}/name"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{authority}");
    }
}
