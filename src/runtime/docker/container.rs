//! Containers: one per instance of a deployment, created locked down (no capabilities,
//! no-new-privileges, memory/CPU/pids limits, the image's or an unprivileged user) on its
//! org's bridge network. A local engine's containers are reached at their address on that
//! network and publish no port at all (no proxy process per container, nothing bound on
//! the host); a remote engine's publish their port on its loopback. Also adoption of a
//! container that survived a berth restart, its output as lines, its exit, its stats,
//! and removal of containers nothing wants.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding, RestartPolicy};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::stream::{BoxStream, StreamExt};

use super::engine::{Engine, EngineError};
use super::{LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_INSTANCE, LABEL_ORG, LABEL_OWNER, LABEL_SITE};
use berth_build::dockerfile::DEFAULT_CONTAINER_PORT;

/// One line of a container's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLine {
    /// "stdout" or "stderr".
    pub stream: &'static str,
    /// The line, without its newline.
    pub line: String,
}

/// What to run for one instance.
#[derive(Clone)]
pub struct ContainerSpec {
    /// Org name: picks the network and is recorded as a label.
    pub org: String,
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// Deployment id.
    pub deployment_id: String,
    /// Instance index within the deployment.
    pub index: u32,
    /// Image to run (usually [`super::image::image_tag`]).
    pub image: String,
    /// Port the app listens on inside the container; `None`: the image's single exposed
    /// port, else 8080. Passed to the app as `PORT`.
    pub port: Option<u16>,
    /// Environment variables (PORT is added).
    pub env: Vec<(String, String)>,
    /// Replaces the image's command (run with `/bin/sh -c`), when set.
    pub command: Option<String>,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// CPU limit in cores.
    pub cpus: f64,
    /// Most processes the container may have.
    pub pids_limit: i64,
    /// Its writable layer's size in MiB.
    pub disk_mb: u64,
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("org", &self.org)
            .field("site", &self.site)
            .field("environment", &self.environment)
            .field("deployment_id", &self.deployment_id)
            .field("index", &self.index)
            .field("image", &self.image)
            .field("port", &self.port)
            .field("env", &crate::runtime::SealedVariables(&self.env))
            .field("command", &self.command)
            .field("memory_mb", &self.memory_mb)
            .field("cpus", &self.cpus)
            .field("pids_limit", &self.pids_limit)
            .field("disk_mb", &self.disk_mb)
            .finish()
    }
}

/// How often a container's writable layer is measured where the engine cannot bound it.
const DISK_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// CPU and memory of one container, from the engine's stats.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ContainerUsage {
    /// CPU use over the last sample, in percent of one core.
    pub cpu_percent: f64,
    /// Memory in use (without the page cache).
    pub memory_bytes: u64,
    /// The container's memory limit.
    pub memory_limit_bytes: u64,
}

/// A started (or adopted) container.
pub struct Container {
    engine: Engine,
    /// Engine id.
    pub id: String,
    /// Where the app answers: its address on the org network (local engine), or its port
    /// published on 127.0.0.1.
    pub addr: SocketAddr,
    /// Whether it was running before this berth process started.
    pub adopted: bool,
    /// The bound (bytes) a watchdog holds its writable layer to, when the engine does not.
    disk_watch: Option<u64>,
}

/// The network of an org: `berth-<org>` (lowercased, unsafe characters replaced).
pub fn network_name(org: &str) -> String {
    let clean: String = org
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("berth-{clean}")
}

/// The host interface of an org's bridge: `bthd` and a digest of the org id (interface
/// names have at most 15 characters).
pub fn bridge_name(org: &str) -> String {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(org.as_bytes()));
    format!("bthd{}", &digest[..10])
}

/// The container name of an instance. A random suffix: a replacement must not wait
/// for its predecessor's removal to free the name.
pub fn container_name(deployment_id: &str, index: u32) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("berth-{}-{index}-{}", deployment_id.to_ascii_lowercase(), &suffix[..8])
}

/// Makes sure the org's bridge network exists and returns its id. Older engines allow
/// two networks of one name when two creators race; the oldest one is then used by all.
pub async fn ensure_network(engine: &Engine, owner: &str, org: &str) -> Result<String, EngineError> {
    let name = network_name(org);
    if let Some(id) = find_network(engine, &name).await? {
        return Ok(id);
    }
    let request = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (LABEL_OWNER.to_string(), owner.to_string()),
            (LABEL_ORG.to_string(), org.to_string()),
        ])),
        // A `bth` host interface falls under the app firewall that local instances have
        // (src/runtime/isolation/network.rs): public internet and DNS only.
        options: Some(HashMap::from([(
            "com.docker.network.bridge.name".to_string(),
            bridge_name(org),
        )])),
        ..Default::default()
    };
    if let Err(err) = engine.docker().create_network(request).await {
        let err = engine.error(err);
        if !err.is_conflict() {
            return Err(explain_network_refusal(err));
        }
    }
    find_network(engine, &name).await?.ok_or_else(|| EngineError::Refused {
        host: engine.host().to_string(),
        message: format!("network {name} vanished right after it was created"),
        status: 404,
    })
}

/// An engine out of address ranges says so in its own words; the message then says why
/// berth needed one and what frees or adds them.
fn explain_network_refusal(err: EngineError) -> EngineError {
    match err {
        EngineError::Refused { host, message, status } if message.contains("address pool") => EngineError::Refused {
            host,
            message: format!(
                "{message}; every org has its own network and the engine has no address range left for another: \
                 remove unused networks (`docker network prune`) or give the engine more ranges \
                 (`default-address-pools` in its daemon.json)"
            ),
            status,
        },
        other => other,
    }
}

async fn find_network(engine: &Engine, name: &str) -> Result<Option<String>, EngineError> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("name", vec![name])]);
    let mut networks = engine
        .docker()
        .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build()))
        .await
        .map_err(|e| engine.error(e))?;
    // The name filter matches substrings.
    networks.retain(|n| n.name.as_deref() == Some(name));
    networks.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(networks.into_iter().next().and_then(|n| n.id))
}

fn label_filters(pairs: &[(&str, &str)]) -> HashMap<&'static str, Vec<String>> {
    HashMap::from([("label", pairs.iter().map(|(k, v)| format!("{k}={v}")).collect())])
}

/// Containers carrying all of `labels`; with `all`, stopped ones too.
async fn containers_labelled(
    engine: &Engine,
    labels: &[(&str, &str)],
    all: bool,
) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
    let filters = label_filters(labels);
    engine
        .docker()
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(all)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| engine.error(e))
}

/// Starts the instance, or adopts a running container of the same deployment and index
/// made by this installation (`owner`) in an earlier run. A stopped leftover, or one this
/// run made itself (it is being stopped: scale to zero, a crash), is removed instead.
pub async fn launch(
    engine: &Engine,
    owner: &str,
    spec: &ContainerSpec,
    made_by_this_run: &HashSet<String>,
) -> Result<Container, EngineError> {
    let index = spec.index.to_string();
    let existing = containers_labelled(
        engine,
        &[
            (LABEL_OWNER, owner),
            (LABEL_DEPLOYMENT, &spec.deployment_id),
            (LABEL_INSTANCE, &index),
        ],
        true,
    )
    .await?;
    for found in existing {
        let Some(id) = found.id else { continue };
        let state = found.state.map(|s| s.to_string()).unwrap_or_default();
        // A survivor that was asleep (paused) when berth stopped is thawed and adopted.
        let adoptable = !made_by_this_run.contains(&id) && (state == "running" || state == "paused");
        if adoptable && state == "paused" {
            pause(engine, &id, false).await?;
        }
        if adoptable && let Some(addr) = container_addr(engine, &id).await? {
            return Ok(Container {
                engine: engine.clone(),
                id,
                addr,
                adopted: true,
                disk_watch: (engine.disk_quota() != Some(true)).then_some(spec.disk_mb << 20),
            });
        }
        remove(engine, &id).await?;
    }

    let network = ensure_network(engine, owner, &spec.org).await?;
    let image = engine
        .docker()
        .inspect_image(&spec.image)
        .await
        .map_err(|e| match engine.error(e) {
            err if err.is_not_found() => EngineError::Refused {
                host: engine.host().to_string(),
                message: format!("image {} is not on the engine; deploy again to rebuild it", spec.image),
                status: 404,
            },
            err => err,
        })?;
    let port = spec.port.unwrap_or_else(|| {
        let exposed: Vec<u16> = image
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.strip_suffix("/tcp").and_then(|n| n.parse().ok()))
            .collect();
        match exposed.as_slice() {
            [only] => *only,
            _ => DEFAULT_CONTAINER_PORT,
        }
    });
    let port_key = format!("{port}/tcp");
    let mut env: Vec<String> = spec
        .env
        .iter()
        .filter(|(k, _)| k != "PORT")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("PORT={port}"));
    let labels = HashMap::from([
        (LABEL_OWNER.to_string(), owner.to_string()),
        (LABEL_ORG.to_string(), spec.org.clone()),
        (LABEL_SITE.to_string(), spec.site.clone()),
        (LABEL_ENVIRONMENT.to_string(), spec.environment.clone()),
        (LABEL_DEPLOYMENT.to_string(), spec.deployment_id.clone()),
        (LABEL_INSTANCE.to_string(), index.clone()),
    ]);
    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        memory: Some((spec.memory_mb * 1024 * 1024) as i64),
        // No swap beyond the memory limit: the limit means what it says.
        memory_swap: Some((spec.memory_mb * 1024 * 1024) as i64),
        nano_cpus: Some((spec.cpus * 1e9) as i64),
        pids_limit: Some(spec.pids_limit),
        network_mode: Some(network),
        // A local engine's containers are reached on the org network; a remote one's on
        // its loopback only. Nothing outside the machine reaches the app but through the
        // edge.
        port_bindings: (!engine.is_local()).then(|| {
            HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
                    host_port: Some(String::new()),
                }]),
            )])
        }),
        // A tiny init as PID 1: the app then gets default signal handling (PID 1 ignores
        // an unhandled SIGTERM, which would turn every stop into a kill after the grace
        // period) and its zombies are reaped.
        init: Some(true),
        // Restarts are the shared lifecycle's job, with its backoff and crash limit.
        restart_policy: Some(RestartPolicy {
            name: Some(bollard::models::RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        // A private /tmp in memory, counted against the memory limit (as on the local
        // provider), so what the app puts there is bounded too.
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,exec,size={}m,mode=1777", spec.memory_mb),
        )])),
        // The engine bounds the writable layer where its storage driver can (overlay2
        // on xfs with project quotas, btrfs, zfs); elsewhere a watchdog does.
        storage_opt: (engine.disk_quota() != Some(false))
            .then(|| HashMap::from([("size".to_string(), format!("{}M", spec.disk_mb))])),
        ..Default::default()
    };
    let mut body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        labels: Some(labels),
        exposed_ports: Some(vec![port_key]),
        cmd: spec
            .command
            .as_ref()
            .map(|c| vec!["/bin/sh".to_string(), "-c".to_string(), c.clone()]),
        host_config: Some(host_config),
        ..Default::default()
    };
    let name = container_name(&spec.deployment_id, spec.index);
    let create = |body: ContainerCreateBody| {
        engine
            .docker()
            .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
    };
    let created = match create(body.clone()).await.map_err(|e| engine.error(e)) {
        Err(err) if engine.disk_quota().is_none() && err.to_string().contains("storage-opt") => {
            // "--storage-opt is supported only for overlay over xfs with 'pquota'": this
            // engine cannot bound the layer; the watchdog will.
            tracing::info!(host = %engine.host(), "the engine cannot bound containers' writable layers ({err}); a watchdog measures them every {} s", DISK_WATCH_INTERVAL.as_secs());
            engine.set_disk_quota(false);
            if let Some(host) = body.host_config.as_mut() {
                host.storage_opt = None;
            }
            create(body).await.map_err(|e| engine.error(e))?
        }
        other => {
            let created = other?;
            if body.host_config.as_ref().is_some_and(|h| h.storage_opt.is_some()) {
                engine.set_disk_quota(true);
            }
            created
        }
    };
    if let Err(err) = engine.docker().start_container(&created.id, None).await {
        let err = engine.error(err);
        let _ = remove(engine, &created.id).await;
        return Err(err);
    }
    let addr = match container_addr(engine, &created.id).await? {
        Some(addr) => addr,
        None => {
            // Exited before the engine gave it an address: the caller's wait reports why.
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
        }
    };
    Ok(Container {
        engine: engine.clone(),
        id: created.id,
        addr,
        adopted: false,
        disk_watch: (engine.disk_quota() != Some(true)).then_some(spec.disk_mb << 20),
    })
}

/// Where a running container's app answers: on a local engine its address on its
/// network and its (single) exposed port, else its port published on 127.0.0.1.
async fn container_addr(engine: &Engine, id: &str) -> Result<Option<SocketAddr>, EngineError> {
    let info = engine
        .docker()
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| engine.error(e))?;
    let settings = info.network_settings.unwrap_or_default();
    if engine.is_local() {
        let port = info
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default()
            .iter()
            .find_map(|p| p.strip_suffix("/tcp")?.parse::<u16>().ok());
        let ip = settings
            .networks
            .unwrap_or_default()
            .values()
            .find_map(|n| n.ip_address.as_deref()?.parse::<std::net::IpAddr>().ok());
        return Ok(ip.zip(port).map(|(ip, port)| SocketAddr::new(ip, port)));
    }
    Ok(settings
        .ports
        .unwrap_or_default()
        .values()
        .flatten()
        .flatten()
        .filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
        .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
        .next())
}

/// The host pid of a running container's first process (meaningful for a local engine,
/// whose containers' processes are this machine's).
pub async fn main_pid(engine: &Engine, id: &str) -> Option<u32> {
    let info = engine
        .docker()
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .ok()?;
    let pid = info.state?.pid?;
    u32::try_from(pid).ok().filter(|p| *p > 0)
}

/// Pauses (`true`) or unpauses a container. Pausing one that is already paused, or
/// thawing one that is not, is fine.
pub async fn pause(engine: &Engine, id: &str, paused: bool) -> Result<(), EngineError> {
    let result = if paused {
        engine.docker().pause_container(id).await
    } else {
        engine.docker().unpause_container(id).await
    };
    match result.map_err(|e| engine.error(e)) {
        Err(err) if err.is_conflict() && already(&err, paused) => Ok(()),
        other => other,
    }
}

/// Whether a refused pause or unpause says the container already is as asked.
fn already(err: &EngineError, paused: bool) -> bool {
    let text = err.to_string();
    if paused {
        text.contains("already paused")
    } else {
        text.contains("is not paused")
    }
}

/// Stops and removes a container by id or name; one that is already gone is fine.
pub async fn remove(engine: &Engine, id: &str) -> Result<(), EngineError> {
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    match engine.docker().remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let err = engine.error(err);
            // Gone already, or its removal is under way.
            if err.is_not_found() || err.is_conflict() {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

impl Container {
    /// The container's output from its start (or, when adopted, from now on), as lines.
    pub fn output(&self) -> BoxStream<'static, ContainerLine> {
        let mut options = LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true);
        if self.adopted {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i32)
                .unwrap_or(0);
            options = options.since(now);
        }
        let raw = self.engine.docker().logs(&self.id, Some(options.build()));
        let mut pending: HashMap<&'static str, String> = HashMap::new();
        raw.take_while(|item| futures::future::ready(item.is_ok()))
            .filter_map(|item| futures::future::ready(item.ok()))
            .map(move |chunk| {
                let (stream, bytes) = match chunk {
                    LogOutput::StdErr { message } => ("stderr", message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => ("stdout", message),
                    LogOutput::StdIn { .. } => return Vec::new(),
                };
                let buf = pending.entry(stream).or_default();
                buf.push_str(&String::from_utf8_lossy(&bytes));
                let mut lines = Vec::new();
                while let Some(pos) = buf.find('\n') {
                    let line: String = buf.drain(..=pos).collect();
                    lines.push(ContainerLine {
                        stream,
                        line: line.trim_end_matches(['\n', '\r']).to_string(),
                    });
                }
                lines
            })
            .flat_map(futures::stream::iter)
            .boxed()
    }

    /// Waits until the container exits and says how: "code 3", "a signal (9)", or
    /// "out of memory" when the kernel killed it at its limit. Where the engine does not
    /// bound its writable layer, a container whose layer grows past the bound is killed
    /// meanwhile, and the answer says "disk full".
    pub async fn wait(&self) -> String {
        let Some(limit) = self.disk_watch else {
            return self.wait_exit().await;
        };
        let exited = self.wait_exit();
        tokio::pin!(exited);
        let mut tick = tokio::time::interval(DISK_WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                how = &mut exited => return how,
                _ = tick.tick() => {}
            }
            let options = bollard::query_parameters::InspectContainerOptionsBuilder::default()
                .size(true)
                .build();
            let used = match self.engine.docker().inspect_container(&self.id, Some(options)).await {
                Ok(info) => info.size_rw.unwrap_or(0).max(0) as u64,
                Err(_) => continue,
            };
            if used > limit {
                tracing::warn!(container = %self.id, used_bytes = used, limit_bytes = limit, "a container passed its writable space; stopping it");
                let kill = StopContainerOptionsBuilder::default().t(0).build();
                let _ = self.engine.docker().stop_container(&self.id, Some(kill)).await;
                let how = exited.await;
                return format!(
                    "{how}: disk full: its writable layer passed {} MiB (the docker setting disk_mb)",
                    limit >> 20
                );
            }
        }
    }

    async fn wait_exit(&self) -> String {
        let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let code = match self
            .engine
            .docker()
            .wait_container(&self.id, Some(options))
            .next()
            .await
        {
            Some(Ok(resp)) => Some(resp.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            Some(Err(err)) => {
                let err = self.engine.error(err);
                if !err.is_not_found() {
                    return format!("lost track of the container: {err}");
                }
                None
            }
            None => None,
        };
        let inspect = self
            .engine
            .docker()
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.state);
        if inspect.as_ref().and_then(|s| s.oom_killed) == Some(true) {
            return "out of memory (killed at its memory limit)".into();
        }
        match code {
            Some(code) if code > 128 && code < 160 => format!("a signal ({})", code - 128),
            Some(code) => format!("code {code}"),
            None => "removed".into(),
        }
    }

    /// Asks the app to stop (SIGTERM, or the image's stop signal), kills it after
    /// `grace`, and removes the container.
    pub async fn terminate(&self, grace: Duration) {
        let t = grace.as_secs().max(1) as i32;
        let options = StopContainerOptionsBuilder::default().t(t).build();
        if let Err(err) = self.engine.docker().stop_container(&self.id, Some(options)).await {
            let err = self.engine.error(err);
            if !err.is_not_found() {
                tracing::warn!(container = %self.id, error = %err, "stopping a container failed; removing it by force");
            }
        }
        if let Err(err) = remove(&self.engine, &self.id).await {
            tracing::warn!(container = %self.id, error = %err, "removing a container failed");
        }
    }
}

/// CPU and memory of one instance, from one stats sample of the engine.
pub async fn usage(engine: &Engine, owner: &str, deployment_id: &str, index: u32) -> Option<ContainerUsage> {
    let index = index.to_string();
    let found = containers_labelled(
        engine,
        &[
            (LABEL_OWNER, owner),
            (LABEL_DEPLOYMENT, deployment_id),
            (LABEL_INSTANCE, &index),
        ],
        false,
    )
    .await
    .ok()?;
    let id = found.into_iter().find_map(|c| c.id)?;
    let options = StatsOptionsBuilder::default().stream(false).build();
    let stats = engine.docker().stats(&id, Some(options)).next().await?.ok()?;
    let cpu = stats.cpu_stats.unwrap_or_default();
    let pre = stats.precpu_stats.unwrap_or_default();
    let total = |c: &bollard::models::ContainerCpuStats| c.cpu_usage.as_ref().and_then(|u| u.total_usage).unwrap_or(0);
    let cpu_delta = total(&cpu).saturating_sub(total(&pre)) as f64;
    let system_delta = cpu
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(pre.system_cpu_usage.unwrap_or(0)) as f64;
    let cores = cpu.online_cpus.unwrap_or(1).max(1) as f64;
    let cpu_percent = if system_delta > 0.0 {
        cpu_delta / system_delta * cores * 100.0
    } else {
        0.0
    };
    let memory = stats.memory_stats.unwrap_or_default();
    // The page cache is reclaimable; `docker stats` leaves it out too.
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| s.get("total_inactive_file").or_else(|| s.get("inactive_file")).copied())
        .unwrap_or(0);
    Some(ContainerUsage {
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
        memory_bytes: memory.usage.unwrap_or(0).saturating_sub(cache),
        memory_limit_bytes: memory.limit.unwrap_or(0),
    })
}

/// Removes this installation's containers whose (deployment, instance) is not in `keep`.
/// Returns how many went.
pub async fn sweep(engine: &Engine, owner: &str, keep: &HashSet<(String, u32)>) -> Result<usize, EngineError> {
    let all = containers_labelled(engine, &[(LABEL_OWNER, owner)], true).await?;
    let mut removed = 0;
    for c in all {
        let labels = c.labels.unwrap_or_default();
        let key = (
            labels.get(LABEL_DEPLOYMENT).cloned().unwrap_or_default(),
            labels
                .get(LABEL_INSTANCE)
                .and_then(|i| i.parse().ok())
                .unwrap_or(u32::MAX),
        );
        if keep.contains(&key) {
            continue;
        }
        if let Some(id) = c.id {
            remove(engine, &id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_container_spec_prints_variable_names_and_no_value() {
        let container = ContainerSpec {
            org: "o".into(),
            site: "s".into(),
            environment: "e".into(),
            deployment_id: "d".into(),
            index: 0,
            image: "i".into(),
            port: None,
            env: vec![("API_KEY".into(), "s3cr3t-value-5b2e".into())],
            command: None,
            memory_mb: 1,
            cpus: 1.0,
            pids_limit: 1,
            disk_mb: 1,
        };
        let printed = format!("{container:?}");
        assert!(
            printed.contains("API_KEY") && !printed.contains("s3cr3t-value-5b2e"),
            "{printed}"
        );
    }

    #[test]
    fn names_are_engine_safe() {
        assert_eq!(network_name("Acme Corp"), "berth-acme-corp");
        let name = container_name("01ABC", 2);
        assert!(
            name.starts_with("berth-01abc-2-") && name.len() == "berth-01abc-2-".len() + 8,
            "{name}"
        );
        assert_ne!(container_name("01ABC", 2), name);
    }

    #[test]
    fn an_engine_out_of_address_ranges_is_told_what_frees_them() {
        let refused = |message: &str| EngineError::Refused {
            host: "unix:///var/run/docker.sock".into(),
            message: message.into(),
            status: 400,
        };
        // The engine's own words (dockerd 20.10 to 27).
        let out = explain_network_refusal(refused(
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network",
        ))
        .to_string();
        assert!(
            out.contains("docker network prune") && out.contains("default-address-pools"),
            "{out}"
        );
        // Any other refusal is passed on as it was.
        assert_eq!(
            explain_network_refusal(refused("invalid name")),
            refused("invalid name")
        );
    }
}
