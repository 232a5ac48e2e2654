//! berth's edge proxy: the HTTP server every deployed site is served through.
//!
//! Requests are routed by their `Host` header (port stripped, lowercased,
//! trailing dot removed) through an immutable [`EdgeRouteTable`] that the
//! control plane replaces atomically with [`Edge::replace_routes`]. A route
//! either serves a directory of static files, reverse-proxies to running app
//! instances (round-robin, with WebSocket/`Upgrade` passthrough), or answers
//! with a small "unavailable" page.
//!
//! For throughput the edge works like nginx's worker processes: accepted
//! connections are spread over one single-threaded Tokio runtime per CPU,
//! and each worker keeps its own keep-alive pool of HTTP/1.1 connections to
//! app instances, so a request never hops threads. The route table is read
//! through `arc-swap` and round-robin uses an atomic counter; the only locks
//! touched per request are the calling worker's own (uncontended) pool and
//! traffic tap.
//!
//! For drains, the edge counts what is in flight to each app instance
//! ([`Edge::in_flight_to`], an atomic per address held by the route) and can
//! tell an instance's upgraded connections to close ([`Edge::close_upgraded`]):
//! a WebSocket client then gets a close frame, 1001 "going away".
//!
//! HTTPS ([`Edge::serve_tls`]) uses rustls with a certificate per name from a
//! [`CertTable`] swapped in with [`Edge::replace_certificates`]; a name without a
//! certificate gets a TLS alert, never a default certificate. The plain listener
//! answers ACME HTTP-01 challenges and, with [`EdgeConfig::https_port`], redirects
//! names that have a certificate to HTTPS.
//!
//! Every request answered for a labelled route is counted by the tap (status, path
//! template, bytes, latency, cold starts) in per-worker accumulators that
//! [`Edge::drain_tap`] empties; [`EdgeConfig::tap`] switches it off. With
//! [`Edge::set_country_lookup`] (a GeoIP database) it also counts requests by client country;
//! with [`Edge::set_request_tracer`] it hands a sampled share of requests to a tracer.
//!
//! ```no_run
//! use berth_edge::{Edge, EdgeConfig, EdgeRouteTable, RouteTarget};
//!
//! # async fn run() -> std::io::Result<()> {
//! let edge = Edge::new(EdgeConfig::default());
//! let mut table = EdgeRouteTable::new();
//! table.insert("app.example.com", RouteTarget::Upstream {
//!     instances: vec!["127.0.0.1:3000".parse().unwrap()],
//! });
//! edge.replace_routes(table);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! edge.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod body;
mod config;
mod pages;
mod pool;
mod proxy;
mod routes;
mod server;
mod sketch;
mod statics;
mod tap;
mod tls;
mod tunnel;
mod upstreams;

pub use config::EdgeConfig;
pub use routes::{EdgeRouteTable, RouteTarget, normalize_host};
pub use rustls::sign::CertifiedKey;
pub use server::Edge;
pub use sketch::{LatencySketch, RELATIVE_ERROR};
pub use tap::{
    CountryCode, MAX_PATH_SEGMENTS, MAX_PATHS_PER_SITE, MAX_SITES_PER_WORKER, PathTraffic, RequestSpan, RouteLabel,
    SiteTraffic, TapDrain, TapFootprint, UNKNOWN_COUNTRY, path_template,
};
pub use tls::{CertTable, MAX_CHALLENGES, certified_key_from_pem, challenge_key_from_pem};
