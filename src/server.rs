//! `berth serve`: assembles the platform and runs the control plane (API, MCP, dashboard, health)
//! and the edge proxy until shutdown. Takes its listeners' addresses from the config and
//! publishes the bound ports in `DIR/ports.json`, so tests and scripts can use port 0.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_build::sandbox::Sandbox;
use berth_edge::{Edge, EdgeConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Authenticator};
use crate::config::ServeConfig;
use crate::deploy::{DEPLOY_JOB, DeployHandler};
use crate::error::ServiceError;
use crate::jobs::JobHandler;
use crate::mcp::BerthMcp;
use crate::prometheus::Audience;
use crate::runtime::LogSink;
use crate::service::{Platform, Service};
use crate::store::Store;
use crate::util::new_id;

/// Runs the server until `shutdown` resolves, then stops apps and exits cleanly.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    check_bootstrap_key(config.bootstrap_key.as_deref())?;
    check_metrics_token(config.metrics.token.as_deref())?;
    crate::prometheus::start();
    let geoip = match config.metrics.geoip_db.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => Some(crate::geoip::GeoIp::open(path).map_err(|message| anyhow::anyhow!(message))?),
        None => None,
    };
    let otlp_headers = crate::otlp::parse_headers(config.metrics.otlp_headers.as_deref().unwrap_or_default())
        .map_err(|message| anyhow::anyhow!(message))?;
    if let Some(endpoint) = config.metrics.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        crate::otlp::start(endpoint, otlp_headers).map_err(|message| anyhow::anyhow!(message))?;
    }
    // Everything berth writes (database, WAL, keys, logs, builds) is its user's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // The shared folder is checked before berth makes anything in it.
    if let Some(shared) = &config.shared_dir {
        prepare_shared_dir(shared)?;
    }
    std::fs::create_dir_all(config.deployments_dir())?;
    std::fs::create_dir_all(config.uploads_dir())?;
    restrict_data_dir(&config.data_dir)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let local_repos = crate::source::LocalRepoPolicy::new(&config.allow_local_repos, &config.data_dir)
        .map_err(|message| anyhow::anyhow!(message))?;
    // Ports first: a first start whose port is taken must fail before it creates the org
    // and prints a key nobody can use.
    let api_listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "binding the API to {} (is another server running? pick another with --listen)",
            config.listen
        )
    })?;
    let edge_listener = TcpListener::bind(config.edge_listen).await.with_context(|| {
        format!(
            "binding the edge proxy to {} (is another server running? pick another with --edge-listen)",
            config.edge_listen
        )
    })?;
    let edge_tls_listener = TcpListener::bind(config.edge_tls_listen).await.with_context(|| {
        format!(
            "binding the edge's HTTPS listener to {} (is another server running? pick another with --edge-tls-listen)",
            config.edge_tls_listen
        )
    })?;
    let store = Store::open(&config.database_url()).await?;
    bootstrap(&store, &config).await?;
    // This data dir's id: Docker containers are labelled with it and job leases name it.
    let replica_id = crate::runtime::docker::DockerProvider::owner_id(&config.data_dir)
        .context("writing the docker owner id into the data dir")?;
    // The installation's id (the first server's data dir id): every replica of this
    // database labels its containers with it, so that any of them can adopt them.
    let owner = store.installation_value("docker_owner", &replica_id).await?;

    let api_addr = api_listener.local_addr()?;
    let edge_addr = edge_listener.local_addr()?;
    let edge_tls_addr = edge_tls_listener.local_addr()?;

    let sandbox = Arc::new(Sandbox::detect());
    let isolation = Arc::new(
        crate::runtime::isolation::Isolation::setup(&sandbox, config.sandbox.settings(&config.data_dir)).await,
    );
    let logs = LogSink::start(store.clone(), config.logs.limits());
    let reconcile_wake = Arc::new(Notify::new());
    let build_contexts = crate::runtime::build_contexts::BuildContexts::new(config.data_dir.join("build-contexts"))
        .context("creating the build contexts folder")?;
    let targets = crate::runtime::Targets::assemble(
        &crate::runtime::target::Assembly {
            sandbox: sandbox.clone(),
            isolation: isolation.clone(),
            data_dir: config.data_dir.clone(),
            owner,
            // On loopback the API is out of apps' reach already.
            shielded_ports: if api_addr.ip().is_loopback() {
                vec![]
            } else {
                vec![api_addr.port()]
            },
            build_contexts: build_contexts.clone(),
            build_concurrency: config.build_concurrency,
        },
        logs.clone(),
        reconcile_wake.clone(),
    )?;
    let runtime = targets.lifecycle().clone();
    let edge = Edge::new(EdgeConfig {
        https_port: Some(edge_tls_addr.port()),
        ..EdgeConfig::default()
    });
    if crate::otlp::enabled() && config.metrics.otlp_sample_ratio > 0.0 {
        edge.set_request_tracer(config.metrics.otlp_sample_ratio, crate::otlp::request_span);
    }
    if let Some(geoip) = geoip {
        tracing::info!(database = geoip.database_type(), "counting requests by client country");
        edge.set_country_lookup(move |ip| geoip.country(ip));
    }
    let platform = Arc::new(Platform::new(
        config.clone(),
        (edge_addr.port(), edge_tls_addr.port()),
        store.clone(),
        sandbox,
        isolation,
        targets,
        logs.clone(),
        edge.clone(),
        reconcile_wake,
        crate::crypto::SecretBox::load(&config.data_dir, config.master_key.as_deref())?,
        local_repos,
        &replica_id,
    ));
    // Only our own: jobs another process on this database holds are taken over when
    // their leases expire, never at start.
    let orphaned = platform.jobs.requeue_own().await?;
    // Counted among the replicas on this database before the API answers.
    crate::replicas::announce(&store, &replica_id).await?;
    if orphaned > 0 {
        tracing::info!(jobs = orphaned, "requeued jobs interrupted by the previous run");
    }
    platform.key_lookup.load()?;
    let waker_platform = platform.clone();
    let runtime_handle = tokio::runtime::Handle::current();
    edge.set_waker(move |host| {
        let (platform, host) = (waker_platform.clone(), host.to_string());
        runtime_handle.spawn(async move {
            if let Err(err) = platform.wake(&host).await {
                tracing::warn!(host = %host, error = %format!("{err:#}"), "waking a sleeping site failed");
            }
        });
    });
    platform.git.start(&config.data_dir, api_addr)?;
    let service = Service::new(platform.clone());
    service.recover().await?;

    let stop = CancellationToken::new();
    let mut handlers: HashMap<&'static str, Arc<dyn JobHandler>> = HashMap::new();
    handlers.insert(
        DEPLOY_JOB,
        Arc::new(DeployHandler {
            platform: platform.clone(),
        }),
    );
    let workers = tokio::spawn(platform.jobs.clone().run_workers(
        handlers,
        // Builds wait for a build slot inside the job (see build_gate); the rest start apps.
        config.build_concurrency.max(1) + config.start_concurrency as usize,
        stop.child_token(),
    ));
    // Shared targets' leases before the first pass: the holder adopts their instances, the
    // others route to them.
    let shared_leases = crate::loops::shared::singletons(&platform);
    crate::loops::shared::hold_all(&platform, &shared_leases).await;
    // Only replicas (none on SQLite) report their edge's requests to each other.
    let activity = (!shared_leases.is_empty()).then(|| {
        tokio::spawn(crate::loops::shared::share_activity(
            platform.clone(),
            stop.child_token(),
        ))
    });
    let leases = tokio::spawn(crate::loops::shared::run(
        platform.clone(),
        shared_leases,
        stop.child_token(),
    ));
    let reconciler = tokio::spawn(crate::loops::reconciler::run(platform.clone(), stop.child_token()));
    let usage = tokio::spawn(crate::loops::usage::run(platform.clone(), stop.child_token()));
    let autoscaler = tokio::spawn(crate::loops::autoscaler::run(
        platform.autoscaler.clone(),
        platform.edge.clone(),
        platform.reconcile_wake.clone(),
        stop.child_token(),
    ));
    let certificates = tokio::spawn(crate::service::certificates::run(
        Service::new(platform.clone()),
        platform.jobs.singleton(
            crate::service::certificates::LEASE,
            crate::service::certificates::LEASE_TIME,
        ),
        stop.child_token(),
    ));
    let events = tokio::spawn(crate::events::run_pruning(
        store.clone(),
        platform
            .jobs
            .singleton(crate::events::PRUNE_LEASE, crate::events::prune_lease()),
        stop.child_token(),
    ));
    // Other processes' events wake this one's readers (Postgres), and route changes
    // any replica made wake this one's reconciler.
    let listener = tokio::spawn(platform.events.clone().listen(stop.child_token()));
    let routes = tokio::spawn(crate::events::follow_routes(
        platform.events.clone(),
        {
            let platform = platform.clone();
            move || {
                platform.reconcile_wake.notify_one();
                platform.certificates.wake.notify_one();
            }
        },
        {
            let platform = platform.clone();
            move |ask: crate::events::HolderAsk, deployment_id: String| {
                let platform = platform.clone();
                tokio::spawn(async move {
                    if let Err(err) = platform.answer_holder_ask(ask, &deployment_id).await {
                        tracing::warn!(deployment.id = %deployment_id, ?ask, error = %format!("{err:#}"), "doing what another replica asked failed");
                    }
                });
            }
        },
        stop.child_token(),
    ));
    // Every replica's edge answers the HTTP-01 and TLS-ALPN-01 challenges of any order.
    let challenges = tokio::spawn(crate::service::challenges::follow(platform.clone(), stop.child_token()));
    let heartbeat = tokio::spawn(crate::replicas::run_heartbeat(
        store.clone(),
        replica_id.clone(),
        stop.child_token(),
    ));
    let metrics = tokio::spawn(crate::service::metrics::run(
        platform.clone(),
        crate::service::metrics::system_clock(),
        stop.child_token(),
    ));
    // Deployments beyond --keep-deployments left by an older version or a higher setting.
    tokio::spawn({
        let platform = platform.clone();
        async move { platform.prune_all().await }
    });
    tokio::spawn(sweep_leftovers(
        platform.clone(),
        Duration::from_secs(config.sweep_seconds),
        stop.child_token(),
    ));

    let issuer = crate::oauth::public_url(&config, api_addr);
    platform.set_public_url(issuer.clone());
    let app = control_plane_router(
        service,
        &config,
        api_addr.port(),
        Arc::new(
            Authenticator::new(
                store.clone(),
                platform.auth_throttle.clone(),
                platform.key_lookup.clone(),
            )
            .with_mcp_resource(format!("{issuer}/mcp")),
        ),
        issuer,
        build_contexts,
    )?;

    let ports = serde_json::json!({
        "api": api_addr.port(),
        "edge": edge_addr.port(),
        "edge_tls": edge_tls_addr.port(),
    });
    std::fs::write(config.data_dir.join("ports.json"), ports.to_string())?;
    println!("berth control plane (API, MCP at /mcp): http://{api_addr}");
    println!(
        "berth edge proxy: http://{edge_addr} — sites at {}; HTTPS for custom domains on {edge_tls_addr}",
        platform.url_for("<site>", "production")
    );
    tracing::info!(api = %api_addr, edge = %edge_addr, data = %config.data_dir.display(), "berth is ready");

    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut api_stop = tx.subscribe();
    let mut edge_stop = tx.subscribe();
    let mut edge_tls_stop = tx.subscribe();
    let api = tokio::spawn(async move {
        // Without TCP_NODELAY a response written in parts (an MCP call's event stream: the
        // head, the event, the end) waits for the client's delayed ACK, ~40 ms per call.
        use axum::serve::ListenerExt as _;
        let api_listener = api_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(
            api_listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = api_stop.recv().await;
        })
        .await
    });
    let edge_task = tokio::spawn(edge.clone().serve(edge_listener, async move {
        let _ = edge_stop.recv().await;
    }));
    let edge_tls_task = tokio::spawn(edge.serve_tls(edge_tls_listener, async move {
        let _ = edge_tls_stop.recv().await;
    }));

    shutdown.await;
    tracing::info!("shutting down");
    stop.cancel();
    let _ = tx.send(());
    // Long-lived responses (log streams, MCP event streams) would hold a graceful
    // shutdown open forever: give open connections a few seconds, then stop.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = tokio::join!(api, edge_task, edge_tls_task);
    })
    .await;
    let _ = tokio::join!(
        workers,
        leases,
        reconciler,
        usage,
        autoscaler,
        certificates,
        metrics,
        events,
        listener,
        routes,
        challenges,
        heartbeat
    );
    if let Some(activity) = activity {
        let _ = activity.await;
    }
    // The deploys' traces are all queued now: send them before the runtime ends.
    crate::otlp::shutdown(crate::otlp::SHUTDOWN_FLUSH).await;
    runtime.stop_all().await;
    logs.flush().await;
    Ok(())
}

fn control_plane_router(
    service: Service,
    config: &ServeConfig,
    api_port: u16,
    auth: Arc<Authenticator>,
    issuer: String,
    build_contexts: Arc<crate::runtime::build_contexts::BuildContexts>,
) -> anyhow::Result<Router> {
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into(), "[::1]".into()];
    for h in ["localhost", "127.0.0.1", "[::1]"] {
        hosts.push(format!("{h}:{api_port}"));
    }
    hosts.extend(config.allowed_hosts.iter().cloned());
    let mcp_service = service.clone();
    let service_for_git = service.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(BerthMcp::new(mcp_service.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts(hosts),
    );
    let metrics = MetricsEndpoint {
        service: service.clone(),
        auth: auth.clone(),
        token_digest: config
            .metrics
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Sha256::digest(t.as_bytes()).into()),
    };
    // `/api` also accepts the dashboard's session cookie (the pages stream logs from it).
    let ui = crate::ui::UiState {
        service: service.clone(),
        auth,
    };
    let protected = crate::api::router(service)
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            crate::ui::require_key_or_session,
        ));
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_endpoint).with_state(metrics))
        .merge(crate::git_http::router(service_for_git))
        .merge(crate::api::build_context_router(build_contexts))
        .merge(crate::oauth::router(ui.clone(), issuer)?)
        .merge(protected)
        .merge(crate::ui::router(ui)))
}

/// What `GET /metrics` needs: the service, the key authenticator and the SHA-256 of the
/// operator's scrape token (compared as digests, so in constant time whatever its length).
#[derive(Clone)]
struct MetricsEndpoint {
    service: Service,
    auth: Arc<Authenticator>,
    token_digest: Option<[u8; 32]>,
}

/// `GET /metrics`: the scrape token sees every site; any other bearer is an API key, which
/// must belong to an admin with `org:admin` and sees its org's sites.
async fn metrics_endpoint(State(endpoint): State<MetricsEndpoint>, req: Request) -> Response {
    let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(presented) = auth::bearer(header) else {
        return ServiceError::Unauthorized.into_response();
    };
    let presented_digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let is_scrape_token = endpoint.token_digest.is_some_and(|digest| {
        digest
            .iter()
            .zip(presented_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    let body = if is_scrape_token {
        endpoint.service.prometheus_metrics_for(&Audience::Operator).await
    } else {
        match endpoint
            .auth
            .authenticate_from(presented, crate::api::client_ip(&req))
            .await
        {
            Ok(actor) => endpoint.service.prometheus_metrics(&actor).await,
            Err(e) => Err(e),
        }
    };
    match body {
        Ok(text) => ([(CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)], text).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Shortest scrape token accepted: it reads every site's traffic.
pub const MIN_METRICS_TOKEN_CHARS: usize = 24;

/// Refuses a scrape token too short to resist guessing.
fn check_metrics_token(token: Option<&str>) -> anyhow::Result<()> {
    match token.map(str::trim) {
        Some(t) if !t.is_empty() && t.chars().count() < MIN_METRICS_TOKEN_CHARS => anyhow::bail!(
            "BERTH_METRICS_TOKEN is {} characters; use at least {MIN_METRICS_TOKEN_CHARS} random characters (e.g. `openssl rand -hex 16`), or leave it unset to scrape with an admin API key",
            t.chars().count()
        ),
        _ => Ok(()),
    }
}

/// Shortest bootstrap key accepted: it is a long-lived admin credential.
pub const MIN_BOOTSTRAP_KEY_CHARS: usize = 24;

/// Refuses a bootstrap key too short to resist guessing.
fn check_bootstrap_key(key: Option<&str>) -> anyhow::Result<()> {
    match key.map(str::trim) {
        Some(k) if !k.is_empty() && k.chars().count() < MIN_BOOTSTRAP_KEY_CHARS => anyhow::bail!(
            "BERTH_BOOTSTRAP_KEY is {} characters; use at least {MIN_BOOTSTRAP_KEY_CHARS} random characters (e.g. `openssl rand -hex 16`), or leave it unset to have berth generate one",
            k.chars().count()
        ),
        _ => Ok(()),
    }
}

/// What berth keeps directly in its data dir: narrowed at start. Other entries are left
/// alone, in case an operator pointed `--data` at a folder holding other things.
const DATA_FILES: &[&str] = &[
    "berth.db",
    "berth.db-wal",
    "berth.db-shm",
    "berth.db-journal",
    "master.key",
    "ports.json",
    "berth.lock",
    "docker-owner",
    crate::auth::KEY_LOOKUP_FILE,
];
/// Folders berth keeps directly in its data dir.
const DATA_FOLDERS: &[&str] = &["uploads", "git", "cache"];
/// Folders on the way to each deployment's files: traversable by anyone (`0711`), never
/// listable, because each site's own host uid must reach its deployment folders and its
/// builds' disks, which belong to it and are `0700`.
const PASSAGE_FOLDERS: &[&str] = &["deployments", "builds"];

/// Makes the data dir `0711` (see [`PASSAGE_FOLDERS`]), berth's folders in it `0700` (the
/// deployments and builds folders `0711`) and its files `0600`, so a data dir created by an older berth,
/// or copied with other modes, is closed to other users before anything is read from it.
fn restrict_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting the permissions of {}", path.display()))
    };
    set(dir, 0o711)?;
    for (names, kind_ok, mode) in [
        (
            PASSAGE_FOLDERS,
            std::fs::FileType::is_dir as fn(&std::fs::FileType) -> bool,
            0o711,
        ),
        (
            DATA_FILES,
            std::fs::FileType::is_file as fn(&std::fs::FileType) -> bool,
            0o600,
        ),
        (DATA_FOLDERS, std::fs::FileType::is_dir, 0o700),
    ] {
        for name in names {
            let path = dir.join(name);
            // Never through a symlink: only berth's own entries are changed.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| kind_ok(&m.file_type())) {
                set(&path, mode)?;
            }
        }
    }
    Ok(())
}

/// Checks the shared folder (`--shared-dir`): an absolute path to a folder that exists
/// (berth does not create the mount point), with berth's `deployments` folder in it made
/// and, like in the data dir, traversable but not listable by others (`0711`).
fn prepare_shared_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.is_absolute() {
        anyhow::bail!(
            "--shared-dir (BERTH_SHARED_DIR) must be an absolute path, the same on every replica; got {}",
            dir.display()
        );
    }
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        anyhow::bail!(
            "--shared-dir (BERTH_SHARED_DIR) {} is not a folder; mount the storage every replica shares there first",
            dir.display()
        );
    }
    let deployments = dir.join("deployments");
    std::fs::create_dir_all(&deployments).with_context(|| format!("creating {}", deployments.display()))?;
    for path in [dir, deployments.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("restricting the permissions of {}", path.display()))?;
    }
    Ok(())
}

/// Holds an exclusive lock on the data dir for the life of the server: two servers on
/// one SQLite data dir would run each other's jobs and fight over ports.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join("berth.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another berth server is already using the data dir {}; stop it or pass another --data",
            dir.display()
        )
    })
}

/// On a fresh data dir: the default org and an admin key, printed once (or the
/// operator's `BERTH_BOOTSTRAP_KEY`, not echoed).
async fn bootstrap(store: &Store, config: &ServeConfig) -> anyhow::Result<()> {
    if store.count_orgs().await? > 0 {
        return Ok(());
    }
    let org_id = new_id("org");
    let key = match &config.bootstrap_key {
        Some(k) if !k.trim().is_empty() => k.trim().to_string(),
        _ => auth::generate_key(),
    };
    // The bootstrap key owns the org: every scope, no expiry.
    auth::create_org_with_key(store, &org_id, "default", "admin", "owner", &key).await?;
    if config.bootstrap_key.is_some() {
        println!("created org 'default' with the admin API key from BERTH_BOOTSTRAP_KEY");
    } else {
        println!("created org 'default'. Admin API key (shown once, keep it safe):\n\n    {key}\n");
    }
    Ok(())
}

/// Every `every`, providers remove leftovers (containers of instances nothing runs). The
/// first sweep waits as long, so that the reconciler has re-adopted what is wanted after
/// a restart.
/// Only the holder of a shared target's lease sweeps its leftovers, never the containers a
/// deploy (on any replica) is starting.
async fn sweep_leftovers(platform: Arc<Platform>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let starting = match platform.store.deployments_deploying().await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(error = %err, "reading the deployments being started failed; sweeping later");
                continue;
            }
        };
        platform.runtime.sweep(&platform.shared.elsewhere(), &starting).await;
    }
}
