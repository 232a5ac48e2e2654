//! One harness per target for the lifecycle suite (`tests/targets.rs`): a berth server
//! whose org runs new sites on `local`, `docker` or `kubernetes` against the FAKE API
//! server, the same Node app built the way that target builds, and what only the target
//! can see from outside: its running instances (processes, containers, the fake's pods),
//! killing one the way the world would, and what a deleted site left behind.

#![allow(dead_code, reason = "each test file uses a different part of the harness")]

use std::path::Path;

use serde_json::Value;

use crate::common::{TestServer, app, docker, processes_matching};
use crate::docker_server::DockerServer;
use crate::kube_server::KubeServer;

/// The targets the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Processes on this machine.
    Local,
    /// Containers on the real Docker Engine.
    Docker,
    /// The kubernetes target against the FAKE API server (`fake_k8s.rs`).
    KubernetesFakeApi,
}

impl TargetKind {
    /// The target's registered name (what sites and `HOSTING_GET_CONFIG` spell).
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::Docker => "docker",
            TargetKind::KubernetesFakeApi => "kubernetes",
        }
    }
}

enum Running {
    Local(TestServer),
    Docker(DockerServer),
    Kubernetes(KubeServer),
}

/// A berth server whose org deploys new sites to one target.
pub struct OnTarget {
    /// Which target.
    pub kind: TargetKind,
    running: Running,
}

impl std::ops::Deref for OnTarget {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        match &self.running {
            Running::Local(server) => server,
            Running::Docker(server) => server,
            Running::Kubernetes(server) => server,
        }
    }
}

/// A site's source folder: one Node app answering `/` with its text, `/env` with its
/// `GREETING` variable and `/who` with a token drawn when the instance starts, and
/// printing `instance <token> of <marker> listening` when it starts.
pub struct App {
    /// The folder.
    pub dir: tempfile::TempDir,
    /// A word unique to this app, on its command line and in its first log line.
    pub marker: String,
}

impl App {
    /// Changes what `/` answers (the next deploy ships it).
    pub fn set_text(&self, text: &str) {
        std::fs::write(self.dir.path().join("server.js"), server_js(&self.marker, text)).expect("write server.js");
    }

    /// The folder, as the `repo` of a site.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn server_js(marker: &str, text: &str) -> String {
    format!(
        "const http = require('http');\n\
         const me = Math.random().toString(36).slice(2, 10);\n\
         http.createServer((req, res) => {{\n\
         \x20 if (req.url === '/env') return res.end(process.env.GREETING || '(unset)');\n\
         \x20 if (req.url === '/who') return res.end(me);\n\
         \x20 res.end('{text}');\n\
         }}).listen(process.env.PORT, () => console.log('instance ' + me + ' of {marker} listening'));\n"
    )
}

impl OnTarget {
    /// Starts a server whose org's default target is `kind`.
    pub async fn start(kind: TargetKind) -> Self {
        let running = match kind {
            TargetKind::Local => Running::Local(TestServer::start().await),
            TargetKind::Docker => Running::Docker(DockerServer::start().await),
            TargetKind::KubernetesFakeApi => Running::Kubernetes(KubeServer::start().await),
        };
        Self { kind, running }
    }

    /// The target's row of the capability table, as an agent reads it
    /// (`GET /api/config/{target}`, `HOSTING_GET_CONFIG`'s REST twin).
    pub async fn capabilities(&self) -> Value {
        let (status, out) = self.get(&format!("/api/config/{}", self.kind.name())).await;
        assert_eq!(status, 200, "{out}");
        let caps = out["providers"][0]["capabilities"].clone();
        assert!(caps.is_object(), "the target reports its capabilities: {out}");
        caps
    }

    /// The suite's Node app answering `text`, in the form this target builds: a
    /// `package.json` on local (built in berth's sandbox), a Dockerfile on the local
    /// `berth-test/node:20` base for the image-building targets.
    pub fn app(&self, text: &str) -> App {
        let dir = app(&[]);
        let marker = format!(
            "suite-{}",
            dir.path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .trim_start_matches('.')
                .to_lowercase()
        );
        match self.kind {
            TargetKind::Local => std::fs::write(
                dir.path().join("package.json"),
                format!(r#"{{"name":"suite","version":"1.0.0","scripts":{{"start":"node server.js {marker}"}}}}"#),
            ),
            TargetKind::Docker | TargetKind::KubernetesFakeApi => std::fs::write(
                dir.path().join("Dockerfile"),
                format!(
                    "FROM berth-test/node:20\nCOPY server.js /app/server.js\nUSER 65534:65534\nCMD [\"node\", \"/app/server.js\", \"{marker}\"]\n"
                ),
            ),
        }
        .expect("write the app");
        let app = App { dir, marker };
        app.set_text(text);
        app
    }

    /// The running instances of `site`'s production environment, as the target shows
    /// them from outside: app processes, running (not paused) containers, the fake's
    /// ready pods' containers.
    pub fn instances(&self, site: &str, app: &App) -> Vec<String> {
        match &self.running {
            Running::Local(_) => processes_matching(&app.marker)
                .into_iter()
                .filter(|(_, cmd)| cmd.starts_with("node "))
                .map(|(pid, _)| pid.to_string())
                .collect(),
            Running::Docker(server) => docker(&[
                "ps",
                "--filter",
                &format!("label=berth.owner={}", server.owner),
                "--filter",
                &format!("label=berth.site={site}"),
                "--filter",
                "label=berth.environment=production",
                "--filter",
                "status=running",
                "--format",
                "{{.Names}}",
            ])
            .split_whitespace()
            .map(str::to_string)
            .collect(),
            Running::Kubernetes(server) => {
                let namespaces = server.of_kind("Namespace");
                let Some(ns) = namespaces.first().and_then(|n| n["metadata"]["name"].as_str()) else {
                    return Vec::new();
                };
                server.kube.ready_containers(ns, &format!("{site}-production"))
            }
        }
    }

    /// Kills `instance` (from [`OnTarget::instances`]) from outside, as the world would:
    /// `kill -9` of the process, `docker kill` of the container, and on the fake cluster
    /// its pods deleted, as a node failure would (the fake kubelet runs the Deployment's
    /// template again, as the ReplicaSet would). Returns what berth writes to the runtime
    /// log when it sees the instance die, where berth runs it (the cluster replaces its
    /// own pods).
    pub fn kill_instance(&self, instance: &str) -> Option<&'static str> {
        match &self.running {
            Running::Local(_) => {
                let status = std::process::Command::new("kill")
                    .args(["-9", instance])
                    .status()
                    .expect("kill");
                assert!(status.success());
                Some("the app exited with")
            }
            Running::Docker(_) => {
                docker(&["kill", instance]);
                Some("the app exited with a signal (9)")
            }
            Running::Kubernetes(server) => {
                server.kube.restart_pods();
                None
            }
        }
    }

    /// What `site` (built from `app`) still has on the target: processes and deployment
    /// folders; containers and images; the fake cluster's berth-labelled objects, pod
    /// containers and image records.
    pub fn leftovers(&self, site: &str, app: &App, deployment_ids: &[String]) -> Vec<String> {
        let mut left: Vec<String> = Vec::new();
        match &self.running {
            Running::Local(server) => {
                left.extend(
                    processes_matching(&app.marker)
                        .into_iter()
                        .map(|(pid, cmd)| format!("process {pid}: {cmd}")),
                );
                for id in deployment_ids {
                    let dir = server.data.path().join("deployments").join(id);
                    if dir.exists() {
                        left.push(format!("folder {}", dir.display()));
                    }
                }
            }
            Running::Docker(server) => {
                let filter = [
                    "--filter".to_string(),
                    format!("label=berth.owner={}", server.owner),
                    "--filter".to_string(),
                    format!("label=berth.site={site}"),
                ];
                let mut ps = vec!["ps", "-a", "--format", "container {{.Names}}"];
                ps.extend(filter.iter().map(String::as_str));
                left.extend(docker(&ps).lines().map(str::to_string));
                let mut images = vec!["images", "--format", "image {{.Repository}}:{{.Tag}}"];
                images.extend(filter.iter().map(String::as_str));
                left.extend(docker(&images).lines().map(str::to_string));
            }
            Running::Kubernetes(server) => {
                left.extend(
                    server
                        .kube
                        .objects()
                        .into_iter()
                        .filter(|(_, o)| {
                            o["metadata"]["labels"]["berth.dev/site"] == site
                                && o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "berth"
                        })
                        .map(|(path, _)| format!("object {path}")),
                );
                left.extend(
                    server
                        .kube
                        .containers()
                        .into_iter()
                        .map(|c| format!("pod container {c}")),
                );
                let records = server.data.path().join("kubernetes-images").join(site);
                if records.exists() {
                    left.push(format!("image records {}", records.display()));
                }
            }
        }
        left.retain(|l| !l.trim().is_empty());
        left
    }
}
