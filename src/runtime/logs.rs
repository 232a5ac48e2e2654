//! The log sink: build and runtime lines are queued here and written to the store in
//! batches by one task, so a chatty app costs one insert per batch, not per line.
//!
//! Everything is bounded, whatever an app writes: the queue holds at most [`QUEUE`]
//! lines; an app's output waits for room ([`LogSink::write_paced`], so the pipe's
//! back-pressure slows the app, never berth) while other writers drop a line when the
//! queue is full and the drop is reported in the log; each instance may log
//! `--log-rate` lines a second (with as large a burst), and what is over is dropped and
//! counted in the log itself ([`RateLimit`]); and every environment keeps at most
//! `--log-retention-mb` of log across all its deployments (superseded ones included),
//! enforced by the writer as lines arrive (oldest runtime lines first), and no line older
//! than `--log-retention-days`, enforced by a sweep at start and every [`SWEEP_EVERY`].
//! Stored runtime lines are then handed to the error pattern task
//! ([`super::error_patterns`]) without waiting for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::error_patterns::PatternFeed;
use crate::store::{NewLogLine, Store};
use crate::util::now_ms;

enum Msg {
    Line(NewLogLine),
    Flush(oneshot::Sender<()>),
}

/// Lines queued for the store at most.
pub const QUEUE: usize = 8192;

/// Lines removed per trim statement at most (an environment over its size loses its
/// oldest lines in steps this big).
const TRIM_CHUNK: i64 = 2_000;

/// Trim statements the writer runs for one environment after a batch at most; the sweep
/// finishes what is left (an environment far over after a lowered setting).
const TRIM_STEPS_PER_BATCH: usize = 16;

/// Lines looked at per age-expiry statement.
const EXPIRE_CHUNK: i64 = 5_000;

/// How often lines past their age are removed (and once at start).
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How much of apps' output is let through and kept (`--log-rate`,
/// `--log-retention-mb`, `--log-retention-days`).
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    /// Lines a second each instance may log, with as large a burst.
    pub rate_per_second: u32,
    /// Stored log bytes an environment keeps at most ([`log_retention::line_cost`] each).
    pub retention_bytes: i64,
    /// How long a line is kept.
    pub retention_age: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            rate_per_second: 1_000,
            retention_bytes: 50 << 20,
            retention_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl LogLimits {
    /// What an environment over its size is trimmed down to: a tenth under the bound,
    /// so a steady writer costs one delete per tenth of the bound, not one per batch.
    fn trim_target(&self) -> i64 {
        self.retention_bytes - self.retention_bytes / 10
    }
}

/// A log write that held the database longer than this is followed by a pause as long
/// as the write (at most [`WRITER_MAX_PAUSE`]), so other writers get their turn.
const WRITER_FREE_AFTER: Duration = Duration::from_millis(5);

/// The longest pause after one log write.
const WRITER_MAX_PAUSE: Duration = Duration::from_millis(250);

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
    /// Lines a second each instance may log.
    rate_per_second: u32,
    /// Where stored runtime lines go to be clustered into error patterns.
    patterns: PatternFeed,
}

impl LogSink {
    /// Starts the writer task and the age sweep.
    pub fn start(store: Store, limits: LogLimits) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let dropped: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let dropped_by_writer = dropped.clone();
        let swept = store.clone();
        let patterns = PatternFeed::start(store.clone(), limits.retention_age);
        let feed = patterns.clone();
        tokio::spawn(async move {
            loop {
                sweep(&swept, &limits).await;
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        });
        tokio::spawn(async move {
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
                        after_stop: false,
                    });
                }
                let writing = Instant::now();
                let totals = if batch.is_empty() {
                    Vec::new()
                } else {
                    store.append_logs(&batch).await.unwrap_or_else(|err| {
                        tracing::warn!(error = %err, lines = batch.len(), "writing log lines failed");
                        Vec::new()
                    })
                };
                // The totals came back with the insert: an environment over its size is
                // trimmed now, before more of its lines are taken.
                for (environment_id, bytes) in totals {
                    if bytes > limits.retention_bytes {
                        trim(&store, &environment_id, &limits, TRIM_STEPS_PER_BATCH).await;
                    }
                }
                let runtime: Vec<NewLogLine> = batch
                    .into_iter()
                    .filter(|l| l.kind == "runtime" && l.stream != "system" && !l.after_stop)
                    .collect();
                if !runtime.is_empty() {
                    feed.offer(runtime);
                }
                for w in waiters {
                    let _ = w.send(());
                }
                // SQLite has one writer and no queue: a writer that takes the lock again
                // at once can starve the control plane's own writes (a deploy's status)
                // past their busy timeout. Under a flood the writer leaves the database
                // alone as long as it just held it (lines wait in the bounded queue, whose
                // back-pressure paces the apps).
                let held = writing.elapsed();
                if held > WRITER_FREE_AFTER {
                    tokio::time::sleep(held.min(WRITER_MAX_PAUSE)).await;
                }
            }
        });
        Self {
            tx,
            secrets: Arc::default(),
            dropped,
            rate_per_second: limits.rate_per_second,
            patterns,
        }
    }

    /// A fresh rate limit for one instance's output.
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit::new(self.rate_per_second)
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
            after_stop: false,
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

    /// Queues a line an app wrote, waiting for room like [`LogSink::write_paced`];
    /// `after_stop`: berth had asked the instance to stop, so the line is shutdown output
    /// (kept in the log, not clustered into error patterns).
    pub async fn write_output(&self, deployment_id: &str, stream: &'static str, line: String, after_stop: bool) {
        let mut msg = self.line(deployment_id, "runtime", stream, line);
        if let Msg::Line(l) = &mut msg {
            l.after_stop = after_stop;
        }
        let _ = self.tx.send(msg).await;
    }

    /// Waits until every line queued so far is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Waits until every line queued so far is stored and every error event completed
    /// from them is saved in its pattern (an event still open waits for its next line or
    /// a quiet second).
    pub async fn flush_patterns(&self) {
        self.flush().await;
        self.patterns.flush().await;
    }
}

/// Trims an environment over its size down to the target, in at most `steps` bounded
/// statements; returns whether more is left to remove (false once done, or on an error,
/// which is logged: the next batch or sweep tries again).
async fn trim(store: &Store, environment_id: &str, limits: &LogLimits, steps: usize) -> bool {
    for _ in 0..steps {
        match store
            .trim_environment_logs(environment_id, limits.trim_target(), TRIM_CHUNK)
            .await
        {
            Ok(t) if !t.more => return false,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(environment.id = %environment_id, error = %err, "trimming logs failed");
                return false;
            }
        }
    }
    true
}

/// Removes lines past their age, then trims environments still over their size (a
/// setting lowered since they were written), in bounded steps that let the writer in
/// between.
async fn sweep(store: &Store, limits: &LogLimits) {
    let before = now_ms() - limits.retention_age.as_millis() as i64;
    let mut expired = 0;
    loop {
        match store.expire_logs(before, EXPIRE_CHUNK).await {
            Ok(0) => break,
            Ok(n) => expired += n,
            Err(err) => {
                tracing::warn!(error = %err, "removing old log lines failed");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if expired > 0 {
        tracing::info!(lines = expired, "removed log lines past their retention");
    }
    match store.environments_over(limits.retention_bytes).await {
        Ok(over) => {
            for environment_id in over {
                while trim(store, &environment_id, limits, 1).await {
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "listing environments over their log size failed"),
    }
}

/// A token bucket over one instance's output: `--log-rate` lines a second with a burst
/// as large; what is over is counted, and reported at most once a second (and at the
/// end) in front of a line that passes.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
    dropped: u64,
    reported: Option<Instant>,
}

impl RateLimit {
    /// A full bucket of `rate_per_second` lines.
    pub fn new(rate_per_second: u32) -> Self {
        let rate = f64::from(rate_per_second.max(1));
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
            dropped: 0,
            reported: None,
        }
    }

    /// The note that reports `n` lines dropped over this rate.
    pub fn dropped_note(&self, n: u64) -> String {
        format!("… {n} lines dropped: over {:.0} lines/s", self.rate)
    }

    /// Whether a line may pass now.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_drops_are_counted() {
        let start = Instant::now();
        let mut limit = RateLimit::new(1000);
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
        assert_eq!(limit.dropped_note(7), "… 7 lines dropped: over 1000 lines/s");
    }
}
