//! Dashboard sessions and CSRF. Logging in with an API key, or with a member's email and
//! password, creates a session stored as the SHA-256 of a random cookie value; the session
//! acts as the key's (or the member's) [`Actor`], rebuilt on every request, so pages see
//! exactly what the same tools see, and a revoked key or a changed role applies at once. Every state-changing request must echo the session's
//! CSRF token (form field `_csrf` or header `x-csrf-token`).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::auth::Authenticator;
use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::service::{OrgMembership, Service};
use crate::store::Store;
use crate::util::{now_ms, random_hex, tokens_match};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "berth_session";
/// Name of the cookie holding the login form's CSRF token (there is no session yet).
pub const LOGIN_CSRF_COOKIE: &str = "berth_login_csrf";
/// Form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
/// Header that carries the CSRF token on script requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login.
const SESSION_TTL_SECS: i64 = 12 * 3600;
/// Largest urlencoded form accepted by the dashboard.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// What every dashboard handler can reach.
#[derive(Clone)]
pub struct UiState {
    /// The service layer (the pages' only way to read or change anything).
    pub service: Service,
    /// Verifies API keys at login and for bearer requests.
    pub auth: Arc<Authenticator>,
}

impl UiState {
    fn store(&self) -> &Store {
        &self.service.platform.store
    }
}

/// A logged-in browser: the key's actor and the session's CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who the session acts as.
    pub actor: Actor,
    /// Token the pages put in every form.
    pub csrf: String,
    /// The orgs of the member a password session acts as (empty for a key's session):
    /// the header's switcher offers them when there is more than one.
    pub orgs: Vec<OrgMembership>,
    id_hash: String,
}

impl Session {
    /// Ends this session.
    pub async fn end(&self, state: &UiState) -> ServiceResult<()> {
        state.store().delete_session(&self.id_hash).await?;
        Ok(())
    }

    /// Moves this session to another org of its member (see
    /// [`Service::switch_session_org`]); its CSRF token changes.
    pub async fn switch_org(&self, state: &UiState, org_id: &str) -> ServiceResult<OrgMembership> {
        state
            .service
            .switch_session_org(&self.actor, &self.id_hash, org_id)
            .await
    }
}

#[cfg(test)]
impl Session {
    /// A session that is in no database, for rendering views in unit tests.
    pub fn for_tests(actor: Actor) -> Self {
        Self {
            actor,
            csrf: "csrf-token".into(),
            orgs: Vec::new(),
            id_hash: String::new(),
        }
    }
}

/// SHA-256 of a cookie value, hex: the only form a session id is stored in.
fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The value of a cookie sent with the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over HTTPS (directly or through a TLS-terminating proxy
/// that says so): cookies then get `Secure`.
pub fn came_over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// A `Set-Cookie` value with the flags every berth cookie gets.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are hex")
}

/// Creates a session for an authenticated key or member; returns the `Set-Cookie` header.
pub async fn start_session(state: &UiState, actor: &Actor, secure: bool) -> ServiceResult<HeaderValue> {
    let store = state.store();
    // Opportunistic cleanup: logins are rare enough that this costs nothing.
    store.delete_expired_sessions().await?;
    let token = random_hex(32);
    // A member's own session acts as the member (its key id is the user id).
    let member = actor.user_id.as_deref().filter(|u| *u == actor.key_id);
    store
        .insert_session(
            &hash_token(&token),
            &actor.org_id,
            member.is_none().then_some(actor.key_id.as_str()),
            member,
            &random_hex(24),
            now_ms() + SESSION_TTL_SECS * 1000,
        )
        .await?;
    Ok(set_cookie(SESSION_COOKIE, &token, "/", SESSION_TTL_SECS, secure))
}

/// The session of a request, if its cookie names a live one.
pub async fn current_session(state: &UiState, headers: &HeaderMap) -> ServiceResult<Option<Session>> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    if token.len() != 64 {
        return Ok(None);
    }
    let id_hash = hash_token(token);
    let Some(row) = state.store().find_session(&id_hash).await? else {
        return Ok(None);
    };
    let actor = match state.auth.actor_of_session(&row).await {
        Ok(actor) => actor,
        Err(ServiceError::Unauthorized) => return Ok(None),
        Err(e) => return Err(e),
    };
    let orgs = if row.user_id.is_some() {
        state.service.orgs_of(&actor).await?.unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(Some(Session {
        actor,
        csrf: row.csrf_token,
        orgs,
        id_hash,
    }))
}

/// Only same-site paths are followed after login (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/sites".to_string(),
    }
}

impl FromRequestParts<UiState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, Self::Rejection> {
        match current_session(state, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => {
                let next = parts.uri.path_and_query().map_or("/sites", |p| p.as_str());
                let target = format!("/login?next={}", urlencode(next));
                Err(Redirect::to(&target).into_response())
            }
            Err(e) => Err(super::error_page(None, &e)),
        }
    }
}

/// Percent-encodes a query value.
pub fn urlencode(v: &str) -> String {
    serde_urlencoded::to_string([("v", v)])
        .map(|s| s.trim_start_matches("v=").to_string())
        .unwrap_or_default()
}

/// A urlencoded form posted by a logged-in browser whose CSRF token matched.
pub struct CsrfForm<T>(pub Session, pub T);

impl<T: DeserializeOwned> FromRequest<UiState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &UiState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
            super::error_page(
                Some(&session),
                &ServiceError::TooLarge {
                    message: "the form is too large".into(),
                },
            )
        })?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| pairs.into_iter().find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v));
        if !sent.is_some_and(|s| tokens_match(&s, &session.csrf)) {
            return Err(csrf_refused(Some(&session)));
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            super::error_page(
                Some(&session),
                &ServiceError::invalid("body", format!("the form is not valid: {e}")),
            )
        })?;
        Ok(CsrfForm(session, form))
    }
}

/// The page shown when a state-changing request lacks the session's CSRF token.
pub fn csrf_refused(session: Option<&Session>) -> Response {
    super::error_page(
        session,
        &ServiceError::Forbidden {
            message: "this form is out of date or did not come from this dashboard (CSRF check failed); reload the page and try again".into(),
        },
    )
}

/// Authenticates `/api` and `/mcp`: a bearer key as before, or, for `/api` only, the
/// dashboard's session cookie — on state-changing methods only together with the
/// session's CSRF token in `x-csrf-token`.
pub async fn require_key_or_session(State(state): State<UiState>, mut req: Request, next: Next) -> Response {
    if req.headers().contains_key("authorization") || !req.uri().path().starts_with("/api/") {
        return crate::api::require_key(State(state.auth.clone()), req, next).await;
    }
    let session = match current_session(&state, req.headers()).await {
        Ok(Some(s)) => s,
        Ok(None) => return ServiceError::Unauthorized.into_response(),
        Err(e) => return e.into_response(),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|s| tokens_match(s, &session.csrf)) {
            return ServiceError::Forbidden {
                message:
                    "a request with the dashboard's session cookie needs its CSRF token in the x-csrf-token header"
                        .into(),
            }
            .into_response();
        }
    }
    req.extensions_mut().insert(session.actor);
    next.run(req).await
}

/// Adds `Set-Cookie` headers to a response.
pub fn with_cookies(mut resp: Response, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    for c in cookies {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// A 303 to `to`, so a form POST is followed by a GET.
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [("location", to.to_string())]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; berth_session_x=2; berth_session=abc"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/sites/a?x=1")), "/sites/a?x=1");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "evil"] {
            assert_eq!(safe_next(Some(bad)), "/sites", "{bad}");
        }
        assert_eq!(safe_next(None), "/sites");
    }

    #[test]
    fn https_is_told_by_the_proxy_headers() {
        let mut h = HeaderMap::new();
        assert!(!came_over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(came_over_https(&h));
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4;proto=https"));
        assert!(came_over_https(&h));
    }

    #[test]
    fn cookie_flags() {
        let c = set_cookie(SESSION_COOKIE, "v", "/", 10, false);
        assert_eq!(c, "berth_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=10");
        assert!(
            set_cookie(SESSION_COOKIE, "v", "/", 10, true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }
}
