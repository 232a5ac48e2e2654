//! Shared targets among replicas: a target whose instances run on the shared lifecycle in a
//! place every replica reaches (docker on an engine they share) is run by one replica at
//! a time, the holder of its lease (`target:<name>`, a [`Singleton`]). The holder's
//! reconciler starts, heals, scales and stops the instances and records where each answers
//! (`shared_instances`, with an `instances.recorded` event); the other replicas start none
//! and route the target's environments to the recorded addresses. A replica that takes
//! the lease over adopts the running containers (their `berth.owner` is the
//! installation's, the same for every replica). On SQLite the one server always holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::HolderAsk;
use crate::jobs::Singleton;
use crate::platform::Platform;
use crate::runtime::{InstanceState, Observation};
use crate::store::shared::{EdgeActivity, SharedInstance, SharedState};

/// How long a shared target's lease lasts unless renewed (renewed every third of it).
pub const LEASE_TIME: Duration = Duration::from_secs(30);

/// Test-only override of [`LEASE_TIME`], in seconds (1 to 600): failover tests need not
/// wait half a minute.
pub const LEASE_ENV: &str = "BERTH_SHARED_TARGET_LEASE_SECONDS";

/// The lease length in force.
pub fn lease_time() -> Duration {
    std::env::var(LEASE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| (1..=600).contains(s))
        .map_or(LEASE_TIME, Duration::from_secs)
}

/// Which shared targets this replica runs now.
#[derive(Debug, Default)]
pub struct SharedLeases {
    held: Mutex<HashMap<&'static str, bool>>,
    /// (host, environment id) of the environments another replica runs, as the last
    /// reconcile pass routed them: this replica's edge reports their requests.
    served_elsewhere: Mutex<Vec<(String, String)>>,
    /// What the other replicas' edges saw of the environments this replica runs, by
    /// environment id (read every [`ACTIVITY_EVERY`] while it holds a lease).
    activity_elsewhere: Mutex<HashMap<String, EdgeActivity>>,
    /// The instances of shared targets as their holder recorded them, by deployment, as
    /// the last reconcile pass read them (what a replica that does not run them shows).
    recorded: Mutex<HashMap<String, Vec<SharedInstance>>>,
}

impl SharedLeases {
    /// The shared targets `names`, all held (one server alone on its database) or none
    /// until their leases are taken.
    pub fn new(names: &[&'static str], held: bool) -> Self {
        Self {
            held: Mutex::new(names.iter().map(|n| (*n, held)).collect()),
            served_elsewhere: Mutex::default(),
            activity_elsewhere: Mutex::default(),
            recorded: Mutex::default(),
        }
    }

    /// Whether `target` is a shared target that another replica runs now: this one must
    /// start none of its instances and route to the recorded ones.
    pub fn run_elsewhere(&self, target: &str) -> bool {
        self.held.lock().expect("leases lock").get(target) == Some(&false)
    }

    /// The shared targets another replica runs now.
    pub fn elsewhere(&self) -> Vec<&'static str> {
        let held = self.held.lock().expect("leases lock");
        held.iter().filter(|(_, h)| !**h).map(|(n, _)| *n).collect()
    }

    /// Sets the (host, environment id) pairs of the environments another replica runs.
    pub fn set_served_elsewhere(&self, hosts: Vec<(String, String)>) {
        *self.served_elsewhere.lock().expect("leases lock") = hosts;
    }

    /// Sets the recorded instances of the shared targets, by deployment.
    pub fn set_recorded(&self, recorded: HashMap<String, Vec<SharedInstance>>) {
        *self.recorded.lock().expect("leases lock") = recorded;
    }

    /// A deployment's instances as the holder of its target's lease recorded them.
    pub fn recorded_observations(&self, deployment_id: &str) -> Vec<Observation> {
        let recorded = self.recorded.lock().expect("leases lock");
        let Some(instances) = recorded.get(deployment_id) else {
            return Vec::new();
        };
        instances
            .iter()
            .map(|i| Observation {
                index: i.index,
                addr: i.addr,
                state: match i.state {
                    SharedState::Starting => InstanceState::Starting,
                    SharedState::Healthy => InstanceState::Healthy,
                    SharedState::Paused => InstanceState::Paused,
                    SharedState::Crashed => InstanceState::Crashed {
                        message: "crashed (as the replica running it recorded)".into(),
                    },
                },
                draining: false,
            })
            .collect()
    }

    /// Whether this replica runs any shared target.
    pub fn holds_any(&self) -> bool {
        self.held.lock().expect("leases lock").values().any(|held| *held)
    }

    /// When another replica's edge last served `environment_id` (ms since the epoch).
    pub fn last_request_elsewhere(&self, environment_id: &str) -> Option<i64> {
        self.activity_elsewhere
            .lock()
            .expect("leases lock")
            .get(environment_id)
            .map(|a| a.last_request_at)
    }

    /// Records whether this replica holds `target`'s lease; true when that changed.
    fn set(&self, target: &'static str, held: bool) -> bool {
        self.held.lock().expect("leases lock").insert(target, held) != Some(held)
    }
}

/// The leases of the shared targets, one per target; none on SQLite, where the one server
/// runs every target.
pub fn singletons(platform: &Platform) -> Vec<(&'static str, Singleton)> {
    if platform.store.backend() == crate::store::Backend::Sqlite {
        return Vec::new();
    }
    platform
        .targets
        .shared()
        .into_iter()
        .map(|name| {
            // A handful of names, made once at start.
            let lease: &'static str = Box::leak(format!("target:{name}").into_boxed_str());
            (name, platform.jobs.singleton(lease, lease_time()))
        })
        .collect()
}

/// Takes or renews every lease once; a lease lost hands its target's instances over
/// (left running for the new holder to adopt) and a lease taken makes the reconciler
/// adopt them.
pub async fn hold_all(platform: &Platform, leases: &[(&'static str, Singleton)]) {
    for (target, lease) in leases {
        let held = lease.hold().await;
        if !platform.shared.set(target, held) {
            continue;
        }
        if held {
            tracing::info!(target = %target, "took the shared target's lease: running its instances here");
        } else {
            tracing::warn!(target = %target, "another replica holds the shared target's lease: leaving its instances to it");
            for deployment_id in platform.runtime.deployments_of(target) {
                platform.runtime.detach(&deployment_id).await;
            }
        }
        platform.reconcile_wake.notify_one();
    }
}

/// Renews or takes the leases every third of their length until `stop`, then gives the
/// held ones up (the containers stay: the next holder adopts them at once).
pub async fn run(platform: Arc<Platform>, leases: Vec<(&'static str, Singleton)>, stop: CancellationToken) {
    let every = lease_time() / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => break,
        }
        hold_all(&platform, &leases).await;
    }
    for (target, lease) in &leases {
        if !platform.shared.run_elsewhere(target) {
            lease.release().await;
        }
    }
}

/// How often a replica shares what its edge sees with the others, and reads theirs.
pub const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// In-flight counts reported longer ago than this are not counted (their replica stopped).
const IN_FLIGHT_FRESH: Duration = Duration::from_secs(3);

/// Shares what this replica's edge sees of the environments another replica runs, every
/// [`ACTIVITY_EVERY`] until `stop` (`edge_activity`): when it last served each and how
/// many of its requests are in flight (the mean of the autoscaler's samples, rounded up).
/// A replica that runs a shared target reads the others' in turn: its idle timer and its
/// autoscaler count the requests of every edge, so an environment served through another
/// replica's edge is neither put to sleep under that traffic nor left at too few instances.
pub async fn share_activity(platform: Arc<Platform>, stop: CancellationToken) {
    // What was reported last, by environment: (last request, in flight).
    let mut reported: HashMap<String, (i64, i64)> = HashMap::new();
    // In-flight samples since the last report, by environment: (sum, count).
    let mut samples: HashMap<String, (usize, usize)> = HashMap::new();
    let mut tick = tokio::time::interval(crate::loops::autoscaler::SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_share = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let hosts = platform.shared.served_elsewhere.lock().expect("leases lock").clone();
        for (host, environment_id) in &hosts {
            let sample = samples.entry(environment_id.clone()).or_default();
            sample.0 += platform.edge.in_flight(host).unwrap_or(0);
            sample.1 += 1;
        }
        if last_share.elapsed() < ACTIVITY_EVERY {
            continue;
        }
        last_share = tokio::time::Instant::now();
        let now = crate::util::now_ms();
        let mut seen = Vec::new();
        for (host, environment_id) in &hosts {
            let Some(idle) = platform.edge.idle_for(host) else {
                continue;
            };
            let at = now.saturating_sub(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
            let (sum, count) = samples.get(environment_id).copied().unwrap_or_default();
            let in_flight = i64::try_from(sum.div_ceil(count.max(1))).unwrap_or(i64::MAX);
            // News: a later request (the same one read again differs by the clocks'
            // jitter), another count, or a count that must stay fresh.
            let news = reported.get(environment_id).is_none_or(|&(last_at, last_in_flight)| {
                at > last_at + 500 || in_flight != last_in_flight || in_flight > 0
            });
            if news {
                seen.push(EdgeActivity {
                    environment_id: environment_id.clone(),
                    last_request_at: at,
                    in_flight,
                });
            }
        }
        samples.clear();
        if !seen.is_empty() {
            match platform
                .store
                .record_edge_activity(&platform.replica_id, &seen, now)
                .await
            {
                Ok(()) => {
                    reported.extend(
                        seen.into_iter()
                            .map(|s| (s.environment_id, (s.last_request_at, s.in_flight))),
                    );
                    reported.retain(|env, _| hosts.iter().any(|(_, e)| e == env));
                }
                Err(err) => tracing::warn!(error = %err, "sharing the edge's requests with the other replicas failed"),
            }
        }
        if platform.shared.holds_any() {
            let fresh_since = now - i64::try_from(IN_FLIGHT_FRESH.as_millis()).unwrap_or(0);
            match platform
                .store
                .edge_activity_elsewhere(&platform.replica_id, fresh_since)
                .await
            {
                Ok(elsewhere) => {
                    platform.autoscaler.set_elsewhere(
                        elsewhere
                            .values()
                            .map(|a| (a.environment_id.clone(), usize::try_from(a.in_flight).unwrap_or(0)))
                            .collect(),
                    );
                    *platform.shared.activity_elsewhere.lock().expect("leases lock") = elsewhere;
                }
                Err(err) => tracing::warn!(error = %err, "reading the other replicas' edge activity failed"),
            }
        }
    }
}

impl Platform {
    /// The instances of a deployment on target `provider` as this replica knows them: on
    /// a shared target another replica runs, as that replica recorded them (unless this
    /// replica still runs them itself, a deploy through it not yet handed over).
    pub fn observe(&self, provider: &str, deployment_id: &str) -> Vec<Observation> {
        let own = self
            .target(provider)
            .map(|t| t.observe(&self.runtime, deployment_id))
            .unwrap_or_default();
        if own.is_empty() && self.shared.run_elsewhere(provider) {
            return self.shared.recorded_observations(deployment_id);
        }
        own
    }

    /// A deployment's state as a whole: healthy when any instance is, else its first's.
    pub fn overall_state(&self, provider: &str, deployment_id: &str) -> Option<InstanceState> {
        if !self.shared.run_elsewhere(provider) {
            return self.runtime.overall_state(deployment_id);
        }
        let all = self.observe(provider, deployment_id);
        if all.iter().any(|o| o.state == InstanceState::Healthy) {
            return Some(InstanceState::Healthy);
        }
        all.into_iter().next().map(|o| o.state)
    }

    /// Does what another replica asked of the holder of a shared target's lease, when this
    /// replica runs the deployment's target; any other replica ignores the ask.
    pub async fn answer_holder_ask(&self, ask: HolderAsk, deployment_id: &str) -> anyhow::Result<()> {
        match ask {
            HolderAsk::Wake => self.wake_for_another_replica(deployment_id).await,
            HolderAsk::Restart => self.restart_for_another_replica(deployment_id).await,
        }
    }

    /// Restarts a deployment's instances so they read their environment's variables again
    /// (a change through another replica), as a restart through this replica would.
    async fn restart_for_another_replica(&self, deployment_id: &str) -> anyhow::Result<()> {
        let desired = self.store.list_desired_environments().await?;
        let Some(env) = desired.into_iter().find(|e| e.deployment_id == deployment_id) else {
            return Ok(());
        };
        if self.shared.run_elsewhere(&env.provider) || !self.targets.shared().contains(&env.provider.as_str()) {
            return Ok(());
        }
        let Some(site) = self.store.get_site_by_id(&env.site_id).await? else {
            return Ok(());
        };
        let Some(row) = self.store.get_environment(&env.site_id, &env.environment_name).await? else {
            return Ok(());
        };
        let Some(spec) = self.serving_spec(&site, &row).await? else {
            return Ok(());
        };
        let restarted = self
            .target(&env.provider)?
            .restart(&self.runtime, spec)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        if restarted {
            tracing::info!(site.name = %env.site_name, environment = %env.environment_name, "restarted for another replica: the environment's variables changed");
        }
        crate::loops::reconciler::reconcile(self).await
    }
}
