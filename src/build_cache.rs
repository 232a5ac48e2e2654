//! The dependency cache: a site's installed dependencies (`node_modules`, `.venv`) are
//! kept after a successful install, keyed by what decides them (the pack, the install
//! command and the manifest and lock files), and copied into the next deployment instead
//! of installing again when that key is unchanged.
//!
//! Package managers that corepack downloads (yarn, pnpm) are kept apart, per site and
//! manager version ([`ToolsCache`]), so a changed lockfile does not download the manager
//! again. Everything stays under the site's own folder of the cache and reaches the build
//! only by being copied into its app folder.

use std::path::{Path, PathBuf};

use berth_build::detect::{BuildPack, BuildPlan, COREPACK_HOME_DIR};
use sha2::{Digest, Sha256};

/// Files whose content decides the installed dependencies.
const MANIFESTS: &[&str] = &[
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lock",
    "bun.lockb",
    ".yarnrc.yml",
    "requirements.txt",
    "pyproject.toml",
    "poetry.lock",
    "uv.lock",
    "Pipfile",
    "Pipfile.lock",
    ".python-version",
    ".nvmrc",
];

/// How many keys are kept per site.
const KEEP: usize = 2;

/// The folder of a site's cache that holds [`ToolsCache`] entries.
const TOOLS: &str = "tools";

/// One site's cache entry for one deployment's sources.
pub struct CacheEntry {
    dir: PathBuf,
    folder: &'static str,
}

impl CacheEntry {
    /// The entry a deployment would use, or `None` when its pack installs nothing
    /// cacheable. Python venvs hold absolute paths, so they are cached only when every
    /// build and app sees the same path (`/app` inside the sandbox).
    pub fn for_plan(
        cache_root: &Path,
        site_id: &str,
        app_dir: &Path,
        plan: &BuildPlan,
        sandboxed: bool,
    ) -> Option<Self> {
        let install = plan.steps.iter().find(|s| s.name == "install")?;
        let folder = match plan.pack {
            BuildPack::Node => "node_modules",
            BuildPack::Python if sandboxed => ".venv",
            _ => return None,
        };
        let mut hash = Sha256::new();
        hash.update(format!("{:?}\0{}\0", plan.pack, install.command));
        for name in MANIFESTS {
            // A manifest that is a symlink out of the tree is never read (it is a host file).
            if let Ok(Some(bytes)) = berth_build::fs_safe::read_in_tree(app_dir, name) {
                hash.update(name.as_bytes());
                hash.update((bytes.len() as u64).to_le_bytes());
                hash.update(&bytes);
            }
        }
        let key = hex::encode(&hash.finalize()[..12]);
        Some(Self {
            dir: cache_root.join(site_id).join(key),
            folder,
        })
    }

    /// Copies cached dependencies into the app dir; true when they were there.
    pub async fn restore(&self, app_dir: &Path) -> bool {
        let cached = self.dir.join(self.folder);
        // Anything already at that name, even a dangling symlink, stays untouched: the copy
        // must never land where a link points.
        if !cached.is_dir() || app_dir.join(self.folder).symlink_metadata().is_ok() {
            return false;
        }
        crate::util::copy_tree(&cached, &app_dir.join(self.folder))
            .await
            .is_ok()
    }

    /// Saves the app dir's freshly installed dependencies, replacing older keys of the site
    /// beyond the newest few. Failures only cost the next build its cache.
    pub async fn save(&self, app_dir: &Path) {
        let installed = app_dir.join(self.folder);
        // Only a real folder is kept: a symlink in its place could name any host folder.
        let is_real_dir = installed.symlink_metadata().is_ok_and(|m| m.is_dir());
        if !is_real_dir || self.dir.join(self.folder).is_dir() {
            return;
        }
        let staging = self.dir.with_extension("partial");
        let _ = tokio::fs::remove_dir_all(&staging).await;
        if tokio::fs::create_dir_all(&staging).await.is_err()
            || crate::util::copy_tree(&installed, &staging.join(self.folder))
                .await
                .is_err()
        {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return;
        }
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        if tokio::fs::rename(&staging, &self.dir).await.is_err() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return;
        }
        self.prune().await;
    }

    async fn prune(&self) {
        if let Some(site_dir) = self.dir.parent() {
            keep_newest(site_dir, &self.dir, Some(TOOLS)).await;
        }
    }
}

/// A site's copy of one package manager as corepack downloaded it (its `COREPACK_HOME`).
pub struct ToolsCache {
    dir: PathBuf,
}

impl ToolsCache {
    /// The entry for `manager` ("pnpm@9", or a `packageManager` value) of a site.
    pub fn for_manager(cache_root: &Path, site_id: &str, manager: &str) -> Self {
        // Hashed: a packageManager value comes from the repository and is no file name.
        let key = hex::encode(&Sha256::digest(manager.as_bytes())[..12]);
        Self {
            dir: cache_root.join(site_id).join(TOOLS).join(key),
        }
    }

    /// Copies the cached download into the app folder; true when it was there.
    pub async fn restore(&self, app_dir: &Path) -> bool {
        let target = app_dir.join(COREPACK_HOME_DIR);
        if !self.dir.is_dir() || target.exists() {
            return false;
        }
        if let Some(parent) = target.parent()
            && tokio::fs::create_dir_all(parent).await.is_err()
        {
            return false;
        }
        crate::util::copy_tree(&self.dir, &target).await.is_ok()
    }

    /// Keeps the app folder's download for the site's next builds (once per manager) and
    /// drops the site's other managers beyond the newest few.
    pub async fn save(&self, app_dir: &Path) {
        let installed = app_dir.join(COREPACK_HOME_DIR);
        if !installed.is_dir() || self.dir.is_dir() {
            return;
        }
        let staging = self.dir.with_extension("partial");
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let Some(parent) = self.dir.parent() else { return };
        if tokio::fs::create_dir_all(parent).await.is_err()
            || crate::util::copy_tree(&installed, &staging).await.is_err()
        {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return;
        }
        if tokio::fs::rename(&staging, &self.dir).await.is_err() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return;
        }
        keep_newest(parent, &self.dir, None).await;
    }
}

/// Removes the folders of `dir` beyond the newest few (by modification time), never
/// `current` nor a folder named `spare`.
async fn keep_newest(dir: &Path, current: &Path, spare: Option<&str>) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    while let Ok(Some(e)) = entries.next_entry().await {
        if let Ok(meta) = e.metadata().await
            && meta.is_dir()
            && e.path() != current
            && spare.is_none_or(|name| e.file_name() != name)
        {
            others.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), e.path()));
        }
    }
    others.sort_by_key(|k| std::cmp::Reverse(k.0));
    for (_, path) in others.into_iter().skip(KEEP - 1) {
        let _ = tokio::fs::remove_dir_all(path).await;
    }
}
