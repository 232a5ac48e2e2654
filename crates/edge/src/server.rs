//! The [`Edge`] itself: the atomically swappable route table, the accept
//! loops (plain HTTP and TLS) with graceful shutdown, and per-request dispatch
//! by `Host`.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::body::EdgeBody;
use crate::pool::UpstreamPool;
use crate::proxy;
use crate::routes::{EdgeRouteTable, RouteTarget, normalize_host};
use crate::tap::{ClientCountry, CountryCode, RequestSpan, RequestTracer, TapBody, TapRequest, WorkerTap};
use crate::tls::{self, CertTable, TlsState};
use crate::upstreams::UpstreamRegistry;
use crate::{EdgeConfig, pages, statics};

/// How long in-flight requests may run after shutdown begins before their
/// connections are closed anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often each worker closes pooled app connections that sat idle too
/// long.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Slowloris guard: a client must finish sending request headers this fast.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The edge proxy. Create it with [`Edge::new`], publish routes with
/// [`Edge::replace_routes`] (any time, also while serving) and run it with
/// [`Edge::serve`].
pub struct Edge {
    config: EdgeConfig,
    /// Shared (`Arc`) so each worker can keep an [`arc_swap::Cache`] of it.
    routes: Arc<ArcSwap<EdgeRouteTable>>,
    /// Bumped on every published table, so held requests look again.
    version: tokio::sync::watch::Sender<u64>,
    /// Called with the host of a request for a [`RouteTarget::Sleeping`] site.
    waker: arc_swap::ArcSwapOption<Waker>,
    /// Requests currently held for sleeping sites.
    held: std::sync::atomic::AtomicUsize,
    /// What is in flight to each app instance, for drains.
    upstreams: UpstreamRegistry,
    /// Certificates and ACME challenges, shared with the TLS listeners' resolvers.
    tls: Arc<TlsState>,
    /// The workers' traffic accumulators.
    pub(crate) taps: crate::tap::TapRegistry,
    /// The GeoIP lookup of clients' countries, when a database is configured.
    countries: arc_swap::ArcSwapOption<CountryLookup>,
    /// The tracer of sampled requests, taken by workers as they start.
    tracer: arc_swap::ArcSwapOption<RequestTracer>,
}

/// The control plane's callback that starts a sleeping site.
struct Waker(Box<dyn Fn(&str) + Send + Sync>);

/// The control plane's GeoIP lookup (see [`Edge::set_country_lookup`]).
struct CountryLookup(Box<dyn Fn(std::net::IpAddr) -> Option<CountryCode> + Send + Sync>);

impl fmt::Debug for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edge")
            .field("config", &self.config)
            .field("routes", &self.routes.load().len())
            .field("certificates", &self.tls.certificate_count())
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// An edge with an empty route table (every host answers 404).
    pub fn new(config: EdgeConfig) -> Arc<Edge> {
        Arc::new(Edge {
            taps: crate::tap::TapRegistry::new(config.tap),
            config,
            routes: Arc::new(ArcSwap::from_pointee(EdgeRouteTable::new())),
            version: tokio::sync::watch::Sender::new(0),
            waker: arc_swap::ArcSwapOption::empty(),
            held: std::sync::atomic::AtomicUsize::new(0),
            upstreams: UpstreamRegistry::default(),
            tls: Arc::new(TlsState::new()),
            countries: arc_swap::ArcSwapOption::empty(),
            tracer: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// The configuration this edge was created with.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Atomically publishes a new route table. Requests that already started
    /// keep using the table they started with; later ones see the new one.
    pub fn replace_routes(&self, mut table: EdgeRouteTable) {
        debug!(hosts = table.len(), "edge routes replaced");
        table.inherit_activity(&self.routes.load());
        table.attach_upstreams(&self.upstreams);
        self.routes.store(Arc::new(table));
        self.upstreams.prune();
        self.version.send_modify(|v| *v += 1);
    }

    /// How many requests (until their response is sent) and upgraded connections the
    /// edge is proxying to the app instance at `addr` right now, whichever table routed
    /// them: a drained instance can stop once this is 0.
    pub fn in_flight_to(&self, addr: SocketAddr) -> usize {
        self.upstreams.in_flight(addr)
    }

    /// How many of [`Edge::in_flight_to`] are upgraded connections (WebSockets).
    pub fn upgraded_to(&self, addr: SocketAddr) -> usize {
        self.upstreams.upgraded(addr)
    }

    /// Closes the upgraded connections to the app instance at `addr` (it is going away):
    /// a WebSocket client gets a close frame, 1001 "going away", at the next frame
    /// boundary, so it reconnects; other upgraded connections are closed.
    pub fn close_upgraded(&self, addr: SocketAddr) {
        self.upstreams.go_away(addr);
    }

    /// Sets the callback that wakes a sleeping site; it gets the request's host and
    /// should return quickly (start the app in the background, then publish routes).
    pub fn set_waker(&self, waker: impl Fn(&str) + Send + Sync + 'static) {
        self.waker.store(Some(Arc::new(Waker(Box::new(waker)))));
    }

    /// Sets the lookup of a client's country (a GeoIP database): from then on the tap
    /// counts each request by its client's country (see
    /// [`SiteTraffic::countries`](crate::SiteTraffic::countries)). It is called once per
    /// client connection with the connecting peer's address (IPv4-mapped IPv6 addresses
    /// as IPv4), on the worker thread, so it must be quick and must not block.
    pub fn set_country_lookup(&self, lookup: impl Fn(std::net::IpAddr) -> Option<CountryCode> + Send + Sync + 'static) {
        self.countries.store(Some(Arc::new(CountryLookup(Box::new(lookup)))));
    }

    /// Traces a share `ratio` (above 0, at most 1) of the requests the tap counts: each
    /// one picked is handed to `trace` when its response has ended (on the worker thread,
    /// so it must be quick: queue it, do not send it). Applies to listeners served after
    /// the call; without it, or with `ratio` 0, nothing is drawn or kept.
    pub fn set_request_tracer(&self, ratio: f64, trace: impl Fn(RequestSpan) + Send + Sync + 'static) {
        self.tracer.store(Some(Arc::new(RequestTracer::new(ratio, trace))));
    }

    /// The country slot of a connection from `ip`, for the tap.
    fn client_country(&self, ip: std::net::IpAddr) -> ClientCountry {
        match &*self.countries.load() {
            Some(lookup) if self.config.tap => ClientCountry::looked_up((lookup.0)(ip.to_canonical())),
            _ => ClientCountry::default(),
        }
    }

    /// How long `host` has gone without a request (since it was first routed if never).
    pub fn idle_for(&self, host: &str) -> Option<Duration> {
        self.routes.load().idle_for(host)
    }

    /// Counts a request to `host` now, made through another replica's edge (its idle
    /// timer starts again).
    pub fn touch(&self, host: &str) {
        if let Some(route) = self.routes.load().route(host) {
            route.touch();
        }
    }

    /// How many requests are being proxied to `host` right now (the autoscaler's signal).
    pub fn in_flight(&self, host: &str) -> Option<usize> {
        self.routes.load().in_flight(host)
    }

    /// The route table currently in use.
    pub fn routes(&self) -> Arc<EdgeRouteTable> {
        self.routes.load_full()
    }

    /// Atomically publishes a new certificate table, without a restart: new TLS
    /// handshakes use it, connections already open keep the certificate they got.
    pub fn replace_certificates(&self, table: CertTable) {
        debug!(names = table.len(), "edge certificates replaced");
        self.tls.replace_certificates(table);
    }

    /// Answers HTTP-01 validation: `GET /.well-known/acme-challenge/<token>` on the
    /// plain listener, for any host, gets `key_authorization` (until removed). At most
    /// 10,000 tokens are kept; beyond that the oldest is dropped with a warning.
    pub fn set_http_challenge(&self, token: &str, key_authorization: &str) {
        self.tls.set_http_challenge(token, key_authorization);
    }

    /// Stops answering the HTTP-01 `token`.
    pub fn remove_http_challenge(&self, token: &str) {
        self.tls.remove_http_challenge(token);
    }

    /// Answers TLS-ALPN-01 validation (RFC 8737): a handshake for `name` offering ALPN
    /// `acme-tls/1` gets `key` (the challenge certificate) and is closed once complete.
    /// At most 10,000 names are kept; beyond that the oldest is dropped with a warning.
    pub fn set_alpn_challenge(&self, name: &str, key: Arc<rustls::sign::CertifiedKey>) {
        self.tls.set_alpn_challenge(name, key);
    }

    /// Stops answering TLS-ALPN-01 validation for `name`.
    pub fn remove_alpn_challenge(&self, name: &str) {
        self.tls.remove_alpn_challenge(name);
    }

    /// Replaces every challenge answered with `http` (HTTP-01 token, key authorization)
    /// and `alpn` (TLS-ALPN-01 name, challenge certificate): what is not given is no
    /// longer answered. Each kind keeps at most [`crate::MAX_CHALLENGES`] (the last given).
    pub fn replace_challenges(
        &self,
        http: impl IntoIterator<Item = (String, String)>,
        alpn: impl IntoIterator<Item = (String, Arc<rustls::sign::CertifiedKey>)>,
    ) {
        self.tls.replace_challenges(http, alpn);
    }

    /// Serves HTTP/1.1 (and cleartext HTTP/2) on `listener` until `shutdown`
    /// completes, then stops accepting, lets in-flight requests finish for up
    /// to 10 s, closes what remains and returns.
    ///
    /// Connections are accepted on the caller's runtime and handed round-robin
    /// to one worker thread per CPU, each running its own single-threaded
    /// Tokio runtime with its own pool of upstream connections. A connection
    /// (and the upstream connections it uses) thus stays on one thread, the
    /// way nginx workers do, which avoids cross-thread wake-ups per request.
    /// Upgraded (WebSocket) tunnels are closed when `serve` returns.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_on(listener, None, shutdown).await
    }

    /// Serves HTTPS on `listener` (HTTP/2 and HTTP/1.1 by ALPN) with the certificates of
    /// [`Edge::replace_certificates`], with the same workers and shutdown as
    /// [`Edge::serve`]. Handshakes run on the worker threads and must complete within
    /// [`EdgeConfig::tls_handshake_timeout`]. A handshake for a name without a
    /// certificate (or without SNI) fails with a TLS alert: no default certificate is
    /// ever presented. A TLS-ALPN-01 handshake (ALPN `acme-tls/1`) gets the challenge
    /// certificate of [`Edge::set_alpn_challenge`] and is closed without serving HTTP.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = tls::server_config(Arc::clone(&self.tls)).map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.serve_on(listener, Some(acceptor), shutdown).await
    }

    /// The accept loop of [`Edge::serve`] and [`Edge::serve_tls`]: with `tls`, the
    /// workers handshake before serving HTTP.
    async fn serve_on(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let graceful = GracefulShutdown::new();
        // Flipped to true once the grace period is over (or nothing is left
        // to wait for): closes busy connections and ends the workers.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let https = tls.is_some();
        let workers = spawn_workers(&self, worker_count(), &stopped, tls)?;
        let mut shutdown = pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, workers = workers.len(), tls = https, "edge listening");
        }

        let mut next = 0usize;
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Typically EMFILE/ENFILE: back off instead of spinning
                        // until descriptors free up.
                        warn!(error = %e, "edge accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(%peer, error = %e, "could not detach accepted connection");
                    continue;
                }
            };
            let worker = &workers[next % workers.len()];
            next = next.wrapping_add(1);
            // The watcher is taken here, before any shutdown signal can be
            // sent, so no accepted connection escapes the graceful wait.
            if worker.connections.send((stream, peer, graceful.watcher())).is_err() {
                warn!(%peer, "edge worker is gone; dropping connection");
            }
        }

        drop(listener);
        info!("edge shutting down; waiting for in-flight requests");
        let mut finished = Vec::with_capacity(workers.len());
        for worker in workers {
            // Closing the channel tells the worker no more connections come.
            drop(worker.connections);
            finished.push(worker.finished);
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            warn!("edge shutdown grace period elapsed; closing remaining connections");
        }
        let _ = stop.send(true);
        for done in finished {
            let _ = done.await;
        }
        Ok(())
    }

    async fn handle(&self, worker: &Worker, client: &Client, req: Request<Incoming>) -> Response<TapBody> {
        let mut tap = worker.tap.begin(&req, client.country);
        let response = self.route_request(worker, client, req, &mut tap).await;
        worker.tap.respond(tap, response)
    }

    async fn route_request(
        &self,
        worker: &Worker,
        client: &Client,
        req: Request<Incoming>,
        tap: &mut TapRequest,
    ) -> Response<EdgeBody> {
        // Before routing and for any host: the CA asks whatever name it validates.
        if req.uri().path().starts_with(tls::ACME_CHALLENGE_PREFIX) {
            return self.tls.http_challenge_response(req.uri().path());
        }
        // An absolute-form target (and HTTP/2's :authority) overrides Host.
        let host_value = match req.uri().authority() {
            Some(authority) => {
                let without_userinfo = authority.as_str().rsplit('@').next().unwrap_or_default();
                HeaderValue::from_str(without_userinfo).ok()
            }
            None => req.headers().get(header::HOST).cloned(),
        };
        let Some(host_value) = host_value else {
            return pages::bad_request();
        };
        let Ok(raw_host) = host_value.to_str() else {
            return pages::bad_request();
        };
        let host = normalize_host(raw_host);
        if host.is_empty() {
            return pages::bad_request();
        }

        if client.https {
            // A request for a name the connection's certificate does not cover (domain
            // fronting, or a client reusing a connection too far) is sent back to make
            // its own connection, so HSTS and routing follow the name TLS verified.
            if let Some(sni) = &client.sni
                && *host != **sni
                && !self.tls.same_certificate(sni, &host)
            {
                return pages::misdirected(&host);
            }
            let hsts = self.tls.hsts(&host);
            let mut res = self.route(worker, client, req, &host_value, host, tap).await;
            if hsts {
                res.headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, tls::hsts_header());
            }
            return res;
        }
        if let Some(port) = self.config.https_port
            && self.tls.has_certificate(&host)
        {
            return pages::https_redirect(&host, port, req.uri());
        }
        self.route(worker, client, req, &host_value, host, tap).await
    }

    /// Serves a request for the normalised `host` by the route table.
    async fn route(
        &self,
        worker: &Worker,
        client: &Client,
        req: Request<Incoming>,
        host_value: &HeaderValue,
        host: std::borrow::Cow<'_, str>,
        tap: &mut TapRequest,
    ) -> Response<EdgeBody> {
        // Held for the whole request so a concurrent swap cannot change the
        // target (or the round-robin state) underneath it.
        let table = worker.routes();
        // A custom domain is served as the host it names (its site's own host).
        let host = match table.resolve_normalized(&host) {
            canonical if canonical != host.as_ref() => std::borrow::Cow::Owned(canonical.to_string()),
            _ => host,
        };
        let Some(route) = table.route_normalized(&host) else {
            tap.unknown_host();
            return pages::unknown_host(&host);
        };
        route.touch();
        if let RouteTarget::Sleeping { .. } | RouteTarget::Starting { .. } = &route.target {
            let wake = matches!(route.target, RouteTarget::Sleeping { .. });
            drop(table);
            // Boxed: holding a request is rare, and its large future would
            // otherwise enlarge every request's.
            return Box::pin(self.activate(worker, client, req, host_value.clone(), &host, wake, tap)).await;
        }
        self.dispatch(worker, client, route, req, host_value.clone(), &host, tap)
            .await
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts, borrowed rather than bundled"
    )]
    async fn dispatch(
        &self,
        worker: &Worker,
        client: &Client,
        route: &crate::routes::Route,
        req: Request<Incoming>,
        host_value: HeaderValue,
        host: &str,
        tap: &mut TapRequest,
    ) -> Response<EdgeBody> {
        tap.route(&worker.tap, route);
        match &route.target {
            RouteTarget::Static {
                root,
                jail,
                spa_fallback,
            } => {
                // Boxed: the file-serving future is large, and keeping it out
                // of line keeps every request's future (which hyper moves
                // around) small.
                Box::pin(statics::serve(
                    req.method(),
                    req.uri(),
                    req.headers(),
                    root,
                    jail,
                    *spa_fallback,
                ))
                .await
            }
            RouteTarget::Upstream { instances } => {
                let _in_flight = InFlight::enter(&route.in_flight);
                // Most requests have no body: they take no handle on the byte counter.
                let meter = if http_body::Body::is_end_stream(req.body()) {
                    None
                } else {
                    tap.body_meter()
                };
                proxy::forward(
                    &worker.pool,
                    &self.config,
                    instances,
                    &route.upstreams,
                    &route.next,
                    req,
                    host_value,
                    client,
                    host,
                    meter,
                )
                .await
            }
            RouteTarget::Unavailable {
                site,
                status,
                message,
                retry_after_seconds,
            } => pages::unavailable(site, *status, message, *retry_after_seconds),
            RouteTarget::Sleeping { site } => {
                pages::unavailable(site, 503, "The app is waking up; try again in a moment.", Some(1))
            }
            RouteTarget::Starting { site } => {
                pages::unavailable(site, 503, "The app is starting; try again in a moment.", Some(2))
            }
            RouteTarget::Redirect { to } => pages::redirect(to, &host_value, req.uri()),
            RouteTarget::UnverifiedDomain => pages::domain_not_verified(host),
        }
    }

    /// The activator: holds a request for a sleeping site (waking it: `wake`) or a starting one
    /// until a published table routes its host to something that answers (or the
    /// activation timeout). Sleeping and starting routes met on the way are waited
    /// through; anything else is served as soon as it appears.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts, borrowed rather than bundled"
    )]
    async fn activate(
        &self,
        worker: &Worker,
        client: &Client,
        req: Request<Incoming>,
        host_value: HeaderValue,
        host: &str,
        wake: bool,
        tap: &mut TapRequest,
    ) -> Response<EdgeBody> {
        use std::sync::atomic::Ordering;
        struct Held<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.config.max_held_requests {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return pages::unavailable(
                host,
                503,
                "Too many requests are waiting for sites that are waking or starting.",
                Some(2),
            );
        }
        let _held = Held(&self.held);
        let mut changes = self.version.subscribe();
        if wake {
            tap.cold_start();
            if let Some(waker) = self.waker.load_full() {
                (waker.0)(host);
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.activation_timeout;
        loop {
            let table = self.routes.load_full();
            match table.route_normalized(host) {
                None => return pages::unknown_host(host),
                Some(route) => match &route.target {
                    RouteTarget::Sleeping { .. } | RouteTarget::Starting { .. } => {}
                    _ => return self.dispatch(worker, client, route, req, host_value, host, tap).await,
                },
            }
            changes.mark_unchanged();
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                let table = self.routes.load_full();
                return match table.route_normalized(host) {
                    Some(route) => self.dispatch(worker, client, route, req, host_value, host, tap).await,
                    None => pages::unknown_host(host),
                };
            }
        }
    }
}

/// One worker thread as seen from the acceptor.
struct WorkerHandle {
    connections: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr, Watcher)>,
    /// Resolves when the worker thread has shut its runtime down.
    finished: oneshot::Receiver<()>,
}

/// State shared by all connections of one worker.
struct Worker {
    edge: Arc<Edge>,
    pool: Arc<UpstreamPool>,
    routes: Mutex<WorkerRoutes>,
    tap: Arc<WorkerTap>,
}

/// A worker's view of the route table. Requests hold the table through the
/// worker's own `Arc`, so the reference count they touch is not shared
/// with other workers' CPUs; the shared one is only touched when a new
/// table was published.
struct WorkerRoutes {
    current: arc_swap::Cache<Arc<ArcSwap<EdgeRouteTable>>, Arc<EdgeRouteTable>>,
    local: Arc<Snapshot>,
}

/// A published route table as held by one worker (see [`WorkerRoutes`]).
struct Snapshot(Arc<EdgeRouteTable>);

impl std::ops::Deref for Snapshot {
    type Target = EdgeRouteTable;

    fn deref(&self) -> &EdgeRouteTable {
        &self.0
    }
}

impl Worker {
    fn new(edge: Arc<Edge>, pool: Arc<UpstreamPool>) -> Self {
        let mut current = arc_swap::Cache::new(Arc::clone(&edge.routes));
        let local = Arc::new(Snapshot(Arc::clone(current.load())));
        Self {
            tap: edge.taps.worker(edge.tracer.load_full()),
            edge,
            pool,
            routes: Mutex::new(WorkerRoutes { current, local }),
        }
    }

    /// The route table now in force.
    fn routes(&self) -> Arc<Snapshot> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let WorkerRoutes { current, local } = &mut *routes;
        let table = current.load();
        if !Arc::ptr_eq(table, &local.0) {
            *local = Arc::new(Snapshot(Arc::clone(table)));
        }
        Arc::clone(local)
    }
}

/// What every request on one client connection shares.
pub(crate) struct Client {
    /// `X-Forwarded-For` for requests that bring none: the client's address,
    /// formatted once per connection instead of once per request.
    pub(crate) forwarded_for: HeaderValue,
    /// Whether the connection came in over TLS (the listener's, never the client's say).
    pub(crate) https: bool,
    /// The TLS server name the client asked for (normalised), on TLS connections.
    pub(crate) sni: Option<Box<str>>,
    /// The client's country, looked up once per connection (the connecting peer's
    /// address: the edge trusts no proxy's `X-Forwarded-For`).
    country: ClientCountry,
}

impl Client {
    fn new(peer: SocketAddr, https: bool, sni: Option<Box<str>>, country: ClientCountry) -> Self {
        let ip = peer.ip().to_canonical().to_string();
        // An IP address is always a valid header value; the fallback is
        // never used.
        let forwarded_for = HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            forwarded_for,
            https,
            sni,
            country,
        }
    }

    /// `X-Forwarded-Proto` for the app: how the client reached the edge.
    pub(crate) fn forwarded_proto(&self) -> HeaderValue {
        HeaderValue::from_static(if self.https { "https" } else { "http" })
    }
}

fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn spawn_workers(
    edge: &Arc<Edge>,
    count: usize,
    stopped: &tokio::sync::watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<Vec<WorkerHandle>> {
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        // Built here so a failure is returned from `serve`, not lost in a thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("berth-edge-{index}-blocking"))
            .build()?;
        let (connections, incoming) = mpsc::unbounded_channel();
        let (finished_tx, finished) = oneshot::channel();
        let edge = Arc::clone(edge);
        let stopped = stopped.clone();
        let tls = tls.clone();
        let name = if tls.is_some() { "berth-edge-tls" } else { "berth-edge" };
        std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                runtime.block_on(run_worker(edge, incoming, stopped, tls));
                // Bounded so a stuck static-file read cannot hold up shutdown.
                runtime.shutdown_timeout(Duration::from_secs(1));
                let _ = finished_tx.send(());
            })?;
        handles.push(WorkerHandle { connections, finished });
    }
    Ok(handles)
}

async fn run_worker(
    edge: Arc<Edge>,
    mut incoming: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr, Watcher)>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let pool = Arc::new(UpstreamPool::new(edge.config.connect_timeout));
    let sweeper = Arc::clone(&pool);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(POOL_SWEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            sweeper.sweep();
        }
    });
    let worker = Arc::new(Worker::new(edge, pool));

    // The connection tasks live in a set so they can all be aborted once
    // the grace period is over; that keeps a stop signal out of every
    // connection's poll.
    let mut connections = JoinSet::new();
    let mut accepting = true;
    loop {
        tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            next = incoming.recv(), if accepting => {
                // `None`: no more connections will come; keep serving the
                // open ones until the acceptor says the grace period is over.
                let Some((stream, peer, watcher)) = next else {
                    accepting = false;
                    continue;
                };
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => {
                        debug!(%peer, error = %e, "could not register connection with worker");
                        continue;
                    }
                };
                let worker = Arc::clone(&worker);
                let builder = Arc::clone(&builder);
                match &tls {
                    None => {
                        connections.spawn(serve_connection(worker, builder, stream, peer, watcher, None));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        connections.spawn(async move {
                            let timeout = worker.edge.config.tls_handshake_timeout;
                            let mut stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            if stream.get_ref().1.alpn_protocol() == Some(tls::ACME_TLS_ALPN) {
                                // TLS-ALPN-01 validation ends with the handshake.
                                let _ = tokio::time::timeout(timeout, stream.shutdown()).await;
                                return;
                            }
                            let sni = stream.get_ref().1.server_name().map(|n| tls::normalize_name(n).into());
                            serve_connection(worker, builder, stream, peer, watcher, sni).await;
                        });
                    }
                }
            }
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Serves HTTP on one client connection (`io`, already past TLS when `sni` is given: the
/// name the client asked for) until it ends or graceful shutdown closes it.
async fn serve_connection<I>(
    worker: Arc<Worker>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    peer: SocketAddr,
    watcher: Watcher,
    sni: Option<Box<str>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let country = worker.edge.client_country(peer.ip());
    let client = Arc::new(Client::new(peer, sni.is_some(), sni, country));
    let service = service_fn(move |req| {
        let worker = Arc::clone(&worker);
        let client = Arc::clone(&client);
        async move { Ok::<_, Infallible>(worker.edge.handle(&worker, &client, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
