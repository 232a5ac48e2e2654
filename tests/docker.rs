//! The docker provider on a real Docker Engine: sites built into images and run as
//! containers behind the edge. `scripts/docker-test-env.sh` installs and starts dockerd
//! and builds the local base images (`berth-test/busybox:1`, `berth-test/node:20`), so no
//! registry is needed. Every test removes the containers and images its server made (they
//! carry its `berth.owner` label), so tests run in parallel without seeing each other.

mod common;
#[path = "common/docker_server.rs"]
mod docker_server;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use docker_server::{DockerServer, remove_owned};
use serde_json::{Value, json};

/// A site with its own Dockerfile: busybox's httpd serving `text`.
fn dockerfile_app(text: &str) -> tempfile::TempDir {
    app(&[
        (
            "Dockerfile",
            "FROM berth-test/busybox:1\nCOPY index.html /www/index.html\nUSER 65534:65534\nCMD [\"/bin/sh\", \"-c\", \"echo serving on $PORT; exec httpd -f -v -p $PORT -h /www\"]\n",
        ),
        ("index.html", text),
    ])
}

fn deployment_id(out: &Value) -> String {
    out["deployment"]["id"].as_str().expect("a deployment id").to_string()
}

#[tokio::test]
async fn a_dockerfile_site_is_built_by_the_engine_and_served_through_the_edge() {
    let server = DockerServer::start().await;
    let site = dockerfile_app("hello from a container");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "boxed", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("boxed.localhost", "/").await,
        (200, "hello from a container".to_string())
    );
    let id = deployment_id(&out);
    let log = server.deployment_log(&id, "build").await;
    assert!(log.contains("building the app's Dockerfile"), "{log}");
    assert!(log.contains(": FROM berth-test/busybox:1"), "{log}");
    assert!(log.contains(&format!("built image berth/boxed:{id}")), "{log}");

    // One container, labelled with what it is, locked down.
    let containers = server.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let (name, labels, _) = &containers[0];
    for label in [
        "berth.site=boxed".to_string(),
        "berth.environment=production".to_string(),
        format!("berth.deployment={id}"),
        "berth.instance=0".to_string(),
        "berth.org=".to_string(),
    ] {
        assert!(labels.contains(&label), "{label} missing from {labels}");
    }
    let inspect: Value = serde_json::from_str(&docker(&["inspect", name])).unwrap();
    let host = &inspect[0]["HostConfig"];
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{host}");
    assert!(host["SecurityOpt"].to_string().contains("no-new-privileges"), "{host}");
    assert_eq!(host["Memory"], 256 * 1024 * 1024);
    assert!(host["PidsLimit"].as_i64().unwrap_or(0) > 0, "{host}");
    assert!(host["NanoCpus"].as_i64().unwrap_or(0) > 0, "{host}");
    assert!(
        host["NetworkMode"].as_str().unwrap_or_default().len() == 64
            || host["NetworkMode"].as_str().unwrap_or_default().starts_with("berth-"),
        "{host}"
    );
    let bindings = &host["PortBindings"];
    assert!(
        bindings.is_null() || bindings.as_object().is_some_and(|b| b.is_empty()),
        "a local engine's container publishes no port: {bindings}"
    );
    assert_eq!(inspect[0]["Config"]["User"], "65534:65534");

    // The engine's stats, per instance.
    let (status, usage) = server.get("/api/sites/boxed/usage").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["provider"], "docker", "{usage}");
    let instance = &usage["instances"][0];
    assert_eq!(instance["state"], "healthy", "{usage}");
    assert!(instance["memory_bytes"].as_u64().unwrap_or(0) > 0, "{usage}");
    assert_eq!(instance["memory_limit_bytes"], 256 * 1024 * 1024, "{usage}");
    assert!(instance["cpu_percent"].as_f64().is_some(), "{usage}");

    // The app's output reaches the runtime log.
    eventually("the container's output is in the runtime log", 10, async || {
        let (_, logs) = server.get(&format!("/api/deployments/{id}/logs?kind=runtime")).await;
        logs["lines"].to_string().contains("serving on 8080")
    })
    .await;

    // Deleting the site removes its container and its image.
    let (status, out) = server.delete("/api/sites/boxed").await;
    assert_eq!(status, 200, "{out}");
    assert!(server.containers().is_empty(), "{:?}", server.containers());
    let images = docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=berth.owner={}", server.owner),
    ]);
    assert!(images.trim().is_empty(), "images left: {images}");
}

#[tokio::test]
async fn a_node_site_without_dockerfile_gets_a_generated_one_on_the_configured_base() {
    let server = DockerServer::start().await;
    let site = node_app("generated");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "gen", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("gen.localhost", "/x").await,
        (200, "generated /x".to_string())
    );
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(
        log.contains("no Dockerfile: generated one on berth-test/node:20"),
        "{log}"
    );
    assert!(
        log.contains("CMD [\"/bin/sh\",\"-c\",\"exec node server.js\"]"),
        "{log}"
    );
    let (name, _, _) = server.containers().into_iter().next().expect("a container");
    let inspect: Value = serde_json::from_str(&docker(&["inspect", &name])).unwrap();
    assert_eq!(inspect[0]["Config"]["User"], "65534:65534", "runs unprivileged");
    // The app's user may write in its own folder, as it may on the local provider.
    let wrote = docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo hi > /app/state.txt && cat /app/state.txt",
    ]);
    assert_eq!(wrote.trim(), "hi", "/app is writable by the app's user");
}

#[tokio::test]
async fn a_container_on_a_fixed_port_is_routed_there_with_a_warning() {
    let server = DockerServer::start().await;
    let site = app(&[
        (
            "Dockerfile",
            "FROM berth-test/busybox:1\nCOPY index.html /www/index.html\nUSER 65534:65534\nCMD [\"httpd\", \"-f\", \"-p\", \"3000\", \"-h\", \"/www\"]\n",
        ),
        ("index.html", "fixed in a container"),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "fixedbox", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("fixedbox.localhost", "/").await,
        (200, "fixed in a container".to_string())
    );
    let log = server.deployment_log(&deployment_id(&out), "all").await;
    assert!(
        log.contains("listens on port 3000, not on $PORT") && log.contains("`port` to 3000"),
        "{log}"
    );
}

#[tokio::test]
async fn redeploys_swap_containers_under_load_without_a_failed_request() {
    let server = DockerServer::start().await;
    let site = dockerfile_app("v0");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "swap", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = (0..2).map(|_| load(&server, "swap.localhost", stop.clone())).collect();
    for v in 1..=2 {
        std::fs::write(site.path().join("index.html"), format!("v{v}")).unwrap();
        let (_, out) = server.post("/api/sites/swap/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_no_request_failed(&stop, loops, 50).await;
    assert_eq!(server.edge("swap.localhost", "/").await, (200, "v2".to_string()));
    // The replaced containers drain and go.
    eventually("only the live container is left", 30, async || {
        server.containers().len() == 1
    })
    .await;

    // Old images go after a deploy: the newest `keep_images`, and never the one an
    // environment points at.
    let images = || {
        docker(&[
            "images",
            "-q",
            "--filter",
            &format!("label=berth.owner={}", server.owner),
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect::<std::collections::HashSet<_>>()
        .len()
    };
    assert_eq!(images(), 3);
    let (status, out) = server
        .patch("/api/config/docker", &json!({"config": {"keep_images": 1}}))
        .await;
    assert_eq!(status, 200, "{out}");
    std::fs::write(site.path().join("index.html"), "v3").unwrap();
    let (_, out) = server.post("/api/sites/swap/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(
        images(),
        2,
        "the new image and the one production pointed at while it was built"
    );
}

#[tokio::test]
async fn an_idle_container_is_stopped_and_the_next_request_starts_one() {
    let server = DockerServer::start().await;
    let (status, out) = server
        .patch("/api/config/docker", &json!({"config": {"keep_paused_seconds": 0}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let site = dockerfile_app("awake");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nap", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, cfg) = server
        .patch(
            "/api/sites/nap/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    eventually("the idle container is removed", 40, async || {
        server.containers().is_empty()
    })
    .await;
    assert_eq!(server.edge("nap.localhost", "/").await, (200, "awake".to_string()));
    assert_eq!(server.running().len(), 1, "one container again");

    // Woken again the moment it is asleep, while the engine may still be removing the
    // old container: a fresh one serves, the stopping one is not taken for a survivor.
    eventually("asleep again", 40, async || {
        server.get("/api/sites/nap/scaling").await.1["running_instances"] == 0
    })
    .await;
    assert_eq!(server.edge("nap.localhost", "/").await, (200, "awake".to_string()));
    eventually("one container serves", 20, async || server.containers().len() == 1).await;
}

/// A Node app that answers `/hit` with how many hits this process has counted (health
/// checks on `/` do not count).
fn counting_app() -> tempfile::TempDir {
    app(&[
        (
            "package.json",
            r#"{"name":"count","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        (
            "server.js",
            "let n = 0; require('http').createServer((q, r) => r.end(String(q.url === '/hit' ? ++n : n))).listen(process.env.PORT);",
        ),
    ])
}

/// Creates site `name` from [`counting_app`], hits it once (its count is 1), lets it
/// scale to zero after 5 s idle and waits until the engine has its container paused.
/// Returns the source folder, the deployment id and the container's name.
async fn counting_site_left_to_sleep(server: &DockerServer, name: &str) -> (tempfile::TempDir, String, String) {
    let site = counting_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let host = format!("{name}.localhost");
    assert_eq!(server.edge(&host, "/hit").await, (200, "1".to_string()));
    let (container, _, _) = server.containers().into_iter().next().expect("a container");
    let (status, cfg) = server
        .patch(
            &format!("/api/sites/{name}/scaling"),
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    eventually("the idle container is paused", 40, async || {
        engine_state(&container) == "paused"
    })
    .await;
    (site, deployment_id(&out), container)
}

/// The engine's state of a container: "running", "paused", "exited", or "" when gone.
fn engine_state(name: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", name]).trim().to_string()
}

#[tokio::test]
async fn an_idle_container_is_paused_woken_in_place_and_removed_after_its_hold() {
    let server = DockerServer::start().await;
    let (status, out) = server
        .patch("/api/config/docker", &json!({"config": {"keep_paused_seconds": 4}}))
        .await;
    assert_eq!(status, 200, "{out}");
    // Idle: frozen in place, shown asleep, not counted as running.
    let (_site, id, name) = counting_site_left_to_sleep(&server, "doze").await;
    let (_, scaling) = server.get("/api/sites/doze/scaling").await;
    assert_eq!(scaling["running_instances"], 0, "{scaling}");
    assert_eq!(scaling["instances"][0]["state"], "paused", "{scaling}");
    let (_, site_out) = server.get("/api/sites/doze").await;
    assert_eq!(site_out["status"], "sleeping", "{site_out}");

    // A request thaws the same container: the same process answers, its count goes on.
    assert_eq!(server.edge("doze.localhost", "/hit").await, (200, "2".to_string()));
    assert_eq!(engine_state(&name), "running");
    assert_eq!(server.containers().len(), 1, "no second container");
    let logs = server.deployment_log(&id, "runtime").await;
    assert!(logs.contains("woken from pause"), "{logs}");

    // Asleep past keep_paused_seconds: removed, and the next request starts a new one.
    eventually("paused again", 40, async || engine_state(&name) == "paused").await;
    eventually("the paused container is removed after its hold", 40, async || {
        server.containers().is_empty()
    })
    .await;
    assert_eq!(server.edge("doze.localhost", "/hit").await, (200, "1".to_string()));
    let fresh = server.running();
    assert_eq!(fresh.len(), 1, "one new container");
    assert_ne!(fresh[0], name);
}

/// Removes an installation's containers when dropped, even if the test failed.
struct OwnedBy(String);

impl Drop for OwnedBy {
    fn drop(&mut self) {
        remove_owned(&self.0);
    }
}

#[tokio::test]
async fn containers_nothing_wants_are_swept_and_another_installations_are_left_alone() {
    prepare_engine();
    let server = DockerServer::configure(TestServer::start_with(&[("BERTH_SWEEP_SECONDS", "1")]).await).await;
    let site = dockerfile_app("wanted");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "kept", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let wanted = server.running();
    assert_eq!(wanted.len(), 1);

    // A leftover of this installation (its deployment is long gone), and a container of
    // another installation on the same engine.
    let foreign = OwnedBy(format!("other-{}", uuid::Uuid::new_v4().simple()));
    let run = |owner: &str| {
        docker(&[
            "run",
            "-d",
            "--label",
            &format!("berth.owner={owner}"),
            "--label",
            "berth.deployment=dpl_gone",
            "--label",
            "berth.instance=0",
            "berth-test/busybox:1",
            "sleep",
            "300",
        ])
        .trim()
        .to_string()
    };
    let leftover = run(&server.owner);
    let theirs = run(&foreign.0);
    assert!(!leftover.is_empty() && !theirs.is_empty(), "docker run failed");

    eventually("the leftover is swept", 30, async || engine_state(&leftover).is_empty()).await;
    assert_eq!(
        engine_state(&theirs),
        "running",
        "another installation's container stays"
    );
    assert_eq!(server.running(), wanted, "the wanted container stays");
    assert_eq!(server.edge("kept.localhost", "/").await, (200, "wanted".to_string()));
}

#[tokio::test]
async fn a_preview_promoted_into_production_runs_from_the_same_image_under_its_own_tag() {
    let server = DockerServer::start().await;
    let site = dockerfile_app("lifted");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "lift", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, out) = server
        .post(
            "/api/sites/lift/environments",
            &json!({"name": "feature", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let preview = deployment_id(&out);
    let (status, out) = server
        .post("/api/sites/lift/promote", &json!({"deployment_id": preview}))
        .await;
    assert_eq!(status, 200, "{out}");
    let promoted = deployment_id(&out);
    assert_ne!(promoted, preview);
    let image_id = |id: &str| {
        docker(&["image", "inspect", "-f", "{{.Id}}", &format!("berth/lift:{id}")])
            .trim()
            .to_string()
    };
    assert!(!image_id(&preview).is_empty());
    assert_eq!(image_id(&promoted), image_id(&preview), "no rebuild: the same image");
    assert_eq!(server.edge("lift.localhost", "/").await, (200, "lifted".to_string()));
    assert_eq!(
        server.edge("feature--lift.localhost", "/").await,
        (200, "lifted".to_string())
    );
    let log = server.deployment_log(&promoted, "build").await;
    assert!(log.contains(&format!("promoted from {preview}")), "{log}");
    assert!(log.contains("the same files and image"), "{log}");

    // Deleting the site removes the image with both its tags.
    let (status, out) = server.delete("/api/sites/lift").await;
    assert_eq!(status, 200, "{out}");
    let left = docker(&["images", "-q", "berth/lift"]);
    assert!(left.trim().is_empty(), "images left behind: {left}");
}

#[tokio::test]
async fn a_promote_docker_cannot_do_without_a_rebuild_is_refused_naming_the_capability_and_changes_nothing() {
    let server = DockerServer::start().await;
    let (_, cfg) = server.get("/api/config/docker").await;
    let caps = &cfg["providers"][0]["capabilities"];
    assert_eq!(caps["promote_without_rebuild"], "while_image_kept", "{cfg}");
    assert_eq!(caps["scale_to_zero"], "freeze", "{cfg}");
    let (status, out) = server
        .patch("/api/config/docker", &json!({"config": {"keep_images": 1}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let site = dockerfile_app("v0");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "kept", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let first = deployment_id(&out);
    for v in 1..=2 {
        std::fs::write(site.path().join("index.html"), format!("v{v}")).unwrap();
        let (_, out) = server.post("/api/sites/kept/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}");
    }
    // keep_images 1: the first build's image went after the third build.
    let image = format!("berth/kept:{first}");
    assert!(
        docker(&["images", "-q", &image]).trim().is_empty(),
        "{image} is still kept"
    );
    // The superseded deployment's container may still be draining and go away meanwhile:
    // what matters is that none is added.
    let names = |list: Vec<(String, String, String)>| list.into_iter().map(|c| c.0).collect::<Vec<_>>();
    let containers_before = names(server.containers());

    let (status, out) = server
        .post("/api/sites/kept/promote", &json!({"deployment_id": first}))
        .await;
    assert_eq!(status, 409, "{out}");
    let message = out.to_string();
    for part in [
        "target 'docker'",
        "promote_without_rebuild",
        "image was removed",
        "deploy again",
    ] {
        assert!(message.contains(part), "'{part}' missing: {message}");
    }

    // Nothing changed: production serves the newest build, the first stays superseded,
    // no image was rebuilt and no container started.
    assert_eq!(server.edge("kept.localhost", "/").await, (200, "v2".to_string()));
    let (_, d) = server.get(&format!("/api/deployments/{first}")).await;
    assert_eq!(d["status"], "superseded", "{d}");
    assert!(docker(&["images", "-q", &image]).trim().is_empty());
    let started: Vec<String> = names(server.containers())
        .into_iter()
        .filter(|c| !containers_before.contains(c))
        .collect();
    assert!(
        started.is_empty(),
        "containers started by a refused promote: {started:?}"
    );
}

/// Removes the iptables rules an installation added, when dropped.
struct RulesOf(String);

impl Drop for RulesOf {
    fn drop(&mut self) {
        let out = Command::new("iptables").args(["-w", "-S", "INPUT"]).output();
        let listed = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in listed.lines().filter(|l| l.contains(&format!("berth {}:", self.0))) {
            let delete = line.replacen("-A ", "-D ", 1);
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("iptables -w {delete}"))
                .status();
        }
    }
}

/// An HTTP server on every host address answering `text`, until the test ends.
async fn host_server(text: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_cannot_reach_the_control_plane_when_it_listens_beyond_loopback() {
    prepare_engine();
    let server = DockerServer::configure(TestServer::start_with(&[("BERTH_LISTEN", "0.0.0.0:0")]).await).await;
    let _rules = RulesOf(server.owner.clone());
    let site = dockerfile_app("walled");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "walled", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (name, _, _) = server.containers().into_iter().next().expect("a container");
    let gateway = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
        &name,
    ])
    .trim()
    .to_string();
    assert!(!gateway.is_empty(), "the container has a gateway");
    let fetch = |port: u16, path: &str| {
        docker(&[
            "exec",
            &name,
            "sh",
            "-c",
            &format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {gateway} {port} 2>&1 || echo unreachable"),
        ])
    };
    // The container's own app answers through the same path (the control) ...
    let inside = docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 $PORT 2>&1 || echo unreachable",
    ]);
    assert!(inside.contains("200 OK"), "{inside}");
    // ... but nothing of the host does: neither a service on every address (the org
    // bridge is under the app firewall) nor the control plane.
    let other = host_server("host service").await;
    let got = fetch(other, "/");
    assert!(
        got.contains("unreachable") && !got.contains("host service"),
        "a host service answered a container: {got}"
    );
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200, "the API answers on the host");
    let got = fetch(server.api_port, "/healthz");
    assert!(
        got.contains("unreachable") && !got.contains("200 OK"),
        "the control plane answered a container: {got}"
    );
}

#[tokio::test]
async fn the_image_build_sees_the_sites_variables_as_build_arguments() {
    let server = DockerServer::start().await;
    let site = app(&[(
        "Dockerfile",
        "FROM berth-test/busybox:1\nARG GREETING\nRUN mkdir /www && echo \"built with $GREETING\" > /www/index.html\nUSER 65534:65534\nCMD [\"/bin/sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n",
    )]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "args", "repo": s(site.path()), "env_vars": {"GREETING": "a build-time value"}, "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("args.localhost", "/").await,
        (200, "built with a build-time value\n".to_string())
    );
    // Values are redacted from the build log like any output of the deployment.
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(!log.contains("a build-time value"), "{log}");
}

#[tokio::test]
async fn a_restarted_berth_adopts_its_running_container() {
    adopts_after_restart(DockerServer::kill9).await;
}

#[tokio::test]
async fn a_gracefully_restarted_berth_leaves_its_container_running_and_adopts_it() {
    adopts_after_restart(DockerServer::stop_gracefully).await;
}

async fn adopts_after_restart(restart: fn(DockerServer) -> (tempfile::TempDir, String)) {
    let server = DockerServer::start().await;
    let site = dockerfile_app("survivor");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "keep", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let before = server.running();
    assert_eq!(before.len(), 1);
    let id_before = docker(&["inspect", "-f", "{{.Id}}", &before[0]]);

    let (data, _owner) = restart(server);
    let server = DockerServer::configure(TestServer::start_in(data, &[]).await).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.edge("keep.localhost", "/").await != (200, "survivor".to_string()) {
        assert!(
            Instant::now() < deadline,
            "the restarted berth never served the site:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = server.running();
    assert_eq!(after, before, "the same container serves, no duplicate");
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &after[0]]), id_before);
    assert!(server.log().contains("adopted a running container"), "{}", server.log());
}

#[tokio::test]
async fn a_container_asleep_when_berth_restarts_is_thawed_and_adopted_by_the_next_request() {
    let server = DockerServer::start().await;
    let (_site, _, name) = counting_site_left_to_sleep(&server, "nightly").await;

    let (data, _owner) = server.stop_gracefully();
    let server = DockerServer::configure(TestServer::start_in(data, &[]).await).await;
    assert_eq!(engine_state(&name), "paused", "left asleep across the restart");
    // The same process answers: its count goes on.
    assert_eq!(server.edge("nightly.localhost", "/hit").await, (200, "2".to_string()));
    assert_eq!(engine_state(&name), "running");
    assert_eq!(server.containers().len(), 1, "no second container");
}

#[tokio::test]
async fn a_failing_build_says_why_and_the_old_container_keeps_serving() {
    let server = DockerServer::start().await;
    let site = dockerfile_app("still here");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "sturdy", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    std::fs::write(
        site.path().join("Dockerfile"),
        "FROM berth-test/busybox:1\nRUN echo compiling && exit 3\n",
    )
    .unwrap();
    let (_, out) = server.post("/api/sites/sturdy/deploy", &json!({"wait": true})).await;
    let d = &out["deployment"];
    assert_eq!(d["status"], "failed", "{out}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the image build failed") && error.contains("non-zero code: 3"),
        "{out}"
    );
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(
        log.contains("compiling"),
        "the step's output is in the build log: {log}"
    );
    assert_eq!(
        server.edge("sturdy.localhost", "/").await,
        (200, "still here".to_string())
    );
}

#[tokio::test]
async fn an_engine_that_is_down_is_reported_and_nothing_is_lost() {
    let server = DockerServer::start().await;
    let site = dockerfile_app("unharmed");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "calm", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");

    let nowhere = tempfile::tempdir().unwrap();
    let socket = nowhere.path().join("docker.sock");
    let host = format!("unix://{}", socket.display());
    let (status, out) = server
        .patch("/api/config/docker", &json!({"config": {"host": host}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, test) = server.post("/api/config/docker/test", &json!({})).await;
    assert_eq!(test["ok"], false, "{test}");
    let detail = test["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&host) && detail.contains("start dockerd"), "{test}");

    let (_, out) = server.post("/api/sites/calm/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("is not answering") && error.contains("start dockerd"),
        "{out}"
    );

    // The running site, its settings and the org's other settings are untouched.
    assert_eq!(server.edge("calm.localhost", "/").await, (200, "unharmed".to_string()));
    let (_, cfg) = server.get("/api/config/docker").await;
    assert_eq!(cfg["providers"][0]["config"]["memory_mb"], 256, "{cfg}");
    let (status, _) = server
        .patch("/api/config/docker", &json!({"config": {"host": null}}))
        .await;
    assert_eq!(status, 200);
    let (_, test) = server.post("/api/config/docker/test", &json!({})).await;
    assert_eq!(test["ok"], true, "{test}");
    let (_, out) = server.post("/api/sites/calm/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
}

#[tokio::test]
async fn bad_docker_settings_are_refused_and_change_nothing() {
    let server = DockerServer::start().await;
    for bad in [
        json!({"cpus": 0}),
        json!({"memory_mb": "lots"}),
        json!({"host": "ftp://example"}),
        json!({"default": "yes"}),
        json!({"base_images": {"node": "has space"}}),
    ] {
        let (status, out) = server.patch("/api/config/docker", &json!({"config": bad})).await;
        assert_eq!(status, 400, "{bad}: {out}");
    }
    let (_, cfg) = server.get("/api/config/docker").await;
    assert_eq!(cfg["providers"][0]["config"]["memory_mb"], 256, "{cfg}");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nowhere", "provider": "nomad", "deploy": false}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out.to_string().contains("local, docker, kubernetes"), "{out}");
}

/// Runs `sh -c script` in a container; its output (stdout and stderr).
fn exec_in(container: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The container serving `site`.
fn container_of(server: &DockerServer, site: &str) -> String {
    server
        .containers()
        .into_iter()
        .find(|(_, labels, state)| labels.contains(&format!("berth.site={site}")) && state == "running")
        .map(|(name, _, _)| name)
        .unwrap_or_else(|| panic!("no running container of {site}: {:?}", server.containers()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_and_an_image_build_reach_the_internet_but_not_private_ranges_metadata_or_another_orgs_containers()
{
    prepare_engine();
    let world = World::create();
    let server = DockerServer::start().await;
    let probe = dockerfile_app("prober");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "prober", "repo": s(probe.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());

    // Another org of the same installation, on docker too, with a site of its own.
    let other_key = "berth_org_b_admin_key_0123456789";
    add_org(&server, "org_b", "bee", other_key).await;
    let as_b = |req: reqwest::RequestBuilder| req.bearer_auth(other_key);
    let r = as_b(server.http.patch(server.api("/api/config/docker")))
        .json(&json!({"config": {"default": true, "base_images": {"procfile": "berth-test/busybox:1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let secret = dockerfile_app("org b's own page");
    let r = as_b(server.http.post(server.api("/api/sites")))
        .json(&json!({"name": "neighbour", "repo": s(secret.path()), "wait": true}))
        .send()
        .await
        .unwrap();
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());

    let prober = container_of(&server, "prober");
    let neighbour = container_of(&server, "neighbour");
    let neighbour_ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &neighbour,
    ])
    .trim()
    .to_string();
    assert!(!neighbour_ip.is_empty(), "the neighbour has an address");
    let fetch = |host: &str, port: u16| {
        exec_in(
            &prober,
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>&1 || echo unreachable"),
        )
    };

    // Control: the public stand-in answers (the world's server may need a moment), so the
    // refusals below are the firewall's.
    eventually("the public stand-in answers the container", 15, async || {
        fetch("198.51.100.10", 8000).contains("200 OK")
    })
    .await;
    for (what, host, port) in [
        ("a private range", "10.99.77.10", 8000),
        ("the metadata stand-in", "169.254.77.77", 8000),
        ("another org's container", neighbour_ip.as_str(), 8080),
    ] {
        let got = fetch(host, port);
        assert!(
            got.contains("unreachable") && !got.contains("200 OK"),
            "the container reached {what} at {host}:{port}: {got}"
        );
    }
    // dockerd deletes and re-inserts its `FORWARD -j DOCKER-USER` jump whenever a network
    // is created (any org's first deploy); for that moment Docker's own accept rules for
    // every bridge come first. The policy must hold then too. (This test runs alone, so
    // taking the jump out for one probe touches no other test.)
    sh("iptables -w -D FORWARD -j DOCKER-USER");
    let got = fetch("10.99.77.10", 8000);
    sh("iptables -w -I FORWARD -j DOCKER-USER");
    assert!(
        got.contains("unreachable") && !got.contains("200 OK"),
        "while dockerd re-inserts its DOCKER-USER jump, the container reached a private range: {got}"
    );
    // The edge is the way in, for everyone.
    assert_eq!(
        server.edge("neighbour.localhost", "/").await,
        (200, "org b's own page".to_string())
    );

    // Image builds get the same reach: a RUN step probes and writes what it reached into
    // the page it serves (a token of this run keeps the engine's layer cache out of it).
    let token = format!("{}-{:?}", std::process::id(), Instant::now());
    let builder = app(&[(
        "Dockerfile",
        &format!(
            "FROM berth-test/busybox:1\n\
             RUN mkdir -p /www && echo {token} > /dev/null && for h in 198.51.100.10 10.99.77.10 169.254.77.77; do \
             if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $h 8000 | grep -q '200 OK'; then echo $h:open; else echo $h:closed; fi; \
             done > /www/index.html\n\
             USER 65534:65534\n\
             CMD [\"/bin/sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
        ),
    )]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "builder", "repo": s(builder.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (code, page) = server.edge("builder.localhost", "/").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("198.51.100.10:open"),
        "the image build could not reach the public stand-in: {page}"
    );
    for refused in ["10.99.77.10", "169.254.77.77"] {
        assert!(
            page.contains(&format!("{refused}:closed")),
            "the image build reached {refused}: {page}"
        );
    }
    drop(world);
}

#[tokio::test]
async fn a_container_that_fills_its_disk_hits_the_bound_and_its_deployment_says_why() {
    prepare_engine();
    let server = DockerServer::start().await;
    let (status, out) = server
        .patch(
            "/api/config/docker",
            &json!({"config": {"memory_mb": 64, "disk_mb": 32}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let filler = app(&[
        (
            "Dockerfile",
            "FROM berth-test/busybox:1\nRUN mkdir -p /data /www && chmod 777 /data && echo filler > /www/index.html\nUSER 65534:65534\nCMD [\"/bin/sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n",
        ),
        ("README", "a disk filler"),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "filler", "repo": s(filler.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let id = deployment_id(&out);
    let container = container_of(&server, "filler");

    // The writable layer: 200 MiB in a 32 MiB bound. Where the engine bounds it, the write
    // fails; elsewhere the watchdog stops the container. Either way the log says why.
    let got = exec_in(&container, "dd if=/dev/zero of=/data/fill bs=1M count=200 2>&1");
    let inspect: Value = serde_json::from_str(&docker(&["inspect", &container])).unwrap();
    if inspect[0]["HostConfig"]["StorageOpt"]["size"].is_string() {
        assert!(got.contains("No space left"), "{got}");
    } else {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = server.deployment_log(&id, "runtime").await;
            if log.contains("disk full") && log.contains("32 MiB") && log.contains("disk_mb") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the runtime log does not say the disk is full (dd: {got}):\n{log}\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The lifecycle starts a fresh container, its layer empty again.
        eventually("a new container serves", 30, async || {
            server.edge("filler.localhost", "/").await == (200, "filler\n".to_string())
        })
        .await;
    }

    // /tmp is in memory and bounded by the memory setting: 100 MiB do not fit in 64.
    let container = container_of(&server, "filler");
    let got = exec_in(
        &container,
        "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1; echo size $(wc -c < /tmp/fill)",
    );
    let size: u64 = got
        .lines()
        .find_map(|l| l.strip_prefix("size ")?.trim().parse().ok())
        .unwrap_or(0);
    assert!(size <= 64 << 20, "/tmp took {size} bytes: {got}");
    let inspect: Value = serde_json::from_str(&docker(&["inspect", &container])).unwrap();
    let host = &inspect[0]["HostConfig"];
    assert!(
        host["Tmpfs"]["/tmp"].as_str().unwrap_or_default().contains("size=64m"),
        "{host}"
    );
}
