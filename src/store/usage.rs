//! SQL of an org's usage (`HOSTING_GET_USAGE`): requests and response bytes per site per
//! UTC day (`usage_days`, added as the edge's counts are stored), each build once
//! (`usage_builds`, written when its build ends), and instance time (`usage_days`,
//! added by sampling the running instances, with `usage_clocks` so that a sample only
//! counts the time since the one before it, whichever server on the database took it).
//! None of these tables references a site: a deleted site's usage stays with its name.

use sqlx::{AnyExecutor, FromRow};

use super::metrics::{DAY_MS, Resolution};

/// Usage kept: 400 days, so the same month of last year can still be read.
pub const RETENTION_MS: i64 = 400 * DAY_MS;

/// Adds `requests` and `bytes_out` of `site_id`, counted at `at_ms`, to its day.
pub(in crate::store) async fn add_traffic<'e>(
    db: impl AnyExecutor<'e>,
    site_id: &str,
    at_ms: i64,
    requests: u64,
    bytes_out: u64,
) -> sqlx::Result<()> {
    if requests == 0 && bytes_out == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage_days (site_id, day_ms, org_id, site_name, requests, bytes_out, instance_ms) \
         SELECT id, $2, org_id, name, $3, $4, 0 FROM sites WHERE id = $1 \
         ON CONFLICT (site_id, day_ms) DO UPDATE SET requests = usage_days.requests + excluded.requests, \
         bytes_out = usage_days.bytes_out + excluded.bytes_out",
    )
    .bind(site_id)
    .bind(Resolution::Day.floor(at_ms))
    .bind(requests as i64)
    .bind(bytes_out as i64)
    .execute(db)
    .await
    .map(drop)
}

/// Records that the build of `deployment_id` ended at `now_ms`: once per deployment (a
/// second call, or a deployment that never started building, changes nothing).
pub(in crate::store) async fn record_build<'e>(
    db: impl AnyExecutor<'e>,
    deployment_id: &str,
    now_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO usage_builds (deployment_id, org_id, site_id, site_name, started_ms, finished_ms) \
         SELECT d.id, d.org_id, d.site_id, s.name, d.started_at, $2 FROM deployments d JOIN sites s ON s.id = d.site_id \
         WHERE d.id = $1 AND d.started_at IS NOT NULL \
         ON CONFLICT (deployment_id) DO NOTHING",
    )
    .bind(deployment_id)
    .bind(now_ms)
    .execute(db)
    .await
    .map(drop)
}

/// Adds `instance_ms` of `site_id` to the day starting at `day_ms`.
async fn add_instance_ms<'e>(
    db: impl AnyExecutor<'e>,
    site: &UsageSite<'_>,
    day_ms: i64,
    instance_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO usage_days (site_id, day_ms, org_id, site_name, requests, bytes_out, instance_ms) \
         VALUES ($1, $2, $3, $4, 0, 0, $5) \
         ON CONFLICT (site_id, day_ms) DO UPDATE SET instance_ms = usage_days.instance_ms + excluded.instance_ms",
    )
    .bind(site.site_id)
    .bind(day_ms)
    .bind(site.org_id)
    .bind(site.site_name)
    .bind(instance_ms)
    .execute(db)
    .await
    .map(drop)
}

/// The site a sample is of.
#[derive(Clone, Copy, Debug)]
pub struct UsageSite<'a> {
    /// Its org.
    pub org_id: &'a str,
    /// Its id.
    pub site_id: &'a str,
    /// Its name.
    pub site_name: &'a str,
}

/// What a month (or any range of days) adds up to, for a site or an org.
#[derive(Clone, Debug, Default, FromRow, PartialEq, Eq)]
pub struct UsageSums {
    /// Requests the edge answered.
    pub requests: i64,
    /// Response body bytes sent.
    pub bytes_out: i64,
    /// Instance-milliseconds.
    pub instance_ms: i64,
    /// Builds that ended.
    pub builds: i64,
    /// Their time, start to end, in milliseconds.
    pub build_ms: i64,
}

/// One site's row of a usage page.
#[derive(Clone, Debug, FromRow)]
pub struct UsageSiteRow {
    /// Its id.
    pub site_id: String,
    /// Its name.
    pub site_name: String,
    /// Whether it still exists (0 once deleted).
    pub live: i64,
    /// Requests the edge answered.
    pub requests: i64,
    /// Response body bytes sent.
    pub bytes_out: i64,
    /// Instance-milliseconds.
    pub instance_ms: i64,
    /// Builds that ended.
    pub builds: i64,
    /// Their time, in milliseconds.
    pub build_ms: i64,
}

/// The sites of a usage range: the org's sites that existed by its end, and every site
/// (deleted ones too) with usage in it. `$1` org, `$2`/`$3` the range, `$4` a site id or NULL.
const USAGE_SITES: &str = "SELECT id AS site_id, name AS site_name FROM sites \
       WHERE org_id = $1 AND created_at < $3 AND ($4 IS NULL OR id = $4) \
     UNION SELECT site_id, site_name FROM usage_days \
       WHERE org_id = $1 AND day_ms >= $2 AND day_ms < $3 AND ($4 IS NULL OR site_id = $4) \
     UNION SELECT site_id, site_name FROM usage_builds \
       WHERE org_id = $1 AND finished_ms >= $2 AND finished_ms < $3 AND ($4 IS NULL OR site_id = $4)";

impl super::Store {
    /// Counts the instances running on each site since its last sample (by any server on
    /// the database), at most `longest_ms` of it, and makes `now_ms` its last sample, in
    /// one transaction. A site whose clock another sample moved meanwhile counts nothing;
    /// the first sample of a site only starts its clock. Returns the instance-milliseconds
    /// added.
    pub async fn sample_instances(
        &self,
        sites: &[(UsageSite<'_>, u32)],
        now_ms: i64,
        longest_ms: i64,
    ) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let mut added = 0;
        for (site, instances) in sites {
            let last: Option<i64> = sqlx::query_scalar("SELECT sampled_ms FROM usage_clocks WHERE site_id = $1")
                .bind(site.site_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(last) = last else {
                sqlx::query(
                    "INSERT INTO usage_clocks (site_id, sampled_ms) VALUES ($1, $2) ON CONFLICT (site_id) DO NOTHING",
                )
                .bind(site.site_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                continue;
            };
            if last >= now_ms {
                continue;
            }
            // Compare and set: of two samples from the same last one, one counts.
            let moved = sqlx::query("UPDATE usage_clocks SET sampled_ms = $1 WHERE site_id = $2 AND sampled_ms = $3")
                .bind(now_ms)
                .bind(site.site_id)
                .bind(last)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved != 1 || *instances == 0 {
                continue;
            }
            let from = last.max(now_ms - longest_ms);
            // Split at midnight: each day gets its own part.
            let today = Resolution::Day.floor(now_ms);
            if from < today {
                let before = (today - from) * i64::from(*instances);
                add_instance_ms(&mut *tx, site, Resolution::Day.floor(from), before).await?;
                added += before;
            }
            let since = (now_ms - from.max(today)) * i64::from(*instances);
            add_instance_ms(&mut *tx, site, today, since).await?;
            added += since;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// What `org_id` (or one of its sites) used in `[since_ms, until_ms)` (whole UTC days).
    pub async fn usage_totals(
        &self,
        org_id: &str,
        site_id: Option<&str>,
        since_ms: i64,
        until_ms: i64,
    ) -> sqlx::Result<UsageSums> {
        sqlx::query_as(
            "SELECT \
               CAST(COALESCE((SELECT SUM(requests) FROM usage_days WHERE org_id = $1 AND day_ms >= $2 AND day_ms < $3 \
                 AND ($4 IS NULL OR site_id = $4)), 0) AS BIGINT) AS requests, \
               CAST(COALESCE((SELECT SUM(bytes_out) FROM usage_days WHERE org_id = $1 AND day_ms >= $2 AND day_ms < $3 \
                 AND ($4 IS NULL OR site_id = $4)), 0) AS BIGINT) AS bytes_out, \
               CAST(COALESCE((SELECT SUM(instance_ms) FROM usage_days WHERE org_id = $1 AND day_ms >= $2 AND day_ms < $3 \
                 AND ($4 IS NULL OR site_id = $4)), 0) AS BIGINT) AS instance_ms, \
               (SELECT COUNT(*) FROM usage_builds WHERE org_id = $1 AND finished_ms >= $2 AND finished_ms < $3 \
                 AND ($4 IS NULL OR site_id = $4)) AS builds, \
               CAST(COALESCE((SELECT SUM(finished_ms - started_ms) FROM usage_builds WHERE org_id = $1 AND finished_ms >= $2 \
                 AND finished_ms < $3 AND ($4 IS NULL OR site_id = $4)), 0) AS BIGINT) AS build_ms",
        )
        .bind(org_id)
        .bind(since_ms)
        .bind(until_ms)
        .bind(site_id)
        .fetch_one(&self.pool)
        .await
    }

    /// A page of per-site usage in `[since_ms, until_ms)`, by site name then id, after
    /// `after` (a name and id): at most `limit` rows.
    pub async fn usage_page(
        &self,
        org_id: &str,
        site_id: Option<&str>,
        since_ms: i64,
        until_ms: i64,
        after: (&str, &str),
        limit: i64,
    ) -> sqlx::Result<Vec<UsageSiteRow>> {
        let sql = format!(
            "SELECT k.site_id, k.site_name, \
               (SELECT COUNT(*) FROM sites s WHERE s.id = k.site_id) AS live, \
               CAST(COALESCE((SELECT SUM(requests) FROM usage_days u WHERE u.site_id = k.site_id AND u.day_ms >= $2 \
                 AND u.day_ms < $3), 0) AS BIGINT) AS requests, \
               CAST(COALESCE((SELECT SUM(bytes_out) FROM usage_days u WHERE u.site_id = k.site_id AND u.day_ms >= $2 \
                 AND u.day_ms < $3), 0) AS BIGINT) AS bytes_out, \
               CAST(COALESCE((SELECT SUM(instance_ms) FROM usage_days u WHERE u.site_id = k.site_id AND u.day_ms >= $2 \
                 AND u.day_ms < $3), 0) AS BIGINT) AS instance_ms, \
               (SELECT COUNT(*) FROM usage_builds b WHERE b.site_id = k.site_id AND b.finished_ms >= $2 \
                 AND b.finished_ms < $3) AS builds, \
               CAST(COALESCE((SELECT SUM(finished_ms - started_ms) FROM usage_builds b WHERE b.site_id = k.site_id \
                 AND b.finished_ms >= $2 AND b.finished_ms < $3), 0) AS BIGINT) AS build_ms \
             FROM ({USAGE_SITES}) k \
             WHERE k.site_name > $5 OR (k.site_name = $5 AND k.site_id > $6) \
             ORDER BY k.site_name, k.site_id LIMIT $7"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(since_ms)
            .bind(until_ms)
            .bind(site_id)
            .bind(after.0)
            .bind(after.1)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// Removes usage older than [`RETENTION_MS`] at `now_ms`, and the sample clocks of
    /// sites not sampled for a day (deleted, static, or run by no server); returns how many
    /// rows went.
    pub async fn prune_usage(&self, now_ms: i64) -> sqlx::Result<u64> {
        let before = Resolution::Day.floor(now_ms - RETENTION_MS);
        let mut removed = 0;
        for sql in [
            "DELETE FROM usage_days WHERE day_ms < $1",
            "DELETE FROM usage_builds WHERE finished_ms < $1",
        ] {
            removed += sqlx::query(sql).bind(before).execute(&self.pool).await?.rows_affected();
        }
        removed += sqlx::query("DELETE FROM usage_clocks WHERE sampled_ms < $1")
            .bind(now_ms - DAY_MS)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed)
    }
}
