//! Typed configuration of `berth serve`. Every field is a flag and an environment
//! variable; defaults give a zero-config server on one machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one running control plane.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    /// Data directory: SQLite database, builds, logs. Default `./data`.
    #[arg(long = "data", env = "BERTH_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// The database: `postgres://USER:PASSWORD@HOST:PORT/DB` selects Postgres (teams,
    /// several replicas on one database), `sqlite://PATH` a SQLite file; unset keeps SQLite
    /// in the data dir (`berth.db`). Prefer the environment variable: a password on the
    /// command line shows in the process list.
    #[arg(long = "database-url", env = "BERTH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A folder every replica on one database mounts at this same path (NFS or the like):
    /// deployments' files (static sites' output, apps' built folders) are kept there
    /// instead of in the data dir, so every replica's edge serves every static site.
    /// Default: the data dir.
    #[arg(long = "shared-dir", env = "BERTH_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Address of the control plane (API, MCP, UI). Port 0 picks a free port.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Address of the edge proxy that serves the sites. Port 0 picks a free port.
    #[arg(long, env = "BERTH_EDGE_LISTEN", default_value = "0.0.0.0:8080")]
    pub edge_listen: SocketAddr,
    /// Address of the edge's HTTPS listener (certificates of custom domains, chosen by
    /// SNI). Port 0 picks a free port. Production: `0.0.0.0:443` with `--edge-listen 0.0.0.0:80`.
    #[arg(long, env = "BERTH_EDGE_TLS_LISTEN", default_value = "0.0.0.0:8443")]
    pub edge_tls_listen: SocketAddr,
    /// Sites are served at `<site>.<base-domain>`.
    #[arg(long, env = "BERTH_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// On first start with an empty data dir, this exact string becomes the admin API key.
    /// Only from the environment: a flag would show the key in the process list.
    #[arg(long, env = "BERTH_BOOTSTRAP_KEY", hide_env_values = true, hide = true)]
    pub bootstrap_key: Option<String>,
    /// Master key sealing secrets (64 hex digits or base64 of 32 bytes); default: a key
    /// file generated in the data dir. Only from the environment, like the bootstrap key.
    #[arg(long, env = "BERTH_MASTER_KEY", hide_env_values = true, hide = true)]
    pub master_key: Option<String>,
    /// The control plane's public URL (`https://berth.example.com`): OAuth's issuer, and
    /// `URL/mcp` the resource MCP clients' tokens are bound to. Default: `http://` and the
    /// listen address (`localhost` for a wildcard address).
    #[arg(long, env = "BERTH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Hosts whose client metadata documents may be fetched even though they resolve to
    /// loopback or private addresses (comma-separated; for tests and private setups).
    /// Default: none, so a metadata document must be on a public address.
    #[arg(
        long,
        env = "BERTH_OAUTH_ALLOW_PRIVATE_METADATA_HOSTS",
        value_delimiter = ',',
        hide = true
    )]
    pub oauth_allow_private_metadata_hosts: Vec<String>,
    /// Extra root certificates (PEM file) trusted when fetching client metadata
    /// documents (for private CAs); the system's roots are trusted as well.
    #[arg(long, env = "BERTH_OAUTH_METADATA_CA_ROOTS", hide = true)]
    pub oauth_metadata_ca_roots: Option<PathBuf>,
    /// Extra `Host` values allowed on the control plane (MCP rejects others to stop DNS rebinding).
    #[arg(long, env = "BERTH_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Folders of the server under which a site's `repo` may name a folder or a
    /// `file://` repository (comma-separated). Default: none, so `repo` is a remote URL,
    /// an internal repository or an upload. The data dir is never allowed.
    #[arg(long, env = "BERTH_ALLOW_LOCAL_REPOS", value_delimiter = ',')]
    pub allow_local_repos: Vec<PathBuf>,
    /// Builds run at once; more wait in the queue.
    #[arg(long, env = "BERTH_BUILD_CONCURRENCY", default_value_t = 2)]
    pub build_concurrency: usize,
    /// Deploys that may be starting their app and waiting for its health check at once,
    /// beside the builds (a start holds no build slot).
    #[arg(long, env = "BERTH_START_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub start_concurrency: u64,
    /// Largest source upload accepted (compressed bytes).
    #[arg(long, env = "BERTH_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Largest `git push` body accepted by the internal git server (bytes of pack data).
    #[arg(long, env = "BERTH_MAX_PUSH_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_push_bytes: usize,
    /// How often leftovers of instances nothing runs (containers of another run, say)
    /// are looked for and removed, in seconds; the first sweep waits as long, so that a
    /// restarted server adopts what it still wants first.
    /// What happens when a live deployment crash-loops: its environment goes back to the
    /// deployment before it (`rollback`), or stays on it while it is restarted slowly
    /// (`stay-down`).
    #[arg(long = "on-crash-loop", env = "BERTH_ON_CRASH_LOOP", value_enum, default_value_t = CrashLoopPolicy::Rollback)]
    pub on_crash_loop: CrashLoopPolicy,
    /// Deployments kept per environment (newest first, plus any an environment serves);
    /// older ones lose their files, logs and record.
    #[arg(long = "keep-deployments", env = "BERTH_KEEP_DEPLOYMENTS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub keep_deployments: u64,
    #[arg(long = "sweep-interval", env = "BERTH_SWEEP_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub sweep_seconds: u64,
    /// Time limits of each deploy stage.
    #[command(flatten)]
    pub timeouts: StageTimeouts,
    /// How much of apps' output is let through and kept.
    #[command(flatten)]
    pub logs: LogConfig,
    /// Host users, network and limits of sandboxed apps and builds.
    #[command(flatten)]
    pub sandbox: SandboxConfig,
    /// Custom domains: the addresses apex records point at, the resolvers DNS checks ask.
    #[command(flatten)]
    pub domains: DomainsConfig,
    /// How long the edge's traffic metrics are kept at each resolution.
    #[command(flatten)]
    pub metrics: MetricsConfig,
}

/// How long traffic metrics are kept: minute buckets, hour buckets, day buckets.
#[derive(Clone, Debug, clap::Args)]
pub struct MetricsConfig {
    /// Days one-minute buckets are kept.
    #[arg(long = "metrics-minutes-days", env = "BERTH_METRICS_MINUTES_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=90))]
    pub minutes_days: u64,
    /// Days one-hour buckets are kept.
    #[arg(long = "metrics-hours-days", env = "BERTH_METRICS_HOURS_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub hours_days: u64,
    /// Days one-day buckets are kept.
    #[arg(long = "metrics-days-days", env = "BERTH_METRICS_DAYS_DAYS", default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=36500))]
    pub days_days: u64,
    /// Bearer token a Prometheus scraper may send to `GET /metrics` (besides an admin API
    /// key with `org:admin`); at least 24 characters. Only from the environment
    /// (`BERTH_METRICS_TOKEN`): on the command line it would show in the process list.
    #[arg(long = "metrics-token", env = "BERTH_METRICS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// OTLP/HTTP collector base URL (`http://127.0.0.1:4318`): each deploy is exported as a
    /// trace to `<endpoint>/v1/traces`. Unset (the default): nothing is recorded or sent.
    #[arg(long = "otlp-endpoint", env = "BERTH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Headers sent with each OTLP export (`key=value,…`, values percent-encoded), e.g. the
    /// collector's `Authorization`. Only from the environment (`BERTH_OTLP_HEADERS`): on
    /// the command line it would show in the process list. Never logged.
    #[arg(
        long = "otlp-headers",
        env = "BERTH_OTLP_HEADERS",
        hide_env_values = true,
        hide = true
    )]
    pub otlp_headers: Option<String>,
    /// Share of the requests through the edge exported as `request` spans (0 to 1), with
    /// `--otlp-endpoint`. Default 0: none, and the edge draws nothing.
    #[arg(long = "otlp-sample-ratio", env = "BERTH_OTLP_SAMPLE_RATIO", default_value_t = 0.0, value_parser = parse_ratio)]
    pub otlp_sample_ratio: f64,
    /// GeoIP database (MaxMind DB format: a GeoLite2 or GeoIP2 Country or City `.mmdb`):
    /// requests are then counted by their client's country. Unset (the default): no
    /// countries.
    #[arg(long = "geoip-db", env = "BERTH_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
}

impl MetricsConfig {
    /// The store's retention.
    pub fn retention(&self) -> crate::store::metrics::Retention {
        let days = |d: u64| d as i64 * crate::store::metrics::DAY_MS;
        crate::store::metrics::Retention {
            minutes_ms: days(self.minutes_days),
            hours_ms: days(self.hours_days),
            days_ms: days(self.days_days),
        }
    }
}

/// A share from 0 to 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "'{}' is not a share; give a number from 0 to 1 (0.01 traces one request in a hundred)",
            text.chars().take(20).collect::<String>()
        )),
    }
}

/// What custom domains need to know about this server and the DNS it checks against.
#[derive(Clone, Debug, clap::Args)]
pub struct DomainsConfig {
    /// Public IPv4 address of this server: the A record an apex domain must have.
    #[arg(long = "public-ipv4", env = "BERTH_PUBLIC_IPV4")]
    pub public_ipv4: Option<std::net::Ipv4Addr>,
    /// Public IPv6 address of this server: the AAAA record an apex domain must have.
    #[arg(long = "public-ipv6", env = "BERTH_PUBLIC_IPV6")]
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// Resolvers that domain checks ask (`IP[:PORT]`, comma-separated; port 53 when
    /// omitted). Default: the system's (`/etc/resolv.conf`).
    #[arg(long = "dns-resolvers", env = "BERTH_DNS_RESOLVERS", value_delimiter = ',', value_parser = parse_resolver)]
    pub dns_resolvers: Vec<SocketAddr>,
    /// The certificate authority's CAA domain: a CAA record on a domain (or above it) must
    /// allow it.
    #[arg(
        long = "acme-ca-domain",
        env = "BERTH_ACME_CA_DOMAIN",
        default_value = "letsencrypt.org"
    )]
    pub acme_ca_domain: String,
    /// The ACME directory certificates are ordered from (Let's Encrypt's by default; its
    /// staging directory or another CA by URL). `none` turns certificates off: domains are
    /// then served over plain HTTP once their DNS checks out (for servers behind another
    /// TLS terminator).
    #[arg(
        long = "acme-directory",
        env = "BERTH_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub acme_directory: String,
    /// Contact email of berth's ACME account (the CA writes about expiring certificates
    /// and policy changes).
    #[arg(long = "acme-email", env = "BERTH_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// Extra root certificates (PEM file) to trust when talking to the ACME server, for
    /// private CAs; the system's roots are trusted as well.
    #[arg(long = "acme-ca-roots", env = "BERTH_ACME_CA_ROOTS")]
    pub acme_ca_roots: Option<PathBuf>,
    /// External account binding key id, for CAs that require one (with
    /// `BERTH_ACME_EAB_HMAC_KEY`).
    #[arg(long = "acme-eab-kid", env = "BERTH_ACME_EAB_KID")]
    pub acme_eab_kid: Option<String>,
    /// External account binding HMAC key (base64url). Only from the environment.
    #[arg(
        long = "acme-eab-hmac-key",
        env = "BERTH_ACME_EAB_HMAC_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub acme_eab_hmac_key: Option<String>,
}

impl DomainsConfig {
    /// Whether certificates are ordered at all (`--acme-directory none` turns them off).
    pub fn acme_enabled(&self) -> bool {
        !self.acme_directory.eq_ignore_ascii_case("none")
    }
}

fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => Ok(SocketAddr::new(ip, 53)),
        Err(_) => Err(format!(
            "'{text}' is not a resolver address such as 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53"
        )),
    }
}

/// How much of apps' output is let through and kept: a rate per instance, a size and an
/// age per environment.
#[derive(Clone, Debug, clap::Args)]
pub struct LogConfig {
    /// Lines a second each app instance may log, with a burst as large; what is over is
    /// dropped and counted in its log.
    #[arg(long = "log-rate", env = "BERTH_LOG_RATE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Log kept per environment in MiB, build and runtime lines of all its deployments
    /// together (each line counts its text and 256 bytes); the oldest runtime lines go first.
    #[arg(long = "log-retention-mb", env = "BERTH_LOG_RETENTION_MB", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub retention_mb: u64,
    /// Days a log line is kept.
    #[arg(long = "log-retention-days", env = "BERTH_LOG_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub retention_days: u64,
}

impl LogConfig {
    /// The log sink's limits.
    pub fn limits(&self) -> crate::runtime::logs::LogLimits {
        crate::runtime::logs::LogLimits {
            rate_per_second: self.rate,
            retention_bytes: (self.retention_mb << 20) as i64,
            retention_age: Duration::from_secs(self.retention_days * 24 * 3600),
        }
    }
}

/// How apps and builds of the local provider are confined (when berth runs as root).
#[derive(Clone, Debug, clap::Args)]
pub struct SandboxConfig {
    /// Host uids handed to sites, one per site, never reused (`FIRST-LAST`).
    #[arg(long = "sandbox-uids", env = "BERTH_SANDBOX_UIDS", default_value = "200000-299999", value_parser = parse_uid_range)]
    pub uids: (u32, u32),
    /// IPv4 subnet of app network namespaces (a /30 each).
    #[arg(long = "app-subnet", env = "BERTH_APP_SUBNET", default_value = "10.213.0.0/16", value_parser = crate::runtime::isolation::AppSubnet::parse)]
    pub subnet: crate::runtime::isolation::AppSubnet,
    /// Memory of each app instance in MiB (its `/tmp` counts too; no swap beyond it).
    #[arg(long = "app-memory-mb", env = "BERTH_APP_MEMORY_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub app_memory_mb: u64,
    /// CPU of each app instance, in cores.
    #[arg(long = "app-cpus", env = "BERTH_APP_CPUS", default_value_t = 1.0, value_parser = parse_cpus)]
    pub app_cpus: f64,
    /// Processes and threads of each app instance.
    #[arg(long = "app-pids", env = "BERTH_APP_PIDS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    pub app_pids: u64,
    /// Writable space of each app instance in MiB: a layer over its folder that holds
    /// what it writes there (kept in memory, counted against its memory; gone when the
    /// instance stops).
    #[arg(long = "app-disk-mb", env = "BERTH_APP_DISK_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub app_disk_mb: u64,
    /// Memory of a deployment's build steps in MiB.
    #[arg(long = "build-memory-mb", env = "BERTH_BUILD_MEMORY_MB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    pub build_memory_mb: u64,
    /// CPU of a deployment's build steps, in cores.
    #[arg(long = "build-cpus", env = "BERTH_BUILD_CPUS", default_value_t = 2.0, value_parser = parse_cpus)]
    pub build_cpus: f64,
    /// Processes and threads of a deployment's build steps.
    #[arg(long = "build-pids", env = "BERTH_BUILD_PIDS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    pub build_pids: u64,
    /// Writable disk of a deployment's build steps in MiB: a file of this size on the
    /// data dir's disk, formatted and mounted for the build, removed after it.
    #[arg(long = "build-disk-mb", env = "BERTH_BUILD_DISK_MB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub build_disk_mb: u64,
    /// Total size in MiB of the resource disks (`HOSTING_CREATE_RESOURCE`) one org may hold.
    #[arg(long = "resources-max-mb", env = "BERTH_RESOURCES_MAX_MB", default_value_t = 20_480, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub resources_max_mb: u64,
}

impl SandboxConfig {
    /// The isolation's settings; build disks are made in `data_dir`.
    pub fn settings(&self, data_dir: &std::path::Path) -> crate::runtime::isolation::IsolationSettings {
        use crate::runtime::isolation::Limits;
        crate::runtime::isolation::IsolationSettings {
            uids: self.uids,
            subnet: self.subnet,
            app: Limits {
                memory_bytes: self.app_memory_mb << 20,
                cpus: self.app_cpus,
                pids: self.app_pids,
            },
            build: Limits {
                memory_bytes: self.build_memory_mb << 20,
                cpus: self.build_cpus,
                pids: self.build_pids,
            },
            app_disk_bytes: self.app_disk_mb << 20,
            build_disk_bytes: self.build_disk_mb << 20,
            builds_dir: data_dir.join(crate::runtime::isolation::build_disk::BUILDS_DIR),
            resources_dir: data_dir.join(crate::runtime::isolation::resource_disk::RESOURCES_DIR),
        }
    }
}

fn parse_uid_range(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("'{text}' is not a uid range such as 200000-299999");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first: u32 = first.trim().parse().map_err(|_| bad())?;
    let last: u32 = last.trim().parse().map_err(|_| bad())?;
    if first < 1000 || last < first || last >= 4_294_967_294 {
        return Err(format!(
            "the uid range {text} must start at 1000 or above (never root or a system user) and not be empty"
        ));
    }
    Ok((first, last))
}

fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(c) if (0.01..=1024.0).contains(&c) => Ok(c),
        _ => Err(format!("'{text}' is not a number of cores between 0.01 and 1024")),
    }
}

/// The time a deploy may spend in each stage before it fails with a clear error.
#[derive(Clone, Debug, clap::Args)]
pub struct StageTimeouts {
    /// Fetching the source (git clone, copy).
    #[arg(long = "clone-timeout", env = "BERTH_CLONE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub clone_seconds: u64,
    /// Installing dependencies.
    #[arg(
        long = "install-timeout",
        env = "BERTH_INSTALL_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    pub install_seconds: u64,
    /// Running the build script.
    #[arg(long = "build-timeout", env = "BERTH_BUILD_TIMEOUT_SECONDS", default_value_t = 900)]
    pub build_seconds: u64,
    /// From process start until its health check passes.
    #[arg(long = "start-timeout", env = "BERTH_START_TIMEOUT_SECONDS", default_value_t = 60)]
    pub start_seconds: u64,
}

impl StageTimeouts {
    /// Timeout of a named build step.
    pub fn for_step(&self, name: &str) -> Duration {
        Duration::from_secs(if name == "install" {
            self.install_seconds
        } else {
            self.build_seconds
        })
    }
    /// Source fetch timeout.
    pub fn fetch(&self) -> Duration {
        Duration::from_secs(self.clone_seconds)
    }
    /// The longest a deploy's image build may take (a build Job's deadline too).
    pub fn build(&self) -> Duration {
        Duration::from_secs(self.build_seconds)
    }
    /// Start-to-healthy timeout.
    pub fn start(&self) -> Duration {
        Duration::from_secs(self.start_seconds)
    }
}

impl ServeConfig {
    /// The SQLite database file used when no database URL is given.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("berth.db")
    }
    /// The database URL: the one given, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => format!("sqlite://{}", self.database_path().display()),
        }
    }
    /// Where each deployment's source and build output live.
    pub fn deployments_dir(&self) -> PathBuf {
        self.shared_dir.as_deref().unwrap_or(&self.data_dir).join("deployments")
    }
    /// Where uploads are received before their deployment exists.
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
    /// Each site's build cache (installed dependencies, package managers), by site id.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }
}

/// What to do when a live deployment crash-loops (`--on-crash-loop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CrashLoopPolicy {
    /// Point the environment back at its previous deployment.
    Rollback,
    /// Keep the environment on it; it is restarted slowly until it recovers.
    StayDown,
}
