//! SQL of traffic metrics: each site+environment's buckets of one minute, one hour and one
//! day (table `metrics_buckets`), what one bucket holds ([`Bucket`]: counts by status code,
//! bytes, cold starts, a latency sketch, a space-saving top-K of path templates and the
//! busiest client countries), the
//! rollup that recomputes an hour from its minutes and a day from its hours, and pruning
//! by age per resolution.
//!
//! Every function takes the time it works at (`now_ms`), so a test can drive rollups and
//! pruning across minute, hour and day boundaries without waiting for them.

use std::collections::BTreeMap;

use berth_edge::{LatencySketch, SiteTraffic};
use serde::{Deserialize, Serialize};
use sqlx::{AnyExecutor, FromRow};

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// Path templates a bucket keeps apart (the rest add up to `other`).
pub const TOP_PATHS: usize = 100;
/// Client countries a bucket keeps apart (the rest add up to `other`).
pub const TOP_COUNTRIES: usize = 50;

/// The size of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl Resolution {
    /// Its length in milliseconds.
    pub fn ms(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
            Resolution::Day => DAY_MS,
        }
    }

    /// Its name in tools: `1m`, `1h`, `1d`.
    pub fn label(self) -> &'static str {
        match self {
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
            Resolution::Day => "1d",
        }
    }

    /// Reads a tool's name for it.
    pub fn parse(text: &str) -> Option<Resolution> {
        match text.trim() {
            "1m" => Some(Resolution::Minute),
            "1h" => Some(Resolution::Hour),
            "1d" => Some(Resolution::Day),
            _ => None,
        }
    }

    /// The start of the bucket `ms` falls in.
    pub fn floor(self, ms: i64) -> i64 {
        ms.div_euclid(self.ms()) * self.ms()
    }

    fn seconds(self) -> i64 {
        self.ms() / 1000
    }
}

/// How long each resolution is kept, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Minute buckets (default 7 days).
    pub minutes_ms: i64,
    /// Hour buckets (default 90 days).
    pub hours_ms: i64,
    /// Day buckets (default 400 days).
    pub days_ms: i64,
}

impl Retention {
    /// How long `resolution` is kept.
    pub fn of(&self, resolution: Resolution) -> i64 {
        match resolution {
            Resolution::Minute => self.minutes_ms,
            Resolution::Hour => self.hours_ms,
            Resolution::Day => self.days_ms,
        }
    }
}

/// One path template's count in a [`TopPaths`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCount {
    /// `METHOD /path/:id`.
    #[serde(rename = "t")]
    pub template: String,
    /// Requests counted for it: exact when `overcount` is 0, else at most this many.
    #[serde(rename = "n")]
    pub requests: u64,
    /// How many of `requests` it may have inherited from the template it replaced.
    #[serde(rename = "o", default, skip_serializing_if = "is_zero")]
    pub overcount: u64,
    /// Its requests answered 4xx (those counted since it was kept).
    #[serde(rename = "c", default, skip_serializing_if = "is_zero")]
    pub client_errors: u64,
    /// Its requests answered 5xx (those counted since it was kept).
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    pub server_errors: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl PathCount {
    /// Requests it certainly had.
    pub fn guaranteed(&self) -> u64 {
        self.requests - self.overcount
    }
}

/// A bounded top-K of path templates (space-saving, Metwally et al.): at most
/// [`TOP_PATHS`] entries; a new template that finds it full replaces the smallest entry
/// and inherits its count as `overcount`. Any template with more than `total / K`
/// requests is kept, and each kept count is within its `overcount` of the truth; what the
/// kept entries certainly had, subtracted from the totals, is reported as `other`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopPaths {
    /// Kept templates.
    #[serde(rename = "k")]
    pub entries: Vec<PathCount>,
    /// All requests offered.
    #[serde(rename = "n")]
    pub total_requests: u64,
    /// All 4xx offered.
    #[serde(rename = "c")]
    pub total_client_errors: u64,
    /// All 5xx offered.
    #[serde(rename = "s")]
    pub total_server_errors: u64,
}

impl TopPaths {
    /// Counts `requests` (with their errors) for `template`.
    pub fn offer(&mut self, template: &str, requests: u64, client_errors: u64, server_errors: u64) {
        self.total_requests += requests;
        self.total_client_errors += client_errors;
        self.total_server_errors += server_errors;
        if requests == 0 {
            return;
        }
        if let Some(entry) = self.entries.iter_mut().find(|e| e.template == template) {
            entry.requests += requests;
            entry.client_errors += client_errors;
            entry.server_errors += server_errors;
            return;
        }
        let entry = PathCount {
            template: template.to_string(),
            requests,
            overcount: 0,
            client_errors,
            server_errors,
        };
        if self.entries.len() < TOP_PATHS {
            self.entries.push(entry);
            return;
        }
        let Some(smallest) = self
            .entries
            .iter_mut()
            .min_by(|a, b| a.requests.cmp(&b.requests).then_with(|| b.template.cmp(&a.template)))
        else {
            return;
        };
        let floor = smallest.requests;
        *smallest = PathCount {
            requests: floor + requests,
            overcount: floor,
            ..entry
        };
    }

    /// Counts requests that belong to no kept template.
    pub fn offer_other(&mut self, requests: u64, client_errors: u64, server_errors: u64) {
        self.total_requests += requests;
        self.total_client_errors += client_errors;
        self.total_server_errors += server_errors;
    }

    /// Adds another bucket's paths: each kept template with what it certainly had, the
    /// rest as `other`.
    pub fn merge(&mut self, other: &TopPaths) {
        let (mut requests, mut client, mut server) = (0, 0, 0);
        for entry in &other.entries {
            self.offer(
                &entry.template,
                entry.guaranteed(),
                entry.client_errors,
                entry.server_errors,
            );
            requests += entry.guaranteed();
            client += entry.client_errors;
            server += entry.server_errors;
        }
        self.offer_other(
            other.total_requests.saturating_sub(requests),
            other.total_client_errors.saturating_sub(client),
            other.total_server_errors.saturating_sub(server),
        );
    }

    /// The kept templates, most requests first (ties by name), and what the rest add up to
    /// as `(requests, 4xx, 5xx)`.
    pub fn ranked(&self) -> (Vec<&PathCount>, (u64, u64, u64)) {
        let mut ranked: Vec<&PathCount> = self.entries.iter().collect();
        ranked.sort_by(|a, b| {
            b.guaranteed()
                .cmp(&a.guaranteed())
                .then_with(|| a.template.cmp(&b.template))
        });
        let kept: u64 = ranked.iter().map(|e| e.guaranteed()).sum();
        let client: u64 = ranked.iter().map(|e| e.client_errors).sum();
        let server: u64 = ranked.iter().map(|e| e.server_errors).sum();
        (
            ranked,
            (
                self.total_requests.saturating_sub(kept),
                self.total_client_errors.saturating_sub(client),
                self.total_server_errors.saturating_sub(server),
            ),
        )
    }
}

/// Requests by client country (an ISO 3166-1 alpha-2 code, or `unknown` for addresses the
/// GeoIP database has no country for): the [`TOP_COUNTRIES`] busiest, the rest added up as
/// `other`. Empty without a GeoIP database. A country's count is exact unless it fell
/// into `other` in some bucket it is merged from; then it is a lower bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Countries {
    /// Requests per country kept apart.
    #[serde(rename = "k", default)]
    pub counts: BTreeMap<String, u64>,
    /// Requests of the countries not kept apart.
    #[serde(rename = "o", default, skip_serializing_if = "is_zero")]
    pub other: u64,
}

impl Countries {
    /// Counts `requests` from `country`, keeping the bound.
    pub fn add(&mut self, country: &str, requests: u64) {
        if requests == 0 {
            return;
        }
        match self.counts.get_mut(country) {
            Some(n) => *n += requests,
            None => {
                self.counts.insert(country.to_string(), requests);
                self.bound();
            }
        }
    }

    /// Adds another bucket's countries.
    pub fn merge(&mut self, other: &Countries) {
        for (country, n) in &other.counts {
            *self.counts.entry(country.clone()).or_default() += n;
        }
        self.other += other.other;
        self.bound();
    }

    /// Whether no request had a country looked up.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.other == 0
    }

    /// The countries kept, most requests first (ties by code).
    pub fn ranked(&self) -> Vec<(&str, u64)> {
        let mut ranked: Vec<(&str, u64)> = self.counts.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked
    }

    /// Keeps the [`TOP_COUNTRIES`] busiest (ties by code), adding the rest to `other`.
    fn bound(&mut self) {
        if self.counts.len() <= TOP_COUNTRIES {
            return;
        }
        let keep: Vec<String> = self
            .ranked()
            .into_iter()
            .take(TOP_COUNTRIES)
            .map(|(c, _)| c.to_string())
            .collect();
        let mut dropped = 0;
        self.counts.retain(|c, n| {
            let kept = keep.contains(c);
            if !kept {
                dropped += *n;
            }
            kept
        });
        self.other += dropped;
    }
}

/// What one bucket of one site+environment holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    /// Its start, in ms since the epoch.
    pub start_ms: i64,
    /// Its size.
    pub resolution: Option<Resolution>,
    /// Requests answered.
    pub requests: u64,
    /// Requests by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Request body bytes forwarded to the app.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Served from static files.
    pub static_files: u64,
    /// Proxied to app instances.
    pub proxied: u64,
    /// Answered 304.
    pub not_modified: u64,
    /// Held while a sleeping app woke.
    pub cold_starts: u64,
    /// Sum of the requests' total times, in microseconds.
    pub total_micros: u64,
    /// Time to first byte.
    pub first_byte: LatencySketch,
    /// Top path templates.
    pub paths: TopPaths,
    /// Requests by client country.
    pub countries: Countries,
}

impl Bucket {
    /// Adds what the edge's tap counted for one label.
    pub fn add_traffic(&mut self, traffic: &SiteTraffic) {
        self.requests += traffic.requests;
        for (code, n) in &traffic.statuses {
            *self.statuses.entry(*code).or_default() += n;
        }
        self.bytes_in += traffic.bytes_in;
        self.bytes_out += traffic.bytes_out;
        self.static_files += traffic.static_files;
        self.proxied += traffic.proxied;
        self.not_modified += traffic.not_modified;
        self.cold_starts += traffic.cold_starts;
        self.total_micros += traffic.total_micros;
        self.first_byte.merge(&traffic.first_byte);
        for path in &traffic.paths {
            self.paths
                .offer(&path.template, path.requests, path.client_errors, path.server_errors);
        }
        let other = &traffic.other_paths;
        self.paths
            .offer_other(other.requests, other.client_errors, other.server_errors);
        for (country, n) in &traffic.countries {
            self.countries.add(country, *n);
        }
    }

    /// Adds another bucket.
    pub fn merge(&mut self, other: &Bucket) {
        self.requests += other.requests;
        for (code, n) in &other.statuses {
            *self.statuses.entry(*code).or_default() += n;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.static_files += other.static_files;
        self.proxied += other.proxied;
        self.not_modified += other.not_modified;
        self.cold_starts += other.cold_starts;
        self.total_micros += other.total_micros;
        self.first_byte.merge(&other.first_byte);
        self.paths.merge(&other.paths);
        self.countries.merge(&other.countries);
    }

    /// Requests whose status is in `class` (2 for 2xx, …).
    pub fn class(&self, class: u16) -> u64 {
        self.statuses
            .iter()
            .filter(|(code, _)| **code / 100 == class)
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(FromRow)]
struct BucketRow {
    resolution: i64,
    start_ms: i64,
    requests: i64,
    statuses: String,
    bytes_in: i64,
    bytes_out: i64,
    static_files: i64,
    proxied: i64,
    not_modified: i64,
    cold_starts: i64,
    total_micros: i64,
    first_byte: Vec<u8>,
    paths: String,
    countries: String,
}

/// The columns a [`BucketRow`] reads, as a literal for `concat!`.
macro_rules! bucket_columns {
    () => {
        "resolution, start_ms, requests, statuses, bytes_in, bytes_out, static_files, proxied, not_modified, cold_starts, \
         total_micros, first_byte, paths, countries"
    };
}

impl BucketRow {
    fn into_bucket(self) -> Bucket {
        let statuses: BTreeMap<String, u64> = serde_json::from_str(&self.statuses).unwrap_or_default();
        Bucket {
            start_ms: self.start_ms,
            resolution: [Resolution::Minute, Resolution::Hour, Resolution::Day]
                .into_iter()
                .find(|r| r.seconds() == self.resolution),
            requests: self.requests.max(0) as u64,
            statuses: statuses
                .into_iter()
                .filter_map(|(code, n)| Some((code.parse().ok()?, n)))
                .collect(),
            bytes_in: self.bytes_in.max(0) as u64,
            bytes_out: self.bytes_out.max(0) as u64,
            static_files: self.static_files.max(0) as u64,
            proxied: self.proxied.max(0) as u64,
            not_modified: self.not_modified.max(0) as u64,
            cold_starts: self.cold_starts.max(0) as u64,
            total_micros: self.total_micros.max(0) as u64,
            first_byte: LatencySketch::decode(&self.first_byte).unwrap_or_default(),
            paths: serde_json::from_str(&self.paths).unwrap_or_default(),
            countries: serde_json::from_str(&self.countries).unwrap_or_default(),
        }
    }
}

/// Writes `bucket` as the row of (`environment_id`, `resolution`, `start_ms`), replacing
/// what was there and marking it not rolled into the next resolution yet.
async fn put<'e>(
    db: impl AnyExecutor<'e>,
    environment_id: &str,
    site_id: &str,
    resolution: Resolution,
    start_ms: i64,
    bucket: &Bucket,
) -> sqlx::Result<()> {
    let statuses: BTreeMap<String, u64> = bucket.statuses.iter().map(|(c, n)| (c.to_string(), *n)).collect();
    sqlx::query(
        "INSERT INTO metrics_buckets (environment_id, resolution, start_ms, site_id, requests, \
         statuses, bytes_in, bytes_out, static_files, proxied, not_modified, cold_starts, total_micros, first_byte, \
         paths, countries, rolled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0) \
         ON CONFLICT (environment_id, resolution, start_ms) DO UPDATE SET site_id = excluded.site_id, \
         requests = excluded.requests, statuses = excluded.statuses, bytes_in = excluded.bytes_in, \
         bytes_out = excluded.bytes_out, static_files = excluded.static_files, proxied = excluded.proxied, \
         not_modified = excluded.not_modified, cold_starts = excluded.cold_starts, \
         total_micros = excluded.total_micros, first_byte = excluded.first_byte, paths = excluded.paths, \
         countries = excluded.countries, rolled = 0",
    )
    .bind(environment_id)
    .bind(resolution.seconds())
    .bind(start_ms)
    .bind(site_id)
    .bind(bucket.requests as i64)
    .bind(serde_json::to_string(&statuses).unwrap_or_else(|_| "{}".into()))
    .bind(bucket.bytes_in as i64)
    .bind(bucket.bytes_out as i64)
    .bind(bucket.static_files as i64)
    .bind(bucket.proxied as i64)
    .bind(bucket.not_modified as i64)
    .bind(bucket.cold_starts as i64)
    .bind(bucket.total_micros as i64)
    .bind(bucket.first_byte.encode())
    .bind(serde_json::to_string(&bucket.paths).unwrap_or_else(|_| "{}".into()))
    .bind(serde_json::to_string(&bucket.countries).unwrap_or_else(|_| "{}".into()))
    .execute(db)
    .await
    .map(drop)
}

impl super::Store {
    /// Adds `traffic` to the minute bucket of `environment_id` that `at_ms` falls in. One
    /// transaction: read, merge, write.
    pub async fn record_metrics_minute(
        &self,
        environment_id: &str,
        site_id: &str,
        at_ms: i64,
        traffic: &Bucket,
    ) -> sqlx::Result<()> {
        let store = self;
        let start = Resolution::Minute.floor(at_ms);
        let mut tx = store.begin().await?;
        let mut bucket = sqlx::query_as::<_, BucketRow>(concat!(
            "SELECT ",
            bucket_columns!(),
            " FROM metrics_buckets WHERE environment_id = $1 AND resolution = $2 AND start_ms = $3"
        ))
        .bind(environment_id)
        .bind(Resolution::Minute.seconds())
        .bind(start)
        .fetch_optional(&mut *tx)
        .await?
        .map(BucketRow::into_bucket)
        .unwrap_or_default();
        bucket.merge(traffic);
        put(&mut *tx, environment_id, site_id, Resolution::Minute, start, &bucket).await?;
        // The org's usage, counted with the bucket: once, and kept after the bucket goes.
        super::usage::add_traffic(&mut *tx, site_id, at_ms, traffic.requests, traffic.bytes_out).await?;
        tx.commit().await
    }
}

/// The buckets of `environment_id` at `resolution` starting in `[since_ms, until_ms)`,
/// oldest first.
pub(in crate::store) async fn read<'e>(
    db: impl AnyExecutor<'e>,
    environment_id: &str,
    resolution: Resolution,
    since_ms: i64,
    until_ms: i64,
) -> sqlx::Result<Vec<Bucket>> {
    Ok(sqlx::query_as::<_, BucketRow>(concat!(
        "SELECT ",
        bucket_columns!(),
        " FROM metrics_buckets WHERE environment_id = $1 AND resolution = $2 AND start_ms >= $3 AND start_ms < $4 \
         ORDER BY start_ms"
    ))
    .bind(environment_id)
    .bind(resolution.seconds())
    .bind(since_ms)
    .bind(until_ms)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(BucketRow::into_bucket)
    .collect())
}

impl super::Store {
    /// The buckets of `environment_id` at `resolution` starting in `[since_ms, until_ms)`,
    /// oldest first.
    pub async fn read_metrics(
        &self,
        environment_id: &str,
        resolution: Resolution,
        since_ms: i64,
        until_ms: i64,
    ) -> sqlx::Result<Vec<Bucket>> {
        read(&self.pool, environment_id, resolution, since_ms, until_ms).await
    }

    /// Recomputes every hour (from its minutes) and then every day (from its hours) that
    /// has a bucket not rolled into it yet and has ended by `now_ms`; returns how many
    /// coarser buckets were written. Idempotent: the coarser bucket is always the merge of all
    /// its finer ones.
    pub async fn rollup_metrics(&self, now_ms: i64) -> sqlx::Result<u64> {
        let store = self;
        let mut written = 0;
        for (fine, coarse) in [
            (Resolution::Minute, Resolution::Hour),
            (Resolution::Hour, Resolution::Day),
        ] {
            let pending: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT DISTINCT environment_id, site_id, (start_ms / $1) * $2 FROM metrics_buckets \
                 WHERE rolled = 0 AND resolution = $3 AND start_ms < $4",
            )
            .bind(coarse.ms())
            .bind(coarse.ms())
            .bind(fine.seconds())
            .bind(coarse.floor(now_ms))
            .fetch_all(store.pool())
            .await?;
            for (environment_id, site_id, start) in pending {
                let mut tx = store.begin().await?;
                let mut whole = Bucket::default();
                for bucket in read(&mut *tx, &environment_id, fine, start, start + coarse.ms()).await? {
                    whole.merge(&bucket);
                }
                put(&mut *tx, &environment_id, &site_id, coarse, start, &whole).await?;
                sqlx::query(
                    "UPDATE metrics_buckets SET rolled = 1 WHERE environment_id = $1 AND resolution = $2 \
                     AND start_ms >= $3 AND start_ms < $4 AND rolled = 0",
                )
                .bind(&environment_id)
                .bind(fine.seconds())
                .bind(start)
                .bind(start + coarse.ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Removes the buckets of each resolution older than its retention at `now_ms`; returns
    /// how many. Run after [`rollup`], so nothing goes before it is rolled up.
    pub async fn prune_metrics(&self, now_ms: i64, retention: &Retention) -> sqlx::Result<u64> {
        let store = self;
        let mut removed = 0;
        for resolution in [Resolution::Minute, Resolution::Hour, Resolution::Day] {
            removed += sqlx::query("DELETE FROM metrics_buckets WHERE resolution = $1 AND start_ms < $2")
                .bind(resolution.seconds())
                .bind(now_ms - retention.of(resolution))
                .execute(store.pool())
                .await?
                .rows_affected();
        }
        Ok(removed)
    }
}

/// One deployment's traffic since it first served (table `deployment_traffic`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentTraffic {
    /// The deployment.
    pub deployment_id: String,
    /// Requests answered.
    pub requests: u64,
    /// Of them answered 5xx.
    pub server_errors: u64,
    /// Time to first byte.
    pub first_byte: LatencySketch,
    /// Its first counted request (ms, to the tap's flush).
    pub first_ms: i64,
    /// Its latest counted request (ms, to the tap's flush).
    pub last_ms: i64,
}

type TrafficRow = (String, i64, i64, Vec<u8>, i64, i64);

fn traffic_of(row: TrafficRow) -> DeploymentTraffic {
    DeploymentTraffic {
        deployment_id: row.0,
        requests: row.1.max(0) as u64,
        server_errors: row.2.max(0) as u64,
        first_byte: LatencySketch::decode(&row.3).unwrap_or_default(),
        first_ms: row.4,
        last_ms: row.5,
    }
}

impl super::Store {
    /// Adds a flush's traffic of one deployment (`requests`, 5xx, latencies) at `at_ms`. One
    /// transaction: read, merge, write.
    pub async fn record_deployment_metrics(
        &self,
        deployment_id: &str,
        environment_id: &str,
        at_ms: i64,
        traffic: &Bucket,
    ) -> sqlx::Result<()> {
        let store = self;
        let mut tx = store.begin().await?;
        let known: Option<TrafficRow> = sqlx::query_as(
            "SELECT deployment_id, requests, server_errors, first_byte, first_ms, last_ms FROM deployment_traffic \
             WHERE deployment_id = $1",
        )
        .bind(deployment_id)
        .fetch_optional(&mut *tx)
        .await?;
        let mut total = known.map(traffic_of).unwrap_or(DeploymentTraffic {
            first_ms: at_ms,
            ..DeploymentTraffic::default()
        });
        total.requests += traffic.requests;
        total.server_errors += traffic.class(5);
        total.first_byte.merge(&traffic.first_byte);
        total.last_ms = at_ms;
        sqlx::query(
            "INSERT INTO deployment_traffic (deployment_id, environment_id, requests, server_errors, \
             first_byte, first_ms, last_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (deployment_id) DO UPDATE SET environment_id = excluded.environment_id, \
             requests = excluded.requests, server_errors = excluded.server_errors, first_byte = excluded.first_byte, \
             first_ms = excluded.first_ms, last_ms = excluded.last_ms",
        )
        .bind(deployment_id)
        .bind(environment_id)
        .bind(total.requests as i64)
        .bind(total.server_errors as i64)
        .bind(total.first_byte.encode())
        .bind(total.first_ms)
        .bind(total.last_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// A deployment's traffic, if it served any.
    pub async fn deployment_traffic(&self, deployment_id: &str) -> sqlx::Result<Option<DeploymentTraffic>> {
        let db = &self.pool;
        Ok(sqlx::query_as::<_, TrafficRow>(
            "SELECT deployment_id, requests, server_errors, first_byte, first_ms, last_ms FROM deployment_traffic \
             WHERE deployment_id = $1",
        )
        .bind(deployment_id)
        .fetch_optional(db)
        .await?
        .map(traffic_of))
    }

    /// The traffic of the newest deployment of `environment_id` created before
    /// `created_before` (ms) that served any: the one a deployment replaced.
    pub async fn previous_deployment_traffic(
        &self,
        environment_id: &str,
        created_before: i64,
    ) -> sqlx::Result<Option<DeploymentTraffic>> {
        let db = &self.pool;
        Ok(sqlx::query_as::<_, TrafficRow>(
            "SELECT t.deployment_id, t.requests, t.server_errors, t.first_byte, t.first_ms, t.last_ms \
             FROM deployment_traffic t JOIN deployments d ON d.id = t.deployment_id \
             WHERE t.environment_id = $1 AND d.created_at < $2 AND t.requests > 0 \
             ORDER BY d.created_at DESC LIMIT 1",
        )
        .bind(environment_id)
        .bind(created_before)
        .fetch_optional(db)
        .await?
        .map(traffic_of))
    }
}

/// A deployment that served traffic in a range, with its environment's name.
#[derive(Clone, Debug, FromRow)]
pub struct ServingDeployment {
    /// The deployment.
    pub deployment_id: String,
    /// Its environment's name.
    pub environment: String,
    /// Its requests since it first served (the table keeps totals, not a series).
    pub requests: i64,
    /// Its first counted request (ms, to the tap's flush).
    pub first_ms: i64,
    /// Its latest counted request (ms, to the tap's flush).
    pub last_ms: i64,
}

impl super::Store {
    /// The deployments of `site_id` (of one environment, when given) whose counted traffic
    /// (first to latest request) overlaps `[since_ms, until_ms)`, latest served first, at most
    /// `limit`.
    pub async fn deployments_serving(
        &self,
        site_id: &str,
        environment_id: Option<&str>,
        since_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<ServingDeployment>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT t.deployment_id, e.name AS environment, t.requests, t.first_ms, t.last_ms \
             FROM deployment_traffic t JOIN environments e ON e.id = t.environment_id \
             WHERE e.site_id = $1 AND ($2 IS NULL OR e.id = $3) AND t.first_ms < $4 AND t.last_ms >= $5 \
             AND t.requests > 0 ORDER BY t.last_ms DESC, t.deployment_id LIMIT $6",
        )
        .bind(site_id)
        .bind(environment_id)
        .bind(environment_id)
        .bind(until_ms)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// How many buckets of `resolution` an environment has, and the bytes of their stored
    /// values (fixed columns counted as 8 bytes each).
    pub async fn stored_metrics(&self, environment_id: &str, resolution: Resolution) -> sqlx::Result<(i64, i64)> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(length(environment_id) + length(site_id) + length(statuses) + \
             length(first_byte) + length(paths) + length(countries) + 12 * 8), 0) AS BIGINT) FROM metrics_buckets \
             WHERE environment_id = $1 AND resolution = $2",
        )
        .bind(environment_id)
        .bind(resolution.seconds())
        .fetch_one(db)
        .await
    }
}

/// Jobs by kind and state, and the pending ones due now (for `GET /metrics`).
#[derive(Clone, Debug, Default)]
pub struct JobCounts {
    /// `(kind, state)` → jobs.
    pub by_kind_and_state: BTreeMap<(String, String), i64>,
    /// Pending jobs whose time to run has come.
    pub due: i64,
}

impl super::Store {
    /// Counts the jobs of one org (or of every org) at `now_ms`.
    pub async fn job_counts(&self, org_id: Option<&str>, now_ms: i64) -> sqlx::Result<JobCounts> {
        let pool = &self.pool;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, status, COUNT(*) FROM jobs WHERE ($1 IS NULL OR org_id = $1) GROUP BY kind, status",
        )
        .bind(org_id)
        .fetch_all(pool)
        .await?;
        let due: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE ($1 IS NULL OR org_id = $1) AND status = 'pending' AND run_at <= $2",
        )
        .bind(org_id)
        .bind(now_ms)
        .fetch_one(pool)
        .await?;
        Ok(JobCounts {
            by_kind_and_state: rows.into_iter().map(|(k, s, n)| ((k, s), n)).collect(),
            due,
        })
    }
}

/// An environment's id with its org, its site's name and its own name.
#[derive(Clone, Debug, FromRow)]
pub struct EnvironmentName {
    /// The environment's id (the tap's label).
    pub environment_id: String,
    /// Its org.
    pub org_id: String,
    /// Its site's name.
    pub site: String,
    /// Its name.
    pub environment: String,
}

impl super::Store {
    /// Every environment of every site, to name the tap's labels.
    pub async fn environment_names(&self) -> sqlx::Result<Vec<EnvironmentName>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT e.id AS environment_id, e.org_id, s.name AS site, e.name AS environment \
             FROM environments e JOIN sites s ON s.id = e.site_id",
        )
        .fetch_all(db)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_saving_keeps_every_heavy_template_within_its_overcount() {
        // 40 heavy templates and 2,000 one-off ones, interleaved.
        let mut top = TopPaths::default();
        let mut truth: BTreeMap<String, u64> = BTreeMap::new();
        for round in 0..2000u64 {
            let heavy = format!("GET /heavy/{}", round % 40);
            top.offer(&heavy, 3, 0, u64::from(round % 40 == 0));
            *truth.entry(heavy).or_default() += 3;
            let light = format!("GET /light/{round}");
            top.offer(&light, 1, 1, 0);
            *truth.entry(light).or_default() += 1;
        }
        assert!(top.entries.len() <= TOP_PATHS);
        assert_eq!(top.total_requests, 8000);
        let threshold = top.total_requests / TOP_PATHS as u64;
        for (template, count) in &truth {
            let kept = top.entries.iter().find(|e| &e.template == template);
            if *count > threshold {
                assert!(kept.is_some(), "{template} ({count}) must be kept");
            }
            if let Some(e) = kept {
                assert!(e.guaranteed() <= *count && *count <= e.requests, "{e:?} vs {count}");
            }
        }
        let (ranked, other) = top.ranked();
        assert!(ranked[0].template.starts_with("GET /heavy/"));
        let kept: u64 = ranked.iter().map(|e| e.guaranteed()).sum();
        assert_eq!(kept + other.0, 8000, "kept and other add up to the total");
    }

    #[test]
    fn merged_top_paths_keep_exact_counts_when_they_fit() {
        let (mut a, mut b) = (TopPaths::default(), TopPaths::default());
        a.offer("GET /a", 5, 1, 0);
        a.offer_other(7, 0, 2);
        b.offer("GET /a", 2, 0, 1);
        b.offer("GET /b", 4, 0, 0);
        a.merge(&b);
        let (ranked, other) = a.ranked();
        let counts: Vec<(&str, u64)> = ranked.iter().map(|e| (e.template.as_str(), e.guaranteed())).collect();
        assert_eq!(counts, [("GET /a", 7), ("GET /b", 4)]);
        assert_eq!(other, (7, 0, 2));
        assert_eq!(a.total_requests, 18);
    }

    /// The bytes a bucket's values take in its row (as `stored` counts them).
    fn row_bytes(b: &Bucket) -> usize {
        let statuses: BTreeMap<String, u64> = b.statuses.iter().map(|(c, n)| (c.to_string(), *n)).collect();
        2 * 40
            + serde_json::to_string(&statuses).unwrap().len()
            + b.first_byte.encode().len()
            + serde_json::to_string(&b.paths).unwrap().len()
            + 11 * 8
    }

    /// A busy minute: `requests` spread over 12 templates, four codes, latencies from
    /// 2 ms to about 1 s.
    fn busy_minute(requests: u64, seed: u64) -> Bucket {
        let mut b = Bucket::default();
        let mut state = seed | 1;
        for i in 0..requests {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let code = [200, 200, 200, 200, 304, 404, 500][(state % 7) as usize];
            *b.statuses.entry(code).or_default() += 1;
            b.requests += 1;
            b.first_byte
                .record_micros(2_000 + ((state >> 8) % 10_000) * ((state >> 24) % 100));
            b.paths.offer(
                &format!("GET /api/v1/resource-{}/:id/details", i % 12),
                1,
                u64::from(code == 404),
                u64::from(code == 500),
            );
        }
        b
    }

    #[test]
    fn a_day_of_buckets_stays_within_the_stated_storage() {
        let minute = busy_minute(600, 7);
        let minute_bytes = row_bytes(&minute);
        let mut hour = Bucket::default();
        for m in 0..60 {
            hour.merge(&busy_minute(600, m + 1));
        }
        let mut day = Bucket::default();
        for _ in 0..24 {
            day.merge(&hour);
        }
        let (hour_bytes, day_bytes) = (row_bytes(&hour), row_bytes(&day));
        let a_day = 1440 * minute_bytes + 24 * hour_bytes + day_bytes;
        println!("minute {minute_bytes} B, hour {hour_bytes} B, day {day_bytes} B; a busy day {a_day} B");
        // The README states at most 2.5 KiB a bucket and 3.6 MiB of buckets per busy day.
        assert!(
            minute_bytes.max(hour_bytes).max(day_bytes) <= 2560,
            "{minute_bytes} {hour_bytes} {day_bytes}"
        );
        assert!(a_day <= 3_600 * 1024, "{a_day}");
    }

    #[test]
    fn countries_keep_the_busiest_and_add_up_the_rest() {
        let mut a = Countries::default();
        // 60 countries: AA has 60 requests, AB 59, … the last 1.
        let codes: Vec<String> = (0..60u8)
            .map(|i| format!("{}{}", (b'A' + i / 26) as char, (b'A' + i % 26) as char))
            .collect();
        for (i, code) in codes.iter().enumerate() {
            a.add(code, 60 - i as u64);
        }
        assert_eq!(a.counts.len(), TOP_COUNTRIES);
        assert_eq!(a.ranked()[0], ("AA", 60));
        let kept: u64 = a.counts.values().sum();
        assert_eq!(kept + a.other, (1..=60).sum::<u64>(), "nothing is lost");
        assert_eq!(a.other, (1..=10).sum::<u64>(), "the ten smallest are other");
        let mut b = Countries::default();
        b.add("AA", 5);
        b.add("unknown", 2);
        b.merge(&a);
        assert_eq!(b.counts["AA"], 65);
        assert_eq!(b.counts.len(), TOP_COUNTRIES);
        assert_eq!(b.counts.values().sum::<u64>() + b.other, (1..=60).sum::<u64>() + 7);
    }

    #[test]
    fn resolutions_floor_and_parse() {
        assert_eq!(Resolution::Hour.floor(HOUR_MS * 5 + 12), HOUR_MS * 5);
        assert_eq!(Resolution::parse("1d"), Some(Resolution::Day));
        assert_eq!(Resolution::parse("5m"), None);
    }
}
