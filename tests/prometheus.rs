//! `GET /metrics`: after known traffic through the real edge and a real deploy, the
//! Prometheus text (checked against the exposition grammar by a strict parser here) holds
//! exactly those counts; the endpoint refuses missing and wrong credentials and keys
//! without the right, and an org's admin key sees only its org's sites.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The operator's scrape token of these tests.
const TOKEN: &str = "scrape-token-0123456789abcdef";

// ---------------------------------------------------------------- a strict parser

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: every sample, and each family's type.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the one sample with this name and these labels (among others).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {} samples", found.len());
        found.first().map(|s| s.value)
    }

    fn has_site(&self, site: &str) -> bool {
        self.samples
            .iter()
            .any(|s| s.labels.get("site").map(String::as_str) == Some(site))
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("'{text}' is not a value")),
    }
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` are its.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram" || t == "summary")
        {
            return base;
        }
    }
    name
}

/// Parses text format 0.0.4 strictly: names and label names by the grammar, label values
/// with only `\\`, `\"` and `\n` escapes, one TYPE per family before its samples, a
/// family's lines together, no repeated series; histograms cumulative, ending in a `+Inf`
/// bucket equal to `_count`.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut seen_families: Vec<String> = Vec::new();
    let mut series = std::collections::HashSet::new();
    assert!(text.ends_with('\n'), "the exposition ends with a line feed");
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) if is_metric_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if is_metric_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if out.types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("a second TYPE line".into()));
                    }
                    if seen_families.iter().any(|f| f == name) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                }
                (Some("HELP" | "TYPE"), _, _) => return Err(at("malformed HELP or TYPE".into())),
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name '{name}'")));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            loop {
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        chars.next();
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(at("unterminated labels".into())),
                };
                let eq = body[start..].find('=').ok_or_else(|| at("label without '='".into()))? + start;
                let label = &body[start..eq];
                if !is_label_name(label) {
                    return Err(at(format!("bad label name '{label}'")));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(at("label value not quoted".into()));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(at(format!("bad escape {other:?}"))),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => return Err(at("unterminated label value".into())),
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(label.to_string(), value).is_some() {
                    return Err(at(format!("label {label} twice")));
                }
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((_, '}')) => break,
                    other => return Err(at(format!("expected ',' or '}}', got {other:?}"))),
                }
            }
            let consumed = chars.peek().map_or(body.len(), |(i, _)| *i);
            rest = &body[consumed..];
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &out.types).to_string();
        if !out.types.contains_key(&family) {
            return Err(at(format!("sample of {family} without a TYPE line")));
        }
        match seen_families.last() {
            Some(last) if *last == family => {}
            _ if seen_families.contains(&family) => return Err(at(format!("{family}'s samples are not together"))),
            _ => seen_families.push(family),
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("a repeated series".into()));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: per label set, cumulative buckets ending in +Inf = _count.
    for (family, kind) in &out.types {
        if kind != "histogram" {
            continue;
        }
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in out.samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let mut key = s.labels.clone();
            let le = key.remove("le").ok_or(format!("{family}_bucket without le"))?;
            groups
                .entry(format!("{key:?}"))
                .or_default()
                .push((parse_value(&le)?, s.value));
        }
        for (key, buckets) in groups {
            for pair in buckets.windows(2) {
                if !(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1) {
                    return Err(format!("{family}{key}: buckets not cumulative: {buckets:?}"));
                }
            }
            let last = buckets.last().expect("a bucket");
            let count = out
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && {
                        let mut k = s.labels.clone();
                        k.remove("le");
                        format!("{k:?}") == key
                    }
                })
                .ok_or(format!("{family}{key}: no _count"))?;
            if last.0 != f64::INFINITY || last.1 != count.value {
                return Err(format!(
                    "{family}{key}: +Inf bucket {last:?} is not _count {}",
                    count.value
                ));
            }
        }
    }
    Ok(out)
}

#[test]
fn the_parser_refuses_what_the_grammar_does_not_allow() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"q\\\"\\n\\\\\"} 3\n";
    assert_eq!(parse(ok).unwrap().samples[0].labels["k"], "q\"\n\\");
    for bad in [
        "a_total 1\n",                                                // no TYPE
        "# TYPE a counter\na{k=\"x\\t\"} 1\n",                        // bad escape
        "# TYPE a counter\na{k=\"x} 1\n",                             // unterminated
        "# TYPE a counter\na{1k=\"x\"} 1\n",                          // bad label name
        "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n", // family apart
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad}");
    }
}

// ---------------------------------------------------------------- the endpoint

async fn scrape(server: &TestServer, bearer: Option<&str>) -> (u16, String) {
    let mut req = server.http.get(server.api("/metrics"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    }
    (status, r.text().await.unwrap_or_default())
}

async fn metrics(server: &TestServer, bearer: &str) -> Exposition {
    let (status, text) = scrape(server, Some(bearer)).await;
    assert_eq!(status, 200, "{text}");
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// An app with known answers: `/missing` 404, `/boom` 500, the rest 200.
fn known_app() -> tempfile::TempDir {
    node_app_with(
        "require('http').createServer((q, r) => {\n\
         if (q.url === '/missing') { r.statusCode = 404; return r.end('nope'); }\n\
         if (q.url === '/boom') { r.statusCode = 500; return r.end('boom'); }\n\
         r.end('ok ' + q.url);\n\
         }).listen(process.env.PORT);\n",
    )
}

fn node_app_with(server_js: &str) -> tempfile::TempDir {
    app(&[
        (
            "package.json",
            r#"{"name":"t","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
        ),
        ("server.js", server_js),
    ])
}

#[tokio::test]
async fn metrics_count_known_traffic_and_a_deploy_exactly_and_never_reset() {
    let server = TestServer::start_with(&[("BERTH_METRICS_TOKEN", TOKEN)]).await;
    let source = known_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "shop", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());

    // Probes until the app answers (those that met it starting answered 5xx).
    let mut probes = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.edge("shop.localhost", "/ready").await.0 != 200 {
        probes += 1;
        assert!(Instant::now() < deadline, "the app never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..12 {
        assert_eq!(server.edge("shop.localhost", &format!("/ok/{i}")).await.0, 200);
    }
    for _ in 0..4 {
        assert_eq!(server.edge("shop.localhost", "/missing").await.0, 404);
    }
    for _ in 0..3 {
        assert_eq!(server.edge("shop.localhost", "/boom").await.0, 500);
    }
    let (ok, client, failed) = (1 + 12, 4, 3 + probes);
    let sent = ok + client + failed;

    // The tap is flushed into the recorder every 2 s.
    let site = [("site", "shop"), ("environment", "production")];
    let class = |c: &'static str| [("site", "shop"), ("environment", "production"), ("class", c)];
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = metrics(&server, TOKEN).await;
        if m.value("berth_edge_request_first_byte_seconds_count", &site) == Some(sent as f64) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the edge series never reached {sent} requests"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(m.types["berth_edge_requests_total"], "counter");
    assert_eq!(m.types["berth_edge_request_first_byte_seconds"], "histogram");
    assert_eq!(m.value("berth_edge_requests_total", &class("2xx")), Some(ok as f64));
    assert_eq!(m.value("berth_edge_requests_total", &class("4xx")), Some(client as f64));
    assert_eq!(m.value("berth_edge_requests_total", &class("5xx")), Some(failed as f64));
    assert_eq!(m.value("berth_edge_requests_total", &class("3xx")), Some(0.0));
    let mut inf = site.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        m.value("berth_edge_request_first_byte_seconds_bucket", &inf),
        Some(sent as f64)
    );
    assert_eq!(m.value("berth_edge_cold_starts_total", &site), Some(0.0));
    // No path ever becomes a label.
    assert!(m.samples.iter().all(|s| !s.labels.contains_key("path")));

    // The one deploy: a build, a deploy that went live, a deploy job done.
    assert_eq!(m.value("berth_build_duration_seconds_count", &[]), Some(1.0));
    assert_eq!(
        m.value("berth_deploy_duration_seconds_count", &[("outcome", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("berth_deploy_duration_seconds_count", &[("outcome", "failed")]),
        None
    );
    assert_eq!(
        m.value("berth_jobs", &[("kind", "deploy"), ("state", "done")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("berth_job_runs_total", &[("kind", "deploy"), ("outcome", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(m.value("berth_job_queue_depth", &[]), Some(0.0));
    assert!(m.value("berth_reconcile_passes_total", &[]).unwrap() >= 1.0);
    assert!(m.value("berth_uptime_seconds", &[]).unwrap() > 0.0);
    assert_eq!(m.value("berth_build_info", &[]), Some(1.0));
    assert!(
        m.value("berth_store_operation_seconds_count", &[("operation", "claim_job")])
            .unwrap()
            >= 1.0
    );

    // Errors by code: exactly the two not-found answers made now.
    let before = m.value("berth_errors_total", &[("code", "not_found")]).unwrap_or(0.0);
    for _ in 0..2 {
        assert_eq!(server.get("/api/sites/no-such-site").await.0, 404);
    }
    let m = metrics(&server, TOKEN).await;
    assert_eq!(
        m.value("berth_errors_total", &[("code", "not_found")]),
        Some(before + 2.0)
    );

    // Counters are the process's: flushes after the scrape keep them (no reset per drain).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = metrics(&server, TOKEN).await;
    assert_eq!(later.value("berth_edge_requests_total", &class("2xx")), Some(ok as f64));

    // The bootstrap admin key reads the same series.
    let by_key = metrics(&server, KEY).await;
    assert_eq!(
        by_key.value("berth_edge_requests_total", &class("4xx")),
        Some(client as f64)
    );

    // A deleted site's series go with it.
    assert_eq!(server.delete("/api/sites/shop").await.0, 200);
    let after = metrics(&server, TOKEN).await;
    assert!(!after.has_site("shop"));
}

#[tokio::test]
async fn metrics_refuse_missing_and_wrong_credentials_and_keys_without_the_right() {
    let server = TestServer::start_with(&[("BERTH_METRICS_TOKEN", TOKEN)]).await;
    let dir = app(&[("index.html", "<h1>hi</h1>")]);
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "mine", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics(&server, TOKEN).await.has_site("mine") {
        server.edge("mine.localhost", "/").await;
        assert!(Instant::now() < deadline, "no series for the site");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let (status, body) = scrape(&server, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("berth_edge"), "{body}");
    let (status, body) = scrape(&server, Some("scrape-token-0123456789abcdeX")).await;
    assert_eq!(status, 401, "a near miss of the token: {body}");
    assert!(!body.contains("berth_edge"), "{body}");

    // A viewer (and a developer) may not read the server's metrics.
    for role in ["viewer", "developer"] {
        let (status, out) = server
            .post("/api/keys", &json!({"name": role, "kind": "service", "role": role}))
            .await;
        assert_eq!(status, 201, "{out}");
        let (status, body) = scrape(&server, out["token"].as_str()).await;
        assert_eq!(status, 403, "{role}: {body}");
        assert!(body.contains("role admin"), "{body}");
    }

    // Another org's admin sees its own org's sites only: none of this one's.
    add_org(&server, "org_other", "other", "berth_other_admin_key_0123456789").await;
    let theirs = metrics(&server, "berth_other_admin_key_0123456789").await;
    assert!(!theirs.has_site("mine"), "{:?}", theirs.samples);
    assert!(metrics(&server, KEY).await.has_site("mine"));
    // The token is never in the server's log.
    assert!(!server.log().contains(TOKEN));
}

#[tokio::test]
async fn a_short_scrape_token_or_one_on_the_command_line_stops_the_start() {
    let data = data_dir();
    let out = serve_command(data.path())
        .env("BERTH_METRICS_TOKEN", "short")
        .output()
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 24"), "{err}");
    assert!(!err.contains("short\""), "{err}");
    // On the command line the token would be in the process list: refused before anything.
    let out = serve_command(data.path())
        .args(["--metrics-token", TOKEN])
        .output()
        .expect("run berth");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set BERTH_METRICS_TOKEN in the environment"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
}
