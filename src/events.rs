//! The event bus is the `events` table. Every state change is written there with the
//! change (in its transaction) under an id that only grows, the cursor; readers (deploy
//! and domain waits, MCP progress, the deployment status stream) follow it by cursor, so a
//! change another process on the same database made reaches them as surely as this one's.
//! On Postgres a trigger notifies the `berth_events` channel when an insert into `events`
//! commits, and [`EventBus::listen`] keeps a listening connection (reconnecting after a
//! backoff of at most [`MAX_LISTEN_BACKOFF`]) that wakes this process's readers at once;
//! polling stays as the fallback. SQLite tells no other process of a commit: readers poll,
//! a few times a second, and an in-process notify wakes them at once for this process's own
//! changes. [`follow_routes`] follows every event and wakes this process's reconciler on a
//! change to what the edge routes, so a site another replica created, deployed, pointed or
//! deleted reaches this replica's edge within a poll. Readers take at
//! most [`READ_BATCH`] events at a time; events older than [`RETENTION_MS`], or beyond the
//! newest [`MAX_EVENTS`], are pruned by whichever process holds the pruning lease, and
//! so are finished jobs (done or failed) older than [`RETENTION_MS`], invitations
//! that ended more than [`INVITATION_RETENTION_MS`] ago, and OAuth grants revoked more
//! than [`GRANT_RETENTION_MS`] ago or unusable (code never exchanged, every token expired)
//! for more than [`UNUSED_GRANT_RETENTION_MS`]. Audit entries are kept
//! [`AUDIT_RETENTION_MS`], at most [`MAX_AUDIT_PER_ORG`] per org.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::jobs::Singleton;
use crate::store::{EventRow, Store};
use crate::util::now_ms;

/// How often a waiting reader looks for events written by other processes.
pub const POLL: Duration = Duration::from_millis(250);
/// The longest wait before the event listener tries its connection again.
pub const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(10);
/// The most events one read returns.
pub const READ_BATCH: i64 = 100;
/// How long events are kept.
pub const RETENTION_MS: i64 = 7 * 24 * 3_600_000;
/// How long an invitation that ended (accepted, revoked or expired) is kept.
pub const INVITATION_RETENTION_MS: i64 = 30 * 24 * 3_600_000;
/// How long an OAuth grant is kept after its revocation (with its tokens).
pub const GRANT_RETENTION_MS: i64 = 30 * 24 * 3_600_000;
/// How long an OAuth grant that can no longer be used (its code was never exchanged, or
/// every token of it expired) is kept once its code expired.
pub const UNUSED_GRANT_RETENTION_MS: i64 = 24 * 3_600_000;
/// How long an audit entry is kept (as long as the daily traffic rollups).
pub const AUDIT_RETENTION_MS: i64 = 400 * 24 * 3_600_000;
/// The most audit entries kept per org, whatever their age (the newest).
pub const MAX_AUDIT_PER_ORG: i64 = 1_000_000;
/// The most events kept, whatever their age.
pub const MAX_EVENTS: i64 = 100_000;
/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Reads the events table by cursor and wakes this process's readers.
#[derive(Clone, Debug)]
pub struct EventBus {
    store: Store,
    wake: Arc<Notify>,
}

impl EventBus {
    /// A bus over the store's events table.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes this process's readers: call after a transaction that wrote events commits.
    pub fn notify(&self) {
        self.wake.notify_waiters();
    }

    /// Resolves at this process's next wake of readers: an event this process committed,
    /// or on Postgres one any process committed (or a reconnect of the listener).
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// The current cursor, asked again every [`POLL`] while the database does not answer;
    /// `None` once `stop` is cancelled.
    pub async fn first_cursor(&self, stop: &CancellationToken) -> Option<i64> {
        loop {
            match self.cursor().await {
                Ok(c) => return Some(c),
                Err(err) => {
                    tracing::warn!(error = %err, "reading the event cursor failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// The newest event's cursor (0 when there is none): a reader starting now follows
    /// from here.
    pub async fn cursor(&self) -> sqlx::Result<i64> {
        self.store.latest_event_id().await
    }

    /// The events about `subject` after `after`, oldest first, at most [`READ_BATCH`]:
    /// waits up to `within` for the first one; empty when none came.
    pub async fn next(&self, subject: &str, after: i64, within: Duration) -> sqlx::Result<Vec<EventRow>> {
        self.next_of(Some(subject), after, within).await
    }

    /// [`EventBus::next`] for the events about any subject.
    pub async fn next_of_all(&self, after: i64, within: Duration) -> sqlx::Result<Vec<EventRow>> {
        self.next_of(None, after, within).await
    }

    async fn next_of(&self, subject: Option<&str>, after: i64, within: Duration) -> sqlx::Result<Vec<EventRow>> {
        let deadline = Instant::now() + within;
        loop {
            // Registered before the read: a notify between the read and the wait is kept.
            let notified = self.wake.notified();
            let events = match subject {
                Some(subject) => self.store.events_after(subject, after, READ_BATCH).await?,
                None => self.store.all_events_after(after, READ_BATCH).await?,
            };
            let now = Instant::now();
            if !events.is_empty() || now >= deadline {
                return Ok(events);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(POLL.min(deadline - now)) => {}
            }
        }
    }
}

impl EventBus {
    /// On Postgres, wakes this process's readers whenever any process commits an event,
    /// until `stop`; returns at once on SQLite. A lost connection is opened again (each
    /// failure doubles the wait, up to [`MAX_LISTEN_BACKOFF`]); readers are woken after
    /// every reconnect too, since notifications sent meanwhile are lost, and poll anyway.
    pub async fn listen(self, stop: CancellationToken) {
        let mut backoff = POLL;
        let mut listener = None;
        loop {
            if listener.is_none() {
                match self.store.listen_for_events().await {
                    Ok(None) => return,
                    Ok(Some(l)) => {
                        listener = Some(l);
                        backoff = POLL;
                        self.notify();
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, retry_ms = backoff.as_millis() as u64, "listening for events failed; readers poll meanwhile");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
                        continue;
                    }
                }
            }
            let Some(l) = listener.as_mut() else { continue };
            tokio::select! {
                received = l.try_recv() => match received {
                    Ok(Some(_)) => self.notify(),
                    // The connection dropped and was opened again.
                    Ok(None) => self.notify(),
                    Err(err) => {
                        tracing::warn!(error = %err, "the event listener's connection failed; reconnecting");
                        listener = None;
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// The holder of a shared target's lease recorded where a deployment's instances answer.
pub const INSTANCES_RECORDED: &str = "instances.recorded";

/// A replica that does not run a shared target asks the one that does to wake a sleeping
/// deployment of it (a request for it is held at the asking replica's edge).
pub const WAKE_REQUESTED: &str = "instances.wake_requested";

/// A replica that does not run a shared target asks the one that does to restart a
/// deployment's instances (its environment's variables changed).
pub const RESTART_REQUESTED: &str = "instances.restart_requested";

/// What a replica asks of the holder of a shared target's lease, about one deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderAsk {
    /// Wake it (see [`WAKE_REQUESTED`]).
    Wake,
    /// Restart its instances (see [`RESTART_REQUESTED`]).
    Restart,
}

impl HolderAsk {
    /// The event kind that carries the ask.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Wake => WAKE_REQUESTED,
            Self::Restart => RESTART_REQUESTED,
        }
    }

    /// The ask an event of `kind` carries, if any.
    pub fn of_kind(kind: &str) -> Option<Self> {
        [Self::Wake, Self::Restart].into_iter().find(|ask| ask.kind() == kind)
    }
}

/// Whether an event of `kind` can change what the edge routes (which deployment a host
/// serves, which hosts and domains exist, where a target's traffic goes).
pub fn affects_routes(kind: &str) -> bool {
    ["site.", "environment.", "domain.", "provider."]
        .iter()
        .any(|prefix| kind.starts_with(prefix))
        || matches!(
            kind,
            "deployment.live" | "deployment.superseded" | "deployment.crashed" | INSTANCES_RECORDED
        )
}

/// Follows every event from now on until `stop` and calls `changed` (which wakes this
/// process's reconciler and certificate loop) after each batch with a change to routes in
/// it, whichever process wrote it: every replica's edge routes every site, with the
/// certificates any replica issued. `asked` gets each ask of the holder of a shared
/// target ([`HolderAsk`]) with its deployment.
pub async fn follow_routes(
    bus: EventBus,
    changed: impl Fn() + Send,
    asked: impl Fn(HolderAsk, String) + Send,
    stop: CancellationToken,
) {
    let Some(mut cursor) = bus.first_cursor(&stop).await else {
        return;
    };
    loop {
        let batch = tokio::select! {
            b = bus.next_of_all(cursor, Duration::from_secs(30)) => b,
            _ = stop.cancelled() => return,
        };
        match batch {
            Ok(events) => {
                if let Some(last) = events.last() {
                    cursor = last.id;
                }
                if let Some(change) = events.iter().find(|e| affects_routes(&e.kind)) {
                    tracing::debug!(event.kind = %change.kind, event.subject = %change.subject, "a route change on the database: waking the reconciler");
                    changed();
                }
                for event in &events {
                    if let Some(ask) = HolderAsk::of_kind(&event.kind) {
                        asked(ask, event.subject.clone());
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "following events failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// The singleton lease pruning holds: one process on the database prunes.
pub const PRUNE_LEASE: &str = "prune-events";

/// Prunes old events every [`PRUNE_EVERY`] until `stop`, in passes only while this
/// process holds the lease of `singleton` (made with [`PRUNE_LEASE`] and a lease longer
/// than [`PRUNE_EVERY`], e.g. [`prune_lease`]).
pub async fn run_pruning(store: Store, singleton: Singleton, stop: CancellationToken) {
    loop {
        if singleton.hold().await {
            match store.prune_events(now_ms() - RETENTION_MS, MAX_EVENTS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned old events"),
                Err(err) => tracing::warn!(error = %err, "pruning old events failed"),
            }
            // So do the edges' reports of requests (deleted environments', gone replicas').
            if let Err(err) = store.prune_edge_activity(now_ms() - RETENTION_MS).await {
                tracing::warn!(error = %err, "pruning edge activity failed");
            }
            // Finished jobs go after the same time: their deployments keep the outcome.
            match store.prune_finished_jobs(now_ms() - RETENTION_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "pruned finished jobs"),
                Err(err) => tracing::warn!(error = %err, "pruning finished jobs failed"),
            }
            // Invitations that ended are kept a while for the members page, then go.
            match store
                .prune_finished_invitations(now_ms() - INVITATION_RETENTION_MS)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(invitations = n, "pruned ended invitations"),
                Err(err) => tracing::warn!(error = %err, "pruning ended invitations failed"),
            }
            // Grants that ended go with their codes and tokens; a grant shows among the
            // connected apps for a while after its revocation.
            let now = now_ms();
            let unused_before = now - UNUSED_GRANT_RETENTION_MS - crate::model::OAUTH_CODE_TTL_SECS * 1000;
            match store.prune_ended_grants(now - GRANT_RETENTION_MS, unused_before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(grants = n, "pruned ended OAuth grants"),
                Err(err) => tracing::warn!(error = %err, "pruning ended OAuth grants failed"),
            }
            // Challenges whose order never withdrew them (its replica was killed).
            match store.sweep_acme_challenges(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(challenges = n, "swept expired ACME challenges"),
                Err(err) => tracing::warn!(error = %err, "sweeping expired ACME challenges failed"),
            }
            match store.prune_audit(now - AUDIT_RETENTION_MS, MAX_AUDIT_PER_ORG).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "pruned old audit entries"),
                Err(err) => tracing::warn!(error = %err, "pruning old audit entries failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.cancelled() => {
                singleton.release().await;
                return;
            }
        }
    }
}

/// How long the pruning lease lasts: two passes, so a live holder keeps it.
pub fn prune_lease() -> Duration {
    PRUNE_EVERY * 2
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::EventBus;
    use crate::store::{self, Store};
    use crate::util::now_ms;

    #[tokio::test]
    async fn a_reader_is_woken_by_another_connection_and_old_events_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        let bus = EventBus::new(store.clone());
        let start = bus.cursor().await.unwrap();
        let data = serde_json::json!({});
        // Another process's connection to the same file.
        let other = Store::open_sqlite(&path).await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            other
                .record_event("org", "deployment.live", "dpl_other", &data)
                .await
                .unwrap()
        });
        let seen = bus.next("dpl_other", start, Duration::from_secs(5)).await.unwrap();
        let id = writer.await.unwrap();
        assert_eq!(seen.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
        assert_eq!(seen[0].kind, "deployment.live");
        // Nothing newer: the reader gives up at its deadline.
        assert!(
            bus.next("dpl_other", id, Duration::from_millis(300))
                .await
                .unwrap()
                .is_empty()
        );

        // Pruning: by age, then by count (the newest are kept).
        sqlx::query("UPDATE events SET created_at = 1 WHERE id = $1")
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
        for n in 0..5 {
            store
                .record_event("org", "x", &format!("s{n}"), &serde_json::json!({}))
                .await
                .unwrap();
        }
        assert_eq!(store.prune_events(now_ms() - 60_000, 3).await.unwrap(), 3);
        let left: Vec<String> = sqlx::query_scalar("SELECT subject FROM events ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(left, ["s2", "s3", "s4"]);
    }

    #[tokio::test]
    async fn only_finished_jobs_older_than_the_retention_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("jobs.db")).await.unwrap();
        let payload = serde_json::json!({});
        let mut ids = Vec::new();
        for (n, status, old) in [
            (0, "done", true),
            (1, "failed", true),
            (2, "done", false),
            (3, "pending", true),
            (4, "running", true),
        ] {
            let job = store::NewJob {
                kind: "deploy",
                payload: payload.clone(),
                max_attempts: 3,
                idempotency_key: Some(format!("k{n}")),
                fair_key: None,
            };
            let id = store.enqueue_job("org", &job).await.unwrap();
            let updated = if old { 1 } else { now_ms() };
            sqlx::query("UPDATE jobs SET status = $1, updated_at = $2 WHERE id = $3")
                .bind(status)
                .bind(updated)
                .bind(id)
                .execute(store.pool())
                .await
                .unwrap();
            ids.push(id);
        }
        let gone = store.prune_finished_jobs(now_ms() - 60_000).await.unwrap();
        assert_eq!(gone, 2);
        let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(left, ids[2..]);
    }

    #[tokio::test]
    async fn only_invitations_that_ended_before_the_cutoff_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("inv.db")).await.unwrap();
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ('org', 'org', 1)")
            .execute(store.pool())
            .await
            .unwrap();
        let now = now_ms();
        // (id, expires_at, accepted_at, revoked_at)
        let rows: [(&str, i64, Option<i64>, Option<i64>); 6] = [
            ("accepted_long_ago", now + 1_000_000, Some(10), None),
            ("revoked_long_ago", now + 1_000_000, None, Some(10)),
            ("expired_long_ago", 10, None, None),
            ("accepted_lately", now + 1_000_000, Some(now), None),
            ("expired_lately", now - 1_000, None, None),
            ("pending", now + 1_000_000, None, None),
        ];
        for (id, expires, accepted, revoked) in rows {
            sqlx::query(
                "INSERT INTO invitations (id, org_id, email, role, token_hmac, invited_by, created_at, \
                 expires_at, accepted_at, revoked_at) VALUES ($1, 'org', 'a@b.test', 'viewer', $2, 'x', 1, $3, $4, $5)",
            )
            .bind(id)
            .bind(id)
            .bind(expires)
            .bind(accepted)
            .bind(revoked)
            .execute(store.pool())
            .await
            .unwrap();
        }
        let gone = store.prune_finished_invitations(now - 60_000).await.unwrap();
        assert_eq!(gone, 3);
        let left: Vec<String> = sqlx::query_scalar("SELECT id FROM invitations ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(left, ["accepted_lately", "expired_lately", "pending"]);
    }

    #[tokio::test]
    async fn audit_entries_beyond_the_age_or_an_orgs_cap_are_pruned_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("audit.db")).await.unwrap();
        for org in ["big", "small"] {
            sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, 1)")
                .bind(org)
                .bind(org)
                .execute(store.pool())
                .await
                .unwrap();
        }
        let now = now_ms();
        // (org, age in ms): ids grow with insertion, so "big"'s newest are its last three.
        let rows = [
            ("big", 10),
            ("small", 10),
            ("big", 1_000),
            ("big", 500),
            ("small", 500),
            ("big", 100),
            ("big", 50),
        ];
        for (org, age) in rows {
            sqlx::query(
                "INSERT INTO audit_log (org_id, key_id, action, arguments, outcome, created_at) \
                 VALUES ($1, 'k', 'HOSTING_DEPLOY', '{}', 'ok', $2)",
            )
            .bind(org)
            .bind(now - age * 60_000)
            .execute(store.pool())
            .await
            .unwrap();
        }
        // Older than 700 minutes goes (one row); "big" keeps its newest 3 of the 4 left.
        let gone = store.prune_audit(now - 700 * 60_000, 3).await.unwrap();
        assert_eq!(gone, 2);
        let left: Vec<(String, i64)> = sqlx::query_as("SELECT org_id, id FROM audit_log ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(
            left,
            [
                ("small".to_string(), 2),
                ("big".to_string(), 4),
                ("small".to_string(), 5),
                ("big".to_string(), 6),
                ("big".to_string(), 7),
            ]
        );
    }

    #[tokio::test]
    async fn ended_oauth_grants_are_pruned_with_their_codes_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("grants.db")).await.unwrap();
        let pool = store.pool();
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ('org', 'org', 1)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ('usr', 'a@b.test', 'x', 1)")
            .execute(pool)
            .await
            .unwrap();
        let now = now_ms();
        let day = 24 * 3_600_000;
        // (id, created_at, revoked_at)
        let grants: [(&str, i64, Option<i64>); 7] = [
            ("revoked_long_ago", 10, Some(10)),
            ("revoked_lately", 10, Some(now - day)),
            ("code_never_exchanged", now - 3 * day, None),
            ("code_just_issued", now, None),
            ("exchanged_in_use", now - 3 * day, None),
            ("exchanged_code_kept", now - 3 * day, None),
            ("tokens_all_cleared", now - 40 * day, None),
        ];
        for (id, created, revoked) in grants {
            sqlx::query(
                "INSERT INTO oauth_grants (id, org_id, user_id, client_id, client_name, scopes, production, \
                 resource, created_at, revoked_at) VALUES ($1, 'org', 'usr', 'c', 'c', 'sites:read', 1, 'r', $2, $3)",
            )
            .bind(id)
            .bind(created)
            .bind(revoked)
            .execute(pool)
            .await
            .unwrap();
        }
        // (grant, expires_at, used_at)
        let codes: [(&str, i64, Option<i64>); 4] = [
            ("revoked_long_ago", 20, Some(15)),
            ("code_never_exchanged", now - 3 * day + 60_000, None),
            ("code_just_issued", now + 60_000, None),
            ("exchanged_code_kept", now - 3 * day + 60_000, Some(now - 3 * day)),
        ];
        for (grant, expires, used) in codes {
            sqlx::query(
                "INSERT INTO oauth_codes (code_hmac, grant_id, redirect_uri, code_challenge, expires_at, used_at) \
                 VALUES ($1, $2, 'r', 'c', $3, $4)",
            )
            .bind(format!("code-{grant}"))
            .bind(grant)
            .bind(expires)
            .bind(used)
            .execute(pool)
            .await
            .unwrap();
        }
        // (grant, kind, expires_at)
        let tokens = [
            ("revoked_long_ago", "refresh", now + day),
            ("revoked_long_ago", "access", 10),
            ("exchanged_in_use", "refresh", now + day),
        ];
        for (n, (grant, kind, expires)) in tokens.into_iter().enumerate() {
            sqlx::query(
                "INSERT INTO oauth_tokens (token_hmac, grant_id, kind, created_at, expires_at) VALUES ($1, $2, $3, 1, $4)",
            )
            .bind(format!("token-{n}"))
            .bind(grant)
            .bind(kind)
            .bind(expires)
            .execute(pool)
            .await
            .unwrap();
        }
        let gone = store
            .prune_ended_grants(now - super::GRANT_RETENTION_MS, now - day - 60_000)
            .await
            .unwrap();
        assert_eq!(gone, 3);
        let left: Vec<String> = sqlx::query_scalar("SELECT id FROM oauth_grants ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(
            left,
            [
                "code_just_issued",
                "exchanged_code_kept",
                "exchanged_in_use",
                "revoked_lately"
            ]
        );
        let codes_left: Vec<String> = sqlx::query_scalar("SELECT grant_id FROM oauth_codes ORDER BY grant_id")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(codes_left, ["code_just_issued", "exchanged_code_kept"]);
        let tokens_left: Vec<String> = sqlx::query_scalar("SELECT grant_id FROM oauth_tokens")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(
            tokens_left,
            ["exchanged_in_use"],
            "a deleted grant's refresh tokens go with it"
        );
    }
}
