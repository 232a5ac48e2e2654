//! Resource disks: the persistent storage of a `sqlite` resource. Each is a sparse file
//! of its size in `DATA/resources/<id>.img` (root's, `0600`), formatted ext4 with a
//! journal when the resource is made. It is loop-mounted (`nosuid`, `nodev`) at
//! `DATA/resources/<id>` while an instance of its site runs, its root handed to the
//! site's host uid (`0700`), and bound into the instance's sandbox at `/data/<name>`. An
//! app writing past the size gets "no space left on device" from the kernel, and the
//! host's disk never holds more than the file's size for it.
//!
//! Mounts are counted: the last instance to stop unmounts the disk, and what a crashed
//! berth left mounted is unmounted when berth starts ([`ResourceDisks::prepare`]).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::MntFlags;

use super::build_disk::{self, Journal};

/// The folder of the data dir that holds resource disks.
pub const RESOURCES_DIR: &str = "resources";

/// The resource disks of this server.
#[derive(Debug)]
pub struct ResourceDisks {
    dir: PathBuf,
    /// Instances using each mounted disk, by resource id.
    users: tokio::sync::Mutex<HashMap<String, u32>>,
}

impl ResourceDisks {
    /// Makes the folder (traversable: each site's uid passes through it to its disks) and
    /// unmounts what a crashed berth left mounted there; the images stay.
    pub async fn prepare(dir: &Path) -> Result<ResourceDisks, String> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        for path in build_disk::mounts_under(&dir) {
            while nix::mount::umount2(&path, MntFlags::MNT_DETACH).is_ok() {}
        }
        Ok(ResourceDisks {
            dir,
            users: tokio::sync::Mutex::default(),
        })
    }

    /// The disk image of resource `id`.
    pub fn image(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }

    fn mount_point(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Makes the disk of a new resource: `size` bytes, formatted, not mounted.
    pub async fn create(&self, id: &str, size: u64) -> Result<(), String> {
        let image = self.image(id);
        if let Err(e) = build_disk::format(&image, size, Journal::With).await {
            let _ = std::fs::remove_file(&image);
            return Err(format!("cannot make the resource's disk: {e}"));
        }
        Ok(())
    }

    /// Mounts the disk of resource `id` for an instance running as `uid` (if it is not
    /// mounted yet) and answers the folder to bind; the disk stays mounted until the last
    /// [`ResourceMount`] of it is released.
    pub async fn open(self: &Arc<Self>, id: &str, uid: u32) -> Result<ResourceMount, String> {
        let (image, mount) = (self.image(id), self.mount_point(id));
        if !image.exists() {
            return Err(format!(
                "the disk of resource {id} is missing from {}",
                self.dir.display()
            ));
        }
        let mut users = self.users.lock().await;
        let count = users.entry(id.to_string()).or_insert(0);
        if *count == 0 && !build_disk::mounts_under(&self.dir).contains(&mount) {
            // Mounting an image that a lazily unmounted file system still holds would
            // give two file systems over one disk: wait until it is let go.
            if image_attached(&image) {
                return Err(
                    "the resource's disk is still held by an instance that is stopping; the start is retried".into(),
                );
            }
            build_disk::mount_image(&image, &mount)
                .await
                .map_err(|e| format!("cannot mount the resource's disk: {e}"))?;
        }
        // The site's uid owns what is on the disk; no other uid may enter it.
        let owner = std::fs::metadata(&mount).map(|m| m.uid());
        if owner.as_ref().ok() != Some(&uid) {
            let handed = {
                let mount = mount.clone();
                tokio::task::spawn_blocking(move || super::hand_over(&mount, uid))
                    .await
                    .map_err(|e| e.to_string())?
            };
            if let Err(e) = handed {
                if *count == 0 {
                    let _ = nix::mount::umount2(&mount, MntFlags::MNT_DETACH);
                }
                return Err(format!("cannot give the resource's disk to the site: {e}"));
            }
        }
        *count += 1;
        Ok(ResourceMount {
            disks: self.clone(),
            id: id.to_string(),
            path: mount,
            released: false,
        })
    }

    async fn release(&self, id: &str) {
        let mut users = self.users.lock().await;
        let Some(count) = users.get_mut(id) else { return };
        *count = count.saturating_sub(1);
        if *count == 0 {
            users.remove(id);
            let mount = self.mount_point(id);
            // The instance's processes are gone, so nothing should hold it; if something
            // does, lazily (it lets go when it exits, and the disk is not mounted again
            // before: see `open`).
            if nix::mount::umount2(&mount, MntFlags::empty()).is_err() {
                tracing::warn!(mount = %mount.display(), "a resource disk was busy when its last instance stopped; unmounting it lazily");
                let _ = nix::mount::umount2(&mount, MntFlags::MNT_DETACH);
            }
        }
    }

    /// Bytes used on the disk of resource `id`, while it is mounted.
    pub fn used_bytes(&self, id: &str) -> Option<u64> {
        let mount = self.mount_point(id);
        if !build_disk::mounts_under(&self.dir).contains(&mount) {
            return None;
        }
        let s = nix::sys::statvfs::statvfs(&mount).ok()?;
        Some((s.blocks() - s.blocks_free()) * s.fragment_size())
    }

    /// Unmounts the disk of resource `id` and removes its image.
    pub async fn remove(&self, id: &str) -> Result<(), String> {
        let mut users = self.users.lock().await;
        users.remove(id);
        let mount = self.mount_point(id);
        while nix::mount::umount2(&mount, MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir(&mount);
        match std::fs::remove_file(self.image(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove the resource's disk: {e}")),
        }
    }
}

/// Whether a loop device still reads `image` (a file system on it is mounted, or was
/// lazily unmounted and is still held open).
fn image_attached(image: &Path) -> bool {
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    devices.flatten().any(|device| {
        std::fs::read_to_string(device.path().join("loop/backing_file"))
            .is_ok_and(|backing| Path::new(backing.trim_end()) == image)
    })
}

/// A mounted resource disk in use by one instance; release it when the instance has
/// exited (dropping it releases it in the background).
#[derive(Debug)]
pub struct ResourceMount {
    disks: Arc<ResourceDisks>,
    id: String,
    path: PathBuf,
    released: bool,
}

impl ResourceMount {
    /// The mounted folder, to bind into the instance's sandbox.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the mount back; the last user's release unmounts the disk.
    pub async fn release(mut self) {
        self.released = true;
        self.disks.release(&self.id).await;
    }
}

impl Drop for ResourceMount {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (disks, id) = (self.disks.clone(), std::mem::take(&mut self.id));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { disks.release(&id).await });
        }
    }
}
