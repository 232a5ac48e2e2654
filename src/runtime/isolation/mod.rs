//! What keeps one site's code from the host and from other sites, beyond bubblewrap's
//! namespaces: every sandboxed command tree (an app instance, or one deployment's build
//! steps) gets a *slot*: a host uid of its site's own, a network namespace of its own
//! (`network`) and control groups with memory, CPU and process limits (`cgroup`). An app
//! instance also gets a writable layer of bounded size over its deployment's folder
//! (`layer`): what it writes lives there and goes with the instance, and the deployment's
//! own files never change. A deployment's build steps write on a disk of bounded size
//! (`build_disk`) whose result becomes the deployment's folder.
//!
//! Slots are numbered host-wide: a lock file per slot under `/run/berth/slots` (holding
//! the owner's pid) keeps two berth servers on one machine from using the same
//! addresses or group names; slots of dead owners are reclaimed.
//!
//! Confinement needs berth to run as root. Not as root (a development machine), apps
//! run in the plain sandbox on the host network and [`Isolation::status`] says so; as
//! root, a missing piece (iptables, cgroups) fails every start with the reason instead
//! of running apps unconfined.

pub mod build_disk;
pub mod cgroup;
pub mod layer;
pub mod network;
pub mod resource_disk;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_build::sandbox::{Confinement, Sandbox};

pub use cgroup::Limits;
pub use network::AppSubnet;

/// Where slot lock files live (host-wide).
const SLOTS_DIR: &str = "/run/berth/slots";

/// What a slot runs, which decides its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// An app instance.
    App,
    /// A deployment's build steps.
    Build,
}

/// Settings of the isolation (from `berth serve`'s flags).
#[derive(Clone, Debug)]
pub struct IsolationSettings {
    /// Host uids handed to sites, first and last.
    pub uids: (u32, u32),
    /// Addresses of app namespaces.
    pub subnet: AppSubnet,
    /// Limits of each app instance.
    pub app: Limits,
    /// Limits of each deployment's build steps.
    pub build: Limits,
    /// Size of each app instance's writable layer over its folder, in bytes.
    pub app_disk_bytes: u64,
    /// Size of each deployment's build disk, in bytes.
    pub build_disk_bytes: u64,
    /// Where build disks are made (`DATA/builds`): on the data dir's file system.
    pub builds_dir: PathBuf,
    /// Where resource disks are kept (`DATA/resources`).
    pub resources_dir: PathBuf,
}

/// The machine's isolation, set up once at start.
pub enum Isolation {
    /// Not root: apps run in the plain sandbox (development machines).
    Off(String),
    /// Root, but a piece is missing: nothing may start.
    Broken(String),
    /// Slots can be had.
    Ready(Arc<Ready>),
}

/// A working isolation.
pub struct Ready {
    settings: IsolationSettings,
    cgroups: cgroup::Hierarchy,
    next: AtomicU32,
    resources: Arc<resource_disk::ResourceDisks>,
}

impl Isolation {
    /// Checks what the machine offers and puts the host firewall and berth's control
    /// groups in place; reclaims slots of dead berth processes.
    pub async fn setup(sandbox: &Sandbox, settings: IsolationSettings) -> Isolation {
        if let Err(why) = sandbox.can_confine() {
            return if nix::unistd::geteuid().is_root() {
                tracing::error!("apps cannot be isolated, so none will start: {why}");
                Isolation::Broken(why)
            } else {
                tracing::warn!("apps run without host users, network namespaces and limits of their own: {why}");
                Isolation::Off(why)
            };
        }
        match Self::prepare(settings).await {
            Ok(ready) => Isolation::Ready(Arc::new(ready)),
            Err(why) => {
                tracing::error!("apps cannot be isolated, so none will start: {why}");
                Isolation::Broken(why)
            }
        }
    }

    async fn prepare(mut settings: IsolationSettings) -> Result<Ready, String> {
        let cgroups = cgroup::Hierarchy::detect()?;
        cgroups.prepare()?;
        network::install_firewall(settings.subnet)
            .await
            .map_err(|e| format!("{e}; install iptables (apt-get install iptables)"))?;
        std::fs::create_dir_all(SLOTS_DIR).map_err(|e| format!("cannot create {SLOTS_DIR}: {e}"))?;
        // Layers are bound into sandboxes as each site's uid: the way there is traversable.
        for dir in ["/run/berth", layer::ROOT] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
        }
        settings.builds_dir = prepare_builds_dir(&settings.builds_dir).await?;
        let resources = Arc::new(resource_disk::ResourceDisks::prepare(&settings.resources_dir).await?);
        let settings_slots = settings.subnet.slots();
        let ready = Ready {
            settings,
            cgroups,
            resources,
            // Slots are taken in turn from a random start, so an address just given up is
            // the last to be handed out again (by this berth or another on the machine).
            next: AtomicU32::new(rand::random::<u32>() % settings_slots),
        };
        let reclaimed = tokio::task::spawn_blocking({
            let hierarchy = ready.cgroups.clone();
            move || reclaim_dead_slots(&hierarchy)
        })
        .await
        .unwrap_or(0);
        if reclaimed > 0 {
            tracing::info!(slots = reclaimed, "removed sandboxes left by a berth that is gone");
        }
        Ok(ready)
    }

    /// `Ok` with a description when apps are confined, else why not.
    pub fn status(&self) -> Result<String, String> {
        match self {
            Isolation::Ready(r) => Ok(format!(
                "apps run as host users of their own, each in its own network namespace (public internet and DNS only), with {} MiB of memory, {} CPU, {} processes and {} MiB of writable space per instance; builds write on a disk of {} MiB",
                r.settings.app.memory_bytes >> 20,
                r.settings.app.cpus,
                r.settings.app.pids,
                r.settings.app_disk_bytes >> 20,
                r.settings.build_disk_bytes >> 20
            )),
            Isolation::Off(why) | Isolation::Broken(why) => Err(why.clone()),
        }
    }

    /// The limits a slot of `kind` gets, when slots are in use.
    pub fn limits(&self, kind: SlotKind) -> Option<Limits> {
        let Isolation::Ready(r) = self else { return None };
        Some(match kind {
            SlotKind::App => r.settings.app,
            SlotKind::Build => r.settings.build,
        })
    }

    /// A disk of `--build-disk-mb` for a deployment's build steps, holding a copy of
    /// `source` (the deployment's folder, already the site's); run the steps in its
    /// [`build_disk::BuildDisk::app_dir`] and finish it to make the result the folder.
    /// `Ok(None)`: isolation is off here, build in `source` itself.
    pub async fn build_disk(
        &self,
        deployment_id: &str,
        source: &Path,
    ) -> Result<Option<build_disk::BuildDisk>, String> {
        let ready = match self {
            Isolation::Off(_) => return Ok(None),
            Isolation::Broken(why) => return Err(format!("apps cannot be isolated on this server: {why}")),
            Isolation::Ready(r) => r,
        };
        let settings = &ready.settings;
        build_disk::BuildDisk::create(&settings.builds_dir, deployment_id, source, settings.build_disk_bytes)
            .await
            .map(Some)
    }

    /// The resource disks of this server; `Err` says why there are none (they need the
    /// isolation: root, loop devices).
    pub fn resource_disks(&self) -> Result<Arc<resource_disk::ResourceDisks>, String> {
        match self {
            Isolation::Ready(r) => Ok(r.resources.clone()),
            Isolation::Off(why) | Isolation::Broken(why) => Err(format!(
                "resources need berth's app isolation (berth running as root, with loop devices), which is off on this server: {why}"
            )),
        }
    }

    /// The uid of a site, from its sequence number; an error when the range is used up.
    pub fn site_uid(&self, seq: u32) -> Result<Option<u32>, String> {
        let Isolation::Ready(r) = self else { return Ok(None) };
        let (first, last) = r.settings.uids;
        match first.checked_add(seq) {
            Some(uid) if uid <= last => Ok(Some(uid)),
            _ => Err(format!(
                "no host uid left for this site in the range {first}-{last}; widen it with --sandbox-uids"
            )),
        }
    }

    /// A slot for a command tree of the site running as `uid`. `Ok(None)`: isolation is
    /// off here, use the plain sandbox.
    ///
    /// An app instance's slot (`app_dir` given) also gets a writable layer over the folder;
    /// run it with [`Slot::app_dir`]. Its site's `resources` are mounted and bound in at
    /// `/data/<name>`.
    pub async fn acquire(
        &self,
        kind: SlotKind,
        uid: Option<u32>,
        app_dir: Option<&Path>,
        size: crate::runtime::InstanceSize,
        resources: &[crate::runtime::AttachedResource],
    ) -> Result<Option<Slot>, String> {
        let ready = match self {
            Isolation::Off(_) if resources.is_empty() => return Ok(None),
            Isolation::Off(why) => {
                return Err(format!(
                    "the site has resources, which need berth's app isolation (berth running as root, with loop devices); it is off on this server: {why}"
                ));
            }
            Isolation::Broken(why) => return Err(format!("apps cannot be isolated on this server: {why}")),
            Isolation::Ready(r) => r.clone(),
        };
        let uid = uid.ok_or("no host uid for this site")?;
        let index = ready.claim_index()?;
        let mut slot = Slot {
            index,
            uid,
            limits: {
                let mut limits = match kind {
                    SlotKind::App => ready.settings.app,
                    SlotKind::Build => ready.settings.build,
                };
                if let Some(mb) = size.memory_mb {
                    limits.memory_bytes = mb << 20;
                }
                if let Some(cpus) = size.cpus {
                    limits.cpus = cpus;
                }
                limits
            },
            netns: None,
            cgroup: None,
            layer: None,
            mounts: Vec::new(),
            released: false,
        };
        slot.cgroup = Some(ready.cgroups.create(&index.to_string(), slot.limits)?);
        slot.netns = Some(network::Namespace::create(ready.settings.subnet, index).await?);
        if let Some(dir) = app_dir {
            let (dir, size) = (dir.to_path_buf(), ready.settings.app_disk_bytes);
            let layer = tokio::task::spawn_blocking(move || layer::Layer::create(index, &dir, uid, size))
                .await
                .map_err(|e| e.to_string())??;
            slot.layer = Some(layer);
        }
        for resource in resources {
            let mount = ready.resources.open(&resource.id, uid).await?;
            slot.mounts.push((mount, resource.mount_path()));
        }
        Ok(Some(slot))
    }
}

impl Ready {
    /// Takes the next free slot number host-wide: a lock file that holds the owner's pid
    /// from the moment it exists (written aside, then hard-linked into place, which fails
    /// when the name is taken), so no other berth ever reads it empty and reclaims it.
    fn claim_index(&self) -> Result<u32, String> {
        use std::io::Write as _;
        let slots = self.settings.subnet.slots();
        let me = std::process::id();
        static DRAFTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let draft = Path::new(SLOTS_DIR).join(format!(".claim-{me}-{}", DRAFTS.fetch_add(1, Ordering::Relaxed)));
        let mut f =
            std::fs::File::create(&draft).map_err(|e| format!("cannot claim a sandbox slot in {SLOTS_DIR}: {e}"))?;
        f.write_all(me.to_string().as_bytes())
            .map_err(|e| format!("{}: {e}", draft.display()))?;
        drop(f);
        let claimed = (0..slots).find_map(|_| {
            let index = self.next.fetch_add(1, Ordering::Relaxed) % slots;
            match std::fs::hard_link(&draft, lock_file(index)) {
                Ok(()) => Some(Ok(index)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(format!("cannot claim a sandbox slot in {SLOTS_DIR}: {e}"))),
            }
        });
        let _ = std::fs::remove_file(&draft);
        if let Some(claimed) = claimed {
            return claimed;
        }
        Err(format!(
            "all {slots} sandbox slots of the app subnet {} are in use; give --app-subnet a larger range",
            self.settings.subnet
        ))
    }
}

/// A claimed slot: the resources of one sandboxed command tree. Release it once the
/// tree has exited (dropping it releases it in the background).
pub struct Slot {
    index: u32,
    uid: u32,
    limits: Limits,
    netns: Option<network::Namespace>,
    cgroup: Option<cgroup::Cgroup>,
    layer: Option<layer::Layer>,
    /// Resource disks bound in, with where the instance sees each.
    mounts: Vec<(resource_disk::ResourceMount, PathBuf)>,
    released: bool,
}

impl Slot {
    /// `base` with every command confined to this slot.
    pub fn sandbox(&self, base: &Sandbox) -> Sandbox {
        base.confined(Confinement {
            uid: self.uid,
            gid: self.uid,
            netns: self.netns.as_ref().map(|n| n.path()),
            cgroup_procs: self.cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
            tmp_bytes: Some(self.limits.memory_bytes),
            binds: self
                .mounts
                .iter()
                .map(|(mount, inside)| (mount.path().to_path_buf(), inside.clone()))
                .collect(),
        })
    }

    /// The folder to run the instance in: the writable layer over its deployment's folder,
    /// or `dir` itself when the slot has no layer.
    pub fn app_dir(&self, dir: &Path) -> PathBuf {
        self.layer.as_ref().map_or_else(|| dir.to_path_buf(), |l| l.merged())
    }

    /// The host uid its commands run as.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Where the host reaches what listens in the slot.
    pub fn addr(&self) -> Option<Ipv4Addr> {
        self.netns.as_ref().map(|n| n.addr)
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Memory its processes use now.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(|c| c.memory_bytes())
    }

    /// Why the kernel stopped something in it, if it did: out of memory, or forks
    /// refused at the process limit.
    pub fn limit_hit(&self) -> Option<String> {
        if let Some(layer) = &self.layer
            && layer.is_full()
        {
            return Some(format!(
                "disk full: the app's writable space of {} MiB is used up",
                layer.size_bytes() >> 20
            ));
        }
        let group = self.cgroup.as_ref()?;
        if group.oom_kills() > 0 {
            return Some(format!(
                "out of memory: a process was killed at the limit of {} MiB",
                self.limits.memory_bytes >> 20
            ));
        }
        if group.pid_limit_hits() > 0 {
            return Some(format!(
                "process limit reached: at most {} processes and threads",
                self.limits.pids
            ));
        }
        None
    }

    /// Kills what is left in it and removes its namespace, groups and lock.
    pub async fn release(mut self) {
        self.released = true;
        if let Some(group) = self.cgroup.take() {
            let _ = tokio::task::spawn_blocking(move || group.remove()).await;
        }
        if let Some(layer) = self.layer.take() {
            let _ = tokio::task::spawn_blocking(move || layer.remove()).await;
        }
        if let Some(ns) = self.netns.take() {
            ns.remove().await;
        }
        for (mount, _) in std::mem::take(&mut self.mounts) {
            mount.release().await;
        }
        let _ = std::fs::remove_file(lock_file(self.index));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (index, group, layer) = (self.index, self.cgroup.take(), self.layer.take());
        let cleanup = move || {
            if let Some(group) = group {
                group.remove();
            }
            if let Some(layer) = layer {
                layer.remove();
            }
            network::remove_blocking(index);
            let _ = std::fs::remove_file(lock_file(index));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(cleanup)),
            Err(_) => cleanup(),
        }
    }
}

fn lock_file(index: u32) -> PathBuf {
    Path::new(SLOTS_DIR).join(index.to_string())
}

/// Makes the folder of build disks (traversable: each site's uid passes through it to
/// its build), removes what a crash left there and checks that disks can be made;
/// returns its real path.
async fn prepare_builds_dir(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let left = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || build_disk::remove_leftovers(&dir)
    })
    .await
    .unwrap_or(0);
    if left > 0 {
        tracing::info!(
            disks = left,
            "removed build disks left by a berth that stopped mid-build"
        );
    }
    build_disk::probe(&dir).await?;
    Ok(dir)
}

/// Removes slots whose owner process is gone; returns how many.
fn reclaim_dead_slots(hierarchy: &cgroup::Hierarchy) -> usize {
    let Ok(entries) = std::fs::read_dir(SLOTS_DIR) else {
        return 0;
    };
    let mut dead = Vec::new();
    let running = |pid: &str| !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A claim's draft (`.claim-<pid>-<n>`) left by a berth that died mid-claim.
        if let Some(pid) = name.strip_prefix(".claim-").and_then(|r| r.split('-').next()) {
            if !running(pid) {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        let Ok(index) = name.parse::<u32>() else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let alive = running(owner.trim());
        if !alive {
            dead.push(index);
        }
    }
    hierarchy.sweep(|name| name.parse::<u32>().is_ok_and(|i| dead.contains(&i)));
    for index in &dead {
        layer::remove_leftover(*index);
        network::remove_blocking(*index);
        let _ = std::fs::remove_file(lock_file(*index));
    }
    dead.len()
}

/// Gives `dir` and everything in it to `uid` (the site's build steps and apps write
/// there), without following symlinks, and closes the folder to every other user.
pub fn hand_over(dir: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fn walk(path: &Path, uid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                walk(&entry?.path(), uid)?;
            }
        }
        Ok(())
    }
    walk(dir, uid)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // The deployment's own folder (root's) must let the uid through to its files.
    match dir.parent() {
        Some(parent) => std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711)),
        None => Ok(()),
    }
}
