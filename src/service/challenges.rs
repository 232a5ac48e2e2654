//! HTTP-01 and TLS-ALPN-01 challenges answered by every replica's edge. Behind a load
//! balancer the CA's validation request may reach any replica, not only the one that
//! ordered the certificate (the holder of the certificate loop's lease), so a challenge is
//! published into the database ([`Store::publish_acme_challenge`], with its event) and
//! every replica loads the live set into its edge ([`apply`]): at start, on each challenge
//! event ([`follow`]), and every [`RECHECK`] (expired rows drop out). Each replica makes
//! its own TLS-ALPN-01 certificate from the stored key authorization. After applying, a
//! replica records the newest event its edge reflects; the ordering replica tells the CA a
//! challenge is ready once every other live replica has recorded its event, or after
//! [`CONFIRM_WAIT`] (logging the replicas that did not confirm). On SQLite (one server)
//! nothing waits. Rows expire [`CHALLENGE_TTL`] after publishing, whatever became of the
//! order (its replica may have been killed), and are swept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::acme::{self, Challenge, ChallengeKind};
use crate::platform::Platform;
use crate::store::acme_challenges::{AcmeChallengeRow, CHALLENGES_SUBJECT, ChallengePublished, ChallengeWithdrawn};
use crate::store::{Backend, Store};
use crate::util::now_ms;

/// How long a published challenge is answered at most: an order's longest time and a
/// margin, so a challenge whose order never withdrew it (its replica died) goes.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(acme::ORDER_TIMEOUT.as_secs() + 60);
/// Longest the ordering replica waits for the other live replicas' edges to apply a
/// challenge before it tells the CA anyway.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// How often a replica reloads the challenges without an event (expired ones drop out).
const RECHECK: Duration = Duration::from_secs(30);
/// How often the ordering replica looks at the others' confirmations.
const CONFIRM_POLL: Duration = Duration::from_millis(100);

/// Loads every live challenge of the database into this replica's edge (replacing what
/// it answered) and records the newest event it reflects. Calls are one at a time, and
/// each reads after every earlier call's read, so the last applied set is never older
/// than the last publish of this process.
pub async fn apply(platform: &Platform) -> anyhow::Result<()> {
    let store = &platform.store;
    let mut keys = platform.certificates.challenge_keys.lock().await;
    // Read first: events commit in id order, so every challenge change up to it is
    // visible to the reads below.
    let cursor = store.latest_event_id().await?;
    let now = now_ms();
    let limit = berth_edge::MAX_CHALLENGES as i64;
    let http = store
        .live_acme_challenges(ChallengeKind::Http01.as_str(), now, limit)
        .await?;
    let alpn = store
        .live_acme_challenges(ChallengeKind::TlsAlpn01.as_str(), now, limit)
        .await?;
    let mut made = HashMap::with_capacity(alpn.len());
    let mut alpn_keys = Vec::with_capacity(alpn.len());
    for row in alpn.into_iter().rev() {
        let id = (row.name.clone(), row.key_authorization.clone());
        let key = match keys.remove(&id) {
            Some(key) => key,
            None => match alpn_key(&row) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(name = %row.name, error = %e, "a TLS-ALPN-01 challenge certificate cannot be made; not answered");
                    continue;
                }
            },
        };
        alpn_keys.push((row.name.clone(), key.clone()));
        made.insert(id, key);
    }
    *keys = made;
    let http_count = http.len();
    platform.edge.replace_challenges(
        http.into_iter().rev().map(|r| (r.token, r.key_authorization)),
        alpn_keys,
    );
    tracing::debug!(
        http = http_count,
        alpn = keys.len(),
        cursor,
        "ACME challenges applied to the edge"
    );
    store.record_challenges_applied(&platform.replica_id, cursor).await?;
    Ok(())
}

/// The TLS-ALPN-01 certificate for a stored challenge: the key authorization's SHA-256
/// in the certificate made by [`acme::tls_alpn_certificate`].
fn alpn_key(row: &AcmeChallengeRow) -> Result<Arc<berth_edge::CertifiedKey>, String> {
    let digest: [u8; 32] = sha2::Sha256::digest(row.key_authorization.as_bytes()).into();
    let (chain, key) = acme::tls_alpn_certificate(&row.name, &digest)?;
    berth_edge::challenge_key_from_pem(&chain, &key)
}

/// Applies the challenges at start (an order may be in flight on another replica), then
/// on every challenge event any replica writes, and every [`RECHECK`], until `stop`.
pub async fn follow(platform: Arc<Platform>, stop: CancellationToken) {
    let bus = platform.events.clone();
    let Some(mut cursor) = bus.first_cursor(&stop).await else {
        return;
    };
    loop {
        if let Err(err) = apply(&platform).await {
            tracing::warn!(error = %format!("{err:#}"), "loading ACME challenges into the edge failed; retrying");
        }
        let batch = tokio::select! {
            b = bus.next(CHALLENGES_SUBJECT, cursor, RECHECK) => b,
            _ = stop.cancelled() => return,
        };
        match batch {
            Ok(events) => {
                if let Some(last) = events.last() {
                    cursor = last.id;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "following challenge events failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(crate::events::POLL) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Publishes an HTTP-01 or TLS-ALPN-01 challenge to every replica's edge; returns once
/// this replica's edge answers it and every other live replica confirmed (or
/// [`CONFIRM_WAIT`] passed).
pub async fn publish(platform: &Platform, challenge: &Challenge) -> Result<(), String> {
    let now = now_ms();
    let row = AcmeChallengeRow {
        kind: challenge.kind.as_str().to_string(),
        name: challenge.name.clone(),
        token: challenge.token.clone(),
        key_authorization: challenge.key_authorization.clone(),
        created_at: now,
        expires_at: now + CHALLENGE_TTL.as_millis() as i64,
    };
    let ChallengePublished::Published { event } = platform
        .store
        .publish_acme_challenge(&row)
        .await
        .map_err(|e| format!("storing the {} challenge for {}: {e}", row.kind, row.name))?;
    platform.events.notify();
    apply(platform).await.map_err(|e| {
        format!(
            "loading the {} challenge for {} into the edge: {e:#}",
            row.kind, row.name
        )
    })?;
    confirmed(&platform.store, &platform.replica_id, event, &row.name).await;
    Ok(())
}

/// Withdraws a challenge from every replica's edge.
pub async fn withdraw(platform: &Platform, challenge: &Challenge) {
    let (kind, name, token) = (challenge.kind.as_str(), &challenge.name, &challenge.token);
    match platform.store.withdraw_acme_challenge(kind, name, token).await {
        Ok(ChallengeWithdrawn::Withdrawn { .. }) => platform.events.notify(),
        Ok(ChallengeWithdrawn::Absent) => {}
        Err(e) => {
            tracing::warn!(name = %name, kind, error = %e, "withdrawing a challenge failed; it expires on its own");
        }
    }
    if let Err(e) = apply(platform).await {
        tracing::warn!(error = %format!("{e:#}"), "reloading ACME challenges into the edge failed");
    }
}

/// Waits until every live replica other than `me` applied the challenge event `event`,
/// at most [`CONFIRM_WAIT`]; logs the ones that did not. Nothing waits on SQLite.
async fn confirmed(store: &Store, me: &str, event: i64, name: &str) {
    if store.backend() == Backend::Sqlite {
        return;
    }
    let deadline = tokio::time::Instant::now() + CONFIRM_WAIT;
    loop {
        let behind = store
            .replicas_behind_on_challenges(me, crate::replicas::live_since(), event)
            .await;
        match behind {
            Ok(behind) if behind.is_empty() => return,
            Ok(behind) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(
                    name = %name,
                    replicas = %behind.join(", "),
                    "these replicas did not confirm the ACME challenge within {} s; telling the CA it is ready anyway (their edges may not answer it)",
                    CONFIRM_WAIT.as_secs()
                );
                return;
            }
            Ok(_) => {}
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(name = %name, error = %e, "reading the replicas' challenge confirmations failed; telling the CA it is ready anyway");
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
}
