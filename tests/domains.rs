//! Custom domains against a real DNS server (Debian's `pebble-challtestsrv`, records set
//! through its management API): attach → the diagnosis names every wrong record → fix
//! them → validate → the edge serves the site at the domain → remove → not served; and
//! bad input refused with nothing changed. All on loopback.

mod common;

use common::pebble::Dns;
use common::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

async fn static_site(server: &TestServer, name: &str, text: &str) -> tempfile::TempDir {
    let dir = app(&[("index.html", text)]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    dir
}

/// The diagnosis entry for a record type at a name.
fn check<'a>(domain: &'a Value, record_type: &str, name: &str) -> &'a Value {
    domain["diagnosis"]
        .as_array()
        .expect("a diagnosis")
        .iter()
        .find(|c| c["type"] == record_type && c["name"] == name)
        .unwrap_or_else(|| panic!("no {record_type} check at {name}: {domain:#}"))
}

/// A request to the edge with a Host header, redirects not followed.
async fn edge_raw(server: &TestServer, host: &str, path: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}{path}", server.edge_port))
        .header("host", host)
        .send()
        .await
        .expect("edge request")
}

#[tokio::test]
async fn apex_domain_goes_from_wrong_records_to_served_then_removed() {
    let dns = Dns::start().await;
    let server = TestServer::start_with(&[
        ("BERTH_DNS_RESOLVERS", &dns.resolver()),
        ("BERTH_PUBLIC_IPV4", "192.0.2.10"),
    ])
    .await;
    let _app = static_site(&server, "shop", "<h1>shop home</h1>").await;

    let (status, added) = server
        .post(
            "/api/sites/shop/domains",
            &json!({"domain": "Example.COM.", "redirect_www": true}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["name"], "example.com");
    assert_eq!(added["status"], "pending_dns");
    assert_eq!(added["redirect_from"], "www.example.com");
    let records = added["records"].as_array().unwrap();
    let record = |t: &str, n: &str| {
        records
            .iter()
            .find(|r| r["type"] == t && r["name"] == n)
            .unwrap_or_else(|| panic!("no {t} {n} in {added:#}"))["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(record("A", "example.com"), "192.0.2.10");
    assert_eq!(record("CNAME", "www.example.com"), "shop.localhost");
    let token = record("TXT", "_berth-challenge.example.com");
    assert!(token.len() >= 16, "{token}");

    // Attached but not verified: the edge says so and shows nothing of the site.
    let (code, body) = server.edge("example.com", "/").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not verified"), "{body}");
    assert!(!body.contains("shop home"), "{body}");

    // Every record wrong: an address elsewhere, a stray AAAA, no TXT, a CAA for another
    // CA, no CNAME for www.
    dns.set("/add-a", json!({"host": "example.com", "addresses": ["198.51.100.7"]}))
        .await;
    dns.set(
        "/add-aaaa",
        json!({"host": "example.com", "addresses": ["2001:db8::99"]}),
    )
    .await;
    dns.set(
        "/add-caa",
        json!({"host": "example.com", "policies": [{"tag": "issue", "value": "other-ca.example"}]}),
    )
    .await;
    let (status, checked) = server
        .post("/api/sites/shop/domains/example.com/validate", &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "pending_dns", "{checked:#}");
    let a = check(&checked, "A", "example.com");
    assert_eq!(a["ok"], false);
    assert_eq!(a["observed"], json!(["198.51.100.7"]));
    assert_eq!(a["expected"], "192.0.2.10");
    assert_eq!(a["resolver"], dns.resolver());
    assert!(a["next"].as_str().unwrap().contains("198.51.100.7"), "{a}");
    let aaaa = check(&checked, "AAAA", "example.com");
    assert_eq!(aaaa["ok"], false, "{aaaa}");
    assert!(aaaa["next"].as_str().unwrap().contains("stray AAAA"), "{aaaa}");
    let txt = check(&checked, "TXT", "_berth-challenge.example.com");
    assert_eq!(txt["ok"], false);
    assert!(txt["next"].as_str().unwrap().contains(&token), "{txt}");
    let caa = check(&checked, "CAA", "example.com");
    assert_eq!(caa["ok"], false);
    assert!(caa["next"].as_str().unwrap().contains("letsencrypt.org"), "{caa}");
    let cname = check(&checked, "CNAME", "www.example.com");
    assert_eq!(cname["ok"], false);
    assert!(cname["next"].as_str().unwrap().contains("shop.localhost"), "{cname}");
    assert!(
        checked["next"].as_str().unwrap().contains("HOSTING_VALIDATE_DOMAIN"),
        "{checked}"
    );
    let (code, body) = server.edge("example.com", "/").await;
    assert_eq!(code, 404, "still not served: {body}");

    // Records fixed.
    dns.set("/clear-a", json!({"host": "example.com"})).await;
    dns.set("/add-a", json!({"host": "example.com", "addresses": ["192.0.2.10"]}))
        .await;
    dns.set("/clear-aaaa", json!({"host": "example.com"})).await;
    dns.set("/clear-caa", json!({"host": "example.com"})).await;
    dns.set(
        "/add-caa",
        json!({"host": "example.com", "policies": [{"tag": "issue", "value": "letsencrypt.org"}]}),
    )
    .await;
    dns.set(
        "/set-txt",
        json!({"host": "_berth-challenge.example.com.", "value": token}),
    )
    .await;
    dns.set(
        "/set-cname",
        json!({"host": "www.example.com", "target": "shop.localhost"}),
    )
    .await;
    let (status, checked) = server
        .post("/api/sites/shop/domains/example.com/validate", &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "active", "{checked:#}");
    assert!(
        checked["diagnosis"].as_array().unwrap().iter().all(|c| c["ok"] == true),
        "{checked:#}"
    );

    // Served like shop.localhost; www redirects to the apex, path and port kept.
    let (code, body) = server.edge("example.com", "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("shop home"), "{body}");
    let port = server.edge_port;
    let r = edge_raw(&server, &format!("www.example.com:{port}"), "/a/b?c=1").await;
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("http://example.com:{port}/a/b?c=1")
    );

    let (status, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["domains"][0]["status"], "active");
    let out = server.cli(&["domains", "shop"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("example.com") && stdout.contains("active"), "{stdout}");

    let (status, audit) = server.get("/api/audit").await;
    assert_eq!(status, 200);
    let text = audit.to_string();
    assert!(
        text.contains("HOSTING_ADD_DOMAIN") && text.contains("HOSTING_VALIDATE_DOMAIN"),
        "{text}"
    );
    // Checks that changed nothing are not audited: a repeat now, and the first check
    // above (pending_dns stayed pending_dns); the one that made it active is.
    let (status, again) = server
        .post("/api/sites/shop/domains/example.com/validate", &json!({}))
        .await;
    assert_eq!((status, again["status"].as_str()), (200, Some("active")), "{again}");
    let (_, audit) = server.get("/api/audit").await;
    let validations: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("audit entries")
        .iter()
        .filter(|e| e["action"] == "HOSTING_VALIDATE_DOMAIN")
        .collect();
    assert_eq!(validations.len(), 1, "{audit:#}");

    // Removed: not served at once, and free to attach again.
    let (status, removed) = server.delete("/api/sites/shop/domains/example.com").await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removed"], "example.com");
    let (code, body) = server.edge("example.com", "/").await;
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains("shop home"), "{body}");
    let r = edge_raw(&server, "www.example.com", "/").await;
    assert_eq!(r.status().as_u16(), 404);
    let (code, body) = server.edge("shop.localhost", "/").await;
    assert_eq!(code, 200, "the site itself still serves: {body}");
}

#[tokio::test]
async fn subdomain_over_mcp_and_cli_with_caa_at_the_cname_target() {
    let dns = Dns::start().await;
    let server = TestServer::start_with(&[("BERTH_DNS_RESOLVERS", &dns.resolver())]).await;
    let _app = static_site(&server, "blog", "<p>blog posts</p>").await;

    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(KEY.to_string());
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.expect("MCP client connects");
    let params = CallToolRequestParams::new("HOSTING_ADD_DOMAIN").with_arguments(
        json!({"site": "blog", "domain": "news.example.org"})
            .as_object()
            .cloned()
            .unwrap(),
    );
    let added = client.call_tool(params).await.expect("tool call");
    assert_ne!(added.is_error, Some(true), "{added:?}");
    let added = added.structured_content.expect("structured content");
    assert_eq!(added["status"], "pending_dns");
    let token = added["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .expect("TXT record")["value"]
        .as_str()
        .unwrap()
        .to_string();

    // The CNAME is right, but the CAA at its target forbids the CA, and no TXT yet.
    dns.set(
        "/set-cname",
        json!({"host": "news.example.org", "target": "blog.localhost"}),
    )
    .await;
    dns.set(
        "/add-caa",
        json!({"host": "blog.localhost", "policies": [{"tag": "issue", "value": "other-ca.example"}]}),
    )
    .await;
    let out = server.cli(&["domains", "check", "blog", "news.example.org", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let checked: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(checked["status"], "pending_dns", "{checked:#}");
    assert_eq!(check(&checked, "CNAME", "news.example.org")["ok"], true);
    assert_eq!(check(&checked, "CAA", "blog.localhost")["ok"], false, "{checked:#}");
    assert_eq!(check(&checked, "TXT", "_berth-challenge.news.example.org")["ok"], false);
    let (code, _) = server.edge("news.example.org", "/").await;
    assert_eq!(code, 404);

    dns.set("/clear-caa", json!({"host": "blog.localhost"})).await;
    dns.set(
        "/set-txt",
        json!({"host": "_berth-challenge.news.example.org.", "value": token}),
    )
    .await;
    let out = server.cli(&["domains", "check", "blog", "news.example.org"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("active"), "{stdout}");
    let (code, body) = server.edge("news.example.org", "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("blog posts"), "{body}");

    let refused = server.cli(&["domains", "remove", "blog", "news.example.org"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let (code, _) = server.edge("news.example.org", "/").await;
    assert_eq!(code, 200, "an unconfirmed remove changes nothing");
    let out = server.cli(&["domains", "remove", "blog", "news.example.org", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, body) = server.edge("news.example.org", "/").await;
    assert_eq!(code, 404, "{body}");
    let _ = client.cancel().await;
}

#[tokio::test]
async fn bad_domains_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let _app = static_site(&server, "shop", "<h1>shop</h1>").await;
    let add = |domain: &str| {
        let body = json!({"domain": domain});
        let server = &server;
        async move { server.post("/api/sites/shop/domains", &body).await }
    };
    for (domain, says) in [
        ("", "required"),
        ("not a domain", "not a domain name"),
        ("*.example.com", "DNS provider"),
        ("192.0.2.1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("example", "at least two"),
        ("http://example.com/", "no scheme"),
        ("a..example.com", "not a valid"),
        ("shop.localhost", "base domain"),
        ("localhost", "base domain"),
        // An apex needs the server's public addresses, and none are configured here.
        ("example.com", "--public-ipv4"),
    ] {
        let (status, out) = add(domain).await;
        assert_eq!(status, 400, "{domain}: {out}");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{domain}: {message}");
    }
    let (status, out) = server
        .post(
            "/api/sites/shop/domains",
            &json!({"domain": "app.example.com", "environment": "staging"}),
        )
        .await;
    assert_eq!(status, 404, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("staging"));
    let (status, _) = server
        .post("/api/sites/nope/domains", &json!({"domain": "app.example.com"}))
        .await;
    assert_eq!(status, 404);
    let (status, out) = server
        .post(
            "/api/sites/shop/domains",
            &json!({"domain": "app.example.com", "extra": 1}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(list["total"], 0, "nothing was attached: {list}");

    // IDNs are stored as punycode.
    let (status, out) = add("WWW.Bücher.example").await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["name"], "www.xn--bcher-kva.example");

    // A name attached anywhere cannot be attached again, in this org or another, and the
    // refusal does not tell another org which site has it.
    let (status, out) = add("www.xn--bcher-kva.example").await;
    assert_eq!(status, 409, "{out}");
    add_org(&server, "org_b", "bee", "berth_other_org_key_0123456789").await;
    let dir = app(&[("index.html", "<p>other</p>")]);
    let other = |method: reqwest::Method, path: &str, body: Value| {
        server
            .http
            .request(method, server.api(path))
            .bearer_auth("berth_other_org_key_0123456789")
            .json(&body)
            .send()
    };
    let r = other(
        reqwest::Method::POST,
        "/api/sites",
        json!({"name": "thief", "repo": s(dir.path()), "wait": true}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = other(
        reqwest::Method::POST,
        "/api/sites/thief/domains",
        json!({"domain": "www.bücher.example"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("already attached"), "{message}");
    assert!(!message.contains("shop"), "the other org's site leaked: {message}");
    // Nor can it see or remove the domain.
    let r = other(
        reqwest::Method::DELETE,
        "/api/sites/shop/domains/www.xn--bcher-kva.example",
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(list["total"], 1, "{list}");

    // Paging.
    for name in ["a.example.net", "b.example.net"] {
        let (status, out) = add(name).await;
        assert_eq!(status, 201, "{out}");
    }
    let (_, page) = server.get("/api/sites/shop/domains?limit=2").await;
    assert_eq!(page["domains"].as_array().unwrap().len(), 2);
    assert_eq!(page["total"], 3);
    let cursor = page["next_cursor"].as_str().expect("a next page").to_string();
    let (_, rest) = server
        .get(&format!("/api/sites/shop/domains?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["domains"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest.get("next_cursor").is_none());
}

/// The zone's own name servers decide over a resolver's cached answer. The configured
/// resolver here is a server with yesterday's zone (a stale CNAME, no TXT; for a second
/// name, records the zone has since dropped); the zone's name server, found through its NS
/// record and asked directly, has today's. berth goes ahead on the first name, saying the
/// resolver is stale, and holds the second back, saying the zone no longer has it.
#[tokio::test]
async fn the_zones_own_name_servers_decide_over_a_stale_resolver() {
    let resolver: std::net::SocketAddr = format!("127.0.0.1:{}", common::pebble::free_port()).parse().unwrap();
    let authority: std::net::SocketAddr = "127.0.0.78:53".parse().unwrap();
    let server = TestServer::start_with(&[("BERTH_DNS_RESOLVERS", &resolver.to_string())]).await;
    let _app = static_site(&server, "shop", "<h1>shop home</h1>").await;
    let mut tokens = Vec::new();
    for domain in ["app.zone-a.test", "web.zone-a.test"] {
        let (status, added) = server.post("/api/sites/shop/domains", &json!({"domain": domain})).await;
        assert_eq!(status, 201, "{added}");
        let token = added["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "TXT")
            .expect("a TXT record")["value"]
            .as_str()
            .unwrap()
            .to_string();
        tokens.push(token);
    }
    let delegation = ["@ IN NS ns1".to_string(), "ns1 IN A 127.0.0.78".to_string()];
    let mut yesterday = delegation.to_vec();
    yesterday.extend([
        "app IN CNAME old".to_string(),
        "old IN A 192.0.2.1".to_string(),
        "web IN CNAME shop.localhost.".to_string(),
        format!("_berth-challenge.web IN TXT \"{}\"", tokens[1]),
    ]);
    let mut today = delegation.to_vec();
    today.extend([
        "app IN CNAME shop.localhost.".to_string(),
        format!("_berth-challenge.app IN TXT \"{}\"", tokens[0]),
    ]);
    let _stale = common::nsd::Nsd::start(resolver, "zone-a.test", &yesterday);
    let _zone = common::nsd::Nsd::start(authority, "zone-a.test", &today);

    let (status, checked) = server
        .post("/api/sites/shop/domains/app.zone-a.test/validate", &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "active", "{checked:#}");
    let cname = check(&checked, "CNAME", "app.zone-a.test");
    assert_eq!(cname["ok"], true, "{cname}");
    assert_eq!(cname["observed"], json!(["old.zone-a.test"]), "{cname}");
    assert_eq!(cname["resolver"], resolver.to_string());
    assert_eq!(cname["authoritative"]["observed"], json!(["shop.localhost"]), "{cname}");
    assert_eq!(cname["authoritative"]["ok"], true);
    assert_eq!(cname["authoritative"]["server"], "ns1.zone-a.test (127.0.0.78)");
    let next = cname["next"].as_str().unwrap();
    assert!(next.contains("nothing to change") && next.contains("cache"), "{next}");
    let txt = check(&checked, "TXT", "_berth-challenge.app.zone-a.test");
    assert_eq!(txt["ok"], true, "{txt}");
    assert_eq!(txt["observed"], json!([]), "the resolver has no TXT: {txt}");
    let (code, body) = server.edge("app.zone-a.test", "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("shop home"), "{body}");

    let (status, checked) = server
        .post("/api/sites/shop/domains/web.zone-a.test/validate", &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "pending_dns", "{checked:#}");
    let cname = check(&checked, "CNAME", "web.zone-a.test");
    assert_eq!(cname["ok"], false, "{cname}");
    assert_eq!(cname["observed"], json!(["shop.localhost"]), "{cname}");
    assert_eq!(cname["authoritative"]["observed"], json!([]), "{cname}");
    let next = cname["next"].as_str().unwrap();
    assert!(
        next.contains("create a CNAME record web.zone-a.test → shop.localhost") && next.contains("no longer"),
        "{next}"
    );
    let txt = check(&checked, "TXT", "_berth-challenge.web.zone-a.test");
    assert_eq!(txt["ok"], false, "{txt}");
    let (code, _) = server.edge("web.zone-a.test", "/").await;
    assert_eq!(code, 404, "not served while the zone lacks its records");
}
