//! The connection to a Docker Engine: where it is (a unix socket or a TCP endpoint), the
//! API version both sides speak, and engine errors turned into messages that say what to
//! do next (start dockerd, fix the configured host).

use std::time::Duration;

use bollard::Docker;
use serde::Serialize;

/// Where a local engine listens unless configured otherwise.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long a ping or version call may take before the engine counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Client-side request timeout. Long on purpose: following logs and waiting for a
/// container to exit are single requests that last as long as the container; calls
/// that must be quick carry their own timeout.
const REQUEST_TIMEOUT_SECS: u64 = 60 * 60 * 24 * 365;

/// A Docker Engine client bound to one configured host.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
    /// Whether the engine bounds a container's writable layer (`--storage-opt size=`):
    /// unknown until its first container, then remembered.
    disk_quota: std::sync::Arc<std::sync::OnceLock<bool>>,
}

/// What `HOSTING_TEST_CONNECTION` reports for a reachable engine.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EngineReport {
    /// The configured host.
    pub host: String,
    /// Engine version, e.g. "20.10.24".
    pub version: String,
    /// Engine API version in use.
    pub api_version: String,
    /// Engine OS/architecture, e.g. "linux/amd64".
    pub platform: String,
}

/// Why the engine could not be used. The message names the host and the next step.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The configured host is not something berth can connect to.
    #[error(
        "docker host '{host}' is not supported: use unix:///path/to/docker.sock, a socket path, or tcp://HOST:PORT"
    )]
    BadHost {
        /// The host as configured.
        host: String,
    },
    /// Nothing answered at the host.
    #[error(
        "the Docker engine at {host} is not answering ({reason}); start dockerd (or Docker Desktop), or point the docker provider's host at a running engine with HOSTING_SET_CONFIG"
    )]
    Unreachable {
        /// The host as configured.
        host: String,
        /// The transport error, e.g. "connection refused".
        reason: String,
    },
    /// The engine answered with an error.
    #[error("the Docker engine at {host} refused: {message}")]
    Refused {
        /// The host as configured.
        host: String,
        /// The engine's message.
        message: String,
        /// The HTTP status the engine answered with.
        status: u16,
    },
}

impl EngineError {
    /// Whether the engine said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::Refused { status: 404, .. })
    }
    /// Whether the engine said the object already exists or is in the way.
    pub fn is_conflict(&self) -> bool {
        matches!(self, EngineError::Refused { status: 409, .. })
    }
    /// Whether the request did not reach the engine at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, EngineError::Unreachable { .. })
    }
}

impl Engine {
    /// A client for `host`: `unix:///path`, a bare socket path, `tcp://host:port` or
    /// `http://host:port`. Connecting is lazy: an engine that is down is reported by the
    /// first call, not here.
    pub fn connect(host: &str) -> Result<Self, EngineError> {
        let host = host.trim();
        let host = if host.is_empty() { DEFAULT_HOST } else { host };
        check_host(host)?;
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_socket(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with('/') {
            Docker::connect_with_socket(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| classify(host, e))?;
        Ok(Self {
            docker,
            host: host.to_string(),
            disk_quota: Default::default(),
        })
    }

    /// The configured host, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the engine runs on this machine (a unix socket): its bridge networks are
    /// then routed from here, so containers are reached at their own addresses.
    pub fn is_local(&self) -> bool {
        !self.host.starts_with("tcp://")
    }

    /// Whether the engine can bound a container's writable layer: `None` until it was
    /// asked (by the first container started with a bound).
    pub fn disk_quota(&self) -> Option<bool> {
        self.disk_quota.get().copied()
    }

    /// Records what the engine answered to a bounded writable layer.
    pub fn set_disk_quota(&self, supported: bool) {
        let _ = self.disk_quota.set(supported);
    }

    /// The bollard client, speaking the highest API version both sides support.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Agrees on an API version with the engine: older engines (Debian's 20.10 speaks
    /// 1.41) reject requests from newer clients.
    pub async fn negotiate(self) -> Result<Self, EngineError> {
        let host = self.host.clone();
        let docker = tokio::time::timeout(PROBE_TIMEOUT, self.docker.negotiate_version())
            .await
            .map_err(|_| EngineError::Unreachable {
                host: host.clone(),
                reason: "no answer within 5 s".into(),
            })?
            .map_err(|e| classify(&host, e))?;
        Ok(Self {
            docker,
            host,
            disk_quota: self.disk_quota,
        })
    }

    /// Pings the engine and reads its version: the "test connection" of the provider.
    pub async fn probe(&self) -> Result<EngineReport, EngineError> {
        let timeout = || EngineError::Unreachable {
            host: self.host.clone(),
            reason: "no answer within 5 s".into(),
        };
        tokio::time::timeout(PROBE_TIMEOUT, self.docker.ping())
            .await
            .map_err(|_| timeout())?
            .map_err(|e| self.error(e))?;
        let version = tokio::time::timeout(PROBE_TIMEOUT, self.docker.version())
            .await
            .map_err(|_| timeout())?
            .map_err(|e| self.error(e))?;
        Ok(EngineReport {
            host: self.host.clone(),
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            platform: format!(
                "{}/{}",
                version.os.unwrap_or_default(),
                version.arch.unwrap_or_default()
            ),
        })
    }

    /// Turns a client error into an [`EngineError`] naming this engine.
    pub fn error(&self, err: bollard::errors::Error) -> EngineError {
        classify(&self.host, err)
    }
}

/// Checks that `host` has a form berth can connect to, without connecting.
pub fn check_host(host: &str) -> Result<(), EngineError> {
    let host = host.trim();
    if host.is_empty()
        || host.starts_with("unix:///")
        || host.starts_with('/')
        || host.starts_with("tcp://")
        || host.starts_with("http://")
    {
        Ok(())
    } else {
        Err(EngineError::BadHost { host: host.to_string() })
    }
}

fn classify(host: &str, err: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError { status_code, message } => EngineError::Refused {
            host: host.to_string(),
            message: message.trim().to_string(),
            status: status_code,
        },
        // A failure the engine streams back (a build step that failed) rather than a
        // status code.
        E::DockerStreamError { error } => EngineError::Refused {
            host: host.to_string(),
            message: error.trim().to_string(),
            status: 500,
        },
        E::SocketNotFoundError(_) => EngineError::Unreachable {
            host: host.to_string(),
            reason: "no socket there".into(),
        },
        E::RequestTimeoutError => EngineError::Unreachable {
            host: host.to_string(),
            reason: "the request timed out".into(),
        },
        other => {
            // Transport errors nest the OS error a few levels down; its text ("No such
            // file or directory", "Connection refused") is what tells the user why.
            let mut reason = other.to_string();
            let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&other);
            while let Some(s) = source {
                reason = s.to_string();
                source = s.source();
            }
            EngineError::Unreachable {
                host: host.to_string(),
                reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_parsed_or_refused_with_the_accepted_forms() {
        assert_eq!(Engine::connect("").unwrap().host(), DEFAULT_HOST);
        assert_eq!(Engine::connect("/run/docker.sock").unwrap().host(), "/run/docker.sock");
        assert!(Engine::connect("tcp://127.0.0.1:2375").is_ok());
        assert!(Engine::connect("").unwrap().is_local());
        assert!(!Engine::connect("tcp://127.0.0.1:2375").unwrap().is_local());
        let err = Engine::connect("ftp://x").err().unwrap();
        assert!(err.to_string().contains("unix:///path/to/docker.sock"), "{err}");
    }

    #[tokio::test]
    async fn a_socket_with_nothing_behind_it_says_to_start_dockerd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let host = format!("unix://{}", path.display());
        // Connecting is refused up front when the socket file is missing, or by the first
        // call when something removed it since: both say the same.
        let err = match Engine::connect(&host) {
            Ok(engine) => engine.probe().await.unwrap_err(),
            Err(err) => err,
        };
        assert!(err.is_unreachable(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("start dockerd"), "{text}");
    }
}
