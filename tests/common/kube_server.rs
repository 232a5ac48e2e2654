//! A berth server whose org runs new sites on the kubernetes target against a FAKE
//! Kubernetes API server (`fake_k8s.rs`), pushing images to the real registry
//! `scripts/docker-test-env.sh` starts on 127.0.0.1:5000. Dropping it removes the fake's pod
//! containers, the build network and the images the server built (its `berth.owner` label).

#![allow(dead_code, reason = "each test file uses a different part of the harness")]

use serde_json::{Value, json};

use crate::common::{TestServer, docker, prepare_engine};
use crate::fake_k8s::FakeKube;

/// The token berth is given; it must never appear anywhere but the Authorization header.
pub const TOKEN: &str = "k8s-token-7f3a9c1e5b2d4a6f8e0c";
pub const REGISTRY: &str = "127.0.0.1:5000";

/// A running berth server with the fake API server its org's kubernetes settings reach.
pub struct KubeServer {
    server: Option<TestServer>,
    /// The fake API server.
    pub kube: FakeKube,
    /// Its `berth.owner` label value.
    pub owner: String,
}

impl std::ops::Deref for KubeServer {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        self.server.as_ref().expect("server running")
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            drop(server.stop());
        }
        // The pods' containers first: an image a container uses cannot be removed.
        self.kube.remove_containers();
        // The org's build network (labelled with the server's owner id).
        let networks = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=berth.owner={}", self.owner),
        ]);
        for network in networks.split_whitespace() {
            docker(&["network", "rm", network]);
        }
        // The images this server built (its berth.owner label), and their registry tags.
        let images = docker(&["images", "-q", "--filter", &format!("label=berth.owner={}", self.owner)]);
        let mut ids: Vec<&str> = images.split_whitespace().collect();
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(ids);
            docker(&args);
        }
    }
}

impl KubeServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        prepare_engine();
        let kube = FakeKube::start(TOKEN).await;
        let connection = json!({"api_url": kube.url, "token": TOKEN});
        Self::start_on(kube, env, connection).await
    }

    /// A server with `env` whose org's kubernetes settings reach `kube` as `connection`
    /// (api_url and token, a kubeconfig, or in_cluster) says.
    pub async fn start_on(kube: FakeKube, env: &[(&str, &str)], connection: Value) -> Self {
        prepare_engine();
        let server = TestServer::start_with(env).await;
        let mut config = json!({
            "default": true,
            "registry": REGISTRY,
            "ingress_address": kube.ingress.to_string(),
            "ingress_class": "nginx",
        });
        for (key, value) in connection.as_object().unwrap() {
            config[key] = value.clone();
        }
        let (status, out) = server
            .patch("/api/config/kubernetes", &json!({ "config": config }))
            .await;
        assert_eq!(status, 200, "{out}");
        let owner = std::fs::read_to_string(server.data.path().join("docker-owner"))
            .expect("the server wrote its owner id")
            .trim()
            .to_string();
        Self {
            server: Some(server),
            kube,
            owner,
        }
    }

    /// Stops the server and starts a new server process on the same data dir.
    pub async fn restart(&mut self) {
        let data = self.server.take().expect("server running").stop();
        self.server = Some(TestServer::start_in(data, &[]).await);
    }

    /// The objects of `kind` labelled for `site`.
    pub fn of_site(&self, kind: &str, site: &str) -> Vec<Value> {
        self.of_kind(kind)
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["berth.dev/site"] == site)
            .collect()
    }

    /// The objects berth applied of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.kube
            .objects()
            .into_values()
            .filter(|o| o["kind"] == kind)
            .collect()
    }

    /// The namespace berth made for the org's apps (not its builds namespace).
    pub fn namespace(&self) -> String {
        let namespaces: Vec<Value> = self
            .of_kind("Namespace")
            .into_iter()
            .filter(|n| n["metadata"]["labels"]["app.kubernetes.io/component"] != "build")
            .collect();
        assert_eq!(namespaces.len(), 1, "{namespaces:?}");
        namespaces[0]["metadata"]["name"].as_str().unwrap().to_string()
    }

    /// The image the environment's Deployment runs.
    pub fn deployment_image(&self, name: &str) -> String {
        let path = format!("/apis/apps/v1/namespaces/{}/deployments/{name}", self.namespace());
        let d = self
            .kube
            .object(&path)
            .unwrap_or_else(|| panic!("no Deployment {path}"));
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    }
}
