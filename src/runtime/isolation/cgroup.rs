//! Control groups that bound what one sandboxed command tree may use: memory (with no
//! swap on top), CPU time and the number of processes, enforced by the kernel. Works on
//! cgroup v2 (one unified tree) and on v1 (one tree per controller). Each group is named
//! after its slot, under `berth/` in every tree, and is removed with its processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";
/// The folder under each tree that holds berth's groups.
const PARENT: &str = "berth";

/// Limits of one group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Memory in bytes (page cache and tmpfs pages included); no swap beyond it.
    pub memory_bytes: u64,
    /// CPU time in cores (1.0 = one core's worth per period).
    pub cpus: f64,
    /// Processes and threads.
    pub pids: u64,
}

/// Which cgroup layout the host has.
#[derive(Clone, Debug)]
pub enum Hierarchy {
    /// One tree (`/sys/fs/cgroup/cgroup.controllers` exists).
    V2,
    /// One tree per controller: memory, cpu and pids.
    V1 {
        /// `/sys/fs/cgroup/memory`.
        memory: PathBuf,
        /// `/sys/fs/cgroup/cpu` (or `cpu,cpuacct`).
        cpu: PathBuf,
        /// `/sys/fs/cgroup/pids`.
        pids: PathBuf,
    },
}

impl Hierarchy {
    /// The host's layout, or what is missing.
    pub fn detect() -> Result<Hierarchy, String> {
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").is_file() {
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            for needed in ["memory", "cpu", "pids"] {
                if !controllers.split_whitespace().any(|c| c == needed) {
                    return Err(format!("the cgroup v2 controller '{needed}' is not available"));
                }
            }
            return Ok(Hierarchy::V2);
        }
        let find = |names: &[&str], file: &str| {
            names
                .iter()
                .map(|n| root.join(n))
                .find(|p| p.join(file).is_file())
                .ok_or_else(|| format!("no cgroup hierarchy with {file} under {ROOT}"))
        };
        // A v1 tree's root has no limit files of its own (`pids.max`, say): look for the
        // controller's folder.
        Ok(Hierarchy::V1 {
            memory: find(&["memory"], "memory.limit_in_bytes")?,
            cpu: find(&["cpu", "cpu,cpuacct", "cpuacct,cpu"], "cpu.shares")?,
            pids: find(&["pids"], "pids.current").or_else(|_| find(&["pids"], "cgroup.procs"))?,
        })
    }

    /// Creates berth's parent groups (and, on v2, delegates the controllers to them).
    pub fn prepare(&self) -> Result<(), String> {
        match self {
            Hierarchy::V2 => {
                let root = Path::new(ROOT);
                write(&root.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
                let parent = root.join(PARENT);
                mkdir(&parent)?;
                write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids")
            }
            Hierarchy::V1 { memory, cpu, pids } => {
                for tree in [memory, cpu, pids] {
                    mkdir(&tree.join(PARENT))?;
                }
                // Children inherit the hierarchy flag on v1 only when it is set here.
                let _ = std::fs::write(memory.join(PARENT).join("memory.use_hierarchy"), "1");
                Ok(())
            }
        }
    }

    /// Creates group `name` with `limits`.
    pub fn create(&self, name: &str, limits: Limits) -> Result<Cgroup, String> {
        let quota = (limits.cpus * 100_000.0).round().max(1_000.0) as u64;
        let group = match self {
            Hierarchy::V2 => {
                let dir = Path::new(ROOT).join(PARENT).join(name);
                mkdir(&dir)?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                write(&dir.join("cpu.max"), &format!("{quota} 100000"))?;
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                Cgroup { dirs: vec![dir] }
            }
            Hierarchy::V1 { memory, cpu, pids } => {
                let dirs: Vec<PathBuf> = [memory, cpu, pids].iter().map(|t| t.join(PARENT).join(name)).collect();
                let group = Cgroup { dirs };
                for dir in &group.dirs {
                    mkdir(dir)?;
                }
                let (mem, cpu_dir, pids_dir) = (&group.dirs[0], &group.dirs[1], &group.dirs[2]);
                write(&mem.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
                // Without swap accounting this file is absent, and there is no swap to bound.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                write(&cpu_dir.join("cpu.cfs_period_us"), "100000")?;
                write(&cpu_dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(&pids_dir.join("pids.max"), &limits.pids.to_string())?;
                group
            }
        };
        Ok(group)
    }

    /// Removes groups under berth's parent whose name `stale` accepts (leftovers of a
    /// crashed run), killing what is left in them.
    pub fn sweep(&self, stale: impl Fn(&str) -> bool) {
        let trees: Vec<PathBuf> = match self {
            Hierarchy::V2 => vec![Path::new(ROOT).join(PARENT)],
            Hierarchy::V1 { memory, cpu, pids } => [memory, cpu, pids].iter().map(|t| t.join(PARENT)).collect(),
        };
        for tree in trees {
            let Ok(entries) = std::fs::read_dir(&tree) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && stale(&name) {
                    Cgroup {
                        dirs: vec![entry.path()],
                    }
                    .remove();
                }
            }
        }
    }
}

/// One group (a folder per v1 tree, or one on v2).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The `cgroup.procs` files a process writes its pid to in order to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How often the kernel's OOM killer killed a process of the group.
    pub fn oom_kills(&self) -> u64 {
        self.dirs
            .iter()
            .filter_map(|d| {
                ["memory.events", "memory.oom_control"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
            })
            .map(|text| counter(&text, "oom_kill"))
            .sum()
    }

    /// How often a fork was refused because the group was at its process limit.
    pub fn pid_limit_hits(&self) -> u64 {
        self.dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("pids.events")).ok())
            .map(|text| counter(&text, "max"))
            .sum()
    }

    /// Memory the group uses now, in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.dirs.iter().find_map(|d| {
            ["memory.current", "memory.usage_in_bytes"]
                .iter()
                .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
                .and_then(|s| s.trim().parse().ok())
        })
    }

    /// Kills every process left in the group and removes it (best effort, bounded).
    pub fn remove(&self) {
        for dir in &self.dirs {
            if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
                for _ in 0..50 {
                    let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    let pids: Vec<i32> = pids.lines().filter_map(|l| l.trim().parse().ok()).collect();
                    if pids.is_empty() {
                        break;
                    }
                    for pid in pids {
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // A group empties a moment after its last process is reaped.
            for _ in 0..100 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

/// The value of `key N` in a flat keyed cgroup file.
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn mkdir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create the control group {}: {e}", dir.display())),
    }
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("cannot write '{value}' to {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn counters_are_read_from_flat_keyed_files() {
        assert_eq!(counter("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"), 3);
        assert_eq!(counter("low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n", "oom_kill"), 1);
        assert_eq!(counter("max 12\n", "max"), 12);
        assert_eq!(counter("", "max"), 0);
    }
}
