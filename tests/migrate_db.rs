//! `berth migrate-db` against real databases: a server's SQLite installation (a deployed
//! site with env vars, secrets, a domain, keys, audit and logs) is copied into a fresh
//! Postgres database on the test cluster, and a server started on that database answers as
//! the old one did. Needs `BERTH_TEST_POSTGRES_URL` (scripts/postgres-test-env.sh).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::{TestServer, app, s};
use serde_json::{Value, json};

/// A password put into the target URL; the cluster trusts loopback, so it is accepted and
/// ignored, and it must never be printed.
const PASSWORD: &str = "pw-that-must-not-show-7f3a";

fn cluster() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL").expect(
        "tests/migrate_db.rs needs BERTH_TEST_POSTGRES_URL naming a throwaway Postgres \
         (scripts/postgres-test-env.sh prints it)",
    )
}

/// A fresh database on the test cluster, dropped with the value.
struct Database {
    name: String,
}

impl Database {
    fn create(tag: &str) -> Self {
        let name = format!("migrate_{tag}_{}", std::process::id());
        let db = Database { name };
        db.psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name));
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .args(["-q", "-v", "ON_ERROR_STOP=1", &cluster(), "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Its URL, with a password.
    fn url(&self) -> String {
        let base = url::Url::parse(&cluster()).expect("cluster URL");
        let mut u = base.clone();
        u.set_password(Some(PASSWORD)).expect("a URL with a host");
        u.set_path(&format!("/{}", self.name));
        u.to_string()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &cluster(),
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn migrate(from: &str, to: &str) -> Output {
    // The URLs go through the environment, as the README advises for passwords.
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["migrate-db"])
        .env("BERTH_MIGRATE_FROM", from)
        .env("BERTH_MIGRATE_TO", to)
        .output()
        .expect("run berth migrate-db")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Rows per berth table of a database, read from its own catalog.
async fn counts(url: &str) -> BTreeMap<String, i64> {
    let store = berth::store::Store::open(url).await.expect("open store");
    let db = common::open_db_url(url).await;
    let list = match store.backend() {
        berth::store::Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        berth::store::Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
    };
    let names: Vec<String> = sqlx::query_scalar(list).fetch_all(&db).await.unwrap();
    let mut counts = BTreeMap::new();
    for name in names.into_iter().filter(|n| n != "_sqlx_migrations") {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{name}\"")))
            .fetch_one(&db)
            .await
            .unwrap();
        counts.insert(name, n);
    }
    db.close().await;
    store.close().await;
    counts
}

/// The rows triggers keep (sites per org, log bytes per environment), which a copy must
/// carry over as they are rather than count again.
async fn derived(url: &str) -> Vec<(String, i64)> {
    let store = berth::store::Store::open(url).await.expect("open store");
    let db = common::open_db_url(url).await;
    let rows = sqlx::query_as(
        "SELECT 'sites ' || org_id, sites FROM org_site_counts \
         UNION ALL SELECT 'log ' || environment_id, bytes FROM log_usage ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    store.close().await;
    rows
}

async fn as_key(server: &TestServer, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let req = match method {
        "POST" => server.http.post(server.api(path)).json(&body),
        "PATCH" => server.http.patch(server.api(path)).json(&body),
        _ => server.http.get(server.api(path)),
    };
    let r = req.bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// What a client sees of the installation: the answers that must survive the move.
async fn view(server: &TestServer, service_key: &str) -> Value {
    let (_, sites) = as_key(server, service_key, "GET", "/api/sites", Value::Null).await;
    let (_, env) = server.get("/api/sites/shop/env?reveal=true").await;
    let (_, mut domains) = server.get("/api/sites/shop/domains").await;
    // The URL names the edge's port, which each start picks anew.
    for d in domains["domains"].as_array_mut().unwrap_or_else(|| panic!("domains")) {
        d.as_object_mut().unwrap().remove("url");
    }
    let (_, deployments) = server.get("/api/sites/shop/deployments").await;
    let names = |v: &Value, key: &str, field: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {v}"))
            .iter()
            .map(|x| x[field].as_str().unwrap_or_default().to_string())
            .collect()
    };
    json!({
        "sites": names(&sites, "sites", "name"),
        "env": env["vars"],
        "domains": domains,
        "deployments": names(&deployments, "deployments", "id"),
    })
}

#[tokio::test]
async fn a_sqlite_installation_moves_to_postgres_and_serves_the_same() {
    let data = common::data_dir();
    let sqlite_url = format!("sqlite://{}/berth.db", s(data.path()));
    let on_sqlite = [("BERTH_DATABASE_URL", sqlite_url.as_str())];
    let server = TestServer::start_in(data, &on_sqlite).await;

    // Real state: a deployed site with build logs, env vars (one a secret), a domain, a
    // second key, and the audit entries all of it wrote.
    let dir = app(&[("index.html", "moved intact")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "shop", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (status, out) = server
        .patch(
            "/api/sites/shop/env",
            &json!({"vars": {"API_TOKEN": "tok-sealed-secret", "MODE": "prod"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = server
        .post("/api/sites/shop/domains", &json!({"domain": "www.shop-example.com"}))
        .await;
    assert!(status == 200 || status == 201, "{out}");
    let (status, out) = server
        .post(
            "/api/keys",
            &json!({"name": "ci", "kind": "service", "role": "developer"}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let ci = out["token"].as_str().unwrap().to_string();
    let before = view(&server, &ci).await;
    assert_eq!(before["env"]["API_TOKEN"]["value"], "tok-sealed-secret", "{before}");
    let data = server.stop();

    let source = counts(&sqlite_url).await;
    for table in [
        "orgs",
        "api_keys",
        "sites",
        "deployments",
        "deployment_logs",
        "domains",
        "audit_log",
    ] {
        assert!(
            source.get(table).copied().unwrap_or(0) > 0,
            "no rows in {table}: {source:?}"
        );
    }

    let target = Database::create("full");
    let out = migrate(&sqlite_url, &target.url());
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains(PASSWORD), "the password was printed: {printed}");
    assert!(printed.contains("***"), "the target is named, redacted: {printed}");
    // Every table is reported with the source's count, and the target holds exactly that.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (table, rows) in &source {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [table.as_str(), &rows.to_string()]),
            "{table} {rows} not reported: {stdout}"
        );
    }
    assert_eq!(counts(&target.url()).await, source);
    let kept = derived(&sqlite_url).await;
    assert!(kept.iter().any(|(k, n)| k.starts_with("sites ") && *n == 1), "{kept:?}");
    assert_eq!(derived(&target.url()).await, kept);

    // The same data dir (so the same master key) on the Postgres database.
    let pg_url = target.url();
    let on_postgres = [("BERTH_DATABASE_URL", pg_url.as_str())];
    let server = TestServer::start_in(data, &on_postgres).await;
    assert_eq!(view(&server, &ci).await, before, "{}", server.log());
    assert_eq!(
        server.edge("shop.localhost", "/").await,
        (200, "moved intact".to_string()),
        "{}",
        server.log()
    );
    // New rows get ids past the copied ones: a deploy writes logs, events and audit.
    let (status, out) = server.post("/api/sites/shop/deploy", &json!({"wait": true})).await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let _data = server.stop();

    // A second copy into the now non-empty target is refused and changes nothing.
    let filled = counts(&target.url()).await;
    let out = migrate(&sqlite_url, &target.url());
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("not empty") && printed.contains("CREATE DATABASE"),
        "{printed}"
    );
    assert!(!printed.contains(PASSWORD), "the password was printed: {printed}");
    assert_eq!(counts(&target.url()).await, filled);

    // And back: Postgres into a new SQLite file, every row.
    let back_dir = common::data_dir();
    let back = format!("sqlite://{}/berth.db", s(back_dir.path()));
    let out = migrate(&target.url(), &back);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(PASSWORD),
        "the password was printed: {}",
        text(&out)
    );
    assert_eq!(counts(&back).await, filled);
}

#[tokio::test]
async fn bad_pairs_of_urls_are_refused_without_showing_a_password() {
    let dir = common::data_dir();
    let sqlite_url = format!("sqlite://{}/berth.db", s(dir.path()));
    let target = Database::create("bad");

    // A missing source file is not created.
    let out = migrate(&sqlite_url, &target.url());
    assert!(!out.status.success());
    assert!(text(&out).contains("no SQLite database"), "{}", text(&out));
    assert!(!dir.path().join("berth.db").exists());

    berth::store::Store::open(&sqlite_url).await.unwrap().close().await;
    for (from, to, says) in [
        (target.url(), target.url(), "same database"),
        (sqlite_url.clone(), sqlite_url.clone(), "same database"),
        (
            sqlite_url.clone(),
            "mysql://root:pw-that-must-not-show-7f3a@h/db".into(),
            "sqlite:// or postgres://",
        ),
    ] {
        let out = migrate(&from, &to);
        let printed = text(&out);
        assert!(!out.status.success(), "{printed}");
        assert!(printed.contains(says), "{printed}");
        assert!(!printed.contains(PASSWORD), "the password was printed: {printed}");
    }

    // A source written by a newer berth is refused before anything is copied.
    let store = berth::store::Store::open(&sqlite_url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (9999, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0)",
    )
    .execute(&common::open_db_url(&sqlite_url).await)
    .await
    .unwrap();
    store.close().await;
    let out = migrate(&sqlite_url, &target.url());
    assert!(!out.status.success());
    assert!(text(&out).contains("newer berth (migration 9999"), "{}", text(&out));
    assert!(counts(&target.url()).await.values().all(|n| *n == 0));
}

#[tokio::test]
async fn berth_backup_refuses_a_postgres_database_and_names_pg_dump() {
    let data = common::data_dir();
    // A stale SQLite file from before a move must not be taken for the installation.
    berth::store::Store::open(&format!("sqlite://{}/berth.db", s(data.path())))
        .await
        .unwrap()
        .close()
        .await;
    let out_file = data.path().join("backup.db");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["backup", "--data", s(data.path()), "--out", s(&out_file)])
        .env(
            "BERTH_DATABASE_URL",
            format!("postgres://berth:{PASSWORD}@127.0.0.1:1/berth"),
        )
        .output()
        .expect("run berth backup");
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("pg_dump"), "{printed}");
    assert!(!printed.contains(PASSWORD), "the password was printed: {printed}");
    assert!(!out_file.exists());
}

#[tokio::test]
async fn a_copy_that_fails_midway_leaves_the_target_empty() {
    let dir = common::data_dir();
    let sqlite_url = format!("sqlite://{}/berth.db", s(dir.path()));
    let store = berth::store::Store::open(&sqlite_url).await.unwrap();
    store.insert_org("org_1", "acme").await.unwrap();
    // SQLite keeps what it is given: a key row whose time is text, which Postgres' BIGINT
    // column cannot take. `orgs` is copied before `api_keys`.
    store
        .insert_api_key("key_1", "org_1", "ci", "pfx", "hash", "admin")
        .await
        .unwrap();
    sqlx::query("UPDATE api_keys SET created_at = 'yesterday'")
        .execute(&common::open_db_url(&sqlite_url).await)
        .await
        .unwrap();
    store.close().await;

    let target = Database::create("midway");
    let out = migrate(&sqlite_url, &target.url());
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("api_keys.created_at"), "{printed}");
    assert!(
        printed.contains("copied orgs: 1 rows"),
        "orgs was written first: {printed}"
    );
    assert!(!printed.contains(PASSWORD), "the password was printed: {printed}");
    let left = counts(&target.url()).await;
    assert!(left.values().all(|n| *n == 0), "{left:?}");
}
