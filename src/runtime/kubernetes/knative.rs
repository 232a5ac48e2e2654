//! Knative Serving, when the cluster has it (setting `knative`: `auto` uses it when
//! discovery lists `serving.knative.dev/v1`, `on` requires it, `off` never uses it).
//!
//! An environment is then one Knative `Service` instead of Deployment + Service +
//! Ingress: its revision template is the Deployment's pod template (same security context
//! and resources), named after the deployment (`<service>-<deployment>`, the prefix
//! Knative requires), with berth's scale settings as the autoscaler's annotations
//! (`min-scale`, `max-scale`, `target`; `min-scale: "0"` lets Knative scale to zero and
//! its activator wake it on the first request) and `serving.knative.dev/no-gc: "true"` so
//! the cluster keeps every revision berth keeps a deployment of (released when berth
//! forgets the deployment). Traffic is pinned (`latestRevision: false`): a new revision
//! is created with the pin left on the serving one, watched until `Ready`, and only then
//! does the pin move, so a failed revision never takes traffic. Promote and rollback to a
//! revision the Service already has change `traffic` only (the template is applied as it
//! is, so no revision is created and nothing is rebuilt).
//!
//! Each host of the environment (its berth host and every served custom domain) is a
//! `DomainMapping` (serving.knative.dev/v1beta1) to the Service, with the TLS Secret of a
//! custom domain berth holds a certificate for in `spec.tls.secretName`; berth's edge
//! proxies the hosts to the Knative ingress at `ingress_address`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::super::StartError;
use super::super::target::Settings;
use super::client::{ApiError, Client, label_selector, object_path};
use super::manifests::{
    self, LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_SITE, MANAGED_BY, OrgLimits, Workload, dns_label, label_value,
};
use super::registry_auth::{self, RegistryAuth};
use super::rollout;
use super::variables;

/// Knative Serving's API group.
pub const GROUP: &str = "serving.knative.dev";
/// The group version of Knative Services and Revisions.
pub const SERVING_V1: &str = "serving.knative.dev/v1";
/// The group version of DomainMappings.
pub const DOMAIN_MAPPING_VERSION: &str = "serving.knative.dev/v1beta1";
/// A revision carrying it `"true"` is never garbage collected by Knative.
pub const NO_GC: &str = "serving.knative.dev/no-gc";
/// Knative's namespace (its activator, which receives requests for a scaled-to-zero
/// revision, runs there).
pub const KNATIVE_NAMESPACE: &str = "knative-serving";
/// Label Knative puts on a revision's pods.
pub const REVISION_LABEL: &str = "serving.knative.dev/revision";

/// How often a Knative rollout is looked at.
const POLL: Duration = Duration::from_millis(500);

/// Whether environments run as Knative Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// When discovery lists `serving.knative.dev/v1`.
    Auto,
    /// Always; a deploy to a cluster without Knative is refused.
    On,
    /// Never (Deployment + Service + Ingress).
    Off,
}

impl Mode {
    /// The `knative` setting (default `auto`).
    pub fn parse(settings: &Settings) -> Result<Self, String> {
        match settings.get("knative") {
            None | Some(Value::Null) => Ok(Self::Auto),
            Some(Value::String(s)) if s.trim() == "auto" => Ok(Self::Auto),
            Some(Value::String(s)) if s.trim() == "on" => Ok(Self::On),
            Some(Value::String(s)) if s.trim() == "off" => Ok(Self::Off),
            Some(other) => Err(format!(
                "kubernetes setting 'knative' must be auto (use Knative Serving when the cluster has it), on or off, got {other}"
            )),
        }
    }
}

/// Whether this release uses Knative: by the setting and the cluster's discovery.
pub(super) async fn in_use(client: &Client, mode: Mode, api_url: &str) -> Result<bool, String> {
    if mode == Mode::Off {
        return Ok(false);
    }
    let versions = client.api_group_versions().await.map_err(|e| e.to_string())?;
    let found = versions.iter().any(|v| v == SERVING_V1);
    if mode == Mode::On && !found {
        return Err(format!(
            "kubernetes setting 'knative' is on, but the cluster at {api_url} does not serve {SERVING_V1} (Knative Serving's CRDs are missing); install Knative Serving, or set knative to auto or off"
        ));
    }
    Ok(found)
}

/// The collection path of Knative `kind` objects in `namespace`.
pub fn collection_path(kind: &str, namespace: &str) -> Option<String> {
    let (version, plural) = match kind {
        "Service" => ("v1", "services"),
        "Revision" => ("v1", "revisions"),
        "Configuration" => ("v1", "configurations"),
        "Route" => ("v1", "routes"),
        "DomainMapping" => ("v1beta1", "domainmappings"),
        _ => return None,
    };
    Some(format!("/apis/{GROUP}/{version}/namespaces/{namespace}/{plural}"))
}

/// The path of the environment's Knative Service.
pub fn service_path(w: &Workload) -> String {
    format!(
        "{}/{}",
        collection_path("Service", &w.namespace).expect("known kind"),
        w.name()
    )
}

/// The name of the revision of `w`'s deployment: the Service's name, `-` and the
/// deployment id as a DNS label (hashed when the whole would pass 63 characters).
pub fn revision_name(w: &Workload) -> String {
    revision_name_with(w, "")
}

/// The name of a further revision of `w`'s deployment (a restart, or its variables
/// changed since its first revision): [`revision_name`], `-` and `suffix` when that fits
/// in 63 characters; otherwise the Service's name and a hash of the deployment id and
/// `suffix`. An empty `suffix` is the deployment's first revision.
pub fn revision_name_with(w: &Workload, suffix: &str) -> String {
    let first = {
        let service = w.name();
        let name = format!("{service}-{}", dns_label(&w.deployment_id));
        if name.len() <= 63 {
            name
        } else {
            hashed(&service, &w.deployment_id)
        }
    };
    if suffix.is_empty() {
        return first;
    }
    let name = format!("{first}-{suffix}");
    if name.len() <= 63 {
        name
    } else {
        hashed(&w.name(), &format!("{}-{suffix}", w.deployment_id))
    }
}

/// The Service's name (shortened to fit) and a hash of `own`.
fn hashed(service: &str, own: &str) -> String {
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(own.as_bytes())[..4]);
    let mut service = service.to_string();
    service.truncate(63 - hash.len() - 1);
    format!("{}-{hash}", service.trim_end_matches('-'))
}

/// berth's scale settings as Knative's autoscaler reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// `autoscaling.knative.dev/min-scale` (0: scale to zero).
    pub min: u32,
    /// `autoscaling.knative.dev/max-scale`.
    pub max: u32,
    /// `autoscaling.knative.dev/target` (in-flight requests per pod).
    pub target: u32,
}

/// The org's objects with the default-deny policy also letting Knative's namespace (its
/// activator) reach the apps.
pub fn org_objects(namespace: &str, org: &str, limits: &OrgLimits) -> Vec<Value> {
    let mut objects = manifests::org_objects(namespace, org, limits);
    for policy in objects.iter_mut().filter(|o| o["kind"] == "NetworkPolicy") {
        if let Some(ingress) = policy["spec"]["ingress"].as_array_mut() {
            ingress.push(json!({ "from": [{ "namespaceSelector": {
                "matchLabels": { "kubernetes.io/metadata.name": KNATIVE_NAMESPACE },
            }}]}));
        }
    }
    objects
}

/// The revision template of `w`: the Deployment's pod template, named after the
/// deployment, with the autoscaler's annotations and the no-GC annotation. Knative takes
/// one port named `http1` and probes the container's port (no port in the probe).
pub fn template(w: &Workload, scale: Scale) -> Value {
    let deployment = manifests::environment_objects(w).swap_remove(0);
    let mut template = deployment["spec"]["template"].clone();
    template["metadata"]["name"] = json!(revision_name(w));
    let mut annotations = scale_annotations(scale);
    annotations[NO_GC] = json!("true");
    template["metadata"]["annotations"] = annotations;
    let container = &mut template["spec"]["containers"][0];
    container["ports"] = json!([{ "name": "http1", "containerPort": w.port }]);
    // Knative refuses `lifecycle` (its queue-proxy drains a stopping revision's pods).
    if let Some(fields) = container.as_object_mut() {
        fields.remove("lifecycle");
    }
    if let Some(probe) = container["readinessProbe"]["httpGet"].as_object_mut() {
        probe.remove("port");
    }
    template
}

/// The environment's Knative Service running `template` with all traffic pinned to the
/// revision `pinned`.
pub fn service(w: &Workload, template: Value, pinned: &str) -> Value {
    let labels = w.labels();
    json!({
        "apiVersion": SERVING_V1,
        "kind": "Service",
        "metadata": { "name": w.name(), "namespace": w.namespace, "labels": labels },
        "spec": {
            "template": template,
            "traffic": [{ "revisionName": pinned, "percent": 100, "latestRevision": false }],
        },
    })
}

/// A DomainMapping per host of the environment (its berth host, then its custom domains)
/// to its Knative Service, each custom domain with berth's certificate naming its TLS
/// Secret; and those Secrets (none when cert-manager issues the certificates).
pub fn routes(w: &Workload) -> Vec<Value> {
    let objects = manifests::environment_objects(w);
    let labels = w.labels();
    let name = w.name();
    let secrets: Vec<Value> = objects.into_iter().filter(|o| o["kind"] == "Secret").collect();
    let mut mappings: Vec<Value> = std::iter::once(&w.host)
        .chain(&w.domains)
        .map(|host| {
            let mut spec = json!({ "ref": { "name": name, "kind": "Service", "apiVersion": SERVING_V1 } });
            if w.cert_manager_issuer.is_none() && w.certificates.iter().any(|c| &c.host == host) {
                spec["tls"] = json!({ "secretName": manifests::tls_secret_name(&name, host) });
            }
            json!({
                "apiVersion": DOMAIN_MAPPING_VERSION,
                "kind": "DomainMapping",
                "metadata": { "name": host, "namespace": w.namespace, "labels": labels },
                "spec": spec,
            })
        })
        .collect();
    let mut all = secrets;
    all.append(&mut mappings);
    all
}

/// Every object a Knative release of `w` applies, in order: the org's namespace objects
/// (with the pull Secret when `pull`), the site's owner, the variables' Secret, the Service pinned to the
/// deployment's revision, its DomainMappings and TLS Secrets.
pub(super) fn render(w: &Workload, limits: &OrgLimits, pull: Option<&RegistryAuth>, scale: Scale) -> Vec<Value> {
    let mut objects = org_objects(&w.namespace, &w.org, limits);
    registry_auth::add_pull_secret(&mut objects, pull);
    objects.push(manifests::site_owner(&w.namespace, &w.org, &w.site));
    objects.push(manifests::variables_secret(w));
    objects.push(service(w, template(w, scale), &revision_name(w)));
    objects.extend(routes(w));
    objects
}

/// Whether `object` carries berth's labels of `site`.
fn is_sites(object: &Value, site: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    labels[MANAGED_BY.0] == MANAGED_BY.1 && labels[LABEL_SITE] == label_value(site).as_str()
}

/// Refuses when an object at one of `objects`' paths exists and is not the site's.
async fn refuse_foreign(client: &Client, site: &str, objects: &[&Value]) -> Result<(), String> {
    for object in objects {
        let path = object_path(object).ok_or("internal error: unknown kind")?;
        if let Some(found) = client.get(&path).await.map_err(|e| e.to_string())?
            && !is_sites(&found, site)
        {
            return Err(format!(
                "the {} {path} exists and is not berth's (it lacks the labels {}={} and {LABEL_SITE}={}); berth does not take over objects it did not make: rename or remove it, or use another namespace_prefix",
                object["kind"].as_str().unwrap_or_default(),
                MANAGED_BY.0,
                MANAGED_BY.1,
                label_value(site)
            ));
        }
    }
    Ok(())
}

/// The revision all traffic of the Service `service` goes to, as its status reports.
fn serving_revision(service: &Value) -> Option<String> {
    service["status"]["traffic"].as_array()?.iter().find_map(|t| {
        (t["percent"].as_u64() == Some(100))
            .then(|| t["revisionName"].as_str().map(str::to_string))
            .flatten()
    })
}

/// The `Ready` condition of `object`: its status and reason/message.
fn ready(object: &Value) -> Option<(bool, String)> {
    object["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Ready" && c["status"] != "Unknown").then(|| {
            let reason = c["reason"].as_str().unwrap_or_default();
            let message = c["message"].as_str().unwrap_or_default();
            (
                c["status"] == "True",
                match (reason.is_empty(), message.is_empty()) {
                    (false, false) => format!("{reason}: {message}"),
                    (false, true) => reason.to_string(),
                    _ => message.to_string(),
                },
            )
        })
    })
}

fn failed(message: impl Into<String>) -> StartError {
    StartError {
        message: message.into(),
        last_lines: Vec::new(),
    }
}

/// The scale annotations of a revision template or revision.
fn scale_annotations(scale: Scale) -> Value {
    json!({
        "autoscaling.knative.dev/min-scale": scale.min.to_string(),
        "autoscaling.knative.dev/max-scale": scale.max.max(1).to_string(),
        "autoscaling.knative.dev/target": scale.target.max(1).to_string(),
    })
}

/// Whether the revision `revision` runs what `template` describes: the same image and
/// the same variables (a revision's spec is immutable; Knative adds defaults to it, so
/// only these are compared).
fn runs(revision: &Value, template: &Value) -> bool {
    let (have, want) = (&revision["spec"]["containers"][0], &template["spec"]["containers"][0]);
    have["image"] == want["image"] && have["env"] == want["env"]
}

/// The suffix of a further revision of a deployment: the time in milliseconds, base 36.
fn fresh_suffix() -> String {
    let mut n = crate::util::now_ms().unsigned_abs();
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
    }
    digits.iter().rev().collect()
}

/// How a Knative release goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Roll {
    /// A release: a ready revision of the deployment that runs the same image and
    /// variables gets the pin (no new revision); otherwise a new revision is made.
    Release,
    /// A restart (`HOSTING_SET_ENV_VARS` with `restart`): always a new revision of the
    /// same deployment, so its pods start with the variables as they are now.
    Restart,
}

/// Applies a release of `w` as a Knative Service and its DomainMappings, and watches it:
/// a new revision is made ready before the pin moves to it; an existing one that runs
/// the same image and variables gets the pin and the current scale annotations, and
/// nothing else changes. A deployment's first revision is named [`revision_name`];
/// further ones (a restart, or its variables changed) [`revision_name_with`] a fresh
/// suffix. On failure the serving revision keeps all traffic.
pub(super) async fn release(
    client: &Client,
    w: &Workload,
    limits: &OrgLimits,
    pull: Option<&RegistryAuth>,
    scale: Scale,
    timeout: Duration,
    roll: Roll,
) -> Result<Outcome, StartError> {
    let mut org = org_objects(&w.namespace, &w.org, limits);
    registry_auth::add_pull_secret(&mut org, pull);
    for object in org {
        client.apply(&object).await.map_err(|e| failed(e.to_string()))?;
    }
    let owner_object = manifests::site_owner(&w.namespace, &w.org, &w.site);
    let revision = revision_name(w);
    let path = service_path(w);
    let fresh = service(w, template(w, scale), &revision);
    let secret = manifests::variables_secret(w);
    refuse_foreign(client, &w.site, &[&owner_object, &secret, &fresh])
        .await
        .map_err(failed)?;
    let owner = client.apply(&owner_object).await.map_err(|e| failed(e.to_string()))?;
    // Before the revision that reads it (a revision reused below has its own already).
    variables::apply(client, w, &owner)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let current = client.get(&path).await.map_err(|e| failed(e.to_string()))?;
    let serving = current.as_ref().and_then(serving_revision);
    // The deployment's revisions (berth's labels of the site, environment and deployment).
    let revisions = collection_path("Revision", &w.namespace).expect("known kind");
    let mine = client
        .list(
            &revisions,
            &label_selector(&[
                MANAGED_BY,
                (LABEL_SITE, &label_value(&w.site)),
                (LABEL_ENVIRONMENT, &label_value(&w.environment)),
                (LABEL_DEPLOYMENT, &label_value(&w.deployment_id)),
            ]),
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
    let name_of = |r: &Value| r["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let reusable = match roll {
        Roll::Restart => None,
        Roll::Release => mine
            .iter()
            .filter(|r| {
                is_sites(r, &w.site) && ready(r).is_some_and(|(ok, _)| ok) && runs(r, &fresh["spec"]["template"])
            })
            .max_by_key(|r| serving.as_deref() == Some(name_of(r).as_str()))
            .map(name_of),
    };
    let apply_pinned = async |template: &Value, pin: &str| {
        let mut object = service(w, template.clone(), pin);
        manifests::set_owner(&mut object, &owner);
        client.apply(&object).await.map_err(|e| failed(e.to_string()))
    };
    let (revision, outcome) = match (reusable, &current) {
        // The revision exists: it gets the environment's scale settings as they are now
        // and the pin; the template stays as it is (no new revision).
        (Some(revision), Some(current)) => {
            client
                .merge_patch(
                    &format!("{revisions}/{revision}"),
                    &json!({ "metadata": { "annotations": scale_annotations(scale) } }),
                )
                .await
                .map_err(|e| failed(e.to_string()))?;
            apply_pinned(&current["spec"]["template"], &revision).await?;
            (revision, Outcome::Repinned)
        }
        _ => {
            let taken = matches!(roll, Roll::Restart) || mine.iter().any(|r| name_of(r) == revision);
            let revision = if taken {
                revision_name_with(w, &fresh_suffix())
            } else {
                revision
            };
            let mut template = fresh["spec"]["template"].clone();
            template["metadata"]["name"] = json!(revision);
            let first_pin = serving.clone().unwrap_or_else(|| revision.clone());
            apply_pinned(&template, &first_pin).await?;
            if let Err(mut e) = watch_revision(client, w, &revision, timeout).await {
                if let Some(serving) = &serving {
                    e.last_lines
                        .push(format!("the revision {serving} keeps all of the environment's traffic"));
                }
                return Err(e);
            }
            if first_pin != revision {
                apply_pinned(&template, &revision).await?;
            }
            (revision, Outcome::NewRevision)
        }
    };
    watch_service(client, w, &path, &revision, timeout).await?;
    apply_routes(client, w, &owner).await.map_err(failed)?;
    if let Err(e) = prune_variables(client, w).await {
        tracing::warn!(site.name = %w.site, environment = %w.environment, error = %e, "deleting the environment's unused variables' Secrets failed");
    }
    Ok(outcome)
}

/// Deletes the environment's variables' Secrets that none of its revisions (nor `w`)
/// reads: a revision berth keeps keeps its own; those Knative collected after berth
/// forgot their deployment go.
async fn prune_variables(client: &Client, w: &Workload) -> Result<(), ApiError> {
    let revisions = client
        .list(
            &collection_path("Revision", &w.namespace).expect("known kind"),
            &label_selector(&[
                MANAGED_BY,
                (LABEL_SITE, &label_value(&w.site)),
                (LABEL_ENVIRONMENT, &label_value(&w.environment)),
            ]),
        )
        .await?;
    let mut keep: BTreeSet<String> = revisions
        .iter()
        .flat_map(|r| variables::referenced(&r["spec"]))
        .collect();
    keep.insert(w.variables_secret.clone());
    variables::prune(client, w, &keep).await
}

/// How a release went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A revision was made and now has all traffic.
    NewRevision,
    /// The deployment's revision existed; only the pin moved.
    Repinned,
}

/// Applies the environment's DomainMappings and TLS Secrets (owned by `owner`) and
/// deletes those of the environment's that no longer belong (a removed domain's), found
/// by berth's labels only.
pub(super) async fn apply_routes(client: &Client, w: &Workload, owner: &Value) -> Result<(), String> {
    let mut wanted = routes(w);
    for object in &mut wanted {
        manifests::set_owner(object, owner);
    }
    let refs: Vec<&Value> = wanted.iter().collect();
    refuse_foreign(client, &w.site, &refs).await?;
    for object in &wanted {
        client.apply(object).await.map_err(|e| e.to_string())?;
    }
    let keep: BTreeSet<String> = wanted.iter().filter_map(object_path).collect();
    let collection = collection_path("DomainMapping", &w.namespace).expect("known kind");
    super::routes::prune(client, w, &collection, &keep).await?;
    super::routes::prune_secrets(client, w, &keep).await
}

/// Waits until the revision `name` is `Ready`, failing fast with its `Ready` reason or
/// the reason of one of its pods (image pull, crash loop, …) with their Events and log.
async fn watch_revision(client: &Client, w: &Workload, name: &str, timeout: Duration) -> Result<(), StartError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let path = format!(
        "{}/{name}",
        collection_path("Revision", &w.namespace).expect("known kind")
    );
    let pods = super::client::collection_path("Pod", Some(&w.namespace)).expect("known kind");
    loop {
        let err = |e: ApiError| failed(e.to_string());
        // The pods first: their reason comes with their Events and the app's last lines.
        let revision = client.get(&path).await.map_err(err)?;
        for pod in client
            .list(&pods, &label_selector(&[(REVISION_LABEL, name)]))
            .await
            .map_err(err)?
        {
            if let Some(reason) = rollout::pod_failure(&pod) {
                let mut e = rollout::explain(client, &w.namespace, &pod, reason).await;
                e.message = format!("the revision {name} failed: {}", e.message);
                return Err(e);
            }
        }
        match revision.as_ref().and_then(ready) {
            Some((true, _)) => return Ok(()),
            Some((false, reason)) => {
                return Err(failed(format!("the revision {}/{name} failed: {reason}", w.namespace)));
            }
            None => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(format!(
                "the revision {}/{name} did not become ready within {} s",
                w.namespace,
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the Service at `path` has observed its newest spec, is `Ready` and routes
/// all traffic to `revision`.
async fn watch_service(
    client: &Client,
    w: &Workload,
    path: &str,
    revision: &str,
    timeout: Duration,
) -> Result<(), StartError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let service = client
            .get(path)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed(format!("the Knative Service {path} disappeared during its rollout")))?;
        let generation = service["metadata"]["generation"].as_i64().unwrap_or(0);
        let observed = service["status"]["observedGeneration"].as_i64().unwrap_or(-1) >= generation;
        if observed {
            match ready(&service) {
                Some((true, _)) if serving_revision(&service).as_deref() == Some(revision) => return Ok(()),
                Some((false, reason)) => {
                    return Err(failed(format!(
                        "the Knative Service {}/{} is not ready: {reason}",
                        w.namespace,
                        w.name()
                    )));
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(format!(
                "the Knative Service {}/{} did not route to {revision} within {} s",
                w.namespace,
                w.name(),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Applies the environment's scale settings at once (`HOSTING_SET_SCALING_CONFIG`) to
/// the revision its Knative Service pins all traffic to: Knative reads its autoscaling
/// annotations per revision (there is no per-Service setting; the cluster-wide
/// `config-autoscaler` is the operator's) and propagates a change of a revision's
/// annotations to its PodAutoscaler, so the revision's metadata is patched: no new
/// revision, no restart. Nothing when the environment is not a Knative Service of
/// berth's.
pub(super) async fn rescale(client: &Client, w: &Workload, scale: Scale) -> Result<(), String> {
    let Some(current) = client.get(&service_path(w)).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    if !is_sites(&current, &w.site) {
        return Ok(());
    }
    let pinned = current["spec"]["traffic"].as_array().and_then(|t| {
        t.iter()
            .find(|t| t["percent"].as_u64() == Some(100))
            .and_then(|t| t["revisionName"].as_str())
    });
    let Some(pinned) = pinned else {
        return Err(format!(
            "the Knative Service {} pins its traffic to no single revision; deploy again",
            service_path(w)
        ));
    };
    let path = format!(
        "{}/{pinned}",
        collection_path("Revision", &w.namespace).expect("known kind")
    );
    client
        .merge_patch(
            &path,
            &json!({ "metadata": { "annotations": scale_annotations(scale) } }),
        )
        .await
        .map(drop)
        .map_err(|e| format!("updating the scale annotations of the revision {path}: {e}"))
}

/// Lets Knative garbage-collect the revisions of `deployment_id` (berth forgot it): the
/// no-GC annotation is removed from each (found by berth's labels).
pub(super) async fn release_revisions(
    client: &Client,
    namespace: &str,
    site: &str,
    deployment_id: &str,
) -> Result<(), ApiError> {
    let collection = collection_path("Revision", namespace).expect("known kind");
    let selector = label_selector(&[
        MANAGED_BY,
        (LABEL_SITE, &label_value(site)),
        (LABEL_DEPLOYMENT, &label_value(deployment_id)),
    ]);
    for revision in client.list(&collection, &selector).await? {
        if let Some(name) = revision["metadata"]["name"].as_str() {
            client
                .merge_patch(
                    &format!("{collection}/{name}"),
                    &json!({ "metadata": { "annotations": { NO_GC: null } } }),
                )
                .await?;
        }
    }
    Ok(())
}

/// Deletes the site's Knative Services and DomainMappings left after its owner went
/// (berth's labelled ones only). A cluster without Knative has none.
pub(super) async fn delete_site(client: &Client, namespace: &str, site: &str) -> Result<(), ApiError> {
    let selector = label_selector(&[MANAGED_BY, (LABEL_SITE, &label_value(site))]);
    for kind in ["DomainMapping", "Service"] {
        let collection = collection_path(kind, namespace).expect("known kind");
        let objects = match client.list(&collection, &selector).await {
            Ok(objects) => objects,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        for object in objects {
            if let Some(name) = object["metadata"]["name"].as_str() {
                client.delete(&format!("{collection}/{name}")).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::kubernetes::manifests::{Resources, TlsCertificate};

    fn workload() -> Workload {
        Workload {
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
            resources: Resources {
                cpu_request: "100m".into(),
                memory_request: "128Mi".into(),
                cpu_limit: "1".into(),
                memory_limit: "512Mi".into(),
            },
            replicas: 1,
            host: "shop.apps.example.com".into(),
            ingress_class: None,
            progress_deadline_seconds: 120,
            domains: vec!["shop.example.com".into(), "www.shop.example.com".into()],
            certificates: vec![TlsCertificate {
                host: "shop.example.com".into(),
                chain: "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n".into(),
                key: "-----BEGIN PRIVATE KEY-----\nZmFrZSBrZXk=\n-----END PRIVATE KEY-----\n".into(),
            }],
            cert_manager_issuer: None,
        }
    }

    #[test]
    fn knative_service_golden() {
        let w = workload();
        let scale = Scale {
            min: 0,
            max: 3,
            target: 50,
        };
        let service = service(&w, template(&w, scale), &revision_name(&w));
        insta::assert_json_snapshot!(service);
        // The same pod security as the Deployment's.
        let deployment = manifests::environment_objects(&w).swap_remove(0);
        assert_eq!(
            service["spec"]["template"]["spec"]["securityContext"],
            deployment["spec"]["template"]["spec"]["securityContext"]
        );
        assert_eq!(
            service["spec"]["template"]["spec"]["containers"][0]["securityContext"],
            deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        );
    }

    #[test]
    fn knative_routes_golden() {
        insta::assert_json_snapshot!(routes(&workload()));
        let mut w = workload();
        w.cert_manager_issuer = Some("letsencrypt".into());
        assert!(
            routes(&w)
                .iter()
                .all(|o| o["kind"] == "DomainMapping" && o["spec"].get("tls").is_none()),
            "cert-manager's certificates are not berth's Secrets"
        );
    }

    #[test]
    fn knative_org_policy_lets_the_activator_in() {
        let limits = OrgLimits {
            container: workload().resources,
            quota_cpu: "4".into(),
            quota_memory: "8Gi".into(),
            quota_pods: 20,
        };
        let objects = org_objects("n", "o", &limits);
        let policy = objects.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
        assert!(
            policy["spec"]["ingress"].to_string().contains(KNATIVE_NAMESPACE),
            "{policy}"
        );
        let plain = manifests::org_objects("n", "o", &limits);
        assert!(!format!("{plain:?}").contains(KNATIVE_NAMESPACE));
    }

    #[test]
    fn revisions_are_named_after_the_deployment_under_the_service() {
        let mut w = workload();
        assert!(
            revision_name(&w).starts_with("shop-production-dpl-0190"),
            "{}",
            revision_name(&w)
        );
        w.site = "a".repeat(50);
        let name = revision_name(&w);
        assert!(name.len() <= 63 && name.starts_with(&w.name()[..40]), "{name}");
        w.deployment_id = "dpl_0191".into();
        assert_ne!(revision_name(&w), name);
    }

    #[test]
    fn the_knative_setting_is_auto_on_or_off() {
        let mut settings = Settings::new();
        assert_eq!(Mode::parse(&settings), Ok(Mode::Auto));
        settings.insert("knative".into(), "on".into());
        assert_eq!(Mode::parse(&settings), Ok(Mode::On));
        settings.insert("knative".into(), "off".into());
        assert_eq!(Mode::parse(&settings), Ok(Mode::Off));
        settings.insert("knative".into(), "yes".into());
        assert!(Mode::parse(&settings).unwrap_err().contains("auto"));
    }
}
