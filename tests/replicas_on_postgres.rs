//! Several `berth serve` replicas on one Postgres database (run with
//! `BERTH_TEST_DATABASE=postgres`; on SQLite these tests panic, they mean nothing there):
//! two real servers with their own data dirs, the same database and master key, apps on a
//! shared Docker Engine. A site deployed through one is served by the other's edge, a
//! `wait` on one returns when the other's deploy goes live, a deploy whose replica is
//! killed mid-build finishes on the other, deploys spread over both are each built once,
//! and the local target (apps on one machine) refuses deploys while both are live. A
//! certificate ordered by the replica holding the certificate loop's lease is validated by
//! the CA at the other replica's edge (the challenges are shared through the database),
//! and the lease passes to the other replica when its holder stops.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pebble::{Dns, Pebble, PebblePlan};
use common::*;
use serde_json::{Value, json};

/// The master key both replicas share (sealed secrets open on either).
const MASTER_KEY: &str = "5eb9c0a1d2e3f40516273849aabbccddeeff00112233445566778899aabbccdd";

fn require_postgres() {
    assert!(
        on_postgres(),
        "tests/replicas_on_postgres.rs runs only on Postgres: set BERTH_TEST_DATABASE=postgres and BERTH_TEST_POSTGRES_URL (scripts/postgres-test-env.sh prints it)"
    );
}

/// Replica A on its own new database (docker on a shared engine when `docker`).
async fn first(docker: bool) -> (TestServer, String) {
    first_with(docker, &[]).await
}

/// [`first`] with more environment variables.
async fn first_with(docker: bool, env: &[(&str, &str)]) -> (TestServer, String) {
    require_postgres();
    if docker {
        prepare_engine();
    }
    let mut vars = vec![("BERTH_MASTER_KEY", MASTER_KEY)];
    vars.extend_from_slice(env);
    let a = TestServer::start_with(&vars).await;
    let url = database_url(a.data.path()).expect("on Postgres");
    if docker {
        configure_test_docker(&a).await;
    }
    (a, url)
}

/// Another replica on `url`'s database; its log includes the route follower's wakes.
async fn replica(url: &str) -> TestServer {
    replica_with(url, &[]).await
}

/// [`replica`] with more environment variables.
async fn replica_with(url: &str, env: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![
        ("BERTH_MASTER_KEY", MASTER_KEY),
        ("BERTH_DATABASE_URL", url),
        ("BERTH_LOG", "info,sqlx=warn,berth::events=debug"),
    ];
    vars.extend_from_slice(env);
    TestServer::start_with(&vars).await
}

fn owner(server: &TestServer) -> String {
    std::fs::read_to_string(server.data.path().join("docker-owner"))
        .expect("the server wrote its docker owner id")
        .trim()
        .to_string()
}

/// Removes the containers, networks and images the replicas made. Declare it before the
/// replicas, so that it runs after they have stopped: a replica still running would launch
/// again what it removed, and that would outlive the test.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for owner in &self.0 {
            let filter = format!("label=berth.owner={owner}");
            for (list, remove) in [
                (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
                (vec!["network", "ls", "-q", "--filter", &filter], vec!["network", "rm"]),
                (vec!["images", "-q", "--filter", &filter], vec!["rmi", "-f"]),
            ] {
                let ids = docker(&list);
                let mut ids: Vec<&str> = ids.split_whitespace().collect();
                ids.sort_unstable();
                ids.dedup();
                if !ids.is_empty() {
                    let mut args = remove.clone();
                    args.extend(ids);
                    let _ = std::process::Command::new("docker").args(&args).output();
                }
            }
        }
    }
}

/// A site with its own Dockerfile: busybox's httpd serving `text`, after `build_secs` of
/// building.
fn dockerfile_app(text: &str, build_secs: u32) -> tempfile::TempDir {
    let slow = if build_secs > 0 {
        format!("RUN sleep {build_secs}\n")
    } else {
        String::new()
    };
    app(&[
        (
            "Dockerfile",
            &format!(
                "FROM berth-test/busybox:1\n{slow}COPY index.html /www/index.html\nUSER 65534:65534\nCMD [\"/bin/sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
            ),
        ),
        ("index.html", text),
    ])
}

#[tokio::test]
async fn a_site_deployed_through_one_replica_is_served_and_unrouted_by_the_others_edge() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first(true).await;
    let b = replica(&url).await;
    cleanup.0.extend([owner(&a), owner(&b)]);
    let site = dockerfile_app("served by every replica", 0);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "shared", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", a.log());
    let live = Instant::now();
    eventually("B's edge serves the site A deployed", 30, async || {
        b.edge("shared.localhost", "/").await == (200, "served by every replica".to_string())
    })
    .await;
    println!(
        "B's edge served A's new deployment {} ms after it went live (B starts its own instance)",
        live.elapsed().as_millis()
    );

    // Route changes made through A reach B's edge by the event bus: a custom domain
    // added (B's edge then answers for it, unverified, instead of "unknown host")…
    let unknown = b.edge("shop.example.test", "/").await;
    assert!(unknown.1.contains("No site is deployed"), "{unknown:?}");
    let asked = Instant::now();
    let (status, out) = a
        .post("/api/sites/shared/domains", &json!({"domain": "shop.example.test"}))
        .await;
    assert_eq!(status, 201, "{out}");
    let added = Instant::now();
    eventually("B's edge routes the domain added on A", 30, async || {
        b.edge("shop.example.test", "/")
            .await
            .1
            .contains("is attached to a site here")
    })
    .await;
    println!(
        "route change (domain added on A) reached B's edge {} ms after A answered ({} ms after the request)",
        added.elapsed().as_millis(),
        asked.elapsed().as_millis()
    );
    // …and the site deleted.
    let (status, out) = a.delete("/api/sites/shared").await;
    assert_eq!(status, 200, "{out}");
    let deleted = Instant::now();
    eventually("B's edge stops routing the deleted site", 30, async || {
        b.edge("shared.localhost", "/").await.0 == 404
    })
    .await;
    println!(
        "route change (site deleted on A) reached B's edge in {} ms",
        deleted.elapsed().as_millis()
    );
    let log = b.log();
    assert!(
        log.contains("a route change on the database: waking the reconciler") && log.contains("domain.added"),
        "B's reconciler was woken by A's events: {log}"
    );
}

#[tokio::test]
async fn a_wait_on_one_replica_returns_when_the_others_deploy_goes_live() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first(true).await;
    let b = replica(&url).await;
    cleanup.0.extend([owner(&a), owner(&b)]);
    let site = dockerfile_app("waited for", 3);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "waited", "repo": s(site.path()), "idempotency_key": "create-waited"}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let id = out["deployment"]["id"].as_str().expect("a deployment").to_string();
    // The same call through B (same idempotency key): B answers with A's deployment and
    // waits for it.
    let (status, waited) = b
        .post(
            "/api/sites",
            &json!({"name": "waited", "repo": s(site.path()), "idempotency_key": "create-waited", "wait": true, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(status, 201, "{waited}");
    assert_eq!(waited["deployment"]["id"], id, "{waited}");
    assert_eq!(
        waited["deployment"]["status"],
        "live",
        "{waited}\n{}\n{}",
        a.log(),
        b.log()
    );
}

/// The deploy jobs of the database: (deployment, status, attempts, lease owner).
async fn deploy_jobs(url: &str) -> Vec<(String, String, i64, Option<String>)> {
    let db = open_db_url(url).await;
    let rows: Vec<(String, String, i64, Option<String>)> =
        sqlx::query_as("SELECT payload, status, attempts, lease_owner FROM jobs WHERE kind = 'deploy' ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    db.close().await;
    rows.into_iter()
        .map(|(payload, status, attempts, owner)| {
            let payload: Value = serde_json::from_str(&payload).unwrap();
            (
                payload["deployment_id"].as_str().unwrap_or_default().to_string(),
                status,
                attempts,
                owner,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_deploy_whose_replica_is_killed_mid_build_finishes_on_the_other() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first(true).await;
    let b = replica(&url).await;
    cleanup.0.extend([owner(&a), owner(&b)]);
    // B takes no part until A holds the job: B's workers stop claiming while B is paused.
    let site = dockerfile_app("finished elsewhere", 6);
    let b_pid = b.pid().to_string();
    sh(&format!("kill -STOP {b_pid}"));
    let (status, out) = a
        .post("/api/sites", &json!({"name": "orphan", "repo": s(site.path())}))
        .await;
    assert_eq!(status, 201, "{out}");
    let id = out["deployment"]["id"].as_str().expect("a deployment").to_string();
    eventually("A builds the image", 30, async || {
        a.deployment_log(&id, "build").await.contains("RUN sleep 6")
    })
    .await;
    let data_a = a.kill9();
    sh(&format!("kill -CONT {b_pid}"));
    let done = b.wait_deployment(&id).await;
    assert_eq!(done["status"], "live", "{done}\n{}", b.log());
    assert_eq!(
        b.edge("orphan.localhost", "/").await,
        (200, "finished elsewhere".to_string())
    );
    let jobs = deploy_jobs(&url).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (_, status, attempts, _) = &jobs[0];
    assert_eq!(
        (status.as_str(), *attempts),
        ("done", 2),
        "A's attempt and B's: {jobs:?}"
    );
    let log = b.deployment_log(&id, "build").await;
    assert!(log.contains(&format!("built image berth/orphan:{id}")), "{log}");
    // A was killed, so its database (which B used) goes here.
    drop((b, data_a, cleanup));
    drop_database_at(&url);
}

fn drop_database_at(url: &str) {
    let base = std::env::var("BERTH_TEST_POSTGRES_URL").unwrap();
    let db = url.rsplit('/').next().unwrap().to_string();
    let _ = std::process::Command::new("psql")
        .args([&base, "-q", "-c", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")])
        .output();
}

#[tokio::test]
async fn deploys_spread_over_both_replicas_are_each_built_once() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first(true).await;
    let b = replica(&url).await;
    cleanup.0.extend([owner(&a), owner(&b)]);
    // Ten sites, two deploys each: 20 deploys, half enqueued through each replica.
    let sites = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    let apps: Vec<_> = sites.iter().map(|name| dockerfile_app(name, 0)).collect();
    let mut ids = Vec::new();
    for (n, (name, dir)) in sites.iter().zip(&apps).enumerate() {
        let via = if n % 2 == 0 { &a } else { &b };
        let (status, out) = via
            .post("/api/sites", &json!({"name": name, "repo": s(dir.path())}))
            .await;
        assert_eq!(status, 201, "{out}");
        ids.push(out["deployment"]["id"].as_str().unwrap().to_string());
    }
    // A second deploy of each site, through the other replica.
    for (n, name) in sites.iter().enumerate() {
        let via = if n % 2 == 0 { &b } else { &a };
        let (status, out) = via.post(&format!("/api/sites/{name}/deploy"), &json!({})).await;
        assert!(status == 200 || status == 201 || status == 202, "{status} {out}");
        ids.push(
            out["id"]
                .as_str()
                .or(out["deployment"]["id"].as_str())
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        let done = a.wait_deployment(id).await;
        assert!(
            matches!(done["status"].as_str(), Some("live" | "superseded")),
            "{done}\n{}\n{}",
            a.log(),
            b.log()
        );
    }
    // A job is marked done once its handler returns, a moment after its deployment ends.
    eventually("every deploy job done", 60, async || {
        deploy_jobs(&url)
            .await
            .iter()
            .all(|(_, status, _, _)| status != "running")
    })
    .await;
    let jobs = deploy_jobs(&url).await;
    assert_eq!(jobs.len(), ids.len(), "one job per deployment: {jobs:?}");
    for (deployment, status, attempts, _) in &jobs {
        assert_eq!(
            (status.as_str(), *attempts),
            ("done", 1),
            "{deployment} ran once: {jobs:?}"
        );
        let log = a.deployment_log(deployment, "build").await;
        assert!(
            log.matches("built image").count() <= 1,
            "{deployment} built once: {log}"
        );
    }
    // Each replica logs every job it starts: one start per deploy over both.
    let starts = |log: String| {
        log.lines()
            .filter(|l| l.contains("job started") && l.contains("deploy"))
            .count()
    };
    let (on_a, on_b) = (starts(a.log()), starts(b.log()));
    println!("of {} deploys, A ran {on_a}, B ran {on_b}", ids.len());
    assert_eq!(on_a + on_b, ids.len(), "each deploy job started once");
}

#[tokio::test]
async fn the_local_target_refuses_deploys_while_another_replica_is_live() {
    let (a, url) = first(false).await;
    let b = replica(&url).await;
    let site = app(&[("index.html", "local only")]);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "here", "repo": s(site.path()), "provider": "local"}),
        )
        .await;
    assert_eq!(status, 409, "{out}");
    let message = out.to_string();
    assert!(
        message.contains("local target") && message.contains("docker") && message.contains("kubernetes"),
        "{message}"
    );
    // Refused means nothing was made.
    let (status, _) = a.get("/api/sites/here").await;
    assert_eq!(status, 404);

    // One replica again (B stopped and removed its heartbeat): the local target deploys.
    drop(b.stop());
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "here", "repo": s(site.path()), "provider": "local", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
}

#[tokio::test]
async fn a_commit_by_another_connection_wakes_the_event_bus_through_postgres() {
    require_postgres();
    let data = data_dir();
    let url = database_url(data.path()).expect("on Postgres");
    let store = berth::store::Store::open(&url).await.unwrap();
    let bus = berth::events::EventBus::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    // The listener wakes readers once connected; from then on only commits wake them.
    let connected = bus.woken();
    tokio::spawn(bus.clone().listen(stop.clone()));
    tokio::time::timeout(Duration::from_secs(30), connected)
        .await
        .expect("the listener connected");
    let woken = bus.woken();
    let other = berth::store::Store::open(&url).await.unwrap();
    other
        .record_event("org", "deployment.live", "dpl_x", &json!({}))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), woken)
        .await
        .expect("another connection's commit woke this process's readers");
    stop.cancel();
    other.close().await;
    store.close().await;
    drop_database_at(&url);
}

/// The replica holding the certificate loop's lease, when one does.
async fn certificate_lease_holder(url: &str) -> Option<String> {
    let db = open_db_url(url).await;
    let holder: Option<String> = sqlx::query_scalar("SELECT holder FROM singleton_leases WHERE name = 'certificates'")
        .fetch_optional(&db)
        .await
        .unwrap();
    db.close().await;
    holder
}

async fn stored_challenges(url: &str) -> i64 {
    let db = open_db_url(url).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM acme_challenges")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    n
}

/// Replicas A (first, so it takes the certificate lease; with a static site `shop`) and B
/// on one database, both ordering from one pebble, which validates HTTP-01 and
/// TLS-ALPN-01 at B's edge only.
async fn acme_replicas() -> (Dns, Pebble, TestServer, TestServer, String) {
    require_postgres();
    let dns = Dns::start().await;
    let plan = PebblePlan::new();
    let (resolver, directory) = (dns.resolver(), plan.directory());
    let roots = plan.api_root().to_str().unwrap().to_string();
    let env = [
        ("BERTH_MASTER_KEY", MASTER_KEY),
        ("BERTH_DNS_RESOLVERS", resolver.as_str()),
        ("BERTH_PUBLIC_IPV4", "127.0.0.1"),
        ("BERTH_ACME_DIRECTORY", directory.as_str()),
        ("BERTH_ACME_CA_ROOTS", roots.as_str()),
    ];
    let a = TestServer::start_with(&env).await;
    let url = database_url(a.data.path()).expect("on Postgres");
    // The site is made while A is the only replica (the local target needs that).
    let site = app(&[("index.html", "shop")]);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "shop", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let a_id = owner(&a);
    eventually("A holds the certificate lease", 30, async || {
        certificate_lease_holder(&url).await.as_deref() == Some(a_id.as_str())
    })
    .await;
    let mut b_env = env.to_vec();
    b_env.push(("BERTH_DATABASE_URL", url.as_str()));
    let b = TestServer::start_with(&b_env).await;
    let pebble = plan.start(&dns, b.edge_port, b.edge_tls_port, 3600).await;
    (dns, pebble, a, b, url)
}

/// Adds `domain` to the site `shop` through `via`, points its DNS here, and asks for its
/// certificate; returns the domain once the order ended.
async fn certify(dns: &Dns, via: &TestServer, domain: &str) -> Value {
    let (status, added) = via.post("/api/sites/shop/domains", &json!({"domain": domain})).await;
    assert_eq!(status, 201, "{added}");
    let token = added["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    dns.set("/add-a", json!({"host": domain, "addresses": ["127.0.0.1"]}))
        .await;
    dns.set(
        "/set-txt",
        json!({"host": format!("_berth-challenge.{domain}."), "value": token}),
    )
    .await;
    let (status, out) = via
        .post(
            &format!("/api/sites/shop/domains/{domain}/validate"),
            &json!({"wait": true, "timeout_seconds": 90}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    out
}

#[tokio::test]
async fn a_challenge_of_the_ordering_replica_is_answered_by_the_others_edge() {
    let (dns, pebble, a, b, url) = acme_replicas().await;
    // Added through B; A holds the lease, so A orders, and the CA validates at B's edge.
    let domain = certify(&dns, &b, "shop-one-example.com").await;
    assert_eq!(
        domain["status"],
        "active",
        "{domain:#}\npebble: {}\nA: {}\nB: {}",
        pebble.log(),
        a.log(),
        b.log()
    );
    let a_log = a.log();
    assert!(
        a_log.contains("ordering a certificate") && !b.log().contains("ordering a certificate"),
        "A (the lease holder) ordered: {a_log}"
    );
    assert!(
        !a_log.contains("did not confirm the ACME challenge"),
        "B confirmed the challenge before A told the CA: {a_log}"
    );
    // The order's challenges were withdrawn from the database (and so from every edge).
    eventually("the challenges are withdrawn", 30, async || {
        stored_challenges(&url).await == 0
    })
    .await;
    let (status, body) = b.edge("shop-one-example.com", "/.well-known/acme-challenge/none").await;
    assert_eq!(status, 404, "{body}");
    drop((a, b, pebble, dns));
}

#[tokio::test]
async fn the_certificate_lease_passes_to_another_replica_when_its_holder_stops() {
    let (dns, pebble, a, b, url) = acme_replicas().await;
    let b_id = owner(&b);
    // A stops (releasing the lease); B takes it and orders the next certificate.
    let data_a = a.stop();
    let domain = certify(&dns, &b, "shop-two-example.com").await;
    assert_eq!(
        domain["status"],
        "active",
        "{domain:#}\npebble: {}\nB: {}",
        pebble.log(),
        b.log()
    );
    assert!(b.log().contains("ordering a certificate"), "{}", b.log());
    assert_eq!(certificate_lease_holder(&url).await.as_deref(), Some(b_id.as_str()));
    // A was stopped, so its database (which B used) goes here.
    drop((b, data_a, pebble, dns));
    drop_database_at(&url);
}

/// Accepts any server certificate: the test reads the one presented itself.
#[derive(Debug)]
struct AnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _server_name: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        // webpki refuses the challenge certificate's critical extension; the test reads
        // the certificate and trusts nothing of the connection.
        let _ = (message, cert, dss);
        Ok(tokio_rustls::rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `acmeIdentifier` extension (RFC 8737) of the certificate `server`'s edge presents to
/// a TLS-ALPN-01 validation handshake for `name`, when the handshake succeeds.
async fn alpn_identifier(server: &TestServer, name: &str) -> Option<Vec<u8>> {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.edge_tls_port))
        .await
        .ok()?;
    let server_name = tokio_rustls::rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
        .await
        .ok()?
        .ok()?;
    let der = stream.get_ref().1.peer_certificates()?.first()?.to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
    let ext = cert.extensions().iter().find(|e| e.oid == oid)?;
    Some(ext.value.to_vec())
}

/// A TLS-ALPN-01 challenge stored by the ordering replica is answered by the other
/// replica's edge with a certificate it makes itself from the key authorization (pebble
/// offers HTTP-01 too, and berth prefers HTTP-01 off port 443, so the order path is covered
/// by the HTTP-01 test; this one publishes through the store as the ordering replica does).
#[tokio::test]
async fn a_tls_alpn_challenge_is_answered_by_every_replicas_edge_until_withdrawn() {
    use berth::store::acme_challenges::{AcmeChallengeRow, ChallengeWithdrawn};
    use sha2::Digest as _;
    let (a, url) = first(false).await;
    let b = replica(&url).await;
    let store = berth::store::Store::open(&url).await.unwrap();
    let now = berth::util::now_ms();
    let key_authorization = "alpn-token.account-thumbprint";
    let row = AcmeChallengeRow {
        kind: "tls-alpn-01".into(),
        name: "alpn.example.com".into(),
        token: "alpn-token".into(),
        key_authorization: key_authorization.into(),
        created_at: now,
        expires_at: now + 60_000,
    };
    store.publish_acme_challenge(&row).await.unwrap();
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(&sha2::Sha256::digest(key_authorization.as_bytes()));
    for server in [&a, &b] {
        eventually("the edge answers the TLS-ALPN-01 challenge", 30, async || {
            alpn_identifier(server, "alpn.example.com").await.as_deref() == Some(expected.as_slice())
        })
        .await;
    }
    // Withdrawn: no edge answers it any more.
    let withdrawn = store
        .withdraw_acme_challenge("tls-alpn-01", "alpn.example.com", "alpn-token")
        .await
        .unwrap();
    assert!(matches!(withdrawn, ChallengeWithdrawn::Withdrawn { .. }));
    for server in [&a, &b] {
        eventually("the edge stops answering the withdrawn challenge", 30, async || {
            alpn_identifier(server, "alpn.example.com").await.is_none()
        })
        .await;
    }
    store.close().await;
}

/// The running (or paused) containers of a site on the engine, by id, sorted.
fn site_containers(owner: &str, site: &str) -> Vec<String> {
    containers_of(owner, site, &[])
}

/// The running (not paused) containers of a site on the engine, by id, sorted.
fn awake_site_containers(owner: &str, site: &str) -> Vec<String> {
    containers_of(owner, site, &["--filter", "status=running"])
}

fn containers_of(owner: &str, site: &str, more: &[&str]) -> Vec<String> {
    let owner = format!("label=berth.owner={owner}");
    let site = format!("label=berth.site={site}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &owner, "--filter", &site];
    args.extend_from_slice(more);
    let mut ids: Vec<String> = docker(&args).split_whitespace().map(str::to_string).collect();
    ids.sort_unstable();
    ids
}

/// The shared target's lease, short so that a failover takes seconds.
const SHORT_LEASE: (&str, &str) = ("BERTH_SHARED_TARGET_LEASE_SECONDS", "3");

#[tokio::test]
async fn a_docker_site_runs_once_across_replicas_and_the_survivor_adopts_its_container() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first_with(true, &[SHORT_LEASE]).await;
    let b = replica_with(&url, &[SHORT_LEASE]).await;
    let owner_a = owner(&a);
    cleanup.0.extend([owner_a.clone(), owner(&b)]);
    let site = dockerfile_app("v1", 0);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "once", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", a.log());
    // Served through both edges, by one container: B starts none of its own.
    eventually("B's edge serves the site", 30, async || {
        b.edge("once.localhost", "/").await == (200, "v1".to_string())
    })
    .await;
    assert_eq!(a.edge("once.localhost", "/").await, (200, "v1".to_string()));
    let first = site_containers(&owner_a, "once");
    assert_eq!(first.len(), 1, "one container for one instance: {first:?}\n{}", b.log());
    // B, which runs none of it, shows the site as A runs it: live, one healthy instance.
    eventually("B shows the site live with A's instance", 30, async || {
        let (_, site) = b.get("/api/sites/once").await;
        let (_, scaling) = b.get("/api/sites/once/scaling").await;
        let (_, usage) = b.get("/api/sites/once/usage").await;
        site["status"] == "live"
            && scaling["running_instances"] == 1
            && scaling["instances"][0]["state"] == "healthy"
            && usage["instances"][0]["state"] == "healthy"
    })
    .await;

    // A redeploy through B (which does not hold the lease) goes live once: B starts the
    // new container, A adopts it, the old one is stopped.
    std::fs::write(site.path().join("index.html"), "v2").unwrap();
    let (status, out) = b.post("/api/sites/once/deploy", &json!({"wait": true})).await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", b.log());
    let v2 = out["deployment"]["id"].as_str().expect("a deployment").to_string();
    for server in [&a, &b] {
        eventually("both edges serve v2", 30, async || {
            server.edge("once.localhost", "/").await == (200, "v2".to_string())
        })
        .await;
    }
    eventually("the old container is gone and one runs v2", 60, async || {
        site_containers(&owner_a, "once").len() == 1
            && !docker(&["ps", "-q", "--filter", &format!("label=berth.deployment={v2}")])
                .trim()
                .is_empty()
    })
    .await;
    let running = site_containers(&owner_a, "once");
    eventually("A runs v2's container (adopted from B)", 30, async || {
        a.log().contains("adopted a running container")
    })
    .await;
    eventually("B handed v2's container over", 30, async || {
        b.log().contains("handing its instances over")
    })
    .await;

    // A dies: its container keeps serving through B's edge, and once A's lease expires B
    // adopts that same container instead of starting another.
    let data_a = a.kill9();
    assert_eq!(b.edge("once.localhost", "/").await, (200, "v2".to_string()));
    eventually("B takes the docker target's lease over", 30, async || {
        b.log().contains("took the shared target's lease")
    })
    .await;
    eventually("B adopts the running container", 30, async || {
        b.log().contains("adopted a running container")
    })
    .await;
    assert_eq!(
        site_containers(&owner_a, "once"),
        running,
        "the same container, no other"
    );
    // An adopted container is health-checked before B's edge routes to it again: until
    // its first check passes the edge holds requests, then the same container serves.
    eventually("B's edge serves v2 from the adopted container", 15, async || {
        b.edge("once.localhost", "/").await == (200, "v2".to_string())
    })
    .await;
    assert_eq!(site_containers(&owner_a, "once"), running);
    drop((b, data_a, cleanup));
    drop_database_at(&url);
}

/// Scale to zero across replicas: the holder of the docker target's lease (A) runs the
/// container, but every request comes through B's edge. A must not put the environment
/// to sleep while B serves it; once B's traffic stops it sleeps, and a request at B wakes
/// it at A.
#[tokio::test]
async fn an_environment_served_only_through_the_other_replicas_edge_sleeps_only_when_that_edge_is_idle() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first_with(true, &[SHORT_LEASE]).await;
    let b = replica_with(&url, &[SHORT_LEASE]).await;
    let owner_a = owner(&a);
    cleanup.0.extend([owner_a.clone(), owner(&b)]);
    let site = dockerfile_app("awake", 0);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "busy", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", a.log());
    let (status, cfg) = a
        .patch(
            "/api/sites/busy/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    eventually("B's edge serves the site", 30, async || {
        b.edge("busy.localhost", "/").await == (200, "awake".to_string())
    })
    .await;
    let serving = awake_site_containers(&owner_a, "busy");
    assert_eq!(serving.len(), 1, "{serving:?}");

    // Three idle timeouts of requests through B only: never put to sleep (a request at B
    // would wake it again, so the proof is A's log), the same container serves all along.
    const SLEPT: &str = "scaling an idle environment to zero";
    for _ in 0..15 {
        assert_eq!(b.edge("busy.localhost", "/").await, (200, "awake".to_string()));
        assert!(
            !a.log().contains(SLEPT),
            "A put the environment to sleep while B's edge served it\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(awake_site_containers(&owner_a, "busy"), serving);

    // No requests anywhere: A puts it to sleep (paused or removed).
    eventually("the idle environment sleeps", 60, async || {
        a.log().contains(SLEPT)
            && awake_site_containers(&owner_a, "busy").is_empty()
            && a.get("/api/sites/busy/scaling").await.1["running_instances"] == 0
    })
    .await;
    // A request at B (which does not run it) wakes it at A.
    assert_eq!(b.edge("busy.localhost", "/").await, (200, "awake".to_string()));
    assert_eq!(awake_site_containers(&owner_a, "busy").len(), 1);
    drop((a, b, cleanup));
    drop_database_at(&url);
}

/// Scale-out across replicas: the holder of the docker target's lease (A) runs the
/// instances while the load comes through B's edge only. A's autoscaler counts the
/// requests in flight at B's edge, scales out to the maximum, and back in once they stop.
#[tokio::test]
async fn requests_in_flight_at_the_other_replicas_edge_scale_the_environment_out() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first_with(true, &[SHORT_LEASE]).await;
    let b = replica_with(&url, &[SHORT_LEASE]).await;
    let owner_a = owner(&a);
    cleanup.0.extend([owner_a.clone(), owner(&b)]);
    // Each request takes 300 ms; each process answers with its own id.
    let site = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "const me = Math.random().toString(36).slice(2);\nrequire('http').createServer((q,r)=>setTimeout(()=>r.end('instance ' + me), 300)).listen(process.env.PORT);",
        ),
    ]);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "spread", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", a.log());
    let (status, cfg) = a
        .patch(
            "/api/sites/spread/scaling",
            &json!({"min_instances": 1, "max_instances": 3, "target_concurrency": 1}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    eventually("B's edge serves the site", 30, async || {
        b.edge("spread.localhost", "/").await.0 == 200
    })
    .await;

    // Six clients keep six requests in flight at B: at one per instance it needs three.
    let stop = tokio_util::sync::CancellationToken::new();
    let (clients, mut answers) = answering_clients(&b, "spread.localhost", 6, &stop);
    let mut instances = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while instances.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "only {instances:?} answered: A did not scale out for B's load\n{}",
            a.log()
        );
        let (status, body) = answers.recv().await.expect("clients run");
        assert_eq!(status, 200, "a request failed while scaling out: {body}");
        instances.insert(body);
    }
    assert_eq!(
        awake_site_containers(&owner_a, "spread").len(),
        3,
        "never more than max_instances"
    );

    // The load stops: back to one instance, and no request failed on the way.
    stop.cancel();
    for client in clients {
        client.await.expect("client");
    }
    while let Some((status, body)) = answers.recv().await {
        assert_eq!(status, 200, "a request failed: {body}");
    }
    eventually("the environment scales back in to one instance", 60, async || {
        awake_site_containers(&owner_a, "spread").len() == 1
    })
    .await;
    drop((a, b, cleanup));
    drop_database_at(&url);
}

/// A variable changed through B with `restart: true` on a docker site A runs: A restarts
/// the container, and both edges serve the new value without a deploy.
#[tokio::test]
async fn a_restart_for_changed_variables_through_the_other_replica_restarts_the_holders_instances() {
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first_with(true, &[SHORT_LEASE]).await;
    let b = replica_with(&url, &[SHORT_LEASE]).await;
    let owner_a = owner(&a);
    cleanup.0.extend([owner_a.clone(), owner(&b)]);
    // busybox httpd answering GREETING as it was when the container started.
    let site = app(&[(
        "Dockerfile",
        "FROM berth-test/busybox:1\nCMD [\"/bin/sh\", \"-c\", \"mkdir -p /tmp/www && echo -n \\\"${GREETING:-unset}\\\" > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www\"]\n",
    )]);
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "greet", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", a.log());
    eventually("B's edge serves the site", 30, async || {
        b.edge("greet.localhost", "/").await == (200, "unset".to_string())
    })
    .await;
    let (_, before) = a.get("/api/sites/greet/deployments").await;

    let (status, out) = b
        .patch(
            "/api/sites/greet/env",
            &json!({"vars": {"GREETING": "hello again"}, "restart": true}),
        )
        .await;
    assert_eq!(status, 200, "{out}\n{}", b.log());
    assert_eq!(out["restarted"], json!(["production"]), "{out}");
    for server in [&a, &b] {
        eventually("the new value is served", 60, async || {
            server.edge("greet.localhost", "/").await == (200, "hello again".to_string())
        })
        .await;
    }
    assert_eq!(awake_site_containers(&owner_a, "greet").len(), 1, "one container");
    let (_, after) = a.get("/api/sites/greet/deployments").await;
    assert_eq!(after["deployments"], before["deployments"], "no deploy was made");
    drop((a, b, cleanup));
    drop_database_at(&url);
}

#[tokio::test]
async fn a_static_site_built_by_one_replica_is_served_by_the_others_edge_from_the_shared_dir() {
    // One folder both replicas mount at the same path (on one machine: the same folder).
    let shared = tempfile::tempdir().unwrap();
    let shared_path = shared.path().to_str().unwrap().to_string();
    let env = [("BERTH_SHARED_DIR", shared_path.as_str())];
    let mut cleanup = Cleanup(Vec::new());
    let (a, url) = first_with(true, &env).await;
    let b = replica_with(&url, &env).await;
    cleanup.0.extend([owner(&a), owner(&b)]);
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<h1>static on every replica</h1>").unwrap();
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "leaflet", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", a.log());
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    // Its files are in the shared folder, not in A's data dir.
    assert!(
        shared
            .path()
            .join("deployments")
            .join(&id)
            .join("app/index.html")
            .is_file()
    );
    assert!(!a.data.path().join("deployments").join(&id).exists());
    eventually("B's edge serves the static site A built", 30, async || {
        let (code, body) = b.edge("leaflet.localhost", "/").await;
        code == 200 && body.contains("static on every replica")
    })
    .await;

    // A shared folder that is not there is refused at start, naming the setting.
    let missing = shared.path().join("not-mounted");
    let out = serve_command(tempfile::tempdir().unwrap().path())
        .env("BERTH_DATABASE_URL", &url)
        .env("BERTH_MASTER_KEY", MASTER_KEY)
        .env("BERTH_SHARED_DIR", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--shared-dir (BERTH_SHARED_DIR)") && err.contains("is not a folder"),
        "{err}"
    );
}

/// Ends every connection of the database at `url` but psql's own; how many it ended.
fn cut_connections(url: &str) -> usize {
    let base = std::env::var("BERTH_TEST_POSTGRES_URL").unwrap();
    let db = url.rsplit('/').next().unwrap().to_string();
    let out = std::process::Command::new("psql")
        .args([
            &base,
            "-qAt",
            "-c",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            ),
        ])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn a_replica_whose_database_connections_are_cut_answers_and_deploys_again() {
    let (a, url) = first(false).await;
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<h1>before the cut</h1>").unwrap();
    let (status, out) = a
        .post(
            "/api/sites",
            &json!({"name": "severed", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    // The database ends every connection berth holds (a restart or a failover does the
    // same): its pool, the event listener's and the loops'.
    let cut = cut_connections(&url);
    assert!(cut >= 2, "berth held {cut} connections");
    // A pooled connection idle for a second is checked before use (one used within the
    // last second is not, and a query on it may fail once): after that every read is
    // answered on a live connection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..20 {
        let (status, out) = a.get("/api/sites/severed").await;
        assert_eq!(status, 200, "{out}\n{}", a.log());
    }
    // Writes, the job queue, the event bus (a wait) and the route table work again.
    std::fs::write(site.path().join("index.html"), "<h1>after the cut</h1>").unwrap();
    let (status, out) = a.post("/api/sites/severed/deploy", &json!({"wait": true})).await;
    assert!(status == 200 || status == 201 || status == 202, "{status} {out}");
    let id = out["deployment"]["id"]
        .as_str()
        .or(out["id"].as_str())
        .unwrap()
        .to_string();
    let done = a.wait_deployment(&id).await;
    assert_eq!(done["status"], "live", "{done}\n{}", a.log());
    assert_eq!(
        a.edge("severed.localhost", "/").await,
        (200, "<h1>after the cut</h1>".to_string())
    );
    let url_to_drop = url.clone();
    drop(a);
    drop_database_at(&url_to_drop);
}

#[tokio::test]
async fn resources_are_refused_on_postgres_naming_why_and_nothing_is_written() {
    let (a, _url) = first(false).await;
    let (status, out) = a
        .post("/api/resources", &json!({"name": "notes", "kind": "sqlite"}))
        .await;
    assert_eq!(status, 409, "{out}");
    let message = out.to_string();
    assert!(
        message.contains("not available while berth runs on Postgres") && message.contains("HOSTING_SET_ENV_VARS"),
        "{out}"
    );
    let (status, list) = a.get("/api/resources").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["resources"], json!([]), "{list}");
    let disks = a.data.path().join("resources");
    let made = std::fs::read_dir(&disks).map(|d| d.count()).unwrap_or(0);
    assert_eq!(made, 0, "no disk is made in {}", disks.display());
}
