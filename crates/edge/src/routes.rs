//! The host → target routing table ([`EdgeRouteTable`], [`RouteTarget`]) and
//! host-name normalisation shared by table building and request lookup.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::tap::RouteLabel;
use crate::upstreams::{Upstream, UpstreamRegistry};

/// What the edge does with requests for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// Files served straight from a directory (a static site's build output).
    Static {
        /// Directory the site's files live in: request paths are looked up below it.
        /// Resolve it once when the route is built (it may itself be a symlink that an
        /// app could later point elsewhere).
        root: PathBuf,
        /// The deployment's own folder, as a canonical path (symlinks resolved): a file
        /// is served only when its real location, after every symlink, is inside it, so
        /// links within the deployment work and links leaving it answer 404. A jail that
        /// is not canonical serves nothing.
        jail: PathBuf,
        /// Serve `index.html` (status 200) for paths that match no file, for
        /// client-side-routed single-page apps.
        spa_fallback: bool,
    },
    /// Reverse proxy to running app instances (round-robin over the list).
    Upstream {
        /// Addresses of the app's instances. An empty list answers 502.
        instances: Vec<SocketAddr>,
    },
    /// The site exists but cannot serve now: answered with this status (502
    /// or 503) and a small HTML page naming the site and the message; 503
    /// carries `Retry-After` when given.
    Unavailable {
        /// Site name shown on the page.
        site: String,
        /// HTTP status to answer with; anything outside 400..=599 becomes 503.
        status: u16,
        /// Human-readable reason shown on the page.
        message: String,
        /// Value of the `Retry-After` header (only sent with status 503).
        retry_after_seconds: Option<u32>,
    },
    /// The site's app is scaled to zero. A request for it calls the edge's
    /// waker (see [`Edge::set_waker`](crate::Edge::set_waker)) and is held
    /// until a new table routes the host somewhere that can answer, up to
    /// [`EdgeConfig::activation_timeout`](crate::EdgeConfig::activation_timeout).
    Sleeping {
        /// Site name shown if waking takes too long.
        site: String,
    },
    /// The site's app is starting (a first start, a restart after a crash, another
    /// replica's instance being adopted): a request is held, without waking anything,
    /// until a new table routes the host somewhere that can answer, up to
    /// [`EdgeConfig::activation_timeout`](crate::EdgeConfig::activation_timeout); then it is
    /// answered 503 with `Retry-After`.
    Starting {
        /// Site name shown if starting takes too long.
        site: String,
    },
    /// Answered with a 308 to the same path and query on another host (a custom domain's
    /// www/apex partner), keeping the request's port.
    Redirect {
        /// The host redirected to.
        to: String,
    },
    /// A custom domain attached to a site whose DNS is not verified yet: answered with a
    /// 404 page saying so, never with the site's content.
    UnverifiedDomain,
}

/// One table entry: the target plus per-route state that must live as
/// long as the table does.
pub(crate) struct Route {
    pub(crate) target: RouteTarget,
    /// Round-robin cursor. Lives with the table, so a new table starts the
    /// rotation afresh, which is harmless.
    pub(crate) next: AtomicUsize,
    /// When this host last got a request, in ms since the process's clock
    /// epoch; carried over to the next table by
    /// [`Edge::replace_routes`](crate::Edge::replace_routes).
    pub(crate) last_request_ms: AtomicU64,
    /// Requests being proxied to this host right now (the autoscaler's signal); shared
    /// with the tables before and after this one, so a swap does not reset it.
    pub(crate) in_flight: std::sync::Arc<AtomicUsize>,
    /// For an upstream route, the state of each instance (same order as `instances`):
    /// what is in flight to it, counted across tables, and its going-away signal.
    pub(crate) upstreams: Vec<std::sync::Arc<Upstream>>,
    /// Whose traffic this route carries, for the tap (none: counted as unlabelled).
    pub(crate) label: Option<std::sync::Arc<RouteLabel>>,
}

impl Route {
    fn new(target: RouteTarget) -> Self {
        Self {
            next: AtomicUsize::new(0),
            last_request_ms: AtomicU64::new(clock_ms()),
            in_flight: std::sync::Arc::default(),
            upstreams: match &target {
                RouteTarget::Upstream { instances } => instances.iter().map(|_| std::sync::Arc::default()).collect(),
                _ => Vec::new(),
            },
            label: None,
            target,
        }
    }

    /// Records a request now. Stores only when the millisecond changed: a
    /// store per request would make every worker's CPU take the cache line
    /// from the others, while a load keeps it shared.
    pub(crate) fn touch(&self) {
        let now = clock_ms();
        if self.last_request_ms.load(Ordering::Relaxed) != now {
            self.last_request_ms.store(now, Ordering::Relaxed);
        }
    }
}

/// Milliseconds on a monotonic clock shared by all routes of the process.
pub(crate) fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Immutable-once-published routing table: host name (lowercase, without
/// port) → [`RouteTarget`]. Build one, then hand it to
/// [`Edge::replace_routes`](crate::Edge::replace_routes).
#[derive(Default)]
pub struct EdgeRouteTable {
    routes: HashMap<String, Route>,
    /// Other names of a routed host (custom domains): a request for one is served, woken
    /// and counted exactly as one for the host it names.
    aliases: HashMap<String, String>,
    /// Wildcard routes (`*.example.com`), by parent (`example.com`) → their key in
    /// `routes`: a name one label under the parent with no route or alias of its own.
    wild_routes: HashMap<String, String>,
    /// Wildcard aliases, by parent → the host they name.
    wild_aliases: HashMap<String, String>,
}

impl EdgeRouteTable {
    /// An empty table (every host answers 404).
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `host` to `target`, replacing any previous target for it.
    /// `host` is normalised with [`normalize_host`], so `App.Example.com:8080`
    /// and `app.example.com` are the same key.
    /// A wildcard `*.example.com` serves every name one label under `example.com` that
    /// has no route or alias of its own (never `example.com` itself).
    pub fn insert(&mut self, host: &str, target: RouteTarget) {
        let key = normalize_host(host).into_owned();
        if let Some(parent) = key.strip_prefix("*.") {
            self.wild_routes.insert(parent.to_string(), key.clone());
        }
        self.routes.insert(key, Route::new(target));
    }

    /// Labels the traffic of `host` (normalised; inserted before) for the tap: requests
    /// it answers, its aliases' too, are counted under `label`. Returns whether `host` is
    /// routed.
    pub fn label(&mut self, host: &str, label: RouteLabel) -> bool {
        match self.routes.get_mut(normalize_host(host).as_ref()) {
            Some(route) => {
                route.label = Some(std::sync::Arc::new(label));
                true
            }
            None => false,
        }
    }

    /// Serves `alias` exactly like `host` (same target, activity, wake-ups and counts);
    /// both are normalised. A route of `alias`'s own takes precedence.
    /// A wildcard alias (`*.example.com`) covers one label under its parent, after exact
    /// names.
    pub fn insert_alias(&mut self, alias: &str, host: &str) {
        let alias = normalize_host(alias).into_owned();
        let host = normalize_host(host).into_owned();
        if let Some(parent) = alias.strip_prefix("*.") {
            self.wild_aliases.insert(parent.to_string(), host.clone());
        }
        self.aliases.insert(alias, host);
    }

    /// The host `alias` (normalised) is served as, if it is an alias.
    pub fn alias_of(&self, alias: &str) -> Option<&str> {
        self.aliases.get(normalize_host(alias).as_ref()).map(String::as_str)
    }

    /// The host a request for the normalised `host` is served as: `host` itself when it
    /// is routed, the host an alias names, a wildcard route or alias of its parent, else
    /// `host` (unknown).
    pub(crate) fn resolve_normalized<'a>(&'a self, host: &'a str) -> &'a str {
        if self.routes.contains_key(host) {
            return host;
        }
        if let Some(target) = self.aliases.get(host) {
            return target;
        }
        let Some((_, parent)) = host.split_once('.') else {
            return host;
        };
        self.wild_routes
            .get(parent)
            .or_else(|| self.wild_aliases.get(parent))
            .map_or(host, String::as_str)
    }

    /// Removes the route for `host` (normalised), returning its target.
    pub fn remove(&mut self, host: &str) -> Option<RouteTarget> {
        let key = normalize_host(host);
        if let Some(parent) = key.strip_prefix("*.") {
            self.wild_routes.remove(parent);
        }
        self.routes.remove(key.as_ref()).map(|r| r.target)
    }

    /// The target for `host` (normalised), if any.
    pub fn get(&self, host: &str) -> Option<&RouteTarget> {
        self.route(host).map(|r| &r.target)
    }

    /// Number of hosts in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no hosts.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// All (normalised host, target) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RouteTarget)> {
        self.routes.iter().map(|(h, r)| (h.as_str(), &r.target))
    }

    pub(crate) fn route(&self, host: &str) -> Option<&Route> {
        self.route_normalized(&normalize_host(host))
    }

    /// Carries each host's last-request time and in-flight count over from the table it
    /// replaces.
    pub(crate) fn inherit_activity(&mut self, previous: &EdgeRouteTable) {
        for (host, route) in &mut self.routes {
            if let Some(old) = previous.routes.get(host) {
                route
                    .last_request_ms
                    .store(old.last_request_ms.load(Ordering::Relaxed), Ordering::Relaxed);
                route.in_flight = old.in_flight.clone();
                // The same label keeps its address, so the tap's slot for it stays.
                if old.label.is_some() && old.label == route.label {
                    route.label = old.label.clone();
                }
            }
        }
    }

    /// Gives each upstream route the registry's state of its instances, so what is in
    /// flight to an instance is counted in one place whichever table routed it.
    pub(crate) fn attach_upstreams(&mut self, registry: &UpstreamRegistry) {
        for route in self.routes.values_mut() {
            if let RouteTarget::Upstream { instances } = &route.target {
                route.upstreams = instances.iter().map(|addr| registry.attach(*addr)).collect();
            }
        }
    }

    /// How many requests are being proxied to `host` right now.
    pub fn in_flight(&self, host: &str) -> Option<usize> {
        Some(self.route(host)?.in_flight.load(Ordering::Relaxed))
    }

    /// How long since `host` last got a request (or since it was first routed).
    pub fn idle_for(&self, host: &str) -> Option<std::time::Duration> {
        let route = self.route(host)?;
        let last = route.last_request_ms.load(Ordering::Relaxed);
        Some(std::time::Duration::from_millis(clock_ms().saturating_sub(last)))
    }

    /// Lookup for a host already passed through [`normalize_host`].
    pub(crate) fn route_normalized(&self, host: &str) -> Option<&Route> {
        self.routes.get(host)
    }
}

impl Clone for EdgeRouteTable {
    fn clone(&self) -> Self {
        let mut table: Self = self.iter().map(|(h, t)| (h, t.clone())).collect();
        for (host, route) in &mut table.routes {
            route.label = self.routes.get(host).and_then(|r| r.label.clone());
        }
        table.aliases = self.aliases.clone();
        table.wild_aliases = self.wild_aliases.clone();
        table
    }
}

impl fmt::Debug for EdgeRouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeRouteTable")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|(h, r)| (h, &r.target))
                    .collect::<HashMap<_, _>>(),
            )
            .field("aliases", &self.aliases)
            .finish()
    }
}

impl<H: AsRef<str>> FromIterator<(H, RouteTarget)> for EdgeRouteTable {
    fn from_iter<I: IntoIterator<Item = (H, RouteTarget)>>(iter: I) -> Self {
        let mut table = Self::new();
        table.extend(iter);
        table
    }
}

impl<H: AsRef<str>> Extend<(H, RouteTarget)> for EdgeRouteTable {
    fn extend<I: IntoIterator<Item = (H, RouteTarget)>>(&mut self, iter: I) {
        for (host, target) in iter {
            self.insert(host.as_ref(), target);
        }
    }
}

/// Canonical form of a host name as used for routing: surrounding
/// whitespace and any `:port` removed (IPv6 literals keep their brackets),
/// one trailing dot removed, ASCII lowercased. Borrows when already
/// canonical, which is the common case on the request path.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rfind(':') {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_port_case_and_dot() {
        assert_eq!(normalize_host("App.Example.COM:8080"), "app.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("example.com.:80"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host(" a.test "), "a.test");
        assert!(matches!(normalize_host("a.test"), Cow::Borrowed(_)));
    }

    #[test]
    fn table_insert_get_remove() {
        let mut t = EdgeRouteTable::new();
        assert!(t.is_empty());
        t.insert(
            "Site.Test:8080",
            RouteTarget::Upstream {
                instances: vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()],
            },
        );
        assert_eq!(t.len(), 1);
        assert!(t.get("site.test").is_some());
        assert!(t.get("SITE.test:1").is_some());
        assert!(t.get("other.test").is_none());
        let cloned = t.clone();
        assert_eq!(cloned.get("site.test"), t.get("site.test"));
        assert!(t.remove("site.test").is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn aliases_resolve_to_their_host_unless_routed_themselves() {
        let mut t = EdgeRouteTable::new();
        t.insert("web.localhost", RouteTarget::UnverifiedDomain);
        t.insert_alias("App.Example.com", "web.localhost");
        assert_eq!(t.alias_of("app.example.com:8080"), Some("web.localhost"));
        assert_eq!(t.resolve_normalized("app.example.com"), "web.localhost");
        assert_eq!(t.resolve_normalized("other.example.com"), "other.example.com");
        t.insert("app.example.com", RouteTarget::Redirect { to: "x.test".into() });
        assert_eq!(t.resolve_normalized("app.example.com"), "app.example.com");
        assert_eq!(t.clone().alias_of("app.example.com"), Some("web.localhost"));
    }

    #[test]
    fn a_wildcard_serves_one_label_under_its_parent_after_exact_names() {
        let mut t = EdgeRouteTable::new();
        t.insert("web.localhost", RouteTarget::UnverifiedDomain);
        t.insert("exact.localhost", RouteTarget::UnverifiedDomain);
        t.insert_alias("*.Example.com", "web.localhost");
        t.insert_alias("shop.example.com", "exact.localhost");
        for (host, served_as) in [
            ("a.example.com", "web.localhost"),
            ("shop.example.com", "exact.localhost"),
            ("example.com", "example.com"),
            ("a.b.example.com", "a.b.example.com"),
            ("a.example.org", "a.example.org"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(t.resolve_normalized(host), served_as, "{host}");
            assert_eq!(t.clone().resolve_normalized(host), served_as, "{host} (cloned)");
        }
        // A wildcard that is not verified yet answers its own page, and goes when removed.
        t.insert("*.pending.test", RouteTarget::UnverifiedDomain);
        assert_eq!(t.resolve_normalized("x.pending.test"), "*.pending.test");
        assert!(t.route_normalized(t.resolve_normalized("x.pending.test")).is_some());
        t.remove("*.pending.test");
        assert_eq!(t.resolve_normalized("x.pending.test"), "x.pending.test");
    }
}
