//! The reconciler: reads desired state (which deployment each environment serves) from the
//! store, observes the runtime, starts what should run and is not running (after a
//! restart, a crash of berth, a lost process), stops what nothing wants, and publishes the
//! edge's route table. Level-triggered and idempotent: running it twice changes nothing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_build::detect::{BuildPlan, ServePlan};
use berth_edge::{EdgeRouteTable, RouteLabel, RouteTarget};
use tokio_util::sync::CancellationToken;

use crate::deploy::app_dir;
use crate::loops::autoscaler::ScaleLimits;
use crate::model::drain_period;
use crate::model::{DeploymentStatus, DomainStatus};
use crate::platform::HealthChange;
use crate::platform::Platform;
use crate::runtime::target::{Placement, ScaleToZero, SiteRef, Traffic};
use crate::runtime::{InstanceState, Observation};
use crate::store;
use crate::store::Backend;
use crate::store::shared::{SharedInstance, SharedPlacement, SharedState};

/// One pass: converge the runtime and the routes to the store.
pub async fn reconcile(platform: &Platform) -> anyhow::Result<()> {
    let _pass = platform.reconcile_lock.lock().await;
    reconcile_holding_lock(platform).await
}

/// A pass for a caller that already holds `reconcile_lock` (activation holds it across
/// its commit, so nobody sees a deployment `live` before its route is published).
pub async fn reconcile_holding_lock(platform: &Platform) -> anyhow::Result<()> {
    let desired = platform.store.list_desired_environments().await?;
    // Shared targets' instances as their lease holder recorded them (on Postgres, where
    // several replicas may share them), by deployment.
    let mut recorded: HashMap<String, Vec<SharedInstance>> = HashMap::new();
    let record = platform.store.backend() == Backend::Postgres;
    // Records of deployments no environment serves, which the holder forgets.
    let mut unwanted_records: HashSet<String> = HashSet::new();
    if record {
        let desired_ids: HashSet<&str> = desired.iter().map(|e| e.deployment_id.as_str()).collect();
        for target in platform.targets.shared() {
            let held = !platform.shared.run_elsewhere(target);
            for row in platform.store.shared_instances(target).await? {
                if held && !desired_ids.contains(row.deployment_id.as_str()) {
                    unwanted_records.insert(row.deployment_id.clone());
                }
                recorded
                    .entry(row.deployment_id.clone())
                    .or_default()
                    .push(row.instance());
            }
        }
    }
    if record {
        platform.shared.set_recorded(recorded.clone());
    }
    // Deployments this replica started (a deploy through it) whose instances the holder
    // of their target's lease runs now: supervised here no longer.
    let mut handed_over: Vec<String> = Vec::new();
    let mut table = EdgeRouteTable::new();
    let mut wanted: HashSet<String> = HashSet::new();
    let mut going_to_sleep: Vec<String> = Vec::new();
    let mut awake: HashSet<String> = HashSet::new();
    let mut healthy_crashed: HashSet<String> = HashSet::new();
    // (deployment, instance, the site's drain period)
    let mut scale_in: Vec<(String, u32, Duration)> = Vec::new();
    // Whose traffic each host carries, for the edge's tap.
    let mut labels: Vec<(String, RouteLabel)> = Vec::new();
    // (host, environment) another replica runs: this edge reports their requests to it.
    let mut served_elsewhere: Vec<(String, String)> = Vec::new();
    // The instances of the sites run here, for the usage sampler.
    let mut running = crate::loops::usage::RunningSites::new();
    for env in desired {
        let host = platform.host_for(&env.site_name, &env.environment_name);
        labels.push((
            host.clone(),
            RouteLabel {
                site: env.site_id.as_str().into(),
                environment: env.environment_id.as_str().into(),
                deployment: env.deployment_id.as_str().into(),
            },
        ));
        let Some(plan) = env
            .build_plan
            .as_deref()
            .and_then(|p| serde_json::from_str::<BuildPlan>(p).ok())
        else {
            continue;
        };
        // A target that runs deployments elsewhere says where its traffic goes.
        if matches!(plan.serve, ServePlan::Process { .. })
            && let Some(route) = route_elsewhere(platform, &env, &host, &mut awake, &mut running).await?
        {
            table.insert(&host, route);
            continue;
        }
        let dir = app_dir(platform, &env.deployment_id);
        let target = match &plan.serve {
            ServePlan::Static { dir: out, spa_fallback } => static_target(&env.site_name, &dir, out, *spa_fallback),
            // Another replica runs this target's instances: route to where it recorded them.
            ServePlan::Process { .. } if platform.shared.run_elsewhere(&env.provider) => {
                wanted.insert(env.deployment_id.clone());
                served_elsewhere.push((host.clone(), env.environment_id.clone()));
                let records = recorded.get(&env.deployment_id).map_or(&[][..], Vec::as_slice);
                let local = platform.runtime.observe(&env.deployment_id);
                let holder_runs_it = records.iter().any(|r| r.state == SharedState::Healthy);
                if holder_runs_it && !local.is_empty() && !platform.is_in_progress(&env.deployment_id) {
                    handed_over.push(env.deployment_id.clone());
                }
                run_elsewhere_route(&env, records, &local)
            }
            ServePlan::Process { .. } => {
                // Scale to zero: an environment allowed to sleep whose app had no request
                // for its idle timeout goes to sleep (paused in place where its provider
                // can freeze it, else stopped); the edge wakes it on the next request.
                let may_sleep = env.min_instances == 0 && !platform.is_in_progress(&env.deployment_id);
                let idle_timeout = Duration::from_secs(env.idle_timeout_seconds.max(0) as u64);
                let mut idle_for = platform.edge.idle_for(&host);
                let observed = platform.runtime.observe(&env.deployment_id);
                let any_healthy = observed.iter().any(|o| o.state == InstanceState::Healthy);
                // Other replicas' edges may have served it since (a shared target run here).
                if let Some(at) = platform.shared.last_request_elsewhere(&env.environment_id) {
                    let there = Duration::from_millis(u64::try_from(crate::util::now_ms() - at).unwrap_or(0));
                    idle_for = idle_for.map(|here| here.min(there));
                }
                if may_sleep && any_healthy && idle_for.is_some_and(|idle| idle >= idle_timeout) {
                    tracing::info!(site.name = %env.site_name, deployment.id = %env.deployment_id, "scaling an idle environment to zero");
                    platform.log(
                        &env.deployment_id,
                        "runtime",
                        "system",
                        format!(
                            "no requests for {} s: scaled to zero; the next request wakes it",
                            env.idle_timeout_seconds
                        ),
                    );
                    if record {
                        record_instances(platform, &env, &recorded, asleep(&observed)).await?;
                    }
                    crate::loops::usage::add(&mut running, &env, 0);
                    // Put to sleep only once the table that no longer routes to it is out.
                    going_to_sleep.push(env.deployment_id.clone());
                    wanted.insert(env.deployment_id.clone());
                    table.insert(
                        &host,
                        RouteTarget::Sleeping {
                            site: env.site_name.clone(),
                        },
                    );
                    continue;
                }
                // Asleep: nothing runs, or what runs is paused.
                if may_sleep && observed.iter().all(|o| o.state == InstanceState::Paused) {
                    crate::loops::usage::add(&mut running, &env, 0);
                    if record {
                        record_instances(platform, &env, &recorded, asleep(&observed)).await?;
                    }
                    wanted.insert(env.deployment_id.clone());
                    table.insert(
                        &host,
                        RouteTarget::Sleeping {
                            site: env.site_name.clone(),
                        },
                    );
                    continue;
                }
                wanted.insert(env.deployment_id.clone());
                awake.insert(env.environment_id.clone());
                let up = observed
                    .iter()
                    .filter(|o| {
                        matches!(
                            o.state,
                            InstanceState::Starting | InstanceState::Healthy | InstanceState::Restarting { .. }
                        )
                    })
                    .count();
                crate::loops::usage::add(&mut running, &env, u32::try_from(up).unwrap_or(u32::MAX));
                let count = platform.autoscaler.track(
                    &env.environment_id,
                    &host,
                    ScaleLimits {
                        floor: env.min_instances.clamp(1, 1000) as u32,
                        max: env.max_instances.clamp(1, 1000) as u32,
                        target_concurrency: env.target_concurrency.clamp(1, 1000) as u32,
                    },
                );
                // Instances missing (or draining but wanted again, or paused) are started
                // (a paused one is thawed); those past the count drain once the table
                // without them is out.
                let missing: Vec<u32> = (0..count)
                    .filter(|i| {
                        !observed
                            .iter()
                            .any(|o| o.index == *i && !o.draining && o.state != InstanceState::Paused)
                    })
                    .collect();
                let surplus: Vec<u32> = observed
                    .iter()
                    .filter(|o| o.index >= count && !o.draining)
                    .map(|o| o.index)
                    .collect();
                if !surplus.is_empty() {
                    let grace = drain_period(platform.store.site_drain_seconds(&env.site_id).await?);
                    scale_in.extend(surplus.into_iter().map(|i| (env.deployment_id.clone(), i, grace)));
                }
                if !missing.is_empty() {
                    start_missing(platform, &env, &plan, missing).await?;
                }
                if record {
                    record_instances(platform, &env, &recorded, awake_instances(&observed, count)).await?;
                }
                let healthy: Vec<_> = observed
                    .iter()
                    .filter(|o| o.index < count && !o.draining && o.state == InstanceState::Healthy)
                    .filter_map(|o| o.addr)
                    .collect();
                if !healthy.is_empty() {
                    if env.deployment_status == DeploymentStatus::Crashed.as_str() {
                        healthy_crashed.insert(env.deployment_id.clone());
                    }
                    RouteTarget::Upstream { instances: healthy }
                } else {
                    match observed.iter().find(|o| o.index == 0).map(|o| o.state.clone()) {
                        Some(InstanceState::Crashed { message }) => {
                            if env.deployment_status == DeploymentStatus::Live.as_str() {
                                platform.note_health(HealthChange::CrashLoop {
                                    deployment_id: env.deployment_id.clone(),
                                    message: message.clone(),
                                });
                            }
                            RouteTarget::Unavailable {
                                site: env.site_name.clone(),
                                status: 502,
                                message: format!("The app crashed: {message}."),
                                retry_after_seconds: None,
                            }
                        }
                        _ => starting(&env.site_name),
                    }
                }
            }
        };
        table.insert(&host, target);
    }
    for (host, label) in labels {
        table.label(&host, label);
    }
    route_domains(platform, &mut table).await?;
    platform.edge.replace_routes(table);
    platform.shared.set_served_elsewhere(served_elsewhere);
    *platform.running.lock().expect("running lock") = running;
    platform.autoscaler.retain(&awake);
    platform.note_healthy_while_crashed(healthy_crashed);
    for (deployment_id, index, grace) in scale_in {
        tracing::info!(deployment.id = %deployment_id, instance = index, grace_ms = grace.as_millis() as u64, "scaling in: draining an instance");
        platform
            .runtime
            .drain_instance(&deployment_id, index, grace, &platform.edge);
    }
    for deployment_id in going_to_sleep {
        // Marked asleep now; the pause or stop itself runs in the background, so the pass
        // (and a wake waiting for it) need not wait for it.
        platform.runtime.sleep(&deployment_id);
    }
    for deployment_id in handed_over {
        tracing::info!(deployment.id = %deployment_id, "the holder of its target's lease runs it now: handing its instances over");
        platform.runtime.detach(&deployment_id).await;
    }
    // What a replica that no longer holds a shared target's lease still supervises is left
    // to the holder, never stopped from here.
    let elsewhere: HashSet<String> = platform
        .shared
        .elsewhere()
        .into_iter()
        .flat_map(|t| platform.runtime.deployments_of(t))
        .collect();
    for deployment_id in platform.runtime.deployments() {
        if elsewhere.contains(&deployment_id)
            && !wanted.contains(&deployment_id)
            && !platform.is_in_progress(&deployment_id)
        {
            platform.runtime.detach(&deployment_id).await;
            continue;
        }
        if !wanted.contains(&deployment_id)
            && !platform.is_in_progress(&deployment_id)
            && !platform.runtime.is_draining(&deployment_id)
        {
            // The route already points elsewhere; requests in flight get up to the site's
            // drain period to finish.
            let grace = drain_period(platform.store.deployment_drain_seconds(&deployment_id).await?);
            tracing::info!(deployment.id = %deployment_id, grace_ms = grace.as_millis() as u64, "draining instance nothing wants");
            platform.runtime.drain(&deployment_id, grace, &platform.edge);
        }
    }
    // Records of deployments no environment serves are forgotten by the holder.
    for deployment_id in unwanted_records {
        platform.store.forget_shared_instances(&deployment_id).await?;
    }
    Ok(())
}

/// The instances of an awake environment as the holder records them: those below the
/// count that are not draining.
fn awake_instances(observed: &[Observation], count: u32) -> Vec<SharedInstance> {
    let mut out: Vec<SharedInstance> = observed
        .iter()
        .filter(|o| o.index < count && !o.draining)
        .map(|o| SharedInstance {
            index: o.index,
            addr: o.addr,
            state: match o.state {
                InstanceState::Healthy => SharedState::Healthy,
                InstanceState::Paused => SharedState::Paused,
                InstanceState::Crashed { .. } => SharedState::Crashed,
                _ => SharedState::Starting,
            },
        })
        .collect();
    out.sort_by_key(|i| i.index);
    out
}

/// The instances of a sleeping environment as the holder records them: paused, not routed.
fn asleep(observed: &[Observation]) -> Vec<SharedInstance> {
    let mut out: Vec<SharedInstance> = observed
        .iter()
        .filter(|o| !o.draining)
        .map(|o| SharedInstance {
            index: o.index,
            addr: o.addr,
            state: SharedState::Paused,
        })
        .collect();
    out.sort_by_key(|i| i.index);
    out
}

/// Records an environment's instances on a shared target for the other replicas' edges,
/// when they differ from the record (the holder of the target's lease only).
async fn record_instances(
    platform: &Platform,
    env: &store::DesiredEnvironment,
    recorded: &HashMap<String, Vec<SharedInstance>>,
    instances: Vec<SharedInstance>,
) -> anyhow::Result<()> {
    if !platform.targets.shared().contains(&env.provider.as_str()) {
        return Ok(());
    }
    if recorded.get(&env.deployment_id).map_or(&[][..], Vec::as_slice) == instances.as_slice() {
        return Ok(());
    }
    platform
        .store
        .record_shared_instances(
            SharedPlacement {
                target: &env.provider,
                org_id: &env.org_id,
                environment_id: &env.environment_id,
                deployment_id: &env.deployment_id,
            },
            &instances,
        )
        .await?;
    Ok(())
}

/// The route of an environment whose instances another replica runs: its recorded
/// healthy instances; while none is recorded, those this replica started for a deploy
/// through it (until the holder adopts them); asleep when every recorded one is paused.
fn run_elsewhere_route(
    env: &store::DesiredEnvironment,
    records: &[SharedInstance],
    local: &[Observation],
) -> RouteTarget {
    let healthy: Vec<_> = records
        .iter()
        .filter(|r| r.state == SharedState::Healthy)
        .filter_map(|r| r.addr)
        .collect();
    if !healthy.is_empty() {
        return RouteTarget::Upstream { instances: healthy };
    }
    let local: Vec<_> = local
        .iter()
        .filter(|o| !o.draining && o.state == InstanceState::Healthy)
        .filter_map(|o| o.addr)
        .collect();
    if !local.is_empty() {
        return RouteTarget::Upstream { instances: local };
    }
    if env.min_instances == 0 && !records.is_empty() && records.iter().all(|r| r.state == SharedState::Paused) {
        return RouteTarget::Sleeping {
            site: env.site_name.clone(),
        };
    }
    if records.iter().any(|r| r.index == 0 && r.state == SharedState::Crashed) {
        return RouteTarget::Unavailable {
            site: env.site_name.clone(),
            status: 502,
            message: "The app crashed.".into(),
            retry_after_seconds: None,
        };
    }
    starting(&env.site_name)
}

/// Custom domains into the table: a served one is an alias of its environment's host (so
/// it wakes, scales and drains with it) and its www/apex partner redirects to it; one not
/// verified yet answers a page saying so, never the site.
async fn route_domains(platform: &Platform, table: &mut EdgeRouteTable) -> anyhow::Result<()> {
    for domain in platform.store.list_all_domains().await? {
        let served = DomainStatus::parse(&domain.status).is_some_and(DomainStatus::is_served);
        if served {
            let host = platform.host_for(&domain.site_name, &domain.environment_name);
            table.insert_alias(&domain.name, &host);
            if let Some(partner) = &domain.redirect_name {
                table.insert(
                    partner,
                    RouteTarget::Redirect {
                        to: domain.name.clone(),
                    },
                );
            }
        } else {
            table.insert(&domain.name, RouteTarget::UnverifiedDomain);
            if let Some(partner) = &domain.redirect_name {
                table.insert(partner, RouteTarget::UnverifiedDomain);
            }
        }
    }
    Ok(())
}

/// The route of an environment whose target runs its deployment elsewhere (not on the
/// shared lifecycle); `None` for a target whose instances run here. Its instance count
/// follows the same rules as on the shared lifecycle: the autoscaler's count while awake,
/// zero once idle for its timeout when it may sleep; while a woken one has no ready
/// instance its host answers "starting", which the edge's activator waits through.
async fn route_elsewhere(
    platform: &Platform,
    env: &store::DesiredEnvironment,
    host: &str,
    awake: &mut HashSet<String>,
    running: &mut crate::loops::usage::RunningSites,
) -> anyhow::Result<Option<RouteTarget>> {
    let target = platform.target(&env.provider)?;
    if target.provider().is_some() {
        return Ok(None);
    }
    let settings = platform.provider_config(&env.org_id, &env.provider).await?;
    Ok(Some(match target.serving(&settings) {
        Some(Traffic::Edge(instances)) if !instances.is_empty() => {
            let placement = Placement {
                site: SiteRef {
                    org: &env.org_id,
                    site: &env.site_name,
                    settings: &settings,
                },
                environment: &env.environment_name,
                deployment_id: &env.deployment_id,
            };
            let caps = target.registration().capabilities;
            // A platform that scales the environment itself also wakes it: berth's edge
            // does not hold its requests, so berth never counts it asleep.
            let may_sleep = caps.scale_to_zero != ScaleToZero::Unsupported
                && env.min_instances == 0
                && !target.scales_itself(placement)
                && !platform.is_in_progress(&env.deployment_id);
            let idle = platform
                .edge
                .idle_for(host)
                .is_some_and(|idle| idle.as_secs() >= env.idle_timeout_seconds.max(0) as u64);
            let count = if may_sleep && idle {
                0
            } else {
                awake.insert(env.environment_id.clone());
                let most = target.max_instances(&settings).max(1);
                platform.autoscaler.track(
                    &env.environment_id,
                    host,
                    ScaleLimits {
                        floor: env.min_instances.clamp(1, i64::from(most)) as u32,
                        max: env.max_instances.clamp(1, i64::from(most)) as u32,
                        target_concurrency: env.target_concurrency.clamp(1, 1000) as u32,
                    },
                )
            };
            // The cluster runs what it is told to: every server watching it samples it,
            // and each moment counts once (see loops::usage).
            crate::loops::usage::add(running, env, count);
            match target.scale(&platform.runtime, placement, count).await {
                Ok(_) if count == 0 => RouteTarget::Sleeping {
                    site: env.site_name.clone(),
                },
                Ok(0) => starting(&env.site_name),
                Ok(_) => RouteTarget::Upstream { instances },
                Err(message) => {
                    // The cluster keeps running what it ran; the next pass tries again.
                    tracing::warn!(site.name = %env.site_name, environment = %env.environment_name, error = %message, "scaling an environment on its target failed");
                    RouteTarget::Upstream { instances }
                }
            }
        }
        Some(Traffic::External(url)) => RouteTarget::Unavailable {
            site: env.site_name.clone(),
            status: 502,
            message: format!("This app is served at {url}."),
            retry_after_seconds: None,
        },
        _ => RouteTarget::Unavailable {
            site: env.site_name.clone(),
            status: 502,
            message: format!(
                "The {} target of this site is not configured; check its settings.",
                env.provider
            ),
            retry_after_seconds: None,
        },
    }))
}

/// Starts instances of an environment's deployment in the background; the pass after
/// they turn healthy routes to them.
async fn start_missing(
    platform: &Platform,
    env: &store::DesiredEnvironment,
    plan: &BuildPlan,
    indexes: Vec<u32>,
) -> anyhow::Result<()> {
    let Some(site) = platform.store.get_site_by_id(&env.site_id).await? else {
        return Ok(());
    };
    let Some(d) = platform.store.get_deployment_any_org(&env.deployment_id).await? else {
        return Ok(());
    };
    let Some(spec) = platform.instance_spec(&d, &site, plan).await? else {
        return Ok(());
    };
    for index in indexes {
        tracing::info!(site.name = %env.site_name, deployment.id = %env.deployment_id, instance = index, "starting instance to match desired state");
        let runtime = platform.runtime.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            if let Err(err) = runtime.start(spec, index).await {
                tracing::warn!(error = %err, instance = index, "instance did not become healthy");
            }
        });
    }
    Ok(())
}

/// The route of a static site: its output folder resolved now, and the deployment's own
/// folder as the edge's jail, so files are served only from inside the deployment even if
/// a link in it is changed later. An output folder that leads out of the deployment (a
/// symlink to a host path) is not served at all.
fn static_target(site: &str, app_dir: &Path, out: &str, spa_fallback: bool) -> RouteTarget {
    match (
        berth_build::fs_safe::real_path_in_tree(app_dir, out),
        app_dir.canonicalize(),
    ) {
        (Some(root), Ok(jail)) => RouteTarget::Static {
            root,
            jail,
            spa_fallback,
        },
        _ => RouteTarget::Unavailable {
            site: site.to_string(),
            status: 503,
            message: format!(
                "The static folder '{out}' of this deployment is missing or leads outside the deployment's files; deploy again."
            ),
            retry_after_seconds: None,
        },
    }
}

fn starting(site: &str) -> RouteTarget {
    RouteTarget::Starting { site: site.to_string() }
}

/// Runs reconcile passes when woken (state changed) and every few seconds, until shutdown.
pub async fn run(platform: Arc<Platform>, shutdown: CancellationToken) {
    loop {
        let pass = reconcile(&platform).await;
        crate::prometheus::reconcile_pass(pass.is_ok());
        if let Err(err) = pass {
            tracing::warn!(error = %format!("{err:#}"), "reconcile pass failed");
        }
        // Crash loops and recoveries the pass saw are handled beside it (a rollback starts
        // an instance and runs passes of its own).
        for change in platform.take_health_changes() {
            let platform = platform.clone();
            tokio::spawn(async move { platform.handle_health_change(change).await });
        }
        tokio::select! {
            _ = platform.reconcile_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
