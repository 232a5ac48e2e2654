//! An org's usage for a month (`HOSTING_GET_USAGE`, `GET /api/usage`, `berth usage`):
//! traffic through the real edge, builds and app instance time come back per site and in
//! total; a deleted site still counts; bad input is refused and changes nothing; pages walk
//! every site once.

mod common;

use std::time::Duration;

use berth::store::metrics::DAY_MS;
use berth::store::usage::UsageSite;
use common::*;
use serde_json::{Value, json};

const OTHER_KEY: &str = "berth_org_b_admin_key_0123456789";

fn row<'a>(usage: &'a Value, site: &str) -> &'a Value {
    usage["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["site"] == site)
        .unwrap_or_else(|| panic!("no row for {site}: {usage}"))
}

#[tokio::test]
async fn a_months_usage_counts_traffic_builds_and_instance_time_per_site_and_keeps_deleted_sites() {
    let server = TestServer::start().await;
    let page = app(&[("index.html", "a static page with some bytes in it")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "plain", "repo": s(page.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let source = node_app("hello");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "shop", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());

    const N: u64 = 25;
    for site in ["plain", "shop"] {
        let host = format!("{site}.localhost");
        eventually("the site answers", 30, async || server.edge(&host, "/").await.0 == 200).await;
        for i in 0..N {
            assert_eq!(server.edge(&host, &format!("/?n={i}")).await.0, 200);
        }
    }

    // The edge's counts are stored every 2 s; instances are sampled every 10 s.
    let mut usage = Value::Null;
    eventually("usage shows the traffic and the app's instance time", 90, async || {
        let (status, out) = server.get("/api/usage").await;
        assert_eq!(status, 200, "{out}");
        usage = out;
        ["plain", "shop"]
            .iter()
            .all(|s| row(&usage, s)["requests"].as_u64().unwrap() >= N)
            && row(&usage, "shop")["instance_seconds"].as_f64().unwrap() > 0.0
    })
    .await;
    assert_eq!(usage["org"], "default", "{usage}");
    let month = usage["month"].as_str().unwrap().to_string();
    assert!(
        usage["start"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{month}-01T00:00:00")),
        "{usage}"
    );
    for site in ["plain", "shop"] {
        let r = row(&usage, site);
        assert!(r["bandwidth_bytes"].as_u64().unwrap() > 0, "{usage}");
        assert_eq!(r["builds"], 1, "one deployment built: {usage}");
        assert!(r["build_seconds"].as_f64().unwrap() > 0.0, "{usage}");
        assert_eq!(r["deleted"], false);
    }
    assert_eq!(
        row(&usage, "plain")["instance_seconds"],
        0.0,
        "a static site runs no instance: {usage}"
    );
    let shop = row(&usage, "shop");
    assert!(
        (shop["instance_hours"].as_f64().unwrap() * 3600.0 - shop["instance_seconds"].as_f64().unwrap()).abs() < 0.01
    );
    let totals = &usage["totals"];
    assert_eq!(totals["builds"], 2, "{usage}");
    assert_eq!(
        totals["requests"].as_u64().unwrap(),
        row(&usage, "plain")["requests"].as_u64().unwrap() + shop["requests"].as_u64().unwrap()
    );

    // The same through MCP and the CLI (the one service function).
    let one = server.get("/api/usage?site=shop").await.1;
    assert_eq!(one["sites"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["totals"]["builds"], 1, "{one}");
    let cli = server.cli(&["usage", "--site", "shop", "--json"]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cli["sites"][0]["site"], "shop", "{cli}");

    // A deleted site keeps counting in the month, marked.
    let before = server.get("/api/usage?site=plain").await.1;
    let (status, out) = server.delete("/api/sites/plain").await;
    assert!(status < 300, "{out}");
    let after = server.get("/api/usage").await.1;
    let gone = row(&after, "plain");
    assert_eq!(gone["deleted"], true, "{after}");
    assert_eq!(gone["requests"], before["sites"][0]["requests"], "{after}");
    assert_eq!(gone["builds"], 1, "{after}");
    assert!(after["totals"]["requests"].as_u64().unwrap() >= usage["totals"]["requests"].as_u64().unwrap());
    assert_eq!(after["totals"]["builds"], 2, "{after}");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing_and_pages_walk_every_site_once() {
    let server = TestServer::start().await;
    let page = app(&[("index.html", "hi")]);
    let names = ["a1", "b2", "c3", "d4", "e5"];
    for name in names {
        let (status, out) = server
            .post(
                "/api/sites",
                &json!({"name": name, "repo": s(page.path()), "wait": true}),
            )
            .await;
        assert!(status < 300, "{out}");
    }
    add_org(&server, "org_b", "bee", OTHER_KEY).await;
    let r = server
        .http
        .post(server.api("/api/sites"))
        .bearer_auth(OTHER_KEY)
        .json(&json!({"name": "theirs", "repo": s(page.path()), "wait": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let before = server.get("/api/usage").await.1;
    for (query, field) in [
        ("month=2026-13", "month"),
        ("month=x", "month"),
        ("month=2999-01", "month"),
        ("month=2020-01", "month"),
        ("cursor=nonsense", "cursor"),
    ] {
        let (status, out) = server.get(&format!("/api/usage?{query}")).await;
        assert_eq!(status, 400, "{query}: {out}");
        assert_eq!(out["error"]["field"], field, "{query}: {out}");
        assert!(out["error"]["message"].as_str().unwrap().len() > 20, "{out}");
    }
    let (status, out) = server.get("/api/usage?month=2026-13").await;
    assert!(
        out["error"]["message"].as_str().unwrap().contains("YYYY-MM"),
        "{status} {out}"
    );
    for site in ["nope", "theirs"] {
        let (status, out) = server.get(&format!("/api/usage?site={site}")).await;
        assert_eq!(status, 404, "{site}: {out}");
    }
    // The other org does not see this org's sites either.
    let theirs: Value = server
        .http
        .get(server.api("/api/usage"))
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let their_sites: Vec<&str> = theirs["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["site"].as_str().unwrap())
        .collect();
    assert_eq!(their_sites, ["theirs"], "{theirs}");
    let after = server.get("/api/usage").await.1;
    assert_eq!(before["totals"]["builds"], after["totals"]["builds"]);
    assert_eq!(before["sites"], after["sites"]);

    // Pages of 2 walk the five sites once, by name.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/usage?limit=2&cursor={}", urlencode(c)),
            None => "/api/usage?limit=2".to_string(),
        };
        let (status, out) = server.get(&path).await;
        assert_eq!(status, 200, "{out}");
        let sites = out["sites"].as_array().unwrap();
        assert!(sites.len() <= 2, "{out}");
        seen.extend(sites.iter().map(|r| r["site"].as_str().unwrap().to_string()));
        assert_eq!(
            out["totals"]["builds"], 5,
            "totals cover every site on every page: {out}"
        );
        cursor = out["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, names, "every site once, by name");
}

/// Two servers on one database (two store handles) sampling the same site: each moment
/// counts once, a gap with no sample counts at most the longest sample, a sleeping site
/// counts nothing, and a sample across midnight is split between the days.
#[tokio::test]
async fn two_servers_sampling_one_site_count_each_moment_once() {
    let data = data_dir();
    let a = open_store(data.path()).await;
    let b = open_store(data.path()).await;
    let site = UsageSite {
        org_id: "org_u",
        site_id: "site_u",
        site_name: "u",
    };
    const LONGEST: i64 = 30_000;
    let day = 1_796_169_600_000; // 2026-12-02T00:00:00Z
    let t0 = day + 3_600_000;
    let sample = async |store: &berth::store::Store, n: u32, at: i64| {
        store.sample_instances(&[(site, n)], at, LONGEST).await.unwrap()
    };
    assert_eq!(sample(&a, 2, t0).await, 0, "the first sample starts the clock");
    // Both take the same sample: one counts it.
    let (x, y) = tokio::join!(sample(&a, 2, t0 + 10_000), sample(&b, 2, t0 + 10_000));
    assert_eq!(x + y, 20_000);
    // Interleaved: each counts the time since the other's.
    assert_eq!(sample(&b, 2, t0 + 14_000).await, 8_000);
    assert_eq!(sample(&a, 2, t0 + 20_000).await, 12_000);
    // An hour with no sample (every server stopped) counts at most the longest sample.
    let t1 = t0 + 20_000 + 3_600_000;
    assert_eq!(sample(&a, 2, t1).await, 2 * LONGEST);
    // Asleep: nothing counts, and the clock moves on.
    assert_eq!(sample(&b, 0, t1 + 10_000).await, 0);
    assert_eq!(sample(&a, 1, t1 + 20_000).await, 10_000);
    // Across midnight: each day its part.
    let late = day + DAY_MS - 5_000;
    sample(&a, 1, late - 20_000).await; // a gap: counts LONGEST
    assert_eq!(sample(&a, 1, late).await, 20_000);
    assert_eq!(sample(&b, 1, late + 10_000).await, 10_000);
    let today = a.usage_totals("org_u", None, day, day + DAY_MS).await.unwrap();
    assert_eq!(
        today.instance_ms,
        20_000 + 8_000 + 12_000 + 2 * LONGEST + 10_000 + LONGEST + 20_000 + 5_000
    );
    let tomorrow = a
        .usage_totals("org_u", None, day + DAY_MS, day + 2 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(tomorrow.instance_ms, 5_000);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A site whose app sleeps is written once when it goes to sleep, not every sample while it
/// sleeps (a server of many sleeping sites would write each of them every 10 s); when it
/// wakes it counts instance time again.
#[tokio::test]
async fn a_sleeping_site_is_not_written_while_it_sleeps_and_counts_again_when_it_wakes() {
    let server = TestServer::start().await;
    let source = node_app("dozy");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "dozy", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (status, cfg) = server
        .patch(
            "/api/sites/dozy/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    let clock = || {
        db_query(
            server.data.path(),
            "SELECT c.sampled_ms FROM usage_clocks c JOIN sites s ON s.id = c.site_id WHERE s.name = 'dozy'",
        )
    };
    eventually("the app sleeps", 60, async || {
        server.get("/api/sites/dozy/scaling").await.1["running_instances"] == 0
    })
    .await;
    // The sample after it fell asleep moves the clock once (within a sampling period and a
    // pass); after that, two more periods leave it where it was.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let asleep = clock();
    assert!(!asleep.is_empty(), "the site was never sampled");
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(clock(), asleep, "a sleeping site's clock was written while it slept");
    let seconds = |usage: &Value| row(usage, "dozy")["instance_seconds"].as_f64().unwrap();
    let before = seconds(&server.get("/api/usage").await.1);

    // Requests keep it awake (its idle timeout is 5 s) until a sample counts it.
    eventually("the woken app's time is counted", 60, async || {
        assert_eq!(server.edge("dozy.localhost", "/").await.0, 200);
        let (_, usage) = server.get("/api/usage").await;
        seconds(&usage) > before
    })
    .await;
    assert_ne!(clock(), asleep);
}
