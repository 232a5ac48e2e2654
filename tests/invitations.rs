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
    let db = common::open_db(server.data.path()).await;
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
    let bytes = database_contents(server.data.path());
    assert!(
        !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is stored in clear in the database"
    );
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
    let db = common::open_db(server.data.path()).await;
    sqlx::query("UPDATE invitations SET expires_at = 1 WHERE id = $1")
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

/// The org's `smtp` settings pointing at `relay` with `password`, sent with the admin key.
async fn set_smtp(server: &TestServer, relay: &common::smtp::SmtpRelay, password: &str) -> Value {
    let (status, out) = server
        .patch(
            "/api/config/smtp",
            &json!({"config": {
                "host": "127.0.0.1",
                "port": relay.port,
                "security": "starttls",
                "username": "mailer",
                "password": password,
                "from": "berth <noreply@example.test>",
                "ca_certificate": relay.certificate,
            }}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    out
}

#[tokio::test]
async fn an_emailed_invitation_arrives_with_a_link_that_works() {
    const RELAY_PASSWORD: &str = "relay-password-7f3a9c";
    let relay = common::smtp::SmtpRelay::start("mailer", RELAY_PASSWORD);
    let server = TestServer::start().await;

    // The password is stored but never shown.
    let out = set_smtp(&server, &relay, RELAY_PASSWORD).await;
    assert_eq!(out["config"]["password"], "***", "{out}");
    assert_eq!(out["config"]["username"], "mailer", "{out}");
    let (status, shown) = server.get("/api/config/smtp").await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["providers"][0]["configured"], true, "{shown}");
    assert_eq!(shown["providers"][0]["config"]["password"], "***", "{shown}");
    let (_, all) = server.get("/api/config").await;
    assert!(!all.to_string().contains(RELAY_PASSWORD), "{all}");

    // The connection test connects, secures, signs in, and sends nothing.
    let (status, tested) = server.post("/api/config/smtp/test", &json!({})).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(
        tested["detail"].as_str().unwrap().contains("signed in as mailer"),
        "{tested}"
    );
    assert!(
        relay.sign_ins().iter().any(|l| l.starts_with("ok ")),
        "{:?}",
        relay.sign_ins()
    );
    assert!(relay.messages().is_empty());

    // The invitation is emailed to the invitee: org, inviter, role, link and expiry.
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/invitations",
        json!({ "email": "new@example.test", "role": "developer" }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["email"], json!({"status": "sent"}), "{out}");
    let link = out["link"].as_str().unwrap().to_string();
    let messages = relay.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let mail = &messages[0];
    assert!(mail.starts_with("X-Rcpt-To: new@example.test\n"), "{mail}");
    assert!(mail.contains("\nFrom: berth <noreply@example.test>\n"), "{mail}");
    assert!(mail.contains("\nTo: new@example.test\n"), "{mail}");
    assert!(mail.contains("\nContent-Type: text/plain\n"), "{mail}");
    let (_, me) = call_as(&server, KEY, "GET", "/api/whoami", Value::Null).await;
    let org = me["org"].as_str().unwrap_or_default();
    assert!(!org.is_empty(), "{me}");
    assert!(mail.contains(&format!(" invited you to {org} on berth\n")), "{mail}");
    assert!(
        mail.contains(&format!("invited you to join {org} on berth as developer")),
        "{mail}"
    );
    let expires = out["invitation"]["expires_at"].as_str().unwrap();
    assert!(mail.contains(expires), "{mail}");
    // The link in the mail is the one answered, and it works: accept it over HTTP.
    let mailed = mail
        .split_whitespace()
        .find(|w| w.contains("/invite/berth_inv_"))
        .expect("a link in the mail");
    assert_eq!(mailed, link);
    let (status, session, page) = accept(&server, &path_of(&server, mailed), PASSWORD).await;
    assert_eq!(status, 303, "{page}");
    assert_eq!(whoami(&server, &session.unwrap()).await["role"], "developer");

    // Neither the relay's password nor the token is in the log, the audit log or the
    // database in clear.
    let token = link.rsplit('/').next().unwrap();
    let log = server.log();
    assert!(!log.contains(RELAY_PASSWORD), "the SMTP password is in the server log");
    assert!(!log.contains(token), "the token is in the server log");
    let (_, audit) = call_as(&server, KEY, "GET", "/api/audit", Value::Null).await;
    let audit = audit.to_string();
    assert!(audit.contains("HOSTING_SET_CONFIG"), "{audit}");
    assert!(!audit.contains(RELAY_PASSWORD) && !audit.contains(token), "{audit}");
    let bytes = database_contents(server.data.path());
    assert!(
        !bytes
            .windows(RELAY_PASSWORD.len())
            .any(|w| w == RELAY_PASSWORD.as_bytes()),
        "the SMTP password is stored in clear in the database"
    );
}

#[tokio::test]
async fn a_refused_email_keeps_the_invitation_usable() {
    const WRONG: &str = "not-the-relay-password-41";
    let relay = common::smtp::SmtpRelay::start("mailer", "the-relay-password-99");
    let server = TestServer::start().await;
    set_smtp(&server, &relay, WRONG).await;

    // The connection test says the sign-in was refused, without the password.
    let (status, tested) = server.post("/api/config/smtp/test", &json!({})).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["ok"], false, "{tested}");
    let detail = tested["detail"].as_str().unwrap();
    assert!(detail.contains("refused the username or password"), "{detail}");
    assert!(!detail.contains(WRONG), "{detail}");

    // The invitation is made all the same; the answer says why no email went out.
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/invitations",
        json!({ "email": "late@example.test", "role": "viewer" }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["email"]["status"], "failed", "{out}");
    let reason = out["email"]["reason"].as_str().unwrap();
    assert!(reason.contains("refused the username or password"), "{reason}");
    let link = out["link"].as_str().unwrap().to_string();
    let token = link.rsplit('/').next().unwrap();
    assert!(!reason.contains(WRONG) && !reason.contains(token), "{reason}");
    assert!(relay.messages().is_empty());
    assert!(
        relay.sign_ins().iter().all(|l| l.starts_with("refused ")),
        "{:?}",
        relay.sign_ins()
    );

    // It is listed as pending, and its link works.
    let (_, list) = call_as(&server, KEY, "GET", "/api/invitations", Value::Null).await;
    assert_eq!(list["invitations"][0]["email"], "late@example.test", "{list}");
    assert_eq!(list["invitations"][0]["status"], "pending", "{list}");
    let (status, session, page) = accept(&server, &path_of(&server, &link), PASSWORD).await;
    assert_eq!(status, 303, "{page}");
    assert_eq!(whoami(&server, &session.unwrap()).await["role"], "viewer");
    let log = server.log();
    assert!(!log.contains(WRONG), "the SMTP password is in the server log");
    assert!(!log.contains(token), "the token is in the server log");
}

#[tokio::test]
async fn bad_smtp_settings_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    // Without settings nothing is sent, and the answer says so.
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/invitations",
        json!({ "email": "someone@example.test", "role": "viewer" }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["email"], json!({"status": "not_configured"}), "{out}");

    let good = json!({"host": "smtp.example.test", "port": 587, "username": "u", "password": "secret-pass-123", "from": "noreply@example.test"});
    let with = |key: &str, value: Value| {
        let mut config = good.clone();
        config[key] = value;
        config
    };
    let cases = [
        (with("port", json!(0)), "port must be a number from 1 to 65535"),
        (with("port", json!(70000)), "port must be a number from 1 to 65535"),
        (
            with("port", json!("submission")),
            "port must be a number from 1 to 65535",
        ),
        (with("from", json!("nobody")), "from 'nobody' is not an email address"),
        (with("security", json!("none")), "security \"none\""),
        (with("security", json!("ssl")), "security must be"),
        (with("host", json!("smtp.example.test:25")), "host '"),
        (
            with("ca_certificate", json!("not a certificate")),
            "ca_certificate must be",
        ),
        (
            json!({"host": "smtp.example.test", "from": "noreply@example.test", "password": "secret-pass-123"}),
            "username is not",
        ),
    ];
    for (config, says) in &cases {
        let (status, out) = server.patch("/api/config/smtp", &json!({ "config": config })).await;
        assert_eq!(status, 400, "{config}: {out}");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{config}: {message}");
        assert!(!message.contains("secret-pass-123"), "{message}");
    }
    let (_, shown) = server.get("/api/config/smtp").await;
    assert_eq!(shown["providers"][0]["configured"], false, "{shown}");

    // Over good settings, a bad change is refused and the stored ones stay.
    let (status, out) = server.patch("/api/config/smtp", &json!({ "config": good })).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = server
        .patch("/api/config/smtp", &json!({ "config": {"port": 99999} }))
        .await;
    assert_eq!(status, 400, "{out}");
    let (_, shown) = server.get("/api/config/smtp").await;
    assert_eq!(shown["providers"][0]["config"]["port"], 587, "{shown}");
}

#[tokio::test]
async fn a_relay_that_never_answers_costs_a_bounded_wait_and_loses_nothing() {
    // A "relay" that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let server = TestServer::start().await;
    let (status, out) = server
        .patch(
            "/api/config/smtp",
            &json!({"config": {"host": "127.0.0.1", "port": port, "from": "noreply@example.test"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = call_as(
        &server,
        KEY,
        "POST",
        "/api/invitations",
        json!({ "email": "patient@example.test", "role": "viewer" }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["email"]["status"], "failed", "{out}");
    let reason = out["email"]["reason"].as_str().unwrap();
    assert!(reason.contains("did not finish within 10 s"), "{reason}");
    let (_, list) = call_as(&server, KEY, "GET", "/api/invitations", Value::Null).await;
    assert_eq!(list["invitations"][0]["email"], "patient@example.test", "{list}");
    assert_eq!(list["invitations"][0]["status"], "pending", "{list}");
}
