//! The local provider: each instance is a child process (inside a bubblewrap sandbox where
//! available) with `PORT` set and its output captured. As root, each instance runs in a
//! slot of its own (`isolation`): its site's host uid, its own network namespace (the edge
//! reaches it at the namespace's address) and kernel-enforced limits. Restarts, health
//! checks and drains are the shared lifecycle's (`lifecycle.rs`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_build::sandbox::{Sandbox, SandboxSpec};
use futures::StreamExt;
use tokio::io::{AsyncRead, BufReader};

use super::isolation::{Isolation, Slot, SlotKind};
use super::listeners::Listeners;
use super::target::{
    BuildKind, Capabilities, CheckError, PromoteWithoutRebuild, Registration, ScaleToZero, Settings, Target,
};
use super::{InstanceSpec, Launched, OutputLine, OutputStream, Provider, Usage};

/// Process ids of running instances, by (deployment, index), for usage reports.
type Pids = Arc<Mutex<HashMap<(String, u32), u32>>>;

/// The port an instance in a namespace of its own is given, unless the site sets one.
const DEFAULT_PORT: u16 = 8080;

/// How long CPU time is sampled for a usage report.
const CPU_SAMPLE: Duration = Duration::from_millis(200);

/// The local target as registered: processes stop to sleep (they have no freezer here),
/// every built deployment keeps its files so it can be promoted as is, no settings.
pub const TARGET: Registration = Registration {
    name: "local",
    summary: "Runs apps as processes on this machine, each in a bubblewrap sandbox when available (the default).",
    capabilities: Capabilities {
        scale_to_zero: ScaleToZero::Stop,
        max_instances: super::MAX_INSTANCES,
        promote_without_rebuild: PromoteWithoutRebuild::Always,
        runtime_logs: true,
        resource_usage: true,
        custom_domains: true,
        build: BuildKind::SandboxSteps,
    },
    on_its_server: true,
    settings: &[],
    check_settings: |_| Ok(()),
    make: |parts| {
        Ok(Arc::new(LocalTarget {
            provider: Arc::new(LocalProvider::new(parts.sandbox.clone(), parts.isolation.clone())),
            sandbox: parts.sandbox.clone(),
            isolation: parts.isolation.clone(),
        }))
    },
};

/// The local target: its instances are [`LocalProvider`]'s on the shared lifecycle, and
/// deployments are built by steps in berth's sandbox (the trait's defaults).
struct LocalTarget {
    provider: Arc<LocalProvider>,
    sandbox: Arc<Sandbox>,
    isolation: Arc<Isolation>,
}

#[async_trait::async_trait]
impl Target for LocalTarget {
    fn registration(&self) -> &'static Registration {
        &TARGET
    }

    fn provider(&self) -> Option<Arc<dyn Provider>> {
        Some(self.provider.clone())
    }

    /// Nothing to connect to: reports the sandbox and the isolation of this machine.
    async fn test_connection(&self, _settings: &Settings) -> Result<String, CheckError> {
        if !self.sandbox.is_sandboxed() {
            return Err(CheckError::Unavailable(
                "bubblewrap (bwrap) is not installed, so apps run unsandboxed; install the bubblewrap package and restart berth".into(),
            ));
        }
        match self.isolation.status() {
            Ok(confined) => Ok(format!(
                "apps run as local processes inside a bubblewrap sandbox; {confined}"
            )),
            Err(why) if matches!(*self.isolation, Isolation::Off(_)) => Ok(format!(
                "apps run as local processes inside a bubblewrap sandbox, on the host network and without limits: {why}"
            )),
            Err(why) => Err(CheckError::Unavailable(format!(
                "apps cannot start: {why}; install what is missing and restart berth"
            ))),
        }
    }
}

/// Runs instances as local processes.
pub struct LocalProvider {
    sandbox: Arc<Sandbox>,
    isolation: Arc<Isolation>,
    pids: Pids,
}

impl LocalProvider {
    /// A provider running apps through `sandbox`, each in a slot of `isolation`.
    pub fn new(sandbox: Arc<Sandbox>, isolation: Arc<Isolation>) -> Self {
        Self {
            sandbox,
            isolation,
            pids: Pids::default(),
        }
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        TARGET.name
    }

    fn capabilities(&self) -> Capabilities {
        TARGET.capabilities
    }

    fn is_isolated(&self) -> bool {
        self.sandbox.is_sandboxed()
    }

    async fn launch(&self, spec: &InstanceSpec, index: u32) -> Result<Box<dyn Launched>, String> {
        let slot = self
            .isolation
            .acquire(SlotKind::App, spec.uid, Some(&spec.app_dir), spec.size, &spec.resources)
            .await?;
        let (sandbox, ip, port) = match &slot {
            // A namespace of its own: every instance may listen on the same port.
            Some(slot) => (
                Arc::new(slot.sandbox(&self.sandbox)),
                slot.addr().unwrap_or(Ipv4Addr::LOCALHOST),
                spec.port.unwrap_or(DEFAULT_PORT),
            ),
            // The host's network: a fixed port can only be bound once, so further instances
            // get free ports (and PORT).
            None => (
                self.sandbox.clone(),
                Ipv4Addr::LOCALHOST,
                match spec.port {
                    Some(p) if index == 0 => p,
                    _ => free_port().map_err(|e| format!("no free port: {e}"))?,
                },
            ),
        };
        let mut env = spec.env.clone();
        env.push(("PORT".into(), port.to_string()));
        let app_dir = slot
            .as_ref()
            .map_or_else(|| spec.app_dir.clone(), |s| s.app_dir(&spec.app_dir));
        let mut cmd = sandbox.command(&SandboxSpec {
            app_dir: &app_dir,
            argv: berth_build::sandbox::shell_argv(&spec.command),
            env,
            network: true,
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(slot) = slot {
                    slot.release().await;
                }
                return Err(format!("could not start the app: {e}"));
            }
        };
        let stdout = child.stdout.take().map(|s| lines(s, "stdout"));
        let stderr = child.stderr.take().map(|s| lines(s, "stderr"));
        let output = futures::stream::select_all(stdout.into_iter().chain(stderr)).boxed();
        let key = (spec.deployment_id.clone(), index);
        if let Some(pid) = child.id() {
            self.pids.lock().expect("pids lock").insert(key.clone(), pid);
        }
        Ok(Box::new(LocalProcess {
            addr: SocketAddr::from((ip, port)),
            pid: child.id(),
            child,
            output: Some(output),
            pids: self.pids.clone(),
            key,
            slot,
        }))
    }

    /// CPU over a short sample and resident memory of the instance's whole process tree.
    async fn usage(&self, deployment_id: &str, index: u32) -> Option<Usage> {
        let pid = *self
            .pids
            .lock()
            .expect("pids lock")
            .get(&(deployment_id.to_string(), index))?;
        let before = tokio::task::spawn_blocking(move || berth_build::step::tree_usage(pid))
            .await
            .ok()??;
        tokio::time::sleep(CPU_SAMPLE).await;
        let after = tokio::task::spawn_blocking(move || berth_build::step::tree_usage(pid))
            .await
            .ok()??;
        let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
        let seconds = ticks / berth_build::step::clock_ticks_per_second() as f64;
        Some(Usage {
            cpu_percent: (seconds / CPU_SAMPLE.as_secs_f64() * 1000.0).round() / 10.0,
            memory_bytes: after.rss_bytes,
            memory_limit_bytes: self.isolation.limits(SlotKind::App).map(|l| l.memory_bytes),
        })
    }
}

struct LocalProcess {
    addr: SocketAddr,
    pid: Option<u32>,
    child: tokio::process::Child,
    output: Option<OutputStream>,
    pids: Pids,
    key: (String, u32),
    /// Its isolation slot, released once it has exited.
    slot: Option<Slot>,
}

impl LocalProcess {
    /// Releases the slot; says which limit the kernel enforced, if one was hit.
    async fn release_slot(&mut self) -> Option<String> {
        let slot = self.slot.take()?;
        let hit = slot.limit_hit();
        slot.release().await;
        hit
    }

    fn forget_pid(&self) {
        let mut pids = self.pids.lock().expect("pids lock");
        if pids.get(&self.key) == self.pid.as_ref() {
            pids.remove(&self.key);
        }
    }
}

#[async_trait::async_trait]
impl Launched for LocalProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn take_output(&mut self) -> Option<OutputStream> {
        self.output.take()
    }

    fn listeners(&self) -> Option<Listeners> {
        self.pid.map(Listeners::of_tree)
    }

    async fn wait(&mut self) -> String {
        let status = self.child.wait().await;
        self.forget_pid();
        if let Some(pid) = self.pid {
            // The shell is gone; don't leave its children behind.
            let _ = tokio::task::spawn_blocking(move || berth_build::step::kill_process_group(pid)).await;
        }
        let how = status
            .ok()
            .and_then(|s| s.code())
            .map_or("a signal".to_string(), |c| format!("code {c}"));
        match self.release_slot().await {
            Some(limit) => format!("{how}: {limit}"),
            None => how,
        }
    }

    async fn terminate(&mut self, grace: Duration) {
        // SIGTERM to the app's whole tree, SIGKILL after the grace period; returns as soon
        // as it is gone (the child is reaped here, so no zombie holds it up).
        berth_build::step::terminate_child_tree(&mut self.child, grace).await;
        let _ = self.child.wait().await;
        self.forget_pid();
        self.release_slot().await;
    }
}

/// Longest output line read into memory; the rest of a longer line is skipped.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// The stream's lines, each at most [`MAX_LINE_BYTES`] (a longer one is cut and marked),
/// so an app writing one endless line costs berth a bounded buffer.
fn lines(stream: impl AsyncRead + Unpin + Send + 'static, name: &'static str) -> OutputStream {
    use tokio::io::AsyncBufReadExt as _;
    struct State<R> {
        reader: BufReader<R>,
        skipping: bool,
    }
    let state = State {
        reader: BufReader::new(stream),
        skipping: false,
    };
    futures::stream::unfold(state, move |mut st| async move {
        let mut line: Vec<u8> = Vec::new();
        loop {
            let buf = match st.reader.fill_buf().await {
                Ok(buf) if !buf.is_empty() => buf,
                // End of output: a last line without a newline still counts.
                _ if !line.is_empty() && !st.skipping => break,
                _ => return None,
            };
            let newline = buf.iter().position(|b| *b == b'\n');
            let take = newline.map_or(buf.len(), |i| i + 1);
            if !st.skipping {
                let room = MAX_LINE_BYTES.saturating_sub(line.len());
                line.extend_from_slice(&buf[..newline.unwrap_or(take).min(room)]);
            }
            st.reader.consume(take);
            if newline.is_some() {
                if st.skipping {
                    st.skipping = false;
                    continue;
                }
                break;
            }
            if line.len() >= MAX_LINE_BYTES && !st.skipping {
                st.skipping = true;
                let mut text = String::from_utf8_lossy(&line).into_owned();
                text.push_str(" …[truncated]");
                return Some((
                    OutputLine {
                        stream: name,
                        line: text,
                    },
                    st,
                ));
            }
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
        Some((
            OutputLine {
                stream: name,
                line: text,
            },
            st,
        ))
    })
    .boxed()
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
