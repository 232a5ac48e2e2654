//! How many replicas each environment's Deployment runs: the reconciler's count (the
//! autoscaler's while awake, zero while asleep) set through the Deployment's `scale`
//! subresource, and berth's memory of what it set and how many were ready, so a pass
//! that changes nothing makes no API call. The same memory tells which environment a
//! deployment serves (its instances, its usage) and keeps one log follower per
//! environment running.

use std::collections::HashMap;
use std::sync::Mutex;

use super::super::logs::LogSink;
use super::super::target::Placement;
use super::super::{InstanceState, Observation, Usage};
use super::client::{Client, collection_path};
use super::manifests::{LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_SITE, label_value, workload_name};
use super::{KubeSettings, pod_logs};

/// An environment's Deployment as berth last set and saw it.
pub(super) struct Placed {
    /// The deployment it runs.
    pub deployment_id: String,
    /// Its site.
    pub site: String,
    /// The org's settings (a client of its cluster).
    pub settings: KubeSettings,
    /// Its namespace.
    pub namespace: String,
    /// Label selector of the deployment's pods.
    pub selector: String,
    /// Replicas berth set.
    pub replicas: u32,
    /// Ready replicas when last looked at.
    pub ready: u32,
    /// Scaled up from zero and no replica of the new count is ready yet.
    waking: bool,
    /// Copies its pods' output into berth's log store; stopped when dropped.
    follower: Option<pod_logs::Follower>,
}

/// Every environment berth placed on a cluster, by its Deployment's path.
#[derive(Default)]
pub(super) struct Placements {
    placed: Mutex<HashMap<String, Placed>>,
}

/// The path of an environment's Deployment.
pub(super) fn deployment_path(namespace: &str, site: &str, environment: &str) -> String {
    format!(
        "{}/{}",
        collection_path("Deployment", Some(namespace)).expect("known kind"),
        workload_name(site, environment)
    )
}

/// The label selector of one deployment's pods in an environment.
pub(super) fn pod_selector(site: &str, environment: &str, deployment_id: &str) -> String {
    super::client::label_selector(&[
        (LABEL_SITE, &label_value(site)),
        (LABEL_ENVIRONMENT, &label_value(environment)),
        (LABEL_DEPLOYMENT, &label_value(deployment_id)),
    ])
}

impl Placements {
    /// The replicas berth last set on the Deployment at `path` (what a new release of the
    /// environment keeps), if any.
    pub fn replicas(&self, path: &str) -> Option<u32> {
        self.placed
            .lock()
            .expect("placements lock")
            .get(path)
            .map(|p| p.replicas)
    }

    /// Records a release: the environment's Deployment runs `deployment_id` with
    /// `replicas` ready.
    pub fn released(&self, path: String, placement: Placement<'_>, settings: &KubeSettings, replicas: u32) {
        let mut placed = self.placed.lock().expect("placements lock");
        placed.insert(
            path,
            Placed {
                deployment_id: placement.deployment_id.to_string(),
                site: placement.site.site.to_string(),
                settings: settings.clone(),
                namespace: settings.namespace(placement.site.org),
                selector: pod_selector(placement.site.site, placement.environment, placement.deployment_id),
                replicas,
                ready: replicas,
                waking: false,
                follower: None,
            },
        );
    }

    /// The settings and namespace of one of `site`'s environments berth placed (while
    /// this process placed any).
    pub fn of_site(&self, site: &str) -> Option<(KubeSettings, String)> {
        let placed = self.placed.lock().expect("placements lock");
        placed
            .values()
            .find(|p| p.site == site)
            .map(|p| (p.settings.clone(), p.namespace.clone()))
    }

    /// Keeps a log follower on the pods of the environment at `path` (an environment
    /// whose platform scales it by itself, so [`Self::scale`] is not called for it).
    pub fn follow(&self, sink: &LogSink, path: &str, deployment_id: &str) {
        if let Some(p) = self.placed.lock().expect("placements lock").get_mut(path)
            && p.deployment_id == deployment_id
        {
            ensure_follower(p, sink, deployment_id);
        }
    }

    /// Runs `instances` replicas of the environment's Deployment; returns how many are
    /// ready. Calls the API only when the count changes, the deployment changed, or
    /// replicas are wanted and none was ready yet.
    pub async fn scale(
        &self,
        sink: &LogSink,
        placement: Placement<'_>,
        instances: u32,
        max: u32,
    ) -> Result<u32, String> {
        let settings = KubeSettings::parse(placement.site.settings)?;
        let namespace = settings.namespace(placement.site.org);
        let path = deployment_path(&namespace, placement.site.site, placement.environment);
        let instances = instances.min(max);
        let known = {
            let mut placed = self.placed.lock().expect("placements lock");
            match placed.get_mut(&path) {
                Some(p) if p.deployment_id == placement.deployment_id => {
                    ensure_follower(p, sink, placement.deployment_id);
                    if p.replicas == instances && (instances == 0 || p.ready > 0) {
                        return Ok(p.ready.min(instances));
                    }
                    Some((p.replicas, p.waking))
                }
                _ => None,
            }
        };
        let client = settings.client()?;
        let waking = instances > 0 && known.is_some_and(|(replicas, waking)| replicas == 0 || waking);
        if known.map(|(replicas, _)| replicas) != Some(instances) {
            client
                .scale(&path, instances)
                .await
                .map_err(|e| format!("scaling {path}: {e}"))?;
            let note = match instances {
                0 => "no requests for the idle timeout: scaled to zero replicas; the next request wakes it".to_string(),
                n => format!("running {n} replica{}", if n == 1 { "" } else { "s" }),
            };
            tracing::info!(deployment.id = %placement.deployment_id, replicas = instances, "scaled an environment's Deployment");
            sink.write(placement.deployment_id, "runtime", "system", note);
        }
        let ready = ready_replicas(&client, &path, waking).await?;
        let mut placed = self.placed.lock().expect("placements lock");
        let entry = placed.entry(path).or_insert_with(|| Placed {
            deployment_id: placement.deployment_id.to_string(),
            site: placement.site.site.to_string(),
            settings: settings.clone(),
            namespace: namespace.clone(),
            selector: pod_selector(placement.site.site, placement.environment, placement.deployment_id),
            replicas: instances,
            ready,
            waking: false,
            follower: None,
        });
        if entry.deployment_id != placement.deployment_id {
            entry.deployment_id = placement.deployment_id.to_string();
            entry.selector = pod_selector(placement.site.site, placement.environment, placement.deployment_id);
            entry.follower = None;
        }
        entry.settings = settings;
        entry.namespace = namespace;
        entry.replicas = instances;
        entry.ready = ready;
        entry.waking = waking && ready == 0;
        ensure_follower(entry, sink, placement.deployment_id);
        Ok(ready.min(instances))
    }

    /// The instances of `deployment_id` as berth last saw them (none when it serves no
    /// environment on a cluster).
    pub fn observe(&self, deployment_id: &str) -> Vec<Observation> {
        let placed = self.placed.lock().expect("placements lock");
        let Some(p) = placed.values().find(|p| p.deployment_id == deployment_id) else {
            return Vec::new();
        };
        (0..p.replicas)
            .map(|index| Observation {
                index,
                addr: None,
                state: if index < p.ready {
                    InstanceState::Healthy
                } else {
                    InstanceState::Starting
                },
                draining: false,
            })
            .collect()
    }

    /// CPU and memory of the pods of the environment `deployment_id` serves, from the
    /// cluster's `metrics.k8s.io` (`PodMetrics`), in pod name order.
    pub async fn usage(&self, deployment_id: &str) -> Result<Vec<(u32, Option<Usage>)>, String> {
        let found = {
            let placed = self.placed.lock().expect("placements lock");
            placed.values().find(|p| p.deployment_id == deployment_id).map(|p| {
                (
                    p.settings.client(),
                    p.namespace.clone(),
                    p.selector.clone(),
                    p.replicas,
                    quantity_bytes(&p.settings.limits.container.memory_limit),
                )
            })
        };
        let Some((client, namespace, selector, replicas, limit)) = found else {
            return Ok(Vec::new());
        };
        let client = client?;
        let groups = client.api_groups().await.map_err(|e| e.to_string())?;
        if !groups.iter().any(|g| g == "metrics.k8s.io") {
            return Err(
                "this cluster has no metrics API (metrics.k8s.io); install metrics-server to see CPU and memory".into(),
            );
        }
        let mut pods = client
            .list(
                &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"),
                &selector,
            )
            .await
            .map_err(|e| e.to_string())?;
        pods.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
        Ok((0..replicas)
            .map(|index| {
                let usage = pods.get(index as usize).map(|pod| {
                    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
                    let cores: f64 = containers
                        .iter()
                        .filter_map(|c| quantity_cores(c["usage"]["cpu"].as_str()?))
                        .sum();
                    let bytes: u64 = containers
                        .iter()
                        .filter_map(|c| quantity_bytes(c["usage"]["memory"].as_str()?))
                        .sum();
                    Usage {
                        cpu_percent: cores * 100.0,
                        memory_bytes: bytes,
                        memory_limit_bytes: limit,
                    }
                });
                (index, usage)
            })
            .collect())
    }

    /// Forgets a deleted site's environments (their followers stop).
    pub fn site_deleted(&self, namespace: &str, site: &str) {
        self.placed
            .lock()
            .expect("placements lock")
            .retain(|_, p| !(p.namespace == namespace && p.site == site));
    }
}

/// CPU cores of a quantity (`250m`, `1`, `12345n`, `3u`).
fn quantity_cores(q: &str) -> Option<f64> {
    let (number, scale) = match q.char_indices().last()? {
        (i, 'n') => (&q[..i], 1e-9),
        (i, 'u') => (&q[..i], 1e-6),
        (i, 'm') => (&q[..i], 1e-3),
        _ => (q, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n * scale)
}

/// Bytes of a quantity (`128Mi`, `1Gi`, `5000Ki`, `1G`, `1024`).
fn quantity_bytes(q: &str) -> Option<u64> {
    let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let factor: f64 = match &q[digits.len()..] {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        _ => return None,
    };
    let n = digits.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)?;
    Some((n * factor) as u64)
}

/// Starts the environment's log follower unless one runs.
fn ensure_follower(p: &mut Placed, sink: &LogSink, deployment_id: &str) {
    if p.follower.as_ref().is_some_and(pod_logs::Follower::is_running) {
        return;
    }
    if let Ok(client) = p.settings.client() {
        p.follower = Some(pod_logs::Follower::start(
            client,
            sink.clone(),
            p.namespace.clone(),
            p.selector.clone(),
            deployment_id.to_string(),
        ));
    }
}

/// The Deployment's ready replicas. `waking`: it was at zero, so a status the controller
/// wrote before it saw the new count (its `observedGeneration` behind) is not trusted.
async fn ready_replicas(client: &Client, path: &str, waking: bool) -> Result<u32, String> {
    let deployment = client
        .get(path)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the Deployment {path} is gone; deploy the environment again"))?;
    let generation = deployment["metadata"]["generation"].as_i64().unwrap_or(0);
    if waking && deployment["status"]["observedGeneration"].as_i64().unwrap_or(-1) < generation {
        return Ok(0);
    }
    Ok(deployment["status"]["readyReplicas"]
        .as_u64()
        .unwrap_or(0)
        .min(u64::from(u32::MAX)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_quantities_parse() {
        assert_eq!(quantity_cores("250m"), Some(0.25));
        assert_eq!(quantity_cores("2"), Some(2.0));
        assert!((quantity_cores("1500000n").unwrap() - 0.0015).abs() < 1e-12);
        assert_eq!(quantity_bytes("128Mi"), Some(128 << 20));
        assert_eq!(quantity_bytes("5000Ki"), Some(5000 << 10));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("12x"), None);
    }
}
