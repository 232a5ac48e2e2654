//! The log sink: build and runtime lines are queued here and written to the store in
//! batches by one task, so a chatty app costs one insert per batch, not per line.

use tokio::sync::{mpsc, oneshot};

use crate::store::{self, NewLogLine, Store};
use crate::util::now_ms;

enum Msg {
    Line(NewLogLine),
    Flush(oneshot::Sender<()>),
}

/// A cheap, cloneable handle to the log writer.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<Msg>,
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
        Self { tx }
    }

    /// Queues one line.
    pub fn write(&self, deployment_id: &str, kind: &'static str, stream: &'static str, line: String) {
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
