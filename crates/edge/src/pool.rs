//! Keep-alive pool of HTTP/1.1 connections to app instances, one pool per
//! edge worker thread.
//!
//! This replaces hyper-util's general-purpose pooled client on the hot path:
//! connections are keyed by socket address, checked out last-in-first-out,
//! and handed back when the response body has been fully forwarded (the
//! [`Lease`] travels with the body), so a request costs no extra task spawn,
//! boxed future or string-keyed hash lookup.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::ProxyBody;

/// Idle connections older than this are closed instead of reused. Kept
/// below the 5 s keep-alive timeout of Node and uvicorn so the edge does not
/// send a request on a connection the app is just closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per app instance and worker; beyond this the
/// oldest is closed.
const MAX_IDLE_PER_INSTANCE: usize = 256;

type Sender = http1::SendRequest<ProxyBody>;

struct IdleConn {
    sender: Sender,
    since: Instant,
}

/// Why a request could not be sent.
pub(crate) enum SendError {
    /// No connection to the instance could be made (refused, unreachable or
    /// timed out).
    Connect,
    /// The connection failed while sending the request or reading the
    /// response head.
    Http(hyper::Error),
}

/// The pool of one worker thread. Its mutex is only ever taken by that
/// thread, so it is uncontended; it exists because tasks must be `Send`.
pub(crate) struct UpstreamPool {
    connect_timeout: Duration,
    idle: Mutex<HashMap<SocketAddr, VecDeque<IdleConn>>>,
}

/// A connection in use by one request. Dropped with the response body:
/// if by then the connection is idle again (the body was read to its end),
/// it returns to the pool; otherwise it is closed.
pub(crate) struct Lease {
    pool: Arc<UpstreamPool>,
    addr: SocketAddr,
    sender: Option<Sender>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.give_back(self.addr, sender);
        }
    }
}

impl Lease {
    /// Gives the connection up for good (it was upgraded to another
    /// protocol and must never carry another HTTP request).
    pub(crate) fn discard(mut self) {
        self.sender = None;
    }
}

impl UpstreamPool {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` (origin-form URI, Host set) to `addr` on an idle pooled
    /// connection or a new one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        loop {
            let (mut sender, reused) = match self.checkout(addr) {
                Some(sender) => (sender, true),
                // Boxed so the rarely taken connect path does not bloat the
                // future of every pooled request.
                None => (Box::pin(self.connect(addr)).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let lease = Lease {
                        pool: Arc::clone(self),
                        addr,
                        sender: Some(sender),
                    };
                    return Ok((res, lease));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection closed before the request went
                    // out: nothing reached the app, so another connection
                    // may be tried. A fresh one failing is a real error.
                    Some(unsent) if reused => {
                        debug!(%addr, "pooled app connection was closed; retrying");
                        req = unsent;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.get_mut(&addr)?;
        while let Some(conn) = conns.pop_back() {
            if conn.since.elapsed() > IDLE_TIMEOUT {
                // Newest first: everything left is older still.
                conns.clear();
                return None;
            }
            if conn.sender.is_ready() {
                return Some(conn.sender);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, sender: Sender) {
        if !sender.is_ready() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.entry(addr).or_default();
        if conns.len() >= MAX_IDLE_PER_INSTANCE {
            conns.pop_front();
        }
        conns.push_back(IdleConn {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes idle connections past [`IDLE_TIMEOUT`] and forgets instances
    /// with none left; run periodically so unused connections do not
    /// linger after an app stops receiving traffic.
    pub(crate) fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|_, conns| {
            conns.retain(|c| c.since.elapsed() <= IDLE_TIMEOUT && !c.sender.is_closed());
            !conns.is_empty()
        });
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, SendError> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "connecting to app instance failed");
                return Err(SendError::Connect);
            }
            Err(_) => {
                debug!(%addr, "connecting to app instance timed out");
                return Err(SendError::Connect);
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "app connection ended with an error");
            }
        });
        Ok(sender)
    }
}
