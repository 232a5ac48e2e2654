//! OpenTelemetry trace export (off by default): with `--otlp-endpoint` set, each deploy is a
//! trace of a `deploy` span with a child span per pipeline step (see [`DeployTrace`]), sent
//! over OTLP/HTTP in its JSON encoding to `<endpoint>/v1/traces`.
//!
//! Spans never wait on the network: they go into a bounded queue ([`QUEUE_SPANS`]) that one
//! task empties in batches, each POST bounded by [`EXPORT_TIMEOUT`]. A full queue or a failed
//! export drops spans; both are counted (`berth_otlp_spans_dropped_total` on `/metrics`).
//! Attributes carry ids, names and outcomes only: never an error message, a log line or an
//! environment value, which could hold secrets. The wire types are the subset of the OTLP
//! protobuf's JSON mapping berth sends (ids in hex, 64-bit integers as strings), public so
//! a receiver can decode them with the same types.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

/// Spans waiting to be exported; more are dropped (and counted).
pub const QUEUE_SPANS: usize = 4096;
/// Spans sent in one request at most.
pub const MAX_BATCH_SPANS: usize = 512;
/// How long the exporter waits for more spans to join a batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// The longest one export request may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The running exporter's queue, when an endpoint is configured.
static QUEUE: OnceLock<mpsc::Sender<Span>> = OnceLock::new();
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// `ExportTraceServiceRequest`: what one export POST carries.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportTraceServiceRequest {
    /// Spans grouped by the resource (the berth server) that made them.
    pub resource_spans: Vec<ResourceSpans>,
}

/// Spans of one resource.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpans {
    /// Who made them (`service.name` = `berth`).
    pub resource: Resource,
    /// Spans grouped by instrumentation scope.
    pub scope_spans: Vec<ScopeSpans>,
}

/// The resource's attributes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Resource {
    /// `service.name`, `service.version`.
    pub attributes: Vec<KeyValue>,
}

/// Spans of one instrumentation scope.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScopeSpans {
    /// The scope (`berth`).
    pub scope: Scope,
    /// The spans.
    pub spans: Vec<Span>,
}

/// An instrumentation scope.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Scope {
    /// Its name.
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
}

/// One span.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// 16 bytes, hex.
    pub trace_id: String,
    /// 8 bytes, hex.
    pub span_id: String,
    /// The parent's span id (empty for a trace's root span).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    /// What the span is (`deploy`, `source`, …).
    pub name: String,
    /// `SPAN_KIND_INTERNAL` (1).
    pub kind: u32,
    /// Start, in ns since the epoch (a decimal string, as the JSON mapping has 64-bit
    /// integers).
    pub start_time_unix_nano: String,
    /// End, in ns since the epoch.
    pub end_time_unix_nano: String,
    /// Ids, names and the outcome.
    #[serde(default)]
    pub attributes: Vec<KeyValue>,
    /// Ok (1) or error (2).
    #[serde(default)]
    pub status: Status,
}

/// A span's status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// 0 unset, 1 ok, 2 error.
    #[serde(default)]
    pub code: u32,
}

/// One attribute.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyValue {
    /// Its name.
    pub key: String,
    /// Its value.
    pub value: AnyValue,
}

/// An attribute's value (berth sends strings only).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnyValue {
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
}

impl KeyValue {
    fn string(key: &str, value: &str) -> Self {
        Self {
            key: key.into(),
            value: AnyValue {
                string_value: Some(value.into()),
            },
        }
    }
}

/// `SPAN_KIND_INTERNAL`.
const KIND_INTERNAL: u32 = 1;
/// `STATUS_CODE_OK`.
pub const STATUS_OK: u32 = 1;
/// `STATUS_CODE_ERROR`.
pub const STATUS_ERROR: u32 = 2;

/// Where spans go: `<endpoint>/v1/traces`. The endpoint must be an `http` or `https` URL
/// without credentials, query or fragment (they would end up in logs when an export fails).
pub fn traces_url(endpoint: &str) -> Result<reqwest::Url, String> {
    let hint = "set --otlp-endpoint (BERTH_OTLP_ENDPOINT) to the collector's OTLP/HTTP base URL, \
                e.g. http://127.0.0.1:4318";
    let url =
        reqwest::Url::parse(endpoint.trim()).map_err(|e| format!("the OTLP endpoint is not a URL ({e}); {hint}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the OTLP endpoint must be http:// or https://; {hint}"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the OTLP endpoint must not carry credentials, a query or a fragment (they would be logged); {hint}"
        ));
    }
    let base = url.as_str().trim_end_matches('/');
    reqwest::Url::parse(&format!("{base}/v1/traces"))
        .map_err(|e| format!("the OTLP endpoint is not a URL ({e}); {hint}"))
}

/// Starts exporting to `endpoint` (called once as the server starts; must run inside the
/// runtime). Without this call nothing is recorded or sent.
pub fn start(endpoint: &str) -> Result<(), String> {
    let url = traces_url(endpoint)?;
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("building the OTLP client: {e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE_SPANS);
    if QUEUE.set(tx).is_err() {
        return Err("the OTLP exporter is already running".into());
    }
    tokio::spawn(export_loop(rx, http, url));
    Ok(())
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    QUEUE.get().is_some()
}

/// Spans exported, dropped because the queue was full, dropped because their export failed
/// (since the process started), for `/metrics`.
pub fn counts() -> (u64, u64, u64) {
    (
        EXPORTED.load(Ordering::Relaxed),
        DROPPED_QUEUE_FULL.load(Ordering::Relaxed),
        DROPPED_EXPORT_FAILED.load(Ordering::Relaxed),
    )
}

/// Queues `spans` for export, dropping (and counting) what does not fit.
fn submit(spans: Vec<Span>) {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    for span in spans {
        if queue.try_send(span).is_err() {
            DROPPED_QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn export_loop(mut rx: mpsc::Receiver<Span>, http: reqwest::Client, url: reqwest::Url) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH_SPANS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Resource {
                    attributes: vec![
                        KeyValue::string("service.name", "berth"),
                        KeyValue::string("service.version", env!("CARGO_PKG_VERSION")),
                    ],
                },
                scope_spans: vec![ScopeSpans {
                    scope: Scope {
                        name: "berth".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    },
                    spans: batch,
                }],
            }],
        };
        match http.post(url.clone()).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                EXPORTED.fetch_add(n, Ordering::Relaxed);
            }
            Ok(r) => {
                DROPPED_EXPORT_FAILED.fetch_add(n, Ordering::Relaxed);
                warn!(endpoint = %url, status = r.status().as_u16(), spans = n, "OTLP export refused; spans dropped");
            }
            Err(e) => {
                DROPPED_EXPORT_FAILED.fetch_add(n, Ordering::Relaxed);
                warn!(endpoint = %url, error = %e, spans = n, "OTLP export failed; spans dropped");
            }
        }
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The trace of one deploy: a `deploy` root span and one child span per step, entered in
/// order with [`DeployTrace::step`] (each ends when the next begins). Sent when
/// [`DeployTrace::finish`] is called; nothing is recorded while export is off.
pub struct DeployTrace {
    inner: Option<TraceInner>,
}

struct TraceInner {
    trace_id: String,
    root_id: String,
    started: u64,
    attributes: Vec<KeyValue>,
    spans: Vec<Span>,
    open: Option<Span>,
}

impl DeployTrace {
    /// Starts a deploy's trace, with the ids and names that say whose deploy it is.
    pub fn start(site: &str, environment: &str, deployment_id: &str) -> Self {
        if !enabled() {
            return Self { inner: None };
        }
        Self {
            inner: Some(TraceInner {
                trace_id: hex::encode(rand::random::<[u8; 16]>()),
                root_id: hex::encode(rand::random::<[u8; 8]>()),
                started: now_nanos(),
                attributes: vec![
                    KeyValue::string("berth.site", site),
                    KeyValue::string("berth.environment", environment),
                    KeyValue::string("berth.deployment.id", deployment_id),
                ],
                spans: Vec::new(),
                open: None,
            }),
        }
    }

    /// Ends the current step (ok) and begins `name`.
    pub fn step(&mut self, name: &str) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        let now = now_nanos();
        inner.close(now, STATUS_OK);
        inner.open = Some(Span {
            trace_id: inner.trace_id.clone(),
            span_id: hex::encode(rand::random::<[u8; 8]>()),
            parent_span_id: inner.root_id.clone(),
            name: name.into(),
            kind: KIND_INTERNAL,
            start_time_unix_nano: now.to_string(),
            end_time_unix_nano: String::new(),
            attributes: vec![inner.attributes[2].clone()],
            status: Status::default(),
        });
    }

    /// Ends the trace with `outcome`, the status the deployment ended in (`live`, `failed`,
    /// `cancelled`, `superseded`): the step under way ends ok unless the deploy failed or
    /// was cancelled (so a failed deploy's last step is the one that failed), and every
    /// span is queued for export.
    pub fn finish(self, outcome: &str) {
        let Some(mut inner) = self.inner else {
            return;
        };
        let now = now_nanos();
        let status = if matches!(outcome, "failed" | "cancelled") {
            STATUS_ERROR
        } else {
            STATUS_OK
        };
        inner.close(now, status);
        let mut attributes = inner.attributes;
        attributes.push(KeyValue::string("berth.deploy.outcome", outcome));
        let mut spans = vec![Span {
            trace_id: inner.trace_id,
            span_id: inner.root_id,
            parent_span_id: String::new(),
            name: "deploy".into(),
            kind: KIND_INTERNAL,
            start_time_unix_nano: inner.started.to_string(),
            end_time_unix_nano: now.to_string(),
            attributes,
            status: Status { code: status },
        }];
        spans.append(&mut inner.spans);
        submit(spans);
    }
}

impl TraceInner {
    fn close(&mut self, now: u64, status: u32) {
        if let Some(mut span) = self.open.take() {
            span.end_time_unix_nano = now.to_string();
            span.status = Status { code: status };
            self.spans.push(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_credentials_become_the_traces_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap().as_str(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example.com/base/").unwrap().as_str(),
            "https://otel.example.com/base/v1/traces"
        );
        for bad in [
            "127.0.0.1:4318",
            "ftp://x",
            "http://user:pw@otel.example.com",
            "http://otel.example.com/?key=s3cret",
        ] {
            let err = traces_url(bad).unwrap_err();
            assert!(err.contains("--otlp-endpoint"), "{err}");
            assert!(!err.contains("s3cret") && !err.contains("pw@"), "{err}");
        }
    }
}
