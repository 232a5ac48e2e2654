//! Build slots, handed out fairly.
//!
//! A deploy job holds a slot only while it builds (fetch, plan, build steps); starting the
//! app and waiting for its health check happen outside it, so apps that hang at start
//! never block other deploys. When a slot frees, it goes to the waiting build whose site
//! (then org) has the fewest builds running, then whose site got a slot longest ago
//! (round robin), then the oldest: one site's burst of deploys cannot starve another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Who a build is for, for fairness.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BuildOwner {
    /// Site id.
    pub site: String,
    /// Org id.
    pub org: String,
}

struct Waiter {
    owner: BuildOwner,
    seq: u64,
    wake: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    free: usize,
    seq: u64,
    waiting: Vec<Waiter>,
    running_by_site: HashMap<String, usize>,
    running_by_org: HashMap<String, usize>,
    /// When each site last got a slot (grant count), for round-robin among equals.
    grants: u64,
    last_grant: HashMap<String, u64>,
}

/// Sites whose last grant is remembered; past it the memory starts over (fairness
/// degrades to oldest-first for a moment, nothing else).
const REMEMBERED_SITES: usize = 10_000;

impl State {
    fn take(&mut self, owner: &BuildOwner) {
        self.grants += 1;
        if self.last_grant.len() >= REMEMBERED_SITES {
            self.last_grant.clear();
        }
        self.last_grant.insert(owner.site.clone(), self.grants);
        *self.running_by_site.entry(owner.site.clone()).or_default() += 1;
        *self.running_by_org.entry(owner.org.clone()).or_default() += 1;
    }

    fn give_back(&mut self, owner: &BuildOwner) {
        for (map, key) in [
            (&mut self.running_by_site, &owner.site),
            (&mut self.running_by_org, &owner.org),
        ] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// Hands free slots to the fairest waiters.
    fn dispatch(&mut self) {
        while self.free > 0 && !self.waiting.is_empty() {
            let best = (0..self.waiting.len())
                .min_by_key(|&i| {
                    let w = &self.waiting[i];
                    (
                        self.running_by_site.get(&w.owner.site).copied().unwrap_or(0),
                        self.running_by_org.get(&w.owner.org).copied().unwrap_or(0),
                        self.last_grant.get(&w.owner.site).copied().unwrap_or(0),
                        w.seq,
                    )
                })
                .expect("not empty");
            let waiter = self.waiting.swap_remove(best);
            // Granted even if its receiver is gone: the waiter's `BuildSlot` gives it back.
            let _ = waiter.wake.send(());
            self.free -= 1;
            self.take(&waiter.owner);
        }
    }
}

/// The build slots of a server.
#[derive(Clone)]
pub struct BuildGate {
    state: Arc<Mutex<State>>,
}

/// A held build slot; dropping it frees the slot for the next waiter.
pub struct BuildSlot {
    state: Arc<Mutex<State>>,
    owner: BuildOwner,
    seq: u64,
}

impl BuildGate {
    /// A gate with `slots` builds at once (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            })),
        }
    }

    /// Waits for a slot (see the module docs for the order).
    pub async fn acquire(&self, owner: BuildOwner) -> BuildSlot {
        let (slot, rx) = {
            let mut state = self.state.lock().expect("build gate lock");
            let (tx, rx) = oneshot::channel();
            state.seq += 1;
            let seq = state.seq;
            state.waiting.push(Waiter {
                owner: owner.clone(),
                seq,
                wake: tx,
            });
            state.dispatch();
            let slot = BuildSlot {
                state: self.state.clone(),
                owner,
                seq,
            };
            (slot, rx)
        };
        // Dropped while waiting (a cancelled deploy), `slot` leaves the queue or, when the
        // slot was just granted, frees it.
        let _ = rx.await;
        slot
    }
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("build gate lock");
        if let Some(i) = state.waiting.iter().position(|w| w.seq == self.seq) {
            // Never granted: just leave the queue.
            state.waiting.swap_remove(i);
            return;
        }
        state.free += 1;
        state.give_back(&self.owner);
        state.dispatch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn owner(site: &str, org: &str) -> BuildOwner {
        BuildOwner {
            site: site.into(),
            org: org.into(),
        }
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_site_with_the_fewest_builds() {
        let gate = BuildGate::new(1);
        let first = gate.acquire(owner("a", "o1")).await;
        // Site a queues three more, then site b one.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, site) in ["a", "a", "a", "b"].into_iter().enumerate() {
            let (gate, tx) = (gate.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = gate.acquire(owner(site, "o1")).await;
                tx.send(format!("{site}{i}")).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(slot);
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(rx.recv().await.unwrap());
        }
        // Site a just had the slot: b goes first, then a's in order.
        assert_eq!(order, ["b3", "a0", "a1", "a2"]);
        // The last one frees its slot after 20 ms.
        let _ = tokio::time::timeout(Duration::from_secs(5), gate.acquire(owner("c", "o2")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_waiter_takes_no_slot() {
        let gate = BuildGate::new(1);
        let first = gate.acquire(owner("a", "o")).await;
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(owner("b", "o")).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(first);
        let again = tokio::time::timeout(Duration::from_secs(5), gate.acquire(owner("c", "o"))).await;
        assert!(again.is_ok(), "the slot was not lost to the cancelled waiter");
    }
}
