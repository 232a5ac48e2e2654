//! The objects berth applies to a cluster, as pure functions of what they describe: per
//! org a Namespace (Pod Security `restricted`), ResourceQuota, LimitRange, ServiceAccount
//! without a token and a default-deny NetworkPolicy; per environment a Deployment, a
//! Service and an Ingress for its host, and the app's variables as an immutable Secret
//! the container reads them from (no value in the Deployment: reading Deployments is a
//! much wider grant than reading Secrets). Every object carries
//! `app.kubernetes.io/managed-by: berth` and berth's own labels, so berth finds (and
//! touches) only what it made. Golden-tested: the snapshots are the review of a change.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Label every object berth makes carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "berth");
/// Label: org id.
pub const LABEL_ORG: &str = "berth.dev/org";
/// Label: site name.
pub const LABEL_SITE: &str = "berth.dev/site";
/// Label: environment name.
pub const LABEL_ENVIRONMENT: &str = "berth.dev/environment";
/// Label: deployment id.
pub const LABEL_DEPLOYMENT: &str = "berth.dev/deployment";
/// Label (`"true"`) of the Secrets holding an app's variables (not TLS Secrets, which
/// are pruned by their own rules).
pub const LABEL_VARIABLES: &str = "berth.dev/variables";

/// Private, shared and link-local ranges the apps' egress may not reach (the cluster's
/// own network, other tenants, the cloud metadata endpoint).
pub const BLOCKED_EGRESS: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];

/// The uid and gid apps run as (never root).
pub const APP_UID: u64 = 10001;
/// How long a pod that is told to stop keeps serving first (a `preStop` sleep, no binary
/// in the image needed): endpoints and ingress controllers drop it meanwhile, so a
/// rollout or scale-in sends no request to a stopping app.
pub const STOP_DELAY_SECONDS: u32 = 5;

/// `text` as a DNS label (RFC 1123: lowercase letters, digits and `-`, at most 63, starting
/// and ending with a letter or digit). A name that had to be changed to fit, or is too
/// long, ends with a hash of the original so that two names never meet.
pub fn dns_label(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean == text && !clean.is_empty() && clean.len() <= 63 {
        return clean;
    }
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..4]);
    clean.truncate(63 - hash.len() - 1);
    let clean = clean.trim_end_matches('-');
    if clean.is_empty() {
        format!("x-{hash}")
    } else {
        format!("{clean}-{hash}")
    }
}

/// `text` as a label value (at most 63 of `A-Za-z0-9._-`, alphanumeric at both ends);
/// hashed like [`dns_label`] when it does not fit as it is.
pub fn label_value(text: &str) -> String {
    let fits = text.len() <= 63
        && !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if fits { text.to_string() } else { dns_label(text) }
}

/// The namespace of an org's apps: the prefix and the org id.
pub fn namespace_name(prefix: &str, org: &str) -> String {
    dns_label(&format!("{prefix}{org}"))
}

/// The name of an environment's Deployment, Service and Ingress.
pub fn workload_name(site: &str, environment: &str) -> String {
    dns_label(&format!("{site}-{environment}"))
}

/// An org's quota and default sizes (from the target's settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgLimits {
    /// Requests and limits of one app container.
    pub container: Resources,
    /// ResourceQuota `limits.cpu`.
    pub quota_cpu: String,
    /// ResourceQuota `limits.memory`.
    pub quota_memory: String,
    /// ResourceQuota `pods`.
    pub quota_pods: u32,
}

/// Requests and limits of a container (Kubernetes quantities).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: String,
    /// `requests.memory`.
    pub memory_request: String,
    /// `limits.cpu`.
    pub cpu_limit: String,
    /// `limits.memory`.
    pub memory_limit: String,
}

/// berth's labels of an org-level object.
fn org_labels(org: &str) -> Value {
    json!({ MANAGED_BY.0: MANAGED_BY.1, LABEL_ORG: label_value(org) })
}

/// The objects every org's namespace holds, in the order they are applied.
pub fn org_objects(namespace: &str, org: &str, limits: &OrgLimits) -> Vec<Value> {
    let labels = org_labels(org);
    let meta = |name: &str| json!({ "name": name, "namespace": namespace, "labels": labels });
    let mut ns_labels = labels.clone();
    for mode in ["enforce", "audit", "warn"] {
        ns_labels[format!("pod-security.kubernetes.io/{mode}")] = json!("restricted");
    }
    let c = &limits.container;
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": namespace, "labels": ns_labels },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": meta("berth-quota"),
            "spec": { "hard": {
                "limits.cpu": limits.quota_cpu,
                "limits.memory": limits.quota_memory,
                "pods": limits.quota_pods.to_string(),
            }},
        }),
        json!({
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": meta("berth-limits"),
            "spec": { "limits": [{
                "type": "Container",
                "default": { "cpu": c.cpu_limit, "memory": c.memory_limit },
                "defaultRequest": { "cpu": c.cpu_request, "memory": c.memory_request },
            }]},
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta("berth-app"),
            "automountServiceAccountToken": false,
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("berth-default-deny"),
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                // Only the ingress controller reaches apps (any namespace's pods labelled
                // as one); apps of the org do not reach each other.
                "ingress": [{ "from": [{
                    "namespaceSelector": {},
                    "podSelector": { "matchLabels": { "app.kubernetes.io/component": "controller" } },
                }]}],
                "egress": [
                    {
                        "to": [{ "namespaceSelector": {}, "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } } }],
                        "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
                    },
                    { "to": [{ "ipBlock": { "cidr": "0.0.0.0/0", "except": BLOCKED_EGRESS } }] },
                ],
            },
        }),
    ]
}

/// The name of a site's owner object (`berth-site-` and a hash of the site's name, so
/// any site name fits).
pub fn site_owner_name(site: &str) -> String {
    format!("berth-site-{}", hex::encode(&Sha256::digest(site.as_bytes())[..6]))
}

/// A site's owner object: a ConfigMap every per-environment object of the site names in
/// its `ownerReferences`, so deleting it deletes them all (the cluster's garbage
/// collector does).
pub fn site_owner(namespace: &str, org: &str, site: &str) -> Value {
    let mut labels = org_labels(org);
    labels[LABEL_SITE] = json!(label_value(site));
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": site_owner_name(site), "namespace": namespace, "labels": labels },
        "data": { "site": site },
    })
}

/// Makes `object` a dependent of the applied owner `owner` (its uid from the apply
/// answer).
pub fn set_owner(object: &mut Value, owner: &Value) {
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": true,
    }]);
}

/// What one environment runs: the deployment serving it and how.
#[derive(Clone, PartialEq, Eq)]
pub struct Workload {
    /// The org's namespace.
    pub namespace: String,
    /// Org id.
    pub org: String,
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// The deployment being released.
    pub deployment_id: String,
    /// Its image, by digest.
    pub image: String,
    /// The port the app listens on (`PORT`).
    pub port: u16,
    /// The app's variables (PORT included).
    pub env: Vec<(String, String)>,
    /// The name of the Secret holding `env` (see [`variables_secret_name`]).
    pub variables_secret: String,
    /// Readiness probe path.
    pub health_check_path: String,
    /// Requests and limits.
    pub resources: Resources,
    /// Replicas (0: asleep).
    pub replicas: u32,
    /// The environment's host name (the Ingress rule).
    pub host: String,
    /// The Ingress class, when the cluster has several.
    pub ingress_class: Option<String>,
    /// Seconds before a rollout that makes no progress is reported failed.
    pub progress_deadline_seconds: u32,
    /// The environment's custom domains (more Ingress hosts).
    pub domains: Vec<String>,
    /// Certificates berth holds for some of them: a `kubernetes.io/tls` Secret each,
    /// listed in the Ingress's `tls` (unless cert-manager issues them).
    pub certificates: Vec<TlsCertificate>,
    /// cert-manager's ClusterIssuer of the custom domains' certificates (instead of
    /// berth's own).
    pub cert_manager_issuer: Option<String>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("namespace", &self.namespace)
            .field("org", &self.org)
            .field("site", &self.site)
            .field("environment", &self.environment)
            .field("deployment_id", &self.deployment_id)
            .field("image", &self.image)
            .field("port", &self.port)
            .field("env", &crate::runtime::SealedVariables(&self.env))
            .field("variables_secret", &self.variables_secret)
            .field("health_check_path", &self.health_check_path)
            .field("resources", &self.resources)
            .field("replicas", &self.replicas)
            .field("host", &self.host)
            .field("ingress_class", &self.ingress_class)
            .field("progress_deadline_seconds", &self.progress_deadline_seconds)
            .field("domains", &self.domains)
            .field("certificates", &self.certificates)
            .field("cert_manager_issuer", &self.cert_manager_issuer)
            .finish()
    }
}

/// A custom domain's certificate berth holds (the key never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCertificate {
    /// The domain.
    pub host: String,
    /// PEM chain.
    pub chain: String,
    /// PEM private key.
    pub key: String,
}

impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// The annotation that has cert-manager issue an Ingress's certificates.
pub const CERT_MANAGER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";

impl Workload {
    /// The Deployment's, Service's and Ingress's name.
    pub fn name(&self) -> String {
        workload_name(&self.site, &self.environment)
    }

    /// Labels selecting the environment's pods (stable across releases).
    pub fn selector(&self) -> Value {
        json!({
            LABEL_SITE: label_value(&self.site),
            LABEL_ENVIRONMENT: label_value(&self.environment),
        })
    }

    /// All of berth's labels of the environment's objects.
    pub fn labels(&self) -> Value {
        let mut labels = org_labels(&self.org);
        labels[LABEL_SITE] = json!(label_value(&self.site));
        labels[LABEL_ENVIRONMENT] = json!(label_value(&self.environment));
        labels[LABEL_DEPLOYMENT] = json!(label_value(&self.deployment_id));
        labels
    }
}

/// The name of the Secret of a release's variables: the workload's name, `-env-` and a
/// digest of the deployment id and the variables' names and values keyed with the
/// installation's own `key` (random, kept in its data dir), so that a new set of values
/// is a new Secret (a kept Knative revision keeps starting with its own) while the name
/// tells a guesser of the values nothing.
pub fn variables_secret_name(workload: &str, key: &[u8], deployment_id: &str, env: &[(String, String)]) -> String {
    use hmac::{Hmac, Mac as _};
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    // Each part length-prefixed, so that no two different lists give the same input.
    let mut feed = |part: &str| {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    };
    feed(deployment_id);
    for (name, value) in env {
        feed(name);
        feed(value);
    }
    let digest = hex::encode(&mac.finalize().into_bytes()[..5]);
    dns_label(&format!("{workload}-env-{digest}"))
}

/// The Secret holding the app's variables (type Opaque, immutable: a changed value is a
/// new Secret), labelled as berth's variables of the environment's deployment.
pub fn variables_secret(w: &Workload) -> Value {
    use base64::Engine as _;
    let mut labels = w.labels();
    labels[LABEL_VARIABLES] = json!("true");
    let data: serde_json::Map<String, Value> = w
        .env
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(v.as_bytes())),
            )
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": w.variables_secret, "namespace": w.namespace, "labels": labels },
        "type": "Opaque",
        "immutable": true,
        "data": data,
    })
}

/// The environment's objects, in the order they are applied (the Deployment first; the
/// variables' Secret is [`variables_secret`], applied before them).
pub fn environment_objects(w: &Workload) -> Vec<Value> {
    let name = w.name();
    let labels = w.labels();
    let meta = json!({ "name": name, "namespace": w.namespace, "labels": labels });
    // Variable names are letters, digits and `_` (the service layer checks), which are
    // valid Secret keys.
    let env: Vec<Value> = w
        .env
        .iter()
        .map(|(k, _)| json!({ "name": k, "valueFrom": { "secretKeyRef": { "name": w.variables_secret, "key": k } } }))
        .collect();
    let r = &w.resources;
    let rules: Vec<Value> = std::iter::once(&w.host)
        .chain(&w.domains)
        .map(|host| {
            json!({
                "host": host,
                "http": { "paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": { "service": { "name": name, "port": { "name": "http" } } },
                }]},
            })
        })
        .collect();
    let mut ingress_spec = json!({ "rules": rules });
    if let Some(class) = &w.ingress_class {
        ingress_spec["ingressClassName"] = json!(class);
    }
    let mut ingress_meta = meta.clone();
    let mut secrets = Vec::new();
    match &w.cert_manager_issuer {
        Some(issuer) if !w.domains.is_empty() => {
            ingress_meta["annotations"] = json!({ CERT_MANAGER_ANNOTATION: issuer });
            ingress_spec["tls"] = json!([{ "hosts": w.domains, "secretName": dns_label(&format!("{name}-tls")) }]);
        }
        Some(_) => {}
        None => {
            let mut tls = Vec::new();
            for cert in w.certificates.iter().filter(|c| w.domains.contains(&c.host)) {
                use base64::Engine as _;
                let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                let secret_name = tls_secret_name(&name, &cert.host);
                let mut secret_meta = meta.clone();
                secret_meta["name"] = json!(secret_name);
                secrets.push(json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": secret_meta,
                    "type": "kubernetes.io/tls",
                    "data": { "tls.crt": b64(&cert.chain), "tls.key": b64(&cert.key) },
                }));
                tls.push(json!({ "hosts": [cert.host], "secretName": secret_name }));
            }
            if !tls.is_empty() {
                ingress_spec["tls"] = json!(tls);
            }
        }
    }
    let mut objects = vec![
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": w.replicas,
                "revisionHistoryLimit": 5,
                "progressDeadlineSeconds": w.progress_deadline_seconds,
                "selector": { "matchLabels": w.selector() },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
                },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": "berth-app",
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": APP_UID,
                            "runAsGroup": APP_UID,
                            "fsGroup": APP_UID,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": "app",
                            "image": w.image,
                            "ports": [{ "name": "http", "containerPort": w.port }],
                            "env": env,
                            "readinessProbe": {
                                "httpGet": { "path": w.health_check_path, "port": "http" },
                                "periodSeconds": 2,
                                "failureThreshold": 3,
                            },
                            "lifecycle": { "preStop": { "sleep": { "seconds": STOP_DELAY_SECONDS } } },
                            "resources": {
                                "requests": { "cpu": r.cpu_request, "memory": r.memory_request },
                                "limits": { "cpu": r.cpu_limit, "memory": r.memory_limit },
                            },
                            "securityContext": {
                                "runAsNonRoot": true,
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                            "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
                        }],
                        "volumes": [{ "name": "tmp", "emptyDir": { "sizeLimit": "256Mi" } }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": w.selector(),
                "ports": [{ "name": "http", "port": 80, "targetPort": "http" }],
            },
        }),
    ];
    objects.extend(secrets);
    objects.push(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": ingress_meta,
        "spec": ingress_spec,
    }));
    objects
}

/// The name of the TLS Secret of an environment's custom domain `host`.
pub fn tls_secret_name(workload: &str, host: &str) -> String {
    dns_label(&format!("{workload}-tls-{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> OrgLimits {
        OrgLimits {
            container: resources(),
            quota_cpu: "4".into(),
            quota_memory: "8Gi".into(),
            quota_pods: 20,
        }
    }

    fn resources() -> Resources {
        Resources {
            cpu_request: "100m".into(),
            memory_request: "128Mi".into(),
            cpu_limit: "1".into(),
            memory_limit: "512Mi".into(),
        }
    }

    #[test]
    fn org_objects_golden() {
        insta::assert_json_snapshot!(org_objects("berth-org-1", "org_1", &limits()));
    }

    #[test]
    fn environment_objects_golden() {
        let mut w = Workload {
            namespace: "berth-org-1".into(),
            org: "org_1".into(),
            site: "shop".into(),
            environment: "production".into(),
            deployment_id: "dpl_0190".into(),
            image: "127.0.0.1:5000/berth/shop@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .into(),
            port: 8080,
            env: vec![("PORT".into(), "8080".into()), ("GREETING".into(), "hi".into())],
            variables_secret: "shop-production-env-0123456789".into(),
            health_check_path: "/health".into(),
            resources: resources(),
            replicas: 1,
            host: "shop.apps.example.com".into(),
            ingress_class: Some("nginx".into()),
            progress_deadline_seconds: 120,
            domains: vec!["shop.example.com".into(), "www.shop.example.com".into()],
            certificates: vec![TlsCertificate {
                host: "shop.example.com".into(),
                chain: "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n".into(),
                key: "-----BEGIN PRIVATE KEY-----\nZmFrZSBrZXk=\n-----END PRIVATE KEY-----\n".into(),
            }],
            cert_manager_issuer: None,
        };
        insta::assert_json_snapshot!(environment_objects(&w));
        insta::assert_json_snapshot!("variables_secret", variables_secret(&w));
        assert!(!format!("{w:?}").contains("PRIVATE KEY"), "the key is never printed");
        w.env.push(("API_KEY".into(), "s3cr3t-value-5b2e".into()));
        let printed = format!("{w:?}");
        assert!(
            printed.contains("API_KEY") && !printed.contains("s3cr3t-value-5b2e"),
            "names only, never a value: {printed}"
        );
        w.env.pop();
        w.cert_manager_issuer = Some("letsencrypt".into());
        insta::assert_json_snapshot!("environment_objects_cert_manager", environment_objects(&w));
    }

    #[test]
    fn site_owner_golden() {
        insta::assert_json_snapshot!(site_owner("berth-org-1", "org_1", "shop"));
    }

    #[test]
    fn every_object_is_labelled_managed_by_berth() {
        let w = Workload {
            namespace: "n".into(),
            org: "o".into(),
            site: "s".into(),
            environment: "e".into(),
            deployment_id: "d".into(),
            image: "i".into(),
            port: 1,
            env: vec![],
            variables_secret: "s-e-env-0".into(),
            health_check_path: "/".into(),
            resources: resources(),
            replicas: 1,
            host: "h".into(),
            ingress_class: None,
            progress_deadline_seconds: 1,
            domains: vec!["d.example".into()],
            certificates: vec![TlsCertificate {
                host: "d.example".into(),
                chain: "c".into(),
                key: "k".into(),
            }],
            cert_manager_issuer: None,
        };
        let owner = site_owner("n", "o", "s");
        let variables = variables_secret(&w);
        for object in org_objects("n", "o", &limits())
            .iter()
            .chain(&environment_objects(&w))
            .chain([&owner, &variables])
        {
            assert_eq!(object["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1, "{object}");
            assert_eq!(object["metadata"]["labels"][LABEL_ORG], "o", "{object}");
        }
    }

    #[test]
    fn variables_secret_names_change_with_values_and_need_the_key() {
        let env = |v: &str| {
            vec![
                ("PORT".to_string(), "8080".to_string()),
                ("TOKEN".to_string(), v.to_string()),
            ]
        };
        let name = |key: &[u8], id: &str, v: &str| variables_secret_name("shop-production", key, id, &env(v));
        let first = name(b"key-1", "dpl_1", "a");
        assert!(
            first.starts_with("shop-production-env-") && first.len() <= 63,
            "{first}"
        );
        assert_eq!(first, name(b"key-1", "dpl_1", "a"), "the same values keep their Secret");
        assert_ne!(first, name(b"key-1", "dpl_1", "b"), "a new value is a new Secret");
        assert_ne!(first, name(b"key-1", "dpl_2", "a"), "each deployment has its own");
        assert_ne!(
            first,
            name(b"key-2", "dpl_1", "a"),
            "the name depends on the installation's key"
        );
        let long = variables_secret_name(&"a".repeat(63), b"k", "d", &env("a"));
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn names_are_dns_labels_and_long_ones_are_hashed() {
        assert_eq!(dns_label("shop-production"), "shop-production");
        let odd = dns_label("Shop_Prod");
        assert!(
            odd.starts_with("shop-prod-") && odd.len() == "shop-prod-".len() + 8,
            "{odd}"
        );
        let long = dns_label(&"a".repeat(100));
        assert_eq!(long.len(), 63);
        assert_ne!(dns_label(&"a".repeat(100)), dns_label(&"a".repeat(101)));
        assert_eq!(dns_label("---").len(), 10);
        assert_eq!(label_value("org_1"), "org_1");
        assert!(label_value(&"x".repeat(64)).len() <= 63);
    }
}
