//! The authorization endpoint's rules: what a request must carry, which refusals are
//! shown on berth's page (the redirect URI is not trusted yet) and which go back to the
//! client, how a person's consent narrows the grant (org, scopes, sites, production),
//! and the single-use code it gives.

use std::net::IpAddr;

use serde::Deserialize;

use super::clients::redirect_matches;
use super::{Client, MAX_URI_CHARS, OAuthServer, check_redirect_uri};
use crate::error::{ServiceError, ServiceResult};
use crate::model::{OAUTH_CODE_TTL_SECS, Scope};
use crate::store::oauth as oauth_store;
use crate::util::{new_id, now_ms, random_hex};

/// The parameters of an authorization request (query of the GET, hidden fields of the
/// consent POST).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuthorizeParams {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// A registered client's id or the https URL of its metadata document.
    pub client_id: Option<String>,
    /// One of the client's redirect URIs.
    pub redirect_uri: Option<String>,
    /// The base64url SHA-256 of the code verifier.
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
    /// Given back with the answer.
    pub state: Option<String>,
    /// Space-separated scopes asked for; none: every scope.
    pub scope: Option<String>,
    /// RFC 8707: must be this server's resource when given.
    pub resource: Option<String>,
}

/// A checked authorization request.
#[derive(Debug)]
pub struct Checked {
    /// The client asking.
    pub client: Client,
    /// Where the answer goes (one the client registered).
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub challenge: String,
    /// The client's `state`, when at most 1,000 characters.
    pub state: Option<String>,
    /// The scopes asked for, sorted, each at most once.
    pub scopes: Vec<Scope>,
    /// The resource the tokens will be for.
    pub resource: String,
}

/// Why an authorization request or a consent is refused.
#[derive(Debug)]
pub enum Refusal {
    /// Shown on berth's page: the redirect URI is not trusted yet, or the person must
    /// choose again.
    Page(String),
    /// Sent back to the client's (checked) redirect URI.
    Redirect {
        /// Where to.
        redirect_uri: String,
        /// The client's `state`.
        state: Option<String>,
        /// The OAuth error code.
        error: &'static str,
        /// What was wrong.
        description: String,
    },
    /// A failure on berth's side.
    Failed(ServiceError),
}

/// One org a person may grant access to, with its sites.
#[derive(Debug)]
pub struct OrgChoice {
    /// The org's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The person's role in it.
    pub role: String,
    /// Its site names.
    pub sites: Vec<String>,
}

/// Which sites a person lets the client reach.
#[derive(Debug)]
pub enum SiteChoice {
    /// Every site, present and future.
    Every,
    /// Only these (names of the chosen org's sites; others are ignored).
    Only(Vec<String>),
    /// Neither was chosen.
    Unchosen,
}

/// A person's answer on the consent page.
#[derive(Debug)]
pub struct ConsentDecision {
    /// Allow (else deny).
    pub approve: bool,
    /// The chosen org's id.
    pub org: Option<String>,
    /// The scopes ticked (names; only those asked for count).
    pub scopes: Vec<String>,
    /// The sites.
    pub sites: SiteChoice,
    /// Whether production may be changed.
    pub production: bool,
}

/// An approved consent: the code to send to the client.
#[derive(Debug)]
pub struct Approved {
    /// The client's redirect URI.
    pub redirect_uri: String,
    /// The single-use authorization code.
    pub code: String,
    /// The client's `state`.
    pub state: Option<String>,
}

impl OAuthServer {
    /// Checks an authorization request: the client and its redirect URI first (refused
    /// on berth's page), then the rest (refused back to the client).
    pub async fn check_authorization(&self, p: &AuthorizeParams, caller: IpAddr) -> Result<Checked, Refusal> {
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
                                    Scope::space_separated(&Scope::ALL)
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

    /// The orgs a person may grant access to, each with its sites (for the consent page).
    pub async fn consent_choices(&self, user_id: &str) -> ServiceResult<Vec<OrgChoice>> {
        let store = self.store();
        let mut out = Vec::new();
        for (id, name, role) in store.orgs_of_user(user_id).await? {
            let sites = store.oauth_site_names(&id).await?;
            out.push(OrgChoice { id, name, role, sites });
        }
        Ok(out)
    }

    /// A person's answer to an authorization request: the request is checked again,
    /// a denial goes back to the client, an approval becomes a grant narrowed to the
    /// chosen org, scopes (a subset of those asked for), sites and production, and a
    /// code that must be exchanged within [`OAUTH_CODE_TTL_SECS`]. A frozen org refuses.
    pub async fn consent(
        &self,
        user_id: &str,
        caller: IpAddr,
        p: &AuthorizeParams,
        decision: ConsentDecision,
    ) -> Result<Approved, Refusal> {
        let checked = self.check_authorization(p, caller).await?;
        if !decision.approve {
            return Err(Refusal::Redirect {
                redirect_uri: checked.redirect_uri,
                state: checked.state,
                error: "access_denied",
                description: "the person declined".into(),
            });
        }
        let store = self.store();
        let failed = |e: sqlx::Error| Refusal::Failed(e.into());
        let orgs = store.orgs_of_user(user_id).await.map_err(failed)?;
        let Some((org_id, _, _)) = orgs.iter().find(|(id, _, _)| Some(id) == decision.org.as_ref()) else {
            return Err(Refusal::Page("pick one of your orgs".into()));
        };
        let scopes: Vec<Scope> = checked
            .scopes
            .iter()
            .copied()
            .filter(|s| decision.scopes.iter().any(|v| v == s.as_str()))
            .collect();
        if scopes.is_empty() {
            return Err(Refusal::Page("tick at least one scope, or deny".into()));
        }
        let sites = match decision.sites {
            SiteChoice::Every => None,
            SiteChoice::Only(names) => {
                let existing = store.oauth_site_names(org_id).await.map_err(failed)?;
                let mut chosen: Vec<String> = names.into_iter().filter(|n| existing.contains(n)).collect();
                chosen.sort();
                chosen.dedup();
                if chosen.is_empty() {
                    return Err(Refusal::Page(
                        "tick at least one site of the chosen org, or choose every site".into(),
                    ));
                }
                Some(serde_json::to_string(&chosen).unwrap_or_default())
            }
            SiteChoice::Unchosen => return Err(Refusal::Page("choose every site or some of them".into())),
        };
        let grant_id = new_id("grant");
        let code = random_hex(32);
        let digest = self
            .service
            .platform
            .key_lookup
            .digest(&code)
            .map_err(|e| Refusal::Failed(ServiceError::Internal(e)))?;
        let scope_names = Scope::join(&scopes);
        let stored = async {
            let grant = oauth_store::NewGrant {
                id: &grant_id,
                org_id,
                user_id,
                client_id: &checked.client.id,
                client_name: &checked.client.name,
                scopes: &scope_names,
                sites: sites.as_deref(),
                production: decision.production,
                resource: &checked.resource,
            };
            let code = oauth_store::NewCode {
                code_hmac: &digest,
                redirect_uri: &checked.redirect_uri,
                code_challenge: &checked.challenge,
                expires_at: now_ms() + OAUTH_CODE_TTL_SECS * 1000,
            };
            anyhow::Ok(self.service.platform.store.grant_consent(&grant, &code).await?)
        };
        match stored.await {
            Ok(true) => Ok(Approved {
                redirect_uri: checked.redirect_uri,
                code,
                state: checked.state,
            }),
            Ok(false) => Err(Refusal::Page(
                "agents are frozen in this org: no application can connect until an admin unfreezes them (berth agents unfreeze, or the Connected apps page)".into(),
            )),
            Err(e) => Err(Refusal::Failed(ServiceError::Internal(e))),
        }
    }
}
