//! Authentication: API keys, passwords and the actor they resolve to.
//!
//! Scoped keys (`berth_pk_…` personal, `berth_sk_…` service) are random 256-bit tokens,
//! found by an HMAC-SHA256 of the token under a server secret kept in the data dir, and
//! read again on every call: a revocation, an expiry or a change of the owner's role
//! applies to the very next request. Keys made before them (the bootstrap key among them)
//! are stored as argon2id hashes found by a lookup id derived from the key, and verified
//! ones are cached briefly in memory (keyed by a SHA-256 of the key) so that clients don't
//! pay argon2 on every request; when an entry is older than a minute its key row is read
//! again (revocation takes effect then). Passwords are argon2id.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, ActorKind, Role, Scope};
use crate::store::people::KeyRow;
use crate::store::ui_sessions::SessionRow;
use crate::store::{self, Store};
use crate::throttle::{AuthThrottle, Subject};
use crate::util::{new_id, now_ms, random_hex};

const CACHE_TTL: Duration = Duration::from_secs(60);

/// The file in the data dir holding the secret scoped keys are looked up under.
pub const KEY_LOOKUP_FILE: &str = "key-lookup.secret";

/// Whose a scoped key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A user's: acts as the user's current role, narrowed by its scopes.
    Personal,
    /// The org's: acts as its own role, narrowed by its scopes.
    Service,
}

impl KeyKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Personal => "personal",
            Self::Service => "service",
        }
    }

    /// The token's recognisable start.
    pub fn token_prefix(self) -> &'static str {
        match self {
            Self::Personal => "berth_pk_",
            Self::Service => "berth_sk_",
        }
    }
}

/// A new scoped token: its kind's prefix and 256 random bits in hex.
pub fn new_token(kind: KeyKind) -> String {
    format!("{}{}", kind.token_prefix(), random_hex(32))
}

/// How a key is shown: its kind's token prefix for newer keys, `berth_…` for keys made
/// before scopes (no part of any token is kept).
pub fn key_display_prefix(row: &KeyRow) -> &'static str {
    if !row.hash.is_empty() {
        return "berth_…";
    }
    if row.kind == KeyKind::Personal.as_str() {
        "berth_pk_…"
    } else {
        "berth_sk_…"
    }
}

/// Whether a string has the shape of a scoped token (else it may be an older key).
fn is_scoped_token(key: &str) -> bool {
    [KeyKind::Personal, KeyKind::Service].iter().any(|k| {
        key.strip_prefix(k.token_prefix())
            .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// The server secret scoped keys are found by: 32 random bytes in `DIR/key-lookup.secret`
/// (mode 0600), made on first use. Losing it makes every scoped key unknown (the older
/// keys, the bootstrap key among them, keep working).
pub struct KeyLookup {
    path: PathBuf,
    secret: OnceLock<[u8; 32]>,
}

impl KeyLookup {
    /// The lookup secret of a data dir (read or made on first use).
    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(KEY_LOOKUP_FILE),
            secret: OnceLock::new(),
        }
    }

    /// Reads (or makes) the secret now, so that a problem with the file stops the start.
    pub fn load(&self) -> anyhow::Result<&[u8; 32]> {
        if let Some(secret) = self.secret.get() {
            return Ok(secret);
        }
        let secret = read_or_make_secret(&self.path)?;
        Ok(self.secret.get_or_init(|| secret))
    }

    /// HMAC-SHA256 of a token under the secret, hex.
    pub fn digest(&self, token: &str) -> anyhow::Result<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.load()?).context("the key lookup secret")?;
        mac.update(token.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }
}

fn read_or_make_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    let parse = |text: &str| -> anyhow::Result<[u8; 32]> {
        let bytes = hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} must hold 64 hex digits", path.display()))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return parse(&text),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("reading {}", path.display()));
        }
        Err(_) => {}
    }
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    crate::util::write_new_private_file(path, hex::encode(secret).as_bytes())?;
    Ok(secret)
}

/// A freshly generated key string: `berth_<random>`.
pub fn generate_key() -> String {
    format!("berth_{}", random_hex(24))
}

/// The id a key is found by: a prefix of its SHA-256, so any string (including a
/// bootstrap key chosen by an operator) can be a key and the store never holds it.
pub fn lookup_id(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Hashes a key or token with argon2id and a random salt (PHC string).
pub fn hash_key(key: &str) -> anyhow::Result<String> {
    let mut salt_bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("making a salt: {e}"))?;
    Argon2::default()
        .hash_password(key.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing an API key: {e}"))
}

/// Creates an org with an API key that owns it with `role` (the server's bootstrap).
pub async fn create_org_with_key(
    store: &Store,
    org_id: &str,
    org_name: &str,
    key_name: &str,
    role: &str,
    key: &str,
) -> anyhow::Result<()> {
    let id = new_id("key");
    let hash = hash_key(key)?;
    let new_key = store::NewApiKey {
        id: &id,
        name: key_name,
        prefix: &lookup_id(key),
        hash: &hash,
        role,
    };
    store.create_org_with_key(org_id, org_name, &new_key).await?;
    Ok(())
}

/// A key verified against a stored hash: who it is, the hash it matched and when.
#[derive(Clone)]
struct Verified {
    actor: Actor,
    hash: String,
    at: Instant,
}

/// Resolves bearer keys to actors.
pub struct Authenticator {
    store: Store,
    cache: Mutex<HashMap<[u8; 32], Verified>>,
    throttle: Arc<AuthThrottle>,
    lookup: Arc<KeyLookup>,
    /// The `/mcp` URL OAuth access tokens must be bound to (their audience).
    mcp_resource: String,
}

impl Authenticator {
    /// An authenticator over the store, counting failures in `throttle`, finding scoped
    /// keys with `lookup`.
    pub fn new(store: Store, throttle: Arc<AuthThrottle>, lookup: Arc<KeyLookup>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
            throttle,
            lookup,
            mcp_resource: String::new(),
        }
    }

    /// The same, accepting OAuth access tokens bound to `resource` (the public `/mcp` URL).
    pub fn with_mcp_resource(mut self, resource: String) -> Self {
        self.mcp_resource = resource;
        self
    }

    /// The `/mcp` URL OAuth access tokens are bound to.
    pub fn mcp_resource(&self) -> &str {
        &self.mcp_resource
    }

    /// [`Self::authenticate_oauth`] for a client, throttled like API keys.
    pub async fn authenticate_oauth_from(&self, token: &str, client: IpAddr) -> ServiceResult<Actor> {
        let who = [Subject::address(client)];
        self.throttle
            .check(&who)
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        let result = self.authenticate_oauth(token).await;
        if matches!(result, Err(ServiceError::Unauthorized)) {
            self.throttle.failure(&who);
        }
        result
    }

    /// The actor of an OAuth access token: its grant's person acting as their *current*
    /// role, narrowed to the grant's scopes and sites (and production, when left out).
    /// `Unauthorized` for an unknown, expired or revoked token, a revoked grant, or a
    /// token bound to another resource.
    pub async fn authenticate_oauth(&self, token: &str) -> ServiceResult<Actor> {
        if !crate::model::is_oauth_access_token(token) || self.mcp_resource.is_empty() {
            return Err(ServiceError::Unauthorized);
        }
        let store = &self.store;
        let digest = self.lookup.digest(token)?;
        let row = store
            .oauth_token(&digest)
            .await?
            .filter(|t| t.kind == "access" && t.revoked_at.is_none() && t.expires_at > now_ms())
            .ok_or(ServiceError::Unauthorized)?;
        let grant = store
            .get_grant(&row.grant_id)
            .await?
            .filter(|g| g.revoked_at.is_none())
            .ok_or(ServiceError::Unauthorized)?;
        if grant.resource != self.mcp_resource {
            return Err(ServiceError::Unauthorized);
        }
        let mut actor = self.actor_of_member(&grant.org_id, &grant.user_id).await?;
        actor.kind = ActorKind::OauthClient;
        actor.key_id = grant.id.clone();
        actor.key_name = format!("OAuth: {}", grant.client_name);
        actor.scopes = Scope::parse_list(&grant.scopes);
        // A list that does not parse restricts to nothing rather than to all.
        actor.sites = grant
            .sites
            .as_deref()
            .map(|j| serde_json::from_str(j).unwrap_or_default());
        actor.expires_at = Some(row.expires_at);
        actor.grant = Some(crate::model::OAuthGrant {
            id: grant.id.clone(),
            client_name: grant.client_name,
            production: grant.production,
        });
        store.touch_grant(&grant.id).await?;
        Ok(actor)
    }

    /// [`Self::authenticate`] for a client: refused with `RateLimited` while the client's
    /// address is blocked (before the key is looked at), and a wrong key counts against it.
    pub async fn authenticate_from(&self, key: &str, client: IpAddr) -> ServiceResult<Actor> {
        let who = [Subject::address(client)];
        self.throttle
            .check(&who)
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        let result = self.authenticate(key).await;
        if matches!(result, Err(ServiceError::Unauthorized)) {
            self.throttle.failure(&who);
        }
        result
    }

    /// The actor of a key, or `Unauthorized` without saying why.
    pub async fn authenticate(&self, key: &str) -> ServiceResult<Actor> {
        if key.is_empty() || key.len() > 512 {
            return Err(ServiceError::Unauthorized);
        }
        if is_scoped_token(key) {
            let digest = self.lookup.digest(key)?;
            let row = self
                .store
                .find_key_by_hmac(&digest)
                .await?
                .ok_or(ServiceError::Unauthorized)?;
            let actor = self.actor_of_key(row).await?;
            self.store.touch_key(&actor.key_id).await?;
            return Ok(actor);
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let cached = self.cache.lock().expect("auth cache lock").get(&digest).cloned();
        if let Some(v) = &cached
            && v.at.elapsed() < CACHE_TTL
        {
            return Ok(v.actor.clone());
        }
        let row = self
            .store
            .find_key_by_prefix(&lookup_id(key))
            .await?
            .ok_or(ServiceError::Unauthorized)?;
        if row.revoked_at.is_some() {
            self.cache.lock().expect("auth cache lock").remove(&digest);
            return Err(ServiceError::Unauthorized);
        }
        // The same key (same SHA-256) against the same stored hash verifies the same way:
        // only a changed hash needs argon2 again.
        let already = cached.is_some_and(|v| v.hash == row.hash);
        if !already {
            let hash = row.hash.clone();
            let candidate = key.to_string();
            let ok = tokio::task::spawn_blocking(move || verify_hash(&hash, &candidate))
                .await
                .map_err(|e| ServiceError::Internal(e.into()))?;
            if !ok {
                return Err(ServiceError::Unauthorized);
            }
        }
        let hash = row.hash.clone();
        let actor = self.actor_of_key(row).await?;
        self.store.touch_key(&actor.key_id).await?;
        let mut cache = self.cache.lock().expect("auth cache lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        let verified = Verified {
            actor: actor.clone(),
            hash,
            at: Instant::now(),
        };
        cache.insert(digest, verified);
        Ok(actor)
    }

    /// What a key row may do now: `Unauthorized` once it is revoked or expired, or when
    /// its owner left the org; a personal key acts as its owner's current role.
    pub async fn actor_of_key(&self, row: KeyRow) -> ServiceResult<Actor> {
        let store = &self.store;
        if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(ServiceError::Unauthorized);
        }
        let org = store.get_org(&row.org_id).await?.ok_or(ServiceError::Unauthorized)?;
        let (role, user) = match (row.kind.as_str(), &row.user_id) {
            ("personal", Some(user_id)) => {
                let role = store
                    .member_role(&org.id, user_id)
                    .await?
                    .and_then(|r| Role::parse(&r))
                    .ok_or(ServiceError::Unauthorized)?;
                let user = store.get_user(user_id).await?.ok_or(ServiceError::Unauthorized)?;
                (role, Some(user))
            }
            ("service", None) => (Role::parse(&row.role).ok_or(ServiceError::Unauthorized)?, None),
            _ => return Err(ServiceError::Unauthorized),
        };
        let names = |json: &Option<String>| -> Option<Vec<String>> {
            // A restriction that does not parse restricts to nothing rather than to all.
            json.as_deref().map(|j| serde_json::from_str(j).unwrap_or_default())
        };
        let key_prefix = key_display_prefix(&row);
        Ok(Actor {
            kind: ActorKind::Key,
            org_id: org.id,
            org_name: org.name,
            key_id: row.id,
            key_name: row.name,
            key_prefix: Some(key_prefix),
            role,
            scopes: Scope::parse_list(&row.scopes),
            user_id: user.as_ref().map(|u| u.id.clone()),
            user_email: user.map(|u| u.email),
            sites: names(&row.sites),
            environments: names(&row.environments),
            expires_at: row.expires_at,
            grant: None,
        })
    }

    /// A member acting through the dashboard: their current role, every scope.
    pub async fn actor_of_member(&self, org_id: &str, user_id: &str) -> ServiceResult<Actor> {
        let store = &self.store;
        let org = store.get_org(org_id).await?.ok_or(ServiceError::Unauthorized)?;
        let role = store
            .member_role(org_id, user_id)
            .await?
            .and_then(|r| Role::parse(&r))
            .ok_or(ServiceError::Unauthorized)?;
        let user = store.get_user(user_id).await?.ok_or(ServiceError::Unauthorized)?;
        Ok(Actor {
            kind: ActorKind::User,
            org_id: org.id,
            org_name: org.name,
            key_id: user.id.clone(),
            key_name: "dashboard".into(),
            key_prefix: None,
            role,
            scopes: Scope::ALL.to_vec(),
            user_id: Some(user.id),
            user_email: Some(user.email),
            sites: None,
            environments: None,
            expires_at: None,
            grant: None,
        })
    }

    /// The actor of a dashboard session, read again on every request.
    pub async fn actor_of_session(&self, row: &SessionRow) -> ServiceResult<Actor> {
        let actor = match (&row.key_id, &row.user_id) {
            (Some(key_id), None) => {
                let key = self.store.get_key(key_id).await?.ok_or(ServiceError::Unauthorized)?;
                self.actor_of_key(key).await?
            }
            (None, Some(user_id)) => self.actor_of_member(&row.org_id, user_id).await?,
            _ => return Err(ServiceError::Unauthorized),
        };
        if actor.org_id != row.org_id {
            return Err(ServiceError::Unauthorized);
        }
        Ok(actor)
    }

    /// Dashboard login by email and password: refused with `RateLimited` while the client's
    /// address or the account is blocked; a failure counts against both. Answers the same
    /// (and takes as long) for an unknown email as for a wrong password.
    pub async fn login_password(&self, email: &str, password: &str, client: IpAddr) -> ServiceResult<Actor> {
        let email = email.trim().to_lowercase();
        let who = [Subject::address(client), Subject::Account(format!("user:{email}"))];
        self.throttle
            .check(&who)
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        let user = if email.len() > 320 || password.len() > 1024 {
            None
        } else {
            self.store.find_user_by_email(&email).await?
        };
        let hash = user
            .as_ref()
            .map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
        let candidate = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_hash(&hash, &candidate))
            .await
            .map_err(|e| ServiceError::Internal(e.into()))?;
        let member = match user {
            Some(user) if ok => self.store.first_org_of(&user.id).await?.map(|org| (org, user.id)),
            _ => None,
        };
        let Some((org_id, user_id)) = member else {
            self.throttle.failure(&who);
            return Err(ServiceError::Unauthorized);
        };
        self.actor_of_member(&org_id, &user_id).await
    }
}

/// A hash no password matches, verified for unknown emails so that they take as long.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_key(&random_hex(16)).unwrap_or_default())
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Checks a new password's length and hashes it with argon2id.
pub fn hash_password(password: &str) -> ServiceResult<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ServiceError::invalid(
            "password",
            format!(
                "the password has {chars} characters; use at least {MIN_PASSWORD_CHARS} (a passphrase of a few words is easiest)"
            ),
        ));
    }
    if password.len() > 1024 {
        return Err(ServiceError::invalid("password", "the password is over 1024 bytes"));
    }
    Ok(hash_key(password)?)
}

/// Whether `candidate` matches an argon2id PHC hash (slow by design: call off the runtime).
pub fn verify_hash(hash: &str, candidate: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(candidate.as_bytes(), &parsed).is_ok())
}

/// Extracts the key from an `Authorization: Bearer <key>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn lookup_ids_differ_and_keys_are_random() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_ne!(lookup_id(&a), lookup_id(&b));
        assert_eq!(lookup_id(&a).len(), 16);
    }
}
