//! A folder or a git repo to a live URL: static, Node and Python apps deployed through the
//! CLI and REST, served by the edge, redeployed and deleted.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn cli_deploys_a_static_folder_and_the_edge_serves_it() {
    let server = TestServer::start().await;
    let site = app(&[
        ("index.html", "<h1>hello from berth</h1>"),
        ("about.html", "about page"),
        (".gitignore", "secret.txt\n"),
        ("secret.txt", "must not be uploaded"),
    ]);
    let out = server.cli(&["deploy", s(site.path()), "--site", "hello"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deploy failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("http://hello.localhost:{}", server.edge_port);
    assert!(stdout.contains(&url), "prints the URL: {stdout}");
    assert!(stdout.contains("build pack: static"), "streams build lines: {stdout}");

    let (status, body) = server.edge(&format!("hello.localhost:{}", server.edge_port), "/").await;
    assert_eq!((status, body.as_str()), (200, "<h1>hello from berth</h1>"));
    assert_eq!(
        server.edge("hello.localhost", "/about").await,
        (200, "about page".to_string())
    );
    assert_eq!(
        server.edge("hello.localhost", "/secret.txt").await.0,
        404,
        ".gitignore'd files are not uploaded"
    );

    let out = server.cli(&["sites", "--json"]);
    let sites: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sites --json");
    assert_eq!(sites["sites"][0]["name"], "hello");
    assert_eq!(sites["sites"][0]["status"], "live");
    let out = server.cli(&["deployments", "hello", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("deployments --json");
    assert_eq!(list["deployments"][0]["status"], "live");
    assert_eq!(list["deployments"][0]["source"], "upload");
}

#[tokio::test]
async fn node_app_upload_goes_live_with_runtime_logs() {
    let server = TestServer::start().await;
    let node = node_app("node says hi");
    let (status, out) = server
        .post_bytes("/api/sites/web/upload?wait=true", pack(node.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(out["deployment"]["build_pack"], "node");
    let (code, body) = server.edge("web.localhost", "/x?y=1").await;
    assert_eq!((code, body.as_str()), (200, "node says hi /x?y=1"));

    // The runtime log tail carries the app's own output.
    let (_, site) = server.get("/api/sites/web?runtime_log_lines=5").await;
    let tail = site["runtime_log_tail"].to_string();
    assert!(tail.contains("listening on"), "runtime log: {site}");
    assert_eq!(site["status"], "live");
}

#[tokio::test]
async fn python_app_from_a_folder_path() {
    let server = TestServer::start().await;
    let py = python_app("python says hi");
    let (status, out) = server
        .post("/api/sites", &json!({"name": "py", "repo": s(py.path()), "wait": true}))
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(out["deployment"]["build_pack"], "python");
    assert_eq!(
        server.edge("py.localhost", "/").await,
        (200, "python says hi".to_string())
    );
}

#[tokio::test]
async fn git_repo_deploys_a_branch_then_a_new_commit_and_an_old_commit() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "v1")]);
    let first = git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "gitsite", "repo": url, "branch": "main", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(out["deployment"]["commit"], first.as_str());
    assert_eq!(server.edge("gitsite.localhost", "/").await.1, "v1");

    std::fs::write(repo.path().join("index.html"), "v2").unwrap();
    let second = git_commit(repo.path(), "v2");
    let (status, out) = server.post("/api/sites/gitsite/deploy", &json!({"wait": true})).await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["commit"], second.as_str());
    assert_eq!(server.edge("gitsite.localhost", "/").await.1, "v2");

    let (_, out) = server
        .post("/api/sites/gitsite/deploy", &json!({"commit": first, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.edge("gitsite.localhost", "/").await.1, "v1");

    let (_, list) = server.get("/api/sites/gitsite/deployments").await;
    let statuses: Vec<&str> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["live", "superseded", "superseded"], "newest first: {list}");
    for d in list["deployments"].as_array().unwrap() {
        for field in ["created_at", "finished_at"] {
            let at = d[field].as_str().unwrap_or_else(|| panic!("{field} missing: {d}"));
            assert_eq!(at.len(), "2026-01-01T00:00:00.000Z".len(), "fixed width: {at}");
        }
    }
}

#[tokio::test]
async fn cli_deploy_without_site_names_the_site_after_the_folder() {
    let server = TestServer::start().await;
    let root = app(&[("Shop_Front/index.html", "shop")]);
    let out = server.cli(&["deploy", s(&root.path().join("Shop_Front"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("site: shop-front (the folder's name"), "{stderr}");
    assert_eq!(
        server.edge("shop-front.localhost", "/").await,
        (200, "shop".to_string())
    );
}

#[tokio::test]
async fn cli_errors_speak_cli() {
    let server = TestServer::start().await;
    let site = app(&[("index.html", "one")]);
    let out = server.cli(&["deploy", s(site.path()), "--site", "words"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The service names its MCP tool; the CLI says the command.
    let out = server.cli(&["rollback", "words"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`berth deployments SITE`"), "{stderr}");
    assert!(!stderr.contains("HOSTING_"), "{stderr}");
    // A wrong key names the variable to check.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["sites"])
        .env("BERTH_URL", server.api(""))
        .env("BERTH_TOKEN", "berth_not-the-key")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("check BERTH_TOKEN"), "{stderr}");
    assert!(!stderr.contains("berth_not-the-key"), "{stderr}");
}

#[tokio::test]
async fn a_work_tree_deploys_its_committed_head_and_the_log_says_edits_were_left_behind() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "committed"), ("about.html", "about")]);
    git_init(repo.path());
    std::fs::write(repo.path().join("index.html"), "edited, not committed").unwrap();
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "worktree", "repo": s(repo.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.edge("worktree.localhost", "/").await.1, "committed");
    let id = out["deployment"]["id"].as_str().unwrap();
    let log = server.deployment_log(id, "build").await;
    assert!(
        log.contains("has 1 changed file(s) not committed; berth deploys its committed HEAD"),
        "{log}"
    );
    assert!(log.contains("berth deploy"), "{log}");
    // No noise: git's warning about --depth in local clones, or where the server keeps
    // its data.
    assert!(!log.contains("--depth"), "{log}");
    let data = server.data.path().canonicalize().unwrap();
    assert!(!log.contains(s(&data)), "{log}");
    assert!(!log.contains(s(server.data.path())), "{log}");

    // A clean work tree gets no note.
    git_commit(repo.path(), "edit");
    let (_, out) = server.post("/api/sites/worktree/deploy", &json!({"wait": true})).await;
    assert_eq!(server.edge("worktree.localhost", "/").await.1, "edited, not committed");
    let log = server
        .deployment_log(out["deployment"]["id"].as_str().unwrap(), "build")
        .await;
    assert!(!log.contains("not committed"), "{log}");
}

#[tokio::test]
async fn deleting_a_site_removes_its_build_cache() {
    let server = TestServer::start().await;
    let dir = app(&[
        ("requirements.txt", "# nothing to install\n"),
        (
            "app.py",
            "import http.server, os\nhttp.server.HTTPServer(('0.0.0.0', int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler).serve_forever()\n",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "cached", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let cache = server.data.path().join("cache");
    let entries = || std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries(), 1, "the site has a build cache");
    let out = server.cli(&["delete", "cached", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(entries(), 0, "and it goes with the site");
}

#[tokio::test]
async fn deleting_a_site_stops_its_process_and_removes_route_and_files() {
    let server = TestServer::start().await;
    let node = node_app("doomed-app-marker");
    let (_, out) = server
        .post("/api/sites", &json!({"name": "doomed", "repo": s(node.path()), "start_command": "node server.js doomed-app-marker", "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let dir = server.data.path().join("deployments").join(&id);
    assert!(dir.exists());
    assert!(!processes_matching("doomed-app-marker").is_empty(), "the app runs");

    let out = server.cli(&["delete", "doomed", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.edge("doomed.localhost", "/").await.0, 404);
    assert!(!dir.exists(), "deployment files removed");
    assert!(
        processes_matching("doomed-app-marker").is_empty(),
        "the app process is gone"
    );
    let (status, _) = server.get("/api/sites/doomed").await;
    assert_eq!(status, 404);
    let (status, _) = server.get(&format!("/api/deployments/{id}")).await;
    assert_eq!(status, 404);
    // Deleting without --yes refuses and keeps nothing half-done.
    let out = server.cli(&["delete", "doomed"]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn deployment_logs_page_with_a_cursor() {
    let server = TestServer::start().await;
    let site = app(&[("index.html", "x")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "logs", "repo": s(site.path()), "wait": true}),
        )
        .await;
    let id = out["deployment"]["id"].as_str().unwrap();
    let (_, all) = server
        .get(&format!("/api/deployments/{id}/logs?kind=build&limit=1000"))
        .await;
    let total = all["lines"].as_array().unwrap().len();
    assert!(total >= 3, "{all}");
    // A caller told "live" reads the whole build log, its last line included.
    assert_eq!(all["lines"][total - 1]["line"], "deployment is live", "{all}");
    let (_, page1) = server
        .get(&format!("/api/deployments/{id}/logs?kind=build&limit=2"))
        .await;
    assert_eq!(page1["lines"].as_array().unwrap().len(), 2);
    assert_eq!(page1["has_more"], true);
    let cursor = page1["next_cursor"].as_i64().unwrap();
    let (_, page2) = server
        .get(&format!(
            "/api/deployments/{id}/logs?kind=build&limit=1000&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["lines"].as_array().unwrap().len(), total - 2);
    assert_eq!(page2["has_more"], false);
    assert_eq!(page2["lines"][0]["line"], all["lines"][2]["line"]);
}

#[tokio::test]
async fn deploys_finishing_out_of_order_leave_the_newest_live() {
    let server = TestServer::start().await;
    let repo = app(&[(
        "package.json",
        r#"{"scripts":{"build":"sleep 2 && mkdir -p dist && echo slow-old > dist/index.html"}}"#,
    )]);
    let slow = git_init(repo.path());
    std::fs::write(
        repo.path().join("package.json"),
        r#"{"scripts":{"build":"mkdir -p dist && echo fast-new > dist/index.html"}}"#,
    )
    .unwrap();
    let fast = git_commit(repo.path(), "fast build");
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "race", "repo": url, "commit": slow}))
        .await;
    let old_id = out["deployment"]["id"].as_str().unwrap().to_string();
    let (_, out) = server
        .post("/api/sites/race/deploy", &json!({"commit": fast, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let old = server.wait_deployment(&old_id).await;
    assert_eq!(
        old["status"], "superseded",
        "the older build finished last and did not take over: {old}"
    );
    assert_eq!(server.edge("race.localhost", "/").await.1, "fast-new\n");
}

#[tokio::test]
async fn an_unchanged_lockfile_reuses_installed_dependencies() {
    let server = TestServer::start().await;
    let repo = app(&[
        (
            "package.json",
            r#"{"name":"c","version":"1.0.0","dependencies":{"localdep":"file:./localdep"},"scripts":{"start":"node server.js"}}"#,
        ),
        (
            "localdep/package.json",
            r#"{"name":"localdep","version":"1.0.0","main":"index.js"}"#,
        ),
        ("localdep/index.js", "module.exports = 'from a dependency';"),
        (
            "server.js",
            "const d = require('localdep'); require('http').createServer((q,r)=>r.end('v1 ' + d)).listen(process.env.PORT);",
        ),
    ]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "cached", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.edge("cached.localhost", "/").await.1, "v1 from a dependency");

    std::fs::write(repo.path().join("server.js"), "const d = require('localdep'); require('http').createServer((q,r)=>r.end('v2 ' + d)).listen(process.env.PORT);").unwrap();
    git_commit(repo.path(), "code only");
    let (_, out) = server.post("/api/sites/cached/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.edge("cached.localhost", "/").await.1, "v2 from a dependency");
    let id = out["deployment"]["id"].as_str().unwrap();
    let (_, logs) = server.get(&format!("/api/deployments/{id}/logs?kind=build")).await;
    let text = logs["lines"].to_string();
    assert!(text.contains("restored from the build cache"), "{text}");
    assert!(!text.contains("$ npm install"), "no install on a cache hit: {text}");

    std::fs::write(repo.path().join("package.json"), r#"{"name":"c","version":"1.0.1","dependencies":{"localdep":"file:./localdep"},"scripts":{"start":"node server.js"}}"#).unwrap();
    git_commit(repo.path(), "manifest changed");
    let (_, out) = server.post("/api/sites/cached/deploy", &json!({"wait": true})).await;
    let id = out["deployment"]["id"].as_str().unwrap();
    let (_, logs) = server.get(&format!("/api/deployments/{id}/logs?kind=build")).await;
    assert!(
        logs["lines"].to_string().contains("$ npm install"),
        "a changed manifest installs again: {logs}"
    );
}

#[tokio::test]
async fn logs_stream_live_over_sse_and_the_cli_follows_them() {
    use futures::StreamExt;
    let server = TestServer::start().await;
    let node = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "require('http').createServer((q,r)=>{console.log('request for ' + q.url); r.end('ok')}).listen(process.env.PORT);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "chatty", "repo": s(node.path()), "wait": true}),
        )
        .await;
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let resp = server
        .http
        .get(server.api(&format!("/api/deployments/{id}/logs/stream?kind=runtime")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    server.edge("chatty.localhost", "/live-marker").await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("request for /live-marker") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: line"), "{seen}");
    drop(body);

    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["logs", &id, "--follow", "--kind", "runtime"])
        .env("BERTH_URL", server.api(""))
        .env("BERTH_TOKEN", KEY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.edge("chatty.localhost", "/followed").await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    follower.kill().unwrap();
    let out = follower.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("request for /followed"), "{text}");

    let (status, _) = server.get("/api/deployments/dpl_missing/logs/stream").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_app_on_a_fixed_port_goes_live_there_with_a_warning() {
    let server = TestServer::start().await;
    // Something else on the host listens too; it must never be taken for the app.
    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let fixed = app(&[
        (
            "package.json",
            r#"{"name":"fixed","scripts":{"start":"node server.js"}}"#,
        ),
        (
            "server.js",
            "require('http').createServer((q, r) => r.end('fixed port app')).listen(3000, () => console.log('listening on 3000'));\n",
        ),
    ]);
    let (status, out) = server
        .post_bytes("/api/sites/fixed/upload?wait=true", pack(fixed.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("fixed.localhost", "/").await,
        (200, "fixed port app".to_string())
    );
    let id = out["deployment"]["id"].as_str().unwrap();
    let log = server.deployment_log(id, "build").await;
    assert!(
        log.contains("listens on port 3000, not on $PORT (8080)") && log.contains("set the site's `port` to 3000"),
        "the warning names the port, $PORT and the setting: {log}"
    );
    assert!(!log.contains(&host.local_addr().unwrap().port().to_string()), "{log}");
    assert!(log.contains("healthy on port 3000"), "{log}");
}

#[tokio::test]
async fn the_node_version_an_app_asks_for_is_downloaded_when_the_servers_does_not_do() {
    let server = TestServer::start().await;
    let server_js = "require('http').createServer((q, r) => r.end(process.version)).listen(process.env.PORT);";
    let deploy = |name: &'static str, files: Vec<(&'static str, &'static str)>| {
        let dir = app(&files);
        let server = &server;
        async move {
            let (_, out) = server
                .post(
                    "/api/sites",
                    &json!({"name": name, "repo": s(dir.path()), "wait": true}),
                )
                .await;
            let id = out["deployment"]["id"].as_str().unwrap().to_string();
            (out, server.deployment_log(&id, "build").await)
        }
    };
    // A pin of the server's major release: built with the server's, with a note.
    let (out, log) = deploy(
        "pinned",
        vec![
            ("package.json", r#"{"name":"p","scripts":{"start":"node server.js"}}"#),
            (".nvmrc", "v20.0.0\n"),
            ("server.js", server_js),
        ],
    )
    .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{log}");
    assert!(
        log.contains("note: node 20.0.0 (.nvmrc) asked for; this server has"),
        "{log}"
    );
    assert!(!log.contains("downloading"), "{log}");

    // An engines range the server's node is outside of: the newest matching release comes
    // from the npm registry, and the app runs on it.
    let (out, log) = deploy(
        "eighteen",
        vec![
            (
                "package.json",
                r#"{"name":"e","engines":{"node":"18.x"},"scripts":{"start":"node server.js"}}"#,
            ),
            ("server.js", server_js),
        ],
    )
    .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{log}");
    assert!(
        log.contains("node 18.x asked for (package.json engines.node); this server has")
            && log.contains("downloading a matching release from the npm registry"),
        "{log}"
    );
    let (code, version) = server.edge("eighteen.localhost", "/").await;
    assert_eq!(code, 200);
    assert!(version.starts_with("v18."), "the app runs on node 18: {version}");

    // A range no release matches fails at the download, naming what was asked and the fix.
    let (out, log) = deploy(
        "excluded",
        vec![
            (
                "package.json",
                r#"{"name":"e","engines":{"node":">=99"},"scripts":{"start":"node server.js"}}"#,
            ),
            ("server.js", server_js),
        ],
    )
    .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap();
    assert!(
        error.contains("could not get node >=99 (package.json engines.node)")
            && error.contains("change package.json engines.node"),
        "{error}"
    );
    assert!(log.contains("no Node.js release matches >=99"), "{log}");
}

#[tokio::test]
async fn cli_deploys_a_git_url_creates_and_deletes_environments_and_scales() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "from main")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    // A git URL: the server clones it; the site is created on the first deploy.
    let out = server.cli(&["deploy", &url, "--site", "from-git"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", server.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("live: http://from-git.localhost"));
    assert_eq!(server.edge("from-git.localhost", "/").await.1, "from main");
    // Again, after a commit: the same site deploys the new commit.
    std::fs::write(repo.path().join("index.html"), "second").unwrap();
    git_commit(repo.path(), "second");
    let out = server.cli(&["deploy", &url, "--site", "from-git"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.edge("from-git.localhost", "/").await.1, "second");
    // Another repository under the same name is refused, naming the way out.
    let other = app(&[("index.html", "other")]);
    git_init(other.path());
    let out = server.cli(&["deploy", &format!("file://{}", s(other.path())), "--site", "from-git"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("deploys from") && stderr.contains("--site"), "{stderr}");
    assert_eq!(server.edge("from-git.localhost", "/").await.1, "second");
    // --branch is for repositories only.
    let out = server.cli(&["deploy", s(other.path()), "--site", "x", "--branch", "main"]);
    assert!(!out.status.success());

    // Environments: create one from a branch, list, delete (with --yes only).
    git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.path().join("index.html"), "from feature").unwrap();
    git_commit(repo.path(), "feature");
    let out = server.cli(&["environments", "create", "from-git", "staging", "--branch", "feature"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.edge("staging--from-git.localhost", "/").await.1, "from feature");
    let out = server.cli(&["environments", "from-git"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("staging") && listed.contains("production"), "{listed}");
    let out = server.cli(&["environments", "delete", "from-git", "staging"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let (_, envs) = server.get("/api/sites/from-git/environments").await;
    assert_eq!(envs["environments"].as_array().unwrap().len(), 2, "{envs}");
    let out = server.cli(&["environments", "delete", "from-git", "staging", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, envs) = server.get("/api/sites/from-git/environments").await;
    assert_eq!(envs["environments"].as_array().unwrap().len(), 1, "{envs}");

    // Scale: change, show; a bad value changes nothing.
    let out = server.cli(&["scale", "from-git", "--min", "1", "--max", "2"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(shown.contains("min 1, max 2"), "{shown}");
    let out = server.cli(&["scale", "from-git", "--max", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_instances"));
    let out = server.cli(&["scale", "from-git", "--json"]);
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["max_instances"], 2, "{config}");
    assert_eq!(config["min_instances"], 1, "{config}");
}

#[tokio::test]
async fn a_site_read_shows_the_newest_builds_log_and_the_serving_deployments_runtime_log() {
    let server = TestServer::start().await;
    let node = node_app("first and serving");
    let (status, out) = server
        .post_bytes("/api/sites/pair/upload?wait=true", pack(node.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    // A newer deployment whose build fails: production keeps serving the first.
    let broken = app(&[
        (
            "package.json",
            r#"{"name":"pair","scripts":{"build":"echo build-broke-here && exit 1","start":"node index.js"}}"#,
        ),
        (
            "index.js",
            "require('http').createServer((q, r) => r.end('never')).listen(process.env.PORT)",
        ),
    ]);
    let (status, out) = server
        .post_bytes("/api/sites/pair/upload?wait=true", pack(broken.path()))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let (code, site) = server.get("/api/sites/pair?runtime_log_lines=50").await;
    assert_eq!(code, 200, "{site}");
    assert_eq!(site["status"], "live", "{site}");
    assert_eq!(site["latest_deployment"]["status"], "failed", "{site}");
    assert_eq!(site["recent_deployments"].as_array().unwrap().len(), 2, "{site}");
    assert_eq!(site["environments"][0]["status"], "live", "{site}");
    // The build tail is the newest deployment's; the runtime tail the serving one's.
    assert!(
        site["build_log_tail"].to_string().contains("build-broke-here"),
        "{site}"
    );
    assert!(site["runtime_log_tail"].to_string().contains("listening on"), "{site}");
    assert_eq!(
        server.edge("pair.localhost", "/").await,
        (200, "first and serving /".to_string())
    );
    // Ten more failures: the serving deployment is older than the ten a read lists, and
    // is still shown as what production serves.
    for _ in 0..10 {
        let (status, out) = server
            .post_bytes("/api/sites/pair/upload?wait=true", pack(broken.path()))
            .await;
        assert_eq!(
            (status, out["deployment"]["status"].as_str()),
            (202, Some("failed")),
            "{out}"
        );
    }
    let (_, site) = server.get("/api/sites/pair").await;
    assert_eq!(site["recent_deployments"].as_array().unwrap().len(), 10, "{site}");
    assert_eq!(site["status"], "live", "{site}");
    assert_eq!(site["environments"][0]["status"], "live", "{site}");
}
