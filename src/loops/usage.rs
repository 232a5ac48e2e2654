//! Instance time for the org's usage: every [`SAMPLE_EVERY`] each server counts the
//! instances of the sites it runs (as its last reconcile pass saw them) over the time since
//! the site's last sample, taken by whichever server on the database took it
//! ([`Store::sample_instances`](crate::store::Store::sample_instances)). A site's
//! instances run on one server (the local target's, or the holder of a shared target's
//! lease), or on a cluster every server watches: either way each moment counts once.

use std::collections::{HashMap, HashSet};
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
    let mut idle = HashSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => sample(&platform, &mut idle).await,
        }
    }
}

/// Sites sampled in one transaction.
const SAMPLE_BATCH: usize = 200;

/// One sample of every site the last pass saw here, less those that were idle (no instance)
/// at the sample before too: `idle` holds them. A site that goes idle is sampled once, which
/// counts its time up to then and moves its clock; while it stays idle nothing is written
/// for it (on a server of many sleeping sites, most are). A site that woke since the sample
/// before counts at most one period ([`SAMPLE_EVERY`]): it ran no longer than that.
async fn sample(platform: &Platform, idle: &mut HashSet<String>) {
    let running = platform.running.lock().expect("running lock").clone();
    let now = crate::util::now_ms();
    let (woke, others): (Vec<_>, Vec<_>) = running
        .iter()
        .filter(|(site_id, site)| site.instances > 0 || !idle.contains(*site_id))
        .partition(|(site_id, site)| site.instances > 0 && idle.contains(*site_id));
    let mut failed = false;
    for (sites, longest_ms) in [(woke, SAMPLE_EVERY.as_millis() as i64), (others, LONGEST_SAMPLE_MS)] {
        failed |= !sample_sites(platform, &sites, now, longest_ms).await;
    }
    // After a failed write, every idle site is sampled again next time.
    *idle = if failed {
        HashSet::new()
    } else {
        running
            .iter()
            .filter(|(_, site)| site.instances == 0)
            .map(|(site_id, _)| site_id.clone())
            .collect()
    };
}

/// Samples `sites` in batches; false when a batch could not be written.
async fn sample_sites(platform: &Platform, sites: &[(&String, &Running)], now: i64, longest_ms: i64) -> bool {
    let sites: Vec<(UsageSite<'_>, u32)> = sites
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
    let mut written = true;
    for batch in sites.chunks(SAMPLE_BATCH) {
        if let Err(e) = platform.store.sample_instances(batch, now, longest_ms).await {
            tracing::warn!(error = %e, "sampling instances for usage failed");
            written = false;
        }
    }
    written
}
