//! API keys: generated, shown once, stored as argon2id hashes and found by a lookup id
//! derived from the key. Verified keys are cached briefly in memory (keyed by a SHA-256 of
//! the key) so that MCP and edge-heavy clients don't pay argon2 on every request. When an
//! entry is older than a minute its key row is read again (revocation takes effect then);
//! argon2 runs again only when the stored hash changed, so a busy client does not pay a
//! verification every minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::store::{self, Store};
use crate::throttle::{AuthThrottle, Subject};
use crate::util::{new_id, random_hex};

const CACHE_TTL: Duration = Duration::from_secs(60);

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

/// Stores a new key for an org and returns its id.
pub async fn create_key(
    db: &mut sqlx::SqliteConnection,
    org_id: &str,
    name: &str,
    role: &str,
    key: &str,
) -> anyhow::Result<String> {
    let id = new_id("key");
    let hash = hash_key(key)?;
    store::insert_api_key(&mut *db, &id, org_id, name, &lookup_id(key), &hash, role).await?;
    Ok(id)
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
}

impl Authenticator {
    /// An authenticator over the store, counting failures in `throttle`.
    pub fn new(store: Store, throttle: Arc<AuthThrottle>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
            throttle,
        }
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
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let cached = self.cache.lock().expect("auth cache lock").get(&digest).cloned();
        if let Some(v) = &cached
            && v.at.elapsed() < CACHE_TTL
        {
            return Ok(v.actor.clone());
        }
        let row = store::find_api_key(self.store.pool(), &lookup_id(key))
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
            let ok = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash)
                    .is_ok_and(|parsed| Argon2::default().verify_password(candidate.as_bytes(), &parsed).is_ok())
            })
            .await
            .map_err(|e| ServiceError::Internal(e.into()))?;
            if !ok {
                return Err(ServiceError::Unauthorized);
            }
        }
        let org = store::get_org(self.store.pool(), &row.org_id)
            .await?
            .ok_or(ServiceError::Unauthorized)?;
        let actor = Actor {
            org_id: org.id,
            org_name: org.name,
            key_id: row.id,
            key_name: row.name,
            role: row.role,
        };
        let mut cache = self.cache.lock().expect("auth cache lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        let verified = Verified {
            actor: actor.clone(),
            hash: row.hash,
            at: Instant::now(),
        };
        cache.insert(digest, verified);
        Ok(actor)
    }
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
