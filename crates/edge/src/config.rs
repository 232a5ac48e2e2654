//! Tunables of the edge proxy ([`EdgeConfig`]).

use std::time::Duration;

/// Limits and timeouts applied by the edge to every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeConfig {
    /// How long to wait for a TCP connection to an app instance. Default 5 s.
    pub connect_timeout: Duration,
    /// How long to wait for an app instance's response head (measured from
    /// the start of forwarding, so it includes connecting and sending the
    /// request body). Exceeding it answers 504. Default 60 s.
    pub request_timeout: Duration,
    /// Largest request body forwarded to an app, in bytes. A bigger declared
    /// `Content-Length` is answered 413 up front; a streamed body that grows
    /// past it is cut off and answered 413. Default 32 MiB.
    pub max_request_body_bytes: u64,
    /// How long a request for a sleeping or starting site is held while it wakes
    /// or starts before it is answered 503. Default 30 s.
    pub activation_timeout: Duration,
    /// Most requests held at once for sleeping or starting sites; more are
    /// answered 503 right away. Default 1000.
    pub max_held_requests: usize,
    /// The port the TLS listener is reachable on from outside. When set, a plain-HTTP
    /// request for a name with a certificate (see
    /// [`Edge::replace_certificates`](crate::Edge::replace_certificates)) is answered
    /// with a 308 to `https://` on this port (left out of the URL when 443); ACME
    /// challenge paths are never redirected. `None` (the default): no redirects.
    pub https_port: Option<u16>,
    /// How long a client has to complete the TLS handshake after connecting before
    /// the connection is closed, so silent or slow clients cannot pin connections.
    /// Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Whether the traffic tap counts requests (see [`Edge::drain_tap`](crate::Edge::drain_tap)).
    /// Default on.
    pub tap: bool,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            max_request_body_bytes: 32 * 1024 * 1024,
            activation_timeout: Duration::from_secs(30),
            max_held_requests: 1000,
            https_port: None,
            tls_handshake_timeout: Duration::from_secs(10),
            tap: true,
        }
    }
}
