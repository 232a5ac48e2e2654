//! The web dashboard, served by `berth serve` at `/` on the control-plane listener:
//! server-rendered pages (maud) with a little progressive script, CSS and JS embedded in
//! the binary. Handlers are adapters like REST and MCP: they parse forms, call the
//! service layer as the logged-in key's actor, and show its errors next to the field.

mod audit;
mod people;
mod resources;
pub mod session;
mod usage;
pub mod views;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

use session::{CsrfForm, LOGIN_CSRF_COOKIE, Session, see_other, with_cookies};
pub use session::{UiState, require_key_or_session};
use views::{CreateSiteForm, Notice, Tab};

use crate::error::ServiceError;
use crate::service::*;

/// The GET handler of one site tab: the tabs differ only in which one they show.
macro_rules! tab_page {
    ($tab:expr) => {
        get(
            |State(st): State<UiState>, s: Session, Path(site): Path<String>, Query(q): Query<TabQuery>| async move {
                show_tab(st, s, site, $tab, q).await
            },
        )
    };
}

/// The dashboard's routes (public pages, login, and the session-protected pages).
pub fn router(state: UiState) -> Router {
    // Uploads through the dashboard get the same bound as `POST /api/sites/{site}/upload`.
    let upload_limit = axum::extract::DefaultBodyLimit::max(state.service.platform.config.max_upload_bytes);
    Router::new()
        .route("/", get(home))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/orgs/switch", post(switch_org))
        .route("/invite/{token}", get(invitation_page).post(accept_invitation))
        .route("/sites", get(sites))
        .route("/sites/new", get(new_site).post(create_site).layer(upload_limit))
        .route("/sites/{site}", tab_page!(Tab::Overview))
        .route("/sites/{site}/deployments", tab_page!(Tab::Deployments))
        .route("/sites/{site}/deployments/{id}", get(deployment))
        .route("/sites/{site}/deployments/{id}/cancel", post(cancel))
        .route(
            "/sites/{site}/environments",
            tab_page!(Tab::Environments).post(create_environment),
        )
        .route("/sites/{site}/environments/{env}/delete", post(delete_environment))
        .route("/sites/{site}/environments/{env}/scale", post(scale))
        .route("/sites/{site}/settings", tab_page!(Tab::Settings))
        .route("/sites/{site}/settings/build", post(save_build_settings))
        .route("/sites/{site}/domains", tab_page!(Tab::Domains).post(add_domain))
        .route("/sites/{site}/domains/{domain}/check", post(check_domain))
        .route("/sites/{site}/domains/{domain}/remove", post(remove_domain))
        .route("/sites/{site}/monitoring", tab_page!(Tab::Monitoring))
        .route("/sites/{site}/deploy", post(deploy))
        .route("/sites/{site}/upload", post(upload).layer(upload_limit))
        .route("/sites/{site}/promote", post(promote))
        .route("/sites/{site}/rollback", post(rollback))
        .route("/sites/{site}/env", post(set_env_var))
        .route("/sites/{site}/env/delete", post(delete_env_var))
        .route("/sites/{site}/delete", post(delete_site))
        .route("/providers", get(providers))
        .route("/providers/{provider}", post(save_provider))
        .route("/providers/{provider}/test", post(test_provider))
        .route("/members", get(people::members))
        .route("/members/invite", post(people::invite))
        .route("/members/{email}/role", post(people::set_role))
        .route("/members/{email}/remove", post(people::remove))
        .route("/members/invitations/{id}/revoke", post(people::revoke_invitation))
        .route("/keys", get(people::keys).post(people::create_key))
        .route("/keys/{id}/revoke", post(people::revoke_key))
        .route("/audit", get(audit::audit))
        .route("/usage", get(usage::usage))
        .route("/resources", get(resources::resources).post(resources::create))
        .route("/resources/{name}/delete", post(resources::delete))
        .route("/connected-apps", get(people::connected_apps))
        .route("/connected-apps/freeze", post(people::freeze))
        .route("/connected-apps/{id}/revoke", post(people::revoke_app))
        .fallback(not_found)
        .with_state(state)
}

/// An HTML response with a status.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, Html(markup.into_string())).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    // Only our own script and style run, and no other site may frame these pages
    // (clickjacking a delete button).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A service error as a full page.
pub fn error_page(session: Option<&Session>, err: &ServiceError) -> Response {
    crate::prometheus::error_answered(err.code());
    let envelope = err.envelope();
    let title = match err {
        ServiceError::NotFound { .. } => "Not found",
        ServiceError::Forbidden { .. } => "Not allowed",
        ServiceError::Unauthorized => "Log in first",
        ServiceError::Internal(_) => "Something went wrong",
        _ => "That did not work",
    };
    html(err.status(), views::error_page(session, title, &envelope.error.message))
}

/// A service error as a notice (with its field, when the service named one).
fn notice_of(err: &ServiceError) -> Notice {
    crate::prometheus::error_answered(err.code());
    let envelope = err.envelope();
    Notice::error(envelope.error.message, envelope.error.field)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        views::APP_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        views::APP_JS,
    )
        .into_response()
}

/// Unknown paths: the JSON envelope under `/api`, a page everywhere else.
async fn not_found(State(state): State<UiState>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let err = ServiceError::not_found(format!(
        "nothing at {}; the API lives under /api, MCP at /mcp, the dashboard at /",
        path.chars().take(200).collect::<String>()
    ));
    if path.starts_with("/api/") || path.starts_with("/mcp") {
        return err.into_response();
    }
    let session = session::current_session(&state, &headers).await.ok().flatten();
    error_page(session.as_ref(), &err)
}

// ---------------------------------------------------------------- landing and login

/// The URL the visitor reached us at, for the config snippets.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .unwrap_or("127.0.0.1:7070");
    let scheme = if session::came_over_https(headers) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

async fn home(State(state): State<UiState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = session::current_session(&state, &headers).await {
        return Redirect::to("/sites").into_response();
    }
    let tools = crate::mcp::tool_catalog();
    let base = base_url(&headers);
    let pattern = state.service.platform.url_for("<site>", "production");
    html(
        StatusCode::OK,
        views::landing(&views::Landing {
            base_url: &base,
            tools: &tools,
            site_pattern: &pattern,
        }),
    )
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// The login form, with a fresh double-submit CSRF token (there is no session yet).
fn login_form(headers: &HeaderMap, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let token = crate::util::random_hex(16);
    let resp = html(status, views::login(&token, next, error));
    with_cookies(
        resp,
        [session::set_cookie(
            LOGIN_CSRF_COOKIE,
            &token,
            "/login",
            3600,
            session::came_over_https(headers),
        )],
    )
}

async fn login_page(State(state): State<UiState>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let next = session::safe_next(q.next.as_deref());
    if let Ok(Some(_)) = session::current_session(&state, &headers).await {
        return Redirect::to(&next).into_response();
    }
    login_form(&headers, &next, None, StatusCode::OK)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
    next: Option<String>,
}

async fn login(
    State(state): State<UiState>,
    axum::extract::ConnectInfo(client): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let next = session::safe_next(form.next.as_deref());
    let expected = session::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if !crate::util::tokens_match(&form.csrf, expected) {
        return login_form(
            &headers,
            &next,
            Some("The login form expired (CSRF check failed). Try again."),
            StatusCode::FORBIDDEN,
        );
    }
    // A member logs in with email and password, automation with an API key.
    let by_password = !form.email.trim().is_empty();
    let attempt = if by_password {
        state
            .auth
            .login_password(&form.email, &form.password, client.ip())
            .await
    } else {
        state.auth.authenticate_from(form.key.trim(), client.ip()).await
    };
    let actor = match attempt {
        Ok(actor) => actor,
        Err(e @ ServiceError::RateLimited { .. }) => {
            let mut resp = login_form(&headers, &next, Some(&e.to_string()), e.status());
            if let ServiceError::RateLimited { retry_after } = e {
                resp.headers_mut()
                    .insert("retry-after", crate::throttle::retry_after_secs(retry_after).into());
            }
            return resp;
        }
        Err(ServiceError::Unauthorized) => {
            let message = if by_password {
                "That email and password do not match a member of any org. Check them, or ask an admin of your org to add you."
            } else {
                "That API key is not valid. Check it, or ask your operator for a key of your org."
            };
            return login_form(&headers, &next, Some(message), StatusCode::UNAUTHORIZED);
        }
        Err(e) => return error_page(None, &e),
    };
    let secure = session::came_over_https(&headers);
    match session::start_session(&state, &actor, secure).await {
        Ok(cookie) => with_cookies(
            see_other(&next),
            [cookie, session::set_cookie(LOGIN_CSRF_COOKIE, "", "/login", 0, secure)],
        ),
        Err(e) => error_page(None, &e),
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn logout(State(state): State<UiState>, headers: HeaderMap, CsrfForm(s, _): CsrfForm<Empty>) -> Response {
    if let Err(e) = s.end(&state).await {
        return error_page(Some(&s), &e);
    }
    let secure = session::came_over_https(&headers);
    with_cookies(
        see_other("/"),
        [session::set_cookie(session::SESSION_COOKIE, "", "/", 0, secure)],
    )
}

#[derive(Deserialize)]
struct SwitchOrgForm {
    #[serde(default)]
    org: String,
}

/// Moves the session to another of the member's orgs, then shows that org's sites.
async fn switch_org(State(state): State<UiState>, CsrfForm(s, form): CsrfForm<SwitchOrgForm>) -> Response {
    match s.switch_org(&state, &form.org).await {
        Ok(_) => see_other("/sites"),
        Err(e) => error_page(Some(&s), &e),
    }
}

// ---------------------------------------------------------------- invitations

/// The cookie holding the invitation form's CSRF token (the person has no session yet).
const INVITE_CSRF_COOKIE: &str = "berth_invite_csrf";

/// The invitation page: who is invited to which org with which role, and the form that
/// accepts (a new password, or the existing account's), with a fresh double-submit CSRF
/// token. A link that no longer works says why.
async fn invitation_page(State(state): State<UiState>, headers: HeaderMap, Path(token): Path<String>) -> Response {
    render_invitation(&state, &headers, &token, None, StatusCode::OK).await
}

async fn render_invitation(
    state: &UiState,
    headers: &HeaderMap,
    token: &str,
    error: Option<&Notice>,
    status: StatusCode,
) -> Response {
    let session = session::current_session(state, headers).await.ok().flatten();
    let preview = match state.service.preview_invitation(token).await {
        Ok(p) => p,
        Err(e) => return error_page(session.as_ref(), &e),
    };
    let signed_in = session
        .as_ref()
        .and_then(|s| s.actor.user_email.as_deref())
        .is_some_and(|email| email == preview.email);
    let csrf = crate::util::random_hex(16);
    let resp = html(
        status,
        views::invitation(session.as_ref(), token, &csrf, &preview, signed_in, error),
    );
    with_cookies(
        resp,
        [session::set_cookie(
            INVITE_CSRF_COOKIE,
            &csrf,
            "/invite",
            3600,
            session::came_over_https(headers),
        )],
    )
}

#[derive(Deserialize)]
struct AcceptForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_again: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

/// Accepts an invitation, then starts a session in the org joined.
async fn accept_invitation(
    State(state): State<UiState>,
    axum::extract::ConnectInfo(client): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
    axum::Form(form): axum::Form<AcceptForm>,
) -> Response {
    let expected = session::cookie(&headers, INVITE_CSRF_COOKIE).unwrap_or_default();
    if !crate::util::tokens_match(&form.csrf, expected) {
        let n = Notice::error("The form expired (CSRF check failed). Try again.", None);
        return render_invitation(&state, &headers, &token, Some(&n), StatusCode::FORBIDDEN).await;
    }
    let session = session::current_session(&state, &headers).await.ok().flatten();
    // Only a member's own password session proves who they are (not an API key's).
    let signed_in = session
        .as_ref()
        .and_then(|s| s.actor.user_id.as_deref().filter(|u| *u == s.actor.key_id));
    let has_account = state
        .service
        .preview_invitation(&token)
        .await
        .is_ok_and(|p| p.has_account);
    if !has_account && form.password != form.password_again {
        let n = Notice::error(
            "The two passwords differ; type the same one twice.",
            Some("password_again"),
        );
        return render_invitation(&state, &headers, &token, Some(&n), StatusCode::BAD_REQUEST).await;
    }
    let accepted = match state
        .service
        .accept_invitation(&token, Some(form.password.as_str()), signed_in, client.ip())
        .await
    {
        Ok(a) => a,
        Err(e @ (ServiceError::Invalid { .. } | ServiceError::RateLimited { .. })) => {
            return render_invitation(&state, &headers, &token, Some(&notice_of(&e)), e.status()).await;
        }
        Err(e) => return error_page(session.as_ref(), &e),
    };
    let actor = match state.auth.actor_of_member(&accepted.org_id, &accepted.user_id).await {
        Ok(a) => a,
        Err(e) => return error_page(None, &e),
    };
    let secure = session::came_over_https(&headers);
    match session::start_session(&state, &actor, secure).await {
        Ok(cookie) => with_cookies(
            see_other("/sites?joined=1"),
            [
                cookie,
                session::set_cookie(INVITE_CSRF_COOKIE, "", "/invite", 0, secure),
            ],
        ),
        Err(e) => error_page(None, &e),
    }
}

// ---------------------------------------------------------------- sites

#[derive(Deserialize)]
struct SitesQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    /// The page after this site name.
    #[serde(default)]
    after: String,
}

/// The status a site is shown with: `sleeping` when production scaled to zero and nothing runs.
async fn display_status(state: &UiState, s: &Session, summary: &SiteSummary) -> String {
    if summary.status != "starting" {
        return summary.status.clone();
    }
    let scaling = state
        .service
        .get_scaling(
            &s.actor,
            &ScalingRef {
                site: summary.name.clone(),
                environment: None,
            },
        )
        .await;
    match scaling {
        Ok(c) if c.min_instances == 0 && c.running_instances == 0 => "sleeping".into(),
        _ => summary.status.clone(),
    }
}

async fn sites(State(state): State<UiState>, s: Session, Query(q): Query<SitesQuery>) -> Response {
    let page = ListSitesInput {
        limit: Some(100),
        cursor: Some(q.after.clone()).filter(|a| !a.is_empty()),
        name_contains: Some(q.q.clone()).filter(|n| !n.trim().is_empty()),
    };
    let list = match state.service.list_sites(&s.actor, &page).await {
        Ok(l) => l,
        Err(e) => return error_page(Some(&s), &e),
    };
    let total = list.total as usize;
    let next = list.next_cursor.clone();
    let needle = q.q.trim().to_lowercase();
    let mut cards = Vec::new();
    for summary in list.sites {
        let status = display_status(&state, &s, &summary).await;
        let text = format!("{} {}", summary.name, summary.source).to_lowercase();
        if (needle.is_empty() || text.contains(&needle)) && (q.status.is_empty() || q.status == status) {
            cards.push(views::SiteCard { summary, status });
        }
    }
    html(
        StatusCode::OK,
        views::sites(&s, &cards, &q.q, &q.status, total, next.as_deref()),
    )
}

async fn new_site(s: Session) -> Response {
    html(StatusCode::OK, views::create_site(&s, &CreateSiteForm::default(), None))
}

/// Parses `NAME=value` lines; a malformed line is an error on the `env` field.
fn parse_env_lines(text: &str) -> Result<BTreeMap<String, String>, Notice> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Notice::error(
                format!("line {}: write NAME=value (one variable per line)", i + 1),
                Some("env"),
            ));
        };
        vars.insert(k.trim().to_string(), v.to_string());
    }
    Ok(vars)
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Reads a multipart form: text fields by name, and the `archive` file's bytes if any.
async fn read_multipart(mut mp: Multipart) -> Result<(BTreeMap<String, String>, Option<bytes::Bytes>), ServiceError> {
    let mut fields = BTreeMap::new();
    let mut archive = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(ServiceError::invalid(
                    "archive",
                    format!("the form could not be read: {e}"),
                ));
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        if name == "archive" {
            let data = field.bytes().await.map_err(|_| ServiceError::TooLarge {
                message: "the upload is over the size limit; leave dependencies and build output out of it".into(),
            })?;
            if !data.is_empty() {
                archive = Some(data);
            }
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| ServiceError::invalid("body", format!("the form could not be read: {e}")))?;
            fields.insert(name, text);
        }
    }
    Ok((fields, archive))
}

fn csrf_ok(fields: &BTreeMap<String, String>, s: &Session) -> bool {
    fields
        .get(session::CSRF_FIELD)
        .is_some_and(|t| crate::util::tokens_match(t, &s.csrf))
}

async fn create_site(State(state): State<UiState>, s: Session, mp: Multipart) -> Response {
    let (fields, archive) = match read_multipart(mp).await {
        Ok(x) => x,
        Err(e) => return error_page(Some(&s), &e),
    };
    if !csrf_ok(&fields, &s) {
        return session::csrf_refused(Some(&s));
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let form = CreateSiteForm {
        name: get("name").trim().to_string(),
        source_kind: get("source_kind"),
        repo: get("repo"),
        branch: get("branch"),
        build_pack: get("build_pack"),
        root_dir: get("root_dir"),
        output_dir: get("output_dir"),
        previews: fields.contains_key("previews"),
        install_command: get("install_command"),
        build_command: get("build_command"),
        start_command: get("start_command"),
        port: get("port"),
        health_check_path: get("health_check_path"),
        env: get("env"),
    };
    let refill = |n: Notice, status: StatusCode| html(status, views::create_site(&s, &form, Some(&n)));
    let env_vars = match parse_env_lines(&form.env) {
        Ok(v) => v,
        Err(n) => return refill(n, StatusCode::BAD_REQUEST),
    };
    let port = match non_empty(&form.port).map(|p| p.parse::<u16>()) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            return refill(
                Notice::error("the port must be a number from 1 to 65535", Some("port")),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let upload = form.source_kind == "upload";
    if upload && archive.is_none() {
        return refill(
            Notice::error("choose a .tar.gz of the app folder to upload", Some("archive")),
            StatusCode::BAD_REQUEST,
        );
    }
    let input = CreateSiteInput {
        name: form.name.clone(),
        repo: if upload { None } else { non_empty(&form.repo) },
        branch: if form.source_kind == "git" {
            non_empty(&form.branch)
        } else {
            None
        },
        previews: (form.source_kind == "git" && form.previews).then_some(true),
        build_pack: non_empty(&form.build_pack),
        root_dir: non_empty(&form.root_dir),
        output_dir: non_empty(&form.output_dir),
        install_command: non_empty(&form.install_command),
        build_command: non_empty(&form.build_command),
        start_command: non_empty(&form.start_command),
        port,
        health_check_path: non_empty(&form.health_check_path),
        env_vars: (!env_vars.is_empty()).then_some(env_vars),
        ..Default::default()
    };
    if !upload && input.repo.is_none() {
        return refill(
            Notice::error(
                "give a git URL or a folder path, or choose “Upload .tar.gz”",
                Some("repo"),
            ),
            StatusCode::BAD_REQUEST,
        );
    }
    let created = match archive {
        Some(archive) if upload => {
            state
                .service
                .create_site_from_upload(&s.actor, input, archive, &mut |_| {})
                .await
        }
        _ => state.service.create_site(&s.actor, input, None, &mut |_| {}).await,
    };
    match created {
        Ok(CreateSiteOutput {
            site,
            deployment: Some(d),
            ..
        }) => see_other(&format!("/sites/{site}/deployments/{}", d.id)),
        Ok(out) => see_other(&format!("/sites/{}", out.site)),
        Err(e) => refill(notice_of(&e), e.status()),
    }
}

// ---------------------------------------------------------------- site pages

async fn load_site(state: &UiState, s: &Session, site: &str) -> Result<SiteDetail, Response> {
    state
        .service
        .get_site(
            &s.actor,
            &GetSiteInput {
                site: site.to_string(),
                deploy_log_lines: Some(15),
                runtime_log_lines: Some(1),
                include_env: None,
            },
        )
        .await
        .map_err(|e| error_page(Some(s), &e))
}

#[derive(Deserialize, Default)]
struct TabQuery {
    reveal: Option<bool>,
    done: Option<String>,
    /// Settings: show and edit the variables of this environment instead of the site's.
    /// Monitoring: whose traffic to show (default production).
    environment: Option<String>,
    /// Monitoring: the time range (`1h`, `24h`, `7d`, `30d`).
    range: Option<String>,
    /// Domains: the add form as it was sent, refilled after an error (never from the URL).
    #[serde(skip)]
    domain_form: Option<views::AddDomainForm>,
}

impl TabQuery {
    fn environment(environment: Option<String>) -> Self {
        Self {
            environment: environment.filter(|e| !e.is_empty()),
            ..Self::default()
        }
    }
}

/// Confirmation texts for redirects after an action (codes, so no text is reflected).
fn done_notice(code: Option<&str>) -> Option<Notice> {
    let text = match code? {
        "promoted" => "Promoted: the environment now serves that deployment.",
        "rolled-back" => "Rolled back: production serves the previous deployment.",
        "env-saved" => "Variable saved.",
        "env-deleted" => "Variable deleted.",
        "scaled" => "Scaling saved.",
        "settings-saved" => "Settings saved; they apply at the next deploy.",
        "env-created" => "Environment created; its first deployment is building.",
        "env-deleted-environment" => "Environment deleted.",
        "cancelled" => "Deployment cancelled.",
        "domain-added" => "Domain added: create the records below at your DNS host; berth checks them for you.",
        "domain-checked" => "DNS checked: the result of every record is below.",
        "domain-removed" => "Domain removed: berth no longer serves it.",
        _ => return None,
    };
    Some(Notice::ok(text))
}

/// Renders one tab of a site, with an optional notice and status (used after failed actions too).
/// A tab shown again with a service error at the top and the error's status.
async fn tab_error(state: &UiState, s: &Session, site: &str, tab: Tab, e: &ServiceError) -> Response {
    render_tab(
        state,
        s,
        site,
        tab,
        &TabQuery::default(),
        Some(notice_of(e)),
        e.status(),
    )
    .await
}

async fn render_tab(
    state: &UiState,
    s: &Session,
    site: &str,
    tab: Tab,
    q: &TabQuery,
    n: Option<Notice>,
    status: StatusCode,
) -> Response {
    let reveal = q.reveal.unwrap_or(false);
    let scope = q.environment.clone().filter(|e| !e.is_empty());
    let detail = match load_site(state, s, site).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut n = n;
    let content = match tab {
        Tab::Overview => views::overview(s, &detail),
        Tab::Deployments => {
            let input = ListDeploymentsInput {
                site: site.to_string(),
                environment: None,
                limit: Some(50),
                cursor: None,
            };
            match state.service.list_deployments(&s.actor, &input).await {
                Ok(l) => views::deployments(s, &detail, &l.deployments),
                Err(e) => return error_page(Some(s), &e),
            }
        }
        Tab::Environments => {
            let mut envs = Vec::new();
            for e in &detail.environments {
                let scaling = state
                    .service
                    .get_scaling(
                        &s.actor,
                        &ScalingRef {
                            site: site.to_string(),
                            environment: Some(e.name.clone()),
                        },
                    )
                    .await
                    .ok();
                envs.push((e.clone(), scaling));
            }
            views::environments(s, &detail, &envs, n.as_ref())
        }
        Tab::Settings => {
            let input = GetEnvVarsInput {
                site: site.to_string(),
                environment: scope.clone(),
                reveal: Some(reveal),
            };
            let (vars, revealed) = match state.service.get_env_vars(&s.actor, &input).await {
                Ok(v) => (v, reveal),
                Err(e @ ServiceError::Forbidden { .. }) => {
                    n = Some(notice_of(&e));
                    let masked = GetEnvVarsInput {
                        reveal: Some(false),
                        ..input
                    };
                    match state.service.get_env_vars(&s.actor, &masked).await {
                        Ok(v) => (v, false),
                        Err(e) => return error_page(Some(s), &e),
                    }
                }
                Err(e) => return error_page(Some(s), &e),
            };
            let scaling = state
                .service
                .get_scaling(
                    &s.actor,
                    &ScalingRef {
                        site: site.to_string(),
                        environment: None,
                    },
                )
                .await
                .ok();
            views::settings(
                s,
                &detail,
                &vars,
                revealed,
                scaling.as_ref(),
                n.as_ref(),
                scope.as_deref(),
            )
        }
        Tab::Domains => {
            let input = ListDomainsInput {
                site: Some(site.to_string()),
                limit: Some(200),
                cursor: None,
            };
            match state.service.list_domains(&s.actor, &input).await {
                Ok(l) => views::domains(
                    s,
                    &detail,
                    &l.domains,
                    &q.domain_form.clone().unwrap_or_default(),
                    n.as_ref(),
                ),
                Err(e) => return error_page(Some(s), &e),
            }
        }
        Tab::Monitoring => {
            let range = views::MonitoringRange::parse(q.range.as_deref());
            let environment = scope.clone().unwrap_or_else(|| "production".to_string());
            let traffic = load_traffic(state, s, site, &environment, range).await;
            let patterns = state
                .service
                .get_error_patterns(
                    &s.actor,
                    &ErrorPatternsInput {
                        site: site.to_string(),
                        environment: Some(environment.clone()),
                        since: Some(range.label().to_string()),
                        until: None,
                        limit: Some(20),
                    },
                )
                .await;
            let mut usage = Vec::new();
            for env in &detail.environments {
                let input = ResourceUsageInput {
                    site: site.to_string(),
                    environment: Some(env.name.clone()),
                };
                match state.service.get_resource_usage(&s.actor, &input).await {
                    Ok(u) => usage.push(u),
                    Err(e) => return error_page(Some(s), &e),
                }
            }
            views::monitoring(site, &detail, &environment, range, &traffic, &patterns, &usage)
        }
    };
    // Field errors are shown next to their field; only the rest go to the top banner.
    let top = n.filter(|n| {
        !(n.error
            && n.field.as_deref().is_some_and(|f| match tab {
                Tab::Environments | Tab::Settings => {
                    matches!(f, "env_name" | "env_branch" | "var_name" | "var_value" | "confirm")
                        || (tab == Tab::Settings && views::is_build_setting_field(f))
                }
                Tab::Domains => views::DOMAIN_FORM_FIELDS.contains(&f),
                _ => false,
            }))
    });
    html(status, views::site_shell(s, &detail, tab, top.as_ref(), content))
}

/// The Monitoring tab's traffic of one environment over a range, through the metrics
/// tools (the error of the first that fails, to show in place of the charts).
async fn load_traffic(
    state: &UiState,
    s: &Session,
    site: &str,
    environment: &str,
    range: views::MonitoringRange,
) -> Result<views::Traffic, ServiceError> {
    let since = Some(range.label().to_string());
    let window = MetricsRangeInput {
        site: site.to_string(),
        environment: Some(environment.to_string()),
        since: since.clone(),
        until: None,
    };
    let timeline = state
        .service
        .get_usage_timeline(
            &s.actor,
            &TimelineInput {
                site: site.to_string(),
                environment: Some(environment.to_string()),
                since: since.clone(),
                until: None,
                resolution: Some(range.resolution().to_string()),
            },
        )
        .await?;
    let summary = state.service.get_metrics_summary(&s.actor, &window).await?;
    let codes = state.service.get_status_codes(&s.actor, &window).await?;
    let paths = state
        .service
        .get_top_paths(
            &s.actor,
            &TopPathsInput {
                site: site.to_string(),
                environment: Some(environment.to_string()),
                since,
                until: None,
                limit: Some(10),
            },
        )
        .await?;
    Ok(views::Traffic {
        timeline,
        summary,
        codes,
        paths,
    })
}

async fn show_tab(state: UiState, s: Session, site: String, tab: Tab, q: TabQuery) -> Response {
    render_tab(
        &state,
        &s,
        &site,
        tab,
        &q,
        done_notice(q.done.as_deref()),
        StatusCode::OK,
    )
    .await
}

async fn deployment(State(state): State<UiState>, s: Session, Path((site, id)): Path<(String, String)>) -> Response {
    let detail = match load_site(&state, &s, &site).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let d = match state
        .service
        .get_deployment(&s.actor, &DeploymentRef { deployment_id: id })
        .await
    {
        Ok(d) => d,
        Err(e) => return error_page(Some(&s), &e),
    };
    let content = views::deployment_page(&detail, &d);
    html(
        StatusCode::OK,
        views::site_shell(&s, &detail, Tab::Deployments, None, content),
    )
}

/// After an action: on success a 303 to the tab with a confirmation; on failure the tab
/// again with the service's message (next to its field when it has one) and its status.
async fn after<T>(
    state: &UiState,
    s: &Session,
    site: &str,
    tab: Tab,
    result: Result<T, ServiceError>,
    done: &str,
) -> Response {
    match result {
        Ok(_) => see_other(&format!("{}?done={done}", views::tab_href(site, tab))),
        Err(e) => tab_error(state, s, site, tab, &e).await,
    }
}

async fn deploy(State(state): State<UiState>, Path(site): Path<String>, CsrfForm(s, _): CsrfForm<Empty>) -> Response {
    let input = DeployInput {
        site: site.clone(),
        ..Default::default()
    };
    match state.service.deploy(&s.actor, input, None, &mut |_| {}).await {
        Ok(out) => see_other(&format!("/sites/{site}/deployments/{}", out.deployment.id)),
        Err(e) => tab_error(&state, &s, &site, Tab::Overview, &e).await,
    }
}

async fn upload(State(state): State<UiState>, s: Session, Path(site): Path<String>, mp: Multipart) -> Response {
    let (fields, archive) = match read_multipart(mp).await {
        Ok(x) => x,
        Err(e) => {
            return tab_error(&state, &s, &site, Tab::Overview, &e).await;
        }
    };
    if !csrf_ok(&fields, &s) {
        return session::csrf_refused(Some(&s));
    }
    let Some(archive) = archive else {
        let e = ServiceError::invalid("archive", "choose a .tar.gz of the app folder to upload");
        return tab_error(&state, &s, &site, Tab::Overview, &e).await;
    };
    let request = UploadRequest {
        site: site.clone(),
        archive,
        create: false,
        wait: false,
        timeout_seconds: None,
        overrides: None,
    };
    match state.service.deploy_upload(&s.actor, request, &mut |_| {}).await {
        Ok(out) => see_other(&format!("/sites/{site}/deployments/{}", out.deployment.id)),
        Err(e) => tab_error(&state, &s, &site, Tab::Overview, &e).await,
    }
}

#[derive(Deserialize)]
struct PromoteForm {
    #[serde(default)]
    deployment_id: String,
    environment: Option<String>,
}

async fn promote(
    State(state): State<UiState>,
    Path(site): Path<String>,
    CsrfForm(s, f): CsrfForm<PromoteForm>,
) -> Response {
    let input = PromoteInput {
        site: site.clone(),
        deployment_id: f.deployment_id,
        environment: f.environment.and_then(|e| non_empty(&e)),
        idempotency_key: None,
    };
    let result = state.service.promote(&s.actor, &input).await;
    after(&state, &s, &site, Tab::Deployments, result, "promoted").await
}

async fn rollback(State(state): State<UiState>, Path(site): Path<String>, CsrfForm(s, _): CsrfForm<Empty>) -> Response {
    let input = RollbackInput {
        site: site.clone(),
        environment: None,
        idempotency_key: None,
    };
    let result = state.service.rollback(&s.actor, &input).await;
    after(&state, &s, &site, Tab::Deployments, result, "rolled-back").await
}

async fn cancel(
    State(state): State<UiState>,
    Path((site, id)): Path<(String, String)>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    let result = state
        .service
        .cancel_deployment(&s.actor, &DeploymentRef { deployment_id: id })
        .await;
    after(&state, &s, &site, Tab::Deployments, result, "cancelled").await
}

#[derive(Deserialize)]
struct EnvironmentForm {
    #[serde(default)]
    env_name: String,
    #[serde(default)]
    env_branch: String,
}

async fn create_environment(
    State(state): State<UiState>,
    Path(site): Path<String>,
    CsrfForm(s, f): CsrfForm<EnvironmentForm>,
) -> Response {
    let input = CreateEnvironmentInput {
        site: site.clone(),
        name: f.env_name.trim().to_string(),
        branch: non_empty(&f.env_branch),
        ..Default::default()
    };
    let result = state
        .service
        .create_environment(&s.actor, input, &mut |_| {})
        .await
        .map_err(|e| rename_field(e, &[("name", "env_name"), ("branch", "env_branch")]));
    after(&state, &s, &site, Tab::Environments, result, "env-created").await
}

/// Maps a service error's field onto this form's input name, so it shows next to it.
fn rename_field(e: ServiceError, map: &[(&str, &'static str)]) -> ServiceError {
    match e {
        ServiceError::Invalid { field, message } => ServiceError::Invalid {
            field: map.iter().find(|(from, _)| *from == field).map_or(field, |(_, to)| to),
            message,
        },
        other => other,
    }
}

async fn delete_environment(
    State(state): State<UiState>,
    Path((site, env)): Path<(String, String)>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    let input = EnvironmentRef {
        site: site.clone(),
        environment: env,
        idempotency_key: None,
    };
    let result = state.service.delete_environment(&s.actor, &input).await;
    after(&state, &s, &site, Tab::Environments, result, "env-deleted-environment").await
}

#[derive(Deserialize)]
struct ScaleForm {
    min_instances: Option<String>,
    max_instances: Option<String>,
    idle_timeout_seconds: Option<String>,
    target_concurrency: Option<String>,
}

fn parse_number(v: Option<&str>, field: &'static str) -> Result<Option<i64>, ServiceError> {
    match v.and_then(non_empty) {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| ServiceError::invalid(field, format!("{} must be a whole number", field.replace('_', " ")))),
    }
}

async fn scale(
    State(state): State<UiState>,
    Path((site, env)): Path<(String, String)>,
    CsrfForm(s, f): CsrfForm<ScaleForm>,
) -> Response {
    let tab = if env == "production" {
        Tab::Settings
    } else {
        Tab::Environments
    };
    let parsed = (|| {
        Ok::<_, ServiceError>(SetScalingInput {
            site: site.clone(),
            environment: Some(env.clone()),
            min_instances: parse_number(f.min_instances.as_deref(), "min_instances")?,
            max_instances: parse_number(f.max_instances.as_deref(), "max_instances")?,
            idle_timeout_seconds: parse_number(f.idle_timeout_seconds.as_deref(), "idle_timeout_seconds")?,
            target_concurrency: parse_number(f.target_concurrency.as_deref(), "target_concurrency")?,
            memory_mb: None,
            cpus: None,
            idempotency_key: None,
        })
    })();
    let result = match parsed {
        Ok(input) => {
            state
                .service
                .set_scaling(&s.actor, "HOSTING_SET_SCALING_CONFIG", &input)
                .await
        }
        Err(e) => Err(e),
    };
    after(&state, &s, &site, tab, result, "scaled").await
}

/// The settings tab's build settings form: every field is sent; an empty one clears its
/// setting back to detection.
#[derive(Deserialize)]
struct BuildSettingsForm {
    build_pack: Option<String>,
    install_command: Option<String>,
    build_command: Option<String>,
    start_command: Option<String>,
    output_dir: Option<String>,
    root_dir: Option<String>,
    port: Option<String>,
    health_check_path: Option<String>,
    drain_seconds: Option<String>,
    /// Only on git sites.
    branch: Option<String>,
    /// Set when the form showed the previews checkbox (an unchecked box sends nothing).
    previews_shown: Option<String>,
    previews: Option<String>,
}

async fn save_build_settings(
    State(state): State<UiState>,
    Path(site): Path<String>,
    CsrfForm(s, f): CsrfForm<BuildSettingsForm>,
) -> Response {
    // A field the form sent: empty clears, text sets; absent leaves it as it is.
    let text = |v: Option<String>| v.map(|v| non_empty(&v));
    let port = match text(f.port) {
        Some(Some(p)) => match p.parse::<u16>() {
            Ok(p) => Some(Some(p)),
            Err(_) => {
                let e = ServiceError::invalid("port", "the port must be a number from 1 to 65535");
                return tab_error(&state, &s, &site, Tab::Settings, &e).await;
            }
        },
        other => other.map(|_| None),
    };
    let drain_seconds = match text(f.drain_seconds) {
        Some(Some(d)) => match d.parse::<i64>() {
            Ok(d) => Some(Some(d)),
            Err(_) => {
                let e = ServiceError::invalid(
                    "drain_seconds",
                    "the drain period must be a number of seconds from 0 to 600",
                );
                return tab_error(&state, &s, &site, Tab::Settings, &e).await;
            }
        },
        other => other.map(|_| None),
    };
    let input = UpdateSiteInput {
        site: site.clone(),
        build_pack: text(f.build_pack),
        install_command: text(f.install_command),
        build_command: text(f.build_command),
        start_command: text(f.start_command),
        output_dir: text(f.output_dir),
        root_dir: text(f.root_dir),
        port,
        health_check_path: text(f.health_check_path),
        branch: text(f.branch),
        previews: f.previews_shown.map(|_| Some(f.previews.is_some())),
        drain_seconds,
        provider: None,
        idempotency_key: None,
    };
    let result = state.service.update_site(&s.actor, &input).await;
    after(&state, &s, &site, Tab::Settings, result, "settings-saved").await
}

#[derive(Deserialize)]
struct EnvVarForm {
    #[serde(default)]
    var_name: String,
    #[serde(default)]
    var_value: String,
    restart: Option<String>,
    environment: Option<String>,
}

/// After a variable change: back to the settings of the same scope.
async fn after_env_change<T>(
    state: &UiState,
    s: &Session,
    site: &str,
    environment: Option<String>,
    result: Result<T, ServiceError>,
    done: &str,
) -> Response {
    let q = TabQuery::environment(environment);
    match result {
        Ok(_) => {
            let scope = q
                .environment
                .as_deref()
                .map(|e| format!("environment={}&", session::urlencode(e)))
                .unwrap_or_default();
            see_other(&format!("/sites/{site}/settings?{scope}done={done}"))
        }
        Err(e) => render_tab(state, s, site, Tab::Settings, &q, Some(notice_of(&e)), e.status()).await,
    }
}

async fn set_env_var(
    State(state): State<UiState>,
    Path(site): Path<String>,
    CsrfForm(s, f): CsrfForm<EnvVarForm>,
) -> Response {
    let environment = f.environment.and_then(|e| non_empty(&e));
    let input = SetEnvVarsInput {
        site: site.clone(),
        environment: environment.clone(),
        vars: [(f.var_name.trim().to_string(), Some(f.var_value))].into(),
        restart: Some(f.restart.is_some()),
        idempotency_key: None,
    };
    let result = state
        .service
        .set_env_vars(&s.actor, &input)
        .await
        .map_err(|e| rename_field(e, &[("vars", "var_name"), ("env_vars", "var_name")]));
    after_env_change(&state, &s, &site, environment, result, "env-saved").await
}

#[derive(Deserialize)]
struct NameForm {
    #[serde(default)]
    name: String,
    environment: Option<String>,
}

async fn delete_env_var(
    State(state): State<UiState>,
    Path(site): Path<String>,
    CsrfForm(s, f): CsrfForm<NameForm>,
) -> Response {
    let environment = f.environment.and_then(|e| non_empty(&e));
    let input = SetEnvVarsInput {
        site: site.clone(),
        environment: environment.clone(),
        vars: [(f.name, None)].into(),
        restart: None,
        idempotency_key: None,
    };
    let result = state.service.set_env_vars(&s.actor, &input).await;
    after_env_change(&state, &s, &site, environment, result, "env-deleted").await
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    confirm: String,
}

async fn delete_site(
    State(state): State<UiState>,
    Path(site): Path<String>,
    CsrfForm(s, f): CsrfForm<ConfirmForm>,
) -> Response {
    if f.confirm.trim() != site {
        let n = Notice::error(
            format!("type the site's name, {site}, to confirm; nothing was deleted"),
            Some("confirm"),
        );
        return render_tab(
            &state,
            &s,
            &site,
            Tab::Settings,
            &TabQuery::default(),
            Some(n),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let input = SiteRef {
        site: site.clone(),
        idempotency_key: None,
    };
    match state.service.delete_site(&s.actor, &input).await {
        Ok(_) => see_other("/sites"),
        Err(e) => tab_error(&state, &s, &site, Tab::Settings, &e).await,
    }
}

// ---------------------------------------------------------------- domains

#[derive(Deserialize)]
struct DomainForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    environment: String,
    redirect_www: Option<String>,
    hsts: Option<String>,
}

async fn add_domain(
    State(state): State<UiState>,
    Path(site): Path<String>,
    CsrfForm(s, f): CsrfForm<DomainForm>,
) -> Response {
    let form = views::AddDomainForm {
        domain: f.domain.trim().to_string(),
        environment: f.environment,
        redirect_www: f.redirect_www.is_some(),
        hsts: f.hsts.is_some(),
    };
    let input = AddDomainInput {
        site: site.clone(),
        domain: form.domain.clone(),
        environment: non_empty(&form.environment),
        redirect_www: Some(form.redirect_www),
        hsts: Some(form.hsts),
        wait: None,
        timeout_seconds: None,
    };
    match state.service.add_domain(&s.actor, &input).await {
        Ok(_) => see_other(&format!("/sites/{site}/domains?done=domain-added")),
        Err(e) => {
            // Shown again as typed, with the service's message next to its field.
            let q = TabQuery {
                domain_form: Some(form),
                ..TabQuery::default()
            };
            render_tab(&state, &s, &site, Tab::Domains, &q, Some(notice_of(&e)), e.status()).await
        }
    }
}

async fn check_domain(
    State(state): State<UiState>,
    Path((site, domain)): Path<(String, String)>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    let input = ValidateDomainInput {
        site: site.clone(),
        domain,
        wait: None,
        timeout_seconds: None,
    };
    let result = state.service.validate_domain(&s.actor, &input).await;
    after(&state, &s, &site, Tab::Domains, result, "domain-checked").await
}

async fn remove_domain(
    State(state): State<UiState>,
    Path((site, domain)): Path<(String, String)>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    let input = DomainRef {
        site: site.clone(),
        domain,
    };
    let result = state.service.remove_domain(&s.actor, &input).await;
    after(&state, &s, &site, Tab::Domains, result, "domain-removed").await
}

// ---------------------------------------------------------------- providers

async fn render_providers(
    state: &UiState,
    s: &Session,
    outcome: Option<(&str, &views::ProviderOutcome)>,
    status: StatusCode,
) -> Response {
    match state.service.get_config(&s.actor, &GetConfigInput::default()).await {
        Ok(out) => html(status, views::providers(s, &out.providers, outcome)),
        Err(e) => error_page(Some(s), &e),
    }
}

#[derive(Deserialize)]
struct SavedQuery {
    saved: Option<String>,
}

async fn providers(State(state): State<UiState>, s: Session, Query(q): Query<SavedQuery>) -> Response {
    let saved = views::ProviderOutcome::Saved;
    let outcome = q.saved.as_deref().map(|p| (p, &saved));
    render_providers(&state, &s, outcome, StatusCode::OK).await
}

/// Form fields `key.<name>` set a value (an empty secret keeps the stored one);
/// `clear.<name>` removes the setting.
async fn save_provider(
    State(state): State<UiState>,
    Path(provider): Path<String>,
    CsrfForm(s, form): CsrfForm<BTreeMap<String, String>>,
) -> Response {
    let mut config = ConfigMap::new();
    for (field, value) in &form {
        if let Some(key) = field.strip_prefix("clear.") {
            config.insert(key.to_string(), serde_json::Value::Null);
        } else if let Some(key) = field.strip_prefix("key.")
            && !form.contains_key(&format!("clear.{key}"))
            && !value.is_empty()
        {
            config.insert(key.to_string(), serde_json::Value::String(value.clone()));
        }
    }
    let input = SetConfigInput {
        provider: provider.clone(),
        config,
        idempotency_key: None,
    };
    match state.service.set_config(&s.actor, &input).await {
        Ok(_) => see_other(&format!("/providers?saved={}", session::urlencode(&provider))),
        Err(e) => {
            let outcome = views::ProviderOutcome::Failed(notice_of(&e));
            render_providers(&state, &s, Some((&provider, &outcome)), e.status()).await
        }
    }
}

async fn test_provider(
    State(state): State<UiState>,
    Path(provider): Path<String>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    let input = TestConnectionInput {
        provider: provider.clone(),
    };
    match state.service.test_connection(&s.actor, &input).await {
        Ok(result) => {
            let outcome = views::ProviderOutcome::Tested(result);
            render_providers(&state, &s, Some((&provider, &outcome)), StatusCode::OK).await
        }
        Err(e) => error_page(Some(&s), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        let vars = parse_env_lines("A=1\n\n# comment\nB = two=2\r\nC=\n").unwrap();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], " two=2", "the value is kept as typed after the first '='");
        assert_eq!(vars["C"], "");
        let err = parse_env_lines("A=1\nNOPE").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("env"));
        assert!(err.message.starts_with("line 2"), "{}", err.message);
    }

    #[test]
    fn service_fields_map_onto_form_inputs() {
        let e = rename_field(ServiceError::invalid("name", "bad"), &[("name", "env_name")]);
        assert!(matches!(e, ServiceError::Invalid { field: "env_name", .. }));
        let e = rename_field(ServiceError::invalid("other", "bad"), &[("name", "env_name")]);
        assert!(matches!(e, ServiceError::Invalid { field: "other", .. }));
    }
}
