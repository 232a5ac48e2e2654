//! SQL of error patterns (tables `error_patterns` and `error_pattern_minutes`): what the
//! pattern task learned since its last save ([`PatternDelta`]) added in one transaction,
//! templates read back on start, counts over a range, and pruning by the log retention.

use std::collections::BTreeMap;

use sqlx::FromRow;

/// Deployments a template remembers at most (the most recent).
pub const MAX_DEPLOYMENTS: usize = 20;

/// What one template gained since the last save.
#[derive(Clone, Debug, Default)]
pub struct PatternDelta {
    /// The site of its environment.
    pub site_id: String,
    /// Its template now.
    pub template: String,
    /// Events it gained.
    pub count: u64,
    /// The first of them (ms).
    pub first_seen_ms: i64,
    /// The last of them (ms).
    pub last_seen_ms: i64,
    /// The latest event's text.
    pub sample: String,
    /// Events per (minute start, deployment).
    pub minutes: BTreeMap<(i64, String), u64>,
}

impl super::Store {
    /// Saves one environment's changes: removes the evicted templates (their minutes go
    /// with them) and adds each delta, in one transaction.
    pub async fn save_error_patterns(
        &self,
        environment_id: &str,
        evicted: &[u64],
        deltas: &[(u64, PatternDelta)],
    ) -> sqlx::Result<()> {
        let store = self;
        let mut tx = store.begin().await?;
        for key in evicted {
            sqlx::query("DELETE FROM error_patterns WHERE environment_id = $1 AND key = $2")
                .bind(environment_id)
                .bind(*key as i64)
                .execute(&mut *tx)
                .await?;
        }
        for (key, delta) in deltas {
            let known: Option<String> =
                sqlx::query_scalar("SELECT deployments FROM error_patterns WHERE environment_id = $1 AND key = $2")
                    .bind(environment_id)
                    .bind(*key as i64)
                    .fetch_optional(&mut *tx)
                    .await?;
            let mut deployments: Vec<String> = known
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default();
            // In order of their first event in this delta.
            let mut firsts: Vec<(i64, &str)> = Vec::new();
            for (minute, deployment) in delta.minutes.keys() {
                if !firsts.iter().any(|(_, d)| *d == deployment.as_str()) {
                    firsts.push((*minute, deployment));
                }
            }
            for (_, deployment) in firsts {
                if !deployments.iter().any(|d| d == deployment) {
                    deployments.push(deployment.to_string());
                }
            }
            if deployments.len() > MAX_DEPLOYMENTS {
                deployments.drain(..deployments.len() - MAX_DEPLOYMENTS);
            }
            sqlx::query(
                "INSERT INTO error_patterns (environment_id, key, site_id, template, count, first_seen_ms, last_seen_ms, \
                 deployments, sample) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (environment_id, key) DO UPDATE SET \
                 template = excluded.template, count = error_patterns.count + excluded.count, \
                 last_seen_ms = CASE WHEN excluded.last_seen_ms > error_patterns.last_seen_ms THEN excluded.last_seen_ms \
                 ELSE error_patterns.last_seen_ms END, deployments = excluded.deployments, \
                 sample = excluded.sample",
            )
            .bind(environment_id)
            .bind(*key as i64)
            .bind(&delta.site_id)
            .bind(&delta.template)
            .bind(delta.count as i64)
            .bind(delta.first_seen_ms)
            .bind(delta.last_seen_ms)
            .bind(serde_json::to_string(&deployments).unwrap_or_else(|_| "[]".into()))
            .bind(&delta.sample)
            .execute(&mut *tx)
            .await?;
            for ((minute, deployment), n) in &delta.minutes {
                sqlx::query(
                    "INSERT INTO error_pattern_minutes (environment_id, key, start_ms, deployment_id, count) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (environment_id, key, start_ms, deployment_id) \
                     DO UPDATE SET count = error_pattern_minutes.count + excluded.count",
                )
                .bind(environment_id)
                .bind(*key as i64)
                .bind(*minute)
                .bind(deployment)
                .bind(*n as i64)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await
    }

    /// An environment's templates as `(key, template, last seen ms)`, to rebuild its tree.
    pub async fn error_pattern_templates(&self, environment_id: &str) -> sqlx::Result<Vec<(i64, String, i64)>> {
        let db = &self.pool;
        sqlx::query_as("SELECT key, template, last_seen_ms FROM error_patterns WHERE environment_id = $1")
            .bind(environment_id)
            .fetch_all(db)
            .await
    }

    /// How many templates an environment keeps.
    pub async fn count_error_patterns(&self, environment_id: &str) -> sqlx::Result<i64> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT COUNT(*) FROM error_patterns WHERE environment_id = $1")
            .bind(environment_id)
            .fetch_one(db)
            .await
    }
}

/// One template as stored.
#[derive(Clone, Debug, FromRow)]
pub struct PatternRow {
    /// Its number within the environment.
    pub key: i64,
    /// The template.
    pub template: String,
    /// Events since it was first seen.
    pub count: i64,
    /// First event (ms).
    pub first_seen_ms: i64,
    /// Latest event (ms).
    pub last_seen_ms: i64,
    /// JSON list of deployment ids.
    pub deployments: String,
    /// The latest event.
    pub sample: String,
}

/// One template's events in a range from one deployment.
#[derive(Clone, Debug, FromRow)]
pub struct RangeCount {
    /// The template's key.
    pub key: i64,
    /// The deployment.
    pub deployment_id: String,
    /// Its events in the range.
    pub count: i64,
    /// The start of the first minute it had any (ms).
    pub first_minute_ms: i64,
}

impl super::Store {
    /// The events of an environment's templates in the minutes starting in
    /// `[since_ms, until_ms)`, per template and deployment.
    pub async fn error_pattern_range_counts(
        &self,
        environment_id: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> sqlx::Result<Vec<RangeCount>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT key, deployment_id, CAST(SUM(count) AS BIGINT) AS count, MIN(start_ms) AS first_minute_ms FROM error_pattern_minutes \
             WHERE environment_id = $1 AND start_ms >= $2 AND start_ms < $3 GROUP BY key, deployment_id",
        )
        .bind(environment_id)
        .bind(since_ms)
        .bind(until_ms)
        .fetch_all(db)
        .await
    }

    /// One template of an environment.
    pub async fn error_pattern(&self, environment_id: &str, key: i64) -> sqlx::Result<Option<PatternRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT key, template, count, first_seen_ms, last_seen_ms, deployments, sample FROM error_patterns \
             WHERE environment_id = $1 AND key = $2",
        )
        .bind(environment_id)
        .bind(key)
        .fetch_optional(db)
        .await
    }

    /// Removes minutes older than `before_ms` and templates not seen since; returns how many
    /// templates went.
    pub async fn prune_error_patterns(&self, before_ms: i64) -> sqlx::Result<u64> {
        let store = self;
        sqlx::query("DELETE FROM error_pattern_minutes WHERE start_ms < $1")
            .bind(before_ms)
            .execute(store.pool())
            .await?;
        Ok(sqlx::query("DELETE FROM error_patterns WHERE last_seen_ms < $1")
            .bind(before_ms)
            .execute(store.pool())
            .await?
            .rows_affected())
    }
}
