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
    Store::open_sqlite(&data.join("berth.db")).await.unwrap()
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
    let store = other_connection(data.path()).await;
    let lease_until = now_ms() + 8_000;
    sqlx::query(
        "INSERT INTO deployments (id, org_id, site_id, environment_id, status, source_kind, source, created_by, created_at, build_settings) \
         SELECT 'dpl_held', org_id, site_id, environment_id, 'queued', source_kind, source, created_by, ?, build_settings FROM deployments LIMIT 1",
    )
    .bind(now_ms())
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (org_id, kind, payload, status, attempts, max_attempts, run_at, lease_until, lease_owner, idempotency_key, fair_key, created_at, updated_at) \
         SELECT org_id, 'deploy', '{\"deployment_id\":\"dpl_held\"}', 'running', 1, 3, ?, ?, 'another-replica', 'deploy:dpl_held', site_id, ?, ? \
         FROM deployments WHERE id = 'dpl_held'",
    )
    .bind(now_ms())
    .bind(lease_until)
    .bind(now_ms())
    .bind(now_ms())
    .execute(store.pool())
    .await
    .unwrap();
    store.pool().close().await;

    let server = TestServer::start_in(data, &[]).await;
    // While the other process's lease is live, this server neither requeues nor runs it.
    while now_ms() < lease_until - 1_000 {
        let (_, d) = server.get("/api/deployments/dpl_held").await;
        assert_eq!(
            d["status"], "queued",
            "a live lease of another process was taken: {d}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once it expires, the job is taken over and runs (once).
    let d = server.wait_deployment("dpl_held").await;
    assert_eq!(d["status"], "live", "{d}\n{}", server.log());
    let store = other_connection(server.data.path()).await;
    let (status, attempts, owner): (String, i64, Option<String>) =
        sqlx::query_as("SELECT status, attempts, lease_owner FROM jobs WHERE idempotency_key = 'deploy:dpl_held'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), attempts, owner),
        ("done", 2, None),
        "the other replica's attempt and this server's one"
    );
}
