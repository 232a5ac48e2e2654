//! `GET /metrics`: the server's own counters in the Prometheus text exposition format
//! (0.0.4), for an operator's scraper.
//!
//! Counters and histograms live in one process-wide recorder that the job queue, the
//! deploy pipeline, the reconciler, the adapters' error answers and the traffic flush
//! feed as things happen; they are monotonic for the life of the process (a drain of the
//! edge's tap moves counts into the recorder, it never resets it). Gauges (jobs by state,
//! queue depth) are read from the store at scrape time.
//!
//! Edge series are labelled by site and environment names only (never paths), resolved
//! at scrape time from the store: a deleted environment's series go with it, and at most
//! [`MAX_EDGE_SERIES`] environments are counted apart; requests beyond the cap are one
//! counter.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use berth_edge::TapDrain;

use crate::store::metrics as store_metrics;

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Environments whose edge traffic is counted apart; requests to more count only in
/// `berth_edge_requests_over_series_cap_total`. Each costs 22 series.
pub const MAX_EDGE_SERIES: usize = 1000;

/// Upper bounds (seconds) of the edge's request latency buckets.
const REQUEST_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds (seconds) of the build and deploy duration buckets.
const STAGE_BOUNDS: &[f64] = &[1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Upper bounds (seconds) of the store latency buckets.
const STORE_BOUNDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Who a scrape is for: the operator's scrape token sees every site, an admin's API key
/// its org's sites (control-plane series are the server's in both cases).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The holder of `--metrics-token`.
    Operator,
    /// An org admin, by org id.
    Org(String),
}

/// A histogram with fixed bounds: counts per bucket (not cumulative, `+Inf` last).
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let index = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[index] += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = self.bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            sample(out, &format!("{name}_bucket"), &with_le, cumulative as f64);
        }
        sample(out, &format!("{name}_sum"), labels, self.sum);
        sample(out, &format!("{name}_count"), labels, cumulative as f64);
    }
}

/// One environment's edge traffic since the process started.
#[derive(Clone, Debug)]
struct EdgeSeries {
    /// Requests by status class, 1xx to 5xx.
    classes: [u64; 5],
    /// Requests with a first byte within each of [`REQUEST_BOUNDS`] (cumulative).
    within: [u64; REQUEST_BOUNDS.len()],
    /// All requests.
    requests: u64,
    /// Sum of the times to first byte, seconds.
    first_byte_seconds: f64,
    /// Requests held while a sleeping app woke.
    cold_starts: u64,
    /// Request body bytes received.
    bytes_in: u64,
    /// Response body bytes sent.
    bytes_out: u64,
}

impl Default for EdgeSeries {
    fn default() -> Self {
        Self {
            classes: [0; 5],
            within: [0; REQUEST_BOUNDS.len()],
            requests: 0,
            first_byte_seconds: 0.0,
            cold_starts: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

/// What the recorder holds behind its lock (touched a few times a second at most: the
/// request path never reaches it, the tap is drained into it every 2 s).
struct Recorded {
    jobs_finished: BTreeMap<(String, &'static str), u64>,
    build_seconds: Histogram,
    deploy_seconds: BTreeMap<&'static str, Histogram>,
    store_seconds: BTreeMap<&'static str, Histogram>,
    errors: BTreeMap<&'static str, u64>,
    edge: HashMap<Arc<str>, EdgeSeries>,
    edge_over_cap: u64,
    edge_unknown_host: u64,
    edge_unlabelled: u64,
}

/// The process-wide recorder.
struct Recorder {
    started: Instant,
    started_unix: f64,
    reconcile_passes: AtomicU64,
    reconcile_failures: AtomicU64,
    recorded: Mutex<Recorded>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static RECORDER: LazyLock<Recorder> = LazyLock::new(|| Recorder {
    started: Instant::now(),
    started_unix: crate::util::now_ms() as f64 / 1000.0,
    reconcile_passes: AtomicU64::new(0),
    reconcile_failures: AtomicU64::new(0),
    recorded: Mutex::new(Recorded {
        jobs_finished: BTreeMap::new(),
        build_seconds: Histogram::new(STAGE_BOUNDS),
        deploy_seconds: BTreeMap::new(),
        store_seconds: BTreeMap::new(),
        errors: BTreeMap::new(),
        edge: HashMap::new(),
        edge_over_cap: 0,
        edge_unknown_host: 0,
        edge_unlabelled: 0,
    }),
});

/// Starts the uptime clock (called once as the server starts).
pub fn start() {
    LazyLock::force(&RECORDER);
}

/// Counts one reconcile pass.
pub fn reconcile_pass(ok: bool) {
    RECORDER.reconcile_passes.fetch_add(1, Ordering::Relaxed);
    if !ok {
        RECORDER.reconcile_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a job run's end: `succeeded`, `retried` or `failed`.
pub fn job_finished(kind: &str, outcome: &'static str) {
    *RECORDER
        .lock()
        .jobs_finished
        .entry((kind.to_string(), outcome))
        .or_default() += 1;
}

/// Records how long a build took (from its build slot to its image).
pub fn build_finished(took: Duration) {
    RECORDER.lock().build_seconds.observe(took.as_secs_f64());
}

/// Records how long a deploy job took to end `succeeded` or `failed`.
pub fn deploy_finished(took: Duration, outcome: &'static str) {
    RECORDER
        .lock()
        .deploy_seconds
        .entry(outcome)
        .or_insert_with(|| Histogram::new(STAGE_BOUNDS))
        .observe(took.as_secs_f64());
}

/// Runs a store operation, recording its latency (pool wait included) under `operation`.
pub async fn time_store<T>(operation: &'static str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    RECORDER
        .lock()
        .store_seconds
        .entry(operation)
        .or_insert_with(|| Histogram::new(STORE_BOUNDS))
        .observe(started.elapsed().as_secs_f64());
    out
}

/// Counts an error answered to a caller, by its service error code.
pub fn error_answered(code: &'static str) {
    *RECORDER.lock().errors.entry(code).or_default() += 1;
}

/// Adds a drain of the edge's tap to the lifetime totals.
pub fn edge_traffic(drain: &TapDrain) {
    let mut recorded = RECORDER.lock();
    recorded.edge_unknown_host += drain.unknown_host_requests;
    recorded.edge_unlabelled += drain.unlabelled_requests;
    recorded.edge_over_cap += drain.overflow_requests;
    for traffic in &drain.sites {
        let full = recorded.edge.len() >= MAX_EDGE_SERIES;
        let series = match recorded.edge.get_mut(&traffic.label.environment) {
            Some(series) => series,
            None if full => {
                recorded.edge_over_cap += traffic.requests;
                continue;
            }
            None => recorded.edge.entry(traffic.label.environment.clone()).or_default(),
        };
        for (code, n) in &traffic.statuses {
            if let Some(slot) = series.classes.get_mut(usize::from(code / 100).wrapping_sub(1)) {
                *slot += n;
            }
        }
        for (within, bound) in series.within.iter_mut().zip(REQUEST_BOUNDS) {
            *within += traffic.first_byte.count_at_most(bound * 1e6);
        }
        series.requests += traffic.requests;
        series.first_byte_seconds += traffic.first_byte.sum_micros() / 1e6;
        series.cold_starts += traffic.cold_starts;
        series.bytes_in += traffic.bytes_in;
        series.bytes_out += traffic.bytes_out;
    }
}

/// Escapes a label value: backslash, double quote and line feed (the format's rule).
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// The exposition text: control-plane series, then the edge's for the audience's sites.
pub fn render(
    audience: &Audience,
    jobs: &store_metrics::JobCounts,
    environments: &[store_metrics::EnvironmentName],
) -> String {
    let mut out = String::with_capacity(4096 + environments.len() * 1500);
    let uptime = RECORDER.started.elapsed().as_secs_f64();

    header(
        &mut out,
        "berth_build_info",
        "gauge",
        "Always 1; the version of berth running.",
    );
    sample(
        &mut out,
        "berth_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    header(
        &mut out,
        "berth_start_time_seconds",
        "gauge",
        "When this berth process started, seconds since the Unix epoch.",
    );
    sample(&mut out, "berth_start_time_seconds", &[], RECORDER.started_unix);
    header(
        &mut out,
        "berth_uptime_seconds",
        "gauge",
        "Seconds since this berth process started.",
    );
    sample(&mut out, "berth_uptime_seconds", &[], uptime);

    header(
        &mut out,
        "berth_jobs",
        "gauge",
        "Jobs in the store by kind and state (pending, running, done, failed).",
    );
    for ((kind, state), n) in &jobs.by_kind_and_state {
        sample(&mut out, "berth_jobs", &[("kind", kind), ("state", state)], *n as f64);
    }
    header(
        &mut out,
        "berth_job_queue_depth",
        "gauge",
        "Pending jobs due to run now (waiting for a worker).",
    );
    sample(&mut out, "berth_job_queue_depth", &[], jobs.due as f64);

    let recorder = &*RECORDER;
    header(
        &mut out,
        "berth_reconcile_passes_total",
        "counter",
        "Reconcile passes run by this process.",
    );
    sample(
        &mut out,
        "berth_reconcile_passes_total",
        &[],
        recorder.reconcile_passes.load(Ordering::Relaxed) as f64,
    );
    header(
        &mut out,
        "berth_reconcile_failures_total",
        "counter",
        "Reconcile passes that failed.",
    );
    sample(
        &mut out,
        "berth_reconcile_failures_total",
        &[],
        recorder.reconcile_failures.load(Ordering::Relaxed) as f64,
    );
    let (exported, queue_full, export_failed) = crate::otlp::counts();
    header(
        &mut out,
        "berth_otlp_spans_exported_total",
        "counter",
        "Trace spans sent to the OTLP endpoint.",
    );
    sample(&mut out, "berth_otlp_spans_exported_total", &[], exported as f64);
    header(
        &mut out,
        "berth_otlp_spans_dropped_total",
        "counter",
        "Trace spans dropped: the export queue was full, or their export failed.",
    );
    sample(
        &mut out,
        "berth_otlp_spans_dropped_total",
        &[("reason", "queue_full")],
        queue_full as f64,
    );
    sample(
        &mut out,
        "berth_otlp_spans_dropped_total",
        &[("reason", "export_failed")],
        export_failed as f64,
    );

    // Copied out so the lock is not held while the edge series are written.
    let recorded = {
        let r = recorder.lock();
        (
            r.jobs_finished.clone(),
            r.build_seconds.clone(),
            r.deploy_seconds.clone(),
            r.store_seconds.clone(),
            r.errors.clone(),
            r.edge.clone(),
            (r.edge_over_cap, r.edge_unknown_host, r.edge_unlabelled),
        )
    };
    let (
        jobs_finished,
        build_seconds,
        deploy_seconds,
        store_seconds,
        errors,
        mut edge,
        (over_cap, unknown, unlabelled),
    ) = recorded;

    header(
        &mut out,
        "berth_job_runs_total",
        "counter",
        "Job runs ended by this process, by kind and outcome (succeeded, retried, failed).",
    );
    for ((kind, outcome), n) in &jobs_finished {
        sample(
            &mut out,
            "berth_job_runs_total",
            &[("kind", kind), ("outcome", outcome)],
            *n as f64,
        );
    }
    header(
        &mut out,
        "berth_build_duration_seconds",
        "histogram",
        "Builds: from the build slot to the built image or folder.",
    );
    build_seconds.write(&mut out, "berth_build_duration_seconds", &[]);
    header(
        &mut out,
        "berth_deploy_duration_seconds",
        "histogram",
        "Deploy jobs: from start to live (succeeded) or to the failure (failed).",
    );
    for (outcome, histogram) in &deploy_seconds {
        histogram.write(&mut out, "berth_deploy_duration_seconds", &[("outcome", outcome)]);
    }
    header(
        &mut out,
        "berth_store_operation_seconds",
        "histogram",
        "Store operations of the control plane's loops (job claims and outcomes, traffic flushes, scrapes), pool wait included.",
    );
    for (operation, histogram) in &store_seconds {
        histogram.write(&mut out, "berth_store_operation_seconds", &[("operation", operation)]);
    }
    header(
        &mut out,
        "berth_errors_total",
        "counter",
        "Errors answered to API, MCP and dashboard callers, by service error code.",
    );
    for (code, n) in &errors {
        sample(&mut out, "berth_errors_total", &[("code", code)], *n as f64);
    }

    // Edge series of existing environments only; the deleted ones' are dropped for good.
    let names: HashMap<&str, &store_metrics::EnvironmentName> =
        environments.iter().map(|e| (e.environment_id.as_str(), e)).collect();
    {
        let mut r = recorder.lock();
        r.edge.retain(|id, _| names.contains_key(&**id));
    }
    edge.retain(|id, _| {
        names.get(&**id).is_some_and(|e| match audience {
            Audience::Operator => true,
            Audience::Org(org) => &e.org_id == org,
        })
    });
    let mut rows: Vec<(&store_metrics::EnvironmentName, &EdgeSeries)> =
        edge.iter().map(|(id, series)| (names[&**id], series)).collect();
    rows.sort_by(|a, b| (&a.0.site, &a.0.environment).cmp(&(&b.0.site, &b.0.environment)));

    header(
        &mut out,
        "berth_edge_requests_total",
        "counter",
        "Requests the edge answered for a site, by environment and status class.",
    );
    for (name, series) in &rows {
        for (i, n) in series.classes.iter().enumerate() {
            let class = format!("{}xx", i + 1);
            sample(
                &mut out,
                "berth_edge_requests_total",
                &[
                    ("site", &name.site),
                    ("environment", &name.environment),
                    ("class", &class),
                ],
                *n as f64,
            );
        }
    }
    header(
        &mut out,
        "berth_edge_request_first_byte_seconds",
        "histogram",
        "Time from a request's arrival to its response head at the edge (bucket bounds exact to 1 %).",
    );
    for (name, series) in &rows {
        let labels = [("site", name.site.as_str()), ("environment", name.environment.as_str())];
        for (within, bound) in series.within.iter().zip(REQUEST_BOUNDS) {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            sample(
                &mut out,
                "berth_edge_request_first_byte_seconds_bucket",
                &with_le,
                *within as f64,
            );
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        sample(
            &mut out,
            "berth_edge_request_first_byte_seconds_bucket",
            &with_le,
            series.requests as f64,
        );
        sample(
            &mut out,
            "berth_edge_request_first_byte_seconds_sum",
            &labels,
            series.first_byte_seconds,
        );
        sample(
            &mut out,
            "berth_edge_request_first_byte_seconds_count",
            &labels,
            series.requests as f64,
        );
    }
    header(
        &mut out,
        "berth_edge_cold_starts_total",
        "counter",
        "Requests held while a sleeping app woke.",
    );
    for (name, series) in &rows {
        let labels = [("site", name.site.as_str()), ("environment", name.environment.as_str())];
        sample(
            &mut out,
            "berth_edge_cold_starts_total",
            &labels,
            series.cold_starts as f64,
        );
    }
    header(
        &mut out,
        "berth_edge_response_bytes_total",
        "counter",
        "Response body bytes the edge sent for a site.",
    );
    for (name, series) in &rows {
        let labels = [("site", name.site.as_str()), ("environment", name.environment.as_str())];
        sample(
            &mut out,
            "berth_edge_response_bytes_total",
            &labels,
            series.bytes_out as f64,
        );
    }
    header(
        &mut out,
        "berth_edge_request_bytes_total",
        "counter",
        "Request body bytes the edge received for a site (as Content-Length declared them).",
    );
    for (name, series) in &rows {
        let labels = [("site", name.site.as_str()), ("environment", name.environment.as_str())];
        sample(
            &mut out,
            "berth_edge_request_bytes_total",
            &labels,
            series.bytes_in as f64,
        );
    }
    if *audience == Audience::Operator {
        header(
            &mut out,
            "berth_edge_requests_over_series_cap_total",
            "counter",
            "Requests for environments past the series cap (1000), counted only here.",
        );
        sample(
            &mut out,
            "berth_edge_requests_over_series_cap_total",
            &[],
            over_cap as f64,
        );
        header(
            &mut out,
            "berth_edge_unknown_host_requests_total",
            "counter",
            "Requests for hosts no site serves.",
        );
        sample(&mut out, "berth_edge_unknown_host_requests_total", &[], unknown as f64);
        header(
            &mut out,
            "berth_edge_unlabelled_requests_total",
            "counter",
            "Requests for redirects and unverified domains.",
        );
        sample(&mut out, "berth_edge_unlabelled_requests_total", &[], unlabelled as f64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslashes_quotes_and_newlines() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("line\nnext"), "line\\nnext");
        let mut out = String::new();
        sample(&mut out, "x_total", &[("kind", "say \"hi\"\n\\")], 2.0);
        assert_eq!(out, "x_total{kind=\"say \\\"hi\\\"\\n\\\\\"} 2\n");
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_inf() {
        let mut h = Histogram::new(&[1.0, 5.0]);
        for s in [0.5, 2.0, 3.0, 9.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.write(&mut out, "d", &[("o", "ok")]);
        assert_eq!(
            out,
            "d_bucket{o=\"ok\",le=\"1\"} 1\nd_bucket{o=\"ok\",le=\"5\"} 3\nd_bucket{o=\"ok\",le=\"+Inf\"} 4\n\
             d_sum{o=\"ok\"} 14.5\nd_count{o=\"ok\"} 4\n"
        );
    }
}
