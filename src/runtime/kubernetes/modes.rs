//! An environment runs in one of two modes: a Deployment + Service + Ingress, or a
//! Knative Service with its DomainMappings (setting `knative` and the cluster's
//! discovery decide). When a release finds the environment's objects of the other mode
//! (the setting changed, or Knative was installed or removed), it deletes them first:
//! a Knative Service makes a Kubernetes Service of its own name, which clashes with the
//! Deployment mode's Service, and the other way round, and the two modes' routes to the
//! same hosts would compete. Only objects carrying berth's managed-by label and the
//! environment's site and environment labels are deleted; the environment's TLS Secrets
//! belong to both modes and stay (each mode's route pruning keeps them right), and
//! objects Knative made itself are left to Knative.

use super::client::{self, Client, label_selector};
use super::knative;
use super::manifests::{LABEL_ENVIRONMENT, LABEL_SITE, MANAGED_BY, Workload, label_value};

/// Deletes the environment's objects of the mode it no longer runs in (`knative`: the
/// mode of this release) and says which (`Kind namespace/name`), for the log.
pub(super) async fn remove_other_mode(client: &Client, w: &Workload, knative: bool) -> Result<Vec<String>, String> {
    let selector = label_selector(&[
        MANAGED_BY,
        (LABEL_SITE, &label_value(&w.site)),
        (LABEL_ENVIRONMENT, &label_value(&w.environment)),
    ]);
    let collections: Vec<(&str, String)> = if knative {
        ["Ingress", "Service", "Deployment"]
            .into_iter()
            .map(|k| (k, client::collection_path(k, Some(&w.namespace)).expect("known kind")))
            .collect()
    } else {
        ["DomainMapping", "Service"]
            .into_iter()
            .map(|k| (k, knative::collection_path(k, &w.namespace).expect("known kind")))
            .collect()
    };
    let mut removed = Vec::new();
    for (kind, collection) in collections {
        let objects = match client.list(&collection, &selector).await {
            Ok(objects) => objects,
            // A cluster without Knative has no Knative objects.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.to_string()),
        };
        for object in objects {
            let Some(name) = object["metadata"]["name"].as_str() else {
                continue;
            };
            // Knative's own objects (e.g. the Kubernetes Service its Route makes, which
            // may carry the Knative Service's labels) are Knative's to remove.
            if made_by_knative(&object) {
                continue;
            }
            client.delete(&format!("{collection}/{name}")).await.map_err(|e| {
                format!(
                    "deleting the {kind} {}/{name} of the environment's previous mode: {e}",
                    w.namespace
                )
            })?;
            removed.push(format!("{kind} {}/{name}", w.namespace));
        }
    }
    Ok(removed)
}

/// Whether Knative made `object` (it carries Knative's labels).
fn made_by_knative(object: &serde_json::Value) -> bool {
    object["metadata"]["labels"]
        .as_object()
        .is_some_and(|labels| labels.keys().any(|k| k.starts_with("serving.knative.dev/")))
}
