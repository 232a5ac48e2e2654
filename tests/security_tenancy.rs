//! Tenancy: a site's name is its hostname, so another org cannot take a name in use and
//! with it the traffic of someone else's site.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn another_org_cannot_take_a_hostname_in_use() {
    let server = TestServer::start().await;
    let a = app(&[("index.html", "org a's probe")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "probe", "repo": s(a.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(server.edge("probe.localhost", "/").await, (200, "org a's probe".into()));

    let other_key = "berth_org_b_admin_key_0123456789";
    add_org(&server, "org_b", "bee", other_key).await;
    let b = app(&[("index.html", "org b took over")]);
    let r = server
        .http
        .post(server.api("/api/sites"))
        .bearer_auth(other_key)
        .json(&json!({"name": "probe", "repo": s(b.path()), "wait": true}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let out: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 409, "{out}");
    let message = out["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("taken on this server") && message.contains("choose another"),
        "{out}"
    );
    // Nothing of org b's attempt exists, and org a's site is still what the host serves.
    let r = server
        .http
        .get(server.api("/api/sites"))
        .bearer_auth(other_key)
        .send()
        .await
        .unwrap();
    let sites: serde_json::Value = r.json().await.unwrap();
    assert_eq!(sites["sites"], json!([]), "{sites}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(server.edge("probe.localhost", "/").await, (200, "org a's probe".into()));
    let (_, site) = server.get("/api/sites/probe").await;
    assert_eq!(site["status"], "live", "{site}");

    // Org b can use a free name.
    let r = server
        .http
        .post(server.api("/api/sites"))
        .bearer_auth(other_key)
        .json(&json!({"name": "probe-b", "repo": s(b.path()), "wait": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(
        server.edge("probe-b.localhost", "/").await,
        (200, "org b took over".into())
    );
}
