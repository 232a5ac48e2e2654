//! The store: every SQL statement berth runs lives here, written once in the SQL that
//! SQLite and Postgres share (numbered `$n` placeholders, `ON CONFLICT`, `RETURNING`, no
//! engine-specific functions); the few places where the engines differ ask
//! [`Store::backend`]. Each backend owns its migrations (`migrations/sqlite`,
//! `migrations/postgres`). SQLite runs in WAL mode with foreign keys in the data dir;
//! Postgres is chosen by a `postgres://` database URL.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyExecutor, AnyPool, Executor, FromRow};

use crate::model::DeploymentStatus;
use crate::util::now_ms;

/// The database engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, one file in the data dir (the default).
    Sqlite,
    /// Postgres, for teams and several replicas.
    Postgres,
}

impl Backend {
    /// The engine a database URL names, or an error naming the accepted forms.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!(
                "the database URL must start with sqlite:// or postgres:// (got {}); \
                 leave it unset to keep SQLite in the data dir",
                redact_url(url)
            )
        }
    }
}

/// A database URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "an unparsable URL".into(),
    }
}

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names, without its query.
pub fn sqlite_path(url: &str) -> std::path::PathBuf {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    std::path::PathBuf::from(path.split('?').next().unwrap_or(path))
}

/// The migrations a backend owns, compiled into the binary.
pub fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    }
}

/// A yes/no column, stored as 0 or 1 in an integer column on both engines (the Any
/// driver decodes an integer column only into integers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl From<Flag> for bool {
    fn from(flag: Flag) -> bool {
        flag.0
    }
}

impl sqlx::Type<sqlx::Any> for Flag {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }

    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <i64 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Any> for Flag {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <i64 as sqlx::Encode<'q, sqlx::Any>>::encode_by_ref(&i64::from(self.0), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Flag {
    fn decode(value: <sqlx::Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <i64 as sqlx::Decode<'r, sqlx::Any>>::decode(value).map(|n| Flag(n != 0))
    }
}

/// A handle on the database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Postgres: the URL, for the connection that listens for event notifications.
    listen_url: Option<std::sync::Arc<str>>,
}

/// The Postgres channel a committed insert into `events` notifies (migration 0003).
pub const EVENTS_CHANNEL: &str = "berth_events";

/// An open transaction.
pub(in crate::store) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The Postgres advisory lock every write transaction takes, so write transactions run
/// one at a time across all replicas as they do on SQLite (whose `BEGIN IMMEDIATE` takes
/// the database's write lock): a unit that reads and then writes sees no interleaving.
const WRITE_LOCK: i64 = 0x6265_7274_6800;

/// A Postgres connection idle this long is checked before use (a server restart or a
/// dropped link since shows there, not in the caller's query).
const PING_IDLE_CONNECTIONS_AFTER: Duration = Duration::from_secs(1);

impl Store {
    /// Opens the database a URL names (`sqlite://PATH` or `postgres://…`) and runs its
    /// migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        match Backend::of_url(url)? {
            Backend::Sqlite => Self::open_sqlite(&sqlite_path(url)).await,
            Backend::Postgres => Self::open_postgres(url).await,
        }
    }

    /// Opens (creating if needed) the SQLite database at `path` and runs migrations.
    pub async fn open_sqlite(path: &Path) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                    )
                    .await
                    .map(drop)
                })
            })
            .connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        migrator(Backend::Sqlite)
            .run(&pool)
            .await
            .context("running database migrations")?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            listen_url: None,
        })
    }

    /// Connects to Postgres and runs its migrations.
    async fn open_postgres(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            // A connection used in the last second is handed out as it is (sqlx pinged it
            // when it came back to the pool); one idle longer is pinged first. A ping on
            // every acquire cost a round trip per query: a single read's p99 went from
            // 5.55 to 3.74 ms without it (BENCHMARKS.md). The price: in the second after
            // the database ends berth's connections (a restart), a query may meet a dead
            // one and fail once; the connection is then dropped.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_CONNECTIONS_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .with_context(|| format!("connecting to {}", redact_url(url)))?;
        migrator(Backend::Postgres)
            .run(&pool)
            .await
            .context("running database migrations")?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            listen_url: Some(url.into()),
        })
    }

    /// The engine this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// On Postgres, a connection listening on [`EVENTS_CHANNEL`] (it reconnects by itself
    /// when its connection drops); `None` on SQLite, which tells no other process of a
    /// commit.
    pub async fn listen_for_events(&self) -> sqlx::Result<Option<sqlx::postgres::PgListener>> {
        let Some(url) = &self.listen_url else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(Some(listener))
    }

    /// The pool, for single statements: the store's own (nothing outside it reaches the
    /// database but through its named operations), and this crate's unit tests' to set
    /// rows up.
    #[cfg(not(test))]
    pub(in crate::store) fn pool(&self) -> &AnyPool {
        &self.pool
    }
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes its connections (waiting for those in use): at shutdown, or before
    /// another process takes the database over.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a write transaction that runs alone among writers: on SQLite `BEGIN
    /// IMMEDIATE` takes the write lock up front (a transaction that reads and then writes
    /// waits its turn instead of failing with "database is locked"); on Postgres the
    /// transaction takes berth's advisory write lock first, for the same guarantee across
    /// replicas.
    pub(in crate::store) async fn begin(&self) -> sqlx::Result<Tx> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }
}

// ---------------------------------------------------------------- orgs and keys

/// An org row.
#[derive(Clone, Debug, FromRow)]
pub struct OrgRow {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
}

/// An API key row (the hash, never the key).
#[derive(Clone, Debug, FromRow)]
pub struct ApiKeyRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Argon2id PHC string.
    pub hash: String,
    /// Role.
    pub role: String,
    /// Set when revoked.
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Number of orgs (zero on a fresh data dir).
    pub async fn count_orgs(&self) -> sqlx::Result<i64> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT COUNT(*) FROM orgs").fetch_one(db).await
    }
}

/// Inserts an org.
pub(in crate::store) async fn insert_org(db: impl AnyExecutor<'_>, id: &str, name: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(now_ms())
        .execute(db)
        .await
        .map(drop)
}

impl Store {
    /// Inserts an org.
    pub async fn insert_org(&self, id: &str, name: &str) -> sqlx::Result<()> {
        insert_org(&self.pool, id, name).await
    }
}

/// Looks an org up by id.
pub(in crate::store) async fn get_org(db: impl AnyExecutor<'_>, id: &str) -> sqlx::Result<Option<OrgRow>> {
    sqlx::query_as("SELECT id, name FROM orgs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

impl Store {
    /// Looks an org up by id.
    pub async fn get_org(&self, id: &str) -> sqlx::Result<Option<OrgRow>> {
        get_org(&self.pool, id).await
    }
}

/// Looks an org up by its unique name.
pub(in crate::store) async fn get_org_by_name(db: impl AnyExecutor<'_>, name: &str) -> sqlx::Result<Option<OrgRow>> {
    sqlx::query_as("SELECT id, name FROM orgs WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await
}

/// Inserts an API key by its hash.
pub(in crate::store) async fn insert_api_key(
    db: impl AnyExecutor<'_>,
    id: &str,
    org_id: &str,
    name: &str,
    prefix: &str,
    hash: &str,
    role: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, prefix, hash, role, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(org_id)
    .bind(name)
    .bind(prefix)
    .bind(hash)
    .bind(role)
    .bind(now_ms())
    .execute(db)
    .await
    .map(drop)
}

impl Store {
    /// Inserts an API key by its hash.
    pub async fn insert_api_key(
        &self,
        id: &str,
        org_id: &str,
        name: &str,
        prefix: &str,
        hash: &str,
        role: &str,
    ) -> sqlx::Result<()> {
        insert_api_key(&self.pool, id, org_id, name, prefix, hash, role).await
    }

    /// Finds a key by its public prefix.
    pub async fn find_api_key(&self, prefix: &str) -> sqlx::Result<Option<ApiKeyRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT id, org_id, name, hash, role, revoked_at FROM api_keys WHERE prefix = $1")
            .bind(prefix)
            .fetch_optional(db)
            .await
    }
}

// ---------------------------------------------------------------- sites and environments

/// A site row.
#[derive(Clone, Debug, FromRow)]
pub struct SiteRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// DNS-label name, unique in the org.
    pub name: String,
    /// `git` | `path` | `upload`.
    pub source_kind: String,
    /// Git URL or path.
    pub source: Option<String>,
    /// Default branch to deploy.
    pub branch: Option<String>,
    /// JSON of `berth_build::BuildSettings`.
    pub build_settings: String,
    /// Runtime provider.
    pub provider: String,
    /// `active` or `deleting`.
    pub status: String,
    /// Created.
    pub created_at: i64,
    /// Pushes of other branches (and pull requests) build previews.
    pub previews_enabled: Flag,
    /// How long a replaced deployment drains, in seconds (`None`: the default).
    pub drain_seconds: Option<i64>,
}

/// Columns of [`SiteRow`], as a literal so queries stay static strings.
macro_rules! site_columns {
    () => {
        "id, org_id, name, source_kind, source, branch, build_settings, provider, status, created_at, previews_enabled, drain_seconds"
    };
}

/// Inserts a site.
pub(in crate::store) async fn insert_site(db: impl AnyExecutor<'_>, site: &SiteRow) -> sqlx::Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO sites (id, org_id, name, source_kind, source, branch, build_settings, provider, status, created_at, updated_at, \
           previews_enabled, drain_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&site.id)
    .bind(&site.org_id)
    .bind(&site.name)
    .bind(&site.source_kind)
    .bind(&site.source)
    .bind(&site.branch)
    .bind(&site.build_settings)
    .bind(&site.provider)
    .bind(&site.status)
    .bind(now)
    .bind(now)
    .bind(site.previews_enabled)
    .bind(site.drain_seconds)
    .execute(db)
    .await
    .map(drop)
}

impl Store {
    /// Inserts a site.
    pub async fn insert_site(&self, site: &SiteRow) -> sqlx::Result<()> {
        insert_site(&self.pool, site).await
    }

    /// A site of an org by name.
    pub async fn get_site(&self, org_id: &str, name: &str) -> sqlx::Result<Option<SiteRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            site_columns!(),
            " FROM sites WHERE org_id = $1 AND name = $2"
        ))
        .bind(org_id)
        .bind(name)
        .fetch_optional(db)
        .await
    }
}

/// The org holding a site of this name, in any org: a site's name is its hostname, so
/// names are unique across the installation even though orgs cannot see each other.
pub(in crate::store) async fn site_name_owner(db: impl AnyExecutor<'_>, name: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT org_id FROM sites WHERE name = $1 LIMIT 1")
        .bind(name)
        .fetch_optional(db)
        .await
}

impl Store {
    /// The org holding a site of this name, in any org: a site's name is its hostname, so
    /// names are unique across the installation even though orgs cannot see each other.
    pub async fn site_name_owner(&self, name: &str) -> sqlx::Result<Option<String>> {
        site_name_owner(&self.pool, name).await
    }

    /// A site by id.
    pub async fn get_site_by_id(&self, id: &str) -> sqlx::Result<Option<SiteRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!("SELECT ", site_columns!(), " FROM sites WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await
    }

    /// One page of an org's sites by name: those after `after` whose name contains `search`
    /// (both may be empty), at most `limit`.
    pub async fn list_sites_page(
        &self,
        org_id: &str,
        search: &str,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<SiteRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            site_columns!(),
            " FROM sites WHERE org_id = $1 AND name > $2 AND name LIKE $3 ESCAPE '\\' ORDER BY name LIMIT $4"
        ))
        .bind(org_id)
        .bind(after)
        .bind(like_containing(search))
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// How many of an org's sites have a name containing `search` (empty: all). All of them
    /// is one row kept by triggers (`org_site_counts`); a search counts its matches.
    pub async fn count_sites(&self, org_id: &str, search: &str) -> sqlx::Result<i64> {
        let db = &self.pool;
        if search.is_empty() {
            return sqlx::query_scalar("SELECT COALESCE((SELECT sites FROM org_site_counts WHERE org_id = $1), 0)")
                .bind(org_id)
                .fetch_one(db)
                .await;
        }
        sqlx::query_scalar("SELECT COUNT(*) FROM sites WHERE org_id = $1 AND name LIKE $2 ESCAPE '\\'")
            .bind(org_id)
            .bind(like_containing(search))
            .fetch_one(db)
            .await
    }
}

/// A `LIKE` pattern (escape character `\`) matching names that contain `search`, in
/// lower case: site names are lower case, and SQLite's `LIKE` ignores ASCII case where
/// Postgres's does not, so the pattern is the same on both.
fn like_containing(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// Updates a site's source settings (a deploy may switch branch or source).
    pub async fn set_site_status(&self, site_id: &str, status: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE sites SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status)
            .bind(now_ms())
            .bind(site_id)
            .execute(db)
            .await
            .map(drop)
    }
}

/// Writes a site's build settings, branch and provider (HOSTING_UPDATE_SITE).
pub(in crate::store) async fn update_site_settings(
    db: impl AnyExecutor<'_>,
    site_id: &str,
    build_settings: &str,
    branch: Option<&str>,
    provider: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE sites SET build_settings = $1, branch = $2, provider = $3, updated_at = $4 WHERE id = $5")
        .bind(build_settings)
        .bind(branch)
        .bind(provider)
        .bind(now_ms())
        .bind(site_id)
        .execute(db)
        .await
        .map(drop)
}

impl Store {
    /// A site's drain period in seconds; `None` when it has the default (or no such site).
    pub async fn site_drain_seconds(&self, site_id: &str) -> sqlx::Result<Option<i64>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT drain_seconds FROM sites WHERE id = $1")
            .bind(site_id)
            .fetch_optional(db)
            .await
            .map(Option::flatten)
    }
}

/// Sets a site's drain period in seconds (`None`: the default).
pub(in crate::store) async fn set_site_drain_seconds(
    db: impl AnyExecutor<'_>,
    site_id: &str,
    drain_seconds: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE sites SET drain_seconds = $1, updated_at = $2 WHERE id = $3")
        .bind(drain_seconds)
        .bind(now_ms())
        .bind(site_id)
        .execute(db)
        .await
        .map(drop)
}

impl Store {
    /// The drain period in seconds of the site a deployment belongs to; `None` when it has
    /// the default (or the deployment is gone).
    pub async fn deployment_drain_seconds(&self, deployment_id: &str) -> sqlx::Result<Option<i64>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT s.drain_seconds FROM deployments d JOIN sites s ON s.id = d.site_id WHERE d.id = $1")
            .bind(deployment_id)
            .fetch_optional(db)
            .await
            .map(Option::flatten)
    }
}

/// Sets the branch an environment follows.
pub(in crate::store) async fn set_environment_branch(
    db: impl AnyExecutor<'_>,
    environment_id: &str,
    branch: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE environments SET branch = $1, updated_at = $2 WHERE id = $3")
        .bind(branch)
        .bind(now_ms())
        .bind(environment_id)
        .execute(db)
        .await
        .map(drop)
}

/// Deletes a site; environments, deployments and logs go with it (foreign keys cascade).
pub(in crate::store) async fn delete_site_rows(db: impl AnyExecutor<'_>, site_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sites WHERE id = $1")
        .bind(site_id)
        .execute(db)
        .await
        .map(drop)
}

impl Store {
    /// Deletes a site; environments, deployments and logs go with it (foreign keys cascade).
    pub async fn delete_site_rows(&self, site_id: &str) -> sqlx::Result<()> {
        delete_site_rows(&self.pool, site_id).await
    }
}

/// An environment row.
#[derive(Clone, Debug, FromRow)]
pub struct EnvironmentRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Site.
    pub site_id: String,
    /// `production` or a preview name.
    pub name: String,
    /// Branch it follows.
    pub branch: Option<String>,
    /// The deployment it should serve (desired state).
    pub deployment_id: Option<String>,
}

/// Inserts an environment.
pub(in crate::store) async fn insert_environment(db: impl AnyExecutor<'_>, env: &EnvironmentRow) -> sqlx::Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO environments (id, org_id, site_id, name, branch, deployment_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&env.id)
    .bind(&env.org_id)
    .bind(&env.site_id)
    .bind(&env.name)
    .bind(&env.branch)
    .bind(&env.deployment_id)
    .bind(now)
    .bind(now)
    .execute(db)
    .await
    .map(drop)
}

impl Store {
    /// Inserts an environment.
    pub async fn insert_environment(&self, env: &EnvironmentRow) -> sqlx::Result<()> {
        insert_environment(&self.pool, env).await
    }
}

/// An environment of a site by name.
pub(in crate::store) async fn get_environment(
    db: impl AnyExecutor<'_>,
    site_id: &str,
    name: &str,
) -> sqlx::Result<Option<EnvironmentRow>> {
    sqlx::query_as(
        "SELECT id, org_id, site_id, name, branch, deployment_id FROM environments WHERE site_id = $1 AND name = $2",
    )
    .bind(site_id)
    .bind(name)
    .fetch_optional(db)
    .await
}

impl Store {
    /// An environment of a site by name.
    pub async fn get_environment(&self, site_id: &str, name: &str) -> sqlx::Result<Option<EnvironmentRow>> {
        get_environment(&self.pool, site_id, name).await
    }
}

/// An environment by id.
pub(in crate::store) async fn get_environment_by_id(
    db: impl AnyExecutor<'_>,
    id: &str,
) -> sqlx::Result<Option<EnvironmentRow>> {
    sqlx::query_as("SELECT id, org_id, site_id, name, branch, deployment_id FROM environments WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

impl Store {
    /// An environment by id.
    pub async fn get_environment_by_id(&self, id: &str) -> sqlx::Result<Option<EnvironmentRow>> {
        get_environment_by_id(&self.pool, id).await
    }

    /// Environments of a site.
    pub async fn list_environments(&self, site_id: &str) -> sqlx::Result<Vec<EnvironmentRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, org_id, site_id, name, branch, deployment_id FROM environments WHERE site_id = $1 ORDER BY name <> 'production', name",
        )
        .bind(site_id)
        .fetch_all(db)
        .await
    }

    /// A page of a site's environments, production first and then previews by name: those
    /// after the environment named `after` (empty: from the start), at most `limit`.
    pub async fn list_environments_page(
        &self,
        site_id: &str,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<EnvironmentRow>> {
        let db = &self.pool;
        // Sorted as the key (name <> 'production', name); the cursor compares the same key.
        sqlx::query_as(
            "SELECT id, org_id, site_id, name, branch, deployment_id FROM environments WHERE site_id = $1 \
               AND ($2 = '' OR (name <> 'production', name) > ($3 <> 'production', $4)) \
             ORDER BY name <> 'production', name LIMIT $5",
        )
        .bind(site_id)
        .bind(after)
        .bind(after)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// The environment named `name` of each of these sites (one query for a page of sites).
    pub async fn environments_named(&self, site_ids: &[&str], name: &str) -> sqlx::Result<Vec<EnvironmentRow>> {
        let db = &self.pool;
        if site_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, org_id, site_id, name, branch, deployment_id FROM environments \
             WHERE name = $1 AND site_id IN ({})",
            placeholders(2, site_ids.len())
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(name);
        for id in site_ids {
            q = q.bind(*id);
        }
        q.fetch_all(db).await
    }

    /// Environments by id (one query for a page of deployments).
    pub async fn environments_by_ids(&self, ids: &[&str]) -> sqlx::Result<Vec<EnvironmentRow>> {
        let db = &self.pool;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, org_id, site_id, name, branch, deployment_id FROM environments WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(*id);
        }
        q.fetch_all(db).await
    }
}

/// `$first, $first+1, …`: `n` numbered placeholders for a list bound one value each.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Points an environment at a deployment.
pub(in crate::store) async fn set_environment_deployment(
    db: impl AnyExecutor<'_>,
    env_id: &str,
    deployment_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE environments SET deployment_id = $1, updated_at = $2 WHERE id = $3")
        .bind(deployment_id)
        .bind(now_ms())
        .bind(env_id)
        .execute(db)
        .await
        .map(drop)
}

/// What the reconciler needs to route and run one environment.
#[derive(Clone, Debug, FromRow)]
pub struct DesiredEnvironment {
    /// Environment id.
    pub environment_id: String,
    /// Environment name.
    pub environment_name: String,
    /// Site name.
    pub site_name: String,
    /// Site id.
    pub site_id: String,
    /// Org id.
    pub org_id: String,
    /// Deployment to serve.
    pub deployment_id: String,
    /// That deployment's plan (JSON).
    pub build_plan: Option<String>,
    /// 0 lets the environment sleep when idle.
    pub min_instances: i64,
    /// Idle seconds before sleeping.
    pub idle_timeout_seconds: i64,
    /// Most instances.
    pub max_instances: i64,
    /// Requests in flight per instance before scaling out.
    pub target_concurrency: i64,
    /// That deployment's status (`live`, or `crashed` after a crash loop).
    pub deployment_status: String,
    /// The site's target (provider).
    pub provider: String,
}

impl Store {
    /// Every environment that should be serving, across orgs (the reconciler's desired state).
    pub async fn list_desired_environments(&self) -> sqlx::Result<Vec<DesiredEnvironment>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT e.id AS environment_id, e.name AS environment_name, s.name AS site_name, s.id AS site_id, s.org_id AS org_id, \
                    d.id AS deployment_id, d.build_plan AS build_plan, e.min_instances AS min_instances, \
                    e.idle_timeout_seconds AS idle_timeout_seconds, e.max_instances AS max_instances, \
                    e.target_concurrency AS target_concurrency, d.status AS deployment_status, s.provider AS provider \
             FROM environments e JOIN sites s ON s.id = e.site_id JOIN deployments d ON d.id = e.deployment_id \
             WHERE s.status = 'active'",
        )
        .fetch_all(db)
        .await
    }
}

// ---------------------------------------------------------------- deployments

/// A deployment row.
#[derive(Clone, Debug, FromRow)]
pub struct DeploymentRow {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Site.
    pub site_id: String,
    /// Environment it was made for.
    pub environment_id: String,
    /// Status name.
    pub status: String,
    /// `git` | `path` | `upload`.
    pub source_kind: String,
    /// Git URL, path, or upload id.
    pub source: Option<String>,
    /// Branch or ref asked for.
    pub git_ref: Option<String>,
    /// Resolved commit.
    pub commit_sha: Option<String>,
    /// JSON of the build plan, once detected.
    pub build_plan: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// API key name that asked for it.
    pub created_by: Option<String>,
    /// Created.
    pub created_at: i64,
    /// Build started.
    pub started_at: Option<i64>,
    /// Reached a final status.
    pub finished_at: Option<i64>,
    /// JSON of the `berth_build::BuildSettings` it is built with (the site's at the time,
    /// overrides applied); `None` for deployments made before they were recorded.
    pub build_settings: Option<String>,
    /// JSON of the one-off overrides the deploy carried, when it carried any.
    pub overrides: Option<String>,
}

impl DeploymentRow {
    /// Typed status.
    pub fn status(&self) -> DeploymentStatus {
        DeploymentStatus::parse(&self.status).unwrap_or(DeploymentStatus::Failed)
    }
}

/// Columns of [`DeploymentRow`].
macro_rules! deployment_columns {
    () => {
        "id, org_id, site_id, environment_id, status, source_kind, source, git_ref, commit_sha, build_plan, error, created_by, created_at, started_at, finished_at, build_settings, overrides"
    };
}

/// Inserts a deployment, every column as given (a new one has no plan or times yet; a
/// promotion's copy is built already).
pub(in crate::store) async fn insert_deployment(db: impl AnyExecutor<'_>, d: &DeploymentRow) -> sqlx::Result<()> {
    sqlx::query(concat!(
        "INSERT INTO deployments (",
        deployment_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    ))
    .bind(&d.id)
    .bind(&d.org_id)
    .bind(&d.site_id)
    .bind(&d.environment_id)
    .bind(&d.status)
    .bind(&d.source_kind)
    .bind(&d.source)
    .bind(&d.git_ref)
    .bind(&d.commit_sha)
    .bind(&d.build_plan)
    .bind(&d.error)
    .bind(&d.created_by)
    .bind(d.created_at)
    .bind(d.started_at)
    .bind(d.finished_at)
    .bind(&d.build_settings)
    .bind(&d.overrides)
    .execute(db)
    .await
    .map(drop)
}

impl Store {
    /// Inserts a deployment, every column as given (a new one has no plan or times yet; a
    /// promotion's copy is built already).
    pub async fn insert_deployment(&self, d: &DeploymentRow) -> sqlx::Result<()> {
        insert_deployment(&self.pool, d).await
    }

    /// A deployment by id, limited to an org.
    pub async fn get_deployment(&self, org_id: &str, id: &str) -> sqlx::Result<Option<DeploymentRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments WHERE id = $1 AND org_id = $2"
        ))
        .bind(id)
        .bind(org_id)
        .fetch_optional(db)
        .await
    }

    /// The names of the site and the environment of an org's deployment, in one query
    /// (`None`: no such deployment in the org; a name is `None` when its row is gone).
    pub async fn deployment_names(
        &self,
        org_id: &str,
        id: &str,
    ) -> sqlx::Result<Option<(Option<String>, Option<String>)>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT s.name, e.name FROM deployments d \
               LEFT JOIN sites s ON s.id = d.site_id LEFT JOIN environments e ON e.id = d.environment_id \
             WHERE d.id = $1 AND d.org_id = $2",
        )
        .bind(id)
        .bind(org_id)
        .fetch_optional(db)
        .await
    }

    /// A deployment by id, for internal work (jobs) that already knows its org.
    pub async fn get_deployment_any_org(&self, id: &str) -> sqlx::Result<Option<DeploymentRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    }

    /// Deployments by id, of any org (one query for the deployments a page of environments
    /// serves).
    pub async fn deployments_by_ids(&self, ids: &[&str]) -> sqlx::Result<Vec<DeploymentRow>> {
        let db = &self.pool;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            concat!("SELECT ", deployment_columns!(), " FROM deployments WHERE id IN ({})"),
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(*id);
        }
        q.fetch_all(db).await
    }

    /// The newest deployment of each of these sites (one query for a page of sites; a site
    /// without deployments has none).
    pub async fn latest_deployments(&self, site_ids: &[&str]) -> sqlx::Result<Vec<DeploymentRow>> {
        let db = &self.pool;
        if site_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            concat!(
                "SELECT ",
                deployment_columns!(),
                " FROM deployments WHERE id IN (SELECT (SELECT d.id FROM deployments d WHERE d.site_id = s.id \
                   ORDER BY d.created_at DESC, d.id DESC LIMIT 1) FROM sites s WHERE s.id IN ({}))"
            ),
            placeholders(1, site_ids.len())
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in site_ids {
            q = q.bind(*id);
        }
        q.fetch_all(db).await
    }

    /// Deployments of a site, newest first, optionally of one environment.
    pub async fn list_deployments(
        &self,
        site_id: &str,
        environment_id: Option<&str>,
        limit: i64,
    ) -> sqlx::Result<Vec<DeploymentRow>> {
        let db = &self.pool;
        list_deployments_before(db, site_id, environment_id, None, limit).await
    }
}

/// [`list_deployments`] older than `before` (a deployment's `created_at` and id): the
/// next page.
pub(in crate::store) async fn list_deployments_before(
    db: impl AnyExecutor<'_>,
    site_id: &str,
    environment_id: Option<&str>,
    before: Option<(i64, &str)>,
    limit: i64,
) -> sqlx::Result<Vec<DeploymentRow>> {
    let (at, id) = before.unwrap_or((i64::MAX, ""));
    sqlx::query_as(concat!(
        "SELECT ",
        deployment_columns!(),
        " FROM deployments WHERE site_id = $1 AND ($2 IS NULL OR environment_id = $3) \
           AND (created_at < $4 OR (created_at = $5 AND id < $6) OR $7 = '') \
         ORDER BY created_at DESC, id DESC LIMIT $8"
    ))
    .bind(site_id)
    .bind(environment_id)
    .bind(environment_id)
    .bind(at)
    .bind(at)
    .bind(id)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

impl Store {
    /// [`list_deployments`] older than `before` (a deployment's `created_at` and id): the
    /// next page.
    pub async fn list_deployments_before(
        &self,
        site_id: &str,
        environment_id: Option<&str>,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> sqlx::Result<Vec<DeploymentRow>> {
        list_deployments_before(&self.pool, site_id, environment_id, before, limit).await
    }
}

/// Moves a deployment to `to` if its current status allows it; returns whether it moved.
/// The allowed predecessors come from the state machine, so a racing cancel or a stale
/// job cannot resurrect a finished deployment.
pub(in crate::store) async fn transition_deployment(
    db: impl AnyExecutor<'_>,
    id: &str,
    to: DeploymentStatus,
    error: Option<&str>,
) -> sqlx::Result<bool> {
    use DeploymentStatus::*;
    let from: Vec<&str> = [
        Queued, Building, Deploying, Live, Failed, Cancelled, Superseded, Crashed,
    ]
    .into_iter()
    .filter(|s| s.can_become(to))
    .map(|s| s.as_str())
    .collect();
    let now = now_ms();
    let sql = format!(
        "UPDATE deployments SET status = $1, error = CASE WHEN $1 = 'live' THEN NULL ELSE COALESCE($2, error) END, \
           started_at = CASE WHEN $1 = 'building' AND started_at IS NULL THEN $3 ELSE started_at END, \
           finished_at = CASE WHEN $1 IN ('live', 'failed', 'cancelled', 'superseded') THEN COALESCE(finished_at, $3) ELSE finished_at END \
         WHERE id = $4 AND status IN ({})",
        placeholders(5, from.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to.as_str())
        .bind(error)
        .bind(now)
        .bind(id);
    for f in from {
        q = q.bind(f);
    }
    Ok(q.execute(db).await?.rows_affected() == 1)
}

impl Store {
    /// Records the resolved commit.
    pub async fn set_deployment_commit(&self, id: &str, commit: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE deployments SET commit_sha = $1 WHERE id = $2")
            .bind(commit)
            .bind(id)
            .execute(db)
            .await
            .map(drop)
    }

    /// Deletes a deployment and its log lines (a promotion's copy that never served), unless
    /// an environment points at it. Returns whether it was deleted.
    pub async fn delete_deployment(&self, id: &str) -> sqlx::Result<bool> {
        let db = &self.pool;
        sqlx::query(
            "DELETE FROM deployments WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM environments WHERE deployment_id = $2)",
        )
        .bind(id)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() > 0)
    }

    /// Finished deployments of an environment beyond its newest `keep` that no environment
    /// serves: what pruning removes. Deployments still queued, building or starting are never
    /// counted or returned.
    pub async fn prunable_deployments(&self, environment_id: &str, keep: i64) -> sqlx::Result<Vec<String>> {
        let db = &self.pool;
        sqlx::query_scalar(
            "SELECT id FROM (SELECT id FROM deployments WHERE environment_id = $1 \
               AND status IN ('live', 'superseded', 'failed', 'cancelled', 'crashed') \
               ORDER BY created_at DESC, id DESC LIMIT 9223372036854775807 OFFSET $2) AS old \
             WHERE NOT EXISTS (SELECT 1 FROM environments WHERE deployment_id = old.id)",
        )
        .bind(environment_id)
        .bind(keep)
        .fetch_all(db)
        .await
    }

    /// A deployment of the environment created after this one that has not finished yet:
    /// when there is one, a queued deploy is overtaken and need not build.
    pub async fn newer_pending_deployment(
        &self,
        environment_id: &str,
        created_at: i64,
        id: &str,
    ) -> sqlx::Result<Option<String>> {
        let db = &self.pool;
        sqlx::query_scalar(
            "SELECT id FROM deployments WHERE environment_id = $1 \
               AND status IN ('queued', 'building', 'deploying') \
               AND (created_at > $2 OR (created_at = $3 AND id > $4)) \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(environment_id)
        .bind(created_at)
        .bind(created_at)
        .bind(id)
        .fetch_optional(db)
        .await
    }

    /// Every environment's id (the pruning sweep at start).
    pub async fn all_environment_ids(&self) -> sqlx::Result<Vec<String>> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT id FROM environments").fetch_all(db).await
    }

    /// Records the detected build plan.
    pub async fn set_deployment_plan(&self, id: &str, plan_json: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE deployments SET build_plan = $1 WHERE id = $2")
            .bind(plan_json)
            .bind(id)
            .execute(db)
            .await
            .map(drop)
    }
}

/// The environment's live deployment if it was created after `created_at`.
pub(in crate::store) async fn newer_live_deployment(
    db: impl AnyExecutor<'_>,
    environment_id: &str,
    created_at: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT d.id FROM environments e JOIN deployments d ON d.id = e.deployment_id \
         WHERE e.id = $1 AND d.status = 'live' AND d.created_at > $2",
    )
    .bind(environment_id)
    .bind(created_at)
    .fetch_optional(db)
    .await
}

/// Re-derives `live` / `superseded` for built deployments: live while some environment
/// points at it, superseded (kept for rollback) otherwise. Returns those now superseded.
pub(in crate::store) async fn refresh_liveness(
    db: &mut sqlx::AnyConnection,
    ids: &[String],
) -> sqlx::Result<Vec<String>> {
    let mut superseded = Vec::new();
    for id in ids {
        let became: Option<String> = sqlx::query_scalar(
            "UPDATE deployments SET status = CASE WHEN EXISTS (SELECT 1 FROM environments WHERE deployment_id = deployments.id) \
               THEN 'live' ELSE 'superseded' END, \
               finished_at = COALESCE(finished_at, $1) \
             WHERE id = $2 AND status IN ('live', 'superseded') RETURNING status",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&mut *db)
        .await?;
        if became.as_deref() == Some("superseded") {
            superseded.push(id.clone());
        }
    }
    Ok(superseded)
}

impl Store {
    /// The newest built deployment of an environment older than `before` (rollback target).
    pub async fn previous_deployment(
        &self,
        environment_id: &str,
        before_created_at: i64,
        exclude_id: &str,
    ) -> sqlx::Result<Option<DeploymentRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments WHERE environment_id = $1 AND id <> $2 AND created_at <= $3 \
               AND status IN ('live', 'superseded') AND build_plan IS NOT NULL \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(environment_id)
        .bind(exclude_id)
        .bind(before_created_at)
        .fetch_optional(db)
        .await
    }
}

/// Deletes an environment row.
pub(in crate::store) async fn delete_environment_row(db: impl AnyExecutor<'_>, env_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM environments WHERE id = $1")
        .bind(env_id)
        .execute(db)
        .await
        .map(drop)
}

/// Moves deployments built for one environment that another environment now serves to
/// that environment, so deleting the first keeps them. Returns the ids that will be
/// deleted with the environment.
pub(in crate::store) async fn rehome_deployments(
    db: &mut sqlx::AnyConnection,
    env_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query(
        "UPDATE deployments SET environment_id = \
           (SELECT e.id FROM environments e WHERE e.deployment_id = deployments.id AND e.id <> $1 LIMIT 1) \
         WHERE environment_id = $2 AND EXISTS (SELECT 1 FROM environments e WHERE e.deployment_id = deployments.id AND e.id <> $3)",
    )
    .bind(env_id)
    .bind(env_id)
    .bind(env_id)
    .execute(&mut *db)
    .await?;
    sqlx::query_scalar("SELECT id FROM deployments WHERE environment_id = $1")
        .bind(env_id)
        .fetch_all(&mut *db)
        .await
}

// ---------------------------------------------------------------- logs

/// One captured log line.
#[derive(Clone, Debug, FromRow)]
pub struct LogRow {
    /// Cursor: strictly increasing.
    pub id: i64,
    /// `build` or `runtime`.
    pub kind: String,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    /// Time (ms).
    pub ts: i64,
    /// The line.
    pub line: String,
}

/// A line to append.
#[derive(Clone, Debug)]
pub struct NewLogLine {
    /// Deployment it belongs to.
    pub deployment_id: String,
    /// `build` or `runtime`.
    pub kind: &'static str,
    /// `stdout`, `stderr` or `system`.
    pub stream: &'static str,
    /// Time (ms).
    pub ts: i64,
    /// The line.
    pub line: String,
    /// Written by an app after berth asked its instance to stop (shutdown output): kept
    /// in the log, not taken as an error event.
    pub after_stop: bool,
}

impl Store {
    /// Appends a batch of log lines in one transaction, each recording its environment and
    /// cost, and adds their cost to their environments' totals. Returns each environment's
    /// new total. Lines of a deployment that is gone are left out.
    pub async fn append_logs(&self, lines: &[NewLogLine]) -> sqlx::Result<Vec<(String, i64)>> {
        let store = self;
        let mut tx = store.begin().await?;
        let mut environment_of: std::collections::HashMap<&str, Option<String>> = std::collections::HashMap::new();
        let mut added: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for l in lines {
            let environment_id = match environment_of.get(l.deployment_id.as_str()) {
                Some(known) => known.clone(),
                None => {
                    let found: Option<String> =
                        sqlx::query_scalar("SELECT environment_id FROM deployments WHERE id = $1")
                            .bind(&l.deployment_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    environment_of.insert(&l.deployment_id, found.clone());
                    found
                }
            };
            let Some(environment_id) = environment_id else {
                continue;
            };
            let bytes = log_retention::line_cost(&l.line);
            sqlx::query(
                "INSERT INTO deployment_logs (deployment_id, environment_id, kind, stream, ts, line, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&l.deployment_id)
            .bind(&environment_id)
            .bind(l.kind)
            .bind(l.stream)
            .bind(l.ts)
            .bind(&l.line)
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
            *added.entry(environment_id).or_default() += bytes;
        }
        let mut totals = Vec::with_capacity(added.len());
        for (environment_id, bytes) in added {
            let total: i64 = sqlx::query_scalar(
                "INSERT INTO log_usage (environment_id, bytes) VALUES ($1, $2) \
                 ON CONFLICT (environment_id) DO UPDATE SET bytes = log_usage.bytes + excluded.bytes RETURNING bytes",
            )
            .bind(&environment_id)
            .bind(bytes)
            .fetch_one(&mut *tx)
            .await?;
            totals.push((environment_id, total));
        }
        tx.commit().await?;
        Ok(totals)
    }

    /// Lines after `cursor` (exclusive), oldest first.
    pub async fn read_logs(
        &self,
        deployment_id: &str,
        kind: Option<&str>,
        after: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<LogRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, kind, stream, ts, line FROM deployment_logs WHERE deployment_id = $1 AND ($2 IS NULL OR kind = $3) AND id > $4 ORDER BY id LIMIT $5",
        )
        .bind(deployment_id)
        .bind(kind)
        .bind(kind)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// The last `n` lines of a kind, oldest first.
    pub async fn tail_logs(&self, deployment_id: &str, kind: &str, n: i64) -> sqlx::Result<Vec<LogRow>> {
        let db = &self.pool;
        let mut rows: Vec<LogRow> = sqlx::query_as(
            "SELECT id, kind, stream, ts, line FROM deployment_logs WHERE deployment_id = $1 AND kind = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(deployment_id)
        .bind(kind)
        .bind(n)
        .fetch_all(db)
        .await?;
        rows.reverse();
        Ok(rows)
    }

    /// The last `build.1` lines of deployment `build.0`'s build log and the last
    /// `runtime.1` lines of deployment `runtime.0`'s runtime log, each oldest first, in one
    /// query (a site's read shows both).
    pub async fn tail_build_and_runtime_logs(
        &self,
        build: (&str, i64),
        runtime: (&str, i64),
    ) -> sqlx::Result<(Vec<LogRow>, Vec<LogRow>)> {
        let db = &self.pool;
        let rows: Vec<LogRow> = sqlx::query_as(
            "SELECT id, kind, stream, ts, line FROM (SELECT id, kind, stream, ts, line FROM deployment_logs \
               WHERE deployment_id = $1 AND kind = 'build' ORDER BY id DESC LIMIT $2) AS b \
             UNION ALL \
             SELECT id, kind, stream, ts, line FROM (SELECT id, kind, stream, ts, line FROM deployment_logs \
               WHERE deployment_id = $3 AND kind = 'runtime' ORDER BY id DESC LIMIT $4) AS r",
        )
        .bind(build.0)
        .bind(build.1)
        .bind(runtime.0)
        .bind(runtime.1)
        .fetch_all(db)
        .await?;
        let (mut builds, mut runtimes): (Vec<LogRow>, Vec<LogRow>) = rows.into_iter().partition(|r| r.kind == "build");
        builds.sort_by_key(|r| r.id);
        runtimes.sort_by_key(|r| r.id);
        Ok((builds, runtimes))
    }
}

// ---------------------------------------------------------------- events, audit, idempotency

/// Records a domain event.
pub(in crate::store) async fn insert_event(
    db: impl AnyExecutor<'_>,
    org_id: &str,
    kind: &str,
    subject: &str,
    data: &serde_json::Value,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO events (org_id, kind, subject, data, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(org_id)
    .bind(kind)
    .bind(subject)
    .bind(data.to_string())
    .bind(now_ms())
    .fetch_one(db)
    .await
}

impl Store {
    /// Records a domain event on its own, in a write transaction like every change's
    /// event (so events commit in id order across replicas).
    pub async fn record_event(
        &self,
        org_id: &str,
        kind: &str,
        subject: &str,
        data: &serde_json::Value,
    ) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let id = insert_event(&mut *tx, org_id, kind, subject, data).await?;
        tx.commit().await?;
        Ok(id)
    }
}

/// An event, as readers see it.
#[derive(Clone, Debug, FromRow)]
pub struct EventRow {
    /// Cursor (grows with every event).
    pub id: i64,
    /// Org.
    pub org_id: String,
    /// Kind (`deployment.live`, `domain.active`, …).
    pub kind: String,
    /// What it is about (a deployment's id, a domain's id, …).
    pub subject: String,
    /// JSON details.
    pub data: String,
    /// When.
    pub created_at: i64,
}

impl Store {
    /// The newest event's id, 0 when there is none.
    pub async fn latest_event_id(&self) -> sqlx::Result<i64> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(db)
            .await
    }

    /// Events about `subject` after the cursor `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, subject: &str, after: i64, limit: i64) -> sqlx::Result<Vec<EventRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, org_id, kind, subject, data, created_at FROM events WHERE subject = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(subject)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// Events about any subject after the cursor `after`, oldest first, at most `limit`.
    pub async fn all_events_after(&self, after: i64, limit: i64) -> sqlx::Result<Vec<EventRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, org_id, kind, subject, data, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
    }
}

// ---------------------------------------------------------------- replicas

impl Store {
    /// Records that replica `id` is alive now (first beat: since now).
    pub async fn beat_replica(&self, id: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO replicas (id, started_at, heartbeat_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(id)
        .bind(now)
        .bind(now)
        .execute(db)
        .await
        .map(drop)
    }
}

/// The replicas whose heartbeat is newer than `since` (ms), by id.
pub(in crate::store) async fn live_replicas(db: impl AnyExecutor<'_>, since: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT id FROM replicas WHERE heartbeat_at > $1 ORDER BY id")
        .bind(since)
        .fetch_all(db)
        .await
}

impl Store {
    /// The replicas whose heartbeat is newer than `since` (ms), by id.
    pub async fn live_replicas(&self, since: i64) -> sqlx::Result<Vec<String>> {
        live_replicas(&self.pool, since).await
    }

    /// Forgets replica `id` (it stopped).
    pub async fn remove_replica(&self, id: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(id)
            .execute(db)
            .await
            .map(drop)
    }

    /// Forgets every replica silent since before `before` (ms): killed ones; returns how
    /// many.
    pub async fn forget_silent_replicas(&self, before: i64) -> sqlx::Result<u64> {
        let db = &self.pool;
        sqlx::query("DELETE FROM replicas WHERE heartbeat_at < $1")
            .bind(before)
            .execute(db)
            .await
            .map(|done| done.rows_affected())
    }

    /// Deletes events older than `before` (ms) and all but the newest `keep`; returns how
    /// many went. A batch at a time, so the write lock is never held long.
    pub async fn prune_events(&self, before: i64, keep: i64) -> sqlx::Result<u64> {
        let db = &self.pool;
        delete_in_batches(
            db,
            "DELETE FROM events WHERE id IN (SELECT id FROM events \
               WHERE created_at < $1 OR id <= (SELECT COALESCE(MAX(id), 0) FROM events) - $2 LIMIT 5000)",
            &[before, keep],
        )
        .await
    }

    /// Deletes invitations that ended (accepted, revoked or expired) before `before` (ms);
    /// returns how many went. Pending ones are never touched.
    pub async fn prune_finished_invitations(&self, before: i64) -> sqlx::Result<u64> {
        let db = &self.pool;
        delete_in_batches(
            db,
            "DELETE FROM invitations WHERE id IN (SELECT id FROM invitations \
               WHERE COALESCE(accepted_at, revoked_at, expires_at) BETWEEN 1 AND $1 LIMIT 5000)",
            &[before],
        )
        .await
    }

    /// Deletes audit entries written before `before` (ms), and each org's entries beyond its
    /// newest `keep_per_org`; returns how many went.
    pub async fn prune_audit(&self, before: i64, keep_per_org: i64) -> sqlx::Result<u64> {
        let db = &self.pool;
        let mut total = delete_in_batches(
            db,
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE created_at < $1 LIMIT 5000)",
            &[before],
        )
        .await?;
        // An org over its cap: the id of its oldest entry kept, found by the (org, id) index.
        let over: Vec<(String, i64)> = sqlx::query_as(
            "SELECT o.id, (SELECT a.id FROM audit_log a WHERE a.org_id = o.id ORDER BY a.id DESC LIMIT 1 OFFSET $1) \
             FROM orgs o WHERE (SELECT a.id FROM audit_log a WHERE a.org_id = o.id ORDER BY a.id DESC LIMIT 1 OFFSET $2) IS NOT NULL",
        )
        .bind(keep_per_org - 1)
        .bind(keep_per_org - 1)
        .fetch_all(db)
        .await?;
        for (org_id, oldest_kept) in over {
            loop {
                let gone = sqlx::query(
                    "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE org_id = $1 AND id < $2 LIMIT 5000)",
                )
                .bind(&org_id)
                .bind(oldest_kept)
                .execute(db)
                .await?
                .rows_affected();
                total += gone;
                if gone < 5000 {
                    break;
                }
            }
        }
        Ok(total)
    }
}

/// Runs a `DELETE … LIMIT 5000` statement with `binds` until a run deletes fewer than
/// 5000 rows, so no one statement holds the write lock long; returns how many went.
async fn delete_in_batches(db: &AnyPool, sql: &'static str, binds: &[i64]) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let mut query = sqlx::query(sql);
        for value in binds {
            query = query.bind(*value);
        }
        let gone = query.execute(db).await?.rows_affected();
        total += gone;
        if gone < 5000 {
            return Ok(total);
        }
    }
}

impl Store {
    /// Deletes finished jobs (`done` or `failed`) last changed before `before` (ms); returns
    /// how many went. Pending and running jobs are never touched. A batch at a time.
    pub async fn prune_finished_jobs(&self, before: i64) -> sqlx::Result<u64> {
        let db = &self.pool;
        delete_in_batches(
            db,
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
               WHERE status IN ('done', 'failed') AND updated_at < $1 LIMIT 5000)",
            &[before],
        )
        .await
    }
}

/// An audit entry.
#[derive(Clone, Debug, FromRow)]
pub struct AuditRow {
    /// Cursor.
    pub id: i64,
    /// Key, grant or user id used.
    pub key_id: Option<String>,
    /// `user`, `key`, `oauth_client` or `system`.
    pub actor_kind: String,
    /// Who, as shown: an email, a key's name and prefix, a client's name.
    pub actor_name: String,
    /// The acting person's email, when a person acted.
    pub actor_email: Option<String>,
    /// Tool or action name.
    pub action: String,
    /// Arguments with secrets removed (JSON).
    pub arguments: String,
    /// `ok` or `error`.
    pub outcome: String,
    /// Error message.
    pub error: Option<String>,
    /// When.
    pub created_at: i64,
}

/// One audit entry to write (secrets already removed).
#[derive(Debug)]
pub struct NewAuditEntry<'a> {
    /// The org acted in.
    pub org_id: &'a str,
    /// Key, grant or user id used.
    pub key_id: Option<&'a str>,
    /// `user`, `key`, `oauth_client` or `system`.
    pub actor_kind: &'a str,
    /// Who, as shown.
    pub actor_name: &'a str,
    /// The acting person's email.
    pub actor_email: Option<&'a str>,
    /// Tool or action name.
    pub action: &'a str,
    /// Arguments with secrets removed.
    pub arguments: &'a serde_json::Value,
    /// `ok` or `error`.
    pub outcome: &'a str,
    /// Error message, secrets removed.
    pub error: Option<&'a str>,
}

/// Records one mutating call.
pub(in crate::store) async fn insert_audit(db: impl AnyExecutor<'_>, entry: &NewAuditEntry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (org_id, key_id, actor_kind, actor_name, actor_email, action, arguments, \
         outcome, error, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(entry.org_id)
    .bind(entry.key_id)
    .bind(entry.actor_kind)
    .bind(entry.actor_name)
    .bind(entry.actor_email)
    .bind(entry.action)
    .bind(entry.arguments.to_string())
    .bind(entry.outcome)
    .bind(entry.error)
    .bind(now_ms())
    .execute(db)
    .await
    .map(drop)
}

impl Store {
    /// Records one mutating call.
    pub async fn insert_audit(&self, entry: &NewAuditEntry<'_>) -> sqlx::Result<()> {
        insert_audit(&self.pool, entry).await
    }
}

/// Which audit entries to list; `None` matches everything.
#[derive(Debug, Default)]
pub struct AuditFilter<'a> {
    /// Entries older than this id (the cursor).
    pub before: Option<i64>,
    /// Exactly this action.
    pub action: Option<&'a str>,
    /// Exactly this actor kind.
    pub actor_kind: Option<&'a str>,
    /// `ok` or `error`.
    pub outcome: Option<&'a str>,
    /// At or after this time (ms).
    pub since: Option<i64>,
    /// Before this time (ms).
    pub until: Option<i64>,
}

impl Store {
    /// Audit entries of an org matching `filter`, newest first. (The actor filter is the
    /// service's: SQLite's `lower()` folds ASCII only.)
    pub async fn list_audit(&self, org_id: &str, filter: &AuditFilter<'_>, limit: i64) -> sqlx::Result<Vec<AuditRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT id, key_id, actor_kind, actor_name, actor_email, action, arguments, outcome, error, created_at \
             FROM audit_log WHERE org_id = $1 \
               AND ($2 IS NULL OR id < $2) \
               AND ($3 IS NULL OR action = $3) \
               AND ($4 IS NULL OR actor_kind = $4) \
               AND ($5 IS NULL OR outcome = $5) \
               AND ($6 IS NULL OR created_at >= $6) \
               AND ($7 IS NULL OR created_at < $7) \
             ORDER BY id DESC LIMIT $8",
        )
        .bind(org_id)
        .bind(filter.before)
        .bind(filter.action)
        .bind(filter.actor_kind)
        .bind(filter.outcome)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .fetch_all(db)
        .await
    }

    /// Claims an idempotency key for a call; false when the key was already claimed.
    pub async fn claim_idempotency_key(&self, org_id: &str, key: &str, action: &str) -> sqlx::Result<bool> {
        let db = &self.pool;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (org_id, key, action, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(org_id)
        .bind(key)
        .bind(action)
        .bind(now_ms())
        .execute(db)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The stored action and response of an idempotency key.
    pub async fn get_idempotency_key(&self, org_id: &str, key: &str) -> sqlx::Result<Option<(String, Option<String>)>> {
        let db = &self.pool;
        sqlx::query_as("SELECT action, response FROM idempotency_keys WHERE org_id = $1 AND key = $2")
            .bind(org_id)
            .bind(key)
            .fetch_optional(db)
            .await
    }

    /// Stores the response of a claimed key.
    pub async fn finish_idempotency_key(&self, org_id: &str, key: &str, response: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE org_id = $2 AND key = $3")
            .bind(response)
            .bind(org_id)
            .bind(key)
            .execute(db)
            .await
            .map(drop)
    }

    /// Releases a claimed key whose call failed, so a retry can run.
    pub async fn release_idempotency_key(&self, org_id: &str, key: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("DELETE FROM idempotency_keys WHERE org_id = $1 AND key = $2 AND response IS NULL")
            .bind(org_id)
            .bind(key)
            .execute(db)
            .await
            .map(drop)
    }
}

// ---------------------------------------------------------------- jobs

/// A job row.
#[derive(Clone, Debug, FromRow)]
pub struct JobRow {
    /// Id.
    pub id: i64,
    /// Org the work is for.
    pub org_id: String,
    /// Kind (`deploy`, …): picks the handler.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// Attempts so far, this one included once claimed.
    pub attempts: i64,
    /// Give up after this many.
    pub max_attempts: i64,
}

/// Enqueues a job. With an idempotency key, a second enqueue of the same key is a no-op
/// and returns the existing job's id.
pub(in crate::store) async fn enqueue_job(
    db: &mut sqlx::AnyConnection,
    org_id: &str,
    job: &NewJob<'_>,
) -> sqlx::Result<i64> {
    let (kind, payload, max_attempts) = (job.kind, &job.payload, job.max_attempts);
    let (idempotency_key, fair_key) = (job.idempotency_key.as_deref(), job.fair_key.as_deref());
    let now = now_ms();
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO jobs (org_id, kind, payload, status, max_attempts, run_at, idempotency_key, fair_key, created_at, updated_at) \
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(org_id)
    .bind(kind)
    .bind(payload.to_string())
    .bind(max_attempts)
    .bind(now)
    .bind(idempotency_key)
    .bind(fair_key)
    .bind(now)
    .bind(now)
    .fetch_optional(&mut *db)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => {
            sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = $1")
                .bind(idempotency_key)
                .fetch_one(&mut *db)
                .await
        }
    }
}

impl Store {
    /// Enqueues a job on its own (a deploy's job is queued with its deployment by
    /// [`Store::enqueue_deploy`]); with an idempotency key, a second enqueue of the same key
    /// is a no-op and returns the existing job's id.
    pub async fn enqueue_job(&self, org_id: &str, job: &NewJob<'_>) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let id = enqueue_job(&mut tx, org_id, job).await?;
        tx.commit().await?;
        Ok(id)
    }
}

impl Store {
    /// Claims a ready job of the given kinds for `owner`: pending and due, or running with an
    /// expired lease (whoever held it died or lost touch); the oldest of those whose `fair_key`
    /// (a deploy's site) has the fewest jobs running, so one site's burst cannot take every
    /// worker while another site's deploy waits. The claim is one UPDATE, so two workers (or
    /// two processes on one database) never get the same job, and a live lease is never taken:
    /// on SQLite the one writer makes it atomic; on Postgres the candidate row is locked with
    /// `FOR UPDATE SKIP LOCKED` (a concurrent claimer takes the next one instead of waiting)
    /// and the claim condition is checked again on the locked row.
    pub async fn claim_job(&self, kinds: &[&str], lease_ms: i64, owner: &str) -> sqlx::Result<Option<JobRow>> {
        let store = self;
        let now = now_ms();
        let lock = match store.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = $1, lease_owner = $2, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs AS j WHERE kind IN ({kinds}) AND \
                           ((status = 'pending' AND run_at <= $3) OR (status = 'running' AND lease_until < $3)) \
                         ORDER BY (SELECT COUNT(*) FROM jobs AS r WHERE r.fair_key = j.fair_key AND r.status = 'running'), \
                                  run_at, id LIMIT 1{lock}) \
               AND ((status = 'pending' AND run_at <= $3) OR (status = 'running' AND lease_until < $3)) \
             RETURNING id, org_id, kind, payload, attempts, max_attempts",
            kinds = placeholders(4, kinds.len())
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now + lease_ms)
            .bind(owner)
            .bind(now);
        for k in kinds {
            q = q.bind(*k);
        }
        q.fetch_optional(&store.pool).await
    }

    /// Extends a running job's lease while `owner` still holds it; false when it lost the
    /// lease (it expired and another process took the job over).
    pub async fn heartbeat_job(&self, id: i64, lease_ms: i64, owner: &str) -> sqlx::Result<bool> {
        let db = &self.pool;
        let now = now_ms();
        Ok(sqlx::query(
            "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE id = $3 AND status = 'running' AND lease_owner = $4",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(db)
        .await?
        .rows_affected()
            == 1)
    }

    /// Marks a job done, if `owner` still holds it (a process that lost its lease leaves the
    /// outcome to the one that took the job over).
    pub async fn complete_job(&self, id: i64, owner: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "UPDATE jobs SET status = 'done', lease_until = NULL, lease_owner = NULL, updated_at = $1 \
             WHERE id = $2 AND status = 'running' AND lease_owner = $3",
        )
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(db)
        .await
        .map(drop)
    }

    /// Records a failed attempt of a job `owner` holds: back to pending at `retry_at`, or
    /// `failed` for good when `retry_at` is `None`.
    pub async fn fail_job(&self, id: i64, owner: &str, error: &str, retry_at: Option<i64>) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query(
            "UPDATE jobs SET status = CASE WHEN $1 IS NULL THEN 'failed' ELSE 'pending' END, run_at = COALESCE($2, run_at), \
               lease_until = NULL, lease_owner = NULL, last_error = $3, updated_at = $4 \
             WHERE id = $5 AND status = 'running' AND lease_owner = $6",
        )
        .bind(retry_at)
        .bind(retry_at)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(db)
        .await
        .map(drop)
    }

    /// Jobs not yet finished (pending or running), for shutdown checks and tests.
    pub async fn count_unfinished_jobs(&self) -> sqlx::Result<i64> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')")
            .fetch_one(db)
            .await
    }

    /// Sites in a given status across orgs (crash recovery).
    pub async fn list_sites_with_status(&self, status: &str) -> sqlx::Result<Vec<SiteRow>> {
        let db = &self.pool;
        sqlx::query_as(concat!("SELECT ", site_columns!(), " FROM sites WHERE status = $1"))
            .bind(status)
            .fetch_all(db)
            .await
    }

    /// Puts the jobs `owner` left `running` back in the queue: called at start, when the
    /// data-dir lock proves the previous run of this owner is dead. Jobs other processes hold
    /// are left alone: they are taken over only once their lease expires (see [`claim_job`]).
    /// Jobs with no recorded owner were left by a version that kept none (one process per
    /// database) and count as this owner's.
    pub async fn requeue_own_jobs(&self, owner: &str) -> sqlx::Result<u64> {
        let db = &self.pool;
        Ok(sqlx::query(
            "UPDATE jobs SET status = 'pending', lease_until = NULL, lease_owner = NULL, run_at = $1 \
             WHERE status = 'running' AND (lease_owner = $2 OR lease_owner IS NULL)",
        )
        .bind(now_ms())
        .bind(owner)
        .execute(db)
        .await?
        .rows_affected())
    }

    /// Takes or renews the singleton lease `name` for `holder`, until `lease_ms` from now: true
    /// when `holder` holds it now (it was free, expired, or already its own); false while
    /// another holder's lease is live. One statement, so two processes never both get it.
    pub async fn hold_singleton(&self, name: &str, holder: &str, lease_ms: i64) -> sqlx::Result<bool> {
        let db = &self.pool;
        let now = now_ms();
        Ok(sqlx::query(
            "INSERT INTO singleton_leases (name, holder, lease_until) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE singleton_leases.holder = excluded.holder OR singleton_leases.lease_until < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now + lease_ms)
        .bind(now)
        .execute(db)
        .await?
        .rows_affected()
            == 1)
    }

    /// Gives up `holder`'s singleton lease `name` (at shutdown), so another process takes the
    /// loop over without waiting for the lease to expire.
    pub async fn release_singleton(&self, name: &str, holder: &str) -> sqlx::Result<()> {
        let db = &self.pool;
        sqlx::query("DELETE FROM singleton_leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(db)
            .await
            .map(drop)
    }
}

// ---------------------------------------------------------------- env vars

/// A sealed env var.
#[derive(Clone, Debug, FromRow)]
pub struct EnvVarRow {
    /// '' for the whole site, else an environment id.
    pub scope: String,
    /// Name.
    pub name: String,
    /// Sealed value.
    pub sealed: String,
}

impl Store {
    /// Env vars of a site: site-wide ones and, with `environment_id`, that environment's.
    pub async fn list_env_vars(&self, site_id: &str, environment_id: Option<&str>) -> sqlx::Result<Vec<EnvVarRow>> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT scope, name, sealed FROM env_vars WHERE site_id = $1 AND (scope = '' OR scope = $2) ORDER BY name, scope",
        )
        .bind(site_id)
        .bind(environment_id.unwrap_or(""))
        .fetch_all(db)
        .await
    }
}

/// Sets (or replaces) one env var.
pub(in crate::store) async fn upsert_env_var(
    db: impl AnyExecutor<'_>,
    org_id: &str,
    site_id: &str,
    scope: &str,
    name: &str,
    sealed: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO env_vars (org_id, site_id, scope, name, sealed, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (site_id, scope, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
    )
    .bind(org_id)
    .bind(site_id)
    .bind(scope)
    .bind(name)
    .bind(sealed)
    .bind(now_ms())
    .execute(db)
    .await
    .map(drop)
}

/// Deletes one env var; true if it existed.
pub(in crate::store) async fn delete_env_var(
    db: impl AnyExecutor<'_>,
    site_id: &str,
    scope: &str,
    name: &str,
) -> sqlx::Result<bool> {
    Ok(
        sqlx::query("DELETE FROM env_vars WHERE site_id = $1 AND scope = $2 AND name = $3")
            .bind(site_id)
            .bind(scope)
            .bind(name)
            .execute(db)
            .await?
            .rows_affected()
            == 1,
    )
}

// ---------------------------------------------------------------- scaling

/// An environment's scale settings.
#[derive(Clone, Debug, FromRow, PartialEq, Eq)]
pub struct ScalingRow {
    /// Instances kept running even when idle (0 = scale to zero).
    pub min_instances: i64,
    /// Most instances.
    pub max_instances: i64,
    /// Seconds without requests before an environment with `min_instances = 0` sleeps.
    pub idle_timeout_seconds: i64,
    /// In-flight requests per instance to aim for.
    pub target_concurrency: i64,
    /// Memory of each instance in MiB; `None`: the server's default.
    pub memory_mb: Option<i64>,
    /// CPU of each instance in thousandths of a core; `None`: the server's default.
    pub cpu_millis: Option<i64>,
}

impl Store {
    /// Reads an environment's scale settings.
    pub async fn get_scaling(&self, env_id: &str) -> sqlx::Result<ScalingRow> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT min_instances, max_instances, idle_timeout_seconds, target_concurrency, memory_mb, cpu_millis FROM environments WHERE id = $1",
        )
        .bind(env_id)
        .fetch_one(db)
        .await
    }
}

/// Writes an environment's scale settings.
pub(in crate::store) async fn set_scaling(db: impl AnyExecutor<'_>, env_id: &str, s: &ScalingRow) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE environments SET min_instances = $1, max_instances = $2, idle_timeout_seconds = $3, target_concurrency = $4, memory_mb = $5, cpu_millis = $6, updated_at = $7 WHERE id = $8",
    )
    .bind(s.min_instances)
    .bind(s.max_instances)
    .bind(s.idle_timeout_seconds)
    .bind(s.target_concurrency)
    .bind(s.memory_mb)
    .bind(s.cpu_millis)
    .bind(now_ms())
    .bind(env_id)
    .execute(db)
    .await
    .map(drop)
}

// ---------------------------------------------------------------- provider configs

/// A provider's sealed settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderConfigRow {
    /// Provider name.
    pub provider: String,
    /// The settings object, sealed.
    pub sealed: String,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
}

impl Store {
    /// One provider's settings of an org.
    pub async fn get_provider_config(&self, org_id: &str, provider: &str) -> sqlx::Result<Option<ProviderConfigRow>> {
        let db = &self.pool;
        sqlx::query_as("SELECT provider, sealed, updated_at FROM provider_configs WHERE org_id = $1 AND provider = $2")
            .bind(org_id)
            .bind(provider)
            .fetch_optional(db)
            .await
    }
}

/// Replaces one provider's settings of an org.
pub(in crate::store) async fn set_provider_config(
    db: impl AnyExecutor<'_>,
    org_id: &str,
    provider: &str,
    sealed: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO provider_configs (org_id, provider, sealed, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id, provider) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
    )
    .bind(org_id)
    .bind(provider)
    .bind(sealed)
    .bind(now_ms())
    .execute(db)
    .await
    .map(drop)
}

// ---------------------------------------------------------------- log retention

pub mod log_retention;

// ---------------------------------------------------------------- dashboard sessions

pub mod ui_sessions;

// ---------------------------------------------------------------- push to deploy

pub mod git;

/// SQL of sandbox identities.
pub mod sandbox;

/// SQL of custom domains.
pub mod domains;

/// SQL of certificates and berth's ACME accounts.
pub mod certificates;

/// SQL of the DNS provider objects created for domains.
pub mod domain_dns;

/// SQL of users, members, scoped keys and environment protection.
pub mod people;

/// SQL of invitations (single-use links that make a person a member).
pub mod invitations;

/// SQL of traffic metrics: minute, hour and day buckets, rollups and pruning.
pub mod metrics;

/// SQL of error patterns: templates of runtime log errors and their counts per minute.
pub mod error_patterns;
/// OAuth clients, grants, codes and tokens.
pub mod oauth;

/// SQL of the ACME challenges every replica's edge answers.
pub mod acme_challenges;

/// SQL of resources (stores attached to sites).
pub mod resources;

/// Copying a whole installation from one database to another (`berth migrate-db`).
pub mod copy;
mod ops;
/// SQL of shared targets: the installation's shared values and recorded instances.
pub mod shared;
/// An org's usage per site and day: traffic, builds, instance time.
pub mod usage;
pub use ops::{
    Activation, DeployQueued, NewApiKey, NewDeploy, NewJob, NewSite, OrgCreated, OrgSwitch, SiteCreated,
    SiteSettingsChange,
};

#[cfg(test)]
mod tests {
    use super::{Backend, like_containing, redact_url};

    #[test]
    fn a_database_url_names_its_engine_and_never_shows_its_password() {
        assert_eq!(
            Backend::of_url("sqlite:///var/lib/berth/berth.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(Backend::of_url("postgres://berth@db/berth").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of_url("postgresql://berth@db/berth").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of_url("mysql://root:hunter2@db/berth")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sqlite://") && err.contains("postgres://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(
            redact_url("postgres://berth:s3cret@db:5432/berth"),
            "postgres://berth:***@db:5432/berth"
        );
        assert!(!redact_url("not a url s3cret").contains("s3cret"));
    }

    #[test]
    fn a_search_matches_only_itself() {
        assert_eq!(like_containing("Shop"), "%shop%");
        assert_eq!(like_containing("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
