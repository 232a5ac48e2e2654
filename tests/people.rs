//! Managing people and agents against the real server: the per-org "freeze agents"
//! switch (every OAuth token stops at once, new consents are refused until unfrozen,
//! admins only) and connected applications (listed and revoked over REST and MCP, a
//! member's own, an admin's all).

mod common;

use common::oauth_flow::*;
use common::*;
use serde_json::{Value, json};

/// A server with a developer and an admin who sign in with a password, and a service key
/// with the role developer (its token).
async fn setup() -> (TestServer, String) {
    let server = TestServer::start().await;
    for (email, role) in [("dev@a.test", "developer"), ("adm@a.test", "admin")] {
        let (status, out) = rest(
            &server,
            "POST",
            "/api/members",
            json!({ "email": email, "role": role, "password": PASSWORD }),
        )
        .await;
        assert_eq!(status, 201, "{out}");
    }
    let (status, out) = rest(
        &server,
        "POST",
        "/api/keys",
        json!({ "name": "dev-ci", "kind": "service", "role": "developer" }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let dev_key = out["token"].as_str().unwrap().to_string();
    (server, dev_key)
}

/// A REST call with a bearer token: (status, answer).
async fn call_as(server: &TestServer, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let req = match method {
        "POST" => server.http.post(server.api(path)).json(&body),
        "DELETE" => server.http.delete(server.api(path)),
        _ => server.http.get(server.api(path)),
    };
    let r = req.bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Refreshes a token: (status, answer).
async fn refresh(server: &TestServer, client_id: &str, refresh_token: &str) -> (u16, Value) {
    exchange(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
    )
    .await
}

#[tokio::test]
async fn freezing_agents_stops_every_oauth_token_and_refuses_new_consents_until_unfrozen() {
    let (server, dev_key) = setup().await;
    let dev = login(&server, "dev@a.test").await;
    let adm = login(&server, "adm@a.test").await;
    let (dev_client, dev_access, dev_refresh) = connect(&server, &dev).await;
    let (_, adm_access, _) = connect(&server, &adm).await;
    assert_eq!(mcp_status(&server, &dev_access).await, 200);
    assert_eq!(mcp_status(&server, &adm_access).await, 200);

    // A developer cannot freeze (nor unfreeze), and nothing changes.
    let (status, out) = call_as(
        &server,
        &dev_key,
        "POST",
        "/api/agents/freeze",
        json!({ "frozen": true }),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("admin"), "{out}");
    assert_eq!(mcp_status(&server, &dev_access).await, 200);
    // Bad input is refused naming the field.
    let (status, out) = rest(&server, "POST", "/api/agents/freeze", json!({ "frozen": "yes" })).await;
    assert_eq!(status, 400, "{out}");

    // An admin freezes: both grants go at once, with every token under them.
    let (status, out) = rest(&server, "POST", "/api/agents/freeze", json!({ "frozen": true })).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["frozen"], true, "{out}");
    assert_eq!(out["revoked_grants"], 2, "{out}");
    assert_eq!(mcp_status(&server, &dev_access).await, 401);
    assert_eq!(mcp_status(&server, &adm_access).await, 401);
    let (status, out) = refresh(&server, &dev_client, &dev_refresh).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"], "invalid_grant", "{out}");
    let (status, out) = rest(&server, "GET", "/api/connected-apps", Value::Null).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["frozen"], true, "{out}");
    assert_eq!(out["apps"], json!([]), "{out}");

    // While frozen a new consent is refused on berth's page (no code reaches the client).
    let (status, client) = register(&server, &["http://127.0.0.1/callback"]).await;
    assert_eq!(status, 201, "{client}");
    let query = authorize_query(
        client["client_id"].as_str().unwrap(),
        "http://127.0.0.1:4567/callback",
        &[],
    );
    let resp = consent_post(
        &server,
        &dev,
        &query,
        &[("sites", "all"), ("grant_scope", "sites:read")],
        "Test Agent",
        "unverified (registered dynamically)",
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("agents are frozen in this org"), "{page}");
    let (_, out) = rest(&server, "GET", "/api/connected-apps", Value::Null).await;
    assert_eq!(out["apps"], json!([]), "no grant was stored: {out}");

    // Unfrozen, applications connect again; the frozen-out tokens stay revoked.
    let (status, out) = call_as(
        &server,
        &dev_key,
        "POST",
        "/api/agents/freeze",
        json!({ "frozen": false }),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    let (status, out) = rest(&server, "POST", "/api/agents/freeze", json!({ "frozen": false })).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["frozen"], false, "{out}");
    let (_, new_access, _) = connect(&server, &dev).await;
    assert_eq!(mcp_status(&server, &new_access).await, 200);
    assert_eq!(mcp_status(&server, &dev_access).await, 401);

    // The CLI does the same.
    let out = server.cli(&["agents", "freeze"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("agents are frozen: 1 connected application(s) revoked"),
        "{text}"
    );
    assert_eq!(mcp_status(&server, &new_access).await, 401);
    let out = server.cli(&["agents", "unfreeze"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn connected_apps_are_listed_and_revoked_by_their_person_or_an_admin() {
    let (server, dev_key) = setup().await;
    let dev = login(&server, "dev@a.test").await;
    let adm = login(&server, "adm@a.test").await;
    let (_, dev_one, _) = connect(&server, &dev).await;
    let (_, dev_two, _) = connect(&server, &dev).await;
    let (_, adm_access, _) = connect(&server, &adm).await;
    assert_eq!(mcp_status(&server, &dev_one).await, 200);

    // An admin sees every grant of the org, with what it was given.
    let (status, out) = rest(&server, "GET", "/api/connected-apps", Value::Null).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["frozen"], false, "{out}");
    let apps = out["apps"].as_array().unwrap().clone();
    assert_eq!(apps.len(), 3, "{out}");
    let devs: Vec<&Value> = apps.iter().filter(|a| a["user"] == "dev@a.test").collect();
    assert_eq!(devs.len(), 2, "{out}");
    for app in &apps {
        assert_eq!(app["client_name"], "Test Agent", "{app}");
        assert_eq!(app["verified_host"], "unverified", "{app}");
        assert_eq!(app["scopes"], json!(["sites:read", "logs:read"]), "{app}");
        assert_eq!(app["sites"], Value::Null, "{app}");
        assert_eq!(app["production"], false, "{app}");
        assert!(app["created_at"].as_str().unwrap().ends_with('Z'), "{app}");
    }
    assert!(
        devs.iter().any(|a| a["last_used_at"].is_string()),
        "the used grant shows its last use: {out}"
    );

    // The developer, through one of their agents, sees only their own two.
    let agent = mcp(&server, &dev_one).await;
    let r = call(&agent, "HOSTING_LIST_CONNECTED_APPS", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let listed = r.structured_content.clone().unwrap();
    let mine = listed["apps"].as_array().unwrap();
    assert_eq!(mine.len(), 2, "{listed}");
    assert!(mine.iter().all(|a| a["user"] == "dev@a.test"), "{listed}");
    let adm_grant = apps.iter().find(|a| a["user"] == "adm@a.test").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone else's grant is not found to them, and stays.
    let r = call(&agent, "HOSTING_REVOKE_CONNECTED_APP", json!({ "app_id": adm_grant })).await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert_eq!(
        r.structured_content.clone().unwrap()["error"]["code"],
        "not_found",
        "{r:?}"
    );
    assert_eq!(mcp_status(&server, &adm_access).await, 200);
    // A developer's service key (no person) may not list the org's grants nor revoke one.
    let (status, out) = call_as(&server, &dev_key, "GET", "/api/connected-apps", Value::Null).await;
    assert_eq!(status, 403, "{out}");
    let (status, out) = call_as(
        &server,
        &dev_key,
        "DELETE",
        &format!("/api/connected-apps/{adm_grant}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(mcp_status(&server, &adm_access).await, 200);

    // An admin revokes one of the developer's: that one stops, the other goes on.
    let one_id = devs.iter().find(|a| a["last_used_at"].is_string()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, out) = call_as(
        &server,
        KEY,
        "DELETE",
        &format!("/api/connected-apps/{one_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], one_id.as_str(), "{out}");
    assert_eq!(mcp_status(&server, &dev_one).await, 401);
    assert_eq!(mcp_status(&server, &dev_two).await, 200);
    // Revoked is gone: a second revoke is not found, and the list no longer shows it.
    let (status, out) = call_as(
        &server,
        KEY,
        "DELETE",
        &format!("/api/connected-apps/{one_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HOSTING_LIST_CONNECTED_APPS"),
        "{out}"
    );
    let (_, out) = rest(&server, "GET", "/api/connected-apps", Value::Null).await;
    assert_eq!(out["apps"].as_array().unwrap().len(), 2, "{out}");

    // The developer revokes their other one through that agent itself.
    let two_id = out["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["user"] == "dev@a.test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let agent_two = mcp(&server, &dev_two).await;
    let r = call(&agent_two, "HOSTING_REVOKE_CONNECTED_APP", json!({ "app_id": two_id })).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert_eq!(mcp_status(&server, &dev_two).await, 401);

    // The CLI lists what is left.
    let out = server.cli(&["agents", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("adm@a.test") && !text.contains("dev@a.test"), "{text}");
}

#[tokio::test]
async fn expired_oauth_codes_and_tokens_are_removed_as_new_ones_are_issued() {
    let (server, _) = setup().await;
    let cookie = login(&server, "adm@a.test").await;
    let (_, access, _) = connect(&server, &cookie).await;
    assert_eq!(mcp_status(&server, &access).await, 200);
    let db = common::open_db(server.data.path()).await;
    let tokens = async || -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM oauth_tokens")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    // 150 expired tokens and codes, as months of refreshes would leave behind.
    let grant: String = sqlx::query_scalar("SELECT grant_id FROM oauth_tokens LIMIT 1")
        .fetch_one(&db)
        .await
        .unwrap();
    for i in 0..150 {
        sqlx::query("INSERT INTO oauth_tokens (token_hmac, grant_id, kind, created_at, expires_at) VALUES ($1, $2, 'refresh', 0, 1)")
            .bind(format!("old-token-{i}"))
            .bind(&grant)
            .execute(&db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO oauth_codes (code_hmac, grant_id, redirect_uri, code_challenge, expires_at) VALUES ($1, $2, 'x', 'x', 1)")
            .bind(format!("old-code-{i}"))
            .bind(&grant)
            .execute(&db)
            .await
            .unwrap();
    }
    let tokens_before = tokens().await;
    // Each issuance removes a batch of 100 of each; the live ones stay.
    connect(&server, &cookie).await;
    assert_eq!(tokens().await, tokens_before + 2 - 100);
    connect(&server, &cookie).await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_tokens WHERE expires_at < 1000")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(left, 0, "expired tokens left");
    let old_codes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_codes WHERE expires_at < 1000")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(old_codes, 0, "expired codes left");
    assert_eq!(mcp_status(&server, &access).await, 200, "a live token was removed");
}
