//! Test harness: starts the real `berth` binary on port 0 in a temp data dir and talks to
//! it as a user or an agent would (REST, MCP, the edge with a Host header, the CLI).

#![allow(dead_code, reason = "each test file uses a different part of the harness")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod mmdb;
pub mod nsd;
pub mod oauth_flow;
pub mod pebble;
pub mod smtp;

/// The admin key every test server starts with.
pub const KEY: &str = "berth_test_admin_key_0123456789";

/// A running `berth serve`.
pub struct TestServer {
    child: Option<Child>,
    /// Its data dir (kept until drop).
    pub data: tempfile::TempDir,
    /// Control plane port.
    pub api_port: u16,
    /// Edge port.
    pub edge_port: u16,
    /// The edge's HTTPS port.
    pub edge_tls_port: u16,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra environment variables (an empty value unsets one).
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_in(data_dir(), env).await
    }

    /// Starts a server on an existing data dir (restart tests).
    pub async fn start_in(data: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let ports_file = data.path().join("ports.json");
        let _ = std::fs::remove_file(&ports_file);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        // BERTH_LISTEN in `env` replaces the loopback API address.
        let listen = env
            .iter()
            .find(|(k, _)| *k == "BERTH_LISTEN")
            .map_or("127.0.0.1:0", |(_, v)| *v);
        cmd.args(["serve", "--listen", listen, "--edge-listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .env("BERTH_BOOTSTRAP_KEY", KEY)
            // Test apps and repositories are temp folders; the data dir lives elsewhere
            // (see `data_dir`), since berth refuses a root that contains it.
            .env("BERTH_ALLOW_LOCAL_REPOS", std::env::temp_dir())
            .env("BERTH_LOG", "info,sqlx=warn")
            // Each server's HTTPS listener on its own port; no ACME CA is reachable from
            // tests unless a test starts pebble and says so.
            .env("BERTH_EDGE_TLS_LISTEN", "127.0.0.1:0")
            .env("BERTH_ACME_DIRECTORY", "none")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data.path().join("server.log")).expect("log file"),
            ));
        for (k, v) in env {
            // An empty value unsets the variable (e.g. the harness's own defaults).
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        // A database named in `env` wins over the suite's choice (migrate-db's tests, two
        // replicas on one database).
        if !env.iter().any(|(k, _)| *k == "BERTH_DATABASE_URL")
            && let Some(url) = database_url(data.path())
        {
            cmd.env("BERTH_DATABASE_URL", url);
        }
        let child = cmd.spawn().expect("spawn berth serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        let ports: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "server did not write ports.json: {}",
                log_of(data.path())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let server = Self {
            child: Some(child),
            api_port: ports["api"].as_u64().expect("api port") as u16,
            edge_port: ports["edge"].as_u64().expect("edge port") as u16,
            edge_tls_port: ports["edge_tls"].as_u64().expect("edge_tls port") as u16,
            data,
            http,
        };
        loop {
            if let Ok(r) = server.http.get(server.api("/healthz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "healthz never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A control-plane URL.
    pub fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    /// GET with the admin key; returns status and JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.api(path))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON with the admin key.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.api(path))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// PATCH JSON with the admin key.
    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .patch(self.api(path))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// POST raw bytes with the admin key.
    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(self.api(path))
            .bearer_auth(KEY)
            .body(body)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// DELETE with the admin key.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(self.api(path))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// GET through the edge with a Host header; returns status and body.
    pub async fn edge(&self, host: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.edge_port))
            .header("host", host)
            .send()
            .await
            .expect("edge request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// A deployment's log of `kind` (build, runtime) as text, one line per log line.
    pub async fn deployment_log(&self, deployment_id: &str, kind: &str) -> String {
        let (_, logs) = self
            .get(&format!("/api/deployments/{deployment_id}/logs?kind={kind}&limit=1000"))
            .await;
        logs["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| l["line"].as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// Waits for a deployment to reach a final status; returns it.
    pub async fn wait_deployment(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, d) = self.get(&format!("/api/deployments/{id}")).await;
            if matches!(
                d["status"].as_str(),
                Some("live" | "failed" | "cancelled" | "superseded")
            ) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} never finished: {d}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env("BERTH_URL", self.api(""))
            .env("BERTH_TOKEN", KEY)
            .output()
            .expect("run berth cli")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        log_of(self.data.path())
    }

    /// Stops the server (SIGTERM, then wait) and returns the data dir.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        let data = data_dir();
        std::mem::replace(&mut self.data, data)
    }

    /// Kills the server without letting it clean up (crash tests).
    pub fn kill9(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let data = data_dir();
        std::mem::replace(&mut self.data, data)
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            // The data dir (and the server's log) goes with the test: show the log's end.
            let log = self.log();
            let tail = &log[log.len().saturating_sub(6000)..];
            eprintln!("--- the end of the server's log ---\n{tail}");
        }
        // The data dir goes with the server (unless `stop` took it for a restart), and so
        // does its database on Postgres.
        drop_database(self.data.path());
    }
}

/// Whether this run of the suite keeps berth's state on Postgres
/// (`BERTH_TEST_DATABASE=postgres`, with `BERTH_TEST_POSTGRES_URL` naming a throwaway
/// cluster: `scripts/postgres-test-env.sh` starts one) rather than SQLite in the data dir.
pub fn on_postgres() -> bool {
    std::env::var("BERTH_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// The database of a data dir on Postgres: its own database on the test cluster, named
/// after the data dir (a restart on the same dir finds the same state).
fn postgres_database(data: &Path) -> (String, String) {
    let base = std::env::var("BERTH_TEST_POSTGRES_URL")
        .expect("BERTH_TEST_DATABASE=postgres needs BERTH_TEST_POSTGRES_URL (scripts/postgres-test-env.sh prints it)");
    let name = data.file_name().and_then(|n| n.to_str()).unwrap_or("data");
    let db: String = format!("t_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    (base, db)
}

fn psql(base: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", base, "-c", sql])
        .output()
        .expect("run psql")
}

/// The database URL a server on `data` uses: None on SQLite (the data dir's own file);
/// on Postgres the data dir's database, created on first use.
pub fn database_url(data: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let (base, db) = postgres_database(data);
    let out = psql(&base, &format!("CREATE DATABASE {db}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("already exists"),
        "creating the test database {db}: {err}"
    );
    let (head, _) = base.rsplit_once('/').expect("a database URL ends with /DATABASE");
    Some(format!("{head}/{db}"))
}

fn drop_database(data: &Path) {
    if on_postgres() {
        let (base, db) = postgres_database(data);
        let _ = psql(&base, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
}

/// One query's answer from a server's database, read beside it as text (`sqlite3` on the
/// data dir's file, whose WAL lets readers not block the writer; `psql` on Postgres):
/// columns joined by `|`, rows by newlines.
pub fn db_query(data: &Path, sql: &str) -> String {
    let out = match database_url(data) {
        Some(url) => Command::new("psql")
            .args(["-At", "-v", "ON_ERROR_STOP=1", &url, "-c", sql])
            .output(),
        None => Command::new("sqlite3").arg(data.join("berth.db")).arg(sql).output(),
    }
    .expect("run the database's command-line client");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Everything a server's database holds, as bytes to search for what must never be
/// stored in clear: the SQLite file and its WAL, or a data dump of its Postgres database.
pub fn database_contents(data: &Path) -> Vec<u8> {
    match database_url(data) {
        Some(url) => {
            let out = Command::new("pg_dump")
                .args(["--data-only", &url])
                .output()
                .expect("run pg_dump");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        }
        None => {
            let mut bytes = std::fs::read(data.join("berth.db")).expect("the database file");
            bytes.extend(std::fs::read(data.join("berth.db-wal")).unwrap_or_default());
            bytes
        }
    }
}

/// How many bytes a server's database takes: the SQLite file and its WAL, or the
/// Postgres database's size.
pub fn database_size(data: &Path) -> u64 {
    if on_postgres() {
        db_query(data, "SELECT pg_database_size(current_database())")
            .parse()
            .expect("a size")
    } else {
        let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        size(data.join("berth.db")) + size(data.join("berth.db-wal"))
    }
}

/// The store of a server's data dir, opened beside it (tests that look at or change
/// state the API does not show): SQLite in the data dir, or its database on Postgres.
pub async fn open_store(data: &Path) -> berth::store::Store {
    let url = database_url(data).unwrap_or_else(|| format!("sqlite://{}", data.join("berth.db").display()));
    berth::store::Store::open(&url).await.expect("open the server's store")
}

/// A connection pool of its own on a server's database, for tests that read or move rows
/// no API reaches (the store keeps its pool to itself): SQLite waits for the server's
/// writer rather than failing "database is locked".
pub async fn open_db(data: &Path) -> sqlx::AnyPool {
    let url = database_url(data).unwrap_or_else(|| format!("sqlite://{}", data.join("berth.db").display()));
    open_db_url(&url).await
}

/// A connection pool of its own on the database at `url` (see [`open_db`]).
pub async fn open_db_url(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    sqlx::Executor::execute(conn, "PRAGMA busy_timeout = 10000").await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .expect("open the server's database")
}

/// `berth serve` on port 0 over `data`, not started: for tests of how it refuses to start.
pub fn serve_command(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--edge-listen",
        "127.0.0.1:0",
        "--edge-tls-listen",
        "127.0.0.1:0",
        "--acme-directory",
        "none",
        "--data",
    ])
    .arg(data);
    if let Some(url) = database_url(data) {
        cmd.env("BERTH_DATABASE_URL", url);
    }
    cmd
}

/// A fresh data dir, outside the system temp dir where tests write their apps: the
/// server allows deploying folders from there, and never from a root holding its data.
/// Cargo's temp folder for tests, unless the checkout itself lies in the system temp dir;
/// then `/var/tmp/berth-test-data`.
pub fn data_dir() -> tempfile::TempDir {
    let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let temp = real(&std::env::temp_dir());
    let apart = |p: &Path| {
        let p = real(p);
        !p.starts_with(&temp) && !temp.starts_with(&p)
    };
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let root = if apart(target) {
        target.to_path_buf()
    } else {
        let fallback = Path::new("/var/tmp/berth-test-data");
        std::fs::create_dir_all(fallback).expect("a data root outside the temp dir");
        assert!(
            apart(fallback),
            "no folder for test data dirs outside the temp dir {}",
            temp.display()
        );
        fallback.to_path_buf()
    };
    tempfile::Builder::new()
        .prefix("berth-data-")
        .tempdir_in(root)
        .expect("data tempdir")
}

pub fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// Writes files into a fresh temp dir.
pub fn app(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }
    dir
}

/// Runs git in `dir` with a fixed identity; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes `dir` a git repository with one commit on `main`; returns the commit.
pub fn git_init(dir: &Path) -> String {
    git(dir, &["init", "-q", "-b", "main"]);
    git_commit(dir, "init")
}

/// Commits all changes in a repo; returns the commit.
pub fn git_commit(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A tar.gz of a folder, packed the way the CLI packs uploads.
pub fn pack(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    berth_build::archive::pack_dir_tar_gz(dir, &mut out).expect("pack");
    out
}

/// Processes whose command line contains `needle`: (pid, command line).
pub fn processes_matching(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push((pid, cmd));
            }
        }
    }
    found
}

/// A dependency-free Node app answering `text` on every path.
pub fn node_app(text: &str) -> tempfile::TempDir {
    app(&[
        (
            "package.json",
            r#"{"name":"n","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        (
            "server.js",
            &format!(
                "const http = require('http');\nhttp.createServer((req, res) => {{ res.end('{text} ' + req.url); }}).listen(process.env.PORT, () => console.log('listening on ' + process.env.PORT));\n"
            ),
        ),
    ])
}

/// A dependency-free Python app answering `text`.
pub fn python_app(text: &str) -> tempfile::TempDir {
    app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            &format!(
                "import os\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\nclass H(BaseHTTPRequestHandler):\n    def do_GET(self):\n        body = b'{text}'\n        self.send_response(200)\n        self.send_header('content-length', str(len(body)))\n        self.end_headers()\n        self.wfile.write(body)\nprint('python listening', flush=True)\nHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n"
            ),
        ),
    ])
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Requests through the edge in a loop until `stop`; returns (ok, failures).
pub fn load(
    server: &TestServer,
    host: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
    let (http, port) = (server.http.clone(), server.edge_port);
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match http
                .get(format!("http://127.0.0.1:{port}/"))
                .header("host", host)
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => failed.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    })
}

/// `clients` loops of requests through the edge for `host`, each sending the next as soon
/// as the last is answered, until `stop`; every answer (status and body; status 0 and the
/// error when nothing answered) goes to the returned channel, which ends once they stop.
pub fn answering_clients(
    server: &TestServer,
    host: &'static str,
    clients: usize,
    stop: &tokio_util::sync::CancellationToken,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    tokio::sync::mpsc::UnboundedReceiver<(u16, String)>,
) {
    let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
    let loops = (0..clients)
        .map(|_| {
            let (http, port, stop, tx) = (server.http.clone(), server.edge_port, stop.clone(), tx.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let answer = match http
                        .get(format!("http://127.0.0.1:{port}/"))
                        .header("host", host)
                        .send()
                        .await
                    {
                        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                        Err(e) => (0, e.to_string()),
                    };
                    let _ = tx.send(answer);
                }
            })
        })
        .collect();
    (loops, answers)
}

/// Stops [`load`]'s loops and asserts that more than `at_least` requests ran and that
/// none of them failed.
pub async fn assert_no_request_failed(
    stop: &std::sync::atomic::AtomicBool,
    loops: Vec<tokio::task::JoinHandle<(u32, Vec<String>)>>,
    at_least: u32,
) {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for l in loops {
        let (o, f) = l.await.expect("a load loop");
        ok += o;
        failed.extend(f);
    }
    assert!(ok > at_least, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// Runs a shell command; panics with its stderr when it fails.
pub fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The tests' stand-in for the world outside, in a network namespace of its own: a host
/// with the "internet" (198.51.100.10), "private range" (10.99.77.10) and "link-local
/// metadata" (169.254.77.77) addresses, each serving HTTP on port 8000. The host routes
/// those addresses into it, so no traffic leaves the machine. One exists at a time on the
/// machine (a lock held while it lives; tests of several files wait for each other), and
/// what a crashed test left of one is removed first. Needs root.
pub struct World {
    server: Child,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl World {
    const NS: &str = "berth-test-world";
    const VETH: &str = "btworld";

    /// Creates the world (waiting for another test's to go).
    pub fn create() -> World {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/berth-test-world.lock")
            .expect("world lock file");
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).expect("world lock");
        Self::remove();
        let (ns, veth) = (Self::NS, Self::VETH);
        sh(&format!(
            "ip netns add {ns} && ip link add {veth} type veth peer name eth0 netns {ns} && \
             ip addr add 198.51.100.1/24 dev {veth} && ip link set {veth} up && \
             ip -n {ns} addr add 198.51.100.10/24 dev eth0 && ip -n {ns} addr add 10.99.77.10/32 dev eth0 && \
             ip -n {ns} addr add 169.254.77.77/32 dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && \
             ip -n {ns} route add default via 198.51.100.1 && \
             ip route replace 10.99.77.10/32 via 198.51.100.10 && ip route replace 169.254.77.77/32 via 198.51.100.10"
        ));
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "0.0.0.0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("world server");
        World { server, _lock: lock }
    }

    fn remove() {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "ip route del 10.99.77.10/32; ip route del 169.254.77.77/32; ip link del {}; ip netns del {}",
                    Self::VETH,
                    Self::NS
                ),
            ])
            .output();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        Self::remove();
    }
}

/// A second org with an admin key, written to the store the way bootstrap does (berth
/// has no API to create orgs yet).
pub async fn add_org(server: &TestServer, id: &str, name: &str, key: &str) {
    let store = open_store(server.data.path()).await;
    berth::auth::create_org_with_key(&store, id, name, "admin", "admin", key)
        .await
        .unwrap();
}

/// Runs the docker CLI; its standard output.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run the docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes docker `server`'s default target on the test base images, 256 MB per container.
pub async fn configure_test_docker(server: &TestServer) {
    let (status, out) = server
        .patch(
            "/api/config/docker",
            &serde_json::json!({"config": {
                "default": true,
                "base_images": {"node": "berth-test/node:20", "procfile": "berth-test/busybox:1"},
                "memory_mb": 256,
            }}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
}

/// Installs and starts dockerd and builds the test base images (idempotent, locked).
pub fn prepare_engine() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/docker-test-env.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run docker-test-env.sh");
    assert!(
        out.status.success(),
        "docker-test-env.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `check` holds, asking every 100 ms, and fails the test naming `what` if it
/// does not within `secs` seconds.
pub async fn eventually(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
