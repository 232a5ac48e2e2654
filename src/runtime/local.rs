//! The local provider: each instance is a child process (inside a bubblewrap sandbox where
//! available) with `PORT` set, its output captured as runtime logs, restarted with backoff
//! when it crashes and marked crashed after repeated failures.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_build::sandbox::{Sandbox, SandboxSpec};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{InstanceSpec, InstanceState, LogSink, Observation, StartError};

/// Crashes within this window count towards giving up.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Crashes in the window after which an instance is left crashed.
const MAX_CRASHES: usize = 5;
/// How long a stopped app may take to shut down after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many output lines an instance keeps for error messages.
const LAST_LINES: usize = 40;

struct Instance {
    addr: SocketAddr,
    state: Mutex<InstanceState>,
    exits: Mutex<u32>,
    last_lines: Mutex<VecDeque<String>>,
    stop: CancellationToken,
    stopped: Notify,
    /// Set while the instance drains before a stop; cancelling it keeps the instance.
    draining: Mutex<Option<CancellationToken>>,
}

impl Instance {
    fn set_state(&self, state: InstanceState) {
        *self.state.lock().expect("state lock") = state;
    }
    fn state(&self) -> InstanceState {
        self.state.lock().expect("state lock").clone()
    }
    fn last_lines(&self) -> Vec<String> {
        self.last_lines.lock().expect("lines lock").iter().cloned().collect()
    }
}

/// Runs deployments as local processes.
#[derive(Clone)]
pub struct LocalRuntime {
    sandbox: Arc<Sandbox>,
    logs: LogSink,
    instances: Arc<Mutex<HashMap<String, Arc<Instance>>>>,
    changed: Arc<Notify>,
    http: reqwest::Client,
}

impl LocalRuntime {
    /// A runtime; `changed` is notified whenever an instance's state changes.
    pub fn new(sandbox: Arc<Sandbox>, logs: LogSink, changed: Arc<Notify>) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client builds");
        Self {
            sandbox,
            logs,
            instances: Arc::default(),
            changed,
            http,
        }
    }

    /// Whether apps run inside bubblewrap.
    pub fn is_sandboxed(&self) -> bool {
        self.sandbox.is_sandboxed()
    }

    /// Observes one deployment's instance.
    pub fn observe(&self, deployment_id: &str) -> Option<Observation> {
        let map = self.instances.lock().expect("instances lock");
        map.get(deployment_id).map(|i| Observation {
            addr: i.addr,
            state: i.state(),
        })
    }

    /// Deployments with an instance.
    pub fn deployments(&self) -> Vec<String> {
        self.instances.lock().expect("instances lock").keys().cloned().collect()
    }

    /// The last output lines of an instance.
    pub fn last_lines(&self, deployment_id: &str) -> Vec<String> {
        let map = self.instances.lock().expect("instances lock");
        map.get(deployment_id).map(|i| i.last_lines()).unwrap_or_default()
    }

    /// Starts an instance and waits until it passes its health check. On failure the
    /// instance is stopped and the error carries its last output lines. Starting a
    /// deployment that already has an instance returns the existing one once healthy.
    pub async fn start(&self, spec: InstanceSpec) -> Result<SocketAddr, StartError> {
        let existing = self
            .instances
            .lock()
            .expect("instances lock")
            .get(&spec.deployment_id)
            .cloned();
        let instance = match existing {
            Some(i) => {
                // Wanted again (a rollback during the drain): keep it.
                if let Some(drain) = i.draining.lock().expect("drain lock").take() {
                    drain.cancel();
                }
                i
            }
            None => {
                let port = match spec.port {
                    Some(p) => p,
                    None => free_port().map_err(|e| StartError {
                        message: format!("no free port: {e}"),
                        last_lines: vec![],
                    })?,
                };
                let instance = Arc::new(Instance {
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    state: Mutex::new(InstanceState::Starting),
                    exits: Mutex::new(0),
                    last_lines: Mutex::new(VecDeque::new()),
                    stop: CancellationToken::new(),
                    stopped: Notify::new(),
                    draining: Mutex::new(None),
                });
                self.instances
                    .lock()
                    .expect("instances lock")
                    .insert(spec.deployment_id.clone(), instance.clone());
                tokio::spawn(self.clone().supervise(instance.clone(), spec.clone()));
                instance
            }
        };
        let deadline = Instant::now() + spec.start_timeout;
        let url = format!("http://{}{}", instance.addr, spec.health_check_path);
        loop {
            match instance.state() {
                InstanceState::Healthy => return Ok(instance.addr),
                InstanceState::Crashed { message } => {
                    let last_lines = instance.last_lines();
                    self.stop(&spec.deployment_id).await;
                    return Err(StartError { message, last_lines });
                }
                _ => {}
            }
            let exits = *instance.exits.lock().expect("exits lock");
            if exits > 0
                && matches!(
                    instance.state(),
                    InstanceState::Restarting { .. } | InstanceState::Starting
                )
            {
                let last_lines = instance.last_lines();
                self.stop(&spec.deployment_id).await;
                return Err(StartError {
                    message: "the app exited before it became healthy; its last output is below".into(),
                    last_lines,
                });
            }
            if self.probe(&url).await {
                instance.set_state(InstanceState::Healthy);
                self.changed.notify_one();
                return Ok(instance.addr);
            }
            if Instant::now() >= deadline {
                let last_lines = instance.last_lines();
                self.stop(&spec.deployment_id).await;
                return Err(StartError {
                    message: format!(
                        "the app did not answer its health check (GET {} on port {}) within {} s; make sure it listens on the PORT environment variable",
                        spec.health_check_path,
                        instance.addr.port(),
                        spec.start_timeout.as_secs()
                    ),
                    last_lines,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops an instance: SIGTERM to its process group, SIGKILL after a grace period.
    pub async fn stop(&self, deployment_id: &str) {
        let instance = self.instances.lock().expect("instances lock").remove(deployment_id);
        if let Some(instance) = instance {
            let stopped = instance.stopped.notified();
            instance.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), stopped).await;
            self.changed.notify_one();
        }
    }

    /// Stops an instance after `grace`, so requests it is serving finish first; no-op if
    /// it is already draining. A `start` of the same deployment meanwhile keeps it.
    pub fn drain(&self, deployment_id: &str, grace: Duration) {
        let Some(instance) = self
            .instances
            .lock()
            .expect("instances lock")
            .get(deployment_id)
            .cloned()
        else {
            return;
        };
        let token = {
            let mut draining = instance.draining.lock().expect("drain lock");
            if draining.is_some() {
                return;
            }
            let token = CancellationToken::new();
            *draining = Some(token.clone());
            token
        };
        let runtime = self.clone();
        let id = deployment_id.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => runtime.stop(&id).await,
                _ = token.cancelled() => {}
            }
        });
    }

    /// Whether an instance is draining towards a stop.
    pub fn is_draining(&self, deployment_id: &str) -> bool {
        let map = self.instances.lock().expect("instances lock");
        map.get(deployment_id)
            .is_some_and(|i| i.draining.lock().expect("drain lock").is_some())
    }

    /// Stops every instance (server shutdown).
    pub async fn stop_all(&self) {
        for id in self.deployments() {
            self.stop(&id).await;
        }
    }

    async fn probe(&self, url: &str) -> bool {
        matches!(self.http.get(url).send().await, Ok(resp) if resp.status().as_u16() < 500)
    }

    async fn supervise(self, instance: Arc<Instance>, spec: InstanceSpec) {
        let mut crashes: VecDeque<Instant> = VecDeque::new();
        loop {
            let mut env = spec.env.clone();
            env.push(("PORT".into(), instance.addr.port().to_string()));
            let mut cmd = self.sandbox.command(&SandboxSpec {
                app_dir: &spec.app_dir,
                argv: berth_build::sandbox::shell_argv(&spec.command),
                env,
                network: true,
            });
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    instance.set_state(InstanceState::Crashed {
                        message: format!("could not start the app: {e}"),
                    });
                    self.changed.notify_one();
                    instance.stopped.notify_waiters();
                    return;
                }
            };
            let pid = child.id();
            let pumps = [
                child
                    .stdout
                    .take()
                    .map(|s| self.pump(s, &spec.deployment_id, "stdout", instance.clone())),
                child
                    .stderr
                    .take()
                    .map(|s| self.pump(s, &spec.deployment_id, "stderr", instance.clone())),
            ];
            if !crashes.is_empty() {
                tokio::spawn(self.clone().await_recovery(instance.clone(), spec.clone()));
            }
            let status = tokio::select! {
                s = child.wait() => Some(s),
                _ = instance.stop.cancelled() => None,
            };
            let Some(status) = status else {
                // SIGTERM to the app's whole tree, SIGKILL after the grace period; returns
                // as soon as it is gone (the child is reaped here, so no zombie holds it up).
                berth_build::step::terminate_child_tree(&mut child, STOP_GRACE).await;
                let _ = child.wait().await;
                for p in pumps.into_iter().flatten() {
                    let _ = p.await;
                }
                self.logs
                    .write(&spec.deployment_id, "runtime", "system", "instance stopped".into());
                instance.stopped.notify_waiters();
                return;
            };
            if let Some(pid) = pid {
                // The shell is gone; don't leave its children behind.
                let _ = tokio::task::spawn_blocking(move || berth_build::step::kill_process_group(pid)).await;
            }
            for p in pumps.into_iter().flatten() {
                let _ = p.await;
            }
            let code = status
                .ok()
                .and_then(|s| s.code())
                .map_or("a signal".to_string(), |c| format!("code {c}"));
            let note = format!("the app exited with {code}");
            self.logs.write(&spec.deployment_id, "runtime", "system", note.clone());
            *instance.exits.lock().expect("exits lock") += 1;
            let now = Instant::now();
            crashes.push_back(now);
            while crashes.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
                crashes.pop_front();
            }
            if crashes.len() >= MAX_CRASHES {
                let message = format!(
                    "{note}; it crashed {} times within {} s and is no longer restarted",
                    crashes.len(),
                    CRASH_WINDOW.as_secs()
                );
                self.logs
                    .write(&spec.deployment_id, "runtime", "system", message.clone());
                tracing::warn!(deployment.id = %spec.deployment_id, site.name = %spec.site, "instance crashed repeatedly");
                instance.set_state(InstanceState::Crashed { message });
                self.changed.notify_one();
                instance.stop.cancelled().await;
                instance.stopped.notify_waiters();
                return;
            }
            let attempt = crashes.len() as u32;
            instance.set_state(InstanceState::Restarting { attempt });
            self.changed.notify_one();
            let backoff = Duration::from_millis(250u64 << attempt.min(6));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = instance.stop.cancelled() => {
                    instance.stopped.notify_waiters();
                    return;
                }
            }
        }
    }

    /// After a restart, marks the instance healthy again once its health check passes.
    async fn await_recovery(self, instance: Arc<Instance>, spec: InstanceSpec) {
        let url = format!("http://{}{}", instance.addr, spec.health_check_path);
        let deadline = Instant::now() + spec.start_timeout;
        while Instant::now() < deadline && !instance.stop.is_cancelled() {
            if !matches!(
                instance.state(),
                InstanceState::Restarting { .. } | InstanceState::Starting
            ) {
                return;
            }
            if self.probe(&url).await {
                instance.set_state(InstanceState::Healthy);
                self.changed.notify_one();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pump(
        &self,
        stream: impl AsyncRead + Unpin + Send + 'static,
        deployment_id: &str,
        name: &'static str,
        instance: Arc<Instance>,
    ) -> tokio::task::JoinHandle<()> {
        let logs = self.logs.clone();
        let deployment_id = deployment_id.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).split(b'\n');
            while let Ok(Some(raw)) = lines.next_segment().await {
                let mut line = String::from_utf8_lossy(&raw).trim_end_matches('\r').to_string();
                if line.len() > 8192 {
                    let mut cut = 8192;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                    line.push_str(" …[truncated]");
                }
                {
                    let mut last = instance.last_lines.lock().expect("lines lock");
                    if last.len() == LAST_LINES {
                        last.pop_front();
                    }
                    last.push_back(line.clone());
                }
                logs.write(&deployment_id, "runtime", name, line);
            }
        })
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
