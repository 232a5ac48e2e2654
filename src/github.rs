//! GitHub: the `github` provider's settings (webhook secret, API URL, a personal token or
//! a GitHub App), webhook signature checks, and the few REST calls berth makes
//! (installation access tokens, commit statuses). What an event means for sites is decided
//! in `service::github`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{ServiceError, ServiceResult};
use crate::platform::Platform;
use crate::platform::providers::{ConfigKey, ConfigMap, ProviderSettings, config_str};

/// Provider name in `HOSTING_SET_CONFIG`.
pub const PROVIDER: &str = "github";
/// GitHub's REST API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Where GitHub serves repositories.
pub const DEFAULT_WEB_URL: &str = "https://github.com";

/// Checks `X-Hub-Signature-256: sha256=<hex>` against the HMAC-SHA256 of the raw body,
/// in constant time.
pub fn verify_signature(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// `X-Hub-Signature-256` checked against several secrets while the body streams in, so
/// the body is hashed as it arrives and never needs to be held before it is trusted.
pub struct StreamingSignatureCheck {
    macs: Vec<Hmac<Sha256>>,
}

impl StreamingSignatureCheck {
    /// One HMAC per candidate secret.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            macs: secrets
                .into_iter()
                .map(|s| Hmac::<Sha256>::new_from_slice(s.as_bytes()).expect("HMAC takes any key length"))
                .collect(),
        }
    }

    /// Feeds the next part of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        for mac in &mut self.macs {
            mac.update(chunk);
        }
    }

    /// The index of the secret that signed the whole body, if any (constant-time compare).
    pub fn matching(self, header: &str) -> Option<usize> {
        let signature = hex::decode(header.trim().strip_prefix("sha256=")?).ok()?;
        self.macs
            .into_iter()
            .position(|mac| mac.verify_slice(&signature).is_ok())
    }
}

/// The `X-Hub-Signature-256` value GitHub would send for a body.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How berth authenticates to GitHub's API.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A personal access token.
    Token(String),
    /// A GitHub App installation: app JWTs signed with the key buy installation tokens.
    App {
        /// App id (the JWT issuer).
        app_id: String,
        /// RSA private key (PEM).
        private_key: String,
        /// Installation id.
        installation_id: String,
    },
}

/// Opened `github` settings of one org.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    /// Webhook secret (`X-Hub-Signature-256`).
    pub webhook_secret: Option<String>,
    /// REST API base URL.
    pub api_url: String,
    /// Where repositories are cloned from (clone URLs under it get the credentials).
    pub web_url: String,
    /// API credentials, when configured.
    pub credentials: Option<Credentials>,
}

impl GitHubConfig {
    /// Parses stored settings.
    pub fn from_map(config: &ConfigMap) -> ServiceResult<Self> {
        let get = |k: &str| config_str(config, k).map(|v| v.map(str::to_string).filter(|s| !s.is_empty()));
        let credentials = match (
            get("token")?,
            get("app_id")?,
            get("private_key")?,
            get("installation_id")?,
        ) {
            (_, Some(app_id), Some(private_key), Some(installation_id)) => Some(Credentials::App {
                app_id,
                private_key,
                installation_id,
            }),
            (Some(token), None, None, None) => Some(Credentials::Token(token)),
            (_, None, None, None) => None,
            _ => {
                return Err(ServiceError::invalid(
                    "config",
                    "a GitHub App needs all of app_id, private_key and installation_id",
                ));
            }
        };
        Ok(Self {
            webhook_secret: get("webhook_secret")?,
            api_url: get("api_url")?
                .unwrap_or_else(|| DEFAULT_API_URL.into())
                .trim_end_matches('/')
                .to_string(),
            web_url: get("web_url")?
                .unwrap_or_else(|| DEFAULT_WEB_URL.into())
                .trim_end_matches('/')
                .to_string(),
            credentials,
        })
    }
}

/// Claims of a GitHub App JWT.
#[derive(Serialize, Deserialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

/// A GitHub App JWT (RS256, valid 9 minutes, backdated 60 s for clock drift as GitHub advises).
pub fn app_jwt(app_id: &str, private_key_pem: &str) -> anyhow::Result<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = AppClaims {
        iat: now - 60,
        exp: now + 540,
        iss: app_id.to_string(),
    };
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the GitHub App private key is not an RSA PEM key: {e}"))?;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|e| anyhow::anyhow!("signing the GitHub App JWT: {e}"))
}

/// Installation tokens last an hour; reuse one until 5 minutes before that.
const INSTALLATION_TOKEN_REUSE: Duration = Duration::from_secs(55 * 60);

/// A client of GitHub's REST API for one org's settings.
pub struct GitHubClient {
    http: reqwest::Client,
    config: GitHubConfig,
}

/// Installation tokens already bought: (api url, installation id) → token.
static INSTALLATION_TOKENS: Mutex<Vec<(String, String, String, Instant)>> = Mutex::new(Vec::new());

impl GitHubClient {
    /// A client over opened settings.
    pub fn new(config: GitHubConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .user_agent("berth")
            .build()?;
        Ok(Self { http, config })
    }

    /// The token API calls use: the personal token, or an installation token.
    pub async fn access_token(&self) -> ServiceResult<String> {
        match &self.config.credentials {
            None => Err(ServiceError::invalid(
                "config",
                "no GitHub credentials: HOSTING_SET_CONFIG {provider: \"github\", config: {token}} or {app_id, private_key, installation_id}",
            )),
            Some(Credentials::Token(token)) => Ok(token.clone()),
            Some(Credentials::App {
                app_id,
                private_key,
                installation_id,
            }) => {
                let api = &self.config.api_url;
                if let Some(token) = INSTALLATION_TOKENS
                    .lock()
                    .expect("token cache lock")
                    .iter()
                    .find(|(a, i, _, at)| a == api && i == installation_id && at.elapsed() < INSTALLATION_TOKEN_REUSE)
                    .map(|(_, _, t, _)| t.clone())
                {
                    return Ok(token);
                }
                let jwt = app_jwt(app_id, private_key).map_err(|e| ServiceError::invalid("config", e.to_string()))?;
                let resp = self
                    .http
                    .post(format!("{api}/app/installations/{installation_id}/access_tokens"))
                    .bearer_auth(jwt)
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28")
                    .send()
                    .await
                    .map_err(|e| ServiceError::conflict(format!("cannot reach GitHub at {api}: {e}")))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(ServiceError::conflict(format!(
                        "GitHub refused an installation token ({status}); check app_id, private_key and installation_id"
                    )));
                }
                #[derive(Deserialize)]
                struct TokenResponse {
                    token: String,
                }
                let body: TokenResponse = resp
                    .json()
                    .await
                    .map_err(|e| ServiceError::conflict(format!("unexpected answer from GitHub: {e}")))?;
                let mut cache = INSTALLATION_TOKENS.lock().expect("token cache lock");
                cache.retain(|(a, i, _, at)| {
                    !(a == api && i == installation_id) && at.elapsed() < INSTALLATION_TOKEN_REUSE
                });
                cache.push((api.clone(), installation_id.clone(), body.token.clone(), Instant::now()));
                Ok(body.token)
            }
        }
    }

    /// `POST /repos/{owner}/{repo}/statuses/{sha}`.
    pub async fn create_status(&self, status: &CommitStatus) -> ServiceResult<()> {
        let token = self.access_token().await?;
        let url = format!(
            "{}/repos/{}/statuses/{}",
            self.config.api_url, status.full_name, status.sha
        );
        let resp = self
            .http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(&serde_json::json!({
                "state": status.state,
                "target_url": status.target_url,
                "description": status.description,
                "context": status.context,
            }))
            .send()
            .await
            .map_err(|e| ServiceError::conflict(format!("cannot reach GitHub: {e}")))?;
        if !resp.status().is_success() {
            return Err(ServiceError::conflict(format!(
                "GitHub refused the commit status ({})",
                resp.status()
            )));
        }
        Ok(())
    }

    /// Checks the credentials: an installation token for an app, `GET /user` for a token.
    pub async fn check(&self) -> ServiceResult<String> {
        match &self.config.credentials {
            Some(Credentials::App { installation_id, .. }) => {
                self.access_token().await?;
                Ok(format!(
                    "GitHub App installation {installation_id} issued an access token"
                ))
            }
            Some(Credentials::Token(token)) => {
                let resp = self
                    .http
                    .get(format!("{}/user", self.config.api_url))
                    .bearer_auth(token)
                    .header("accept", "application/vnd.github+json")
                    .send()
                    .await
                    .map_err(|e| ServiceError::conflict(format!("cannot reach GitHub: {e}")))?;
                if !resp.status().is_success() {
                    return Err(ServiceError::conflict(format!(
                        "GitHub refused the token ({}); create a new one with repo:status scope",
                        resp.status()
                    )));
                }
                let login = resp
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["login"].as_str().map(str::to_string))
                    .unwrap_or_default();
                Ok(format!("the token works (user {login})"))
            }
            None => self.access_token().await.map(|_| String::new()),
        }
    }
}

/// One commit status to post.
#[derive(Clone, Debug)]
pub struct CommitStatus {
    /// `owner/repo`.
    pub full_name: String,
    /// Commit.
    pub sha: String,
    /// pending, success, failure or error.
    pub state: &'static str,
    /// The deployment's URL.
    pub target_url: String,
    /// One line.
    pub description: String,
    /// Which check (`berth/<site>/<environment>`).
    pub context: String,
}

/// The `github` entry of the provider settings registry.
pub struct GitHubSettings;

#[async_trait::async_trait]
impl ProviderSettings for GitHubSettings {
    fn name(&self) -> &'static str {
        PROVIDER
    }
    fn summary(&self) -> &'static str {
        "Push to deploy from GitHub: signed webhooks at /hooks/github (push, pull_request), commit statuses, private repositories through a GitHub App or a personal token."
    }
    fn keys(&self) -> &'static [ConfigKey] {
        &[
            ConfigKey {
                name: "webhook_secret",
                secret: true,
                description: "Secret of the repository or app webhook (X-Hub-Signature-256); required for /hooks/github.",
            },
            ConfigKey {
                name: "api_url",
                secret: false,
                description: "REST API base URL (default https://api.github.com; GitHub Enterprise: https://HOST/api/v3).",
            },
            ConfigKey {
                name: "web_url",
                secret: false,
                description: "Where repositories are cloned from (default https://github.com); private ones under it are fetched with the app's or token's credentials.",
            },
            ConfigKey {
                name: "token",
                secret: true,
                description: "A personal access token (repo:status, contents:read), instead of an app.",
            },
            ConfigKey {
                name: "app_id",
                secret: false,
                description: "GitHub App id (with private_key and installation_id).",
            },
            ConfigKey {
                name: "private_key",
                secret: true,
                description: "GitHub App private key, PEM.",
            },
            ConfigKey {
                name: "installation_id",
                secret: false,
                description: "GitHub App installation id on the account that owns the repositories.",
            },
        ]
    }
    fn validate(&self, config: &ConfigMap) -> ServiceResult<()> {
        let parsed = GitHubConfig::from_map(config)?;
        for (key, url) in [("api_url", &parsed.api_url), ("web_url", &parsed.web_url)] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ServiceError::invalid("config", format!("{key} must be an http(s) URL")));
            }
        }
        if let Some(secret) = &parsed.webhook_secret
            && secret.len() < 8
        {
            return Err(ServiceError::invalid(
                "config",
                "webhook_secret must be at least 8 characters; use a long random string",
            ));
        }
        if let Some(Credentials::App { private_key, .. }) = &parsed.credentials
            && jsonwebtoken::EncodingKey::from_rsa_pem(private_key.as_bytes()).is_err()
        {
            return Err(ServiceError::invalid(
                "config",
                "private_key is not an RSA private key in PEM form (the .pem file GitHub gives for the app)",
            ));
        }
        Ok(())
    }
    async fn test_connection(&self, _platform: &Platform, config: &ConfigMap) -> ServiceResult<String> {
        let parsed = GitHubConfig::from_map(config)?;
        let client = GitHubClient::new(parsed).map_err(ServiceError::Internal)?;
        client.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // The example from GitHub's "Validating webhook deliveries" page.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(
            "It's a Secret to Everybody",
            b"Hello, World!",
            Some(sig)
        ));
        assert_eq!(sign("It's a Secret to Everybody", b"Hello, World!"), sig);
        assert!(!verify_signature("other secret", b"Hello, World!", Some(sig)));
        assert!(!verify_signature(
            "It's a Secret to Everybody",
            b"Hello, World?",
            Some(sig)
        ));
        assert!(!verify_signature("It's a Secret to Everybody", b"Hello, World!", None));
        let mut check = StreamingSignatureCheck::new(["other", "It's a Secret to Everybody"]);
        check.update(b"Hello, ");
        check.update(b"World!");
        assert_eq!(check.matching(sig), Some(1));
        let mut check = StreamingSignatureCheck::new(["other"]);
        check.update(b"Hello, World!");
        assert_eq!(check.matching(sig), None);
        assert!(!verify_signature(
            "It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha1=abc")
        ));
        assert!(!verify_signature(
            "It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha256=zz")
        ));
    }

    #[test]
    fn app_settings_come_whole() {
        let mut m = ConfigMap::new();
        m.insert("app_id".into(), "1".into());
        assert!(GitHubConfig::from_map(&m).is_err());
        m.clear();
        m.insert("token".into(), "ghp_x".into());
        let c = GitHubConfig::from_map(&m).unwrap();
        assert!(matches!(c.credentials, Some(Credentials::Token(_))));
        assert_eq!(c.api_url, DEFAULT_API_URL);
    }
}
