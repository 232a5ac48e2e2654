//! The log sink: build and runtime lines are queued here and written to the store in
//! batches by one task, so a chatty app costs one insert per batch, not per line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::store::{self, NewLogLine, Store};
use crate::util::now_ms;

enum Msg {
    Line(NewLogLine),
    Flush(oneshot::Sender<()>),
}

/// Secret values shorter than this are not redacted: masking every "1" or "on" would
/// garble logs without protecting anything.
const MIN_REDACTED_LEN: usize = 4;

/// A cheap, cloneable handle to the log writer. Lines of a deployment are redacted
/// (`***`) of that deployment's secret values before they are stored, so no reader of
/// any log ever sees them.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<Msg>,
    secrets: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl LogSink {
    /// Starts the writer task.
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
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
                if !batch.is_empty()
                    && let Err(err) = store::append_logs(&store, &batch).await
                {
                    tracing::warn!(error = %err, lines = batch.len(), "writing log lines failed");
                }
                for w in waiters {
                    let _ = w.send(());
                }
            }
        });
        Self {
            tx,
            secrets: Arc::default(),
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

    fn redact(&self, deployment_id: &str, line: String) -> String {
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

    /// Queues one line.
    pub fn write(&self, deployment_id: &str, kind: &'static str, stream: &'static str, line: String) {
        let line = self.redact(deployment_id, line);
        let _ = self.tx.send(Msg::Line(NewLogLine {
            deployment_id: deployment_id.to_string(),
            kind,
            stream,
            ts: now_ms(),
            line,
        }));
    }

    /// Waits until every line queued so far is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
