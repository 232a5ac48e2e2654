//! A deployment's build disk: the writable space of its build steps, bounded by the
//! kernel. Each build gets a sparse file of `--build-disk-mb` in `DATA/builds`, formatted
//! ext4 and loop-mounted (`nosuid`, `nodev`) at `DATA/builds/<deployment>`; the
//! deployment's files are copied in, the steps run there, and the result is copied back
//! as the deployment's folder (owners, modes and symlinks kept) before the disk goes. A
//! step that writes past the size gets "no space left on device" from the kernel, and
//! the host's disk never holds more than the file's size for it.
//!
//! Nothing outlives the build: the mount is undone and the file removed when it ends,
//! fails or is dropped, and what a crash left is removed when berth starts
//! ([`remove_leftovers`]).

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

/// The folder of the data dir that holds build disks.
pub const BUILDS_DIR: &str = "builds";

/// Mount options: no setuid programs or device files from a build take effect.
const MOUNT_OPTIONS: &str = "loop,nosuid,nodev,noatime,noinit_itable";

/// A mounted build disk.
#[derive(Debug)]
pub struct BuildDisk {
    mount: PathBuf,
    image: PathBuf,
    size: u64,
    removed: bool,
}

impl BuildDisk {
    /// Creates a disk of `size` bytes for `deployment_id` under `builds`, mounts it and
    /// copies `source` (already the site's) into it as its `app` folder.
    pub async fn create(builds: &Path, deployment_id: &str, source: &Path, size: u64) -> Result<BuildDisk, String> {
        let started = std::time::Instant::now();
        let (mount, image) = (builds.join(deployment_id), builds.join(format!("{deployment_id}.img")));
        let mut disk = BuildDisk {
            mount,
            image,
            size,
            removed: false,
        };
        {
            let (mount, image) = (disk.mount.clone(), disk.image.clone());
            tokio::task::spawn_blocking(move || unmount_and_remove(&mount, &image))
                .await
                .map_err(|e| e.to_string())?;
        }
        if let Err(e) = format_and_mount(&disk.image, &disk.mount, size).await {
            disk.remove().await;
            return Err(format!("cannot set up the build's disk: {e}"));
        }
        if let Err(e) = crate::util::copy_tree(source, &disk.app_dir()).await {
            let message = if disk.is_full() {
                format!(
                    "the app's files do not fit in the build's writable space of {} MiB; raise it with --build-disk-mb",
                    size >> 20
                )
            } else {
                format!("cannot copy the app's files to the build's disk: {e}")
            };
            disk.remove().await;
            return Err(message);
        }
        tracing::debug!(deployment.id = %deployment_id, duration_ms = started.elapsed().as_millis() as u64, "build disk ready");
        Ok(disk)
    }

    /// The folder the build steps run in.
    pub fn app_dir(&self) -> PathBuf {
        self.mount.join("app")
    }

    /// Why a step failed, when the disk is the reason: it is (nearly) full.
    pub fn limit_hit(&self) -> Option<String> {
        self.is_full().then(|| {
            format!(
                "disk full: the build's writable space of {} MiB is used up; raise it with --build-disk-mb",
                self.size >> 20
            )
        })
    }

    /// Less than 1% (or 1 MiB) of the space left.
    fn is_full(&self) -> bool {
        match nix::sys::statvfs::statvfs(&self.mount) {
            Ok(s) => s.blocks_available() * s.fragment_size() < (self.size / 100).max(1 << 20),
            Err(_) => false,
        }
    }

    /// Copies the build's result to `dest` (which it replaces: the deployment's folder),
    /// then removes the disk. The new folder is put in place by a rename, so `dest` is
    /// never half-copied.
    pub async fn finish(mut self, dest: &Path) -> Result<(), String> {
        let started = std::time::Instant::now();
        let staged = dest.with_extension("built");
        let _ = tokio::fs::remove_dir_all(&staged).await;
        let copied = crate::util::copy_tree(&self.app_dir(), &staged).await;
        self.remove().await;
        copied.map_err(|e| format!("cannot copy the build's result to the deployment's folder: {e}"))?;
        let swap = async {
            tokio::fs::remove_dir_all(dest).await?;
            tokio::fs::rename(&staged, dest).await
        };
        if let Err(e) = swap.await {
            let _ = tokio::fs::remove_dir_all(&staged).await;
            return Err(format!("cannot put the build's result in place: {e}"));
        }
        tracing::debug!(
            duration_ms = started.elapsed().as_millis() as u64,
            "build result copied from its disk"
        );
        Ok(())
    }

    /// Unmounts the disk and removes its file.
    pub async fn remove(&mut self) {
        self.removed = true;
        let (mount, image) = (self.mount.clone(), self.image.clone());
        let _ = tokio::task::spawn_blocking(move || unmount_and_remove(&mount, &image)).await;
    }
}

impl Drop for BuildDisk {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (mount, image) = (self.mount.clone(), self.image.clone());
        let cleanup = move || unmount_and_remove(&mount, &image);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(cleanup)),
            Err(_) => cleanup(),
        }
    }
}

/// A sparse file of `size` bytes, formatted ext4 and mounted at `mount` (root's, `0711`).
async fn format_and_mount(image: &Path, mount: &Path, size: u64) -> Result<(), String> {
    // No journal: a crashed build's disk is thrown away.
    format(image, size, Journal::Without).await?;
    mount_image(image, mount).await
}

/// Whether a disk keeps an ext4 journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Journal {
    /// Data that must survive a crash (a resource's disk).
    With,
    /// Thrown away after a crash (a build's disk).
    Without,
}

/// Makes a sparse file of `size` bytes at `image` (new, root's, `0600`) and formats it
/// ext4 with no room kept for growing or for root, inode tables written as they are used:
/// formatting costs milliseconds and the file stays sparse.
pub(super) async fn format(image: &Path, size: u64, journal: Journal) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    file.set_len(size).map_err(|e| format!("{}: {e}", image.display()))?;
    drop(file);
    let features = match journal {
        Journal::With => "^resize_inode",
        Journal::Without => "^has_journal,^resize_inode",
    };
    run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-m".as_ref(),
            "0".as_ref(),
            "-O".as_ref(),
            features.as_ref(),
            "-E".as_ref(),
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard".as_ref(),
            image.as_os_str(),
        ],
    )
    .await
    .map_err(|e| format!("{e}; install e2fsprogs (apt-get install e2fsprogs)"))
}

/// Loop-mounts a formatted `image` at `mount` (`nosuid`, `nodev`); the mount's root is
/// root's, `0711`.
pub(super) async fn mount_image(image: &Path, mount: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(mount).map_err(|e| format!("{}: {e}", mount.display()))?;
    run(
        "mount",
        &[
            "-t".as_ref(),
            "ext4".as_ref(),
            "-o".as_ref(),
            MOUNT_OPTIONS.as_ref(),
            image.as_os_str(),
            mount.as_os_str(),
        ],
    )
    .await
    .map_err(|e| {
        format!("{e}; loop devices are needed (load the loop module: modprobe loop; in a container, give it /dev/loop-control and /dev/loop*)")
    })?;
    // The site's uid passes through to its `app` folder; the rest (lost+found) is root's.
    std::fs::set_permissions(mount, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("{}: {e}", mount.display()))
}

/// Runs a system tool with an empty environment; its stderr is the error.
async fn run(tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn unmount_and_remove(mount: &Path, image: &Path) {
    // Lazily: a process still holding a file there lets go when it exits; the loop
    // device (autoclear) goes with the last user.
    while nix::mount::umount2(mount, MntFlags::MNT_DETACH).is_ok() {}
    let _ = std::fs::remove_dir_all(mount);
    let _ = std::fs::remove_file(image);
}

/// Checks once that a build disk can be made here (the tools exist and loop devices
/// work), in `builds`; `Err` says what to install.
pub async fn probe(builds: &Path) -> Result<(), String> {
    let (mount, image) = (builds.join(".probe"), builds.join(".probe.img"));
    unmount_and_remove(&mount, &image);
    let result = format_and_mount(&image, &mount, 4 << 20).await;
    unmount_and_remove(&mount, &image);
    result.map_err(|e| format!("build disks cannot be made: {e}"))
}

/// Removes the build disks a crashed berth left in `builds`: every mount under it is
/// undone and every entry removed. Returns how many disks there were.
pub fn remove_leftovers(builds: &Path) -> usize {
    for path in &mounts_under(builds) {
        let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
    }
    let mut images = 0;
    for entry in std::fs::read_dir(builds).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "img") {
            images += 1;
        }
        // A mount point is a real folder (never a link) once unmounted.
        match entry.file_type() {
            Ok(t) if t.is_dir() => drop(std::fs::remove_dir_all(&path)),
            _ => drop(std::fs::remove_file(&path)),
        }
    }
    images
}

/// The mount points below `dir` (not `dir` itself).
pub(super) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_path(field)))
        .filter(|path| path.starts_with(dir) && path != dir)
        .collect()
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(super::unescape_mount_path("/a\\040b/c\\134d"), "/a b/c\\d");
    }
}
