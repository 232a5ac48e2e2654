//! Resources: a `sqlite` resource is a disk of its own that outlives deployments, seen by
//! its site's apps at `/data/<name>` and named by `DATABASE_URL`. These tests deploy real
//! apps on the local provider (real sandbox, real loop-mounted disks; the suite runs as
//! root) and act as a user would over the REST API.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

/// A Python app (standard library only): `/count` adds a row to the SQLite database its
/// `DATABASE_URL` names and answers how many there are (`/rows` only counts); `/env?name=`, `/read?path=`,
/// `/list?path=`, `/whoami`, and `/fill?mb=&path=` (writes until the space runs out).
fn store_app() -> tempfile::TempDir {
    app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            r#"import json, os, sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        try:
            if u.path == '/rows':
                db = sqlite3.connect(os.environ['DATABASE_URL'][len('sqlite://'):])
                out = db.execute('SELECT COUNT(*) FROM hits').fetchone()[0]
                db.close()
            elif u.path == '/count':
                db = sqlite3.connect(os.environ['DATABASE_URL'][len('sqlite://'):])
                db.execute('CREATE TABLE IF NOT EXISTS hits (at TEXT)')
                db.execute("INSERT INTO hits VALUES (datetime('now'))")
                db.commit()
                out = db.execute('SELECT COUNT(*) FROM hits').fetchone()[0]
                db.close()
            elif u.path == '/env':
                out = os.environ.get(q['name'])
            elif u.path == '/read':
                out = open(q['path'], 'rb').read(64).decode('latin-1')
            elif u.path == '/list':
                out = sorted(os.listdir(q['path']))
            elif u.path == '/whoami':
                out = os.getuid()
            elif u.path == '/fill':
                written, error = 0, None
                try:
                    with open(q['path'], 'wb') as f:
                        while written < int(q['mb']) * 1024 * 1024:
                            f.write(b'x' * 65536)
                            written += 65536
                            if written % (4 << 20) == 0:
                                f.flush()
                                os.fsync(f.fileno())
                        f.flush()
                        os.fsync(f.fileno())
                except OSError as e:
                    error = str(e)
                out = {'written': written, 'error': error}
            else:
                out = 'store app'
        except Exception as e:
            out = 'error: %s' % e
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print('store app listening', flush=True)
ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#,
        ),
    ])
}

/// Deploys `dir` as `site` (made on first upload) and waits until it is live.
async fn deploy(server: &TestServer, site: &str, dir: &std::path::Path) -> String {
    let (status, out) = server
        .post_bytes(&format!("/api/sites/{site}/upload?wait=true"), pack(dir))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    out["deployment"]["id"].as_str().unwrap().to_string()
}

/// Asks the site's app; while it is (re)starting after a resource change the edge says
/// 503, so that is waited out.
async fn ask(server: &TestServer, site: &str, path: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (code, body) = loop {
        let (code, body) = server.edge(&format!("{site}.localhost"), path).await;
        if code != 503 || std::time::Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(code, 200, "{site}{path}: {body}\n{}", server.log());
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("{site}{path}: {body}"))
}

async fn create(server: &TestServer, body: Value) -> Value {
    let (status, out) = server.post("/api/resources", &body).await;
    assert_eq!(status, 201, "{body}: {out}\n{}", server.log());
    out
}

fn resources_dir(server: &TestServer) -> PathBuf {
    server.data.path().join("resources")
}

/// The disk images in the data dir.
fn images(server: &TestServer) -> Vec<PathBuf> {
    std::fs::read_dir(resources_dir(server))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .collect()
}

#[tokio::test]
async fn a_sqlite_resource_keeps_the_apps_database_across_deploys() {
    let server = TestServer::start().await;
    deploy(&server, "counter", store_app().path()).await;
    // Attaching restarts the running app, which then has its database.
    let out = create(
        &server,
        json!({ "name": "main", "kind": "sqlite", "size_mb": 32, "site": "counter" }),
    )
    .await;
    assert_eq!(out["restarted"], json!(["production"]), "{out}");
    assert_eq!(
        out["resource"]["env_vars"],
        json!(["DATABASE_URL", "BERTH_RESOURCE_MAIN_PATH"])
    );
    assert_eq!(
        ask(&server, "counter", "/env?name=DATABASE_URL").await,
        "sqlite:///data/main/db.sqlite"
    );
    assert_eq!(
        ask(&server, "counter", "/env?name=BERTH_RESOURCE_MAIN_PATH").await,
        "/data/main"
    );
    assert_eq!(ask(&server, "counter", "/count").await, 1);
    assert_eq!(ask(&server, "counter", "/count").await, 2);

    // A new deployment (new folder, new writable layer) finds the same database.
    deploy(&server, "counter", store_app().path()).await;
    assert_eq!(ask(&server, "counter", "/count").await, 3);

    let (status, got) = server.get("/api/resources/main").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["site"], "counter");
    assert_eq!(got["kind"], "sqlite");
    assert_eq!(got["size_mb"], 32);
    assert!(got["used_bytes"].as_u64().is_some_and(|b| b > 0), "{got}");
    let (status, list) = server.get("/api/resources?site=counter").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["resources"][0]["name"], "main");
}

#[tokio::test]
async fn another_site_cannot_reach_a_resource_in_its_sandbox_or_on_the_host() {
    let server = TestServer::start().await;
    deploy(&server, "keeper", store_app().path()).await;
    deploy(&server, "intruder", store_app().path()).await;
    let out = create(
        &server,
        json!({ "name": "secret-db", "kind": "sqlite", "size_mb": 16, "site": "keeper" }),
    )
    .await;
    assert_eq!(out["restarted"], json!(["production"]), "{out}");
    assert_eq!(ask(&server, "keeper", "/count").await, 1);
    let image = images(&server).pop().expect("the resource's disk image");

    // From inside the other site's sandbox: neither the folder nor the image is there.
    for path in ["/data/secret-db/db.sqlite".to_string(), image.display().to_string()] {
        let read = ask(&server, "intruder", &format!("/read?path={path}")).await;
        assert!(read.as_str().is_some_and(|r| r.starts_with("error")), "{path}: {read}");
    }
    for path in [
        "/data".to_string(),
        "/data/secret-db".to_string(),
        resources_dir(&server).display().to_string(),
    ] {
        let list = ask(&server, "intruder", &format!("/list?path={path}")).await;
        assert!(list.as_str().is_some_and(|r| r.starts_with("error")), "{path}: {list}");
    }
    // On the host, as any other uid (the next site's, nobody): were one ever to reach
    // the data dir, the image and the mounted folder are closed to it.
    let mounted = resources_dir(&server).join(image.file_stem().unwrap());
    let keeper_uid = std::fs::metadata(&mounted).unwrap().uid();
    assert_ne!(keeper_uid, 0, "the disk is handed to the site's own uid");
    // `head -c 1 FILE` or `ls DIR` as `uid` on the host.
    let opens = |uid: u32, path: &std::path::Path| {
        let tool: &[&str] = if path.is_dir() { &["ls"] } else { &["head", "-c", "1"] };
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "--",
            ])
            .args(tool)
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(opens(keeper_uid, &mounted), "the site's own uid lists its disk");
    for uid in [keeper_uid + 1, 65534] {
        for path in [&image, &mounted] {
            assert!(!opens(uid, path), "uid {uid} opened {}", path.display());
        }
    }
}

#[tokio::test]
async fn an_app_writing_past_its_resources_size_gets_no_space_and_the_host_keeps_its_own() {
    let server = TestServer::start().await;
    deploy(&server, "keeper", store_app().path()).await;
    create(
        &server,
        json!({ "name": "small", "kind": "sqlite", "size_mb": 16, "site": "keeper" }),
    )
    .await;
    assert_eq!(ask(&server, "keeper", "/count").await, 1);
    let image = images(&server).pop().expect("the resource's disk image");
    // Writing past the size: the kernel says no, and the host holds no more than the size.
    let filled = ask(&server, "keeper", "/fill?mb=64&path=/data/small/filler").await;
    assert!(
        filled["error"].as_str().unwrap_or("").contains("No space left"),
        "{filled}"
    );
    assert!(filled["written"].as_u64().unwrap() <= 16 << 20, "{filled}");
    let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(
        allocated <= 16 << 20,
        "the image holds {allocated} bytes of the host's disk"
    );
    // The app still reads its database.
    let (status, _) = server.edge("keeper.localhost", "/count").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_resource_input_is_refused_and_writes_nothing() {
    let server = TestServer::start().await;
    let cases = [
        (
            json!({ "name": "Bad_Name", "kind": "sqlite" }),
            400,
            "invalid resource name",
        ),
        (json!({ "name": "1db", "kind": "sqlite" }), 400, "start with a letter"),
        (
            json!({ "name": "db", "kind": "postgres" }),
            400,
            "the kinds are: sqlite",
        ),
        (
            json!({ "name": "db", "kind": "sqlite", "size_mb": 8 }),
            400,
            "give 16 to 10240",
        ),
        (
            json!({ "name": "db", "kind": "sqlite", "size_mb": 20000 }),
            400,
            "give 16 to 10240",
        ),
        (
            json!({ "name": "db", "kind": "sqlite", "site": "nowhere" }),
            404,
            "nowhere",
        ),
    ];
    for (body, want, needle) in cases {
        let (status, out) = server.post("/api/resources", &body).await;
        assert_eq!(status, want, "{body}: {out}");
        let message = out["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, list) = server.get("/api/resources").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 0, "{list}");
    assert!(images(&server).is_empty(), "{:?}", images(&server));

    // A duplicate name is refused too, and the first one stays as it was.
    create(&server, json!({ "name": "db", "kind": "sqlite", "size_mb": 16 })).await;
    let (status, out) = server
        .post("/api/resources", &json!({ "name": "db", "kind": "sqlite" }))
        .await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("already exists"),
        "{out}"
    );
    assert_eq!(images(&server).len(), 1);
    let (_, got) = server.get("/api/resources/db").await;
    assert_eq!(got["size_mb"], 16, "{got}");
}

/// An org's resource disks are bounded in total (`--resources-max-mb`): a creation past it
/// is refused naming the limit and the fix, leaves no disk behind, and deleting one makes
/// room again.
#[tokio::test]
async fn an_orgs_resources_are_bounded_in_total_size() {
    let server = TestServer::start_with(&[("BERTH_RESOURCES_MAX_MB", "48")]).await;
    create(&server, json!({ "name": "one", "kind": "sqlite", "size_mb": 32 })).await;
    let (status, out) = server
        .post(
            "/api/resources",
            &json!({ "name": "two", "kind": "sqlite", "size_mb": 32 }),
        )
        .await;
    assert_eq!(status, 409, "{out}");
    let message = out["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("64 MiB") && message.contains("48 MiB") && message.contains("--resources-max-mb"),
        "{message}"
    );
    assert_eq!(images(&server).len(), 1, "{:?}", images(&server));
    let (_, list) = server.get("/api/resources").await;
    assert_eq!(list["total"], 1, "{list}");
    // What fits still fits.
    create(&server, json!({ "name": "two", "kind": "sqlite", "size_mb": 16 })).await;
    let (status, out) = server
        .post(
            "/api/resources",
            &json!({ "name": "three", "kind": "sqlite", "size_mb": 16 }),
        )
        .await;
    assert_eq!(status, 409, "{out}");
    let (status, out) = server.delete("/api/resources/one").await;
    assert_eq!(status, 200, "{out}");
    create(&server, json!({ "name": "three", "kind": "sqlite", "size_mb": 16 })).await;
    assert_eq!(images(&server).len(), 2, "{:?}", images(&server));
}

#[tokio::test]
async fn deleting_an_attached_resource_needs_detach_and_then_removes_its_disk() {
    let server = TestServer::start().await;
    deploy(&server, "holder", store_app().path()).await;
    create(
        &server,
        json!({ "name": "data", "kind": "sqlite", "size_mb": 16, "site": "holder" }),
    )
    .await;
    assert_eq!(ask(&server, "holder", "/count").await, 1);
    let image = images(&server).pop().expect("an image");

    let (status, out) = server.delete("/api/resources/data").await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("detach: true"),
        "{out}"
    );
    assert!(image.exists());
    assert_eq!(ask(&server, "holder", "/count").await, 2);

    let (status, out) = server.delete("/api/resources/data?detach=true").await;
    assert_eq!(status, 200, "{out}\n{}", server.log());
    assert_eq!(out["detached_from"], "holder");
    assert_eq!(out["restarted"], json!(["production"]));
    assert!(!image.exists(), "the disk image is still there");
    let (status, _) = server.get("/api/resources/data").await;
    assert_eq!(status, 404);
    // The app runs on, restarted without it.
    assert_eq!(ask(&server, "holder", "/env?name=DATABASE_URL").await, Value::Null);
    let (_, list) = server.get("/api/resources").await;
    assert_eq!(list["total"], 0, "{list}");
    // Both calls are in the audit log, the refused one with its reason.
    let (status, audit) = server.get("/api/audit?action=HOSTING_DELETE_RESOURCE").await;
    assert_eq!(status, 200, "{audit}");
    let outcomes: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "error"], "{audit}");
}

#[tokio::test]
async fn a_resource_on_a_provider_other_than_local_is_refused_and_fails_the_deploy_before_building() {
    let server = TestServer::start().await;
    let dir = store_app();
    let repo = dir.path().to_string_lossy().into_owned();
    for (name, provider) in [("boxed", "docker"), ("moved", "local")] {
        let (status, out) = server
            .post(
                "/api/sites",
                &json!({ "name": name, "repo": repo, "provider": provider, "deploy": false }),
            )
            .await;
        assert_eq!(status, 201, "{out}");
    }
    // Attaching to a docker site is refused, naming the limitation; nothing is made.
    let (status, out) = server
        .post(
            "/api/resources",
            &json!({ "name": "db", "kind": "sqlite", "site": "boxed" }),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("served by the local provider only"), "{message}");
    assert!(images(&server).is_empty());

    // A site that moves to docker once it has one fails its deploy before building.
    create(
        &server,
        json!({ "name": "db", "kind": "sqlite", "size_mb": 16, "site": "moved" }),
    )
    .await;
    let (status, out) = server.patch("/api/sites/moved", &json!({ "provider": "docker" })).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = server.post("/api/sites/moved/deploy", &json!({ "wait": true })).await;
    assert!(status < 300, "{status}: {out}");
    let deployment = &out["deployment"];
    assert_eq!(deployment["status"], "failed", "{out}");
    let error = deployment["error"].as_str().unwrap_or("");
    assert!(error.contains("served by the local provider only"), "{out}");
}

/// Loop devices backed by `image`.
fn loops_of(image: &std::path::Path) -> usize {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|d| {
            std::fs::read_to_string(d.path().join("loop/backing_file"))
                .is_ok_and(|b| std::path::Path::new(b.trim_end()) == image)
        })
        .count()
}

#[tokio::test]
async fn after_a_crash_the_restarted_server_serves_the_same_database_from_one_mount() {
    let server = TestServer::start().await;
    deploy(&server, "survivor", store_app().path()).await;
    create(
        &server,
        json!({ "name": "main", "kind": "sqlite", "size_mb": 16, "site": "survivor" }),
    )
    .await;
    assert_eq!(ask(&server, "survivor", "/count").await, 1);
    let image = images(&server).pop().expect("an image").canonicalize().unwrap();
    assert_eq!(loops_of(&image), 1);

    // Killed without cleaning up: its mount (and maybe its app) is left behind.
    let data = server.kill9();
    let server = TestServer::start_in(data, &[]).await;
    assert_eq!(ask(&server, "survivor", "/count").await, 2);
    assert_eq!(loops_of(&image), 1, "the disk is mounted twice");
    let _data = server.stop();
    assert_eq!(loops_of(&image), 0, "a stopped server left its disk mounted");
}

/// Runs `berth backup --data DATA --out OUT [extra…] --json` off the async threads (the
/// app keeps being asked meanwhile); answers whether it succeeded, its JSON summary and
/// its stderr.
async fn run_backup(data: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> (bool, Value, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["backup", "--data", s(data), "--out", s(out), "--json"])
        .args(extra);
    let run = tokio::task::spawn_blocking(move || cmd.output().expect("run berth backup"))
        .await
        .unwrap();
    let summary = serde_json::from_slice(&run.stdout).unwrap_or(Value::Null);
    (
        run.status.success(),
        summary,
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

/// Runs a system tool; panics with its stderr when it fails.
fn tool(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Asks the site's app for `/count` (a write on its disk), giving up after a minute: a
/// disk left frozen would hold the write forever.
async fn write_once(server: &TestServer, site: &str) -> u64 {
    let asked = tokio::time::timeout(std::time::Duration::from_secs(60), ask(server, site, "/count")).await;
    let count = asked.expect("a write on the disk hung: is its file system still frozen?");
    count.as_u64().unwrap_or_else(|| panic!("{count}"))
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The rows of the app's database in a backed-up disk image: it is mounted read-only
/// (which a file system that was not cleanly frozen, its journal needing recovery,
/// refuses), its database copied out and checked by `sqlite3`.
fn rows_in_image(image: &std::path::Path) -> (String, u64) {
    let mnt = tempfile::tempdir().unwrap();
    tool("mount", &["-t", "ext4", "-o", "ro,loop", s(image), s(mnt.path())]);
    let copy = tempfile::tempdir().unwrap();
    let mut copied = Ok(());
    for file in ["db.sqlite", "db.sqlite-journal", "db.sqlite-wal"] {
        let from = mnt.path().join(file);
        if from.exists() {
            copied = copied.and(std::fs::copy(&from, copy.path().join(file)).map(drop));
        }
    }
    tool("umount", &[s(mnt.path())]);
    copied.unwrap();
    let db = copy.path().join("db.sqlite");
    let integrity = tool("sqlite3", &[s(&db), "PRAGMA integrity_check"]);
    let rows = tool("sqlite3", &[s(&db), "SELECT COUNT(*) FROM hits"]);
    (integrity, rows.parse().unwrap())
}

/// A tmpfs mounted on a temp folder with `options`, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        tool("mount", &["-t", "tmpfs", "-o", options, "tmpfs", s(dir.path())]);
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_while_the_app_writes_holds_its_whole_database_and_restores_it() {
    let server = TestServer::start().await;
    deploy(&server, "writer", store_app().path()).await;
    create(
        &server,
        json!({ "name": "main", "kind": "sqlite", "size_mb": 32, "site": "writer" }),
    )
    .await;
    assert_eq!(write_once(&server, "writer").await, 1);

    // The app writes a row per request, without a pause, all through the backup.
    let latest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (http, url) = (
            server.http.clone(),
            format!("http://127.0.0.1:{}/count", server.edge_port),
        );
        let (latest, stop) = (latest.clone(), stop.clone());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            while !stop.load(SeqCst) {
                let r = http.get(&url).header("host", "writer.localhost").send().await.unwrap();
                assert_eq!(r.status(), 200);
                let count: u64 = r.json().await.unwrap();
                latest.fetch_max(count, SeqCst);
            }
        })
    };
    while latest.load(std::sync::atomic::Ordering::SeqCst) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = latest.load(std::sync::atomic::Ordering::SeqCst);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("berth.db");
    let (ok, summary, stderr) = run_backup(server.data.path(), &out, &[]).await;
    assert!(ok, "{stderr}\n{}", server.log());
    let during = latest.load(std::sync::atomic::Ordering::SeqCst);
    // The disk is thawed: the app writes on after the backup.
    let after = write_once(&server, "writer").await;
    assert!(after > during, "{after} after the backup, {during} before its end");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();

    // The summary lists the disk, copied while mounted (so frozen), and the manifest
    // says the same.
    let dir = out_dir.path().join("berth.db.resources");
    assert_eq!(summary["resources"]["status"], "copied", "{summary}");
    assert_eq!(summary["resources"]["dir"], s(&dir), "{summary}");
    let disks = summary["resources"]["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{summary}");
    let disk = &disks[0];
    assert_eq!(disk["name"], "main");
    assert_eq!(disk["site"], "writer");
    assert_eq!(disk["size"], 32 << 20);
    assert!(disk["frozen_ms"].is_u64(), "a mounted disk is frozen: {summary}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["resources"], summary["resources"]["disks"], "{manifest}");
    assert_eq!(manifest["database"], "berth.db");
    let id = disk["id"].as_str().unwrap();
    let image = dir.join(format!("{id}.img"));
    for file in [&out, &dir.join("manifest.json"), &image] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let names: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "nothing partial is left: {names:?}");
    // Sparse: what the copy holds is what it says it copied, far less than the size.
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 32 << 20);
    let bytes = disk["bytes"].as_u64().unwrap();
    let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(bytes > 0 && bytes < 16 << 20, "{bytes} bytes of data");
    assert!(
        allocated <= bytes + (1 << 20),
        "{allocated} allocated for {bytes} bytes of data"
    );
    // The snapshot lists the same resource.
    let listed = tool("sqlite3", &[s(&out), "SELECT id FROM resources"]);
    assert_eq!(listed, id);

    // The image is a clean file system holding a whole database with every row written
    // before the backup started.
    let (integrity, rows) = rows_in_image(&image);
    assert_eq!(integrity, "ok");
    assert!(
        rows >= before,
        "{rows} rows in the copy, {before} written before the backup"
    );

    // Restore into a new data dir: the snapshot, the master key and the image put back.
    let old = server.stop();
    let restored = data_dir();
    std::fs::copy(&out, restored.path().join("berth.db")).unwrap();
    std::fs::copy(old.path().join("master.key"), restored.path().join("master.key")).unwrap();
    std::fs::create_dir(restored.path().join("resources")).unwrap();
    let put_back = restored.path().join("resources").join(format!("{id}.img"));
    tool("cp", &["--sparse=always", s(&image), s(&put_back)]);
    let server = TestServer::start_in(restored, &[]).await;
    // Deployments are rebuilt from their sources; the app reads the rows back.
    deploy(&server, "writer", store_app().path()).await;
    assert_eq!(ask(&server, "writer", "/rows").await, rows, "{}", server.log());
    assert_eq!(write_once(&server, "writer").await, rows + 1);
}

#[tokio::test]
async fn a_backup_that_cannot_write_fails_clearly_leaving_nothing_partial_and_the_disk_thawed() {
    let server = TestServer::start().await;
    deploy(&server, "keeper", store_app().path()).await;
    create(
        &server,
        json!({ "name": "kept", "kind": "sqlite", "size_mb": 16, "site": "keeper" }),
    )
    .await;
    for want in 1..=20 {
        assert_eq!(write_once(&server, "keeper").await, want);
    }
    // How big a backup is, to make an output folder that holds the snapshot but runs
    // out of space in the middle of the disk's copy (with the disk frozen).
    let probe = tempfile::tempdir().unwrap();
    let (ok, summary, stderr) = run_backup(server.data.path(), &probe.path().join("probe.db"), &[]).await;
    assert!(ok, "{stderr}");
    let (db, image) = (
        summary["bytes"].as_u64().unwrap(),
        summary["resources"]["disks"][0]["bytes"].as_u64().unwrap(),
    );
    assert!(image > 256 << 10, "{summary}");
    let full = Tmpfs::mount(&format!("size={}", (db + image / 2) / 4096 * 4096));
    let read_only = Tmpfs::mount("ro,size=1m");
    let mut results = Vec::new();
    for (dir, needle) in [
        (full.dir.path(), "copying the disk of resource kept (res_"),
        (read_only.dir.path(), "Read-only file system"),
    ] {
        let (ok, _, stderr) = run_backup(server.data.path(), &dir.join("berth.db"), &[]).await;
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        results.push((ok, stderr, left, needle));
        // The disk is not left frozen: the app writes on.
        write_once(&server, "keeper").await;
    }
    drop((full, read_only));
    for (ok, stderr, left, needle) in results {
        assert!(!ok, "{needle}");
        assert!(stderr.contains(needle), "{stderr}");
        if needle.starts_with("copying") {
            assert!(stderr.contains("No space left on device"), "{stderr}");
        }
        assert!(!stderr.contains("fsfreeze"), "{stderr}");
        assert!(left.is_empty(), "{needle}: {left:?} left behind");
    }
    // Every write counted: 20, one after each failed backup and none lost.
    assert_eq!(ask(&server, "keeper", "/rows").await, 22);

    // Without the disks: the summary says they were skipped, and only the snapshot is
    // written.
    let out_dir = tempfile::tempdir().unwrap();
    let (ok, summary, stderr) =
        run_backup(server.data.path(), &out_dir.path().join("db.db"), &["--no-resources"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(summary["resources"]["status"], "skipped", "{summary}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 1);
}

/// Files anywhere under `dir`'s subfolders (a backup's disk copies, partial or whole).
fn files_in_subfolders(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path()).into_iter().flatten().count())
        .sum()
}

/// Thaws every disk mounted under a server's resources folder when dropped, so that a
/// failing test does not leave a frozen disk (and a hung teardown) behind.
struct ThawAll(PathBuf);

impl Drop for ThawAll {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for mount in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if std::path::Path::new(mount).starts_with(&self.0) {
                let _ = std::process::Command::new("fsfreeze")
                    .args(["--unfreeze", mount])
                    .output();
            }
        }
    }
}

/// A backup killed outright (`kill -9`: no guard of its own runs) while it copies a mounted
/// disk, which it froze, does not leave the disk frozen: the app writes on.
#[tokio::test]
async fn a_backup_killed_while_a_disk_is_frozen_leaves_the_disk_thawed() {
    let server = TestServer::start().await;
    let _thaw = ThawAll(resources_dir(&server));
    deploy(&server, "steady", store_app().path()).await;
    create(
        &server,
        json!({ "name": "vault", "kind": "sqlite", "size_mb": 1024, "site": "steady" }),
    )
    .await;
    assert_eq!(write_once(&server, "steady").await, 1);
    // Data to copy, so the copy (with the disk frozen) lasts long enough to be caught.
    let filled = ask(&server, "steady", "/fill?mb=600&path=/data/vault/ballast").await;
    assert_eq!(filled["error"], Value::Null, "{filled}");

    let mut caught = false;
    for attempt in 0..3 {
        let out = tempfile::tempdir().unwrap();
        let mut backup = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["backup", "--data", s(server.data.path()), "--out"])
            .arg(out.path().join("berth.db"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The disk's copy is being written: the disk is frozen until it is done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while files_in_subfolders(out.path()) == 0
            && backup.try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let still_running = backup.try_wait().unwrap().is_none();
        backup.kill().unwrap_or_default();
        let _ = backup.wait();
        if still_running && files_in_subfolders(out.path()) > 0 {
            caught = true;
            // The disk is thawed by then or soon after: the write goes through.
            assert_eq!(write_once(&server, "steady").await, 2 + attempt);
            break;
        }
        write_once(&server, "steady").await;
    }
    assert!(caught, "the backup was never caught copying a frozen disk");
}

/// Whether an app's writable layer over deployment `id` is mounted: an instance of it is
/// starting and has got as far as its resource disks (the layer is made just before).
fn layer_mounted(id: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("berth-app ") && l.contains(&format!("/{id}/app")))
}

/// A backup holding a disk's lock (as it does while it copies the disk) holds up the
/// start of that disk's site only: another site's disk mounts meanwhile; the waiting
/// start gives up after a while saying why, is retried, and the site serves its data
/// once the lock is let go, without anyone acting.
#[tokio::test]
async fn a_start_waits_for_a_backup_holding_its_disk_and_no_other_disk_waits() {
    let server = TestServer::start().await;
    let waiting = deploy(&server, "waiting", store_app().path()).await;
    create(
        &server,
        json!({ "name": "held", "kind": "sqlite", "size_mb": 16, "site": "waiting" }),
    )
    .await;
    assert_eq!(write_once(&server, "waiting").await, 1);
    deploy(&server, "other", store_app().path()).await;
    let image = images(&server).pop().expect("the disk image").canonicalize().unwrap();

    // The server restarts while a backup copies the disk, which is not mounted then.
    let data = server.stop();
    assert_eq!(loops_of(&image), 0, "a stopped server left the disk mounted");
    let backup = std::fs::File::open(&image).unwrap();
    backup.lock().unwrap();
    let server = TestServer::start_in(data, &[]).await;
    eventually("the waiting site's instance reaches its disk", 120, async || {
        layer_mounted(&waiting)
    })
    .await;
    // Meanwhile another site gets a disk of its own, mounted as it restarts, and serves.
    assert_eq!(ask(&server, "other", "/").await, "store app");
    let out = create(
        &server,
        json!({ "name": "free", "kind": "sqlite", "size_mb": 16, "site": "other" }),
    )
    .await;
    assert_eq!(out["restarted"], json!(["production"]), "{out}");
    assert_eq!(write_once(&server, "other").await, 1);
    let (code, body) = server.edge("waiting.localhost", "/rows").await;
    assert_ne!(code, 200, "served while its disk is locked: {body}");

    // The start gives up on the lock, saying why.
    eventually("the start gives up on the disk's lock", 120, async || {
        server
            .deployment_log(&waiting, "runtime")
            .await
            .contains("a backup is copying the resource's disk")
    })
    .await;
    let (code, body) = server.edge("waiting.localhost", "/rows").await;
    assert_ne!(code, 200, "served while its disk is locked: {body}");

    // The backup is done: the site comes up by itself, with its data.
    drop(backup);
    eventually("the waiting site serves", 120, async || {
        server.edge("waiting.localhost", "/rows").await.0 == 200
    })
    .await;
    assert_eq!(ask(&server, "waiting", "/rows").await, 1);
    assert_eq!(write_once(&server, "waiting").await, 2);
}

/// Whether a process waits for the `flock` of the file with inode `ino` (`/proc/locks`
/// lists waiters as `N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE …`).
fn flock_waited_for(ino: u64) -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&"->")
                && fields.get(2) == Some(&"FLOCK")
                && fields.get(6).is_some_and(|f| f.ends_with(&format!(":{ino}")))
        })
}

/// A resource deleted after the backup's snapshot is taken and before its disk is copied
/// is listed as gone (in the summary and the manifest), and the backup succeeds.
#[tokio::test]
async fn a_resource_deleted_during_a_backup_is_listed_as_gone() {
    let server = TestServer::start().await;
    create(&server, json!({ "name": "one", "kind": "sqlite", "size_mb": 16 })).await;
    let one = images(&server).pop().expect("the first disk");
    create(&server, json!({ "name": "two", "kind": "sqlite", "size_mb": 16 })).await;
    let two = images(&server)
        .into_iter()
        .find(|i| *i != one)
        .expect("the second disk");
    // The backup copies the disks by id: the first one's lock, held here as by another
    // backup, stops it there, its snapshot taken.
    let (first, (second, second_name)) = if one < two {
        (one, (two, "two"))
    } else {
        (two, (one, "one"))
    };
    let held = std::fs::File::open(&first).unwrap();
    held.lock().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("berth.db");
    let ((ok, summary, stderr), ()) = tokio::join!(run_backup(server.data.path(), &out, &[]), async {
        let ino = std::fs::metadata(&first).unwrap().ino();
        eventually("the backup waits for the first disk", 120, async || {
            flock_waited_for(ino)
        })
        .await;
        let (status, deleted) = server.delete(&format!("/api/resources/{second_name}")).await;
        assert_eq!(status, 200, "{deleted}");
        assert!(!second.exists(), "the deleted resource's disk is still there");
        drop(held);
    });
    assert!(ok, "{stderr}");
    let id = |p: &PathBuf| p.file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(summary["resources"]["status"], "copied", "{summary}");
    let disks = summary["resources"]["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{summary}");
    assert_eq!(disks[0]["id"], id(&first), "{summary}");
    assert_eq!(
        summary["resources"]["gone"],
        json!([{ "id": id(&second), "name": second_name }]),
        "{summary}"
    );
    let dir = out_dir.path().join("berth.db.resources");
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["gone"], summary["resources"]["gone"], "{manifest}");
    assert!(dir.join(format!("{}.img", id(&first))).exists());
    assert!(!dir.join(format!("{}.img", id(&second))).exists());
}

/// Disks no resource names, as a crash leaves them, at the next start: one whose
/// creation was interrupted (never mounted, or not even formatted) is removed; one that
/// has held an app's data is kept, with a warning saying what to do; the disks resources
/// name are untouched and serve their data.
#[tokio::test]
async fn at_start_an_interrupted_creations_disk_is_removed_and_a_disk_with_data_is_kept() {
    let server = TestServer::start().await;
    deploy(&server, "keeper", store_app().path()).await;
    create(
        &server,
        json!({ "name": "kept", "kind": "sqlite", "size_mb": 16, "site": "keeper" }),
    )
    .await;
    assert_eq!(write_once(&server, "keeper").await, 1);
    let named = images(&server);
    create(&server, json!({ "name": "fresh", "kind": "sqlite", "size_mb": 16 })).await;
    deploy(&server, "other", store_app().path()).await;
    create(
        &server,
        json!({ "name": "used", "kind": "sqlite", "size_mb": 16, "site": "other" }),
    )
    .await;
    assert_eq!(write_once(&server, "other").await, 1);
    let id_of = |name: &str| {
        db_query(
            server.data.path(),
            &format!("SELECT id FROM resources WHERE name = '{name}'"),
        )
    };
    let (fresh, used) = (id_of("fresh"), id_of("used"));
    let data = server.stop();
    // As a crash leaves them: rows that were never written (a creation interrupted after
    // its disk was made, one interrupted while formatting), and a disk that held data
    // whose row this database does not have.
    db_query(
        data.path(),
        &format!("DELETE FROM resources WHERE id IN ('{fresh}', '{used}')"),
    );
    let dir = data.path().join("resources");
    std::fs::write(dir.join("res_halfmade.img"), vec![0u8; 4096]).unwrap();

    let server = TestServer::start_in(data, &[]).await;
    let left: Vec<String> = images(&server)
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.contains(&fresh),
        "the never-mounted disk is still there: {left:?}"
    );
    assert!(
        !left.iter().any(|i| i == "res_halfmade"),
        "the unformatted image is still there: {left:?}"
    );
    assert!(left.contains(&used), "a disk that held data was thrown away: {left:?}");
    for image in &named {
        assert!(image.exists(), "a named disk was removed: {}", image.display());
    }
    let log = server.log();
    assert!(
        log.contains(&used) && log.contains("has held data; it is kept"),
        "{log}"
    );
    // The named disk serves its data as before.
    assert_eq!(ask(&server, "keeper", "/rows").await, 1);

    // A deletion removes the disk before the row: one interrupted in between leaves a
    // row without a disk, and deleting it again finishes.
    create(&server, json!({ "name": "halfgone", "kind": "sqlite", "size_mb": 16 })).await;
    let halfgone = db_query(server.data.path(), "SELECT id FROM resources WHERE name = 'halfgone'");
    std::fs::remove_file(resources_dir(&server).join(format!("{halfgone}.img"))).unwrap();
    let (status, out) = server.delete("/api/resources/halfgone").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        db_query(
            server.data.path(),
            "SELECT COUNT(*) FROM resources WHERE name = 'halfgone'"
        ),
        "0"
    );
}
