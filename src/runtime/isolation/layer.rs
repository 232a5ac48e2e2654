//! An app instance's writable layer: an overlay whose lower layer is the deployment's
//! folder (never written) and whose upper layer is a tmpfs of a fixed size, mounted under
//! `/run/berth/fs/<slot>` and bound at `/app` in the sandbox. What the app writes stays
//! with the instance, cannot exceed the size (the kernel answers "no space left"), counts
//! against the instance's memory, and is gone when it stops; another environment serving
//! the same files never sees it.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Where the layers live.
pub const ROOT: &str = "/run/berth/fs";

/// One instance's mounted layer.
#[derive(Debug)]
pub struct Layer {
    dir: PathBuf,
    size: u64,
}

impl Layer {
    /// Mounts a layer of `size` bytes over `lower` for slot `index`, writable by `uid`.
    pub fn create(index: u32, lower: &Path, uid: u32, size: u64) -> Result<Layer, String> {
        use std::os::unix::fs::PermissionsExt as _;
        remove_leftover(index);
        let layer = Layer {
            dir: Path::new(ROOT).join(index.to_string()),
            size,
        };
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("cannot set up the app's writable layer ({what}): {e}");
        let (rw, merged) = (layer.dir.join("rw"), layer.merged());
        for dir in [&layer.dir, &rw, &merged] {
            std::fs::create_dir_all(dir).map_err(|e| fail("folders", &e))?;
        }
        // Traversable (the sandbox binds `merged` as the site's uid), nothing listable.
        let _ = std::fs::set_permissions(&layer.dir, std::fs::Permissions::from_mode(0o711));
        nix::mount::mount(
            Some("berth-layer"),
            &rw,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0711").as_str()),
        )
        .map_err(|e| fail("tmpfs", &e))?;
        let (upper, work) = (rw.join("upper"), rw.join("work"));
        for dir in [&upper, &work] {
            std::fs::create_dir(dir).map_err(|e| fail("folders", &e))?;
        }
        // The merged root takes the upper folder's owner and mode.
        std::os::unix::fs::chown(&upper, Some(uid), Some(uid)).map_err(|e| fail("owner", &e))?;
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o700)).map_err(|e| fail("mode", &e))?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        if let Err(e) = nix::mount::mount(
            Some("berth-app"),
            &merged,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        ) {
            layer.remove();
            return Err(fail("overlay", &e));
        }
        Ok(layer)
    }

    /// The folder to bind at `/app`.
    pub fn merged(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// Its size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Whether the app has used up the space (less than 1% or 64 KiB left).
    pub fn is_full(&self) -> bool {
        match nix::sys::statvfs::statvfs(&self.dir.join("rw")) {
            Ok(s) => {
                let free = s.blocks_available() * s.fragment_size();
                free < (self.size / 100).max(64 * 1024)
            }
            Err(_) => false,
        }
    }

    /// Unmounts and removes it.
    pub fn remove(&self) {
        unmount_all(&self.dir);
    }
}

/// Removes what a crashed run left of slot `index`'s layer.
pub fn remove_leftover(index: u32) {
    unmount_all(&Path::new(ROOT).join(index.to_string()));
}

fn unmount_all(dir: &Path) {
    if !dir.exists() {
        return;
    }
    for mount in [dir.join("app"), dir.join("rw")] {
        // Lazily: a process that still holds a file there releases it when it exits.
        let _ = nix::mount::umount2(&mount, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(dir.join("app"));
    let _ = std::fs::remove_dir(dir.join("rw"));
    let _ = std::fs::remove_dir(dir);
}
