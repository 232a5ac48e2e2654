//! `berth backup`: a consistent copy of the database, safe while the server runs. It
//! opens `berth.db` read-only beside the server (SQLite's WAL lets a reader take a
//! snapshot while the server writes) and writes the snapshot with `VACUUM INTO`, never by
//! copying the file: a copy of `berth.db` alone misses what is still in the WAL, and a
//! copied database that something else then opens can lose committed writes.
//!
//! Beside the snapshot `FILE` it writes the resource disks the snapshot lists, in the
//! folder `FILE.resources`: `<id>.img` per resource (sparse, mode `0600`) and
//! `manifest.json` (each resource's id, name, org, site, size and bytes copied). Each
//! image is copied under the disk's lock, its file system frozen for the copy while it
//! is mounted (see [`crate::runtime::isolation::resource_disk::copy_disk`]), so it is
//! whole while apps write. The folder appears complete or not at all (it is written
//! under a partial name and renamed), and before the snapshot: `FILE` exists only when
//! all of the backup does.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::runtime::isolation::resource_disk::{self, RESOURCES_DIR};
use crate::store::resources::{ResourceRow, resources_in_snapshot};
use crate::store::{Backend, redact_url, sqlite_path};

/// Whether a backup copies the resource disks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resources {
    /// Copy every disk the snapshot lists (the default).
    Copy,
    /// Leave them out (`--no-resources`).
    Skip,
}

/// What a backup wrote.
#[derive(Debug, serde::Serialize)]
pub struct BackupSummary {
    /// The backup file (the database snapshot).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The resource disks.
    pub resources: ResourcesSummary,
}

/// What a backup did with the resource disks.
#[derive(Debug, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ResourcesSummary {
    /// Copied into `dir` (which holds `manifest.json`, this list).
    Copied {
        /// The folder of the images.
        dir: PathBuf,
        /// One per resource of the snapshot, by id.
        disks: Vec<DiskBackup>,
        /// Resources of the snapshot whose disk was removed before it could be copied
        /// (they were deleted after the snapshot).
        gone: Vec<GoneResource>,
    },
    /// Left out (`--no-resources`).
    Skipped,
}

/// One resource disk in a backup (also its entry in `manifest.json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DiskBackup {
    /// The resource's id: its image goes back to `DATA/resources/<id>.img`.
    pub id: String,
    /// Its name (unique in its org).
    pub name: String,
    /// Its org's id.
    pub org_id: String,
    /// Its kind.
    pub kind: String,
    /// The site it is attached to.
    pub site: Option<String>,
    /// The image's file in the backup's resources folder (`<id>.img`).
    pub file: String,
    /// The disk's size in bytes (the image's length; it is sparse).
    pub size: u64,
    /// The bytes of data copied.
    pub bytes: u64,
    /// How long its file system was frozen for the copy, in ms; `None` when it was not
    /// mounted (no app of its site was running).
    pub frozen_ms: Option<u64>,
}

/// A resource of the snapshot whose disk was gone.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct GoneResource {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The file in a backup's resources folder that lists its disks.
pub const MANIFEST: &str = "manifest.json";

/// `manifest.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The database snapshot these disks go with (its file name).
    pub database: String,
    /// The disks copied.
    pub resources: Vec<DiskBackup>,
    /// Resources of the snapshot whose disk was gone.
    pub gone: Vec<GoneResource>,
}

/// The folder a backup at `out` keeps its resource disks in: `FILE.resources`.
pub fn resources_dir_of(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".resources");
    PathBuf::from(name)
}

/// Writes a snapshot of the installation's SQLite database to `out` (which must not
/// exist), readable by its owner only, and (with [`Resources::Copy`]) the resource disks
/// it lists to `FILE.resources`. Everything appears complete or not at all. The database
/// is the one `database_url` names (as `berth serve` reads it), else `data_dir`'s
/// `berth.db`; a Postgres database is refused: `pg_dump` backs it up.
pub async fn backup(
    data_dir: &Path,
    database_url: Option<&str>,
    out: &Path,
    resources: Resources,
) -> anyhow::Result<BackupSummary> {
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
    let disks_out = resources_dir_of(out);
    if resources == Resources::Copy && disks_out.exists() {
        anyhow::bail!(
            "{} exists; choose a new file for the backup (its resource disks go to FILE.resources)",
            disks_out.display()
        );
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
    let partial_disks = out.with_file_name(format!(".{name}.resources.partial-{}", crate::util::random_hex(4)));
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
        let disks = match resources {
            Resources::Skip => ResourcesSummary::Skipped,
            Resources::Copy => {
                let (disks, gone) = copy_disks(data_dir, &partial, &partial_disks, &name).await?;
                std::fs::rename(&partial_disks, &disks_out)
                    .with_context(|| format!("moving the resource disks to {}", disks_out.display()))?;
                ResourcesSummary::Copied {
                    dir: disks_out.clone(),
                    disks,
                    gone,
                }
            }
        };
        // Last: the snapshot's file is there only when all of the backup is.
        if let Err(e) = std::fs::rename(&partial, out) {
            if resources == Resources::Copy {
                let _ = std::fs::remove_dir_all(&disks_out);
            }
            return Err(e).with_context(|| format!("moving the backup to {}", out.display()));
        }
        anyhow::Ok(disks)
    }
    .await;
    let resources = match written {
        Ok(resources) => resources,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_dir_all(&partial_disks);
            return Err(err);
        }
    };
    Ok(BackupSummary {
        path: out.to_path_buf(),
        bytes: std::fs::metadata(out)?.len(),
        resources,
    })
}

/// Copies the disks of the resources the snapshot `snapshot` lists into the new folder
/// `into` (mode `0700`), with its manifest. A signal (Ctrl-C, SIGTERM, SIGHUP) stops the
/// copy (a frozen disk is thawed first) and fails the backup.
async fn copy_disks(
    data_dir: &Path,
    snapshot: &Path,
    into: &Path,
    database: &str,
) -> anyhow::Result<(Vec<DiskBackup>, Vec<GoneResource>)> {
    let rows: Vec<ResourceRow> = {
        let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", snapshot.display()))?
            .read_only(true)
            .create_if_missing(false)
            .connect()
            .await
            .context("reading the resources of the snapshot")?;
        let rows = resources_in_snapshot(&mut conn)
            .await
            .context("reading the resources of the snapshot")?;
        conn.close().await?;
        rows
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(into)
        .with_context(|| format!("creating {}", into.display()))?;
    let source = data_dir.join(RESOURCES_DIR);
    // The path the server mounts disks under (canonical, as /proc's mount table says).
    let source = match std::fs::canonicalize(&source) {
        Ok(dir) => dir,
        Err(_) if rows.is_empty() => source,
        Err(e) => anyhow::bail!(
            "the database lists {} resources, but their disks are not in {} ({e}); pass the server's data dir with --data",
            rows.len(),
            source.display()
        ),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let signals = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let copied = async {
        let (mut disks, mut gone) = (Vec::new(), Vec::new());
        for row in rows {
            let file = format!("{}.img", row.id);
            let (dir, id, dest, cancel) = (source.clone(), row.id.clone(), into.join(&file), cancel.clone());
            let copy = tokio::task::spawn_blocking(move || resource_disk::copy_disk(&dir, &id, &dest, &cancel))
                .await?
                .map_err(|e| anyhow::anyhow!("copying the disk of resource {} ({}): {e}", row.name, row.id))?;
            match copy {
                Some(copy) => disks.push(DiskBackup {
                    id: row.id,
                    name: row.name,
                    org_id: row.org_id,
                    kind: row.kind,
                    site: row.site_name,
                    file,
                    size: copy.size,
                    bytes: copy.bytes,
                    frozen_ms: copy.frozen.map(|d| d.as_millis() as u64),
                }),
                None => gone.push(GoneResource {
                    id: row.id,
                    name: row.name,
                }),
            }
        }
        let manifest = Manifest {
            database: database.to_string(),
            resources: disks,
            gone,
        };
        let path = into.join(MANIFEST);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        serde_json::to_writer_pretty(&mut file, &manifest)?;
        file.sync_all().with_context(|| format!("writing {}", path.display()))?;
        std::fs::File::open(into)?.sync_all()?;
        anyhow::Ok((manifest.resources, manifest.gone))
    }
    .await;
    signals.abort();
    copied
}
