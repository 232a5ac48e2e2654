//! Per-instance state the control plane can ask about while it drains an instance: how
//! many requests and upgraded connections are being proxied to an address right now, and
//! a signal that tells its upgraded connections to close.
//!
//! Each published route holds an [`Upstream`] per instance, taken from the edge's
//! [`UpstreamRegistry`] when the table is published (not per request), so the request path
//! only touches an atomic counter. An address keeps its entry while any table or
//! connection still holds it, which is exactly while it can have something in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// One app instance's address as the edge proxies to it.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// Requests (until their response body is sent) and upgraded connections to it.
    in_flight: AtomicUsize,
    /// The upgraded connections among them.
    upgraded: AtomicUsize,
    /// Bumped to tell its upgraded connections to close (the instance is going away).
    going_away: watch::Sender<u64>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            upgraded: AtomicUsize::new(0),
            going_away: watch::Sender::new(0),
        }
    }
}

impl Upstream {
    /// Changes once the instance is going away, from the moment of this call on.
    pub(crate) fn going_away(&self) -> watch::Receiver<u64> {
        self.going_away.subscribe()
    }
}

/// Counts one request or connection as in flight to an [`Upstream`] until dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<Upstream>);

impl InFlightGuard {
    pub(crate) fn enter(upstream: &Arc<Upstream>) -> Self {
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(upstream))
    }

    /// The upstream it counts towards.
    pub(crate) fn upstream(&self) -> &Upstream {
        &self.0
    }

    /// The request became an upgraded connection: counted among those too, until dropped.
    pub(crate) fn into_upgraded(self) -> UpgradedGuard {
        self.0.upgraded.fetch_add(1, Ordering::Relaxed);
        UpgradedGuard(self)
    }
}

/// Counts an upgraded connection as in flight to an [`Upstream`], and as upgraded, until
/// dropped.
#[derive(Debug)]
pub(crate) struct UpgradedGuard(InFlightGuard);

impl UpgradedGuard {
    /// The upstream it counts towards.
    pub(crate) fn upstream(&self) -> &Upstream {
        self.0.upstream()
    }
}

impl Drop for UpgradedGuard {
    fn drop(&mut self) {
        self.0.0.upgraded.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every address the edge proxies to, or did until its last request ended.
#[derive(Debug, Default)]
pub(crate) struct UpstreamRegistry {
    by_addr: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
}

impl UpstreamRegistry {
    /// The state of `addr`, created on first use (when a table routing to it is published).
    pub(crate) fn attach(&self, addr: SocketAddr) -> Arc<Upstream> {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(by_addr.entry(addr).or_default())
    }

    /// Forgets addresses nothing holds any more (no table routes to them, nothing in flight).
    pub(crate) fn prune(&self) {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(PoisonError::into_inner);
        by_addr.retain(|_, upstream| Arc::strong_count(upstream) > 1);
    }

    /// Requests and upgraded connections being proxied to `addr` right now.
    pub(crate) fn in_flight(&self, addr: SocketAddr) -> usize {
        let by_addr = self.by_addr.lock().unwrap_or_else(PoisonError::into_inner);
        by_addr
            .get(&addr)
            .map_or(0, |upstream| upstream.in_flight.load(Ordering::Relaxed))
    }

    /// Upgraded connections being proxied to `addr` right now.
    pub(crate) fn upgraded(&self, addr: SocketAddr) -> usize {
        let by_addr = self.by_addr.lock().unwrap_or_else(PoisonError::into_inner);
        by_addr
            .get(&addr)
            .map_or(0, |upstream| upstream.upgraded.load(Ordering::Relaxed))
    }

    /// Tells the upgraded connections to `addr` to close.
    pub(crate) fn go_away(&self, addr: SocketAddr) {
        let by_addr = self.by_addr.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(upstream) = by_addr.get(&addr) {
            upstream.going_away.send_modify(|generation| *generation += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_forgets_what_nothing_holds() {
        let registry = UpstreamRegistry::default();
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let held = registry.attach(addr);
        let guard = InFlightGuard::enter(&held);
        assert_eq!(registry.in_flight(addr), 1);
        assert_eq!(registry.upgraded(addr), 0);
        let guard = guard.into_upgraded();
        assert_eq!((registry.in_flight(addr), registry.upgraded(addr)), (1, 1));
        drop(held);
        registry.prune();
        // The request still holds it: still counted.
        assert_eq!(registry.in_flight(addr), 1);
        drop(guard);
        assert_eq!((registry.in_flight(addr), registry.upgraded(addr)), (0, 0));
        registry.prune();
        assert!(registry.by_addr.lock().unwrap().is_empty());
    }

    #[test]
    fn going_away_reaches_connections_of_that_address_only() {
        let registry = UpstreamRegistry::default();
        let (a, b) = ("127.0.0.1:4000".parse().unwrap(), "127.0.0.1:4001".parse().unwrap());
        let (ua, ub) = (registry.attach(a), registry.attach(b));
        let (mut ra, mut rb) = (ua.going_away(), ub.going_away());
        registry.go_away(a);
        assert!(ra.has_changed().unwrap());
        assert!(!rb.has_changed().unwrap());
        ra.mark_unchanged();
        rb.mark_unchanged();
    }
}
