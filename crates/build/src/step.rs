//! Running one build step: a shell command in the sandbox with streamed log
//! lines, a timeout, cancellation, and no processes left behind.
//!
//! This module owns the lifecycle of a step's process tree. The child is
//! started as its own process-group leader (see [`crate::sandbox`]); when a
//! step times out or is cancelled the whole group gets `SIGTERM`, a short
//! grace period, then `SIGKILL`. When a step *finishes*, anything it left
//! running in its group (a forgotten `&`, a dev server started by a build
//! script) is killed too, so the next step starts from a quiet machine.
//!
//! With bubblewrap the group's leader is the outer `bwrap` and the sandboxed
//! processes live in a session of their own (`--new-session`), so the tree
//! is walked through `/proc`: `SIGTERM` goes to the sandboxed processes
//! (letting apps shut down cleanly) and `SIGKILL` to every group in the
//! tree. Killing the outer `bwrap` also makes `--die-with-parent` SIGKILL the
//! whole sandbox pid namespace, so nothing survives inside it.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detect::BuildStep;
use crate::sandbox::{Sandbox, SandboxSpec, shell_argv};

/// Longest log line delivered; the rest of a longer line is dropped and a
/// marker says how much.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Time between `SIGTERM` and `SIGKILL` when a process tree is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for the log pipes to close after the step's processes
/// are gone (a process that escaped the group could hold them open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A step that ran to completion with exit code 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutcome {
    /// The exit code (always `Some(0)` for a successful step; kept as an
    /// option for symmetry with [`StepError::Failed`]).
    pub exit_code: Option<i32>,
    /// Wall-clock time from spawn to exit.
    pub duration: Duration,
}

/// Why a step did not succeed. Messages are written for the app's owner.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The command exited non-zero (`code`) or was killed by a signal
    /// (`None`).
    #[error("{name} step {}", describe_exit(*.code))]
    Failed {
        /// The step's name.
        name: String,
        /// Exit code, `None` if killed by a signal.
        code: Option<i32>,
    },
    /// The step ran longer than its timeout; its process tree was killed.
    #[error("{name} step timed out after {}", fmt_duration(*.after))]
    TimedOut {
        /// The step's name.
        name: String,
        /// The timeout that was exceeded.
        after: Duration,
    },
    /// The step was cancelled; its process tree was killed.
    #[error("{name} step was cancelled")]
    Cancelled {
        /// The step's name.
        name: String,
    },
    /// The command could not be started (or waited for).
    #[error("could not start the {name} step: {source}")]
    Spawn {
        /// The step's name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited with code {c}"),
        None => "was killed by a signal".to_string(),
    }
}

/// "10 s", "1.5 s", "250 ms".
fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Runs `step.command` with `sh -c` (see [`shell_argv`]) in `app_dir`
/// through `sandbox` (network shared: installs download dependencies).
///
/// `on_line` receives every output line as it is produced, stdout and stderr
/// interleaved, without the trailing newline (and `\r`), invalid UTF-8
/// replaced, lines over [`MAX_LINE_BYTES`] truncated with a marker.
///
/// On timeout or cancellation the whole process tree is stopped (SIGTERM,
/// [`KILL_GRACE`], SIGKILL) before this returns; after a normal exit any
/// process the step left running in its group is killed as well.
pub async fn run_step(
    sandbox: &Sandbox,
    app_dir: &Path,
    step: &BuildStep,
    env: &[(String, String)],
    timeout: Duration,
    cancel: CancellationToken,
    on_line: &mut (dyn FnMut(LogStream, String) + Send),
) -> Result<StepOutcome, StepError> {
    let name = step.name.clone();
    let spec = SandboxSpec {
        app_dir,
        argv: shell_argv(&step.command),
        env: env.to_vec(),
        network: true,
    };
    let mut cmd = sandbox.command(&spec);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| StepError::Spawn {
        name: name.clone(),
        source,
    })?;
    let pid = child.id();

    // Readers run as tasks so a slow `on_line` never blocks the pipes of the
    // other stream; the bounded channel gives backpressure instead.
    let (tx, mut rx) = mpsc::channel::<(LogStream, String)>(256);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(out, LogStream::Stdout, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(err, LogStream::Stderr, tx.clone())));
    }
    drop(tx);

    enum End {
        Exited(ExitStatus),
        WaitFailed(std::io::Error),
        TimedOut,
        Cancelled,
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let end = loop {
        tokio::select! {
            // Biased so a flood of output cannot starve the timeout.
            biased;
            _ = cancel.cancelled() => break End::Cancelled,
            _ = &mut deadline => break End::TimedOut,
            status = child.wait() => break match status {
                Ok(s) => End::Exited(s),
                Err(e) => End::WaitFailed(e),
            },
            Some((stream, line)) = rx.recv() => on_line(stream, line),
        }
    };

    match end {
        End::Exited(_) | End::WaitFailed(_) => {
            // The leader is done; whatever it left in its group goes too.
            if let Some(pid) = pid {
                signal_group(pid, Signal::SIGKILL);
            }
        }
        End::TimedOut | End::Cancelled => terminate_child_tree(&mut child, KILL_GRACE).await,
    }
    let duration = started.elapsed();

    // Deliver what was written before the end, then give up on pipes that a
    // process outside the group might still hold open.
    let drain = async {
        while let Some((stream, line)) = rx.recv().await {
            on_line(stream, line);
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!(step = %name, "log pipes still open after the step ended; dropping further output");
    }
    for r in readers {
        r.abort();
    }

    match end {
        End::Exited(status) if status.success() => Ok(StepOutcome {
            exit_code: status.code(),
            duration,
        }),
        End::Exited(status) => Err(StepError::Failed {
            name,
            code: status.code(),
        }),
        End::WaitFailed(source) => Err(StepError::Spawn { name, source }),
        End::TimedOut => Err(StepError::TimedOut { name, after: timeout }),
        End::Cancelled => Err(StepError::Cancelled { name }),
    }
}

/// Stops a child started by [`Sandbox::command`] and its whole process
/// tree: `SIGTERM`, up to `grace` for the child and its descendants to
/// exit, then `SIGKILL`;
/// returns once the child is reaped and the tree's processes are gone (so a
/// restarted app can bind the same port at once).
///
/// The tree is found through `/proc`, so descendants that moved to their own
/// process group or session are included. Under bwrap the `SIGTERM` goes to
/// the sandboxed processes, not to the outer `bwrap`: killing that one would
/// make `--die-with-parent` SIGKILL the app before it could shut down
/// cleanly. This is the async counterpart of [`kill_process_group`] for
/// callers that hold the `Child` (it never blocks a runtime thread).
pub async fn terminate_child_tree(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        // Already reaped: nothing of ours is left to address.
        return;
    };
    let before = ProcessTree::scan(pid);
    for group in before.term_groups() {
        signal_group(group, Signal::SIGTERM);
    }
    // Wait for the whole tree, not just the leader: an app that outlives
    // its wrapper is still shutting down cleanly.
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let leader_done = !matches!(child.try_wait(), Ok(None));
        if leader_done && !before.any_alive() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Also after a clean exit: members may have ignored SIGTERM.
    let mut groups = before.groups.clone();
    groups.extend(ProcessTree::scan(pid).groups);
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        signal_group(group, Signal::SIGKILL);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while before.any_alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kills the process tree led by `pid` (a child started by
/// [`Sandbox::command`] leads a process group with its own pid): `SIGTERM`,
/// up to [`KILL_GRACE`] for it to disappear, then `SIGKILL` to every process
/// group in the tree. Like [`terminate_child_tree`], descendants in other
/// groups are included and bwrap's outer process is spared the `SIGTERM`.
///
/// Blocking (it sleeps during the grace period): call it from
/// `spawn_blocking` or a plain thread, or use [`terminate_child_tree`] in
/// async code. If the leader is an unreaped child of the caller its zombie
/// counts as alive, so the full grace elapses before `SIGKILL`.
/// `pid` 0 and 1 are ignored (they would mean "my own group" and init).
pub fn kill_process_group(pid: u32) {
    if pid <= 1 {
        return;
    }
    let tree = ProcessTree::scan(pid);
    let mut any = false;
    for group in tree.term_groups() {
        any |= signal_group(group, Signal::SIGTERM);
    }
    if !any && !group_exists(pid) {
        return;
    }
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        if !tree.groups.iter().any(|g| group_exists(*g)) {
            return;
        }
    }
    let mut groups = tree.groups.clone();
    groups.extend(ProcessTree::scan(pid).groups);
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        signal_group(group, Signal::SIGKILL);
    }
}

/// A snapshot of a process and its descendants, read from `/proc`.
#[derive(Debug, Default)]
struct ProcessTree {
    leader: u32,
    leader_is_bwrap: bool,
    /// Process groups of the leader and all descendants (never our own).
    groups: Vec<u32>,
    /// Descendants' pids (not the leader's, which the caller reaps).
    descendants: Vec<u32>,
}

impl ProcessTree {
    fn scan(leader: u32) -> ProcessTree {
        let procs = read_proc_table();
        let own_group = nix::unistd::getpgrp().as_raw() as u32;
        let mut tree = ProcessTree {
            leader,
            leader_is_bwrap: std::fs::read_to_string(format!("/proc/{leader}/comm"))
                .map(|c| c.trim() == "bwrap")
                .unwrap_or(false),
            ..ProcessTree::default()
        };
        let mut queue = vec![leader];
        let mut seen = vec![leader];
        // The leader's group even if the leader is already gone: stragglers
        // may still be in it.
        tree.groups.push(leader);
        while let Some(parent) = queue.pop() {
            for p in procs.iter().filter(|p| p.ppid == parent) {
                if seen.contains(&p.pid) {
                    continue;
                }
                seen.push(p.pid);
                queue.push(p.pid);
                tree.descendants.push(p.pid);
                if !tree.groups.contains(&p.pgid) {
                    tree.groups.push(p.pgid);
                }
            }
        }
        tree.groups.retain(|g| *g > 1 && *g != own_group);
        tree
    }

    /// Groups that get SIGTERM: all of them, except that an outer bwrap is
    /// left alone while the sandbox has its own session (it exits by itself
    /// once the sandboxed processes have).
    fn term_groups(&self) -> Vec<u32> {
        if self.leader_is_bwrap && self.groups.len() > 1 {
            self.groups.iter().copied().filter(|g| *g != self.leader).collect()
        } else {
            self.groups.clone()
        }
    }

    fn any_alive(&self) -> bool {
        self.descendants.iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|p| p.state != 'Z')
        })
    }
}

#[derive(Debug)]
struct ProcStat {
    pid: u32,
    ppid: u32,
    pgid: u32,
    state: char,
    /// User plus system CPU time, in clock ticks.
    cpu_ticks: u64,
    /// Resident pages.
    rss_pages: u64,
}

/// CPU time and resident memory of a process tree, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// User plus system CPU time, in clock ticks (`sysconf(_SC_CLK_TCK)` per second).
    pub cpu_ticks: u64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
}

/// CPU time and resident memory of the process `leader` and all its descendants, read
/// from `/proc`; `None` when the leader is gone.
pub fn tree_usage(leader: u32) -> Option<TreeUsage> {
    let procs = read_proc_table();
    procs.iter().find(|p| p.pid == leader)?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let mut usage = TreeUsage::default();
    let mut queue = vec![leader];
    let mut seen = vec![leader];
    while let Some(pid) = queue.pop() {
        for p in &procs {
            if p.pid == pid {
                usage.cpu_ticks += p.cpu_ticks;
                usage.rss_bytes += p.rss_pages * page;
            }
            if p.ppid == pid && !seen.contains(&p.pid) {
                seen.push(p.pid);
                queue.push(p.pid);
            }
        }
    }
    Some(usage)
}

/// The process `leader` and all its descendants, read from `/proc` (empty when the
/// leader is gone).
pub fn tree_pids(leader: u32) -> Vec<u32> {
    let procs = read_proc_table();
    if !procs.iter().any(|p| p.pid == leader) {
        return Vec::new();
    }
    let mut tree = vec![leader];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        next += 1;
        for p in &procs {
            if p.ppid == pid && !tree.contains(&p.pid) {
                tree.push(p.pid);
            }
        }
    }
    tree
}

/// Clock ticks per second of [`TreeUsage::cpu_ticks`].
pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64
}

fn read_proc_table() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s))
        .collect()
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and
/// parentheses, so fields are read after the *last* ')'.
fn parse_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let mut rest = s.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    // Fields after pgid: session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    // stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss.
    let rest: Vec<&str> = rest.collect();
    let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(ProcStat {
        pid,
        ppid,
        pgid,
        state,
        cpu_ticks: num(8) + num(9),
        rss_pages: num(18),
    })
}

/// Sends `signal` to process group `pid`; false if there is no such group.
fn signal_group(pid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(e) => {
            tracing::warn!(pgid = raw, %signal, error = %e, "could not signal process group");
            false
        }
    }
}

fn group_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    raw > 1 && killpg(Pid::from_raw(raw), None).is_ok()
}

/// Splits a pipe into lines and sends them to `tx` as they complete.
async fn read_lines<R: AsyncRead + Unpin>(pipe: R, stream: LogStream, tx: mpsc::Sender<(LogStream, String)>) {
    let mut reader = BufReader::with_capacity(16 * 1024, pipe);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut dropped: usize = 0;
    // A read error ends the stream like EOF; what was collected is kept.
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            // EOF: a last line without a newline still counts.
            if !line.is_empty() || dropped > 0 {
                let _ = tx.send((stream, finish_line(&line, dropped))).await;
            }
            return;
        }
        let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        // Keep at most MAX_LINE_BYTES; count the rest for the marker instead
        // of buffering a runaway line.
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        let keep = room.min(chunk.len());
        line.extend_from_slice(&chunk[..keep]);
        dropped += chunk.len() - keep;
        let consumed = complete.unwrap_or(chunk.len());
        reader.consume(consumed);
        if complete.is_some() {
            if tx.send((stream, finish_line(&line, dropped))).await.is_err() {
                return;
            }
            line.clear();
            dropped = 0;
        }
    }
    if !line.is_empty() {
        let _ = tx.send((stream, finish_line(&line, dropped))).await;
    }
}

fn finish_line(bytes: &[u8], dropped: usize) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if dropped > 0 {
        s.push_str(&format!(" … [line truncated: {dropped} more bytes]"));
    }
    s
}

#[cfg(test)]
mod tests;
