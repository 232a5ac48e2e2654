//! The kubernetes target: deployments built into images by berth's docker engine (as the
//! docker target builds them) or by a build Job in the cluster (`builder: job`, see
//! [`build_job`]), pushed to the org's registry and run by digest on a
//! Kubernetes cluster the org brings. berth applies per org a locked-down namespace and
//! per environment a Deployment + Service + Ingress (see [`manifests`]) with server-side
//! apply, watches the rollout and fails fast on the reasons a rollout cannot recover
//! from; its edge keeps serving the environment's host (custom domains, TLS, the tap)
//! and proxies it to the cluster's ingress controller at `ingress_address`.
//!
//! Deployments run elsewhere, so this target has no provider on the shared lifecycle and
//! overrides release, observe, retire and scaling: the reconciler's instance count (the
//! autoscaler's while awake, zero once idle) becomes the Deployment's `replicas`, and a
//! request to a sleeping environment is held by the edge while it scales back up. The
//! pods' output is followed through the pod log API into berth's log store.
//!
//! When the cluster has Knative Serving (setting `knative`, see [`knative`]), an
//! environment is a Knative Service instead: its revisions are named after deployments,
//! traffic is pinned to the serving one, Knative's autoscaler scales it (to zero too,
//! its activator waking it on the first request) and berth sets no replicas.

mod apply;
pub mod build_job;
pub mod client;
pub mod connection;
pub mod knative;
pub mod manifests;
mod modes;
mod pod_logs;
pub mod registry_auth;
mod rollout;
mod routes;
mod scaling;
mod variables;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_build::detect::BuildPlan;

use super::docker::{self, DockerProvider};
use super::target::{
    Assembly, BuildJob, BuildKind, Capabilities, CheckError, ConfigKey, DryRun, Kept, Placement, PromoteWithoutRebuild,
    Registration, ScaleToZero, Settings, SiteRef, Target, Traffic,
};
use super::{InstanceSpec, Observation, Provider, Runtime, StartError, Usage};
pub use client::{ApiError, Client};
use manifests::{OrgLimits, Resources, Workload};

/// The registered name of this target.
pub const NAME: &str = "kubernetes";

/// Most replicas of one environment (the capability table's `max_instances`).
pub const MAX_REPLICAS: u32 = 10;

/// The kubernetes target as registered: an idle environment goes to `replicas: 0` and
/// the next request, held by berth's edge, scales it back up (a cold start); berth's
/// autoscaler sets the replicas while awake, up to [`MAX_REPLICAS`] (the org's
/// `max_replicas` may lower it); promotion reuses the pushed image by digest; runtime logs
/// come from the pod log API, usage from `metrics.k8s.io` when the cluster has it.
pub const TARGET: Registration = Registration {
    name: NAME,
    summary: "Builds apps into images, pushes them to a registry and runs them by digest on a Kubernetes cluster.",
    capabilities: Capabilities {
        scale_to_zero: ScaleToZero::Stop,
        max_instances: MAX_REPLICAS,
        promote_without_rebuild: PromoteWithoutRebuild::Always,
        runtime_logs: true,
        resource_usage: true,
        custom_domains: true,
        build: BuildKind::Image,
    },
    on_its_server: false,
    settings: &[
        ConfigKey {
            name: "api_url",
            secret: false,
            description: "The API server's URL, e.g. https://10.0.0.1:6443 (required, with token, unless kubeconfig or in_cluster is given).",
        },
        ConfigKey {
            name: "token",
            secret: true,
            description: "A bearer token of a service account allowed to manage namespaces, deployments, services, ingresses, quotas, limit ranges, service accounts, secrets and network policies (and jobs and pods/log with builder job) (required, with api_url, unless kubeconfig or in_cluster is given).",
        },
        ConfigKey {
            name: "ca_certificate",
            secret: false,
            description: "PEM certificate of the API server's CA (optional: the usual roots otherwise).",
        },
        ConfigKey {
            name: "kubeconfig",
            secret: true,
            description: "A kubeconfig's YAML text, instead of api_url, token and ca_certificate: its current context's (or kubeconfig_context's) cluster server and certificate-authority-data, and its user's token or client-certificate-data and client-key-data. exec and auth-provider users and file paths are refused (kubectl config view --minify --flatten puts the data in).",
        },
        ConfigKey {
            name: "kubeconfig_context",
            secret: false,
            description: "The kubeconfig's context to use (default: its current-context).",
        },
        ConfigKey {
            name: "in_cluster",
            secret: false,
            description: "true: berth runs in a pod of the cluster and uses its service account (KUBERNETES_SERVICE_HOST and _PORT, the token and ca.crt in /var/run/secrets/kubernetes.io/serviceaccount, the token re-read at each request as it rotates), instead of api_url, token and ca_certificate or kubeconfig.",
        },
        ConfigKey {
            name: "namespace_prefix",
            secret: false,
            description: "Prefix of each org's namespace (default berth-).",
        },
        ConfigKey {
            name: "registry",
            secret: false,
            description: "Registry images are pushed to and pulled from by digest, HOST:PORT[/path] (required), e.g. 127.0.0.1:5000.",
        },
        ConfigKey {
            name: "registry_username",
            secret: false,
            description: "Username berth pushes images with and pods pull them with (optional; with registry_password).",
        },
        ConfigKey {
            name: "registry_password",
            secret: true,
            description: "Password (or token) of registry_username: sent to the Docker Engine in its X-Registry-Auth header and kept in each org's namespace as the kubernetes.io/dockerconfigjson Secret berth-registry, which the namespace's app ServiceAccount names in imagePullSecrets.",
        },
        ConfigKey {
            name: "registry_insecure",
            secret: false,
            description: "true: the registry speaks plain HTTP and the build Job's executor pushes to it with --insecure-registry=HOST:PORT (that registry only); default false (HTTPS).",
        },
        ConfigKey {
            name: "ingress_class",
            secret: false,
            description: "ingressClassName of the environments' Ingresses (default: the cluster's default class).",
        },
        ConfigKey {
            name: "ingress_address",
            secret: false,
            description: "IP:PORT where the cluster's ingress controller accepts HTTP; berth's edge proxies each environment's host there (required).",
        },
        ConfigKey {
            name: "cert_manager_issuer",
            secret: false,
            description: "cert-manager ClusterIssuer of custom domains' certificates: their Ingress gets the cert-manager.io/cluster-issuer annotation instead of berth's certificates as TLS Secrets (optional).",
        },
        ConfigKey {
            name: "knative",
            secret: false,
            description: "auto (default): environments are Knative Services when the cluster serves serving.knative.dev/v1 (Knative scales them, to zero too, and wakes them on the first request); on: require Knative; off: Deployment + Service + Ingress.",
        },
        ConfigKey {
            name: "builder",
            secret: false,
            description: "Who builds deployments' images: docker (default: berth's docker engine at docker_host builds and pushes them) or job (a batch/v1 Job in the org's builds namespace <namespace_prefix><org>-builds runs build_image, which downloads the build context once from berth at build_context_url and pushes to the registry).",
        },
        ConfigKey {
            name: "build_image",
            secret: false,
            description: "With builder job: the kaniko-compatible executor image of the build Job (required), e.g. gcr.io/kaniko-project/executor:v1.23.2.",
        },
        ConfigKey {
            name: "build_fetch_image",
            secret: false,
            description: "With builder job: the image with sh and wget whose init container downloads the build context (default busybox:1.36).",
        },
        ConfigKey {
            name: "build_context_url",
            secret: false,
            description: "With builder job: berth's API URL as the cluster's pods reach it (required), e.g. http://10.0.0.5:8080; the build context is served once at URL/internal/build-contexts/<token>.",
        },
        ConfigKey {
            name: "docker_host",
            secret: false,
            description: "The Docker Engine that builds and pushes images (default unix:///var/run/docker.sock).",
        },
        ConfigKey {
            name: "cpu_request",
            secret: false,
            description: "CPU request of an app container (default 100m).",
        },
        ConfigKey {
            name: "memory_request",
            secret: false,
            description: "Memory request of an app container (default 128Mi).",
        },
        ConfigKey {
            name: "cpu_limit",
            secret: false,
            description: "CPU limit of an app container (default 1).",
        },
        ConfigKey {
            name: "memory_limit",
            secret: false,
            description: "Memory limit of an app container (default 512Mi).",
        },
        ConfigKey {
            name: "quota_cpu",
            secret: false,
            description: "ResourceQuota limits.cpu of an org's namespace (default 4).",
        },
        ConfigKey {
            name: "quota_memory",
            secret: false,
            description: "ResourceQuota limits.memory of an org's namespace (default 8Gi).",
        },
        ConfigKey {
            name: "quota_pods",
            secret: false,
            description: "ResourceQuota pods of an org's namespace, 1 to 10000 (default 20).",
        },
        ConfigKey {
            name: "max_replicas",
            secret: false,
            description: "Most replicas of one environment's Deployment (scale-out), 1 to 10 (default 10).",
        },
        ConfigKey {
            name: "default",
            secret: false,
            description: "true: new sites of the org run on kubernetes.",
        },
    ],
    check_settings,
    make,
};

/// An org's kubernetes settings, checked.
#[derive(Clone)]
pub struct KubeSettings {
    /// API server URL.
    pub api_url: String,
    /// Where the API server is and how berth authenticates to it.
    connection: connection::Connection,
    /// Namespace prefix.
    pub namespace_prefix: String,
    /// Registry (`host:port[/path]`).
    pub registry: String,
    /// Credentials of the registry, when it requires them.
    pub registry_auth: Option<registry_auth::RegistryAuth>,
    /// Whether the registry speaks plain HTTP (the build Job's executor pushes to it so).
    pub registry_insecure: bool,
    /// Ingress class.
    pub ingress_class: Option<String>,
    /// Where the ingress controller listens.
    pub ingress_address: SocketAddr,
    /// The engine that builds images.
    pub docker_host: Option<String>,
    /// cert-manager's ClusterIssuer of custom domains' certificates.
    pub cert_manager_issuer: Option<String>,
    /// Quota and container sizes.
    pub limits: OrgLimits,
    /// Most replicas of one environment.
    pub max_replicas: u32,
    /// Whether environments run as Knative Services.
    pub knative: knative::Mode,
    /// Who builds images: berth's docker engine or a Job in the cluster.
    pub builder: build_job::Builder,
}

impl std::fmt::Debug for KubeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSettings")
            .field("api_url", &self.api_url)
            .field("registry", &self.registry)
            .field("ingress_address", &self.ingress_address)
            .finish_non_exhaustive()
    }
}

/// A string setting, if set; anything but a string is refused naming the key.
pub(crate) fn text<'a>(settings: &'a Settings, key: &str) -> Result<Option<&'a str>, String> {
    match settings.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(format!("kubernetes setting '{key}' must be a string")),
    }
}

/// A required string setting.
fn required<'a>(settings: &'a Settings, key: &str, example: &str) -> Result<&'a str, String> {
    text(settings, key)?.ok_or_else(|| format!("kubernetes setting '{key}' is required, e.g. {example}"))
}

/// Whether `text` holds PEM certificates only (reqwest parses them lazily, so a bad one
/// would fail only at the first connection).
fn is_pem_certificate(text: &str) -> bool {
    use base64::Engine as _;
    let (begin, end) = ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----");
    let mut rest = text.trim();
    let mut found = false;
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix(begin) else {
            return false;
        };
        let Some((body, after)) = body.split_once(end) else {
            return false;
        };
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        if b64.is_empty() || base64::engine::general_purpose::STANDARD.decode(b64).is_err() {
            return false;
        }
        found = true;
        rest = after.trim_start();
    }
    found && reqwest::Certificate::from_pem(text.as_bytes()).is_ok()
}

/// A Kubernetes quantity (`100m`, `1`, `0.5`, `512Mi`, `2G`), or the default.
fn quantity(settings: &Settings, key: &str, default: &str) -> Result<String, String> {
    let Some(value) = text(settings, key)? else {
        return Ok(default.to_string());
    };
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &value[digits.len()..];
    let known = ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"];
    if digits.parse::<f64>().is_ok_and(|n| n > 0.0 && n.is_finite()) && known.contains(&suffix) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "kubernetes setting '{key}' must be a quantity such as {default} (a number with m, Ki, Mi, Gi, …), got '{value}'"
        ))
    }
}

impl KubeSettings {
    /// Reads and checks an org's settings; the message names the key and what it takes.
    pub fn parse(settings: &Settings) -> Result<Self, String> {
        let connection = connection::parse(settings, is_pem_certificate)?;
        let namespace_prefix = text(settings, "namespace_prefix")?.unwrap_or("berth-").to_string();
        if namespace_prefix.len() > 20
            || !namespace_prefix.starts_with(|c: char| c.is_ascii_lowercase())
            || !namespace_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "kubernetes setting 'namespace_prefix' must be up to 20 lowercase letters, digits and '-', starting with a letter (default berth-), got '{namespace_prefix}'"
            ));
        }
        let registry = required(settings, "registry", "127.0.0.1:5000")?
            .trim_end_matches('/')
            .to_string();
        if registry.contains("://")
            || registry.chars().any(|c| c.is_whitespace() || c == '@')
            || !registry
                .split('/')
                .next()
                .is_some_and(|h| h.contains('.') || h.contains(':') || h == "localhost")
        {
            return Err(format!(
                "kubernetes setting 'registry' must be HOST:PORT[/path] without a scheme, e.g. 127.0.0.1:5000, got '{registry}'"
            ));
        }
        let registry_auth = registry_auth::RegistryAuth::parse(settings, &registry)?;
        let registry_insecure = match settings.get("registry_insecure") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(v) => {
                return Err(format!(
                    "kubernetes setting 'registry_insecure' must be true (the registry speaks plain HTTP) or false (HTTPS, the default), got {v}"
                ));
            }
        };
        let ingress_address = required(settings, "ingress_address", "10.0.0.2:80")?;
        let ingress_address: SocketAddr = ingress_address.parse().map_err(|_| {
            format!("kubernetes setting 'ingress_address' must be IP:PORT of the ingress controller, e.g. 10.0.0.2:80, got '{ingress_address}'")
        })?;
        let ingress_class = text(settings, "ingress_class")?.map(str::to_string);
        if let Some(class) = &ingress_class
            && manifests::dns_label(class) != *class
        {
            return Err(format!(
                "kubernetes setting 'ingress_class' must be a DNS label such as nginx, got '{class}'"
            ));
        }
        let cert_manager_issuer = text(settings, "cert_manager_issuer")?.map(str::to_string);
        if let Some(issuer) = &cert_manager_issuer
            && manifests::dns_label(issuer) != *issuer
        {
            return Err(format!(
                "kubernetes setting 'cert_manager_issuer' must be the name of a ClusterIssuer (a DNS label such as letsencrypt), got '{issuer}'"
            ));
        }
        let docker_host = text(settings, "docker_host")?.map(str::to_string);
        if let Some(host) = &docker_host {
            docker::engine::check_host(host).map_err(|e| format!("kubernetes setting 'docker_host': {e}"))?;
        }
        let quota_pods = match settings.get("quota_pods") {
            None | Some(serde_json::Value::Null) => 20,
            Some(v) => v.as_u64().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| {
                format!("kubernetes setting 'quota_pods' must be a whole number from 1 to 10000, got {v}")
            })? as u32,
        };
        let max_replicas = match settings.get("max_replicas") {
            None | Some(serde_json::Value::Null) => MAX_REPLICAS,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=u64::from(MAX_REPLICAS)).contains(n))
                .ok_or_else(|| {
                    format!(
                        "kubernetes setting 'max_replicas' must be a whole number from 1 to {MAX_REPLICAS}, got {v}"
                    )
                })? as u32,
        };
        if let Some(v) = settings.get("default")
            && !v.is_boolean()
        {
            return Err(format!("kubernetes setting 'default' must be true or false, not {v}"));
        }
        Ok(Self {
            api_url: connection.api_url.trim_end_matches('/').to_string(),
            connection,
            namespace_prefix,
            registry,
            registry_auth,
            registry_insecure,
            ingress_class,
            ingress_address,
            docker_host,
            cert_manager_issuer,
            limits: OrgLimits {
                container: Resources {
                    cpu_request: quantity(settings, "cpu_request", "100m")?,
                    memory_request: quantity(settings, "memory_request", "128Mi")?,
                    cpu_limit: quantity(settings, "cpu_limit", "1")?,
                    memory_limit: quantity(settings, "memory_limit", "512Mi")?,
                },
                quota_cpu: quantity(settings, "quota_cpu", "4")?,
                quota_memory: quantity(settings, "quota_memory", "8Gi")?,
                quota_pods,
            },
            max_replicas,
            knative: knative::Mode::parse(settings)?,
            builder: build_job::Builder::parse(settings)?,
        })
    }

    /// A client of the org's API server.
    pub fn client(&self) -> Result<Client, String> {
        Client::connect(&self.connection)
    }

    /// The registry's `host:port` (its path left out).
    pub fn registry_host(&self) -> &str {
        self.registry.split('/').next().unwrap_or_default()
    }

    /// The org's namespace.
    pub fn namespace(&self, org: &str) -> String {
        manifests::namespace_name(&self.namespace_prefix, org)
    }

    /// The engine settings images are built and pushed with.
    fn docker_settings(&self) -> Result<docker::DockerSettings, String> {
        let mut engine = Settings::new();
        if let Some(host) = &self.docker_host {
            engine.insert("host".into(), host.clone().into());
        }
        docker::settings_from_config(&engine)
    }
}

/// Checks an org's settings (the registration's `check_settings`).
fn check_settings(settings: &Settings) -> Result<(), String> {
    KubeSettings::parse(settings).map(drop)
}

/// Makes the kubernetes target (the registration's `make`).
fn make(parts: &Assembly) -> anyhow::Result<Arc<dyn Target>> {
    use anyhow::Context as _;
    let owner = parts.owner.clone();
    let images = parts.data_dir.join("kubernetes-images");
    std::fs::create_dir_all(&images).context("creating the kubernetes image records folder")?;
    let variables_key = variables::load_key(&parts.data_dir)?;
    Ok(Arc::new(KubernetesTarget {
        variables_key,
        builder: DockerProvider::new(owner),
        build_contexts: parts.build_contexts.clone(),
        build_pods: build_job::build_pods_quota(parts.build_concurrency),
        images,
        placements: scaling::Placements::default(),
        knative: std::sync::Mutex::default(),
    }))
}

/// The kubernetes target.
struct KubernetesTarget {
    /// The installation's key of the variables' Secret names (never printed).
    variables_key: Vec<u8>,
    /// Builds and pushes images (never runs containers).
    builder: DockerProvider,
    /// Build contexts offered to build Jobs.
    build_contexts: Arc<crate::runtime::build_contexts::BuildContexts>,
    /// The builds namespace's ResourceQuota `pods`.
    build_pods: u32,
    /// One file per deployment holding its image by digest (what promotion reuses).
    images: PathBuf,
    /// What berth set on each environment's Deployment (replicas, log follower).
    placements: scaling::Placements,
    /// Whether each environment berth released (by its Deployment's path) is a Knative
    /// Service, which Knative scales (berth sets no replicas on it).
    knative: std::sync::Mutex<std::collections::HashMap<String, bool>>,
}

impl KubernetesTarget {
    /// The folder of a site's image records (removed with the site).
    fn site_records(&self, site: &str) -> PathBuf {
        self.images.join(manifests::dns_label(site))
    }

    /// Records the deployment's pushed image by digest (what release and promotion use).
    async fn record_image(&self, job: &BuildJob<'_>, by_digest: &str) -> Result<(), String> {
        let record = self
            .image_record(job.site.site, job.deployment_id)
            .ok_or_else(|| format!("deployment id '{}' is not one of berth's", job.deployment_id))?;
        if let Some(folder) = record.parent() {
            tokio::fs::create_dir_all(folder)
                .await
                .map_err(|e| format!("internal error: recording the image: {e}"))?;
        }
        tokio::fs::write(&record, by_digest)
            .await
            .map_err(|e| format!("internal error: recording the image: {e}"))
    }

    /// A release or a restart of the environment: see [`Target::release`] and
    /// [`Target::restart`].
    async fn roll(&self, spec: InstanceSpec, roll: knative::Roll) -> Result<Traffic, StartError> {
        let settings = KubeSettings::parse(&spec.provider_config).map_err(start_error)?;
        let client = settings.client().map_err(start_error)?;
        let image = spec
            .image
            .clone()
            .ok_or_else(|| start_error("the deployment has no pushed image; deploy again"))?;
        let namespace = settings.namespace(&spec.org);
        // A new release keeps the environment's scale (at least one replica to roll out).
        let path = scaling::deployment_path(&namespace, &spec.site, &spec.environment);
        let replicas = self
            .placements
            .replicas(&path)
            .unwrap_or(1)
            .clamp(1, settings.max_replicas);
        let mut workload = workload(&settings, &spec, image, &self.variables_key);
        workload.replicas = replicas;
        let uses_knative = knative::in_use(&client, settings.knative, &settings.api_url)
            .await
            .map_err(start_error)?;
        if roll == knative::Roll::Release {
            let removed = modes::remove_other_mode(&client, &workload, uses_knative)
                .await
                .map_err(start_error)?;
            if !removed.is_empty() {
                tracing::info!(site.name = %spec.site, environment = %spec.environment, removed = %removed.join(", "), "the environment changed mode; its objects of the other mode were deleted");
            }
        }
        if uses_knative {
            let scale = knative_scale(&spec, &settings);
            let pull = settings.registry_auth.as_ref();
            knative::release(
                &client,
                &workload,
                &settings.limits,
                pull,
                scale,
                spec.start_timeout,
                roll,
            )
            .await?;
        } else {
            let restarted_at = (roll == knative::Roll::Restart).then(crate::util::now_ms);
            apply::release(
                &client,
                &workload,
                &settings.limits,
                settings.registry_auth.as_ref(),
                spec.start_timeout,
                restarted_at,
            )
            .await?;
        }
        self.knative
            .lock()
            .expect("knative lock")
            .insert(path.clone(), uses_knative);
        let placement = Placement {
            site: SiteRef {
                org: &spec.org,
                site: &spec.site,
                settings: &spec.provider_config,
            },
            environment: &spec.environment,
            deployment_id: &spec.deployment_id,
        };
        self.placements.released(path, placement, &settings, replicas);
        Ok(Traffic::Edge(vec![settings.ingress_address]))
    }

    /// The record of a deployment's image (ids are berth's own, `dpl_…`).
    fn image_record(&self, site: &str, deployment_id: &str) -> Option<PathBuf> {
        let safe = !deployment_id.is_empty() && deployment_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        safe.then(|| self.site_records(site).join(deployment_id))
    }
}

/// What an environment runs for a release of `spec` with `image`.
fn workload(settings: &KubeSettings, spec: &InstanceSpec, image: String, key: &[u8]) -> Workload {
    let port = spec.port.unwrap_or(8080);
    let mut env = spec.env.clone();
    env.retain(|(k, _)| k != "PORT");
    env.push(("PORT".into(), port.to_string()));
    let name = manifests::workload_name(&spec.site, &spec.environment);
    let variables_secret = manifests::variables_secret_name(&name, key, &spec.deployment_id, &env);
    Workload {
        variables_secret,
        namespace: settings.namespace(&spec.org),
        org: spec.org.clone(),
        site: spec.site.clone(),
        environment: spec.environment.clone(),
        deployment_id: spec.deployment_id.clone(),
        image,
        port,
        env,
        health_check_path: spec.health_check_path.clone(),
        resources: settings.limits.container.clone(),
        replicas: 1,
        host: spec.host.clone(),
        ingress_class: settings.ingress_class.clone(),
        progress_deadline_seconds: spec.start_timeout.as_secs().clamp(10, 3600) as u32,
        domains: spec.domains.iter().map(|d| d.name.clone()).collect(),
        certificates: spec
            .domains
            .iter()
            .filter_map(|d| {
                d.certificate.as_ref().map(|c| manifests::TlsCertificate {
                    host: d.name.clone(),
                    chain: c.chain.clone(),
                    key: c.key.clone(),
                })
            })
            .collect(),
        cert_manager_issuer: settings.cert_manager_issuer.clone(),
    }
}

/// A failed release, with the app's last output lines.
/// Knative's scale annotations for a release of `spec`, bounded by the settings.
fn knative_scale(spec: &InstanceSpec, settings: &KubeSettings) -> knative::Scale {
    knative::Scale {
        min: spec.scale.min_instances,
        max: spec.scale.max_instances.min(settings.max_replicas),
        target: spec.scale.target_concurrency,
    }
}

fn start_error(message: impl Into<String>) -> StartError {
    StartError {
        message: message.into(),
        last_lines: Vec::new(),
    }
}

#[async_trait::async_trait]
impl Target for KubernetesTarget {
    fn registration(&self) -> &'static Registration {
        &TARGET
    }

    fn provider(&self) -> Option<Arc<dyn Provider>> {
        None
    }

    fn build_for(&self, plan: &BuildPlan) -> BuildKind {
        if docker::serves_process(plan) {
            BuildKind::Image
        } else {
            BuildKind::SandboxSteps
        }
    }

    fn own_plan(
        &self,
        dir: &Path,
        settings: &berth_build::detect::BuildSettings,
    ) -> Option<Result<BuildPlan, berth_build::detect::DetectError>> {
        (settings.build_pack.is_none() && berth_build::dockerfile::has_dockerfile(dir))
            .then(|| berth_build::dockerfile::dockerfile_plan(settings))
    }

    /// Built as the docker target builds it, then tagged for the org's registry, pushed,
    /// and recorded by digest; or built and pushed by a Job in the cluster (`builder: job`,
    /// see [`build_job`]) and recorded the same way.
    async fn build(&self, job: BuildJob<'_>) -> Result<(), String> {
        let settings = KubeSettings::parse(job.site.settings)?;
        if let build_job::Builder::Job(builder) = &settings.builder {
            let by_digest = build_job::build(&settings, builder, &self.build_contexts, self.build_pods, &job).await?;
            return self.record_image(&job, &by_digest).await;
        }
        let engine = settings.docker_settings()?;
        let tag = docker::build_deployment_image(&self.builder, &engine, &job).await?;
        let pushed = format!("{}/{tag}", settings.registry);
        self.builder
            .tag_image(&engine, &tag, &pushed)
            .await
            .map_err(|e| e.to_string())?;
        (job.log)("system", format!("pushing {pushed}"));
        let auth = settings.registry_auth.as_ref();
        let pushing = self.builder.push_image_with(
            &engine,
            &pushed,
            auth.map(registry_auth::RegistryAuth::docker_credentials),
        );
        let by_digest = tokio::select! {
            r = pushing => r.map_err(|e| {
                let message = format!(
                    "pushing to the registry {} failed: {e}; check the kubernetes settings registry{}",
                    settings.registry,
                    if auth.is_some() { ", registry_username and registry_password" } else { " (and registry_username and registry_password if it requires them)" },
                );
                auth.map_or(message.clone(), |a| a.scrub(&message))
            })?,
            _ = job.cancel.cancelled() => return Err("cancelled".to_string()),
        };
        (job.log)("system", format!("pushed {by_digest}"));
        self.record_image(&job, &by_digest).await
    }

    fn instance_image(&self, site: &str, deployment_id: &str, plan: &BuildPlan) -> Option<String> {
        if !docker::serves_process(plan) {
            return None;
        }
        let record = self.image_record(site, deployment_id)?;
        std::fs::read_to_string(record).ok().map(|s| s.trim().to_string())
    }

    /// The same image by digest: nothing is rebuilt or pushed.
    async fn copy_build(
        &self,
        site: SiteRef<'_>,
        plan: &BuildPlan,
        from: &str,
        to: &str,
    ) -> Result<&'static str, String> {
        if !docker::serves_process(plan) {
            return Ok("");
        }
        let (Some(from), Some(to)) = (self.image_record(site.site, from), self.image_record(site.site, to)) else {
            return Err("not a deployment of berth's".into());
        };
        tokio::fs::copy(&from, &to)
            .await
            .map_err(|_| "the deployment's image record is gone; deploy again".to_string())?;
        Ok(" and image (by digest)")
    }

    async fn kept(&self, site: SiteRef<'_>, plan: &BuildPlan, id: &str) -> Result<Kept, String> {
        if !docker::serves_process(plan) || self.image_record(site.site, id).is_some_and(|p| p.exists()) {
            Ok(Kept::Yes)
        } else {
            Ok(Kept::Gone("no image of it was pushed to the registry".into()))
        }
    }

    /// The deployment's image record goes (the image itself stays in the registry,
    /// whose own retention bounds it).
    async fn deployment_forgotten(&self, site: &str, deployment_id: &str) {
        if let Some(record) = self.image_record(site, deployment_id) {
            let _ = tokio::fs::remove_file(record).await;
        }
        let Some((settings, namespace)) = self.placements.of_site(site) else {
            return;
        };
        let Ok(client) = settings.client() else {
            return;
        };
        // Its Knative revisions are no longer kept from Knative's garbage collection.
        if settings.knative != knative::Mode::Off
            && let Err(e) = knative::release_revisions(&client, &namespace, site, deployment_id).await
            && !e.is_not_found()
        {
            tracing::warn!(site.name = %site, deployment.id = %deployment_id, error = %e, "releasing a forgotten deployment's Knative revisions to garbage collection failed");
        }
        // Nor its variables' Secrets.
        if let Err(e) = variables::forget_deployment(&client, &namespace, site, deployment_id).await {
            tracing::warn!(site.name = %site, deployment.id = %deployment_id, error = %e, "deleting a forgotten deployment's variables' Secrets failed");
        }
    }

    /// Deletes the site's owner object (its dependents go with it) and whatever else of
    /// the site carries berth's labels (nothing else), and berth's records of its images.
    async fn site_deleted(&self, site: SiteRef<'_>) -> Result<(), String> {
        let _ = tokio::fs::remove_dir_all(self.site_records(site.site)).await;
        let settings = KubeSettings::parse(site.settings)?;
        self.placements.site_deleted(&settings.namespace(site.org), site.site);
        let client = settings.client()?;
        rollout::delete_site(&client, &settings.namespace(site.org), site.site)
            .await
            .map_err(|e| e.to_string())?;
        if settings.knative != knative::Mode::Off {
            knative::delete_site(&client, &settings.namespace(site.org), site.site)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn is_org_default(&self, settings: &Settings) -> bool {
        settings.get("default").and_then(serde_json::Value::as_bool) == Some(true)
    }

    /// Discovery: the server's version and whether the groups berth uses are there.
    async fn test_connection(&self, settings: &Settings) -> Result<String, CheckError> {
        let settings = KubeSettings::parse(settings).map_err(CheckError::Invalid)?;
        let client = settings.client().map_err(CheckError::Invalid)?;
        let unavailable = |e: ApiError| CheckError::Unavailable(e.to_string());
        let version = client.version().await.map_err(unavailable)?;
        let groups = client.api_groups().await.map_err(unavailable)?;
        let needs_batch = matches!(settings.builder, build_job::Builder::Job(_));
        let missing: Vec<&str> = ["apps", "networking.k8s.io", "batch"]
            .into_iter()
            .filter(|g| *g != "batch" || needs_batch)
            .filter(|g| !groups.iter().any(|have| have == g))
            .collect();
        if !missing.is_empty() {
            return Err(CheckError::Unavailable(format!(
                "the Kubernetes API at {} ({version}) lacks the API groups {}",
                settings.api_url,
                missing.join(", ")
            )));
        }
        let knative = knative::in_use(&client, settings.knative, &settings.api_url)
            .await
            .map_err(CheckError::Unavailable)?;
        let mode = if knative {
            "Knative Serving is used: each environment is a Knative Service that Knative scales, to zero when min_instances is 0, and its activator wakes on the first request"
        } else {
            "no Knative: each environment is a Deployment + Service + Ingress; an idle environment with min_instances 0 goes to replicas 0 and berth's edge holds the first request while it scales back up"
        };
        Ok(format!("Kubernetes {version} at {}; {mode}", settings.api_url))
    }

    /// Applies the org's namespace objects, the site's owner object and the environment's
    /// Deployment, Service and Ingress as its dependents, then watches the rollout until it
    /// is available or fails (and then puts the previous serving template back). The
    /// environment's objects of the other mode (Knative or not) are deleted first.
    async fn release(&self, _lifecycle: &Runtime, spec: InstanceSpec) -> Result<Traffic, StartError> {
        self.roll(spec, knative::Roll::Release).await
    }

    /// The environment's workload applied again with its variables as they are now: a
    /// Deployment rolls its pods over (`maxUnavailable: 0`, readiness-gated, so no
    /// request fails; the pod template carries the restart's time so it rolls even when
    /// nothing else changed); a Knative Service gets a new revision of the same
    /// deployment (its name suffixed), and traffic moves to it once it is ready.
    async fn restart(&self, _lifecycle: &Runtime, spec: InstanceSpec) -> Result<bool, String> {
        // The reason only: the app's last lines (which may print its variables) are not
        // put in an answer.
        self.roll(spec, knative::Roll::Restart)
            .await
            .map(|_| true)
            .map_err(|e| e.message)
    }

    /// On Knative, the scale annotations of the serving revision are updated at once
    /// (no new revision); a Deployment's replicas are the reconciler's to set.
    async fn scale_changed(&self, spec: InstanceSpec) -> Result<(), String> {
        let settings = KubeSettings::parse(&spec.provider_config)?;
        if settings.knative == knative::Mode::Off {
            return Ok(());
        }
        let client = settings.client()?;
        let w = workload(&settings, &spec, String::new(), &self.variables_key);
        knative::rescale(&client, &w, knative_scale(&spec, &settings)).await
    }

    /// The objects a release would apply, with an image name standing for the one the
    /// deploy would build; nothing built or applied.
    async fn dry_run(&self, spec: InstanceSpec) -> Result<DryRun, String> {
        let settings = KubeSettings::parse(&spec.provider_config)?;
        let client = settings.client()?;
        let image = format!(
            "{}/berth/{}:built-by-this-deploy",
            settings.registry,
            manifests::dns_label(&spec.site)
        );
        let workload = workload(&settings, &spec, image, &self.variables_key);
        let pull = settings.registry_auth.as_ref();
        // What a release would do here: a Knative Service where the cluster has Knative
        // (or the setting requires it), a Deployment + Service + Ingress otherwise.
        // Discovery that fails (or `knative: on` on a cluster without it) shows the objects
        // the setting asks for, with why in the note.
        let (on_knative, unsure) = match knative::in_use(&client, settings.knative, &settings.api_url).await {
            Ok(found) => (found, None),
            Err(e) => (settings.knative == knative::Mode::On, Some(e)),
        };
        let rendered = if on_knative {
            knative::render(&workload, &settings.limits, pull, knative_scale(&spec, &settings))
        } else {
            apply::render(&workload, &settings.limits, pull).into_list()
        };
        let mut dry = apply::dry_run(&client, rendered).await;
        if let Some(why) = unsure {
            dry.note = format!("{why}; {}", dry.note);
        }
        // The build Job's objects first, as berth renders them (they are applied when the
        // deploy builds).
        if let build_job::Builder::Job(builder) = &settings.builder {
            let build = build_job::dry_run_objects(&settings, builder, &spec, self.build_pods);
            dry.note = format!(
                "{}; the first {} objects are the build Job's, as berth renders them (not checked by the cluster)",
                dry.note,
                build.len()
            );
            dry.objects.splice(0..0, build);
        }
        Ok(dry)
    }

    fn serving(&self, settings: &Settings) -> Option<Traffic> {
        KubeSettings::parse(settings)
            .ok()
            .map(|s| Traffic::Edge(vec![s.ingress_address]))
    }

    /// The replicas berth set and how many were ready when it last looked.
    fn observe(&self, _lifecycle: &Runtime, deployment_id: &str) -> Vec<Observation> {
        self.placements.observe(deployment_id)
    }

    /// From the pods' `PodMetrics` when the cluster offers `metrics.k8s.io`.
    async fn usage_report(
        &self,
        _lifecycle: &Runtime,
        deployment_id: &str,
    ) -> Result<Vec<(u32, Option<Usage>)>, String> {
        self.placements.usage(deployment_id).await
    }

    fn max_instances(&self, settings: &Settings) -> u32 {
        KubeSettings::parse(settings).map_or(MAX_REPLICAS, |s| s.max_replicas)
    }

    /// A Knative Service (as this process released or found it): Knative's autoscaler
    /// scales it, to zero too, and its activator wakes it.
    fn scales_itself(&self, placement: Placement<'_>) -> bool {
        let Ok(settings) = KubeSettings::parse(placement.site.settings) else {
            return false;
        };
        let path = scaling::deployment_path(
            &settings.namespace(placement.site.org),
            placement.site.site,
            placement.environment,
        );
        self.knative.lock().expect("knative lock").get(&path).copied() == Some(true)
    }

    /// The Deployment's `replicas`, through its scale subresource.
    /// A Knative Service is scaled by Knative (berth's count is not applied).
    async fn scale(&self, lifecycle: &Runtime, placement: Placement<'_>, instances: u32) -> Result<u32, String> {
        let max = self.max_instances(placement.site.settings);
        let settings = KubeSettings::parse(placement.site.settings)?;
        let namespace = settings.namespace(placement.site.org);
        let path = scaling::deployment_path(&namespace, placement.site.site, placement.environment);
        let known = self.knative.lock().expect("knative lock").get(&path).copied();
        let is_knative = match known {
            Some(known) => known,
            // Released before this process started: a Knative Service of the environment?
            None if settings.knative == knative::Mode::Off => false,
            None => {
                let service = format!(
                    "{}/{}",
                    knative::collection_path("Service", &namespace).expect("known kind"),
                    manifests::workload_name(placement.site.site, placement.environment)
                );
                let found = settings
                    .client()?
                    .get(&service)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some();
                self.knative.lock().expect("knative lock").insert(path.clone(), found);
                found
            }
        };
        if is_knative {
            self.placements
                .follow(lifecycle.log_sink(), &path, placement.deployment_id);
            return Ok(instances.min(max));
        }
        self.placements
            .scale(lifecycle.log_sink(), placement, instances, max)
            .await
    }

    /// The environment's Ingress and TLS Secrets (or DomainMappings and TLS Secrets on
    /// Knative) applied now; those of removed hosts deleted. Nothing when the site was
    /// never released to the cluster.
    async fn routes_changed(&self, spec: InstanceSpec) -> Result<(), String> {
        let settings = KubeSettings::parse(&spec.provider_config)?;
        let client = settings.client()?;
        let w = workload(&settings, &spec, String::new(), &self.variables_key);
        let Some(owner) = routes::owner(&client, &w).await? else {
            return Ok(());
        };
        let path = scaling::deployment_path(&w.namespace, &spec.site, &spec.environment);
        let known = self.knative.lock().expect("knative lock").get(&path).copied();
        let uses_knative = match known {
            Some(known) => known,
            None => knative::in_use(&client, settings.knative, &settings.api_url).await?,
        };
        if uses_knative {
            knative::apply_routes(&client, &w, &owner).await
        } else {
            routes::apply_ingress(&client, &w, &owner).await
        }
    }

    /// An environment's Deployment is updated in place by the next release, so an
    /// older deployment has nothing of its own to stop.
    async fn retire(&self, _lifecycle: &Runtime, _deployment_id: &str) {}
}
