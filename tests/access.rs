//! People, roles and scoped keys: the permission matrix over MCP for real (every role × a
//! representative tool per action × its own org's object vs another org's), and the rules
//! around keys and members: restriction to sites, expiry, revocation, a demotion that
//! narrows a member's personal keys at once, the last owner, password strength, and the
//! dashboard's password login.

mod common;

use common::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

/// The second org's admin key (written to the store the way bootstrap does).
const OTHER_KEY: &str = "berth_org_b_admin_key_0123456789";
/// A password long enough for the rules.
const PASSWORD: &str = "correct horse battery";

const ROLES: [&str; 5] = ["viewer", "deployer", "developer", "admin", "owner"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("a role")
}

async fn mcp(server: &TestServer, key: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(key.to_string());
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP client connects")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: &Value) -> CallToolResult {
    let params =
        CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default());
    client.call_tool(params).await.expect("tool call")
}

/// A REST call with a given key: (status, JSON).
async fn rest(server: &TestServer, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = server.api(path);
    let req = match method {
        "GET" => server.http.get(url),
        "POST" => server.http.post(url),
        "PATCH" => server.http.patch(url),
        "DELETE" => server.http.delete(url),
        other => panic!("method {other}"),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.bearer_auth(key).send().await.expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A service key of the caller's org with `role`, made with `maker`'s key; its token.
async fn service_key(server: &TestServer, maker: &str, role: &str, extra: Value) -> String {
    let mut body = json!({ "name": format!("{role} key"), "kind": "service", "role": role });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let (status, out) = rest(server, maker, "POST", "/api/keys", Some(body)).await;
    assert_eq!(status, 201, "{out}");
    let token = out["token"].as_str().expect("a token").to_string();
    assert!(
        token.starts_with("berth_sk_") && token.len() == "berth_sk_".len() + 64,
        "{token}"
    );
    token
}

/// A static site deployed and live in the org of `key`; its deployment id.
async fn live_site(server: &TestServer, key: &str, name: &str) -> String {
    let dir = app(&[("index.html", name)]);
    let (status, out) = rest(
        server,
        key,
        "POST",
        "/api/sites",
        Some(json!({ "name": name, "repo": s(dir.path()), "wait": true })),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    out["deployment"]["id"].as_str().unwrap().to_string()
}

/// A site that has not deployed yet (nothing to build).
async fn quiet_site(server: &TestServer, key: &str, name: &str) {
    let dir = app(&[("index.html", name)]);
    let (status, out) = rest(
        server,
        key,
        "POST",
        "/api/sites",
        Some(json!({ "name": name, "repo": s(dir.path()), "deploy": false })),
    )
    .await;
    assert_eq!(status, 201, "{out}");
}

async fn add_member(server: &TestServer, key: &str, email: &str, role: &str) {
    let (status, out) = rest(
        server,
        key,
        "POST",
        "/api/members",
        Some(json!({ "email": email, "role": role, "password": PASSWORD })),
    )
    .await;
    assert_eq!(status, 201, "{out}");
}

fn error_code(r: &CallToolResult) -> Option<String> {
    if r.is_error != Some(true) {
        return None;
    }
    let v = r.structured_content.clone().unwrap_or_default();
    Some(v["error"]["code"].as_str().unwrap_or("?").to_string())
}

/// One row of the matrix: an action, the weakest role allowed, a tool that takes it on
/// an object of the caller's org, and the same on another org's object (none for
/// provider settings, which belong to no object).
struct Row {
    action: &'static str,
    weakest: &'static str,
    tool: &'static str,
    own: fn(&Ids, &str) -> Value,
    foreign: Option<fn(&Ids) -> Value>,
}

/// What the rows refer to.
struct Ids {
    own_deployment: String,
    foreign_deployment: String,
}

fn matrix() -> Vec<Row> {
    vec![
        Row {
            action: "read sites",
            weakest: "viewer",
            tool: "HOSTING_GET_SITE",
            own: |_, _| json!({ "site": "alpha" }),
            foreign: Some(|_| json!({ "site": "beta" })),
        },
        Row {
            action: "read logs",
            weakest: "viewer",
            tool: "HOSTING_GET_DEPLOYMENT_LOGS",
            own: |ids, _| json!({ "deployment_id": ids.own_deployment }),
            foreign: Some(|ids| json!({ "deployment_id": ids.foreign_deployment })),
        },
        Row {
            // Cancelling a live deployment is refused as a conflict once the right is there.
            action: "deploy",
            weakest: "deployer",
            tool: "HOSTING_CANCEL_DEPLOYMENT",
            own: |ids, _| json!({ "deployment_id": ids.own_deployment }),
            foreign: Some(|ids| json!({ "deployment_id": ids.foreign_deployment })),
        },
        Row {
            action: "create or change sites",
            weakest: "developer",
            tool: "HOSTING_UPDATE_SITE",
            own: |_, _| json!({ "site": "alpha", "drain_seconds": 5 }),
            foreign: Some(|_| json!({ "site": "beta", "drain_seconds": 5 })),
        },
        Row {
            action: "set env vars",
            weakest: "developer",
            tool: "HOSTING_SET_ENV_VARS",
            own: |_, role| json!({ "site": "alpha", "environment": "preview", "vars": { format!("SET_BY_{}", role.to_uppercase()): "1" } }),
            foreign: Some(|_| json!({ "site": "beta", "environment": "preview", "vars": { "X": "1" } })),
        },
        Row {
            // A resource changes what its site's apps see, like env vars (attaching one to
            // a site reaches its protected production: admin, as site-wide env vars).
            action: "set env vars (create a resource)",
            weakest: "developer",
            tool: "HOSTING_CREATE_RESOURCE",
            own: |_, role| json!({ "name": format!("db-{role}"), "kind": "sqlite", "size_mb": 16 }),
            foreign: Some(|_| json!({ "name": "stolen", "kind": "sqlite", "size_mb": 16, "site": "beta" })),
        },
        Row {
            action: "reveal secrets",
            weakest: "admin",
            tool: "HOSTING_GET_ENV_VARS",
            own: |_, _| json!({ "site": "alpha", "reveal": true }),
            foreign: Some(|_| json!({ "site": "beta", "reveal": true })),
        },
        Row {
            action: "manage domains",
            weakest: "developer",
            tool: "HOSTING_ADD_DOMAIN",
            own: |_, role| json!({ "site": "alpha", "environment": "preview", "domain": format!("{role}.alpha-example.com") }),
            foreign: Some(|_| json!({ "site": "beta", "domain": "x.beta-example.com" })),
        },
        Row {
            action: "delete",
            weakest: "admin",
            tool: "HOSTING_DELETE_ENVIRONMENT",
            own: |_, role| json!({ "site": "alpha", "environment": format!("del-{role}") }),
            foreign: Some(|_| json!({ "site": "beta", "environment": "preview" })),
        },
        Row {
            action: "manage providers",
            weakest: "admin",
            tool: "HOSTING_GET_CONFIG",
            own: |_, _| json!({}),
            foreign: None,
        },
        Row {
            action: "manage members",
            weakest: "admin",
            tool: "HOSTING_SET_MEMBER_ROLE",
            own: |_, _| json!({ "email": "target@a.test", "role": "viewer" }),
            foreign: Some(|_| json!({ "email": "member@b.test", "role": "viewer" })),
        },
        Row {
            action: "read the audit log",
            weakest: "admin",
            tool: "HOSTING_LIST_AUDIT_LOG",
            own: |_, _| json!({ "action": "HOSTING_SET_ENV_VARS" }),
            foreign: None,
        },
        Row {
            action: "manage owners",
            weakest: "owner",
            tool: "HOSTING_SET_MEMBER_ROLE",
            own: |_, _| json!({ "email": "second-owner@a.test", "role": "owner" }),
            foreign: Some(|_| json!({ "email": "member@b.test", "role": "owner" })),
        },
        Row {
            // A service key is no person to own a new org: refused as bad input once the
            // role is there.
            action: "create orgs",
            weakest: "owner",
            tool: "HOSTING_CREATE_ORG",
            own: |_, role| json!({ "name": format!("made-by-{role}") }),
            foreign: None,
        },
    ]
}

#[tokio::test]
async fn the_permission_matrix_holds_for_every_role_over_mcp() {
    let server = TestServer::start().await;
    // Org A (the bootstrap key owns it): a live site with a preview environment and two
    // environments to delete; members to manage.
    let own_deployment = live_site(&server, KEY, "alpha").await;
    for env in ["preview", "del-admin", "del-owner"] {
        let (status, out) = rest(
            &server,
            KEY,
            "POST",
            "/api/sites/alpha/environments",
            Some(json!({ "name": env })),
        )
        .await;
        assert_eq!(status, 201, "{out}");
    }
    add_member(&server, KEY, "target@a.test", "viewer").await;
    add_member(&server, KEY, "second-owner@a.test", "owner").await;
    // Org B: its own site and member.
    add_org(&server, "org_b", "bee", OTHER_KEY).await;
    let foreign_deployment = live_site(&server, OTHER_KEY, "beta").await;
    add_member(&server, OTHER_KEY, "member@b.test", "viewer").await;
    let ids = Ids {
        own_deployment,
        foreign_deployment,
    };

    let mut failures = Vec::new();
    for role in ROLES {
        let key = service_key(&server, KEY, role, json!({})).await;
        let client = mcp(&server, &key).await;
        let me = call(&client, "HOSTING_WHOAMI", &json!({})).await;
        assert_eq!(me.structured_content.as_ref().unwrap()["role"], role);
        for row in matrix() {
            let allowed = rank(role) >= rank(row.weakest);
            let own = call(&client, row.tool, &(row.own)(&ids, role)).await;
            let code = error_code(&own);
            let ok = if allowed {
                !matches!(code.as_deref(), Some("forbidden" | "not_found" | "unauthorized"))
            } else {
                // The refusal names the role needed (the weakest of the first check that fails).
                let text = serde_json::to_string(&own.structured_content).unwrap_or_default();
                code.as_deref() == Some("forbidden") && text.contains("needs the role")
            };
            if !ok {
                failures.push(format!(
                    "{role} × {} ({}) on its own org: expected {}, got {:?}: {:?}",
                    row.action,
                    row.tool,
                    if allowed { "success" } else { "forbidden" },
                    code,
                    own.structured_content
                ));
            }
            if let Some(foreign) = row.foreign {
                let other = call(&client, row.tool, &foreign(&ids)).await;
                let text = serde_json::to_string(&other.structured_content).unwrap_or_default();
                // Never forbidden (that would say it exists), never any of org B's data.
                if error_code(&other).as_deref() != Some("not_found")
                    || text.contains("bee")
                    || text.contains("beta.localhost")
                {
                    failures.push(format!(
                        "{role} × {} ({}) on another org: expected not_found, got {text}",
                        row.action, row.tool
                    ));
                }
            }
        }
        client.cancel().await.ok();
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The allowed changes happened, the refused ones did not.
    let (_, vars) = rest(&server, KEY, "GET", "/api/sites/alpha/env?environment=preview", None).await;
    let names: Vec<&String> = vars["vars"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["SET_BY_ADMIN", "SET_BY_DEVELOPER", "SET_BY_OWNER"], "{vars}");
    let (_, envs) = rest(&server, KEY, "GET", "/api/sites/alpha/environments", None).await;
    let env_names: Vec<&str> = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env_names, ["production", "preview"], "{envs}");
    // Org B saw nothing of it.
    let (_, b_vars) = rest(&server, OTHER_KEY, "GET", "/api/sites/beta/env", None).await;
    assert_eq!(b_vars["vars"], json!({}), "{b_vars}");
}

#[tokio::test]
async fn a_viewer_reads_names_but_cannot_deploy_or_read_values() {
    let server = TestServer::start().await;
    quiet_site(&server, KEY, "shop").await;
    let (status, out) = rest(
        &server,
        KEY,
        "PATCH",
        "/api/sites/shop/env",
        Some(json!({ "vars": { "API_TOKEN": "s3cret-value" } })),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let viewer = service_key(&server, KEY, "viewer", json!({})).await;

    let (status, out) = rest(&server, &viewer, "POST", "/api/sites/shop/deploy", Some(json!({}))).await;
    assert_eq!(status, 403, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("role deployer"),
        "{out}"
    );
    let (status, out) = rest(&server, &viewer, "GET", "/api/sites/shop/env", None).await;
    assert_eq!(status, 200, "{out}");
    assert!(out["vars"]["API_TOKEN"].is_object(), "{out}");
    assert!(!out.to_string().contains("s3cret-value"), "{out}");
    let (status, out) = rest(&server, &viewer, "GET", "/api/sites/shop/env?reveal=true", None).await;
    assert_eq!(status, 403, "{out}");
    assert!(!out.to_string().contains("s3cret-value"), "{out}");
    // No deployment was made.
    let (_, list) = rest(&server, KEY, "GET", "/api/sites/shop/deployments", None).await;
    assert_eq!(list["deployments"], json!([]), "{list}");
    // A viewer key cannot mint itself a stronger one.
    let (status, out) = rest(
        &server,
        &viewer,
        "POST",
        "/api/keys",
        Some(json!({ "name": "up", "kind": "service", "role": "admin" })),
    )
    .await;
    assert_eq!(status, 403, "{out}");
}

#[tokio::test]
async fn a_key_restricted_to_one_site_finds_no_other() {
    let server = TestServer::start().await;
    quiet_site(&server, KEY, "site-a").await;
    quiet_site(&server, KEY, "site-b").await;
    let key = service_key(&server, KEY, "developer", json!({ "sites": ["site-a"] })).await;

    let (status, out) = rest(&server, &key, "GET", "/api/sites/site-a", None).await;
    assert_eq!(status, 200, "{out}");
    for (method, path, body) in [
        ("GET", "/api/sites/site-b", None),
        ("PATCH", "/api/sites/site-b", Some(json!({ "drain_seconds": 5 }))),
        ("PATCH", "/api/sites/site-b/env", Some(json!({ "vars": { "A": "1" } }))),
        ("GET", "/api/sites/site-b/env", None),
    ] {
        let (status, out) = rest(&server, &key, method, path, body).await;
        assert_eq!(status, 404, "{method} {path}: {out}");
    }
    let (status, out) = rest(&server, &key, "GET", "/api/sites", None).await;
    assert_eq!(status, 200, "{out}");
    let names: Vec<&str> = out["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["site-a"], "{out}");
    assert_eq!(out["total"], 1);
    // Nor can it make a key that reaches further.
    let (status, out) = rest(
        &server,
        &key,
        "POST",
        "/api/keys",
        Some(json!({ "name": "wider", "kind": "service", "role": "viewer" })),
    )
    .await;
    assert_eq!(status, 403, "{out}");
}

#[tokio::test]
async fn expired_and_revoked_keys_are_refused_at_once() {
    let server = TestServer::start().await;
    let key = service_key(&server, KEY, "viewer", json!({})).await;
    assert_eq!(rest(&server, &key, "GET", "/api/sites", None).await.0, 200);

    let (_, list) = rest(&server, KEY, "GET", "/api/keys", None).await;
    let id = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "viewer key")
        .expect("the key is listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!list.to_string().contains(&key), "a listing never holds a token");
    assert!(list.to_string().contains("last_used_at"), "{list}");
    // Scoped keys are read again on every call: the very next request is refused.
    let (status, out) = rest(&server, KEY, "DELETE", &format!("/api/keys/{id}"), None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["status"], "revoked");
    let (status, _) = rest(&server, &key, "GET", "/api/sites", None).await;
    assert_eq!(status, 401);
    let client_err = {
        let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(key.clone());
        ().serve(StreamableHttpClientTransport::from_config(config)).await.err()
    };
    assert!(client_err.is_some(), "MCP refuses a revoked key");

    // An expiry in the past (written to the store: the API gives at least a day).
    let expiring = service_key(&server, KEY, "viewer", json!({ "expires_in_days": 1 })).await;
    assert_eq!(rest(&server, &expiring, "GET", "/api/sites", None).await.0, 200);
    let db = common::open_db(server.data.path()).await;
    sqlx::query("UPDATE api_keys SET expires_at = 1 WHERE name = 'viewer key' AND revoked_at IS NULL")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(rest(&server, &expiring, "GET", "/api/sites", None).await.0, 401);

    // Expiry bounds.
    for days in [0, 366] {
        let (status, out) = rest(
            &server,
            KEY,
            "POST",
            "/api/keys",
            Some(json!({ "name": "long", "kind": "service", "expires_in_days": days })),
        )
        .await;
        assert_eq!(status, 400, "{out}");
        assert_eq!(out["error"]["field"], "expires_in_days");
    }
    // The bootstrap key still works and never expires.
    let (_, me) = rest(&server, KEY, "GET", "/api/whoami", None).await;
    assert_eq!(me["role"], "owner", "{me}");
    assert_eq!(me["expires_at"], Value::Null, "{me}");
    assert_eq!(me["scopes"].as_array().unwrap().len(), 8, "{me}");
}

/// A browser's login by email and password: the session cookie and its CSRF token.
async fn password_login(server: &TestServer, email: &str, password: &str) -> Result<(String, String), u16> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(server.api("/login")).send().await.unwrap();
    let login_cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let csrf = csrf_of(&html);
    let body = serde_urlencoded::to_string([
        ("_csrf", csrf.as_str()),
        ("email", email),
        ("password", password),
        ("next", "/sites"),
    ])
    .unwrap();
    let resp = http
        .post(server.api("/login"))
        .header("cookie", login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    if resp.status() != 303 {
        return Err(resp.status().as_u16());
    }
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("berth_session="))
        .expect("a session cookie");
    let cookie = session.split(';').next().unwrap().to_string();
    let page = http
        .get(server.api("/sites"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    Ok((cookie, csrf_of(&page.text().await.unwrap())))
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + "name=\"_csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn demoting_a_member_narrows_their_personal_keys_at_once() {
    let server = TestServer::start().await;
    quiet_site(&server, KEY, "notes").await;
    add_member(&server, KEY, "Dev@A.test", "developer").await;

    // The member logs in to the dashboard with email and password, and makes a key there.
    assert_eq!(
        password_login(&server, "dev@a.test", "wrong password!!").await.err(),
        Some(401)
    );
    let (cookie, csrf) = password_login(&server, "dev@a.test", PASSWORD).await.expect("login");
    let r = server
        .http
        .post(server.api("/api/keys"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({ "name": "laptop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["key"]["kind"], "personal", "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("berth_pk_"), "{token}");

    let (status, me) = rest(&server, &token, "GET", "/api/whoami", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("dev@a.test"), Some("developer"))
    );
    let change = json!({ "drain_seconds": 7 });
    assert_eq!(
        rest(&server, &token, "PATCH", "/api/sites/notes", Some(change.clone()))
            .await
            .0,
        200
    );

    // Demoted to viewer: the same key is a viewer's on its very next call.
    let (status, out) = rest(
        &server,
        KEY,
        "PATCH",
        "/api/members/dev@a.test",
        Some(json!({ "role": "viewer" })),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = rest(&server, &token, "PATCH", "/api/sites/notes", Some(change)).await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(
        rest(&server, &token, "GET", "/api/whoami", None).await.1["role"],
        "viewer"
    );
    // The dashboard session follows too.
    let r = server
        .http
        .patch(server.api("/api/sites/notes"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({ "drain_seconds": 8 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Removed: the key is refused.
    let (status, _) = rest(&server, KEY, "DELETE", "/api/members/dev@a.test", None).await;
    assert_eq!(status, 200);
    assert_eq!(rest(&server, &token, "GET", "/api/sites", None).await.0, 401);
}

#[tokio::test]
async fn the_last_owner_stays_an_owner() {
    let server = TestServer::start().await;
    add_member(&server, KEY, "boss@a.test", "owner").await;
    for (method, body) in [("PATCH", Some(json!({ "role": "admin" }))), ("DELETE", None)] {
        let (status, out) = rest(&server, KEY, method, "/api/members/boss@a.test", body).await;
        assert_eq!(status, 409, "{out}");
        assert!(
            out["error"]["message"].as_str().unwrap().contains("last owner"),
            "{out}"
        );
    }
    let (_, members) = rest(&server, KEY, "GET", "/api/members", None).await;
    assert_eq!(members["members"][0]["role"], "owner", "{members}");

    // Admins do not touch owners; with a second owner the first may step down.
    let admin = service_key(&server, KEY, "admin", json!({})).await;
    let (status, out) = rest(
        &server,
        &admin,
        "POST",
        "/api/members",
        Some(json!({ "email": "other@a.test", "role": "owner", "password": PASSWORD })),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    add_member(&server, KEY, "other@a.test", "owner").await;
    let (status, out) = rest(
        &server,
        &admin,
        "PATCH",
        "/api/members/boss@a.test",
        Some(json!({ "role": "viewer" })),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    let (status, out) = rest(
        &server,
        KEY,
        "PATCH",
        "/api/members/boss@a.test",
        Some(json!({ "role": "admin" })),
    )
    .await;
    assert_eq!(status, 200, "{out}");
}

#[tokio::test]
async fn a_short_password_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let (status, out) = rest(
        &server,
        KEY,
        "POST",
        "/api/members",
        Some(json!({ "email": "short@a.test", "role": "viewer", "password": "elevenchars" })),
    )
    .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "password");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("at least 12"),
        "{out}"
    );
    let (_, members) = rest(&server, KEY, "GET", "/api/members", None).await;
    assert_eq!(members["members"], json!([]), "{members}");

    // The CLI reads the password from BERTH_PASSWORD (or stdin), never from its arguments.
    let run = |password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["users", "create", "--email", "cli@a.test", "--role", "deployer"])
            .env("BERTH_URL", server.api(""))
            .env("BERTH_TOKEN", KEY)
            .env("BERTH_PASSWORD", password)
            .output()
            .expect("run berth")
    };
    let short = run("too short");
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least 12"),
        "{short:?}"
    );
    let ok = run(PASSWORD);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("cli@a.test"), "{ok:?}");
    assert!(password_login(&server, "cli@a.test", PASSWORD).await.is_ok());

    // `berth keys create`, `berth whoami` with the new key, `berth keys revoke`.
    let created = server.cli(&[
        "keys", "create", "--name", "ci", "--kind", "service", "--role", "deployer", "--json",
    ]);
    assert!(created.status.success(), "{created:?}");
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let token = created["token"].as_str().unwrap();
    let me = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["whoami"])
        .env("BERTH_URL", server.api(""))
        .env("BERTH_TOKEN", token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&me.stdout);
    assert!(text.contains("deployer") && text.contains("deploy"), "{text}");
    let revoked = server.cli(&["keys", "revoke", created["key"]["id"].as_str().unwrap()]);
    assert!(revoked.status.success(), "{revoked:?}");
}
