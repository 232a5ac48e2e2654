//! Attacks from inside a deployed app on the local provider: what an app can reach on the
//! network, who it is on the host, and what its resource use does to its neighbours.
//!
//! The network test builds its own little world ([`World`]) in a network namespace: a
//! host at 198.51.100.10 stands in for "the public internet", 10.99.77.10 for "a private
//! range" and 169.254.77.77 for "a link-local metadata endpoint". No traffic leaves the
//! machine: the host routes those addresses into the test's namespace. Needs root (as the
//! suite runs), like berth's isolation itself.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A Python app (standard library only) that answers questions about its own reach:
/// `/whoami?tag=`, `/probe?host=&port=`, `/read?path=`, `/resolve?name=`, `/fork?n=`,
/// `/fill?mb=` (writes in its folder; exits when the space runs out), `/hog?mb=`.
fn probe_app() -> tempfile::TempDir {
    app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            r#"import json, os, socket, subprocess, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

def own_ip():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(('198.51.100.10', 9))
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()

def gateway():
    for line in open('/proc/net/route').read().splitlines()[1:]:
        f = line.split()
        if f[1] == '00000000':
            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
    return None

children = []

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path == '/whoami':
            out = {'ip': own_ip(), 'gateway': gateway(), 'port': int(os.environ['PORT'])}
            open('/app/whoami.txt', 'w').write(q.get('tag', ''))
        elif u.path == '/probe':
            try:
                c = socket.create_connection((q['host'], int(q['port'])), timeout=3)
                c.close()
                out = 'open'
            except OSError as e:
                out = 'closed: %s' % e
        elif u.path == '/read':
            try:
                out = open(q['path']).read()
            except OSError as e:
                out = 'error: %s' % e
        elif u.path == '/resolve':
            try:
                out = socket.getaddrinfo(q['name'], 443)[0][4][0]
            except OSError as e:
                out = 'error: %s' % e
        elif u.path == '/fork':
            started, error = 0, None
            for _ in range(int(q['n'])):
                try:
                    children.append(subprocess.Popen(['sleep', '60']))
                    started += 1
                except OSError as e:
                    error = str(e)
                    break
            for c in children:
                c.kill()
                c.wait()
            children.clear()
            out = {'started': started, 'error': error}
        elif u.path == '/fill':
            written, error = 0, None
            try:
                with open('/app/filler', 'wb') as f:
                    while written < int(q['mb']) * 1024 * 1024:
                        f.write(b'x' * 65536)
                        f.flush()
                        written += 65536
            except OSError as e:
                error = str(e)
            out = {'written': written, 'error': error}
            if error:
                threading.Timer(0.2, lambda: os._exit(3)).start()
        elif u.path == '/hog':
            block = bytearray(int(q['mb']) * 1024 * 1024)
            for i in range(0, len(block), 4096):
                block[i] = 1
            out = 'survived %d' % len(block)
        else:
            out = 'probe app'
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print('probe listening', flush=True)
ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#,
        ),
    ])
}

/// Deploys `dir` as `site`; returns the deployment's id.
async fn deploy(server: &TestServer, site: &str, dir: &std::path::Path) -> String {
    let (status, out) = server
        .post_bytes(&format!("/api/sites/{site}/upload?wait=true"), pack(dir))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    out["deployment"]["id"].as_str().unwrap().to_string()
}

async fn ask(server: &TestServer, site: &str, path: &str) -> Value {
    let (code, body) = server.edge(&format!("{site}.localhost"), path).await;
    assert_eq!(code, 200, "{site}{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("{site}{path}: {body}"))
}

#[tokio::test]
async fn an_app_reaches_the_internet_and_dns_but_not_the_host_its_neighbours_or_private_ranges() {
    let world = World::create();
    // A service of the host on every address (stands in for the control plane bound to
    // 0.0.0.0, a database, anything): no app may reach it.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").expect("host service");
    let host_port = host_service.local_addr().unwrap().port();

    let server = TestServer::start().await;
    let probe = probe_app();
    deploy(&server, "prober", probe.path()).await;
    deploy(&server, "neighbour", probe.path()).await;
    let tag = |site: &str| format!("{site}-{}", std::process::id());
    let me = ask(&server, "prober", &format!("/whoami?tag={}", tag("prober"))).await;
    let neighbour = ask(&server, "neighbour", &format!("/whoami?tag={}", tag("neighbour"))).await;

    // Control: the "internet" is reachable, so the refusals below are the firewall's.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(&server, "prober", "/probe?host=198.51.100.10&port=8000").await;
        if r == "open" {
            break;
        }
        assert!(Instant::now() < deadline, "egress to the public stand-in failed: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resolved = ask(&server, "prober", "/resolve?name=registry.npmjs.org").await;
    assert!(!resolved.as_str().unwrap().starts_with("error"), "DNS: {resolved}");

    let gateway = me["gateway"].as_str().expect("a default route").to_string();
    let refused = [
        ("a private range", "10.99.77.10".to_string(), 8000),
        ("the metadata stand-in", "169.254.77.77".to_string(), 8000),
        ("the host through its gateway", gateway.clone(), host_port),
        ("the control plane through the gateway", gateway, server.api_port),
        ("host loopback", "127.0.0.1".to_string(), host_port),
        (
            "the control plane on loopback",
            "127.0.0.1".to_string(),
            server.api_port,
        ),
        (
            "another app directly",
            neighbour["ip"].as_str().unwrap_or("127.0.0.1").to_string(),
            neighbour["port"].as_u64().unwrap() as u16,
        ),
    ];
    for (what, host, port) in refused {
        let r = ask(&server, "prober", &format!("/probe?host={host}&port={port}")).await;
        assert!(
            r.as_str().unwrap().starts_with("closed"),
            "the app reached {what} at {host}:{port}: {r}"
        );
    }

    // Its own namespace: the host's sockets are not in its socket table.
    let tcp = ask(&server, "prober", "/read?path=/proc/net/tcp").await;
    let needle = format!(":{host_port:04X} ");
    assert!(!tcp.as_str().unwrap().contains(&needle), "host sockets visible: {tcp}");

    // Listening on 0.0.0.0 opens nothing on the host's interfaces.
    let port = me["port"].as_u64().unwrap() as u16;
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        use std::io::{Read as _, Write as _};
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /whoami HTTP/1.0\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(!answer.contains("gateway"), "the app listens on the host: {answer}");
    }

    // Its own unprivileged host uid (files it writes are that uid's), not root's and not
    // its neighbour's. What it writes lands in its instance's writable layer.
    use std::os::unix::fs::MetadataExt as _;
    let uid_of = |site: &str| {
        let wanted = tag(site);
        let found = std::fs::read_dir("/run/berth/fs")
            .expect("writable layers")
            .flatten()
            .map(|e| e.path().join("rw/upper/whoami.txt"))
            .find(|f| std::fs::read_to_string(f).is_ok_and(|t| t == wanted))
            .unwrap_or_else(|| panic!("no writable layer holds {site}'s file"));
        std::fs::metadata(&found).unwrap().uid()
    };
    assert!(
        uid_of("prober") >= 1000,
        "the app runs as host uid {}",
        uid_of("prober")
    );
    assert_ne!(uid_of("prober"), uid_of("neighbour"), "two sites share a host uid");

    // The provider's connection test says what confines apps here.
    let (status, test) = server.post("/api/config/local/test", &serde_json::json!({})).await;
    assert_eq!(status, 200, "{test}");
    assert!(test.to_string().contains("network namespace"), "{test}");

    // Builds get the same network: a build step that probes writes what it reached into
    // the static site it builds.
    let build_probe = app(&[
        (
            "package.json",
            r#"{"name":"probe-build","scripts":{"build":"node build.js"}}"#,
        ),
        (
            "build.js",
            &format!(
                "const net = require('net'), fs = require('fs');\n\
                 const targets = [['198.51.100.10', 8000], ['10.99.77.10', 8000], ['169.254.77.77', 8000], ['{gw}', {host_port}]];\n\
                 const probe = ([h, p]) => new Promise(r => {{ const s = net.connect({{host: h, port: p, timeout: 3000}}); \
                 s.on('connect', () => {{ s.destroy(); r(h + ':open'); }}); s.on('error', () => r(h + ':closed')); s.on('timeout', () => {{ s.destroy(); r(h + ':closed'); }}); }});\n\
                 Promise.all(targets.map(probe)).then(res => {{ fs.mkdirSync('dist', {{recursive: true}}); fs.writeFileSync('dist/index.html', res.join(' ')); }});\n",
                gw = me["gateway"].as_str().unwrap(),
            ),
        ),
    ]);
    deploy(&server, "builder", build_probe.path()).await;
    let (code, page) = server.edge("builder.localhost", "/").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("198.51.100.10:open"),
        "the build could not reach the public stand-in: {page}"
    );
    for refused in ["10.99.77.10", "169.254.77.77", me["gateway"].as_str().unwrap()] {
        assert!(
            page.contains(&format!("{refused}:closed")),
            "the build reached {refused}: {page}"
        );
    }
    drop(world);
}

fn environment_log(lines: &Value) -> String {
    lines["lines"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| x["line"].as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_fork_bomb_and_a_memory_hog_hit_their_limits_while_the_neighbours_keep_serving() {
    let server = TestServer::start_with(&[("BERTH_APP_MEMORY_MB", "128"), ("BERTH_APP_PIDS", "48")]).await;
    deploy(&server, "bomb", probe_app().path()).await;
    deploy(&server, "calm", node_app("still here").path()).await;

    let forked = ask(&server, "bomb", "/fork?n=400").await;
    let started = forked["started"].as_u64().unwrap();
    assert!(started < 48, "the process limit did not hold: {forked}");
    assert!(forked["error"].is_string(), "{forked}");
    assert_eq!(
        server.edge("calm.localhost", "/").await,
        (200, "still here /".to_string())
    );

    // 400 MB in a 128 MB instance: the kernel kills it, berth says why.
    let (code, _) = server.edge("bomb.localhost", "/hog?mb=400").await;
    assert_ne!(code, 200, "the memory hog survived");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, logs) = server
            .get("/api/sites/bomb/environments/production/logs?limit=200")
            .await;
        let text = environment_log(&logs);
        if text.contains("out of memory") {
            break;
        }
        assert!(Instant::now() < deadline, "no out-of-memory note in the log:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.edge("calm.localhost", "/").await,
        (200, "still here /".to_string())
    );
    let (health, _) = server.get("/healthz").await;
    assert_eq!(health, 200);
}

async fn wait_for_log(server: &TestServer, site: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, logs) = server
            .get(&format!("/api/sites/{site}/environments/production/logs?limit=200"))
            .await;
        let text = environment_log(&logs);
        if text.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "no '{needle}' in {site}'s log:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_disk_filler_runs_out_of_its_own_space_and_the_deployments_files_stay_as_built() {
    let server = TestServer::start_with(&[("BERTH_APP_DISK_MB", "32")]).await;
    let id = deploy(&server, "filler", probe_app().path()).await;
    deploy(&server, "calm", node_app("still here").path()).await;

    let filled = ask(&server, "filler", "/fill?mb=2048").await;
    let written = filled["written"].as_u64().unwrap();
    assert!(written <= 32 << 20, "wrote past its space: {filled}");
    assert!(
        filled["error"].as_str().unwrap_or("").contains("No space left"),
        "{filled}"
    );
    wait_for_log(&server, "filler", "disk full").await;

    // The deployment's folder on the host never saw a byte of it.
    let folder = server.data.path().join("deployments").join(&id).join("app");
    assert!(folder.join("app.py").exists(), "{}", folder.display());
    assert!(
        !folder.join("filler").exists(),
        "the app wrote into its deployment's files"
    );
    assert_eq!(
        server.edge("calm.localhost", "/").await,
        (200, "still here /".to_string())
    );
    let (health, _) = server.get("/healthz").await;
    assert_eq!(health, 200);
}

#[tokio::test]
async fn an_app_killed_for_memory_while_starting_fails_its_deploy_saying_so() {
    let server = TestServer::start_with(&[("BERTH_APP_MEMORY_MB", "64")]).await;
    let hog = app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            "block = bytearray(256 * 1024 * 1024)\nfor i in range(0, len(block), 4096):\n    block[i] = 1\n",
        ),
    ]);
    let (status, out) = server
        .post_bytes("/api/sites/hog/upload?wait=true", pack(hog.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("out of memory"), "the error does not say why: {out}");
}

#[tokio::test]
async fn an_environment_can_be_given_more_memory_than_the_default() {
    let server = TestServer::start_with(&[("BERTH_APP_MEMORY_MB", "64")]).await;
    let probe = probe_app();
    deploy(&server, "big", probe.path()).await;
    let (code, _) = server.edge("big.localhost", "/hog?mb=100").await;
    assert_ne!(code, 200, "100 MB fit in a 64 MB instance");

    let (status, bad) = server
        .patch("/api/sites/big/scaling", &serde_json::json!({"memory_mb": 8}))
        .await;
    assert!((400..500).contains(&status), "{bad}");
    assert!(bad.to_string().contains("memory_mb"), "{bad}");
    let (status, cfg) = server
        .patch("/api/sites/big/scaling", &serde_json::json!({"memory_mb": 256}))
        .await;
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(cfg["memory_mb"], 256);

    deploy(&server, "big", probe.path()).await;
    let (code, body) = server.edge("big.localhost", "/hog?mb=100").await;
    assert_eq!((code, body.as_str()), (200, "\"survived 104857600\""));
}

/// Mounts of the machine under `dir`, from the kernel's table.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| std::path::Path::new(m).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let out = Command::new("losetup")
        .args(["-l", "-n", "-O", "BACK-FILE"])
        .output()
        .expect("losetup");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|f| f.starts_with(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_build_that_fills_its_disk_fails_saying_so_leaves_nothing_behind_and_others_keep_deploying() {
    let server = TestServer::start_with(&[("BERTH_BUILD_DISK_MB", "64")]).await;
    // 200 MiB from a build step: past its 64 MiB disk, far below what the host has (so
    // the test stays harmless where the bound does not hold).
    let filler = app(&[(
        "package.json",
        r#"{"name":"filler","scripts":{"build":"head -c 209715200 /dev/zero > fill || { echo wrote $(wc -c < fill) bytes; exit 1; }; mkdir -p dist && echo filled > dist/index.html"}}"#,
    )]);
    let (status, out) = server
        .post_bytes("/api/sites/filler/upload?wait=true", pack(filler.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        out["deployment"]["status"], "failed",
        "the filler's build succeeded: {out}"
    );
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("disk full") && error.contains("64 MiB") && error.contains("--build-disk-mb"),
        "the error does not say why: {error}"
    );
    let log = server.deployment_log(&id, "build").await;
    let wrote: u64 = log
        .lines()
        .find_map(|l| l.strip_prefix("wrote ")?.strip_suffix(" bytes")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size in the log:\n{log}"));
    assert!(wrote <= 64 << 20, "the build wrote {wrote} bytes on a 64 MiB disk");

    // Nothing is left: no mount, no loop device, no disk file, no byte of it in the
    // deployment's folder.
    let data = server.data.path();
    assert_eq!(mounts_under(data), Vec::<String>::new());
    assert_eq!(loops_under(data), Vec::<String>::new());
    let builds: Vec<_> = std::fs::read_dir(data.join("builds"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(builds.is_empty(), "left in the builds folder: {builds:?}");
    assert!(!data.join("deployments").join(&id).join("app/fill").exists());

    // Another site builds and deploys as usual; its built files are its folder, its own.
    let fine = app(&[(
        "package.json",
        r#"{"name":"fine","scripts":{"build":"mkdir -p dist && echo built-fine > dist/index.html && ln -s dist/index.html link"}}"#,
    )]);
    let fine_id = deploy(&server, "fine", fine.path()).await;
    assert_eq!(
        server.edge("fine.localhost", "/").await,
        (200, "built-fine\n".to_string())
    );
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let folder = data.join("deployments").join(&fine_id).join("app");
    let (dir_meta, page_meta) = (
        std::fs::metadata(&folder).unwrap(),
        std::fs::metadata(folder.join("dist/index.html")).unwrap(),
    );
    assert!(
        page_meta.uid() >= 200_000,
        "built files belong to uid {}",
        page_meta.uid()
    );
    assert_eq!(dir_meta.uid(), page_meta.uid());
    assert_eq!(dir_meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::read_link(folder.join("link")).unwrap(),
        std::path::Path::new("dist/index.html")
    );
    assert_eq!(mounts_under(data), Vec::<String>::new());
}

#[tokio::test]
async fn build_disks_left_by_a_crash_are_removed_when_berth_starts() {
    let server = TestServer::start().await;
    let slow = app(&[(
        "package.json",
        r#"{"name":"slow","scripts":{"build":"sleep 3 && mkdir -p dist && echo slow > dist/index.html"}}"#,
    )]);
    let (status, out) = server
        .post_bytes("/api/sites/slow/upload?create=true", pack(slow.path()))
        .await;
    assert!(status < 300, "{out}");
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let data_path = server.data.path().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(30);
    while mounts_under(&data_path).is_empty() {
        assert!(Instant::now() < deadline, "the build never mounted its disk");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = server.kill9();
    assert!(
        !mounts_under(data.path()).is_empty(),
        "the crash left no disk to clean up"
    );
    // Also one of a deployment that will never run again.
    let builds = data.path().join("builds");
    sh(&format!(
        "cd {b} && truncate -s 16M dpl_gone.img && mkfs.ext4 -q dpl_gone.img && mkdir dpl_gone && mount -o loop dpl_gone.img dpl_gone",
        b = builds.display()
    ));

    let server = TestServer::start_in(data, &[]).await;
    let done = server.wait_deployment(&id).await;
    assert_eq!(done["status"], "live", "{done}");
    let data = server.data.path();
    assert_eq!(mounts_under(data), Vec::<String>::new());
    assert_eq!(loops_under(data), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(data.join("builds"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left in the builds folder: {left:?}");
}
