//! Invitations against the real server: an admin invites an email with a role, the
//! person opens the single-use link, sets a password and is a member with exactly that
//! role; a used, expired or revoked link, another org's invitation and a developer's
//! invitation are refused and change nothing; the link's token is never listed or audited.

mod common;

use common::oauth_flow::*;
use common::*;
use serde_json::{Value, json};

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

/// Invites `email` as `role` with the admin key: (invitation id, link).
async fn invite(server: &TestServer, email: &str, role: &str) -> (String, String) {
    let (status, out) = call_as(
        server,
        KEY,
        "POST",
        "/api/invitations",
        json!({ "email": email, "role": role }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    (
        out["invitation"]["id"].as_str().unwrap().to_string(),
        out["link"].as_str().unwrap().to_string(),
    )
}

/// The link's path (`/invite/<token>`), checked to be on the server's public URL.
fn path_of(server: &TestServer, link: &str) -> String {
    let base = server.api("");
    let path = link
        .strip_prefix(base.trim_end_matches('/'))
        .unwrap_or_else(|| panic!("{link} is not on {base}"));
    assert!(path.starts_with("/invite/berth_inv_"), "{link}");
    path.to_string()
}

/// Opens an invitation link and submits its form with `password` (twice) like a
/// browser: (status, session cookie if one was set, page text).
async fn accept(server: &TestServer, path: &str, password: &str) -> (u16, Option<String>, String) {
    let http = no_redirects();
    let page = http.get(server.api(path)).send().await.unwrap();
    if page.status() != 200 {
        return (page.status().as_u16(), None, page.text().await.unwrap());
    }
    let csrf_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("berth_invite_csrf="))
        .expect("a CSRF cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = csrf_of(&page.text().await.unwrap());
    let body = serde_urlencoded::to_string([
        ("_csrf", csrf.as_str()),
        ("password", password),
        ("password_again", password),
    ])
    .unwrap();
    let resp = http
        .post(server.api(path))
        .header("cookie", csrf_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("berth_session=") && !c.starts_with("berth_session=;"))
        .map(|c| c.split(';').next().unwrap().to_string());
    (status, session, resp.text().await.unwrap())
}

/// `/api/whoami` as a dashboard session.
async fn whoami(server: &TestServer, cookie: &str) -> Value {
    let r = server
        .http
        .get(server.api("/api/whoami"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The org's members as (email, role).
async fn members(server: &TestServer) -> Vec<(String, String)> {
    let (status, out) = call_as(server, KEY, "GET", "/api/members", Value::Null).await;
    assert_eq!(status, 200, "{out}");
    out["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap().into(), m["role"].as_str().unwrap().into()))
        .collect()
}

/// How many users the server has (a refused acceptance makes none).
async fn user_count(server: &TestServer) -> i64 {
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.data.path().join("berth.db").display()))
        .await
        .unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    n
}

#[tokio::test]
async fn an_invitation_makes_a_member_with_exactly_its_role_once() {
    let server = TestServer::start().await;
    let (id, link) = invite(&server, "Dev@Example.test", "deployer").await;
    let path = path_of(&server, &link);

    // The list shows it pending, and never the token.
    let (status, list) = call_as(&server, KEY, "GET", "/api/invitations", Value::Null).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["invitations"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["invitations"][0]["email"], "dev@example.test", "{list}");
    assert_eq!(list["invitations"][0]["status"], "pending", "{list}");
    let token = path.trim_start_matches("/invite/");
    assert!(!list.to_string().contains(token), "{list}");

    // A password shorter than the minimum is refused on the page, naming the field.
    let (status, session, page) = accept(&server, &path, "short").await;
    assert_eq!(status, 400, "{page}");
    assert!(session.is_none());
    assert!(page.contains("at least 12"), "{page}");
    assert_eq!(user_count(&server).await, 0);

    // Accepting sets the password and signs the person in as exactly a deployer.
    let (status, session, page) = accept(&server, &path, PASSWORD).await;
    assert_eq!(status, 303, "{page}");
    let session = session.expect("a session after joining");
    let me = whoami(&server, &session).await;
    assert_eq!(me["user"], "dev@example.test", "{me}");
    assert_eq!(me["role"], "deployer", "{me}");
    assert!(
        members(&server)
            .await
            .contains(&("dev@example.test".into(), "deployer".into()))
    );
    // The password works for logging in later.
    let again = login(&server, "dev@example.test").await;
    assert_eq!(whoami(&server, &again).await["role"], "deployer");

    // A second use is refused with a clear message and changes nothing.
    let (status, _, page) = accept(&server, &path, "another long password").await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("already used"), "{page}");
    assert_eq!(user_count(&server).await, 1);
    let (_, list) = call_as(&server, KEY, "GET", "/api/invitations", Value::Null).await;
    assert_eq!(list["invitations"][0]["status"], "accepted", "{list}");
    // And the password it tried to set was not taken.
    assert_eq!(
        whoami(&server, &login(&server, "dev@example.test").await).await["role"],
        "deployer"
    );

    // A made-up or mangled token is "not valid", not a crash.
    let (status, _, page) = accept(&server, &format!("/invite/berth_inv_{}", "0".repeat(64)), PASSWORD).await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("not valid"), "{page}");

    // The token is in no audit entry, though the invitation and its use are audited.
    let (status, audit) = call_as(&server, KEY, "GET", "/api/audit", Value::Null).await;
    assert_eq!(status, 200, "{audit}");
    let audit = audit.to_string();
    assert!(audit.contains("HOSTING_INVITE_MEMBER"), "{audit}");
    assert!(audit.contains("ACCEPT_INVITATION"), "{audit}");
    assert!(!audit.contains(token), "{audit}");
    for file in ["berth.db", "berth.db-wal"] {
        let bytes = std::fs::read(server.data.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is stored in clear in {file}"
        );
    }
    assert!(!server.log().contains(token), "the token is in the server log");
}

#[tokio::test]
async fn expired_and_revoked_invitations_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let (expired_id, expired) = invite(&server, "late@example.test", "developer").await;
    let (revoked_id, revoked) = invite(&server, "gone@example.test", "admin").await;

    // Expiry is bounded: 1 to 30 days.
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/invitations",
        json!({ "email": "x@example.test", "role": "viewer", "expires_in_days": 31 }),
    )
    .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "expires_in_days", "{out}");

    // The first one's time runs out (moved into the past in the store).
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.data.path().join("berth.db").display()))
        .await
        .unwrap();
    sqlx::query("UPDATE invitations SET expires_at = 1 WHERE id = ?")
        .bind(&expired_id)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let (status, session, page) = accept(&server, &path_of(&server, &expired), PASSWORD).await;
    assert_eq!(status, 409, "{page}");
    assert!(session.is_none());
    assert!(page.contains("expired"), "{page}");

    // The second is revoked; revoking again says it is no longer pending.
    let (status, out) = call_as(
        &server,
        KEY,
        "DELETE",
        &format!("/api/invitations/{revoked_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["status"], "revoked", "{out}");
    let (status, out) = call_as(
        &server,
        KEY,
        "DELETE",
        &format!("/api/invitations/{revoked_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 409, "{out}");
    let (status, session, page) = accept(&server, &path_of(&server, &revoked), PASSWORD).await;
    assert_eq!(status, 409, "{page}");
    assert!(session.is_none());
    assert!(page.contains("revoked"), "{page}");

    assert_eq!(user_count(&server).await, 0);
    assert!(members(&server).await.is_empty());
    let (_, list) = call_as(&server, KEY, "GET", "/api/invitations", Value::Null).await;
    let statuses: Vec<&str> = list["invitations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["revoked", "expired"], "{list}");
}

#[tokio::test]
async fn only_admins_invite_only_owners_invite_owners_and_other_orgs_see_nothing() {
    let server = TestServer::start().await;
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/keys",
        json!({ "name": "dev", "kind": "service", "role": "developer" }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let dev_key = out["token"].as_str().unwrap().to_string();
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/keys",
        json!({ "name": "adm", "kind": "service", "role": "admin" }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let admin_key = out["token"].as_str().unwrap().to_string();

    // A developer cannot invite (an admin least of all): 403 naming the role needed.
    let (status, out) = call_as(
        &server,
        &dev_key,
        "POST",
        "/api/invitations",
        json!({ "email": "boss@example.test", "role": "admin" }),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("role admin"), "{out}");
    // Nor list them.
    let (status, out) = call_as(&server, &dev_key, "GET", "/api/invitations", Value::Null).await;
    assert_eq!(status, 403, "{out}");

    // An admin cannot invite an owner (the bootstrap key, an owner, can).
    let (status, out) = call_as(
        &server,
        &admin_key,
        "POST",
        "/api/invitations",
        json!({ "email": "boss@example.test", "role": "owner" }),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("role owner"),
        "{out}"
    );
    let (_, list) = call_as(&server, KEY, "GET", "/api/invitations", Value::Null).await;
    assert_eq!(list["invitations"], json!([]), "{list}");

    // Another org's admin neither sees nor revokes this org's invitation.
    let (id, link) = invite(&server, "ann@example.test", "viewer").await;
    add_org(&server, "org_b", "b", "berth_test_org_b_key_0123456789").await;
    let other = "berth_test_org_b_key_0123456789";
    let (status, out) = call_as(&server, other, "GET", "/api/invitations", Value::Null).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["invitations"], json!([]), "{out}");
    let (status, out) = call_as(&server, other, "DELETE", &format!("/api/invitations/{id}"), Value::Null).await;
    assert_eq!(status, 404, "{out}");

    // The invitation still works, for this org only.
    let (status, session, page) = accept(&server, &path_of(&server, &link), PASSWORD).await;
    assert_eq!(status, 303, "{page}");
    let me = whoami(&server, &session.unwrap()).await;
    assert_eq!(me["role"], "viewer", "{me}");
    assert_eq!(me["org"], "default", "{me}");
    let (_, out) = call_as(&server, other, "GET", "/api/members", Value::Null).await;
    assert_eq!(out["members"], json!([]), "{out}");

    // An invitation to a person who already is a member is refused up front.
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/invitations",
        json!({ "email": "ann@example.test", "role": "developer" }),
    )
    .await;
    assert_eq!(status, 409, "{out}");
}

#[tokio::test]
async fn a_person_with_an_account_joins_another_org_by_signing_in() {
    let server = TestServer::start().await;
    add_org(&server, "org_b", "b", "berth_test_org_b_key_0123456789").await;
    let other = "berth_test_org_b_key_0123456789";
    // Ann is a member of org b already.
    let (status, out) = call_as(
        &server,
        other,
        "POST",
        "/api/members",
        json!({ "email": "ann@example.test", "role": "viewer", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let (_, link) = invite(&server, "ann@example.test", "developer").await;
    let path = path_of(&server, &link);

    // A wrong password is refused on the page and joins nothing.
    let (status, session, page) = accept(&server, &path, "not ann's password at all").await;
    assert_eq!(status, 400, "{page}");
    assert!(session.is_none());
    assert!(page.contains("not the password"), "{page}");
    assert!(members(&server).await.is_empty());

    // Her own password joins her to the default org as a developer (her password and
    // her role in org b unchanged).
    let (status, session, page) = accept(&server, &path, PASSWORD).await;
    assert_eq!(status, 303, "{page}");
    let me = whoami(&server, &session.unwrap()).await;
    assert_eq!(
        (me["org"].as_str(), me["role"].as_str()),
        (Some("default"), Some("developer")),
        "{me}"
    );
    assert_eq!(user_count(&server).await, 1);
    let (_, out) = call_as(&server, other, "GET", "/api/members", Value::Null).await;
    assert_eq!(out["members"][0]["role"], "viewer", "{out}");
}
