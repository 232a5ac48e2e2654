//! The in-cluster builder (setting `builder: "job"`): instead of berth's docker engine, a
//! `batch/v1` Job in the org's builds namespace builds the deployment's image with a
//! kaniko-compatible executor (`build_image`) and pushes it to the org's registry.
//!
//! berth packs the build context (the app folder with its Dockerfile, or the one the
//! docker path generates) and offers it once at `build_context_url` +
//! `/internal/build-contexts/{token}` (see [`crate::runtime::build_contexts`]). The token,
//! the registry's push credentials and the values of the build arguments are in a Secret
//! only: the Job's init container (`build_fetch_image`) downloads the context with `wget`
//! from a variable the Secret fills, and the executor reads each build argument from its
//! environment (`--build-arg=NAME`, no value in any argv or pod spec). The executor
//! writes the pushed digest to its termination message, which berth records as the docker
//! path records a pushed image (`<registry>/<repo>@<digest>`).
//!
//! The builds namespace (`<prefix><org>-builds`) is labelled Pod Security `baseline` (an
//! executor runs as root, unprivileged); its NetworkPolicy denies ingress and lets pods
//! reach DNS and the internet but not the private, shared and link-local ranges apps may
//! not reach (the metadata endpoint among them), except exactly the registry's and
//! berth's address and port when those are private IP addresses. A LimitRange gives its
//! containers default requests and limits (the executor's limits at most) and a
//! ResourceQuota caps its pods at twice berth's build concurrency.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::client::{Client, collection_path, label_selector};
use super::manifests::{BLOCKED_EGRESS, LABEL_DEPLOYMENT, LABEL_ORG, LABEL_SITE, MANAGED_BY, dns_label, label_value};
use super::{KubeSettings, text};
use crate::runtime::build_contexts::BuildContexts;
use crate::runtime::docker;
use crate::runtime::target::{BuildJob, Settings};

/// The image of the init container that downloads the context, unless set.
pub const DEFAULT_FETCH_IMAGE: &str = "busybox:1.36";
/// Where berth's API serves offered build contexts.
pub const CONTEXT_PATH: &str = "/internal/build-contexts";
/// How long a finished Job stays before the cluster removes it (berth deletes it first).
const TTL_AFTER_FINISHED_SECONDS: u32 = 600;
/// The executor container's name.
const EXECUTOR: &str = "executor";
/// The init container's name.
const FETCH: &str = "fetch";
/// The Secret's key of the context's URL (with its token).
const CONTEXT_URL_KEY: &str = "context-url";
/// The Secret's key of the registry's docker config (push credentials).
const DOCKER_CONFIG_KEY: &str = "config.json";
/// The Secret's keys of build argument values: this prefix and the variable's name.
const ARG_KEY_PREFIX: &str = "arg.";
/// The variable of the init container holding the context's URL.
const CONTEXT_URL_VAR: &str = "BERTH_CONTEXT_URL";
/// Variables the executor runs with itself: never set from the app's variables.
const EXECUTOR_OWN_VARIABLES: [&str; 5] = ["PATH", "HOME", "DOCKER_CONFIG", "SSL_CERT_DIR", "container"];
/// The executor's CPU and memory requests.
const EXECUTOR_REQUESTS: (&str, &str) = ("500m", "1Gi");
/// The executor's CPU and memory limits: also the builds namespace's default limits
/// and the most any container there may have.
const EXECUTOR_LIMITS: (&str, &str) = ("2", "4Gi");
/// The CPU and memory a container of the builds namespace requests when it says nothing.
const BUILD_CONTAINER_DEFAULTS: (&str, &str) = ("250m", "512Mi");
/// How often berth looks at the Job.
const POLL: Duration = Duration::from_secs(1);
/// Lines of the build's output kept for a failure's message.
const LAST_LINES: usize = 15;
/// Label the Job controller puts on its pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Waiting reasons of a build pod's container that do not resolve by themselves.
const STUCK_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Who builds a deployment's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Builder {
    /// berth's docker engine (`docker_host`), then a push to the registry.
    Docker,
    /// A Job in the org's builds namespace.
    Job(JobBuilder),
}

/// The in-cluster builder's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobBuilder {
    /// The kaniko-compatible executor image (`build_image`).
    pub image: String,
    /// The image with `sh` and `wget` that downloads the context (`build_fetch_image`).
    pub fetch_image: String,
    /// berth's API as the cluster's pods reach it (`build_context_url`), no trailing `/`.
    pub context_url: String,
}

/// An image reference as a pod spec takes it (`name[:tag][@digest]`).
fn image_reference(key: &str, value: &str, example: &str) -> Result<String, String> {
    let ok = value.len() <= 255
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "./:@_-".contains(c))
        && !value.contains("://");
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "kubernetes setting '{key}' must be an image reference such as {example}, got '{value}'"
        ))
    }
}

impl Builder {
    /// Reads `builder`, `build_image`, `build_fetch_image` and `build_context_url`; the
    /// message names the setting and what it takes.
    pub fn parse(settings: &Settings) -> Result<Self, String> {
        match text(settings, "builder")?.unwrap_or("docker") {
            "docker" => Ok(Self::Docker),
            "job" => {
                let example = "gcr.io/kaniko-project/executor:v1.23.2";
                let image = text(settings, "build_image")?.ok_or_else(|| {
                    format!("kubernetes setting 'build_image' is required with 'builder': \"job\": a kaniko-compatible executor image, e.g. {example}")
                })?;
                let image = image_reference("build_image", image, example)?;
                let fetch_image = image_reference(
                    "build_fetch_image",
                    text(settings, "build_fetch_image")?.unwrap_or(DEFAULT_FETCH_IMAGE),
                    DEFAULT_FETCH_IMAGE,
                )?;
                let url = text(settings, "build_context_url")?.ok_or(
                    "kubernetes setting 'build_context_url' is required with 'builder': \"job\": berth's API URL as the cluster's pods reach it, e.g. http://10.0.0.5:8080",
                )?;
                let parsed = reqwest::Url::parse(url).ok().filter(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.username().is_empty()
                        && u.password().is_none()
                        && u.query().is_none()
                        && u.fragment().is_none()
                });
                if parsed.is_none() {
                    return Err(format!(
                        "kubernetes setting 'build_context_url' must be an http(s) URL of berth's API without credentials, query or fragment, e.g. http://10.0.0.5:8080, got '{url}'"
                    ));
                }
                Ok(Self::Job(JobBuilder {
                    image,
                    fetch_image,
                    context_url: url.trim_end_matches('/').to_string(),
                }))
            }
            other => Err(format!(
                "kubernetes setting 'builder' must be \"docker\" (berth's docker engine builds images; the default) or \"job\" (a Job in the cluster builds them, see build_image), got '{other}'"
            )),
        }
    }
}

/// The org's builds namespace.
pub fn builds_namespace(prefix: &str, org: &str) -> String {
    dns_label(&format!("{prefix}{org}-builds"))
}

/// A build Job's `activeDeadlineSeconds` under berth's build timeout `timeout`.
fn deadline_seconds(timeout: Duration) -> u64 {
    timeout.as_secs().max(60)
}

/// The name of a deployment's build Job and its Secret.
pub fn job_name(deployment_id: &str) -> String {
    dns_label(&format!("build-{deployment_id}"))
}

/// Whether an IPv4 address is in one of the ranges apps' egress may not reach.
fn is_blocked(ip: Ipv4Addr) -> bool {
    BLOCKED_EGRESS.iter().any(|cidr| {
        let (base, bits) = cidr.split_once('/').expect("a CIDR");
        let base: Ipv4Addr = base.parse().expect("an IPv4 address");
        let bits: u32 = bits.parse().expect("a prefix length");
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        u32::from(ip) & mask == u32::from(base) & mask
    })
}

/// The registry's and berth's address and port when they are private IPv4 addresses (a
/// host name cannot be named in a NetworkPolicy; such a one must resolve publicly).
pub fn private_endpoints(registry: &str, context_url: &str) -> Vec<(Ipv4Addr, u16)> {
    let mut found = Vec::new();
    let host_port = registry.split('/').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(443)),
        None => (host_port, 443),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>()
        && is_blocked(ip)
    {
        found.push((ip, port));
    }
    if let Ok(url) = reqwest::Url::parse(context_url)
        && let Some(Ok(ip)) = url.host_str().map(str::parse::<Ipv4Addr>)
        && is_blocked(ip)
        && let Some(port) = url.port_or_known_default()
        && !found.contains(&(ip, port))
    {
        found.push((ip, port));
    }
    found
}

/// berth's labels of an object of the builds namespace.
fn namespace_labels(org: &str) -> Value {
    json!({ MANAGED_BY.0: MANAGED_BY.1, LABEL_ORG: label_value(org), "app.kubernetes.io/component": "build" })
}

/// The builds namespace's ResourceQuota `pods` when berth runs `build_concurrency` builds
/// at once: a build is one pod, and a cancelled build's pod may still be terminating
/// when its slot goes to the next build, so twice as many.
pub fn build_pods_quota(build_concurrency: usize) -> u32 {
    u32::try_from(build_concurrency.max(1))
        .unwrap_or(u32::MAX / 2)
        .saturating_mul(2)
}

/// The builds namespace (Pod Security `baseline`), its NetworkPolicy, a LimitRange that
/// gives a container without its own requests and limits [`BUILD_CONTAINER_DEFAULTS`]
/// and caps every one at [`EXECUTOR_LIMITS`], and a ResourceQuota of `pods_quota`
/// pods, in the order they are applied.
pub fn namespace_objects(namespace: &str, org: &str, endpoints: &[(Ipv4Addr, u16)], pods_quota: u32) -> Vec<Value> {
    let labels = namespace_labels(org);
    let mut ns_labels = labels.clone();
    for mode in ["enforce", "audit", "warn"] {
        ns_labels[format!("pod-security.kubernetes.io/{mode}")] = json!("baseline");
    }
    let mut egress = vec![
        json!({
            "to": [{ "namespaceSelector": {}, "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } } }],
            "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
        }),
        json!({ "to": [{ "ipBlock": { "cidr": "0.0.0.0/0", "except": BLOCKED_EGRESS } }] }),
    ];
    for (ip, port) in endpoints {
        egress.push(json!({
            "to": [{ "ipBlock": { "cidr": format!("{ip}/32") } }],
            "ports": [{ "protocol": "TCP", "port": port }],
        }));
    }
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": namespace, "labels": ns_labels },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": "berth-builds", "namespace": namespace, "labels": labels },
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": egress,
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": { "name": "berth-build-limits", "namespace": namespace, "labels": labels },
            "spec": { "limits": [{
                "type": "Container",
                "default": { "cpu": EXECUTOR_LIMITS.0, "memory": EXECUTOR_LIMITS.1 },
                "defaultRequest": { "cpu": BUILD_CONTAINER_DEFAULTS.0, "memory": BUILD_CONTAINER_DEFAULTS.1 },
                "max": { "cpu": EXECUTOR_LIMITS.0, "memory": EXECUTOR_LIMITS.1 },
            }]},
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": { "name": "berth-build-quota", "namespace": namespace, "labels": labels },
            "spec": { "hard": { "pods": pods_quota.to_string() } },
        }),
    ]
}

/// One deployment's build as the cluster runs it.
pub struct JobSpec<'a> {
    /// The builds namespace.
    pub namespace: &'a str,
    /// Org id.
    pub org: &'a str,
    /// Site name.
    pub site: &'a str,
    /// Deployment id.
    pub deployment_id: &'a str,
    /// The builder's settings.
    pub builder: &'a JobBuilder,
    /// `<registry>/<repo>:<tag>` the executor pushes.
    pub destination: &'a str,
    /// The Dockerfile's name in the context.
    pub dockerfile: &'a str,
    /// Build arguments (names; their values are in the Secret).
    pub arg_names: &'a [String],
    /// `activeDeadlineSeconds`.
    pub deadline_seconds: u64,
    /// Whether the Secret holds the registry's docker config.
    pub push_credentials: bool,
    /// The destination registry's `host:port` when it speaks plain HTTP
    /// (`registry_insecure`): the executor talks HTTP to it and to no other registry.
    pub insecure_registry: Option<&'a str>,
}

impl JobSpec<'_> {
    fn labels(&self) -> Value {
        let mut labels = namespace_labels(self.org);
        labels[LABEL_SITE] = json!(label_value(self.site));
        labels[LABEL_DEPLOYMENT] = json!(label_value(self.deployment_id));
        labels
    }

    /// The Secret of the build: the context's URL, the push credentials and the build
    /// arguments' values (`data`, base64).
    pub fn secret(&self, context_url: &str, docker_config: Option<&str>, args: &[(String, String)]) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let mut data = serde_json::Map::new();
        data.insert(CONTEXT_URL_KEY.into(), json!(b64(context_url)));
        if let Some(config) = docker_config {
            data.insert(DOCKER_CONFIG_KEY.into(), json!(b64(config)));
        }
        for (name, value) in args {
            data.insert(format!("{ARG_KEY_PREFIX}{name}"), json!(b64(value)));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": job_name(self.deployment_id), "namespace": self.namespace, "labels": self.labels() },
            "type": "Opaque",
            "data": data,
        })
    }

    /// The Job.
    pub fn job(&self) -> Value {
        let name = job_name(self.deployment_id);
        let labels = self.labels();
        let secret_ref = |key: &str| json!({ "secretKeyRef": { "name": name, "key": key } });
        let mut args = vec![
            json!("--context=tar:///workspace/context.tar.gz"),
            json!(format!("--dockerfile={}", self.dockerfile)),
            json!(format!("--destination={}", self.destination)),
            json!("--digest-file=/dev/termination-log"),
        ];
        if let Some(registry) = self.insecure_registry {
            args.push(json!(format!("--insecure-registry={registry}")));
        }
        let mut env = Vec::new();
        for arg in self.arg_names {
            args.push(json!(format!("--build-arg={arg}")));
            env.push(json!({ "name": arg, "valueFrom": secret_ref(&format!("{ARG_KEY_PREFIX}{arg}")) }));
        }
        let mut mounts = vec![json!({ "name": "workspace", "mountPath": "/workspace" })];
        let mut volumes = vec![json!({ "name": "workspace", "emptyDir": { "sizeLimit": "4Gi" } })];
        if self.push_credentials {
            mounts.push(json!({ "name": "push-credentials", "mountPath": "/kaniko/.docker", "readOnly": true }));
            volumes.push(json!({ "name": "push-credentials", "secret": {
                "secretName": name,
                "items": [{ "key": DOCKER_CONFIG_KEY, "path": "config.json" }],
            }}));
        }
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": { "name": name, "namespace": self.namespace, "labels": labels },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": self.deadline_seconds,
                "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_SECONDS,
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "initContainers": [{
                            "name": FETCH,
                            "image": self.builder.fetch_image,
                            "command": ["sh", "-c", format!("wget -q -O /workspace/context.tar.gz \"${CONTEXT_URL_VAR}\"")],
                            "env": [{ "name": CONTEXT_URL_VAR, "valueFrom": secret_ref(CONTEXT_URL_KEY) }],
                            "volumeMounts": [{ "name": "workspace", "mountPath": "/workspace" }],
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": super::manifests::APP_UID,
                                "allowPrivilegeEscalation": false,
                                "capabilities": { "drop": ["ALL"] },
                            },
                            "resources": {
                                "requests": { "cpu": "50m", "memory": "32Mi" },
                                "limits": { "cpu": "500m", "memory": "128Mi" },
                            },
                        }],
                        "containers": [{
                            "name": EXECUTOR,
                            "image": self.builder.image,
                            "args": args,
                            "env": env,
                            "volumeMounts": mounts,
                            "securityContext": { "allowPrivilegeEscalation": false },
                            "resources": {
                                "requests": { "cpu": EXECUTOR_REQUESTS.0, "memory": EXECUTOR_REQUESTS.1 },
                                "limits": { "cpu": EXECUTOR_LIMITS.0, "memory": EXECUTOR_LIMITS.1 },
                            },
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                        }],
                        "volumes": volumes,
                    },
                },
            },
        })
    }
}

/// Whether a variable can be a build argument of the Job (a Secret key and an
/// environment variable name, and not one the executor needs itself).
fn passable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !EXECUTOR_OWN_VARIABLES.contains(&name)
}

/// The Job's objects as a dry run of the release `release` shows them: the builds
/// namespace's objects, the Secret (values sealed) and the Job (its deadline berth's
/// build timeout), with `Dockerfile` standing for the context's Dockerfile.
pub fn dry_run_objects(
    settings: &KubeSettings,
    builder: &JobBuilder,
    release: &crate::runtime::InstanceSpec,
    pods_quota: u32,
) -> Vec<Value> {
    let (org, site, deployment_id) = (
        release.org.as_str(),
        release.site.as_str(),
        release.deployment_id.as_str(),
    );
    let namespace = builds_namespace(&settings.namespace_prefix, org);
    let tag = docker::image::image_tag(site, deployment_id);
    let destination = format!("{}/{tag}", settings.registry);
    let mut arg_names: Vec<String> = release
        .env
        .iter()
        .map(|(n, _)| n)
        .filter(|n| passable(n))
        .cloned()
        .collect();
    arg_names.sort_unstable();
    arg_names.dedup();
    let spec = JobSpec {
        namespace: &namespace,
        org,
        site,
        deployment_id,
        builder,
        destination: &destination,
        dockerfile: berth_build::dockerfile::DOCKERFILE,
        arg_names: &arg_names,
        deadline_seconds: deadline_seconds(release.build_timeout),
        push_credentials: settings.registry_auth.is_some(),
        insecure_registry: settings.registry_insecure.then(|| settings.registry_host()),
    };
    let sealed = super::apply::SEALED;
    let args: Vec<(String, String)> = arg_names.iter().map(|n| (n.clone(), sealed.to_string())).collect();
    let mut secret = spec.secret(sealed, settings.registry_auth.as_ref().map(|_| sealed), &args);
    for value in secret["data"].as_object_mut().into_iter().flat_map(|d| d.values_mut()) {
        *value = json!(sealed);
    }
    let mut objects = namespace_objects(
        &namespace,
        org,
        &private_endpoints(&settings.registry, &builder.context_url),
        pods_quota,
    );
    objects.push(secret);
    objects.push(spec.job());
    objects
}

/// Builds the deployment's image with a Job and returns it by digest
/// (`<registry>/<repo>@sha256:…`). The Job and its Secret are deleted when it ends,
/// however it ends (a cancelled deploy too).
pub(super) async fn build(
    settings: &KubeSettings,
    builder: &JobBuilder,
    contexts: &std::sync::Arc<BuildContexts>,
    pods_quota: u32,
    job: &BuildJob<'_>,
) -> Result<String, String> {
    let engine = settings.docker_settings()?;
    let recipe = docker::deployment_recipe(&engine, job)?;
    let dockerfile = docker::image::dockerfile_in_context(job.app_dir, &recipe)
        .await
        .map_err(|e| format!("could not write the generated Dockerfile: {e}"))?;
    let offer = contexts.offer(job.app_dir).await?;
    (job.log)(
        "system",
        format!("packed the build context ({} KiB)", offer.bytes.div_ceil(1024)),
    );
    let mut names: Vec<&String> = job.build_args.keys().collect();
    names.sort_unstable();
    let (passed, skipped): (Vec<&String>, Vec<&String>) = names.into_iter().partition(|n| passable(n));
    if !skipped.is_empty() {
        (job.log)(
            "system",
            format!(
                "not passed to the build Job as build arguments (names the executor uses itself or cannot take): {}",
                skipped.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let args: Vec<(String, String)> = passed
        .iter()
        .map(|n| ((*n).clone(), job.build_args[*n].clone()))
        .collect();
    let arg_names: Vec<String> = args.iter().map(|(n, _)| n.clone()).collect();
    let tag = docker::image::image_tag(job.site.site, job.deployment_id);
    let destination = format!("{}/{tag}", settings.registry);
    let repository = destination.rsplit_once(':').map_or(destination.as_str(), |(r, _)| r);
    let namespace = builds_namespace(&settings.namespace_prefix, job.site.org);
    let spec = JobSpec {
        namespace: &namespace,
        org: job.site.org,
        site: job.site.site,
        deployment_id: job.deployment_id,
        builder,
        destination: &destination,
        dockerfile,
        arg_names: &arg_names,
        deadline_seconds: deadline_seconds(job.timeout),
        push_credentials: settings.registry_auth.is_some(),
        insecure_registry: settings.registry_insecure.then(|| settings.registry_host()),
    };
    let docker_config = settings.registry_auth.as_ref().map(|a| a.docker_config());
    let context_url = format!("{}{CONTEXT_PATH}/{}", builder.context_url, offer.token());
    let client = settings.client()?;
    let name = job_name(job.deployment_id);
    let job_path = format!(
        "{}/{name}",
        collection_path("Job", Some(&namespace)).expect("known kind")
    );
    let secret_path = format!(
        "{}/{name}",
        collection_path("Secret", Some(&namespace)).expect("known kind")
    );
    let applying = async {
        for object in namespace_objects(
            &namespace,
            job.site.org,
            &private_endpoints(&settings.registry, &builder.context_url),
            pods_quota,
        ) {
            client.apply(&object).await?;
        }
        client
            .apply(&spec.secret(&context_url, docker_config.as_deref(), &args))
            .await?;
        client.apply(&spec.job()).await
    };
    let watched = match applying.await {
        Err(e) => Err(format!("applying the build Job in {namespace} failed: {e}")),
        Ok(_) => {
            (job.log)(
                "system",
                format!("building in the cluster: Job {namespace}/{name} ({})", builder.image),
            );
            tokio::select! {
                r = watch(&client, &namespace, &name, job) => r,
                _ = job.cancel.cancelled() => Err("cancelled".to_string()),
            }
        }
    };
    drop(offer);
    for path in [&job_path, &secret_path] {
        if let Err(e) = client.delete(path).await {
            tracing::warn!(path = %path, error = %e, "deleting a build Job's object failed");
        }
    }
    let digest = watched?;
    let by_digest = format!("{repository}@{digest}");
    (job.log)("system", format!("pushed {by_digest}"));
    Ok(by_digest)
}

/// The `status` of the Job's condition `kind` when it is `True`.
fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

/// The statuses of a pod's init containers and containers.
fn statuses(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainerStatuses", "containerStatuses"]
        .into_iter()
        .flat_map(|k| pod["status"][k].as_array().into_iter().flatten())
}

/// The status of the pod's container `name`.
fn status_of<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    statuses(pod).find(|s| s["name"] == name)
}

/// Why the build pod cannot go on, if it cannot.
fn stuck(pod: &Value) -> Option<String> {
    for status in statuses(pod) {
        let waiting = &status["state"]["waiting"];
        if let Some(reason) = waiting["reason"].as_str()
            && STUCK_REASONS.contains(&reason)
        {
            return Some(format!(
                "the build pod's {} container cannot start: {reason}: {}",
                status["name"].as_str().unwrap_or("?"),
                waiting["message"].as_str().unwrap_or_default()
            ));
        }
    }
    let fetch = status_of(pod, FETCH)?;
    let code = fetch["state"]["terminated"]["exitCode"].as_i64()?;
    (code != 0).then(|| {
        format!("downloading the build context failed (the {FETCH} container exited with {code}): check that the cluster's pods reach berth at the kubernetes setting build_context_url")
    })
}

/// Watches the Job until it completes (the pushed digest) or fails (why, with the
/// build's last lines); the executor's output goes to the build log meanwhile.
async fn watch(client: &Client, namespace: &str, name: &str, job: &BuildJob<'_>) -> Result<String, String> {
    let job_path = format!(
        "{}/{name}",
        collection_path("Job", Some(namespace)).expect("known kind")
    );
    let pods_path = collection_path("Pod", Some(namespace)).expect("known kind");
    let selector = label_selector(&[(JOB_NAME_LABEL, name)]);
    let deadline = Instant::now() + job.timeout + Duration::from_secs(60);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    let mut tx = Some(tx);
    let mut follower: Option<tokio::task::JoinHandle<()>> = None;
    let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let write = |line: String, last: &mut std::collections::VecDeque<String>| {
        if last.len() == LAST_LINES {
            last.pop_front();
        }
        last.push_back(line.clone());
        (job.log)("stdout", line);
    };
    let outcome = loop {
        while let Ok(line) = rx.try_recv() {
            write(line, &mut last);
        }
        let current = match client.get(&job_path).await {
            Ok(Some(current)) => current,
            Ok(None) => break Err("the build Job was deleted before it finished".to_string()),
            Err(e) => break Err(format!("watching the build Job failed: {e}")),
        };
        let pod = client
            .list(&pods_path, &selector)
            .await
            .ok()
            .and_then(|pods| pods.into_iter().next());
        if let Some(pod) = &pod {
            if let Some(why) = stuck(pod) {
                break Err(why);
            }
            let started = status_of(pod, EXECUTOR)
                .is_some_and(|s| s["state"].get("running").is_some() || s["state"].get("terminated").is_some());
            if started
                && follower.is_none()
                && let (Some(pod_name), Some(tx)) = (pod["metadata"]["name"].as_str(), tx.take())
            {
                let (client, namespace, pod_name) = (client.clone(), namespace.to_string(), pod_name.to_string());
                follower = Some(tokio::spawn(async move {
                    super::pod_logs::follow_container(&client, &namespace, &pod_name, EXECUTOR, tx).await;
                }));
            }
        }
        if condition(&current, "Complete").is_some() {
            let message = pod
                .as_ref()
                .and_then(|p| status_of(p, EXECUTOR))
                .and_then(|s| s["state"]["terminated"]["message"].as_str())
                .unwrap_or_default()
                .trim()
                .to_string();
            let digest = message.rsplit('@').next().unwrap_or_default();
            let is_digest = digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
            break if is_digest {
                Ok(digest.to_string())
            } else {
                Err("the build Job completed, but its executor reported no sha256 digest in its termination message: is build_image a kaniko executor run with --digest-file?".to_string())
            };
        }
        if let Some(failed) = condition(&current, "Failed") {
            let exit = pod
                .as_ref()
                .and_then(|p| status_of(p, EXECUTOR))
                .and_then(|s| s["state"]["terminated"]["exitCode"].as_i64())
                .map(|c| format!(" (the executor exited with {c})"))
                .unwrap_or_default();
            break Err(format!(
                "the build Job failed: {}: {}{exit}",
                failed["reason"].as_str().unwrap_or("Failed"),
                failed["message"].as_str().unwrap_or_default()
            ));
        }
        if Instant::now() > deadline {
            break Err(format!(
                "the build Job did not finish within the build timeout ({} s)",
                job.timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    // The rest of the executor's output (its stream ends with the container).
    drop(tx);
    if let Some(follower) = follower {
        let rest = async {
            while let Some(line) = rx.recv().await {
                write(line, &mut last);
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), rest).await.is_err() {
            follower.abort();
        }
    }
    outcome.map_err(|why| {
        if last.is_empty() {
            why
        } else {
            let lines: Vec<String> = last.into_iter().collect();
            format!("{why}; the build's last lines:\n{}", lines.join("\n"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
            .collect()
    }

    #[test]
    fn the_job_builder_needs_its_image_and_url_named() {
        assert_eq!(Builder::parse(&settings(&[])).unwrap(), Builder::Docker);
        let err = Builder::parse(&settings(&[("builder", "job")])).unwrap_err();
        assert!(err.contains("'build_image'"), "{err}");
        let err = Builder::parse(&settings(&[("builder", "job"), ("build_image", "x y")])).unwrap_err();
        assert!(err.contains("'build_image'"), "{err}");
        let err = Builder::parse(&settings(&[("builder", "job"), ("build_image", "kaniko:1")])).unwrap_err();
        assert!(err.contains("'build_context_url'"), "{err}");
        let err = Builder::parse(&settings(&[
            ("builder", "job"),
            ("build_image", "kaniko:1"),
            ("build_context_url", "http://u:p@10.0.0.5:8080"),
        ]))
        .unwrap_err();
        assert!(err.contains("'build_context_url'"), "{err}");
        let err = Builder::parse(&settings(&[("builder", "podman")])).unwrap_err();
        assert!(err.contains("'builder'"), "{err}");
    }

    #[test]
    fn only_private_registry_and_berth_addresses_are_let_through() {
        assert_eq!(
            private_endpoints("10.0.0.7:5000/team", "http://192.168.1.2:8080/"),
            vec![
                (Ipv4Addr::new(10, 0, 0, 7), 5000),
                (Ipv4Addr::new(192, 168, 1, 2), 8080)
            ]
        );
        assert!(private_endpoints("registry.example.com", "https://berth.example.com").is_empty());
        assert!(private_endpoints("8.8.8.8:5000", "http://127.0.0.1:8080").is_empty());
    }

    #[test]
    fn build_namespace_and_job_golden() {
        let builder = JobBuilder {
            image: "gcr.io/kaniko-project/executor:v1.23.2".into(),
            fetch_image: DEFAULT_FETCH_IMAGE.into(),
            context_url: "http://10.0.0.5:8080".into(),
        };
        let namespace = builds_namespace("berth-", "org_1");
        insta::assert_json_snapshot!(
            "build_namespace_objects",
            namespace_objects(
                &namespace,
                "org_1",
                &private_endpoints("10.0.0.7:5000", &builder.context_url),
                build_pods_quota(2),
            )
        );
        let names = vec!["API_KEY".to_string(), "NODE_ENV".to_string()];
        let spec = JobSpec {
            namespace: &namespace,
            org: "org_1",
            site: "shop",
            deployment_id: "dpl_0123abcd",
            builder: &builder,
            destination: "10.0.0.7:5000/berth/shop:dpl_0123abcd",
            dockerfile: "Dockerfile",
            arg_names: &names,
            deadline_seconds: 900,
            push_credentials: true,
            insecure_registry: None,
        };
        insta::assert_json_snapshot!("build_job", spec.job());
        assert!(!spec.job().to_string().contains("--insecure"), "HTTPS unless set");
        let secret = spec.secret(
            "http://10.0.0.5:8080/internal/build-contexts/TOKEN",
            Some("{}"),
            &[("API_KEY".into(), "s3cret".into())],
        );
        // The values are in the Secret only, never in the Job.
        assert!(!spec.job().to_string().contains("TOKEN"));
        assert_eq!(
            secret["data"]["arg.API_KEY"],
            base64::engine::general_purpose::STANDARD.encode("s3cret")
        );
        // A plain-HTTP registry: the executor pushes to that registry (only) over HTTP.
        let plain = JobSpec {
            insecure_registry: Some("10.0.0.7:5000"),
            ..spec
        };
        let args = plain.job()["spec"]["template"]["spec"]["containers"][0]["args"].clone();
        let insecure: Vec<&str> = args
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| a.contains("insecure") || a.contains("skip-tls"))
            .collect();
        assert_eq!(insecure, ["--insecure-registry=10.0.0.7:5000"], "{args}");
    }
}
