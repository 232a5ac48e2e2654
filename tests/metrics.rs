//! Monitoring from the edge: known traffic driven through the real edge comes back exactly
//! from the metrics tools (quantiles within the sketch's stated error), sleeping sites'
//! cold starts are counted, rollups cross minute, hour and day boundaries under an
//! injected clock, old buckets are pruned, and hostile Host headers and paths cannot grow
//! the tap past its bounds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth::store::metrics::{Bucket, DAY_MS, HOUR_MS, MINUTE_MS, Resolution, Retention};
use berth_edge::{Edge, EdgeConfig, EdgeRouteTable, MAX_PATHS_PER_SITE, RouteLabel, RouteTarget};
use common::*;
use serde_json::{Value, json};

/// An app with known answers: `/ok/N` 200, `/o/UUID` 200, `/missing` 404, `/boom` 500,
/// `/slow` 200 after 300 ms.
fn traffic_app() -> tempfile::TempDir {
    app(&[
        (
            "package.json",
            r#"{"name":"t","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        (
            "server.js",
            "require('http').createServer((q, r) => {\n\
             if (q.url === '/missing') { r.statusCode = 404; return r.end('nope'); }\n\
             if (q.url === '/boom') { r.statusCode = 500; return r.end('boom'); }\n\
             if (q.url === '/slow') { return setTimeout(() => r.end('slow'), 300); }\n\
             r.end('ok ' + q.url);\n\
             }).listen(process.env.PORT);\n",
        ),
    ])
}

#[tokio::test]
async fn known_traffic_through_the_edge_comes_back_exactly_from_every_tool() {
    let server = TestServer::start().await;
    let source = traffic_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "shop", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());

    // The app answers (a probe that met it still starting answered 5xx).
    let mut probes = 0u64;
    eventually("the app answers", 30, async || {
        probes += 1;
        server.edge("shop.localhost", "/ready").await.0 == 200
    })
    .await;
    for i in 0..20 {
        assert_eq!(
            server
                .edge("shop.localhost", &format!("/ok/{}?page={i}", 1000 + i))
                .await
                .0,
            200
        );
    }
    for id in [
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "9b2d4f6e-0000-4000-8000-00000000abcd",
    ] {
        assert_eq!(server.edge("shop.localhost", &format!("/o/{id}")).await.0, 200);
    }
    for _ in 0..5 {
        assert_eq!(server.edge("shop.localhost", "/missing").await.0, 404);
    }
    for _ in 0..3 {
        assert_eq!(server.edge("shop.localhost", "/boom").await.0, 500);
    }
    for _ in 0..4 {
        assert_eq!(server.edge("shop.localhost", "/slow").await.0, 200);
    }
    let sent = probes + 34;

    // The tap is flushed every 2 s.
    let mut summary = Value::Null;
    eventually("the summary counts every request", 20, async || {
        summary = server.get("/api/sites/shop/metrics/summary?since=10m").await.1;
        summary["requests"].as_u64() == Some(sent)
    })
    .await;
    let (_, codes) = server.get("/api/sites/shop/metrics/status-codes?since=10m").await;
    let code = |c: u64| {
        codes["codes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["code"] == c)
            .map_or(0, |x| x["requests"].as_u64().unwrap())
    };
    assert_eq!((code(200), code(404), code(500)), (1 + 26, 5, 3), "{codes}");
    let all: u64 = codes["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        all, sent,
        "only the probes that met a starting app answered anything else: {codes}"
    );
    let server_errors = codes["classes"][4]["requests"].as_u64().unwrap();
    assert_eq!(server_errors, 3 + (probes - 1), "{codes}");
    assert_eq!(
        summary["error_rate"].as_f64().unwrap(),
        server_errors as f64 / sent as f64,
        "{summary}"
    );
    assert_eq!(
        summary["client_error_rate"].as_f64().unwrap(),
        5.0 / sent as f64,
        "{summary}"
    );
    assert_eq!(summary["proxied"].as_u64(), Some(sent), "{summary}");
    assert_eq!(summary["cold_starts"], 0, "{summary}");
    assert_eq!(summary["relative_error"], 0.01);
    assert!(summary["bytes_out"].as_u64().unwrap() >= 20 * 6, "{summary}");
    // The 4 slow requests are the slowest: p99's rank (floor(0.99·(n−1))) is one of them,
    // so it is at least 300 ms less the sketch's 1 %; the median is a fast one.
    let p99 = summary["latency_ms"]["p99"].as_f64().unwrap();
    let p50 = summary["latency_ms"]["p50"].as_f64().unwrap();
    assert!((300.0 * 0.99..2000.0).contains(&p99), "{summary}");
    assert!(p50 < 300.0 * 0.99, "{summary}");
    assert!(
        summary["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("shop production: {sent} requests")),
        "{summary}"
    );

    // Path templates mask ids; the query is dropped.
    let (_, top) = server
        .get("/api/sites/shop/metrics/top-paths?since=10m&limit=100")
        .await;
    let path = |t: &str| {
        top["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["template"] == t)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(path("GET /ok/:id")["requests"], 20, "{top}");
    assert_eq!(path("GET /o/:uuid")["requests"], 2, "{top}");
    assert_eq!(path("GET /missing")["client_errors"], 5, "{top}");
    assert_eq!(path("GET /boom")["server_errors"], 3, "{top}");
    assert_eq!(path("GET /slow")["requests"], 4, "{top}");
    assert_eq!(top["paths"][0]["template"], "GET /ok/:id", "{top}");
    assert_eq!(top["other"]["requests"], 0, "{top}");
    let (_, top2) = server.get("/api/sites/shop/metrics/top-paths?since=10m&limit=2").await;
    assert_eq!(top2["paths"].as_array().unwrap().len(), 2, "{top2}");
    assert_eq!(
        top2["other"]["requests"].as_u64().unwrap()
            + top2["paths"][0]["requests"].as_u64().unwrap()
            + top2["paths"][1]["requests"].as_u64().unwrap(),
        sent,
        "{top2}"
    );

    // The timeline's points add up to the same requests.
    let (status, timeline) = server
        .get("/api/sites/shop/metrics/timeline?since=10m&resolution=1m")
        .await;
    assert_eq!(status, 200, "{timeline}");
    let points = timeline["points"].as_array().unwrap();
    assert!((10..=11).contains(&points.len()), "{timeline}");
    let total: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, sent, "{timeline}");
    let (_, hourly) = server
        .get("/api/sites/shop/metrics/timeline?since=3h&resolution=1h")
        .await;
    let total: u64 = hourly["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, sent, "{hourly}");

    // The CLI prints the same numbers.
    let cli = server.cli(&["metrics", "shop", "--since", "10m", "--paths"]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{text}{}", String::from_utf8_lossy(&cli.stderr));
    assert!(text.contains("GET /ok/:id"), "{text}");

    // Bad input: clear errors naming the bounds.
    for (path, status, needle) in [
        (
            "/api/sites/shop/metrics/summary?since=1h&until=2h",
            400,
            "is not before until",
        ),
        (
            "/api/sites/shop/metrics/summary?until=2099-01-01T00:00:00Z",
            400,
            "in the future",
        ),
        ("/api/sites/shop/metrics/summary?since=500d", 400, "kept 400 days"),
        (
            "/api/sites/shop/metrics/summary?since=last-week",
            400,
            "neither a duration",
        ),
        ("/api/sites/shop/metrics/top-paths?limit=0", 400, "give 1 to 100"),
        ("/api/sites/shop/metrics/top-paths?limit=101", 400, "give 1 to 100"),
        (
            "/api/sites/shop/metrics/timeline?since=3d&resolution=1m",
            400,
            "1500 points",
        ),
        (
            "/api/sites/shop/metrics/timeline?resolution=5m",
            400,
            "use 1m, 1h or 1d",
        ),
        (
            "/api/sites/shop/metrics/timeline?since=30d&resolution=1m",
            400,
            "1500 points",
        ),
        (
            "/api/sites/shop/metrics/status-codes?environment=staging",
            404,
            "environments: production",
        ),
        ("/api/sites/nosuch/metrics/summary", 404, "no site 'nosuch'"),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.to_string().contains(needle), "{path}: {body}");
    }
}

#[tokio::test]
async fn requests_held_while_a_sleeping_site_wakes_count_as_cold_starts() {
    let server = TestServer::start().await;
    let source = app(&[
        (
            "package.json",
            r#"{"scripts":{"start":"node server.js metrics-sleepy-marker"}}"#,
        ),
        (
            "server.js",
            "require('http').createServer((q,r)=>r.end('awake')).listen(process.env.PORT);",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nap", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, cfg) = server
        .patch(
            "/api/sites/nap/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{cfg}");
    eventually("the idle app sleeps", 60, async || {
        processes_matching("metrics-sleepy-marker").is_empty()
    })
    .await;
    assert_eq!(server.edge("nap.localhost", "/wake/1").await, (200, "awake".into()));
    assert_eq!(server.edge("nap.localhost", "/after").await, (200, "awake".into()));
    let mut summary = Value::Null;
    eventually("both requests are counted", 20, async || {
        summary = server.get("/api/sites/nap/metrics/summary?since=10m").await.1;
        summary["requests"].as_u64() == Some(2)
    })
    .await;
    assert_eq!(summary["cold_starts"], 1, "{summary}");
    let (_, timeline) = server.get("/api/sites/nap/metrics/timeline?since=5m").await;
    let cold: u64 = timeline["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cold_starts"].as_u64().unwrap())
        .sum();
    assert_eq!(cold, 1, "{timeline}");
}

#[tokio::test]
async fn request_body_bytes_through_the_edge_are_counted_exactly() {
    let server = TestServer::start().await;
    // The app reads each body whole and answers its length.
    let source = app(&[
        (
            "package.json",
            r#"{"name":"u","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        (
            "server.js",
            "require('http').createServer((q, r) => {\n\
             let n = 0;\n\
             q.on('data', c => n += c.length);\n\
             q.on('end', () => r.end(String(n)));\n\
             }).listen(process.env.PORT);\n",
        ),
    ]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "upload", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    // Probes are GETs without a body: they add requests but no bytes in.
    eventually("the app answers", 30, async || {
        server.edge("upload.localhost", "/ready").await.0 == 200
    })
    .await;

    let sizes = [0usize, 1, 100, 1000, 4096, 65_536, 12_345];
    for size in sizes {
        let response = server
            .http
            .post(format!("http://127.0.0.1:{}/upload", server.edge_port))
            .header("host", "upload.localhost")
            .body(vec![b'x'; size])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            size.to_string(),
            "the app read it whole"
        );
    }
    // Chunked uploads (no Content-Length) count what was forwarded too.
    let chunked: [&[usize]; 4] = [&[1], &[1000, 1000, 1000], &[65_536, 7], &[3, 0, 40_000, 5]];
    for chunks in chunked {
        let size: usize = chunks.iter().sum();
        let stream = futures::stream::iter(
            chunks
                .iter()
                .map(|n| Ok::<_, std::io::Error>(vec![b'y'; *n]))
                .collect::<Vec<_>>(),
        );
        let response = server
            .http
            .post(format!("http://127.0.0.1:{}/upload", server.edge_port))
            .header("host", "upload.localhost")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            size.to_string(),
            "{chunks:?} read whole"
        );
    }
    let sent: u64 = sizes
        .iter()
        .chain(chunked.iter().flat_map(|c| c.iter()))
        .map(|n| *n as u64)
        .sum();

    let mut summary = Value::Null;
    eventually("the summary counts every body byte", 20, async || {
        summary = server.get("/api/sites/upload/metrics/summary?since=10m").await.1;
        summary["bytes_in"].as_u64() == Some(sent)
    })
    .await;
    assert!(
        summary["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("{:.1} KiB received", sent as f64 / 1024.0)),
        "{summary}"
    );
    assert_eq!(summary["previous"]["bytes_in"], 0, "{summary}");
    assert!(
        summary.get("countries").is_none(),
        "no GeoIP database, no countries: {summary}"
    );
    let (_, timeline) = server
        .get("/api/sites/upload/metrics/timeline?since=10m&resolution=1m")
        .await;
    let points: u64 = timeline["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_in"].as_u64().unwrap())
        .sum();
    assert_eq!(points, sent, "{timeline}");
}

/// A client whose connections come from `ip` (a loopback address).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn requests_are_counted_by_the_client_country_the_geoip_database_gives() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("countries.mmdb");
    std::fs::write(
        &db,
        mmdb::country_db(&[
            ("127.0.0.1".parse().unwrap(), 32, "US"),
            ("127.0.0.2".parse().unwrap(), 32, "de"),
            ("10.0.0.0".parse().unwrap(), 8, "FR"),
        ]),
    )
    .unwrap();
    // The database as berth reads it: 127.0.0.3 is in no network of it.
    let geoip = berth::geoip::GeoIp::open(&db).unwrap();
    let country = |ip: &str| geoip.country(ip.parse().unwrap()).map(|c| c.as_str().to_string());
    assert_eq!(country("127.0.0.1").as_deref(), Some("US"));
    assert_eq!(country("127.0.0.2").as_deref(), Some("DE"));
    assert_eq!(country("10.200.3.4").as_deref(), Some("FR"));
    assert_eq!(country("127.0.0.3"), None);
    assert_eq!(country("::1"), None, "an IPv4 database has no IPv6 countries");

    let server = TestServer::start_with(&[("BERTH_GEOIP_DB", db.to_str().unwrap())]).await;
    let source = traffic_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "geo", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    // Probes come from 127.0.0.1.
    let mut probes = 0u64;
    eventually("the app answers", 30, async || {
        probes += 1;
        server.edge("geo.localhost", "/ready").await.0 == 200
    })
    .await;
    for (ip, requests) in [([127, 0, 0, 1], 5), ([127, 0, 0, 2], 3), ([127, 0, 0, 3], 2)] {
        let client = client_from(ip);
        for i in 0..requests {
            let response = client
                .get(format!("http://127.0.0.1:{}/ok/{i}", server.edge_port))
                .header("host", "geo.localhost")
                // Not trusted: the edge counts the connecting peer.
                .header("x-forwarded-for", "10.1.2.3")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    let sent = probes + 10;

    let mut summary = Value::Null;
    eventually("the summary counts every request", 20, async || {
        summary = server.get("/api/sites/geo/metrics/summary?since=10m").await.1;
        summary["requests"].as_u64() == Some(sent)
    })
    .await;
    let countries: Vec<(String, u64)> = summary["countries"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .map(|c| {
            (
                c["country"].as_str().unwrap().to_string(),
                c["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        countries,
        [
            ("US".to_string(), probes + 5),
            ("DE".to_string(), 3),
            ("unknown".to_string(), 2)
        ],
        "{summary}"
    );
    assert_eq!(summary["countries"][1]["share"].as_f64().unwrap(), 3.0 / sent as f64);
    assert!(summary.get("other_countries").is_none(), "{summary}");
    assert!(
        summary["summary"].as_str().unwrap().contains("most from US"),
        "{summary}"
    );
    let (_, fields) = server.get("/api/sites/geo/metrics/fields?since=10m").await;
    assert_eq!(fields["countries"], summary["countries"], "{fields}");

    // A file that is not a MaxMind DB is refused at start, naming the setting.
    let bad = dir.path().join("not.mmdb");
    std::fs::write(&bad, "not a database").unwrap();
    let data = data_dir();
    let out = serve_command(data.path()).env("BERTH_GEOIP_DB", &bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--geoip-db (BERTH_GEOIP_DB)"), "{err}");
}

/// A bucket of `requests` 200s to `template`, each taking `millis`.
fn bucket(requests: u64, template: &str, millis: u64) -> Bucket {
    let mut b = Bucket {
        requests,
        bytes_in: requests * 7,
        bytes_out: requests * 100,
        ..Bucket::default()
    };
    b.statuses.insert(200, requests);
    for _ in 0..requests {
        b.first_byte.record_micros(millis * 1000);
    }
    b.paths.offer(template, requests, 0, 0);
    b
}

#[tokio::test]
async fn rollups_cross_minute_hour_and_day_boundaries_and_old_buckets_are_pruned() {
    // A real server creates the site and environment the buckets belong to.
    let server = TestServer::start().await;
    let site = app(&[("index.html", "<h1>hi</h1>")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "roll", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let data = server.stop();
    let store = common::open_store(data.path()).await;
    let (environment, site_id): (String, String) = sqlx::query_as(
        "SELECT e.id, e.site_id FROM environments e JOIN sites s ON s.id = e.site_id \
         WHERE s.name = 'roll' AND e.name = 'production'",
    )
    .fetch_one(&common::open_db(data.path()).await)
    .await
    .unwrap();

    // An injected clock: 2026-03-01 00:00 UTC, then minutes and hours later.
    let day0 = 1_772_323_200_000i64;
    assert_eq!(day0 % DAY_MS, 0);
    let t = |hours: i64, minutes: i64, seconds: i64| day0 + hours * HOUR_MS + minutes * MINUTE_MS + seconds * 1000;
    // Two flushes in one minute merge; the next minute is its own bucket; an hour later
    // another.
    store
        .record_metrics_minute(&environment, &site_id, t(0, 59, 10), &bucket(3, "GET /a", 10))
        .await
        .unwrap();
    store
        .record_metrics_minute(&environment, &site_id, t(0, 59, 50), &bucket(2, "GET /b", 20))
        .await
        .unwrap();
    store
        .record_metrics_minute(&environment, &site_id, t(1, 0, 5), &bucket(4, "GET /a", 30))
        .await
        .unwrap();
    let minutes = store
        .read_metrics(&environment, Resolution::Minute, t(0, 0, 0), t(2, 0, 0))
        .await
        .unwrap();
    assert_eq!(
        minutes.iter().map(|b| (b.start_ms, b.requests)).collect::<Vec<_>>(),
        [(t(0, 59, 0), 5), (t(1, 0, 0), 4)]
    );

    // Before the hour ends nothing rolls; once it has, hour 0 holds its minute.
    assert_eq!(store.rollup_metrics(t(0, 59, 59)).await.unwrap(), 0);
    assert_eq!(store.rollup_metrics(t(1, 0, 30)).await.unwrap(), 1);
    assert_eq!(store.rollup_metrics(t(1, 0, 31)).await.unwrap(), 0, "idempotent");
    let hours = store
        .read_metrics(&environment, Resolution::Hour, t(0, 0, 0), t(3, 0, 0))
        .await
        .unwrap();
    assert_eq!(hours.len(), 1);
    assert_eq!((hours[0].start_ms, hours[0].requests), (t(0, 0, 0), 5));
    assert_eq!(hours[0].statuses.get(&200), Some(&5));
    let (ranked, _) = hours[0].paths.ranked();
    assert_eq!(
        ranked
            .iter()
            .map(|p| (p.template.as_str(), p.guaranteed()))
            .collect::<Vec<_>>(),
        [("GET /a", 3), ("GET /b", 2)]
    );

    // A late flush into the rolled hour marks it for another rollup, which recomputes it.
    store
        .record_metrics_minute(&environment, &site_id, t(0, 30, 0), &bucket(1, "GET /c", 40))
        .await
        .unwrap();
    assert_eq!(store.rollup_metrics(t(1, 1, 0)).await.unwrap(), 1);
    let hours = store
        .read_metrics(&environment, Resolution::Hour, t(0, 0, 0), t(1, 0, 0))
        .await
        .unwrap();
    assert_eq!(hours[0].requests, 6, "recomputed from all its minutes, not added twice");

    // The next day: hour 1 rolls, then day 0 from both hours; its quantiles stay within
    // the sketch's error (10 ms ×3, 20 ms ×2, 30 ms ×4, 40 ms: median 20 ms, p90 30 ms).
    assert_eq!(store.rollup_metrics(t(24, 0, 1)).await.unwrap(), 2);
    let days = store
        .read_metrics(&environment, Resolution::Day, t(0, 0, 0), t(48, 0, 0))
        .await
        .unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(
        (days[0].start_ms, days[0].requests, days[0].bytes_in, days[0].bytes_out),
        (day0, 10, 70, 1000)
    );
    let median = days[0].first_byte.quantile_micros(0.5).unwrap();
    assert!((median - 20_000.0).abs() <= 0.01 * 20_000.0, "{median}");
    let p90 = days[0].first_byte.quantile_micros(0.9).unwrap();
    assert!((p90 - 30_000.0).abs() <= 0.01 * 30_000.0, "{p90}");

    // Pruning: each resolution by its own age.
    let retention = Retention {
        minutes_ms: 7 * DAY_MS,
        hours_ms: 90 * DAY_MS,
        days_ms: 400 * DAY_MS,
    };
    let count = async |resolution| store.stored_metrics(&environment, resolution).await.unwrap().0;
    assert_eq!(store.prune_metrics(t(24 * 6, 0, 0), &retention).await.unwrap(), 0);
    assert_eq!(
        (
            count(Resolution::Minute).await,
            count(Resolution::Hour).await,
            count(Resolution::Day).await
        ),
        (3, 2, 1)
    );
    assert_eq!(store.prune_metrics(t(24 * 8, 0, 0), &retention).await.unwrap(), 3);
    assert_eq!(count(Resolution::Minute).await, 0, "minutes go after 7 days");
    assert_eq!(store.prune_metrics(t(24 * 91, 0, 0), &retention).await.unwrap(), 2);
    assert_eq!(count(Resolution::Day).await, 1, "the day stays");
    assert_eq!(store.prune_metrics(t(24 * 401, 0, 0), &retention).await.unwrap(), 1);
    assert_eq!(count(Resolution::Day).await, 0);
}

#[tokio::test]
async fn a_flood_of_random_hosts_and_paths_stays_within_the_taps_bounds() {
    let files = app(&[("index.html", "hello")]);
    let root = std::fs::canonicalize(files.path()).unwrap();
    let edge = Edge::new(EdgeConfig::default());
    let mut table = EdgeRouteTable::new();
    table.insert(
        "flood.localhost",
        RouteTarget::Static {
            root: root.clone(),
            jail: root,
            spa_fallback: true,
        },
    );
    assert!(table.label(
        "flood.localhost",
        RouteLabel {
            site: Arc::from("site_flood"),
            environment: Arc::from("env_flood"),
            deployment: Arc::from("dpl_flood"),
        },
    ));
    edge.replace_routes(table);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(Arc::clone(&edge).serve(listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    const FLOOD: u64 = 3000;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..FLOOD {
        let host = format!("h{:x}.attacker.test", random());
        let r = http
            .get(format!("http://127.0.0.1:{port}/"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let path = format!("/p{:x}/q{}", random(), i);
        let r = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("host", "flood.localhost")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let _ = r.bytes().await;
    }
    // The last body is counted once the edge has let go of it, just after the client got it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let footprint = edge.tap_footprint();
    assert!(footprint.sites <= workers, "{footprint:?}");
    assert!(footprint.paths <= workers * MAX_PATHS_PER_SITE, "{footprint:?}");
    // Each worker's slot: status and sketch counters (~8.6 KB) and at most 256 templates.
    let bound = workers * (16 * 1024 + MAX_PATHS_PER_SITE * 128);
    assert!(footprint.bytes <= bound, "{footprint:?} over {bound}");

    let drain = edge.drain_tap();
    assert_eq!(drain.unknown_host_requests, FLOOD, "unknown hosts are one counter");
    assert_eq!(drain.sites.len(), 1);
    let site = &drain.sites[0];
    assert_eq!(site.requests, FLOOD);
    assert_eq!(site.static_files, FLOOD);
    assert_eq!(site.statuses, [(200, FLOOD)]);
    assert!(site.paths.len() <= MAX_PATHS_PER_SITE, "{}", site.paths.len());
    let counted: u64 = site.paths.iter().map(|p| p.requests).sum::<u64>() + site.other_paths.requests;
    assert_eq!(counted, FLOOD);
    assert!(site.other_paths.requests >= FLOOD - (workers * MAX_PATHS_PER_SITE) as u64);
    assert_eq!(site.bytes_out, FLOOD * 5, "each answer is 'hello'");

    // Idle slots are let go: after an interval without traffic the tap holds nothing.
    assert!(edge.drain_tap().sites.is_empty());
    assert_eq!(edge.tap_footprint().sites, 0);
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn fields_name_the_environments_codes_paths_and_deployments_a_range_holds() {
    let server = TestServer::start().await;
    let source = traffic_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "shop", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let deployment = out["deployment"]["id"].as_str().unwrap().to_string();

    // Nothing yet: the range holds no values, and still lists the filters.
    let (status, empty) = server.get("/api/sites/shop/metrics/fields?since=10m").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["environments"], json!([]), "{empty}");
    assert_eq!(empty["paths"], json!([]), "{empty}");
    assert!(empty["summary"].as_str().unwrap().contains("no requests"), "{empty}");

    let mut probes = 0u64;
    eventually("the app answers", 30, async || {
        probes += 1;
        server.edge("shop.localhost", "/ready").await.0 == 200
    })
    .await;
    for i in 0..6 {
        assert_eq!(server.edge("shop.localhost", &format!("/ok/{i}")).await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(server.edge("shop.localhost", "/boom").await.0, 500);
    }
    assert_eq!(server.edge("shop.localhost", "/missing").await.0, 404);
    let sent = probes + 10;

    let mut fields = Value::Null;
    eventually("the fields count every request", 20, async || {
        fields = server.get("/api/sites/shop/metrics/fields?since=10m").await.1;
        fields["requests"].as_u64() == Some(sent)
    })
    .await;
    assert_eq!(
        fields["environments"],
        json!([{"name": "production", "requests": sent}]),
        "{fields}"
    );
    let code = |c: u64| {
        fields["status_codes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["code"] == c)
            .map_or(0, |x| x["requests"].as_u64().unwrap())
    };
    assert_eq!((code(200), code(404), code(500)), (7, 1, 3), "{fields}");
    let paths: Vec<(&str, u64)> = fields["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["template"].as_str().unwrap(), p["requests"].as_u64().unwrap()))
        .collect();
    let mut expected = vec![
        ("GET /ok/:id", 6),
        ("GET /boom", 3),
        ("GET /ready", probes),
        ("GET /missing", 1),
    ];
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    assert_eq!(paths, expected, "most requested first: {fields}");
    assert_eq!(fields["other_path_requests"], 0, "{fields}");
    assert_eq!(
        fields["deployments"][0]["deployment_id"],
        deployment.as_str(),
        "{fields}"
    );
    assert_eq!(fields["deployments"][0]["environment"], "production", "{fields}");
    assert_eq!(fields["deployments"].as_array().unwrap().len(), 1, "{fields}");
    let tools: Vec<&str> = fields["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tool"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"HOSTING_GET_USAGE_TIMELINE"), "{fields}");
    assert!(
        fields["not_filters"][0].as_str().unwrap().starts_with("path: "),
        "{fields}"
    );

    // One environment's view names the same values; a range before the traffic has none.
    let (_, production) = server
        .get("/api/sites/shop/metrics/fields?since=10m&environment=production")
        .await;
    assert_eq!(production["requests"].as_u64(), Some(sent), "{production}");
    assert_eq!(production["environment"], "production", "{production}");
    let (_, before) = server.get("/api/sites/shop/metrics/fields?since=3h&until=2h").await;
    assert_eq!(before["requests"], 0, "{before}");
    assert_eq!(before["deployments"], json!([]), "{before}");

    // The CLI prints them.
    let cli = server.cli(&["metrics", "shop", "--since", "10m", "--fields"]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{text}{}", String::from_utf8_lossy(&cli.stderr));
    assert!(text.contains("GET /ok/:id") && text.contains("production"), "{text}");
    assert!(text.contains(&deployment), "{text}");

    // Bad input: the same checks as every metrics tool; a path filter is refused, not
    // ignored.
    for (path, status, needle) in [
        (
            "/api/sites/shop/metrics/fields?since=1h&until=2h",
            400,
            "is not before until",
        ),
        (
            "/api/sites/shop/metrics/fields?until=2099-01-01T00:00:00Z",
            400,
            "in the future",
        ),
        ("/api/sites/shop/metrics/fields?since=500d", 400, "kept 400 days"),
        (
            "/api/sites/shop/metrics/fields?environment=staging",
            404,
            "environments: production",
        ),
        ("/api/sites/nosuch/metrics/fields", 404, "no site 'nosuch'"),
        (
            "/api/sites/shop/metrics/timeline?path=GET%20/boom",
            400,
            "no tool filters by path",
        ),
        (
            "/api/sites/shop/metrics/status-codes?path=GET%20/boom",
            400,
            "no tool filters by path",
        ),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.to_string().contains(needle), "{path}: {body}");
    }
}

/// A local OTLP/HTTP receiver: what berth posts to `/v1/traces`, decoded with berth's own
/// wire types, and the headers each post came with.
struct OtlpReceiver {
    url: String,
    received: Arc<std::sync::Mutex<Vec<berth::otlp::ExportTraceServiceRequest>>>,
    headers: Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received: Arc<std::sync::Mutex<Vec<berth::otlp::ExportTraceServiceRequest>>> = Arc::default();
        let headers: Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>> = Arc::default();
        let (store, store_headers) = (Arc::clone(&received), Arc::clone(&headers));
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    let request = serde_json::from_slice(&body).expect("an OTLP/JSON export request");
                    store.lock().unwrap().push(request);
                    store_headers.lock().unwrap().push(headers);
                    "{}"
                },
            ),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            received,
            headers,
            task,
        }
    }

    fn spans(&self) -> Vec<berth::otlp::Span> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn attribute(span: &berth::otlp::Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.string_value.clone())
}

async fn otlp_counter(server: &TestServer, sample: &str) -> f64 {
    let text = server
        .http
        .get(server.api("/metrics"))
        .bearer_auth("scrape-token-0123456789abcdef")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}

#[tokio::test]
async fn a_deploy_is_exported_as_a_trace_of_its_steps_and_nothing_is_sent_when_unset() {
    let receiver = OtlpReceiver::start().await;
    let server = TestServer::start_with(&[
        ("BERTH_OTLP_ENDPOINT", &receiver.url),
        ("BERTH_METRICS_TOKEN", "scrape-token-0123456789abcdef"),
        (
            "BERTH_OTLP_HEADERS",
            "Authorization=Bearer%20otlp-secret-0123456789, X-Scope-OrgID = tenant-7",
        ),
    ])
    .await;
    let source = traffic_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "traced", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let deployment = out["deployment"]["id"].as_str().unwrap().to_string();
    // Sent off the deploy's path, in a batch a second after the deploy ends.
    eventually("the deploy's spans arrive", 20, async || receiver.spans().len() >= 5).await;
    let spans = receiver.spans();
    let root = spans
        .iter()
        .find(|s| s.name == "deploy")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert!(root.parent_span_id.is_empty(), "{root:?}");
    assert_eq!(root.trace_id.len(), 32);
    assert_eq!(root.span_id.len(), 16);
    assert_eq!(attribute(root, "berth.site").as_deref(), Some("traced"));
    assert_eq!(attribute(root, "berth.environment").as_deref(), Some("production"));
    assert_eq!(attribute(root, "berth.deployment.id"), Some(deployment.clone()));
    assert_eq!(attribute(root, "berth.deploy.outcome").as_deref(), Some("live"));
    assert_eq!(root.status.code, berth::otlp::STATUS_OK);
    let time = |t: &str| t.parse::<u64>().unwrap();
    let children: Vec<_> = spans.iter().filter(|s| s.parent_span_id == root.span_id).collect();
    assert_eq!(
        children.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["source", "build", "start", "swap"],
        "{spans:#?}"
    );
    let mut previous_end = time(&root.start_time_unix_nano);
    for child in &children {
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.status.code, berth::otlp::STATUS_OK, "{child:?}");
        assert_eq!(
            child.attributes.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
            ["berth.deployment.id"],
            "ids only: no messages or environment values"
        );
        let (start, end) = (time(&child.start_time_unix_nano), time(&child.end_time_unix_nano));
        assert!(previous_end <= start && start <= end, "{child:?}");
        previous_end = end;
    }
    assert!(previous_end <= time(&root.end_time_unix_nano));
    assert_eq!(spans.len(), 5, "one trace: {spans:#?}");
    assert_eq!(otlp_counter(&server, "berth_otlp_spans_exported_total").await, 5.0);
    assert_eq!(
        otlp_counter(&server, "berth_otlp_spans_dropped_total{reason=\"queue_full\"}").await,
        0.0
    );
    // Every export carried the collector's headers, and the secret is in no log line.
    for headers in receiver.headers.lock().unwrap().iter() {
        assert_eq!(headers["authorization"], "Bearer otlp-secret-0123456789");
        assert_eq!(headers["x-scope-orgid"], "tenant-7");
    }
    assert!(!server.log().contains("otlp-secret"), "{}", server.log());

    // A graceful stop right after a deploy sends its trace before the process ends,
    // rather than losing the queue with the batch still waiting to fill.
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "flushed", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let before_stop = receiver.spans().len();
    // Stopped off this thread: the receiver runs on it and must keep answering.
    let data = tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    let spans = receiver.spans();
    let flushed: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "deploy" && attribute(s, "berth.site").as_deref() == Some("flushed"))
        .collect();
    assert_eq!(
        flushed.len(),
        1,
        "sent before the stop: {before_stop}; {spans:#?}\n{}",
        log_of(data.path())
    );
    assert_eq!(spans.len(), 10, "{spans:#?}");

    // Malformed headers are refused at start, without echoing them.
    for bad in [
        "Authorization",
        "=x",
        "Bad Name=1",
        "A=%zz-s3cret",
        "Content-Type=text/plain",
    ] {
        let data = data_dir();
        let out = serve_command(data.path())
            .env("BERTH_OTLP_ENDPOINT", &receiver.url)
            .env("BERTH_OTLP_HEADERS", bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("entry 1 of BERTH_OTLP_HEADERS"), "{bad}: {err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    // Without an endpoint nothing is recorded or sent.
    let quiet = TestServer::start_with(&[
        ("BERTH_OTLP_ENDPOINT", ""),
        ("BERTH_METRICS_TOKEN", "scrape-token-0123456789abcdef"),
    ])
    .await;
    let (_, out) = quiet
        .post(
            "/api/sites",
            &json!({"name": "quiet", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(otlp_counter(&quiet, "berth_otlp_spans_exported_total").await, 0.0);
    assert_eq!(receiver.spans().len(), 10, "nothing more arrived");
}

#[tokio::test]
async fn sampled_requests_through_the_edge_are_exported_as_request_spans() {
    let receiver = OtlpReceiver::start().await;
    let server =
        TestServer::start_with(&[("BERTH_OTLP_ENDPOINT", &receiver.url), ("BERTH_OTLP_SAMPLE_RATIO", "1")]).await;
    let source = traffic_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "sampled", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let deployment = out["deployment"]["id"].as_str().unwrap().to_string();
    let mut probes = 0u64;
    eventually("the app answers", 30, async || {
        probes += 1;
        server.edge("sampled.localhost", "/ready").await.0 == 200
    })
    .await;
    for i in 0..4 {
        assert_eq!(
            server.edge("sampled.localhost", &format!("/ok/{i}?q=secret")).await.0,
            200
        );
    }
    assert_eq!(server.edge("sampled.localhost", "/boom").await.0, 500);

    let requests =
        || -> Vec<berth::otlp::Span> { receiver.spans().into_iter().filter(|s| s.name == "request").collect() };
    eventually("every request is a span (ratio 1)", 20, async || {
        requests().len() as u64 == probes + 5
    })
    .await;
    let spans = requests();
    let route = |s: &berth::otlp::Span| attribute(s, "http.route").unwrap();
    let ok: Vec<_> = spans.iter().filter(|s| route(s) == "/ok/:id").collect();
    assert_eq!(ok.len(), 4, "{spans:#?}");
    for span in &ok {
        assert_eq!(span.kind, berth::otlp::KIND_SERVER);
        assert!(span.parent_span_id.is_empty());
        assert_eq!(attribute(span, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(attribute(span, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attribute(span, "berth.deployment.id"), Some(deployment.clone()));
        assert_eq!(attribute(span, "berth.proxied").as_deref(), Some("true"));
        assert_eq!(span.status.code, berth::otlp::STATUS_OK);
        let (start, end) = (
            span.start_time_unix_nano.parse::<u64>().unwrap(),
            span.end_time_unix_nano.parse::<u64>().unwrap(),
        );
        assert!(0 < start && start <= end, "{span:?}");
    }
    let boom = spans.iter().find(|s| route(s) == "/boom").unwrap();
    assert_eq!(attribute(boom, "http.response.status_code").as_deref(), Some("500"));
    assert_eq!(boom.status.code, berth::otlp::STATUS_ERROR);
    let traces: std::collections::HashSet<_> = spans.iter().map(|s| &s.trace_id).collect();
    assert_eq!(traces.len(), spans.len(), "a trace per request");
    assert!(
        !format!("{:?}", receiver.received.lock().unwrap()).contains("secret"),
        "no query string is exported"
    );
}
