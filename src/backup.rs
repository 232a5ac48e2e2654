//! `berth backup`: a consistent copy of the database, safe while the server runs. It
//! opens `berth.db` read-only beside the server (SQLite's WAL lets a reader take a
//! snapshot while the server writes) and writes the snapshot with `VACUUM INTO`, never by
//! copying the file: a copy of `berth.db` alone misses what is still in the WAL, and a
//! copied database that something else then opens can lose committed writes.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::store::{Backend, redact_url, sqlite_path};

/// What a backup wrote.
#[derive(Debug, serde::Serialize)]
pub struct BackupSummary {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Writes a snapshot of the installation's SQLite database to `out` (which must not
/// exist), readable by its owner only. The file appears complete or not at all. The
/// database is the one `database_url` names (as `berth serve` reads it), else `data_dir`'s
/// `berth.db`; a Postgres database is refused: `pg_dump` backs it up.
pub async fn backup(data_dir: &Path, database_url: Option<&str>, out: &Path) -> anyhow::Result<BackupSummary> {
    let db = match database_url {
        None => data_dir.join("berth.db"),
        Some(url) => match Backend::of_url(url)? {
            Backend::Sqlite => sqlite_path(url),
            Backend::Postgres => anyhow::bail!(
                "berth backup snapshots SQLite only, and this installation's database is Postgres \
                 ({}): back it up with pg_dump (see Databases in the README), with the master key",
                redact_url(url)
            ),
        },
    };
    if !db.is_file() {
        anyhow::bail!(
            "no database at {}; pass the server's data dir with --data (or BERTH_DATA)",
            db.display()
        );
    }
    if out.exists() {
        anyhow::bail!("{} exists; choose a new file for the backup", out.display());
    }
    let name = out
        .file_name()
        .context("--out must name a file")?
        .to_string_lossy()
        .to_string();
    let partial = out.with_file_name(format!(".{name}.partial-{}", crate::util::random_hex(4)));
    // Created empty with the final mode first: the snapshot holds sealed secrets and key
    // hashes, so it is never readable by others, not even while it is written.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let written = async {
        let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))?
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("opening {} read-only", db.display()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(partial.to_string_lossy().to_string())
            .execute(&mut conn)
            .await
            .context("writing the snapshot (VACUUM INTO)")?;
        conn.close().await?;
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, out).with_context(|| format!("moving the backup to {}", out.display()))?;
        anyhow::Ok(())
    }
    .await;
    if let Err(err) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(err);
    }
    Ok(BackupSummary {
        path: out.to_path_buf(),
        bytes: std::fs::metadata(out)?.len(),
    })
}
