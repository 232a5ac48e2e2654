//! Scale-out on concurrency, as Knative does: the edge counts requests in flight per host;
//! sampled a few times a second, their average over a short window divided by the
//! environment's target concurrency per instance gives how many instances it needs.
//! Scaling out follows the short (panic) window at once; scaling in waits until the whole
//! stable window asks for fewer, so a brief lull does not stop instances that are about to
//! be needed again. The count is observed state, not desired state: after a restart each
//! environment starts again from its minimum.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_edge::Edge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often in-flight counts are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Samples in the stable window (10 s): scaling in waits for all of them.
const STABLE_SAMPLES: usize = 50;
/// Samples in the panic window (2 s): scaling out reacts to these.
const PANIC_SAMPLES: usize = 10;

/// Limits of one environment, as the reconciler last saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleLimits {
    /// Fewest instances while awake (at least 1).
    pub floor: u32,
    /// Most instances.
    pub max: u32,
    /// Requests in flight one instance should carry.
    pub target_concurrency: u32,
}

#[derive(Debug)]
struct Tracked {
    host: String,
    limits: ScaleLimits,
    samples: VecDeque<usize>,
    desired: u32,
}

impl Tracked {
    /// Folds in one sample; returns whether the desired count changed.
    fn observe(&mut self, in_flight: usize) -> bool {
        if self.samples.len() == STABLE_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(in_flight);
        let next = decide(&self.samples, self.limits, self.desired);
        let changed = next != self.desired;
        self.desired = next;
        changed
    }
}

/// The instance count for an environment given its samples (oldest first).
fn decide(samples: &VecDeque<usize>, limits: ScaleLimits, current: u32) -> u32 {
    let need = |window: usize| -> u32 {
        let recent: Vec<usize> = samples.iter().rev().take(window).copied().collect();
        if recent.is_empty() {
            return 0;
        }
        let avg = recent.iter().sum::<usize>() as f64 / recent.len() as f64;
        (avg / f64::from(limits.target_concurrency.max(1))).ceil() as u32
    };
    let floor = limits.floor.clamp(1, limits.max.max(1));
    let clamp = |n: u32| n.clamp(floor, limits.max.max(floor));
    let current = clamp(current);
    let panic = need(PANIC_SAMPLES);
    if panic > current {
        return clamp(panic);
    }
    if samples.len() == STABLE_SAMPLES {
        let stable = need(STABLE_SAMPLES).max(panic);
        if stable < current {
            return clamp(stable);
        }
    }
    current
}

/// Instance counts of the environments that may scale out.
#[derive(Debug, Default)]
pub struct Autoscaler {
    tracked: Mutex<HashMap<String, Tracked>>,
    /// Requests in flight at the other replicas' edges, by environment id (an environment
    /// of a shared target this replica runs; see `loops::shared::share_activity`).
    elsewhere: Mutex<HashMap<String, usize>>,
}

impl Autoscaler {
    /// Records an awake environment's limits (each reconcile pass) and returns how many
    /// instances it should run now.
    pub fn track(&self, environment_id: &str, host: &str, limits: ScaleLimits) -> u32 {
        let mut tracked = self.tracked.lock().expect("autoscaler lock");
        let entry = tracked.entry(environment_id.to_string()).or_insert_with(|| Tracked {
            host: host.to_string(),
            limits,
            samples: VecDeque::new(),
            desired: limits.floor,
        });
        if entry.limits != limits || entry.host != host {
            entry.limits = limits;
            entry.host = host.to_string();
        }
        let floor = limits.floor.clamp(1, limits.max.max(1));
        entry.desired = entry.desired.clamp(floor, limits.max.max(floor));
        entry.desired
    }

    /// Drops environments that are asleep, gone or no longer served by processes.
    pub fn retain(&self, awake: &HashSet<String>) {
        self.tracked
            .lock()
            .expect("autoscaler lock")
            .retain(|id, _| awake.contains(id));
    }

    /// Sets the requests in flight at the other replicas' edges, by environment id.
    pub fn set_elsewhere(&self, in_flight: HashMap<String, usize>) {
        *self.elsewhere.lock().expect("autoscaler lock") = in_flight;
    }

    /// Takes one sample of every tracked environment (its requests in flight at this edge
    /// and, as last reported, at the other replicas'); returns whether any count changed.
    pub fn sample(&self, edge: &Edge) -> bool {
        let mut changed = false;
        let elsewhere = self.elsewhere.lock().expect("autoscaler lock").clone();
        for (environment_id, t) in self.tracked.lock().expect("autoscaler lock").iter_mut() {
            if t.limits.max <= 1 {
                continue;
            }
            let in_flight = edge.in_flight(&t.host).unwrap_or(0) + elsewhere.get(environment_id).copied().unwrap_or(0);
            if t.observe(in_flight) {
                tracing::info!(host = %t.host, instances = t.desired, in_flight, "autoscaler changed an environment's instance count");
                changed = true;
            }
        }
        changed
    }
}

/// Samples `edge` until shutdown, waking the reconciler (`wake`) when a count changes.
pub async fn run(autoscaler: Arc<Autoscaler>, edge: Arc<Edge>, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if autoscaler.sample(&edge) {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ScaleLimits = ScaleLimits {
        floor: 1,
        max: 4,
        target_concurrency: 2,
    };

    fn run(samples: &[usize], start: u32) -> u32 {
        let mut t = Tracked {
            host: "h".into(),
            limits: LIMITS,
            samples: VecDeque::new(),
            desired: start,
        };
        for s in samples {
            t.observe(*s);
        }
        t.desired
    }

    #[test]
    fn scales_out_on_the_panic_window() {
        // 6 in flight at a target of 2 per instance needs 3 instances, within 2 s.
        assert_eq!(run(&[6; PANIC_SAMPLES], 1), 3);
    }

    #[test]
    fn never_above_max_nor_below_floor() {
        assert_eq!(run(&[100; PANIC_SAMPLES], 1), 4);
        assert_eq!(run(&[0; STABLE_SAMPLES], 3), 1);
        let limits = ScaleLimits { floor: 2, ..LIMITS };
        assert_eq!(decide(&VecDeque::from(vec![0; STABLE_SAMPLES]), limits, 4), 2);
    }

    #[test]
    fn scales_in_as_the_stable_window_quiets() {
        // Load stops: the stable average falls sample by sample, and so does the count.
        let mut samples = vec![8; STABLE_SAMPLES];
        samples.extend(vec![0; STABLE_SAMPLES / 2]);
        assert_eq!(run(&samples, 1), 2);
        samples.extend(vec![0; STABLE_SAMPLES / 2]);
        assert_eq!(run(&samples, 1), 1);
    }

    #[test]
    fn a_short_lull_keeps_instances() {
        let mut samples = vec![8; STABLE_SAMPLES];
        samples.extend(vec![0; PANIC_SAMPLES]);
        assert_eq!(run(&samples, 1), 4);
    }
}
