//! Several processes on one database: a job another process holds is left alone while its
//! lease is live and taken over once it expires; the events table is the bus, so a change
//! written by another process wakes this server's waiters and streams.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth::store::Store;
use common::*;
use serde_json::json;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The database of a (stopped or running) server's data dir, opened as another process
/// on the same file would.
async fn other_connection(data: &std::path::Path) -> Store {
    common::open_store(data).await
}

#[tokio::test]
async fn a_job_another_process_holds_runs_only_once_its_lease_expires_and_then_once() {
    let server = TestServer::start().await;
    let site = app(&[("index.html", "taken over")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "held", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let data = server.stop();

    // As a second replica would: a queued deployment whose job it claimed, lease live for
    // a few more seconds.
    let db = common::open_db(data.path()).await;
    let lease_until = now_ms() + 8_000;
    sqlx::query(
        "INSERT INTO deployments (id, org_id, site_id, environment_id, status, source_kind, source, created_by, created_at, build_settings) \
         SELECT 'dpl_held', org_id, site_id, environment_id, 'queued', source_kind, source, created_by, $1, build_settings FROM deployments LIMIT 1",
    )
    .bind(now_ms())
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (org_id, kind, payload, status, attempts, max_attempts, run_at, lease_until, lease_owner, idempotency_key, fair_key, created_at, updated_at) \
         SELECT org_id, 'deploy', '{\"deployment_id\":\"dpl_held\"}', 'running', 1, 3, $1, $2, 'another-replica', 'deploy:dpl_held', site_id, $3, $4 \
         FROM deployments WHERE id = 'dpl_held'",
    )
    .bind(now_ms())
    .bind(lease_until)
    .bind(now_ms())
    .bind(now_ms())
    .execute(&db)
    .await
    .unwrap();
    db.close().await;

    let server = TestServer::start_in(data, &[]).await;
    // While the other process's lease is live, this server neither requeues nor runs it.
    while now_ms() < lease_until - 1_000 {
        let (_, d) = server.get("/api/deployments/dpl_held").await;
        assert_eq!(
            d["status"],
            "queued",
            "a live lease of another process was taken: {d}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once it expires, the job is taken over and runs (once).
    let d = server.wait_deployment("dpl_held").await;
    assert_eq!(d["status"], "live", "{d}\n{}", server.log());
    let db = common::open_db(server.data.path()).await;
    let (status, attempts, owner): (String, i64, Option<String>) =
        sqlx::query_as("SELECT status, attempts, lease_owner FROM jobs WHERE idempotency_key = 'deploy:dpl_held'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), attempts, owner),
        ("done", 2, None),
        "the other replica's attempt and this server's one"
    );
}

/// Reads a server-sent event stream until `until` holds for the `(id, kind)` pairs seen
/// (or 10 s pass); returns them.
async fn read_events(resp: reqwest::Response, until: impl Fn(&[(i64, String)]) -> bool) -> Vec<(i64, String)> {
    use futures::StreamExt;
    let mut body = resp.bytes_stream();
    let (mut text, mut seen) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(&seen) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("events in time; so far {seen:?}"))
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Whole events only: each ends with a blank line.
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            if let (Some(id), Some(kind)) = (field("id:"), field("event:")) {
                seen.push((id.parse().unwrap(), kind));
            }
        }
    }
    seen
}

#[tokio::test]
async fn events_another_process_writes_reach_this_servers_status_stream_which_resumes_by_cursor() {
    let server = TestServer::start().await;
    let site = app(&[("index.html", "streamed")]);
    // A deploy's wait still returns when it goes live, and it is served then.
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "streamed", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(
        server.edge("streamed.localhost", "/").await,
        (200, "streamed".to_string())
    );
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let stream = |resume: Option<i64>| {
        let mut req = server
            .http
            .get(server.api(&format!("/api/deployments/{id}/events/stream")))
            .bearer_auth(KEY);
        if let Some(cursor) = resume {
            req = req.header("Last-Event-ID", cursor.to_string());
        }
        req.send()
    };

    // From the start: this server's own changes, in order, up to live.
    let resp = stream(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let own = read_events(resp, |seen| seen.iter().any(|(_, k)| k == "deployment.live")).await;
    let kinds: Vec<&str> = own.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"deployment.queued"), "{own:?}");
    assert_eq!(kinds.last(), Some(&"deployment.live"), "{own:?}");
    assert!(own.windows(2).all(|w| w[0].0 < w[1].0), "cursors grow: {own:?}");

    // A stream open now gets what another process writes to the database.
    let resp = stream(own.last().map(|(c, _)| *c)).await.unwrap();
    let store = other_connection(server.data.path()).await;
    let data = json!({ "written_by": "another replica" });
    let mut written = Vec::new();
    for kind in ["deployment.crashed", "deployment.live", "deployment.superseded"] {
        written.push(store.record_event("org_default", kind, &id, &data).await.unwrap());
    }
    let started = std::time::Instant::now();
    let live = read_events(resp, |seen| seen.len() >= 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        live,
        vec![
            (written[0], "deployment.crashed".to_string()),
            (written[1], "deployment.live".to_string()),
            (written[2], "deployment.superseded".to_string()),
        ]
    );

    // A reconnect with the last id it saw resumes right after it: no gap, no repeat.
    let resp = stream(Some(written[0])).await.unwrap();
    let resumed = read_events(resp, |seen| seen.len() >= 2).await;
    assert_eq!(
        resumed.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        written[1..].to_vec()
    );

    let (status, _) = server.get("/api/deployments/dpl_missing/events/stream").await;
    assert_eq!(status, 404);
}
