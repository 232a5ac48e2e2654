//! Runtime logs of an environment on a cluster: the pod log API of each of its
//! deployment's pods, followed with timestamps and written into berth's log store (so
//! `HOSTING_GET_LOGS` and the log stream show the app's output). Pods are listed every
//! few seconds, so a new pod (a scale-out, a restart) is followed as it appears; a
//! stream that ends is opened again from the last line's time, skipping lines already
//! written. Bounded: at most [`MAX_PODS`] streams, lines cut at [`MAX_LINE_BYTES`], and
//! the log store's pace (a full queue stops the reading).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;

use super::super::logs::LogSink;
use super::client::{Client, collection_path};

/// Most pods of one deployment followed at once.
const MAX_PODS: usize = 32;
/// Longest line kept; the rest of a longer one is cut.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines of a pod's earlier output read when it is first followed.
const FIRST_TAIL_LINES: u32 = 1000;
/// How often the pods are listed.
const LIST_EVERY: Duration = Duration::from_secs(2);

/// Copies one deployment's pods' output into the log store until dropped.
pub(super) struct Follower {
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts following the pods `selector` picks in `namespace`.
    pub fn start(client: Client, sink: LogSink, namespace: String, selector: String, deployment_id: String) -> Self {
        let task = tokio::spawn(async move { follow_pods(client, sink, namespace, selector, deployment_id).await });
        Self { task }
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Its pod streams live in the task's JoinSet and stop with it.
        self.task.abort();
    }
}

async fn follow_pods(client: Client, sink: LogSink, namespace: String, selector: String, deployment_id: String) {
    let pods_path = collection_path("Pod", Some(&namespace)).expect("known kind");
    let mut streams: JoinSet<(String, Option<OffsetDateTime>)> = JoinSet::new();
    let mut open: HashSet<String> = HashSet::new();
    // The time of the last line written, per pod: where a reopened stream resumes.
    let mut last_seen: HashMap<String, OffsetDateTime> = HashMap::new();
    loop {
        while let Some(done) = streams.try_join_next() {
            if let Ok((pod, last)) = done {
                open.remove(&pod);
                if let Some(last) = last {
                    last_seen.insert(pod, last);
                }
            }
        }
        if let Ok(pods) = client.list(&pods_path, &selector).await {
            let started: Vec<String> = pods
                .iter()
                .filter(|p| p["status"]["phase"] != "Pending")
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            last_seen.retain(|pod, _| started.contains(pod));
            for pod in started {
                if open.len() >= MAX_PODS || open.contains(&pod) {
                    continue;
                }
                open.insert(pod.clone());
                let since = last_seen.get(&pod).copied();
                streams.spawn(follow_pod(
                    client.clone(),
                    sink.clone(),
                    namespace.clone(),
                    pod,
                    since,
                    deployment_id.clone(),
                ));
            }
        }
        tokio::time::sleep(LIST_EVERY).await;
    }
}

/// Follows one pod's log until its stream ends; returns the pod and the time of the last
/// line written.
async fn follow_pod(
    client: Client,
    sink: LogSink,
    namespace: String,
    pod: String,
    since: Option<OffsetDateTime>,
    deployment_id: String,
) -> (String, Option<OffsetDateTime>) {
    let from = match since.and_then(|t| t.format(&Rfc3339).ok()) {
        Some(t) => format!("sinceTime={}", t.replace(':', "%3A").replace('+', "%2B")),
        None => format!("tailLines={FIRST_TAIL_LINES}"),
    };
    let path =
        format!("/api/v1/namespaces/{namespace}/pods/{pod}/log?container=app&follow=true&timestamps=true&{from}");
    let mut last = since;
    let Ok(mut response) = client.follow(&path).await else {
        return (pod, last);
    };
    let mut pending: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            write_line(&sink, &deployment_id, &line, &mut last).await;
        }
        if pending.len() > MAX_LINE_BYTES {
            let line = std::mem::take(&mut pending);
            write_line(&sink, &deployment_id, &line, &mut last).await;
        }
    }
    if !pending.is_empty() {
        write_line(&sink, &deployment_id, &pending, &mut last).await;
    }
    (pod, last)
}

/// Follows the log of one container of a pod (a build pod's executor) until its stream
/// ends, sending each line (cut at [`MAX_LINE_BYTES`]) to `lines`; stops early when the
/// receiver is gone.
pub(super) async fn follow_container(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    lines: tokio::sync::mpsc::Sender<String>,
) {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/log?container={container}&follow=true");
    let Ok(mut response) = client.follow(&path).await else {
        return;
    };
    let mut pending: Vec<u8> = Vec::new();
    let send = |raw: &[u8]| {
        let raw = &raw[..raw.len().min(MAX_LINE_BYTES)];
        String::from_utf8_lossy(raw).trim_end_matches(['\n', '\r']).to_string()
    };
    while let Ok(Some(chunk)) = response.chunk().await {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if lines.send(send(&line)).await.is_err() {
                return;
            }
        }
        if pending.len() > MAX_LINE_BYTES {
            let line = std::mem::take(&mut pending);
            if lines.send(send(&line)).await.is_err() {
                return;
            }
        }
    }
    if !pending.is_empty() {
        let _ = lines.send(send(&pending)).await;
    }
}

/// Writes one `TIMESTAMP line` of the log API, unless it is at or before `last` (already
/// written before the stream was reopened).
async fn write_line(sink: &LogSink, deployment_id: &str, raw: &[u8], last: &mut Option<OffsetDateTime>) {
    let raw = &raw[..raw.len().min(MAX_LINE_BYTES)];
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    let (at, line) = match text.split_once(' ') {
        Some((ts, rest)) => match OffsetDateTime::parse(ts, &Rfc3339) {
            Ok(at) => (Some(at), rest),
            Err(_) => (None, text),
        },
        None => match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(at) => (Some(at), ""),
            Err(_) => (None, text),
        },
    };
    if let Some(at) = at {
        if last.is_some_and(|l| at <= l) {
            return;
        }
        *last = Some(at);
    }
    sink.write_output(deployment_id, "stdout", line.to_string(), false)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_api_timestamps_parse() {
        // As the kubelet writes them (RFC 3339 with nanoseconds), and as docker does
        // (trailing zeros dropped).
        for ts in [
            "2026-12-01T10:00:00.123456789Z",
            "2026-12-01T10:00:00.1Z",
            "2026-12-01T10:00:00Z",
        ] {
            assert!(OffsetDateTime::parse(ts, &Rfc3339).is_ok(), "{ts}");
        }
    }
}
