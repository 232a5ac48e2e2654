//! HTTPS in the edge: the certificate table ([`CertTable`]) that the control plane swaps
//! in with [`Edge::replace_certificates`](crate::Edge::replace_certificates), the rustls
//! certificate resolver over it, and the ACME challenge state the edge answers from
//! (HTTP-01 tokens on the plain listener, TLS-ALPN-01 certificates on the TLS one).
//!
//! A name without a certificate never gets one: an unknown or missing SNI name makes
//! the resolver return nothing, so rustls ends the handshake with an alert instead of
//! presenting a default or self-signed certificate for the wrong name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tracing::warn;

use crate::body::EdgeBody;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where HTTP-01 validation fetches its key authorization (RFC 8555 §8.3).
pub(crate) const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Most challenges of each kind kept at once; a control plane that forgets to remove
/// them cannot grow the edge's memory without bound.
pub const MAX_CHALLENGES: usize = 10_000;
/// The HSTS value for names that ask for it: two years, the preload list's minimum.
const HSTS_VALUE: &str = "max-age=63072000";

/// One name's certificate and options.
struct CertEntry {
    key: Arc<CertifiedKey>,
    hsts: bool,
}

/// The certificates the edge serves, by name: exact names and wildcards
/// (`*.apps.example.com` matches exactly one label in place of the `*`). Build one, then
/// hand it to [`Edge::replace_certificates`](crate::Edge::replace_certificates).
#[derive(Default)]
pub struct CertTable {
    exact: HashMap<String, CertEntry>,
    /// Wildcard entries keyed by the part after `*.`.
    wildcard: HashMap<String, CertEntry>,
}

impl CertTable {
    /// An empty table: every TLS handshake fails with an alert.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `key` for `name` (lowercased, trailing dot removed; `*.` prefix for a
    /// wildcard), replacing any previous certificate for it. With `hsts`, responses
    /// over TLS for that name carry `Strict-Transport-Security: max-age=63072000`.
    pub fn insert(&mut self, name: &str, key: Arc<CertifiedKey>, hsts: bool) {
        let name = normalize_name(name);
        let entry = CertEntry { key, hsts };
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), entry),
            None => self.exact.insert(name, entry),
        };
    }

    /// Number of names (exact and wildcard) in the table.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether the table has no names.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a certificate would be served for `host` (an exact name or a wildcard
    /// covering it).
    pub fn contains(&self, host: &str) -> bool {
        self.lookup(&normalize_name(host)).is_some()
    }

    /// The entry for an already normalised `host`: the exact name first, then a
    /// wildcard for its parent (one label only, and never for the parent itself).
    fn lookup(&self, host: &str) -> Option<&CertEntry> {
        if let Some(entry) = self.exact.get(host) {
            return Some(entry);
        }
        let (label, parent) = host.split_once('.')?;
        if label.is_empty() || label == "*" {
            return None;
        }
        self.wildcard.get(parent)
    }
}

impl fmt::Debug for CertTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = self.exact.keys().cloned().collect();
        names.extend(self.wildcard.keys().map(|p| format!("*.{p}")));
        names.sort();
        f.debug_struct("CertTable").field("names", &names).finish()
    }
}

/// Lowercase, no surrounding whitespace, no trailing dot: names compare as DNS does.
pub(crate) fn normalize_name(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Loads a certificate chain (the server's certificate first, then intermediates) and
/// its private key (PKCS#8, SEC1 or PKCS#1; ECDSA P-256/P-384 or RSA) from PEM text,
/// checking that the key belongs to the certificate. Errors say what is wrong without
/// quoting either input.
pub fn certified_key_from_pem(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            "the certificate chain is not valid PEM: expected '-----BEGIN CERTIFICATE-----' blocks".to_string()
        })?;
    if chain.is_empty() {
        return Err(
            "the certificate chain holds no certificate: expected '-----BEGIN CERTIFICATE-----' blocks, \
                    the server's own certificate first"
                .to_string(),
        );
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => "the private key PEM holds no private key: expected a 'PRIVATE KEY', \
                                     'EC PRIVATE KEY' or 'RSA PRIVATE KEY' block"
            .to_string(),
        _ => "the private key is not valid PEM".to_string(),
    })?;
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| "the private key is of an unsupported type or damaged: use ECDSA P-256 or RSA".to_string())?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(
            "the private key does not belong to the first certificate of the chain (the server's own \
             certificate must come first)"
                .to_string(),
        ),
        Err(_) => Err("the first certificate of the chain cannot be parsed".to_string()),
    }
}

/// The certified key of a TLS-ALPN-01 challenge certificate (RFC 8737) made by the caller
/// together with its key. [`certified_key_from_pem`] cannot load it: its check that the
/// key matches parses the certificate with webpki, which refuses the critical
/// `acmeIdentifier` extension every challenge certificate carries.
pub fn challenge_key_from_pem(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the challenge certificate is not valid PEM".to_string())?;
    if chain.len() != 1 {
        return Err("a challenge certificate is one self-signed certificate".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| "the challenge certificate's key is not valid PEM".to_string())?;
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| "the challenge certificate's key is of an unsupported type".to_string())?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

/// Entries by key, at most [`MAX_CHALLENGES`]; when full, the oldest makes room.
struct BoundedMap<V> {
    /// Logged when an entry is dropped for room.
    what: &'static str,
    entries: HashMap<String, (u64, V)>,
    /// Insertion order: sequence number → key.
    order: BTreeMap<u64, String>,
    next: u64,
}

impl<V> BoundedMap<V> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    fn insert(&mut self, key: String, value: V) {
        self.remove(&key);
        if self.entries.len() >= MAX_CHALLENGES
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
            warn!(
                kind = self.what,
                limit = MAX_CHALLENGES,
                "too many ACME challenges are set; the oldest was dropped (are finished ones removed?)"
            );
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.clone());
        self.entries.insert(key, (seq, value));
    }

    fn remove(&mut self, key: &str) {
        if let Some((seq, _)) = self.entries.remove(key) {
            self.order.remove(&seq);
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }
}

/// What the TLS side of the edge reads: the certificate table and the ACME challenges.
/// Shared by the edge and the rustls resolver of every TLS listener.
pub(crate) struct TlsState {
    certs: ArcSwap<CertTable>,
    /// HTTP-01: token → key authorization.
    http_challenges: Mutex<BoundedMap<Arc<str>>>,
    /// TLS-ALPN-01: name → challenge certificate.
    alpn_challenges: Mutex<BoundedMap<Arc<CertifiedKey>>>,
}

impl TlsState {
    pub(crate) fn new() -> Self {
        Self {
            certs: ArcSwap::from_pointee(CertTable::new()),
            http_challenges: Mutex::new(BoundedMap::new("http-01")),
            alpn_challenges: Mutex::new(BoundedMap::new("tls-alpn-01")),
        }
    }

    pub(crate) fn replace_certificates(&self, table: CertTable) {
        self.certs.store(Arc::new(table));
    }

    pub(crate) fn certificate_count(&self) -> usize {
        self.certs.load().len()
    }

    /// Whether a certificate is served for the normalised `host`.
    pub(crate) fn has_certificate(&self, host: &str) -> bool {
        self.certs.load().lookup(host).is_some()
    }

    /// Whether responses for the normalised `host` carry HSTS.
    /// Whether `host` is covered by the certificate that is served for `sni` (one
    /// certificate for both names, such as a wildcard or a www/apex pair), so a client
    /// may reuse a connection made for `sni` for it (HTTP/2 connection coalescing).
    /// Compared in the current table, so a renewal in between changes nothing.
    pub(crate) fn same_certificate(&self, sni: &str, host: &str) -> bool {
        let certs = self.certs.load();
        match (certs.lookup(sni), certs.lookup(&normalize_name(host))) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.key, &b.key),
            _ => false,
        }
    }

    pub(crate) fn hsts(&self, host: &str) -> bool {
        self.certs.load().lookup(host).is_some_and(|e| e.hsts)
    }

    pub(crate) fn set_http_challenge(&self, token: &str, key_authorization: &str) {
        lock(&self.http_challenges).insert(token.to_string(), Arc::from(key_authorization));
    }

    pub(crate) fn remove_http_challenge(&self, token: &str) {
        lock(&self.http_challenges).remove(token);
    }

    pub(crate) fn set_alpn_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        lock(&self.alpn_challenges).insert(normalize_name(name), key);
    }

    pub(crate) fn remove_alpn_challenge(&self, name: &str) {
        lock(&self.alpn_challenges).remove(&normalize_name(name));
    }

    pub(crate) fn replace_challenges(
        &self,
        http: impl IntoIterator<Item = (String, String)>,
        alpn: impl IntoIterator<Item = (String, Arc<CertifiedKey>)>,
    ) {
        let mut http_map = BoundedMap::new("http-01");
        for (token, key_authorization) in http {
            http_map.insert(token, Arc::from(key_authorization.as_str()));
        }
        let mut alpn_map = BoundedMap::new("tls-alpn-01");
        for (name, key) in alpn {
            alpn_map.insert(normalize_name(&name), key);
        }
        *lock(&self.http_challenges) = http_map;
        *lock(&self.alpn_challenges) = alpn_map;
    }

    /// The answer to a request for `path` under [`ACME_CHALLENGE_PREFIX`]: the key
    /// authorization for a known token, 404 for anything else.
    pub(crate) fn http_challenge_response(&self, path: &str) -> Response<EdgeBody> {
        let token = path.strip_prefix(ACME_CHALLENGE_PREFIX).unwrap_or_default();
        let answer = lock(&self.http_challenges).get(token).cloned();
        let (status, body) = match answer {
            Some(key_authorization) => (StatusCode::OK, key_authorization.to_string()),
            None => (StatusCode::NOT_FOUND, "no such ACME challenge\n".to_string()),
        };
        let mut res = Response::new(EdgeBody::full(body));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `Strict-Transport-Security` value sent for names inserted with `hsts`.
pub(crate) fn hsts_header() -> HeaderValue {
    HeaderValue::from_static(HSTS_VALUE)
}

/// Picks the certificate for a handshake from the current table.
struct Resolver(Arc<TlsState>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI: no name to answer for, so no certificate (never a default one).
        let name = normalize_name(hello.server_name()?);
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // A validation handshake only ever gets the challenge certificate.
            return lock(&self.0.alpn_challenges).get(&name).cloned();
        }
        self.0.certs.load().lookup(&name).map(|e| Arc::clone(&e.key))
    }
}

/// The rustls configuration of a TLS listener: certificates from `state`, ALPN `h2`
/// and `http/1.1`, plus `acme-tls/1` first so a validation handshake always gets it.
pub(crate) fn server_config(state: Arc<TlsState>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(state)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec(), b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_drops_the_oldest_when_full() {
        let mut map = BoundedMap::new("test");
        for i in 0..MAX_CHALLENGES {
            map.insert(format!("k{i}"), i);
        }
        map.remove("k5");
        map.insert("again".into(), 0);
        assert_eq!(map.entries.len(), MAX_CHALLENGES);
        map.insert("one more".into(), 0);
        assert_eq!(map.entries.len(), MAX_CHALLENGES);
        assert_eq!(map.order.len(), MAX_CHALLENGES);
        assert!(map.get("k0").is_none(), "the oldest made room");
        assert!(map.get("k1").is_some());
        assert!(map.get("one more").is_some());
    }

    #[test]
    fn pem_errors_name_the_problem_not_the_input() {
        let err = certified_key_from_pem("", "").unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
        let err = certified_key_from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBieXRlcw==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(err.contains("private key"), "{err}");
    }
}
