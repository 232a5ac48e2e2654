//! Edge proxy vs nginx as a reverse proxy, measured with `wrk`.
//!
//! Run with `cargo bench -p berth-edge --bench edge_vs_nginx`. Needs Debian's
//! `/usr/sbin/nginx` and `/usr/bin/wrk`; everything runs on 127.0.0.1 on
//! ports picked at start.
//!
//! Set-up:
//! - one upstream nginx answering `return 200 "ok\n";`;
//! - nginx as a reverse proxy to it with its best keep-alive configuration
//!   (`upstream { keepalive 64; }`, `proxy_http_version 1.1`, empty
//!   `Connection`), forwarding the same headers the edge does;
//! - the berth edge, in this process, routing `bench.localhost` to the same
//!   upstream.
//!
//! Both proxies are warmed up, then `wrk` runs against edge and nginx in
//! turn (edge first) for a number of rounds; the table shows medians. Both
//! proxies run as many workers as there are CPUs, and wrk, the upstream and
//! the proxy under test all share those CPUs (nothing is pinned, so the
//! scheduler treats both proxies alike).
//!
//! Knobs (environment): `EDGE_BENCH_SECS` (default 10), `EDGE_BENCH_ROUNDS`
//! (3), `EDGE_BENCH_CONNECTIONS` (64), `EDGE_BENCH_THREADS` (2); in https mode
//! `EDGE_BENCH_KX=x25519` makes the handshake client offer X25519 only (by
//! default it offers rustls's defaults, and the edge picks X25519MLKEM768,
//! which nginx's OpenSSL 3.0 does not have).
//!
//! With `EDGE_BENCH_MODE=https` both proxies terminate TLS instead (TLS 1.3
//! only, one ECDSA P-256 certificate for `localhost` shared by both; the
//! edge with rustls, nginx with OpenSSL) in front of the same upstream, and
//! two things are measured: TLS handshakes per second and HTTPS keep-alive
//! req/s (`wrk`). wrk cannot measure full handshakes: after `Connection:
//! close` it reconnects with its previous TLS session, so it resumes whenever
//! the server issued a ticket (both do by default). The handshakes are
//! therefore driven by this program itself, run as a child
//! (`--handshake-client`): a rustls client with resumption disabled, one
//! request per connection, reporting in wrk's format.
//!
//! With `EDGE_BENCH_TAP=1` it measures the traffic tap instead: the same
//! build's edge with the tap on (the route labelled, drained every 2 s as
//! the control plane does) against one with it off, and a second edge with
//! it off as a control (what two identical edges differ by on this machine);
//! each round runs the three in a rotated order, so none is always first,
//! and the ratios are taken per round (paired) before their median. Then the
//! tap's memory.
//!
//! Every child process is stopped when this program ends, also on panic
//! (drop guards), and asked to die with it if it is killed (`setpriv
//! --pdeathsig`).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_edge::{CertTable, Edge, EdgeConfig, EdgeRouteTable, RouteLabel, RouteTarget};

const NGINX: &str = "/usr/sbin/nginx";
const WRK: &str = "/usr/bin/wrk";
const SETPRIV: &str = "/usr/bin/setpriv";
const HOST: &str = "bench.localhost";
const WARMUP_SECS: u64 = 2;
/// Targets from the brief: edge req/s at least this share of nginx's…
const TARGET_RPS_RATIO: f64 = 0.9;
/// …and edge p99 at most this multiple of nginx's.
const TARGET_P99_RATIO: f64 = 1.2;
/// The name both proxies hold a certificate for in HTTPS mode (wrk sends the URL's
/// host as SNI, and `localhost` resolves without touching `/etc/hosts`).
const TLS_HOST: &str = "localhost";
/// Targets of issue 14: edge TLS handshakes/s at least this multiple of nginx's…
const TARGET_HANDSHAKE_RATIO: f64 = 1.5;
/// …and HTTPS keep-alive req/s at least this share of nginx's.
const TARGET_TLS_RPS_RATIO: f64 = 0.95;
/// First argument that makes this program the handshake client (see the module docs).
const HANDSHAKE_CLIENT: &str = "--handshake-client";

fn main() {
    if std::env::args().nth(1).as_deref() == Some(HANDSHAKE_CLIENT) {
        return handshake_client(std::env::args().skip(2).collect());
    }
    match std::env::var("EDGE_BENCH_MODE").as_deref() {
        Err(_) | Ok("http") => plain_http(),
        Ok("https") => https(),
        Ok(other) => panic!("EDGE_BENCH_MODE must be http or https, got {other:?}"),
    }
}

fn plain_http() {
    let secs = env_or("EDGE_BENCH_SECS", 10);
    let rounds = env_or("EDGE_BENCH_ROUNDS", 3);
    let connections = env_or("EDGE_BENCH_CONNECTIONS", 64);
    let threads = env_or("EDGE_BENCH_THREADS", 2);
    for tool in [NGINX, WRK] {
        assert!(Path::new(tool).exists(), "{tool} is required for this benchmark");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::Builder::new()
        .prefix("berth-edge-bench-")
        .tempdir()
        .expect("temp dir");

    let upstream_port = free_port();
    let nginx_port = free_port();
    let upstream_addr: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], nginx_port).into();

    let upstream = Nginx::start(dir.path(), "upstream", &upstream_config(dir.path(), upstream_port));
    wait_until_ok(upstream_addr, "upstream nginx");
    let proxy = Nginx::start(
        dir.path(),
        "proxy",
        &proxy_config(dir.path(), nginx_port, upstream_port, connections),
    );
    wait_until_ok(nginx_addr, "nginx proxy");
    let edge = EdgeServer::start(upstream_addr, HOST, None, true);
    wait_until_ok(edge.addr, "berth edge");

    let wrk_args = |secs: u64| {
        vec![
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{secs}s"),
            "--latency".to_string(),
            "-H".to_string(),
            format!("Host: {HOST}"),
        ]
    };
    let command = format!(
        "{WRK} {} 'Host: {HOST}' http://127.0.0.1:<port>/",
        wrk_args(secs)[..5].join(" ")
    );
    eprintln!(
        "edge on {}, nginx proxy on {nginx_addr}, upstream nginx on {upstream_addr}",
        edge.addr
    );
    let edge_cpu = || process_cpu_ns(std::process::id());
    let nginx_cpu = || proxy.cpu_ns();
    let upstream_cpu = || upstream.cpu_ns();
    if std::env::var("EDGE_BENCH_TAP").is_ok_and(|v| v == "1") {
        let untapped = EdgeServer::start(upstream_addr, HOST, None, false);
        wait_until_ok(untapped.addr, "berth edge without tap");
        let control = EdgeServer::start(upstream_addr, HOST, None, false);
        wait_until_ok(control.addr, "berth edge without tap (control)");
        compare_tap(
            &edge,
            &untapped,
            &control,
            rounds,
            &wrk_args(WARMUP_SECS),
            &wrk_args(secs),
            &upstream_cpu,
        );
        println!(
            "Command (against each edge): `{command}`; machine: {cpus} CPUs shared by wrk, the upstream and the edges"
        );
        return;
    }
    eprintln!("warming up ({WARMUP_SECS} s each)…");
    let edge_url = format!("http://{}/", edge.addr);
    let nginx_url = format!("http://{nginx_addr}/");
    let wrk = Path::new(WRK);
    run_wrk(wrk, &wrk_args(WARMUP_SECS), &edge_url, &edge_cpu, &upstream_cpu);
    run_wrk(wrk, &wrk_args(WARMUP_SECS), &nginx_url, &nginx_cpu, &upstream_cpu);

    let mut edge_runs = Vec::new();
    let mut nginx_runs = Vec::new();
    for round in 1..=rounds {
        for (name, url, cpu, runs) in [
            ("edge", &edge_url, &edge_cpu as &dyn Fn() -> u64, &mut edge_runs),
            ("nginx", &nginx_url, &nginx_cpu, &mut nginx_runs),
        ] {
            let run = run_wrk(wrk, &wrk_args(secs), url, cpu, &upstream_cpu);
            eprintln!(
                "round {round}/{rounds} {name:>5}: {:>7.0} req/s, p50 {:>6.3} ms, p99 {:>6.3} ms, errors {}, \
                 CPU µs/req: proxy {:.1}, upstream {:.1}, wrk {:.1}; other processes {:.0}% of the CPUs",
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.errors,
                run.cpu_us_per_request,
                run.upstream_us_per_request,
                run.wrk_us_per_request,
                run.foreign_load * 100.0
            );
            runs.push(run);
        }
    }
    let foreign = edge_runs.iter().chain(&nginx_runs).map(|r| r.foreign_load * 100.0);
    let foreign_max = foreign.fold(0.0, f64::max);

    let e = Summary::of(&edge_runs);
    let n = Summary::of(&nginx_runs);
    let rps_ratio = e.rps / n.rps;
    let p99_ratio = e.p99_ms / n.p99_ms;
    let verdict = |ok: bool| if ok { "met" } else { "not met" };

    let mut out = String::new();
    let _ = writeln!(out, "\n| proxy | req/s | p50 | p99 | proxy CPU per request | errors |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, s) in [("berth edge", &e), ("nginx (keepalive 64)", &n)] {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.1} µs | {} |",
            s.rps, s.p50_ms, s.p99_ms, s.cpu_us, s.errors
        );
    }
    let _ = writeln!(
        out,
        "| **edge / nginx** | **{rps_ratio:.2}×** (target ≥ {TARGET_RPS_RATIO}: {}) | {:.2}× | \
         **{p99_ratio:.2}×** (target ≤ {TARGET_P99_RATIO}: {}) | {:.2}× | |",
        verdict(rps_ratio >= TARGET_RPS_RATIO),
        e.p50_ms / n.p50_ms,
        verdict(p99_ratio <= TARGET_P99_RATIO),
        e.cpu_us / n.cpu_us,
    );
    let _ = writeln!(
        out,
        "\nMedians of {rounds} rounds of {secs} s, edge and nginx alternating (edge first), after a \
         {WARMUP_SECS} s warm-up of each."
    );
    let _ = writeln!(
        out,
        "Per-round req/s: edge {:?}, nginx {:?}",
        edge_runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
        nginx_runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
    );
    let _ = writeln!(out, "Command (against each proxy): `{command}`");
    let _ = writeln!(
        out,
        "Machine: {cpus} CPUs shared by wrk ({threads} threads), the upstream nginx ({cpus} workers) and \
         the proxy under test ({cpus} workers either way); no CPU pinning; all traffic on 127.0.0.1. \
         Unrelated processes used at most {foreign_max:.0}% of the CPUs during a round."
    );
    println!("{out}");
    // The guards stop the edge and both nginx instances here.
}

/// HTTPS mode (see the module docs): handshakes/s, then keep-alive req/s.
fn https() {
    let secs = env_or("EDGE_BENCH_SECS", 10);
    let rounds = env_or("EDGE_BENCH_ROUNDS", 3);
    let connections = env_or("EDGE_BENCH_CONNECTIONS", 64);
    let threads = env_or("EDGE_BENCH_THREADS", 2);
    for tool in [NGINX, WRK] {
        assert!(Path::new(tool).exists(), "{tool} is required for this benchmark");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::Builder::new()
        .prefix("berth-edge-bench-")
        .tempdir()
        .expect("temp dir");
    let pki = BenchPki::new(dir.path());

    let upstream_port = free_port();
    let nginx_port = free_port();
    let upstream_addr: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], nginx_port).into();
    let upstream = Nginx::start(dir.path(), "upstream", &upstream_config(dir.path(), upstream_port));
    wait_until_ok(upstream_addr, "upstream nginx");
    let proxy = Nginx::start(
        dir.path(),
        "proxy",
        &proxy_tls_config(dir.path(), nginx_port, upstream_port, connections, &pki),
    );
    pki.wait_until_ok(nginx_addr, "nginx TLS proxy");
    let mut certs = CertTable::new();
    certs.insert(TLS_HOST, pki.certified_key(), false);
    let edge = EdgeServer::start(upstream_addr, TLS_HOST, Some(certs), true);
    pki.wait_until_ok(edge.addr, "berth edge (TLS)");

    let edge_url = format!("https://{TLS_HOST}:{}/", edge.addr.port());
    let nginx_url = format!("https://{TLS_HOST}:{nginx_port}/");
    let edge_cpu = || process_cpu_ns(std::process::id());
    let nginx_cpu = || proxy.cpu_ns();
    let upstream_cpu = || upstream.cpu_ns();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| measure | berth edge (rustls) | nginx (OpenSSL) | edge / nginx | target |\n| --- | ---: | ---: | ---: | --- |"
    );
    let mut notes = String::new();
    for (measure, handshakes, target) in [
        (
            "TLS handshakes/s (new connection per request)",
            true,
            TARGET_HANDSHAKE_RATIO,
        ),
        ("HTTPS keep-alive req/s", false, TARGET_TLS_RPS_RATIO),
    ] {
        let this = std::env::current_exe().expect("this program's path");
        let tool = if handshakes { this.as_path() } else { Path::new(WRK) };
        let wrk_args = |secs: u64| {
            let mut args = Vec::new();
            if handshakes {
                args.extend([HANDSHAKE_CLIENT.to_string(), pki.ca_file.display().to_string()]);
            }
            args.extend([
                format!("-t{threads}"),
                format!("-c{connections}"),
                format!("-d{secs}s"),
                "--latency".to_string(),
            ]);
            args
        };
        eprintln!("{measure}: warming up ({WARMUP_SECS} s each)…");
        run_wrk(tool, &wrk_args(WARMUP_SECS), &edge_url, &edge_cpu, &upstream_cpu);
        run_wrk(tool, &wrk_args(WARMUP_SECS), &nginx_url, &nginx_cpu, &upstream_cpu);
        let mut edge_runs = Vec::new();
        let mut nginx_runs = Vec::new();
        for round in 1..=rounds {
            for (name, url, cpu, runs) in [
                ("edge", &edge_url, &edge_cpu as &dyn Fn() -> u64, &mut edge_runs),
                ("nginx", &nginx_url, &nginx_cpu, &mut nginx_runs),
            ] {
                let run = run_wrk(tool, &wrk_args(secs), url, cpu, &upstream_cpu);
                eprintln!(
                    "{measure}, round {round}/{rounds} {name:>5}: {:>7.0}/s, p99 {:>6.3} ms, errors {}, \
                     CPU µs each: proxy {:.1}, client {:.1}; other processes {:.0}% of the CPUs",
                    run.rps,
                    run.p99_ms,
                    run.errors,
                    run.cpu_us_per_request,
                    run.wrk_us_per_request,
                    run.foreign_load * 100.0
                );
                runs.push(run);
            }
        }
        let e = Summary::of(&edge_runs);
        let n = Summary::of(&nginx_runs);
        let ratio = e.rps / n.rps;
        let verdict = if ratio >= target { "met" } else { "not met" };
        let _ = writeln!(
            out,
            "| {measure} | {:.0} (p99 {:.2} ms, {:.1} µs CPU each, {} errors) | {:.0} (p99 {:.2} ms, {:.1} µs CPU each, \
             {} errors) | **{ratio:.2}×** | ≥ {target}×: {verdict} |",
            e.rps, e.p99_ms, e.cpu_us, e.errors, n.rps, n.p99_ms, n.cpu_us, n.errors
        );
        let foreign = edge_runs.iter().chain(&nginx_runs).map(|r| r.foreign_load * 100.0);
        let _ = writeln!(
            notes,
            "{measure}: per round edge {:?}, nginx {:?}; unrelated processes used at most {:.0}% of the CPUs. \
             Command: `{} {} {}`",
            edge_runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
            nginx_runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
            foreign.fold(0.0, f64::max),
            if handshakes { "<this bench>" } else { WRK },
            wrk_args(secs)
                .join(" ")
                .replace(&pki.ca_file.display().to_string(), "<ca.pem>"),
            format_args!("https://{TLS_HOST}:<port>/"),
        );
    }
    let _ = writeln!(
        out,
        "\nMedians of {rounds} rounds of {secs} s, edge and nginx alternating (edge first), after a \
         {WARMUP_SECS} s warm-up of each.\n{notes}Machine: {cpus} CPUs shared by the client ({threads} threads: \
         rustls without resumption for handshakes, wrk with OpenSSL for keep-alive), the upstream nginx and the proxy under test ({cpus} workers either way); TLS 1.3 only, \
         one ECDSA P-256 certificate; no CPU pinning; all traffic on 127.0.0.1."
    );
    println!("{out}");
}

/// The handshake client (`--handshake-client <ca.pem> -tN -cN -dNs --latency <url>`):
/// `-c` tasks on `-t` threads each loop over new connections (full TLS handshake, no
/// resumption; verifying against the CA; one `GET /` with `Connection: close`) for `-d`
/// seconds, then print the totals in wrk's format for [`parse_wrk`].
fn handshake_client(args: Vec<String>) {
    let mut ca = None;
    let (mut threads, mut connections, mut secs, mut url) = (1usize, 1usize, 1u64, None);
    for arg in args {
        if let Some(v) = arg.strip_prefix("-t") {
            threads = v.parse().expect("-t");
        } else if let Some(v) = arg.strip_prefix("-c") {
            connections = v.parse().expect("-c");
        } else if let Some(v) = arg.strip_prefix("-d") {
            secs = v.trim_end_matches('s').parse().expect("-d");
        } else if arg.starts_with("https://") {
            url = Some(arg);
        } else if arg != "--latency" {
            ca = Some(arg);
        }
    }
    let url = url.expect("an https:// URL");
    let authority = url.trim_start_matches("https://").trim_end_matches('/').to_string();
    let ca_pem = std::fs::read(ca.expect("the CA file")).expect("read CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // `EDGE_BENCH_KX=x25519`: the client offers X25519 only, the key exchange nginx's
    // OpenSSL 3.0 picks anyway, so both servers do the same work.
    if std::env::var("EDGE_BENCH_KX").as_deref() == Ok("x25519") {
        provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut latencies, errors) = runtime.block_on(async move {
        // Resolved once: `localhost` may list ::1 first, where nothing listens.
        let mut addr = None;
        for candidate in tokio::net::lookup_host(&authority).await.expect("resolve") {
            if tokio::net::TcpStream::connect(candidate).await.is_ok() {
                addr = Some(candidate);
                break;
            }
        }
        let addr = addr.expect("the server is reachable");
        let name = rustls::pki_types::ServerName::try_from(TLS_HOST).expect("server name");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let connector = connector.clone();
            let name = name.clone();
            tasks.spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while tokio::time::Instant::now() < deadline {
                    let started = Instant::now();
                    let ok = tokio::time::timeout(Duration::from_secs(5), async {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
                        let _ = tcp.set_nodelay(true);
                        let mut tls = connector.connect(name.clone(), tcp).await.ok()?;
                        let request = format!("GET / HTTP/1.1\r\nHost: {TLS_HOST}\r\nConnection: close\r\n\r\n");
                        tls.write_all(request.as_bytes()).await.ok()?;
                        let mut buf = Vec::new();
                        // A close without close_notify is fine once the response is in.
                        let _ = tls.read_to_end(&mut buf).await;
                        buf.starts_with(b"HTTP/1.1 200").then_some(())
                    })
                    .await;
                    match ok {
                        Ok(Some(())) => latencies.push(started.elapsed()),
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            });
        }
        let (mut all, mut errors) = (Vec::new(), 0);
        while let Some(result) = tasks.join_next().await {
            let (latencies, failed) = result.expect("client task");
            all.extend(latencies);
            errors += failed;
        }
        (all, errors)
    });
    latencies.sort();
    let done = latencies.len();
    let at = |q: f64| {
        latencies
            .get(((done as f64 * q) as usize).min(done.saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!("  {done} requests in {secs}.00s, 0B read");
    println!(
        "  Latency Distribution\n     50%  {:.3}ms\n     99%  {:.3}ms",
        at(0.5),
        at(0.99)
    );
    println!("  Non-2xx or 3xx responses: {errors}");
    println!("Requests/sec: {:.2}", done as f64 / secs as f64);
}

/// A CA and an ECDSA P-256 certificate for [`TLS_HOST`] it signed, also written as
/// PEM files for nginx.
struct BenchPki {
    ca: rustls::pki_types::CertificateDer<'static>,
    chain_pem: String,
    key_pem: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The CA as PEM, for the handshake client.
    ca_file: PathBuf,
}

impl BenchPki {
    fn new(dir: &Path) -> BenchPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        // `generate` makes ECDSA P-256 keys.
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![TLS_HOST.to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("certificate");
        let pki = BenchPki {
            ca: ca.der().clone(),
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file: dir.join("localhost.crt"),
            key_file: dir.join("localhost.key"),
            ca_file: dir.join("ca.pem"),
        };
        std::fs::write(&pki.ca_file, ca.pem()).expect("write CA");
        std::fs::write(&pki.cert_file, &pki.chain_pem).expect("write certificate");
        std::fs::write(&pki.key_file, &pki.key_pem).expect("write key");
        pki
    }

    fn certified_key(&self) -> Arc<rustls::sign::CertifiedKey> {
        berth_edge::certified_key_from_pem(&self.chain_pem, &self.key_pem).expect("load certificate")
    }

    /// Polls `addr` over TLS (SNI [`TLS_HOST`], verifying against the CA) until it
    /// answers `200` with `ok`.
    fn wait_until_ok(&self, addr: SocketAddr, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.probe(addr) {
                Ok(resp) if resp.starts_with("HTTP/1.1 200") && resp.ends_with("\r\n\r\nok\n") => return,
                Ok(resp) => last = resp,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what} on {addr} did not answer 200 \"ok\" over TLS in time; last: {last}");
    }

    fn probe(&self, addr: SocketAddr) -> std::io::Result<String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(std::io::Error::other)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(TLS_HOST).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(tls, "GET / HTTP/1.1\r\nHost: {TLS_HOST}\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        // A server may close without close_notify once the response is complete.
        if let Err(e) = tls.read_to_end(&mut buf)
            && buf.is_empty()
        {
            return Err(e);
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

/// A port that was free a moment ago (for nginx, which must be told one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn common_config(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes auto;\nerror_log {d}/{name}-error.log warn;\n\
         pid {d}/{name}.pid;\nevents {{ worker_connections 4096; }}\n"
    )
}

/// `http {` opening with every temp path inside `dir` and no access log.
fn http_open(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "http {{\n  access_log off;\n  client_body_temp_path {d}/{name}-body;\n  proxy_temp_path {d}/{name}-proxy;\n  \
         fastcgi_temp_path {d}/{name}-fastcgi;\n  uwsgi_temp_path {d}/{name}-uwsgi;\n  scgi_temp_path {d}/{name}-scgi;\n  \
         keepalive_requests 1000000;\n"
    )
}

fn upstream_config(dir: &Path, port: u16) -> String {
    format!(
        "{}{}  server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
        common_config(dir, "upstream"),
        http_open(dir, "upstream"),
    )
}

fn proxy_config(dir: &Path, port: u16, upstream_port: u16, connections: u64) -> String {
    // keepalive_requests are raised on both sides (nginx's default of 1000
    // would make nginx, unlike the edge, reconnect to clients and upstream
    // every 1000 requests). The forwarded headers match what the edge sends.
    format!(
        "{}{}  upstream app {{\n    server 127.0.0.1:{upstream_port};\n    keepalive {connections};\n    \
         keepalive_requests 1000000;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      \
         proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         proxy_set_header Host $http_host;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header X-Forwarded-Host $http_host;\n    \
         }}\n  }}\n}}\n",
        common_config(dir, "proxy"),
        http_open(dir, "proxy"),
    )
}

/// nginx terminating TLS 1.3 with the bench certificate, proxying like
/// [`proxy_config`]. Session resumption stays at nginx's defaults; wrk never resumes.
fn proxy_tls_config(dir: &Path, port: u16, upstream_port: u16, connections: u64, pki: &BenchPki) -> String {
    let plain = proxy_config(dir, port, upstream_port, connections);
    let listen = format!("listen 127.0.0.1:{port};");
    assert!(plain.contains(&listen));
    plain.replace(
        &listen,
        &format!(
            "listen 127.0.0.1:{port} ssl;\n    ssl_protocols TLSv1.3;\n    ssl_certificate {};\n    \
             ssl_certificate_key {};",
            pki.cert_file.display(),
            pki.key_file.display()
        ),
    )
}

/// CPU time (ns) all threads of process `pid` have run so far, from
/// `/proc/<pid>/task/*/schedstat` (nanosecond resolution, unlike `stat`).
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Processes whose parent is `pid` (nginx's workers).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // "pid (comm) state ppid …"; comm may contain spaces.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// A foreground nginx master (with its workers); stopped on drop.
struct Nginx {
    child: Child,
    name: &'static str,
    error_log: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, name: &'static str, config: &str) -> Nginx {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, config).expect("write nginx config");
        let mut command = if Path::new(SETPRIV).exists() {
            // Should this process be killed outright, the kernel still
            // stops the nginx master, which stops its workers.
            let mut c = Command::new(SETPRIV);
            c.args(["--pdeathsig", "TERM", NGINX]);
            c
        } else {
            Command::new(NGINX)
        };
        command
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join(format!("{name}-startup.log")))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {name} nginx: {e}"));
        Nginx {
            child,
            name,
            error_log: dir.join(format!("{name}-error.log")),
        }
    }
}

impl Nginx {
    /// CPU time (ns) used so far by the master and its current workers.
    fn cpu_ns(&self) -> u64 {
        let master = self.child.id();
        process_cpu_ns(master) + children_of(master).into_iter().map(process_cpu_ns).sum::<u64>()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!("{} nginx had already exited ({status})", self.name);
            if let Ok(log) = std::fs::read_to_string(&self.error_log) {
                eprintln!("{log}");
            }
            return;
        }
        // SIGTERM makes the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Edge req/s with the tap on against the same build with it off, and a second
/// untapped edge as the control; the three run in a rotated order each round and the
/// ratios are paired per round.
fn compare_tap(
    tapped: &EdgeServer,
    untapped: &EdgeServer,
    control: &EdgeServer,
    rounds: u64,
    warmup: &[String],
    args: &[String],
    upstream_cpu: &dyn Fn() -> u64,
) {
    let edge_cpu = || process_cpu_ns(std::process::id());
    let wrk = Path::new(WRK);
    let url = |addr: SocketAddr| format!("http://{addr}/");
    for edge in [tapped, untapped, control] {
        run_wrk(wrk, warmup, &url(edge.addr), &edge_cpu, upstream_cpu);
    }
    let (mut on, mut off, mut ctl) = (Vec::new(), Vec::new(), Vec::new());
    // Taken right after a tapped run, before an idle interval lets the slots go.
    let mut footprint = tapped.edge.tap_footprint();
    for round in 1..=rounds {
        let mut order = [
            ("tap on", tapped.addr),
            ("tap off", untapped.addr),
            ("control", control.addr),
        ];
        order.rotate_left((round as usize - 1) % 3);
        for (name, addr) in order {
            let run = run_wrk(wrk, args, &url(addr), &edge_cpu, upstream_cpu);
            if name == "tap on" {
                footprint = tapped.edge.tap_footprint();
            }
            eprintln!(
                "round {round}/{rounds} {name:>7}: {:>7.0} req/s, p50 {:>6.3} ms, p99 {:>6.3} ms, errors {}, \
                 edge CPU {:.1} µs/req; other processes {:.0}% of the CPUs",
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.errors,
                run.cpu_us_per_request,
                run.foreign_load * 100.0
            );
            match name {
                "tap on" => on.push(run),
                "tap off" => off.push(run),
                _ => ctl.push(run),
            }
        }
    }
    let (a, b, c) = (Summary::of(&on), Summary::of(&off), Summary::of(&ctl));
    let paired = |x: &[WrkRun], f: fn(&WrkRun) -> f64| median(x.iter().zip(&off).map(|(x, y)| f(x) / f(y)));
    let rps = |r: &WrkRun| r.rps;
    let cpu = |r: &WrkRun| r.cpu_us_per_request;
    println!("\n| edge | req/s | p50 | p99 | edge CPU per request | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, s) in [("tap on", &a), ("tap off", &b), ("control (tap off)", &c)] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.1} µs | {} |",
            s.rps, s.p50_ms, s.p99_ms, s.cpu_us, s.errors
        );
    }
    println!(
        "| **on / off** (median of per-round ratios) | **{:.3}×** (target ≥ 0.98) | | | {:.3}× | |",
        paired(&on, rps),
        paired(&on, cpu)
    );
    println!(
        "| control / off (median of per-round ratios) | {:.3}× | | | {:.3}× | |",
        paired(&ctl, rps),
        paired(&ctl, cpu)
    );
    let rounded = |runs: &[WrkRun]| runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>();
    println!(
        "Per-round req/s: on {:?}, off {:?}, control {:?}",
        rounded(&on),
        rounded(&off),
        rounded(&ctl)
    );
    // One site with one template, in each worker that served it.
    println!(
        "Tap memory after the runs: {} site slots (one per worker that served it), {} templates, {} bytes \
         ({} bytes per site per worker)",
        footprint.sites,
        footprint.paths,
        footprint.bytes,
        footprint.bytes / footprint.sites.max(1)
    );
}

/// The berth edge on its own thread and runtime (the edge spawns its
/// per-CPU workers itself); stopped on drop.
struct EdgeServer {
    edge: Arc<Edge>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EdgeServer {
    /// Routes `host` to `upstream`; with `certs`, serves HTTPS instead of HTTP. `tap`:
    /// whether the tap counts (the route is labelled and drained every 2 s, as the
    /// control plane does).
    fn start(upstream: SocketAddr, host: &str, certs: Option<CertTable>, tap: bool) -> EdgeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind edge");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("edge address");
        let edge = Edge::new(EdgeConfig {
            tap,
            ..EdgeConfig::default()
        });
        let mut table = EdgeRouteTable::new();
        table.insert(
            host,
            RouteTarget::Upstream {
                instances: vec![upstream],
            },
        );
        table.label(
            host,
            RouteLabel {
                site: Arc::from("site_bench"),
                environment: Arc::from("env_bench"),
                deployment: Arc::from("dpl_bench"),
            },
        );
        edge.replace_routes(table);
        let tls = certs.is_some();
        if let Some(certs) = certs {
            edge.replace_certificates(certs);
        }
        let handle = Arc::clone(&edge);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-edge-acceptor".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let drained = Arc::clone(&edge);
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            drop(drained.drain_tap());
                        }
                    });
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let stopped = async move {
                        let _ = stopped.await;
                    };
                    if tls {
                        Arc::clone(&edge).serve_tls(listener, stopped).await
                    } else {
                        Arc::clone(&edge).serve(listener, stopped).await
                    }
                    .expect("edge serve");
                });
            })
            .expect("edge thread");
        EdgeServer {
            edge: handle,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for EdgeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Do not join while unwinding from a panic: a stuck edge must not
        // keep the nginx guards from running.
        if let Some(thread) = self.thread.take()
            && !std::thread::panicking()
        {
            let _ = thread.join();
        }
    }
}

/// A child killed on drop (wrk, which ends by itself within its duration).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Polls `addr` with a one-off request until it answers `200` with `ok`.
fn wait_until_ok(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        match probe(addr) {
            Ok(resp) if resp.starts_with("HTTP/1.1 200") && resp.ends_with("\r\n\r\nok\n") => return,
            Ok(resp) => last = resp,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} on {addr} did not answer 200 \"ok\" in time; last: {last}");
}

fn probe(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf)?;
    Ok(buf)
}

/// What one wrk run reported.
struct WrkRun {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Socket errors plus non-2xx/3xx responses.
    errors: u64,
    /// CPU time of the proxy under test per request, in µs.
    cpu_us_per_request: f64,
    /// CPU time of the upstream nginx per request, in µs.
    upstream_us_per_request: f64,
    /// CPU time of wrk per request, in µs.
    wrk_us_per_request: f64,
    /// Share of the machine's CPUs used by unrelated processes meanwhile.
    foreign_load: f64,
}

/// Runs wrk against `addr`. `proxy_cpu` and `upstream_cpu` report the CPU
/// time (ns) the proxy under test and the upstream have used so far; they
/// are sampled before and after, as is the whole machine's busy time, so
/// the share taken by unrelated processes can be reported.
/// `tool` is wrk, or this program as the handshake client (which reports like wrk).
fn run_wrk(
    tool: &Path,
    args: &[String],
    url: &str,
    proxy_cpu: &dyn Fn() -> u64,
    upstream_cpu: &dyn Fn() -> u64,
) -> WrkRun {
    let proxy_before = proxy_cpu();
    let upstream_before = upstream_cpu();
    let children_before = children_cpu_ns();
    let machine_before = machine_busy_ns();
    let started = Instant::now();
    let child = Command::new(tool)
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wrk");
    let mut child = KillOnDrop(child);
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .expect("wrk stdout")
        .read_to_string(&mut out)
        .expect("read wrk output");
    let status = child.0.wait().expect("wait for wrk");
    let wall_ns = started.elapsed().as_nanos() as f64;
    let proxy_ns = proxy_cpu().saturating_sub(proxy_before);
    let upstream_ns = upstream_cpu().saturating_sub(upstream_before);
    let wrk_ns = children_cpu_ns().saturating_sub(children_before);
    let machine_ns = machine_busy_ns().saturating_sub(machine_before);
    assert!(status.success(), "wrk failed ({status}):\n{out}");
    let mut run = parse_wrk(&out).unwrap_or_else(|| panic!("could not parse wrk output:\n{out}"));
    let per_request = |ns: u64| ns as f64 / 1_000.0 / run.requests.max(1) as f64;
    run.cpu_us_per_request = per_request(proxy_ns);
    run.upstream_us_per_request = per_request(upstream_ns);
    run.wrk_us_per_request = per_request(wrk_ns);
    let ours = (proxy_ns + upstream_ns + wrk_ns) as f64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    run.foreign_load = ((machine_ns as f64 - ours) / (wall_ns * cpus)).max(0.0);
    run
}

/// CPU time (ns) of this process's waited-for children (here: finished wrk
/// runs), from `/proc/self/stat` (clock ticks, assumed 100 per second).
fn children_cpu_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    // Fields after the command: state is field 3, cutime 16, cstime 17.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(16) + ticks(17)) * 10_000_000
}

/// Busy CPU time (ns) of the whole machine so far, from `/proc/stat`.
fn machine_busy_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    // cpu user nice system idle iowait irq softirq steal …
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 8 {
        return 0;
    }
    (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * 10_000_000
}

fn parse_wrk(out: &str) -> Option<WrkRun> {
    let mut requests = None;
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    for line in out.lines().map(str::trim) {
        if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = parse_duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = parse_duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                errors += part.split_whitespace().nth(1)?.parse::<u64>().ok()?;
            }
        }
    }
    Some(WrkRun {
        requests: requests?,
        rps: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
        errors,
        cpu_us_per_request: 0.0,
        upstream_us_per_request: 0.0,
        wrk_us_per_request: 0.0,
        foreign_load: 0.0,
    })
}

/// wrk's latency format: a number with `us`, `ms`, `s`, `m` or `h`.
fn parse_duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(num * factor)
}

struct Summary {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    cpu_us: f64,
}

impl Summary {
    fn of(runs: &[WrkRun]) -> Summary {
        Summary {
            rps: median(runs.iter().map(|r| r.rps)),
            p50_ms: median(runs.iter().map(|r| r.p50_ms)),
            p99_ms: median(runs.iter().map(|r| r.p99_ms)),
            errors: runs.iter().map(|r| r.errors).sum(),
            cpu_us: median(runs.iter().map(|r| r.cpu_us_per_request)),
        }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    assert!(!v.is_empty(), "no runs");
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}
