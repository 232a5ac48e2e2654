//! An environment's hosts applied at once when they change (a custom domain served or
//! removed, a certificate issued or renewed), not only at its next release: its Ingress
//! and TLS Secrets (or, with Knative, its DomainMappings and TLS Secrets) are applied,
//! and the Secrets and DomainMappings of hosts it no longer has are deleted: berth's
//! labelled ones of the environment only.

use std::collections::BTreeSet;

use serde_json::Value;

use super::client::{Client, collection_path, label_selector, object_path};
use super::manifests::{self, LABEL_ENVIRONMENT, LABEL_SITE, MANAGED_BY, Workload, label_value};

/// The site's owner object as the cluster has it; `None` when nothing of the site was
/// released there yet.
pub(super) async fn owner(client: &Client, w: &Workload) -> Result<Option<Value>, String> {
    let owner = manifests::site_owner(&w.namespace, &w.org, &w.site);
    let path = object_path(&owner).ok_or("internal error: unknown kind")?;
    client.get(&path).await.map_err(|e| e.to_string())
}

/// Applies the environment's Ingress and TLS Secrets (as a release renders them) and
/// deletes its Secrets of hosts it no longer has.
pub(super) async fn apply_ingress(client: &Client, w: &Workload, owner: &Value) -> Result<(), String> {
    let mut wanted: Vec<Value> = manifests::environment_objects(w)
        .into_iter()
        .filter(|o| o["kind"] == "Ingress" || o["type"] == TLS_SECRET_TYPE)
        .collect();
    for object in &mut wanted {
        manifests::set_owner(object, owner);
    }
    for object in &wanted {
        client.apply(object).await.map_err(|e| e.to_string())?;
    }
    let keep: BTreeSet<String> = wanted.iter().filter_map(object_path).collect();
    prune_secrets(client, w, &keep).await
}

/// Deletes the environment's TLS Secrets (berth's labels of its site and environment,
/// type `kubernetes.io/tls`: the variables' Secrets are not the routes' to prune) whose
/// path is not in `keep`.
pub(super) async fn prune_secrets(client: &Client, w: &Workload, keep: &BTreeSet<String>) -> Result<(), String> {
    let collection = collection_path("Secret", Some(&w.namespace)).expect("known kind");
    prune_where(client, w, &collection, keep, |o| o["type"] == TLS_SECRET_TYPE).await
}

/// The type of the TLS Secrets of custom domains.
pub(super) const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Deletes the environment's objects in `collection` (found by berth's labels of its site
/// and environment, nothing else) whose path is not in `keep`.
pub(super) async fn prune(
    client: &Client,
    w: &Workload,
    collection: &str,
    keep: &BTreeSet<String>,
) -> Result<(), String> {
    prune_where(client, w, collection, keep, |_| true).await
}

/// [`prune`] of the objects `prunable` accepts only.
async fn prune_where(
    client: &Client,
    w: &Workload,
    collection: &str,
    keep: &BTreeSet<String>,
    prunable: impl Fn(&Value) -> bool,
) -> Result<(), String> {
    let selector = label_selector(&[
        MANAGED_BY,
        (LABEL_SITE, &label_value(&w.site)),
        (LABEL_ENVIRONMENT, &label_value(&w.environment)),
    ]);
    for object in client.list(collection, &selector).await.map_err(|e| e.to_string())? {
        if !prunable(&object) {
            continue;
        }
        let Some(name) = object["metadata"]["name"].as_str() else {
            continue;
        };
        let path = format!("{collection}/{name}");
        if !keep.contains(&path) {
            client.delete(&path).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
