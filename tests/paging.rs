//! Lists come a page at a time: every site of a large org is seen exactly once by
//! following `next_cursor`, each page is bounded, and a filter narrows the total.

mod common;

use std::collections::BTreeSet;

use common::*;
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
    let (_, list) = server.get("/api/sites/many/environments").await;
    assert_eq!(list["environments"].as_array().unwrap().len(), 100);
}
