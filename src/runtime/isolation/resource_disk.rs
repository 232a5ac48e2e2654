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
//!
//! Each disk has a lock, an exclusive `flock` on its image ([`lock_image`]): the server
//! holds it while it mounts, unmounts or removes the disk, and `berth backup` holds it
//! while it copies the disk ([`copy_disk`]), so a disk is never mounted, unmounted or
//! removed under a copy. Waiting for one disk's lock holds up nothing of the other
//! disks, and a mount waits for it at most [`LOCK_WAIT`]: the start fails then, and is
//! tried again (see [`ResourceDisks::open`]). A copy of a mounted disk freezes its file system (`fsfreeze`,
//! the `FIFREEZE` ioctl) for the copy: the apps' writes wait, and the image is a clean
//! file system, as after a crash (SQLite's journal keeps its database whole then).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::mount::MntFlags;

use super::build_disk::{self, Journal};

/// The folder of the data dir that holds resource disks.
pub const RESOURCES_DIR: &str = "resources";

/// How long mounting a disk waits for its lock (a backup copying it holds it) before the
/// start fails; shorter than the default start timeout, so that the start says why.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// How often a mount waiting for a disk's lock tries to take it.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// The resource disks of this server.
#[derive(Debug)]
pub struct ResourceDisks {
    dir: PathBuf,
    /// Each disk's count of the instances using it, by resource id. The map's lock is
    /// held only to find or add a disk's entry; the entry's own lock is held while the
    /// disk is mounted, unmounted or removed (waits for its flock included), so one
    /// disk's waits never hold up another's.
    users: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<u32>>>>,
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
            // A backup copying the disk has it frozen: wait until it is done with it.
            let _lock = lock_image(&path.with_extension("img")).ok();
            while nix::mount::umount2(&path, MntFlags::MNT_DETACH).is_ok() {}
        }
        Ok(ResourceDisks {
            dir,
            users: std::sync::Mutex::default(),
        })
    }

    /// The count of instances using the disk of resource `id` (made at zero).
    fn users_of(&self, id: &str) -> Arc<tokio::sync::Mutex<u32>> {
        self.users
            .lock()
            .expect("resource disks lock")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// The ids of the disk images in the folder (`<id>.img`), whether a resource names
    /// them or not.
    pub fn image_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".img")?;
                (e.file_type().ok()?.is_file() && !id.is_empty()).then(|| id.to_string())
            })
            .collect()
    }

    /// Whether the disk of resource `id` has ever been mounted (so may hold an app's
    /// data): its ext4 superblock counts mounts. An image that is not an ext4 file system
    /// (its formatting was interrupted) never was.
    pub fn ever_mounted(&self, id: &str) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt as _;
        let mut superblock = [0u8; 0x3A];
        let file = std::fs::File::open(self.image(id))?;
        if file.read_at(&mut superblock, 1024)? < superblock.len() {
            return Ok(false);
        }
        let le16 = |at: usize| u16::from_le_bytes([superblock[at], superblock[at + 1]]);
        let le32 = |at: usize| u32::from_le_bytes(superblock[at..at + 4].try_into().expect("4 bytes"));
        // s_magic, s_mnt_count, s_mtime (the last mount's time).
        Ok(le16(0x38) == 0xEF53 && (le16(0x34) > 0 || le32(0x2C) > 0))
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
    /// [`ResourceMount`] of it is released. The first user waits for the disk's lock
    /// (a backup copying the disk holds it) at most [`LOCK_WAIT`], then fails: a site's
    /// instance that fails to start is started again by the reconciler (backing off), so
    /// it comes up once the backup is done; a deploy fails and can be run again.
    pub async fn open(self: &Arc<Self>, id: &str, uid: u32) -> Result<ResourceMount, String> {
        let (image, mount) = (self.image(id), self.mount_point(id));
        let users = self.users_of(id);
        let mut count = users.lock().await;
        // Looked at under the disk's own lock: a removal finishes before it.
        if !image.exists() {
            return Err(format!(
                "the disk of resource {id} is missing from {}",
                self.dir.display()
            ));
        }
        // The first user mounts the disk, under its lock (a backup copying it holds it).
        let _lock = if *count == 0 {
            Some(lock_image_within(&image, LOCK_WAIT).await?)
        } else {
            None
        };
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
        let Some(users) = self.users.lock().expect("resource disks lock").get(id).cloned() else {
            return;
        };
        let mut count = users.lock().await;
        // Zero: the disk was removed meanwhile.
        if *count == 0 {
            return;
        }
        *count -= 1;
        if *count == 0 {
            let mount = self.mount_point(id);
            // A backup copying the disk has it frozen: unmount once it is done with it.
            let _lock = lock_image_async(&self.image(id)).await.ok();
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
        let users = self.users_of(id);
        let mut count = users.lock().await;
        *count = 0;
        // A user still waiting for the entry finds the count at zero and the disk gone.
        self.users.lock().expect("resource disks lock").remove(id);
        let mount = self.mount_point(id);
        let _lock = lock_image_async(&self.image(id)).await.ok();
        while nix::mount::umount2(&mount, MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir(&mount);
        match std::fs::remove_file(self.image(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove the resource's disk: {e}")),
        }
    }
}

/// Takes the lock of the disk whose image is `image` (see the module's text), waiting
/// until it is free; it is held until the answered file is dropped.
pub fn lock_image(image: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(image)?;
    file.lock()?;
    Ok(file)
}

/// [`lock_image`], waited for at most `wait` (tried every [`LOCK_POLL`], so a start that
/// is given up stops waiting too).
async fn lock_image_within(image: &Path, wait: Duration) -> Result<std::fs::File, String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot lock the resource's disk {}: {e}", image.display());
    let file = std::fs::File::open(image).map_err(|e| cannot(&e))?;
    let since = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if since.elapsed() < wait => tokio::time::sleep(LOCK_POLL).await,
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "a backup is copying the resource's disk (waited {} s for it to finish); the start is retried by itself, or for a deploy, deploy again once the backup is done",
                    wait.as_secs()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(cannot(&e)),
        }
    }
}

/// [`lock_image`], waited for off the async threads.
async fn lock_image_async(image: &Path) -> Result<std::fs::File, String> {
    let path = image.to_path_buf();
    tokio::task::spawn_blocking(move || lock_image(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot lock the resource's disk {}: {e}", image.display()))
}

/// What copying a disk did.
#[derive(Debug)]
pub struct DiskCopy {
    /// The image's size (its apparent length).
    pub size: u64,
    /// The bytes of data copied (holes are not copied, and stay holes).
    pub bytes: u64,
    /// How long the disk's file system was frozen; `None` when it was not mounted.
    pub frozen: Option<Duration>,
}

/// How long a copy waits for a lazily unmounted disk to be let go.
const LET_GO_WAIT: Duration = Duration::from_secs(10);

/// Copies the disk of resource `id` in `dir` (the data dir's resources folder, as a
/// canonical path) to `dest`, a new file of mode `0600`, sparsely, and consistent while
/// its apps write: under the disk's lock (the server neither mounts nor unmounts it
/// meanwhile) and, when it is mounted, with its file system frozen for the copy and
/// thawed after it, also on an error or a panic. `cancel` (set by a signal) stops the
/// copy with an error. `Ok(None)`: there is no such disk (the resource was deleted).
/// Blocking.
pub fn copy_disk(dir: &Path, id: &str, dest: &Path, cancel: &AtomicBool) -> Result<Option<DiskCopy>, String> {
    let (image, mount) = (dir.join(format!("{id}.img")), dir.join(id));
    let source = match lock_image(&image) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot lock the disk {}: {e}", image.display())),
    };
    // Mounted where berth mounts it, or not at all: a file system that was lazily
    // unmounted (its last instance was stopping) cannot be frozen, and is waited out.
    let since = Instant::now();
    let mounted = loop {
        if build_disk::mounts_under(dir).contains(&mount) {
            break true;
        }
        if !image_attached(&image) {
            break false;
        }
        if since.elapsed() > LET_GO_WAIT || cancel.load(Ordering::Relaxed) {
            return Err(format!(
                "the disk of resource {id} is still held by an app instance that is stopping; run the backup again once it has stopped"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let frozen = if mounted { Some(Frozen::freeze(&mount)?) } else { None };
    let copied = sparse_copy(&source, &image, dest, cancel);
    let frozen = match frozen {
        Some(frozen) => Some(frozen.thaw()?),
        None => None,
    };
    let (size, bytes) = copied?;
    Ok(Some(DiskCopy { size, bytes, frozen }))
}

/// A frozen file system, thawed when dropped (an error or a panic on the way included).
struct Frozen {
    mount: PathBuf,
    since: Instant,
    thawed: bool,
    guardian: std::process::Child,
}

impl Frozen {
    fn freeze(mount: &Path) -> Result<Frozen, String> {
        // A drop runs no guard when this process is killed outright (`kill -9`, the OOM
        // killer): a guardian process thaws the disk then. It waits on a pipe only this
        // process holds, which the kernel closes when this process ends however it ends;
        // in a process group of its own, a Ctrl-C in the terminal does not reach it.
        let mut guardian = std::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' INT TERM HUP; read -r _ || true; exec fsfreeze --unfreeze \"$1\" 2>/dev/null")
            .arg("berth-thaw-guardian")
            .arg(mount)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the process that thaws a disk if the backup dies: {e}"))?;
        if let Err(e) = fsfreeze("--freeze", mount) {
            let _ = guardian.kill();
            let _ = guardian.wait();
            return Err(e);
        }
        Ok(Frozen {
            mount: mount.to_path_buf(),
            since: Instant::now(),
            thawed: false,
            guardian,
        })
    }

    /// Thaws it; answers how long it was frozen.
    fn thaw(mut self) -> Result<Duration, String> {
        self.thawed = true;
        let held = self.since.elapsed();
        fsfreeze("--unfreeze", &self.mount)?;
        Ok(held)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed
            && let Err(e) = fsfreeze("--unfreeze", &self.mount)
        {
            tracing::error!(mount = %self.mount.display(), error = %e, "a frozen resource disk could not be thawed");
            eprintln!("error: {e}; thaw it with: fsfreeze --unfreeze {}", self.mount.display());
        }
        // Thawed (or tried): the guardian has nothing left to do. The disk's lock is still
        // held here, so no other backup froze it again meanwhile.
        let _ = self.guardian.kill();
        let _ = self.guardian.wait();
    }
}

/// Runs `fsfreeze` (util-linux), which calls the `FIFREEZE`/`FITHAW` ioctl on `mount`.
fn fsfreeze(action: &str, mount: &Path) -> Result<(), String> {
    let out = std::process::Command::new("fsfreeze")
        .arg(action)
        .arg(mount)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run fsfreeze: {e}; install util-linux"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fsfreeze {action} {} failed ({}): {}",
            mount.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Copies `source` (the file at `path`) to a new file `dest` (mode `0600`), its data
/// ranges only (found with `SEEK_DATA`/`SEEK_HOLE`, copied in the kernel with
/// `copy_file_range` where the two file systems allow it): a hole stays a hole. Answers
/// the length and the bytes of data copied.
fn sparse_copy(source: &std::fs::File, path: &Path, dest: &Path, cancel: &AtomicBool) -> Result<(u64, u64), String> {
    use nix::unistd::{Whence, lseek};
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    /// Bytes copied per call, between looks at `cancel`.
    const CHUNK: u64 = 8 << 20;
    let read_error = |e: &dyn std::fmt::Display| format!("reading {}: {e}", path.display());
    let write_error = |e: &dyn std::fmt::Display| format!("writing {}: {e}", dest.display());
    let len = source.metadata().map_err(|e| read_error(&e))?.len();
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| write_error(&e))?;
    out.set_len(len).map_err(|e| write_error(&e))?;
    let (mut offset, mut bytes, mut in_kernel) = (0u64, 0u64, true);
    let mut buffer = Vec::new();
    while offset < len {
        let data = match lseek(source, offset as i64, Whence::SeekData) {
            Ok(at) => at as u64,
            // No data after `offset`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(read_error(&e)),
        };
        let hole = (lseek(source, data as i64, Whence::SeekHole).map_err(|e| read_error(&e))? as u64).min(len);
        let mut at = data;
        while at < hole {
            if cancel.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            let want = (hole - at).min(CHUNK) as usize;
            let done = if in_kernel {
                let (mut from, mut to) = (at as i64, at as i64);
                match nix::fcntl::copy_file_range(source, Some(&mut from), &out, Some(&mut to), want) {
                    Ok(done) => done,
                    // Not between these two file systems: through memory.
                    Err(
                        nix::errno::Errno::EXDEV
                        | nix::errno::Errno::EINVAL
                        | nix::errno::Errno::ENOSYS
                        | nix::errno::Errno::EOPNOTSUPP,
                    ) => {
                        in_kernel = false;
                        continue;
                    }
                    Err(e) => return Err(write_error(&e)),
                }
            } else {
                buffer.resize(want.min(1 << 20), 0);
                let read = source.read_at(&mut buffer, at).map_err(|e| read_error(&e))?;
                out.write_all_at(&buffer[..read], at).map_err(|e| write_error(&e))?;
                read
            };
            if done == 0 {
                return Err(read_error(&"the file ended early"));
            }
            at += done as u64;
        }
        bytes += hole - data;
        offset = hole;
    }
    out.sync_all().map_err(|e| write_error(&e))?;
    Ok((len, bytes))
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
