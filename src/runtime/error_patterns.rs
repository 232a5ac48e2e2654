//! The pattern task: runtime log lines, once stored by the log writer, are handed here
//! (without waiting: a full queue skips clustering for that batch, the lines stay in the
//! log), joined into error events per deployment, stream and instance
//! ([`crate::patterns::Assembler`]), clustered per environment ([`crate::patterns::Drain`])
//! and saved every [`SAVE_EVERY`]. An event still open is completed after [`QUIET`] without
//! a line. Templates and counts older than `--log-retention-days` are pruned with the logs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::patterns::{Assembler, Drain, Event};
use crate::store::error_patterns::PatternDelta;
use crate::store::metrics::MINUTE_MS;
use crate::store::{NewLogLine, Store};
use crate::util::now_ms;

/// Batches of lines queued for the task at most.
const QUEUE: usize = 256;
/// How often what was learned is saved.
pub const SAVE_EVERY: Duration = Duration::from_millis(500);
/// An open event with no new line for this long is complete.
pub const QUIET: Duration = Duration::from_secs(1);
/// How often old templates and counts are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Deployments whose environment is remembered at most (then forgotten all at once).
const KNOWN_DEPLOYMENTS: usize = 10_000;

enum Msg {
    Lines(Vec<NewLogLine>),
    Flush(oneshot::Sender<()>),
}

/// A handle to the pattern task.
#[derive(Clone)]
pub struct PatternFeed {
    tx: mpsc::Sender<Msg>,
}

/// One environment's templates and what they gained since the last save.
#[derive(Default)]
struct EnvironmentState {
    drain: Drain,
    pending: HashMap<u64, PatternDelta>,
    evicted: Vec<u64>,
}

/// An event being joined for one stream of one instance.
struct Stream {
    assembler: Assembler,
    last_line: Instant,
}

/// Where a deployment's events go: (environment id, site id).
type Target = Option<(String, String)>;

struct Task {
    store: Store,
    streams: HashMap<(String, &'static str, String), Stream>,
    deployments: HashMap<String, Target>,
    environments: HashMap<String, EnvironmentState>,
}

impl PatternFeed {
    /// Starts the task; what is older than `retention_age` is pruned.
    pub fn start(store: Store, retention_age: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let mut task = Task {
            store,
            streams: HashMap::new(),
            deployments: HashMap::new(),
            environments: HashMap::new(),
        };
        tokio::spawn(async move {
            let mut save = tokio::time::interval(SAVE_EVERY);
            save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut prune = tokio::time::interval(PRUNE_EVERY);
            prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(Msg::Lines(lines)) => task.take(lines).await,
                        Some(Msg::Flush(done)) => {
                            task.save().await;
                            let _ = done.send(());
                        }
                        None => break,
                    },
                    _ = save.tick() => {
                        task.complete_quiet().await;
                        task.save().await;
                    }
                    _ = prune.tick() => task.prune(retention_age).await,
                }
            }
        });
        Self { tx }
    }

    /// Hands over stored runtime lines; when the task is behind they are not clustered.
    pub fn offer(&self, lines: Vec<NewLogLine>) {
        if let Err(mpsc::error::TrySendError::Full(Msg::Lines(lines))) = self.tx.try_send(Msg::Lines(lines)) {
            tracing::debug!(lines = lines.len(), "error patterns behind: lines not clustered");
        }
    }

    /// Waits until everything handed over so far and complete is saved.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Splits `[instance N] ` off a line of another instance.
fn instance_of(line: &str) -> (&str, &str) {
    if let Some(rest) = line.strip_prefix("[instance ")
        && let Some(end) = rest.find("] ")
        && rest[..end].bytes().all(|b| b.is_ascii_digit())
    {
        return (&rest[..end], &rest[end + 2..]);
    }
    ("0", line)
}

impl Task {
    async fn take(&mut self, lines: Vec<NewLogLine>) {
        let now = Instant::now();
        for l in lines {
            let stderr = match l.stream {
                "stderr" => true,
                "stdout" => false,
                _ => continue,
            };
            let (instance, text) = instance_of(&l.line);
            let key = (l.deployment_id.clone(), l.stream, instance.to_string());
            let stream = self.streams.entry(key).or_insert_with(|| Stream {
                assembler: Assembler::default(),
                last_line: now,
            });
            stream.last_line = now;
            let done = stream.assembler.push(text, stderr, l.ts);
            if !stream.assembler.is_open() {
                self.streams
                    .remove(&(l.deployment_id.clone(), l.stream, instance.to_string()));
            }
            if let Some(event) = done {
                self.cluster(&l.deployment_id, event).await;
            }
        }
    }

    /// Completes the events no line was added to for [`QUIET`].
    async fn complete_quiet(&mut self) {
        let quiet: Vec<_> = self
            .streams
            .iter()
            .filter(|(_, s)| s.last_line.elapsed() >= QUIET)
            .map(|(k, _)| k.clone())
            .collect();
        for key in quiet {
            if let Some(mut stream) = self.streams.remove(&key)
                && let Some(event) = stream.assembler.finish()
            {
                self.cluster(&key.0, event).await;
            }
        }
    }

    async fn target(&mut self, deployment_id: &str) -> Target {
        if let Some(known) = self.deployments.get(deployment_id) {
            return known.clone();
        }
        let found: Option<(String, String)> = match self.store.get_deployment_any_org(deployment_id).await {
            Ok(d) => d.map(|d| (d.environment_id, d.site_id)),
            Err(err) => {
                tracing::warn!(error = %err, "looking up a deployment for error patterns failed");
                None
            }
        };
        if self.deployments.len() >= KNOWN_DEPLOYMENTS {
            self.deployments.clear();
        }
        self.deployments.insert(deployment_id.to_string(), found.clone());
        found
    }

    async fn cluster(&mut self, deployment_id: &str, event: Event) {
        let Some((environment_id, site_id)) = self.target(deployment_id).await else {
            return;
        };
        if !self.environments.contains_key(&environment_id) {
            let mut state = EnvironmentState::default();
            match self.store.error_pattern_templates(&environment_id).await {
                Ok(rows) => {
                    for (key, template, last_seen) in rows {
                        state.drain.restore(key.max(0) as u64, &template, last_seen);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "reading error patterns failed"),
            }
            self.environments.insert(environment_id.clone(), state);
        }
        let state = self.environments.get_mut(&environment_id).expect("inserted above");
        let added = state.drain.add(event.headline(), event.ts);
        if let Some(gone) = added.evicted {
            state.pending.remove(&gone);
            state.evicted.push(gone);
        }
        let template = state.drain.get(added.key).map(|c| c.template()).unwrap_or_default();
        let delta = state.pending.entry(added.key).or_insert_with(|| PatternDelta {
            site_id,
            first_seen_ms: event.ts,
            ..PatternDelta::default()
        });
        delta.template = template;
        delta.count += 1;
        delta.first_seen_ms = delta.first_seen_ms.min(event.ts);
        delta.last_seen_ms = delta.last_seen_ms.max(event.ts);
        *delta
            .minutes
            .entry((event.ts.div_euclid(MINUTE_MS) * MINUTE_MS, deployment_id.to_string()))
            .or_default() += 1;
        delta.sample = event.text;
    }

    async fn save(&mut self) {
        let mut gone = Vec::new();
        for (environment_id, state) in &mut self.environments {
            if state.pending.is_empty() && state.evicted.is_empty() {
                continue;
            }
            let deltas: Vec<(u64, PatternDelta)> = state.pending.drain().collect();
            let evicted = std::mem::take(&mut state.evicted);
            if let Err(err) = self.store.save_error_patterns(environment_id, &evicted, &deltas).await {
                // An environment deleted meanwhile, or a busy database: start over from
                // what is stored.
                tracing::debug!(environment.id = %environment_id, error = %err, "saving error patterns failed");
                gone.push(environment_id.clone());
            }
        }
        for environment_id in gone {
            self.environments.remove(&environment_id);
        }
    }

    async fn prune(&mut self, retention_age: Duration) {
        self.save().await;
        let before = now_ms() - retention_age.as_millis() as i64;
        match self.store.prune_error_patterns(before).await {
            Ok(n) if n > 0 => {
                tracing::info!(patterns = n, "removed error patterns past the log retention");
                // Rebuilt from what is stored on their next event.
                self.environments.clear();
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "pruning error patterns failed"),
        }
    }
}
