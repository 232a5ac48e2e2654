//! The rules of berth's OAuth 2.1 authorization server for MCP clients: which redirect
//! URIs a client may use, how a client is known (RFC 7591 registration or a Client ID
//! Metadata Document fetched from public addresses only), what an authorization request
//! must carry (PKCE S256, RFC 8707 resource), how a person's consent narrows the grant,
//! code issuance and exchange, refresh-token rotation with reuse detection, RFC 7009
//! revocation of the client's own tokens, and the per-address rate windows.
//!
//! `crate::oauth` is the adapter: it parses forms and queries, renders the consent page
//! and maps these results to HTTP. Codes and tokens are random and stored only as an
//! HMAC under the key lookup secret; a grant acts as its person's *current* role.

mod authorize;
mod clients;
mod tokens;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use authorize::{Approved, AuthorizeParams, Checked, ConsentDecision, OrgChoice, Refusal, SiteChoice};
pub use clients::{Client, RegisteredClient, Registration, check_redirect_uri};
pub use tokens::{IssuedTokens, TokenRequest, pkce_challenge};

use super::Service;
use super::access::{Action, Scope};
use crate::error::ServiceError;
use crate::model::Actor;
use crate::throttle::Subject;

/// How long a fetched client metadata document is used before it is fetched again.
const METADATA_CACHE_MS: i64 = 10 * 60 * 1000;
/// Largest client metadata document read.
const METADATA_MAX_BYTES: usize = 64 * 1024;
/// Redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest redirect URI (and any other URL a client sends).
const MAX_URI_CHARS: usize = 2000;
/// Longest client name.
const MAX_NAME_CHARS: usize = 200;
/// Registrations per address per minute.
const REGISTRATIONS_PER_MINUTE: u32 = 20;
/// Token and revocation requests per address per minute.
const TOKEN_REQUESTS_PER_MINUTE: u32 = 120;
/// Client metadata documents fetched for one address per minute (each fetch is a request
/// berth makes on the caller's behalf).
const METADATA_FETCHES_PER_MINUTE: u32 = 30;
/// Addresses one rate window remembers before it forgets the finished minutes.
const RATE_WINDOW_ADDRESSES: usize = 10_000;

/// A refused request to the registration, token or revocation endpoint.
#[derive(Debug)]
pub enum OAuthError {
    /// The request is refused (`400`): an RFC 6749 §5.2 `error` code and a description
    /// naming the fix.
    Refused {
        /// The OAuth error code (`invalid_grant`, `invalid_client_metadata`, …).
        error: &'static str,
        /// What was wrong and what to do instead.
        description: String,
    },
    /// Too many requests from this address this minute (`429 slow_down`).
    SlowDown,
    /// A failure on berth's side.
    Failed(ServiceError),
}

impl OAuthError {
    /// A refusal with an OAuth error code.
    pub fn refused(error: &'static str, description: impl Into<String>) -> Self {
        Self::Refused {
            error,
            description: description.into(),
        }
    }

    fn invalid_grant(description: &str) -> Self {
        Self::refused("invalid_grant", description)
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// Counts requests per address in one-minute windows (bounded table).
#[derive(Default)]
struct RateWindow {
    seen: Mutex<HashMap<Subject, (Instant, u32)>>,
}

impl RateWindow {
    /// Counts a request; false once the address made more than `limit` this minute.
    fn allow(&self, ip: IpAddr, limit: u32) -> bool {
        let mut seen = self.seen.lock().expect("oauth rate lock");
        let now = Instant::now();
        if seen.len() > RATE_WINDOW_ADDRESSES {
            seen.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
            if seen.len() > RATE_WINDOW_ADDRESSES {
                seen.clear();
            }
        }
        let entry = seen.entry(Subject::address(ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= limit
    }
}

/// The authorization server: the service, the issuer and the rate windows. Cheap to
/// clone.
#[derive(Clone)]
pub struct OAuthServer {
    service: Service,
    /// The issuer: the control plane's public URL, no trailing slash.
    issuer: String,
    registrations: Arc<RateWindow>,
    metadata_fetches: Arc<RateWindow>,
    token_requests: Arc<RateWindow>,
    /// Hosts whose metadata documents may be on private addresses.
    private_metadata_hosts: Arc<Vec<String>>,
    /// Extra roots for metadata documents.
    metadata_roots: Arc<Vec<reqwest::Certificate>>,
}

impl OAuthServer {
    /// The server for `issuer`, with the metadata settings of the service's config
    /// (`BERTH_OAUTH_METADATA_CA_ROOTS` is read here: a bad file stops the start).
    pub fn new(service: Service, issuer: String) -> anyhow::Result<Self> {
        let config = &service.platform.config;
        let metadata_roots = match &config.oauth_metadata_ca_roots {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!(
                        "reading BERTH_OAUTH_METADATA_CA_ROOTS {}: {e}; point it at a PEM file",
                        path.display()
                    )
                })?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| anyhow::anyhow!("BERTH_OAUTH_METADATA_CA_ROOTS {}: {e}", path.display()))?
            }
            None => vec![],
        };
        let private_metadata_hosts = config
            .oauth_allow_private_metadata_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(Self {
            service,
            issuer,
            registrations: Arc::default(),
            metadata_fetches: Arc::default(),
            token_requests: Arc::default(),
            private_metadata_hosts: Arc::new(private_metadata_hosts),
            metadata_roots: Arc::new(metadata_roots),
        })
    }

    /// The issuer (RFC 8414 `issuer`, RFC 9207 `iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The one protected resource tokens are issued for: `<issuer>/mcp`.
    pub fn resource(&self) -> String {
        format!("{}/mcp", self.issuer)
    }

    fn store(&self) -> &crate::store::Store {
        &self.service.platform.store
    }

    /// The HMAC a code or token is stored under.
    fn digest(&self, token: &str) -> Option<String> {
        self.service.platform.key_lookup.digest(token).ok()
    }
}

/// Why an OAuth grant cannot make a tool call that its person's role allows: the scope
/// it lacks, the scopes to authorize again with (the grant's plus the missing one, so
/// nothing it had is lost), and the error for the caller.
pub struct InsufficientScope {
    /// The scope the call needs.
    pub missing: Scope,
    /// The grant's scopes and the missing one, sorted.
    pub ask_for: Vec<Scope>,
    /// The refusal, naming the consent page.
    pub error: ServiceError,
}

/// RFC 6750 §3.1 for OAuth grants: `Some` when `action` needs a scope the caller's grant
/// was not given while its person's role would allow the call. `None` for callers that
/// are not grants, for calls the grant may make, and for a role too weak
/// (re-authorizing would not help).
pub fn insufficient_scope(actor: &Actor, action: Action) -> Option<InsufficientScope> {
    actor.grant.as_ref()?;
    let needs = action.needs();
    let missing = needs.scope.filter(|s| !actor.scopes.contains(s))?;
    if actor.role < needs.role {
        return None;
    }
    let error = actor.require(action, None, None).err()?;
    let mut ask_for = actor.scopes.clone();
    ask_for.push(missing);
    ask_for.sort();
    ask_for.dedup();
    Some(InsufficientScope {
        missing,
        ask_for,
        error,
    })
}
