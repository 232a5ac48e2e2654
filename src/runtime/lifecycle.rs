//! One lifecycle for every provider: start instances and wait for their health check,
//! restart them with backoff when they crash (crashed after repeated failures), drain
//! them before a stop, run several instances of one deployment (scale-out), put them to
//! sleep (scale to zero: paused in place where the provider can freeze them, else stopped)
//! and wake them. Providers only launch, wait for, terminate and (optionally) pause
//! instances.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_edge::Edge;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::health::{self, Probe, Seen};
use super::listeners::Listeners;
use super::{InstanceSpec, InstanceState, LogSink, Observation, OutputStream, Pause, Provider, StartError, Usage};

/// Crashes within this window count towards giving up.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Crashes in the window after which an instance is marked crashed and restarted only
/// slowly (every [`SLOW_RETRY`], doubling up to [`MAX_SLOW_RETRY`]).
const MAX_CRASHES: usize = 5;
/// First wait before restarting a crash-looping instance.
const SLOW_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between restarts of a crash-looping instance.
const MAX_SLOW_RETRY: Duration = Duration::from_secs(300);
/// A draining instance is stopped early only once nothing was in flight to it this long
/// after the drain began (a request may have picked it just before the route changed).
const DRAIN_SETTLE: Duration = Duration::from_millis(300);
/// How often a draining instance's in-flight count is looked at.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// At the end of a drain, how long its upgraded connections get to be closed (the app's
/// frame in progress finished, the close frame sent; the edge allows 2 s for the frame)
/// before the instance is stopped anyway.
const DRAIN_CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How long a stopped app may take to shut down after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many output lines an instance keeps for error messages.
const LAST_LINES: usize = 40;
/// Longest output line kept; longer ones are cut.
const MAX_LINE: usize = 8192;
/// Longest wait before another start of an instance whose starts keep failing.
const MAX_START_BACKOFF: Duration = Duration::from_secs(60);
/// While nothing listens on `$PORT`, how often the ports the app's own processes listen
/// on are looked up; the first look comes this long after the checks begin, so an app
/// that opens a side port just before `$PORT` is not routed there.
const SCAN_EVERY: Duration = Duration::from_millis(500);

struct Instance {
    index: u32,
    addr: Mutex<Option<SocketAddr>>,
    /// How to find the ports the running launch's processes listen on.
    listeners: Mutex<Option<Listeners>>,
    /// The warning given when it was routed to a port other than `$PORT`.
    rerouted: Mutex<Option<String>>,
    state: Mutex<InstanceState>,
    exits: Mutex<u32>,
    /// How it last exited (`code 137: out of memory: …`).
    last_exit: Mutex<Option<String>>,
    last_lines: Mutex<VecDeque<String>>,
    stop: CancellationToken,
    /// Cancelled once the instance is gone (its supervisor returned).
    done: CancellationToken,
    /// Set while the instance drains before a stop; cancelling it keeps the instance.
    draining: Mutex<Option<CancellationToken>>,
    /// Its provider leaves it running when berth shuts down.
    keeps_on_shutdown: bool,
    /// Set at shutdown for such an instance: supervision ends, the instance stays.
    detach: std::sync::atomic::AtomicBool,
    /// Its provider's name.
    provider: &'static str,
    /// How the provider freezes the running launch, when it can.
    pauser: Mutex<Option<Arc<dyn Pause>>>,
    /// Whether the provider has it frozen. Held across each pause and resume call, so a
    /// wake that comes while the pause is under way thaws it after, never before.
    frozen: tokio::sync::Mutex<bool>,
    /// Counts its sleeps: a hold timer only ends the sleep it was started for.
    sleeps: AtomicU64,
}

impl Instance {
    fn set_state(&self, state: InstanceState) {
        *self.state.lock().expect("state lock") = state;
    }
    fn state(&self) -> InstanceState {
        self.state.lock().expect("state lock").clone()
    }
    fn addr(&self) -> Option<SocketAddr> {
        *self.addr.lock().expect("addr lock")
    }
    fn last_lines(&self) -> Vec<String> {
        self.last_lines.lock().expect("lines lock").iter().cloned().collect()
    }
    fn is_draining(&self) -> bool {
        self.draining.lock().expect("drain lock").is_some()
    }
    fn pauser(&self) -> Option<Arc<dyn Pause>> {
        self.pauser.lock().expect("pauser lock").clone()
    }
    /// Moves a paused instance on to starting; true for the one caller that did, who
    /// then thaws it.
    fn claim_wake(&self) -> bool {
        let mut state = self.state.lock().expect("state lock");
        if *state == InstanceState::Paused {
            *state = InstanceState::Starting;
            true
        } else {
            false
        }
    }
    /// Thaws it if the provider has it frozen.
    async fn thaw(&self) -> Result<(), String> {
        let mut frozen = self.frozen.lock().await;
        if *frozen && let Some(pauser) = self.pauser() {
            pauser.resume().await?;
        }
        *frozen = false;
        Ok(())
    }
}

type Instances = HashMap<String, BTreeMap<u32, Arc<Instance>>>;

/// Instances whose stop is under way, with their deployment's id.
type Stopping = Vec<(String, Arc<Instance>)>;

/// Starts that failed in a row, and when the next may be tried, by (deployment, index).
type StartFailures = HashMap<(String, u32), (u32, Instant)>;

/// Runs deployments' instances on the registered providers.
#[derive(Clone)]
pub struct Runtime {
    providers: Arc<HashMap<&'static str, Arc<dyn Provider>>>,
    logs: LogSink,
    instances: Arc<Mutex<Instances>>,
    /// Instances out of the map whose stop is under way (a drain's, a sleep's), by
    /// deployment: a `stop` of their deployment waits for them too, so whoever removes
    /// what they use next (a site's images, its files) never finds them still running.
    stopping: Arc<Mutex<Stopping>>,
    failures: Arc<Mutex<StartFailures>>,
    changed: Arc<Notify>,
    http: reqwest::Client,
}

impl Runtime {
    /// A runtime over `providers`; `changed` is notified whenever an instance's state changes.
    pub fn new(providers: Vec<Arc<dyn Provider>>, logs: LogSink, changed: Arc<Notify>) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(health::PROBE_TIMEOUT)
            .build()
            .expect("http client builds");
        Self {
            providers: Arc::new(providers.into_iter().map(|p| (p.name(), p)).collect()),
            logs,
            instances: Arc::default(),
            stopping: Arc::default(),
            failures: Arc::default(),
            changed,
            http,
        }
    }

    /// A registered provider.
    pub fn provider(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(name).cloned()
    }

    fn get(&self, deployment_id: &str, index: u32) -> Option<Arc<Instance>> {
        let map = self.instances.lock().expect("instances lock");
        map.get(deployment_id).and_then(|m| m.get(&index)).cloned()
    }

    fn all_of(&self, deployment_id: &str) -> Vec<Arc<Instance>> {
        let map = self.instances.lock().expect("instances lock");
        map.get(deployment_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Observes a deployment's instances, by index.
    pub fn observe(&self, deployment_id: &str) -> Vec<Observation> {
        self.all_of(deployment_id)
            .into_iter()
            .map(|i| Observation {
                index: i.index,
                addr: i.addr(),
                state: i.state(),
                draining: i.is_draining(),
            })
            .collect()
    }

    /// A deployment's state as one: healthy if any instance is, else its first instance's.
    pub fn overall_state(&self, deployment_id: &str) -> Option<InstanceState> {
        let all = self.all_of(deployment_id);
        if all.iter().any(|i| i.state() == InstanceState::Healthy) {
            return Some(InstanceState::Healthy);
        }
        all.first().map(|i| i.state())
    }

    /// Whether a deployment has any instance.
    pub fn is_running(&self, deployment_id: &str) -> bool {
        self.instances
            .lock()
            .expect("instances lock")
            .get(deployment_id)
            .is_some_and(|m| !m.is_empty())
    }

    /// Deployments with at least one instance.
    pub fn deployments(&self) -> Vec<String> {
        let map = self.instances.lock().expect("instances lock");
        map.iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The warning of a deployment's first instance, if it is routed to the port its app
    /// listens on instead of `$PORT`.
    pub fn port_warning(&self, deployment_id: &str) -> Option<String> {
        self.get(deployment_id, 0)
            .and_then(|i| i.rerouted.lock().expect("rerouted lock").clone())
    }

    /// Where runtime logs go (a target that runs deployments elsewhere writes its
    /// instances' output there too).
    pub fn log_sink(&self) -> &LogSink {
        &self.logs
    }

    /// The last output lines of a deployment's first instance.
    pub fn last_lines(&self, deployment_id: &str) -> Vec<String> {
        self.all_of(deployment_id)
            .first()
            .map(|i| i.last_lines())
            .unwrap_or_default()
    }

    /// CPU and memory of each instance, where its provider can tell.
    pub async fn usage(&self, deployment_id: &str, provider: &str) -> Vec<(u32, Option<Usage>)> {
        let indexes: Vec<u32> = self.all_of(deployment_id).iter().map(|i| i.index).collect();
        self.usage_of(deployment_id, provider, &indexes).await
    }

    /// CPU and memory of the instances `indexes` of a deployment, as the provider measures
    /// them wherever they run (another replica's instances on a shared engine too).
    pub async fn usage_of(&self, deployment_id: &str, provider: &str, indexes: &[u32]) -> Vec<(u32, Option<Usage>)> {
        let Some(provider) = self.provider(provider) else {
            return vec![];
        };
        let mut out = Vec::new();
        for index in indexes {
            out.push((*index, provider.usage(deployment_id, *index).await));
        }
        out
    }

    /// Starts instance `index` of a deployment and waits until it passes its health
    /// check. On failure the instance is stopped and the error carries its last output
    /// lines. Starting an instance that exists returns it once healthy (and keeps it if
    /// it was draining).
    /// Starts of one instance that keep failing (an app that exits at once, an image
    /// that is gone, an engine that is down) back off, 1 s doubling to a minute, instead
    /// of being retried at every reconcile pass.
    pub async fn start(&self, spec: InstanceSpec, index: u32) -> Result<SocketAddr, StartError> {
        let key = (spec.deployment_id.clone(), index);
        if self.get(&spec.deployment_id, index).is_none()
            && let Some((failures, next)) = self.failures.lock().expect("failures lock").get(&key).copied()
            && next > Instant::now()
        {
            return Err(StartError {
                message: format!(
                    "its last {failures} start(s) failed; the next try is in {} s",
                    next.saturating_duration_since(Instant::now()).as_secs().max(1)
                ),
                last_lines: vec![],
            });
        }
        let result = self.start_once(spec, index).await;
        let mut failures = self.failures.lock().expect("failures lock");
        match &result {
            Ok(_) => {
                failures.remove(&key);
            }
            Err(_) => {
                // Old records (of deployments long gone) are dropped as new ones come.
                failures.retain(|_, (_, next)| next.elapsed() < Duration::from_secs(600));
                let count = failures.get(&key).map_or(0, |(n, _)| *n) + 1;
                let backoff = Duration::from_secs(1u64 << (count - 1).min(6)).min(MAX_START_BACKOFF);
                failures.insert(key, (count, Instant::now() + backoff));
            }
        }
        result
    }

    async fn start_once(&self, spec: InstanceSpec, index: u32) -> Result<SocketAddr, StartError> {
        let Some(provider) = self.provider(&spec.provider) else {
            return Err(StartError {
                message: format!(
                    "the provider `{}` is not available on this server; choose one of: {}",
                    spec.provider,
                    self.provider_names().join(", ")
                ),
                last_lines: vec![],
            });
        };
        let instance = {
            let mut map = self.instances.lock().expect("instances lock");
            let of_deployment = map.entry(spec.deployment_id.clone()).or_default();
            match of_deployment.get(&index) {
                Some(i) => {
                    // Wanted again (a rollback or scale-out during the drain): keep it, and
                    // let the routes take it back.
                    if let Some(drain) = i.draining.lock().expect("drain lock").take() {
                        drain.cancel();
                        self.changed.notify_one();
                    }
                    i.clone()
                }
                None => {
                    let instance = Arc::new(Instance {
                        index,
                        addr: Mutex::new(None),
                        listeners: Mutex::new(None),
                        rerouted: Mutex::new(None),
                        state: Mutex::new(InstanceState::Starting),
                        exits: Mutex::new(0),
                        last_exit: Mutex::new(None),
                        last_lines: Mutex::new(VecDeque::new()),
                        stop: CancellationToken::new(),
                        done: CancellationToken::new(),
                        draining: Mutex::new(None),
                        keeps_on_shutdown: provider.keeps_instances_on_shutdown(),
                        detach: std::sync::atomic::AtomicBool::new(false),
                        provider: provider.name(),
                        pauser: Mutex::new(None),
                        frozen: tokio::sync::Mutex::new(false),
                        sleeps: AtomicU64::new(0),
                    });
                    of_deployment.insert(index, instance.clone());
                    tokio::spawn(self.clone().supervise(provider, instance.clone(), spec.clone()));
                    instance
                }
            }
        };
        if instance.claim_wake() {
            if let Err(err) = instance.thaw().await {
                tracing::warn!(deployment.id = %spec.deployment_id, instance = index, error = %err, "thawing a paused instance failed; starting a new one");
                self.stop_instance(&spec.deployment_id, index).await;
                return Box::pin(self.start_once(spec, index)).await;
            }
            self.logs.write(
                &spec.deployment_id,
                "runtime",
                "system",
                instance_note(index, "woken from pause"),
            );
        }
        let deadline = Instant::now() + spec.start_timeout;
        let mut seen = Seen::default();
        let mut next_scan = Instant::now() + SCAN_EVERY;
        loop {
            if instance.stop.is_cancelled() {
                return Err(StartError {
                    message: "the instance was stopped while it was starting".into(),
                    last_lines: instance.last_lines(),
                });
            }
            match instance.state() {
                InstanceState::Healthy => {
                    if let Some(addr) = instance.addr() {
                        return Ok(addr);
                    }
                }
                InstanceState::Crashed { message } => {
                    let last_lines = instance.last_lines();
                    self.stop_instance(&spec.deployment_id, index).await;
                    return Err(StartError { message, last_lines });
                }
                _ => {}
            }
            let exits = *instance.exits.lock().expect("exits lock");
            if exits > 0
                && matches!(
                    instance.state(),
                    InstanceState::Restarting { .. } | InstanceState::Starting
                )
            {
                let last_lines = instance.last_lines();
                let how = instance.last_exit.lock().expect("exit lock").clone();
                self.stop_instance(&spec.deployment_id, index).await;
                return Err(StartError {
                    message: health::exited_message(&spec, how.as_deref()),
                    last_lines,
                });
            }
            if self.check(&instance, &spec, &mut seen, &mut next_scan).await
                && let Some(addr) = instance.addr()
            {
                instance.set_state(InstanceState::Healthy);
                self.changed.notify_one();
                return Ok(addr);
            }
            if Instant::now() >= deadline {
                let last_lines = instance.last_lines();
                self.stop_instance(&spec.deployment_id, index).await;
                let message = match seen.port {
                    Some(port) => health::unhealthy_message(&spec, port, &seen, &last_lines),
                    None => format!(
                        "the app was not running within {} s (its launch did not finish), so its health check (GET {}) never ran",
                        spec.start_timeout.as_secs(),
                        spec.health_check_path
                    ),
                };
                return Err(StartError { message, last_lines });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn provider_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.providers.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Stops every instance of a deployment: SIGTERM, SIGKILL after a grace period.
    /// Returns once they are stopped, including those whose stop had begun already.
    pub async fn stop(&self, deployment_id: &str) {
        let removed = self.instances.lock().expect("instances lock").remove(deployment_id);
        let under_way: Vec<_> = {
            let stopping = self.stopping.lock().expect("stopping lock");
            stopping
                .iter()
                .filter(|(id, _)| id == deployment_id)
                .map(|(_, instance)| instance.clone())
                .collect()
        };
        let stops = removed
            .into_iter()
            .flat_map(|m| m.into_values())
            .chain(under_way)
            .map(|instance| async move { stop_removed(&instance).await });
        futures::future::join_all(stops).await;
        self.changed.notify_one();
    }

    /// Stops one instance.
    pub async fn stop_instance(&self, deployment_id: &str, index: u32) {
        let removed = {
            let mut map = self.instances.lock().expect("instances lock");
            let removed = map.get_mut(deployment_id).and_then(|m| m.remove(&index));
            if map.get(deployment_id).is_some_and(|m| m.is_empty()) {
                map.remove(deployment_id);
            }
            removed
        };
        if let Some(instance) = removed {
            let entry = (deployment_id.to_string(), instance.clone());
            self.stopping.lock().expect("stopping lock").push(entry);
            stop_removed(&instance).await;
            self.stopping
                .lock()
                .expect("stopping lock")
                .retain(|(_, i)| !Arc::ptr_eq(i, &instance));
            self.changed.notify_one();
        }
    }

    /// Drains every instance of a deployment: each stops once the edge has nothing in
    /// flight to it, or at `grace` at the latest (its upgraded connections are told to
    /// close first). A `start` meanwhile keeps the instance it asks for.
    pub fn drain(&self, deployment_id: &str, grace: Duration, edge: &Arc<Edge>) {
        for instance in self.all_of(deployment_id) {
            self.drain_instance(deployment_id, instance.index, grace, edge);
        }
    }

    /// Drains one instance (scale-in); no-op if it is already draining. The route table
    /// without it must be out already, so nothing new reaches it.
    pub fn drain_instance(&self, deployment_id: &str, index: u32, grace: Duration, edge: &Arc<Edge>) {
        let Some(instance) = self.get(deployment_id, index) else {
            return;
        };
        let token = {
            let mut draining = instance.draining.lock().expect("drain lock");
            if draining.is_some() {
                return;
            }
            let token = CancellationToken::new();
            *draining = Some(token.clone());
            token
        };
        let runtime = self.clone();
        let edge = edge.clone();
        let id = deployment_id.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let deadline = started + grace;
            let addr = instance.addr();
            let idle = || addr.is_none_or(|addr| edge.in_flight_to(addr) == 0);
            loop {
                let now = Instant::now();
                // A request that read the table before the swap may be a moment from
                // being counted: nothing in flight counts only after DRAIN_SETTLE.
                if now >= deadline || (now >= started + DRAIN_SETTLE && idle()) {
                    break;
                }
                let wait = DRAIN_POLL.min(deadline - now);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = token.cancelled() => return,
                }
            }
            if let Some(addr) = addr
                && !idle()
            {
                // WebSocket clients get a close frame and reconnect; their connections
                // are gone a moment later. Requests still running are cut by the stop.
                tracing::info!(deployment.id = %id, instance = index, in_flight = edge.in_flight_to(addr), upgraded = edge.upgraded_to(addr), "drain period over: closing what is still in flight");
                edge.close_upgraded(addr);
                let until = Instant::now() + DRAIN_CLOSE_WAIT;
                while edge.upgraded_to(addr) > 0 && Instant::now() < until {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = token.cancelled() => return,
                    }
                }
            }
            // Only if it is still the instance that was asked to drain.
            if runtime.get(&id, index).is_some_and(|i| Arc::ptr_eq(&i, &instance)) && !token.is_cancelled() {
                tracing::debug!(deployment.id = %id, instance = index, drained_ms = started.elapsed().as_millis() as u64, "drained; stopping");
                runtime.stop_instance(&id, index).await;
            }
        });
    }

    /// Scale to zero: every instance of a deployment goes to sleep. One whose provider can
    /// freeze it is paused in place (no CPU, memory kept; `Paused` from this call on, so
    /// no route or wake sees it as serving) and stopped once it has slept for its hold;
    /// the others are stopped. A `start` wakes a paused instance by thawing it.
    pub fn sleep(&self, deployment_id: &str) {
        let mut pausing = Vec::new();
        let mut stopping = Vec::new();
        for instance in self.all_of(deployment_id) {
            let pauser = instance.pauser();
            let healthy = instance.state() == InstanceState::Healthy && !instance.is_draining();
            match pauser {
                Some(pauser) if healthy => {
                    instance.set_state(InstanceState::Paused);
                    pausing.push((instance, pauser));
                }
                _ => stopping.push(instance.index),
            }
        }
        self.changed.notify_one();
        let runtime = self.clone();
        let id = deployment_id.to_string();
        tokio::spawn(async move {
            for index in stopping {
                runtime.stop_instance(&id, index).await;
            }
            for (instance, pauser) in pausing {
                runtime.pause(&id, instance, pauser).await;
            }
        });
    }

    async fn pause(&self, deployment_id: &str, instance: Arc<Instance>, pauser: Arc<dyn Pause>) {
        let sleep = {
            let mut frozen = instance.frozen.lock().await;
            // Woken (or stopped) before the pause got here: nothing to do.
            if instance.state() != InstanceState::Paused || instance.stop.is_cancelled() {
                return;
            }
            if let Err(err) = pauser.pause().await {
                drop(frozen);
                tracing::warn!(deployment.id = %deployment_id, instance = instance.index, error = %err, "pausing an instance failed; stopping it");
                if instance.state() == InstanceState::Paused {
                    self.stop_instance(deployment_id, instance.index).await;
                }
                return;
            }
            *frozen = true;
            instance.sleeps.fetch_add(1, Ordering::SeqCst) + 1
        };
        let hold = pauser.hold();
        self.logs.write(
            deployment_id,
            "runtime",
            "system",
            instance_note(
                instance.index,
                &format!(
                    "paused (no CPU, memory kept); stopped if still asleep in {} s",
                    hold.as_secs()
                ),
            ),
        );
        let runtime = self.clone();
        let id = deployment_id.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(hold) => {}
                _ = instance.stop.cancelled() => return,
            }
            let same = runtime
                .get(&id, instance.index)
                .is_some_and(|i| Arc::ptr_eq(&i, &instance));
            if same && instance.state() == InstanceState::Paused && instance.sleeps.load(Ordering::SeqCst) == sleep {
                tracing::info!(deployment.id = %id, instance = instance.index, "a paused instance slept its hold out: stopping it");
                runtime.stop_instance(&id, instance.index).await;
            }
        });
    }

    /// Whether every instance of a deployment is draining towards a stop.
    pub fn is_draining(&self, deployment_id: &str) -> bool {
        let all = self.all_of(deployment_id);
        !all.is_empty() && all.iter().all(|i| i.is_draining())
    }

    /// Server shutdown: stops every instance, except that instances of providers that
    /// keep them (containers) are left running for the next start to adopt.
    pub async fn stop_all(&self) {
        let all = std::mem::take(&mut *self.instances.lock().expect("instances lock"));
        hand_over(all.into_values().flat_map(|m| m.into_values())).await;
    }

    /// Hands a deployment's instances over without stopping them: supervision here ends
    /// and instances of a provider that keeps them (containers) stay running for the
    /// replica that runs its target now to adopt; any other is stopped.
    pub async fn detach(&self, deployment_id: &str) {
        let removed = self.instances.lock().expect("instances lock").remove(deployment_id);
        hand_over(removed.into_iter().flat_map(|m| m.into_values())).await;
        self.changed.notify_one();
    }

    /// The deployments with instances of the provider `name` here.
    pub fn deployments_of(&self, name: &str) -> Vec<String> {
        let map = self.instances.lock().expect("instances lock");
        map.iter()
            .filter(|(_, m)| m.values().any(|i| i.provider == name))
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Lets each provider remove leftovers of instances this runtime does not know,
    /// except the providers in `skip` (another replica runs their instances) and the
    /// instances of the deployments in `starting` (a deploy on another replica starts
    /// them).
    pub async fn sweep(&self, skip: &[&str], starting: &[String]) {
        let mut keep: HashSet<(String, u32)> = {
            let map = self.instances.lock().expect("instances lock");
            map.iter()
                .flat_map(|(d, m)| m.keys().map(move |i| (d.clone(), *i)))
                .collect()
        };
        for d in starting {
            keep.extend((0..super::MAX_INSTANCES).map(|i| (d.clone(), i)));
        }
        for (name, provider) in self.providers.iter() {
            if !skip.contains(name) {
                provider.sweep(&keep).await;
            }
        }
    }

    /// One health check of an instance: `$PORT` first. While nothing listens there, the
    /// TCP ports its own processes listen on are looked up (every [`SCAN_EVERY`]) and
    /// probed, lowest first: the first that passes becomes the instance's address (its
    /// health checks and the edge go there), with a warning in its log. What was seen is
    /// kept in `seen` for the error, should the start fail.
    async fn check(&self, instance: &Instance, spec: &InstanceSpec, seen: &mut Seen, next_scan: &mut Instant) -> bool {
        let Some(addr) = instance.addr() else {
            return false;
        };
        let probe = health::probe(&self.http, addr, &spec.health_check_path).await;
        if probe == Probe::Healthy {
            return true;
        }
        let refused = probe == Probe::Refused;
        seen.last = Some(probe);
        if seen.port.is_none() {
            seen.port = Some(addr.port());
        }
        let listeners = *instance.listeners.lock().expect("listeners lock");
        let Some(listeners) = listeners.filter(|_| refused) else {
            return false;
        };
        if Instant::now() < *next_scan {
            return false;
        }
        *next_scan = Instant::now() + SCAN_EVERY;
        let found = tokio::task::spawn_blocking(move || listeners.scan())
            .await
            .unwrap_or_default();
        seen.elsewhere.clear();
        seen.listeners = found;
        if seen.listeners.iter().any(|l| l.port == addr.port()) {
            // It does listen on $PORT (and is just not answering yet).
            return false;
        }
        let mut ports: Vec<u16> = seen.listeners.iter().filter(|l| l.reachable).map(|l| l.port).collect();
        ports.dedup();
        for port in &ports {
            let other = SocketAddr::new(addr.ip(), *port);
            let probe = health::probe(&self.http, other, &spec.health_check_path).await;
            if probe != Probe::Healthy {
                seen.elsewhere.push((*port, probe));
                continue;
            }
            {
                let mut current = instance.addr.lock().expect("addr lock");
                // Relaunched meanwhile: the new launch is checked afresh.
                if *current != Some(addr) {
                    return false;
                }
                *current = Some(other);
            }
            let others: Vec<u16> = ports.iter().copied().filter(|p| p != port).collect();
            let warning = health::rerouted_warning(addr.port(), *port, &others);
            *instance.rerouted.lock().expect("rerouted lock") = Some(warning.clone());
            tracing::warn!(deployment.id = %spec.deployment_id, instance = instance.index, port, "the app ignores PORT; routing to the port it listens on");
            self.logs.write(
                &spec.deployment_id,
                "runtime",
                "system",
                instance_note(instance.index, &warning),
            );
            return true;
        }
        false
    }

    async fn supervise(self, provider: Arc<dyn Provider>, instance: Arc<Instance>, spec: InstanceSpec) {
        let mut crashes: VecDeque<Instant> = VecDeque::new();
        // Slow restarts in a row (a crash loop); back to zero once it runs a while.
        let mut slow_retries: u32 = 0;
        loop {
            let launched = tokio::select! {
                l = provider.launch(&spec, instance.index) => l,
                _ = instance.stop.cancelled() => {
                    instance.done.cancel();
                    return;
                }
            };
            let mut launched = match launched {
                Ok(l) => l,
                Err(message) => {
                    self.logs
                        .write(&spec.deployment_id, "runtime", "system", message.clone());
                    instance.set_state(InstanceState::Crashed { message });
                    self.changed.notify_one();
                    instance.done.cancel();
                    return;
                }
            };
            let launched_at = Instant::now();
            *instance.addr.lock().expect("addr lock") = Some(launched.addr());
            *instance.listeners.lock().expect("listeners lock") = launched.listeners();
            *instance.pauser.lock().expect("pauser lock") = launched.pauser();
            // A new launch (after a crash) is not frozen, whatever its predecessor was.
            *instance.frozen.lock().await = false;
            let pump = launched
                .take_output()
                .map(|output| self.pump(output, &spec.deployment_id, instance.clone()));
            if !crashes.is_empty() {
                tokio::spawn(self.clone().await_recovery(instance.clone(), spec.clone()));
            }
            let exit = tokio::select! {
                e = launched.wait() => Some(e),
                _ = instance.stop.cancelled() => None,
            };
            let Some(exit) = exit else {
                if instance.detach.load(std::sync::atomic::Ordering::SeqCst) {
                    // Left running for the next start of berth (or the next holder of
                    // its target's lease) to adopt.
                    launched.release();
                    if let Some(p) = pump {
                        p.abort();
                    }
                    instance.done.cancel();
                    return;
                }
                // A frozen app cannot act on its stop signal: thaw it for a clean shutdown.
                if let Err(err) = instance.thaw().await {
                    tracing::warn!(deployment.id = %spec.deployment_id, error = %err, "thawing an instance before its stop failed");
                }
                launched.terminate(STOP_GRACE).await;
                if let Some(p) = pump {
                    let _ = p.await;
                }
                self.logs.write(
                    &spec.deployment_id,
                    "runtime",
                    "system",
                    instance_note(instance.index, "instance stopped"),
                );
                instance.done.cancel();
                return;
            };
            // Its address is no longer its own (another instance may be given it).
            *instance.addr.lock().expect("addr lock") = None;
            *instance.listeners.lock().expect("listeners lock") = None;
            if let Some(p) = pump {
                let _ = p.await;
            }
            let note = instance_note(instance.index, &format!("the app exited with {exit}"));
            self.logs.write(&spec.deployment_id, "runtime", "system", note.clone());
            *instance.last_exit.lock().expect("exit lock") = Some(exit.clone());
            *instance.exits.lock().expect("exits lock") += 1;
            let now = Instant::now();
            if now.duration_since(launched_at) > CRASH_WINDOW {
                // It ran a whole window: whatever came before is no loop.
                slow_retries = 0;
                crashes.clear();
            }
            crashes.push_back(now);
            while crashes.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
                crashes.pop_front();
            }
            if crashes.len() >= MAX_CRASHES || slow_retries > 0 {
                let wait = SLOW_RETRY.saturating_mul(1 << slow_retries.min(8)).min(MAX_SLOW_RETRY);
                slow_retries += 1;
                let message = format!(
                    "{note}; it crashed {} times within {} s: restarting it every {} s from now on",
                    crashes.len(),
                    CRASH_WINDOW.as_secs(),
                    wait.as_secs()
                );
                self.logs
                    .write(&spec.deployment_id, "runtime", "system", message.clone());
                tracing::warn!(deployment.id = %spec.deployment_id, site.name = %spec.site, instance = instance.index, "instance crashed repeatedly");
                instance.set_state(InstanceState::Crashed { message });
                self.changed.notify_one();
                launched.terminate(STOP_GRACE).await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = instance.stop.cancelled() => {
                        instance.done.cancel();
                        return;
                    }
                }
                // Restarting again, so a start that passes its health check counts as a
                // recovery (one still marked crashed would never be seen healthy).
                instance.set_state(InstanceState::Restarting {
                    attempt: crashes.len() as u32,
                });
                self.changed.notify_one();
                continue;
            }
            let attempt = crashes.len() as u32;
            instance.set_state(InstanceState::Restarting { attempt });
            self.changed.notify_one();
            // Whatever the provider keeps of an exited instance goes before the next one.
            launched.terminate(Duration::ZERO).await;
            let backoff = Duration::from_millis(250u64 << attempt.min(6));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = instance.stop.cancelled() => {
                    instance.done.cancel();
                    return;
                }
            }
        }
    }

    /// After a restart, marks the instance healthy again once its health check passes.
    async fn await_recovery(self, instance: Arc<Instance>, spec: InstanceSpec) {
        let deadline = Instant::now() + spec.start_timeout;
        let mut seen = Seen::default();
        let mut next_scan = Instant::now() + SCAN_EVERY;
        while Instant::now() < deadline && !instance.stop.is_cancelled() {
            if !matches!(
                instance.state(),
                InstanceState::Restarting { .. } | InstanceState::Starting
            ) {
                return;
            }
            if self.check(&instance, &spec, &mut seen, &mut next_scan).await {
                instance.set_state(InstanceState::Healthy);
                self.changed.notify_one();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pump(
        &self,
        mut output: OutputStream,
        deployment_id: &str,
        instance: Arc<Instance>,
    ) -> tokio::task::JoinHandle<()> {
        let logs = self.logs.clone();
        let deployment_id = deployment_id.to_string();
        tokio::spawn(async move {
            let mut limit = logs.rate_limit();
            let mut skipped = 0u32;
            while let Some(out) = output.next().await {
                let dropped = match limit.admit(std::time::Instant::now()) {
                    super::logs::Admit::Pass(dropped) => dropped,
                    super::logs::Admit::Drop => {
                        // Over the rate, reading slows down too: the app's pipe fills and
                        // its writes wait, instead of berth spending a core on discarding.
                        skipped += 1;
                        if skipped.is_multiple_of(super::logs::DROP_PACE_LINES) {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        }
                        continue;
                    }
                };
                if let Some(n) = dropped {
                    let note = instance_note(instance.index, &limit.dropped_note(n));
                    logs.write_paced(&deployment_id, "runtime", "system", note).await;
                }
                let mut line = out.line;
                if line.len() > MAX_LINE {
                    let mut cut = MAX_LINE;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                    line.push_str(" …[truncated]");
                }
                {
                    let mut last = instance.last_lines.lock().expect("lines lock");
                    if last.len() == LAST_LINES {
                        last.pop_front();
                    }
                    last.push_back(line.clone());
                }
                // Output after berth asked the instance to stop is its shutdown (a shell's
                // `Terminated`, npm's `ERR! signal SIGTERM`), not an error of the app.
                logs.write_output(
                    &deployment_id,
                    out.stream,
                    instance_note(instance.index, &line),
                    instance.stop.is_cancelled(),
                )
                .await;
            }
            if let Some(n) = limit.take_dropped() {
                let note = instance_note(instance.index, &limit.dropped_note(n));
                logs.write_paced(&deployment_id, "runtime", "system", note).await;
            }
        })
    }
}

/// Lines of the first instance read as they always did; others say which instance wrote them.
fn instance_note(index: u32, line: &str) -> String {
    if index == 0 {
        line.to_string()
    } else {
        format!("[instance {index}] {line}")
    }
}

/// Ends supervision of `instances` here: those of providers that keep them (containers)
/// are left running for another start or replica to adopt, the others are stopped.
async fn hand_over(instances: impl Iterator<Item = Arc<Instance>>) {
    let stops = instances.map(|instance| async move {
        if instance.keeps_on_shutdown {
            instance.detach.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        stop_removed(&instance).await
    });
    futures::future::join_all(stops).await;
}

async fn stop_removed(instance: &Instance) {
    instance.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), instance.done.cancelled()).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::runtime::Launched;

    /// A provider whose launches always fail (an engine that is down), counting them.
    struct Unlaunchable(AtomicU32);

    #[async_trait::async_trait]
    impl Provider for Unlaunchable {
        fn name(&self) -> &'static str {
            "unlaunchable"
        }
        fn is_isolated(&self) -> bool {
            true
        }
        fn capabilities(&self) -> crate::runtime::Capabilities {
            crate::runtime::target::TARGETS[0].capabilities
        }
        async fn launch(&self, _spec: &InstanceSpec, _index: u32) -> Result<Box<dyn Launched>, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err("the engine is not answering".into())
        }
    }

    /// A provider whose instances answer every HTTP request with 200 and can be paused;
    /// it records what happened to them, in order. A pause takes a while, so a wake can
    /// come while one is under way.
    #[derive(Default)]
    struct Freezable {
        launches: AtomicU32,
        events: Arc<Mutex<Vec<&'static str>>>,
        /// How long a stop takes (a container that ignores SIGTERM).
        stop_takes: Duration,
    }

    struct FreezableInstance {
        addr: SocketAddr,
        server: tokio::task::JoinHandle<()>,
        events: Arc<Mutex<Vec<&'static str>>>,
        stop_takes: Duration,
    }

    struct FreezablePause(Arc<Mutex<Vec<&'static str>>>);

    #[async_trait::async_trait]
    impl Pause for FreezablePause {
        async fn pause(&self) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.0.lock().unwrap().push("pause");
            Ok(())
        }
        async fn resume(&self) -> Result<(), String> {
            self.0.lock().unwrap().push("resume");
            Ok(())
        }
        fn hold(&self) -> Duration {
            Duration::from_millis(300)
        }
    }

    #[async_trait::async_trait]
    impl Launched for FreezableInstance {
        fn addr(&self) -> SocketAddr {
            self.addr
        }
        fn take_output(&mut self) -> Option<OutputStream> {
            None
        }
        async fn wait(&mut self) -> String {
            futures::future::pending().await
        }
        async fn terminate(&mut self, _grace: Duration) {
            tokio::time::sleep(self.stop_takes).await;
            self.server.abort();
            self.events.lock().unwrap().push("terminate");
        }
        fn pauser(&self) -> Option<Arc<dyn Pause>> {
            Some(Arc::new(FreezablePause(self.events.clone())))
        }
    }

    #[async_trait::async_trait]
    impl Provider for Freezable {
        fn name(&self) -> &'static str {
            "freezable"
        }
        fn is_isolated(&self) -> bool {
            true
        }
        fn capabilities(&self) -> crate::runtime::Capabilities {
            crate::runtime::target::TARGETS[0].capabilities
        }
        async fn launch(&self, _spec: &InstanceSpec, _index: u32) -> Result<Box<dyn Launched>, String> {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            self.launches.fetch_add(1, Ordering::SeqCst);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let server = tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                }
            });
            Ok(Box::new(FreezableInstance {
                addr,
                server,
                events: self.events.clone(),
                stop_takes: self.stop_takes,
            }))
        }
    }

    async fn runtime_with(provider: Arc<dyn Provider>, dir: &std::path::Path) -> Runtime {
        let store = crate::store::Store::open_sqlite(&dir.join("t.db"))
            .await
            .expect("store");
        Runtime::new(
            vec![provider],
            LogSink::start(store, Default::default()),
            Arc::default(),
        )
    }

    fn spec_on(provider: &str, dir: &std::path::Path) -> InstanceSpec {
        InstanceSpec {
            deployment_id: "dpl_x".into(),
            provider: provider.into(),
            org: String::new(),
            environment: String::new(),
            host: String::new(),
            domains: Vec::new(),
            site: "s".into(),
            app_dir: dir.to_path_buf(),
            command: "true".into(),
            port: None,
            env: vec![],
            health_check_path: "/".into(),
            start_timeout: Duration::from_secs(5),
            build_timeout: Duration::from_secs(60),
            image: None,
            provider_config: Default::default(),
            uid: None,
            size: Default::default(),
            resources: Vec::new(),
            scale: Default::default(),
        }
    }

    #[test]
    fn debug_of_an_instance_spec_prints_variable_names_and_no_value_or_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = spec_on("local", dir.path());
        spec.env.push(("API_KEY".into(), "s3cr3t-value-5b2e".into()));
        spec.provider_config.insert("token".into(), "cluster-token-9f1d".into());
        let printed = format!("{spec:?}");
        assert!(printed.contains("API_KEY") && printed.contains("token"), "{printed}");
        assert!(!printed.contains("s3cr3t-value-5b2e"), "{printed}");
        assert!(!printed.contains("cluster-token-9f1d"), "{printed}");
    }

    #[tokio::test]
    async fn stopping_a_deployment_waits_for_a_stop_another_task_began() {
        let dir = tempfile::tempdir().expect("tempdir");
        let provider = Arc::new(Freezable {
            stop_takes: Duration::from_millis(500),
            ..Default::default()
        });
        let runtime = runtime_with(provider.clone(), dir.path()).await;
        runtime
            .start(spec_on("freezable", dir.path()), 0)
            .await
            .expect("starts");

        // A drain's stop is under way (the instance is out of the map already) ...
        let draining = runtime.clone();
        let drain = tokio::spawn(async move { draining.stop_instance("dpl_x", 0).await });
        while runtime.get("dpl_x", 0).is_some() {
            tokio::task::yield_now().await;
        }
        // ... and the deployment's stop returns only once it is done: a site's deletion
        // removes the files and images the instance uses right after.
        runtime.stop("dpl_x").await;
        assert_eq!(*provider.events.lock().unwrap(), ["terminate"]);
        drain.await.expect("drain task");
    }

    #[tokio::test]
    async fn a_sleeping_instance_is_paused_thawed_by_the_next_start_and_stopped_after_its_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let provider = Arc::new(Freezable::default());
        let runtime = runtime_with(provider.clone(), dir.path()).await;
        let spec = spec_on("freezable", dir.path());
        let addr = runtime.start(spec.clone(), 0).await.expect("starts");

        // Asleep at once for routes and wakes; a wake before the pause began cancels it.
        runtime.sleep("dpl_x");
        assert_eq!(runtime.overall_state("dpl_x"), Some(InstanceState::Paused));
        assert_eq!(runtime.start(spec.clone(), 0).await.expect("wakes"), addr);
        tokio::task::yield_now().await;
        assert!(provider.events.lock().unwrap().is_empty());

        // A wake while the pause is under way thaws it after the pause, never before.
        runtime.sleep("dpl_x");
        for _ in 0..3 {
            tokio::task::yield_now().await; // the pause begins
        }
        assert_eq!(runtime.start(spec.clone(), 0).await.expect("wakes"), addr);
        assert_eq!(*provider.events.lock().unwrap(), ["pause", "resume"]);
        assert_eq!(runtime.overall_state("dpl_x"), Some(InstanceState::Healthy));
        assert_eq!(provider.launches.load(Ordering::SeqCst), 1);

        // Asleep past its hold: thawed (so it can shut down cleanly), then stopped.
        runtime.sleep("dpl_x");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Out of the table first, then terminated: wait for both.
        while runtime.is_running("dpl_x") || provider.events.lock().unwrap().len() < 5 {
            assert!(Instant::now() < deadline, "the paused instance was never stopped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            *provider.events.lock().unwrap(),
            ["pause", "resume", "pause", "resume", "terminate"]
        );
        // The next start launches a new instance.
        runtime.start(spec, 0).await.expect("starts again");
        assert_eq!(provider.launches.load(Ordering::SeqCst), 2);
        runtime.stop("dpl_x").await;
    }

    #[tokio::test]
    async fn failed_starts_back_off_instead_of_launching_again_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let provider = Arc::new(Unlaunchable(AtomicU32::new(0)));
        let runtime = runtime_with(provider.clone(), dir.path()).await;
        let spec = spec_on("unlaunchable", dir.path());
        let first = runtime.start(spec.clone(), 0).await.expect_err("launch fails");
        assert!(first.message.contains("not answering"), "{first}");
        // A reconcile pass right after must not launch again (that was a hot loop).
        let second = runtime.start(spec.clone(), 0).await.expect_err("backing off");
        assert!(second.message.contains("next try is in"), "{second}");
        assert_eq!(provider.0.load(Ordering::SeqCst), 1);
        assert!(!runtime.is_running("dpl_x"));
    }
}
