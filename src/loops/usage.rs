//! Instance time for the org's usage: every [`SAMPLE_EVERY`] each server counts the
//! instances of the sites it runs (as its last reconcile pass saw them) over the time since
//! the site's last sample, taken by whichever server on the database took it
//! ([`Store::sample_instances`](crate::store::Store::sample_instances)). A site's
//! instances run on one server (the local target's, or the holder of a shared target's
//! lease), or on a cluster every server watches: either way each moment counts once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::platform::Platform;
use crate::store::usage::UsageSite;

/// How often instances are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The most one sample counts: a gap longer than this (no server sampled the site, as
/// while every server was stopped) counts only this much.
pub const LONGEST_SAMPLE_MS: i64 = 3 * SAMPLE_EVERY.as_millis() as i64;

/// A site's instances as a pass saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Running {
    /// Its org.
    pub org_id: String,
    /// Its name.
    pub site_name: String,
    /// Instances running (starting, healthy or restarting) over all its environments;
    /// 0 while they sleep.
    pub instances: u32,
}

/// The sites this server runs, by id.
pub type RunningSites = HashMap<String, Running>;

/// Adds `instances` of an environment of a site to what a pass saw.
pub fn add(running: &mut RunningSites, env: &crate::store::DesiredEnvironment, instances: u32) {
    let site = running.entry(env.site_id.clone()).or_insert_with(|| Running {
        org_id: env.org_id.clone(),
        site_name: env.site_name.clone(),
        instances: 0,
    });
    site.instances += instances;
}

/// Samples every [`SAMPLE_EVERY`] until `stop`.
pub async fn run(platform: Arc<Platform>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => sample(&platform).await,
        }
    }
}

/// Sites sampled in one transaction.
const SAMPLE_BATCH: usize = 200;

/// One sample of every site the last pass saw running here.
pub async fn sample(platform: &Platform) {
    let running = platform.running.lock().expect("running lock").clone();
    let now = crate::util::now_ms();
    let sites: Vec<(UsageSite<'_>, u32)> = running
        .iter()
        .map(|(site_id, site)| {
            (
                UsageSite {
                    org_id: &site.org_id,
                    site_id,
                    site_name: &site.site_name,
                },
                site.instances,
            )
        })
        .collect();
    for batch in sites.chunks(SAMPLE_BATCH) {
        if let Err(e) = platform.store.sample_instances(batch, now, LONGEST_SAMPLE_MS).await {
            tracing::warn!(error = %e, "sampling instances for usage failed");
        }
    }
}
