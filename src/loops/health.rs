//! Health changes a reconcile pass notices in serving deployments (a crash loop, a
//! recovery) and how they are handled beside the pass: the deployment's status moves,
//! with its event, and a crash-looping release falls back to its predecessor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::DeploymentStatus;
use crate::platform::{HealthChange, Platform};

/// How long a crashed deployment serves healthy, without a break, before it is `live` again.
pub const RECOVERED_AFTER: Duration = Duration::from_secs(10);

impl Platform {
    /// Records a health change seen by a reconcile pass (at most one per deployment and
    /// kind until taken).
    pub fn note_health(&self, change: HealthChange) {
        let mut changes = self.health_changes.lock().expect("health changes lock");
        if !changes.contains(&change) {
            changes.push(change);
        }
    }

    /// Takes the crashed deployments a reconcile pass saw serving healthy instances: one
    /// that has been seen healthy in every pass for [`RECOVERED_AFTER`] is noted as
    /// recovered; one missing from `healthy` starts over. An app that answers for a moment
    /// after each slow restart and then crashes again stays `crashed`.
    pub fn note_healthy_while_crashed(&self, healthy: HashSet<String>) {
        let recovered = {
            let mut since = self.recovering.lock().expect("recovering lock");
            held_healthy(&mut since, healthy, Instant::now())
        };
        for deployment_id in recovered {
            self.note_health(HealthChange::Recovered { deployment_id });
        }
    }

    /// The health changes noted since the last call.
    pub fn take_health_changes(&self) -> Vec<HealthChange> {
        std::mem::take(&mut *self.health_changes.lock().expect("health changes lock"))
    }

    /// A crash loop: the deployment becomes `crashed` (its error says why, with its last
    /// lines) and, unless the server runs with `--on-crash-loop stay-down`, its environment
    /// goes back to the deployment before it. A recovery makes it `live` again. Each is
    /// recorded as an event and in the runtime log.
    pub async fn handle_health_change(self: &Arc<Self>, change: HealthChange) {
        let result = match &change {
            HealthChange::CrashLoop { deployment_id, message } => self.crash_loop(deployment_id, message).await,
            HealthChange::Recovered { deployment_id } => self.recovered(deployment_id).await,
        };
        if let Err(err) = result {
            tracing::warn!(change = ?change, error = %format!("{err:#}"), "handling a health change failed");
        }
    }

    async fn crash_loop(self: &Arc<Self>, deployment_id: &str, message: &str) -> anyhow::Result<()> {
        let store = &self.store;
        let Some(d) = store.get_deployment_any_org(deployment_id).await? else {
            return Ok(());
        };
        self.logs.flush().await;
        let last: Vec<String> = store
            .tail_logs(deployment_id, "runtime", 5)
            .await?
            .into_iter()
            .map(|r| r.line)
            .collect();
        let error = format!(
            "crash loop after going live: {message}; last lines: {}",
            last.join(" | ")
        );
        let Some(env) = store.get_environment_by_id(&d.environment_id).await? else {
            return Ok(());
        };
        let target = match self.config.on_crash_loop {
            crate::config::CrashLoopPolicy::Rollback => store.previous_deployment(&env.id, d.created_at, &d.id).await?,
            crate::config::CrashLoopPolicy::StayDown => None,
        };
        let rolled_back_to = target.as_ref().map(|t| t.id.as_str());
        if !self.store.record_crash(&d, &env.name, &error, rolled_back_to).await? {
            return Ok(()); // handled already (or no longer live)
        }
        self.events.notify();
        tracing::warn!(deployment.id = %d.id, environment = %env.name, "a live deployment crash-loops");
        let Some(target) = target else {
            let why = match self.config.on_crash_loop {
                crate::config::CrashLoopPolicy::StayDown => "the server runs with --on-crash-loop stay-down",
                crate::config::CrashLoopPolicy::Rollback => "there is no earlier deployment to go back to",
            };
            self.log(
                &d.id,
                "runtime",
                "system",
                format!("crash loop: '{}' stays on this deployment ({why}); it is restarted slowly until it recovers, or deploy a fix", env.name),
            );
            return Ok(());
        };
        self.log(
            &d.id,
            "runtime",
            "system",
            format!(
                "crash loop: rolling '{}' back to {}, the deployment before this one",
                env.name, target.id
            ),
        );
        let site = store
            .get_site_by_id(&d.site_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("site of {} is gone", d.id))?;
        self.point_environment(&env, &site, &target).await?;
        self.log(
            &target.id,
            "runtime",
            "system",
            format!("serving '{}' again: {} crash-looped after going live", env.name, d.id),
        );
        Ok(())
    }

    async fn recovered(&self, deployment_id: &str) -> anyhow::Result<()> {
        let Some(d) = self.store.get_deployment_any_org(deployment_id).await? else {
            return Ok(());
        };
        if self.set_status(&d, DeploymentStatus::Live, None).await? {
            self.log(
                deployment_id,
                "runtime",
                "system",
                "recovered: healthy again and live".into(),
            );
        }
        Ok(())
    }
}

/// Keeps, for each deployment in `healthy`, when it was first seen healthy without a break
/// (one missing from `healthy` is forgotten) and returns those healthy for
/// [`RECOVERED_AFTER`] by `now`.
fn held_healthy(since: &mut HashMap<String, Instant>, healthy: HashSet<String>, now: Instant) -> Vec<String> {
    since.retain(|id, _| healthy.contains(id));
    let mut held: Vec<String> = healthy
        .into_iter()
        .filter(|id| now.saturating_duration_since(*since.entry(id.clone()).or_insert(now)) >= RECOVERED_AFTER)
        .collect();
    held.sort();
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_crashed_deployment_recovers_only_after_staying_healthy_without_a_break() {
        let mut since = HashMap::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(held_healthy(&mut since, set(&["a", "b"]), at(0)).is_empty());
        assert!(held_healthy(&mut since, set(&["a", "b"]), at(5)).is_empty());
        // "a" crashes again for a pass: its healthy spell starts over.
        assert!(held_healthy(&mut since, set(&["b"]), at(6)).is_empty());
        assert_eq!(
            held_healthy(&mut since, set(&["a", "b"]), at(10)),
            vec!["b".to_string()]
        );
        assert!(held_healthy(&mut since, set(&["a"]), at(15)).is_empty());
        assert_eq!(held_healthy(&mut since, set(&["a"]), at(20)), vec!["a".to_string()]);
        // Nothing is kept for deployments no longer seen.
        held_healthy(&mut since, set(&[]), at(21));
        assert!(since.is_empty());
    }
}
