//! SQL of resources: stores attached to a site that outlive its deployments.

use sqlx::FromRow;

/// A resource, with the name of the site it is attached to.
#[derive(Clone, Debug, FromRow)]
pub struct ResourceRow {
    /// Id (`res_…`); also the name of its disk image.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Name, unique in the org.
    pub name: String,
    /// Kind (`sqlite`).
    pub kind: String,
    /// Size of its disk in MiB.
    pub size_mb: i64,
    /// The site it is attached to.
    pub site_id: Option<String>,
    /// That site's name.
    pub site_name: Option<String>,
    /// When it was made (ms).
    pub created_at: i64,
}

/// What creating a resource did.
#[derive(Debug, PartialEq, Eq)]
pub enum ResourceCreated {
    /// The row is in.
    Created,
    /// The org already has a resource of that name; nothing was written.
    NameTaken,
    /// The org's resources would exceed the allowed total size; nothing was written. Holds
    /// the MiB its resources hold now.
    OverTotal(i64),
}

macro_rules! select_resources {
    () => {
        "SELECT r.id, r.org_id, r.name, r.kind, r.size_mb, r.site_id, s.name AS site_name, r.created_at \
         FROM resources r LEFT JOIN sites s ON s.id = r.site_id"
    };
}

/// Every resource of a SQLite database opened on its own (a backup's snapshot), by id.
pub async fn resources_in_snapshot(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<Vec<ResourceRow>> {
    sqlx::query_as(concat!(select_resources!(), " ORDER BY r.id"))
        .fetch_all(conn)
        .await
}

impl super::Store {
    /// Inserts a resource (attached to `row.site_id` if given).
    pub async fn insert_resource(&self, row: &ResourceRow, max_total_mb: i64) -> sqlx::Result<ResourceCreated> {
        // One statement: the org's total is checked where the row is written, so two
        // creations at once cannot both pass it.
        let inserted = sqlx::query(
            "INSERT INTO resources (id, org_id, name, kind, size_mb, site_id, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE (SELECT COALESCE(SUM(size_mb), 0) FROM resources WHERE org_id = $8) + $9 <= $10",
        )
        .bind(&row.id)
        .bind(&row.org_id)
        .bind(&row.name)
        .bind(&row.kind)
        .bind(row.size_mb)
        .bind(&row.site_id)
        .bind(row.created_at)
        .bind(&row.org_id)
        .bind(row.size_mb)
        .bind(max_total_mb)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 0 => {
                Ok(ResourceCreated::OverTotal(self.total_resource_mb(&row.org_id).await?))
            }
            Ok(_) => Ok(ResourceCreated::Created),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(ResourceCreated::NameTaken),
            Err(e) => Err(e),
        }
    }

    /// The MiB an org's resource disks hold together (their sizes).
    pub async fn total_resource_mb(&self, org_id: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(size_mb), 0) AS BIGINT) FROM resources WHERE org_id = $1")
            .bind(org_id)
            .fetch_one(&self.pool)
            .await
    }

    /// An org's resource by name.
    pub async fn get_resource(&self, org_id: &str, name: &str) -> sqlx::Result<Option<ResourceRow>> {
        sqlx::query_as(concat!(select_resources!(), " WHERE r.org_id = $1 AND r.name = $2"))
            .bind(org_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    /// One page of an org's resources (of one site when `site_id` is given), by name,
    /// after `after`.
    pub async fn list_resources_page(
        &self,
        org_id: &str,
        site_id: Option<&str>,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<ResourceRow>> {
        sqlx::query_as(concat!(
            select_resources!(),
            " WHERE r.org_id = $1 AND ($2 IS NULL OR r.site_id = $3) AND r.name > $4 ORDER BY r.name LIMIT $5"
        ))
        .bind(org_id)
        .bind(site_id)
        .bind(site_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// How many resources an org has (attached to one site when `site_id` is given).
    pub async fn count_resources(&self, org_id: &str, site_id: Option<&str>) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM resources WHERE org_id = $1 AND ($2 IS NULL OR site_id = $3)")
            .bind(org_id)
            .bind(site_id)
            .bind(site_id)
            .fetch_one(&self.pool)
            .await
    }

    /// The resources attached to a site, oldest first (the order their env vars are
    /// named in).
    pub async fn site_resources(&self, site_id: &str) -> sqlx::Result<Vec<ResourceRow>> {
        sqlx::query_as(concat!(
            select_resources!(),
            " WHERE r.site_id = $1 ORDER BY r.created_at, r.name LIMIT 100"
        ))
        .bind(site_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Detaches a resource from its site.
    pub async fn detach_resource(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE resources SET site_id = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Which of `ids` name a resource (of any org).
    pub async fn existing_resource_ids(&self, ids: &[String]) -> sqlx::Result<Vec<String>> {
        let mut found = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id FROM resources WHERE id IN ({})",
                super::placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            found.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    /// Deletes a resource's row; `false` when it was already gone.
    pub async fn delete_resource(&self, id: &str) -> sqlx::Result<bool> {
        sqlx::query("DELETE FROM resources WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() > 0)
    }
}
