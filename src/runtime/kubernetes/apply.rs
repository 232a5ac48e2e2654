//! Applying a release the way berth owns a cluster's objects: the org's namespace
//! objects, the site's owner object (a ConfigMap) and the environment's objects as its
//! dependents (`ownerReferences`, so deleting the owner deletes them); objects berth made
//! are adopted by their labels (a LIST by berth's labels, updated in place by name), an
//! object in the way that is not berth's is refused and left alone; and a rollout that
//! fails puts the previous serving template back, so the cluster's desired state is the
//! deployment that serves. A dry run shows what a release would apply, sealed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::super::StartError;
use super::super::target::DryRun;
use super::client::{ApiError, Client, collection_path, label_selector, object_path};
use super::manifests::{self, LABEL_DEPLOYMENT, LABEL_SITE, MANAGED_BY, OrgLimits, Workload, label_value};
use super::registry_auth::{self, RegistryAuth};
use super::rollout;
use super::variables;

/// Every object of a release, in the order they are applied.
pub(super) struct Objects {
    /// The org's namespace and its policies.
    pub org: Vec<Value>,
    /// The site's owner object.
    pub owner: Value,
    /// The Secret of the app's variables (applied before the workload that reads it).
    pub variables: Value,
    /// The environment's objects (owner references are set once the owner's uid is known).
    pub environment: Vec<Value>,
}

/// The objects a release of `w` applies (with the registry's pull Secret when `pull`).
pub(super) fn render(w: &Workload, limits: &OrgLimits, pull: Option<&RegistryAuth>) -> Objects {
    let mut org = manifests::org_objects(&w.namespace, &w.org, limits);
    registry_auth::add_pull_secret(&mut org, pull);
    Objects {
        org,
        owner: manifests::site_owner(&w.namespace, &w.org, &w.site),
        variables: manifests::variables_secret(w),
        environment: manifests::environment_objects(w),
    }
}

/// Refuses when an object berth is about to apply exists and is not the site's own
/// (berth's managed-by and site labels): berth adopts what it made, and takes over
/// nothing else. Objects are found by a LIST by berth's labels per kind; a name missing
/// from it is looked up once.
async fn refuse_foreign(client: &Client, namespace: &str, site: &str, objects: &[&Value]) -> Result<(), String> {
    let site_label = label_value(site);
    let selector = label_selector(&[MANAGED_BY, (LABEL_SITE, &site_label)]);
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in kinds {
        let collection = collection_path(kind, Some(namespace)).ok_or("internal error: unknown kind")?;
        let ours: BTreeSet<String> = client
            .list(&collection, &selector)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for object in objects.iter().filter(|o| o["kind"] == kind) {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if ours.contains(name) {
                continue;
            }
            let path = object_path(object).ok_or("internal error: unknown kind")?;
            if client.get(&path).await.map_err(|e| e.to_string())?.is_some() {
                return Err(format!(
                    "the {kind} {namespace}/{name} exists and is not berth's (it lacks the labels {}={} and {LABEL_SITE}={site_label}); berth does not take over objects it did not make: rename or remove it, or use another namespace_prefix",
                    MANAGED_BY.0, MANAGED_BY.1
                ));
            }
        }
    }
    Ok(())
}

/// The pod template annotation a restart sets (the time, in milliseconds), so that the
/// Deployment rolls its pods over even when nothing else of the template changed.
pub(super) const RESTARTED_AT: &str = "berth.dev/restarted-at";

/// Applies a release of `w` and watches its rollout. When the rollout fails and the
/// environment had a rolled-out Deployment before, its template is applied again (the
/// previous deployment's image by digest) and watched, and the failure says so.
/// `restarted_at`: a restart (the same deployment rolled over with the variables as
/// they are now), marked on the pod template.
pub(super) async fn release(
    client: &Client,
    w: &Workload,
    limits: &OrgLimits,
    pull: Option<&RegistryAuth>,
    timeout: Duration,
    restarted_at: Option<i64>,
) -> Result<(), StartError> {
    let failed = |message: String| StartError {
        message,
        last_lines: Vec::new(),
    };
    let mut objects = render(w, limits, pull);
    if let Some(at) = restarted_at {
        objects.environment[0]["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] =
            Value::String(at.to_string());
    }
    for object in &objects.org {
        client.apply(object).await.map_err(|e| failed(e.to_string()))?;
    }
    let mine: Vec<&Value> = [&objects.owner, &objects.variables]
        .into_iter()
        .chain(&objects.environment)
        .collect();
    refuse_foreign(client, &w.namespace, &w.site, &mine)
        .await
        .map_err(failed)?;
    let owner = client.apply(&objects.owner).await.map_err(|e| failed(e.to_string()))?;
    let deployment_path = object_path(&objects.environment[0]).expect("a Deployment has a path");
    let before = client
        .get(&deployment_path)
        .await
        .map_err(|e| failed(e.to_string()))?
        .filter(rollout::rolled_out);
    variables::apply(client, w, &owner)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut environment = objects.environment;
    for object in &mut environment {
        manifests::set_owner(object, &owner);
    }
    apply_all(client, &environment)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let Err(mut failure) = rollout::watch(client, w, timeout).await else {
        // The serving release's Secret is the only one the Deployment names now (a
        // rollback is a release of its own, with a Secret of its own).
        if let Err(e) = variables::prune(client, w, &BTreeSet::from([w.variables_secret.clone()])).await {
            tracing::warn!(site.name = %w.site, environment = %w.environment, error = %e, "deleting the environment's unused variables' Secrets failed");
        }
        return Ok(());
    };
    if let Some(previous) = before {
        failure
            .last_lines
            .push(restore(client, w, &environment, &previous, timeout).await);
    }
    Err(failure)
}

async fn apply_all(client: &Client, objects: &[Value]) -> Result<(), ApiError> {
    for object in objects {
        client.apply(object).await?;
    }
    Ok(())
}

/// Applies the environment's objects with the `previous` Deployment's template (and its
/// deployment label) and watches that rollout; says how it went.
async fn restore(client: &Client, w: &Workload, objects: &[Value], previous: &Value, timeout: Duration) -> String {
    let template = &previous["spec"]["template"];
    let previous_id = template["metadata"]["labels"][LABEL_DEPLOYMENT]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let image = template["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if previous_id.is_empty() || image.is_empty() {
        return "the previous Deployment names no deployment of berth's; it was not restored".into();
    }
    let mut restored = objects.to_vec();
    for object in &mut restored {
        object["metadata"]["labels"][LABEL_DEPLOYMENT] = Value::String(previous_id.clone());
        if object["kind"] == "Deployment" {
            object["spec"]["template"] = template.clone();
        }
    }
    if let Err(e) = apply_all(client, &restored).await {
        return format!("restoring the previous deployment {previous_id} failed: {e}");
    }
    let mut serving = w.clone();
    serving.deployment_id = previous_id.clone();
    serving.image = image.clone();
    match rollout::watch(client, &serving, timeout).await {
        Ok(()) => format!("restored the previous deployment {previous_id} ({image}) in the cluster"),
        Err(e) => format!(
            "restored the previous deployment {previous_id} ({image}), but its rollout did not finish: {}",
            e.message
        ),
    }
}

/// What a dry run shows in place of a secret value.
pub(super) const SEALED: &str = "<sealed>";

/// Replaces the values of the app's variables (all but `PORT`: berth does not tell a
/// secret from a plain one here) and of Secrets with [`SEALED`], and drops the server's
/// bookkeeping.
fn seal(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("managedFields");
    }
    for key in ["data", "stringData"] {
        if let Some(data) = object[key].as_object_mut() {
            for value in data.values_mut() {
                *value = Value::String(SEALED.into());
            }
        }
    }
    if let Some(containers) = object["spec"]["template"]["spec"]["containers"].as_array_mut() {
        for container in containers {
            for var in container["env"].as_array_mut().into_iter().flatten() {
                if var["name"] != "PORT" && var.get("value").is_some() {
                    var["value"] = Value::String(SEALED.into());
                }
            }
        }
    }
}

impl Objects {
    /// Every object, in the order they are applied.
    pub(super) fn into_list(self) -> Vec<Value> {
        self.org
            .into_iter()
            .chain([self.owner, self.variables])
            .chain(self.environment)
            .collect()
    }
}

/// The `rendered` objects of a release (in the order they would be applied): checked by
/// the cluster's server-side dry run when it answers every one, as rendered otherwise;
/// sealed.
pub(super) async fn dry_run(client: &Client, rendered: Vec<Value>) -> DryRun {
    let mut checked = Vec::with_capacity(rendered.len());
    let mut refused = None;
    for object in &rendered {
        match client.apply_dry_run(object).await {
            Ok(answer) => checked.push(answer),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let image = "the image is the one this deploy would build and push (by digest)";
    let (server_side, mut objects, note) = match refused {
        None => (
            true,
            checked,
            format!("checked by the cluster's server-side dry run; nothing was applied; {image}"),
        ),
        Some(e) => (
            false,
            rendered,
            format!(
                "berth's rendered manifests: the cluster's dry run did not go through ({e}); nothing was applied; {image}"
            ),
        ),
    };
    for object in &mut objects {
        seal(object);
    }
    DryRun {
        server_side,
        note: format!("{note}; values of the app's variables and of Secrets are shown as {SEALED}"),
        objects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_hides_variable_and_secret_values() {
        let mut deployment = serde_json::json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "PORT", "value": "8080"}, {"name": "DATABASE_URL", "value": "postgres://u:hunter2@db"}]}
        ]}}}});
        let mut secret =
            serde_json::json!({"kind": "Secret", "metadata": {"managedFields": []}, "data": {"tls.key": "a2V5"}});
        seal(&mut deployment);
        seal(&mut secret);
        let text = format!("{deployment}{secret}");
        assert!(!text.contains("hunter2") && !text.contains("a2V5"), "{text}");
        assert!(text.contains("8080") && text.contains(SEALED), "{text}");
        assert!(secret["metadata"].get("managedFields").is_none());
    }
}
