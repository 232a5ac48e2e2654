//! Log retention against a real SQLite database: lines are written through
//! [`crate::store::append_logs`] with the times a test needs (the clock is the `ts` a
//! line carries), and the totals are checked against what is actually stored.

use super::*;
use crate::store::{DeploymentRow, EnvironmentRow, NewLogLine, SiteRow, Store};
use crate::util::now_ms;

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn store_with_environment(dir: &tempfile::TempDir) -> Store {
    let store = Store::open_sqlite(&dir.path().join("berth.db")).await.expect("open");
    store.insert_org("org_1", "one").await.unwrap();
    store
        .insert_site(&SiteRow {
            id: "site_1".into(),
            org_id: "org_1".into(),
            name: "chatty".into(),
            source_kind: "upload".into(),
            source: None,
            branch: None,
            build_settings: "{}".into(),
            provider: "local".into(),
            status: "active".into(),
            created_at: now_ms(),
            previews_enabled: Default::default(),
            drain_seconds: None,
        })
        .await
        .unwrap();
    for (id, name) in [("env_prod", "production"), ("env_pre", "preview")] {
        store
            .insert_environment(&EnvironmentRow {
                id: id.into(),
                org_id: "org_1".into(),
                site_id: "site_1".into(),
                name: name.into(),
                branch: None,
                deployment_id: None,
            })
            .await
            .unwrap();
    }
    for (id, env) in [("dpl_old", "env_prod"), ("dpl_new", "env_prod"), ("dpl_pre", "env_pre")] {
        store
            .insert_deployment(&DeploymentRow {
                id: id.into(),
                org_id: "org_1".into(),
                site_id: "site_1".into(),
                environment_id: env.into(),
                status: "superseded".into(),
                source_kind: "upload".into(),
                source: None,
                git_ref: None,
                commit_sha: None,
                build_plan: None,
                error: None,
                created_by: None,
                created_at: now_ms(),
                started_at: None,
                finished_at: None,
                build_settings: None,
                overrides: None,
            })
            .await
            .unwrap();
    }
    store
}

fn lines(deployment: &str, kind: &'static str, n: usize, ts: i64) -> Vec<NewLogLine> {
    (0..n)
        .map(|i| NewLogLine {
            deployment_id: deployment.into(),
            kind,
            stream: "stdout",
            ts,
            line: format!("{deployment} {kind} line {i:04} {}", "x".repeat(36)),
            after_stop: false,
        })
        .collect()
}

/// (recorded total, sum of what is stored) of an environment.
async fn totals(store: &Store, environment_id: &str) -> (i64, i64) {
    let recorded: i64 =
        sqlx::query_scalar("SELECT COALESCE((SELECT bytes FROM log_usage WHERE environment_id = $1), 0)")
            .bind(environment_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(length(CAST(line AS BLOB)) + 256), 0) FROM deployment_logs \
         WHERE deployment_id IN (SELECT id FROM deployments WHERE environment_id = $1)",
    )
    .bind(environment_id)
    .fetch_one(store.pool())
    .await
    .unwrap();
    (recorded, stored)
}

async fn count(store: &Store, deployment: &str, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM deployment_logs WHERE deployment_id = $1 AND kind = $2")
        .bind(deployment)
        .bind(kind)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn lines_past_their_age_are_removed_and_leave_their_environments_total() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_environment(&dir).await;
    let now = now_ms();
    store
        .append_logs(&lines("dpl_old", "build", 30, now - 9 * DAY_MS))
        .await
        .unwrap();
    store
        .append_logs(&lines("dpl_pre", "runtime", 40, now - 8 * DAY_MS))
        .await
        .unwrap();
    store
        .append_logs(&lines("dpl_new", "runtime", 25, now - DAY_MS))
        .await
        .unwrap();
    store.append_logs(&lines("dpl_pre", "runtime", 5, now)).await.unwrap();

    // Seven days' retention, a few lines a statement: the caller loops until none go.
    let mut removed = 0;
    let mut statements = 0;
    loop {
        let n = store.expire_logs(now - 7 * DAY_MS, 8).await.unwrap();
        assert!(n <= 8, "one statement removed {n} lines, over its chunk");
        statements += 1;
        if n == 0 {
            break;
        }
        removed += n;
    }
    assert_eq!(removed, 70, "the 30 + 40 lines older than seven days");
    assert!(statements >= 70 / 8, "{statements} statements");
    assert_eq!(count(&store, "dpl_old", "build").await, 0);
    assert_eq!(count(&store, "dpl_new", "runtime").await, 25);
    assert_eq!(count(&store, "dpl_pre", "runtime").await, 5);
    for env in ["env_prod", "env_pre"] {
        let (recorded, stored) = totals(&store, env).await;
        assert_eq!(recorded, stored, "{env}'s total follows what is stored");
        assert!(stored > 0);
    }
}

#[tokio::test]
async fn an_environment_over_its_size_loses_its_oldest_runtime_lines_first_across_its_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_environment(&dir).await;
    let now = now_ms();
    store.append_logs(&lines("dpl_old", "build", 10, now)).await.unwrap();
    store.append_logs(&lines("dpl_old", "runtime", 100, now)).await.unwrap();
    store.append_logs(&lines("dpl_new", "build", 10, now)).await.unwrap();
    let totals_back = store.append_logs(&lines("dpl_new", "runtime", 100, now)).await.unwrap();
    store.append_logs(&lines("dpl_pre", "runtime", 50, now)).await.unwrap();
    let line = line_cost(&lines("dpl_old", "runtime", 1, now)[0].line);
    let (recorded, stored) = totals(&store, "env_prod").await;
    assert_eq!(recorded, stored);
    assert_eq!(
        totals_back,
        vec![("env_prod".to_string(), recorded)],
        "append returns the new total"
    );

    // 220 lines stored (build lines cost a little less); down to 110 runtime lines' worth:
    // the superseded deployment's runtime lines go first (all 100 of them, then 10 of the
    // new one's), in steps of at most 40 lines; builds stay.
    let target = 110 * line;
    let mut steps = 0;
    loop {
        let t = store.trim_environment_logs("env_prod", target, 40).await.unwrap();
        assert!(t.lines <= 40, "one step removed {} lines", t.lines);
        steps += 1;
        if !t.more {
            assert!(t.bytes <= target);
            break;
        }
    }
    assert_eq!(steps, 3);
    assert_eq!(count(&store, "dpl_old", "runtime").await, 0);
    assert_eq!(count(&store, "dpl_new", "runtime").await, 90);
    assert_eq!(
        count(&store, "dpl_old", "build").await,
        10,
        "a build's log stays readable"
    );
    assert_eq!(count(&store, "dpl_new", "build").await, 10);
    let (recorded, stored) = totals(&store, "env_prod").await;
    assert_eq!(recorded, stored);
    assert_eq!(
        count(&store, "dpl_pre", "runtime").await,
        50,
        "another environment is not touched"
    );

    // Only once no runtime line is left do build lines go, oldest first.
    while store
        .trim_environment_logs("env_prod", 15 * line, 1000)
        .await
        .unwrap()
        .more
    {}
    assert_eq!(count(&store, "dpl_new", "runtime").await, 0);
    assert_eq!(count(&store, "dpl_old", "build").await, 5);
    assert_eq!(count(&store, "dpl_new", "build").await, 10);
    let build_line = line_cost(&lines("dpl_old", "build", 1, now)[0].line);
    let (recorded, stored) = totals(&store, "env_prod").await;
    assert_eq!((recorded, stored), (15 * build_line, 15 * build_line));
    let over = |bytes| {
        let store = store.clone();
        async move { store.environments_over(bytes).await.unwrap() }
    };
    assert!(!over(15 * build_line).await.contains(&"env_prod".to_string()));
    assert!(over(15 * build_line - 1).await.contains(&"env_prod".to_string()));
}

#[tokio::test]
async fn removing_or_moving_a_deployment_or_environment_keeps_the_totals_true() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_environment(&dir).await;
    let now = now_ms();
    for d in ["dpl_old", "dpl_new", "dpl_pre"] {
        store.append_logs(&lines(d, "runtime", 20, now)).await.unwrap();
    }
    // Pruning a deployment takes its lines' cost off its environment.
    assert!(store.delete_deployment("dpl_old").await.unwrap());
    let (recorded, stored) = totals(&store, "env_prod").await;
    assert_eq!(recorded, stored);
    assert_eq!(count(&store, "dpl_old", "runtime").await, 0);

    // A deployment moved to another environment takes its lines along.
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query("UPDATE environments SET deployment_id = 'dpl_new' WHERE id = 'env_pre'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let kept = crate::store::rehome_deployments(&mut conn, "env_prod").await.unwrap();
    assert!(kept.is_empty(), "{kept:?}");
    drop(conn);
    assert_eq!(totals(&store, "env_prod").await, (0, 0));
    let (recorded, stored) = totals(&store, "env_pre").await;
    assert_eq!(recorded, stored);
    let moved: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deployment_logs WHERE environment_id = 'env_pre' AND deployment_id = 'dpl_new'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(moved, 20);

    // Deleting the site leaves no line and no total behind.
    store.delete_site_rows("site_1").await.unwrap();
    let left: (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM deployment_logs), (SELECT COUNT(*) FROM log_usage)")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(left, (0, 0));
}

#[tokio::test]
async fn retention_statements_read_through_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_environment(&dir).await;
    let plan = |sql: &'static str| {
        let store = store.clone();
        async move {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
        }
    };
    for (sql, index) in [
        (
            "SELECT id, bytes FROM deployment_logs WHERE environment_id = 'e' AND kind = 'runtime' ORDER BY id LIMIT 10",
            "USING COVERING INDEX deployment_logs_by_environment",
        ),
        (
            "DELETE FROM deployment_logs WHERE environment_id = 'e' AND kind = 'runtime' AND id <= 10",
            "INDEX deployment_logs_by_environment",
        ),
        (
            "DELETE FROM deployment_logs WHERE id >= 1 AND id < 10 AND ts < 5 RETURNING environment_id, bytes",
            "INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
        ),
        ("SELECT MIN(id) FROM deployment_logs", "SEARCH deployment_logs"),
    ] {
        let plan = plan(sql).await;
        assert!(plan.contains(index), "{sql}\n  plan: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
    }
}
