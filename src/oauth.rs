//! The OAuth 2.1 adapter for MCP clients: berth is both the authorization server and the
//! protected resource (`/mcp`). This module holds the routes: discovery (RFC 9728
//! protected resource metadata, RFC 8414 server metadata), registration, the
//! authorization endpoint with berth's consent page, token and revocation. It parses
//! forms and queries, renders the consent page and maps results to HTTP (status codes,
//! `WWW-Authenticate`, redirects carrying RFC 9207 `iss`, JSON bodies); the rules live in
//! [`crate::service::oauth`].
//!
//! The person consents on berth's own page, signed in with the dashboard session, and
//! narrows what the client gets: the org, the scopes, a subset of sites, and whether
//! production is included.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::{Markup, html};
use reqwest::Url;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Authenticator;
use crate::error::ServiceError;
use crate::model::Scope;
use crate::service::oauth::{
    AuthorizeParams, ConsentDecision, IssuedTokens, OAuthError, OAuthServer, Refusal, Registration, SiteChoice,
    TokenRequest,
};
use crate::ui::UiState;
use crate::ui::session::{self, Session};

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
        Scope::space_separated(&Scope::ALL)
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
    let refused = crate::service::oauth::insufficient_scope(actor, action)?;
    let base = auth.mcp_resource().trim_end_matches("/mcp").to_string();
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", error_description=\"this tool needs the scope {}\"",
        Scope::space_separated(&refused.ask_for),
        refused.missing
    );
    let mut resp = refused.error.into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Some(resp)
}

/// What the OAuth endpoints share.
#[derive(Clone)]
pub struct OAuthState {
    ui: UiState,
    server: OAuthServer,
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
    let server = OAuthServer::new(ui.service.clone(), issuer)?;
    let state = OAuthState { ui, server };
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
        "resource": st.server.resource(),
        "authorization_servers": [st.server.issuer()],
        "scopes_supported": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "resource_name": "berth",
    }))
    .into_response()
}

async fn server_metadata(State(st): State<OAuthState>) -> Response {
    let i = st.server.issuer();
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

// ---------------------------------------------------------------- answers

/// Adds `Cache-Control: no-store` (OAuth answers carry codes and tokens).
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An OAuth error answer: `{error, error_description}` (`400`), `429 slow_down` with
/// `Retry-After`, or berth's error envelope for a failure on our side.
fn oauth_error(e: OAuthError) -> Response {
    match e {
        OAuthError::Refused { error, description } => no_store(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": error, "error_description": description })),
            )
                .into_response(),
        ),
        OAuthError::SlowDown => {
            let mut resp = no_store(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({
                        "error": "slow_down",
                        "error_description": "too many requests from this address; wait a minute and try again",
                    })),
                )
                    .into_response(),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            resp
        }
        OAuthError::Failed(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------- clients

async fn register(
    State(st): State<OAuthState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let request = serde_json::from_slice::<Registration>(&body).map_err(|e| e.to_string());
    match st.server.register(client.ip(), request).await {
        Ok(c) => (
            StatusCode::CREATED,
            Json(json!({
                "client_id": c.client_id,
                "client_id_issued_at": c.issued_at,
                "client_name": c.client_name,
                "redirect_uris": c.redirect_uris,
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            })),
        )
            .into_response(),
        Err(e) => oauth_error(e),
    }
}

// ---------------------------------------------------------------- authorization

/// The authorization request among the consent form's fields.
fn params_from_pairs(pairs: &[(String, String)]) -> AuthorizeParams {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    AuthorizeParams {
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

/// The authorization request as the consent form's hidden fields.
fn hidden_fields(p: &AuthorizeParams) -> Vec<(&'static str, &str)> {
    [
        ("response_type", &p.response_type),
        ("client_id", &p.client_id),
        ("redirect_uri", &p.redirect_uri),
        ("code_challenge", &p.code_challenge),
        ("code_challenge_method", &p.code_challenge_method),
        ("state", &p.state),
        ("scope", &p.scope),
        ("resource", &p.resource),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    .collect()
}

impl OAuthState {
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
            q.append_pair("iss", self.server.issuer());
        }
        (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
    }

    /// A refusal: on berth's page, back to the client, or (a failure on our side) the
    /// dashboard's error page for `session`.
    fn refuse(&self, refusal: Refusal, session: Option<&Session>) -> Response {
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
            Refusal::Failed(e) => crate::ui::error_page(session, &e),
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
    let mut resp = no_store((StatusCode::OK, Html(markup.into_string())).into_response());
    let h = resp.headers_mut();
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
    let checked = match st.server.check_authorization(&p, caller.ip()).await {
        Ok(c) => c,
        Err(r) => return st.refuse(r, None),
    };
    let back = uri
        .path_and_query()
        .map_or("/oauth/authorize", |pq| pq.as_str())
        .to_string();
    let (session, user) = match person(&st, &headers, &back).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let orgs = match st.server.consent_choices(&user).await {
        Ok(o) => o,
        Err(e) => return crate::ui::error_page(Some(&session), &e),
    };
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
                @for (k, v) in hidden_fields(&p) {
                    input type="hidden" name=(k) value=(v);
                }
                fieldset {
                    legend { "Org" }
                    select name="org" {
                        @for org in &orgs {
                            option value=(org.id) selected[org.id == session.actor.org_id] { (org.name) " (you are " (org.role) ")" }
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
                    @for org in &orgs {
                        div {
                            @if orgs.len() > 1 { em { (org.name) ": " } }
                            @for name in &org.sites {
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
    let all = |k: &str| -> Vec<String> { pairs.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect() };
    if !field(session::CSRF_FIELD).is_some_and(|c| crate::util::tokens_match(c, &session.csrf)) {
        return session::csrf_refused(Some(&session));
    }
    let decision = ConsentDecision {
        approve: field("decision") == Some("approve"),
        org: field("org").map(str::to_string),
        scopes: all("grant_scope"),
        sites: match field("sites") {
            Some("all") => SiteChoice::Every,
            Some("some") => SiteChoice::Only(all("site")),
            _ => SiteChoice::Unchosen,
        },
        production: field("production") == Some("on"),
    };
    let p = params_from_pairs(&pairs);
    match st.server.consent(&user, caller.ip(), &p, decision).await {
        Ok(approved) => st.back_to(
            &approved.redirect_uri,
            &[("code", &approved.code)],
            approved.state.as_deref(),
        ),
        Err(r) => st.refuse(r, Some(&session)),
    }
}

// ---------------------------------------------------------------- tokens

async fn token(
    State(st): State<OAuthState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let request = serde_urlencoded::from_bytes::<TokenRequest>(&body).ok();
    match st.server.token(client.ip(), request).await {
        Ok(tokens) => tokens_json(tokens),
        Err(e) => oauth_error(e),
    }
}

fn tokens_json(t: IssuedTokens) -> Response {
    no_store(
        Json(json!({
            "access_token": t.access_token,
            "token_type": "Bearer",
            "expires_in": t.expires_in,
            "refresh_token": t.refresh_token,
            "scope": Scope::space_separated(&t.scopes),
        }))
        .into_response(),
    )
}

#[derive(Deserialize)]
struct RevokeForm {
    token: Option<String>,
    client_id: Option<String>,
}

/// RFC 7009: always `200` (but for the rate limit).
async fn revoke(
    State(st): State<OAuthState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let form: RevokeForm = serde_urlencoded::from_bytes(&body).unwrap_or(RevokeForm {
        token: None,
        client_id: None,
    });
    match st
        .server
        .revoke(client.ip(), form.token.as_deref(), form.client_id.as_deref())
        .await
    {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => oauth_error(e),
    }
}
