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
/// `DATABASE_URL` names and answers how many there are; `/env?name=`, `/read?path=`,
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
            if u.path == '/count':
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
                            f.flush()
                            os.fsync(f.fileno())
                            written += 65536
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
