//! Traffic metrics from the edge's tap: the loop that moves the tap's counts into the
//! store every few seconds and rolls minutes into hours and days (pruning each by its
//! retention), and the tools `HOSTING_GET_METRICS_SUMMARY`, `HOSTING_GET_STATUS_CODES`,
//! `HOSTING_GET_TOP_PATHS` and `HOSTING_GET_USAGE_TIMELINE` with their time-range rules.
//!
//! A range is read at the finest resolution still kept for its start: minutes for the
//! last `--metrics-minutes-days`, else whole hours (then days) up to the current hour,
//! with the current hour from its minutes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_edge::{RELATIVE_ERROR, TapDrain};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::store::metrics::{self as store_metrics, Bucket, HOUR_MS, MINUTE_MS, Resolution, Retention};
use crate::util::{now_ms, rfc3339};

use super::{Platform, Service};

/// How often the tap's counts are moved into the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How often minutes are rolled up and old buckets pruned.
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);
/// Most points a timeline returns.
pub const MAX_TIMELINE_POINTS: i64 = 1500;
/// Most path templates `HOSTING_GET_TOP_PATHS` returns (and most templates
/// `HOSTING_GET_ERROR_PATTERNS` returns).
pub const MAX_TOP_PATHS: u32 = 100;
/// How far ahead of the server's clock `until` may be (clients' clocks drift).
const FUTURE_SLACK_MS: i64 = 60_000;

/// The time the metrics loop works at, in ms since the epoch (injectable for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(now_ms)
}

/// The singleton lease the rollups and pruning hold: one process on the database does
/// them (each replica flushes its own edge's counts).
pub const MAINTAIN_LEASE: &str = "metrics-maintenance";

/// Moves the tap's counts into the store every [`FLUSH_EVERY`] and, while this process
/// holds [`MAINTAIN_LEASE`], rolls up and prunes every minute, until `stop`; a last flush
/// on the way out.
pub async fn run(platform: Arc<Platform>, clock: Clock, stop: CancellationToken) {
    let maintainer = platform.jobs.singleton(MAINTAIN_LEASE, 3 * MAINTAIN_EVERY);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
    maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention = platform.config.metrics.retention();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = flush.tick() => record(&platform.store, platform.edge.drain_tap(), clock()).await,
            _ = maintain.tick() => {
                if maintainer.hold().await {
                    maintain_store(&platform.store, &retention, clock()).await;
                }
            }
        }
    }
    record(&platform.store, platform.edge.drain_tap(), clock()).await;
    maintainer.release().await;
}

/// Adds a drain of the tap to the minute buckets `now_ms` falls in, one per environment.
/// Traffic of an environment deleted meanwhile is dropped.
pub async fn record(store: &crate::store::Store, drain: TapDrain, now_ms: i64) {
    crate::prometheus::edge_traffic(&drain);
    let mut by_environment: HashMap<Arc<str>, (Arc<str>, Bucket)> = HashMap::new();
    // Each deployment's own total too, for comparing it with the one it replaced.
    let mut by_deployment: HashMap<Arc<str>, (Arc<str>, Bucket)> = HashMap::new();
    for traffic in &drain.sites {
        by_environment
            .entry(traffic.label.environment.clone())
            .or_insert_with(|| (traffic.label.site.clone(), Bucket::default()))
            .1
            .add_traffic(traffic);
        let deployment = by_deployment
            .entry(traffic.label.deployment.clone())
            .or_insert_with(|| (traffic.label.environment.clone(), Bucket::default()));
        deployment.1.requests += traffic.requests;
        for (code, n) in &traffic.statuses {
            *deployment.1.statuses.entry(*code).or_default() += n;
        }
        deployment.1.first_byte.merge(&traffic.first_byte);
    }
    for (deployment, (environment, bucket)) in by_deployment {
        if bucket.requests == 0 {
            continue;
        }
        if let Err(e) = store
            .record_deployment_metrics(&deployment, &environment, now_ms, &bucket)
            .await
        {
            tracing::debug!(deployment.id = %deployment, error = %e, "traffic of a deployment not recorded");
        }
    }
    for (environment, (site, bucket)) in by_environment {
        let recorded = crate::prometheus::time_store(
            "record_traffic",
            store.record_metrics_minute(&environment, &site, now_ms, &bucket),
        )
        .await;
        if let Err(e) = recorded {
            tracing::debug!(environment.id = %environment, error = %e, "traffic of an environment not recorded");
        }
    }
}

/// One rollup and prune pass at `now_ms`.
pub async fn maintain_store(store: &crate::store::Store, retention: &Retention, now_ms: i64) {
    let rolled = match store.rollup_metrics(now_ms).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "rolling up traffic metrics failed");
            return;
        }
    };
    match store.prune_metrics(now_ms, retention).await {
        Ok(pruned) => tracing::debug!(rolled, pruned, "traffic metrics maintained"),
        Err(e) => tracing::warn!(error = %e, "pruning traffic metrics failed"),
    }
    if let Err(e) = store.prune_usage(now_ms).await {
        tracing::warn!(error = %e, "pruning usage failed");
    }
}

/// The time range every metrics tool takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsRangeInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Start: a duration back from now (`90s`, `30m`, `24h`, `7d`) or an RFC 3339 time.
    /// Default 1 h ago. At most `--metrics-days-days` (400 days) back.
    #[serde(default)]
    pub since: Option<String>,
    /// End: same forms as `since`; default now; not in the future.
    #[serde(default)]
    pub until: Option<String>,
}

/// `HOSTING_GET_TOP_PATHS` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopPathsInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Start (see `HOSTING_GET_METRICS_SUMMARY`); default 1 h ago.
    #[serde(default)]
    pub since: Option<String>,
    /// End; default now.
    #[serde(default)]
    pub until: Option<String>,
    /// Path templates returned, 1 to 100 (default 20).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}

/// `HOSTING_GET_USAGE_TIMELINE` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimelineInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Start (see `HOSTING_GET_METRICS_SUMMARY`); default 1 h ago.
    #[serde(default)]
    pub since: Option<String>,
    /// End; default now.
    #[serde(default)]
    pub until: Option<String>,
    /// Point size: `1m` (ranges up to 25 h, minutes kept 7 days), `1h` (up to 62.5 days),
    /// `1d` (up to 400 days); at most 1,500 points. Default `1m`.
    #[serde(default)]
    pub resolution: Option<String>,
}

/// Latency quantiles in milliseconds, exact to `relative_error`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The totals of one period.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PeriodTotals {
    /// Start (RFC 3339).
    pub since: String,
    /// End (RFC 3339).
    pub until: String,
    /// Requests answered.
    pub requests: u64,
    /// Request body bytes forwarded to the app (chunked bodies included; bodies of
    /// requests answered without the app count 0).
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Share of requests answered 5xx (0 to 1).
    pub error_rate: f64,
    /// Share answered 4xx.
    pub client_error_rate: f64,
    /// Time to first byte, when there were requests.
    pub latency_ms: Option<Quantiles>,
    /// Mean time to the last byte in ms, when there were requests.
    pub mean_total_ms: Option<f64>,
    /// Requests held while a sleeping app woke.
    pub cold_starts: u64,
    /// Served from static files.
    pub static_files: u64,
    /// Proxied to the app.
    pub proxied: u64,
    /// Answered 304 Not Modified.
    pub not_modified: u64,
}

/// Change of this period against the one before it, in percent (none when the one before
/// had nothing to compare with).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PeriodChange {
    /// Requests.
    pub requests_percent: Option<f64>,
    /// Bytes sent.
    pub bytes_percent: Option<f64>,
    /// Error rate, in percentage points.
    pub error_rate_points: f64,
    /// p95 latency.
    pub p95_percent: Option<f64>,
}

/// Requests from one client country.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CountryCount {
    /// ISO 3166-1 alpha-2 code (`US`), or `unknown` for addresses the GeoIP database has
    /// no country for.
    pub country: String,
    /// Requests (a lower bound if the country was not among a bucket's 50 busiest).
    pub requests: u64,
    /// Share of the requests counted by country (0 to 1).
    pub share: f64,
}

/// `HOSTING_GET_METRICS_SUMMARY` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MetricsSummaryOutput {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// The coarsest bucket size the range was read at (`1m`, `1h`, `1d`): a range is read
    /// from the start of its first bucket.
    pub resolution: String,
    /// The range asked for.
    #[serde(flatten)]
    pub current: PeriodTotals,
    /// The period of the same length just before it.
    pub previous: PeriodTotals,
    /// This period against the previous one.
    pub change: PeriodChange,
    /// Requests of the range by client country, most first (at most 50); absent when no
    /// GeoIP database (`--geoip-db`) counted any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<CountryCount>,
    /// Requests from countries not among a bucket's 50 busiest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_countries: u64,
    /// The relative error of the latency quantiles (0.01: within 1 %).
    pub relative_error: f64,
    /// One line to act on.
    pub summary: String,
}

/// Requests of one status code.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusCount {
    /// The code.
    pub code: u16,
    /// Requests answered with it.
    pub requests: u64,
    /// Share of all requests (0 to 1).
    pub share: f64,
}

/// Requests of one status class.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusClassCount {
    /// `1xx` … `5xx`.
    pub class: String,
    /// Requests in it.
    pub requests: u64,
    /// Share of all requests (0 to 1).
    pub share: f64,
}

/// `HOSTING_GET_STATUS_CODES` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusCodesOutput {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// Start (RFC 3339).
    pub since: String,
    /// End (RFC 3339).
    pub until: String,
    /// Requests answered.
    pub requests: u64,
    /// By class, each of 1xx to 5xx.
    pub classes: Vec<StatusClassCount>,
    /// By code, most requests first.
    pub codes: Vec<StatusCount>,
    /// One line to act on.
    pub summary: String,
}

/// Requests to one path template.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PathStats {
    /// `METHOD /path/:id` (numbers `:id`, UUIDs `:uuid`, hex ids and tokens `:hash`,
    /// query dropped, at most 8 segments).
    pub template: String,
    /// Requests (a lower bound when `approximate`).
    pub requests: u64,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Share of all requests (0 to 1).
    pub share: f64,
    /// Whether the count may miss requests counted under `other` while it was not among
    /// the top 100 of a bucket.
    pub approximate: bool,
}

/// `HOSTING_GET_TOP_PATHS` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TopPathsOutput {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// Start (RFC 3339).
    pub since: String,
    /// End (RFC 3339).
    pub until: String,
    /// Requests answered.
    pub requests: u64,
    /// The busiest templates, most requests first.
    pub paths: Vec<PathStats>,
    /// Everything else (`template` is `other`).
    pub other: PathStats,
    /// One line to act on.
    pub summary: String,
}

/// One point of a timeline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TimelinePoint {
    /// Start of the point's bucket (RFC 3339).
    pub start: String,
    /// Requests.
    pub requests: u64,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Bytes received (request bodies).
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Cold starts.
    pub cold_starts: u64,
    /// Median time to first byte in ms, when there were requests.
    pub p50_ms: Option<f64>,
    /// p95 time to first byte in ms, when there were requests.
    pub p95_ms: Option<f64>,
}

/// `HOSTING_GET_USAGE_TIMELINE` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TimelineOutput {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// Start (RFC 3339, the start of its bucket).
    pub since: String,
    /// End (RFC 3339).
    pub until: String,
    /// `1m`, `1h` or `1d`.
    pub resolution: String,
    /// One point per bucket, oldest first, empty buckets included (at most 1,500).
    pub points: Vec<TimelinePoint>,
    /// One line to act on.
    pub summary: String,
}

/// One deployment's traffic since it first served.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentTrafficTotals {
    /// The deployment.
    pub deployment_id: String,
    /// Requests answered.
    pub requests: u64,
    /// Of them answered 5xx.
    pub server_errors: u64,
    /// Share answered 5xx (0 to 1).
    pub error_rate: f64,
    /// p95 time to first byte in ms (within 1 %).
    pub p95_ms: Option<f64>,
    /// Its first counted request (RFC 3339, to the tap's 2-second flush).
    pub since: String,
    /// Its latest counted request (RFC 3339).
    pub until: String,
}

/// A deployment's traffic against the deployment of the same environment that served
/// before it, in `HOSTING_GET_DEPLOYMENT` once it has served traffic.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentComparison {
    /// This deployment.
    pub current: DeploymentTrafficTotals,
    /// The newest older deployment of the environment that served traffic, if any.
    pub previous: Option<DeploymentTrafficTotals>,
    /// Error rate change in percentage points.
    pub error_rate_points: Option<f64>,
    /// p95 change in percent.
    pub p95_percent: Option<f64>,
    /// `worse` (5xx rate up by more than 1 point, or p95 over 1.5× and 25 ms slower),
    /// `better` (5xx rate down by more than 1 point, not slower), `mixed: fewer 5xx,
    /// slower`, `about the same`, or `no previous deployment`.
    pub verdict: String,
    /// One line to act on.
    pub summary: String,
}

/// A 5xx rate this many percentage points higher (or lower) than the previous
/// deployment's is a change.
const VERDICT_ERROR_POINTS: f64 = 1.0;
/// A p95 this much slower than the previous deployment's (×), and by at least
/// [`VERDICT_P95_MS`], is worse (a few milliseconds either way are noise).
const VERDICT_P95_RATIO: f64 = 1.5;
/// See [`VERDICT_P95_RATIO`].
const VERDICT_P95_MS: f64 = 25.0;

fn deployment_totals(t: &store_metrics::DeploymentTraffic) -> DeploymentTrafficTotals {
    DeploymentTrafficTotals {
        deployment_id: t.deployment_id.clone(),
        requests: t.requests,
        server_errors: t.server_errors,
        error_rate: if t.requests == 0 {
            0.0
        } else {
            t.server_errors as f64 / t.requests as f64
        },
        p95_ms: t.first_byte.quantile_micros(0.95).map(|us| round3(us / 1000.0)),
        since: rfc3339(t.first_ms),
        until: rfc3339(t.last_ms),
    }
}

/// Compares a deployment's traffic with its predecessor's.
fn compare(current: DeploymentTrafficTotals, previous: Option<DeploymentTrafficTotals>) -> DeploymentComparison {
    let describe = |t: &DeploymentTrafficTotals| {
        let p95 = t.p95_ms.map_or(String::new(), |ms| format!(", p95 {ms:.1} ms"));
        format!("{:.2}% 5xx over {} requests{p95}", t.error_rate * 100.0, t.requests)
    };
    let Some(prev) = previous else {
        let summary = format!(
            "{}: {}; no earlier deployment of this environment served traffic to compare with",
            current.deployment_id,
            describe(&current)
        );
        return DeploymentComparison {
            current,
            previous: None,
            error_rate_points: None,
            p95_percent: None,
            verdict: "no previous deployment".into(),
            summary,
        };
    };
    let points = (current.error_rate - prev.error_rate) * 100.0;
    let p95_percent = match (current.p95_ms, prev.p95_ms) {
        (Some(c), Some(p)) if p > 0.0 => Some((c - p) / p * 100.0),
        _ => None,
    };
    let slower = matches!(
        (current.p95_ms, prev.p95_ms),
        (Some(c), Some(p)) if c > p * VERDICT_P95_RATIO && c - p >= VERDICT_P95_MS
    );
    let verdict = if points > VERDICT_ERROR_POINTS {
        "worse"
    } else if points < -VERDICT_ERROR_POINTS && slower {
        "mixed: fewer 5xx, slower"
    } else if slower {
        "worse"
    } else if points < -VERDICT_ERROR_POINTS {
        "better"
    } else {
        "about the same"
    };
    let summary = format!(
        "{}: {} against {} for {} ({points:+.2} points{}): {verdict}",
        current.deployment_id,
        describe(&current),
        describe(&prev),
        prev.deployment_id,
        p95_percent.map_or(String::new(), |p| format!(", p95 {p:+.0}%"))
    );
    DeploymentComparison {
        current,
        previous: Some(prev),
        error_rate_points: Some(points),
        p95_percent,
        verdict: verdict.into(),
        summary,
    }
}

/// A checked time range, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) since: i64,
    pub(super) until: i64,
}

/// Reads `since`/`until` as a duration back from `now` or an RFC 3339 time.
fn parse_time(field: &'static str, text: &str, now: i64) -> ServiceResult<i64> {
    let text = text.trim();
    let bad = || {
        ServiceError::invalid(
            field,
            format!(
                "'{}' is neither a duration back from now (90s, 30m, 24h, 7d) nor an RFC 3339 time \
                 (2026-01-31T12:00:00Z)",
                text.chars().take(60).collect::<String>()
            ),
        )
    };
    if text.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let unit = match text.chars().last() {
        Some('s') => Some(1_000),
        Some('m') => Some(MINUTE_MS),
        Some('h') => Some(HOUR_MS),
        Some('d') => Some(store_metrics::DAY_MS),
        _ => None,
    };
    if let Some(unit) = unit
        && let Ok(n) = text[..text.len() - 1].parse::<u32>()
    {
        return Ok(now - i64::from(n) * unit);
    }
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| bad())?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Checks a tool's `limit` (default 20, 1 to [`MAX_TOP_PATHS`]).
pub(super) fn check_limit(limit: Option<u32>) -> ServiceResult<u32> {
    let limit = limit.unwrap_or(20);
    if !(1..=MAX_TOP_PATHS).contains(&limit) {
        return Err(ServiceError::invalid(
            "limit",
            format!("limit {limit} is out of range; give 1 to {MAX_TOP_PATHS}"),
        ));
    }
    Ok(limit)
}

/// Checks a range against the clock and the retention: not reversed, not in the future,
/// not older than anything kept.
fn check_range(since: Option<&str>, until: Option<&str>, now: i64, retention: &Retention) -> ServiceResult<Range> {
    let until = match until {
        Some(text) => parse_time("until", text, now)?,
        None => now,
    };
    if until > now + FUTURE_SLACK_MS {
        return Err(ServiceError::invalid(
            "until",
            format!(
                "until {} is in the future; the latest is now ({})",
                rfc3339(until),
                rfc3339(now)
            ),
        ));
    }
    let until = until.min(now);
    let since = match since {
        Some(text) => parse_time("since", text, now)?,
        None => until - HOUR_MS,
    };
    if since >= until {
        return Err(ServiceError::invalid(
            "since",
            format!(
                "since {} is not before until {}; give an earlier since (e.g. 1h) or a later until",
                rfc3339(since),
                rfc3339(until)
            ),
        ));
    }
    let oldest = now - retention.days_ms;
    if since < oldest {
        return Err(ServiceError::invalid(
            "since",
            format!(
                "since {} is older than anything kept: day buckets are kept {} days (--metrics-days-days), so the \
                 earliest is {}",
                rfc3339(since),
                retention.days_ms / store_metrics::DAY_MS,
                rfc3339(oldest)
            ),
        ));
    }
    Ok(Range { since, until })
}

impl Service {
    fn metrics_retention(&self) -> Retention {
        self.platform.config.metrics.retention()
    }

    /// A deployment's traffic against its predecessor's, once it has served any.
    pub(super) async fn deployment_comparison(
        &self,
        d: &crate::store::DeploymentRow,
    ) -> ServiceResult<Option<DeploymentComparison>> {
        let store = &self.platform.store;
        let Some(current) = store.deployment_traffic(&d.id).await? else {
            return Ok(None);
        };
        let previous = store
            .previous_deployment_traffic(&d.environment_id, d.created_at)
            .await?;
        Ok(Some(compare(
            deployment_totals(&current),
            previous.as_ref().map(deployment_totals),
        )))
    }

    /// The site and environment a metrics tool names, with its checked range.
    pub(super) async fn metrics_target(
        &self,
        actor: &Actor,
        site: &str,
        environment: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> ServiceResult<(crate::store::SiteRow, crate::store::EnvironmentRow, Range, i64)> {
        let (site, range, now) = self.metrics_site_range(actor, site, since, until).await?;
        let env = self
            .find_environment(&site, environment.unwrap_or("production"))
            .await?;
        Ok((site, env, range, now))
    }

    /// The site a metrics tool names, with its checked range (for tools that cover every
    /// environment of the site).
    pub(super) async fn metrics_site_range(
        &self,
        actor: &Actor,
        site: &str,
        since: Option<&str>,
        until: Option<&str>,
    ) -> ServiceResult<(crate::store::SiteRow, Range, i64)> {
        let site = self.find_site(actor, site).await?;
        let now = now_ms();
        let range = check_range(since, until, now, &self.metrics_retention())?;
        Ok((site, range, now))
    }

    /// The buckets covering `range`, each at the finest resolution kept for it (see the
    /// module's header), and the coarsest resolution used.
    async fn metrics_buckets(
        &self,
        environment_id: &str,
        range: Range,
        now: i64,
        finest: Resolution,
    ) -> ServiceResult<(Vec<Bucket>, Resolution)> {
        let store = &self.platform.store;
        let retention = self.metrics_retention();
        // Hours and days that ended are written before they are read.
        store.rollup_metrics(now).await?;
        let store = &store;
        let Range { since, until } = range;
        if finest == Resolution::Minute && since >= now - retention.minutes_ms {
            return Ok((
                store
                    .read_metrics(
                        environment_id,
                        Resolution::Minute,
                        Resolution::Minute.floor(since),
                        until,
                    )
                    .await?,
                Resolution::Minute,
            ));
        }
        let hour_cut = Resolution::Hour.floor(now);
        let day_cut = Resolution::Day.floor(now);
        let mut buckets = Vec::new();
        let coarsest;
        let mut hours_from = Resolution::Hour.floor(since);
        if finest == Resolution::Day || since < now - retention.hours_ms {
            let days_until = day_cut.min(until);
            buckets.extend(
                store
                    .read_metrics(
                        environment_id,
                        Resolution::Day,
                        Resolution::Day.floor(since),
                        days_until,
                    )
                    .await?,
            );
            hours_from = hours_from.max(day_cut);
            coarsest = Resolution::Day;
        } else {
            coarsest = Resolution::Hour;
        }
        buckets.extend(
            store
                .read_metrics(environment_id, Resolution::Hour, hours_from, hour_cut.min(until))
                .await?,
        );
        buckets.extend(
            store
                .read_metrics(
                    environment_id,
                    Resolution::Minute,
                    hour_cut.max(Resolution::Minute.floor(since)),
                    until,
                )
                .await?,
        );
        Ok((buckets, coarsest))
    }

    pub(super) async fn metrics_total(
        &self,
        environment_id: &str,
        range: Range,
        now: i64,
    ) -> ServiceResult<(Bucket, Resolution)> {
        let (buckets, resolution) = self
            .metrics_buckets(environment_id, range, now, Resolution::Minute)
            .await?;
        let mut total = Bucket::default();
        for bucket in &buckets {
            total.merge(bucket);
        }
        Ok((total, resolution))
    }

    /// `HOSTING_GET_METRICS_SUMMARY`.
    pub async fn get_metrics_summary(
        &self,
        actor: &Actor,
        input: &MetricsRangeInput,
    ) -> ServiceResult<MetricsSummaryOutput> {
        let (site, env, range, now) = self
            .metrics_target(
                actor,
                &input.site,
                input.environment.as_deref(),
                input.since.as_deref(),
                input.until.as_deref(),
            )
            .await?;
        let (current, resolution) = self.metrics_total(&env.id, range, now).await?;
        let (countries, other_countries) = country_counts(&current.countries);
        let length = range.until - range.since;
        let before = Range {
            since: (range.since - length).max(now - self.metrics_retention().days_ms),
            until: range.since,
        };
        let previous = if before.since < before.until {
            self.metrics_total(&env.id, before, now).await?.0
        } else {
            Bucket::default()
        };
        let current = totals(&current, range);
        let previous = totals(&previous, before);
        let percent = |now: f64, before: f64| (before > 0.0).then(|| (now - before) / before * 100.0);
        let change = PeriodChange {
            requests_percent: percent(current.requests as f64, previous.requests as f64),
            bytes_percent: percent(current.bytes_out as f64, previous.bytes_out as f64),
            error_rate_points: (current.error_rate - previous.error_rate) * 100.0,
            p95_percent: match (&current.latency_ms, &previous.latency_ms) {
                (Some(c), Some(p)) => percent(c.p95, p.p95),
                _ => None,
            },
        };
        let mut summary = summary_line(&site.name, &env.name, &current, &change);
        if let Some(top) = countries.first() {
            summary.push_str(&format!("; most from {} ({:.0}%)", top.country, top.share * 100.0));
        }
        Ok(MetricsSummaryOutput {
            site: site.name,
            environment: env.name,
            resolution: resolution.label().into(),
            current,
            previous,
            change,
            countries,
            other_countries,
            relative_error: RELATIVE_ERROR,
            summary,
        })
    }

    /// `HOSTING_GET_STATUS_CODES`.
    pub async fn get_status_codes(&self, actor: &Actor, input: &MetricsRangeInput) -> ServiceResult<StatusCodesOutput> {
        let (site, env, range, now) = self
            .metrics_target(
                actor,
                &input.site,
                input.environment.as_deref(),
                input.since.as_deref(),
                input.until.as_deref(),
            )
            .await?;
        let (total, _) = self.metrics_total(&env.id, range, now).await?;
        let share = |n: u64| {
            if total.requests == 0 {
                0.0
            } else {
                n as f64 / total.requests as f64
            }
        };
        let classes: Vec<StatusClassCount> = (1..=5)
            .map(|class| StatusClassCount {
                class: format!("{class}xx"),
                requests: total.class(class),
                share: share(total.class(class)),
            })
            .collect();
        let mut codes: Vec<StatusCount> = total
            .statuses
            .iter()
            .map(|(code, n)| StatusCount {
                code: *code,
                requests: *n,
                share: share(*n),
            })
            .collect();
        codes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.code.cmp(&b.code)));
        let summary = if total.requests == 0 {
            format!("{} {}: no requests in this range", site.name, env.name)
        } else {
            format!(
                "{} {}: {} requests; {}",
                site.name,
                env.name,
                total.requests,
                codes
                    .iter()
                    .take(5)
                    .map(|c| format!("{} × {}", c.code, c.requests))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Ok(StatusCodesOutput {
            site: site.name,
            environment: env.name,
            since: rfc3339(range.since),
            until: rfc3339(range.until),
            requests: total.requests,
            classes,
            codes,
            summary,
        })
    }

    /// `HOSTING_GET_TOP_PATHS`.
    pub async fn get_top_paths(&self, actor: &Actor, input: &TopPathsInput) -> ServiceResult<TopPathsOutput> {
        let limit = check_limit(input.limit)?;
        let (site, env, range, now) = self
            .metrics_target(
                actor,
                &input.site,
                input.environment.as_deref(),
                input.since.as_deref(),
                input.until.as_deref(),
            )
            .await?;
        let (total, _) = self.metrics_total(&env.id, range, now).await?;
        let share = |n: u64| {
            if total.requests == 0 {
                0.0
            } else {
                n as f64 / total.requests as f64
            }
        };
        let (ranked, mut rest) = total.paths.ranked();
        let mut paths = Vec::new();
        for entry in ranked {
            if paths.len() < limit as usize {
                paths.push(PathStats {
                    template: entry.template.clone(),
                    requests: entry.guaranteed(),
                    client_errors: entry.client_errors,
                    server_errors: entry.server_errors,
                    share: share(entry.guaranteed()),
                    approximate: entry.overcount > 0,
                });
            } else {
                rest.0 += entry.guaranteed();
                rest.1 += entry.client_errors;
                rest.2 += entry.server_errors;
            }
        }
        let summary = match paths.first() {
            None => format!("{} {}: no requests in this range", site.name, env.name),
            Some(top) => format!(
                "{} {}: {} requests over {} path templates; busiest {} ({} requests, {} 5xx)",
                site.name,
                env.name,
                total.requests,
                paths.len() + usize::from(rest.0 > 0),
                top.template,
                top.requests,
                top.server_errors
            ),
        };
        Ok(TopPathsOutput {
            site: site.name,
            environment: env.name,
            since: rfc3339(range.since),
            until: rfc3339(range.until),
            requests: total.requests,
            paths,
            other: PathStats {
                template: "other".into(),
                requests: rest.0,
                client_errors: rest.1,
                server_errors: rest.2,
                share: share(rest.0),
                approximate: false,
            },
            summary,
        })
    }

    /// `HOSTING_GET_USAGE_TIMELINE`.
    pub async fn get_usage_timeline(&self, actor: &Actor, input: &TimelineInput) -> ServiceResult<TimelineOutput> {
        let text = input.resolution.as_deref().unwrap_or("1m");
        let resolution = Resolution::parse(text).ok_or_else(|| {
            ServiceError::invalid(
                "resolution",
                format!(
                    "'{}' is not a resolution; use 1m, 1h or 1d",
                    text.chars().take(20).collect::<String>()
                ),
            )
        })?;
        let (site, env, range, now) = self
            .metrics_target(
                actor,
                &input.site,
                input.environment.as_deref(),
                input.since.as_deref(),
                input.until.as_deref(),
            )
            .await?;
        let start = resolution.floor(range.since);
        let points = (range.until - start + resolution.ms() - 1) / resolution.ms();
        if points > MAX_TIMELINE_POINTS {
            let most = MAX_TIMELINE_POINTS * resolution.ms();
            return Err(ServiceError::invalid(
                "resolution",
                format!(
                    "a {} timeline covers at most {} ({MAX_TIMELINE_POINTS} points); this range needs {points}: ask \
                     for a coarser resolution or a shorter range",
                    resolution.label(),
                    human_duration(most)
                ),
            ));
        }
        let retention = self.metrics_retention();
        if range.since < now - retention.of(resolution) {
            return Err(ServiceError::invalid(
                "since",
                format!(
                    "{} buckets are kept {} days, so a {} timeline starts at {} at the earliest; ask for a coarser \
                     resolution",
                    resolution.label(),
                    retention.of(resolution) / store_metrics::DAY_MS,
                    resolution.label(),
                    rfc3339(now - retention.of(resolution))
                ),
            ));
        }
        let (buckets, _) = self.metrics_buckets(&env.id, range, now, resolution).await?;
        let mut merged: Vec<Bucket> = (0..points)
            .map(|i| Bucket {
                start_ms: start + i * resolution.ms(),
                ..Bucket::default()
            })
            .collect();
        for bucket in &buckets {
            let index = (resolution.floor(bucket.start_ms) - start) / resolution.ms();
            if let Some(point) = usize::try_from(index).ok().and_then(|i| merged.get_mut(i)) {
                point.merge(bucket);
            }
        }
        let points: Vec<TimelinePoint> = merged
            .iter()
            .map(|b| TimelinePoint {
                start: rfc3339(b.start_ms),
                requests: b.requests,
                client_errors: b.class(4),
                server_errors: b.class(5),
                bytes_in: b.bytes_in,
                bytes_out: b.bytes_out,
                cold_starts: b.cold_starts,
                p50_ms: b.first_byte.quantile_micros(0.5).map(|us| round3(us / 1000.0)),
                p95_ms: b.first_byte.quantile_micros(0.95).map(|us| round3(us / 1000.0)),
            })
            .collect();
        let busiest = points.iter().max_by_key(|p| p.requests);
        let total: u64 = points.iter().map(|p| p.requests).sum();
        let summary = match busiest {
            Some(p) if total > 0 => format!(
                "{} {}: {} requests in {} points of {}; busiest {} ({} requests, {} 5xx)",
                site.name,
                env.name,
                total,
                points.len(),
                resolution.label(),
                p.start,
                p.requests,
                p.server_errors
            ),
            _ => format!("{} {}: no requests in this range", site.name, env.name),
        };
        Ok(TimelineOutput {
            site: site.name,
            environment: env.name,
            since: rfc3339(start),
            until: rfc3339(range.until),
            resolution: resolution.label().into(),
            points,
            summary,
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A range's countries, most requests first, and the requests of those not kept apart.
pub(super) fn country_counts(countries: &store_metrics::Countries) -> (Vec<CountryCount>, u64) {
    let total: u64 = countries.counts.values().sum::<u64>() + countries.other;
    let list = countries
        .ranked()
        .into_iter()
        .map(|(country, requests)| CountryCount {
            country: country.to_string(),
            requests,
            share: requests as f64 / total.max(1) as f64,
        })
        .collect();
    (list, countries.other)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn human_duration(ms: i64) -> String {
    let hours = ms as f64 / HOUR_MS as f64;
    if hours < 48.0 {
        format!("{hours} h")
    } else {
        format!("{} days", hours / 24.0)
    }
}

fn totals(bucket: &Bucket, range: Range) -> PeriodTotals {
    let rate = |n: u64| {
        if bucket.requests == 0 {
            0.0
        } else {
            n as f64 / bucket.requests as f64
        }
    };
    let q = |p: f64| bucket.first_byte.quantile_micros(p).map(|us| round3(us / 1000.0));
    PeriodTotals {
        since: rfc3339(range.since),
        until: rfc3339(range.until),
        requests: bucket.requests,
        bytes_in: bucket.bytes_in,
        bytes_out: bucket.bytes_out,
        error_rate: rate(bucket.class(5)),
        client_error_rate: rate(bucket.class(4)),
        latency_ms: match (q(0.5), q(0.9), q(0.95), q(0.99)) {
            (Some(p50), Some(p90), Some(p95), Some(p99)) => Some(Quantiles { p50, p90, p95, p99 }),
            _ => None,
        },
        mean_total_ms: (bucket.requests > 0)
            .then(|| round3(bucket.total_micros as f64 / bucket.requests as f64 / 1000.0)),
        cold_starts: bucket.cold_starts,
        static_files: bucket.static_files,
        proxied: bucket.proxied,
        not_modified: bucket.not_modified,
    }
}

fn summary_line(site: &str, environment: &str, current: &PeriodTotals, change: &PeriodChange) -> String {
    if current.requests == 0 {
        return format!("{site} {environment}: no requests in this range");
    }
    let trend = match change.requests_percent {
        Some(p) => format!(" ({p:+.0}% against the period before)"),
        None => String::new(),
    };
    let latency = match &current.latency_ms {
        Some(q) => format!("; p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms", q.p50, q.p95, q.p99),
        None => String::new(),
    };
    format!(
        "{site} {environment}: {} requests{trend}, {:.2}% 5xx, {:.1} KiB received, {:.1} KiB sent{latency}; {} \
         cold starts",
        current.requests,
        current.error_rate * 100.0,
        current.bytes_in as f64 / 1024.0,
        current.bytes_out as f64 / 1024.0,
        current.cold_starts
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn retention() -> Retention {
        Retention {
            minutes_ms: 7 * store_metrics::DAY_MS,
            hours_ms: 90 * store_metrics::DAY_MS,
            days_ms: 400 * store_metrics::DAY_MS,
        }
    }

    fn totals(id: &str, requests: u64, server_errors: u64, p95_ms: f64) -> DeploymentTrafficTotals {
        DeploymentTrafficTotals {
            deployment_id: id.into(),
            requests,
            server_errors,
            error_rate: server_errors as f64 / requests as f64,
            p95_ms: Some(p95_ms),
            since: String::new(),
            until: String::new(),
        }
    }

    #[test]
    fn a_deployment_is_compared_with_its_predecessor() {
        let verdict = |c, p| compare(c, Some(p)).verdict;
        assert_eq!(verdict(totals("b", 100, 5, 10.0), totals("a", 100, 0, 10.0)), "worse");
        assert_eq!(verdict(totals("b", 100, 0, 10.0), totals("a", 100, 5, 10.0)), "better");
        assert_eq!(
            verdict(totals("b", 100, 1, 30.0), totals("a", 100, 1, 10.0)),
            "about the same",
            "20 ms is noise"
        );
        assert_eq!(verdict(totals("b", 100, 1, 300.0), totals("a", 100, 1, 100.0)), "worse");
        assert_eq!(
            verdict(totals("b", 100, 0, 300.0), totals("a", 100, 9, 100.0)),
            "mixed: fewer 5xx, slower"
        );
        let alone = compare(totals("b", 10, 1, 5.0), None);
        assert_eq!(alone.verdict, "no previous deployment");
        assert!(
            alone.summary.contains("10.00% 5xx over 10 requests"),
            "{}",
            alone.summary
        );
        let c = compare(totals("b", 200, 2, 10.0), totals("a", 100, 3, 10.0).into());
        assert_eq!(c.error_rate_points.map(|p| (p * 100.0).round() / 100.0), Some(-2.0));
        assert!(c.summary.ends_with(": better"), "{}", c.summary);
    }

    #[test]
    fn ranges_are_checked_against_the_clock_and_the_retention() {
        let r = check_range(Some("2h"), None, NOW, &retention()).unwrap();
        assert_eq!((r.since, r.until), (NOW - 2 * HOUR_MS, NOW));
        let r = check_range(None, Some("30m"), NOW, &retention()).unwrap();
        assert_eq!(
            (r.since, r.until),
            (NOW - 30 * MINUTE_MS - HOUR_MS, NOW - 30 * MINUTE_MS)
        );
        let err = |since: Option<&str>, until: Option<&str>| {
            check_range(since, until, NOW, &retention()).unwrap_err().to_string()
        };
        assert!(err(Some("1h"), Some("2h")).contains("is not before until"));
        assert!(err(None, Some("2099-01-01T00:00:00Z")).contains("in the future"));
        assert!(err(Some("401d"), None).contains("kept 400 days"));
        assert!(err(Some("yesterday"), None).contains("neither a duration"));
    }
}
