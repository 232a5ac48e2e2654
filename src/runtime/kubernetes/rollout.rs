//! Watching a Deployment's rollout until it is available, failing fast on the reasons a
//! rollout does not recover from by waiting (the image cannot be pulled, the app crashes
//! at start, its configuration is wrong, no node can take it, the progress deadline
//! passed), with the related Events and the app's last log lines; and removing a site's
//! objects, found by berth's labels only.

use std::time::Duration;

use serde_json::Value;

use super::super::StartError;
use super::client::{ApiError, Client, collection_path, label_selector};
use super::manifests::{LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_SITE, MANAGED_BY, Workload, label_value};

/// Container waiting reasons that end a rollout as failed.
const FATAL_WAITING: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
];

/// How often the rollout is looked at (bounded polling; a watch would do the same with
/// fewer requests).
const POLL: Duration = Duration::from_millis(500);

/// Waits until the workload's Deployment has rolled out to its deployment, or fails with
/// the reason; `timeout` bounds the whole wait.
pub(super) async fn watch(client: &Client, w: &Workload, timeout: Duration) -> Result<(), StartError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let name = w.name();
    let path = format!(
        "{}/{name}",
        collection_path("Deployment", Some(&w.namespace)).expect("known kind")
    );
    loop {
        let failed = |e: ApiError| StartError {
            message: e.to_string(),
            last_lines: Vec::new(),
        };
        let deployment = client.get(&path).await.map_err(failed)?.ok_or_else(|| StartError {
            message: format!("the Deployment {}/{name} disappeared during its rollout", w.namespace),
            last_lines: Vec::new(),
        })?;
        if rolled_out(&deployment) {
            return Ok(());
        }
        if let Some(reason) = deadline_exceeded(&deployment) {
            return Err(StartError {
                message: reason,
                last_lines: Vec::new(),
            });
        }
        let pods = client
            .list(
                &collection_path("Pod", Some(&w.namespace)).expect("known kind"),
                &label_selector(&[
                    (LABEL_SITE, &label_value(&w.site)),
                    (LABEL_ENVIRONMENT, &label_value(&w.environment)),
                    (LABEL_DEPLOYMENT, &label_value(&w.deployment_id)),
                ]),
            )
            .await
            .map_err(failed)?;
        for pod in &pods {
            if let Some(reason) = pod_failure(pod) {
                return Err(explain(client, &w.namespace, pod, reason).await);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError {
                message: format!(
                    "the rollout of {}/{name} did not become available within {} s",
                    w.namespace,
                    timeout.as_secs()
                ),
                last_lines: Vec::new(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the Deployment's newest generation is fully rolled out (as `kubectl rollout
/// status` decides it): observed, every replica updated and available, no old ones.
pub(super) fn rolled_out(d: &Value) -> bool {
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
    let status = &d["status"];
    let wanted = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let count = |key: &str| status[key].as_i64().unwrap_or(0);
    status["observedGeneration"].as_i64().unwrap_or(-1) >= generation
        && count("updatedReplicas") >= wanted
        && count("replicas") <= count("updatedReplicas")
        && count("availableReplicas") >= count("updatedReplicas")
}

/// The progress deadline's verdict, when it has passed.
fn deadline_exceeded(d: &Value) -> Option<String> {
    d["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded").then(|| {
            format!(
                "ProgressDeadlineExceeded: {}",
                c["message"].as_str().unwrap_or("the rollout made no progress")
            )
        })
    })
}

/// Why a pod will not become ready without a change, if so.
pub(super) fn pod_failure(pod: &Value) -> Option<String> {
    for status in pod["status"]["containerStatuses"].as_array().into_iter().flatten() {
        let waiting = &status["state"]["waiting"];
        if let Some(reason) = waiting["reason"].as_str()
            && FATAL_WAITING.contains(&reason)
        {
            let message = waiting["message"].as_str().unwrap_or_default();
            return Some(if message.is_empty() {
                reason.to_string()
            } else {
                format!("{reason}: {message}")
            });
        }
    }
    pod["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "PodScheduled" && c["status"] == "False" && c["reason"] == "Unschedulable").then(|| {
            format!(
                "Unschedulable: {}",
                c["message"].as_str().unwrap_or("no node can run the app's pod")
            )
        })
    })
}

/// The failure with the pod's Events and its app's last log lines.
pub(super) async fn explain(client: &Client, namespace: &str, pod: &Value, reason: String) -> StartError {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let events = client
        .list(
            &collection_path("Event", Some(namespace)).expect("known kind"),
            &format!("fieldSelector=involvedObject.name%3D{name}"),
        )
        .await
        .unwrap_or_default();
    let mut lines: Vec<String> = events
        .iter()
        .rev()
        .take(5)
        .map(|e| {
            format!(
                "event {}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    lines.reverse();
    if reason.starts_with("CrashLoopBackOff") {
        lines.extend(client.pod_log(namespace, name, 20).await.unwrap_or_default());
    }
    StartError {
        message: format!("the rollout failed: {reason} (pod {namespace}/{name})"),
        last_lines: lines,
    }
}

/// Deletes a site's owner object (its dependents go with it) and then any Deployment,
/// Service, Ingress or Secret left of the site: only objects carrying both berth's
/// managed-by label and the site's label.
pub(super) async fn delete_site(client: &Client, namespace: &str, site: &str) -> Result<(), ApiError> {
    let selector = label_selector(&[MANAGED_BY, (LABEL_SITE, &label_value(site))]);
    for kind in ["ConfigMap", "Ingress", "Service", "Deployment", "Secret"] {
        let collection = collection_path(kind, Some(namespace)).expect("known kind");
        for object in client.list(&collection, &selector).await? {
            if let Some(name) = object["metadata"]["name"].as_str() {
                client.delete(&format!("{collection}/{name}")).await?;
            }
        }
    }
    Ok(())
}
