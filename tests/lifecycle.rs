//! Running apps over time: crash restarts, giving up on a crash loop, berth restarts
//! (graceful and `kill -9`) converging back to the desired state.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Node processes (not their `sh` parents) whose command line contains `needle`.
fn pids_matching(needle: &str) -> Vec<i32> {
    processes_matching(needle)
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with("node "))
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test]
async fn a_crash_loop_ends_crashed_with_a_502_and_a_recovery_goes_live_again() {
    let server = TestServer::start().await;
    // Healthy at first, then exits one second after every start for its first 20 s (an
    // instance's writes do not outlive it, so the app goes by the clock); a slow restart
    // after the crash loop (30 s) stays up.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 20_000;
    let server_js = format!(
        "require('http').createServer((q,r)=>r.end('up')).listen(process.env.PORT);\nif (Date.now() < {until}) setTimeout(()=>{{ console.error('out of memory (simulated)'); process.exit(137); }}, 1000);\n"
    );
    let flaky = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        ("server.js", &server_js),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "flaky", "repo": s(flaky.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    eventually("the site is marked crashed", 60, async || {
        server.get("/api/sites/flaky").await.1["status"] == "crashed"
    })
    .await;
    // The status is committed beside the reconciler pass that saw the crash loop, so the
    // edge may still answer "not responding" (also a 502) for a moment before its page
    // says the app crashed.
    eventually("the edge says the app crashed", 10, async || {
        let (code, body) = server.edge("flaky.localhost", "/").await;
        code == 502 && body.contains("crashed")
    })
    .await;
    let (_, site) = server.get("/api/sites/flaky?runtime_log_lines=50").await;
    let tail = site["runtime_log_tail"].to_string();
    assert!(
        tail.contains("out of memory (simulated)") && tail.contains("restarting it every 30 s from now on"),
        "{site}"
    );
    // Nothing to go back to: the deployment says it crashed and why, and stays. (The
    // site's status is what runs now; the deployment's is recorded beside the reconcile
    // pass that saw the crash loop, a moment later.)
    let id = out["deployment"]["id"].as_str().unwrap();
    eventually("the deployment is recorded crashed", 10, async || {
        server.get(&format!("/api/deployments/{id}")).await.1["status"] == "crashed"
    })
    .await;
    let (_, d) = server.get(&format!("/api/deployments/{id}")).await;
    assert_eq!(d["status"], "crashed", "{d}");
    assert!(
        d["error"].as_str().unwrap().contains("crash loop after going live"),
        "{d}"
    );
    assert!(
        tail.contains("there is no earlier deployment to go back to") || {
            let (_, site) = server.get("/api/sites/flaky?runtime_log_lines=50").await;
            site["runtime_log_tail"]
                .to_string()
                .contains("there is no earlier deployment to go back to")
        }
    );
    // A slow restart stays up: the deployment is live again and its crash is history.
    let deadline = Instant::now() + Duration::from_secs(90);
    while server.get(&format!("/api/deployments/{id}")).await.1["status"] != "live" {
        if Instant::now() > deadline {
            let (_, site) = server.get("/api/sites/flaky?runtime_log_lines=40").await;
            panic!("the deployment never recovered: {site}\n{}", server.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, d) = server.get(&format!("/api/deployments/{id}")).await;
    assert!(d["error"].is_null(), "a live deployment carries no crash: {d}");
    assert_eq!(server.edge("flaky.localhost", "/").await, (200, "up".to_string()));
}

#[tokio::test]
async fn a_deployment_that_crash_loops_after_going_live_is_rolled_back() {
    let server = TestServer::start().await;
    let repo = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "require('http').createServer((q,r)=>r.end('stable')).listen(process.env.PORT);\n",
        ),
    ]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "healer", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let stable = out["deployment"]["id"].as_str().unwrap().to_string();
    // The next version is healthy at first, then dies a second after every start.
    std::fs::write(
        repo.path().join("server.js"),
        "require('http').createServer((q,r)=>r.end('broken')).listen(process.env.PORT);\nsetTimeout(()=>{ console.error('lost the database'); process.exit(1); }, 1000);\n",
    )
    .unwrap();
    git_commit(repo.path(), "broken");
    let (_, out) = server.post("/api/sites/healer/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let broken = out["deployment"]["id"].as_str().unwrap().to_string();
    eventually("production is back on the stable deployment", 90, async || {
        server.edge("healer.localhost", "/").await == (200, "stable".to_string())
    })
    .await;
    let (_, d) = server.get(&format!("/api/deployments/{broken}")).await;
    assert_eq!(d["status"], "crashed", "{d}");
    let error = d["error"].as_str().unwrap();
    assert!(
        error.contains("crash loop after going live") && error.contains("lost the database"),
        "{d}"
    );
    let (_, d) = server.get(&format!("/api/deployments/{stable}")).await;
    assert_eq!(d["status"], "live", "{d}");
    let (_, site) = server.get("/api/sites/healer").await;
    assert_eq!(site["environments"][0]["deployment_id"], stable.as_str(), "{site}");
    let (_, logs) = server
        .get(&format!("/api/deployments/{broken}/logs?kind=runtime"))
        .await;
    assert!(
        logs.to_string()
            .contains(&format!("rolling 'production' back to {stable}")),
        "{logs}"
    );
}

/// A crashed instance is restarted; meanwhile the edge holds requests (as it does for a
/// sleeping app) instead of answering 503 "starting", and the restarted app answers them.
#[tokio::test]
async fn requests_during_a_crash_restart_are_held_and_answered_by_the_restarted_app() {
    let server = TestServer::start().await;
    // Takes 1.5 s to listen after each start; `/crash` answers, then exits.
    let slow = app(&[
        ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
        (
            "server.js",
            "const born = `born ${Date.now()} ${Math.random()}`;\nconst s = require('http').createServer((q, r) => { r.end(born); if (q.url === '/crash') setTimeout(() => process.exit(1), 50); });\nsetTimeout(() => s.listen(process.env.PORT), 1500);\n",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "slowboot", "repo": s(slow.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (code, before) = server.edge("slowboot.localhost", "/crash").await;
    assert_eq!(code, 200, "{before}");
    // Until the restarted app answers, a request may meet the dead instance (502, until
    // the edge's table says it is restarting) but never a "starting" page.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held = 0;
    let after = loop {
        let sent = Instant::now();
        let (code, body) = server.edge("slowboot.localhost", "/").await;
        assert_ne!(code, 503, "a request during the restart was answered 503: {body}");
        if code == 200 && body != before {
            if sent.elapsed() > Duration::from_millis(500) {
                held += 1;
            }
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the app never came back: {code} {body}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(after.starts_with("born "), "{after}");
    assert_eq!(held, 1, "the answer came from a request held through the restart");
}

#[tokio::test]
async fn a_restarted_server_brings_its_apps_back() {
    let server = TestServer::start().await;
    let node = node_app("survivor");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "survivor", "repo": s(node.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let static_site = app(&[("index.html", "still here")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "plain", "repo": s(static_site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");

    let data = server.stop();
    let server = TestServer::start_in(data, &[]).await;
    eventually("the app serves after the restart", 30, async || {
        server.edge("survivor.localhost", "/").await.0 == 200
    })
    .await;
    assert_eq!(server.edge("survivor.localhost", "/").await.1, "survivor /");
    assert_eq!(server.edge("plain.localhost", "/").await.1, "still here");
}

#[tokio::test]
async fn a_build_interrupted_by_kill_9_is_retried_after_restart() {
    let server = TestServer::start().await;
    let slow = app(&[(
        "package.json",
        r#"{"scripts":{"build":"sleep 2 && mkdir -p dist && echo built > dist/index.html"}}"#,
    )]);
    let (_, out) = server
        .post("/api/sites", &json!({"name": "interrupted", "repo": s(slow.path())}))
        .await;
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    eventually("the build is running", 20, async || {
        server.get(&format!("/api/deployments/{id}")).await.1["status"] == "building"
    })
    .await;

    let data = server.kill9();
    // A second server on the same data dir would be refused while the first ran; this one
    // starts after the crash and must pick the build up again.
    let server = TestServer::start_in(data, &[]).await;
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["status"], "live", "{d}\n{}", server.log());
    assert_eq!(
        server.edge("interrupted.localhost", "/").await,
        (200, "built\n".to_string())
    );
    let (_, list) = server.get("/api/sites/interrupted/deployments").await;
    assert_eq!(
        list["deployments"].as_array().unwrap().len(),
        1,
        "no duplicate deployment"
    );
}

#[tokio::test]
async fn two_servers_cannot_share_a_data_dir() {
    let server = TestServer::start().await;
    let out = serve_command(server.data.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already using the data dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_first_start_whose_port_is_taken_creates_no_org_and_prints_no_key() {
    let data = data_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", &addr, "--edge-listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("binding the API to {addr}")) && stderr.contains("--listen"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("created org") && !stdout.contains("berth_"),
        "{stdout}"
    );
    assert!(
        !data.path().join("berth.db").exists(),
        "no database, so no org, was created"
    );
}

#[tokio::test]
async fn redeploys_and_switches_under_load_fail_no_request() {
    let server = TestServer::start().await;
    let repo = node_app("v0");
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "steady", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| load(&server, "steady.localhost", stop.clone()))
        .collect();
    for v in 1..=3 {
        std::fs::write(
            repo.path().join("server.js"),
            format!("require('http').createServer((q,r)=>r.end('v{v}')).listen(process.env.PORT);"),
        )
        .unwrap();
        git_commit(repo.path(), &format!("v{v}"));
        let (_, out) = server.post("/api/sites/steady/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}");
    }
    let (status, _) = server.post("/api/sites/steady/rollback", &json!({})).await;
    assert_eq!(status, 200);
    let (_, list) = server.get("/api/sites/steady/deployments").await;
    let newest = list["deployments"][0]["id"].clone();
    let (status, _) = server
        .post("/api/sites/steady/promote", &json!({"deployment_id": newest}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_no_request_failed(&stop, load, 100).await;
    assert_eq!(server.edge("steady.localhost", "/").await.1, "v3");
}

#[tokio::test]
async fn kill_9_while_starting_a_new_version_converges_after_restart() {
    let server = TestServer::start().await;
    let repo = node_app("old version");
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "converge", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    // The new version takes two seconds to listen: berth dies while it is deploying.
    std::fs::write(
        repo.path().join("server.js"),
        "setTimeout(()=>require('http').createServer((q,r)=>r.end('new version')).listen(process.env.PORT), 2000);",
    )
    .unwrap();
    git_commit(repo.path(), "slow start");
    let (_, out) = server.post("/api/sites/converge/deploy", &json!({})).await;
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    eventually("the new version is deploying", 20, async || {
        server.get(&format!("/api/deployments/{id}")).await.1["status"] == "deploying"
    })
    .await;

    let data = server.kill9();
    let server = TestServer::start_in(data, &[]).await;
    eventually("the old version serves again right after the restart", 20, async || {
        server.edge("converge.localhost", "/").await == (200, "old version /".to_string())
    })
    .await;
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["status"], "live", "{d}\n{}", server.log());
    eventually("the new version serves", 20, async || {
        server.edge("converge.localhost", "/").await.1 == "new version"
    })
    .await;
    let (_, list) = server.get("/api/sites/converge/deployments").await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn an_idle_environment_sleeps_and_the_next_request_wakes_it() {
    let server = TestServer::start().await;
    let node = app(&[
        (
            "package.json",
            r#"{"scripts":{"start":"node server.js sleepy-marker"}}"#,
        ),
        (
            "server.js",
            "require('http').createServer((q,r)=>r.end('awake ' + q.url)).listen(process.env.PORT);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "sleepy", "repo": s(node.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, cfg) = server
        .patch(
            "/api/sites/sleepy/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(
        (cfg["min_instances"].as_i64(), cfg["running_instances"].as_i64()),
        (Some(0), Some(1)),
        "{cfg}"
    );

    eventually("the idle app is stopped", 30, async || {
        processes_matching("sleepy-marker").is_empty()
    })
    .await;
    let (_, cfg) = server.get("/api/sites/sleepy/scaling").await;
    assert_eq!(cfg["running_instances"], 0, "{cfg}");

    // The next request is held while the app starts, then answered.
    assert_eq!(
        server.edge("sleepy.localhost", "/wake").await,
        (200, "awake /wake".to_string())
    );
    assert!(!processes_matching("sleepy-marker").is_empty(), "the app runs again");

    // Bad settings change nothing.
    for bad in [
        json!({"min_instances": -1}),
        json!({"max_instances": 21}),
        json!({"min_instances": 3, "max_instances": 2}),
        json!({"idle_timeout_seconds": 1}),
        json!({"target_concurrency": 0}),
    ] {
        let (status, out) = server.patch("/api/sites/sleepy/scaling", &bad).await;
        assert_eq!(status, 400, "{bad}: {out}");
    }
    let (_, cfg) = server.get("/api/sites/sleepy/scaling").await;
    assert_eq!(
        (cfg["min_instances"].as_i64(), cfg["idle_timeout_seconds"].as_i64()),
        (Some(0), Some(5))
    );
}

#[tokio::test]
async fn an_environment_scales_out_under_load_and_back_in_when_quiet() {
    let server = TestServer::start().await;
    // Each request takes 300 ms and says which instance (a token drawn at process start;
    // instances in namespaces of their own may share a port) answered it.
    let node = app(&[
        (
            "package.json",
            r#"{"scripts":{"start":"node server.js scaler-marker"}}"#,
        ),
        (
            "server.js",
            "const me = Math.random().toString(36).slice(2);\nrequire('http').createServer((q,r)=>setTimeout(()=>r.end('instance ' + me), 300)).listen(process.env.PORT);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "scaler", "repo": s(node.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, cfg) = server
        .patch(
            "/api/sites/scaler/scaling",
            &json!({"min_instances": 1, "max_instances": 3, "target_concurrency": 1}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(cfg["running_instances"], 1, "{cfg}");

    // Six clients keep six requests in flight: at one per instance it needs the maximum.
    let stop = tokio_util::sync::CancellationToken::new();
    let (clients, mut answers) = answering_clients(&server, "scaler.localhost", 6, &stop);
    let mut ports = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while ports.len() < 3 {
        assert!(Instant::now() < deadline, "saw only {ports:?} answer\n{}", server.log());
        let (status, body) = answers.recv().await.expect("clients run");
        assert_eq!(status, 200, "a request failed while scaling out: {body}");
        ports.insert(body);
    }
    let (_, cfg) = server.get("/api/sites/scaler/scaling").await;
    assert_eq!(cfg["running_instances"], 3, "never more than max_instances: {cfg}");
    let states: Vec<_> = cfg["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].clone())
        .collect();
    assert_eq!(states, vec![json!("healthy"); 3], "{cfg}");
    assert_eq!(pids_matching("scaler-marker").len(), 3);

    // Load stops: the extra instances drain and stop; no request failed on the way.
    stop.cancel();
    for c in clients {
        c.await.expect("client");
    }
    while let Some((status, body)) = answers.recv().await {
        assert_eq!(status, 200, "a request failed: {body}");
    }
    eventually("the environment scales back in to one instance", 60, async || {
        pids_matching("scaler-marker").len() == 1
    })
    .await;
    let (_, cfg) = server.get("/api/sites/scaler/scaling").await;
    assert_eq!(cfg["running_instances"], 1, "{cfg}");
    assert_eq!(server.edge("scaler.localhost", "/").await.0, 200);
}

#[tokio::test]
async fn old_deployments_are_pruned_but_never_the_one_an_environment_serves() {
    let server = TestServer::start_with(&[("BERTH_KEEP_DEPLOYMENTS", "3")]).await;
    let repo = app(&[("index.html", "v1")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "pruned", "repo": url, "build_command": "test ! -f FAIL", "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let mut ids = vec![out["deployment"]["id"].as_str().unwrap().to_string()];
    for v in 2..=5 {
        std::fs::write(repo.path().join("index.html"), format!("v{v}")).unwrap();
        git_commit(repo.path(), &format!("v{v}"));
        let (_, out) = server.post("/api/sites/pruned/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}");
        ids.push(out["deployment"]["id"].as_str().unwrap().to_string());
    }
    let dirs = |server: &TestServer| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(server.data.path().join("deployments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("dpl_"))
            .collect();
        names.sort();
        names
    };
    let listed = |list: &serde_json::Value| -> Vec<String> {
        list["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Old deployments go just after the outcome is recorded (which is what `wait` returns
    // on): the list is polled, bounded.
    let settled = |want: Vec<String>| {
        let server = &server;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, list) = server.get("/api/sites/pruned/deployments").await;
                if listed(&list) == want || Instant::now() >= deadline {
                    return list;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let newest: Vec<String> = ids.iter().rev().take(3).cloned().collect();
    let list = settled(newest.clone()).await;
    assert_eq!(list["kept_per_environment"], 3, "{list}");
    assert_eq!(listed(&list), newest, "the newest three are kept: {list}");
    let mut on_disk = newest.clone();
    on_disk.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dirs(&server) != on_disk {
        assert!(
            Instant::now() < deadline,
            "older deployments' files are removed: {:?}",
            dirs(&server)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for old in &ids[..2] {
        let (status, _) = server.get(&format!("/api/deployments/{old}")).await;
        assert_eq!(status, 404, "{old} is gone with its logs");
    }

    // Failing deploys push older ones out, never the one production serves.
    std::fs::write(repo.path().join("FAIL"), "").unwrap();
    git_commit(repo.path(), "break the build");
    let mut failed = Vec::new();
    for _ in 0..4 {
        let (_, out) = server.post("/api/sites/pruned/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "failed", "{out}");
        failed.push(out["deployment"]["id"].as_str().unwrap().to_string());
    }
    let mut want: Vec<String> = failed.iter().rev().take(3).cloned().collect();
    want.push(ids[4].clone());
    let list = settled(want.clone()).await;
    assert_eq!(listed(&list), want, "{list}");
    assert_eq!(server.edge("pruned.localhost", "/").await, (200, "v5".to_string()));
    // Files go just after the outcome is recorded (which is what `wait` returns on).
    let deadline = Instant::now() + Duration::from_secs(10);
    while dirs(&server).len() != 4 {
        assert!(Instant::now() < deadline, "{:?}", dirs(&server));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The id of the deployment a no-wait deploy of `site` queued.
async fn queue_deploy(server: &TestServer, site: &str) -> String {
    let (status, out) = server.post(&format!("/api/sites/{site}/deploy"), &json!({})).await;
    assert_eq!(status, 202, "{out}");
    out["deployment"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn apps_that_hang_at_start_hold_no_build_slot() {
    // Two build slots (the default), both deploys below hang in their health check.
    let server = TestServer::start_with(&[("BERTH_START_TIMEOUT_SECONDS", "120")]).await;
    let (mut hanging, mut dirs) = (Vec::new(), Vec::new());
    for name in ["hang-one", "hang-two"] {
        let dir = app(&[("index.html", "never served")]);
        let (status, out) = server
            .post(
                "/api/sites",
                &json!({"name": name, "repo": s(dir.path()), "start_command": "sleep 600"}),
            )
            .await;
        assert_eq!(status, 201, "{out}");
        hanging.push(out["deployment"]["id"].as_str().unwrap().to_string());
        dirs.push(dir);
    }
    for id in &hanging {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, d) = server.get(&format!("/api/deployments/{id}")).await;
            if d["status"] == "deploying" {
                break;
            }
            assert!(Instant::now() < deadline, "{d}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Both wait for health: a static deploy elsewhere still builds and goes live.
    let dir = app(&[("index.html", "static")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "meanwhile", "repo": s(dir.path()), "wait": true, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    for id in &hanging {
        let (_, d) = server.get(&format!("/api/deployments/{id}")).await;
        assert_eq!(d["status"], "deploying", "still waiting for its app: {d}");
        let (status, out) = server.post(&format!("/api/deployments/{id}/cancel"), &json!({})).await;
        assert_eq!(status, 200, "{out}");
    }
}

#[tokio::test]
async fn queued_deploys_of_one_environment_coalesce_into_the_newest() {
    let server = TestServer::start_with(&[("BERTH_BUILD_CONCURRENCY", "1")]).await;
    let repo = app(&[("index.html", "v0")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "burst", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    // Another site's slow build holds the only slot while ten deploys queue up.
    let slow = app(&[("index.html", "slow")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "slowbuild", "repo": s(slow.path()), "build_command": "sleep 3"}),
        )
        .await;
    let slow_id = out["deployment"]["id"].as_str().unwrap().to_string();
    std::fs::write(repo.path().join("index.html"), "v-last").unwrap();
    git_commit(repo.path(), "last");
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(queue_deploy(&server, "burst").await);
    }
    let mut finals = Vec::new();
    for id in &ids {
        finals.push(server.wait_deployment(id).await);
    }
    let statuses: Vec<&str> = finals.iter().map(|d| d["status"].as_str().unwrap()).collect();
    let mut want = vec!["superseded"; 9];
    want.push("live");
    assert_eq!(statuses, want, "only the newest builds");
    let mut built = 0;
    for id in &ids {
        let log = server.deployment_log(id, "build").await;
        if log.contains("build pack:") {
            built += 1;
        } else {
            assert!(log.contains("a newer deploy of this environment, is queued"), "{log}");
        }
    }
    assert_eq!(built, 1, "ten queued deploys, one build");
    assert_eq!(server.edge("burst.localhost", "/").await, (200, "v-last".to_string()));
    assert_eq!(server.wait_deployment(&slow_id).await["status"], "live");
}

#[tokio::test]
async fn one_sites_burst_of_builds_does_not_starve_another_sites_deploy() {
    // One build slot. Five environments of one site each queue a 2 s build; another
    // site's deploy queued after them gets the slot as soon as the running build ends,
    // not after all five (first come, first served would put it last).
    let server = TestServer::start_with(&[("BERTH_BUILD_CONCURRENCY", "1")]).await;
    let busy = app(&[("index.html", "busy")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "busy", "repo": s(busy.path()), "build_command": "sleep 2", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let mut burst = Vec::new();
    for n in 1..=5 {
        let (status, out) = server
            .post("/api/sites/busy/environments", &json!({"name": format!("e{n}")}))
            .await;
        assert_eq!(status, 201, "{out}");
        burst.push(out["deployment"]["id"].as_str().unwrap().to_string());
    }
    let other = app(&[("index.html", "other")]);
    let (status, out) = server
        .post("/api/sites", &json!({"name": "other", "repo": s(other.path())}))
        .await;
    assert_eq!(status, 201, "{out}");
    let other_id = out["deployment"]["id"].as_str().unwrap().to_string();
    let other_done = server.wait_deployment(&other_id).await;
    assert_eq!(other_done["status"], "live", "{other_done}");
    let mut before_other = 0;
    for id in &burst {
        let d = server.wait_deployment(id).await;
        assert_eq!(d["status"], "live", "{d}");
        if d["finished_at"].as_str().unwrap() < other_done["finished_at"].as_str().unwrap() {
            before_other += 1;
        }
    }
    assert!(
        before_other <= 2,
        "{before_other} of the busy site's 5 builds finished before the other site's deploy"
    );
}
