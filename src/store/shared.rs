//! SQL of shared targets: the installation's values that every replica of one database
//! shares (the `berth.owner` of its containers), and the instances the holder of a shared
//! target's lease runs, recorded for the other replicas' edges; when the other replicas'
//! edges last served each of those environments, for the holder's idle timers.

use std::collections::HashMap;

use serde_json::json;
use sqlx::FromRow;

use super::Store;
use crate::util::now_ms;

/// Most rows read of one target's recorded instances (desired deployments × instances),
/// and of the other replicas' edge activity (environments).
pub const MAX_SHARED_INSTANCES: i64 = 20_000;

/// Rows of edge activity written by one statement.
const ACTIVITY_ROWS_PER_STATEMENT: usize = 200;

/// The state of a recorded instance, as the lease holder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedState {
    /// Starting or restarting: not routed yet.
    Starting,
    /// Passing its health check: routed.
    Healthy,
    /// Frozen by scale to zero.
    Paused,
    /// Crashed and not coming back by itself.
    Crashed,
}

impl SharedState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Paused => "paused",
            Self::Crashed => "crashed",
        }
    }

    /// The state of a stored name (an unknown one reads as starting: not routed).
    pub fn parse(s: &str) -> Self {
        match s {
            "healthy" => Self::Healthy,
            "paused" => Self::Paused,
            "crashed" => Self::Crashed,
            _ => Self::Starting,
        }
    }
}

/// One instance as the lease holder records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedInstance {
    /// Instance index within the deployment.
    pub index: u32,
    /// Where it answers (every replica reaches the shared engine's containers there).
    pub addr: Option<std::net::SocketAddr>,
    /// Its state.
    pub state: SharedState,
}

/// A recorded instance, as stored.
#[derive(Clone, Debug, FromRow)]
pub struct SharedInstanceRow {
    /// Deployment id.
    pub deployment_id: String,
    /// Instance index.
    pub instance_index: i64,
    /// Address, `IP:PORT`.
    pub addr: Option<String>,
    /// State name (see [`SharedState`]).
    pub state: String,
}

impl SharedInstanceRow {
    /// The row as an instance (an unreadable address is none: not routed).
    pub fn instance(&self) -> SharedInstance {
        SharedInstance {
            index: u32::try_from(self.instance_index).unwrap_or(u32::MAX),
            addr: self.addr.as_deref().and_then(|a| a.parse().ok()),
            state: SharedState::parse(&self.state),
        }
    }
}

/// What an edge saw of one environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeActivity {
    /// The environment.
    pub environment_id: String,
    /// Its last request, ms since the epoch.
    pub last_request_at: i64,
    /// Its requests in flight.
    pub in_flight: i64,
}

/// Where a recorded deployment runs, for [`Store::record_shared_instances`].
#[derive(Clone, Copy, Debug)]
pub struct SharedPlacement<'a> {
    /// The shared target's name.
    pub target: &'a str,
    /// The org (of the event).
    pub org_id: &'a str,
    /// The environment it serves.
    pub environment_id: &'a str,
    /// The deployment.
    pub deployment_id: &'a str,
}

impl Store {
    /// The installation's value `name`, set to `first` by the first server that asks (on
    /// one database, every replica reads the same value from then on).
    pub async fn installation_value(&self, name: &str, first: &str) -> sqlx::Result<String> {
        sqlx::query("INSERT INTO installation (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(first)
            .execute(&self.pool)
            .await?;
        sqlx::query_scalar("SELECT value FROM installation WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
    }

    /// Replaces the recorded instances of a deployment on a shared target with
    /// `instances` (at most [`crate::runtime::MAX_INSTANCES`] are kept), with its
    /// `instances.recorded` event, which makes every replica's edge reload its routes.
    pub async fn record_shared_instances(
        &self,
        placement: SharedPlacement<'_>,
        instances: &[SharedInstance],
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM shared_instances WHERE deployment_id = $1")
            .bind(placement.deployment_id)
            .execute(&mut *tx)
            .await?;
        let now = now_ms();
        for instance in instances.iter().take(crate::runtime::MAX_INSTANCES as usize) {
            sqlx::query(
                "INSERT INTO shared_instances (deployment_id, instance_index, target, environment_id, addr, state, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(placement.deployment_id)
            .bind(i64::from(instance.index))
            .bind(placement.target)
            .bind(placement.environment_id)
            .bind(instance.addr.map(|a| a.to_string()))
            .bind(instance.state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let data = json!({ "environment_id": placement.environment_id, "target": placement.target });
        super::insert_event(
            &mut *tx,
            placement.org_id,
            crate::events::INSTANCES_RECORDED,
            placement.deployment_id,
            &data,
        )
        .await?;
        tx.commit().await
    }

    /// Asks the replica that runs a shared target to do `ask` for a deployment of it: an
    /// event acted on by that replica only.
    pub async fn ask_shared_holder(
        &self,
        org_id: &str,
        ask: crate::events::HolderAsk,
        deployment_id: &str,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::insert_event(&mut *tx, org_id, ask.kind(), deployment_id, &json!({})).await?;
        tx.commit().await
    }

    /// The recorded instances of a shared target's deployments.
    pub async fn shared_instances(&self, target: &str) -> sqlx::Result<Vec<SharedInstanceRow>> {
        sqlx::query_as(
            "SELECT deployment_id, instance_index, addr, state FROM shared_instances \
             WHERE target = $1 ORDER BY deployment_id, instance_index LIMIT $2",
        )
        .bind(target)
        .bind(MAX_SHARED_INSTANCES)
        .fetch_all(&self.pool)
        .await
    }

    /// Forgets the recorded instances of a deployment that no environment serves any more.
    pub async fn forget_shared_instances(&self, deployment_id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM shared_instances WHERE deployment_id = $1")
            .bind(deployment_id)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Records what this replica's edge saw of each environment in `seen` at `now` (ms): a
    /// later last request replaces an earlier one; the in-flight count is replaced.
    pub async fn record_edge_activity(&self, replica_id: &str, seen: &[EdgeActivity], now: i64) -> sqlx::Result<()> {
        for chunk in seen.chunks(ACTIVITY_ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, $1, ${}, ${}, $2)", 3 * i + 3, 3 * i + 4, 3 * i + 5))
                .collect();
            let sql = format!(
                "INSERT INTO edge_activity (environment_id, replica_id, last_request_at, in_flight, reported_at) \
                 VALUES {} ON CONFLICT (environment_id, replica_id) DO UPDATE SET \
                 last_request_at = CASE WHEN edge_activity.last_request_at < excluded.last_request_at \
                 THEN excluded.last_request_at ELSE edge_activity.last_request_at END, \
                 in_flight = excluded.in_flight, reported_at = excluded.reported_at",
                values.join(", ")
            );
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(replica_id).bind(now);
            for seen in chunk {
                query = query
                    .bind(seen.environment_id.as_str())
                    .bind(seen.last_request_at)
                    .bind(seen.in_flight);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// What the other replicas' edges saw, by environment id: the newest request of any,
    /// and the sum of their in-flight counts reported at or after `fresh_since` (ms).
    pub async fn edge_activity_elsewhere(
        &self,
        replica_id: &str,
        fresh_since: i64,
    ) -> sqlx::Result<HashMap<String, EdgeActivity>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT environment_id, MAX(last_request_at), \
             CAST(SUM(CASE WHEN reported_at >= $2 THEN in_flight ELSE 0 END) AS BIGINT) \
             FROM edge_activity WHERE replica_id <> $1 GROUP BY environment_id LIMIT $3",
        )
        .bind(replica_id)
        .bind(fresh_since)
        .bind(MAX_SHARED_INSTANCES)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(environment_id, last_request_at, in_flight)| {
                let seen = EdgeActivity {
                    environment_id: environment_id.clone(),
                    last_request_at,
                    in_flight,
                };
                (environment_id, seen)
            })
            .collect())
    }

    /// Forgets edge activity older than `before` (ms): deleted environments' and gone
    /// replicas' rows.
    pub async fn prune_edge_activity(&self, before: i64) -> sqlx::Result<u64> {
        sqlx::query("DELETE FROM edge_activity WHERE last_request_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }

    /// Deployments being started now by a deploy on any replica (their containers are
    /// not leftovers).
    pub async fn deployments_deploying(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM deployments WHERE status = 'deploying' ORDER BY id LIMIT 1000")
            .fetch_all(&self.pool)
            .await
    }
}
