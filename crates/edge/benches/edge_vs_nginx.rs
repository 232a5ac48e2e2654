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
//! (3), `EDGE_BENCH_CONNECTIONS` (64), `EDGE_BENCH_THREADS` (2).
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

use berth_edge::{Edge, EdgeConfig, EdgeRouteTable, RouteTarget};

const NGINX: &str = "/usr/sbin/nginx";
const WRK: &str = "/usr/bin/wrk";
const SETPRIV: &str = "/usr/bin/setpriv";
const HOST: &str = "bench.localhost";
const WARMUP_SECS: u64 = 2;
/// Targets from the brief: edge req/s at least this share of nginx's…
const TARGET_RPS_RATIO: f64 = 0.9;
/// …and edge p99 at most this multiple of nginx's.
const TARGET_P99_RATIO: f64 = 1.2;

fn main() {
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

    let _upstream = Nginx::start(dir.path(), "upstream", &upstream_config(dir.path(), upstream_port));
    wait_until_ok(upstream_addr, "upstream nginx");
    let _proxy = Nginx::start(
        dir.path(),
        "proxy",
        &proxy_config(dir.path(), nginx_port, upstream_port, connections),
    );
    wait_until_ok(nginx_addr, "nginx proxy");
    let edge = EdgeServer::start(upstream_addr);
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
    eprintln!("warming up ({WARMUP_SECS} s each)…");
    for addr in [edge.addr, nginx_addr] {
        run_wrk(&wrk_args(WARMUP_SECS), addr);
    }

    let mut edge_runs = Vec::new();
    let mut nginx_runs = Vec::new();
    for round in 1..=rounds {
        for (name, addr, runs) in [
            ("edge", edge.addr, &mut edge_runs),
            ("nginx", nginx_addr, &mut nginx_runs),
        ] {
            let run = run_wrk(&wrk_args(secs), addr);
            eprintln!(
                "round {round}/{rounds} {name:>5}: {:>9.0} req/s, p50 {:>7.3} ms, p99 {:>7.3} ms, errors {}",
                run.rps, run.p50_ms, run.p99_ms, run.errors
            );
            runs.push(run);
        }
    }

    let edge_stats = Summary::of(&edge_runs);
    let nginx_stats = Summary::of(&nginx_runs);
    let rps_ratio = edge_stats.rps / nginx_stats.rps;
    let p99_ratio = edge_stats.p99_ms / nginx_stats.p99_ms;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| proxy | req/s (median of {rounds}) | p50 (median) | p99 (median) | errors |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    for (name, s) in [("berth edge", &edge_stats), ("nginx 1.22 (keepalive 64)", &nginx_stats)] {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.3} ms | {:.3} ms | {} |",
            s.rps, s.p50_ms, s.p99_ms, s.errors
        );
    }
    let _ = writeln!(
        out,
        "| **edge / nginx** | **{rps_ratio:.2}×** (target ≥ {TARGET_RPS_RATIO}: {}) | {:.2}× | **{p99_ratio:.2}×** (target ≤ {TARGET_P99_RATIO}: {}) | |",
        verdict(rps_ratio >= TARGET_RPS_RATIO),
        edge_stats.p50_ms / nginx_stats.p50_ms,
        verdict(p99_ratio <= TARGET_P99_RATIO),
    );
    let _ = writeln!(
        out,
        "\nPer-round req/s: edge {:?}, nginx {:?}",
        edge_runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
        nginx_runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
    );
    let _ = writeln!(
        out,
        "Command (each proxy, alternating, edge first, {rounds} rounds after a {WARMUP_SECS} s warm-up): `{command}`"
    );
    let _ = writeln!(
        out,
        "Machine: {cpus} CPUs shared by wrk ({threads} threads), the upstream nginx ({cpus} workers) and the \
         proxy under test ({cpus} workers each); no CPU pinning. All traffic on 127.0.0.1."
    );
    println!("{out}");
    // Guards stop the edge and both nginx instances here.
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

/// The berth edge on its own thread and runtime (the edge spawns its
/// per-CPU workers itself); stopped on drop.
struct EdgeServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EdgeServer {
    fn start(upstream: SocketAddr) -> EdgeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind edge");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("edge address");
        let edge = Edge::new(EdgeConfig::default());
        let mut table = EdgeRouteTable::new();
        table.insert(
            HOST,
            RouteTarget::Upstream {
                instances: vec![upstream],
            },
        );
        edge.replace_routes(table);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-edge-acceptor".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    Arc::clone(&edge)
                        .serve(listener, async move {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("edge serve");
                });
            })
            .expect("edge thread");
        EdgeServer {
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
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Socket errors plus non-2xx/3xx responses.
    errors: u64,
}

fn run_wrk(args: &[String], addr: SocketAddr) -> WrkRun {
    let child = Command::new(WRK)
        .args(args)
        .arg(format!("http://{addr}/"))
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
    assert!(status.success(), "wrk failed ({status}):\n{out}");
    parse_wrk(&out).unwrap_or_else(|| panic!("could not parse wrk output:\n{out}"))
}

fn parse_wrk(out: &str) -> Option<WrkRun> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
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
        rps: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
        errors,
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
}

impl Summary {
    fn of(runs: &[WrkRun]) -> Summary {
        Summary {
            rps: median(runs.iter().map(|r| r.rps)),
            p50_ms: median(runs.iter().map(|r| r.p50_ms)),
            p99_ms: median(runs.iter().map(|r| r.p99_ms)),
            errors: runs.iter().map(|r| r.errors).sum(),
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
