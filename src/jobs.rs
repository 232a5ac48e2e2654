//! A durable job queue on the store: claim with a lease, heartbeat while running, retry
//! with exponential backoff, give up after `max_attempts` with the error recorded. Each
//! lease names its owner (the server's data dir id), so several processes can share one
//! database: a job whose worker died (crash, `kill -9`, a lost replica) is claimed again by
//! any of them once its lease runs out (the workers' claims double as that sweep), never
//! while it is live; a restarted server takes back its own jobs at once. The queue knows
//! nothing of deployments: handlers are registered by kind.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::prometheus;
use crate::store::{JobRow, Store};
use crate::util::now_ms;

/// How long a claim lasts without a heartbeat.
const LEASE_MS: i64 = 30_000;

/// The outcome of a failed job run.
#[derive(Debug)]
pub enum JobError {
    /// Worth trying again later (a transient failure).
    Retry(String),
    /// Retrying cannot help; the job is failed for good.
    Permanent(String),
}

/// A boxed job future.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// Runs jobs of one or more kinds.
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one job. Must be idempotent: the same job may run again after a crash.
    fn run(&self, job: JobRow, cancel: CancellationToken) -> JobFuture;
}

/// The queue and its workers.
#[derive(Clone)]
pub struct JobQueue {
    store: Store,
    wake: Arc<Notify>,
    owner: Arc<str>,
}

impl JobQueue {
    /// A queue over the store whose leases are held in the name of `owner`.
    pub fn new(store: Store, owner: &str) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
            owner: owner.into(),
        }
    }

    /// A singleton lease held in this queue's owner's name (see [`Singleton`]).
    pub fn singleton(&self, name: &'static str, lease: Duration) -> Singleton {
        Singleton::new(self.store.clone(), name, &self.owner, lease)
    }

    /// Puts back in the queue the jobs this owner's previous run left running (call once
    /// at start, holding the data-dir lock); returns how many.
    pub async fn requeue_own(&self) -> sqlx::Result<u64> {
        self.store.requeue_own_jobs(&self.owner).await
    }

    /// Tells idle workers that a job was enqueued (call after the enqueuing transaction commits).
    pub fn notify(&self) {
        self.wake.notify_waiters();
    }

    /// Runs workers until `shutdown`: at most `concurrency` jobs at once.
    pub async fn run_workers(
        self,
        handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
        concurrency: usize,
        shutdown: CancellationToken,
    ) {
        let kinds: Vec<&'static str> = handlers.keys().copied().collect();
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.cancelled() => return,
            };
            let notified = self.wake.notified();
            let claimed =
                match prometheus::time_store("claim_job", self.store.claim_job(&kinds, LEASE_MS, &self.owner)).await {
                    Ok(job) => job,
                    Err(err) => {
                        tracing::warn!(error = %err, "claiming a job failed; retrying");
                        None
                    }
                };
            let Some(job) = claimed else {
                drop(permit);
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            };
            let handler = handlers
                .get(job.kind.as_str())
                .cloned()
                .expect("claimed only registered kinds");
            let (store, owner) = (self.store.clone(), self.owner.clone());
            let cancel = shutdown.child_token();
            tokio::spawn(async move {
                run_one(store, owner, handler, job, cancel).await;
                drop(permit);
            });
        }
    }
}

/// A loop that must run in one process at a time across every process on the database
/// (pruning, sweeps): each pass first [`Singleton::hold`]s its lease by name, which takes it
/// when free or expired and renews it when already held; another process takes over once
/// the holder stops renewing (it died) and the lease expires.
#[derive(Clone, Debug)]
pub struct Singleton {
    store: Store,
    name: &'static str,
    owner: Arc<str>,
    lease: Duration,
}

impl Singleton {
    /// The lease `name` held in the name of `owner` for `lease` at a time (longer than the
    /// time between passes, so a live holder keeps it).
    pub fn new(store: Store, name: &'static str, owner: &str, lease: Duration) -> Self {
        Self {
            store,
            name,
            owner: owner.into(),
            lease,
        }
    }

    /// Takes or renews the lease; true when this process may run the pass.
    pub async fn hold(&self) -> bool {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2);
        match self.store.hold_singleton(self.name, &self.owner, lease_ms).await {
            Ok(held) => held,
            Err(err) => {
                tracing::warn!(lease = self.name, error = %err, "taking a singleton lease failed; skipping the pass");
                false
            }
        }
    }

    /// Gives the lease up (at shutdown) so another process need not wait for it to expire.
    pub async fn release(&self) {
        if let Err(err) = self.store.release_singleton(self.name, &self.owner).await {
            tracing::warn!(lease = self.name, error = %err, "releasing a singleton lease failed");
        }
    }
}

async fn run_one(store: Store, owner: Arc<str>, handler: Arc<dyn JobHandler>, job: JobRow, cancel: CancellationToken) {
    let (id, attempts, max_attempts, kind) = (job.id, job.attempts, job.max_attempts, job.kind.clone());
    tracing::info!(job.id = id, job.kind = %kind, attempt = attempts, "job started");
    let (heartbeat_store, heartbeat_owner) = (store.clone(), owner.clone());
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis((LEASE_MS / 3) as u64)).await;
            match heartbeat_store.heartbeat_job(id, LEASE_MS, &heartbeat_owner).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        job.id = id,
                        "job lease lost (expired and taken over); its outcome here is not recorded"
                    );
                    return;
                }
                Err(err) => tracing::warn!(job.id = id, error = %err, "job heartbeat failed"),
            }
        }
    });
    let result = AssertUnwindSafe(handler.run(job, cancel.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(JobError::Retry("the job panicked".into())));
    heartbeat.abort();
    if cancel.is_cancelled() && result.is_err() {
        // Shutting down: leave the lease to expire so the next start picks it up again.
        return;
    }
    let outcome = match result {
        Ok(()) => {
            prometheus::job_finished(&kind, "succeeded");
            prometheus::time_store("finish_job", store.complete_job(id, &owner)).await
        }
        Err(JobError::Retry(msg)) if attempts < max_attempts => {
            prometheus::job_finished(&kind, "retried");
            let backoff_ms = 1000i64 * (1i64 << attempts.clamp(0, 8));
            tracing::warn!(job.id = id, job.kind = %kind, error = %msg, retry_in_ms = backoff_ms, "job failed; will retry");
            prometheus::time_store(
                "finish_job",
                store.fail_job(id, &owner, &msg, Some(now_ms() + backoff_ms)),
            )
            .await
        }
        Err(JobError::Retry(msg) | JobError::Permanent(msg)) => {
            tracing::warn!(job.id = id, job.kind = %kind, error = %msg, "job failed for good");
            prometheus::job_finished(&kind, "failed");
            prometheus::time_store("finish_job", store.fail_job(id, &owner, &msg, None)).await
        }
    };
    if let Err(err) = outcome {
        tracing::error!(job.id = id, error = %err, "recording the job outcome failed");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Singleton;
    use crate::store::{self, Store};

    #[tokio::test]
    async fn a_singleton_lease_has_one_holder_across_processes_and_fails_over_when_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.db");
        // Two processes' pools on one database file.
        let (a_store, b_store) = (
            Store::open_sqlite(&path).await.unwrap(),
            Store::open_sqlite(&path).await.unwrap(),
        );
        let lease = Duration::from_millis(600);
        let a = Singleton::new(a_store, "prune-events", "replica-a", lease);
        let b = Singleton::new(b_store, "prune-events", "replica-b", lease);
        assert!(a.hold().await);
        assert!(!b.hold().await, "a live lease is not taken");
        // A keeps renewing past its first lease's end: B never gets it meanwhile.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert!(a.hold().await, "the holder renews");
            assert!(!b.hold().await, "a renewed lease is not taken");
        }
        // A stops (dies): once its lease expires B takes over, and A is then refused.
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
        assert!(b.hold().await, "an expired lease is taken over");
        assert!(!a.hold().await);
        // A release hands it over at once.
        b.release().await;
        assert!(a.hold().await);
    }

    #[tokio::test]
    async fn claims_prefer_whoever_has_the_fewest_jobs_running() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("jobs.db")).await.unwrap();
        let mut ids = Vec::new();
        for (n, key) in [("a1", "site-a"), ("a2", "site-a"), ("a3", "site-a"), ("b1", "site-b")] {
            let payload = serde_json::json!({ "n": n });
            let job = store::NewJob {
                kind: "deploy",
                payload,
                max_attempts: 3,
                idempotency_key: Some(n.to_string()),
                fair_key: Some(key.to_string()),
            };
            let id = store.enqueue_job("org", &job).await.unwrap();
            ids.push((n, id));
        }
        let mut order = Vec::new();
        for _ in 0..4 {
            let job = store.claim_job(&["deploy"], 30_000, "me").await.unwrap().unwrap();
            order.push(ids.iter().find(|(_, id)| *id == job.id).unwrap().0);
        }
        // First come first served would give a1, a2, a3, b1: b1 would wait behind the burst.
        assert_eq!(order, ["a1", "b1", "a2", "a3"]);
        assert!(store.claim_job(&["deploy"], 30_000, "me").await.unwrap().is_none());
    }
}
