//! OAuth clients: the redirect-URI rules, RFC 7591 registration, and clients known by
//! the Client ID Metadata Document at their https `client_id` (fetched SSRF-safe, bounded
//! in size and time, cached).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use super::{
    MAX_NAME_CHARS, MAX_REDIRECT_URIS, MAX_URI_CHARS, METADATA_CACHE_MS, METADATA_FETCHES_PER_MINUTE,
    METADATA_MAX_BYTES, OAuthError, OAuthServer, REGISTRATIONS_PER_MINUTE,
};
use crate::util::{now_ms, random_hex};

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
pub(super) fn redirect_matches(registered: &str, given: &str) -> bool {
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

/// An RFC 7591 registration request: the client metadata berth reads.
#[derive(Debug, Deserialize)]
pub struct Registration {
    /// Where codes may be sent.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The name shown on the consent page.
    pub client_name: Option<String>,
    /// Must be `none` (public clients with PKCE) when given.
    pub token_endpoint_auth_method: Option<String>,
    /// At most `authorization_code` and `refresh_token`.
    pub grant_types: Option<Vec<String>>,
    /// At most `code`.
    pub response_types: Option<Vec<String>>,
}

/// A client registration made.
#[derive(Debug)]
pub struct RegisteredClient {
    /// The new `client_id`.
    pub client_id: String,
    /// When it was issued (seconds since the epoch).
    pub issued_at: i64,
    /// Its name as stored.
    pub client_name: String,
    /// Its redirect URIs as given.
    pub redirect_uris: Vec<String>,
}

/// A client as the authorization endpoint sees it.
#[derive(Debug)]
pub struct Client {
    /// Its `client_id`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The redirect URIs it registered or its metadata document lists.
    pub redirect_uris: Vec<String>,
    /// The host of its metadata document (verified by fetching it over https).
    pub verified_domain: Option<String>,
}

impl OAuthServer {
    /// RFC 7591 dynamic registration of a public client, rate limited per address.
    /// `request` is `Err` with the reason when the body was not client metadata JSON.
    pub async fn register(
        &self,
        caller: IpAddr,
        request: Result<Registration, String>,
    ) -> Result<RegisteredClient, OAuthError> {
        if !self.registrations.allow(caller, REGISTRATIONS_PER_MINUTE) {
            return Err(OAuthError::SlowDown);
        }
        let reg = request.map_err(|e| {
            OAuthError::refused(
                "invalid_client_metadata",
                format!("the body is not client metadata JSON: {e}"),
            )
        })?;
        if reg.redirect_uris.is_empty() || reg.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OAuthError::refused(
                "invalid_redirect_uri",
                format!("give between 1 and {MAX_REDIRECT_URIS} redirect_uris"),
            ));
        }
        for uri in &reg.redirect_uris {
            check_redirect_uri(uri).map_err(|message| OAuthError::refused("invalid_redirect_uri", message))?;
        }
        if reg.token_endpoint_auth_method.as_deref().is_some_and(|m| m != "none") {
            return Err(OAuthError::refused(
                "invalid_client_metadata",
                "berth registers public clients only: token_endpoint_auth_method must be 'none' (use PKCE)",
            ));
        }
        if let Some(g) = &reg.grant_types
            && let Some(other) = g
                .iter()
                .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        {
            return Err(OAuthError::refused(
                "invalid_client_metadata",
                format!(
                    "grant type '{}' is not supported; use authorization_code and refresh_token",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
        if reg
            .response_types
            .as_ref()
            .is_some_and(|r| r.iter().any(|r| r != "code"))
        {
            return Err(OAuthError::refused(
                "invalid_client_metadata",
                "only the response type 'code' is supported",
            ));
        }
        let name = reg
            .client_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or("unnamed client");
        if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(OAuthError::refused(
                "invalid_client_metadata",
                format!("client_name must be at most {MAX_NAME_CHARS} printable characters"),
            ));
        }
        let id = format!("berth_client_{}", random_hex(16));
        let uris = serde_json::to_string(&reg.redirect_uris).unwrap_or_default();
        self.store().upsert_oauth_client(&id, "registered", name, &uris).await?;
        Ok(RegisteredClient {
            client_id: id,
            issued_at: now_ms() / 1000,
            client_name: name.to_string(),
            redirect_uris: reg.redirect_uris,
        })
    }

    /// A client by its id: a registered one, or the metadata document at an https id
    /// (cached for ten minutes). `Err`: why, to show on berth's page.
    pub(super) async fn client(&self, client_id: &str, caller: IpAddr) -> Result<Client, String> {
        let shown: String = client_id.chars().take(80).collect();
        let store = self.store();
        let row = store
            .oauth_client(client_id)
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
                    store
                        .upsert_oauth_client(client_id, "metadata", &name, &json)
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
            .header(reqwest::header::ACCEPT, "application/json")
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
}
