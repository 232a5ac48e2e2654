//! The traffic tap: what every request the edge answers for a site did (status, method,
//! path template, bytes in and out, time to first byte and in total, static file or proxied,
//! 304, cold start), counted per site+environment+deployment ([`RouteLabel`]) in
//! per-worker accumulators that the control plane empties with [`Edge::drain_tap`].
//!
//! Request body bytes are counted as they are forwarded to an app, on a counter the
//! site's slot shares with the requests that have a body (no lock per body chunk; a
//! request without a body takes no handle on it). A slot counts its requests under way
//! and is kept until they end. With a GeoIP database
//! ([`Edge::set_country_lookup`](crate::Edge::set_country_lookup)), each request is also
//! counted by its client's country, looked up once per connection, in a fixed array per
//! slot (every two-letter code has a place).
//!
//! Each worker thread owns its accumulator; the mutex around it is only ever taken by that
//! thread, except for the moment a drain swaps the counts out every few seconds, so it is
//! uncontended. A site or path template already seen costs no allocation: slots are kept
//! (their counts reset) across drains while they keep getting traffic. Memory is bounded
//! whatever the clients send: at most [`MAX_SITES_PER_WORKER`] labelled routes and
//! [`MAX_PATHS_PER_SITE`] path templates per site per interval (the rest count as
//! `other`), and requests for hosts no route knows are one counter, not one per host.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{Method, Request, Response, Uri};

use crate::Edge;
use crate::body::{BoxError, EdgeBody};
use crate::routes::{Route, RouteTarget};
use crate::sketch::{BUCKETS, LatencySketch, bucket_of};

/// Distinct path templates counted per site per worker and interval; later ones count as
/// `other`.
pub const MAX_PATHS_PER_SITE: usize = 256;
/// Labelled routes a worker counts apart per interval; requests for more count only in
/// [`TapDrain::overflow_requests`].
pub const MAX_SITES_PER_WORKER: usize = 1024;
/// Path segments kept in a template; deeper paths end in `/*`.
pub const MAX_PATH_SEGMENTS: usize = 8;
/// Bytes kept of one path segment.
const MAX_SEGMENT_BYTES: usize = 64;
/// Status codes hyper can represent: 100..=999.
const STATUS_SLOTS: usize = 900;
/// Country slots: one per two-letter code, and one for clients the database does not know.
const COUNTRY_SLOTS: usize = 26 * 26 + 1;
/// The slot of clients the GeoIP database has no country for.
const UNKNOWN_COUNTRY_SLOT: u16 = 26 * 26;
/// How [`SiteTraffic::countries`] names clients the GeoIP database has no country for.
pub const UNKNOWN_COUNTRY: &str = "unknown";

/// A client's country: an ISO 3166-1 alpha-2 code (`US`, `DE`), as a GeoIP database
/// gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code of `text` (two ASCII letters, either case), if it is one.
    pub fn new(text: &str) -> Option<CountryCode> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(CountryCode([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code, upper case.
    pub fn as_str(&self) -> &str {
        // Two ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    fn slot(self) -> u16 {
        u16::from(self.0[0] - b'A') * 26 + u16::from(self.0[1] - b'A')
    }

    fn of_slot(slot: u16) -> CountryCode {
        CountryCode([b'A' + (slot / 26) as u8, b'A' + (slot % 26) as u8])
    }
}

/// A connection's client country for the tap: `None` without a GeoIP database, else its
/// slot (a country, or [`UNKNOWN_COUNTRY_SLOT`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientCountry(Option<u16>);

impl ClientCountry {
    /// What a lookup found: `Some(country)` or `None` (not in the database).
    pub(crate) fn looked_up(country: Option<CountryCode>) -> Self {
        Self(Some(country.map_or(UNKNOWN_COUNTRY_SLOT, CountryCode::slot)))
    }
}

/// Whose traffic a route carries: opaque ids the control plane sets when it publishes
/// routes (see [`EdgeRouteTable::label`](crate::EdgeRouteTable::label)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteLabel {
    /// The site's id.
    pub site: Arc<str>,
    /// The environment's id.
    pub environment: Arc<str>,
    /// The deployment serving it.
    pub deployment: Arc<str>,
}

/// Requests to one path template (`GET /users/:id`) in one interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathTraffic {
    /// Method and normalised path: ids, UUIDs, hex ids and long tokens masked, query
    /// dropped, at most [`MAX_PATH_SEGMENTS`] segments.
    pub template: String,
    /// Requests.
    pub requests: u64,
    /// Of them answered 4xx.
    pub client_errors: u64,
    /// Of them answered 5xx.
    pub server_errors: u64,
}

impl PathTraffic {
    fn add(&mut self, other: &PathTraffic) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
    }
}

/// One label's traffic since the previous drain.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteTraffic {
    /// Whose traffic.
    pub label: RouteLabel,
    /// Requests answered.
    pub requests: u64,
    /// Requests per status code, by code.
    pub statuses: Vec<(u16, u64)>,
    /// Request body bytes forwarded to the app (chunked or not, counted as they pass;
    /// bodies of requests answered without the app, such as static files, count 0).
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Served from static files.
    pub static_files: u64,
    /// Proxied to app instances.
    pub proxied: u64,
    /// Answered 304 Not Modified.
    pub not_modified: u64,
    /// Held by the activator while a sleeping app woke.
    pub cold_starts: u64,
    /// Time from the request's arrival to its response head.
    pub first_byte: LatencySketch,
    /// Sum of the times from arrival to the last body byte, in microseconds.
    pub total_micros: u64,
    /// Requests by path template (at most [`MAX_PATHS_PER_SITE`]).
    pub paths: Vec<PathTraffic>,
    /// Requests to templates past the bound (`template` is `other`).
    pub other_paths: PathTraffic,
    /// Requests by client country (a code, or [`UNKNOWN_COUNTRY`]), by name; empty without
    /// a GeoIP database.
    pub countries: Vec<(String, u64)>,
}

/// One request picked for tracing (see [`Edge::set_request_tracer`]), handed to the
/// tracer when its response has ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSpan {
    /// Whose traffic.
    pub label: RouteLabel,
    /// Method and path template (`GET /users/:id`), as the tap counts it.
    pub template: String,
    /// The response's status.
    pub status: u16,
    /// When the request arrived (wall clock).
    pub started: SystemTime,
    /// From arrival to the response head.
    pub first_byte: Duration,
    /// From arrival to the last body byte (or the body being dropped).
    pub total: Duration,
    /// Whether it was proxied to the app (else static, or an edge page).
    pub proxied: bool,
    /// Response body bytes sent.
    pub bytes_out: u64,
}

/// The control plane's tracer: the share of requests to trace, and what to do with them.
pub(crate) struct RequestTracer {
    /// Requests are traced when a per-worker random draw is below this.
    threshold: u64,
    trace: Box<dyn Fn(RequestSpan) + Send + Sync>,
}

impl RequestTracer {
    pub(crate) fn new(ratio: f64, trace: impl Fn(RequestSpan) + Send + Sync + 'static) -> Self {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio.max(0.0) * u64::MAX as f64) as u64
        };
        Self {
            threshold,
            trace: Box::new(trace),
        }
    }
}

/// What [`Edge::drain_tap`] returns: every label's traffic since the previous drain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TapDrain {
    /// Per label, in no particular order.
    pub sites: Vec<SiteTraffic>,
    /// Requests for hosts no route knows (counted once, not per host).
    pub unknown_host_requests: u64,
    /// Requests for routes without a label (redirects, unverified domains).
    pub unlabelled_requests: u64,
    /// Requests for labels past [`MAX_SITES_PER_WORKER`].
    pub overflow_requests: u64,
}

/// How much memory the tap holds now (see [`Edge::tap_footprint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapFootprint {
    /// Site slots over all workers.
    pub sites: usize,
    /// Path templates over all workers.
    pub paths: usize,
    /// Bytes of those slots and templates (estimated from their sizes and capacities).
    pub bytes: usize,
}

impl Edge {
    /// Takes every worker's counts since the previous call (merged per label) and resets
    /// them. The control plane calls this every few seconds.
    pub fn drain_tap(&self) -> TapDrain {
        self.taps.drain()
    }

    /// The memory the tap holds, to check its bounds.
    pub fn tap_footprint(&self) -> TapFootprint {
        let workers = self.taps.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = TapFootprint::default();
        for worker in workers.iter() {
            let acc = worker.lock();
            total.sites += acc.sites.len();
            for slot in acc.sites.values() {
                total.paths += slot.paths.len();
                total.bytes += slot.bytes();
            }
        }
        total
    }
}

/// The edge's set of worker accumulators.
pub(crate) struct TapRegistry {
    enabled: bool,
    workers: Mutex<Vec<Arc<WorkerTap>>>,
}

impl TapRegistry {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            workers: Mutex::default(),
        }
    }

    /// A new worker's accumulator, registered for drains, tracing with `tracer` if given.
    pub(crate) fn worker(&self, tracer: Option<Arc<RequestTracer>>) -> Arc<WorkerTap> {
        let tap = Arc::new(WorkerTap {
            enabled: self.enabled,
            tracer: tracer.filter(|t| self.enabled && t.threshold > 0),
            acc: Mutex::default(),
        });
        // Each worker draws its own sequence.
        tap.lock().draws = (Arc::as_ptr(&tap) as u64)
            ^ SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&tap));
        tap
    }

    fn drain(&self) -> TapDrain {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = TapDrain::default();
        let mut by_label: HashMap<RouteLabel, SiteTraffic> = HashMap::new();
        for worker in workers.iter() {
            let mut acc = worker.lock();
            out.unknown_host_requests += std::mem::take(&mut acc.unknown_hosts);
            out.unlabelled_requests += std::mem::take(&mut acc.unlabelled);
            out.overflow_requests += std::mem::take(&mut acc.overflow);
            for traffic in acc.drain_sites() {
                match by_label.get_mut(&traffic.label) {
                    Some(seen) => merge_traffic(seen, traffic),
                    None => {
                        by_label.insert(traffic.label.clone(), traffic);
                    }
                }
            }
        }
        // A worker whose thread ended (its edge stopped serving) has been emptied now.
        workers.retain(|w| Arc::strong_count(w) > 1);
        out.sites = by_label.into_values().collect();
        out
    }
}

/// Adds `more` (another worker's counts for the same label) into `into`, keeping the
/// path bound.
fn merge_traffic(into: &mut SiteTraffic, more: SiteTraffic) {
    into.requests += more.requests;
    into.bytes_in += more.bytes_in;
    into.bytes_out += more.bytes_out;
    into.static_files += more.static_files;
    into.proxied += more.proxied;
    into.not_modified += more.not_modified;
    into.cold_starts += more.cold_starts;
    into.total_micros += more.total_micros;
    into.first_byte.merge(&more.first_byte);
    for (code, n) in more.statuses {
        match into.statuses.binary_search_by_key(&code, |(c, _)| *c) {
            Ok(i) => into.statuses[i].1 += n,
            Err(i) => into.statuses.insert(i, (code, n)),
        }
    }
    for (country, n) in more.countries {
        match into
            .countries
            .binary_search_by(|(c, _)| c.as_str().cmp(country.as_str()))
        {
            Ok(i) => into.countries[i].1 += n,
            Err(i) => into.countries.insert(i, (country, n)),
        }
    }
    into.other_paths.add(&more.other_paths);
    for path in more.paths {
        match into.paths.iter_mut().find(|p| p.template == path.template) {
            Some(seen) => seen.add(&path),
            None => into.paths.push(path),
        }
    }
    if into.paths.len() > MAX_PATHS_PER_SITE {
        into.paths.sort_by_key(|p| std::cmp::Reverse(p.requests));
        for path in into.paths.drain(MAX_PATHS_PER_SITE..) {
            into.other_paths.add(&path);
        }
    }
}

/// One worker's accumulator.
pub(crate) struct WorkerTap {
    enabled: bool,
    /// Set when requests are sampled for tracing.
    tracer: Option<Arc<RequestTracer>>,
    acc: Mutex<Accumulator>,
}

impl WorkerTap {
    fn lock(&self) -> std::sync::MutexGuard<'_, Accumulator> {
        self.acc.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tapping a request as it arrives from a client in `country`.
    pub(crate) fn begin(&self, req: &Request<hyper::body::Incoming>, country: ClientCountry) -> TapRequest {
        TapRequest {
            enabled: self.enabled,
            started: Instant::now(),
            method: method_name(req.method()),
            uri: if self.enabled { Some(req.uri().clone()) } else { None },
            site: None,
            worker: None,
            country,
            kind: Kind::Other,
            cold_start: false,
            unknown_host: false,
        }
    }

    /// Records the response head and wraps its body so the bytes sent and the time to
    /// the last one are counted when it ends.
    pub(crate) fn respond(self: &Arc<Self>, mut tap: TapRequest, response: Response<EdgeBody>) -> Response<TapBody> {
        if !tap.enabled {
            return response.map(|inner| TapBody { inner, end: None });
        }
        let first_byte = tap.started.elapsed();
        let status = response.status().as_u16();
        let mut acc = self.lock();
        if tap.unknown_host {
            acc.unknown_hosts += 1;
        }
        // From here the request's hold on its slot passes to the response body (or ends).
        let (site, worker) = (tap.site.take(), tap.worker.take());
        let (Some((key, id)), Some(worker)) = (site, worker) else {
            if !tap.unknown_host {
                acc.unlabelled += 1;
            }
            drop(acc);
            return response.map(|inner| TapBody { inner, end: None });
        };
        let Accumulator {
            sites, scratch, draws, ..
        } = &mut *acc;
        let Some(slot) = sites.get_mut(&key).filter(|s| s.id == id) else {
            drop(acc);
            return response.map(|inner| TapBody { inner, end: None });
        };
        slot.requests += 1;
        if let Some(country) = tap.country.0 {
            if slot.countries.is_empty() {
                // Once per slot, when a GeoIP database is configured.
                slot.countries = vec![0; COUNTRY_SLOTS].into_boxed_slice();
            }
            let n = &mut slot.countries[usize::from(country)];
            *n = n.saturating_add(1);
        }
        let code = usize::from(status).clamp(100, 999) - 100;
        slot.statuses[code] = slot.statuses[code].saturating_add(1);
        let bucket = bucket_of(first_byte.as_micros() as u64);
        slot.first_byte[bucket] = slot.first_byte[bucket].saturating_add(1);
        match tap.kind {
            Kind::Static => slot.static_files += 1,
            Kind::Proxied => slot.proxied += 1,
            Kind::Other => {}
        }
        slot.not_modified += u64::from(status == 304);
        slot.cold_starts += u64::from(tap.cold_start);
        scratch.clear();
        scratch.push_str(tap.method);
        scratch.push(' ');
        path_template(tap.uri.as_ref().map_or("/", Uri::path), scratch);
        // One lookup for a template already seen (the common case).
        let path = if slot.paths.contains_key(scratch.as_str()) {
            slot.paths.get_mut(scratch.as_str())
        } else if slot.paths.len() < MAX_PATHS_PER_SITE {
            Some(slot.paths.entry(scratch.as_str().into()).or_default())
        } else {
            None
        };
        let path = match path {
            Some(path) => path,
            None => &mut slot.other,
        };
        path.requests += 1;
        path.client_errors += u64::from((400..500).contains(&status));
        path.server_errors += u64::from(status >= 500);
        let trace = match &self.tracer {
            None => None,
            Some(tracer) => {
                // xorshift64: enough to pick a share of requests.
                *draws ^= *draws << 13;
                *draws ^= *draws >> 7;
                *draws ^= *draws << 17;
                (tracer.threshold == u64::MAX || *draws < tracer.threshold).then(|| {
                    Box::new(RequestSpan {
                        label: (*slot.label).clone(),
                        template: scratch.clone(),
                        status,
                        started: SystemTime::now() - first_byte,
                        first_byte,
                        total: Duration::ZERO,
                        proxied: matches!(tap.kind, Kind::Proxied),
                        bytes_out: 0,
                    })
                })
            }
        };
        drop(acc);
        let end = TapEnd {
            tap: worker,
            key,
            id,
            started: tap.started,
            bytes: 0,
            trace,
        };
        response.map(|inner| TapBody { inner, end: Some(end) })
    }

    fn finish(&self, end: &mut TapEnd) {
        let total = end.started.elapsed();
        let mut acc = self.lock();
        if let Some(slot) = acc.sites.get_mut(&end.key).filter(|s| s.id == end.id) {
            slot.bytes_out += end.bytes;
            slot.total_micros += total.as_micros() as u64;
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        drop(acc);
        if let (Some(mut span), Some(tracer)) = (end.trace.take(), &self.tracer) {
            span.total = total;
            span.bytes_out = end.bytes;
            (tracer.trace)(*span);
        }
    }
}

/// A request being tapped: filled in as it is routed.
pub(crate) struct TapRequest {
    enabled: bool,
    started: Instant,
    method: &'static str,
    uri: Option<Uri>,
    /// The label slot's key and id in this worker's accumulator; the slot counts this
    /// request as under way (so a drain keeps it) until the response ends, or until this
    /// is dropped unanswered.
    site: Option<(usize, u64)>,
    /// The accumulator the slot is in, set with `site`.
    worker: Option<Arc<WorkerTap>>,
    country: ClientCountry,
    kind: Kind,
    cold_start: bool,
    unknown_host: bool,
}

#[derive(Clone, Copy)]
enum Kind {
    Static,
    Proxied,
    Other,
}

impl TapRequest {
    /// The request's host matched no route.
    pub(crate) fn unknown_host(&mut self) {
        self.unknown_host = true;
    }

    /// The activator held the request while its site woke.
    pub(crate) fn cold_start(&mut self) {
        self.cold_start = true;
    }

    /// The counter a forwarded request body adds its bytes to, if the request is counted.
    /// Only asked for requests that have a body.
    pub(crate) fn body_meter(&self) -> Option<BodyMeter> {
        let ((key, id), worker) = (self.site?, self.worker.as_ref()?);
        let acc = worker.lock();
        let slot = acc.sites.get(&key).filter(|s| s.id == id)?;
        Some(BodyMeter(Arc::clone(&slot.bytes_in)))
    }

    /// The route the request is answered by (called with the final route).
    pub(crate) fn route(&mut self, worker: &Arc<WorkerTap>, route: &Route) {
        if !self.enabled {
            return;
        }
        self.kind = match route.target {
            RouteTarget::Static { .. } => Kind::Static,
            RouteTarget::Upstream { .. } => Kind::Proxied,
            _ => Kind::Other,
        };
        let Some(label) = &route.label else {
            return;
        };
        // Keyed by the label's address: the slot holds a clone, so the address cannot be
        // reused by another label while the slot exists.
        let key = Arc::as_ptr(label) as usize;
        let mut acc = worker.lock();
        if let Some(previous) = self.site.take()
            && let Some(slot) = acc.sites.get_mut(&previous.0).filter(|s| s.id == previous.1)
        {
            // Routed again (a woken site): the hold moves to the final route.
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        if let Some(slot) = acc.sites.get_mut(&key) {
            slot.in_flight += 1;
            self.site = Some((key, slot.id));
            self.worker = Some(Arc::clone(worker));
            return;
        }
        if acc.sites.len() >= MAX_SITES_PER_WORKER {
            acc.overflow += 1;
            return;
        }
        acc.next_id += 1;
        let id = acc.next_id;
        let mut slot = SiteSlot::new(id, Arc::clone(label));
        slot.in_flight = 1;
        acc.sites.insert(key, slot);
        self.site = Some((key, id));
        self.worker = Some(Arc::clone(worker));
    }
}

impl Drop for TapRequest {
    /// A request dropped unanswered (its client went away) lets go of its slot.
    fn drop(&mut self) {
        if let (Some((key, id)), Some(worker)) = (self.site.take(), self.worker.take())
            && let Some(slot) = worker.lock().sites.get_mut(&key).filter(|s| s.id == id)
        {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }
}

/// A site slot's count of request body bytes forwarded, shared with the requests under
/// way. Adding to it is one relaxed atomic add on a counter only this worker's requests
/// touch.
#[derive(Clone)]
pub(crate) struct BodyMeter(Arc<AtomicU64>);

impl BodyMeter {
    /// Counts `bytes` forwarded.
    pub(crate) fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The standard methods by name; others share one name, so a method cannot grow the
/// template set.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[derive(Default)]
struct Accumulator {
    /// The state of the draws that pick requests to trace.
    draws: u64,
    sites: HashMap<usize, SiteSlot>,
    next_id: u64,
    unknown_hosts: u64,
    unlabelled: u64,
    overflow: u64,
    /// The template being looked up, reused so lookups do not allocate.
    scratch: String,
}

impl Accumulator {
    /// Every slot's counts since the last drain; slots and templates that had no request
    /// in the interval and have none under way are let go, the others kept (reset) for
    /// the next one.
    fn drain_sites(&mut self) -> Vec<SiteTraffic> {
        let mut out = Vec::new();
        self.sites.retain(|_, slot| {
            let under_way = slot.in_flight > 0 || Arc::strong_count(&slot.bytes_in) > 1;
            if slot.requests == 0 && slot.bytes_out == 0 && slot.bytes_in.load(Ordering::Relaxed) == 0 {
                return under_way;
            }
            out.push(slot.take());
            true
        });
        out
    }
}

#[derive(Default)]
struct PathSlot {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
}

impl PathSlot {
    fn take(&mut self, template: &str) -> PathTraffic {
        let PathSlot {
            requests,
            client_errors,
            server_errors,
        } = std::mem::take(self);
        PathTraffic {
            template: template.to_string(),
            requests,
            client_errors,
            server_errors,
        }
    }
}

struct SiteSlot {
    id: u64,
    label: Arc<RouteLabel>,
    requests: u64,
    /// Requests of this slot under way (routed, response not yet ended).
    in_flight: u32,
    /// Request body bytes forwarded; each request body being forwarded holds a clone.
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    static_files: u64,
    proxied: u64,
    not_modified: u64,
    cold_starts: u64,
    total_micros: u64,
    statuses: Box<[u32]>,
    first_byte: Box<[u32]>,
    /// Requests per [`ClientCountry`] slot; empty until a request with a country comes.
    countries: Box<[u32]>,
    paths: HashMap<Box<str>, PathSlot>,
    other: PathSlot,
}

impl SiteSlot {
    fn new(id: u64, label: Arc<RouteLabel>) -> Self {
        Self {
            id,
            label,
            requests: 0,
            in_flight: 0,
            bytes_in: Arc::default(),
            bytes_out: 0,
            static_files: 0,
            proxied: 0,
            not_modified: 0,
            cold_starts: 0,
            total_micros: 0,
            statuses: vec![0; STATUS_SLOTS].into_boxed_slice(),
            first_byte: vec![0; BUCKETS].into_boxed_slice(),
            countries: Box::default(),
            paths: HashMap::new(),
            other: PathSlot::default(),
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.statuses.len() * 4
            + self.first_byte.len() * 4
            + self.countries.len() * 4
            + self.paths.capacity() * (std::mem::size_of::<(Box<str>, PathSlot)>() + 1)
            + self.paths.keys().map(|k| k.len()).sum::<usize>()
    }

    /// The counts since the last drain, leaving zeros (and the templates that were used).
    fn take(&mut self) -> SiteTraffic {
        let mut first_byte = LatencySketch::new();
        first_byte.add_dense(&self.first_byte);
        self.first_byte.fill(0);
        let statuses = self
            .statuses
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| ((i + 100) as u16, u64::from(std::mem::take(n))))
            .collect();
        let countries = self
            .countries
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| {
                let slot = i as u16;
                let name = if slot == UNKNOWN_COUNTRY_SLOT {
                    UNKNOWN_COUNTRY.to_string()
                } else {
                    CountryCode::of_slot(slot).as_str().to_string()
                };
                (name, u64::from(std::mem::take(n)))
            })
            .collect();
        self.paths.retain(|_, p| p.requests > 0);
        let paths = self.paths.iter_mut().map(|(t, p)| p.take(t)).collect();
        SiteTraffic {
            label: (*self.label).clone(),
            requests: std::mem::take(&mut self.requests),
            bytes_in: self.bytes_in.swap(0, Ordering::Relaxed),
            statuses,
            bytes_out: std::mem::take(&mut self.bytes_out),
            static_files: std::mem::take(&mut self.static_files),
            proxied: std::mem::take(&mut self.proxied),
            not_modified: std::mem::take(&mut self.not_modified),
            cold_starts: std::mem::take(&mut self.cold_starts),
            first_byte,
            total_micros: std::mem::take(&mut self.total_micros),
            paths,
            other_paths: self.other.take("other"),
            countries,
        }
    }
}

/// A response body that counts the bytes it sends and, when it ends (or is dropped
/// early), records them and the request's total time.
pub(crate) struct TapBody {
    inner: EdgeBody,
    end: Option<TapEnd>,
}

struct TapEnd {
    tap: Arc<WorkerTap>,
    key: usize,
    id: u64,
    started: Instant,
    bytes: u64,
    /// The request's span, when it was picked for tracing.
    trace: Option<Box<RequestSpan>>,
}

impl Drop for TapBody {
    fn drop(&mut self) {
        if let Some(mut end) = self.end.take() {
            let tap = Arc::clone(&end.tap);
            tap.finish(&mut end);
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(end)) = (&polled, this.end.as_mut())
            && let Some(data) = frame.data_ref()
        {
            end.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Appends the template of `path` to `out`: query dropped; each segment that is a number
/// becomes `:id`, a UUID `:uuid`, a hex id of 8 or more characters or a long mixed-case
/// token with digits `:hash` (a short file extension after it is kept); at most
/// [`MAX_PATH_SEGMENTS`] segments of at most 64 bytes each, deeper paths ending in `/*`.
pub fn path_template(path: &str, out: &mut String) {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = 0;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segments == MAX_PATH_SEGMENTS {
            out.push_str("/*");
            return;
        }
        out.push('/');
        push_segment(segment, out);
        segments += 1;
    }
    if segments == 0 {
        out.push('/');
    }
}

fn push_segment(segment: &str, out: &mut String) {
    let (stem, extension) = match segment.rfind('.') {
        Some(dot)
            if dot > 0 && segment.len() - dot <= 6 && segment[dot + 1..].bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            segment.split_at(dot)
        }
        _ => (segment, ""),
    };
    match mask_of(stem) {
        Some(mask) => {
            out.push_str(mask);
            out.push_str(extension);
        }
        None => {
            let mut end = segment.len().min(MAX_SEGMENT_BYTES);
            while !segment.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str(&segment[..end]);
        }
    }
}

/// The mask an id-like segment becomes, if it is one.
fn mask_of(s: &str) -> Option<&'static str> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return Some(":id");
    }
    if is_uuid(bytes) {
        return Some(":uuid");
    }
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    if bytes.len() >= 8 && has_digit && bytes.iter().all(u8::is_ascii_hexdigit) {
        return Some(":hash");
    }
    let tokenish = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'+' | b'%'));
    if bytes.len() >= 16
        && tokenish
        && has_digit
        && bytes.iter().any(u8::is_ascii_uppercase)
        && bytes.iter().any(u8::is_ascii_lowercase)
    {
        return Some(":hash");
    }
    None
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(path: &str) -> String {
        let mut out = String::new();
        path_template(path, &mut out);
        out
    }

    #[test]
    fn templates_mask_ids_and_keep_words() {
        assert_eq!(template("/"), "/");
        assert_eq!(template(""), "/");
        assert_eq!(template("/users/42/posts/7"), "/users/:id/posts/:id");
        assert_eq!(template("/users/42?tab=posts"), "/users/:id");
        assert_eq!(template("/o/3f2504e0-4f89-11d3-9a0c-0305e82c3301"), "/o/:uuid");
        assert_eq!(
            template("/commit/9fceb02d0ae598e95dc970b74767f19372d61af8"),
            "/commit/:hash"
        );
        assert_eq!(template("/img/1234.png"), "/img/:id.png");
        assert_eq!(template("/t/eyJhbGciOiJIUzI1NiJ9abc"), "/t/:hash");
        assert_eq!(template("/blog/my-first-post-2024"), "/blog/my-first-post-2024");
        assert_eq!(template("/assets/app.css"), "/assets/app.css");
        assert_eq!(template("/deadbeef"), "/deadbeef", "a hex word without digits stays");
        assert_eq!(template("/a/b/c/d/e/f/g/h/i/j"), "/a/b/c/d/e/f/g/h/*");
        assert_eq!(template(&format!("/{}", "x".repeat(300))).len(), 1 + 64);
    }
}
