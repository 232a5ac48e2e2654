//! The dependency cache: a site's installed dependencies (`node_modules`, `.venv`, Go's
//! module cache, cargo's `CARGO_HOME`, deno's `DENO_DIR`) are kept after a successful install, keyed by what decides them (the pack, the install
//! command and the manifest and lock files), and copied into the next deployment instead
//! of installing again when that key is unchanged.
//!
//! Package managers that corepack downloads (yarn, pnpm) and the runtimes berth downloads
//! (bun, deno) are kept apart, per site and version ([`ToolsCache`]), so a changed
//! lockfile does not download them again. Everything stays under the site's own folder of the cache and reaches the build
//! only by being copied into its app folder.

use std::path::{Path, PathBuf};

use berth_build::detect::{BuildPack, BuildPlan, COREPACK_HOME_DIR, deno, go, rust, tools};
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
    "go.mod",
    "go.sum",
    "Cargo.toml",
    "Cargo.lock",
    "deno.json",
    "deno.jsonc",
    "deno.lock",
];

/// How many keys are kept per site.
const KEEP: usize = 2;

/// The folder of a site's cache that holds [`ToolsCache`] entries.
const TOOLS: &str = "tools";

/// One site's cache entry for one deployment's sources.
pub struct CacheEntry {
    dir: PathBuf,
    folder: &'static str,
    /// The step after which the folder is kept (see [`CacheEntry::save_after`]).
    save_after: &'static str,
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
            BuildPack::Go => go::GO_CACHE_DIR,
            BuildPack::Rust => rust::CARGO_HOME_DIR,
            BuildPack::Deno => deno::DENO_DIR,
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
        // Go's and cargo's folders also hold what the build compiled, worth keeping too.
        let compiles = matches!(plan.pack, BuildPack::Go | BuildPack::Rust);
        let save_after = if compiles && plan.steps.iter().any(|s| s.name == "build") {
            "build"
        } else {
            "install"
        };
        Some(Self {
            dir: cache_root.join(site_id).join(key),
            folder,
            save_after,
        })
    }

    /// The name of the step after which [`CacheEntry::save`] keeps the folder: the
    /// install, or for Go and Rust the build (their folder holds compiled packages too).
    pub fn save_after(&self) -> &'static str {
        self.save_after
    }

    /// Copies cached dependencies into the app dir; true when they were there.
    pub async fn restore(&self, app_dir: &Path) -> bool {
        let cached = self.dir.join(self.folder);
        // Anything already at that name, even a dangling symlink, stays untouched: the copy
        // must never land where a link points.
        if !cached.is_dir()
            || app_dir.join(self.folder).symlink_metadata().is_ok()
            || !create_parents(app_dir, self.folder).await
        {
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
        if !is_real_dir || !no_link_on_the_way(app_dir, self.folder) || self.dir.join(self.folder).is_dir() {
            return;
        }
        let staging = self.dir.with_extension("partial");
        let _ = tokio::fs::remove_dir_all(&staging).await;
        if !create_parents(&staging, self.folder).await
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

/// A site's copy of one package manager as corepack downloaded it (its `COREPACK_HOME`),
/// or of a runtime berth downloaded (its tools folder).
pub struct ToolsCache {
    dir: PathBuf,
    folder: &'static str,
}

impl ToolsCache {
    /// The entry for `manager` ("pnpm@9", or a `packageManager` value) of a site.
    pub fn for_manager(cache_root: &Path, site_id: &str, manager: &str) -> Self {
        // Hashed: a packageManager value comes from the repository and is no file name.
        let key = hex::encode(&Sha256::digest(manager.as_bytes())[..12]);
        let folder = if tools::is_runtime_label(manager) {
            tools::TOOLS_HOME_DIR
        } else {
            COREPACK_HOME_DIR
        };
        Self {
            dir: cache_root.join(site_id).join(TOOLS).join(key),
            folder,
        }
    }

    /// Copies the cached download into the app folder; true when it was there.
    pub async fn restore(&self, app_dir: &Path) -> bool {
        let target = app_dir.join(self.folder);
        if !self.dir.is_dir() || target.symlink_metadata().is_ok() || !create_parents(app_dir, self.folder).await {
            return false;
        }
        crate::util::copy_tree(&self.dir, &target).await.is_ok()
    }

    /// Keeps the app folder's download for the site's next builds (once per manager) and
    /// drops the site's other managers beyond the newest few.
    pub async fn save(&self, app_dir: &Path) {
        let installed = app_dir.join(self.folder);
        let is_real_dir = installed.symlink_metadata().is_ok_and(|m| m.is_dir());
        if !is_real_dir || !no_link_on_the_way(app_dir, self.folder) || self.dir.is_dir() {
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

/// True when no folder between `root` and `rel` (a relative path such as `.cache/go`) is
/// a symlink: the source tree decides those names, and a link there (`.cache` → a host
/// folder) would make berth, which copies as root, read or write outside the app.
fn no_link_on_the_way(root: &Path, rel: &str) -> bool {
    let mut path = root.to_path_buf();
    let parents: Vec<&str> = rel.split('/').collect();
    for part in &parents[..parents.len().saturating_sub(1)] {
        path.push(part);
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return false,
            // Absent: nothing below it can be a link either.
            Err(_) => return true,
        }
    }
    true
}

/// Creates the folders between `root` and `rel`, refusing when one is a symlink (see
/// [`no_link_on_the_way`]); true when they are real folders now.
async fn create_parents(root: &Path, rel: &str) -> bool {
    if !no_link_on_the_way(root, rel) {
        return false;
    }
    match root.join(rel).parent() {
        Some(parent) => tokio::fs::create_dir_all(parent).await.is_ok() && no_link_on_the_way(root, rel),
        None => true,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An app folder whose `.cache` is a symlink to a host folder (a repository can hold
    /// one): berth copies as root, so restoring or saving through it would write or read
    /// host files.
    fn app_with_cache_link() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        let host = dir.path().join("host");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(host.join("corepack")).unwrap();
        std::fs::write(host.join("corepack/secret"), "host file").unwrap();
        std::os::unix::fs::symlink(&host, app.join(".cache")).unwrap();
        (dir, app, host)
    }

    #[tokio::test]
    async fn a_cache_restore_never_writes_through_a_symlink_of_the_source() {
        let (dir, app, host) = app_with_cache_link();
        let root = dir.path().join("cache");
        // A runtime kept for the site earlier.
        let tools = ToolsCache::for_manager(&root, "site", "bun@1.4.5");
        std::fs::create_dir_all(tools.dir.join("bin")).unwrap();
        std::fs::write(tools.dir.join("bin/bun"), "cached").unwrap();
        assert!(!tools.restore(&app).await);
        assert!(!host.join("tools").exists(), "restored into the host folder");

        // Dependencies of a Go build, restored under `.cache/go`.
        let entry = CacheEntry {
            dir: root.join("site").join("key"),
            folder: go::GO_CACHE_DIR,
            save_after: "build",
        };
        std::fs::create_dir_all(entry.dir.join(go::GO_CACHE_DIR).join("mod")).unwrap();
        assert!(!entry.restore(&app).await);
        assert!(!host.join("go").exists(), "restored into the host folder");
    }

    #[tokio::test]
    async fn a_cache_save_never_reads_through_a_symlink_of_the_source() {
        let (dir, app, _host) = app_with_cache_link();
        let root = dir.path().join("cache");
        let tools = ToolsCache::for_manager(&root, "site", "pnpm@9");
        tools.save(&app).await;
        assert!(
            !tools.dir.exists(),
            "a host folder was kept as the site's package manager"
        );

        // Without the link, the same folder is kept and restored.
        std::fs::remove_file(app.join(".cache")).unwrap();
        std::fs::create_dir_all(app.join(COREPACK_HOME_DIR)).unwrap();
        std::fs::write(app.join(COREPACK_HOME_DIR).join("pnpm"), "pnpm").unwrap();
        tools.save(&app).await;
        let next = dir.path().join("next");
        std::fs::create_dir_all(&next).unwrap();
        assert!(tools.restore(&next).await);
        assert_eq!(
            std::fs::read_to_string(next.join(COREPACK_HOME_DIR).join("pnpm")).unwrap(),
            "pnpm"
        );
    }
}
