//! The audit log against the real server: an MCP client connected by OAuth sets a secret
//! and the entry names the client and the person, while the secret is in no entry, no
//! page of `/audit`, no CLI output and no MCP answer; an API key's and a password
//! session's calls name the key and the person; filters and cursor paging return each
//! entry exactly once; bad filters are refused naming the field; viewers and developers
//! are refused; another org sees none of it.

mod common;

use common::oauth_flow::*;
use common::*;
use serde_json::{Value, json};

/// The secret an agent sets, which must appear nowhere in the audit log.
const SECRET: &str = "s3cret-audit-value-4242";
/// A secret in a call that fails (an env var name that is refused).
const FAILED_SECRET: &str = "never-stored-either-9191";
/// The password inside a repository URL.
const URL_PASSWORD: &str = "url-pass-7777-xyz";
/// Org B's admin key.
const OTHER_KEY: &str = "berth_org_b_admin_key_0123456789";

/// A REST call with a bearer token: (status, answer).
async fn call_as(server: &TestServer, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let req = match method {
        "POST" => server.http.post(server.api(path)).json(&body),
        "PATCH" => server.http.patch(server.api(path)).json(&body),
        _ => server.http.get(server.api(path)),
    };
    let r = req.bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A member with the shared test password.
async fn add_member(server: &TestServer, email: &str, role: &str) {
    let (status, out) = call_as(
        server,
        KEY,
        "POST",
        "/api/members",
        json!({ "email": email, "role": role, "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
}

/// A site that has not deployed.
async fn quiet_site(server: &TestServer, key: &str, name: &str) {
    let dir = app(&[("index.html", name)]);
    let (status, out) = call_as(
        server,
        key,
        "POST",
        "/api/sites",
        json!({ "name": name, "repo": s(dir.path()), "deploy": false }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
}

/// A service key of org A: its token.
async fn service_key(server: &TestServer, name: &str, role: &str) -> String {
    let (status, out) = call_as(
        server,
        KEY,
        "POST",
        "/api/keys",
        json!({ "name": name, "kind": "service", "role": role }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    out["token"].as_str().unwrap().to_string()
}

/// Every entry of the audit log matching `query`, following `next_cursor` with pages of
/// `limit`.
async fn all_entries(server: &TestServer, query: &str, limit: u32) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let sep = if query.is_empty() { "" } else { "&" };
        let path = format!("/api/audit?{query}{sep}limit={limit}&cursor={cursor}");
        let (status, page) = call_as(server, KEY, "GET", &path, Value::Null).await;
        assert_eq!(status, 200, "{path}: {page}");
        let got = page["entries"].as_array().unwrap();
        assert!(got.len() <= limit as usize, "{path}");
        entries.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return entries,
        }
    }
    panic!("paging never ended")
}

fn ids(entries: &[Value]) -> Vec<i64> {
    entries.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

/// A grant for `cookie`'s member with `sites:read env:write` on every site, production
/// included: the access token.
async fn env_writing_agent(server: &TestServer, cookie: &str) -> String {
    let (_, access, _) = connect_with(
        server,
        cookie,
        &[("scope", "sites:read env:write")],
        &[
            ("sites", "all"),
            ("grant_scope", "sites:read"),
            ("grant_scope", "env:write"),
            ("production", "on"),
        ],
    )
    .await;
    access
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [SECRET, FAILED_SECRET, URL_PASSWORD] {
        assert!(!text.contains(secret), "{what} shows the secret {secret}: {text}");
    }
}

#[tokio::test]
async fn an_oauth_clients_secret_is_named_by_client_and_person_but_shown_nowhere() {
    let server = TestServer::start().await;
    add_member(&server, "ada@a.test", "admin").await;
    quiet_site(&server, KEY, "shop").await;
    let cookie = login(&server, "ada@a.test").await;
    let token = env_writing_agent(&server, &cookie).await;

    let agent = mcp(&server, &token).await;
    let r = call(
        &agent,
        "HOSTING_SET_ENV_VARS",
        json!({ "site": "shop", "vars": { "API_TOKEN": SECRET } }),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let r = call(
        &agent,
        "HOSTING_SET_ENV_VARS",
        json!({ "site": "shop", "vars": { "bad-name": FAILED_SECRET } }),
    )
    .await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    agent.cancel().await.ok();
    // Credentials in a repository URL, in a call that may fail on them.
    let (_, created) = call_as(
        &server,
        KEY,
        "POST",
        "/api/sites",
        json!({ "name": "creds", "repo": format!("https://deploy:{URL_PASSWORD}@127.0.0.1:9/x.git"), "deploy": false }),
    )
    .await;

    // REST: the entry names the client and the person; the values are masked.
    let (status, page) = call_as(&server, KEY, "GET", "/api/audit", Value::Null).await;
    assert_eq!(status, 200, "{page}");
    assert_no_secret("GET /api/audit", &page.to_string());
    let entries = page["entries"].as_array().unwrap();
    let set = entries
        .iter()
        .find(|e| e["action"] == "HOSTING_SET_ENV_VARS" && e["outcome"] == "ok")
        .unwrap_or_else(|| panic!("the agent's call is audited: {page}"));
    assert_eq!(set["actor"]["kind"], "oauth_client", "{set}");
    assert_eq!(set["actor"]["name"], "Test Agent", "{set}");
    assert_eq!(set["actor"]["email"], "ada@a.test", "{set}");
    assert_eq!(set["arguments"]["vars"]["API_TOKEN"], "***", "{set}");
    assert_eq!(set["arguments"]["site"], "shop", "{set}");
    let failed = entries
        .iter()
        .find(|e| e["action"] == "HOSTING_SET_ENV_VARS" && e["outcome"] == "error")
        .unwrap_or_else(|| panic!("the refused call is audited: {page}"));
    assert!(failed["error"].as_str().unwrap().contains("bad-name"), "{failed}");
    let site = entries
        .iter()
        .find(|e| e["action"] == "HOSTING_CREATE_SITE" && e["arguments"]["name"] == "creds")
        .unwrap_or_else(|| panic!("the site creation is audited: {page} (answer {created})"));
    assert_eq!(site["arguments"]["repo"], "https://***@127.0.0.1:9/x.git", "{site}");

    // Filtered to OAuth clients: only the agent's two calls.
    let (_, agents) = call_as(&server, KEY, "GET", "/api/audit?actor_kind=oauth_client", Value::Null).await;
    let kinds: Vec<&str> = agents["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["oauth_client", "oauth_client"], "{agents}");

    // MCP, as an admin key.
    let admin = mcp(&server, KEY).await;
    let r = call(
        &admin,
        "HOSTING_LIST_AUDIT_LOG",
        json!({ "action": "HOSTING_SET_ENV_VARS" }),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let listed = r.structured_content.clone().unwrap();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2, "{listed}");
    assert_no_secret("HOSTING_LIST_AUDIT_LOG", &serde_json::to_string(&r).unwrap());
    admin.cancel().await.ok();

    // The dashboard page, as the admin in their browser.
    let resp = server
        .http
        .get(server.api("/audit"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert_no_secret("/audit", &html);
    for shown in [
        "Test Agent",
        "ada@a.test",
        "HOSTING_SET_ENV_VARS",
        "OAuth client",
        "href=\"/audit\"",
    ] {
        assert!(html.contains(shown), "{shown} on /audit: {html}");
    }
    let resp = server
        .http
        .get(server.api("/audit?actor_kind=oauth_client&outcome=error"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    assert_no_secret("/audit filtered", &html);
    assert_eq!(html.matches("data-audit=").count(), 1, "{html}");

    // The CLI, as table and as JSON.
    for args in [
        &["audit"][..],
        &["audit", "--json"],
        &["audit", "--actor-kind", "oauth_client"],
    ] {
        let out = server.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_secret("berth audit", &text);
        assert!(
            text.contains("Test Agent") && text.contains("ada@a.test"),
            "{args:?}: {text}"
        );
    }
    // The secret itself was stored: it is the log that hides it.
    let (_, vars) = call_as(&server, KEY, "GET", "/api/sites/shop/env?reveal=true", Value::Null).await;
    assert_eq!(vars["vars"]["API_TOKEN"]["value"], SECRET, "{vars}");
}

#[tokio::test]
async fn keys_and_password_sessions_are_named_and_filters_find_them() {
    let server = TestServer::start().await;
    add_member(&server, "ada@a.test", "admin").await;
    quiet_site(&server, KEY, "shop").await;
    let ci = service_key(&server, "ci deployer", "developer").await;
    let (status, out) = call_as(
        &server,
        &ci,
        "PATCH",
        "/api/sites/shop",
        json!({ "build_command": "make" }),
    )
    .await;
    assert_eq!(status, 200, "{out}");

    // The same change from the dashboard's session (the page's CSRF token in the header).
    let cookie = login(&server, "ada@a.test").await;
    let sites = server
        .http
        .get(server.api("/sites"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = sites
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF token")
        .to_string();
    let r = server
        .http
        .patch(server.api("/api/sites/shop"))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({ "build_command": "make all" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (_, page) = call_as(
        &server,
        KEY,
        "GET",
        "/api/audit?action=hosting_update_site",
        Value::Null,
    )
    .await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{page}");
    let (by_user, by_key) = (&entries[0], &entries[1]);
    assert_eq!(by_user["actor"]["kind"], "user", "{by_user}");
    assert_eq!(by_user["actor"]["name"], "ada@a.test", "{by_user}");
    assert_eq!(by_user["actor"]["email"], "ada@a.test", "{by_user}");
    assert_eq!(by_key["actor"]["kind"], "key", "{by_key}");
    assert_eq!(by_key["actor"]["name"], "ci deployer (berth_sk_…)", "{by_key}");
    assert!(by_key["actor"].get("email").is_none(), "{by_key}");
    // The bootstrap key made the site.
    let (_, created) = call_as(
        &server,
        KEY,
        "GET",
        "/api/audit?action=HOSTING_CREATE_SITE",
        Value::Null,
    )
    .await;
    assert_eq!(created["entries"][0]["actor"]["kind"], "key", "{created}");

    // By name or email, case-insensitive.
    for (query, want) in [
        ("actor=CI%20DEPLOYER", "ci deployer (berth_sk_…)"),
        ("actor=ada%40a", "ada@a.test"),
    ] {
        let (_, found) = call_as(&server, KEY, "GET", &format!("/api/audit?{query}"), Value::Null).await;
        let names: Vec<&str> = found["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["actor"]["name"].as_str().unwrap())
            .collect();
        assert!(
            !names.is_empty() && names.iter().all(|n| *n == want),
            "{query}: {found}"
        );
    }
    let (_, none) = call_as(&server, KEY, "GET", "/api/audit?actor=nobody", Value::Null).await;
    assert_eq!(none["entries"], json!([]), "{none}");
}

#[tokio::test]
async fn filters_and_paging_return_each_entry_exactly_once() {
    let server = TestServer::start().await;
    quiet_site(&server, KEY, "shop").await;
    // 150 calls, every other one refused (an unknown build pack).
    for i in 0..150 {
        let body = if i % 2 == 0 {
            json!({ "build_command": format!("make {i}") })
        } else {
            json!({ "build_pack": "cobol" })
        };
        let (status, out) = call_as(&server, KEY, "PATCH", "/api/sites/shop", body).await;
        assert_eq!(status, if i % 2 == 0 { 200 } else { 400 }, "{out}");
    }

    let everything = all_entries(&server, "", 200).await;
    assert_eq!(everything.len(), 151, "150 updates and the site's creation");
    let all_ids = ids(&everything);
    assert!(all_ids.windows(2).all(|w| w[0] > w[1]), "newest first: {all_ids:?}");
    // Small pages: the same entries, each once.
    assert_eq!(ids(&all_entries(&server, "", 7).await), all_ids);
    // By outcome and by action.
    let errors = all_entries(&server, "outcome=error", 9).await;
    assert_eq!(errors.len(), 75);
    assert!(errors.iter().all(|e| e["outcome"] == "error" && e["error"].is_string()));
    let oks = all_entries(&server, "outcome=ok&action=HOSTING_UPDATE_SITE", 11).await;
    assert_eq!(oks.len(), 75);
    let mut both: Vec<i64> = ids(&errors).into_iter().chain(ids(&oks)).collect();
    both.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(both, all_ids[..150]);
    // By time: since inclusive, until exclusive, compared as the fixed-width text sorts.
    let since = everything[120]["time"].as_str().unwrap().to_string();
    let until = everything[30]["time"].as_str().unwrap().to_string();
    assert!(since < until, "90 calls apart: {since} {until}");
    {
        let want: Vec<i64> = everything
            .iter()
            .filter(|e| {
                let t = e["time"].as_str().unwrap();
                t >= since.as_str() && t < until.as_str()
            })
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        let query = serde_urlencoded::to_string([("since", &since), ("until", &until)]).unwrap();
        assert_eq!(ids(&all_entries(&server, &query, 5).await), want, "{query}");
    }
    // A limit over the bound is lowered, not refused.
    let (status, page) = call_as(&server, KEY, "GET", "/api/audit?limit=1000", Value::Null).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["entries"].as_array().unwrap().len(), 151, "{page}");

    // Bad filters are refused, naming the field and the fix.
    for (query, field) in [
        ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("actor_kind=robot", "actor_kind"),
        ("outcome=maybe", "outcome"),
        ("action=DROP%20TABLE", "action"),
        ("limit=0", "limit"),
        ("cursor=abc", "cursor"),
    ] {
        let (status, out) = call_as(&server, KEY, "GET", &format!("/api/audit?{query}"), Value::Null).await;
        assert_eq!(status, 400, "{query}: {out}");
        assert_eq!(out["error"]["field"], field, "{query}: {out}");
    }
    let out = server.cli(&[
        "audit",
        "--since",
        "2026-02-01T00:00:00Z",
        "--until",
        "2026-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("swap them"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn viewers_and_developers_are_refused_and_another_org_sees_nothing() {
    let server = TestServer::start().await;
    quiet_site(&server, KEY, "shop").await;
    add_member(&server, "vic@a.test", "viewer").await;
    for role in ["viewer", "developer"] {
        let token = service_key(&server, &format!("{role} key"), role).await;
        let (status, out) = call_as(&server, &token, "GET", "/api/audit", Value::Null).await;
        assert_eq!(status, 403, "{role}: {out}");
        assert!(out["error"]["message"].as_str().unwrap().contains("admin"), "{out}");
        let client = mcp(&server, &token).await;
        let r = call(&client, "HOSTING_LIST_AUDIT_LOG", json!({})).await;
        assert_eq!(r.is_error, Some(true), "{role}: {r:?}");
        let text = serde_json::to_string(&r.structured_content).unwrap();
        assert!(
            text.contains("forbidden") && !text.contains("HOSTING_CREATE_SITE"),
            "{text}"
        );
        client.cancel().await.ok();
    }
    // A viewer's dashboard: no link, and the page says why without entries.
    let cookie = login(&server, "vic@a.test").await;
    let sites = server
        .http
        .get(server.api("/sites"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!sites.contains("href=\"/audit\""), "{sites}");
    let resp = server
        .http
        .get(server.api("/audit"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.unwrap();
    assert!(
        !html.contains("HOSTING_CREATE_SITE") && !html.contains("data-audit="),
        "{html}"
    );

    // Org B: its own entries only, whatever it filters by.
    add_org(&server, "org_b", "bee", OTHER_KEY).await;
    quiet_site(&server, OTHER_KEY, "beta").await;
    for query in ["", "?actor_kind=key", "?action=HOSTING_CREATE_SITE", "?actor=admin"] {
        let (status, page) = call_as(&server, OTHER_KEY, "GET", &format!("/api/audit{query}"), Value::Null).await;
        assert_eq!(status, 200, "{page}");
        let names: Vec<&str> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["arguments"]["name"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(names, ["beta"], "{query}: {page}");
        assert!(!page.to_string().contains("shop"), "{page}");
    }
    // And org A's cursor past its own entries shows nothing of B's either.
    let (_, page) = call_as(&server, KEY, "GET", "/api/audit?limit=200", Value::Null).await;
    assert!(!page.to_string().contains("beta"), "{page}");
}

#[tokio::test]
async fn the_actor_filter_ignores_case_beyond_ascii() {
    let server = TestServer::start().await;
    let key = service_key(&server, "ÉQUIPE ÑANDÚ", "developer").await;
    quiet_site(&server, &key, "tienda").await;
    quiet_site(&server, KEY, "other").await;
    // Lowercase and mixed case find the key's entry (and only it); SQLite's lower()
    // alone folds ASCII only, so "É" and "Ñ" would not match "é" and "ñ".
    for query in [
        "actor=%C3%A9quipe%20%C3%B1and%C3%BA",
        "actor=%C3%89quipe%20%C3%B1AND%C3%9A",
        "actor=%C3%B1and%C3%BA",
    ] {
        let entries = all_entries(&server, query, 1).await;
        let names: Vec<&str> = entries.iter().map(|e| e["actor"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["ÉQUIPE ÑANDÚ (berth_sk_…)"], "{query}");
        assert_eq!(entries[0]["arguments"]["name"], "tienda", "{query}");
    }
}
