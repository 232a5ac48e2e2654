//! The log sink: build and runtime lines are queued here and written to the store in
//! batches by one task, so a chatty app costs one insert per batch, not per line.
//!
//! Everything is bounded, whatever an app writes: the queue holds at most [`QUEUE`]
//! lines; an app's output waits for room ([`LogSink::write_paced`], so the pipe's
//! back-pressure slows the app, never berth) while other writers drop a line when the
//! queue is full and the drop is reported in the log; each instance may log
//! [`RATE_PER_SECOND`] lines a second (with as large a burst), and what is over is dropped
//! and counted in the log itself ([`RateLimit`]); and every deployment keeps its newest
//! [`RUNTIME_LOG_RETENTION`] runtime lines, enforced as lines arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::store::{self, NewLogLine, Store};
use crate::util::now_ms;

enum Msg {
    Line(NewLogLine),
    Flush(oneshot::Sender<()>),
}

/// Lines queued for the store at most.
pub const QUEUE: usize = 8192;

/// Runtime lines kept per deployment (older ones are removed as new ones arrive).
pub const RUNTIME_LOG_RETENTION: i64 = 20_000;

/// How many new runtime lines of a deployment may arrive before its retention is
/// enforced again (a delete per this many lines, not per line).
const TRIM_EVERY: u64 = 2_000;

/// Deployments whose new-line counts are kept between trims, at most.
const MAX_COUNTED: usize = 10_000;

/// Lines per second an instance may log; as many may come at once.
pub const RATE_PER_SECOND: f64 = 1_000.0;

/// Over the rate, a reader pauses 1 ms after every this many dropped lines (so it drops
/// at most ~64,000 lines a second and the app's pipe paces the app).
pub const DROP_PACE_LINES: u32 = 64;

/// Secret values shorter than this are not redacted: masking every "1" or "on" would
/// garble logs without protecting anything.
const MIN_REDACTED_LEN: usize = 4;

/// A cheap, cloneable handle to the log writer. Lines of a deployment are redacted
/// (`***`) of that deployment's secret values before they are stored, so no reader of
/// any log ever sees them.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Msg>,
    secrets: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Lines dropped per deployment because the queue was full, reported by the writer.
    dropped: Arc<Mutex<HashMap<String, u64>>>,
}

impl LogSink {
    /// Starts the writer task.
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let dropped: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let dropped_by_writer = dropped.clone();
        tokio::spawn(async move {
            let mut since_trim: HashMap<String, u64> = HashMap::new();
            // Natural batching: while one write is in flight, lines pile up in the channel
            // and go out together in the next write.
            while let Some(first) = rx.recv().await {
                let mut batch: Vec<NewLogLine> = Vec::new();
                let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next {
                    match msg {
                        Msg::Line(l) => batch.push(l),
                        Msg::Flush(w) => waiters.push(w),
                    }
                    next = if batch.len() < 1000 { rx.try_recv().ok() } else { None };
                }
                let reports: Vec<(String, u64)> = dropped_by_writer.lock().expect("dropped lock").drain().collect();
                for (deployment_id, n) in reports {
                    batch.push(NewLogLine {
                        deployment_id,
                        kind: "runtime",
                        stream: "system",
                        ts: now_ms(),
                        line: format!("… {n} lines dropped: berth's log writer was behind"),
                    });
                }
                if !batch.is_empty()
                    && let Err(err) = store::append_logs(&store, &batch).await
                {
                    tracing::warn!(error = %err, lines = batch.len(), "writing log lines failed");
                }
                for line in batch.iter().filter(|l| l.kind == "runtime") {
                    *since_trim.entry(line.deployment_id.clone()).or_default() += 1;
                }
                // Counts of deployments that went quiet would stay forever: past a bound
                // they start over (a deployment is then trimmed a little later, no more).
                if since_trim.len() > MAX_COUNTED {
                    since_trim.retain(|_, n| *n >= TRIM_EVERY);
                }
                let due: Vec<String> = since_trim
                    .iter()
                    .filter(|(_, n)| **n >= TRIM_EVERY)
                    .map(|(d, _)| d.clone())
                    .collect();
                for deployment_id in due {
                    since_trim.remove(&deployment_id);
                    if let Err(err) =
                        store::trim_runtime_logs(store.pool(), &deployment_id, RUNTIME_LOG_RETENTION).await
                    {
                        tracing::warn!(error = %err, "trimming runtime logs failed");
                    }
                }
                for w in waiters {
                    let _ = w.send(());
                }
            }
        });
        Self {
            tx,
            secrets: Arc::default(),
            dropped,
        }
    }

    /// Sets the values to redact from a deployment's lines (longest first, so a secret
    /// containing another is masked whole).
    pub fn set_secrets(&self, deployment_id: &str, values: impl IntoIterator<Item = String>) {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= MIN_REDACTED_LEN).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        self.secrets
            .lock()
            .expect("secrets lock")
            .insert(deployment_id.to_string(), values);
    }

    /// `line` with the deployment's secret values masked (`***`), for text that leaves
    /// berth other than through the log (an error quoting what the app answered).
    pub fn redact(&self, deployment_id: &str, line: String) -> String {
        let secrets = self.secrets.lock().expect("secrets lock");
        let Some(values) = secrets.get(deployment_id) else {
            return line;
        };
        let mut line = line;
        for v in values {
            if line.contains(v.as_str()) {
                line = line.replace(v.as_str(), "***");
            }
        }
        line
    }

    fn line(&self, deployment_id: &str, kind: &'static str, stream: &'static str, line: String) -> Msg {
        Msg::Line(NewLogLine {
            deployment_id: deployment_id.to_string(),
            kind,
            stream,
            ts: now_ms(),
            line: self.redact(deployment_id, line),
        })
    }

    /// Queues one line, or drops it (counted, and reported in the deployment's log)
    /// when the queue is full.
    pub fn write(&self, deployment_id: &str, kind: &'static str, stream: &'static str, line: String) {
        let msg = self.line(deployment_id, kind, stream, line);
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(msg) {
            *self
                .dropped
                .lock()
                .expect("dropped lock")
                .entry(deployment_id.to_string())
                .or_default() += 1;
        }
    }

    /// Queues one line, waiting for room: a reader of an app's output that calls this
    /// stops reading while the store is behind, and the app's writes block on its pipe.
    pub async fn write_paced(&self, deployment_id: &str, kind: &'static str, stream: &'static str, line: String) {
        let msg = self.line(deployment_id, kind, stream, line);
        let _ = self.tx.send(msg).await;
    }

    /// Waits until every line queued so far is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A token bucket over one instance's output: [`RATE_PER_SECOND`] lines a second with a
/// burst as large; what is over is counted, and reported at most once a second (and at
/// the end) in front of a line that passes.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    last: Instant,
    dropped: u64,
    reported: Option<Instant>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            tokens: RATE_PER_SECOND,
            last: Instant::now(),
            dropped: 0,
            reported: None,
        }
    }
}

impl RateLimit {
    /// Whether a line may pass now.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * RATE_PER_SECOND).min(RATE_PER_SECOND);
        if self.tokens < 1.0 {
            self.dropped += 1;
            return Admit::Drop;
        }
        self.tokens -= 1.0;
        let due = self
            .reported
            .is_none_or(|at| now.saturating_duration_since(at) >= std::time::Duration::from_secs(1));
        if due && self.dropped > 0 {
            self.reported = Some(now);
            return Admit::Pass(self.take_dropped());
        }
        Admit::Pass(None)
    }

    /// Lines dropped and not yet reported.
    pub fn take_dropped(&mut self) -> Option<u64> {
        (self.dropped > 0).then(|| std::mem::take(&mut self.dropped))
    }
}

/// What [`RateLimit::admit`] decides about a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// It is logged; `Some(n)`: `n` lines were dropped before it (report them first).
    Pass(Option<u64>),
    /// It is over the rate: dropped and counted.
    Drop,
}

/// The note that reports lines over the rate.
pub fn dropped_note(n: u64) -> String {
    format!("… {n} lines dropped: over {RATE_PER_SECOND:.0} lines/s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_drops_are_counted() {
        let start = Instant::now();
        let mut limit = RateLimit::default();
        let passed = (0..1500).filter(|_| limit.admit(start) != Admit::Drop).count();
        assert_eq!(passed, 1000, "the burst");
        // Half a second later, half a second's worth passes; the first says what was dropped.
        let later = start + Duration::from_millis(500);
        assert_eq!(limit.admit(later), Admit::Pass(Some(500)));
        let more = (0..1000).filter(|_| limit.admit(later) != Admit::Drop).count();
        assert_eq!(more, 499);
        // The next report waits a second, whatever passes meanwhile.
        let soon = later + Duration::from_millis(100);
        assert_eq!(limit.admit(soon), Admit::Pass(None));
        let a_second_on = later + Duration::from_millis(1000);
        assert_eq!(limit.admit(a_second_on), Admit::Pass(Some(501)));
        assert_eq!(limit.take_dropped(), None);
    }
}
