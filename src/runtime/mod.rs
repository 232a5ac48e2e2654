//! Where deployments run. A runtime provider implements a few primitives (start an
//! instance, stop it, observe it); health checks and crash restarts follow one lifecycle
//! here. `local` (sandboxed child processes) is the default provider.

pub mod docker;
pub mod local;
pub mod logs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use local::LocalRuntime;
pub use logs::LogSink;

/// What to run for one deployment.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// The deployment this instance serves.
    pub deployment_id: String,
    /// Site name, for logs and messages.
    pub site: String,
    /// The built app directory.
    pub app_dir: PathBuf,
    /// Shell command that starts the app.
    pub command: String,
    /// Fixed port, or `None` to pick a free one.
    pub port: Option<u16>,
    /// Environment variables (PORT is added).
    pub env: Vec<(String, String)>,
    /// Path probed until it answers below 500.
    pub health_check_path: String,
    /// How long the first start may take to become healthy.
    pub start_timeout: Duration,
}

/// Observed state of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Started, health check not yet passed.
    Starting,
    /// Passing its health check.
    Healthy,
    /// Exited unexpectedly; coming back after a backoff.
    Restarting {
        /// Restarts so far in the current window.
        attempt: u32,
    },
    /// Kept failing; given up until the next deploy or restart.
    Crashed {
        /// Why, with the exit code.
        message: String,
    },
}

/// An instance as the reconciler and the service see it.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: InstanceState,
}

/// Why a start failed: the message and the app's last log lines.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    /// What happened.
    pub message: String,
    /// The app's last output lines.
    pub last_lines: Vec<String>,
}
