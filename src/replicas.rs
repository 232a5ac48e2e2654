//! The `berth serve` processes on one database. Each writes a heartbeat every
//! [`HEARTBEAT`] into the `replicas` table while it runs and removes its row when it stops;
//! a replica is live while its heartbeat is younger than [`LIVE_WITHIN`] (so one killed
//! with `kill -9` stops counting after that long). The local target runs apps on its own
//! machine only, so on Postgres deploys to it are refused while more than one replica is
//! live (see [`local_target_refusal`]); on SQLite the data-dir lock already keeps one server
//! on the database. Refusing deploys rather than refusing to start: a replica that sees a
//! killed one's heartbeat for a few seconds still starts, sites on shared targets keep
//! deploying, and the error reaches the one who asked for the local deploy with its fix.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::util::now_ms;

/// How often a replica writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a replica counts as live after its last heartbeat.
pub const LIVE_WITHIN: Duration = Duration::from_secs(20);

/// Writes this replica's heartbeat once (call before serving, so others count it at once).
pub async fn announce(store: &Store, id: &str) -> sqlx::Result<()> {
    store.beat_replica(id).await
}

/// A replica silent this long is forgotten (its row deleted): it was killed, or lost the
/// database, and starts with a new row when it comes back.
pub const FORGET_AFTER: Duration = Duration::from_secs(200);

/// Writes this replica's heartbeat every [`HEARTBEAT`] until `stop`, then removes its row;
/// on the way, about once a minute, the rows of replicas silent for [`FORGET_AFTER`].
pub async fn run_heartbeat(store: Store, id: String, stop: CancellationToken) {
    let sweep_every = (60 / HEARTBEAT.as_secs()).max(1);
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = stop.cancelled() => break,
        }
        if let Err(err) = store.beat_replica(&id).await {
            tracing::warn!(error = %err, "writing the replica heartbeat failed");
        }
        beats += 1;
        if beats.is_multiple_of(sweep_every) {
            forget_silent(&store).await;
        }
    }
    if let Err(err) = store.remove_replica(&id).await {
        tracing::warn!(error = %err, "removing this replica's heartbeat failed");
    }
    forget_silent(&store).await;
}

/// Deletes the rows of replicas silent for [`FORGET_AFTER`].
async fn forget_silent(store: &Store) {
    let before = now_ms() - FORGET_AFTER.as_millis() as i64;
    match store.forget_silent_replicas(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(replicas = n, "forgot replicas silent for 200 s (killed or cut off)"),
        Err(err) => tracing::warn!(error = %err, "forgetting silent replicas failed"),
    }
}

/// The oldest heartbeat that still counts a replica as live.
pub fn live_since() -> i64 {
    now_ms() - LIVE_WITHIN.as_millis() as i64
}

/// Why a deploy to the local target must be refused now: `Some(message)` while other
/// replicas than `me` are live on this database.
pub async fn local_target_refusal(store: &Store, me: &str) -> sqlx::Result<Option<String>> {
    let live = store.live_replicas(live_since()).await?;
    let others = live.iter().filter(|id| id.as_str() != me).count();
    Ok((others > 0).then(|| local_target_refusal_message(others)))
}

/// The refusal of a deploy to the local target while `others` other replicas are live.
pub fn local_target_refusal_message(others: usize) -> String {
    format!(
        "the local target runs apps on the machine of the berth server that deploys them, and {} berth servers share this database, so the others could not serve them; deploy to a target every server reaches instead (docker on an engine they share, or kubernetes): create the site with \"provider\": \"docker\" or change it with HOSTING_UPDATE_SITE {{\"provider\": \"docker\"}}, or run a single server",
        others + 1
    )
}
