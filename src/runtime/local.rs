//! The local provider: each instance is a child process (inside a bubblewrap sandbox where
//! available) with `PORT` set and its output captured. Restarts, health checks and drains
//! are the shared lifecycle's (`lifecycle.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use berth_build::sandbox::{Sandbox, SandboxSpec};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{InstanceSpec, Launched, OutputLine, OutputStream, Provider};

/// Runs instances as local processes.
pub struct LocalProvider {
    sandbox: Arc<Sandbox>,
}

impl LocalProvider {
    /// A provider running apps through `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
        Self { sandbox }
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn is_isolated(&self) -> bool {
        self.sandbox.is_sandboxed()
    }

    async fn launch(&self, spec: &InstanceSpec, index: u32) -> Result<Box<dyn Launched>, String> {
        // A fixed port can only be bound once: further instances get free ports (and PORT).
        let port = match spec.port {
            Some(p) if index == 0 => p,
            _ => free_port().map_err(|e| format!("no free port: {e}"))?,
        };
        let mut env = spec.env.clone();
        env.push(("PORT".into(), port.to_string()));
        let mut cmd = self.sandbox.command(&SandboxSpec {
            app_dir: &spec.app_dir,
            argv: berth_build::sandbox::shell_argv(&spec.command),
            env,
            network: true,
        });
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("could not start the app: {e}"))?;
        let stdout = child.stdout.take().map(|s| lines(s, "stdout"));
        let stderr = child.stderr.take().map(|s| lines(s, "stderr"));
        let output = futures::stream::select_all(stdout.into_iter().chain(stderr)).boxed();
        Ok(Box::new(LocalProcess {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            pid: child.id(),
            child,
            output: Some(output),
        }))
    }
}

struct LocalProcess {
    addr: SocketAddr,
    pid: Option<u32>,
    child: tokio::process::Child,
    output: Option<OutputStream>,
}

#[async_trait::async_trait]
impl Launched for LocalProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn take_output(&mut self) -> Option<OutputStream> {
        self.output.take()
    }

    async fn wait(&mut self) -> String {
        let status = self.child.wait().await;
        if let Some(pid) = self.pid {
            // The shell is gone; don't leave its children behind.
            let _ = tokio::task::spawn_blocking(move || berth_build::step::kill_process_group(pid)).await;
        }
        status
            .ok()
            .and_then(|s| s.code())
            .map_or("a signal".to_string(), |c| format!("code {c}"))
    }

    async fn terminate(&mut self, grace: Duration) {
        // SIGTERM to the app's whole tree, SIGKILL after the grace period; returns as soon
        // as it is gone (the child is reaped here, so no zombie holds it up).
        berth_build::step::terminate_child_tree(&mut self.child, grace).await;
        let _ = self.child.wait().await;
    }
}

fn lines(stream: impl AsyncRead + Unpin + Send + 'static, name: &'static str) -> OutputStream {
    futures::stream::unfold(BufReader::new(stream).split(b'\n'), move |mut split| async move {
        match split.next_segment().await {
            Ok(Some(raw)) => {
                let line = String::from_utf8_lossy(&raw).trim_end_matches('\r').to_string();
                Some((OutputLine { stream: name, line }, split))
            }
            _ => None,
        }
    })
    .boxed()
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
