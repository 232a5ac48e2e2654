//! Cloudflare as DNS provider, against a local FAKE of its API v4
//! (`common/cloudflare_fake.rs`; it is not Cloudflare): the adapter's contract (paging,
//! rate-limit retries, a refused token's error without the token, records marked as
//! berth's and nothing else touched, a custom hostname followed to active), then end to
//! end through the real server: configure the provider, attach a domain → berth creates
//! its records at the fake → DNS (pebble-challtestsrv, serving what the fake holds)
//! validates it → remove → exactly berth's records are gone. All on loopback.

#[path = "common/cloudflare_fake.rs"]
mod cloudflare_fake;
mod common;

use std::time::{Duration, Instant};

use berth::dns::cloudflare::{Cloudflare, CloudflareConfig, DnsMode};
use berth::dns::{DnsError, DnsProvider, RecordSpec};
use cloudflare_fake::CloudflareFake;
use common::pebble::Dns;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "cf_fake_token_7d3f0a9c1b2e4d5f6a7b8c9d";

fn client(fake: &CloudflareFake, token: &str, zone_id: Option<&str>) -> Cloudflare {
    Cloudflare::new(CloudflareConfig {
        api_token: token.into(),
        zone_id: zone_id.map(str::to_string),
        api_url: fake.url.clone(),
        mode: DnsMode::Dns,
    })
    .unwrap()
}

fn txt(name: &str, content: &str) -> RecordSpec {
    RecordSpec {
        record_type: "TXT".into(),
        name: name.into(),
        content: content.into(),
        ttl: 60,
    }
}

#[tokio::test]
async fn records_are_paged_marked_and_only_berths_are_deleted() {
    let fake = CloudflareFake::start(TOKEN).await;
    let zone_id = fake.add_zone("example.com");
    let sub_id = fake.add_zone("dev.example.com");
    for i in 0..250 {
        fake.insert_record(&zone_id, "TXT", &format!("r{i}.example.com"), "by hand", None);
    }
    let cf = client(&fake, TOKEN, None);

    // The longest suffix wins: a delegated sub-zone over its parent.
    let zone = cf.zone_for("app.example.com").await.unwrap();
    assert_eq!(
        (zone.id.as_str(), zone.name.as_str()),
        (zone_id.as_str(), "example.com")
    );
    let sub = cf.zone_for("a.dev.example.com").await.unwrap();
    assert_eq!(sub.id, sub_id);
    let err = cf.zone_for("app.example.org").await.unwrap_err();
    assert!(matches!(err, DnsError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("example.org"), "{err}");

    // 250 records over three pages of 100.
    let before = fake.requests();
    let all = cf.list_records(&zone, None, None).await.unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(fake.requests() - before, 3, "one call per page");
    let one = cf
        .list_records(&zone, Some("TXT"), Some("r7.example.com"))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert!(!one[0].is_managed());

    // Created with the comment; deleted; a record without it is refused and survives.
    let id = cf.create_record(&zone, &txt("owned.example.com", "v1")).await.unwrap();
    let ours = fake.records(&zone_id).into_iter().find(|r| r.id == id).unwrap();
    assert_eq!(ours.comment.as_deref(), Some("managed by berth"));
    assert_eq!(ours.name, "owned.example.com");
    let theirs = one[0].id.clone();
    let err = cf.delete_record(&zone, &theirs).await.unwrap_err();
    assert!(err.to_string().contains("not created by berth"), "{err}");
    assert!(
        fake.records(&zone_id).iter().any(|r| r.id == theirs),
        "a hand-made record was deleted"
    );
    cf.delete_record(&zone, &id).await.unwrap();
    assert!(!fake.records(&zone_id).iter().any(|r| r.id == id));
    // Already gone counts as deleted.
    cf.delete_record(&zone, &id).await.unwrap();

    // DNS-01 challenge records land in the name's zone, and go.
    let challenge = cf.set_txt("_acme-challenge.app.dev.example.com", "k3y").await.unwrap();
    let held = fake.records(&sub_id);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].content, "k3y");
    assert_eq!(held[0].comment.as_deref(), Some("managed by berth"));
    cf.remove_txt("_acme-challenge.app.dev.example.com", &challenge)
        .await
        .unwrap();
    assert!(fake.records(&sub_id).is_empty());

    // A configured zone is used as is; names outside it are refused for TXT.
    let pinned = client(&fake, TOKEN, Some(&sub_id));
    assert_eq!(pinned.zone_for("anything.example.net").await.unwrap().id, sub_id);
    let err = pinned.set_txt("_acme-challenge.example.net", "x").await.unwrap_err();
    assert!(err.to_string().contains("not in the Cloudflare zone"), "{err}");
}

#[tokio::test]
async fn rate_limits_are_retried_a_bounded_number_of_times() {
    let fake = CloudflareFake::start(TOKEN).await;
    let cf = client(&fake, TOKEN, None);
    fake.rate_limit_next(2);
    let started = Instant::now();
    let line = cf.verify().await.expect("passes after two 429s");
    assert!(line.contains("token active"), "{line}");
    assert_eq!(fake.requests(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was honoured"
    );

    fake.rate_limit_next(100);
    let before = fake.requests();
    let err = cf.verify().await.unwrap_err();
    assert!(matches!(err, DnsError::RateLimited(_)), "{err}");
    assert!(err.to_string().contains("rate limit"), "{err}");
    assert_eq!(fake.requests() - before, 4, "one try and three retries, no more");
}

#[tokio::test]
async fn a_refused_token_names_the_fix_and_never_shows() {
    let fake = CloudflareFake::start(TOKEN).await;
    let zone_id = fake.add_zone("example.com");
    let wrong = "cf_wrong_token_0000000000000000000000";
    let cf = client(&fake, wrong, Some(&zone_id));
    assert!(!format!("{cf:?}").contains(wrong));
    for err in [
        cf.verify().await.unwrap_err(),
        cf.zone_for("app.example.com").await.unwrap_err(),
        cf.set_txt("_acme-challenge.example.com", "v").await.unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(matches!(err, DnsError::Unauthorized(_)), "{text}");
        assert!(
            text.contains("the Cloudflare API token was refused; create one with Zone:DNS:Edit on the zone"),
            "{text}"
        );
        assert!(!text.contains(wrong) && !text.contains(TOKEN), "{text}");
    }
    assert!(fake.records(&zone_id).is_empty());

    // Nothing listening: a clear error naming the URL, quickly.
    let dead = Cloudflare::new(CloudflareConfig {
        api_token: wrong.into(),
        zone_id: None,
        api_url: "http://127.0.0.1:9/client/v4".into(),
        mode: DnsMode::Dns,
    })
    .unwrap();
    let err = dead.verify().await.unwrap_err().to_string();
    assert!(
        err.contains("could not reach Cloudflare's API at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(!err.contains(wrong), "{err}");
}

#[tokio::test]
async fn a_custom_hostname_is_followed_to_active() {
    let fake = CloudflareFake::start(TOKEN).await;
    let zone_id = fake.add_zone("saas.example.net");
    let cf = client(&fake, TOKEN, Some(&zone_id));
    let zone = cf.zone_for("shop.customer.example").await.unwrap();
    fake.activate_after_reads(4);
    let created = cf.create_custom_hostname(&zone, "shop.customer.example").await.unwrap();
    assert_eq!(created.status, "pending");
    assert_eq!(created.ssl_status, "pending_validation");
    let ownership = created.ownership_verification.clone().expect("an ownership record");
    assert_eq!(ownership.record_type, "TXT");
    assert_eq!(ownership.name, "_cf-custom-hostname.shop.customer.example");
    assert!(!created.verification_errors.is_empty());
    let mut seen = vec![(created.status.clone(), created.ssl_status.clone())];
    let mut current = created.clone();
    for _ in 0..10 {
        if current.is_active() {
            break;
        }
        current = cf.get_custom_hostname(&zone, &created.id).await.unwrap();
        seen.push((current.status.clone(), current.ssl_status.clone()));
    }
    assert!(current.is_active(), "{seen:?}");
    assert!(
        seen.contains(&("active".into(), "pending_validation".into())),
        "ownership first, then the certificate: {seen:?}"
    );
    assert!(current.ownership_verification.is_none() && current.verification_errors.is_empty());

    // Or when the test says so.
    fake.activate_after_reads(0);
    let other = cf.create_custom_hostname(&zone, "www.customer.example").await.unwrap();
    let read = cf.get_custom_hostname(&zone, &other.id).await.unwrap();
    assert_eq!(
        (read.status.as_str(), read.ssl_status.as_str()),
        ("pending", "pending_validation")
    );
    fake.activate("www.customer.example");
    assert!(cf.get_custom_hostname(&zone, &other.id).await.unwrap().is_active());

    cf.delete_custom_hostname(&zone, &created.id).await.unwrap();
    cf.delete_custom_hostname(&zone, &other.id).await.unwrap();
    assert!(fake.hostnames().is_empty());
    cf.delete_custom_hostname(&zone, &created.id).await.unwrap();
    let err = cf.get_custom_hostname(&zone, &created.id).await.unwrap_err();
    assert!(matches!(err, DnsError::NotFound(_)), "{err}");
}

/// Serves every CNAME and TXT record the fake holds in a zone from the test DNS server
/// (the fake serves no DNS: the test copies what it holds, as Cloudflare's name servers
/// would serve it).
async fn serve_zone(dns: &Dns, fake: &CloudflareFake, zone_id: &str) {
    for r in fake.records(zone_id) {
        let (path, body) = match r.record_type.as_str() {
            "CNAME" => ("/set-cname", json!({"host": r.name, "target": r.content})),
            "TXT" => ("/set-txt", json!({"host": format!("{}.", r.name), "value": r.content})),
            _ => continue,
        };
        dns.set(path, body).await;
    }
}

async fn static_site(server: &TestServer, name: &str) -> tempfile::TempDir {
    let dir = app(&[("index.html", "<h1>served through cloudflare</h1>")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    dir
}

fn record<'a>(domain: &'a Value, record_type: &str, name: &str) -> &'a Value {
    domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == record_type && r["name"] == name)
        .unwrap_or_else(|| panic!("no {record_type} {name} in {domain:#}"))
}

#[tokio::test]
async fn berth_creates_and_removes_a_domains_records_at_cloudflare() {
    let dns = Dns::start().await;
    let fake = CloudflareFake::start(TOKEN).await;
    let zone_id = fake.add_zone("example.com");
    let hand_txt = fake.insert_record(&zone_id, "TXT", "example.com", "v=spf1 -all", None);
    let hand_a = fake.insert_record(&zone_id, "A", "mail.example.com", "198.51.100.25", None);
    let server = TestServer::start_with(&[("BERTH_DNS_RESOLVERS", &dns.resolver())]).await;
    let _app = static_site(&server, "shop").await;

    // Configured over REST; the token is sealed and shown masked; the test passes.
    let (status, out) = server
        .patch(
            "/api/config/cloudflare",
            &json!({"config": {"api_token": TOKEN, "api_url": fake.url}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["config"]["api_token"], "***");
    let (_, all) = server.get("/api/config").await;
    assert!(all.to_string().contains("\"cloudflare\""), "{all}");
    assert!(!all.to_string().contains(TOKEN));
    let (status, tested) = server.post("/api/config/cloudflare/test", &json!({})).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(tested["detail"].as_str().unwrap().contains("token active"), "{tested}");

    // Attached: berth creates the CNAME and ownership TXT itself, marked as its own.
    let (status, added) = server
        .post("/api/sites/shop/domains", &json!({"domain": "app.example.com"}))
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(record(&added, "CNAME", "app.example.com")["managed"], true, "{added:#}");
    let token = record(&added, "TXT", "_berth-challenge.app.example.com");
    assert_eq!(token["managed"], true, "{added:#}");
    let token = token["value"].as_str().unwrap().to_string();
    assert!(added["next"].as_str().unwrap().contains("berth created"), "{added:#}");
    let held = fake.records(&zone_id);
    let ours: Vec<_> = held
        .iter()
        .filter(|r| r.comment.as_deref() == Some("managed by berth"))
        .collect();
    assert_eq!(ours.len(), 2, "{held:?}");
    assert!(
        ours.iter()
            .any(|r| r.record_type == "CNAME" && r.name == "app.example.com" && r.content == "shop.localhost")
    );
    assert!(ours.iter().any(|r| r.record_type == "TXT" && r.content == token));

    // DNS serves what Cloudflare holds: the domain validates and is served.
    serve_zone(&dns, &fake, &zone_id).await;
    let (status, checked) = server
        .post("/api/sites/shop/domains/app.example.com/validate", &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "active", "{checked:#}");
    let (code, body) = server.edge("app.example.com", "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("served through cloudflare"), "{body}");

    // Removed: exactly berth's records go; the hand-made ones in the zone stay.
    let (status, removed) = server.delete("/api/sites/shop/domains/app.example.com").await;
    assert_eq!(status, 200, "{removed}");
    let left: Vec<String> = fake.records(&zone_id).into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![hand_txt.clone(), hand_a.clone()]);

    // Deleting the whole site removes the records berth created for its domains, too.
    let (status, added) = server
        .post("/api/sites/shop/domains", &json!({"domain": "web.example.com"}))
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(fake.records(&zone_id).len(), 4, "{:?}", fake.records(&zone_id));
    let (status, out) = server.delete("/api/sites/shop").await;
    assert_eq!(status, 200, "{out}");
    let left: Vec<String> = fake.records(&zone_id).into_iter().map(|r| r.id).collect();
    assert_eq!(
        left,
        vec![hand_txt, hand_a],
        "the deleted site's records stayed at the provider"
    );

    assert!(!server.log().contains(TOKEN), "the token is in the server log");
    let (_, audit) = server.get("/api/audit").await;
    assert!(!audit.to_string().contains(TOKEN), "the token is in the audit log");
}

#[tokio::test]
async fn provider_failures_and_bad_settings_change_nothing() {
    let fake = CloudflareFake::start(TOKEN).await;
    let zone_id = fake.add_zone("example.com");
    let server = TestServer::start().await;
    let _app = static_site(&server, "shop").await;

    // Bad settings: refused, nothing stored.
    for (config, says) in [
        (json!({"api_token": "has spaces in it"}), "not a Cloudflare API token"),
        (json!({"api_token": TOKEN, "mode": "custom_hostnames"}), "needs zone_id"),
        (json!({"api_token": TOKEN, "zone_id": "example.com"}), "Zone ID"),
        (json!({"api_token": TOKEN, "nameservers": "x"}), "unknown key"),
    ] {
        let (status, out) = server.patch("/api/config/cloudflare", &json!({"config": config})).await;
        assert_eq!(status, 400, "{config}: {out}");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{config}: {message}");
        assert!(!message.contains(TOKEN), "{message}");
    }
    let (_, shown) = server.get("/api/config/cloudflare").await;
    assert_eq!(shown["providers"][0]["configured"], false, "{shown}");

    // A refused token: the connection test says what to do, without the token, and an
    // attachment fails with nothing attached.
    let wrong = "cf_wrong_token_1111111111111111111111";
    let (status, out) = server
        .patch(
            "/api/config/cloudflare",
            &json!({"config": {"api_token": wrong, "api_url": fake.url}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, tested) = server.post("/api/config/cloudflare/test", &json!({})).await;
    assert_eq!(tested["ok"], false, "{tested}");
    let detail = tested["detail"].as_str().unwrap();
    assert!(
        detail.contains("token was refused; create one with Zone:DNS:Edit"),
        "{detail}"
    );
    assert!(!detail.contains(wrong));
    let (status, out) = server
        .post("/api/sites/shop/domains", &json!({"domain": "app.example.com"}))
        .await;
    assert_eq!(status, 409, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("token was refused") && message.contains("was not attached"),
        "{message}"
    );
    assert!(!message.contains(wrong), "{message}");

    // A later step fails (the TXT is refused): the CNAME made before it is deleted again.
    server
        .patch("/api/config/cloudflare", &json!({"config": {"api_token": TOKEN}}))
        .await;
    fake.reject_records_of_type(Some("TXT"));
    let (status, out) = server
        .post("/api/sites/shop/domains", &json!({"domain": "app.example.com"}))
        .await;
    assert_eq!(status, 409, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("Content for TXT record is invalid"), "{message}");
    assert!(fake.records(&zone_id).is_empty(), "{:?}", fake.records(&zone_id));
    fake.reject_records_of_type(None);

    // A record someone made blocks the CNAME: named, left alone, nothing attached.
    let theirs = fake.insert_record(&zone_id, "CNAME", "app.example.com", "elsewhere.example", None);
    let (status, out) = server
        .post("/api/sites/shop/domains", &json!({"domain": "app.example.com"}))
        .await;
    assert_eq!(status, 409, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("elsewhere.example") && message.contains("did not create"),
        "{message}"
    );
    let held = fake.records(&zone_id);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].id, theirs);
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(list["total"], 0, "nothing was attached: {list}");

    // A removal the provider fails keeps the domain and its records for another try; a
    // record whose comment someone changed is no longer berth's and stays.
    let (status, out) = server
        .post("/api/sites/shop/domains", &json!({"domain": "api.example.com"}))
        .await;
    assert_eq!(status, 201, "{out}");
    let ours = fake.records(&zone_id);
    assert_eq!(ours.len(), 3, "{ours:?}");
    fake.rate_limit_next(100);
    let (status, out) = server.delete("/api/sites/shop/domains/api.example.com").await;
    assert_eq!(status, 409, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("still attached"),
        "{out}"
    );
    fake.rate_limit_next(0);
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(fake.records(&zone_id).len(), 3);
    let edited = ours
        .iter()
        .find(|r| r.record_type == "TXT" && r.name == "_berth-challenge.api.example.com")
        .unwrap();
    fake.set_comment(&edited.id, Some("keep: ours now"));
    let (status, out) = server.delete("/api/sites/shop/domains/api.example.com").await;
    assert_eq!(status, 200, "{out}");
    let left: Vec<String> = fake.records(&zone_id).into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![theirs.clone(), edited.id.clone()]);

    // A domain outside every zone of the account: attached, records left to the user.
    let (status, out) = server
        .post("/api/sites/shop/domains", &json!({"domain": "www.example.org"}))
        .await;
    assert_eq!(status, 201, "{out}");
    assert!(
        out["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("managed").is_none()),
        "{out:#}"
    );
    assert!(out["next"].as_str().unwrap().contains("no zone"), "{out:#}");
}

#[tokio::test]
async fn custom_hostnames_mode_reports_ownership_and_removes_the_hostname() {
    let fake = CloudflareFake::start(TOKEN).await;
    let zone_id = fake.add_zone("saas.example.net");
    let server = TestServer::start().await;
    let _app = static_site(&server, "shop").await;
    let (status, out) = server
        .patch(
            "/api/config/cloudflare",
            &json!({"config": {"api_token": TOKEN, "api_url": fake.url, "zone_id": zone_id, "mode": "custom_hostnames"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, tested) = server.post("/api/config/cloudflare/test", &json!({})).await;
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(
        tested["detail"].as_str().unwrap().contains("saas.example.net"),
        "{tested}"
    );

    let (status, added) = server
        .post("/api/sites/shop/domains", &json!({"domain": "shop.customer.example"}))
        .await;
    assert_eq!(status, 201, "{added}");
    let ownership = record(&added, "TXT", "_cf-custom-hostname.shop.customer.example");
    assert!(!ownership["value"].as_str().unwrap().is_empty());
    let next = added["next"].as_str().unwrap();
    assert!(
        next.contains("status pending") && next.contains("certificate pending_validation"),
        "{next}"
    );
    let hostnames = fake.hostnames();
    assert_eq!(hostnames.len(), 1);
    assert_eq!(hostnames[0].hostname, "shop.customer.example");
    assert!(fake.records(&zone_id).is_empty(), "no DNS records in this mode");

    let (status, removed) = server.delete("/api/sites/shop/domains/shop.customer.example").await;
    assert_eq!(status, 200, "{removed}");
    assert!(fake.hostnames().is_empty());
}
