//! SQL of log retention: each environment's running total of stored log bytes
//! (`log_usage`, kept by [`super::append_logs`] and by a trigger when a deployment goes),
//! and the bounded deletes that keep it under its size and age.
//!
//! Every statement here reads or deletes through an index: an environment's oldest lines
//! through `deployment_logs_by_environment`, the oldest lines of all through the rowid.

use std::collections::HashMap;

use sqlx::AnyExecutor;

/// What a line costs beside its text: its record (ids, time, kind) and its two index
/// entries, as measured (about 250 bytes a line), so that a bound on bytes is a bound on
/// the database too.
pub const LINE_RECORD_BYTES: i64 = 256;

/// What a line costs toward its environment's retention.
pub fn line_cost(line: &str) -> i64 {
    line.len() as i64 + LINE_RECORD_BYTES
}

/// Kinds of lines in the order the size bound removes them: runtime lines first, so a
/// build's log (a failed one's too) stays readable while only runtime output piles up.
const TRIM_ORDER: [&str; 2] = ["runtime", "build"];

/// What one [`trim_environment`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Lines removed.
    pub lines: u64,
    /// The environment's stored bytes after it.
    pub bytes: i64,
    /// Whether it is still over the target (call again).
    pub more: bool,
}

impl super::Store {
    /// Removes an environment's oldest lines, at most `chunk` of them, until what it keeps
    /// costs at most `target` bytes: runtime lines first (of every deployment, superseded
    /// ones included, oldest first), build lines only once no runtime line is left. One
    /// transaction; its reads and its delete go through `deployment_logs_by_environment`.
    pub async fn trim_environment_logs(&self, environment_id: &str, target: i64, chunk: i64) -> sqlx::Result<Trimmed> {
        let store = self;
        let mut tx = store.begin().await?;
        let Some(mut bytes) = sqlx::query_scalar::<_, i64>("SELECT bytes FROM log_usage WHERE environment_id = $1")
            .bind(environment_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Trimmed::default());
        };
        let mut lines = 0u64;
        let mut budget = chunk;
        for kind in TRIM_ORDER {
            if bytes <= target || budget == 0 {
                break;
            }
            let oldest: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT id, bytes FROM deployment_logs WHERE environment_id = $1 AND kind = $2 ORDER BY id LIMIT $3",
            )
            .bind(environment_id)
            .bind(kind)
            .bind(budget)
            .fetch_all(&mut *tx)
            .await?;
            let (mut last, mut freed, mut n) = (None, 0i64, 0i64);
            for (id, cost) in &oldest {
                if bytes - freed <= target {
                    break;
                }
                freed += cost;
                n += 1;
                last = Some(*id);
            }
            if let Some(last) = last {
                sqlx::query("DELETE FROM deployment_logs WHERE environment_id = $1 AND kind = $2 AND id <= $3")
                    .bind(environment_id)
                    .bind(kind)
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
                bytes -= freed;
                lines += n as u64;
            }
            if oldest.len() as i64 == budget {
                // This kind may have older lines left: the next kind waits for the next call.
                break;
            }
            budget -= n;
        }
        if bytes > target && lines == 0 {
            // Nothing left to remove yet still over: the total drifted (a line removed
            // outside these paths); it becomes what is actually stored.
            bytes = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM deployment_logs \
                 WHERE environment_id = $1 AND kind IN ('runtime', 'build')",
            )
            .bind(environment_id)
            .fetch_one(&mut *tx)
            .await?;
        }
        set_usage(&mut *tx, environment_id, bytes).await?;
        tx.commit().await?;
        Ok(Trimmed {
            lines,
            bytes,
            more: bytes > target && lines > 0,
        })
    }
}

async fn set_usage(db: impl AnyExecutor<'_>, environment_id: &str, bytes: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE log_usage SET bytes = $1 WHERE environment_id = $2")
        .bind(bytes.max(0))
        .bind(environment_id)
        .execute(db)
        .await
        .map(drop)
}

impl super::Store {
    /// Removes lines written before `before_ms` among the `chunk` oldest ids of all (rowids
    /// follow time), and takes what they cost off their environments' totals. Returns how
    /// many were removed: call again while that is not zero.
    pub async fn expire_logs(&self, before_ms: i64, chunk: i64) -> sqlx::Result<u64> {
        let store = self;
        let mut tx = store.begin().await?;
        let Some(first) = sqlx::query_scalar::<_, Option<i64>>("SELECT MIN(id) FROM deployment_logs")
            .fetch_one(&mut *tx)
            .await?
        else {
            return Ok(0);
        };
        let removed: Vec<(Option<String>, i64)> = sqlx::query_as(
            "DELETE FROM deployment_logs WHERE id >= $1 AND id < $2 AND ts < $3 RETURNING environment_id, bytes",
        )
        .bind(first)
        .bind(first.saturating_add(chunk))
        .bind(before_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut freed: HashMap<String, i64> = HashMap::new();
        for (env, bytes) in &removed {
            if let Some(env) = env {
                *freed.entry(env.clone()).or_default() += bytes;
            }
        }
        for (env, bytes) in freed {
            sqlx::query(
                "UPDATE log_usage SET bytes = CASE WHEN bytes > $1 THEN bytes - $1 ELSE 0 END WHERE environment_id = $2",
            )
            .bind(bytes)
            .bind(&env)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(removed.len() as u64)
    }

    /// Environments storing more than `bytes` of log (a lowered setting, or a trim the
    /// writer left unfinished): the sweep's work list, from the small totals table.
    pub async fn environments_over(&self, bytes: i64) -> sqlx::Result<Vec<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT environment_id FROM log_usage WHERE bytes > $1")
            .bind(bytes)
            .fetch_all(db)
            .await
    }

    /// Stored log bytes of each environment of a site, by environment name.
    pub async fn site_log_bytes(&self, site_id: &str) -> sqlx::Result<Vec<(String, i64)>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT e.name, COALESCE(u.bytes, 0) FROM environments e LEFT JOIN log_usage u ON u.environment_id = e.id \
             WHERE e.site_id = $1 ORDER BY e.name",
        )
        .bind(site_id)
        .fetch_all(db)
        .await
    }

    /// Ids of a site's deployments (whose folders its disk usage sums).
    pub async fn site_deployment_ids(&self, site_id: &str) -> sqlx::Result<Vec<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT id FROM deployments WHERE site_id = $1")
            .bind(site_id)
            .fetch_all(db)
            .await
    }
}

#[cfg(test)]
mod tests;
