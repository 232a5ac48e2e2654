//! A berth server whose org runs new sites on a real Docker Engine, with the local test
//! base images `scripts/docker-test-env.sh` builds (`berth-test/busybox:1`,
//! `berth-test/node:20`). Dropping it removes the containers, networks and images it made
//! (they carry its `berth.owner` label), so tests run in parallel without seeing each other.

#![allow(dead_code, reason = "each test file uses a different part of the harness")]

use crate::common::{TestServer, configure_test_docker, docker, prepare_engine};

/// A server whose org runs new sites on docker, with the local test base images.
pub struct DockerServer {
    server: Option<TestServer>,
    /// Its `berth.owner` label value.
    pub owner: String,
}

impl std::ops::Deref for DockerServer {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        self.server.as_ref().expect("server running")
    }
}

impl DockerServer {
    pub async fn start() -> Self {
        prepare_engine();
        Self::configure(TestServer::start().await).await
    }

    pub async fn configure(server: TestServer) -> Self {
        configure_test_docker(&server).await;
        let owner = std::fs::read_to_string(server.data.path().join("docker-owner"))
            .expect("the server wrote its docker owner id")
            .trim()
            .to_string();
        Self {
            server: Some(server),
            owner,
        }
    }

    /// Containers of this server: (name, labels as "k=v,...", state).
    pub fn containers(&self) -> Vec<(String, String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=berth.owner={}", self.owner),
            "--format",
            "{{.Names}}\t{{.Labels}}\t{{.State}}",
        ]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut parts = l.split('\t');
                (
                    parts.next().unwrap_or_default().to_string(),
                    parts.next().unwrap_or_default().to_string(),
                    parts.next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn running(&self) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|(_, _, state)| state == "running")
            .map(|(name, _, _)| name)
            .collect()
    }

    /// Kills the server without letting it stop its containers; returns its data dir.
    pub fn kill9(mut self) -> (tempfile::TempDir, String) {
        let server = self.server.take().expect("server running");
        // Its containers must outlive it: the next server on this data dir cleans up.
        (server.kill9(), std::mem::take(&mut self.owner))
    }

    /// Stops the server with SIGTERM (a graceful restart); returns its data dir.
    pub fn stop_gracefully(mut self) -> (tempfile::TempDir, String) {
        let server = self.server.take().expect("server running");
        (server.stop(), std::mem::take(&mut self.owner))
    }
}

impl Drop for DockerServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            drop(server.stop());
        }
        if !self.owner.is_empty() {
            remove_owned(&self.owner);
        }
    }
}

/// Removes every container and image an installation made.
pub fn remove_owned(owner: &str) {
    let filter = format!("label=berth.owner={owner}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
    // The org's network goes too (each test server has its own org).
    let networks = docker(&["network", "ls", "-q", "--filter", &filter]);
    let networks: Vec<&str> = networks.split_whitespace().collect();
    if !networks.is_empty() {
        let mut args = vec!["network", "rm"];
        args.extend(networks);
        docker(&args);
    }
    let images = docker(&["images", "-q", "--filter", &filter]);
    let mut images: Vec<&str> = images.split_whitespace().collect();
    images.sort_unstable();
    images.dedup();
    if !images.is_empty() {
        let mut args = vec!["rmi", "-f"];
        args.extend(images);
        docker(&args);
    }
}
