//! GitHub webhooks, the service side: which org a signed delivery belongs to (the org
//! whose `webhook_secret` verifies it), deduplication by delivery id, and what `push` and
//! `pull_request` events mean for the org's sites. Deployments started here report back
//! to GitHub as commit statuses.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::github::{CommitStatus, GitHubClient, GitHubConfig, PROVIDER};
use crate::model::{Actor, DeploymentStatus};
use crate::store::SiteRow;

use super::git::{PushOutcome, is_zero_sha, push_key};
use super::*;

/// The headers of a webhook delivery berth reads.
#[derive(Debug, Default)]
pub struct WebhookHeaders {
    /// `X-GitHub-Event`.
    pub event: Option<String>,
    /// `X-GitHub-Delivery`.
    pub delivery: Option<String>,
    /// `X-Hub-Signature-256`.
    pub signature: Option<String>,
}

/// What the webhook endpoint answers.
#[derive(Debug)]
pub struct WebhookResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Value,
}

fn reply(status: StatusCode, body: Value) -> WebhookResponse {
    WebhookResponse { status, body }
}

/// Largest delivery accepted: GitHub caps webhook payloads at 25 MB.
pub const MAX_WEBHOOK_BYTES: u64 = 25 * 1024 * 1024;

/// How long a delivery's body may take to arrive once it has a slot.
const WEBHOOK_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a delivery waits for an intake slot.
const WEBHOOK_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn too_large() -> WebhookResponse {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "webhook body over 25 MB, GitHub's own cap",
    )
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> WebhookResponse {
    reply(status, json!({ "error": { "code": code, "message": message.into() } }))
}

/// Deployments whose statuses are being reported (one reporter per deployment).
static REPORTING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// A repository URL reduced to `host/owner/repo` (or a path), so a site's `https://…git`
/// matches a payload's `clone_url`, `html_url`, `git_url` or `ssh_url`.
pub fn normalize_repo_url(url: &str) -> String {
    let mut u = url.trim().to_ascii_lowercase();
    if let Some((_, rest)) = u.split_once("://") {
        u = rest.to_string();
    } else if let Some((user_host, path)) = u.split_once(':') {
        // scp-like `git@github.com:owner/repo.git`
        u = format!("{user_host}/{path}");
    }
    if let Some((before, after)) = u.split_once('@')
        && !before.contains('/')
    {
        u = after.to_string();
    }
    let u = u.trim_end_matches('/');
    u.strip_suffix(".git").unwrap_or(u).to_string()
}

impl Service {
    /// `POST /hooks/github`, as the body arrives. Nothing is read before the delivery can
    /// be authentic (a signature header, an org with a webhook secret, a declared length
    /// within GitHub's cap); the body is then hashed as it streams into an unlinked spool
    /// file, a few at a time, and only a body whose signature matches is read into memory.
    /// So unauthenticated requests cost berth a bounded amount of memory whatever they send.
    pub async fn github_webhook<S, E>(
        &self,
        headers: &WebhookHeaders,
        content_length: Option<u64>,
        body: S,
    ) -> WebhookResponse
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

        let Some(signature) = headers.signature.as_deref() else {
            tracing::info!(delivery = ?headers.delivery, "github webhook refused: unsigned");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unsigned delivery: set the webhook's secret on GitHub and the same webhook_secret with HOSTING_SET_CONFIG {provider: \"github\"}",
            );
        };
        if content_length.is_some_and(|n| n > MAX_WEBHOOK_BYTES) {
            return too_large();
        }
        let signers = match self.webhook_signers().await {
            Ok(signers) if signers.is_empty() => {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no org has a GitHub webhook_secret; set one with HOSTING_SET_CONFIG {provider: \"github\"}",
                );
            }
            Ok(signers) => signers,
            Err(err) => return internal(err),
        };
        // A delivery waits a little for a slot (its body stays in the kernel's socket
        // buffers meanwhile), then is turned away for GitHub to redeliver.
        let slot = tokio::time::timeout(WEBHOOK_SLOT_WAIT, self.platform.webhook_intake.acquire()).await;
        let Ok(Ok(_permit)) = slot else {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many webhook deliveries are arriving at once; GitHub can redeliver this one",
            );
        };
        let mut check = crate::github::StreamingSignatureCheck::new(
            signers.iter().filter_map(|(_, c)| c.webhook_secret.as_deref()),
        );
        let spool = async {
            let path = self
                .platform
                .config
                .uploads_dir()
                .join(format!("webhook-{}.spool", crate::util::random_hex(8)));
            let file = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .await?;
            // Unlinked at once: the spool leaves nothing behind, whatever happens next.
            tokio::fs::remove_file(&path).await?;
            std::io::Result::Ok(file)
        };
        let mut spool = match spool.await {
            Ok(file) => file,
            Err(err) => return internal(err.into()),
        };
        let mut received: u64 = 0;
        let mut body = body;
        // A slot is not held by a sender that trickles: the whole body has a deadline.
        let deadline = tokio::time::Instant::now() + WEBHOOK_READ_TIMEOUT;
        loop {
            let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(err))) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "invalid_argument",
                        format!("reading the delivery failed: {err}"),
                    );
                }
                Err(_) => {
                    return refuse(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        format!("the delivery's body did not arrive within {WEBHOOK_READ_TIMEOUT:?}"),
                    );
                }
            };
            received += chunk.len() as u64;
            if received > MAX_WEBHOOK_BYTES {
                return too_large();
            }
            check.update(&chunk);
            if let Err(err) = spool.write_all(&chunk).await {
                return internal(err.into());
            }
        }
        let Some(index) = check.matching(signature) else {
            tracing::info!(delivery = ?headers.delivery, "github webhook refused: mis-signed");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "X-Hub-Signature-256 does not match the configured webhook_secret",
            );
        };
        let mut bytes = Vec::with_capacity(usize::try_from(received).unwrap_or_default());
        let read = async {
            spool.seek(std::io::SeekFrom::Start(0)).await?;
            spool.read_to_end(&mut bytes).await
        };
        if let Err(err) = read.await {
            return internal(err.into());
        }
        let (org_id, config) = signers.into_iter().nth(index).expect("index of a signer");
        self.signed_github_delivery(headers, org_id, config, &bytes).await
    }

    /// A delivery whose signature `org_id`'s webhook secret verified.
    async fn signed_github_delivery(
        &self,
        headers: &WebhookHeaders,
        org_id: String,
        config: GitHubConfig,
        body: &[u8],
    ) -> WebhookResponse {
        let store = &self.platform.store;
        let (Some(event), Some(delivery)) = (&headers.event, &headers.delivery) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "X-GitHub-Event and X-GitHub-Delivery headers are required",
            );
        };
        let payload: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "the body is not a JSON object; set the webhook's content type to application/json",
                );
            }
        };
        match store.record_delivery(PROVIDER, delivery, event).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(delivery = %delivery, "github delivery seen before; ignored");
                return reply(StatusCode::OK, json!({ "duplicate": true, "delivery": delivery }));
            }
            Err(err) => return internal(err.into()),
        }
        let actor = match store.get_org(&org_id).await {
            Ok(Some(org)) => Actor::system(org.id, org.name, format!("github:{delivery}"), "github webhook"),
            Ok(None) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "the org is gone"),
            Err(err) => return internal(err.into()),
        };
        let result = match event.as_str() {
            "ping" => Ok(reply(StatusCode::OK, json!({ "ok": true }))),
            "push" => self.github_push(&actor, &config, &payload).await,
            "pull_request" => self.github_pull_request(&actor, &config, &payload).await,
            other => Ok(reply(
                StatusCode::ACCEPTED,
                json!({ "ignored": format!("berth does not act on '{other}' events") }),
            )),
        };
        match result {
            Ok(resp) => resp,
            Err(err) => {
                // Let GitHub's redelivery try again.
                let _ = store.forget_delivery(PROVIDER, delivery).await;
                let status = err.status();
                reply(status, serde_json::to_value(err.envelope()).unwrap_or_default())
            }
        }
    }

    /// The orgs that can sign a delivery: each org whose GitHub settings hold a webhook
    /// secret, with those settings.
    async fn webhook_signers(&self) -> anyhow::Result<Vec<(String, GitHubConfig)>> {
        let mut signers = Vec::new();
        for org_id in self.platform.store.orgs_with_provider(PROVIDER).await? {
            let map = self.platform.provider_config(&org_id, PROVIDER).await?;
            if let Ok(config) = GitHubConfig::from_map(&map)
                && config.webhook_secret.is_some()
            {
                signers.push((org_id, config));
            }
        }
        Ok(signers)
    }

    async fn github_push(&self, actor: &Actor, config: &GitHubConfig, p: &Value) -> ServiceResult<WebhookResponse> {
        let full_name = p["repository"]["full_name"].as_str().unwrap_or_default().to_string();
        let Some(branch) = p["ref"].as_str().and_then(|r| r.strip_prefix("refs/heads/")) else {
            return Ok(reply(
                StatusCode::ACCEPTED,
                json!({ "queued": [], "messages": ["not a branch push (tags are not deployed)"] }),
            ));
        };
        let after = p["after"].as_str().unwrap_or_default();
        let deleted = p["deleted"].as_bool().unwrap_or(false) || is_zero_sha(after);
        if !deleted && !is_sha(after) {
            return Err(ServiceError::invalid(
                "after",
                "push payload without a commit SHA in 'after'",
            ));
        }
        let sites = self.sites_of_repository(actor, &p["repository"]).await?;
        if sites.is_empty() {
            tracing::info!(repository = %full_name, "github push for a repository no site deploys from; nothing queued");
            return Ok(unknown_repository(&full_name));
        }
        let default_branch = p["repository"]["default_branch"].as_str().unwrap_or("main");
        let mut outcomes = Vec::new();
        for site in &sites {
            let new = (!deleted).then_some(after);
            outcomes.extend(self.apply_branch_update(actor, site, branch, new, default_branch).await);
        }
        self.report_statuses(actor, config, &full_name, &outcomes);
        Ok(accepted(&outcomes))
    }

    async fn github_pull_request(
        &self,
        actor: &Actor,
        config: &GitHubConfig,
        p: &Value,
    ) -> ServiceResult<WebhookResponse> {
        let full_name = p["repository"]["full_name"].as_str().unwrap_or_default().to_string();
        let action = p["action"].as_str().unwrap_or_default();
        let Some(number) = p["number"].as_u64().or_else(|| p["pull_request"]["number"].as_u64()) else {
            return Err(ServiceError::invalid("number", "pull_request payload without a number"));
        };
        let head = &p["pull_request"]["head"];
        let sha = head["sha"].as_str().unwrap_or_default();
        let from_fork = head["repo"]["full_name"].as_str() != Some(full_name.as_str());
        let head_ref = head["ref"].as_str().filter(|_| !from_fork);
        if !matches!(action, "opened" | "synchronize" | "reopened" | "closed") {
            return Ok(reply(
                StatusCode::ACCEPTED,
                json!({ "queued": [], "messages": [format!("pull_request '{action}' needs nothing")] }),
            ));
        }
        if action != "closed" && !is_sha(sha) {
            return Err(ServiceError::invalid(
                "pull_request",
                "pull_request payload without a head SHA",
            ));
        }
        let sites = self.sites_of_repository(actor, &p["repository"]).await?;
        if sites.is_empty() {
            tracing::info!(repository = %full_name, "github pull_request for a repository no site deploys from; nothing queued");
            return Ok(unknown_repository(&full_name));
        }
        let env_name = format!("pr-{number}");
        let mut outcomes = Vec::new();
        for site in &sites {
            let outcome = self
                .pull_request_preview(actor, site, &env_name, action, sha, head_ref)
                .await
                .unwrap_or_else(|err| PushOutcome {
                    site: site.name.clone(),
                    environment: env_name.clone(),
                    deployment: None,
                    message: format!("site '{}': {err}", site.name),
                });
            outcomes.push(outcome);
        }
        self.report_statuses(actor, config, &full_name, &outcomes);
        Ok(accepted(&outcomes))
    }

    async fn pull_request_preview(
        &self,
        actor: &Actor,
        site: &SiteRow,
        env_name: &str,
        action: &str,
        sha: &str,
        head_ref: Option<&str>,
    ) -> ServiceResult<PushOutcome> {
        let store = &self.platform.store;
        let outcome = |message: String, deployment: Option<DeploymentInfo>| PushOutcome {
            site: site.name.clone(),
            environment: env_name.to_string(),
            deployment,
            message,
        };
        if !bool::from(site.previews_enabled) {
            return Ok(outcome(
                format!("site '{}' has previews off; nothing deployed", site.name),
                None,
            ));
        }
        let existing = store.get_environment(&site.id, env_name).await?;
        if action == "closed" {
            if existing.is_some() {
                let input = EnvironmentRef {
                    site: site.name.clone(),
                    environment: env_name.to_string(),
                    idempotency_key: None,
                };
                self.delete_environment(actor, &input).await?;
                return Ok(outcome(format!("preview '{env_name}' removed"), None));
            }
            return Ok(outcome(format!("no preview '{env_name}' to remove"), None));
        }
        let key = push_key(&site.id, env_name, sha);
        let deployment = if existing.is_some() {
            let input = DeployInput {
                site: site.name.clone(),
                commit: Some(sha.to_string()),
                environment: Some(env_name.to_string()),
                idempotency_key: Some(key),
                ..Default::default()
            };
            Some(self.deploy(actor, input, None, &mut |_| {}).await?.deployment)
        } else {
            let input = CreateEnvironmentInput {
                site: site.name.clone(),
                name: env_name.to_string(),
                branch: head_ref.map(str::to_string),
                commit: Some(sha.to_string()),
                idempotency_key: Some(key),
                ..Default::default()
            };
            self.create_environment(actor, input, &mut |_| {}).await?.deployment
        };
        let message = match &deployment {
            Some(d) => format!(
                "site '{}': deploying {sha} to {env_name} as {} → {}",
                site.name, d.id, d.url
            ),
            None => format!("site '{}': preview '{env_name}' created", site.name),
        };
        Ok(outcome(message, deployment))
    }

    /// Sites of the org that deploy from the payload's repository (any of its URLs).
    async fn sites_of_repository(&self, actor: &Actor, repository: &Value) -> ServiceResult<Vec<SiteRow>> {
        let urls: Vec<String> = ["clone_url", "html_url", "git_url", "ssh_url", "svn_url", "url"]
            .iter()
            .filter_map(|k| repository[*k].as_str())
            .map(normalize_repo_url)
            .collect();
        if urls.is_empty() {
            return Err(ServiceError::invalid("repository", "payload without repository URLs"));
        }
        let sites = self.platform.store.git_sites(&actor.org_id).await?;
        Ok(sites
            .into_iter()
            .filter(|s| {
                s.source
                    .as_deref()
                    .is_some_and(|src| urls.contains(&normalize_repo_url(src)))
            })
            .collect())
    }

    /// Posts `pending` for each deployment started, then its final state once it has one.
    fn report_statuses(&self, actor: &Actor, config: &GitHubConfig, full_name: &str, outcomes: &[PushOutcome]) {
        if config.credentials.is_none() || full_name.is_empty() {
            return;
        }
        for outcome in outcomes {
            let Some(d) = &outcome.deployment else { continue };
            let Some(sha) = d.commit.clone() else { continue };
            {
                let mut reporting = REPORTING.lock().expect("reporting lock");
                if !reporting.get_or_insert_with(HashSet::new).insert(d.id.clone()) {
                    continue;
                }
            }
            let (service, actor, config) = (self.clone(), actor.clone(), config.clone());
            let (id, site, env) = (d.id.clone(), outcome.site.clone(), outcome.environment.clone());
            let full_name = full_name.to_string();
            tokio::spawn(async move {
                let status = |state: &'static str, description: String, target_url: String| CommitStatus {
                    full_name: full_name.clone(),
                    sha: sha.clone(),
                    state,
                    target_url,
                    description,
                    context: format!("berth/{site}/{env}"),
                };
                let post = |s: CommitStatus| {
                    let config = config.clone();
                    async move {
                        match GitHubClient::new(config) {
                            Ok(client) => {
                                if let Err(err) = client.create_status(&s).await {
                                    tracing::warn!(repository = %s.full_name, error = %err, "posting a commit status failed");
                                }
                            }
                            Err(err) => tracing::warn!(error = %err, "building the GitHub client failed"),
                        }
                    }
                };
                let url = service
                    .get_deployment(
                        &actor,
                        &DeploymentRef {
                            deployment_id: id.clone(),
                        },
                    )
                    .await
                    .map(|d| d.url)
                    .unwrap_or_default();
                post(status("pending", format!("berth is deploying {id}"), url.clone())).await;
                let final_state = service.wait_for(&actor, &id, Some(1800), &mut |_| {}).await;
                let (state, description) = match final_state {
                    Ok(d) if matches!(d.status, DeploymentStatus::Live | DeploymentStatus::Superseded) => {
                        ("success", format!("{id} is live"))
                    }
                    Ok(d) if d.status == DeploymentStatus::Failed => (
                        "failure",
                        format!("{id} failed: {}", d.error.unwrap_or_default())
                            .chars()
                            .take(140)
                            .collect(),
                    ),
                    Ok(d) if d.status == DeploymentStatus::Cancelled => ("error", format!("{id} was cancelled")),
                    Ok(_) => ("error", format!("{id} did not finish in time")),
                    Err(err) => ("error", format!("{err}").chars().take(140).collect()),
                };
                post(status(state, description, url)).await;
                if let Some(set) = REPORTING.lock().expect("reporting lock").as_mut() {
                    set.remove(&id);
                }
            });
        }
    }
}

impl Platform {
    /// Credentials for fetching `url` when it is a repository under the org's GitHub
    /// `web_url` and the org has GitHub credentials: an installation (or personal) token
    /// as HTTP basic auth, the way GitHub documents git access with app tokens.
    pub async fn git_auth_for(&self, org_id: &str, url: &str) -> Option<crate::source::GitAuth> {
        let map = self.provider_config(org_id, PROVIDER).await.ok()?;
        if map.is_empty() {
            return None;
        }
        let config = GitHubConfig::from_map(&map).ok()?;
        config.credentials.as_ref()?;
        let web = normalize_repo_url(&config.web_url);
        if !normalize_repo_url(url).starts_with(&format!("{web}/")) {
            return None;
        }
        let client = GitHubClient::new(config).ok()?;
        match client.access_token().await {
            Ok(token) => {
                use base64::Engine;
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
                Some(crate::source::GitAuth {
                    header: format!("Authorization: Basic {basic}"),
                })
            }
            Err(err) => {
                tracing::warn!(error = %err, "no GitHub token for a clone; trying without");
                None
            }
        }
    }
}

fn is_sha(s: &str) -> bool {
    (40..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unknown_repository(full_name: &str) -> WebhookResponse {
    reply(
        StatusCode::ACCEPTED,
        json!({
            "queued": [],
            "messages": [format!("no site deploys from '{full_name}'; create one with HOSTING_CREATE_SITE {{\"repo\": <its clone URL>}}")],
        }),
    )
}

fn accepted(outcomes: &[PushOutcome]) -> WebhookResponse {
    let queued: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.deployment.as_ref().map(|d| d.id.as_str()))
        .collect();
    let messages: Vec<&str> = outcomes.iter().map(|o| o.message.as_str()).collect();
    reply(StatusCode::ACCEPTED, json!({ "queued": queued, "messages": messages }))
}

fn internal(err: anyhow::Error) -> WebhookResponse {
    let envelope = ServiceError::Internal(err).envelope();
    reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::to_value(envelope).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_normalize_alike() {
        let want = "github.com/octo/web";
        for u in [
            "https://github.com/octo/web.git",
            "https://github.com/Octo/Web",
            "git://github.com/octo/web.git",
            "git@github.com:octo/web.git",
            "ssh://git@github.com/octo/web.git",
            "https://github.com/octo/web/",
        ] {
            assert_eq!(normalize_repo_url(u), want, "{u}");
        }
        assert_eq!(normalize_repo_url("file:///srv/r.git"), "/srv/r");
        assert_ne!(normalize_repo_url("https://github.com/octo/web2"), want);
    }
}
