//! OAuth 2.1 for MCP clients: berth is both the authorization server and the protected
//! resource (`/mcp`). Discovery (RFC 9728 protected resource metadata, RFC 8414 server
//! metadata), clients registered dynamically (RFC 7591) or described by a Client ID
//! Metadata Document at their https `client_id` (fetched from public addresses only),
//! the authorization code flow with PKCE S256 only, RFC 8707 resources, RFC 9207 `iss`,
//! refresh-token rotation with reuse detection, and RFC 7009 revocation.
//!
//! The person consents on berth's own page, signed in with the dashboard session, and
//! narrows what the client gets: the org, the scopes, a subset of sites, and whether
//! production is included. Codes and tokens are random and stored only as an HMAC under
//! the key lookup secret; a grant acts as its person's *current* role.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use maud::{Markup, html};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Authenticator;
use crate::error::ServiceError;
use crate::model::Scope;
use crate::store::oauth as oauth_store;
use crate::throttle::Subject;
use crate::ui::UiState;
use crate::ui::session::{self, Session};
use crate::util::{new_id, now_ms, random_hex};

/// The start of an access token.
pub const ACCESS_PREFIX: &str = "berth_oat_";
/// The start of a refresh token.
pub const REFRESH_PREFIX: &str = "berth_ort_";
/// How long a code may wait to be exchanged.
pub const CODE_TTL_SECS: i64 = 60;
/// How long an access token works.
pub const ACCESS_TTL_SECS: i64 = 3600;
/// How long a refresh token works (each use gives a new one).
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
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

/// Whether a string has the shape of an OAuth access token.
pub fn is_access_token(token: &str) -> bool {
    token
        .strip_prefix(ACCESS_PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `/mcp` answer to a missing or refused bearer: `401` with the `WWW-Authenticate`
/// challenge that leads an MCP client to the protected resource metadata.
pub fn challenge(auth: &Authenticator, mut resp: Response, invalid_token: bool) -> Response {
    let resource = auth.mcp_resource();
    if resource.is_empty() {
        return resp;
    }
    let base = resource.trim_end_matches("/mcp");
    let error = if invalid_token { "error=\"invalid_token\", " } else { "" };
    let value = format!(
        "Bearer {error}resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", scope=\"{}\"",
        scope_list(&Scope::ALL)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The largest `/mcp` request body read to check a tool call's scope: JSON-RPC messages
/// are small, and larger (or unsized) bodies go on to the tool, which refuses the same
/// call as a tool error.
pub const MAX_INSPECTED_MCP_BODY: u64 = 1 << 20;

/// RFC 6750 §3.1 for `/mcp`: a `tools/call` whose tool needs a scope the OAuth grant was
/// not given (while its person's role would allow the call) is answered `403` with
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` naming the grant's
/// scopes plus the missing one (authorizing again with those keeps what the grant had),
/// and berth's error envelope, which names the consent page. `None`: anything else, which
/// goes on to the MCP server as before.
pub fn insufficient_scope(auth: &Authenticator, actor: &crate::model::Actor, body: &[u8]) -> Option<Response> {
    actor.grant.as_ref()?;
    let message: serde_json::Value = serde_json::from_slice(body).ok()?;
    if message.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    let action = crate::mcp::tool_action(message.get("params")?.get("name")?.as_str()?)?;
    let needs = action.needs();
    let missing = needs.scope.filter(|s| !actor.scopes.contains(s))?;
    // A role too weak is no scope problem: re-authorizing would not help.
    if actor.role < needs.role {
        return None;
    }
    let err = actor.require(action, None, None).err()?;
    let mut scopes = actor.scopes.clone();
    scopes.push(missing);
    scopes.sort();
    scopes.dedup();
    let base = auth.mcp_resource().trim_end_matches("/mcp").to_string();
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", error_description=\"this tool needs the scope {missing}\"",
        scope_list(&scopes)
    );
    let mut resp = err.into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Some(resp)
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
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
        if seen.len() > 10_000 {
            seen.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
            if seen.len() > 10_000 {
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

/// What the OAuth endpoints share.
#[derive(Clone)]
pub struct OAuthState {
    ui: UiState,
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

impl OAuthState {
    fn resource(&self) -> String {
        format!("{}/mcp", self.issuer)
    }
}

/// The public URL of the control plane: `--public-url`, else `http://` and the address
/// it listens on.
pub fn public_url(config: &crate::config::ServeConfig, api: SocketAddr) -> String {
    if let Some(url) = config.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        return url.trim_end_matches('/').to_string();
    }
    match api.ip() {
        ip if ip.is_unspecified() => format!("http://localhost:{}", api.port()),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}", api.port()),
        IpAddr::V4(ip) => format!("http://{ip}:{}", api.port()),
    }
}

/// The OAuth routes: discovery, registration, authorization with consent, token and
/// revocation.
pub fn router(ui: UiState, issuer: String) -> anyhow::Result<Router> {
    let config = &ui.service.platform.config;
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
    let state = OAuthState {
        private_metadata_hosts: Arc::new(
            config
                .oauth_allow_private_metadata_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        ),
        metadata_roots: Arc::new(metadata_roots),
        ui,
        issuer,
        registrations: Arc::default(),
        metadata_fetches: Arc::default(),
        token_requests: Arc::default(),
    };
    Ok(Router::new()
        .route("/.well-known/oauth-protected-resource", get(resource_metadata))
        .route("/.well-known/oauth-protected-resource/mcp", get(resource_metadata))
        .route("/.well-known/oauth-authorization-server", get(server_metadata))
        .route("/.well-known/openid-configuration", get(server_metadata))
        .route("/oauth/register", post(register))
        .route("/oauth/authorize", get(authorize).post(consent))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .with_state(state))
}

// ---------------------------------------------------------------- discovery

async fn resource_metadata(State(st): State<OAuthState>) -> Response {
    Json(json!({
        "resource": st.resource(),
        "authorization_servers": [st.issuer],
        "scopes_supported": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "resource_name": "berth",
    }))
    .into_response()
}

async fn server_metadata(State(st): State<OAuthState>) -> Response {
    let i = &st.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/oauth/authorize"),
        "token_endpoint": format!("{i}/oauth/token"),
        "registration_endpoint": format!("{i}/oauth/register"),
        "revocation_endpoint": format!("{i}/oauth/revoke"),
        "scopes_supported": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}

// ---------------------------------------------------------------- clients

/// An OAuth error answer: `{error, error_description}`, never cached.
fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description.into() })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn too_many() -> Response {
    let mut resp = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
        "too many requests from this address; wait a minute and try again",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    resp
}

fn is_loopback_host(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}

/// Checks a redirect URI a client registers: https, loopback http (any port, RFC 8252),
/// or a custom scheme; never `javascript:`, `data:`, `file:`, a fragment or credentials.
pub fn check_redirect_uri(uri: &str) -> Result<Url, String> {
    let shown: String = uri.chars().take(80).collect();
    if uri.len() > MAX_URI_CHARS {
        return Err(format!("redirect URI '{shown}…' is over {MAX_URI_CHARS} characters"));
    }
    let url = Url::parse(uri).map_err(|e| format!("redirect URI '{shown}' is not a URL ({e})"))?;
    if uri.contains('#') {
        return Err(format!("redirect URI '{shown}' has a fragment; remove the '#…' part"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "redirect URI '{shown}' carries credentials (user@); remove them"
        ));
    }
    match url.scheme() {
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "ftp" | "ws" | "wss" => Err(format!(
            "redirect URI '{shown}' uses the scheme '{}:', which is never allowed; use https, loopback http or your app's own scheme",
            url.scheme()
        )),
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "https" => Err(format!("redirect URI '{shown}' has no host")),
        "http" if url.host_str().is_some_and(is_loopback_host) => Ok(url),
        "http" => Err(format!(
            "redirect URI '{shown}' is plain http to a host other than this machine; use https, or http://127.0.0.1 (any port) for a native app"
        )),
        _ => Ok(url),
    }
}

/// Whether `given` matches a registered redirect URI: exactly, or (loopback http) with
/// any port (RFC 8252 §7.3).
fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(r), Ok(g)) = (Url::parse(registered), Url::parse(given)) else {
        return false;
    };
    r.scheme() == "http"
        && g.scheme() == "http"
        && r.host_str().is_some_and(is_loopback_host)
        && r.host_str() == g.host_str()
        && r.path() == g.path()
        && r.query() == g.query()
        && g.fragment().is_none()
        && g.username().is_empty()
        && g.password().is_none()
}

#[derive(Deserialize)]
struct Registration {
    #[serde(default)]
    redirect_uris: Vec<String>,
    client_name: Option<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
}

async fn register(
    State(st): State<OAuthState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    if !st.registrations.allow(client.ip(), REGISTRATIONS_PER_MINUTE) {
        return too_many();
    }
    let bad = |error: &str, d: String| oauth_error(StatusCode::BAD_REQUEST, error, d);
    let reg: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad(
                "invalid_client_metadata",
                format!("the body is not client metadata JSON: {e}"),
            );
        }
    };
    if reg.redirect_uris.is_empty() || reg.redirect_uris.len() > MAX_REDIRECT_URIS {
        return bad(
            "invalid_redirect_uri",
            format!("give between 1 and {MAX_REDIRECT_URIS} redirect_uris"),
        );
    }
    for uri in &reg.redirect_uris {
        if let Err(message) = check_redirect_uri(uri) {
            return bad("invalid_redirect_uri", message);
        }
    }
    if reg.token_endpoint_auth_method.as_deref().is_some_and(|m| m != "none") {
        return bad(
            "invalid_client_metadata",
            "berth registers public clients only: token_endpoint_auth_method must be 'none' (use PKCE)".into(),
        );
    }
    if let Some(g) = &reg.grant_types
        && let Some(other) = g
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return bad(
            "invalid_client_metadata",
            format!(
                "grant type '{}' is not supported; use authorization_code and refresh_token",
                other.chars().take(40).collect::<String>()
            ),
        );
    }
    if reg
        .response_types
        .as_ref()
        .is_some_and(|r| r.iter().any(|r| r != "code"))
    {
        return bad(
            "invalid_client_metadata",
            "only the response type 'code' is supported".into(),
        );
    }
    let name = reg
        .client_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("unnamed client");
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return bad(
            "invalid_client_metadata",
            format!("client_name must be at most {MAX_NAME_CHARS} printable characters"),
        );
    }
    let id = format!("berth_client_{}", random_hex(16));
    let uris = serde_json::to_string(&reg.redirect_uris).unwrap_or_default();
    let pool = st.ui.service.platform.store.pool();
    if let Err(e) = oauth_store::upsert_client(pool, &id, "registered", name, &uris).await {
        return ServiceError::from(e).into_response();
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "client_id": id,
            "client_id_issued_at": now_ms() / 1000,
            "client_name": name,
            "redirect_uris": reg.redirect_uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        })),
    )
        .into_response()
}

/// A client as the authorization endpoint sees it.
struct Client {
    id: String,
    name: String,
    redirect_uris: Vec<String>,
    /// The host of its metadata document (verified by fetching it over https).
    verified_domain: Option<String>,
}

impl OAuthState {
    /// A client by its id: a registered one, or the metadata document at an https id
    /// (cached for ten minutes).
    async fn client(&self, client_id: &str, caller: IpAddr) -> Result<Client, String> {
        let shown: String = client_id.chars().take(80).collect();
        let pool = self.ui.service.platform.store.pool();
        let row = oauth_store::get_client(pool, client_id)
            .await
            .map_err(|e| format!("reading the client: {e}"))?;
        if client_id.starts_with("https://") {
            let fresh = row
                .as_ref()
                .filter(|r| r.kind == "metadata" && now_ms() - r.fetched_at < METADATA_CACHE_MS);
            let (name, uris) = match fresh {
                Some(r) => (
                    r.name.clone(),
                    serde_json::from_str(&r.redirect_uris).unwrap_or_default(),
                ),
                None => {
                    if !self.metadata_fetches.allow(caller, METADATA_FETCHES_PER_MINUTE) {
                        return Err(
                            "too many client metadata documents were fetched for this address; wait a minute and try again"
                                .into(),
                        );
                    }
                    let (name, uris) = self.fetch_metadata(client_id).await?;
                    let json = serde_json::to_string(&uris).unwrap_or_default();
                    oauth_store::upsert_client(pool, client_id, "metadata", &name, &json)
                        .await
                        .map_err(|e| format!("storing the client: {e}"))?;
                    (name, uris)
                }
            };
            let domain = Url::parse(client_id)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            return Ok(Client {
                id: client_id.to_string(),
                name,
                redirect_uris: uris,
                verified_domain: domain,
            });
        }
        match row {
            Some(r) if r.kind == "registered" => Ok(Client {
                id: r.id,
                name: r.name,
                redirect_uris: serde_json::from_str(&r.redirect_uris).unwrap_or_default(),
                verified_domain: None,
            }),
            _ => Err(format!(
                "unknown client_id '{shown}'; the client must register first (POST /oauth/register) or use the https URL of its metadata document"
            )),
        }
    }

    /// Fetches a Client ID Metadata Document: https only, from public addresses only
    /// (after resolution, and the connection pinned to the checked address), no
    /// redirects, 5 s and 64 KiB at most; its `client_id` must be its own URL.
    async fn fetch_metadata(&self, client_id: &str) -> Result<(String, Vec<String>), String> {
        let shown: String = client_id.chars().take(80).collect();
        let fail = |why: String| format!("the client metadata document at '{shown}' {why}");
        if client_id.len() > MAX_URI_CHARS {
            return Err(fail(format!("has a URL over {MAX_URI_CHARS} characters")));
        }
        let url = Url::parse(client_id).map_err(|e| fail(format!("is not a URL ({e})")))?;
        if url.scheme() != "https" || !url.username().is_empty() || url.password().is_some() || url.fragment().is_some()
        {
            return Err(fail("must be an https URL without credentials or fragment".into()));
        }
        let Some(host) = url.host_str().map(str::to_ascii_lowercase).filter(|h| !h.is_empty()) else {
            return Err(fail("has no host".into()));
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host.trim_matches(['[', ']']), port)),
        )
        .await
        .map_err(|_| fail("did not resolve within 5 seconds".into()))?
        .map_err(|e| fail(format!("does not resolve ({e})")))?
        .collect();
        let private_ok = self.private_metadata_hosts.contains(&host);
        let Some(addr) = addrs.first().copied() else {
            return Err(fail("does not resolve".into()));
        };
        if !private_ok && let Some(bad) = addrs.iter().find(|a| !crate::util::is_public_ip(a.ip())) {
            return Err(fail(format!(
                "resolves to the non-public address {}; metadata documents must be on the public internet",
                bad.ip()
            )));
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .resolve(&host, addr);
        if !self.metadata_roots.is_empty() {
            builder = builder.tls_certs_merge(self.metadata_roots.iter().cloned());
        }
        let http = builder.build().map_err(|e| fail(format!("cannot be fetched ({e})")))?;
        let mut resp = http
            .get(url.clone())
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fail(format!("could not be fetched ({e})")))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(fail(format!("answered {} (redirects are not followed)", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| fail(format!("could not be read ({e})")))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > METADATA_MAX_BYTES {
                return Err(fail(format!("is over {} KiB", METADATA_MAX_BYTES / 1024)));
            }
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| fail(format!("is not JSON ({e})")))?;
        if doc["client_id"].as_str() != Some(client_id) {
            return Err(fail("names another client_id than its own URL".into()));
        }
        let uris: Vec<String> = doc["redirect_uris"]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
            return Err(fail(format!(
                "must list between 1 and {MAX_REDIRECT_URIS} redirect_uris"
            )));
        }
        for uri in &uris {
            check_redirect_uri(uri).map_err(fail)?;
        }
        if doc["token_endpoint_auth_method"].as_str().is_some_and(|m| m != "none") {
            return Err(fail(
                "must describe a public client (token_endpoint_auth_method 'none')".into(),
            ));
        }
        let name = doc["client_name"]
            .as_str()
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS && !n.chars().any(char::is_control))
            .unwrap_or(&host)
            .to_string();
        Ok((name, uris))
    }
}

// ---------------------------------------------------------------- authorization

/// The parameters of an authorization request (query of the GET, hidden fields of the
/// consent POST).
#[derive(Clone, Debug, Default, Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
}

impl AuthorizeParams {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Self {
            response_type: get("response_type"),
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            state: get("state"),
            scope: get("scope"),
            resource: get("resource"),
        }
    }

    fn hidden_fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("state", &self.state),
            ("scope", &self.scope),
            ("resource", &self.resource),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// A checked authorization request.
struct Checked {
    client: Client,
    redirect_uri: String,
    challenge: String,
    state: Option<String>,
    scopes: Vec<Scope>,
    resource: String,
}

/// Why an authorization request is refused: on berth's page (the redirect URI is not
/// trusted yet) or by redirecting back to the client.
enum Refusal {
    Page(String),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

impl OAuthState {
    async fn check(&self, p: &AuthorizeParams, caller: IpAddr) -> Result<Checked, Refusal> {
        let client_id = p
            .client_id
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Refusal::Page("the request has no client_id; the client must send one".into()))?;
        if client_id.len() > MAX_URI_CHARS {
            return Err(Refusal::Page("the client_id is too long".into()));
        }
        let client = self.client(client_id, caller).await.map_err(Refusal::Page)?;
        let redirect_uri = p.redirect_uri.as_deref().filter(|r| !r.is_empty()).ok_or_else(|| {
            Refusal::Page("the request has no redirect_uri; the client must send the one it registered".into())
        })?;
        if check_redirect_uri(redirect_uri).is_err()
            || !client.redirect_uris.iter().any(|r| redirect_matches(r, redirect_uri))
        {
            return Err(Refusal::Page(format!(
                "the redirect_uri '{}' is not one the client '{}' registered; nothing was sent to it",
                redirect_uri.chars().take(80).collect::<String>(),
                client.name
            )));
        }
        let state = p.state.clone().filter(|s| s.len() <= 1000);
        let back = |error: &'static str, description: String| Refusal::Redirect {
            redirect_uri: redirect_uri.to_string(),
            state: state.clone(),
            error,
            description,
        };
        if p.response_type.as_deref() != Some("code") {
            return Err(back("unsupported_response_type", "response_type must be 'code'".into()));
        }
        let challenge = p.code_challenge.clone().unwrap_or_default();
        match p.code_challenge_method.as_deref() {
            Some("S256") => {}
            Some(other) => {
                return Err(back(
                    "invalid_request",
                    format!(
                        "code_challenge_method '{}' is not supported; use S256",
                        other.chars().take(20).collect::<String>()
                    ),
                ));
            }
            None => {
                return Err(back(
                    "invalid_request",
                    "PKCE is required: send code_challenge_method=S256".into(),
                ));
            }
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(back(
                "invalid_request",
                "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)".into(),
            ));
        }
        let resource = self.resource();
        if let Some(r) = p.resource.as_deref().filter(|r| !r.is_empty())
            && r.trim_end_matches('/') != resource
        {
            return Err(back(
                "invalid_target",
                format!("this server issues tokens only for the resource {resource}"),
            ));
        }
        let scopes = match p.scope.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Scope::ALL.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for name in list.split_ascii_whitespace() {
                    match Scope::parse(name) {
                        Some(s) => out.push(s),
                        None => {
                            return Err(back(
                                "invalid_scope",
                                format!(
                                    "unknown scope '{}'; use: {}",
                                    name.chars().take(40).collect::<String>(),
                                    scope_list(&Scope::ALL)
                                ),
                            ));
                        }
                    }
                }
                out.sort();
                out.dedup();
                out
            }
        };
        Ok(Checked {
            redirect_uri: redirect_uri.to_string(),
            challenge,
            state,
            scopes,
            resource,
            client,
        })
    }

    /// `redirect_uri` with the answer's parameters, `state` and `iss` added.
    fn back_to(&self, redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>) -> Response {
        let Ok(mut url) = Url::parse(redirect_uri) else {
            return self.page_error("the redirect_uri is not a URL");
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &self.issuer);
        }
        (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
    }

    fn refuse(&self, refusal: Refusal) -> Response {
        match refusal {
            Refusal::Page(message) => self.page_error(&message),
            Refusal::Redirect {
                redirect_uri,
                state,
                error,
                description,
            } => self.back_to(
                &redirect_uri,
                &[("error", error), ("error_description", &description)],
                state.as_deref(),
            ),
        }
    }

    fn page_error(&self, message: &str) -> Response {
        let mut resp = crate::ui::error_page(None, &ServiceError::invalid("oauth", message.to_string()));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        resp
    }
}

/// A consent page: no caching, no framing, and no `form-action` limit (the approval's
/// redirect goes to the client).
fn consent_html(markup: Markup) -> Response {
    let mut resp = (StatusCode::OK, Html(markup.into_string())).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// The session of a person (not of an API key) who can consent, or the response that
/// gets one.
async fn person(st: &OAuthState, headers: &HeaderMap, back: &str) -> Result<(Session, String), Response> {
    match session::current_session(&st.ui, headers).await {
        Ok(Some(s)) => match s.actor.user_id.clone().filter(|u| *u == s.actor.key_id) {
            Some(user) => Ok((s, user)),
            None => Err(st.page_error(
                "this dashboard session was opened with an API key; log out and log in with your email and password to connect an application",
            )),
        },
        Ok(None) => Err(Redirect::to(&format!("/login?next={}", session::urlencode(back))).into_response()),
        Err(e) => Err(crate::ui::error_page(None, &e)),
    }
}

async fn authorize(
    State(st): State<OAuthState>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    let checked = match st.check(&p, caller.ip()).await {
        Ok(c) => c,
        Err(r) => return st.refuse(r),
    };
    let back = uri
        .path_and_query()
        .map_or("/oauth/authorize", |pq| pq.as_str())
        .to_string();
    let (session, user) = match person(&st, &headers, &back).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let pool = st.ui.service.platform.store.pool();
    let orgs = match oauth_store::orgs_of_user(pool, &user).await {
        Ok(o) => o,
        Err(e) => return crate::ui::error_page(Some(&session), &e.into()),
    };
    let mut sites_by_org = Vec::new();
    for (org_id, org_name, role) in &orgs {
        match oauth_store::site_names(pool, org_id).await {
            Ok(names) => sites_by_org.push((org_id.clone(), org_name.clone(), role.clone(), names)),
            Err(e) => return crate::ui::error_page(Some(&session), &e.into()),
        }
    }
    let redirect_host = Url::parse(&checked.redirect_uri)
        .ok()
        .map(|u| match u.host_str() {
            Some(h) => h.to_string(),
            None => format!("{}:", u.scheme()),
        })
        .unwrap_or_default();
    let body = html! {
        section.narrow {
            h1 { "Connect " (checked.client.name) " to berth?" }
            p {
                "Client: " strong { (checked.client.name) } " — "
                @match &checked.client.verified_domain {
                    Some(d) => { "metadata verified at " strong { (d) } }
                    None => { "unverified (registered dynamically)" }
                }
            }
            p { "After you decide, you are sent back to " strong { (redirect_host) } "." }
            form method="post" action="/oauth/authorize" {
                input type="hidden" name="_csrf" value=(session.csrf);
                @for (k, v) in p.hidden_fields() {
                    input type="hidden" name=(k) value=(v);
                }
                fieldset {
                    legend { "Org" }
                    select name="org" {
                        @for (id, name, role, _) in &sites_by_org {
                            option value=(id) selected[*id == session.actor.org_id] { (name) " (you are " (role) ")" }
                        }
                    }
                }
                fieldset {
                    legend { "What it may do (it never gets more than your role)" }
                    @for s in &checked.scopes {
                        label { input type="checkbox" name="grant_scope" value=(s.as_str()) checked; " " (s.as_str()) }
                        br;
                    }
                }
                fieldset {
                    legend { "Sites" }
                    label { input type="radio" name="sites" value="all" checked; " every site, present and future" }
                    br;
                    label { input type="radio" name="sites" value="some"; " only these:" }
                    @for (_, org_name, _, names) in &sites_by_org {
                        div {
                            @if sites_by_org.len() > 1 { em { (org_name) ": " } }
                            @for name in names {
                                label { input type="checkbox" name="site" value=(name); " " (name) }
                                " "
                            }
                        }
                    }
                }
                fieldset {
                    legend { "Production" }
                    label { input type="checkbox" name="production" value="on"; " include production (without it, production can be read but not changed)" }
                }
                button type="submit" name="decision" value="approve" { "Allow" }
                " "
                button type="submit" name="decision" value="deny" { "Deny" }
            }
        }
    };
    consent_html(crate::ui::views::page(Some(&session), "Connect an application", body))
}

async fn consent(
    State(st): State<OAuthState>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let (session, user) = match person(&st, &headers, "/sites").await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let field = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if !field(session::CSRF_FIELD).is_some_and(|c| session::tokens_match(c, &session.csrf)) {
        return session::csrf_refused(Some(&session));
    }
    let p = AuthorizeParams::from_pairs(&pairs);
    let checked = match st.check(&p, caller.ip()).await {
        Ok(c) => c,
        Err(r) => return st.refuse(r),
    };
    let state = checked.state.as_deref();
    if field("decision") != Some("approve") {
        return st.back_to(
            &checked.redirect_uri,
            &[("error", "access_denied"), ("error_description", "the person declined")],
            state,
        );
    }
    let pool = st.ui.service.platform.store.pool();
    let orgs = match oauth_store::orgs_of_user(pool, &user).await {
        Ok(o) => o,
        Err(e) => return crate::ui::error_page(Some(&session), &e.into()),
    };
    let Some((org_id, _, _)) = orgs.iter().find(|(id, _, _)| Some(id.as_str()) == field("org")) else {
        return st.page_error("pick one of your orgs");
    };
    let scopes: Vec<Scope> = checked
        .scopes
        .iter()
        .copied()
        .filter(|s| pairs.iter().any(|(k, v)| k == "grant_scope" && v == s.as_str()))
        .collect();
    if scopes.is_empty() {
        return st.page_error("tick at least one scope, or deny");
    }
    let sites = match field("sites") {
        Some("all") => None,
        Some("some") => {
            let existing = match oauth_store::site_names(pool, org_id).await {
                Ok(n) => n,
                Err(e) => return crate::ui::error_page(Some(&session), &e.into()),
            };
            let mut chosen: Vec<String> = pairs
                .iter()
                .filter(|(k, v)| k == "site" && existing.contains(v))
                .map(|(_, v)| v.clone())
                .collect();
            chosen.sort();
            chosen.dedup();
            if chosen.is_empty() {
                return st.page_error("tick at least one site of the chosen org, or choose every site");
            }
            Some(serde_json::to_string(&chosen).unwrap_or_default())
        }
        _ => return st.page_error("choose every site or some of them"),
    };
    let grant_id = new_id("grant");
    let code = random_hex(32);
    let lookup = &st.ui.service.platform.key_lookup;
    let digest = match lookup.digest(&code) {
        Ok(d) => d,
        Err(e) => return crate::ui::error_page(Some(&session), &ServiceError::Internal(e)),
    };
    let scope_names = Scope::join(&scopes);
    let stored = async {
        let mut tx = st.ui.service.platform.store.begin().await?;
        let stored = oauth_store::insert_grant(
            &mut *tx,
            &oauth_store::NewGrant {
                id: &grant_id,
                org_id,
                user_id: &user,
                client_id: &checked.client.id,
                client_name: &checked.client.name,
                scopes: &scope_names,
                sites: sites.as_deref(),
                production: field("production") == Some("on"),
                resource: &checked.resource,
            },
        )
        .await?;
        if !stored {
            return anyhow::Ok(false);
        }
        oauth_store::insert_code(
            &mut *tx,
            &digest,
            &grant_id,
            &checked.redirect_uri,
            &checked.challenge,
            now_ms() + CODE_TTL_SECS * 1000,
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(true)
    };
    match stored.await {
        Ok(true) => {}
        Ok(false) => {
            return st.page_error(
                "agents are frozen in this org: no application can connect until an admin unfreezes them (berth agents unfreeze, or the Connected apps page)",
            );
        }
        Err(e) => return crate::ui::error_page(Some(&session), &ServiceError::Internal(e)),
    }
    st.back_to(&checked.redirect_uri, &[("code", &code)], state)
}

// ---------------------------------------------------------------- tokens

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    resource: Option<String>,
}

/// The S256 challenge of a PKCE verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

async fn token(
    State(st): State<OAuthState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    if !st.token_requests.allow(client.ip(), TOKEN_REQUESTS_PER_MINUTE) {
        return too_many();
    }
    let who = [Subject::address(client.ip())];
    if st.ui.service.platform.auth_throttle.check(&who).is_err() {
        return too_many();
    }
    let Ok(form) = serde_urlencoded::from_bytes::<TokenForm>(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send an application/x-www-form-urlencoded body",
        );
    };
    let resp = match form.grant_type.as_deref() {
        Some("authorization_code") => st.exchange_code(&form).await,
        Some("refresh_token") => st.refresh(&form).await,
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        ),
    };
    if resp.status() == StatusCode::BAD_REQUEST {
        st.ui.service.platform.auth_throttle.failure(&who);
    }
    resp
}

impl OAuthState {
    fn digest(&self, token: &str) -> Option<String> {
        self.ui.service.platform.key_lookup.digest(token).ok()
    }

    async fn exchange_code(&self, form: &TokenForm) -> Response {
        let pool = self.ui.service.platform.store.pool();
        let code = form.code.as_deref().unwrap_or_default();
        if code.len() != 64 {
            return invalid_grant("unknown or expired code");
        }
        let Some(digest) = self.digest(code) else {
            return invalid_grant("unknown or expired code");
        };
        let row = match oauth_store::get_code(pool, &digest).await {
            Ok(Some(r)) => r,
            Ok(None) => return invalid_grant("unknown or expired code"),
            Err(e) => return ServiceError::from(e).into_response(),
        };
        // Single use: a second exchange means the code leaked, so its grant goes.
        match oauth_store::use_code(pool, &digest).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = oauth_store::revoke_grant(pool, &row.grant_id).await;
                return invalid_grant("this code was already used; every token it gave is revoked");
            }
            Err(e) => return ServiceError::from(e).into_response(),
        }
        if row.expires_at <= now_ms() {
            return invalid_grant("the code expired (codes last 60 seconds); start the authorization again");
        }
        let grant = match oauth_store::get_grant(pool, &row.grant_id).await {
            Ok(Some(g)) if g.revoked_at.is_none() => g,
            Ok(_) => return invalid_grant("the grant was revoked"),
            Err(e) => return ServiceError::from(e).into_response(),
        };
        if form.client_id.as_deref() != Some(grant.client_id.as_str()) {
            return invalid_grant("client_id does not match the client the code was issued to");
        }
        if form.redirect_uri.as_deref() != Some(row.redirect_uri.as_str()) {
            return invalid_grant("redirect_uri does not match the one of the authorization request");
        }
        if let Some(r) = form.resource.as_deref().filter(|r| !r.is_empty())
            && r.trim_end_matches('/') != grant.resource
        {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                format!("this code is for the resource {}", grant.resource),
            );
        }
        let verifier = form.code_verifier.as_deref().unwrap_or_default();
        if !(43..=128).contains(&verifier.len())
            || !verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
            || !session::tokens_match(&pkce_challenge(verifier), &row.code_challenge)
        {
            return invalid_grant("the code_verifier does not match the code_challenge (PKCE S256)");
        }
        self.issue(&grant).await
    }

    async fn refresh(&self, form: &TokenForm) -> Response {
        let pool = self.ui.service.platform.store.pool();
        let token = form.refresh_token.as_deref().unwrap_or_default();
        if !token.starts_with(REFRESH_PREFIX) || token.len() != REFRESH_PREFIX.len() + 64 {
            return invalid_grant("unknown refresh token");
        }
        let Some(digest) = self.digest(token) else {
            return invalid_grant("unknown refresh token");
        };
        let row = match oauth_store::get_token(pool, &digest).await {
            Ok(Some(r)) if r.kind == "refresh" => r,
            Ok(_) => return invalid_grant("unknown refresh token"),
            Err(e) => return ServiceError::from(e).into_response(),
        };
        let grant = match oauth_store::get_grant(pool, &row.grant_id).await {
            Ok(Some(g)) => g,
            Ok(None) => return invalid_grant("unknown refresh token"),
            Err(e) => return ServiceError::from(e).into_response(),
        };
        if form.client_id.as_deref() != Some(grant.client_id.as_str()) {
            return invalid_grant("client_id does not match the client the token was issued to");
        }
        // Rotation: a refresh token works once; a replay means it leaked, so the grant goes.
        match oauth_store::use_token(pool, &digest).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = oauth_store::revoke_grant(pool, &grant.id).await;
                return invalid_grant("this refresh token was already used; the grant is revoked, connect again");
            }
            Err(e) => return ServiceError::from(e).into_response(),
        }
        if grant.revoked_at.is_some() || row.revoked_at.is_some() || row.expires_at <= now_ms() {
            return invalid_grant("the refresh token expired or was revoked; connect again");
        }
        if let Some(r) = form.resource.as_deref().filter(|r| !r.is_empty())
            && r.trim_end_matches('/') != grant.resource
        {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                format!("this grant is for the resource {}", grant.resource),
            );
        }
        self.issue(&grant).await
    }

    /// A new access token and refresh token for a grant.
    async fn issue(&self, grant: &oauth_store::GrantRow) -> Response {
        let access = format!("{ACCESS_PREFIX}{}", random_hex(32));
        let refresh = format!("{REFRESH_PREFIX}{}", random_hex(32));
        let (Some(a), Some(r)) = (self.digest(&access), self.digest(&refresh)) else {
            return ServiceError::Internal(anyhow::anyhow!("the key lookup secret is unreadable")).into_response();
        };
        let now = now_ms();
        let stored = async {
            let mut tx = self.ui.service.platform.store.begin().await?;
            oauth_store::insert_token(&mut *tx, &a, &grant.id, "access", now + ACCESS_TTL_SECS * 1000).await?;
            oauth_store::insert_token(&mut *tx, &r, &grant.id, "refresh", now + REFRESH_TTL_SECS * 1000).await?;
            // Expired codes and tokens go as new ones come, so neither table grows with time.
            oauth_store::delete_expired(&mut tx, now).await?;
            tx.commit().await?;
            anyhow::Ok(())
        };
        if let Err(e) = stored.await {
            return ServiceError::Internal(e).into_response();
        }
        let scopes = Scope::parse_list(&grant.scopes);
        let mut resp = Json(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ACCESS_TTL_SECS,
            "refresh_token": refresh,
            "scope": scope_list(&scopes),
        }))
        .into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    token: Option<String>,
    client_id: Option<String>,
}

/// RFC 7009: always `200`; only the client's own tokens are revoked (a refresh token
/// takes its whole grant along).
async fn revoke(
    State(st): State<OAuthState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    if !st.token_requests.allow(client.ip(), TOKEN_REQUESTS_PER_MINUTE) {
        return too_many();
    }
    let form: RevokeForm = serde_urlencoded::from_bytes(&body).unwrap_or(RevokeForm {
        token: None,
        client_id: None,
    });
    let pool = st.ui.service.platform.store.pool();
    if let (Some(token), Some(client_id)) = (form.token.as_deref(), form.client_id.as_deref())
        && token.len() <= 200
        && let Some(digest) = st.digest(token)
        && let Ok(Some(row)) = oauth_store::get_token(pool, &digest).await
        && let Ok(Some(grant)) = oauth_store::get_grant(pool, &row.grant_id).await
        && grant.client_id == client_id
    {
        let done = if row.kind == "refresh" {
            oauth_store::revoke_grant(pool, &grant.id).await
        } else {
            oauth_store::revoke_token(pool, &digest).await
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "revoking an OAuth token failed");
        }
    }
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:33418/callback",
            "http://localhost/cb",
            "http://[::1]:8080/cb",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "https://app.example/cb#x",
            "https://user:pw@app.example/cb",
            "http://app.example/cb",
            "not a url",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_redirects_match_on_any_port_only() {
        assert!(redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:5000/cb"));
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:5000/other"));
        assert!(!redirect_matches("https://a.example/cb", "https://a.example:444/cb"));
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://localhost:5000/cb"));
    }

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!crate::util::is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        assert!(crate::util::is_public_ip("1.1.1.1".parse().unwrap()));
        assert!(crate::util::is_public_ip("2606:4700::1111".parse().unwrap()));
    }

    #[test]
    fn pkce_s256_is_base64url_of_sha256() {
        // Computed independently (Python's hashlib and base64).
        assert_eq!(
            pkce_challenge("berth-test-verifier-0123456789-abcdefghijklmnopq"),
            "X-qY82McKsZHSbJIs5Ma70SVrVpnDg-pjMc4K_WW4vs"
        );
    }
}
