//! Job claim throughput of berth's queue with one and with two replicas on one database:
//! each replica is its own store (its own connection pool) and its own `JobQueue` with
//! eight workers, as `berth serve` runs them; the jobs do nothing, so what is measured is
//! the queue itself (claims with a lease and the workers around them), not a build; the
//! clock stops when the last job has run.
//!
//! Usage: `cargo run --example job_claims -- [--jobs 2000] [--postgres URL]`
//! Without `--postgres` each run gets a fresh SQLite file; with it, a fresh database on that
//! server (e.g. the one scripts/postgres-test-env.sh starts), dropped afterwards. Prints
//! Markdown rows for BENCHMARKS.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth::jobs::{JobFuture, JobHandler, JobQueue};
use berth::store::{JobRow, NewJob, Store};
use sqlx::Executor;
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 8;
const DEADLINE: Duration = Duration::from_secs(600);

/// Counts the jobs it ran, per replica.
struct Count(Arc<AtomicUsize>);

impl JobHandler for Count {
    fn run(&self, _job: JobRow, _cancel: CancellationToken) -> JobFuture {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// A fresh database for one run, and how to drop it.
async fn database(postgres: Option<&str>, name: &str, dir: &std::path::Path) -> anyhow::Result<String> {
    let Some(server) = postgres else {
        return Ok(format!("sqlite://{}", dir.join(format!("{name}.db")).display()));
    };
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(server).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    admin.close().await;
    let base = server.rsplit_once('/').map_or(server, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

async fn drop_database(postgres: Option<&str>, name: &str) -> anyhow::Result<()> {
    if let Some(server) = postgres {
        let admin = sqlx::AnyPool::connect(server).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await?;
        admin.close().await;
    }
    Ok(())
}

/// Enqueues `jobs` jobs, then runs `replicas` queues until all are done: (seconds, jobs per
/// replica).
async fn run(url: &str, jobs: usize, replicas: usize) -> anyhow::Result<(f64, Vec<usize>)> {
    let first = Store::open(url).await?;
    for n in 0..jobs {
        let job = NewJob {
            kind: "noop",
            payload: serde_json::json!({ "n": n }),
            max_attempts: 3,
            idempotency_key: None,
            fair_key: Some(format!("site-{}", n % 50)),
        };
        first.enqueue_job("org", &job).await?;
    }
    let stop = CancellationToken::new();
    let mut counts = Vec::new();
    let mut workers = Vec::new();
    let started = Instant::now();
    for r in 0..replicas {
        let store = if r == 0 { first.clone() } else { Store::open(url).await? };
        let count = Arc::new(AtomicUsize::new(0));
        counts.push(count.clone());
        let mut handlers: HashMap<&'static str, Arc<dyn JobHandler>> = HashMap::new();
        handlers.insert("noop", Arc::new(Count(count)));
        let queue = JobQueue::new(store, &format!("replica-{r}"));
        workers.push(tokio::spawn(queue.run_workers(handlers, WORKERS, stop.child_token())));
    }
    while counts.iter().map(|c| c.load(Ordering::Relaxed)).sum::<usize>() < jobs {
        anyhow::ensure!(started.elapsed() < DEADLINE, "the jobs did not finish in {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    for w in workers {
        w.await?;
    }
    first.close().await;
    Ok((secs, counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let jobs: usize = value("--jobs").map_or(Ok(2000), |v| v.parse())?;
    let postgres = value("--postgres");
    let backend = if postgres.is_some() { "Postgres" } else { "SQLite" };
    let dir = tempfile::tempdir()?;
    println!("| measure | result |");
    println!("| --- | --- |");
    for replicas in [1, 2] {
        let name = format!("berth_bench_claims_{replicas}");
        let url = database(postgres.as_deref(), &name, dir.path()).await?;
        let result = run(&url, jobs, replicas).await;
        drop_database(postgres.as_deref(), &name).await?;
        let (secs, per_replica) = result?;
        println!(
            "| {backend}, {replicas} replica(s) × {WORKERS} workers: {jobs} no-op jobs claimed and run | {:.0} jobs/s ({secs:.1} s; per replica {per_replica:?}) |",
            jobs as f64 / secs
        );
    }
    Ok(())
}
