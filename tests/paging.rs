//! Lists come a page at a time: every site, environment, repository, invitation and audit entry is
//! seen exactly once by following `next_cursor`, each page is bounded, a filter narrows
//! the total, and a bad cursor or limit is refused with the field named.

mod common;

use std::collections::BTreeSet;

use common::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

#[tokio::test]
async fn sites_page_by_name_with_a_cursor_and_a_filter() {
    let server = TestServer::start().await;
    let count = 250;
    for i in 0..count {
        let (status, out) = server
            .post("/api/sites", &json!({"name": format!("site-{i:04}"), "deploy": false}))
            .await;
        assert_eq!(status, 201, "{out}");
    }
    // The default page is bounded.
    let (status, first) = server.get("/api/sites").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["sites"].as_array().unwrap().len(), 50);
    assert_eq!(first["total"], count);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/sites?limit=100&cursor={c}"),
            None => "/api/sites?limit=100".to_string(),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let sites = page["sites"].as_array().unwrap();
        assert!(sites.len() <= 100);
        seen.extend(sites.iter().map(|s| s["name"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "the cursor must move forward");
    }
    assert_eq!(pages, 3);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), count, "every site once");
    assert_eq!(unique.len(), count);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "by name");

    // A filter narrows the list and its total.
    let (_, page) = server.get("/api/sites?name_contains=site-01&limit=200").await;
    assert_eq!(page["total"], 100, "{page}");
    assert_eq!(page["sites"].as_array().unwrap().len(), 100);
    assert!(page["next_cursor"].is_null());

    // Bounds: a huge limit is clamped, a bogus cursor is refused with the field named.
    let (_, page) = server.get("/api/sites?limit=100000").await;
    assert_eq!(page["sites"].as_array().unwrap().len(), 200);
    let long = "x".repeat(300);
    let (status, out) = server.get(&format!("/api/sites?cursor={long}")).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "cursor", "{out}");

    // A missing site's error names a few sites, not all of them.
    let (status, out) = server.get("/api/sites/no-such-site").await;
    assert_eq!(status, 404, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("site-0009 and 240 more"), "{message}");

    // The CLI follows every page.
    let out = server.cli(&["sites", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["sites"].as_array().unwrap().len(), count);
}

#[tokio::test]
async fn deployments_page_newest_first_with_a_cursor() {
    let server = TestServer::start().await;
    let repo = app(&[("index.html", "v")]);
    git_init(repo.path());
    let url = format!("file://{}", s(repo.path()));
    let (_, out) = server
        .post("/api/sites", &json!({"name": "pages", "repo": url, "wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let mut ids = vec![out["deployment"]["id"].as_str().unwrap().to_string()];
    for _ in 0..4 {
        let (_, out) = server.post("/api/sites/pages/deploy", &json!({"wait": true})).await;
        ids.push(out["deployment"]["id"].as_str().unwrap().to_string());
    }
    ids.reverse(); // newest first
    let mut seen = Vec::new();
    let mut path = "/api/sites/pages/deployments?limit=2".to_string();
    for _ in 0..5 {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["deployments"].as_array().unwrap().len() <= 2);
        seen.extend(
            page["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/sites/pages/deployments?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every deployment once, newest first");
    let (status, out) = server.get("/api/sites/pages/deployments?cursor=garbage").await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "cursor", "{out}");
}

#[tokio::test]
async fn a_site_has_at_most_a_hundred_environments() {
    let server = TestServer::start().await;
    let (status, out) = server
        .post("/api/sites", &json!({"name": "many", "deploy": false}))
        .await;
    assert_eq!(status, 201, "{out}");
    for i in 1..100 {
        let (status, out) = server
            .post("/api/sites/many/environments", &json!({"name": format!("pr-{i}")}))
            .await;
        assert_eq!(status, 201, "{out}");
    }
    let (status, out) = server
        .post("/api/sites/many/environments", &json!({"name": "pr-100"}))
        .await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the most a site may have"),
        "{out}"
    );
    // The default page is bounded; following next_cursor sees each once, production first.
    let (_, list) = server.get("/api/sites/many/environments").await;
    assert_eq!(list["environments"].as_array().unwrap().len(), 50, "{list}");
    let mut seen = Vec::new();
    let mut path = "/api/sites/many/environments?limit=30".to_string();
    for _ in 0..10 {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["environments"].as_array().unwrap().len() <= 30);
        seen.extend(
            page["environments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/sites/many/environments?limit=30&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 100, "every environment once: {seen:?}");
    assert_eq!(seen[0], "production");
    let mut previews = seen[1..].to_vec();
    previews.sort();
    assert_eq!(seen[1..], previews[..], "previews by name");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 100);
    for bad in ["cursor=..%2Fx", "limit=0", "limit=lots"] {
        let (status, out) = server.get(&format!("/api/sites/many/environments?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {out}");
    }
    // The CLI follows every page.
    let out = server.cli(&["environments", "many", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["environments"].as_array().unwrap().len(), 100);
}

/// Every audit entry of a `GET /api/audit` walk, following `next_cursor`.
async fn audit_walk(server: &TestServer, limit: u32) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    let mut path = format!("/api/audit?limit={limit}");
    for _ in 0..100 {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let got = page["entries"].as_array().unwrap();
        assert!(got.len() <= limit as usize, "{page}");
        entries.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/audit?limit={limit}&cursor={c}"),
            None => return entries,
        }
    }
    panic!("the cursor must move forward");
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_and_refuses_bad_cursors() {
    let server = TestServer::start().await;
    for i in 0..70 {
        let (status, out) = server
            .post(
                "/api/sites",
                &json!({"name": format!("audited-{i:02}"), "deploy": false}),
            )
            .await;
        assert_eq!(status, 201, "{out}");
    }
    // The default page is bounded and the newest entry comes first.
    let (status, first) = server.get("/api/audit").await;
    assert_eq!(status, 200, "{first}");
    let entries = first["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 50, "{first}");
    assert_eq!(entries[0]["arguments"]["name"], "audited-69", "{first}");
    assert!(first["next_cursor"].is_string(), "{first}");

    // Following next_cursor sees every entry once, newest first.
    let all = audit_walk(&server, 30).await;
    assert_eq!(all.len(), 70);
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, each once: {ids:?}");
    let names: Vec<&str> = all.iter().map(|e| e["arguments"]["name"].as_str().unwrap()).collect();
    assert_eq!(names[69], "audited-00");

    // A huge limit is lowered to the most a page holds.
    let (_, page) = server.get("/api/audit?limit=100000").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 70);

    // Bad cursors and limits are refused with the field named, and change nothing.
    for (query, field) in [
        ("cursor=garbage", Some("cursor")),
        ("cursor=-5", Some("cursor")),
        ("cursor=0", Some("cursor")),
        ("limit=0", Some("limit")),
        ("limit=-1", None),
        ("before=3", None),
    ] {
        let (status, out) = server.get(&format!("/api/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {out}");
        if let Some(field) = field {
            assert_eq!(out["error"]["field"], field, "{query}: {out}");
            let message = out["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{query}: the message names the fix: {message}");
        }
    }
    assert_eq!(audit_walk(&server, 200).await.len(), 70, "nothing was written");
}

#[tokio::test]
async fn repositories_are_listed_a_page_at_a_time() {
    let server = TestServer::start().await;
    let (_, empty) = server.get("/api/repos").await;
    assert_eq!(empty["total"], 0, "{empty}");
    assert_eq!(empty["repos"].as_array().unwrap().len(), 0, "{empty}");
    let mut names: Vec<String> = (0..13).map(|i| format!("repo-{i:02}")).collect();
    for name in names.iter().rev() {
        let (status, out) = server.post("/api/repos", &json!({"name": name})).await;
        assert_eq!(status, 201, "{out}");
    }
    // Another org's repository is neither listed nor counted.
    add_org(&server, "org_other", "other", "berth_other_org_key_0123456789").await;
    let r = server
        .http
        .post(server.api("/api/repos"))
        .bearer_auth("berth_other_org_key_0123456789")
        .json(&json!({"name": "theirs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);

    let mut seen = Vec::new();
    let mut path = "/api/repos?limit=5".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        assert_eq!(page["total"], 13, "{page}");
        let repos = page["repos"].as_array().unwrap();
        assert!(repos.len() <= 5);
        for r in repos {
            let name = r["repo"].as_str().unwrap();
            assert!(
                r["clone_url"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/git/default/{name}.git")),
                "{r}"
            );
            seen.push(name.to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/repos?limit=5&cursor={c}"),
            None => break,
        }
        assert!(pages < 10, "the cursor must move forward");
    }
    assert_eq!(pages, 3);
    names.sort();
    assert_eq!(seen, names, "every repository once, by name");

    // Bad cursors and limits are refused with the field named, and create nothing.
    for (query, field) in [
        ("cursor=..", "cursor"),
        ("cursor=A%2Fb", "cursor"),
        ("limit=0", "limit"),
    ] {
        let (status, out) = server.get(&format!("/api/repos?{query}")).await;
        assert_eq!(status, 400, "{query}: {out}");
        assert_eq!(out["error"]["field"], field, "{query}: {out}");
    }
    let (status, out) = server.get("/api/repos?limit=abc").await;
    assert_eq!(status, 400, "{out}");
    let (_, page) = server.get("/api/repos?limit=200").await;
    assert_eq!(page["total"], 13, "{page}");

    // A missing repository's error names a few and counts the rest.
    let (status, out) = server.post("/api/repos/nope/tokens", &json!({})).await;
    assert_eq!(status, 404, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("repo-09 and 3 more"), "{message}");

    // The CLI follows every page.
    let out = server.cli(&["repo", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["repos"].as_array().unwrap().len(), 13);

    // MCP: the text is one line, the repositories are in the structured content.
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(KEY.to_string());
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let params = CallToolRequestParams::new("HOSTING_LIST_REPOS")
        .with_arguments(json!({"limit": 10}).as_object().cloned().unwrap());
    let result = client.call_tool(params).await.unwrap();
    let text = result.content[0].as_text().unwrap().text.clone();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.starts_with("10 of 13 repositories; next page"), "{text}");
    let data = result.structured_content.clone().unwrap();
    assert_eq!(data["repos"].as_array().unwrap().len(), 10, "{data}");
    let params = CallToolRequestParams::new("HOSTING_LIST_REPOS")
        .with_arguments(json!({"cursor": data["next_cursor"]}).as_object().cloned().unwrap());
    let result = client.call_tool(params).await.unwrap();
    let data = result.structured_content.clone().unwrap();
    assert_eq!(data["repos"].as_array().unwrap().len(), 3, "{data}");
    assert!(data["next_cursor"].is_null(), "{data}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn invitations_are_listed_newest_first_a_page_at_a_time() {
    let server = TestServer::start().await;
    let count = 7;
    for i in 0..count {
        let (status, out) = server
            .post(
                "/api/invitations",
                &json!({"email": format!("invitee-{i}@example.com"), "role": "viewer"}),
            )
            .await;
        assert_eq!(status, 201, "{out}");
    }
    // Following next_cursor sees every invitation once, newest first, in bounded pages.
    let mut seen = Vec::new();
    let mut path = "/api/invitations?limit=3".to_string();
    for _ in 0..10 {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let invitations = page["invitations"].as_array().unwrap();
        assert!(invitations.len() <= 3, "{page}");
        seen.extend(invitations.iter().map(|i| i["email"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/invitations?limit=3&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..count).rev().map(|i| format!("invitee-{i}@example.com")).collect();
    assert_eq!(seen, expected, "each once, newest first");

    // The default page is bounded; a huge limit is lowered to the most a page holds.
    let (_, page) = server.get("/api/invitations?limit=100000").await;
    assert_eq!(page["invitations"].as_array().unwrap().len(), count);
    assert!(page["next_cursor"].is_null(), "{page}");

    // Bad cursors and limits are refused with the field named.
    for (query, field) in [
        ("cursor=garbage", "cursor"),
        ("cursor=inv_..%2Fx", "cursor"),
        ("cursor=dpl_0123", "cursor"),
        ("limit=0", "limit"),
    ] {
        let (status, out) = server.get(&format!("/api/invitations?{query}")).await;
        assert_eq!(status, 400, "{query}: {out}");
        assert_eq!(out["error"]["field"], field, "{query}: {out}");
    }
}
