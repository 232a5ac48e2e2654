//! An app's variables live in a Secret per release (see
//! [`manifests::variables_secret`]), never inline in a Deployment or Knative Service:
//! applied before the workload that reads them, owned by the site's owner object, and
//! deleted once nothing uses them: in Deployment mode every one but the serving
//! release's after a rollout; on Knative every one no revision of the environment
//! names (a kept revision keeps its own, so a rollback to it starts with its values);
//! and a forgotten deployment's. The name's digest is keyed with a random key of the
//! installation, kept in its data dir.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::client::{ApiError, Client, collection_path, label_selector};
use super::manifests::{
    self, LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_SITE, LABEL_VARIABLES, MANAGED_BY, Workload, label_value,
};

/// The file (in the data dir) holding the key of the variables' Secret names.
const KEY_FILE: &str = "kubernetes-variables.key";

/// The installation's key of the variables' Secret names: read from the data dir, made
/// (32 random bytes, readable by berth's user only) the first time.
pub(super) fn load_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 bytes; remove it to make a new key",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let key: [u8; 32] = rand::random();
    crate::util::write_new_private_file(&path, &key)?;
    Ok(key.to_vec())
}

/// Applies the Secret of `w`'s variables as a dependent of the site's `owner`.
pub(super) async fn apply(client: &Client, w: &Workload, owner: &Value) -> Result<(), ApiError> {
    let mut secret = manifests::variables_secret(w);
    manifests::set_owner(&mut secret, owner);
    client.apply(&secret).await.map(drop)
}

/// The names of the Secrets the containers of the pod spec `spec` read variables from.
pub(super) fn referenced(spec: &Value) -> impl Iterator<Item = String> + '_ {
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .filter_map(|var| var["valueFrom"]["secretKeyRef"]["name"].as_str().map(str::to_string))
}

/// Deletes the environment's variables' Secrets (berth's labels of its site and
/// environment and [`LABEL_VARIABLES`], nothing else) not named in `keep`.
pub(super) async fn prune(client: &Client, w: &Workload, keep: &BTreeSet<String>) -> Result<(), ApiError> {
    let selector = label_selector(&[
        MANAGED_BY,
        (LABEL_SITE, &label_value(&w.site)),
        (LABEL_ENVIRONMENT, &label_value(&w.environment)),
        (LABEL_VARIABLES, "true"),
    ]);
    delete_listed(client, &w.namespace, &selector, keep).await
}

/// Deletes the variables' Secrets of the site's deployment `deployment_id` (berth
/// forgot it).
pub(super) async fn forget_deployment(
    client: &Client,
    namespace: &str,
    site: &str,
    deployment_id: &str,
) -> Result<(), ApiError> {
    let selector = label_selector(&[
        MANAGED_BY,
        (LABEL_SITE, &label_value(site)),
        (LABEL_DEPLOYMENT, &label_value(deployment_id)),
        (LABEL_VARIABLES, "true"),
    ]);
    delete_listed(client, namespace, &selector, &BTreeSet::new()).await
}

async fn delete_listed(
    client: &Client,
    namespace: &str,
    selector: &str,
    keep: &BTreeSet<String>,
) -> Result<(), ApiError> {
    let collection = collection_path("Secret", Some(namespace)).expect("known kind");
    for secret in client.list(&collection, selector).await? {
        // A TLS Secret never carries the variables label; checked again all the same.
        if secret["type"] != "Opaque" {
            continue;
        }
        if let Some(name) = secret["metadata"]["name"].as_str()
            && !keep.contains(name)
        {
            match client.delete(&format!("{collection}/{name}")).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = load_key(dir.path()).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(load_key(dir.path()).unwrap(), key, "the same key at the next start");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
