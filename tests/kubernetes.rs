//! The kubernetes target against a FAKE Kubernetes API server (`common/fake_k8s.rs`, in
//! this process on loopback) whose fake kubelet runs the Deployment's image with the real
//! Docker Engine, pulled by digest from a real registry (Debian's docker-registry on
//! 127.0.0.1:5000, started by `scripts/docker-test-env.sh`), and whose fake ingress proxies
//! by Host to it. berth builds the image on the real engine, pushes it to the real
//! registry and serves the environment's host through its own edge.

#[path = "common/auth_registry.rs"]
mod auth_registry;
mod common;
#[path = "common/fake_k8s.rs"]
mod fake_k8s;
#[path = "common/kube_server.rs"]
mod kube_server;

use common::*;
use fake_k8s::{FakeKube, Rollout};
use kube_server::{KubeServer, REGISTRY, TOKEN};
use serde_json::{Value, json};

/// busybox httpd serving `text` on $PORT, as any non-root user.
fn dockerfile_app(text: &str) -> tempfile::TempDir {
    app(&[
        (
            "Dockerfile",
            "FROM berth-test/busybox:1\nCOPY index.html /www/index.html\nCMD [\"/bin/sh\", \"-c\", \"echo serving on $PORT; exec httpd -f -v -p $PORT -h /www\"]\n",
        ),
        ("index.html", text),
    ])
}

fn deployment_id(out: &Value) -> String {
    out["deployment"]["id"].as_str().expect("a deployment id").to_string()
}

/// Whether the real registry serves the manifest `digest` of `repo`.
async fn registry_has(repo: &str, digest: &str) -> bool {
    reqwest::Client::new()
        .head(format!("http://{REGISTRY}/v2/{repo}/manifests/{digest}"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test]
async fn kubernetes_fake_api_deploy_is_pushed_by_digest_rolled_out_locked_down_and_served_through_the_edge() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("hello from the cluster");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "kube", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    // The app's own answer, through berth's edge, the fake ingress and the real container.
    assert_eq!(
        server.edge("kube.localhost", "/").await,
        (200, "hello from the cluster".to_string())
    );

    // The site says its environment is live (not waiting for an instance of the shared
    // lifecycle, which runs none of it).
    let (_, described) = server.get("/api/sites/kube").await;
    assert_eq!(described["environments"][0]["status"], "live", "{described}");
    assert_eq!(described["status"], "live", "{described}");

    // The image runs by digest, and the real registry has it.
    let id = deployment_id(&out);
    let image = server.deployment_image("kube-production");
    let (name, digest) = image.split_once('@').expect("an image by digest");
    assert_eq!(name, format!("{REGISTRY}/berth/kube"));
    assert!(digest.starts_with("sha256:"), "{image}");
    assert!(registry_has("berth/kube", digest).await, "the registry serves {image}");
    let log = server.deployment_log(&id, "build").await;
    assert!(log.contains(&format!("pushed {image}")), "{log}");
    assert!(log.contains("rolled out; the edge serves it through"), "{log}");

    // The pod is locked down as the issue lists.
    let ns = server.namespace();
    let d = server
        .kube
        .object(&format!("/apis/apps/v1/namespaces/{ns}/deployments/kube-production"))
        .unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c["resources"]["limits"]["memory"].is_string() && c["resources"]["requests"]["cpu"].is_string());
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let ns_object = server.kube.object(&format!("/api/v1/namespaces/{ns}")).unwrap();
    assert_eq!(
        ns_object["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let policy = &server.of_kind("NetworkPolicy")[0];
    assert!(policy["spec"].to_string().contains("169.254.0.0/16"), "{policy}");
    let ingress = &server.of_kind("Ingress")[0];
    assert_eq!(ingress["spec"]["rules"][0]["host"], "kube.localhost");

    // Everything berth applied: with field manager berth, labelled as berth's.
    for (method, path) in server.kube.seen() {
        if method == "PATCH" {
            assert!(path.contains("fieldManager=berth"), "{path}");
        }
    }
    for object in server
        .kube
        .objects()
        .values()
        .filter(|o| o["kind"] != "Pod" && o["kind"] != "Event")
    {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "berth",
            "{object}"
        );
        assert!(object["metadata"]["labels"]["berth.dev/org"].is_string(), "{object}");
    }
    assert_eq!(d["metadata"]["labels"]["berth.dev/deployment"], id.as_str());

    // The token is sealed: not in the settings' output, the logs or the data dir's files.
    let (_, cfg) = server.get("/api/config/kubernetes").await;
    assert!(!cfg.to_string().contains(TOKEN), "{cfg}");
    assert!(!server.log().contains(TOKEN), "the server log holds the token");
    assert!(!log.contains(TOKEN), "the build log holds the token");
    let (status, tested) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(tested["detail"].to_string().contains("v1.31.0-fake"), "{tested}");
    assert!(!tested.to_string().contains(TOKEN), "{tested}");
}

#[tokio::test]
async fn kubernetes_fake_api_image_pull_failure_and_crash_loop_fail_with_the_reason_and_the_previous_deployment_keeps_serving()
 {
    let server = KubeServer::start().await;
    let site = dockerfile_app("version one");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "keel", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let first_image = server.deployment_image("keel-production");

    // The image cannot be pulled.
    std::fs::write(site.path().join("index.html"), "version two").unwrap();
    server.kube.set_rollout(Rollout::ImagePullFailure);
    let (_, out) = server.post("/api/sites/keel/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ErrImagePull") || error.contains("ImagePullBackOff"),
        "{out}"
    );
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(
        log.contains("event Failed: Failed to pull image"),
        "the pod's Events are in the log: {log}"
    );
    assert_eq!(
        server.edge("keel.localhost", "/").await,
        (200, "version one".to_string()),
        "the previous deployment still serves"
    );
    assert_eq!(
        server.deployment_image("keel-production"),
        first_image,
        "the image that cannot be pulled is no longer the desired one"
    );

    // The app crashes at start.
    server.kube.set_rollout(Rollout::Run);
    std::fs::write(
        site.path().join("Dockerfile"),
        "FROM berth-test/busybox:1\nCMD [\"/bin/sh\", \"-c\", \"echo missing DATABASE_URL; exit 1\"]\n",
    )
    .unwrap();
    let (_, out) = server.post("/api/sites/keel/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("CrashLoopBackOff"), "{out}");
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(
        log.contains("missing DATABASE_URL"),
        "the container's last lines are in the log: {log}"
    );
    assert!(log.contains("event BackOff"), "{log}");
    assert_eq!(
        server.edge("keel.localhost", "/").await,
        (200, "version one".to_string()),
        "the previous deployment still serves"
    );
    // The cluster's desired state is the serving deployment again, not the crashing one:
    // when the cluster restarts the pods, the previous version comes back.
    assert_eq!(
        server.deployment_image("keel-production"),
        first_image,
        "the failed rollout's template was replaced by the serving one"
    );
    assert!(log.contains("restored the previous deployment"), "{log}");
    server.kube.restart_pods();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let answer = server.edge("keel.localhost", "/").await;
        if answer == (200, "version one".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after a restart of the pods the edge answers {answer:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn kubernetes_fake_api_promote_and_rollback_move_the_image_by_digest_without_a_rebuild() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("first");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "hoist", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let first = deployment_id(&out);
    let first_image = server.deployment_image("hoist-production");

    std::fs::write(site.path().join("index.html"), "preview").unwrap();
    let (status, out) = server
        .post(
            "/api/sites/hoist/environments",
            &json!({"name": "feature", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let preview = deployment_id(&out);
    let preview_image = server.deployment_image("hoist-feature");
    assert_ne!(preview_image, first_image);
    assert_eq!(
        server.edge("feature--hoist.localhost", "/").await,
        (200, "preview".to_string())
    );

    let (status, out) = server
        .post("/api/sites/hoist/promote", &json!({"deployment_id": preview}))
        .await;
    assert_eq!(status, 200, "{out}");
    let promoted = deployment_id(&out);
    assert_eq!(
        server.deployment_image("hoist-production"),
        preview_image,
        "the same digest"
    );
    assert_eq!(server.edge("hoist.localhost", "/").await, (200, "preview".to_string()));
    let log = server.deployment_log(&promoted, "build").await;
    assert!(log.contains("the same files and image (by digest)"), "{log}");
    assert!(!log.contains("building"), "nothing rebuilt: {log}");

    let (status, out) = server.post("/api/sites/hoist/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["deployment"]["id"], first.as_str(), "{out}");
    assert_eq!(server.deployment_image("hoist-production"), first_image);
    assert_eq!(server.edge("hoist.localhost", "/").await, (200, "first".to_string()));
}

#[tokio::test]
async fn kubernetes_fake_api_deleting_a_site_removes_its_labelled_objects_and_touches_nothing_else() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("short-lived");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "brief", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let ns = server.namespace();
    // Objects berth did not make: one unlabelled with the site's label, one of another
    // manager, both in the org's namespace.
    let foreign = [
        (
            format!("/apis/apps/v1/namespaces/{ns}/deployments/brief-cache"),
            json!({"kind": "Deployment", "metadata": {"name": "brief-cache", "namespace": ns, "labels": {"berth.dev/site": "brief"}}, "spec": {}}),
        ),
        (
            format!("/api/v1/namespaces/{ns}/services/brief-db"),
            json!({"kind": "Service", "metadata": {"name": "brief-db", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "helm"}}, "spec": {}}),
        ),
    ];
    for (path, object) in &foreign {
        server.kube.put(path, object.clone());
    }
    let records = server.data.path().join("kubernetes-images/brief");
    assert!(records.is_dir(), "berth records the site's images by digest");
    let (status, out) = server.delete("/api/sites/brief").await;
    assert_eq!(status, 200, "{out}");
    assert!(!records.exists(), "the site's image records go with it");
    for kind in ["Deployment", "Service", "Ingress"] {
        let left: Vec<Value> = server
            .of_kind(kind)
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "berth")
            .collect();
        assert!(left.is_empty(), "berth's {kind} of the deleted site is left: {left:?}");
    }
    for (path, object) in &foreign {
        assert_eq!(server.kube.object(path).as_ref(), Some(object), "{path} was changed");
        assert!(
            !server
                .kube
                .seen()
                .iter()
                .any(|(m, p)| m != "GET" && p.starts_with(path.as_str())),
            "berth wrote to {path}"
        );
    }
    assert_eq!(server.edge("brief.localhost", "/").await.0, 404);
}

#[tokio::test]
async fn kubernetes_bad_settings_are_refused_naming_the_key_and_change_nothing() {
    let kube = FakeKube::start(TOKEN).await;
    let server = TestServer::start().await;
    let good = json!({
        "api_url": kube.url, "token": TOKEN, "registry": REGISTRY,
        "ingress_address": kube.ingress.to_string(),
    });
    let (status, out) = server.patch("/api/config/kubernetes", &json!({"config": good})).await;
    assert_eq!(status, 200, "{out}");
    for (bad, key) in [
        (json!({"api_url": "ftp://cluster"}), "api_url"),
        (json!({"registry": "https://127.0.0.1:5000"}), "registry"),
        (json!({"ingress_address": "ingress.local"}), "ingress_address"),
        (json!({"namespace_prefix": "Berth_"}), "namespace_prefix"),
        (json!({"memory_limit": "lots"}), "memory_limit"),
        (json!({"quota_pods": 0}), "quota_pods"),
        (json!({"ca_certificate": "not a certificate"}), "ca_certificate"),
        (json!({"token": "two words"}), "token"),
        (json!({"default": "yes"}), "default"),
        (json!({"cert_manager_issuer": "Lets Encrypt"}), "cert_manager_issuer"),
    ] {
        let (status, out) = server.patch("/api/config/kubernetes", &json!({"config": bad})).await;
        assert_eq!(status, 400, "{bad}: {out}");
        assert!(out.to_string().contains(key), "the error names {key}: {out}");
        assert!(!out.to_string().contains(TOKEN), "{out}");
    }
    // A plain-HTTP registry is a yes or no, said so.
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"registry_insecure": "yes"}}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out.to_string().contains("'registry_insecure' must be true"), "{out}");
    let (_, cfg) = server.get("/api/config/kubernetes").await;
    let config = &cfg["providers"][0]["config"];
    assert_eq!(config["registry"], REGISTRY, "{cfg}");
    assert!(
        config.get("registry_insecure").is_none_or(Value::is_null),
        "unchanged: {cfg}"
    );
    assert_eq!(config["api_url"], kube.url, "{cfg}");
    assert!(!cfg.to_string().contains(TOKEN), "{cfg}");

    // A wrong token: the connection test says so without echoing any token.
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"token": "wrong-token-0000"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["ok"], false, "{out}");
    assert!(out["detail"].to_string().contains("Unauthorized"), "{out}");
    assert!(!out.to_string().contains("wrong-token-0000"), "{out}");
    assert!(!server.log().contains("wrong-token-0000") && !server.log().contains(TOKEN));
}

/// The uid of each of the site's Deployment, Service and Ingress (exactly one each), all
/// dependents of the site's owner object, whose uid comes first.
fn owned_objects(server: &KubeServer, site: &str) -> Vec<String> {
    let owners = server.of_site("ConfigMap", site);
    assert_eq!(owners.len(), 1, "one owner object per site: {owners:?}");
    let owner_uid = owners[0]["metadata"]["uid"].as_str().unwrap().to_string();
    let mut uids = vec![owner_uid.clone()];
    for kind in ["Deployment", "Service", "Ingress"] {
        let objects = server.of_site(kind, site);
        assert_eq!(objects.len(), 1, "one {kind} of {site}: {objects:?}");
        let refs = &objects[0]["metadata"]["ownerReferences"];
        assert_eq!(refs[0]["kind"], "ConfigMap", "{kind}: {refs}");
        assert_eq!(
            refs[0]["uid"],
            owner_uid.as_str(),
            "{kind} is owned by the site's owner: {refs}"
        );
        uids.push(objects[0]["metadata"]["uid"].as_str().unwrap().to_string());
    }
    uids
}

#[tokio::test]
async fn kubernetes_fake_api_objects_are_owned_by_the_site_adopted_after_a_restart_and_deleting_the_owner_cascades() {
    let mut server = KubeServer::start().await;
    let site = dockerfile_app("anchored one");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "anchor", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let before = owned_objects(&server, "anchor");
    // Another manager's object, unlabelled, where another site's Deployment would go.
    let ns = server.namespace();
    let foreign_path = format!("/apis/apps/v1/namespaces/{ns}/deployments/other-production");
    let foreign = json!({"kind": "Deployment", "metadata": {"name": "other-production", "namespace": ns}, "spec": {"replicas": 3}});
    server.kube.put(&foreign_path, foreign.clone());

    // A new server process on the same data dir adopts what berth made: the redeploy
    // updates the same objects in place.
    server.restart().await;
    std::fs::write(site.path().join("index.html"), "anchored two").unwrap();
    let (_, out) = server.post("/api/sites/anchor/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("anchor.localhost", "/").await,
        (200, "anchored two".to_string())
    );
    assert_eq!(
        owned_objects(&server, "anchor"),
        before,
        "updated in place, no duplicates"
    );

    // An object berth did not make is never taken over.
    let other = dockerfile_app("other");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "other", "repo": s(other.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("other-production") && error.contains("not berth's"),
        "{out}"
    );
    assert_eq!(
        server.kube.object(&foreign_path),
        Some(foreign),
        "the foreign object is unchanged"
    );
    assert!(
        !server
            .kube
            .seen()
            .iter()
            .any(|(m, p)| m != "GET" && p.starts_with(foreign_path.as_str())),
        "berth wrote to {foreign_path}"
    );

    // Deleting the site's owner object (as `kubectl delete` would) deletes its objects.
    let owner = &server.of_site("ConfigMap", "anchor")[0];
    let owner_path = format!(
        "/api/v1/namespaces/{ns}/configmaps/{}",
        owner["metadata"]["name"].as_str().unwrap()
    );
    let answer = reqwest::Client::new()
        .delete(format!("{}{owner_path}", server.kube.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
    for kind in ["Deployment", "Service", "Ingress"] {
        assert!(
            server.of_site(kind, "anchor").is_empty(),
            "the {kind} went with its owner"
        );
    }
}

#[tokio::test]
async fn kubernetes_fake_api_custom_domains_are_ingress_hosts_with_cert_managers_annotation_when_set() {
    let dns = common::pebble::Dns::start().await;
    let server = KubeServer::start_with(&[("BERTH_DNS_RESOLVERS", &dns.resolver())]).await;
    let site = dockerfile_app("docked");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "dock", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (status, added) = server
        .post("/api/sites/dock/domains", &json!({"domain": "dock.example.org"}))
        .await;
    assert_eq!(status, 201, "{added}");
    let token = added["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .expect("TXT record")["value"]
        .as_str()
        .unwrap()
        .to_string();
    dns.set(
        "/set-cname",
        json!({"host": "dock.example.org", "target": "dock.localhost"}),
    )
    .await;
    dns.set(
        "/set-txt",
        json!({"host": "_berth-challenge.dock.example.org.", "value": token}),
    )
    .await;
    let (status, checked) = server
        .post("/api/sites/dock/domains/dock.example.org/validate", &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "active", "{checked:#}");

    // cert-manager issues the custom domains' certificates in this cluster.
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"cert_manager_issuer": "letsencrypt"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, out) = server.post("/api/sites/dock/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let ingress = &server.of_site("Ingress", "dock")[0];
    let hosts: Vec<&str> = ingress["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["host"].as_str())
        .collect();
    assert_eq!(hosts, ["dock.localhost", "dock.example.org"], "{ingress}");
    assert_eq!(
        ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt",
        "{ingress}"
    );
    assert_eq!(
        ingress["spec"]["tls"][0]["hosts"],
        json!(["dock.example.org"]),
        "{ingress}"
    );
    assert!(
        server
            .of_site("Secret", "dock")
            .iter()
            .all(|o| o["type"] != "kubernetes.io/tls"),
        "cert-manager makes the TLS Secret"
    );
    assert_eq!(server.edge("dock.example.org", "/").await, (200, "docked".to_string()));
}

#[tokio::test]
async fn kubernetes_fake_api_pruned_deployments_take_their_image_records_with_them() {
    let server = KubeServer::start_with(&[("BERTH_KEEP_DEPLOYMENTS", "2")]).await;
    let site = dockerfile_app("version 0");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "tidy", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let mut ids = vec![deployment_id(&out)];
    for n in 1..4 {
        std::fs::write(site.path().join("index.html"), format!("version {n}")).unwrap();
        let (_, out) = server.post("/api/sites/tidy/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}");
        ids.push(deployment_id(&out));
    }
    // Two deployments kept (the setting), so two image records: theirs. (The pruning
    // follows a deploy's end, so the last one's is waited for.)
    let records = server.data.path().join("kubernetes-images/tidy");
    let kept = || {
        let mut kept: Vec<String> = std::fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        kept
    };
    let mut newest = ids[2..].to_vec();
    newest.sort();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while kept() != newest && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(kept(), newest, "the pruned deployments' records are gone");
    assert_eq!(server.edge("tidy.localhost", "/").await, (200, "version 3".to_string()));
}

#[tokio::test]
async fn kubernetes_fake_api_dry_run_shows_the_objects_sealed_and_builds_and_applies_nothing() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("dry");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "arid", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let secret = "pg-password-5c1e9a7b";
    let (status, out) = server
        .patch(
            "/api/sites/arid/env",
            &json!({"vars": {"DATABASE_URL": format!("postgres://app:{secret}@db/app")}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let objects_before = server.kube.objects();
    let requests_before = server.kube.seen().len();
    let (_, listed) = server.get("/api/sites/arid/deployments").await;
    let deployments_before = listed["deployments"].as_array().unwrap().len();

    let (status, dry) = server.post("/api/sites/arid/deploy", &json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["checked_by"], "server", "{dry}");
    assert_eq!(dry["target"], "kubernetes", "{dry}");
    let kinds: Vec<&str> = dry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    for kind in [
        "Namespace",
        "NetworkPolicy",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let deployment = dry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    // The variables are read from their Secret, listed with its values sealed.
    let variables = dry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["labels"]["berth.dev/variables"] == "true")
        .unwrap_or_else(|| panic!("the variables' Secret in {dry}"));
    assert_eq!(variables["data"]["DATABASE_URL"], "<sealed>", "{variables}");
    assert_eq!(variables["data"]["PORT"], "<sealed>", "{variables}");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let var = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {env}"))
            .clone()
    };
    let reference = &var("DATABASE_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(reference["name"], variables["metadata"]["name"], "{env}");
    assert_eq!(reference["key"], "DATABASE_URL", "{env}");
    assert!(var("DATABASE_URL").get("value").is_none(), "{env}");
    assert!(!dry.to_string().contains(secret), "no secret in the dry run: {dry}");
    // Nothing built, stored or applied: only dry-run applies reached the cluster.
    assert_eq!(server.kube.objects(), objects_before);
    for (method, path) in &server.kube.seen()[requests_before..] {
        assert!(method == "GET" || path.contains("dryRun=All"), "{method} {path}");
    }
    let (_, listed) = server.get("/api/sites/arid/deployments").await;
    assert_eq!(listed["deployments"].as_array().unwrap().len(), deployments_before);

    // The same over MCP.
    let config =
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(server.api("/mcp"))
            .auth_header(KEY.to_string());
    let client = rmcp::ServiceExt::serve((), rmcp::transport::StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP client connects");
    let params = rmcp::model::CallToolRequestParams::new("HOSTING_DEPLOY")
        .with_arguments(json!({"site": "arid", "dry_run": true}).as_object().cloned().unwrap());
    let answer = client.call_tool(params).await.expect("tool call");
    assert_ne!(answer.is_error, Some(true), "{answer:?}");
    let content = answer.structured_content.expect("structured content");
    assert_eq!(content["dry_run"]["checked_by"], "server", "{content}");
    assert!(!content.to_string().contains(secret), "{content}");
    assert!(content.get("deployment").is_none(), "no deployment was made: {content}");

    // A cluster that does not answer: berth's rendered manifests, said so.
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"api_url": "http://127.0.0.1:9"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, dry) = server.post("/api/sites/arid/deploy", &json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["checked_by"], "rendered", "{dry}");
    assert!(dry["note"].as_str().unwrap().contains("not answering"), "{dry}");
    assert!(!dry.to_string().contains(secret), "{dry}");

    // Bad input changes nothing and names the fix.
    let (status, out) = server
        .post("/api/sites/arid/deploy", &json!({"dry_run": true, "branch": "main"}))
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out.to_string().contains("leave out branch"), "{out}");
}

#[tokio::test]
async fn dry_run_on_a_site_of_another_target_is_refused_naming_the_target() {
    let server = TestServer::start().await;
    let dir = python_app("local app");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "plain", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (status, out) = server.post("/api/sites/plain/deploy", &json!({"dry_run": true})).await;
    assert_eq!(status, 400, "{out}");
    let (_, listed) = server.get("/api/sites/plain/deployments").await;
    assert_eq!(listed["deployments"].as_array().unwrap().len(), 1, "nothing deployed");
    assert!(out.to_string().contains("target 'local'"), "{out}");
}

/// busybox httpd that says which container it is when it starts.
fn talking_app(text: &str) -> tempfile::TempDir {
    app(&[
        (
            "Dockerfile",
            "FROM berth-test/busybox:1\nCOPY index.html /www/index.html\nCMD [\"/bin/sh\", \"-c\", \"echo serving on $PORT as $(hostname); exec httpd -f -v -p $PORT -h /www\"]\n",
        ),
        ("index.html", text),
    ])
}

/// Waits (bounded) until `check` holds; panics with `what` otherwise.

#[tokio::test]
async fn kubernetes_fake_api_scaling_sets_the_deployments_replicas_within_the_settings() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("many of us");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "tide", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let ns = server.namespace();
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/tide-production");

    // At least three instances: the Deployment runs three ready pods.
    let (status, out) = server
        .patch(
            "/api/sites/tide/scaling",
            &json!({"min_instances": 3, "max_instances": 4}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(server.kube.object(&path).unwrap()["spec"]["replicas"], 3);
    eventually("three ready pods", 90, async || {
        server.kube.ready_containers(&ns, "tide-production").len() == 3
    })
    .await;
    let (_, config) = server.get("/api/sites/tide/scaling").await;
    assert_eq!(config["running_instances"], 3, "{config}");
    for _ in 0..3 {
        assert_eq!(
            server.edge("tide.localhost", "/").await,
            (200, "many of us".to_string())
        );
    }
    // A new release keeps the environment's scale.
    std::fs::write(site.path().join("index.html"), "still many").unwrap();
    let (_, out) = server.post("/api/sites/tide/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    assert_eq!(server.kube.object(&path).unwrap()["spec"]["replicas"], 3);
    assert_eq!(server.kube.ready_containers(&ns, "tide-production").len(), 3);

    // Back to one: the surplus pods' containers are gone.
    let (status, out) = server
        .patch(
            "/api/sites/tide/scaling",
            &json!({"min_instances": 1, "max_instances": 1}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(server.kube.object(&path).unwrap()["spec"]["replicas"], 1);
    eventually("one ready pod", 90, async || {
        server.kube.ready_containers(&ns, "tide-production").len() == 1 && server.kube.containers().len() == 1
    })
    .await;

    // Beyond the target's table, or the org's max_replicas: refused, nothing changed.
    let (status, out) = server
        .patch("/api/sites/tide/scaling", &json!({"max_instances": 11}))
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("target 'kubernetes'"),
        "{out}"
    );
    let (status, out) = server
        .patch("/api/config/kubernetes", &json!({"config": {"max_replicas": 2}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = server
        .patch(
            "/api/sites/tide/scaling",
            &json!({"min_instances": 3, "max_instances": 3}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("target 'kubernetes'") && message.contains("at most 2"),
        "{out}"
    );
    assert_eq!(server.kube.object(&path).unwrap()["spec"]["replicas"], 1);
}

#[tokio::test]
async fn kubernetes_fake_api_an_idle_environment_scales_to_zero_and_the_next_request_wakes_it() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("awake again");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "drowse", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let id = deployment_id(&out);
    let ns = server.namespace();
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/drowse-production");
    let (status, out) = server
        .patch(
            "/api/sites/drowse/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{out}");

    // No requests: the Deployment goes to zero replicas and its pods' containers stop.
    // berth counts the instance gone once it has seen the pods go, a moment after.
    eventually(
        "zero replicas, no containers and none counted running",
        90,
        async || {
            server.kube.object(&path).unwrap()["spec"]["replicas"] == 0
                && server.kube.containers().is_empty()
                && server.get("/api/sites/drowse/scaling").await.1["running_instances"] == 0
        },
    )
    .await;

    // The next request is held by the edge while the environment scales back up.
    assert_eq!(
        server.edge("drowse.localhost", "/").await,
        (200, "awake again".to_string()),
        "{}\n{:?}",
        server.log(),
        server.kube.seen()
    );
    assert_eq!(server.kube.object(&path).unwrap()["spec"]["replicas"], 1);
    assert_eq!(server.kube.ready_containers(&ns, "drowse-production").len(), 1);
    let log = server.deployment_log(&id, "runtime").await;
    assert!(log.contains("scaled to zero replicas"), "{log}");
    assert!(log.contains("a request woke the app"), "{log}");
}

#[tokio::test]
async fn kubernetes_fake_api_runtime_logs_follow_every_pod_into_the_log_store() {
    let server = KubeServer::start().await;
    let site = talking_app("talking");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "chatter", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let id = deployment_id(&out);
    let starts = async || {
        server
            .deployment_log(&id, "runtime")
            .await
            .lines()
            .filter(|l| l.starts_with("serving on 8080 as "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    eventually("the first pod's output in the runtime log", 90, async || {
        starts().await.len() == 1
    })
    .await;

    // A second pod: followed as it appears; the first one's lines are not repeated.
    let (status, out) = server
        .patch(
            "/api/sites/chatter/scaling",
            &json!({"min_instances": 2, "max_instances": 2}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    eventually("the second pod's output in the runtime log", 90, async || {
        starts().await.len() == 2
    })
    .await;
    let lines = starts().await;
    assert_ne!(lines[0], lines[1], "two pods, each once: {lines:?}");

    // The same lines through the environment's logs (HOSTING_GET_LOGS' REST twin).
    let (_, logs) = server.get("/api/sites/chatter/environments/production/logs").await;
    let text = logs.to_string();
    assert!(text.contains(&lines[0]) && text.contains(&lines[1]), "{logs}");
}

#[tokio::test]
async fn kubernetes_fake_api_usage_comes_from_pod_metrics_or_says_the_cluster_has_no_metrics_api() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("measured");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "gauge", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    // Let a reconcile pass record the environment's replicas.
    let (status, out) = server
        .patch("/api/sites/gauge/scaling", &json!({"min_instances": 1}))
        .await;
    assert_eq!(status, 200, "{out}");

    // Without metrics.k8s.io: said so, nothing made up.
    let (status, usage) = server.get("/api/sites/gauge/usage").await;
    assert_eq!(status, 200, "{usage}");
    let why = usage["usage_unavailable"].as_str().unwrap_or_default();
    assert!(why.contains("no metrics API"), "{usage}");
    assert!(usage["instances"][0]["memory_bytes"].is_null(), "{usage}");

    // With it: the pod's CPU and memory, as docker measured its container.
    server.kube.offer_metrics(true);
    let (status, usage) = server.get("/api/sites/gauge/usage").await;
    assert_eq!(status, 200, "{usage}");
    assert!(usage["usage_unavailable"].is_null(), "{usage}");
    let instance = &usage["instances"][0];
    assert!(instance["memory_bytes"].as_u64().is_some_and(|b| b > 0), "{usage}");
    assert!(instance["cpu_percent"].as_f64().is_some(), "{usage}");
    assert_eq!(instance["memory_limit_bytes"], 512u64 << 20, "{usage}");
}

/// The path of the Knative object `kind` (`services`, `revisions`, `domainmappings`)
/// `name` in `ns`.
fn knative_path(ns: &str, plural: &str, name: &str) -> String {
    let version = if plural == "domainmappings" { "v1beta1" } else { "v1" };
    format!("/apis/serving.knative.dev/{version}/namespaces/{ns}/{plural}/{name}")
}

/// The revision all traffic of the environment's Knative Service is pinned to.
fn pinned_revision(server: &KubeServer, service: &str) -> String {
    let svc = server
        .kube
        .object(&knative_path(&server.namespace(), "services", service))
        .unwrap_or_else(|| panic!("no Knative Service {service}"));
    let traffic = &svc["spec"]["traffic"];
    assert_eq!(traffic.as_array().map(Vec::len), Some(1), "{svc}");
    assert_eq!(traffic[0]["percent"], 100, "{svc}");
    assert_eq!(traffic[0]["latestRevision"], false, "pinned: {svc}");
    traffic[0]["revisionName"].as_str().unwrap().to_string()
}

/// How many images berth pushed for the site's deployments (their build logs).
async fn pushes(server: &KubeServer, site: &str) -> usize {
    let (_, list) = server.get(&format!("/api/sites/{site}/deployments")).await;
    let mut count = 0;
    for d in list["deployments"].as_array().expect("deployments") {
        let log = server.deployment_log(d["id"].as_str().unwrap(), "build").await;
        count += log.lines().filter(|l| l.contains("pushing ")).count();
    }
    count
}

#[tokio::test]
async fn kubernetes_fake_knative_deploy_serves_the_pinned_revision_and_rollback_moves_the_pin_without_a_build() {
    let server = KubeServer::start().await;
    server.kube.offer_knative(true);
    let site = dockerfile_app("revision one");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "kn", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let first = deployment_id(&out);
    assert_eq!(
        server.edge("kn.localhost", "/").await,
        (200, "revision one".to_string())
    );
    // One Knative Service instead of Deployment + Service + Ingress.
    assert!(server.of_kind("Deployment").is_empty());
    assert!(server.of_kind("Ingress").is_empty());
    let ns = server.namespace();
    let first_revision = pinned_revision(&server, "kn-production");
    assert!(first_revision.starts_with("kn-production-dpl-"), "{first_revision}");
    let svc = server
        .kube
        .object(&knative_path(&ns, "services", "kn-production"))
        .unwrap();
    let template = &svc["spec"]["template"];
    assert_eq!(template["metadata"]["name"], first_revision.as_str());
    assert_eq!(template["metadata"]["annotations"]["serving.knative.dev/no-gc"], "true");
    assert_eq!(template["metadata"]["labels"]["berth.dev/deployment"], first.as_str());
    let pod = &template["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The activator reaches the apps; the host is a DomainMapping to the Service.
    let policy = &server.of_kind("NetworkPolicy")[0];
    assert!(
        policy["spec"]["ingress"].to_string().contains("knative-serving"),
        "{policy}"
    );
    let mapping = server
        .kube
        .object(&knative_path(&ns, "domainmappings", "kn.localhost"))
        .expect("a DomainMapping of the environment's host");
    assert_eq!(mapping["spec"]["ref"]["name"], "kn-production", "{mapping}");
    assert_eq!(mapping["spec"]["ref"]["kind"], "Service", "{mapping}");
    assert_eq!(server.of_kind("Revision").len(), 1);

    // A second deploy: a new revision, and the pin moves to it once it is ready.
    std::fs::write(site.path().join("index.html"), "revision two").unwrap();
    let (_, out) = server.post("/api/sites/kn/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let second_revision = pinned_revision(&server, "kn-production");
    assert_ne!(second_revision, first_revision);
    assert_eq!(
        server.edge("kn.localhost", "/").await,
        (200, "revision two".to_string())
    );
    assert_eq!(server.of_kind("Revision").len(), 2);

    // Rollback: the pin moves back; nothing is built or pushed, no revision is made.
    let pushed = pushes(&server, "kn").await;
    assert_eq!(pushed, 2);
    let (status, out) = server.post("/api/sites/kn/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["deployment"]["id"], first.as_str(), "{out}");
    assert_eq!(pinned_revision(&server, "kn-production"), first_revision);
    assert_eq!(server.of_kind("Revision").len(), 2, "no new revision");
    assert_eq!(pushes(&server, "kn").await, pushed, "nothing pushed");
    assert_eq!(
        server.edge("kn.localhost", "/").await,
        (200, "revision one".to_string())
    );
    // Both revisions stay kept from Knative's garbage collection while berth keeps them.
    for revision in server.of_kind("Revision") {
        assert_eq!(
            revision["metadata"]["annotations"]["serving.knative.dev/no-gc"], "true",
            "{revision}"
        );
    }
}

#[tokio::test]
async fn kubernetes_fake_knative_a_crash_looping_revision_fails_the_deploy_and_the_old_one_keeps_serving() {
    let server = KubeServer::start().await;
    server.kube.offer_knative(true);
    let site = dockerfile_app("steady");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "calm", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let serving = pinned_revision(&server, "calm-production");

    std::fs::write(
        site.path().join("Dockerfile"),
        "FROM berth-test/busybox:1\nCMD [\"/bin/sh\", \"-c\", \"echo missing DATABASE_URL; exit 1\"]\n",
    )
    .unwrap();
    let (_, out) = server.post("/api/sites/calm/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("CrashLoopBackOff"), "{out}");
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(log.contains("missing DATABASE_URL"), "the app's last lines: {log}");
    assert!(
        log.contains(&format!(
            "the revision {serving} keeps all of the environment's traffic"
        )),
        "{log}"
    );
    assert_eq!(pinned_revision(&server, "calm-production"), serving);
    assert_eq!(server.edge("calm.localhost", "/").await, (200, "steady".to_string()));
}

#[tokio::test]
async fn kubernetes_fake_knative_min_instances_zero_is_knatives_min_scale_and_berth_sets_no_replicas() {
    let server = KubeServer::start().await;
    server.kube.offer_knative(true);
    let site = dockerfile_app("sleepy");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "nap", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (status, out) = server
        .patch(
            "/api/sites/nap/scaling",
            &json!({"min_instances": 0, "max_instances": 3}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, out) = server.post("/api/sites/nap/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let ns = server.namespace();
    let svc = server
        .kube
        .object(&knative_path(&ns, "services", "nap-production"))
        .unwrap();
    let annotations = &svc["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/min-scale"], "0", "{svc}");
    assert_eq!(annotations["autoscaling.knative.dev/max-scale"], "3", "{svc}");
    assert!(annotations["autoscaling.knative.dev/target"].is_string(), "{svc}");
    assert_eq!(server.edge("nap.localhost", "/").await, (200, "sleepy".to_string()));
    // The reconciler has placed the environment (its pods' log is followed), and berth
    // set no replicas anywhere: Knative's autoscaler owns the scale.
    eventually("the reconciler follows the revision's pods", 90, async || {
        server
            .kube
            .seen()
            .iter()
            .any(|(_, path)| path.contains("/log?") && path.contains("follow=true"))
    })
    .await;
    let (status, out) = server
        .patch(
            "/api/sites/nap/scaling",
            &json!({"min_instances": 2, "max_instances": 3}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(
        !server.kube.seen().iter().any(|(_, path)| path.contains("/scale?")),
        "berth set replicas: {:?}",
        server.kube.seen()
    );
    assert!(server.of_kind("Deployment").is_empty());
}

#[tokio::test]
async fn kubernetes_fake_knative_on_without_knative_in_the_cluster_is_refused_naming_the_setting() {
    let server = KubeServer::start().await;
    let (status, out) = server
        .patch("/api/config/kubernetes", &json!({"config": {"knative": "sometimes"}}))
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out.to_string().contains("'knative'"), "{out}");
    let (status, out) = server
        .patch("/api/config/kubernetes", &json!({"config": {"knative": "on"}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, tested) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(tested["ok"], false, "{tested}");
    assert!(tested.to_string().contains("serving.knative.dev/v1"), "{tested}");
    // With Knative in the cluster the answer says how the target behaves there.
    server.kube.offer_knative(true);
    let (_, tested) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(tested.to_string().contains("activator wakes"), "{tested}");
}

/// Adds `domain` to `site` and has it validated (DNS served by the fake resolver).
async fn activate_domain(server: &KubeServer, dns: &common::pebble::Dns, site: &str, domain: &str) {
    let (status, added) = server
        .post(&format!("/api/sites/{site}/domains"), &json!({"domain": domain}))
        .await;
    assert_eq!(status, 201, "{added}");
    let token = added["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "TXT")
        .expect("TXT record")["value"]
        .as_str()
        .unwrap()
        .to_string();
    dns.set(
        "/set-cname",
        json!({"host": domain, "target": format!("{site}.localhost")}),
    )
    .await;
    dns.set(
        "/set-txt",
        json!({"host": format!("_berth-challenge.{domain}."), "value": token}),
    )
    .await;
    let (status, checked) = server
        .post(&format!("/api/sites/{site}/domains/{domain}/validate"), &json!({}))
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["status"], "active", "{checked:#}");
}

#[tokio::test]
async fn kubernetes_fake_api_a_domain_reaches_the_ingress_at_once_and_its_removal_takes_host_and_secret() {
    let dns = common::pebble::Dns::start().await;
    let server = KubeServer::start_with(&[("BERTH_DNS_RESOLVERS", &dns.resolver())]).await;
    let site = dockerfile_app("quay");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "quay", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let hosts = |server: &KubeServer| -> Vec<String> {
        server.of_site("Ingress", "quay")[0]["spec"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["host"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(hosts(&server), ["quay.localhost"]);

    // Served at once: the Ingress lists the domain without a new deploy.
    activate_domain(&server, &dns, "quay", "quay.example.org").await;
    assert_eq!(hosts(&server), ["quay.localhost", "quay.example.org"]);
    assert_eq!(server.edge("quay.example.org", "/").await, (200, "quay".to_string()));
    let (_, list) = server.get("/api/sites/quay/deployments").await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), 1, "no deploy: {list}");

    // The domain's TLS Secret as berth labels it, and a Secret berth did not make.
    let ns = server.namespace();
    let ingress = &server.of_site("Ingress", "quay")[0];
    let mut labels = ingress["metadata"]["labels"].clone();
    labels["berth.dev/deployment"] = json!("dpl_old");
    let secret_path = format!("/api/v1/namespaces/{ns}/secrets/quay-production-tls-quay-example-org");
    server.kube.put(
        &secret_path,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "quay-production-tls-quay-example-org", "namespace": ns, "labels": labels}}),
    );
    let foreign_path = format!("/api/v1/namespaces/{ns}/secrets/someone-elses");
    server.kube.put(
        &foreign_path,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "someone-elses", "namespace": ns, "labels": {"berth.dev/site": "quay"}}}),
    );

    // Removed: the host and its Secret are gone; the unlabelled Secret stays.
    let (status, out) = server.delete("/api/sites/quay/domains/quay.example.org").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(hosts(&server), ["quay.localhost"]);
    assert!(
        server.kube.object(&secret_path).is_none(),
        "the removed domain's Secret is deleted"
    );
    assert!(server.kube.object(&foreign_path).is_some(), "not berth's: left alone");
}

#[tokio::test]
async fn kubernetes_fake_knative_a_domain_is_a_domain_mapping_at_once_and_goes_with_its_removal() {
    let dns = common::pebble::Dns::start().await;
    let server = KubeServer::start_with(&[("BERTH_DNS_RESOLVERS", &dns.resolver())]).await;
    server.kube.offer_knative(true);
    let site = dockerfile_app("mapped");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "map", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let ns = server.namespace();
    let mapping_path = knative_path(&ns, "domainmappings", "map.example.org");
    assert!(server.kube.object(&mapping_path).is_none());

    activate_domain(&server, &dns, "map", "map.example.org").await;
    let mapping = server.kube.object(&mapping_path).expect("a DomainMapping at once");
    assert_eq!(mapping["spec"]["ref"]["name"], "map-production", "{mapping}");
    assert_eq!(mapping["metadata"]["labels"]["app.kubernetes.io/managed-by"], "berth");
    assert_eq!(server.edge("map.example.org", "/").await, (200, "mapped".to_string()));
    assert_eq!(server.of_kind("Revision").len(), 1, "no new revision");

    let (status, out) = server.delete("/api/sites/map/domains/map.example.org").await;
    assert_eq!(status, 200, "{out}");
    assert!(
        server.kube.object(&mapping_path).is_none(),
        "the DomainMapping is deleted"
    );
    assert!(
        server
            .kube
            .object(&knative_path(&ns, "domainmappings", "map.localhost"))
            .is_some()
    );
}

/// The state of the first container of the pods of the fake cluster (waiting reasons).
fn pod_waiting_reasons(server: &KubeServer) -> Vec<String> {
    server
        .of_kind("Pod")
        .iter()
        .filter_map(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn kubernetes_fake_api_registry_credentials_push_and_pull_from_a_real_registry_requiring_them() {
    let (user, password) = ("berth-pusher", "reg-pass-4d1c8e2a9b");
    let registry = auth_registry::AuthRegistry::start(user, password).await;
    let server = KubeServer::start().await;
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"registry": registry.address, "registry_username": user, "registry_password": password}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let site = dockerfile_app("pulled with credentials");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "sealed", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("sealed.localhost", "/").await,
        (200, "pulled with credentials".to_string())
    );
    let image = server.deployment_image("sealed-production");
    assert!(
        image.starts_with(&format!("{}/berth/sealed@sha256:", registry.address)),
        "{image}"
    );

    // The org's namespace holds the credentials as a dockerconfigjson Secret, labelled as
    // berth's, named by the app ServiceAccount's imagePullSecrets.
    let ns = server.namespace();
    let secret = server
        .kube
        .object(&format!("/api/v1/namespaces/{ns}/secrets/berth-registry"))
        .expect("the pull Secret");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "berth");
    let account = server
        .kube
        .object(&format!("/api/v1/namespaces/{ns}/serviceaccounts/berth-app"))
        .expect("the ServiceAccount");
    assert_eq!(account["imagePullSecrets"], json!([{"name": "berth-registry"}]));

    // The password is sealed: not in the settings' output, berth's log or the build log.
    let (_, cfg) = server.get("/api/config/kubernetes").await;
    assert!(!cfg.to_string().contains(password), "{cfg}");
    assert!(!server.log().contains(password), "the server log holds the password");
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(!log.contains(password), "{log}");

    // Without the pull Secret the kubelet cannot pull: restarted pods fail to pull.
    server
        .kube
        .remove(&format!("/api/v1/namespaces/{ns}/secrets/berth-registry"));
    server.kube.restart_pods();
    eventually("the restarted pod fails to pull", 90, async || {
        pod_waiting_reasons(&server)
            .iter()
            .any(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    })
    .await;

    // A wrong password fails the deploy at the push, naming the registry, without the
    // password (neither the wrong one nor the right one).
    let wrong = "wrong-pass-77e1b0";
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"registry_password": wrong}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = server.post("/api/sites/sealed/deploy", &json!({"wait": true})).await;
    assert!(status == 200 || status == 201 || status == 202, "{status} {out}");
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let id = deployment_id(&out);
    let log = server.deployment_log(&id, "build").await;
    let said = format!("{out}{log}");
    assert!(
        said.contains(&format!("pushing to the registry {} failed", registry.address)),
        "{said}"
    );
    assert!(said.contains("registry_password"), "{said}");
    assert!(!said.contains(wrong) && !said.contains(password), "{said}");
    assert!(!server.log().contains(wrong), "the server log holds the password");
}

/// A kubeconfig of one context whose cluster is `server` (CA `ca`, when given) and whose
/// user has `user` (YAML lines, indented four spaces).
fn kubeconfig(server: &str, ca: Option<&str>, user: &str) -> String {
    use base64::Engine as _;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let ca = ca.map_or(String::new(), |pem| {
        format!("    certificate-authority-data: {}\n", b64(pem))
    });
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: berth\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n{ca}contexts:\n- name: other\n  context:\n    cluster: fake\n    user: nobody\n- name: berth\n  context:\n    cluster: fake\n    user: berth\nusers:\n- name: nobody\n  user:\n    token: not-the-token\n- name: berth\n  user:\n{user}\n"
    )
}

/// Deploys a small app as `site` and checks that it serves through the edge.
async fn deploy_and_serve(server: &KubeServer, site: &str, text: &str) {
    let app = dockerfile_app(text);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": site, "repo": s(app.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge(&format!("{site}.localhost"), "/").await,
        (200, text.to_string())
    );
}

#[tokio::test]
async fn kubernetes_fake_api_kubeconfig_with_a_token_or_a_client_certificate_reaches_the_cluster() {
    use base64::Engine as _;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    prepare_engine();
    let kube = FakeKube::start(TOKEN).await;
    let config = kubeconfig(&kube.url, None, &format!("    token: {TOKEN}"));
    let server = KubeServer::start_on(kube, &[], json!({ "kubeconfig": config })).await;
    deploy_and_serve(&server, "viaconfig", "reached with a kubeconfig token").await;
    let (_, cfg) = server.get("/api/config/kubernetes").await;
    assert!(!cfg.to_string().contains(TOKEN), "the kubeconfig is sealed: {cfg}");
    // Another context (kubeconfig_context) is another user, whom the API refuses.
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"kubeconfig_context": "other"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, tested) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(tested["ok"], false, "{tested}");
    assert!(tested.to_string().contains("401"), "{tested}");

    // Over TLS requiring a client certificate signed by the cluster's CA.
    let tls = server.kube.serve_tls(true).await;
    let with_cert = kubeconfig(
        &tls.url,
        Some(&tls.ca_pem),
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(&tls.client_certificate_pem),
            b64(&tls.client_key_pem)
        ),
    );
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"kubeconfig": with_cert, "kubeconfig_context": null}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, tested) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(tested["ok"], true, "{tested}");
    deploy_and_serve(&server, "viacert", "reached with a client certificate").await;
    let (_, cfg) = server.get("/api/config/kubernetes").await;
    assert!(!cfg.to_string().contains(&b64(&tls.client_key_pem)), "{cfg}");

    // The same server without a client certificate: the TLS handshake is refused.
    let without = kubeconfig(&tls.url, Some(&tls.ca_pem), &format!("    token: {TOKEN}"));
    let (status, out) = server
        .patch("/api/config/kubernetes", &json!({"config": {"kubeconfig": without}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, tested) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(tested["ok"], false, "{tested}");
    assert!(tested.to_string().contains("not answering"), "{tested}");

    // What berth cannot use is refused naming what to use, and changes nothing.
    for (user, says) in [
        (
            "    exec:\n      command: aws\n      args: [eks, get-token]",
            "user.token",
        ),
        (
            "    client-certificate: /root/.kube/c.crt\n    client-key: /root/.kube/c.key",
            "client-certificate-data",
        ),
    ] {
        let bad = kubeconfig(&tls.url, Some(&tls.ca_pem), user);
        let (status, out) = server
            .patch("/api/config/kubernetes", &json!({"config": {"kubeconfig": bad}}))
            .await;
        assert_eq!(status, 400, "{out}");
        assert!(out.to_string().contains(says), "{out}");
    }
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"api_url": server.kube.url, "token": TOKEN}}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out.to_string().contains("alternative"), "{out}");
}

#[tokio::test]
async fn kubernetes_fake_api_in_cluster_service_account_token_is_read_again_when_it_rotates() {
    prepare_engine();
    let kube = FakeKube::start(TOKEN).await;
    let tls = kube.serve_tls(false).await;
    let account = tempfile::tempdir().unwrap();
    std::fs::write(account.path().join("token"), TOKEN).unwrap();
    std::fs::write(account.path().join("ca.crt"), &tls.ca_pem).unwrap();
    let port = tls.address.port().to_string();
    let dir = s(account.path());
    let env = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", port.as_str()),
        ("BERTH_KUBERNETES_SERVICE_ACCOUNT_DIR", dir),
    ];
    let server = KubeServer::start_on(kube, &env, json!({ "in_cluster": true })).await;
    deploy_and_serve(&server, "incluster", "reached from inside").await;

    // The projected token rotates: the cluster accepts only the new one, which berth reads.
    let rotated = "k8s-token-rotated-0b9d2e";
    server.kube.set_token(rotated);
    std::fs::write(account.path().join("token"), rotated).unwrap();
    let (_, tested) = server.post("/api/config/kubernetes/test", &json!({})).await;
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(
        tested["detail"]
            .to_string()
            .contains(&format!("https://127.0.0.1:{port}")),
        "{tested}"
    );
    assert!(!server.log().contains(rotated) && !server.log().contains(TOKEN));

    // With api_url as well: refused, naming the alternative.
    let (status, out) = server
        .patch(
            "/api/config/kubernetes",
            &json!({"config": {"api_url": "https://10.0.0.1:6443"}}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert!(out.to_string().contains("alternative"), "{out}");
}

// Multi-threaded: the CLI runs to completion on this thread while the fake API, in this
// process, answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_fake_api_cli_dry_run_prints_the_objects_even_before_the_first_deployment() {
    let server = KubeServer::start().await;
    // An upload site that has no deployment yet, with settings of its own.
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "fresh", "port": 9000, "health_check_path": "/healthz"}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {out}");
    let secret = "api-key-0c7e3f9a1d";
    let (status, out) = server
        .patch("/api/sites/fresh/env", &json!({"vars": {"API_KEY": secret}}))
        .await;
    assert_eq!(status, 200, "{out}");

    let run = server.cli(&["deploy", "--site", "fresh", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{stdout}\n{stderr}");
    // The org has no namespace in the cluster yet, so its server-side dry run refuses the
    // namespaced objects (as Kubernetes does): berth's rendered manifests, said so.
    assert!(stdout.contains("checked_by: rendered"), "{stdout}");
    assert!(stdout.contains("not found"), "{stdout}");
    let note = stdout
        .lines()
        .find_map(|l| l.strip_prefix("note: "))
        .unwrap_or_else(|| panic!("a note in {stdout}"));
    assert!(
        note.contains("no deployment yet") && note.contains("stand-in image"),
        "{note}"
    );
    let objects: Value = serde_json::from_str(&stdout[stdout.find("\n[").expect("the objects") + 1..]).unwrap();
    let deployment = objects
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("a Deployment in {objects}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], 9000, "{container}");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"], "/healthz",
        "{container}"
    );
    assert!(
        container["image"].as_str().unwrap().contains("built-by-this-deploy"),
        "{container}"
    );
    assert!(!stdout.contains(secret), "the variable's value is sealed: {stdout}");

    // --json: the whole answer as JSON.
    let run = server.cli(&["deploy", "--site", "fresh", "--dry-run", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let answer: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(answer["checked_by"], "rendered", "{answer}");
    assert_eq!(answer["target"], "kubernetes", "{answer}");
    assert!(answer["objects"].as_array().is_some_and(|o| !o.is_empty()), "{answer}");

    // Nothing was applied, uploaded or built.
    assert!(
        server.kube.objects().is_empty(),
        "{:?}",
        server.kube.objects().keys().collect::<Vec<_>>()
    );
    let (_, listed) = server.get("/api/sites/fresh/deployments").await;
    assert_eq!(listed["deployments"].as_array().map(Vec::len), Some(0), "{listed}");

    // What a dry run cannot show is refused naming the fix.
    let run = server.cli(&["deploy", "--site", "fresh", "--dry-run", "--branch", "main"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("leave out branch"), "{stderr}");
}

#[tokio::test]
async fn kubernetes_fake_knative_a_dry_run_shows_the_knative_service_a_release_would_apply() {
    let server = KubeServer::start().await;
    server.kube.offer_knative(true);
    let site = dockerfile_app("dry revision");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "kdry", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let first_revision = pinned_revision(&server, "kdry-production");
    let objects_before = server.kube.objects();

    let (status, dry) = server.post("/api/sites/kdry/deploy", &json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{dry}");
    let objects = dry["objects"].as_array().unwrap();
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    // What Knative mode applies: a Knative Service and a DomainMapping, no Deployment or Ingress.
    assert!(
        !kinds.contains(&"Deployment") && !kinds.contains(&"Ingress"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"DomainMapping"), "{kinds:?}");
    let service = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["apiVersion"] == "serving.knative.dev/v1")
        .unwrap_or_else(|| panic!("a Knative Service in {kinds:?}"));
    let annotations = &service["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/min-scale"], "1", "{service}");
    assert_eq!(service["spec"]["traffic"][0]["latestRevision"], false, "{service}");
    // The revision would be a new one, named after the (future) deployment.
    let revision = service["spec"]["template"]["metadata"]["name"].as_str().unwrap();
    assert!(
        revision.starts_with("kdry-production-") && revision != first_revision,
        "{revision}"
    );
    assert_eq!(server.kube.objects(), objects_before, "nothing applied");
}

/// Switches the server's org to the in-cluster build Job.
async fn use_build_job(server: &KubeServer) {
    let config = json!({
        "builder": "job",
        "build_image": "gcr.io/kaniko-project/executor:v1.23.2",
        "build_context_url": format!("http://127.0.0.1:{}", server.api_port),
    });
    let (status, out) = server
        .patch("/api/config/kubernetes", &json!({ "config": config }))
        .await;
    assert_eq!(status, 200, "{out}");
}

/// The images on the local engine labelled with the server's `berth.owner`.
fn images_built_by_berth(server: &KubeServer) -> String {
    docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=berth.owner={}", server.owner),
    ])
}

/// The build Jobs and their Secrets still in the cluster.
fn build_objects(server: &KubeServer) -> Vec<String> {
    server
        .kube
        .objects()
        .into_iter()
        .filter(|(path, o)| o["kind"] == "Job" || (o["kind"] == "Secret" && path.contains("/secrets/build-")))
        .map(|(path, _)| path)
        .collect()
}

#[tokio::test]
async fn kubernetes_fake_api_builder_job_builds_in_the_cluster_with_sealed_build_args_and_berths_engine_builds_nothing()
{
    let server = KubeServer::start().await;
    use_build_job(&server).await;
    let site = app(&[
        (
            "Dockerfile",
            "FROM berth-test/busybox:1\nARG GREETING\nCOPY index.html /www/index.html\nRUN echo \"arg:$GREETING\" > /www/arg.txt\nCMD [\"/bin/sh\", \"-c\", \"exec httpd -f -v -p $PORT -h /www\"]\n",
        ),
        ("index.html", "built in the cluster"),
    ]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "kan", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("kan.localhost", "/").await,
        (200, "built in the cluster".to_string())
    );

    // A secret variable reaches the build as a build argument, never through the Job.
    let secret = "s3cret-greeting-4242";
    let (status, out) = server
        .patch("/api/sites/kan/env", &json!({"vars": {"GREETING": secret}}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, out) = server.post("/api/sites/kan/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(
        server.edge("kan.localhost", "/arg.txt").await,
        (200, format!("arg:{secret}\n"))
    );

    // The Job built it: the fake saw the Jobs, berth's own engine built nothing.
    let jobs = server.kube.jobs_seen();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for job in &jobs {
        assert!(
            !job.to_string().contains(secret),
            "a build argument's value in the Job: {job}"
        );
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert!(job["spec"]["activeDeadlineSeconds"].as_u64().unwrap() >= 60);
        assert!(
            !job.to_string().contains("/internal/build-contexts/"),
            "the URL is in the Secret only: {job}"
        );
    }
    assert!(
        jobs[1]["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
            .contains("--build-arg=GREETING")
    );
    assert_eq!(images_built_by_berth(&server), "", "berth's engine built an image");

    // The pod runs the pushed digest, recorded as the docker path records it.
    let id = deployment_id(&out);
    let image = server.deployment_image("kan-production");
    let (name, digest) = image.split_once('@').expect("an image by digest");
    assert_eq!(name, format!("{REGISTRY}/berth/kan"));
    assert!(registry_has("berth/kan", digest).await, "the registry serves {image}");
    let log = server.deployment_log(&id, "build").await;
    assert!(log.contains("building in the cluster: Job"), "{log}");
    assert!(
        log.contains("RUN echo \"arg:$GREETING\""),
        "the builder's output is in the log: {log}"
    );
    assert!(log.contains(&format!("pushed {image}")), "{log}");
    assert!(!log.contains(secret) && !server.log().contains(secret));

    // The builds namespace, and nothing of the builds left.
    let builds = server
        .kube
        .objects()
        .into_values()
        .find(|o| o["kind"] == "Namespace" && o["metadata"]["labels"]["app.kubernetes.io/component"] == "build")
        .expect("a builds namespace");
    assert_eq!(
        builds["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "baseline"
    );
    assert!(
        builds["metadata"]["name"].as_str().unwrap().contains("-builds"),
        "{builds}"
    );
    // Bounded: a LimitRange gives a build container without limits the executor's, and
    // a ResourceQuota caps the pods at twice berth's build concurrency (2 by default).
    // (The fake stores them; it enforces neither.)
    let namespace = builds["metadata"]["name"].as_str().unwrap();
    let applied = |path: String| server.kube.object(&path).unwrap_or_else(|| panic!("{path} applied"));
    let limits = applied(format!("/api/v1/namespaces/{namespace}/limitranges/berth-build-limits"));
    assert_eq!(limits["spec"]["limits"][0]["default"]["memory"], "4Gi", "{limits}");
    assert_eq!(limits["spec"]["limits"][0]["max"]["cpu"], "2", "{limits}");
    let quota = applied(format!(
        "/api/v1/namespaces/{namespace}/resourcequotas/berth-build-quota"
    ));
    assert_eq!(quota["spec"]["hard"]["pods"], "4", "{quota}");
    assert_eq!(build_objects(&server), Vec::<String>::new());
}

#[tokio::test]
async fn kubernetes_fake_api_the_build_context_is_served_once_to_its_token_only() {
    use base64::Engine as _;
    let server = KubeServer::start().await;
    use_build_job(&server).await;
    server.kube.hold_jobs(true);
    let site = dockerfile_app("held");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "once", "repo": s(site.path()), "wait": false}),
        )
        .await;
    assert!(status == 201 || status == 202, "{out}");
    let id = deployment_id(&out);
    let mut url = String::new();
    eventually("the build Secret is applied", 90, async || {
        let secret = server
            .of_kind("Secret")
            .into_iter()
            .find(|o| o["metadata"]["name"].as_str().unwrap_or_default().starts_with("build-"));
        if let Some(secret) = secret {
            let data = secret["data"]["context-url"].as_str().unwrap();
            url = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap();
        }
        !url.is_empty()
    })
    .await;
    let base = format!("http://127.0.0.1:{}/internal/build-contexts/", server.api_port);
    let token = url.strip_prefix(&base).unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 64, "32 random bytes: {url}");

    // A wrong token gets nothing (and takes nothing).
    let wrong = reqwest::get(format!("{base}{}", "0".repeat(64))).await.unwrap();
    assert_eq!(wrong.status(), 404);
    assert!(wrong.bytes().await.unwrap().len() < 64);
    // The right one gets the context once: the app and its Dockerfile.
    let first = reqwest::get(&url).await.unwrap();
    assert_eq!(first.status(), 200);
    let tarball = first.bytes().await.unwrap();
    let mut names = Vec::new();
    for entry in tar::Archive::new(flate2::read::GzDecoder::new(&tarball[..]))
        .entries()
        .unwrap()
    {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert!(
        names.contains(&"Dockerfile".to_string()) && names.contains(&"index.html".to_string()),
        "{names:?}"
    );
    let second = reqwest::get(&url).await.unwrap();
    assert_eq!(second.status(), 404, "a second download");

    // The Job's own download then fails: the deploy fails saying so; nothing is left.
    server.kube.release_jobs();
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(error.contains("downloading the build context failed"), "{d}");
    assert!(error.contains("build_context_url"), "the fix is named: {d}");
    assert_eq!(build_objects(&server), Vec::<String>::new());
    assert_eq!(images_built_by_berth(&server), "");
}

#[tokio::test]
async fn kubernetes_fake_api_a_dockerfile_failing_in_the_build_job_fails_the_deploy_and_the_previous_keeps_serving() {
    let server = KubeServer::start().await;
    use_build_job(&server).await;
    let site = dockerfile_app("first build");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "bad", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    std::fs::write(
        site.path().join("Dockerfile"),
        "FROM berth-test/busybox:1\nRUN echo compiling the assets; echo no space left for assets; exit 3\n",
    )
    .unwrap();
    let (_, out) = server.post("/api/sites/bad/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    let error = out["deployment"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("the build Job failed: BackoffLimitExceeded"), "{out}");
    assert!(
        error.contains("no space left for assets"),
        "the build's last lines: {out}"
    );
    let log = server.deployment_log(&deployment_id(&out), "build").await;
    assert!(log.contains("no space left for assets"), "{log}");
    assert_eq!(
        server.edge("bad.localhost", "/").await,
        (200, "first build".to_string()),
        "the previous deployment still serves"
    );
    assert_eq!(
        build_objects(&server),
        Vec::<String>::new(),
        "the Job and its Secret are gone"
    );
}

#[tokio::test]
async fn kubernetes_builder_job_without_its_image_or_url_is_refused_naming_the_setting() {
    let kube = FakeKube::start(TOKEN).await;
    let server = TestServer::start().await;
    let good = json!({
        "api_url": kube.url, "token": TOKEN, "registry": REGISTRY,
        "ingress_address": kube.ingress.to_string(),
    });
    let (status, out) = server.patch("/api/config/kubernetes", &json!({"config": good})).await;
    assert_eq!(status, 200, "{out}");
    for (bad, key) in [
        (json!({"builder": "job"}), "build_image"),
        (json!({"builder": "job", "build_image": "not an image"}), "build_image"),
        (
            json!({"builder": "job", "build_image": "gcr.io/kaniko-project/executor:v1.23.2"}),
            "build_context_url",
        ),
        (json!({"builder": "kaniko"}), "builder"),
    ] {
        let (status, out) = server.patch("/api/config/kubernetes", &json!({"config": bad})).await;
        assert_eq!(status, 400, "{bad}: {out}");
        assert!(
            out.to_string().contains(&format!("'{key}'")),
            "the error names {key}: {out}"
        );
    }
    let (_, cfg) = server.get("/api/config/kubernetes").await;
    let config = &cfg["providers"][0]["config"];
    assert!(config.get("builder").is_none_or(Value::is_null), "unchanged: {cfg}");
    assert!(config.get("build_image").is_none_or(Value::is_null), "unchanged: {cfg}");
}

#[tokio::test]
async fn kubernetes_fake_api_a_dry_run_with_the_build_job_lists_its_objects_sealed() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("dry job");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "dryjob", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let secret = "build-arg-secret-77aa";
    let (status, out) = server
        .patch("/api/sites/dryjob/env", &json!({"vars": {"API_KEY": secret}}))
        .await;
    assert_eq!(status, 200, "{out}");
    use_build_job(&server).await;
    let (status, dry) = server.post("/api/sites/dryjob/deploy", &json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{dry}");
    let objects = dry["objects"].as_array().unwrap();
    let job = objects.iter().find(|o| o["kind"] == "Job").expect("the build Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert!(job.to_string().contains("--build-arg=API_KEY"), "{job}");
    let build_secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == job["metadata"]["name"])
        .expect("the build Secret");
    assert_eq!(build_secret["data"]["context-url"], "<sealed>", "{build_secret}");
    assert!(!dry.to_string().contains(secret), "{dry}");
    assert!(server.kube.jobs_seen().is_empty(), "nothing was built");
}

#[tokio::test]
async fn kubernetes_fake_api_a_dry_run_gives_the_build_job_the_configured_build_timeout() {
    let server = KubeServer::start_with(&[("BERTH_BUILD_TIMEOUT_SECONDS", "1234")]).await;
    use_build_job(&server).await;
    let (status, out) = server.post("/api/sites", &json!({"name": "slowbuild"})).await;
    assert!(status == 200 || status == 201, "{status} {out}");
    let (status, dry) = server
        .post("/api/sites/slowbuild/deploy", &json!({"dry_run": true}))
        .await;
    assert_eq!(status, 200, "{dry}");
    let job = dry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Job")
        .unwrap_or_else(|| panic!("the build Job in {dry}"));
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 1234, "{job}");
}

#[tokio::test]
async fn kubernetes_fake_api_cancelling_a_deploy_deletes_its_build_job_and_secret() {
    let server = KubeServer::start().await;
    use_build_job(&server).await;
    server.kube.hold_jobs(true);
    let site = dockerfile_app("never built");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "halt", "repo": s(site.path()), "wait": false}),
        )
        .await;
    assert!(status == 201 || status == 202, "{out}");
    let id = deployment_id(&out);
    eventually("the build Job is applied", 90, async || {
        !build_objects(&server).is_empty()
    })
    .await;
    let (status, out) = server.post(&format!("/api/deployments/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{out}");
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["status"], "cancelled", "{d}");
    eventually("the Job and its Secret are deleted", 90, async || {
        build_objects(&server).is_empty()
    })
    .await;
    let deleted: Vec<String> = server
        .kube
        .seen()
        .into_iter()
        .filter(|(method, path)| method == "DELETE" && path.contains("/jobs/"))
        .map(|(_, path)| path)
        .collect();
    assert!(
        deleted.iter().any(|p| p.contains("propagationPolicy=Foreground")),
        "deleted with its pod: {deleted:?}"
    );
    server.kube.release_jobs();
}

/// busybox httpd answering the value of `GREETING` as it was when the pod started.
fn greeting_app() -> tempfile::TempDir {
    app(&[(
        "Dockerfile",
        "FROM berth-test/busybox:1\nCMD [\"/bin/sh\", \"-c\", \"mkdir -p /tmp/www && echo -n \\\"${GREETING:-unset}\\\" > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www\"]\n",
    )])
}

/// `HOSTING_SET_ENV_VARS` with `restart: true` on a kubernetes site: the environment is
/// rolled over with the new value, without a deploy and without a failed request.
async fn set_env_vars_restarts_the_environment(knative: bool, name: &str, host: &'static str) {
    let server = KubeServer::start().await;
    server.kube.offer_knative(knative);
    let site = greeting_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(server.edge(host, "/").await, (200, "unset".to_string()));
    let (_, before) = server.get(&format!("/api/sites/{name}/deployments")).await;
    let first_revision = knative.then(|| pinned_revision(&server, &format!("{name}-production")));
    let first_secret = variables_secrets(&server);
    assert_eq!(
        first_secret.len(),
        1,
        "one Secret of the release's variables: {first_secret:?}"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops = vec![load(&server, host, stop.clone()), load(&server, host, stop.clone())];
    let (status, out) = server
        .patch(
            &format!("/api/sites/{name}/env"),
            &json!({"vars": {"GREETING": "hello again"}, "restart": true}),
        )
        .await;
    assert_eq!(status, 200, "{out}\n{}", server.log());
    assert_eq!(out["restarted"], json!(["production"]), "{out}");
    // The answer comes once the rollout is done: the edge serves the new value at once.
    assert_eq!(server.edge(host, "/").await, (200, "hello again".to_string()));
    assert_no_request_failed(&stop, loops, 5).await;
    // The new value is a new Secret; the old one goes once nothing uses it (Deployment
    // mode), or stays while the kept revision that started with it does (Knative).
    let secrets = variables_secrets(&server);
    let new_secret = secrets.iter().find(|s| !first_secret.contains(s)).cloned();
    assert!(new_secret.is_some(), "a new Secret for the new value: {secrets:?}");
    if knative {
        assert_eq!(
            secrets.len(),
            2,
            "the kept first revision keeps its Secret: {secrets:?}"
        );
    } else {
        assert_eq!(secrets, vec![new_secret.unwrap()], "the old Secret is gone");
    }
    assert_no_value_outside_secrets(&server, "hello again");
    // No deploy was made.
    let (_, after) = server.get(&format!("/api/sites/{name}/deployments")).await;
    assert_eq!(after["deployments"], before["deployments"]);
    if knative {
        // A new revision of the same deployment has all traffic.
        let revisions = server.of_kind("Revision");
        assert_eq!(revisions.len(), 2, "{revisions:?}");
        let pinned = pinned_revision(&server, &format!("{name}-production"));
        assert_ne!(Some(pinned.as_str()), first_revision.as_deref());
        let id = before["deployments"][0]["id"].as_str().unwrap();
        for revision in revisions {
            assert_eq!(revision["metadata"]["labels"]["berth.dev/deployment"], id, "{revision}");
        }
    }

    // Without restart: nothing restarts; the app keeps the value it started with.
    let (status, out) = server
        .patch(
            &format!("/api/sites/{name}/env"),
            &json!({"vars": {"GREETING": "later"}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["restarted"], json!([]), "{out}");
    assert_eq!(server.edge(host, "/").await, (200, "hello again".to_string()));

    // Deleting the site leaves no Secret of its variables.
    let (status, out) = server.delete(&format!("/api/sites/{name}")).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(variables_secrets(&server), Vec::<String>::new());
}

/// The names of berth's Secrets of app variables in the fake's store.
fn variables_secrets(server: &KubeServer) -> Vec<String> {
    let mut names: Vec<String> = server
        .of_kind("Secret")
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["berth.dev/variables"] == "true")
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// No object in the fake's store but a Secret holds `value` (as it is or base64).
fn assert_no_value_outside_secrets(server: &KubeServer, value: &str) {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    for (path, object) in server.kube.objects() {
        if object["kind"] == "Secret" {
            continue;
        }
        let text = object.to_string();
        assert!(
            !text.contains(value) && !text.contains(&encoded),
            "the variable's value is readable in {path}: {text}"
        );
    }
}

/// A secret variable reaches the app through a Secret only: no Deployment, Knative
/// Service, Revision or Pod in the cluster holds its value, and the app serves it.
async fn variables_are_read_from_a_secret(knative: bool, name: &str, host: &'static str) {
    let server = KubeServer::start().await;
    server.kube.offer_knative(knative);
    let site = greeting_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let secret = "pa55-word-7c1e9";
    let (status, out) = server
        .patch(
            &format!("/api/sites/{name}/env"),
            &json!({"vars": {"GREETING": secret}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let (_, out) = server
        .post(&format!("/api/sites/{name}/deploy"), &json!({"wait": true}))
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(server.edge(host, "/").await, (200, secret.to_string()));
    assert_no_value_outside_secrets(&server, secret);
    // The Secret: immutable, Opaque, owned by the site's owner object, read by key.
    let names = variables_secrets(&server);
    // The first release's goes once its Deployment rolled over; on Knative its revision
    // is kept (for a rollback), and so is its Secret.
    assert_eq!(names.len(), if knative { 2 } else { 1 }, "{names:?}");
    let serving = server
        .of_kind("Secret")
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["berth.dev/deployment"] == deployment_id(&out).as_str())
        .collect::<Vec<_>>();
    assert_eq!(serving.len(), 1, "{serving:?}");
    let stored = &serving[0];
    assert_eq!(stored["type"], "Opaque", "{stored}");
    assert_eq!(stored["immutable"], true, "{stored}");
    assert_eq!(
        stored["metadata"]["ownerReferences"][0]["kind"], "ConfigMap",
        "{stored}"
    );
    assert!(!stored["metadata"]["name"].as_str().unwrap().contains(secret));
}

/// The values of `name` in berth's variables' Secrets in the fake's store, decoded, with
/// the deployment each Secret is labelled with.
fn variables_values(server: &KubeServer, name: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    server
        .of_kind("Secret")
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["berth.dev/variables"] == "true")
        .filter_map(|o| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(o["data"][name].as_str()?)
                .ok()?;
            let deployment = o["metadata"]["labels"]["berth.dev/deployment"].as_str()?.to_string();
            Some((deployment, String::from_utf8(value).ok()?))
        })
        .collect()
}

#[tokio::test]
async fn kubernetes_fake_knative_a_forgotten_deployments_variables_secret_is_deleted_and_the_kept_ones_stay() {
    // Two deployments kept per environment: the third deploy forgets the first, the
    // fourth the second. On Knative each kept revision keeps its own Secret, so only
    // forgetting a deployment deletes its Secret.
    let server = KubeServer::start_with(&[("BERTH_KEEP_DEPLOYMENTS", "2")]).await;
    server.kube.offer_knative(true);
    let site = greeting_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "lapse", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let mut ids = vec![deployment_id(&out)];
    for value in ["first-value-31d0", "second-value-8a4c", "second-value-8a4c"] {
        let (status, out) = server
            .patch("/api/sites/lapse/env", &json!({"vars": {"GREETING": value}}))
            .await;
        assert_eq!(status, 200, "{out}");
        let (_, out) = server.post("/api/sites/lapse/deploy", &json!({"wait": true})).await;
        assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
        ids.push(deployment_id(&out));
        if ids.len() == 3 {
            // The first values' deployment is kept still (its revision might serve a
            // rollback), and so is its Secret.
            assert!(
                variables_values(&server, "GREETING").contains(&(ids[1].clone(), "first-value-31d0".into())),
                "{:?}",
                variables_values(&server, "GREETING")
            );
        }
    }
    assert_eq!(
        server.edge("lapse.localhost", "/").await,
        (200, "second-value-8a4c".to_string())
    );
    // The pruning follows a deploy's end: waited for.
    eventually("the forgotten deployment's Secret is deleted", 90, async || {
        !variables_values(&server, "GREETING")
            .iter()
            .any(|(_, v)| v == "first-value-31d0")
    })
    .await;
    let mut kept: Vec<String> = variables_values(&server, "GREETING")
        .into_iter()
        .map(|(deployment, value)| {
            assert_eq!(value, "second-value-8a4c");
            deployment
        })
        .collect();
    kept.sort();
    let mut newest = ids[2..].to_vec();
    newest.sort();
    assert_eq!(kept, newest, "the kept deployments' Secrets stay");
}

#[tokio::test]
async fn kubernetes_fake_api_variables_are_read_from_a_secret_and_no_workload_object_holds_their_values() {
    variables_are_read_from_a_secret(false, "vault", "vault.localhost").await;
}

#[tokio::test]
async fn kubernetes_fake_knative_variables_are_read_from_a_secret_and_no_revision_holds_their_values() {
    variables_are_read_from_a_secret(true, "kvault", "kvault.localhost").await;
}

#[tokio::test]
async fn kubernetes_fake_api_set_env_vars_with_restart_rolls_the_deployment_over_without_a_failed_request() {
    set_env_vars_restarts_the_environment(false, "greet", "greet.localhost").await;
}

#[tokio::test]
async fn kubernetes_fake_knative_set_env_vars_with_restart_moves_traffic_to_a_new_revision_without_a_failed_request() {
    set_env_vars_restarts_the_environment(true, "kgreet", "kgreet.localhost").await;
}

#[tokio::test]
async fn kubernetes_fake_knative_scale_changes_reach_the_serving_revision_at_once_without_a_new_revision() {
    let server = KubeServer::start().await;
    server.kube.offer_knative(true);
    let site = dockerfile_app("scaled");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "tune", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let ns = server.namespace();
    let revision = pinned_revision(&server, "tune-production");
    let (status, out) = server
        .patch(
            "/api/sites/tune/scaling",
            &json!({"min_instances": 2, "max_instances": 4, "target_concurrency": 7}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    // At once, on the revision serving (its annotations reach Knative's PodAutoscaler):
    // no deploy, no new revision, the pin unchanged.
    let serving = server.kube.object(&knative_path(&ns, "revisions", &revision)).unwrap();
    let annotations = &serving["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/min-scale"], "2", "{serving}");
    assert_eq!(annotations["autoscaling.knative.dev/max-scale"], "4", "{serving}");
    assert_eq!(annotations["autoscaling.knative.dev/target"], "7", "{serving}");
    assert_eq!(annotations["serving.knative.dev/no-gc"], "true", "{serving}");
    assert_eq!(server.of_kind("Revision").len(), 1);
    assert_eq!(pinned_revision(&server, "tune-production"), revision);
    assert_eq!(server.edge("tune.localhost", "/").await, (200, "scaled".to_string()));

    // A rollback to a kept revision takes the scale settings as they are now too.
    std::fs::write(site.path().join("index.html"), "scaled two").unwrap();
    let (_, out) = server.post("/api/sites/tune/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (status, out) = server
        .patch("/api/sites/tune/scaling", &json!({"min_instances": 1}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = server.post("/api/sites/tune/rollback", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(pinned_revision(&server, "tune-production"), revision);
    let serving = server.kube.object(&knative_path(&ns, "revisions", &revision)).unwrap();
    assert_eq!(
        serving["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"], "1",
        "{serving}"
    );
}

/// The berth-labelled objects of kind `kind` at `collection` in the fake, by name.
fn names_at(server: &KubeServer, collection: &str) -> Vec<String> {
    let prefix = format!("{collection}/");
    server
        .kube
        .objects()
        .into_iter()
        .filter(|(path, _)| path.starts_with(&prefix) && !path[prefix.len()..].contains('/'))
        .map(|(path, _)| path[prefix.len()..].to_string())
        .collect()
}

#[tokio::test]
async fn kubernetes_fake_api_a_mode_switch_deletes_the_other_modes_labelled_objects_and_nothing_else() {
    let server = KubeServer::start().await;
    let site = dockerfile_app("mode one");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "flip", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let ns = server.namespace();
    let core = |plural: &str| format!("/api/v1/namespaces/{ns}/{plural}");
    let apps = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    let ingresses = format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses");
    let kservices = format!("/apis/serving.knative.dev/v1/namespaces/{ns}/services");
    let mappings = format!("/apis/serving.knative.dev/v1beta1/namespaces/{ns}/domainmappings");
    assert_eq!(names_at(&server, &apps), ["flip-production"]);
    // Someone else's objects in the namespace, unlabelled: never touched.
    let foreign = |kind: &str, api: &str| json!({"apiVersion": api, "kind": kind, "metadata": {"name": "theirs", "namespace": ns, "labels": {"berth.dev/site": "flip"}}, "spec": {}});
    server
        .kube
        .put(&format!("{apps}/theirs"), foreign("Deployment", "apps/v1"));
    server
        .kube
        .put(&format!("{}/theirs", core("services")), foreign("Service", "v1"));

    // Knative appears (setting auto): the next deploy is a Knative Service, and the
    // Deployment, Service and Ingress of the environment are gone.
    server.kube.offer_knative(true);
    std::fs::write(site.path().join("index.html"), "mode two").unwrap();
    let (_, out) = server.post("/api/sites/flip/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert_eq!(names_at(&server, &kservices), ["flip-production"]);
    assert_eq!(names_at(&server, &apps), ["theirs"]);
    assert_eq!(names_at(&server, &core("services")), ["theirs"]);
    assert!(names_at(&server, &ingresses).is_empty());
    assert_eq!(server.edge("flip.localhost", "/").await, (200, "mode two".to_string()));

    // And back (setting off): the Knative Service and its DomainMappings go.
    let (status, out) = server
        .patch("/api/config/kubernetes", &json!({"config": {"knative": "off"}}))
        .await;
    assert_eq!(status, 200, "{out}");
    std::fs::write(site.path().join("index.html"), "mode three").unwrap();
    let (_, out) = server.post("/api/sites/flip/deploy", &json!({"wait": true})).await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    assert!(names_at(&server, &kservices).is_empty());
    assert!(names_at(&server, &mappings).is_empty());
    assert_eq!(names_at(&server, &apps), ["flip-production", "theirs"]);
    assert_eq!(names_at(&server, &core("services")), ["flip-production", "theirs"]);
    assert_eq!(names_at(&server, &ingresses), ["flip-production"]);
    assert_eq!(
        server.edge("flip.localhost", "/").await,
        (200, "mode three".to_string())
    );
}

#[tokio::test]
async fn kubernetes_fake_knative_an_idle_environment_is_never_held_asleep_by_berth_as_knative_wakes_it() {
    let server = KubeServer::start().await;
    server.kube.offer_knative(true);
    let site = dockerfile_app("knative wakes me");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "idle", "repo": s(site.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let (status, out) = server
        .patch(
            "/api/sites/idle/scaling",
            &json!({"min_instances": 0, "idle_timeout_seconds": 5}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        server.edge("idle.localhost", "/").await,
        (200, "knative wakes me".to_string())
    );
    // Idle for longer than the timeout; then a reconcile pass (a scale change runs one).
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let (status, out) = server
        .patch("/api/sites/idle/scaling", &json!({"idle_timeout_seconds": 6}))
        .await;
    assert_eq!(status, 200, "{out}");
    // The next request goes straight through (Knative's activator would wake the
    // revision): berth's edge held nothing, so no cold start is counted.
    assert_eq!(
        server.edge("idle.localhost", "/").await,
        (200, "knative wakes me".to_string())
    );
    let mut summary = Value::Null;
    eventually("both requests are counted", 90, async || {
        summary = server.get("/api/sites/idle/metrics/summary?since=10m").await.1;
        summary["requests"].as_u64() == Some(2)
    })
    .await;
    assert_eq!(summary["cold_starts"], 0, "{summary}");
}
