//! The token endpoint's rules (code exchange with PKCE S256, refresh rotation with
//! reuse detection) and RFC 7009 revocation limited to the client's own tokens.

use std::net::IpAddr;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{OAuthError, OAuthServer, TOKEN_REQUESTS_PER_MINUTE};
use crate::error::ServiceError;
use crate::model::{OAUTH_ACCESS_PREFIX, OAUTH_ACCESS_TTL_SECS, OAUTH_REFRESH_PREFIX, OAUTH_REFRESH_TTL_SECS, Scope};
use crate::store::oauth as oauth_store;
use crate::throttle::Subject;
use crate::util::{now_ms, random_hex, tokens_match};

/// A token request (RFC 6749 §4.1.3 and §6).
#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    /// `authorization_code` or `refresh_token`.
    pub grant_type: Option<String>,
    /// The code, for `authorization_code`.
    pub code: Option<String>,
    /// The redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// The client the code or token was issued to.
    pub client_id: Option<String>,
    /// The PKCE verifier.
    pub code_verifier: Option<String>,
    /// The refresh token, for `refresh_token`.
    pub refresh_token: Option<String>,
    /// RFC 8707: must be the grant's resource when given.
    pub resource: Option<String>,
}

/// A new access token and refresh token.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The access token.
    pub access_token: String,
    /// Seconds the access token works.
    pub expires_in: i64,
    /// The refresh token (works once).
    pub refresh_token: String,
    /// The grant's scopes.
    pub scopes: Vec<Scope>,
}

/// The S256 challenge of a PKCE verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl OAuthServer {
    /// The token endpoint: rate limited per address, and every refused request counts
    /// as a failed authentication of the address. `request` is `None` when the body was
    /// not a form.
    pub async fn token(&self, caller: IpAddr, request: Option<TokenRequest>) -> Result<IssuedTokens, OAuthError> {
        if !self.token_requests.allow(caller, TOKEN_REQUESTS_PER_MINUTE) {
            return Err(OAuthError::SlowDown);
        }
        let throttle = &self.service.platform.auth_throttle;
        let who = [Subject::address(caller)];
        if throttle.check(&who).is_err() {
            return Err(OAuthError::SlowDown);
        }
        let result = match request {
            None => Err(OAuthError::refused(
                "invalid_request",
                "send an application/x-www-form-urlencoded body",
            )),
            Some(r) => match r.grant_type.as_deref() {
                Some("authorization_code") => self.exchange_code(&r).await,
                Some("refresh_token") => self.refresh(&r).await,
                _ => Err(OAuthError::refused(
                    "unsupported_grant_type",
                    "grant_type must be authorization_code or refresh_token",
                )),
            },
        };
        if matches!(result, Err(OAuthError::Refused { .. })) {
            throttle.failure(&who);
        }
        result
    }

    async fn exchange_code(&self, form: &TokenRequest) -> Result<IssuedTokens, OAuthError> {
        let store = self.store();
        let unknown = || OAuthError::invalid_grant("unknown or expired code");
        let code = form.code.as_deref().unwrap_or_default();
        if code.len() != 64 {
            return Err(unknown());
        }
        let digest = self.digest(code).ok_or_else(unknown)?;
        let row = store.oauth_code(&digest).await?.ok_or_else(unknown)?;
        // Single use: a second exchange means the code leaked, so its grant goes.
        if !store.use_oauth_code(&digest).await? {
            let _ = store.revoke_grant(&row.grant_id).await;
            return Err(OAuthError::invalid_grant(
                "this code was already used; every token it gave is revoked",
            ));
        }
        if row.expires_at <= now_ms() {
            return Err(OAuthError::invalid_grant(
                "the code expired (codes last 60 seconds); start the authorization again",
            ));
        }
        let grant = match store.get_grant(&row.grant_id).await? {
            Some(g) if g.revoked_at.is_none() => g,
            _ => return Err(OAuthError::invalid_grant("the grant was revoked")),
        };
        if form.client_id.as_deref() != Some(grant.client_id.as_str()) {
            return Err(OAuthError::invalid_grant(
                "client_id does not match the client the code was issued to",
            ));
        }
        if form.redirect_uri.as_deref() != Some(row.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the one of the authorization request",
            ));
        }
        check_resource(form, &grant, "code")?;
        let verifier = form.code_verifier.as_deref().unwrap_or_default();
        if !(43..=128).contains(&verifier.len())
            || !verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
            || !tokens_match(&pkce_challenge(verifier), &row.code_challenge)
        {
            return Err(OAuthError::invalid_grant(
                "the code_verifier does not match the code_challenge (PKCE S256)",
            ));
        }
        self.issue(&grant).await
    }

    async fn refresh(&self, form: &TokenRequest) -> Result<IssuedTokens, OAuthError> {
        let store = self.store();
        let unknown = || OAuthError::invalid_grant("unknown refresh token");
        let token = form.refresh_token.as_deref().unwrap_or_default();
        if !token.starts_with(OAUTH_REFRESH_PREFIX) || token.len() != OAUTH_REFRESH_PREFIX.len() + 64 {
            return Err(unknown());
        }
        let digest = self.digest(token).ok_or_else(unknown)?;
        let row = match store.oauth_token(&digest).await? {
            Some(r) if r.kind == "refresh" => r,
            _ => return Err(unknown()),
        };
        let grant = store.get_grant(&row.grant_id).await?.ok_or_else(unknown)?;
        if form.client_id.as_deref() != Some(grant.client_id.as_str()) {
            return Err(OAuthError::invalid_grant(
                "client_id does not match the client the token was issued to",
            ));
        }
        // Rotation: a refresh token works once; a replay means it leaked, so the grant goes.
        if !store.use_oauth_token(&digest).await? {
            let _ = store.revoke_grant(&grant.id).await;
            return Err(OAuthError::invalid_grant(
                "this refresh token was already used; the grant is revoked, connect again",
            ));
        }
        if grant.revoked_at.is_some() || row.revoked_at.is_some() || row.expires_at <= now_ms() {
            return Err(OAuthError::invalid_grant(
                "the refresh token expired or was revoked; connect again",
            ));
        }
        check_resource(form, &grant, "grant")?;
        self.issue(&grant).await
    }

    /// A new access token and refresh token for a grant.
    async fn issue(&self, grant: &oauth_store::GrantRow) -> Result<IssuedTokens, OAuthError> {
        let access = format!("{OAUTH_ACCESS_PREFIX}{}", random_hex(32));
        let refresh = format!("{OAUTH_REFRESH_PREFIX}{}", random_hex(32));
        let (Some(a), Some(r)) = (self.digest(&access), self.digest(&refresh)) else {
            return Err(OAuthError::Failed(ServiceError::Internal(anyhow::anyhow!(
                "the key lookup secret is unreadable"
            ))));
        };
        let now = now_ms();
        let stored = async {
            // Expired codes and tokens go as new ones come, so neither table grows with time.
            self.service
                .platform
                .store
                .issue_oauth_tokens(
                    &grant.id,
                    (&a, now + OAUTH_ACCESS_TTL_SECS * 1000),
                    (&r, now + OAUTH_REFRESH_TTL_SECS * 1000),
                    now,
                )
                .await?;
            anyhow::Ok(())
        };
        stored
            .await
            .map_err(|e| OAuthError::Failed(ServiceError::Internal(e)))?;
        Ok(IssuedTokens {
            access_token: access,
            expires_in: OAUTH_ACCESS_TTL_SECS,
            refresh_token: refresh,
            scopes: Scope::parse_list(&grant.scopes),
        })
    }

    /// RFC 7009: rate limited per address; only the client's own tokens are revoked (a
    /// refresh token takes its whole grant along), and anything else is quietly ignored.
    pub async fn revoke(&self, caller: IpAddr, token: Option<&str>, client_id: Option<&str>) -> Result<(), OAuthError> {
        if !self.token_requests.allow(caller, TOKEN_REQUESTS_PER_MINUTE) {
            return Err(OAuthError::SlowDown);
        }
        let store = self.store();
        if let (Some(token), Some(client_id)) = (token, client_id)
            && token.len() <= 200
            && let Some(digest) = self.digest(token)
            && let Ok(Some(row)) = store.oauth_token(&digest).await
            && let Ok(Some(grant)) = store.get_grant(&row.grant_id).await
            && grant.client_id == client_id
        {
            let done = if row.kind == "refresh" {
                store.revoke_grant(&grant.id).await
            } else {
                store.revoke_oauth_token(&digest).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "revoking an OAuth token failed");
            }
        }
        Ok(())
    }
}

/// RFC 8707: a `resource` given with a token request must be the grant's.
fn check_resource(form: &TokenRequest, grant: &oauth_store::GrantRow, what: &str) -> Result<(), OAuthError> {
    match form.resource.as_deref().filter(|r| !r.is_empty()) {
        Some(r) if r.trim_end_matches('/') != grant.resource => Err(OAuthError::refused(
            "invalid_target",
            format!("this {what} is for the resource {}", grant.resource),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_is_base64url_of_sha256() {
        // Computed independently (Python's hashlib and base64).
        assert_eq!(
            pkce_challenge("berth-test-verifier-0123456789-abcdefghijklmnopq"),
            "X-qY82McKsZHSbJIs5Ma70SVrVpnDg-pjMc4K_WW4vs"
        );
    }
}
