//! `berth migrate-db`: copies a whole installation from one database to another (SQLite to
//! Postgres, or back). The tables and their columns are read from the databases
//! themselves (`sqlite_master`, `information_schema`), never from a list kept by hand, and
//! the copy order comes from their foreign keys, so a table added by a later migration is
//! copied without anyone remembering to add it here.
//!
//! The source is read in one snapshot; the target is written in one transaction that is
//! committed only after every table's row count matches, so a failed copy leaves the target
//! as empty as it was. Rows keep their ids; sealed secrets are copied as they are (the
//! target needs the same master key). Triggers that keep derived rows (per-org site counts,
//! log usage) are off during the copy: their rows are copied like any other.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Backend, Store, redact_url, sqlite_path};

/// Rows read from the source and held in memory at a time.
pub const BATCH_ROWS: usize = 1_000;

/// Bound parameters per INSERT statement (under SQLite's 32,766 and Postgres' 65,535).
const MAX_PARAMS: usize = 30_000;

/// The bookkeeping table of sqlx's migrations: each database keeps its own.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Rows copied into one table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableCopy {
    /// Table name.
    pub table: String,
    /// Rows in the source, equal to the rows now in the target.
    pub rows: u64,
}

/// What a copy did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CopySummary {
    /// The source, password removed.
    pub from: String,
    /// The target, password removed.
    pub to: String,
    /// Every table in copy order.
    pub tables: Vec<TableCopy>,
    /// Rows over all tables.
    pub rows: u64,
}

/// How a column's values are read and bound, from the target's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Real,
    Text,
    Blob,
}

/// One value in flight.
enum Cell {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

/// A table of the target: its columns with their kinds, and its identity columns.
struct Table {
    name: String,
    columns: Vec<(String, Kind)>,
    identity: Vec<String>,
}

/// Copies everything in `from` into the empty database `to`, calling `progress` after each
/// table with its name and row count.
pub async fn migrate_db(from: &str, to: &str, mut progress: impl FnMut(&str, u64)) -> anyhow::Result<CopySummary> {
    let (from_backend, to_backend) = (Backend::of_url(from)?, Backend::of_url(to)?);
    if same_database(from, to, from_backend, to_backend) {
        bail!(
            "--from and --to name the same database ({}); --to must be a new, empty database",
            redact_url(to)
        );
    }
    if from_backend == Backend::Sqlite && !sqlite_path(from).is_file() {
        bail!(
            "no SQLite database at {} (--from): pass the server's database, e.g. sqlite://DATA/berth.db",
            sqlite_path(from).display()
        );
    }
    refuse_newer_source(from, from_backend).await?;
    let source = Store::open(from)
        .await
        .with_context(|| format!("opening the source {}", redact_url(from)))?;
    let target = Store::open(to)
        .await
        .with_context(|| format!("opening the target {}", redact_url(to)))?;

    // The source in one snapshot: a server still writing to it cannot tear the copy.
    let mut src = source.pool().begin().await.context("starting a read on the source")?;
    if from_backend == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *src)
            .await?;
    }
    let mut dst = target.begin().await.context("starting the write on the target")?;

    let source_tables = table_names(&mut src, from_backend).await?;
    let target_tables = table_names(&mut dst, to_backend).await?;
    if source_tables != target_tables {
        let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect::<Vec<_>>().join(", ");
        bail!(
            "the two schemas differ (only in the source: [{}]; only in the target: [{}]); \
             both are migrated by this berth, so this berth's migrations for the two engines disagree",
            only(&source_tables, &target_tables),
            only(&target_tables, &source_tables)
        );
    }
    for table in &target_tables {
        let any: Option<i64> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT 1 FROM {} LIMIT 1", quote(table))))
                .fetch_optional(&mut *dst)
                .await?;
        if any.is_some() {
            bail!(
                "the target {} is not empty (table {table} has rows); migrate-db copies into an \
                 empty database only: create a new one (CREATE DATABASE …) and pass it as --to",
                redact_url(to)
            );
        }
    }
    let order = copy_order(&mut dst, to_backend, &target_tables).await?;

    // Triggers that derive rows from inserts would count what is copied twice.
    let triggers = disable_triggers(&mut dst, to_backend, &order).await?;

    let mut tables = Vec::with_capacity(order.len());
    let mut total = 0u64;
    for name in &order {
        let table = describe(&mut dst, to_backend, name).await?;
        let source_columns: BTreeSet<String> = describe(&mut src, from_backend, name)
            .await?
            .columns
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let target_columns: BTreeSet<String> = table.columns.iter().map(|(c, _)| c.clone()).collect();
        if source_columns != target_columns {
            bail!(
                "table {name} has columns [{}] in the source and [{}] in the target; \
                 this berth's migrations for the two engines disagree",
                source_columns.into_iter().collect::<Vec<_>>().join(", "),
                target_columns.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let expected: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", quote(name))))
            .fetch_one(&mut *src)
            .await?;
        let copied = copy_table(&mut src, &mut dst, &table)
            .await
            .with_context(|| format!("copying table {name}"))?;
        let landed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", quote(name))))
            .fetch_one(&mut *dst)
            .await?;
        if copied != expected as u64 || landed != expected {
            bail!(
                "table {name}: the source has {expected} rows, {copied} were read and the target \
                 holds {landed}; nothing was committed"
            );
        }
        if to_backend == Backend::Postgres {
            for column in &table.identity {
                // New rows must not collide with the copied ids.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({c}), 0) + 1, false) FROM {t}",
                    c = quote(column),
                    t = quote(name)
                )))
                .bind(name)
                .bind(column)
                .execute(&mut *dst)
                .await
                .with_context(|| format!("moving the sequence of {name}.{column} past the copied ids"))?;
            }
        }
        progress(name, copied);
        total += copied;
        tables.push(TableCopy {
            table: name.clone(),
            rows: copied,
        });
    }
    enable_triggers(&mut dst, to_backend, &order, &triggers).await?;
    dst.commit().await.context("committing the copy on the target")?;
    src.rollback().await?;
    Ok(CopySummary {
        from: redact_url(from),
        to: redact_url(to),
        tables,
        rows: total,
    })
}

/// Whether two URLs name one database (passwords and spelling of the URL aside).
fn same_database(from: &str, to: &str, a: Backend, b: Backend) -> bool {
    match (a, b) {
        (Backend::Sqlite, Backend::Sqlite) => {
            let canonical = |url: &str| {
                let path = sqlite_path(url);
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
                let dir = dir.map_or_else(|| std::path::PathBuf::from("."), |d| d.to_path_buf());
                let dir = dir.canonicalize().unwrap_or(dir);
                dir.join(path.file_name().unwrap_or_default())
            };
            canonical(from) == canonical(to)
        }
        (Backend::Postgres, Backend::Postgres) => {
            let key = |url: &str| {
                url::Url::parse(url).ok().map(|u| {
                    (
                        u.host_str().unwrap_or("").to_ascii_lowercase(),
                        u.port().unwrap_or(5432),
                        u.path().trim_start_matches('/').to_string(),
                    )
                })
            };
            key(from).is_some() && key(from) == key(to)
        }
        _ => false,
    }
}

/// Refuses a source written by a newer berth, before anything is opened for writing.
async fn refuse_newer_source(url: &str, backend: Backend) -> anyhow::Result<()> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let connect_url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=ro", sqlite_path(url).display()),
        Backend::Postgres => url.to_string(),
    };
    let mut conn = AnyConnection::connect(&connect_url)
        .await
        .with_context(|| format!("connecting to the source {}", redact_url(url)))?;
    let exists_sql = match backend {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let exists: i64 = sqlx::query_scalar(exists_sql)
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut conn)
        .await?;
    if exists > 0 {
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await?;
        let known = super::migrator(backend).iter().map(|m| m.version).max().unwrap_or(0);
        if let Some(newest) = newest
            && newest > known
        {
            bail!(
                "the source {} was migrated by a newer berth (migration {newest}; this berth knows up \
                 to {known}): run migrate-db with the berth that wrote it",
                redact_url(url)
            );
        }
    }
    conn.close().await?;
    Ok(())
}

/// Double-quoted identifier (names come from the database's own catalog).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// berth's tables in a database: everything but the engine's own and the migrations'.
async fn table_names(conn: &mut AnyConnection, backend: Backend) -> anyhow::Result<BTreeSet<String>> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        }
        Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
    };
    let names: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(conn)
        .await
        .context("listing the tables")?;
    Ok(names.into_iter().filter(|n| n != MIGRATIONS_TABLE).collect())
}

/// The tables in an order where each comes after every table it references.
async fn copy_order(
    conn: &mut AnyConnection,
    backend: Backend,
    tables: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT m.name, p.\"table\" FROM sqlite_master m, pragma_foreign_key_list(m.name) p WHERE m.type = 'table'"
        }
        Backend::Postgres => {
            "SELECT a.relname::text, b.relname::text FROM pg_constraint c \
             JOIN pg_class a ON a.oid = c.conrelid JOIN pg_class b ON b.oid = c.confrelid \
             JOIN pg_namespace n ON n.oid = a.relnamespace \
             WHERE c.contype = 'f' AND n.nspname = current_schema()"
        }
    };
    let edges: Vec<(String, String)> = sqlx::query_as(sql)
        .fetch_all(conn)
        .await
        .context("reading the foreign keys")?;
    let mut needs: BTreeMap<&str, BTreeSet<&str>> = tables.iter().map(|t| (t.as_str(), BTreeSet::new())).collect();
    for (table, parent) in &edges {
        if table == parent || !tables.contains(parent) {
            continue;
        }
        if let Some(set) = needs.get_mut(table.as_str()) {
            set.insert(parent.as_str());
        }
    }
    let mut order: Vec<String> = Vec::with_capacity(tables.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while done.len() < tables.len() {
        let ready: Vec<&str> = needs
            .iter()
            .filter(|(t, parents)| !done.contains(*t) && parents.iter().all(|p| done.contains(p)))
            .map(|(t, _)| *t)
            .collect();
        if ready.is_empty() {
            let left: Vec<&str> = needs.keys().filter(|t| !done.contains(*t)).copied().collect();
            bail!(
                "the foreign keys between tables [{}] form a cycle, so no copy order exists",
                left.join(", ")
            );
        }
        for t in ready {
            done.insert(t);
            order.push(t.to_string());
        }
    }
    Ok(order)
}

/// A table's columns (in their order) with the kinds the database declares.
async fn describe(conn: &mut AnyConnection, backend: Backend, table: &str) -> anyhow::Result<Table> {
    let rows: Vec<(String, String, String)> = match backend {
        Backend::Sqlite => {
            sqlx::query_as("SELECT name, type, '' FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(conn)
                .await?
        }
        Backend::Postgres => {
            sqlx::query_as(
                "SELECT column_name::text, data_type::text, is_identity::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(conn)
            .await?
        }
    };
    let mut columns = Vec::with_capacity(rows.len());
    let mut identity = Vec::new();
    for (name, declared, is_identity) in rows {
        let kind = kind_of(backend, &declared)
            .with_context(|| format!("column {table}.{name} has the type {declared}, which migrate-db cannot copy"))?;
        if is_identity == "YES" {
            identity.push(name.clone());
        }
        columns.push((name, kind));
    }
    Ok(Table {
        name: table.to_string(),
        columns,
        identity,
    })
}

/// The kind of a declared column type; None for one berth does not use.
fn kind_of(backend: Backend, declared: &str) -> Option<Kind> {
    let t = declared.to_ascii_uppercase();
    match backend {
        // SQLite's affinity rules, in their order.
        Backend::Sqlite => Some(if t.contains("INT") {
            Kind::Int
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Kind::Text
        } else if t.contains("BLOB") || t.is_empty() {
            Kind::Blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Kind::Real
        } else {
            return None;
        }),
        Backend::Postgres => match t.as_str() {
            "BIGINT" | "INTEGER" | "SMALLINT" => Some(Kind::Int),
            "TEXT" | "CHARACTER VARYING" | "CHARACTER" => Some(Kind::Text),
            "BYTEA" => Some(Kind::Blob),
            "DOUBLE PRECISION" | "REAL" => Some(Kind::Real),
            _ => None,
        },
    }
}

/// Streams one table from the source into the target in batches; the rows read.
async fn copy_table(src: &mut AnyConnection, dst: &mut AnyConnection, table: &Table) -> anyhow::Result<u64> {
    let names: Vec<String> = table.columns.iter().map(|(c, _)| quote(c)).collect();
    let select = format!("SELECT {} FROM {}", names.join(", "), quote(&table.name));
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(src);
    let mut batch: Vec<Vec<Cell>> = Vec::with_capacity(BATCH_ROWS);
    let mut copied = 0u64;
    while let Some(row) = rows.try_next().await? {
        batch.push(read_row(&row, table)?);
        if batch.len() == BATCH_ROWS {
            copied += insert_batch(dst, table, &names, std::mem::take(&mut batch)).await?;
        }
    }
    copied += insert_batch(dst, table, &names, batch).await?;
    Ok(copied)
}

/// One source row as cells of the target's kinds.
fn read_row(row: &AnyRow, table: &Table) -> anyhow::Result<Vec<Cell>> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let cell = match kind {
                Kind::Int => row.try_get(i).map(Cell::Int),
                Kind::Real => row.try_get(i).map(Cell::Real),
                Kind::Text => row.try_get(i).map(Cell::Text),
                Kind::Blob => row.try_get(i).map(Cell::Blob),
            };
            cell.with_context(|| format!("reading {}.{name} as {kind:?}", table.name))
        })
        .collect()
}

/// Inserts rows, as many to a statement as the parameter limit allows; the rows inserted.
async fn insert_batch(
    dst: &mut AnyConnection,
    table: &Table,
    names: &[String],
    batch: Vec<Vec<Cell>>,
) -> anyhow::Result<u64> {
    let width = names.len().max(1);
    let per_statement = (MAX_PARAMS / width).clamp(1, BATCH_ROWS);
    let mut inserted = 0u64;
    let mut rows = batch.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Cell>> = rows.by_ref().take(per_statement).collect();
        let mut sql = format!("INSERT INTO {} ({}) VALUES ", quote(&table.name), names.join(", "));
        let mut n = 0;
        for (r, _) in chunk.iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..width {
                n += 1;
                sql.push_str(&format!("{}${n}", if c == 0 { "" } else { ", " }));
            }
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for cell in chunk.iter().flatten() {
            query = match cell {
                Cell::Int(v) => query.bind(*v),
                Cell::Real(v) => query.bind(*v),
                Cell::Text(v) => query.bind(v.as_deref()),
                Cell::Blob(v) => query.bind(v.as_deref()),
            };
        }
        inserted += query.execute(&mut *dst).await?.rows_affected();
    }
    Ok(inserted)
}

/// Turns off the triggers of the target's tables for the copy; what `enable_triggers`
/// needs to turn them back on (SQLite cannot disable a trigger: it is dropped and created
/// again from its own SQL, inside the same transaction).
async fn disable_triggers(
    conn: &mut AnyConnection,
    backend: Backend,
    tables: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    match backend {
        Backend::Sqlite => {
            let triggers: Vec<(String, String)> =
                sqlx::query_as("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
                    .fetch_all(&mut *conn)
                    .await?;
            for (name, _) in &triggers {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {}", quote(name))))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(triggers)
        }
        Backend::Postgres => {
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE {} DISABLE TRIGGER USER",
                    quote(table)
                )))
                .execute(&mut *conn)
                .await?;
            }
            Ok(Vec::new())
        }
    }
}

/// Turns the triggers `disable_triggers` turned off back on.
async fn enable_triggers(
    conn: &mut AnyConnection,
    backend: Backend,
    tables: &[String],
    triggers: &[(String, String)],
) -> anyhow::Result<()> {
    match backend {
        Backend::Sqlite => {
            for (_, sql) in triggers {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Backend::Postgres => {
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE {} ENABLE TRIGGER USER",
                    quote(table)
                )))
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}
