//! The `berth` binary: `serve` runs the platform; the other subcommands are clients.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::cli::{self, ClientArgs};
use berth::config::ServeConfig;
use clap::{Parser, Subcommand};

/// berth: an agent-native hosting control plane you run yourself.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane (API, MCP, dashboard) and the edge proxy.
    Serve(Box<ServeConfig>),
    /// Deploy a folder (packed honouring .gitignore and uploaded) or a git repository URL
    /// (cloned by the server), follow the build, print the URL.
    Deploy {
        /// The app folder, or a git URL (https://…, ssh://…, git@host:path, file://…).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Site name (created if it does not exist); default: the folder's or repository's name.
        #[arg(long)]
        site: Option<String>,
        /// Branch to deploy (git URLs; default: the site's branch, or the repository's default).
        #[arg(long)]
        branch: Option<String>,
        /// Return once queued instead of following the build.
        #[arg(long)]
        no_wait: bool,
        /// Upload, build and apply nothing: print the objects a release of the site's
        /// production environment would apply (kubernetes sites), who checked them
        /// (checked_by) and a note.
        #[arg(long)]
        dry_run: bool,
        /// Build settings for this deployment only (for a site this creates: its settings).
        #[command(flatten)]
        settings: cli::BuildSettingsArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List sites, or change one's settings: `berth sites update NAME --start-command '…'`.
    Sites {
        #[command(subcommand)]
        action: Option<SitesCommand>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one site: status, environments, deployments, log tails.
    Site {
        /// Site name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a site's deployments, newest first.
    Deployments {
        /// Site name.
        site: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a deployment's logs (or the latest deployment's of a site).
    Logs {
        /// Deployment id (`dpl_…`) or site name.
        target: String,
        /// build, runtime or all.
        #[arg(long)]
        kind: Option<String>,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// List a site's environments (production and previews), or create or delete one:
    /// `berth environments create SITE staging --branch staging`.
    #[command(args_conflicts_with_subcommands = true)]
    Environments {
        #[command(subcommand)]
        action: Option<EnvironmentsCommand>,
        /// Site name (to list its environments).
        site: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a site's custom domains, or attach, check or remove one:
    /// `berth domains add SITE app.example.com`, then `berth domains check SITE app.example.com`.
    #[command(args_conflicts_with_subcommands = true)]
    Domains {
        #[command(subcommand)]
        action: Option<DomainsCommand>,
        /// Site name (to list its domains).
        site: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List, show, create or delete resources (persistent stores attached to a site):
    /// `berth resources create main-db --site SITE`.
    Resources {
        #[command(subcommand)]
        action: ResourcesCommand,
    },
    /// Show or change how an environment scales: `berth scale SITE --min 1 --max 3`.
    Scale {
        /// Site name.
        site: String,
        /// Environment (default production).
        #[arg(long)]
        environment: Option<String>,
        /// Instances kept running however quiet it is (0 sleeps when idle).
        #[arg(long)]
        min: Option<i64>,
        /// Most instances; above 1 the environment scales out on concurrency.
        #[arg(long)]
        max: Option<i64>,
        /// Seconds without requests before an environment with --min 0 sleeps.
        #[arg(long)]
        idle_timeout: Option<i64>,
        /// In-flight requests per instance to aim for.
        #[arg(long)]
        target_concurrency: Option<i64>,
        /// Memory of each instance in MiB (0 = the server's default).
        #[arg(long)]
        memory_mb: Option<i64>,
        /// CPU of each instance in cores (0 = the server's default).
        #[arg(long)]
        cpus: Option<f64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Traffic of a site as the edge counted it: `berth metrics SITE --since 24h --paths`.
    Metrics {
        /// Site name.
        site: String,
        /// Environment (default production).
        #[arg(long)]
        environment: Option<String>,
        /// Start: a duration back from now (30m, 24h, 7d) or an RFC 3339 time (default 1h).
        #[arg(long)]
        since: Option<String>,
        /// End: same forms as --since (default now).
        #[arg(long)]
        until: Option<String>,
        /// Show the busiest path templates.
        #[arg(long)]
        paths: bool,
        /// Show requests by status code.
        #[arg(long)]
        codes: bool,
        /// Show runtime error patterns next to the 5xx by path template.
        #[arg(long)]
        errors: bool,
        /// Show which environments, status codes, path templates and deployments the range
        /// holds (values for the other views' filters).
        #[arg(long)]
        fields: bool,
        /// Show a timeline at this resolution (1m, 1h or 1d).
        #[arg(long)]
        timeline: Option<String>,
        /// Path templates shown with --paths, error templates with --errors (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point an environment at a built deployment (no rebuild).
    Promote {
        /// Site name.
        site: String,
        /// Deployment id (`dpl_…`).
        deployment: String,
        /// Environment (default production).
        #[arg(long)]
        environment: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point an environment back at its previous built deployment.
    Rollback {
        /// Site name.
        site: String,
        /// Environment (default production).
        #[arg(long)]
        environment: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show (masked) or set a site's env vars: `berth env SITE KEY=VALUE --unset OLD`.
    Env {
        /// Site name.
        site: String,
        /// KEY=VALUE pairs to set.
        assignments: Vec<String>,
        /// Names to delete.
        #[arg(long)]
        unset: Vec<String>,
        /// One environment only (default: the whole site).
        #[arg(long)]
        environment: Option<String>,
        /// Restart running apps now.
        #[arg(long)]
        restart: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show or change provider settings: `berth config docker host=unix:///run/docker.sock`.
    /// Values that parse as JSON (numbers, true, objects) are sent as such; `key=-` reads
    /// the value from the first line of stdin, keeping a secret out of the command line.
    Config {
        /// Provider (all when absent).
        provider: Option<String>,
        /// key=value pairs to set (`key=-`: the value from stdin).
        assignments: Vec<String>,
        /// Keys to remove.
        #[arg(long)]
        unset: Vec<String>,
        /// Try the provider's connection with its settings.
        #[arg(long)]
        test: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or building deployment.
    Cancel {
        /// Deployment id.
        deployment: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a site with its deployments, logs and files.
    Delete {
        /// Site name.
        site: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent snapshot of the SQLite database to a new file, and the resource
    /// disks it lists to FILE.resources (safe while the server and its apps run; run it on
    /// the server's machine as the user berth runs as). A Postgres database is backed up
    /// with pg_dump instead.
    Backup {
        /// The server's data dir.
        #[arg(long = "data", env = "BERTH_DATA", default_value = "data")]
        data_dir: PathBuf,
        /// The server's database, if not SQLite in the data dir (a Postgres one is refused:
        /// use pg_dump).
        #[arg(long = "database-url", env = "BERTH_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The backup file to create.
        #[arg(long)]
        out: PathBuf,
        /// Leave the resource disks out (the database snapshot only).
        #[arg(long)]
        no_resources: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a whole installation into a new, empty database (SQLite to Postgres or back):
    /// every table, ids kept, sealed secrets as they are (the target needs the same master
    /// key); row counts verified. Stop the server first. Pass URLs holding a password
    /// through BERTH_MIGRATE_FROM / BERTH_MIGRATE_TO rather than argv.
    MigrateDb {
        /// The database to copy: sqlite://DATA/berth.db or postgres://….
        #[arg(long, env = "BERTH_MIGRATE_FROM", hide_env_values = true)]
        from: String,
        /// The new, empty database to copy into: postgres://… or sqlite://PATH.
        #[arg(long, env = "BERTH_MIGRATE_TO", hide_env_values = true)]
        to: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Speak MCP over stdio, relayed to the server at BERTH_URL.
    Mcp,
    /// Internal git repositories: list them, create one, get push credentials.
    Repo {
        #[command(subcommand)]
        action: RepoCommand,
    },
    /// What the org used in a month (UTC): requests, bytes out, builds, instance hours,
    /// in total and per site.
    Usage {
        /// The month, YYYY-MM (default the current one).
        #[arg(long)]
        month: Option<String>,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who the API key is: org, user, role, scopes, site restriction, expiry, allowed
    /// actions, and a person's orgs.
    Whoami {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The org's members: add one (making their dashboard account), list, change a role,
    /// remove.
    Users {
        #[command(subcommand)]
        action: UsersCommand,
    },
    /// API keys: create one (shown once), list, revoke.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Connected applications (OAuth grants): list, revoke one, or freeze every one of the
    /// org at once.
    Agents {
        #[command(subcommand)]
        action: AgentsCommand,
    },
    /// The org's audit log, newest first, one page: who did what, when, with which
    /// arguments (secrets removed) and outcome. Admins only.
    Audit {
        /// Only this tool or action, e.g. HOSTING_SET_ENV_VARS.
        #[arg(long)]
        action: Option<String>,
        /// Only this kind of caller: user, key, oauth_client or system.
        #[arg(long)]
        actor_kind: Option<String>,
        /// Only callers whose name or email contains this text.
        #[arg(long)]
        actor: Option<String>,
        /// Only ok or only error calls.
        #[arg(long)]
        outcome: Option<String>,
        /// Only calls at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only calls before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Entries per page (default 50, at most 200).
        #[arg(long)]
        limit: Option<u32>,
        /// The cursor printed by the previous page (keep the same filters).
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Orgs: create another one, owned by you.
    Orgs {
        #[command(subcommand)]
        action: OrgsCommand,
    },
    /// Run by git inside a push to the internal git server (not for people).
    #[command(hide = true)]
    GitHook {
        /// The hook git runs (post-receive).
        hook: String,
    },
}

#[derive(Subcommand, Debug)]
enum SitesCommand {
    /// Change a site's settings; they apply at the next deploy. `--clear output_dir` returns
    /// a setting to detection.
    Update {
        /// Site name.
        name: String,
        /// Build settings.
        #[command(flatten)]
        settings: cli::BuildSettingsArgs,
        /// Branch production deploys from (git sites).
        #[arg(long)]
        branch: Option<String>,
        /// Preview environments for other pushed branches: true or false.
        #[arg(long)]
        previews: Option<bool>,
        /// Runtime provider: local or docker (only while no environment runs an app).
        #[arg(long)]
        provider: Option<String>,
        /// Seconds (0-600, default 30) an old instance may finish its requests after a
        /// deploy, promote, rollback or scale-in before it stops.
        #[arg(long, allow_negative_numbers = true)]
        drain_seconds: Option<i64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum EnvironmentsCommand {
    /// List a site's environments.
    List {
        /// Site name.
        site: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an environment (a preview) and deploy into it.
    Create {
        /// Site name.
        site: String,
        /// Environment name (a DNS label).
        name: String,
        /// Branch to deploy into it (git sites).
        #[arg(long)]
        branch: Option<String>,
        /// Exact commit to deploy into it (git sites).
        #[arg(long)]
        commit: Option<String>,
        /// Return once queued instead of following the build.
        #[arg(long)]
        no_wait: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an environment with its deployments (not production).
    Delete {
        /// Site name.
        site: String,
        /// Environment name.
        name: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ResourcesCommand {
    /// List the org's resources (or those attached to one site).
    List {
        /// Only those attached to this site.
        #[arg(long)]
        site: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one resource: size, bytes used, attached site and the env vars it gives.
    Get {
        /// Resource name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a resource, attached to a site if given (its running apps restart to see it
    /// at /data/NAME).
    Create {
        /// Resource name.
        name: String,
        /// Kind (only `sqlite` now).
        #[arg(long, default_value = "sqlite")]
        kind: String,
        /// Disk size in MiB (default 256, 16 to 10240).
        #[arg(long)]
        size_mb: Option<u32>,
        /// Site to attach it to.
        #[arg(long)]
        site: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a resource and its data.
    Delete {
        /// Resource name.
        name: String,
        /// Delete it even though it is attached (the site's apps restart without it).
        #[arg(long)]
        detach: bool,
        /// Confirm: its data is gone for good.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DomainsCommand {
    /// List a site's domains.
    List {
        /// Site name.
        site: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach a domain to a site and print the DNS records to create.
    Add {
        /// Site name.
        site: String,
        /// The domain, such as app.example.com.
        name: String,
        /// Environment it serves (default production).
        #[arg(long)]
        environment: Option<String>,
        /// Also answer for the www/apex partner with a 308 redirect to it.
        #[arg(long)]
        redirect_www: bool,
        /// Send Strict-Transport-Security on its HTTPS responses.
        #[arg(long)]
        hsts: bool,
        /// Wait until its certificate is served (checking DNS meanwhile), at most this many
        /// seconds.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=600))]
        wait: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a domain's DNS records now; once all are right its certificate is ordered and
    /// it is served.
    Check {
        /// Site name.
        site: String,
        /// The domain.
        name: String,
        /// Wait until its certificate is served, at most this many seconds.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=600))]
        wait: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Detach a domain: it stops being served at once.
    Remove {
        /// Site name.
        site: String,
        /// The domain.
        name: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Add a person to the org with a role; their password (at least 12 characters) is
    /// read from BERTH_PASSWORD or stdin, never from the command line.
    Create {
        /// Their email (the dashboard login).
        #[arg(long)]
        email: String,
        /// owner, admin, developer, deployer or viewer.
        #[arg(long)]
        role: String,
        /// They already have an account on this server: no password is read.
        #[arg(long)]
        existing: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the org's members.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a member's role.
    Role {
        /// Their email.
        email: String,
        /// The new role.
        role: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (their personal keys are revoked).
    Remove {
        /// Their email.
        email: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Invite a person with a role: prints a single-use link (shown once) that lets them
    /// set a password, or sign in, and join.
    Invite {
        /// Their email.
        email: String,
        /// owner, admin, developer, deployer or viewer.
        #[arg(long)]
        role: String,
        /// Days until the link stops working (default 7, at most 30).
        #[arg(long)]
        days: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the org's invitations and their status (never their links).
    Invitations {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a pending invitation: its link stops working.
    RevokeInvitation {
        /// The invitation's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key and print its token once.
    Create {
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// personal (yours; default for a user) or service (the org's; needs admin).
        #[arg(long)]
        kind: Option<String>,
        /// A service key's role (default developer).
        #[arg(long)]
        role: Option<String>,
        /// A scope (repeat): sites:read, logs:read, deploy, env:write, secrets:read,
        /// domains:write, sites:delete, org:admin. Default: all its role can use.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Only this site (repeat). Default: all.
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Only this environment (repeat). Default: all.
        #[arg(long = "environment")]
        environments: Vec<String>,
        /// Days until it expires (default 90, at most 365).
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (the org's for admins, your own otherwise).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum OrgsCommand {
    /// Create an org owned by you (needs owner in the current org, as a person: a
    /// personal key). `berth whoami` lists the orgs you belong to.
    Create {
        /// The org's name: lowercase letters, digits and single hyphens.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AgentsCommand {
    /// List connected applications (the org's for admins, your own otherwise).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a connected application by id: its tokens stop working at once.
    Revoke {
        /// The application's (grant's) id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every connected application of the org and refuse new ones (needs admin).
    Freeze {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let applications connect again (revoked ones must connect anew; needs admin).
    Unfreeze {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RepoCommand {
    /// List the org's repositories (every page).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an empty repository served at /git/<org>/<name>.git.
    Create {
        /// Repository name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print short-lived push credentials (and a ready push URL) for a repository.
    Token {
        /// Repository name.
        name: String,
        /// Lifetime in seconds (default 3600).
        #[arg(long)]
        ttl: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Flags whose values are secrets: accepted only from the environment, since every local
/// user can read a process's arguments.
const SECRET_FLAGS: [(&str, &str); 4] = [
    ("--master-key", "BERTH_MASTER_KEY"),
    ("--bootstrap-key", "BERTH_BOOTSTRAP_KEY"),
    ("--metrics-token", "BERTH_METRICS_TOKEN"),
    ("--otlp-headers", "BERTH_OTLP_HEADERS"),
];

fn main() -> ExitCode {
    for arg in std::env::args_os().skip(1) {
        let arg = arg.to_string_lossy();
        if let Some((flag, var)) = SECRET_FLAGS
            .iter()
            .find(|(flag, _)| arg == *flag || arg.starts_with(&format!("{flag}=")))
        {
            eprintln!(
                "error: {flag} would put a secret in the process list, where every user of this machine can read it; set {var} in the environment instead"
            );
            return ExitCode::from(2);
        }
    }
    let cli = Cli::parse();
    let is_mcp = matches!(cli.command, Command::Mcp);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if matches!(cli.command, Command::Serve(_)) {
                    "info"
                } else {
                    "warn"
                })
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(!is_mcp)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = &cli.client;
    match cli.command {
        Command::Serve(config) => berth::server::serve(*config, shutdown_signal()).await,
        Command::Deploy {
            dir,
            site,
            branch,
            no_wait,
            dry_run,
            settings,
            json,
        } => {
            let target = dir.to_string_lossy().into_owned();
            if dry_run {
                let site = match site {
                    Some(site) => site,
                    None if cli::is_git_url(&target) && !dir.exists() => cli::site_name_for_repo(&target, json)?,
                    None => cli::site_name_for(&dir, json)?,
                };
                return cli::deploy_dry_run(c, &site, branch, &settings, json).await;
            }
            if cli::is_git_url(&target) && !dir.exists() {
                let site = match site {
                    Some(site) => site,
                    None => cli::site_name_for_repo(&target, json)?,
                };
                return cli::deploy_repo(c, &target, &site, branch, !no_wait, &settings, json).await;
            }
            if branch.is_some() {
                anyhow::bail!(
                    "--branch is for git URLs; a folder is deployed as it is (commit and push to deploy a branch)"
                );
            }
            let site = match site {
                Some(site) => site,
                None => cli::site_name_for(&dir, json)?,
            };
            cli::deploy(c, &dir, &site, !no_wait, &settings, json).await
        }
        Command::Sites { action: None, json } => cli::sites(c, json).await,
        Command::Sites {
            action:
                Some(SitesCommand::Update {
                    name,
                    settings,
                    branch,
                    previews,
                    provider,
                    drain_seconds,
                    json,
                }),
            ..
        } => cli::update_site(c, &name, &settings, branch, previews, provider, drain_seconds, json).await,
        Command::Site { name, json } => cli::site(c, &name, json).await,
        Command::Deployments { site, json } => cli::deployments(c, &site, json).await,
        Command::Logs {
            target,
            kind,
            follow,
            json,
        } => cli::logs(c, &target, kind.as_deref(), follow, json).await,
        Command::Delete { site, yes, json } => cli::delete(c, &site, yes, json).await,
        Command::Environments { action, site, json } => match (action, site) {
            (Some(EnvironmentsCommand::List { site, json }), _) => cli::environments(c, &site, json).await,
            (None, Some(site)) => cli::environments(c, &site, json).await,
            (
                Some(EnvironmentsCommand::Create {
                    site,
                    name,
                    branch,
                    commit,
                    no_wait,
                    json,
                }),
                _,
            ) => cli::create_environment(c, &site, &name, branch, commit, !no_wait, json).await,
            (Some(EnvironmentsCommand::Delete { site, name, yes, json }), _) => {
                cli::delete_environment(c, &site, &name, yes, json).await
            }
            (None, None) => anyhow::bail!(
                "name a site: `berth environments SITE`, or `berth environments create SITE NAME --branch BRANCH`"
            ),
        },
        Command::Resources { action } => match action {
            ResourcesCommand::List { site, json } => cli::resources(c, site.as_deref(), json).await,
            ResourcesCommand::Get { name, json } => cli::resource(c, &name, json).await,
            ResourcesCommand::Create {
                name,
                kind,
                size_mb,
                site,
                json,
            } => cli::create_resource(c, &name, &kind, size_mb, site.as_deref(), json).await,
            ResourcesCommand::Delete {
                name,
                detach,
                yes,
                json,
            } => cli::delete_resource(c, &name, detach, yes, json).await,
        },
        Command::Domains { action, site, json } => match (action, site) {
            (Some(DomainsCommand::List { site, json }), _) => cli::domains(c, &site, json).await,
            (None, Some(site)) => cli::domains(c, &site, json).await,
            (
                Some(DomainsCommand::Add {
                    site,
                    name,
                    environment,
                    redirect_www,
                    hsts,
                    wait,
                    json,
                }),
                _,
            ) => {
                let options = cli::DomainOptions {
                    environment,
                    redirect_www,
                    hsts,
                    wait,
                };
                cli::add_domain(c, &site, &name, options, json).await
            }
            (Some(DomainsCommand::Check { site, name, wait, json }), _) => {
                cli::check_domain(c, &site, &name, wait, json).await
            }
            (Some(DomainsCommand::Remove { site, name, yes, json }), _) => {
                cli::remove_domain(c, &site, &name, yes, json).await
            }
            (None, None) => anyhow::bail!("name a site: `berth domains SITE`, or `berth domains add SITE NAME`"),
        },
        Command::Scale {
            site,
            environment,
            min,
            max,
            idle_timeout,
            target_concurrency,
            memory_mb,
            cpus,
            json,
        } => {
            let change = cli::ScalingFlags {
                environment,
                min_instances: min,
                max_instances: max,
                idle_timeout_seconds: idle_timeout,
                target_concurrency,
                memory_mb,
                cpus,
            };
            cli::scale(c, &site, &change, json).await
        }
        Command::Metrics {
            site,
            environment,
            since,
            until,
            paths,
            codes,
            errors,
            fields,
            timeline,
            limit,
            json,
        } => {
            let view = cli::MetricsView {
                environment,
                since,
                until,
                paths,
                codes,
                errors,
                fields,
                timeline,
                limit,
            };
            cli::metrics(c, &site, &view, json).await
        }
        Command::Promote {
            site,
            deployment,
            environment,
            json,
        } => cli::switch(c, &site, Some(&deployment), environment.as_deref(), json).await,
        Command::Rollback {
            site,
            environment,
            json,
        } => cli::switch(c, &site, None, environment.as_deref(), json).await,
        Command::Env {
            site,
            assignments,
            unset,
            environment,
            restart,
            json,
        } => cli::env(c, &site, &assignments, &unset, environment.as_deref(), restart, json).await,
        Command::Config {
            provider,
            assignments,
            unset,
            test,
            json,
        } => cli::config(c, provider.as_deref(), &assignments, &unset, test, json).await,
        Command::Cancel { deployment, json } => cli::cancel(c, &deployment, json).await,
        Command::Backup {
            data_dir,
            database_url,
            out,
            no_resources,
            json,
        } => {
            use berth::backup::{Resources, ResourcesSummary};
            let resources = if no_resources { Resources::Skip } else { Resources::Copy };
            let summary = berth::backup::backup(&data_dir, database_url.as_deref(), &out, resources).await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
                return Ok(());
            }
            println!(
                "backed up the database to {} ({} bytes)",
                summary.path.display(),
                summary.bytes
            );
            match &summary.resources {
                ResourcesSummary::Skipped => println!("resource disks: skipped (--no-resources)"),
                ResourcesSummary::Copied { dir, disks, gone } => {
                    println!("resource disks: {} copied to {}", disks.len(), dir.display());
                    for disk in disks {
                        let frozen = match disk.frozen_ms {
                            Some(ms) => format!("frozen for {ms} ms"),
                            None => "not mounted".into(),
                        };
                        println!(
                            "  {} ({}, site {}): {} bytes of {} ({frozen})",
                            disk.name,
                            disk.id,
                            disk.site.as_deref().unwrap_or("-"),
                            disk.bytes,
                            disk.size
                        );
                    }
                    for resource in gone {
                        println!(
                            "  {} ({}): deleted after the snapshot, not copied",
                            resource.name, resource.id
                        );
                    }
                }
            }
            Ok(())
        }
        Command::MigrateDb { from, to, json } => {
            let summary = berth::store::copy::migrate_db(&from, &to, |table, rows| {
                eprintln!("copied {table}: {rows} rows");
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                for t in &summary.tables {
                    println!("{:<32} {:>10}", t.table, t.rows);
                }
                println!(
                    "copied {} rows in {} tables from {} to {}; row counts verified",
                    summary.rows,
                    summary.tables.len(),
                    summary.from,
                    summary.to
                );
            }
            Ok(())
        }
        Command::Mcp => cli::mcp_stdio(c).await,
        Command::Repo { action } => match action {
            RepoCommand::List { json } => cli::repo_list(c, json).await,
            RepoCommand::Create { name, json } => cli::repo_create(c, &name, json).await,
            RepoCommand::Token { name, ttl, json } => cli::repo_token(c, &name, ttl, json).await,
        },
        Command::Usage { month, site, json } => cli::usage(c, month.as_deref(), site.as_deref(), json).await,
        Command::Whoami { json } => cli::whoami(c, json).await,
        Command::Users { action } => match action {
            UsersCommand::Create {
                email,
                role,
                existing,
                json,
            } => cli::users_create(c, &email, &role, existing, json).await,
            UsersCommand::List { json } => cli::users_list(c, json).await,
            UsersCommand::Role { email, role, json } => cli::users_role(c, &email, &role, json).await,
            UsersCommand::Remove { email, json } => cli::users_remove(c, &email, json).await,
            UsersCommand::Invite {
                email,
                role,
                days,
                json,
            } => cli::users_invite(c, &email, &role, days, json).await,
            UsersCommand::Invitations { json } => cli::users_invitations(c, json).await,
            UsersCommand::RevokeInvitation { id, json } => cli::users_revoke_invitation(c, &id, json).await,
        },
        Command::Keys { action } => match action {
            KeysCommand::Create {
                name,
                kind,
                role,
                scopes,
                sites,
                environments,
                expires_in_days,
                json,
            } => {
                let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
                let input = berth::service::CreateApiKeyInput {
                    name,
                    kind,
                    role,
                    scopes: some(scopes),
                    sites: some(sites),
                    environments: some(environments),
                    expires_in_days,
                };
                cli::keys_create(c, &input, json).await
            }
            KeysCommand::List { json } => cli::keys_list(c, json).await,
            KeysCommand::Revoke { id, json } => cli::keys_revoke(c, &id, json).await,
        },
        Command::Orgs { action } => match action {
            OrgsCommand::Create { name, json } => cli::orgs_create(c, &name, json).await,
        },
        Command::Agents { action } => match action {
            AgentsCommand::List { json } => cli::agents_list(c, json).await,
            AgentsCommand::Revoke { id, json } => cli::agents_revoke(c, &id, json).await,
            AgentsCommand::Freeze { json } => cli::agents_freeze(c, true, json).await,
            AgentsCommand::Unfreeze { json } => cli::agents_freeze(c, false, json).await,
        },
        Command::Audit {
            action,
            actor_kind,
            actor,
            outcome,
            since,
            until,
            limit,
            cursor,
            json,
        } => {
            let filters = berth::service::ListAuditInput {
                action,
                actor_kind,
                actor,
                outcome,
                since,
                until,
                limit,
                cursor,
            };
            cli::audit(c, &filters, json).await
        }
        Command::GitHook { hook } => match hook.as_str() {
            "post-receive" => berth::git_http::run_post_receive_hook().await,
            other => anyhow::bail!("unknown git hook '{other}'"),
        },
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
