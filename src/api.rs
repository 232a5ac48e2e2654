//! The REST adapter (`/api/*`) and the HTTP authentication layer shared with `/mcp`.
//! Handlers translate HTTP into service calls and service errors into the one JSON
//! error envelope; they hold no business rules.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde::Deserialize;

use crate::auth::{Authenticator, bearer};
use crate::error::ServiceError;
use crate::model::Actor;
use crate::service::*;

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        crate::prometheus::error_answered(self.code());
        let mut resp = (self.status(), Json(self.envelope())).into_response();
        match self {
            ServiceError::Unauthorized => {
                resp.headers_mut()
                    .insert("www-authenticate", "Bearer".parse().expect("static header"));
            }
            // The rest of an oversized body was never read: the connection cannot be reused.
            ServiceError::TooLarge { .. } => {
                resp.headers_mut()
                    .insert("connection", "close".parse().expect("static header"));
            }
            ServiceError::RateLimited { retry_after } => {
                resp.headers_mut()
                    .insert("retry-after", crate::throttle::retry_after_secs(retry_after).into());
            }
            _ => {}
        }
        resp
    }
}

/// Checks `Authorization: Bearer <key>` and puts the caller's [`Actor`] in the request.
pub async fn require_key(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    let path = req.uri().path();
    let for_mcp = path == "/mcp" || path.starts_with("/mcp/");
    let Some(key) = bearer(header) else {
        if for_mcp {
            return crate::oauth::challenge(&auth, ServiceError::Unauthorized.into_response(), false);
        }
        return ServiceError::Unauthorized.into_response();
    };
    let client = client_ip(&req);
    // OAuth access tokens are for `/mcp` only: their consent is about an MCP client.
    let result = if crate::model::is_oauth_access_token(key) {
        if for_mcp {
            auth.authenticate_oauth_from(key, client).await
        } else {
            Err(ServiceError::Unauthorized)
        }
    } else {
        auth.authenticate_from(key, client).await
    };
    match result {
        Ok(actor) => {
            // An OAuth tool call lacking a scope is refused as HTTP 403 insufficient_scope.
            let small = req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n <= crate::oauth::MAX_INSPECTED_MCP_BODY);
            if for_mcp && actor.grant.is_some() && req.method() == axum::http::Method::POST && small {
                let (parts, body) = req.into_parts();
                let bytes = match axum::body::to_bytes(body, crate::oauth::MAX_INSPECTED_MCP_BODY as usize).await {
                    Ok(b) => b,
                    Err(_) => {
                        return ServiceError::invalid("body", "the request body could not be read whole")
                            .into_response();
                    }
                };
                if let Some(refused) = crate::oauth::insufficient_scope(&auth, &actor, &bytes) {
                    return refused;
                }
                req = Request::from_parts(parts, Body::from(bytes));
            }
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(e @ ServiceError::Unauthorized) if for_mcp => crate::oauth::challenge(&auth, e.into_response(), true),
        Err(e) => e.into_response(),
    }
}

/// The address a request came from (unspecified when the server was built without
/// connection info, as in-process tests may be).
pub fn client_ip<B>(req: &axum::http::Request<B>) -> std::net::IpAddr {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// `GET /internal/build-contexts/{token}`: a build context offered to a builder outside
/// berth (the kubernetes target's build Job), served once; the token is the credential,
/// so there is no other authentication. Unknown, used and expired tokens all get 404.
pub fn build_context_router(contexts: Arc<crate::runtime::build_contexts::BuildContexts>) -> Router {
    Router::new()
        .route("/internal/build-contexts/{token}", get(build_context))
        .with_state(contexts)
}

async fn build_context(
    State(contexts): State<Arc<crate::runtime::build_contexts::BuildContexts>>,
    Path(token): Path<String>,
) -> Response {
    match contexts.take(&token) {
        Some(file) => {
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            (
                [(axum::http::header::CONTENT_TYPE, "application/gzip")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such build context\n").into_response(),
    }
}

/// The `/api` routes (authentication is layered on by the server).
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/sites", get(list_sites).post(create_site))
        .route(
            "/api/sites/{site}",
            get(get_site).patch(update_site).delete(delete_site),
        )
        .route("/api/sites/{site}/deploy", post(deploy))
        .route("/api/sites/{site}/upload", post(upload))
        .route("/api/sites/{site}/deployments", get(list_deployments))
        .route(
            "/api/sites/{site}/environments",
            get(list_environments).post(create_environment),
        )
        .route(
            "/api/sites/{site}/environments/{env}",
            axum::routing::delete(delete_environment),
        )
        .route("/api/sites/{site}/environments/{env}/logs", get(environment_logs))
        .route("/api/sites/{site}/env", get(get_env_vars).patch(set_env_vars))
        .route("/api/sites/{site}/scaling", get(get_scaling).patch(set_scaling))
        .route("/api/sites/{site}/usage", get(get_resource_usage))
        .route("/api/sites/{site}/metrics/summary", get(get_metrics_summary))
        .route("/api/sites/{site}/metrics/status-codes", get(get_status_codes))
        .route("/api/sites/{site}/metrics/top-paths", get(get_top_paths))
        .route("/api/sites/{site}/metrics/timeline", get(get_usage_timeline))
        .route("/api/sites/{site}/metrics/error-patterns", get(get_error_patterns))
        .route("/api/sites/{site}/metrics/fields", get(get_metrics_fields))
        .route("/api/sites/{site}/promote", post(promote))
        .route("/api/sites/{site}/rollback", post(rollback))
        .route("/api/deployments/{id}/cancel", post(cancel_deployment))
        .route("/api/deployments/{id}", get(get_deployment))
        .route("/api/deployments/{id}/logs", get(deployment_logs))
        .route("/api/deployments/{id}/logs/stream", get(deployment_logs_stream))
        .route("/api/deployments/{id}/events/stream", get(deployment_events_stream))
        .route("/api/audit", get(audit))
        .route("/api/config", get(get_config))
        .route("/api/config/{provider}", get(get_provider_config).patch(set_config))
        .route("/api/config/{provider}/test", post(test_connection))
        .route("/api/sites/{site}/domains", get(list_domains).post(add_domain))
        .route(
            "/api/sites/{site}/domains/{domain}",
            axum::routing::delete(remove_domain),
        )
        .route("/api/sites/{site}/domains/{domain}/validate", post(validate_domain))
        .route("/api/usage", get(get_usage))
        .route("/api/resources", get(list_resources).post(create_resource))
        .route("/api/resources/{name}", get(get_resource).delete(delete_resource))
        .route("/api/repos", get(list_repos).post(create_repo))
        .route("/api/repos/{repo}/tokens", post(create_git_token))
        .route("/api/members", get(list_members).post(add_member))
        .route(
            "/api/members/{email}",
            axum::routing::patch(set_member_role).delete(remove_member),
        )
        .route("/api/invitations", get(list_invitations).post(invite_member))
        .route("/api/invitations/{id}", axum::routing::delete(revoke_invitation))
        .route("/api/keys", get(list_api_keys).post(create_api_key))
        .route("/api/keys/{id}", axum::routing::delete(revoke_api_key))
        .route("/api/connected-apps", get(list_connected_apps))
        .route("/api/connected-apps/{id}", axum::routing::delete(revoke_connected_app))
        .route("/api/agents/freeze", post(freeze_agents))
        .route("/api/orgs", post(create_org))
        .layer(axum::middleware::map_response(envelope_plain_errors))
        .with_state(service)
}

/// Errors raised before a handler runs (a query string that does not parse, a wrong
/// method) come from the framework as plain text: they get the one JSON envelope too, so
/// every `/api` error reads the same. Other headers (`Allow`, `Retry-After`) are kept.
async fn envelope_plain_errors(response: Response) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status.as_u16() {
        400 | 415 | 422 => "invalid_argument",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "too_large",
        429 => "rate_limited",
        _ if status.is_server_error() => "internal",
        _ => "error",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut enveloped = (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            enveloped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    enveloped
}

type ApiResult<T> = Result<Json<T>, ServiceError>;

async fn whoami(State(s): State<Service>, Extension(actor): Extension<Actor>) -> ApiResult<WhoAmI> {
    Ok(Json(s.whoami(&actor).await?))
}

async fn list_sites(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListSitesInput>,
) -> ApiResult<SiteList> {
    Ok(Json(s.list_sites(&actor, &q).await?))
}

async fn create_site(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<CreateSiteInput>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreateSiteOutput>), ServiceError> {
    let Json(input) = body.map_err(bad_json)?;
    Ok((
        StatusCode::CREATED,
        Json(s.create_site(&actor, input, None, &mut |_| {}).await?),
    ))
}

#[derive(Deserialize)]
struct GetSiteQuery {
    deploy_log_lines: Option<u32>,
    runtime_log_lines: Option<u32>,
    include_env: Option<bool>,
}

async fn get_site(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<GetSiteQuery>,
) -> ApiResult<SiteDetail> {
    let input = GetSiteInput {
        site,
        deploy_log_lines: q.deploy_log_lines,
        runtime_log_lines: q.runtime_log_lines,
        include_env: q.include_env,
    };
    Ok(Json(s.get_site(&actor, &input).await?))
}

async fn delete_site(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
) -> ApiResult<DeleteSiteOutput> {
    Ok(Json(
        s.delete_site(
            &actor,
            &SiteRef {
                site,
                idempotency_key: None,
            },
        )
        .await?,
    ))
}

/// `PATCH /api/sites/{site}`: `HOSTING_UPDATE_SITE` with the site from the path.
async fn update_site(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<UpdateSiteOutput> {
    let Json(mut body) = body.map_err(bad_json)?;
    let Some(fields) = body.as_object_mut() else {
        return Err(ServiceError::invalid(
            "body",
            "the body must be a JSON object of settings",
        ));
    };
    fields.insert("site".into(), serde_json::Value::String(site));
    let input: UpdateSiteInput =
        serde_json::from_value(body).map_err(|e| ServiceError::invalid("body", format!("invalid settings: {e}")))?;
    Ok(Json(s.update_site(&actor, &input).await?))
}

/// `HOSTING_DEPLOY` body without the site (it is in the path).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    branch: Option<String>,
    commit: Option<String>,
    environment: Option<String>,
    overrides: Option<BuildSettingsChange>,
    wait: Option<bool>,
    timeout_seconds: Option<u64>,
    idempotency_key: Option<String>,
    dry_run: Option<bool>,
}

/// `POST /api/sites/{site}/deploy`: 202 with the queued deployment, or with
/// `dry_run: true` 200 with the objects a release would apply.
async fn deploy(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Option<Json<DeployBody>>,
) -> Result<Response, ServiceError> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let input = DeployInput {
        site,
        branch: b.branch,
        commit: b.commit,
        environment: b.environment,
        overrides: b.overrides,
        wait: b.wait,
        timeout_seconds: b.timeout_seconds,
        idempotency_key: b.idempotency_key,
        dry_run: b.dry_run,
    };
    if input.dry_run == Some(true) {
        return Ok(Json(s.dry_run_deploy(&actor, &input).await?).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(s.deploy(&actor, input, None, &mut |_| {}).await?),
    )
        .into_response())
}

#[derive(Deserialize)]
struct UploadQuery {
    /// Create the site if it does not exist (default true).
    create: Option<bool>,
    wait: Option<bool>,
    timeout_seconds: Option<u64>,
    /// JSON of `HOSTING_DEPLOY`'s `overrides`.
    overrides: Option<String>,
}

/// `POST /api/sites/{site}/upload`: body is a tar.gz of the app folder.
async fn upload(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, Json<DeployOutput>), ServiceError> {
    let overrides = q
        .overrides
        .as_deref()
        .map(serde_json::from_str::<BuildSettingsChange>)
        .transpose()
        .map_err(|e| ServiceError::invalid("overrides", format!("overrides is not valid: {e}")))?;
    let limit = s.platform.config.max_upload_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ServiceError::TooLarge {
            message: format!(
                "the upload is over the {limit}-byte limit; leave dependencies and build output out of it (.gitignore)"
            ),
        })?;
    if bytes.is_empty() {
        return Err(ServiceError::invalid(
            "archive",
            "the request body is empty; send the app folder as a tar.gz",
        ));
    }
    let out = s
        .deploy_upload(
            &actor,
            UploadRequest {
                site,
                archive: bytes,
                create: q.create.unwrap_or(true),
                wait: q.wait.unwrap_or(false),
                timeout_seconds: q.timeout_seconds,
                overrides,
            },
            &mut |_| {},
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

#[derive(Deserialize)]
struct ListDeploymentsQuery {
    environment: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_deployments(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<ListDeploymentsQuery>,
) -> ApiResult<DeploymentList> {
    Ok(Json(
        s.list_deployments(
            &actor,
            &ListDeploymentsInput {
                site,
                environment: q.environment,
                limit: q.limit,
                cursor: q.cursor,
            },
        )
        .await?,
    ))
}

async fn get_deployment(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<DeploymentInfo> {
    Ok(Json(
        s.get_deployment(&actor, &DeploymentRef { deployment_id: id }).await?,
    ))
}

#[derive(Deserialize)]
struct LogsQuery {
    kind: Option<String>,
    cursor: Option<i64>,
    limit: Option<u32>,
}

async fn deployment_logs(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<LogPage> {
    Ok(Json(
        s.get_deployment_logs(
            &actor,
            &LogsInput {
                deployment_id: id,
                kind: q.kind,
                cursor: q.cursor,
                limit: q.limit,
            },
        )
        .await?,
    ))
}

async fn audit(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListAuditInput>,
) -> ApiResult<AuditPage> {
    Ok(Json(s.list_audit(&actor, &q).await?))
}

fn bad_json(rejection: axum::extract::rejection::JsonRejection) -> ServiceError {
    ServiceError::invalid(
        "body",
        format!("the request body is not valid: {}", rejection.body_text()),
    )
}

/// `HOSTING_LIST_ENVIRONMENTS` query without the site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListEnvironmentsQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_environments(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<ListEnvironmentsQuery>,
) -> ApiResult<EnvironmentList> {
    let input = ListEnvironmentsInput {
        site,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(s.list_environments(&actor, &input).await?))
}

/// `HOSTING_CREATE_ENVIRONMENT` body without the site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEnvironmentBody {
    name: String,
    branch: Option<String>,
    commit: Option<String>,
    wait: Option<bool>,
    timeout_seconds: Option<u64>,
    idempotency_key: Option<String>,
}

async fn create_environment(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Json<CreateEnvironmentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<EnvironmentOutput>), ServiceError> {
    let Json(b) = body.map_err(bad_json)?;
    let input = CreateEnvironmentInput {
        site,
        name: b.name,
        branch: b.branch,
        commit: b.commit,
        wait: b.wait,
        timeout_seconds: b.timeout_seconds,
        idempotency_key: b.idempotency_key,
    };
    Ok((
        StatusCode::CREATED,
        Json(s.create_environment(&actor, input, &mut |_| {}).await?),
    ))
}

async fn delete_environment(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path((site, environment)): Path<(String, String)>,
) -> ApiResult<EnvironmentList> {
    Ok(Json(
        s.delete_environment(
            &actor,
            &EnvironmentRef {
                site,
                environment,
                idempotency_key: None,
            },
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct EnvLogsQuery {
    cursor: Option<i64>,
    limit: Option<u32>,
}

async fn environment_logs(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path((site, environment)): Path<(String, String)>,
    Query(q): Query<EnvLogsQuery>,
) -> ApiResult<LogPage> {
    let input = EnvironmentLogsInput {
        site,
        environment: Some(environment),
        cursor: q.cursor,
        limit: q.limit,
    };
    Ok(Json(s.get_environment_logs(&actor, &input).await?))
}

/// `HOSTING_PROMOTE` body without the site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    deployment_id: String,
    environment: Option<String>,
    idempotency_key: Option<String>,
}

async fn promote(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Json<PromoteBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<SwitchOutput> {
    let Json(b) = body.map_err(bad_json)?;
    let input = PromoteInput {
        site,
        deployment_id: b.deployment_id,
        environment: b.environment,
        idempotency_key: b.idempotency_key,
    };
    Ok(Json(s.promote(&actor, &input).await?))
}

/// `HOSTING_ROLLBACK` body without the site.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    environment: Option<String>,
    idempotency_key: Option<String>,
}

async fn rollback(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Option<Json<RollbackBody>>,
) -> ApiResult<SwitchOutput> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    Ok(Json(
        s.rollback(
            &actor,
            &RollbackInput {
                site,
                environment: b.environment,
                idempotency_key: b.idempotency_key,
            },
        )
        .await?,
    ))
}

async fn cancel_deployment(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<DeploymentInfo> {
    Ok(Json(
        s.cancel_deployment(&actor, &DeploymentRef { deployment_id: id })
            .await?,
    ))
}

#[derive(Deserialize)]
struct EnvVarsQuery {
    environment: Option<String>,
    reveal: Option<bool>,
}

async fn get_env_vars(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<EnvVarsQuery>,
) -> ApiResult<EnvVarsOutput> {
    Ok(Json(
        s.get_env_vars(
            &actor,
            &GetEnvVarsInput {
                site,
                environment: q.environment,
                reveal: q.reveal,
            },
        )
        .await?,
    ))
}

/// `HOSTING_SET_ENV_VARS` body without the site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetEnvVarsBody {
    environment: Option<String>,
    vars: std::collections::BTreeMap<String, Option<String>>,
    restart: Option<bool>,
    idempotency_key: Option<String>,
}

async fn set_env_vars(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Json<SetEnvVarsBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<EnvVarsOutput> {
    let Json(b) = body.map_err(bad_json)?;
    let input = SetEnvVarsInput {
        site,
        environment: b.environment,
        vars: b.vars,
        restart: b.restart,
        idempotency_key: b.idempotency_key,
    };
    Ok(Json(s.set_env_vars(&actor, &input).await?))
}

/// `GET /api/deployments/{id}/logs/stream`: the same lines as `/logs`, as server-sent
/// events (`event: line`, data = one JSON line), from `cursor` on, live until the client
/// goes away. Each event's id is its cursor, so a reconnect resumes with `Last-Event-ID`.
async fn deployment_logs_stream(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
    headers: axum::http::HeaderMap,
) -> Result<
    axum::response::Sse<impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>>,
    ServiceError,
> {
    use axum::response::sse::{Event, KeepAlive};
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let first = LogsInput {
        deployment_id: id.clone(),
        kind: q.kind.clone(),
        cursor: resume.or(q.cursor),
        limit: Some(MAX_LOG_LINES),
    };
    // Checked once up front so a wrong id is a 404, not an empty stream.
    s.get_deployment_logs(
        &actor,
        &LogsInput {
            limit: Some(1),
            ..first.clone()
        },
    )
    .await?;
    let stream = futures::stream::unfold((s, actor, first), |(s, actor, mut input)| async move {
        loop {
            match s.get_deployment_logs(&actor, &input).await {
                Ok(page) if !page.lines.is_empty() => {
                    input.cursor = Some(page.next_cursor);
                    let events: Vec<Result<Event, std::convert::Infallible>> = page
                        .lines
                        .iter()
                        .map(|l| {
                            Ok(Event::default()
                                .event("line")
                                .id(l.cursor.to_string())
                                .data(serde_json::to_string(l).unwrap_or_default()))
                        })
                        .collect();
                    return Some((futures::stream::iter(events), (s, actor, input)));
                }
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
                Err(_) => return None,
            }
        }
    })
    .flatten();
    Ok(axum::response::Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct EventsQuery {
    cursor: Option<i64>,
}

/// `GET /api/deployments/{id}/events/stream`: the deployment's status changes as
/// server-sent events (`event: <kind>`, e.g. `deployment.live`; data = the event as JSON),
/// read from the events table by cursor, so changes another server on the same database
/// made come too; live until the client goes away. Each event's id is its cursor: a
/// reconnect resumes with `Last-Event-ID` (or `?cursor=`), without gaps or repeats.
async fn deployment_events_stream(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> Result<
    axum::response::Sse<impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>>,
    ServiceError,
> {
    use axum::response::sse::{Event, KeepAlive};
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let after = resume.or(q.cursor).unwrap_or(0);
    // Checked once up front so a wrong id is a 404, not an empty stream.
    s.deployment_events(&actor, &id, after, std::time::Duration::ZERO)
        .await?;
    let stream = futures::stream::unfold((s, actor, after), move |(s, actor, after)| {
        let id = id.clone();
        async move {
            loop {
                match s
                    .deployment_events(&actor, &id, after, std::time::Duration::from_secs(15))
                    .await
                {
                    Ok(events) if !events.is_empty() => {
                        let next = events.last().map_or(after, |e| e.cursor);
                        let out: Vec<Result<Event, std::convert::Infallible>> = events
                            .iter()
                            .map(|e| {
                                Ok(Event::default()
                                    .event(e.kind.clone())
                                    .id(e.cursor.to_string())
                                    .data(serde_json::to_string(e).unwrap_or_default()))
                            })
                            .collect();
                        return Some((futures::stream::iter(out), (s, actor, next)));
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        }
    })
    .flatten();
    Ok(axum::response::Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct ScalingQuery {
    environment: Option<String>,
}

async fn get_scaling(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<ScalingQuery>,
) -> ApiResult<ScalingConfig> {
    Ok(Json(
        s.get_scaling(
            &actor,
            &ScalingRef {
                site,
                environment: q.environment,
            },
        )
        .await?,
    ))
}

/// `HOSTING_SET_SCALING_CONFIG` body without the site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetScalingBody {
    environment: Option<String>,
    min_instances: Option<i64>,
    max_instances: Option<i64>,
    idle_timeout_seconds: Option<i64>,
    target_concurrency: Option<i64>,
    memory_mb: Option<i64>,
    cpus: Option<f64>,
    idempotency_key: Option<String>,
}

async fn set_scaling(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Json<SetScalingBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<ScalingConfig> {
    let Json(b) = body.map_err(bad_json)?;
    let input = SetScalingInput {
        site,
        environment: b.environment,
        min_instances: b.min_instances,
        max_instances: b.max_instances,
        idle_timeout_seconds: b.idle_timeout_seconds,
        target_concurrency: b.target_concurrency,
        memory_mb: b.memory_mb,
        cpus: b.cpus,
        idempotency_key: b.idempotency_key,
    };
    Ok(Json(s.set_scaling(&actor, "HOSTING_SET_SCALING_CONFIG", &input).await?))
}

async fn list_repos(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListReposInput>,
) -> ApiResult<RepoList> {
    Ok(Json(s.list_repos(&actor, &q).await?))
}

async fn create_repo(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<CreateRepoInput>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<RepoOutput>), ServiceError> {
    let Json(input) = body.map_err(bad_json)?;
    Ok((StatusCode::CREATED, Json(s.create_repo(&actor, &input).await?)))
}

#[derive(Deserialize, Default)]
struct GitTokenBody {
    ttl_seconds: Option<u64>,
}

async fn create_git_token(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(repo): Path<String>,
    body: Result<Json<GitTokenBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<GitTokenOutput>), ServiceError> {
    let Json(body) = body.map_err(bad_json)?;
    let input = GitTokenInput {
        repo,
        ttl_seconds: body.ttl_seconds,
    };
    Ok((StatusCode::CREATED, Json(s.get_git_token(&actor, &input).await?)))
}

async fn get_config(State(s): State<Service>, Extension(actor): Extension<Actor>) -> ApiResult<ConfigOutput> {
    Ok(Json(s.get_config(&actor, &GetConfigInput::default()).await?))
}

async fn get_provider_config(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(provider): Path<String>,
) -> ApiResult<ConfigOutput> {
    Ok(Json(
        s.get_config(
            &actor,
            &GetConfigInput {
                provider: Some(provider),
            },
        )
        .await?,
    ))
}

/// Body of `PATCH /api/config/{provider}`.
#[derive(Deserialize)]
struct SetConfigBody {
    config: ConfigMap,
    #[serde(default)]
    idempotency_key: Option<String>,
}

async fn set_config(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(provider): Path<String>,
    body: Result<Json<SetConfigBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<ProviderConfig> {
    let Json(b) = body.map_err(bad_json)?;
    let input = SetConfigInput {
        provider,
        config: b.config,
        idempotency_key: b.idempotency_key,
    };
    Ok(Json(s.set_config(&actor, &input).await?))
}

async fn test_connection(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(provider): Path<String>,
) -> ApiResult<TestConnectionOutput> {
    Ok(Json(
        s.test_connection(&actor, &TestConnectionInput { provider }).await?,
    ))
}

/// `HOSTING_GET_RESOURCE_USAGE`: `GET /api/sites/{site}/usage?environment=`.
async fn get_resource_usage(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<ScalingQuery>,
) -> ApiResult<ResourceUsageOutput> {
    Ok(Json(
        s.get_resource_usage(
            &actor,
            &ResourceUsageInput {
                site,
                environment: q.environment,
            },
        )
        .await?,
    ))
}

/// The query of every metrics route.
#[derive(Deserialize)]
struct MetricsQuery {
    environment: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    resolution: Option<String>,
    /// Refused with the reason (see [`NO_PATH_FILTER`]) rather than ignored.
    path: Option<String>,
}

impl MetricsQuery {
    /// Refuses `path`: an answer that ignored it would look filtered and be wrong.
    fn refuse_path(&self) -> Result<(), ServiceError> {
        match self.path {
            Some(_) => Err(ServiceError::invalid("path", NO_PATH_FILTER)),
            None => Ok(()),
        }
    }
}

/// `HOSTING_GET_METRICS_SUMMARY`: `GET /api/sites/{site}/metrics/summary?environment=&since=&until=`.
async fn get_metrics_summary(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<MetricsSummaryOutput> {
    q.refuse_path()?;
    let input = MetricsRangeInput {
        site,
        environment: q.environment,
        since: q.since,
        until: q.until,
    };
    Ok(Json(s.get_metrics_summary(&actor, &input).await?))
}

/// `HOSTING_GET_STATUS_CODES`: `GET /api/sites/{site}/metrics/status-codes?environment=&since=&until=`.
async fn get_status_codes(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<StatusCodesOutput> {
    q.refuse_path()?;
    let input = MetricsRangeInput {
        site,
        environment: q.environment,
        since: q.since,
        until: q.until,
    };
    Ok(Json(s.get_status_codes(&actor, &input).await?))
}

/// `HOSTING_GET_TOP_PATHS`: `GET /api/sites/{site}/metrics/top-paths?environment=&since=&until=&limit=`.
async fn get_top_paths(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<TopPathsOutput> {
    q.refuse_path()?;
    let input = TopPathsInput {
        site,
        environment: q.environment,
        since: q.since,
        until: q.until,
        limit: q.limit,
    };
    Ok(Json(s.get_top_paths(&actor, &input).await?))
}

/// `HOSTING_GET_USAGE_TIMELINE`: `GET /api/sites/{site}/metrics/timeline?environment=&since=&until=&resolution=`.
async fn get_usage_timeline(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<TimelineOutput> {
    q.refuse_path()?;
    let input = TimelineInput {
        site,
        environment: q.environment,
        since: q.since,
        until: q.until,
        resolution: q.resolution,
    };
    Ok(Json(s.get_usage_timeline(&actor, &input).await?))
}

/// `HOSTING_GET_ERROR_PATTERNS`: `GET /api/sites/{site}/metrics/error-patterns?environment=&since=&until=&limit=`.
async fn get_error_patterns(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<ErrorPatternsOutput> {
    q.refuse_path()?;
    let input = ErrorPatternsInput {
        site,
        environment: q.environment,
        since: q.since,
        until: q.until,
        limit: q.limit,
    };
    Ok(Json(s.get_error_patterns(&actor, &input).await?))
}

/// `HOSTING_GET_METRICS_FIELDS`: `GET /api/sites/{site}/metrics/fields?environment=&since=&until=`.
async fn get_metrics_fields(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<MetricsFieldsOutput> {
    q.refuse_path()?;
    let input = MetricsFieldsInput {
        site,
        environment: q.environment,
        since: q.since,
        until: q.until,
    };
    Ok(Json(s.get_metrics_fields(&actor, &input).await?))
}

#[derive(Deserialize)]
struct DomainsQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `HOSTING_LIST_DOMAINS`: `GET /api/sites/{site}/domains?limit=&cursor=`.
async fn list_domains(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    Query(q): Query<DomainsQuery>,
) -> ApiResult<DomainList> {
    let input = ListDomainsInput {
        site: Some(site),
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(s.list_domains(&actor, &input).await?))
}

/// `HOSTING_ADD_DOMAIN` body without the site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDomainBody {
    domain: String,
    environment: Option<String>,
    redirect_www: Option<bool>,
    hsts: Option<bool>,
    wait: Option<bool>,
    timeout_seconds: Option<u64>,
}

/// `HOSTING_VALIDATE_DOMAIN` body (optional) without the site and domain.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ValidateDomainBody {
    wait: Option<bool>,
    timeout_seconds: Option<u64>,
}

/// `HOSTING_ADD_DOMAIN`: `POST /api/sites/{site}/domains`.
async fn add_domain(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(site): Path<String>,
    body: Result<Json<AddDomainBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<DomainInfo>), ServiceError> {
    let Json(b) = body.map_err(bad_json)?;
    let input = AddDomainInput {
        site,
        domain: b.domain,
        environment: b.environment,
        redirect_www: b.redirect_www,
        hsts: b.hsts,
        wait: b.wait,
        timeout_seconds: b.timeout_seconds,
    };
    Ok((StatusCode::CREATED, Json(s.add_domain(&actor, &input).await?)))
}

/// `HOSTING_VALIDATE_DOMAIN`: `POST /api/sites/{site}/domains/{domain}/validate`.
async fn validate_domain(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path((site, domain)): Path<(String, String)>,
    body: Option<Json<ValidateDomainBody>>,
) -> ApiResult<DomainInfo> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let input = ValidateDomainInput {
        site,
        domain,
        wait: b.wait,
        timeout_seconds: b.timeout_seconds,
    };
    Ok(Json(s.validate_domain(&actor, &input).await?))
}

/// `HOSTING_REMOVE_DOMAIN`: `DELETE /api/sites/{site}/domains/{domain}`.
async fn remove_domain(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path((site, domain)): Path<(String, String)>,
) -> ApiResult<RemovedDomain> {
    Ok(Json(s.remove_domain(&actor, &DomainRef { site, domain }).await?))
}

/// Query of `GET /api/resources`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesQuery {
    site: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `HOSTING_GET_USAGE`: `GET /api/usage?month=&site=&limit=&cursor=`.
async fn get_usage(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Query(input): Query<UsageInput>,
) -> ApiResult<UsageOutput> {
    Ok(Json(s.get_usage(&actor, &input).await?))
}

/// `HOSTING_LIST_RESOURCES`: `GET /api/resources?site=&limit=&cursor=`.
async fn list_resources(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ResourcesQuery>,
) -> ApiResult<ResourceList> {
    let input = ListResourcesInput {
        site: q.site,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(s.list_resources(&actor, &input).await?))
}

/// `HOSTING_CREATE_RESOURCE`: `POST /api/resources`.
async fn create_resource(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<CreateResourceInput>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedResource>), ServiceError> {
    let Json(input) = input.map_err(bad_json)?;
    Ok((StatusCode::CREATED, Json(s.create_resource(&actor, &input).await?)))
}

/// `HOSTING_GET_RESOURCE`: `GET /api/resources/{name}`.
async fn get_resource(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> ApiResult<ResourceInfo> {
    Ok(Json(s.get_resource(&actor, &ResourceRef { name }).await?))
}

/// Query of `DELETE /api/resources/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteResourceQuery {
    detach: Option<bool>,
}

/// `HOSTING_DELETE_RESOURCE`: `DELETE /api/resources/{name}?detach=true`.
async fn delete_resource(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    Query(q): Query<DeleteResourceQuery>,
) -> ApiResult<DeletedResource> {
    let input = DeleteResourceInput { name, detach: q.detach };
    Ok(Json(s.delete_resource(&actor, &input).await?))
}

async fn list_members(State(s): State<Service>, Extension(actor): Extension<Actor>) -> ApiResult<MemberList> {
    Ok(Json(s.list_members(&actor).await?))
}

async fn add_member(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<AddMemberInput>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<MemberInfo>), ServiceError> {
    let Json(input) = input.map_err(bad_json)?;
    Ok((StatusCode::CREATED, Json(s.add_member(&actor, &input).await?)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

async fn set_member_role(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(email): Path<String>,
    input: Result<Json<RoleBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<MemberInfo> {
    let Json(body) = input.map_err(bad_json)?;
    let input = SetMemberRoleInput { email, role: body.role };
    Ok(Json(s.set_member_role(&actor, &input).await?))
}

async fn remove_member(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(email): Path<String>,
) -> ApiResult<MemberInfo> {
    Ok(Json(s.remove_member(&actor, &MemberRef { email }).await?))
}

/// `HOSTING_LIST_INVITATIONS`: `GET /api/invitations`.
async fn list_invitations(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListInvitationsInput>,
) -> ApiResult<InvitationList> {
    Ok(Json(s.list_invitations(&actor, &q).await?))
}

/// `HOSTING_INVITE_MEMBER`: `POST /api/invitations` (the link is in the answer, once).
async fn invite_member(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<InviteMemberInput>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedInvitation>), ServiceError> {
    let Json(input) = input.map_err(bad_json)?;
    Ok((StatusCode::CREATED, Json(s.invite_member(&actor, &input).await?)))
}

/// `HOSTING_REVOKE_INVITATION`: `DELETE /api/invitations/{id}`.
async fn revoke_invitation(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(invitation_id): Path<String>,
) -> ApiResult<InvitationInfo> {
    Ok(Json(
        s.revoke_invitation(&actor, &InvitationRef { invitation_id }).await?,
    ))
}

async fn list_api_keys(State(s): State<Service>, Extension(actor): Extension<Actor>) -> ApiResult<ApiKeyList> {
    Ok(Json(s.list_api_keys(&actor).await?))
}

async fn create_api_key(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<CreateApiKeyInput>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ServiceError> {
    let Json(input) = input.map_err(bad_json)?;
    Ok((StatusCode::CREATED, Json(s.create_api_key(&actor, &input).await?)))
}

async fn revoke_api_key(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(key_id): Path<String>,
) -> ApiResult<ApiKeyInfo> {
    Ok(Json(s.revoke_api_key(&actor, &ApiKeyRef { key_id }).await?))
}

async fn list_connected_apps(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<ConnectedAppList> {
    Ok(Json(s.list_connected_apps(&actor).await?))
}

async fn revoke_connected_app(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    Path(app_id): Path<String>,
) -> ApiResult<ConnectedApp> {
    Ok(Json(s.revoke_connected_app(&actor, &ConnectedAppRef { app_id }).await?))
}

async fn freeze_agents(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<FreezeAgentsInput>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<FreezeAgentsOutput> {
    let Json(input) = input.map_err(bad_json)?;
    Ok(Json(s.freeze_agents(&actor, &input).await?))
}

async fn create_org(
    State(s): State<Service>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<CreateOrgInput>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedOrg>), ServiceError> {
    let Json(input) = input.map_err(bad_json)?;
    Ok((StatusCode::CREATED, Json(s.create_org(&actor, &input).await?)))
}
