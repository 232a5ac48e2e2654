//! How untrusted commands (build steps and the apps themselves) are started.
//!
//! This module owns the isolation policy. With bubblewrap (`bwrap`) the
//! command sees a minimal, read-only system (`/usr`, the merged-/usr
//! symlinks, `/opt`, a short allow-list of `/etc` files), fresh `/proc`,
//! `/dev` and private `/tmp`, and exactly one writable host folder: the app's
//! own folder, mounted at `/app`. (The sandbox's `/dev` is a private tmpfs
//! too, so `/dev/shm` works; nothing written there reaches the host.) berth's data directory, other apps, `/root`,
//! `/home` and everything else of the host are simply not there.
//!
//! All namespaces are unshared *except the network*: the network a command
//! gets is the one it is started in ([`SandboxSpec::network`] = `false`
//! gives it none at all). With a [`Confinement`] (berth runs as root) the
//! command is first moved into its control groups, then into a network
//! namespace of its own, then dropped to an unprivileged host uid of its
//! site's own, and only then is bwrap started: host permissions apply to
//! everything it does, and the kernel enforces its memory, CPU and process
//! limits.
//!
//! Environment variables (which hold secrets) never appear in any argv:
//! bwrap reads them from its standard input (`--args 0`), and nothing that
//! runs before it as root sees them.
//!
//! Without bwrap the command runs directly in the app folder with a cleared
//! environment: that is a convenience for development machines, not
//! isolation, and [`Sandbox::detect`] says so loudly.
//!
//! Either way the child is made its own process-group leader so the whole
//! tree can be killed ([`crate::step::kill_process_group`]), and it is
//! killed when the returned handle is dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the app folder is mounted inside the sandbox.
pub const SANDBOX_APP_DIR: &str = "/app";

/// `PATH` inside the sandbox: the app's own tools first, so start commands
/// like `next start` or `gunicorn app:app` work without `npm start` or an
/// activated venv, then the runtimes berth provisioned into the app folder
/// (bun, deno: see `detect::tools`).
pub const SANDBOX_PATH: &str =
    "/app/node_modules/.bin:/app/.venv/bin:/app/.cache/tools/bin:/usr/local/bin:/usr/bin:/bin";

/// Top-level host folders bound read-only when they exist. On merged-/usr
/// systems `/bin`, `/lib`, ... are symlinks and are recreated as symlinks.
const SYSTEM_DIRS: [&str; 8] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt"];

/// The parts of `/etc` programs need to run and to reach package registries
/// (name resolution, TLS roots, users for `getpwuid`, dynamic linker,
/// time zone, pip/npm global config). Notably *not* `/etc/shadow`, ssh host
/// keys or anything else that could hold secrets.
const ETC_ALLOW: [&str; 26] = [
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/debian_version",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pip.conf",
    "/etc/pki",
    "/etc/protocols",
    "/etc/python3",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
    "/etc/timezone",
    "/etc/npmrc",
    "/etc/xdg/pip",
];

/// User and group the sandboxed command runs as when berth itself runs as
/// root (the usual "nobody"). Inside the user namespace it maps back to
/// berth's own uid, so it can write the app folder, but it holds no
/// capabilities and tools stop warning about running as root.
const SANDBOX_UID_WHEN_ROOT: u32 = 65534;

/// Cheap per-process resource limits, applied by exec'ing through util-linux
/// `prlimit` when it is installed (no `unsafe` `pre_exec` needed, and
/// `prlimit` execs the command, so it adds no process to the tree).
///
/// Deliberately absent: `RLIMIT_NPROC` counts *all* processes of the real
/// uid on the host (so it would break berth itself), and `RLIMIT_AS` breaks
/// V8 and the JVM, which reserve huge virtual ranges. Memory and process
/// counts belong in a cgroup, which is a later step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Open files (soft and hard); lowered to the current hard limit if
    /// that is smaller.
    pub nofile: Option<u64>,
    /// Core dump size; `Some(0)` keeps crashing apps from filling the disk.
    pub core_bytes: Option<u64>,
    /// Largest file the command may write.
    pub file_size_bytes: Option<u64>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            nofile: Some(65_536),
            core_bytes: Some(0),
            file_size_bytes: None,
        }
    }
}

impl ResourceLimits {
    /// No limits at all (no `prlimit` wrapper).
    pub fn none() -> Self {
        ResourceLimits {
            nofile: None,
            core_bytes: None,
            file_size_bytes: None,
        }
    }

    fn prlimit_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.nofile {
            let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, hard)| hard)
                .unwrap_or(u64::MAX);
            let n = n.min(hard);
            args.push(format!("--nofile={n}:{n}"));
        }
        if let Some(n) = self.core_bytes {
            args.push(format!("--core={n}:{n}"));
        }
        if let Some(n) = self.file_size_bytes {
            args.push(format!("--fsize={n}:{n}"));
        }
        args
    }
}

/// What confines a command beyond bubblewrap's own namespaces (needs berth to
/// run as root): a host user of its own, a network namespace and control
/// groups, set up by the caller before the command starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Host uid the command runs as: unprivileged and never shared between sites.
    pub uid: u32,
    /// Host gid the command runs as.
    pub gid: u32,
    /// Network namespace to run in (a path such as `/run/netns/NAME`); `None`
    /// keeps the namespace berth runs in.
    pub netns: Option<PathBuf>,
    /// `cgroup.procs` files the command joins before anything else runs (one
    /// per cgroup v1 hierarchy, or one on a v2 system), so every process it
    /// forks is counted against their limits.
    pub cgroup_procs: Vec<PathBuf>,
    /// Size of the private `/tmp` in bytes (a tmpfs, whose pages count
    /// against the memory limit too).
    pub tmp_bytes: Option<u64>,
    /// Host folders bound read-write into the sandbox, each at its absolute path
    /// inside (e.g. a resource's disk at `/data/NAME`); the command's uid must be
    /// able to reach each.
    pub binds: Vec<(PathBuf, PathBuf)>,
}

/// Moves the shell into each `cgroup.procs` file given before `--`, then execs
/// the rest. It runs as root on the host with an empty environment.
const JOIN_CGROUPS: &str = r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#;

/// What to run and with which access.
#[derive(Clone, Debug)]
pub struct SandboxSpec<'a> {
    /// The app's folder: bound read-write at `/app` (the only writable place
    /// besides a private `/tmp`) and used as the working directory.
    pub app_dir: &'a Path,
    /// The command, e.g. `["sh", "-c", cmd]`. Must not be empty.
    pub argv: Vec<String>,
    /// Environment on top of `HOME` and `PATH` (which it may override);
    /// nothing of berth's own environment is passed.
    pub env: Vec<(String, String)>,
    /// Keep the network namespace the command is started in (the host's, or
    /// the one of its [`Confinement`]). `false` gives the command no network
    /// at all (bwrap only).
    pub network: bool,
}

/// The configured way of running untrusted commands.
#[derive(Clone, Debug)]
pub struct Sandbox {
    bwrap: Option<PathBuf>,
    prlimit: Option<PathBuf>,
    limits: ResourceLimits,
    /// Drop to [`SANDBOX_UID_WHEN_ROOT`] and all capabilities (berth is root).
    drop_root: bool,
    /// `nsenter` and `setpriv` (util-linux), needed to apply a confinement.
    confine_tools: Option<(PathBuf, PathBuf)>,
    /// Applied to every command of this sandbox value ([`Sandbox::confined`]).
    confinement: Option<Confinement>,
}

impl Sandbox {
    /// Finds `bwrap` on `PATH` and checks that it really works here (user
    /// namespaces may be disabled) by running a sandboxed `true` once.
    ///
    /// Falls back to [`Sandbox::unsandboxed`] with a `tracing::warn!` when
    /// bwrap is missing or broken.
    pub fn detect() -> Sandbox {
        let mut sandbox = Sandbox::unsandboxed();
        let Some(bwrap) = find_on_path("bwrap") else {
            tracing::warn!("bubblewrap (bwrap) not found: apps run without a sandbox; install the bubblewrap package");
            return sandbox;
        };
        sandbox.bwrap = Some(bwrap.clone());
        match sandbox.probe() {
            Ok(elapsed) => {
                tracing::debug!(
                    bwrap = %bwrap.display(),
                    startup_ms = elapsed.as_secs_f64() * 1000.0,
                    "bubblewrap sandbox works"
                );
                sandbox
            }
            Err(why) => {
                tracing::warn!(
                    bwrap = %bwrap.display(),
                    "bubblewrap (bwrap) is installed but does not work here ({why}): apps run without a sandbox; check that unprivileged user namespaces are enabled"
                );
                sandbox.bwrap = None;
                sandbox
            }
        }
    }

    /// Runs commands directly (development only): cleared environment,
    /// working directory = app folder, own process group, no isolation.
    pub fn unsandboxed() -> Sandbox {
        Sandbox {
            bwrap: None,
            prlimit: find_on_path("prlimit"),
            limits: ResourceLimits::default(),
            drop_root: nix::unistd::geteuid().is_root(),
            confine_tools: find_on_path("nsenter").zip(find_on_path("setpriv")),
            confinement: None,
        }
    }

    /// Uses the given `bwrap` binary without probing it (tests, packagers
    /// that know where it is). Prefer [`Sandbox::detect`].
    pub fn with_bwrap(bwrap: PathBuf) -> Sandbox {
        Sandbox {
            bwrap: Some(bwrap),
            ..Sandbox::unsandboxed()
        }
    }

    /// Replaces the resource limits applied to every command.
    pub fn with_limits(mut self, limits: ResourceLimits) -> Sandbox {
        self.limits = limits;
        self
    }

    /// True if commands run inside bubblewrap.
    pub fn is_sandboxed(&self) -> bool {
        self.bwrap.is_some()
    }

    /// Whether [`Sandbox::confined`] can take effect here: bwrap works, berth is
    /// root (to switch users, namespaces and control groups) and util-linux's
    /// `nsenter` and `setpriv` are installed. `Err` says what is missing.
    pub fn can_confine(&self) -> Result<(), String> {
        if self.bwrap.is_none() {
            return Err("bubblewrap (bwrap) is not working; install the bubblewrap package".into());
        }
        if !self.drop_root {
            return Err(
                "berth does not run as root, so apps cannot get host users, network namespaces and limits of their own"
                    .into(),
            );
        }
        if self.confine_tools.is_none() {
            return Err("nsenter and setpriv (util-linux) are not installed".into());
        }
        Ok(())
    }

    /// This sandbox with every command confined as `confinement` says. Without
    /// bwrap or root (see [`Sandbox::can_confine`]) the confinement is ignored.
    pub fn confined(&self, confinement: Confinement) -> Sandbox {
        Sandbox {
            confinement: Some(confinement),
            ..self.clone()
        }
    }

    /// The confinement commands of this value get, when it takes effect.
    fn active_confinement(&self) -> Option<(&Confinement, &Path, &Path)> {
        let c = self.confinement.as_ref()?;
        let (nsenter, setpriv) = self.confine_tools.as_ref()?;
        (self.bwrap.is_some() && self.drop_root).then_some((c, nsenter.as_path(), setpriv.as_path()))
    }

    /// The app folder as the command sees it (`/app` inside bwrap, the real
    /// folder otherwise). Useful to build env values such as paths.
    pub fn app_dir_inside(&self, app_dir: &Path) -> PathBuf {
        if self.is_sandboxed() {
            PathBuf::from(SANDBOX_APP_DIR)
        } else {
            app_dir.to_path_buf()
        }
    }

    /// Builds the command for `spec`. The caller sets stdout/stderr and
    /// spawns it with [`SandboxCommand::spawn`], which hands the environment
    /// to bwrap. Already set: stdin = the environment pipe (bwrap) or null,
    /// own process group (`process_group(0)`, so the child's pid is its group
    /// id), and `kill_on_drop(true)`.
    pub fn command(&self, spec: &SandboxSpec<'_>) -> SandboxCommand {
        let (std_cmd, env_args) = match &self.bwrap {
            Some(bwrap) => {
                let (cmd, args) = self.bwrap_command(bwrap, spec);
                (cmd, Some(args))
            }
            None => (self.direct_command(spec), None),
        };
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.stdin(if env_args.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .kill_on_drop(true);
        SandboxCommand { cmd, env_args }
    }

    /// `prlimit ... --` prefix (empty if there is nothing to apply or no
    /// prlimit binary the command can see).
    fn limit_prefix(&self, inside_sandbox: bool) -> Vec<String> {
        let Some(prlimit) = &self.prlimit else {
            return Vec::new();
        };
        // Inside bwrap only /usr, /bin, ... exist; a prlimit elsewhere on the
        // host would not be found.
        if inside_sandbox && !SYSTEM_DIRS.iter().any(|d| prlimit.starts_with(d)) {
            return Vec::new();
        }
        let args = self.limits.prlimit_args();
        if args.is_empty() {
            return Vec::new();
        }
        let mut out = vec![prlimit.to_string_lossy().into_owned()];
        out.extend(args);
        out.push("--".into());
        out
    }

    fn direct_command(&self, spec: &SandboxSpec<'_>) -> std::process::Command {
        let mut argv = self.limit_prefix(false);
        argv.extend(spec.argv.iter().cloned());
        let mut cmd = std::process::Command::new(argv.first().map(String::as_str).unwrap_or(""));
        cmd.args(argv.iter().skip(1));
        cmd.current_dir(spec.app_dir);
        cmd.env_clear();
        let app = spec.app_dir.to_string_lossy();
        cmd.env("HOME", spec.app_dir);
        cmd.env("PATH", SANDBOX_PATH.replace(SANDBOX_APP_DIR, app.trim_end_matches('/')));
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The bwrap command line, and the NUL-separated `--setenv` arguments it
    /// reads from its standard input (`--args 0`) so no value is in an argv.
    fn bwrap_command(&self, bwrap: &Path, spec: &SandboxSpec<'_>) -> (std::process::Command, Vec<u8>) {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some((c, nsenter, setpriv)) = self.active_confinement() {
            argv.extend(["/bin/sh", "-c", JOIN_CGROUPS, "berth-sandbox"].map(OsString::from));
            argv.extend(c.cgroup_procs.iter().map(|p| p.as_os_str().to_os_string()));
            argv.push("--".into());
            if let Some(netns) = &c.netns {
                argv.push(nsenter.into());
                let mut flag = OsString::from("--net=");
                flag.push(netns);
                argv.push(flag);
                argv.push("--".into());
            }
            argv.push(setpriv.into());
            argv.push(format!("--reuid={}", c.uid).into());
            argv.push(format!("--regid={}", c.gid).into());
            argv.extend(["--clear-groups", "--"].map(OsString::from));
        }
        argv.push(bwrap.into());
        argv.extend(self.bwrap_args(spec.app_dir, spec.network));
        // After `--clearenv` (options apply in order).
        argv.extend(["--args", "0"].map(OsString::from));
        argv.push("--".into());
        argv.extend(self.limit_prefix(true).into_iter().map(OsString::from));
        argv.extend(spec.argv.iter().map(OsString::from));

        let mut env_args = Vec::new();
        let mut setenv = |k: &str, v: &str| {
            // A NUL cannot be passed to a process; such a variable is left out.
            if k.contains('\0') || v.contains('\0') {
                return;
            }
            for part in ["--setenv", k, v] {
                env_args.extend_from_slice(part.as_bytes());
                env_args.push(0);
            }
        };
        setenv("HOME", SANDBOX_APP_DIR);
        setenv("PATH", SANDBOX_PATH);
        for (k, v) in &spec.env {
            setenv(k, v);
        }

        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        // Nothing of berth's environment reaches bwrap or what runs before it
        // as root (no LD_PRELOAD and friends); bwrap clears its own for the child.
        cmd.env_clear();
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd.current_dir("/");
        (cmd, env_args)
    }

    /// Everything before the environment and the command.
    fn bwrap_args(&self, app_dir: &Path, network: bool) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        push(&["--symlink", &target.to_string_lossy(), dir]);
                    }
                }
                Ok(m) if m.is_dir() => push(&["--ro-bind", dir, dir]),
                _ => {}
            }
        }
        for path in ETC_ALLOW {
            if Path::new(path).exists() {
                push(&["--ro-bind", path, path]);
            }
        }
        push(&["--proc", "/proc", "--dev", "/dev"]);
        if let Some(bytes) = self.active_confinement().and_then(|(c, _, _)| c.tmp_bytes) {
            push(&["--size", &bytes.to_string()]);
        }
        push(&["--tmpfs", "/tmp"]);
        a.push("--bind".into());
        a.push(app_dir.as_os_str().to_os_string());
        a.push(SANDBOX_APP_DIR.into());
        for (host, inside) in self.active_confinement().map_or(&[][..], |(c, _, _)| &c.binds[..]) {
            a.push("--bind".into());
            a.push(host.as_os_str().to_os_string());
            a.push(inside.as_os_str().to_os_string());
        }
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        // bwrap builds the root as a writable tmpfs; freeze it so /app and
        // /tmp (separate mounts, unaffected) are the only writable places.
        push(&["--remount-ro", "/"]);
        push(&["--chdir", SANDBOX_APP_DIR, "--unshare-all"]);
        if network {
            push(&["--share-net"]);
        }
        push(&["--die-with-parent", "--new-session", "--hostname", "berth"]);
        if self.drop_root {
            let id = SANDBOX_UID_WHEN_ROOT.to_string();
            push(&["--uid", &id, "--gid", &id, "--cap-drop", "ALL"]);
        }
        push(&["--clearenv"]);
        a
    }

    /// Runs `true` in a throw-away sandbox; returns how long it took.
    fn probe(&self) -> Result<Duration, String> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("berth-bwrap-probe-{}-{stamp}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let spec = SandboxSpec {
            app_dir: &dir,
            argv: vec!["true".into()],
            env: Vec::new(),
            network: true,
        };
        let bwrap = self.bwrap.as_deref().ok_or("no bwrap")?;
        let (mut cmd, env_args) = self.bwrap_command(bwrap, &spec);
        let started = Instant::now();
        let result = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                if let Some(mut stdin) = child.stdin.take() {
                    std::io::Write::write_all(&mut stdin, &env_args)?;
                }
                child.wait_with_output()
            });
        let elapsed = started.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Ok(out) if out.status.success() => Ok(elapsed),
            Ok(out) => Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A sandboxed command ready to spawn ([`Sandbox::command`]): a
/// [`tokio::process::Command`] plus the environment it hands to bwrap through
/// a pipe. Spawn it with [`SandboxCommand::spawn`] or [`SandboxCommand::output`],
/// never through the inner command, or the environment is not passed.
pub struct SandboxCommand {
    cmd: tokio::process::Command,
    env_args: Option<Vec<u8>>,
}

impl SandboxCommand {
    /// Where the command's standard output goes.
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.cmd.stdout(cfg);
        self
    }

    /// Where the command's standard error goes.
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.cmd.stderr(cfg);
        self
    }

    /// Starts the command and writes its environment to bwrap's standard
    /// input in the background (bwrap reads it to the end before it starts
    /// anything; the command then finds its standard input at end of file).
    pub fn spawn(&mut self) -> std::io::Result<tokio::process::Child> {
        let mut child = self.cmd.spawn()?;
        if let (Some(mut stdin), Some(args)) = (child.stdin.take(), self.env_args.clone()) {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let _ = stdin.write_all(&args).await;
            });
        }
        Ok(child)
    }

    /// Starts the command and collects its exit status and output.
    pub async fn output(&mut self) -> std::io::Result<std::process::Output> {
        let child = self.spawn()?;
        child.wait_with_output().await
    }
}

/// The argv that runs a shell command string: `sh -c` with a `TERM` trap.
///
/// Use it for start commands as well as build steps. Without the trap, a
/// `SIGTERM` to the process group kills the wrapping `sh` at once; under
/// bwrap `sh` is the sandbox's main process, so its death tears down the
/// pid namespace and SIGKILLs the app in the middle of its graceful
/// shutdown. With `trap 'exit 143' TERM` the shell waits for its foreground
/// command to finish (POSIX defers traps until then) and exits 143 instead
/// of running further commands. Traps are reset on exec, so the command
/// itself still sees `SIGTERM` with its default disposition.
pub fn shell_argv(command: &str) -> Vec<String> {
    vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("trap 'exit 143' TERM; {command}"),
    ]
}

/// First executable file called `name` on `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests;
