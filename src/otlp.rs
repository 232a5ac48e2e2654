//! OpenTelemetry trace export (off by default): with `--otlp-endpoint` set, each deploy is a
//! trace of a `deploy` span with a child span per pipeline step (see [`DeployTrace`]), and
//! with `--otlp-sample-ratio` above 0 a share of the requests through the edge are `request`
//! spans (see [`request_span`]), sent over OTLP/HTTP in its JSON encoding to
//! `<endpoint>/v1/traces`.
//!
//! Spans never wait on the network: they go into a bounded queue ([`QUEUE_SPANS`]) that one
//! task empties in batches, each POST bounded by [`EXPORT_TIMEOUT`]. A full queue or a failed
//! export drops spans; both are counted (`berth_otlp_spans_dropped_total` on `/metrics`).
//! On a graceful stop, [`shutdown`] sends what is queued at once (bounded by
//! [`SHUTDOWN_FLUSH`]). Headers for the collector (`--otlp-headers`, e.g. its
//! `Authorization`) are sent with every export and never logged.
//! Attributes carry ids, names and outcomes only: never an error message, a log line or an
//! environment value, which could hold secrets. The wire types are the subset of the OTLP
//! protobuf's JSON mapping berth sends (ids in hex, 64-bit integers as strings), public so
//! a receiver can decode them with the same types.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Spans waiting to be exported; more are dropped (and counted).
pub const QUEUE_SPANS: usize = 4096;
/// Spans sent in one request at most.
pub const MAX_BATCH_SPANS: usize = 512;
/// How long the exporter waits for more spans to join a batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// The longest one export request may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest [`shutdown`] waits for the queued spans to be sent.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// Most headers `--otlp-headers` may give.
const MAX_HEADERS: usize = 32;

/// The running exporter's queue, when an endpoint is configured.
static QUEUE: OnceLock<mpsc::Sender<Span>> = OnceLock::new();
/// The running exporter's stop signal and task, until [`shutdown`].
static EXPORTER: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>> = Mutex::new(None);
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
/// `SPAN_KIND_SERVER`.
pub const KIND_SERVER: u32 = 2;
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

/// Reads `--otlp-headers` (`key=value,key=value`, values percent-decoded as in
/// `OTEL_EXPORTER_OTLP_HEADERS`) into headers marked sensitive. A malformed entry is
/// refused, named by its position only: its value may be a credential.
pub fn parse_headers(text: &str) -> Result<HeaderMap, String> {
    let hint = "give BERTH_OTLP_HEADERS as key=value pairs separated by commas, e.g.                 Authorization=Bearer%20<token>,X-Scope-OrgID=<tenant> (values percent-encoded)";
    let mut headers = HeaderMap::new();
    for (i, entry) in text.split(',').enumerate() {
        let n = i + 1;
        if entry.trim().is_empty() {
            if text.trim().is_empty() {
                break;
            }
            return Err(format!("entry {n} of BERTH_OTLP_HEADERS is empty; {hint}"));
        }
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!("entry {n} of BERTH_OTLP_HEADERS has no '='; {hint}"));
        };
        let name = HeaderName::from_bytes(key.trim().as_bytes())
            .map_err(|_| format!("entry {n} of BERTH_OTLP_HEADERS does not start with a header name; {hint}"))?;
        if matches!(
            name.as_str(),
            "content-type" | "content-length" | "content-encoding" | "transfer-encoding" | "host" | "connection"
        ) {
            return Err(format!(
                "entry {n} of BERTH_OTLP_HEADERS sets {name}, which berth sets itself; {hint}"
            ));
        }
        let decoded = percent_decode(value.trim())
            .ok_or_else(|| format!("entry {n} of BERTH_OTLP_HEADERS has a bad %-escape; {hint}"))?;
        let mut value = HeaderValue::from_bytes(&decoded)
            .map_err(|_| format!("entry {n} of BERTH_OTLP_HEADERS has a value no header may carry; {hint}"))?;
        value.set_sensitive(true);
        headers.append(name, value);
        if headers.len() > MAX_HEADERS {
            return Err(format!(
                "BERTH_OTLP_HEADERS gives more than {MAX_HEADERS} headers; {hint}"
            ));
        }
    }
    Ok(headers)
}

/// `%XX` escapes decoded; `None` for a `%` not followed by two hex digits.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Starts exporting to `endpoint`, sending `headers` with each export (called once as the
/// server starts; must run inside the runtime). Without this call nothing is recorded or
/// sent.
pub fn start(endpoint: &str, headers: HeaderMap) -> Result<(), String> {
    let url = traces_url(endpoint)?;
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .default_headers(headers)
        .build()
        .map_err(|e| format!("building the OTLP client: {e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE_SPANS);
    if QUEUE.set(tx).is_err() {
        return Err("the OTLP exporter is already running".into());
    }
    let stop = CancellationToken::new();
    let task = tokio::spawn(export_loop(rx, http, url, stop.clone()));
    *EXPORTER.lock().unwrap_or_else(PoisonError::into_inner) = Some((stop, task));
    Ok(())
}

/// On a graceful stop: sends every queued span now, waiting at most `within`; spans still
/// unsent then are lost. Does nothing when export is off or already shut down.
pub async fn shutdown(within: Duration) {
    let Some((stop, task)) = EXPORTER.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return;
    };
    stop.cancel();
    if tokio::time::timeout(within, task).await.is_err() {
        warn!(
            seconds = within.as_secs(),
            "OTLP export did not finish in time at shutdown; the spans still queued are dropped"
        );
    }
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

/// Sends spans in batches as they come (waiting up to [`BATCH_DELAY`] for a batch to fill)
/// until `stop`, then what is queued at once.
async fn export_loop(mut rx: mpsc::Receiver<Span>, http: reqwest::Client, url: reqwest::Url, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => break,
            span = rx.recv() => match span {
                Some(span) => span,
                None => return,
            },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH_SPANS {
            tokio::select! {
                () = stop.cancelled() => break,
                span = tokio::time::timeout_at(deadline, rx.recv()) => match span {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        export(&http, &url, batch).await;
    }
    loop {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH_SPANS
            && let Ok(span) = rx.try_recv()
        {
            batch.push(span);
        }
        if batch.is_empty() {
            return;
        }
        export(&http, &url, batch).await;
    }
}

/// POSTs one batch, counting it exported or dropped.
async fn export(http: &reqwest::Client, url: &reqwest::Url, batch: Vec<Span>) {
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

/// Queues a request the edge picked for tracing as a trace of one `request` span (kind
/// server): `berth.site.id`, `berth.environment.id`, `berth.deployment.id` (ids, as the edge
/// knows them), `http.request.method`, `http.route` (the path template: ids masked, no
/// query), `http.response.status_code`, `berth.proxied`; status error for a 5xx. Called on
/// an edge worker thread: it only queues.
pub fn request_span(span: berth_edge::RequestSpan) {
    let start = span
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let end = start + span.total.as_nanos() as u64;
    let (method, route) = span.template.split_once(' ').unwrap_or(("OTHER", &span.template));
    submit(vec![Span {
        trace_id: hex::encode(rand::random::<[u8; 16]>()),
        span_id: hex::encode(rand::random::<[u8; 8]>()),
        parent_span_id: String::new(),
        name: "request".into(),
        kind: KIND_SERVER,
        start_time_unix_nano: start.to_string(),
        end_time_unix_nano: end.to_string(),
        attributes: vec![
            KeyValue::string("berth.site.id", &span.label.site),
            KeyValue::string("berth.environment.id", &span.label.environment),
            KeyValue::string("berth.deployment.id", &span.label.deployment),
            KeyValue::string("http.request.method", method),
            KeyValue::string("http.route", route),
            KeyValue::string("http.response.status_code", &span.status.to_string()),
            KeyValue::string("berth.proxied", if span.proxied { "true" } else { "false" }),
        ],
        status: Status {
            code: if span.status >= 500 { STATUS_ERROR } else { STATUS_OK },
        },
    }]);
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
    fn headers_are_key_value_pairs_with_percent_decoded_sensitive_values() {
        let headers = parse_headers(" Authorization = Bearer%20abc%2Cdef ,x-scope-orgid=t1").unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["authorization"], "Bearer abc,def");
        assert!(headers["authorization"].is_sensitive());
        assert!(!format!("{headers:?}").contains("abc"), "{headers:?}");
        assert_eq!(headers["x-scope-orgid"], "t1");
        assert!(parse_headers("").unwrap().is_empty());
        for (bad, reason) in [
            ("a=1,", "entry 2 of BERTH_OTLP_HEADERS is empty"),
            ("a=1,secret", "entry 2 of BERTH_OTLP_HEADERS has no '='"),
            ("a b=secret", "does not start with a header name"),
            ("a=%4", "bad %-escape"),
            ("a=%0A", "a value no header may carry"),
            ("host=secret", "sets host"),
        ] {
            let err = parse_headers(bad).unwrap_err();
            assert!(err.contains(reason), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let many = (0..40).map(|i| format!("h{i}=v")).collect::<Vec<_>>().join(",");
        assert!(parse_headers(&many).unwrap_err().contains("more than 32"));
    }

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
