//! Guessing credentials backs off: after a burst of failures from one address, dashboard
//! logins, API keys and git tokens are refused with 429 and `Retry-After` before they are
//! checked, a correct one included.

mod common;

use common::*;
use serde_json::json;

/// A dashboard login attempt with `key`; returns the status and `Retry-After`.
async fn login(server: &TestServer, key: &str) -> (u16, Option<String>) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(server.api("/login"))
        .header("cookie", "berth_login_csrf=csrf0123456789")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("key", key), ("_csrf", "csrf0123456789"), ("next", "/sites")]).unwrap())
        .send()
        .await
        .unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry)
}

#[tokio::test]
async fn a_burst_of_wrong_logins_locks_the_address_out() {
    let server = TestServer::start().await;
    assert_eq!(login(&server, KEY).await.0, 303, "the right key logs in");
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(login(&server, &format!("berth_wrong_guess_{i:04}")).await);
    }
    assert_eq!(statuses[0].0, 401, "{statuses:?}");
    let throttled: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(throttled.len() >= 15, "{statuses:?}");
    assert!(statuses[29].0 == 429, "{statuses:?}");
    let retry: u64 = statuses[29].1.as_deref().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // The right key is not even checked while the address is blocked.
    assert_eq!(login(&server, KEY).await.0, 429);
    // API keys from the same address too.
    let (status, out) = server.get("/api/sites").await;
    assert_eq!(status, 429, "{out}");
    assert_eq!(out["error"]["code"], "rate_limited", "{out}");
}

#[tokio::test]
async fn a_burst_of_wrong_api_keys_is_throttled() {
    let server = TestServer::start().await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = server
            .http
            .get(server.api("/api/sites"))
            .bearer_auth(format!("berth_wrong_guess_{i:04}"))
            .send()
            .await
            .unwrap();
        statuses.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
    }
    assert_eq!(statuses[0], (401, false), "{statuses:?}");
    assert_eq!(statuses[29], (429, true), "{statuses:?}");
    let r = server
        .http
        .post(server.api("/mcp"))
        .bearer_auth(KEY)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429, "MCP shares the API's backoff");
}

#[tokio::test]
async fn a_burst_of_wrong_git_tokens_is_throttled() {
    let server = TestServer::start().await;
    let (status, out) = server.post("/api/repos", &json!({"name": "guarded"})).await;
    assert_eq!(status, 201, "{out}");
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = server
            .http
            .get(server.api("/git/default/guarded.git/info/refs?service=git-upload-pack"))
            .basic_auth("x", Some(format!("wrong-token-{i:04}")))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[0], 403, "{statuses:?}");
    assert_eq!(statuses[29], 429, "{statuses:?}");
}
