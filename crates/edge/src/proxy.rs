//! Reverse proxying to app instances: request/response header rewriting
//! (hop-by-hop removal, `X-Forwarded-*`), round-robin with failover for
//! retry-safe requests, body-size limits, timeouts mapped to 502/504, and
//! `Upgrade` (WebSocket) tunnelling.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::{Extensions, request};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::time::Instant;
use tracing::debug;

use crate::EdgeConfig;
use crate::body::{BodyTooLarge, EdgeBody, ProxyBody};
use crate::pages;
use crate::pool::{Lease, SendError, UpstreamPool};
use crate::server::Client;
use crate::tap::BodyMeter;
use crate::tunnel;
use crate::upstreams::{InFlightGuard, Upstream};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Why forwarding failed, mapped to the edge page the client gets.
enum Failure {
    Connect,
    Timeout,
    TooLarge,
    Other,
}

/// Forwards `req` to one of `instances` (round-robin on `next`) and returns
/// the app's response (or an edge page). `upstreams` holds the instances'
/// in-flight counters, in the same order. `original_host` is the client's
/// Host value, `site` its normalised form used on error pages. The body's
/// bytes are added to `meter` as they are forwarded.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    pool: &Arc<UpstreamPool>,
    config: &EdgeConfig,
    instances: &[SocketAddr],
    upstreams: &[Arc<Upstream>],
    next: &AtomicUsize,
    mut req: Request<Incoming>,
    original_host: HeaderValue,
    client: &Client,
    site: &str,
    meter: Option<BodyMeter>,
) -> Response<EdgeBody> {
    let count = instances.len();
    if count == 0 || upstreams.len() != count {
        return pages::bad_gateway(site);
    }
    let max = config.max_request_body_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        && len > max
    {
        return pages::payload_too_large(max);
    }

    let upgrade = requested_upgrade(&req);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        ProxyBody::Empty
    } else {
        ProxyBody::Limited {
            body,
            remaining: max,
            meter,
        }
    };
    // Failing over is only safe when the request can be replayed as is.
    let retry_safe =
        matches!(body, ProxyBody::Empty) && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let attempts = if retry_safe { count } else { 1 };

    rewrite_request_headers(
        &mut parts.headers,
        upgrade,
        original_host,
        &client.forwarded_for,
        client.forwarded_proto(),
    );
    // The client may have spoken HTTP/2 or used an absolute-form target;
    // apps are always sent HTTP/1.1 in origin form.
    parts.version = Version::HTTP_11;
    parts.extensions = Extensions::new();
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };

    let deadline = Instant::now() + config.request_timeout;
    // A single instance needs no rotation, and skipping it spares every
    // request a write to a counter that all workers share.
    let first = if count == 1 {
        0
    } else {
        next.fetch_add(1, Ordering::Relaxed)
    };
    let pick = |attempt: usize| first.wrapping_add(attempt) % count;
    // Counted from before it is sent until its response (or tunnel) ends, so a
    // drain of that instance waits for it.
    let enter = |i: usize| InFlightGuard::enter(&upstreams[i]);

    for attempt in 0..attempts - 1 {
        let i = pick(attempt);
        let addr = instances[i];
        let in_flight = enter(i);
        match send(pool, addr, clone_bodyless(&parts), deadline).await {
            Err(Failure::Connect) => {
                debug!(instance = %addr, "app instance refused connection; trying the next one");
            }
            result => return finish(result, in_flight, client_upgrade, site, max),
        }
    }
    let i = pick(attempts - 1);
    let in_flight = enter(i);
    let result = send(pool, instances[i], Request::from_parts(parts, body), deadline).await;
    finish(result, in_flight, client_upgrade, site, max)
}

async fn send(
    pool: &Arc<UpstreamPool>,
    addr: SocketAddr,
    req: Request<ProxyBody>,
    deadline: Instant,
) -> Result<(Response<Incoming>, Lease), Failure> {
    match tokio::time::timeout_at(deadline, pool.send(addr, req)).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(SendError::Connect)) => Err(Failure::Connect),
        Ok(Err(SendError::Http(e))) if caused_by_body_limit(&e) => Err(Failure::TooLarge),
        Ok(Err(SendError::Http(e))) => {
            debug!(instance = %addr, error = %e, "forwarding to app instance failed");
            Err(Failure::Other)
        }
        Err(_) => Err(Failure::Timeout),
    }
}

fn finish(
    result: Result<(Response<Incoming>, Lease), Failure>,
    in_flight: InFlightGuard,
    client_upgrade: Option<OnUpgrade>,
    site: &str,
    max: u64,
) -> Response<EdgeBody> {
    let (mut res, lease) = match result {
        Ok(pair) => pair,
        Err(Failure::Connect | Failure::Other) => return pages::bad_gateway(site),
        Err(Failure::Timeout) => return pages::gateway_timeout(site),
        Err(Failure::TooLarge) => return pages::payload_too_large(max),
    };
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        lease.discard();
        let Some(client_upgrade) = client_upgrade else {
            debug!("app switched protocols without being asked to");
            return pages::bad_gateway(site);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        let (mut parts, _) = res.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        let websocket = protocol
            .as_ref()
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
        tokio::spawn(tunnel::run(client_upgrade, upstream_upgrade, websocket, in_flight));
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        return Response::from_parts(parts, EdgeBody::Empty);
    }
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        EdgeBody::Upstream {
            body,
            _lease: lease,
            _in_flight: in_flight,
        },
    )
}

/// The `Upgrade` value when `req` asks for a protocol switch the HTTP/1.1
/// way (the `Upgrade` header plus the `upgrade` Connection token).
fn requested_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?;
    connection_tokens(req.headers())
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
        .then(|| protocol.clone())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): `Connection` and every
/// field it names, plus the fixed set that never crosses a proxy.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names present instead of a lookup per field
    // that is usually absent.
    let mut connection = false;
    let mut fixed = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_fixed_hop_by_hop(name) {
            fixed = true;
        }
    }
    if connection {
        // Only allocates when a client names unusual fields.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| {
                !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    if fixed {
        headers.remove(&KEEP_ALIVE);
        headers.remove(&PROXY_CONNECTION);
        headers.remove(header::TE);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::UPGRADE);
        headers.remove(header::PROXY_AUTHENTICATE);
        headers.remove(header::PROXY_AUTHORIZATION);
    }
}

/// The hop-by-hop fields removed whether or not `Connection` names them.
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
}

/// `client_ip` is the client's address as a header value (see
/// [`Client::forwarded_for`]), `proto` how the client reached the edge (`http` or
/// `https`).
fn rewrite_request_headers(
    headers: &mut HeaderMap,
    upgrade: Option<HeaderValue>,
    original_host: HeaderValue,
    client_ip: &HeaderValue,
    proto: HeaderValue,
) {
    strip_hop_by_hop(headers);
    // hyper already answered any `100-continue` expectation towards the
    // client when the body was first read; the app must not wait for one.
    headers.remove(header::EXPECT);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if !headers.contains_key(header::HOST) {
        // HTTP/2 clients send `:authority` instead of Host.
        headers.insert(header::HOST, original_host.clone());
    }

    let mut earlier = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if earlier.peek().is_none() {
        // The common case: the client is the first hop.
        headers.insert(&X_FORWARDED_FOR, client_ip.clone());
    } else {
        let mut forwarded_for = String::new();
        for value in earlier {
            if let Ok(value) = value.to_str() {
                forwarded_for.push_str(value.trim());
                forwarded_for.push_str(", ");
            }
        }
        forwarded_for.push_str(client_ip.to_str().unwrap_or_default());
        if let Ok(value) = HeaderValue::try_from(forwarded_for) {
            headers.insert(&X_FORWARDED_FOR, value);
        }
    }
    // Set, not appended: the edge is the first hop berth trusts, so a
    // client-supplied value would only be a spoofing vector.
    headers.insert(&X_FORWARDED_PROTO, proto);
    headers.insert(&X_FORWARDED_HOST, original_host);
}

/// A copy of a body-less request, for a failover attempt that may consume
/// it while the original is kept for the next one.
fn clone_bodyless(parts: &request::Parts) -> Request<ProxyBody> {
    let mut req = Request::new(ProxyBody::Empty);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

fn caused_by_body_limit(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.2"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        rewrite_request_headers(
            &mut h,
            None,
            HeaderValue::from_static("App.Test:8080"),
            &HeaderValue::from_static("127.0.0.1"),
            HeaderValue::from_static("http"),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.1, 203.0.113.2, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "App.Test:8080");
        assert_eq!(h[header::HOST], "App.Test:8080");
    }

    #[test]
    fn upgrade_detection_needs_connection_token() {
        let req = Request::builder()
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .body(())
            .unwrap();
        assert_eq!(requested_upgrade(&req).unwrap(), "websocket");
        let req = Request::builder()
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(requested_upgrade(&req).is_none());
    }
}
