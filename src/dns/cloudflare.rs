//! Cloudflare as DNS provider: the `cloudflare` provider's settings (API token, zone,
//! API URL, mode) and the API v4 calls behind [`DnsProvider`] — token verify, zones by
//! name, DNS records (marked with [`MANAGED_COMMENT`]) and custom hostnames (Cloudflare for
//! SaaS). Cloudflare's envelope (`success`, `errors`, `result`, `result_info`) becomes a
//! [`DnsError`] that names the fix; a 429 is retried a bounded number of times after the
//! wait its `Retry-After` / `Ratelimit` headers ask for; every call has a timeout and a
//! bounded response. The token goes only into the `Authorization` header: never into an
//! error, a log line or `Debug` output.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    CustomHostname, DnsError, DnsProvider, MANAGED_COMMENT, ProviderRecord, RecordSpec, VerificationRecord, Zone,
};
use crate::error::{ServiceError, ServiceResult};
use crate::platform::Platform;
use crate::platform::providers::{ConfigKey, ConfigMap, ProviderSettings, config_str};

/// Provider name in `HOSTING_SET_CONFIG`.
pub const PROVIDER: &str = "cloudflare";
/// Cloudflare's API v4.
pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";
/// What a refused token error says (the permission berth needs, and where to set it).
pub const TOKEN_REFUSED: &str = "the Cloudflare API token was refused; create one with Zone:DNS:Edit on the zone (Cloudflare dashboard → My Profile → API Tokens) and set it with HOSTING_SET_CONFIG {\"provider\": \"cloudflare\", \"config\": {\"api_token\": \"…\"}}";

/// Longest wait for one call.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a rate-limited call.
const MAX_RETRIES: u32 = 3;
/// Longest wait before one retry, whatever the headers ask.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(20);
/// Largest response body read.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Records asked for per page.
const PER_PAGE: u32 = 100;
/// Pages followed at most (100 × 100 records; a zone berth manages is far smaller).
const MAX_PAGES: u32 = 100;
/// Error codes Cloudflare answers for a token that is invalid, expired or lacks a
/// permission.
const AUTH_CODES: [i64; 8] = [1000, 6003, 6111, 9103, 9106, 9109, 10000, 10001];
/// Error codes of a zone, record or custom hostname that does not exist.
const NOT_FOUND_CODES: [i64; 5] = [1049, 1436, 1551, 7003, 81044];

/// How berth uses the Cloudflare account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// berth creates and removes the DNS records of domains in the account's zones.
    Dns,
    /// Domains are custom hostnames of the configured zone (Cloudflare for SaaS).
    CustomHostnames,
}

/// Opened `cloudflare` settings of one org.
#[derive(Clone)]
pub struct CloudflareConfig {
    /// API token (Bearer).
    pub api_token: String,
    /// The zone to use, when configured; else found by name.
    pub zone_id: Option<String>,
    /// API base URL.
    pub api_url: String,
    /// What berth does with the account.
    pub mode: DnsMode,
}

impl std::fmt::Debug for CloudflareConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudflareConfig")
            .field("api_token", &"***")
            .field("zone_id", &self.zone_id)
            .field("api_url", &self.api_url)
            .field("mode", &self.mode)
            .finish()
    }
}

impl CloudflareConfig {
    /// Parses and checks stored settings; `None` when no token is set (not configured).
    pub fn from_map(config: &ConfigMap) -> ServiceResult<Option<Self>> {
        let invalid = |m: String| ServiceError::invalid("config", m);
        let get = |k: &str| config_str(config, k).map(|v| v.map(str::trim).filter(|s| !s.is_empty()));
        let zone_id = get("zone_id")?;
        let api_url = get("api_url")?.unwrap_or(DEFAULT_API_URL);
        let mode = match get("mode")? {
            None | Some("dns") => DnsMode::Dns,
            Some("custom_hostnames") => DnsMode::CustomHostnames,
            Some(other) => {
                return Err(invalid(format!(
                    "mode must be \"dns\" (berth creates the records of domains in your zones) or \"custom_hostnames\" (Cloudflare for SaaS), not \"{}\"",
                    other.chars().take(40).collect::<String>()
                )));
            }
        };
        let Some(api_token) = get("api_token")? else {
            if config.is_empty() {
                return Ok(None);
            }
            return Err(invalid(
                "api_token is required: create a Cloudflare API token with Zone:DNS:Edit on the zone (My Profile → API Tokens)".into(),
            ));
        };
        // It goes into a header: printable ASCII only. The value itself is never echoed.
        if !(10..=256).contains(&api_token.len()) || !api_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "api_token is not a Cloudflare API token (10 to 256 printable characters without spaces); copy it again from My Profile → API Tokens".into(),
            ));
        }
        if let Some(zone) = zone_id
            && !(zone.len() == 32 && zone.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid(format!(
                "zone_id '{}' is not a Cloudflare Zone ID: it is the 32-character hex id on the zone's Overview page",
                zone.chars().take(64).collect::<String>()
            )));
        }
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) || api_url.contains(char::is_whitespace)
        {
            return Err(invalid(format!(
                "api_url must be an http(s) URL (default {DEFAULT_API_URL})"
            )));
        }
        if mode == DnsMode::CustomHostnames && zone_id.is_none() {
            return Err(invalid(
                "mode \"custom_hostnames\" needs zone_id: the Zone ID of your Cloudflare for SaaS zone".into(),
            ));
        }
        Ok(Some(Self {
            api_token: api_token.to_string(),
            zone_id: zone_id.map(|z| z.to_ascii_lowercase()),
            api_url: api_url.trim_end_matches('/').to_string(),
            mode,
        }))
    }
}

/// Cloudflare's response envelope.
#[derive(Debug, Default, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Default, Deserialize)]
struct ResultInfo {
    #[serde(default)]
    page: u32,
    #[serde(default)]
    total_pages: u32,
}

/// A client of Cloudflare's API for one org's settings.
pub struct Cloudflare {
    http: reqwest::Client,
    config: CloudflareConfig,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare").field("config", &self.config).finish()
    }
}

impl Cloudflare {
    /// A client for these settings.
    pub fn new(config: CloudflareConfig) -> Result<Self, DnsError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .user_agent("berth")
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DnsError::Unavailable(format!("building the HTTP client: {e}")))?;
        Ok(Self { http, config })
    }

    /// The settings it was made with.
    pub fn config(&self) -> &CloudflareConfig {
        &self.config
    }

    /// One API call: the envelope's `result` and `result_info`, or the error that names
    /// the fix. `what` says what the call was for.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<(Value, Option<ResultInfo>), DnsError> {
        let mut url = format!("{}{path}", self.config.api_url);
        if !query.is_empty() {
            let encoded = serde_urlencoded::to_string(query)
                .map_err(|e| DnsError::Rejected(format!("{what}: the query cannot be encoded: {e}")))?;
            url = format!("{url}?{encoded}");
        }
        let mut retries = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.config.api_token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| self.unreachable(&e, what))?;
            let status = response.status();
            if status.as_u16() == 429 {
                let wait = retry_wait(response.headers());
                if retries < MAX_RETRIES {
                    retries += 1;
                    tracing::info!(
                        provider = PROVIDER,
                        wait_ms = wait.as_millis() as u64,
                        retry = retries,
                        "rate limited by Cloudflare; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(DnsError::RateLimited(format!(
                    "{what}: Cloudflare's API rate limit held after {MAX_RETRIES} retries; try again in {} s",
                    wait.as_secs().max(1)
                )));
            }
            let bytes = read_bounded(response).await.map_err(|e| self.unreachable(&e, what))?;
            let Some(bytes) = bytes else {
                return Err(DnsError::Unavailable(format!(
                    "{what}: Cloudflare's answer was over {} MiB; check api_url ({})",
                    MAX_RESPONSE_BYTES / 1024 / 1024,
                    self.config.api_url
                )));
            };
            return self.open_envelope(status, &bytes, what);
        }
    }

    fn open_envelope(
        &self,
        status: reqwest::StatusCode,
        bytes: &[u8],
        what: &str,
    ) -> Result<(Value, Option<ResultInfo>), DnsError> {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(bytes) else {
            return Err(DnsError::Unavailable(format!(
                "{what}: {} answered HTTP {} with something that is not Cloudflare's JSON API; check api_url (default {DEFAULT_API_URL})",
                self.config.api_url,
                status.as_u16()
            )));
        };
        if status.is_success() && envelope.success {
            return Ok((envelope.result, envelope.result_info));
        }
        let said = envelope
            .errors
            .iter()
            .map(|e| format!("{} {}", e.code, self.scrub(&e.message)))
            .collect::<Vec<_>>()
            .join("; ");
        let said = if said.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            said
        };
        let has = |codes: &[i64]| envelope.errors.iter().any(|e| codes.contains(&e.code));
        Err(if matches!(status.as_u16(), 401 | 403) || has(&AUTH_CODES[..]) {
            DnsError::Unauthorized(format!("{TOKEN_REFUSED} ({what}: Cloudflare said {said})"))
        } else if status.as_u16() == 404 || has(&NOT_FOUND_CODES[..]) {
            DnsError::NotFound(format!("{what}: Cloudflare has no such object ({said})"))
        } else {
            DnsError::Rejected(format!("{what}: Cloudflare refused it ({said})"))
        })
    }

    fn unreachable(&self, err: &reqwest::Error, what: &str) -> DnsError {
        let api = &self.config.api_url;
        if err.is_timeout() {
            DnsError::Unavailable(format!(
                "{what}: Cloudflare's API at {api} did not answer within {} s; try again, or check api_url and this server's network",
                TIMEOUT.as_secs()
            ))
        } else {
            // The URL is dropped: it may carry query values; the token never is in it.
            let err = self.scrub(&error_text_without_url(err));
            DnsError::Unavailable(format!(
                "{what}: could not reach Cloudflare's API at {api} ({err}); check api_url and this server's network"
            ))
        }
    }

    /// Text from outside with the token cut out, should it ever echo it.
    fn scrub(&self, text: &str) -> String {
        let text: String = text.chars().take(300).collect();
        text.replace(&self.config.api_token, "***")
    }

    async fn get_zone(&self, id: &str) -> Result<Zone, DnsError> {
        check_id(id, "zone_id")?;
        let (zone, _) = self
            .call(Method::GET, &format!("/zones/{id}"), &[], None, "reading the configured zone")
            .await
            .map_err(|e| match e {
                DnsError::NotFound(_) => DnsError::NotFound(format!(
                    "the Cloudflare zone {id} (zone_id) does not exist or the token cannot read it; check zone_id, and give the token Zone:Read and Zone:DNS:Edit on it"
                )),
                other => other,
            })?;
        parse_zone(&zone).ok_or_else(|| malformed("the zone"))
    }

    async fn get_record(&self, zone: &Zone, id: &str) -> Result<ProviderRecord, DnsError> {
        check_id(id, "record id")?;
        let (record, _) = self
            .call(
                Method::GET,
                &format!("/zones/{}/dns_records/{id}", zone.id),
                &[],
                None,
                "reading a DNS record",
            )
            .await?;
        serde_json::from_value(record).map_err(|_| malformed("a DNS record"))
    }
}

#[async_trait::async_trait]
impl DnsProvider for Cloudflare {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn verify(&self) -> Result<String, DnsError> {
        let (token, _) = self
            .call(Method::GET, "/user/tokens/verify", &[], None, "verifying the API token")
            .await?;
        let status = token["status"].as_str().unwrap_or("unknown");
        if status != "active" {
            return Err(DnsError::Unauthorized(format!(
                "{TOKEN_REFUSED} (Cloudflare says the token is {})",
                self.scrub(status)
            )));
        }
        let mode = match self.config.mode {
            DnsMode::Dns => "berth creates and removes the DNS records of domains in the zone",
            DnsMode::CustomHostnames => "domains become custom hostnames of the zone (Cloudflare for SaaS)",
        };
        Ok(match &self.config.zone_id {
            Some(id) => {
                let zone = self.get_zone(id).await?;
                format!("Cloudflare API token active; zone {} ({}); {mode}", zone.name, zone.id)
            }
            None => format!(
                "Cloudflare API token active; each domain's zone is found by name (the token needs Zone:Read); {mode}"
            ),
        })
    }

    async fn zone_for(&self, name: &str) -> Result<Zone, DnsError> {
        if let Some(id) = &self.config.zone_id {
            return self.get_zone(id).await;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        let mut tried = Vec::new();
        // Longest suffix first: a delegated sub-zone wins over its parent.
        for start in 0..labels.len().saturating_sub(1) {
            let candidate = labels[start..].join(".");
            let (zones, _) = self
                .call(
                    Method::GET,
                    "/zones",
                    &[("name", candidate.clone()), ("per_page", "5".into())],
                    None,
                    &format!("looking up the zone of {name}"),
                )
                .await?;
            if let Some(zone) = zones
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(parse_zone)
                .find(|z| z.name.eq_ignore_ascii_case(&candidate))
            {
                return Ok(zone);
            }
            tried.push(candidate);
        }
        Err(DnsError::NotFound(format!(
            "no zone of this Cloudflare account holds {name} (looked for {}); add the domain's zone to Cloudflare, or give the token Zone:Read on it",
            tried.join(", ")
        )))
    }

    async fn create_record(&self, zone: &Zone, record: &RecordSpec) -> Result<String, DnsError> {
        check_id(&zone.id, "zone id")?;
        let mut body = json!({
            "type": record.record_type,
            "name": record.name,
            "content": record.content,
            "ttl": record.ttl,
            "comment": MANAGED_COMMENT,
        });
        if matches!(record.record_type.as_str(), "A" | "AAAA" | "CNAME") {
            // Served by berth itself: certificate validation must reach this server.
            body["proxied"] = Value::Bool(false);
        }
        let what = format!(
            "creating the {} record {} in the Cloudflare zone {}",
            record.record_type, record.name, zone.name
        );
        let (created, _) = self
            .call(
                Method::POST,
                &format!("/zones/{}/dns_records", zone.id),
                &[],
                Some(&body),
                &what,
            )
            .await?;
        created["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| malformed("the created record"))
    }

    async fn delete_record(&self, zone: &Zone, id: &str) -> Result<(), DnsError> {
        let record = match self.get_record(zone, id).await {
            Ok(record) => record,
            Err(DnsError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !record.is_managed() {
            return Err(DnsError::Rejected(format!(
                "the {} record {} ({id}) in the Cloudflare zone {} was not created by berth (its comment is not '{MANAGED_COMMENT}'), so berth leaves it alone; delete it in Cloudflare yourself if it should go",
                record.record_type, record.name, zone.name
            )));
        }
        let what = format!(
            "deleting the {} record {} in the Cloudflare zone {}",
            record.record_type, record.name, zone.name
        );
        match self
            .call(
                Method::DELETE,
                &format!("/zones/{}/dns_records/{id}", zone.id),
                &[],
                None,
                &what,
            )
            .await
        {
            Ok(_) | Err(DnsError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_records(
        &self,
        zone: &Zone,
        record_type: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<ProviderRecord>, DnsError> {
        check_id(&zone.id, "zone id")?;
        let mut records = Vec::new();
        let mut page = 1;
        loop {
            let mut query = vec![("page", page.to_string()), ("per_page", PER_PAGE.to_string())];
            if let Some(t) = record_type {
                query.push(("type", t.to_string()));
            }
            if let Some(n) = name {
                query.push(("name", n.to_string()));
            }
            let (result, info) = self
                .call(
                    Method::GET,
                    &format!("/zones/{}/dns_records", zone.id),
                    &query,
                    None,
                    &format!("listing the records of the Cloudflare zone {}", zone.name),
                )
                .await?;
            let batch: Vec<ProviderRecord> =
                serde_json::from_value(result).map_err(|_| malformed("the record list"))?;
            let empty = batch.is_empty();
            records.extend(batch);
            let total_pages = info.as_ref().map_or(1, |i| i.total_pages);
            let current = info.as_ref().map_or(page, |i| i.page.max(page));
            if empty || current >= total_pages {
                return Ok(records);
            }
            if page >= MAX_PAGES {
                return Err(DnsError::Rejected(format!(
                    "the Cloudflare zone {} has more than {} records of that kind; berth stops there",
                    zone.name,
                    MAX_PAGES * PER_PAGE
                )));
            }
            page = current + 1;
        }
    }

    async fn set_txt(&self, name: &str, value: &str) -> Result<String, DnsError> {
        let zone = self.zone_for(name).await?;
        if !zone.contains(name) {
            return Err(DnsError::NotFound(format!(
                "{name} is not in the Cloudflare zone {} (zone_id); a TXT record for it must be created in its own zone: remove zone_id to let berth find zones by name",
                zone.name
            )));
        }
        let record = RecordSpec {
            record_type: "TXT".into(),
            name: name.trim_end_matches('.').to_string(),
            content: value.to_string(),
            // Challenge records are short-lived: the shortest TTL Cloudflare accepts.
            ttl: 60,
        };
        self.create_record(&zone, &record).await
    }

    async fn remove_txt(&self, name: &str, id: &str) -> Result<(), DnsError> {
        let zone = self.zone_for(name).await?;
        self.delete_record(&zone, id).await
    }

    async fn create_custom_hostname(&self, zone: &Zone, hostname: &str) -> Result<CustomHostname, DnsError> {
        check_id(&zone.id, "zone id")?;
        let body = json!({ "hostname": hostname, "ssl": { "method": "txt", "type": "dv" } });
        let (created, _) = self
            .call(
                Method::POST,
                &format!("/zones/{}/custom_hostnames", zone.id),
                &[],
                Some(&body),
                &format!(
                    "creating the custom hostname {hostname} in the Cloudflare zone {}",
                    zone.name
                ),
            )
            .await?;
        parse_custom_hostname(&created).ok_or_else(|| malformed("the custom hostname"))
    }

    async fn get_custom_hostname(&self, zone: &Zone, id: &str) -> Result<CustomHostname, DnsError> {
        check_id(&zone.id, "zone id")?;
        check_id(id, "custom hostname id")?;
        let (found, _) = self
            .call(
                Method::GET,
                &format!("/zones/{}/custom_hostnames/{id}", zone.id),
                &[],
                None,
                "reading a custom hostname",
            )
            .await?;
        parse_custom_hostname(&found).ok_or_else(|| malformed("the custom hostname"))
    }

    async fn delete_custom_hostname(&self, zone: &Zone, id: &str) -> Result<(), DnsError> {
        check_id(&zone.id, "zone id")?;
        check_id(id, "custom hostname id")?;
        match self
            .call(
                Method::DELETE,
                &format!("/zones/{}/custom_hostnames/{id}", zone.id),
                &[],
                None,
                "deleting a custom hostname",
            )
            .await
        {
            Ok(_) | Err(DnsError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The body, or `None` when it is over [`MAX_RESPONSE_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// How long a 429 asks to wait: `Retry-After` (seconds or an HTTP date), else the reset
/// time of an exhausted `Ratelimit` item (`"default";r=0;t=30`), else one second; at most
/// [`MAX_RETRY_WAIT`].
pub fn retry_wait(headers: &HeaderMap) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_retry_after = header("retry-after").and_then(|v| match v.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(v)
            .ok()
            .map(|at| at.duration_since(std::time::SystemTime::now()).unwrap_or_default()),
    });
    let from_ratelimit = || {
        header("ratelimit").and_then(|v| {
            v.split(',').find_map(|item| {
                let params: Vec<&str> = item.split(';').map(str::trim).collect();
                let get = |k: &str| {
                    params
                        .iter()
                        .find_map(|p| p.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
                };
                (get("r") == Some(0))
                    .then(|| get("t").map(Duration::from_secs))
                    .flatten()
            })
        })
    };
    from_retry_after
        .or_else(from_ratelimit)
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(100), MAX_RETRY_WAIT)
}

/// Ids go into URL paths: only what Cloudflare's ids are made of.
fn check_id(id: &str, what: &str) -> Result<(), DnsError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(DnsError::Rejected(format!(
            "'{}' is not a Cloudflare {what}",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

fn malformed(what: &str) -> DnsError {
    DnsError::Unavailable(format!(
        "Cloudflare's answer did not describe {what} as its API documents; check api_url (default {DEFAULT_API_URL})"
    ))
}

/// An HTTP error in words, with its causes and without the URL.
fn error_text_without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "the API");
    }
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

fn parse_zone(value: &Value) -> Option<Zone> {
    Some(Zone {
        id: value["id"].as_str()?.to_string(),
        name: value["name"].as_str()?.to_ascii_lowercase(),
    })
}

fn parse_custom_hostname(value: &Value) -> Option<CustomHostname> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let ownership = &value["ownership_verification"];
    let ssl = &value["ssl"];
    let mut verification_errors: Vec<String> = value["verification_errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect();
    verification_errors.extend(
        ssl["validation_errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| text(&e["message"])),
    );
    Some(CustomHostname {
        id: text(&value["id"])?,
        hostname: text(&value["hostname"])?,
        status: text(&value["status"]).unwrap_or_else(|| "pending".into()),
        ssl_status: text(&ssl["status"]).unwrap_or_else(|| "initializing".into()),
        ownership_verification: match (text(&ownership["name"]), text(&ownership["value"])) {
            (Some(name), Some(value)) => Some(VerificationRecord {
                record_type: text(&ownership["type"])
                    .unwrap_or_else(|| "txt".into())
                    .to_ascii_uppercase(),
                name,
                value,
            }),
            _ => None,
        },
        ssl_validation: ssl["validation_records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some(VerificationRecord {
                    record_type: "TXT".into(),
                    name: text(&r["txt_name"])?,
                    value: text(&r["txt_value"])?,
                })
            })
            .collect(),
        verification_errors,
    })
}

/// The `cloudflare` provider's settings.
pub struct CloudflareSettings;

#[async_trait::async_trait]
impl ProviderSettings for CloudflareSettings {
    fn name(&self) -> &'static str {
        PROVIDER
    }
    fn summary(&self) -> &'static str {
        "Cloudflare as DNS provider: berth creates and removes the DNS records of custom domains (and certificate challenges) itself, or serves domains as Cloudflare for SaaS custom hostnames."
    }
    fn keys(&self) -> &'static [ConfigKey] {
        &[
            ConfigKey {
                name: "api_token",
                secret: true,
                description: "API token with Zone:DNS:Edit on the zone (and Zone:Read to find zones by name; SSL and Certificates:Edit for custom hostnames).",
            },
            ConfigKey {
                name: "zone_id",
                secret: false,
                description: "Zone ID (32 hex characters, on the zone's Overview page); without it berth finds each domain's zone by name. Required in custom_hostnames mode.",
            },
            ConfigKey {
                name: "api_url",
                secret: false,
                description: "API base URL (default https://api.cloudflare.com/client/v4).",
            },
            ConfigKey {
                name: "mode",
                secret: false,
                description: "\"dns\" (default): berth creates a domain's records in its zone; \"custom_hostnames\": domains become custom hostnames of the zone (Cloudflare for SaaS).",
            },
        ]
    }
    fn validate(&self, config: &ConfigMap) -> ServiceResult<()> {
        CloudflareConfig::from_map(config).map(drop)
    }
    async fn test_connection(&self, _platform: &Platform, config: &ConfigMap) -> ServiceResult<String> {
        let Some(config) = CloudflareConfig::from_map(config)? else {
            return Err(ServiceError::conflict(
                "Cloudflare is not configured: HOSTING_SET_CONFIG {\"provider\": \"cloudflare\", \"config\": {\"api_token\": \"…\"}}",
            ));
        };
        Ok(Cloudflare::new(config)?.verify().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn map(v: Value) -> ConfigMap {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn settings_are_checked_and_the_token_never_shows() {
        let token = "cf_test_token_0123456789abcdef";
        let config = CloudflareConfig::from_map(&map(json!({"api_token": token})))
            .unwrap()
            .unwrap();
        assert_eq!(config.api_url, DEFAULT_API_URL);
        assert_eq!(config.mode, DnsMode::Dns);
        assert!(!format!("{config:?}").contains(token));
        let client = Cloudflare::new(config).unwrap();
        assert!(!format!("{client:?}").contains(token));
        assert!(CloudflareConfig::from_map(&ConfigMap::new()).unwrap().is_none());
        for (bad, says) in [
            (
                json!({"zone_id": "0123456789abcdef0123456789abcdef"}),
                "api_token is required",
            ),
            (json!({"api_token": "short"}), "not a Cloudflare API token"),
            (json!({"api_token": "has a space in it"}), "not a Cloudflare API token"),
            (json!({"api_token": token, "zone_id": "example.com"}), "Zone ID"),
            (json!({"api_token": token, "api_url": "ftp://x"}), "api_url"),
            (json!({"api_token": token, "mode": "proxy"}), "mode must be"),
            (json!({"api_token": token, "mode": "custom_hostnames"}), "needs zone_id"),
            (json!({"api_token": 5}), "must be a string"),
        ] {
            let err = CloudflareConfig::from_map(&map(bad.clone())).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains(token), "{err}");
        }
    }

    #[test]
    fn rate_limit_waits_follow_the_headers_and_are_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_wait(&headers), Duration::from_secs(1));
        headers.insert("ratelimit", HeaderValue::from_static("\"default\";r=0;t=7"));
        assert_eq!(retry_wait(&headers), Duration::from_secs(7));
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_wait(&headers), Duration::from_secs(3));
        headers.insert("retry-after", HeaderValue::from_static("86400"));
        assert_eq!(retry_wait(&headers), MAX_RETRY_WAIT);
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit", HeaderValue::from_static("\"default\";r=12;t=30"));
        assert_eq!(
            retry_wait(&headers),
            Duration::from_secs(1),
            "quota left: no reset wait"
        );
    }

    #[test]
    fn custom_hostnames_parse_as_documented() {
        let parsed = parse_custom_hostname(&json!({
            "id": "0d89c70d-ad9f-4843-b99f-6cc0252067e9",
            "hostname": "app.example.com",
            "status": "pending",
            "ssl": {
                "status": "pending_validation",
                "validation_records": [{"txt_name": "_acme-challenge.app.example.com", "txt_value": "abc"}],
                "validation_errors": [{"message": "caa_error"}]
            },
            "verification_errors": ["custom hostname does not CNAME to this zone."],
            "ownership_verification": {"type": "txt", "name": "_cf-custom-hostname.app.example.com", "value": "5cc07c04"}
        }))
        .unwrap();
        assert_eq!(parsed.ssl_status, "pending_validation");
        assert_eq!(parsed.ownership_verification.as_ref().unwrap().record_type, "TXT");
        assert_eq!(parsed.ssl_validation.len(), 1);
        assert_eq!(parsed.verification_errors.len(), 2);
        assert!(!parsed.is_active());
    }
}
