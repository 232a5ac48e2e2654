//! Certificates of custom domains against a real ACME CA (Debian's `pebble`, validating
//! against berth's edge on loopback, nonce rejection left on) and a real DNS server
//! (`pebble-challtestsrv`): DNS wrong → no order; DNS right → a certificate issued and
//! served over TLS by SNI, HTTP redirected to HTTPS; renewal once a third of its lifetime
//! is left; removal stops serving it; a failed validation gives the CA's problem and a
//! retry time; the base domain's wildcard and a custom wildcard domain through DNS-01 at
//! the Cloudflare fake; renewal by the CA's renewal window (a fake of ARI, which this
//! pebble lacks, in front of it).

#[path = "common/cloudflare_fake.rs"]
mod cloudflare_fake;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudflare_fake::CloudflareFake;
use common::pebble::{Dns, PebblePlan};
use common::*;
use serde_json::{Value, json};

const DOMAIN: &str = "shop-example.com";

async fn static_site(server: &TestServer, name: &str, text: &str) -> tempfile::TempDir {
    let dir = app(&[("index.html", text)]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    dir
}

/// A client that trusts only pebble's root and sends `name` to the edge's TLS port.
fn https_client(server: &TestServer, name: &str, root_pem: &str) -> reqwest::Client {
    let roots = reqwest::Certificate::from_pem_bundle(root_pem.as_bytes()).expect("pebble root");
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(roots)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(name, ([127, 0, 0, 1], server.edge_tls_port).into())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A plain-HTTP request for `host` to the edge, redirects not followed.
async fn plain_http(server: &TestServer, host: &str, path: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}{path}", server.edge_port))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

/// The value of a just-added domain's `_berth-challenge` TXT record.
fn ownership_token(added: &Value) -> String {
    added["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Creates an apex domain's records at the DNS server: A 127.0.0.1 and the ownership TXT.
async fn point_here(dns: &Dns, domain: &str, token: &str) {
    dns.set("/add-a", json!({"host": domain, "addresses": ["127.0.0.1"]}))
        .await;
    dns.set(
        "/set-txt",
        json!({"host": format!("_berth-challenge.{domain}."), "value": token}),
    )
    .await;
}

async fn domain(server: &TestServer, site: &str) -> Value {
    let (status, list) = server.get(&format!("/api/sites/{site}/domains")).await;
    assert_eq!(status, 200, "{list}");
    list["domains"][0].clone()
}

#[tokio::test]
async fn certificate_issued_served_by_sni_renewed_and_removed() {
    let dns = Dns::start().await;
    let plan = PebblePlan::new();
    let server = TestServer::start_with(&[
        ("BERTH_DNS_RESOLVERS", &dns.resolver()),
        ("BERTH_PUBLIC_IPV4", "127.0.0.1"),
        ("BERTH_ACME_DIRECTORY", &plan.directory()),
        ("BERTH_ACME_CA_ROOTS", plan.api_root().to_str().unwrap()),
        ("BERTH_ACME_EMAIL", "ops@shop-example.com"),
    ])
    .await;
    // Certificates valid 30 s: renewal starts with 10 s left.
    let pebble = plan.start(&dns, server.edge_port, server.edge_tls_port, 30).await;
    let _app = static_site(&server, "shop", "<h1>shop over https</h1>").await;

    // DNS wrong (no records at all): no order is placed, the diagnosis says why.
    let (status, added) = server
        .post("/api/sites/shop/domains", &json!({"domain": DOMAIN, "hsts": true}))
        .await;
    assert_eq!(status, 201, "{added}");
    let (status, checked) = server
        .post(&format!("/api/sites/shop/domains/{DOMAIN}/validate"), &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "pending_dns", "{checked:#}");
    assert!(checked.get("certificate").is_none(), "{checked:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pebble.log().contains("POST /order-plz"),
        "an order was placed while DNS was wrong: {}",
        pebble.log()
    );

    // DNS right: the certificate is issued and served.
    point_here(&dns, DOMAIN, &ownership_token(&added)).await;
    let started = Instant::now();
    let (status, active) = server
        .post(
            &format!("/api/sites/shop/domains/{DOMAIN}/validate"),
            &json!({"wait": true, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(
        active["status"],
        "active",
        "{active:#}\npebble: {}\nserver: {}",
        pebble.log(),
        log_of(server.data.path())
    );
    eprintln!("DNS right → certificate served in {:?}", started.elapsed());
    // The marker the "no order while DNS was wrong" check looks for is in pebble's log.
    assert!(pebble.log().contains("POST /order-plz"), "{}", pebble.log());
    let cert = &active["certificate"];
    assert!(cert["expires_at"].is_string(), "{active:#}");
    assert_eq!(
        active["url"],
        format!("https://{DOMAIN}:{}", server.edge_tls_port),
        "{active:#}"
    );

    let client = https_client(&server, DOMAIN, &pebble.root_pem);
    let url = format!("https://{DOMAIN}:{}/", server.edge_tls_port);
    let resp = client.get(&url).send().await.expect("HTTPS to the domain");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"].to_str().unwrap(),
        "max-age=63072000"
    );
    assert!(resp.text().await.unwrap().contains("shop over https"));

    // No certificate for a name berth does not serve: the handshake fails.
    let stranger = https_client(&server, "other-example.com", &pebble.root_pem);
    let refused = stranger
        .get(format!("https://other-example.com:{}/", server.edge_tls_port))
        .send()
        .await;
    assert!(refused.is_err(), "an unknown name got a certificate: {refused:?}");

    // Plain HTTP for the domain is redirected to HTTPS.
    let plain = plain_http(&server, DOMAIN, "/a?b=c").await;
    assert_eq!(plain.status(), 308);
    assert_eq!(
        plain.headers()["location"].to_str().unwrap(),
        format!("https://{DOMAIN}:{}/a?b=c", server.edge_tls_port)
    );

    // Renewal: once a third of the 30 s lifetime is left, a new certificate is served.
    let first_issued = cert["issued_at"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(45);
    let renewed = loop {
        let d = domain(&server, "shop").await;
        if d["certificate"]["issued_at"].as_str() != Some(first_issued.as_str()) && d["status"] == "active" {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed: {d:#}\nserver: {}",
            log_of(server.data.path())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        renewed["certificate"]["expires_at"].as_str() > cert["expires_at"].as_str(),
        "{renewed:#}"
    );
    // A new connection gets the renewed certificate (the old one has less than 10 s left,
    // the new one more).
    let fresh = https_client(&server, DOMAIN, &pebble.root_pem);
    assert_eq!(fresh.get(&url).send().await.expect("HTTPS after renewal").status(), 200);

    // Removal: no certificate for it any more, and HTTP no longer serves it.
    let (status, out) = server.delete(&format!("/api/sites/shop/domains/{DOMAIN}")).await;
    assert_eq!(status, 200, "{out}");
    let after = https_client(&server, DOMAIN, &pebble.root_pem);
    assert!(after.get(&url).send().await.is_err(), "still served after removal");
    let (code, _) = server.edge(DOMAIN, "/").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn failed_validation_reports_the_ca_problem_and_a_retry_time() {
    let dns = Dns::start().await;
    let plan = PebblePlan::new();
    let server = TestServer::start_with(&[
        ("BERTH_DNS_RESOLVERS", &dns.resolver()),
        ("BERTH_PUBLIC_IPV4", "127.0.0.1"),
        ("BERTH_ACME_DIRECTORY", &plan.directory()),
        ("BERTH_ACME_CA_ROOTS", plan.api_root().to_str().unwrap()),
    ])
    .await;
    // The CA validates on ports where nothing listens: every challenge fails.
    let closed = common::pebble::free_port();
    let pebble = plan.start(&dns, closed, closed, 300).await;
    let _app = static_site(&server, "blog", "<h1>blog</h1>").await;
    let (status, added) = server
        .post("/api/sites/blog/domains", &json!({"domain": "blog-example.com"}))
        .await;
    assert_eq!(status, 201, "{added}");
    point_here(&dns, "blog-example.com", &ownership_token(&added)).await;
    let (status, failed) = server
        .post(
            "/api/sites/blog/domains/blog-example.com/validate",
            &json!({"wait": true, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed", "{failed:#}\npebble: {}", pebble.log());
    let problem = &failed["certificate_problem"];
    assert_eq!(problem["attempts"], 1, "{failed:#}");
    assert!(
        problem["problem"]["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:ietf:params:acme:error:")),
        "{failed:#}"
    );
    assert!(
        problem["message"].as_str().unwrap().contains("blog-example.com"),
        "{failed:#}"
    );
    // Retried after a minute, not at once (the CA's failed-validation budget).
    let next = time::OffsetDateTime::parse(
        problem["next_attempt_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = next - time::OffsetDateTime::now_utc();
    assert!(
        wait > time::Duration::seconds(40) && wait <= time::Duration::seconds(61),
        "{failed:#}"
    );
    assert!(failed["next"].as_str().unwrap().contains("tries again"), "{failed:#}");
    // Not served over HTTP either.
    let (code, body) = server.edge("blog-example.com", "/").await;
    assert_eq!(code, 404, "{body}");
}

/// Copies the CNAME and TXT records the Cloudflare FAKE holds in a zone into the test DNS
/// server as they change: the fake serves no DNS, Cloudflare's name servers would.
fn mirror_zone(dns: Arc<Dns>, fake: Arc<CloudflareFake>, zone: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut published: Vec<(String, String, String)> = Vec::new();
        loop {
            let now: Vec<(String, String, String)> = fake
                .records(&zone)
                .into_iter()
                .filter(|r| r.record_type == "TXT" || r.record_type == "CNAME")
                .map(|r| (r.record_type, r.name, r.content))
                .collect();
            if now != published {
                for (kind, name, _) in &published {
                    match kind.as_str() {
                        "TXT" => dns.set("/clear-txt", json!({"host": format!("{name}.")})).await,
                        _ => dns.set("/clear-cname", json!({"host": name})).await,
                    }
                }
                for (kind, name, value) in &now {
                    match kind.as_str() {
                        "TXT" => {
                            dns.set("/set-txt", json!({"host": format!("{name}."), "value": value}))
                                .await
                        }
                        _ => dns.set("/set-cname", json!({"host": name, "target": value})).await,
                    }
                }
                published = now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test]
async fn base_domain_wildcard_through_dns01_at_the_cloudflare_fake() {
    const TOKEN: &str = "cf_fake_token_7d3f0a9c1b2e4d5f6a7b8c9d";
    let dns = Arc::new(Dns::start().await);
    // A FAKE of Cloudflare's API v4 (tests/common/cloudflare_fake.rs), holding the zone.
    let fake = Arc::new(CloudflareFake::start(TOKEN).await);
    let zone = fake.add_zone("apps-example.com");
    let sync = mirror_zone(dns.clone(), fake.clone(), zone.clone());
    let plan = PebblePlan::new();
    let server = TestServer::start_with(&[
        ("BERTH_BASE_DOMAIN", "apps-example.com"),
        ("BERTH_DNS_RESOLVERS", &dns.resolver()),
        ("BERTH_ACME_DIRECTORY", &plan.directory()),
        ("BERTH_ACME_CA_ROOTS", plan.api_root().to_str().unwrap()),
    ])
    .await;
    let pebble = plan.start(&dns, server.edge_port, server.edge_tls_port, 3600).await;
    let dir = app(&[("index.html", "<h1>every site on https</h1>")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "shop", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");

    // The DNS provider is configured: berth orders *.apps-example.com through DNS-01.
    let (status, out) = server
        .patch(
            "/api/config/cloudflare",
            &json!({"config": {"api_token": TOKEN, "api_url": fake.url}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let host = "shop.apps-example.com";
    let client = https_client(&server, host, &pebble.root_pem);
    let url = format!("https://{host}:{}/", server.edge_tls_port);
    let deadline = Instant::now() + Duration::from_secs(90);
    let served = loop {
        if let Ok(resp) = client.get(&url).send().await {
            break resp;
        }
        assert!(
            Instant::now() < deadline,
            "no wildcard certificate for {host}\npebble: {}\nserver: {}",
            pebble.log(),
            log_of(server.data.path())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(served.status(), 200);
    assert!(served.text().await.unwrap().contains("every site on https"));
    // One label only: the base domain itself has no certificate.
    let apex = https_client(&server, "apps-example.com", &pebble.root_pem);
    assert!(
        apex.get(format!("https://apps-example.com:{}/", server.edge_tls_port))
            .send()
            .await
            .is_err()
    );
    // Sites' URLs are https now, and the challenge record is gone from the zone.
    let (_, site) = server.get("/api/sites/shop").await;
    assert_eq!(
        site["url"],
        format!("https://{host}:{}", server.edge_tls_port),
        "{site:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake
        .records(&zone)
        .iter()
        .any(|r| r.name.starts_with("_acme-challenge."))
    {
        assert!(Instant::now() < deadline, "the DNS-01 record was left at the provider");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sync.abort();
}

#[tokio::test]
async fn a_wildcard_domain_through_dns01_at_the_cloudflare_fake() {
    const TOKEN: &str = "cf_fake_token_5b1e9d0c3a7f4e2d8c6b0a91";
    let dns = Arc::new(Dns::start().await);
    // A FAKE of Cloudflare's API v4 (tests/common/cloudflare_fake.rs), holding the zone.
    let fake = Arc::new(CloudflareFake::start(TOKEN).await);
    let zone = fake.add_zone("wild-example.com");
    let sync = mirror_zone(dns.clone(), fake.clone(), zone.clone());
    let plan = PebblePlan::new();
    let server = TestServer::start_with(&[
        ("BERTH_DNS_RESOLVERS", &dns.resolver()),
        ("BERTH_ACME_DIRECTORY", &plan.directory()),
        ("BERTH_ACME_CA_ROOTS", plan.api_root().to_str().unwrap()),
    ])
    .await;
    let pebble = plan.start(&dns, server.edge_port, server.edge_tls_port, 3600).await;
    let _site = static_site(&server, "tenants", "<h1>every tenant</h1>").await;

    // Without a DNS provider a wildcard cannot be proven: refused, nothing attached.
    let (status, out) = server
        .post("/api/sites/tenants/domains", &json!({"domain": "*.wild-example.com"}))
        .await;
    assert_eq!(status, 400, "{out}");
    let message = out["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("DNS-01") && message.contains("HOSTING_SET_CONFIG"),
        "{out}"
    );
    let (_, list) = server.get("/api/sites/tenants/domains").await;
    assert_eq!(list["domains"].as_array().map(Vec::len), Some(0), "{list}");

    let (status, out) = server
        .patch(
            "/api/config/cloudflare",
            &json!({"config": {"api_token": TOKEN, "api_url": fake.url}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    // With one, berth creates the wildcard's records itself and proves it through DNS-01.
    let (status, added) = server
        .post(
            "/api/sites/tenants/domains",
            &json!({"domain": "*.Wild-Example.com", "wait": true, "timeout_seconds": 90}),
        )
        .await;
    assert!(status == 200 || status == 201, "{added}");
    assert_eq!(added["name"], "*.wild-example.com", "{added:#}");
    assert_eq!(
        added["status"],
        "active",
        "{added:#}\npebble: {}\nserver: {}",
        pebble.log(),
        log_of(server.data.path())
    );
    let records = fake.records(&zone);
    assert!(
        records
            .iter()
            .any(|r| r.record_type == "CNAME" && r.name == "*.wild-example.com"),
        "{records:?}"
    );

    // Any name one label under it is served over TLS by SNI with the wildcard certificate.
    for host in ["acme.wild-example.com", "b2.wild-example.com"] {
        let client = https_client(&server, host, &pebble.root_pem);
        let resp = client
            .get(format!("https://{host}:{}/", server.edge_tls_port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:#}"));
        assert_eq!(resp.status(), 200, "{host}");
        assert!(resp.text().await.unwrap().contains("every tenant"), "{host}");
        // Plain HTTP goes to HTTPS.
        assert_eq!(plain_http(&server, host, "/").await.status(), 308, "{host}");
    }
    // The parent itself and names two labels down are not covered.
    for host in ["wild-example.com", "a.b.wild-example.com"] {
        let client = https_client(&server, host, &pebble.root_pem);
        assert!(
            client
                .get(format!("https://{host}:{}/", server.edge_tls_port))
                .send()
                .await
                .is_err(),
            "{host} got a certificate"
        );
        let (code, _) = server.edge(host, "/").await;
        assert_eq!(code, 404, "{host}");
    }

    // Removal stops serving it and deletes berth's records at the provider.
    let (status, out) = server.delete("/api/sites/tenants/domains/*.wild-example.com").await;
    assert_eq!(status, 200, "{out}");
    let (code, _) = server.edge("acme.wild-example.com", "/").await;
    assert_eq!(code, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.records(&zone).is_empty() {
        assert!(
            Instant::now() < deadline,
            "records left at the provider: {:?}",
            fake.records(&zone)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sync.abort();
}

/// A FAKE of ACME Renewal Information (RFC 9773) in front of the real pebble, which has
/// none: it serves pebble's directory with a `renewalInfo` URL added, and that URL answers
/// the window the test sets (for every certificate, or for one), with `Retry-After: 1`.
/// Every other ACME request goes to pebble itself (the directory's other URLs are pebble's).
struct AriFake {
    url: String,
    state: Arc<std::sync::Mutex<AriWindows>>,
    task: tokio::task::JoinHandle<()>,
}

/// Windows answered (RFC 3339 start and end), and the identifiers asked about.
#[derive(Default)]
struct AriWindows {
    every: (String, String),
    one: std::collections::HashMap<String, (String, String)>,
    asked: Vec<String>,
}

impl AriFake {
    async fn start(pebble_directory: String, pebble_api_root: std::path::PathBuf) -> AriFake {
        use axum::extract::{Path, State};
        use axum::response::IntoResponse;
        type Shared = (Arc<std::sync::Mutex<AriWindows>>, String, String, std::path::PathBuf);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(std::sync::Mutex::new(AriWindows::default()));
        async fn directory(State((_, me, pebble, root)): State<Shared>) -> axum::response::Response {
            let pem = std::fs::read(&root).unwrap();
            let client = reqwest::Client::builder()
                .no_proxy()
                .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
                .build()
                .unwrap();
            let mut dir: Value = client.get(&pebble).send().await.unwrap().json().await.unwrap();
            dir["renewalInfo"] = json!(format!("{me}/ari"));
            axum::Json(dir).into_response()
        }
        async fn renewal_info(State((state, ..)): State<Shared>, Path(id): Path<String>) -> axum::response::Response {
            let mut state = state.lock().unwrap();
            let (start, end) = state.one.get(&id).unwrap_or(&state.every).clone();
            state.asked.push(id);
            let body = json!({"suggestedWindow": {"start": start, "end": end}});
            ([("retry-after", "1")], axum::Json(body)).into_response()
        }
        let shared: Shared = (state.clone(), url.clone(), pebble_directory, pebble_api_root);
        let app = axum::Router::new()
            .route("/dir", axum::routing::get(directory))
            .route("/ari/{id}", axum::routing::get(renewal_info))
            .with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        AriFake { url, state, task }
    }

    /// Answers the window from `start` to `end` seconds from now, for the certificate
    /// `id` or (`None`) every one.
    fn set_window(&self, id: Option<&str>, start: i64, end: i64) {
        let at = |s: i64| {
            (time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let mut state = self.state.lock().unwrap();
        match id {
            Some(id) => {
                state.one.insert(id.to_string(), (at(start), at(end)));
            }
            None => state.every = (at(start), at(end)),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.state.lock().unwrap().asked.clone()
    }
}

impl Drop for AriFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The ARI identifier of the certificate `host` is served with: its authority key
/// identifier and serial number, base64url, joined by a dot.
async fn served_identifier(server: &TestServer, host: &str, root_pem: &str) -> String {
    use base64::Engine as _;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(root_pem.as_bytes()).unwrap())
        .tls_info(true)
        .resolve(host, ([127, 0, 0, 1], server.edge_tls_port).into())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://{host}:{}/", server.edge_tls_port))
        .send()
        .await
        .expect("served over HTTPS");
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the peer certificate")
        .to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("an authority key identifier");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(aki), b64.encode(cert.tbs_certificate.raw_serial()))
}

#[tokio::test]
async fn renewal_follows_the_cas_renewal_window() {
    let dns = Dns::start().await;
    let plan = PebblePlan::new();
    let ari = AriFake::start(plan.directory(), plan.api_root()).await;
    // Berth's own schedule would renew these hour-long certificates after 40 minutes;
    // the CA first suggests 50 to 55 minutes.
    ari.set_window(None, 3000, 3300);
    let server = TestServer::start_with(&[
        ("BERTH_DNS_RESOLVERS", &dns.resolver()),
        ("BERTH_PUBLIC_IPV4", "127.0.0.1"),
        ("BERTH_ACME_DIRECTORY", &format!("{}/dir", ari.url)),
        ("BERTH_ACME_CA_ROOTS", plan.api_root().to_str().unwrap()),
    ])
    .await;
    let pebble = plan.start(&dns, server.edge_port, server.edge_tls_port, 3600).await;
    let _app = static_site(&server, "shop", "<h1>renewed when the CA says</h1>").await;
    let (status, added) = server.post("/api/sites/shop/domains", &json!({"domain": DOMAIN})).await;
    assert_eq!(status, 201, "{added}");
    point_here(&dns, DOMAIN, &ownership_token(&added)).await;
    let (status, active) = server
        .post(
            &format!("/api/sites/shop/domains/{DOMAIN}/validate"),
            &json!({"wait": true, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["status"], "active", "{active:#}\npebble: {}", pebble.log());
    let first = served_identifier(&server, DOMAIN, &pebble.root_pem).await;

    // The CA is asked about the served certificate, and the renewal moves into its window.
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = domain(&server, "shop").await;
        let renews = parse(&d["certificate"]["renews_at"]) - time::OffsetDateTime::now_utc();
        if ari.asked().contains(&first) && renews > time::Duration::seconds(2900) {
            assert!(renews <= time::Duration::seconds(3300), "{d:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewal time did not follow the window: {d:#}\nasked: {:?}, served: {first}\nserver: {}",
            ari.asked(),
            log_of(server.data.path())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The CA now wants it replaced at once (as after a revocation event): berth renews;
    // the new certificate gets the usual window.
    ari.set_window(Some(&first), -3600, -3500);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now_served = served_identifier(&server, DOMAIN, &pebble.root_pem).await;
        if now_served != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed within the CA's window: {:#}\nserver: {}",
            domain(&server, "shop").await,
            log_of(server.data.path())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = domain(&server, "shop").await;
        if d["status"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "{d:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_untrusted_ca_is_named_in_the_failure() {
    let dns = Dns::start().await;
    let plan = PebblePlan::new();
    // Roots that do not include the certificate pebble's API is served with.
    let other = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["elsewhere.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let roots = other.path().join("roots.pem");
    std::fs::write(&roots, cert.pem()).unwrap();
    let server = TestServer::start_with(&[
        ("BERTH_DNS_RESOLVERS", &dns.resolver()),
        ("BERTH_PUBLIC_IPV4", "127.0.0.1"),
        ("BERTH_ACME_DIRECTORY", &plan.directory()),
        ("BERTH_ACME_CA_ROOTS", roots.to_str().unwrap()),
    ])
    .await;
    let _pebble = plan.start(&dns, server.edge_port, server.edge_tls_port, 300).await;
    let _app = static_site(&server, "docs", "<h1>docs</h1>").await;
    let (status, added) = server
        .post("/api/sites/docs/domains", &json!({"domain": "docs-example.com"}))
        .await;
    assert_eq!(status, 201, "{added}");
    point_here(&dns, "docs-example.com", &ownership_token(&added)).await;
    let (status, failed) = server
        .post(
            "/api/sites/docs/domains/docs-example.com/validate",
            &json!({"wait": true, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let message = failed["certificate_problem"]["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "the cause is not named: {message}");
}

/// A failed order of the base domain's wildcard is tried again on its schedule (a minute
/// after the first failure), not at every start: a restart — or a crash loop — must not
/// spend the CA's failed-validation budget.
#[tokio::test]
async fn a_failed_base_wildcard_order_is_not_retried_by_a_restart() {
    const TOKEN: &str = "cf_fake_token_7d3f0a9c1b2e4d5f6a7b8c9d";
    let dns = Dns::start().await;
    let fake = CloudflareFake::start(TOKEN).await;
    fake.add_zone("apps-example.com");
    // The provider refuses TXT records: every DNS-01 attempt fails after the order.
    fake.reject_records_of_type(Some("TXT"));
    let plan = PebblePlan::new();
    let (resolver, directory, roots) = (dns.resolver(), plan.directory(), plan.api_root());
    let env = [
        ("BERTH_BASE_DOMAIN", "apps-example.com"),
        ("BERTH_DNS_RESOLVERS", resolver.as_str()),
        ("BERTH_ACME_DIRECTORY", directory.as_str()),
        ("BERTH_ACME_CA_ROOTS", roots.to_str().unwrap()),
    ];
    let server = TestServer::start_with(&env).await;
    let pebble = plan.start(&dns, server.edge_port, server.edge_tls_port, 3600).await;
    let (status, out) = server
        .patch(
            "/api/config/cloudflare",
            &json!({"config": {"api_token": TOKEN, "api_url": fake.url}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    // Orders pebble created: a POST it refused (pebble rejects some nonces on purpose,
    // and the client retries) is not one.
    let orders = || pebble.log().matches("Added order").count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_of(server.data.path()).contains("the base domain's certificate order failed") {
        assert!(
            Instant::now() < deadline,
            "the order never failed\npebble: {}\nserver: {}",
            pebble.log(),
            log_of(server.data.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(orders(), 1, "{}", pebble.log());

    // Restarted on the same data: the retry time (a minute away) holds.
    let data = server.stop();
    let server = TestServer::start_in(data, &env).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        orders(),
        1,
        "ordered again at start\nserver: {}",
        log_of(server.data.path())
    );
    // Configuring the provider again is a reason to try at once.
    let (status, out) = server
        .patch(
            "/api/config/cloudflare",
            &json!({"config": {"api_token": TOKEN, "api_url": fake.url}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while orders() < 2 {
        assert!(Instant::now() < deadline, "no new order after the provider changed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
