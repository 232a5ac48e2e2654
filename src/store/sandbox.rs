//! SQL of sandbox identities: the sequence number of each site's host uid.

impl super::Store {
    /// The sequence number of `site_id`'s uid, allocated on first use (the next after the
    /// highest ever handed out; never reused).
    pub async fn site_uid_seq(&self, site_id: &str) -> sqlx::Result<u32> {
        let db = &self.pool;
        sqlx::query(
            "INSERT INTO sandbox_users (seq, site_id) \
             SELECT COALESCE(MAX(seq) + 1, 0), $1 FROM sandbox_users WHERE true \
             ON CONFLICT (site_id) DO NOTHING",
        )
        .bind(site_id)
        .execute(db)
        .await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM sandbox_users WHERE site_id = $1")
            .bind(site_id)
            .fetch_one(db)
            .await?;
        Ok(seq as u32)
    }
}
