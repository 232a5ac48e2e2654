//! The lifecycle suite every target runs: one body per behaviour, generated for `local`,
//! `docker` (the real Docker Engine) and `kubernetes` against the FAKE API server
//! (`common/fake_k8s.rs`, with the real registry), so a test's name says its target. Each
//! body acts as an agent would: it reads the target's capability table over the API and,
//! where the target lacks the capability, asserts that the operation is refused naming
//! the target and that nothing changed, never skipping in silence.
//!
//! Docker and kubernetes need `scripts/docker-test-env.sh` to have run (dockerd, the
//! `berth-test/*` base images, the registry on 127.0.0.1:5000).

mod common;
#[path = "common/docker_server.rs"]
mod docker_server;
#[path = "common/fake_k8s.rs"]
mod fake_k8s;
#[path = "common/kube_server.rs"]
mod kube_server;
#[path = "common/targets.rs"]
mod targets;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use targets::{OnTarget, TargetKind};

/// Generates one test per behaviour and target, in a module named after the target.
macro_rules! on_every_target {
    ($($behaviour:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test] async fn $behaviour() { super::$behaviour(super::TargetKind::Local).await })*
        }
        mod docker {
            $(#[tokio::test] async fn $behaviour() { super::$behaviour(super::TargetKind::Docker).await })*
        }
        mod kubernetes_fake_api {
            $(#[tokio::test] async fn $behaviour() { super::$behaviour(super::TargetKind::KubernetesFakeApi).await })*
        }
    };
}

on_every_target!(
    a_folder_deploys_live_through_the_edge_and_redeploys_swap_without_a_failed_request,
    a_preview_is_promoted_into_production_and_rolled_back,
    a_changed_variable_reaches_the_next_release,
    a_changed_variable_with_restart_reaches_the_running_app_without_a_deploy,
    an_environment_scales_out_and_back_and_sleeps_at_zero_until_a_request,
    an_instance_killed_from_outside_is_replaced,
    the_apps_output_reaches_the_deployments_runtime_log,
    deleting_a_site_removes_everything_it_made_on_the_target,
);

fn deployment_id(out: &Value) -> String {
    out["deployment"]["id"].as_str().expect("a deployment id").to_string()
}

/// Creates site `name` from `app`'s folder and waits until it is live.
async fn create_live(server: &OnTarget, name: &str, app: &targets::App) -> String {
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(app.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    deployment_id(&out)
}

/// The error message of a refusal, which must name the target.
fn refusal_naming_the_target(server: &OnTarget, out: &Value) -> String {
    let message = out["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains(&format!("target '{}'", server.kind.name())),
        "the refusal names the target: {out}"
    );
    message
}

async fn running_instances(server: &OnTarget, site: &str) -> i64 {
    let (_, scaling) = server.get(&format!("/api/sites/{site}/scaling")).await;
    scaling["running_instances"].as_i64().unwrap_or(-1)
}

async fn a_folder_deploys_live_through_the_edge_and_redeploys_swap_without_a_failed_request(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let app = server.app("v0");
    create_live(&server, "steady", &app).await;
    assert_eq!(server.edge("steady.localhost", "/").await, (200, "v0".to_string()));

    // Two clients on loopback request the whole time; every request is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| load(&server, "steady.localhost", stop.clone()))
        .collect();
    for v in 1..=2 {
        app.set_text(&format!("v{v}"));
        let (_, out) = server.post("/api/sites/steady/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_no_request_failed(&stop, loops, 20).await;
    assert_eq!(server.edge("steady.localhost", "/").await, (200, "v2".to_string()));
}

async fn a_preview_is_promoted_into_production_and_rolled_back(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let caps = server.capabilities().await;
    let app = server.app("first");
    let first = create_live(&server, "hoist", &app).await;
    app.set_text("preview");
    let (status, out) = server
        .post(
            "/api/sites/hoist/environments",
            &json!({"name": "feature", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let preview = deployment_id(&out);
    assert_eq!(
        server.edge("feature--hoist.localhost", "/").await,
        (200, "preview".to_string())
    );
    let builds = || async {
        let (_, list) = server.get("/api/sites/hoist/deployments").await;
        list["deployments"].as_array().map_or(0, Vec::len)
    };
    let before = builds().await;

    let (status, out) = server
        .post("/api/sites/hoist/promote", &json!({"deployment_id": preview}))
        .await;
    if caps["promote_without_rebuild"] == "unsupported" {
        assert_eq!(status, 409, "{out}");
        let message = refusal_naming_the_target(&server, &out);
        assert!(message.contains("promote_without_rebuild"), "{out}");
        assert_eq!(server.edge("hoist.localhost", "/").await, (200, "first".to_string()));
        assert_eq!(builds().await, before, "nothing was started");
        return;
    }
    assert_eq!(status, 200, "{out}");
    let promoted = deployment_id(&out);
    assert_eq!(server.edge("hoist.localhost", "/").await, (200, "preview".to_string()));
    let log = server.deployment_log(&promoted, "build").await;
    assert!(log.contains(&format!("promoted from {preview}")), "{log}");
    assert!(log.contains("nothing rebuilt"), "{log}");

    let (status, out) = server.post("/api/sites/hoist/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["deployment"]["id"], first.as_str(), "{out}");
    assert_eq!(server.edge("hoist.localhost", "/").await, (200, "first".to_string()));
    assert_eq!(
        server.edge("feature--hoist.localhost", "/").await,
        (200, "preview".to_string()),
        "the preview keeps serving"
    );
}

async fn a_changed_variable_reaches_the_next_release(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let app = server.app("vars");
    let first = create_live(&server, "vars", &app).await;
    assert_eq!(
        server.edge("vars.localhost", "/env").await,
        (200, "(unset)".to_string())
    );

    let (status, out) = server
        .patch("/api/sites/vars/env", &json!({"vars": {"GREETING": "hello there"}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, out) = server.post("/api/sites/vars/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_ne!(deployment_id(&out), first, "a new release");
    assert_eq!(
        server.edge("vars.localhost", "/env").await,
        (200, "hello there".to_string())
    );
}

async fn a_changed_variable_with_restart_reaches_the_running_app_without_a_deploy(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let app = server.app("vars");
    let first = create_live(&server, "vars", &app).await;
    assert_eq!(
        server.edge("vars.localhost", "/env").await,
        (200, "(unset)".to_string())
    );

    let (status, out) = server
        .patch(
            "/api/sites/vars/env",
            &json!({"vars": {"GREETING": "hello at once"}, "restart": true}),
        )
        .await;
    assert_eq!(status, 200, "{out}\n{}", server.log());
    assert_eq!(out["restarted"], json!(["production"]), "{out}");
    eventually("the running app reads the new value", 60, async || {
        server.edge("vars.localhost", "/env").await == (200, "hello at once".to_string())
    })
    .await;
    let (_, list) = server.get("/api/sites/vars/deployments").await;
    let ids: Vec<&str> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, [first.as_str()], "no deploy");
}

async fn an_environment_scales_out_and_back_and_sleeps_at_zero_until_a_request(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let caps = server.capabilities().await;
    let app = server.app("many of us");
    create_live(&server, "tide", &app).await;
    eventually("one instance", 60, async || server.instances("tide", &app).len() == 1).await;

    let (status, out) = server
        .patch(
            "/api/sites/tide/scaling",
            &json!({"min_instances": 2, "max_instances": 2}),
        )
        .await;
    if caps["max_instances"].as_u64().unwrap_or(0) < 2 {
        assert_eq!(status, 400, "{out}");
        let message = refusal_naming_the_target(&server, &out);
        assert!(message.contains("max_instances"), "{out}");
        assert_eq!(server.instances("tide", &app).len(), 1, "nothing was started");
    } else {
        assert_eq!(status, 200, "{out}");
        eventually("two instances", 90, async || {
            server.instances("tide", &app).len() == 2 && running_instances(&server, "tide").await == 2
        })
        .await;
        for _ in 0..4 {
            assert_eq!(
                server.edge("tide.localhost", "/").await,
                (200, "many of us".to_string())
            );
        }
        let (status, out) = server
            .patch(
                "/api/sites/tide/scaling",
                &json!({"min_instances": 1, "max_instances": 1}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        eventually("back to one instance", 90, async || {
            server.instances("tide", &app).len() == 1 && running_instances(&server, "tide").await == 1
        })
        .await;
    }

    let (status, out) = server
        .patch(
            "/api/sites/tide/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    if caps["scale_to_zero"] == "unsupported" {
        assert_eq!(status, 400, "{out}");
        let message = refusal_naming_the_target(&server, &out);
        assert!(message.contains("scale_to_zero"), "{out}");
        let (_, scaling) = server.get("/api/sites/tide/scaling").await;
        assert_ne!(scaling["min_instances"], 0, "nothing was stored: {scaling}");
        return;
    }
    assert_eq!(status, 200, "{out}");
    // No requests: the environment goes to zero instances.
    eventually("zero instances", 90, async || {
        server.instances("tide", &app).is_empty() && running_instances(&server, "tide").await == 0
    })
    .await;
    // The next request is held while an instance comes back, then answered.
    assert_eq!(
        server.edge("tide.localhost", "/").await,
        (200, "many of us".to_string()),
        "{}",
        server.log()
    );
    assert_eq!(server.instances("tide", &app).len(), 1, "one instance again");
}

async fn an_instance_killed_from_outside_is_replaced(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let app = server.app("phoenix");
    let id = create_live(&server, "phoenix", &app).await;
    eventually("one instance", 60, async || {
        server.instances("phoenix", &app).len() == 1
    })
    .await;
    let first = server.instances("phoenix", &app).remove(0);
    let noticed = server.kill_instance(&first);
    eventually("another instance serves", 90, async || {
        let now = server.instances("phoenix", &app);
        now.len() == 1 && now[0] != first && server.edge("phoenix.localhost", "/").await == (200, "phoenix".to_string())
    })
    .await;
    if let Some(line) = noticed {
        let log = server.deployment_log(&id, "runtime").await;
        assert!(log.contains(line), "the runtime log says why it was replaced: {log}");
    }
}

async fn the_apps_output_reaches_the_deployments_runtime_log(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let caps = server.capabilities().await;
    let app = server.app("talking");
    let id = create_live(&server, "chatter", &app).await;
    let (status, out) = server
        .get(&format!("/api/deployments/{id}/logs?kind=runtime&limit=1000"))
        .await;
    if caps["runtime_logs"] == false {
        assert_eq!(status, 409, "{out}");
        let message = refusal_naming_the_target(&server, &out);
        assert!(message.contains("runtime_logs"), "{out}");
        return;
    }
    assert_eq!(status, 200, "{out}");
    let started = format!(" of {} listening", app.marker);
    eventually("the app's first line in its runtime log", 60, async || {
        server.deployment_log(&id, "runtime").await.contains(&started)
    })
    .await;
}

async fn deleting_a_site_removes_everything_it_made_on_the_target(kind: TargetKind) {
    let server = OnTarget::start(kind).await;
    let app = server.app("short-lived");
    create_live(&server, "brief", &app).await;
    let (status, out) = server
        .post(
            "/api/sites/brief/environments",
            &json!({"name": "feature", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (_, list) = server.get("/api/sites/brief/deployments").await;
    let ids: Vec<String> = list["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| d["id"].as_str().expect("an id").to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(
        !server.leftovers("brief", &app, &ids).is_empty(),
        "the site has things on its target"
    );

    let (status, out) = server.delete("/api/sites/brief").await;
    assert_eq!(status, 200, "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = server.leftovers("brief", &app, &ids);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted site left on its target: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.edge("brief.localhost", "/").await.0, 404);
    assert_eq!(server.edge("feature--brief.localhost", "/").await.0, 404);
    assert_eq!(server.get("/api/sites/brief").await.0, 404);
}
