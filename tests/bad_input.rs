//! Bad input gets a clear error and changes nothing; failures keep what was serving.

mod common;

use std::io::Write;

use common::*;
use serde_json::{Value, json};

async fn site_count(server: &TestServer) -> usize {
    server.get("/api/sites").await.1["sites"].as_array().map_or(0, Vec::len)
}

fn message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn invalid_and_duplicate_names_are_refused() {
    let server = TestServer::start().await;
    let dir = app(&[("index.html", "x")]);
    for bad in ["Bad", "-x", "x-", "a--b", "api", "a.b", "", &"x".repeat(64)] {
        let (status, out) = server
            .post("/api/sites", &json!({"name": bad, "repo": s(dir.path())}))
            .await;
        assert_eq!(status, 400, "{bad}: {out}");
        assert_eq!(out["error"]["field"], "name");
        assert!(message(&out).contains("site name"), "{out}");
    }
    assert_eq!(site_count(&server).await, 0);
    let (status, _) = server
        .post(
            "/api/sites",
            &json!({"name": "taken", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, out) = server
        .post("/api/sites", &json!({"name": "taken", "repo": s(dir.path())}))
        .await;
    assert_eq!(status, 409, "{out}");
    assert!(message(&out).contains("already exists"));
    assert_eq!(site_count(&server).await, 1);
    let (status, out) = server.post("/api/sites", &json!({"name": "x", "bogus_field": 1})).await;
    assert_eq!(status, 400, "unknown fields are refused: {out}");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "envs", "repo": s(dir.path()), "env_vars": {"1BAD": "v"}}),
        )
        .await;
    assert_eq!((status, out["error"]["field"].as_str()), (400, Some("env_vars")));
    assert_eq!(site_count(&server).await, 1);
}

#[tokio::test]
async fn unreachable_repo_and_unknown_branch_change_nothing() {
    let server = TestServer::start().await;
    let missing = std::env::temp_dir().join("berth-no-such-dir/repo.git");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nope", "repo": format!("file://{}", s(&missing))}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(message(&out).contains("no folder at"), "{out}");
    let repo = app(&[("index.html", "x")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nope", "repo": url, "branch": "nonexistent"}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(
        message(&out).contains("branch 'nonexistent' does not exist; branches: main"),
        "{out}"
    );
    let (status, out) = server
        .post("/api/sites", &json!({"name": "nope", "repo": "ext::sh -c id"}))
        .await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = server
        .post("/api/sites", &json!({"name": "nope", "repo": "relative/dir"}))
        .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(site_count(&server).await, 0);
    let (status, out) = server
        .post("/api/sites", &json!({"name": "nope", "deploy": true}))
        .await;
    assert_eq!(status, 400, "deploy without a source: {out}");
    assert_eq!(site_count(&server).await, 0);
}

#[tokio::test]
async fn failed_build_keeps_the_previous_deployment_serving() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "good v1")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "keep", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");

    std::fs::write(
        repo.path().join("package.json"),
        r#"{"scripts":{"build":"echo boom >&2; exit 1"}}"#,
    )
    .unwrap();
    git_commit(repo.path(), "break the build");
    let (_, out) = server.post("/api/sites/keep/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    assert!(
        out["deployment"]["error"]
            .as_str()
            .unwrap()
            .contains("build step exited with code 1"),
        "{out}"
    );
    assert!(out["deployment"]["last_log_lines"].to_string().contains("boom"));
    assert_eq!(server.edge("keep.localhost", "/").await, (200, "good v1".to_string()));
    let (_, site) = server.get("/api/sites/keep").await;
    assert_eq!(site["status"], "live", "the site still serves: {site}");
    let id = out["deployment"]["id"].as_str().unwrap();
    let (_, logs) = server.get(&format!("/api/deployments/{id}/logs?kind=build")).await;
    assert!(
        logs["lines"].to_string().contains("boom"),
        "the failed build's log is kept"
    );
}

#[tokio::test]
async fn an_app_that_never_gets_healthy_fails_after_the_start_timeout() {
    let server = TestServer::start_with(&[("BERTH_START_TIMEOUT_SECONDS", "3")]).await;
    let deaf = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "console.log('listening nowhere on purpose'); setInterval(()=>{}, 1000);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "deaf", "repo": s(deaf.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap();
    assert!(
        error.contains("did not pass its health check")
            && error.contains("nothing listens on $PORT=8080 (connection refused)")
            && error.contains("`port`"),
        "{out}"
    );
    assert!(
        out["deployment"]["last_log_lines"]
            .to_string()
            .contains("listening nowhere on purpose"),
        "{out}"
    );
    assert!(processes_matching("listening nowhere on purpose").is_empty());

    let crashing = app(&[(
        "package.json",
        r#"{"scripts":{"start":"node -e \"console.error('fatal: missing DATABASE_URL'); process.exit(2)\""}}"#,
    )]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "crash", "repo": s(crashing.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    assert!(
        out["deployment"]["last_log_lines"]
            .to_string()
            .contains("missing DATABASE_URL"),
        "{out}"
    );
    assert_eq!(
        server.edge("crash.localhost", "/").await.0,
        404,
        "nothing was ever live"
    );
}

#[tokio::test]
async fn failed_health_checks_say_what_they_saw_and_the_setting_to_change() {
    let server = TestServer::start_with(&[("BERTH_START_TIMEOUT_SECONDS", "3")]).await;
    // An app that answers 500: the status and the body's first lines, not "listen on PORT".
    let failing = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "require('http').createServer((q, r) => { r.statusCode = 500; r.end('KeyError: DATABASE_URL\\n  at config.js:3'); }).listen(process.env.PORT);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "five", "repo": s(failing.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap();
    assert!(
        error.contains("answered HTTP 500: KeyError: DATABASE_URL | at config.js:3")
            && error.contains("`health_check_path`")
            && !error.contains("nothing listens"),
        "{error}"
    );

    // One on a fixed port that cannot be used (it fails there): named, with what it answered.
    let elsewhere = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "require('http').createServer((q, r) => { r.statusCode = 503; r.end('warming up'); }).listen(3000);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "elsewhere", "repo": s(elsewhere.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap();
    assert!(
        error.contains("your app listens on 3000, not $PORT=8080; GET / on 3000: HTTP 503: warming up")
            && error.contains("`port`"),
        "{error}"
    );

    // One that accepts connections on $PORT and never answers: a timeout, not a refusal.
    let silent = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "require('http').createServer(() => {}).listen(process.env.PORT);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "silent", "repo": s(silent.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap();
    assert!(
        error.contains("got no HTTP answer within 2 s (timeout)") && error.contains("`health_check_path`"),
        "{error}"
    );

    // A Python app that exits 0 at once: what berth started and `start_command`.
    let script = app(&[
        ("requirements.txt", "# no dependencies\n"),
        ("app.py", "print('defined the app, exiting')\n"),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "script", "repo": s(script.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap();
    assert!(
        error.contains("app.py`, which exited with code 0") && error.contains("`start_command`"),
        "{error}"
    );

    // An app that says where it listens, but on no port its processes hold: its URL.
    let printing = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "console.log('  Local:   http://localhost:5173/'); setInterval(() => {}, 1000);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "printer", "repo": s(printing.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap();
    assert!(
        error.contains("printed http://localhost:5173: a server on port 5173, not $PORT=8080")
            && error.contains("set `port` to 5173"),
        "{error}"
    );
}

#[tokio::test]
async fn a_build_over_its_time_limit_fails_cleanly() {
    let server = TestServer::start_with(&[("BERTH_BUILD_TIMEOUT_SECONDS", "2")]).await;
    let slow = app(&[
        (
            "package.json",
            r#"{"scripts":{"build":"sleep 600 && echo never-printed-marker"}}"#,
        ),
        ("index.html", "x"),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "slow", "repo": s(slow.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    assert!(
        out["deployment"]["error"].as_str().unwrap().contains("timed out"),
        "{out}"
    );
    assert!(
        processes_matching("sleep 600").is_empty(),
        "the build's processes are gone"
    );
}

/// A tar.gz with one entry whose raw name and type are set by hand (the tar crate refuses
/// to build such entries through its safe API).
fn hostile_archive(name: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    {
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    let body = b"pwned";
    header.set_size(if kind == tar::EntryType::Regular {
        body.len() as u64
    } else {
        0
    });
    header.set_cksum();
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        b.append(
            &header,
            if kind == tar::EntryType::Regular {
                &body[..]
            } else {
                &b""[..]
            },
        )
        .unwrap();
        b.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn hostile_and_oversized_uploads_are_refused_and_change_nothing() {
    let server = TestServer::start_with(&[("BERTH_MAX_UPLOAD_BYTES", "1000000")]).await;
    let cases = [
        hostile_archive("../escape.txt", tar::EntryType::Regular, None),
        hostile_archive("/etc/evil.txt", tar::EntryType::Regular, None),
        hostile_archive("link", tar::EntryType::Symlink, Some("/etc/passwd")),
        hostile_archive("up", tar::EntryType::Symlink, Some("../../..")),
        hostile_archive("hard", tar::EntryType::Link, Some("/etc/passwd")),
    ];
    for (i, archive) in cases.into_iter().enumerate() {
        let (status, out) = server.post_bytes("/api/sites/evil/upload", archive).await;
        assert_eq!(status, 400, "case {i}: {out}");
        assert_eq!(out["error"]["field"], "archive", "case {i}: {out}");
        assert!(message(&out).starts_with("the upload was refused"), "{out}");
    }
    let (status, out) = server
        .post_bytes("/api/sites/evil/upload", b"not a tarball".to_vec())
        .await;
    assert_eq!(status, 400, "{out}");
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (status, out) = server.post_bytes("/api/sites/evil/upload", big).await;
    assert_eq!(status, 413, "{out}");
    assert_eq!(site_count(&server).await, 0);
    assert!(!server.data.path().parent().unwrap().join("escape.txt").exists());
    let uploads = std::fs::read_dir(server.data.path().join("uploads")).unwrap().count();
    assert_eq!(uploads, 0, "no half-extracted uploads are left");
}

#[tokio::test]
async fn missing_or_wrong_keys_get_401_and_learn_nothing() {
    let server = TestServer::start().await;
    let no_key = server.http.get(server.api("/api/sites")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let body_a: Value = no_key.json().await.unwrap();
    let wrong = server
        .http
        .get(server.api("/api/sites"))
        .bearer_auth("berth_not_a_real_key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body_b: Value = wrong.json().await.unwrap();
    assert_eq!(body_a, body_b, "the same answer whatever the key");
    assert_eq!(
        server.http.get(server.api("/healthz")).send().await.unwrap().status(),
        200
    );
    let r = server
        .http
        .get(server.api("/api/whoami"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn idempotency_keys_and_the_audit_log() {
    let server = TestServer::start().await;
    let dir = app(&[("index.html", "x")]);
    let body = json!({"name": "idem", "repo": s(dir.path()), "idempotency_key": "create-idem-1", "env_vars": {"API_TOKEN": "s3cret-value"}});
    let (s1, first) = server.post("/api/sites", &body).await;
    let (s2, second) = server.post("/api/sites", &body).await;
    assert_eq!((s1, s2), (201, 201), "{first} {second}");
    assert_eq!(
        first["deployment"]["id"], second["deployment"]["id"],
        "a repeat returns the first result"
    );
    let (_, list) = server.get("/api/sites/idem/deployments").await;
    assert_eq!(
        list["deployments"].as_array().unwrap().len(),
        1,
        "the work was done once"
    );
    let (status, out) = server
        .post("/api/sites/idem/deploy", &json!({"idempotency_key": "create-idem-1"}))
        .await;
    assert_eq!(status, 409, "a key reused for another call: {out}");

    let (_, audit) = server.get("/api/audit").await;
    let text = audit.to_string();
    assert!(
        text.contains("HOSTING_CREATE_SITE") && text.contains("API_TOKEN"),
        "{audit}"
    );
    assert!(!text.contains("s3cret-value"), "no secret in the audit log");
    assert!(
        !std::fs::read_to_string(server.data.path().join("server.log"))
            .unwrap()
            .contains("s3cret-value")
    );
}

#[tokio::test]
async fn errors_raised_before_a_handler_still_come_in_the_json_envelope() {
    let server = TestServer::start().await;
    let (status, out) = server.get("/api/sites/nothing/deployments?limit=many").await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["code"], "invalid_argument", "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap_or("").contains("limit"),
        "{out}"
    );
    let (status, out) = server.delete("/api/whoami").await;
    assert_eq!(status, 405, "{out}");
    assert_eq!(out["error"]["code"], "method_not_allowed", "{out}");
}
