//! The dashboard's HTML, as `maud` templates (auto-escaped). Views only lay out what the
//! handlers fetched from the service layer; they decide nothing.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};

use super::session::{CSRF_FIELD, Session};
use crate::service::{
    DeploymentInfo, DomainInfo, EnvVarsOutput, EnvironmentInfo, ResourceUsageOutput, ScalingConfig, SiteDetail,
    SiteSummary,
};

/// A message shown at the top of a page after an action.
#[derive(Clone, Debug, Default)]
pub struct Notice {
    /// An error (true) or a confirmation.
    pub error: bool,
    /// The text.
    pub message: String,
    /// The form field it belongs to, when there is one.
    pub field: Option<String>,
}

impl Notice {
    /// A confirmation.
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            error: false,
            message: message.into(),
            field: None,
        }
    }
    /// An error, optionally tied to a field.
    pub fn error(message: impl Into<String>, field: Option<&str>) -> Self {
        Self {
            error: true,
            message: message.into(),
            field: field.map(str::to_string),
        }
    }
}

/// The frame of every page: header, navigation, main content.
pub fn page(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = session { meta name="csrf-token" content=(s.csrf); }
                title { (title) " · berth" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.topbar {
                    div.topbar-inner {
                        a.brand href="/" { span.brand-mark aria-hidden="true" { "⚓" } "berth" }
                        @if let Some(s) = session {
                            nav.mainnav aria-label="Main" {
                                a href="/sites" { "Sites" }
                                a href="/sites/new" { "New site" }
                                a href="/providers" { "Providers" }
                                a href="/resources" { "Resources" }
                                @if s.actor.require(crate::service::access::Action::ManageMembers, None, None).is_ok() {
                                    a href="/members" { "Members" }
                                    a href="/audit" { "Audit log" }
                                }
                                a href="/usage" { "Usage" }
                                a href="/keys" { "API keys" }
                                a href="/connected-apps" { "Connected apps" }
                            }
                            div.whoami {
                                @if s.orgs.len() > 1 {
                                    form.org-switch method="post" action="/orgs/switch" {
                                        (csrf_input(s))
                                        label.sr-only for="org-switch" { "Org" }
                                        select #org-switch name="org" title="The org this session acts in" {
                                            @for o in &s.orgs {
                                                option value=(o.id) selected[o.current] { (o.name) " (" (o.role) ")" }
                                            }
                                        }
                                        button.btn.btn-ghost #org-switch-submit type="submit" { "Switch" }
                                    }
                                } @else {
                                    span.org title="Org and API key this session acts as" {
                                        (s.actor.org_name) " · " (s.actor.key_name)
                                    }
                                }
                                form method="post" action="/logout" {
                                    (csrf_input(s))
                                    button.btn.btn-ghost type="submit" { "Log out" }
                                }
                            }
                        } @else {
                            nav.mainnav aria-label="Main" {
                                a href="/#agents" { "For agents" }
                                a href="/#start" { "Get started" }
                                a.btn.btn-primary href="/login" { "Log in" }
                            }
                        }
                    }
                }
                main #main { (body) }
                footer.footer { "berth · self-hosted, agent-native hosting" }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_input(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf); }
}

/// A notice banner.
pub fn notice(n: Option<&Notice>) -> Markup {
    html! {
        @if let Some(n) = n {
            @if n.error {
                div.notice.notice-error role="alert" { span aria-hidden="true" { "✕ " } (n.message) }
            } @else {
                div.notice.notice-ok role="status" { span aria-hidden="true" { "✓ " } (n.message) }
            }
        }
    }
}

/// Icon and label of a status: never colour alone.
fn status_parts(status: &str) -> (&'static str, &'static str, &'static str) {
    match status {
        "live" => ("✓", "Live", "ok"),
        "building" => ("◐", "Building", "busy"),
        "queued" => ("…", "Queued", "busy"),
        "deploying" => ("◐", "Deploying", "busy"),
        "starting" => ("◌", "Starting", "busy"),
        "failed" => ("✕", "Failed", "bad"),
        "crashed" => ("⚠", "Crashed", "bad"),
        "sleeping" => ("☾", "Sleeping", "idle"),
        "superseded" => ("↺", "Superseded", "idle"),
        "cancelled" => ("⊘", "Cancelled", "idle"),
        "new" => ("○", "Not deployed", "idle"),
        "none" => ("○", "Not deployed", "idle"),
        // Custom domains (`DomainStatus`).
        "pending_dns" => ("…", "Waiting for DNS", "busy"),
        "validating" => ("◐", "Validating", "busy"),
        "issuing" => ("◐", "Issuing certificate", "busy"),
        "active" => ("✓", "Active", "ok"),
        "renewing" => ("↻", "Renewing", "ok"),
        _ => ("•", "Unknown", "idle"),
    }
}

/// A status badge: icon plus text.
pub fn badge(status: &str) -> Markup {
    let (icon, label, tone) = status_parts(status);
    html! {
        span class={ "badge badge-" (tone) } data-status=(status) {
            span.badge-icon aria-hidden="true" { (icon) } (label)
        }
    }
}

/// A timestamp shown as date and time, refined to "n min ago" by the script.
pub(super) fn when(rfc3339: &str) -> Markup {
    let shown = rfc3339.get(..16).unwrap_or(rfc3339).replace('T', " ");
    html! { time datetime=(rfc3339) title=(rfc3339) { (shown) " UTC" } }
}

/// A byte count in binary units (B, KiB, MiB, GiB, TiB), one decimal above bytes.
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn short(id: &str, n: usize) -> &str {
    id.get(..n).unwrap_or(id)
}

/// "commit abc1234 on main" / "upload" / "folder".
fn source_line(d: &DeploymentInfo) -> Markup {
    html! {
        @match (&d.commit, d.source.as_str()) {
            (Some(c), _) => {
                span.mono title=(c) { (short(c, 7)) }
                @if let Some(b) = &d.branch { " on " span.mono { (b) } }
            }
            (None, "upload") => { "upload" }
            (None, "path") => { "folder copy" }
            (None, _) => { "git" }
        }
    }
}

/// A copy-to-clipboard button for the text of `target` (a CSS selector).
pub(super) fn copy_button(target: &str, label: &str) -> Markup {
    html! { button.btn.btn-small type="button" data-copy=(target) { (label) } }
}

// ---------------------------------------------------------------- public pages

/// What the landing page needs.
pub struct Landing<'a> {
    /// Base URL of this control plane as the visitor reached it.
    pub base_url: &'a str,
    /// The MCP tools (name, description).
    pub tools: &'a [(String, String)],
    /// Site URL pattern.
    pub site_pattern: &'a str,
}

/// The landing page for visitors who are not logged in.
pub fn landing(l: &Landing<'_>) -> Markup {
    let http_config = format!(
        "{{\n  \"mcpServers\": {{\n    \"berth\": {{\n      \"url\": \"{}/mcp\",\n      \"headers\": {{ \"Authorization\": \"Bearer <your-api-key>\" }}\n    }}\n  }}\n}}",
        l.base_url
    );
    let stdio_config = format!(
        "{{\n  \"mcpServers\": {{\n    \"berth\": {{\n      \"command\": \"berth\",\n      \"args\": [\"mcp\"],\n      \"env\": {{ \"BERTH_URL\": \"{}\", \"BERTH_TOKEN\": \"<your-api-key>\" }}\n    }}\n  }}\n}}",
        l.base_url
    );
    page(
        None,
        "Hosting your agents can drive",
        html! {
            section.hero {
                h1 { "Hosting your agents can drive." }
                p.lead {
                    "berth turns a laptop, a VM or your own servers into a place where people "
                    em { "and AI agents" } " create sites, deploy them from git or a folder, preview branches, "
                    "roll back, and read logs — one binary, your infrastructure."
                }
                div.hero-actions {
                    a.btn.btn-primary href="/login" { "Log in with an API key" }
                    a.btn href="#start" { "How to start" }
                }
            }
            section.features aria-label="What berth does" {
                div.feature { h2 { "One call to a live URL" } p { "Point berth at a repo or a folder: it detects the stack, builds it in a sandbox, health-checks it and routes " span.mono { (l.site_pattern) } " to it." } }
                div.feature { h2 { "Safe to hand to an agent" } p { "Every action is an MCP tool with validated input, clear errors that say what to do next, masked secrets and an audit log." } }
                div.feature { h2 { "Previews, promote, rollback" } p { "Branch environments get their own URL; promote and rollback move a pointer, they never rebuild." } }
            }
            section #agents {
                h2 { "For agents" }
                p { "Add berth to any MCP client (Claude Code, Cursor, …). Over HTTP:" }
                div.codeblock {
                    pre #mcp-http { code { (http_config) } }
                    (copy_button("#mcp-http", "Copy"))
                }
                p { "Or over stdio, with the " span.mono { "berth" } " binary on the agent's machine:" }
                div.codeblock {
                    pre #mcp-stdio { code { (stdio_config) } }
                    (copy_button("#mcp-stdio", "Copy"))
                }
                details.tools {
                    summary { "The " (l.tools.len()) " tools an agent gets" }
                    dl {
                        @for (name, description) in l.tools {
                            dt.mono { (name) }
                            dd { (description) }
                        }
                    }
                }
            }
            section #start {
                h2 { "How to start" }
                ol.steps {
                    li { "Run " span.mono { "berth serve" } ". On first start it prints an admin API key once: keep it." }
                    li { "Log in here with that key, or give it to your agent in the config above." }
                    li { "Create a site from a git URL or a folder, or run " span.mono { "berth deploy DIR --site NAME" } "." }
                }
            }
        },
    )
}

/// The login form.
pub fn login(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    page(
        None,
        "Log in",
        html! {
            section.narrow {
                h1 { "Log in" }
                p.muted { "With your email and password, or with an API key: the one " span.mono { "berth serve" } " printed on first start, or any key of your org." }
                @if let Some(e) = error {
                    div.notice.notice-error role="alert" #login-error { span aria-hidden="true" { "✕ " } (e) }
                }
                form.card.form method="post" action="/login" #key-login {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    input type="hidden" name="next" value=(next);
                    div.field {
                        label for="key" { "API key" }
                        input #key type="password" name="key" autocomplete="current-password" required autofocus
                            aria-invalid=[error.map(|_| "true")] aria-describedby="key-hint";
                        small #key-hint.hint { "Starts with " span.mono { "berth_" } " unless your operator chose one." }
                    }
                    button.btn.btn-primary type="submit" { "Log in" }
                }
                form.card.form method="post" action="/login" #password-login {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    input type="hidden" name="next" value=(next);
                    div.field {
                        label for="email" { "Email" }
                        input #email type="email" name="email" autocomplete="username" required;
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required;
                    }
                    button.btn.btn-primary type="submit" { "Log in" }
                }
            }
        },
    )
}

/// The page an invitation link opens: the org, the email and the role, and a form that
/// sets a password (new account) or takes the existing account's (or, signed in as that
/// person, only confirms).
pub fn invitation(
    session: Option<&Session>,
    token: &str,
    csrf: &str,
    p: &crate::service::invitations::InvitationPreview,
    signed_in: bool,
    n: Option<&Notice>,
) -> Markup {
    page(
        session,
        "Join an org",
        html! {
            section.narrow #invitation {
                h1 { "Join " (p.org_name) }
                p { "You are invited as " strong #invite-role { (p.role) } " with the email " span.mono #invite-email { (p.email) } "." }
                p.muted.small { "The invitation works once and expires " (when(&p.expires_at)) "." }
                @if let Some(n) = n.filter(|n| n.field.is_none()) { (notice(Some(n))) }
                form.card.form method="post" action=(format!("/invite/{token}")) #accept-form {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    @if signed_in {
                        p { "You are signed in as " (p.email) "." }
                    } @else if p.has_account {
                        div.field {
                            label for="password" { "Password of " (p.email) }
                            input #password type="password" name="password" autocomplete="current-password" required
                                aria-invalid=[has_error(n, "password")];
                            small.hint { "You already have an account here: sign in with it to join." }
                            (field_error(n, "password"))
                        }
                    } @else {
                        div.field {
                            label for="password" { "Choose a password" }
                            input #password type="password" name="password" autocomplete="new-password" required minlength="12"
                                aria-invalid=[has_error(n, "password")];
                            small.hint { "At least 12 characters; a passphrase of a few words is easiest." }
                            (field_error(n, "password"))
                        }
                        div.field {
                            label for="password_again" { "The same password again" }
                            input #password_again type="password" name="password_again" autocomplete="new-password" required
                                aria-invalid=[has_error(n, "password_again")];
                            (field_error(n, "password_again"))
                        }
                    }
                    button.btn.btn-primary #accept-submit type="submit" { "Join " (p.org_name) }
                }
            }
        },
    )
}

/// An error page (not found, refused, internal).
pub fn error_page(session: Option<&Session>, title: &str, message: &str) -> Markup {
    page(
        session,
        title,
        html! {
            section.narrow {
                h1 { (title) }
                div.notice.notice-error role="alert" { (message) }
                p { a href=(if session.is_some() { "/sites" } else { "/" }) { "← Back" } }
            }
        },
    )
}

// ---------------------------------------------------------------- sites

/// One site card's data: the summary plus a derived display status.
pub struct SiteCard {
    /// The summary from the service.
    pub summary: SiteSummary,
    /// Status to show (the summary's, or `sleeping` for a scaled-to-zero site).
    pub status: String,
}

/// The sites grid with search and filter.
/// The sites page: one page of sites (`next` names the site after which the following
/// page starts), filtered by name on the server and by status on the page.
pub fn sites(session: &Session, cards: &[SiteCard], q: &str, status: &str, total: usize, next: Option<&str>) -> Markup {
    let statuses = [
        ("", "All statuses"),
        ("live", "Live"),
        ("building", "Building"),
        ("failed", "Failed"),
        ("sleeping", "Sleeping"),
        ("crashed", "Crashed"),
        ("new", "Not deployed"),
    ];
    page(
        Some(session),
        "Sites",
        html! {
            div.pagehead {
                h1 { "Sites" }
                a.btn.btn-primary href="/sites/new" { "+ New site" }
            }
            @if total == 0 && q.is_empty() {
                div.empty.card #sites-empty {
                    div.empty-icon aria-hidden="true" { "⚓" }
                    h2 { "No sites yet" }
                    p { "Deploy an app from a git URL, a folder on this server or a .tar.gz upload." }
                    a.btn.btn-primary href="/sites/new" { "Create your first site" }
                }
            } @else {
                form.filters method="get" action="/sites" role="search" data-filter-form {
                    div.field.field-inline {
                        label for="q" { "Search" }
                        input #q type="search" name="q" value=(q) placeholder="Name" data-filter-input;
                    }
                    div.field.field-inline {
                        label for="status" { "Status" }
                        select #status name="status" data-filter-status {
                            @for (value, label) in statuses {
                                option value=(value) selected[value == status] { (label) }
                            }
                        }
                    }
                    button.btn type="submit" data-nojs { "Filter" }
                }
                @if cards.is_empty() {
                    div.empty.card { p { "No site matches. " a href="/sites" { "Clear the filter" } } }
                }
                ul.grid #sites-grid {
                    @for c in cards {
                        li.card.site-card data-site=(c.summary.name) data-status=(c.status)
                            data-search=(format!("{} {}", c.summary.name, c.summary.source)) {
                            div.site-card-head {
                                h2 { a href=(format!("/sites/{}", c.summary.name)) { (c.summary.name) } }
                                (badge(&c.status))
                            }
                            p.url { a href=(c.summary.url) target="_blank" rel="noopener" { (c.summary.url) } }
                            p.muted.small {
                                @if let Some(d) = &c.summary.latest_deployment {
                                    "Last deploy: " (source_line(d)) " · " (when(&d.created_at))
                                    @if let Some(by) = &d.created_by { " · by " (by) }
                                } @else {
                                    "Never deployed"
                                }
                            }
                            p.muted.small.truncate title=(c.summary.source) { "Source: " (c.summary.source) }
                        }
                    }
                }
                p.muted.small #filter-empty hidden { "No site matches the filter." }
                @if let Some(after) = next {
                    p.pager {
                        (cards.len()) " of " (total) " sites · "
                        a #sites-next href=(format!("/sites?{}", serde_urlencoded::to_string([("q", q), ("status", status), ("after", after)]).unwrap_or_default())) { "Next page →" }
                    }
                }
            }
        },
    )
}

/// Values of the create-site form, kept to refill it after an error.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct CreateSiteForm {
    /// Site name.
    #[serde(default)]
    pub name: String,
    /// `git`, `path` or `upload`.
    #[serde(default)]
    pub source_kind: String,
    /// Git URL or folder path.
    #[serde(default)]
    pub repo: String,
    /// Branch (git).
    #[serde(default)]
    pub branch: String,
    /// Forced build pack ("" = detected).
    #[serde(default)]
    pub build_pack: String,
    /// Subfolder holding the app (monorepos).
    #[serde(default)]
    pub root_dir: String,
    /// Static output folder.
    #[serde(default)]
    pub output_dir: String,
    /// Preview environments for pushed branches (git).
    #[serde(default)]
    pub previews: bool,
    /// Install command override.
    #[serde(default)]
    pub install_command: String,
    /// Build command override.
    #[serde(default)]
    pub build_command: String,
    /// Start command override.
    #[serde(default)]
    pub start_command: String,
    /// Port the app listens on.
    #[serde(default)]
    pub port: String,
    /// Health-check path.
    #[serde(default)]
    pub health_check_path: String,
    /// `NAME=value` lines.
    #[serde(default)]
    pub env: String,
}

/// A field's error message, when the notice names that field.
pub(super) fn field_error(n: Option<&Notice>, field: &str) -> Markup {
    html! {
        @if let Some(n) = n.filter(|n| n.field.as_deref() == Some(field)) {
            p.field-error id=(format!("{field}-error")) role="alert" { span aria-hidden="true" { "✕ " } (n.message) }
        }
    }
}

/// `aria-invalid` for a field the notice names.
pub(super) fn has_error(n: Option<&Notice>, field: &str) -> Option<&'static str> {
    n.filter(|n| n.field.as_deref() == Some(field)).map(|_| "true")
}

/// A labelled text input with its error.
fn text_field(
    n: Option<&Notice>,
    name: &str,
    label: &str,
    value: &str,
    placeholder: &str,
    hint: Option<&str>,
) -> Markup {
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) type="text" name=(name) value=(value) placeholder=(placeholder)
                aria-invalid=[has_error(n, name)] autocomplete="off";
            @if let Some(h) = hint { small.hint { (h) } }
            (field_error(n, name))
        }
    }
}

/// The create-site form.
pub fn create_site(session: &Session, f: &CreateSiteForm, n: Option<&Notice>) -> Markup {
    let kind = if f.source_kind.is_empty() {
        "git"
    } else {
        f.source_kind.as_str()
    };
    // Errors without a field of this form go to the top.
    let fields = [
        "name",
        "repo",
        "branch",
        "previews",
        "build_pack",
        "root_dir",
        "output_dir",
        "install_command",
        "build_command",
        "start_command",
        "port",
        "health_check_path",
        "env",
        "archive",
    ];
    let settings_given = [
        &f.build_pack,
        &f.root_dir,
        &f.output_dir,
        &f.install_command,
        &f.build_command,
        &f.start_command,
        &f.port,
        &f.health_check_path,
    ]
    .iter()
    .any(|v| !v.is_empty());
    let top = n.filter(|n| !n.field.as_deref().is_some_and(|f| fields.contains(&f)));
    page(
        Some(session),
        "New site",
        html! {
            div.pagehead { h1 { "New site" } }
            (notice(top))
            form.card.form #create-form method="post" action="/sites/new" enctype="multipart/form-data" {
                (csrf_input(session))
                div.field {
                    label for="name" { "Name" }
                    input #name type="text" name="name" value=(f.name) required placeholder="my-app"
                        autocomplete="off" aria-invalid=[has_error(n, "name")] aria-describedby="name-hint";
                    small #name-hint.hint { "Lowercase letters, digits and hyphens. The site is served at " span.mono { "<name>." } "your base domain." }
                    (field_error(n, "name"))
                }
                fieldset.field {
                    legend { "Source" }
                    div.segmented {
                        @for (value, label) in [("git", "Git URL"), ("path", "Folder on this server"), ("upload", "Upload .tar.gz")] {
                            label.seg {
                                input type="radio" name="source_kind" value=(value) checked[kind == value] data-source-kind;
                                span { (label) }
                            }
                        }
                    }
                    div data-source-panel="git path" hidden[kind == "upload"] {
                        (text_field(n, "repo", "Repository URL or folder path", &f.repo, "https://github.com/you/app.git or /srv/app", None))
                    }
                    div data-source-panel="git" hidden[kind != "git"] {
                        (text_field(n, "branch", "Branch", &f.branch, "default branch", None))
                        label.check { input #previews type="checkbox" name="previews" value="true" checked[f.previews]; " Preview environments for other pushed branches" }
                    }
                    div.field data-source-panel="upload" hidden[kind != "upload"] {
                        label for="archive" { "Archive (.tar.gz of the app folder)" }
                        input #archive type="file" name="archive" accept=".tar.gz,.tgz,application/gzip";
                        (field_error(n, "archive"))
                    }
                }
                details.subsection open[settings_given || n.is_some_and(|n| n.field.as_deref().is_some_and(is_build_setting_field))] {
                    summary { "Build settings " span.muted { "(optional: detected from the source)" } }
                    div.grid2 {
                        (build_pack_select(n, &f.build_pack))
                        (text_field(n, "root_dir", "Root folder", &f.root_dir, "the repository's root", Some("The app's subfolder in a monorepo, e.g. apps/web.")))
                        (text_field(n, "output_dir", "Output folder", &f.output_dir, "detected", Some("The folder with the built index.html, for static sites.")))
                        (text_field(n, "install_command", "Install command", &f.install_command, "npm ci", None))
                        (text_field(n, "build_command", "Build command", &f.build_command, "npm run build", None))
                        (text_field(n, "start_command", "Start command", &f.start_command, "node server.js", Some("The app must listen on $PORT.")))
                        (text_field(n, "port", "Port", &f.port, "picked by berth", None))
                        (text_field(n, "health_check_path", "Health check path", &f.health_check_path, "/", None))
                    }
                }
                div.field {
                    label for="env" { "Environment variables" }
                    textarea #env name="env" rows="4" placeholder="NAME=value, one per line" spellcheck="false"
                        aria-invalid=[has_error(n, "env")] { (f.env) }
                    small.hint { "Sealed at rest and masked everywhere after this." }
                    (field_error(n, "env"))
                }
                div.form-actions {
                    button.btn.btn-primary #create-submit type="submit" { "Create and deploy" }
                    a.btn.btn-ghost href="/sites" { "Cancel" }
                }
            }
        },
    )
}

// ---------------------------------------------------------------- site detail

/// Tabs of the site page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tab {
    /// URLs, current deployment, recent deployments, quick actions.
    Overview,
    /// Timeline with logs, promote, rollback.
    Deployments,
    /// Environment cards.
    Environments,
    /// Env vars, scaling, build settings, delete.
    Settings,
    /// Custom domains: the records to create, their live check, certificates.
    Domains,
    /// Placeholder.
    Monitoring,
}

impl Tab {
    /// Path segment and label.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            Tab::Overview => ("", "Overview"),
            Tab::Deployments => ("deployments", "Deployments"),
            Tab::Environments => ("environments", "Environments"),
            Tab::Settings => ("settings", "Settings"),
            Tab::Domains => ("domains", "Domains"),
            Tab::Monitoring => ("monitoring", "Monitoring"),
        }
    }
}

/// Link to a tab of a site.
pub fn tab_href(site: &str, tab: Tab) -> String {
    match tab.parts().0 {
        "" => format!("/sites/{site}"),
        seg => format!("/sites/{site}/{seg}"),
    }
}

/// The site page frame: title, status, tabs, then the tab's content.
pub fn site_shell(session: &Session, site: &SiteDetail, tab: Tab, n: Option<&Notice>, content: Markup) -> Markup {
    let name = &site.summary.name;
    page(
        Some(session),
        &format!("{name} · {}", tab.parts().1),
        html! {
            nav.crumbs aria-label="Breadcrumb" { a href="/sites" { "Sites" } " / " span { (name) } }
            div.pagehead {
                div {
                    h1 { (name) " " (badge(&site.summary.status)) }
                    p.url { a href=(site.summary.url) target="_blank" rel="noopener" #site-url { (site.summary.url) } }
                }
            }
            nav.tabs aria-label="Site sections" {
                @for t in [Tab::Overview, Tab::Deployments, Tab::Environments, Tab::Settings, Tab::Domains, Tab::Monitoring] {
                    a href=(tab_href(name, t)) aria-current=[(t == tab).then_some("page")] { (t.parts().1) }
                }
            }
            (notice(n))
            (content)
        },
    )
}

/// Overview tab.
pub fn overview(session: &Session, site: &SiteDetail) -> Markup {
    let name = &site.summary.name;
    let production = site.environments.iter().find(|e| e.name == "production");
    let current = production
        .and_then(|e| e.deployment_id.as_ref())
        .and_then(|id| site.recent_deployments.iter().find(|d| &d.id == id));
    html! {
        div.cols {
            section.card {
                h2 { "Current deployment" }
                @if let Some(d) = current {
                    p { (badge(d.status.as_str())) " " a.mono href=(format!("/sites/{name}/deployments/{}", d.id)) { (d.id) } }
                    p.muted { (source_line(d)) " · " (when(&d.created_at)) @if let Some(by) = &d.created_by { " · by " (by) } }
                } @else {
                    p.muted { "Nothing is serving yet." }
                }
                div.actions {
                    form method="post" action=(format!("/sites/{name}/deploy")) {
                        (csrf_input(session))
                        button.btn.btn-primary type="submit" { "Deploy now" }
                    }
                    form method="post" action=(format!("/sites/{name}/rollback")) data-confirm="Roll production back to the previous deployment?" {
                        (csrf_input(session))
                        button.btn type="submit" { "Roll back" }
                    }
                }
                @if site.summary.source == "upload" {
                    form.upload-form method="post" action=(format!("/sites/{name}/upload")) enctype="multipart/form-data" {
                        (csrf_input(session))
                        div.field {
                            label for="archive" { "Upload a new version (.tar.gz)" }
                            input #archive type="file" name="archive" accept=".tar.gz,.tgz,application/gzip" required;
                        }
                        button.btn type="submit" { "Upload and deploy" }
                    }
                }
            }
            section.card {
                h2 { "URLs" }
                ul.plain {
                    @for e in &site.environments {
                        li { span.tag { (e.name) } " " a href=(e.url) target="_blank" rel="noopener" { (e.url) } " " (badge(&e.status)) }
                    }
                }
                h2 { "Source" }
                p.mono.truncate title=(site.summary.source) { (site.summary.source) }
                @if let Some(b) = &site.branch { p.muted { "Branch " span.mono { (b) } } }
            }
        }
        section.card {
            div.section-head {
                h2 { "Recent deployments" }
                a href=(tab_href(name, Tab::Deployments)) { "All deployments →" }
            }
            (deployment_table(name, &site.recent_deployments.iter().take(5).cloned().collect::<Vec<_>>()))
        }
        @if !site.build_log_tail.is_empty() {
            section.card {
                h2 { "Latest build log (tail)" }
                pre.logview-static { @for l in &site.build_log_tail { (l) "\n" } }
            }
        }
    }
}

fn deployment_table(site: &str, deployments: &[DeploymentInfo]) -> Markup {
    html! {
        @if deployments.is_empty() {
            p.muted { "No deployments yet." }
        } @else {
            ul.rows {
                @for d in deployments {
                    li.row {
                        (badge(d.status.as_str()))
                        a.mono href=(format!("/sites/{site}/deployments/{}", d.id)) { (short(&d.id, 16)) "…" }
                        span.tag { (d.environment) }
                        span.muted { (source_line(d)) }
                        span.muted { (when(&d.created_at)) }
                    }
                }
            }
        }
    }
}

/// A live log viewer fed by the logs stream (SSE) of one deployment.
pub fn log_viewer(deployment_id: &str, kind: &str, autostart: bool) -> Markup {
    let label = if kind == "build" { "Build log" } else { "Runtime log" };
    html! {
        div.logview data-logview data-src=(format!("/api/deployments/{deployment_id}/logs/stream?kind={kind}"))
            data-autostart=[autostart.then_some("true")] data-kind=(kind) {
            div.logview-bar {
                strong { (label) }
                input type="search" placeholder="Search" aria-label=(format!("Search the {}", label.to_lowercase())) data-log-search;
                button.btn.btn-small type="button" data-log-copy { "Copy" }
                span.logview-state aria-live="polite" data-log-state { "Not connected" }
            }
            pre.logview-body tabindex="0" aria-label=(label) data-log-body {}
            button.btn.btn-small.logview-follow type="button" data-log-follow hidden { "↓ Follow new lines" }
        }
    }
}

/// Deployments tab: the timeline, each expandable to its logs, with promote and rollback.
pub fn deployments(session: &Session, site: &SiteDetail, list: &[DeploymentInfo]) -> Markup {
    let name = &site.summary.name;
    let serving: BTreeMap<&str, &str> = site
        .environments
        .iter()
        .filter_map(|e| e.deployment_id.as_deref().map(|d| (d, e.name.as_str())))
        .collect();
    html! {
        div.section-head {
            h2 { "Deployments" }
            div.actions {
                form method="post" action=(format!("/sites/{name}/rollback")) data-confirm="Roll production back to the previous deployment?" {
                    (csrf_input(session))
                    button.btn #rollback-button type="submit" { "↶ Roll back production" }
                }
                form method="post" action=(format!("/sites/{name}/deploy")) {
                    (csrf_input(session))
                    button.btn.btn-primary type="submit" { "Deploy now" }
                }
            }
        }
        @if list.is_empty() {
            div.empty.card { p { "No deployments yet. Deploy the site to see its build here." } }
        }
        ol.timeline #deployments {
            @for d in list {
                li.timeline-item data-deployment=(d.id) {
                    details {
                        summary {
                            (badge(d.status.as_str()))
                            span.mono { (short(&d.id, 16)) "…" }
                            span.tag { (d.environment) }
                            @if let Some(env) = serving.get(d.id.as_str()) {
                                span.tag.tag-current { "serving " (env) }
                            }
                            span.muted { (source_line(d)) }
                            span.muted { (when(&d.created_at)) @if let Some(by) = &d.created_by { " · " (by) } }
                        }
                        div.timeline-body {
                            @if let Some(e) = &d.error { div.notice.notice-error { (e) } }
                            div.actions {
                                a.btn.btn-small href=(format!("/sites/{name}/deployments/{}", d.id)) { "Open" }
                                @if matches!(d.status.as_str(), "live" | "superseded") && !serving.contains_key(d.id.as_str()) {
                                    form method="post" action=(format!("/sites/{name}/promote")) data-confirm=(format!("Make {} serve {}?", d.environment, short(&d.id, 16))) {
                                        (csrf_input(session))
                                        input type="hidden" name="deployment_id" value=(d.id);
                                        input type="hidden" name="environment" value=(d.environment);
                                        button.btn.btn-small type="submit" data-promote=(d.id) { "Promote to " (d.environment) }
                                    }
                                }
                                @if !d.status.is_final() {
                                    form method="post" action=(format!("/sites/{name}/deployments/{}/cancel", d.id)) data-confirm="Cancel this deployment?" {
                                        (csrf_input(session))
                                        button.btn.btn-small.btn-danger type="submit" { "Cancel" }
                                    }
                                }
                            }
                            (log_viewer(&d.id, "build", false))
                            (log_viewer(&d.id, "runtime", false))
                        }
                    }
                }
            }
        }
    }
}

/// One deployment's page: status that updates itself and its logs, live.
pub fn deployment_page(site: &SiteDetail, d: &DeploymentInfo) -> Markup {
    let name = &site.summary.name;
    html! {
        section.card #deployment data-deployment-watch=(d.id) data-status=(d.status.as_str()) {
            div.section-head {
                h2 { "Deployment " span.mono { (d.id) } }
                span data-deployment-badge { (badge(d.status.as_str())) }
            }
            p.muted { (source_line(d)) " · " span.tag { (d.environment) } " · " (when(&d.created_at)) @if let Some(by) = &d.created_by { " · by " (by) } }
            p #live-link hidden[d.status.as_str() != "live"] {
                "Live at " a href=(d.url) target="_blank" rel="noopener" #deployment-url { (d.url) }
            }
            @if let Some(e) = &d.error { div.notice.notice-error #deployment-error { (e) } }
            div.actions {
                a.btn.btn-small href=(tab_href(name, Tab::Deployments)) { "← All deployments" }
            }
        }
        (log_viewer(&d.id, "build", true))
        (log_viewer(&d.id, "runtime", true))
    }
}

/// Environments tab: a card per environment with scale controls.
pub fn environments(
    session: &Session,
    site: &SiteDetail,
    envs: &[(EnvironmentInfo, Option<ScalingConfig>)],
    n: Option<&Notice>,
) -> Markup {
    let name = &site.summary.name;
    html! {
        ul.grid #environments {
            @for (e, scaling) in envs {
                li.card.env-card data-environment=(e.name) {
                    div.site-card-head {
                        h2 { (e.name) }
                        (badge(&env_display_status(e, scaling.as_ref())))
                    }
                    p.url { a href=(e.url) target="_blank" rel="noopener" { (e.url) } }
                    p.muted.small {
                        @if let Some(b) = &e.branch { "Branch " span.mono { (b) } " · " }
                        @if let Some(d) = &e.deployment_id { "Serving " span.mono { (short(d, 16)) "…" } } @else { "Not serving" }
                    }
                    @if let Some(s) = scaling {
                        (scale_form(session, name, &e.name, s))
                    }
                    @if e.name != "production" {
                        form method="post" action=(format!("/sites/{name}/environments/{}/delete", e.name)) data-confirm=(format!("Delete environment {}? Its instances stop.", e.name)) {
                            (csrf_input(session))
                            button.btn.btn-small.btn-danger type="submit" { "Delete environment" }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "New environment" }
            form.form.form-row method="post" action=(format!("/sites/{name}/environments")) {
                (csrf_input(session))
                (text_field(n, "env_name", "Name", "", "staging", Some("Served at <name>--<site>.")))
                @if site.summary.source.contains("://") || site.branch.is_some() {
                    (text_field(n, "env_branch", "Branch", "", "default branch", None))
                }
                button.btn.btn-primary type="submit" { "Create environment" }
            }
        }
    }
}

/// `sleeping` for an environment scaled to zero with nothing running; else its status.
pub fn env_display_status(e: &EnvironmentInfo, scaling: Option<&ScalingConfig>) -> String {
    match scaling {
        Some(s) if e.deployment_id.is_some() && s.min_instances == 0 && s.running_instances == 0 => "sleeping".into(),
        _ => e.status.clone(),
    }
}

fn scale_form(session: &Session, site: &str, env: &str, s: &ScalingConfig) -> Markup {
    let id = |f: &str| format!("{env}-{f}");
    let number = |field: &str, label: &str, value: i64, min: i64, max: i64, hint: &str| {
        html! {
            div.field {
                label for=(id(field)) { (label) }
                input id=(id(field)) type="number" name=(field) min=(min) max=(max) value=(value);
                small.hint { (hint) }
            }
        }
    };
    html! {
        form.form.scale-form method="post" action=(format!("/sites/{site}/environments/{env}/scale")) {
            (csrf_input(session))
            div.grid2 {
                (number("min_instances", "Min instances", s.min_instances, 0, 20, "0 sleeps when idle and wakes on the next request"))
                (number("max_instances", "Max instances", s.max_instances, 1, 20, "Above 1 it scales out on load"))
                (number("idle_timeout_seconds", "Idle timeout (s)", s.idle_timeout_seconds, 5, 86400, "Quiet time before sleeping"))
                (number("target_concurrency", "Target concurrency", s.target_concurrency, 1, 1000, "In-flight requests per instance"))
            }
            p.muted.small { (s.running_instances) " running now" }
            button.btn.btn-small type="submit" { "Save scaling" }
        }
    }
}

/// Settings tab: env vars (masked, reveal), scaling of production, build settings, danger zone.
pub fn settings(
    session: &Session,
    site: &SiteDetail,
    vars: &EnvVarsOutput,
    revealed: bool,
    production_scaling: Option<&ScalingConfig>,
    n: Option<&Notice>,
    scope: Option<&str>,
) -> Markup {
    let name = &site.summary.name;
    let scope_query = scope
        .map(|e| format!("environment={}&", super::session::urlencode(e)))
        .unwrap_or_default();
    // Rows of this scope can be deleted here; inherited site values are changed at site scope.
    let own_scope = scope.unwrap_or("site");
    html! {
        section.card #env-vars {
            div.section-head {
                h2 { "Environment variables" }
                @if revealed {
                    a.btn.btn-small href=(format!("/sites/{name}/settings?{scope_query}")) { "Hide values" }
                } @else if !vars.vars.is_empty() && session.actor.require(crate::service::access::Action::RevealSecrets, None, None).is_ok() {
                    a.btn.btn-small #reveal href=(format!("/sites/{name}/settings?{scope_query}reveal=true")) { "Reveal values" }
                }
            }
            p.muted.small { "Values are sealed at rest and masked in every output. Changes apply on the next deploy, or now with “restart”." }
            @if site.environments.len() > 1 {
                form.filters method="get" action=(format!("/sites/{name}/settings")) {
                    div.field.field-inline {
                        label for="scope" { "Scope" }
                        select #scope name="environment" {
                            option value="" selected[scope.is_none()] { "Whole site (all environments)" }
                            @for e in &site.environments {
                                option value=(e.name) selected[scope == Some(e.name.as_str())] { "Only " (e.name) }
                            }
                        }
                    }
                    button.btn type="submit" { "Show" }
                }
            }
            @if vars.vars.is_empty() {
                p.muted { "No variables yet." }
            } @else {
                table.vars {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } th scope="col" { "Scope" } th { span.sr-only { "Actions" } } } }
                    tbody {
                        @for (k, v) in &vars.vars {
                            tr data-var=(k) {
                                td.mono { (k) }
                                td.mono data-var-value { (v.value) }
                                td { span.tag { (v.scope) } }
                                td {
                                    @if v.scope == own_scope {
                                        form method="post" action=(format!("/sites/{name}/env/delete")) data-confirm=(format!("Delete {k}?")) {
                                            (csrf_input(session))
                                            input type="hidden" name="name" value=(k);
                                            @if let Some(e) = scope { input type="hidden" name="environment" value=(e); }
                                            button.btn.btn-small.btn-ghost type="submit" aria-label=(format!("Delete {k}")) { "Delete" }
                                        }
                                    } @else {
                                        span.muted.small { "inherited" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.form.form-row #env-form method="post" action=(format!("/sites/{name}/env")) {
                (csrf_input(session))
                @if let Some(e) = scope { input type="hidden" name="environment" value=(e); }
                (text_field(n, "var_name", "Name", "", "API_KEY", None))
                div.field {
                    label for="var_value" { "Value" }
                    input #var_value type="password" name="var_value" autocomplete="off" aria-invalid=[has_error(n, "var_value")];
                    (field_error(n, "var_value"))
                }
                label.check { input type="checkbox" name="restart" value="true"; " Restart now" }
                button.btn.btn-primary type="submit" { "Save variable" }
            }
        }
        @if let Some(s) = production_scaling {
            section.card {
                h2 { "Scaling (production)" }
                (scale_form(session, name, "production", s))
            }
        }
        (build_settings_form(session, site, n))
        section.card.danger #danger-zone {
            h2 { "Danger zone" }
            p { "Deleting " strong { (name) } " stops its instances and removes its deployments, logs and variables. This cannot be undone." }
            form.form.form-row method="post" action=(format!("/sites/{name}/delete")) data-typed-confirm=(name) {
                (csrf_input(session))
                div.field {
                    label for="confirm" { "Type " span.mono { (name) } " to confirm" }
                    input #confirm type="text" name="confirm" autocomplete="off" aria-invalid=[has_error(n, "confirm")];
                    (field_error(n, "confirm"))
                }
                button.btn.btn-danger #delete-site type="submit" { "Delete site" }
            }
        }
    }
}

/// Whether `field` is one of the build settings form's fields (service errors are shown
/// next to them): every setting `HOSTING_UPDATE_SITE` can clear, and previews.
pub fn is_build_setting_field(field: &str) -> bool {
    field == "previews" || crate::service::CLEARABLE_SETTINGS.contains(&field)
}

/// The build pack select: "detected" or a forced pack.
fn build_pack_select(n: Option<&Notice>, current: &str) -> Markup {
    html! {
        div.field {
            label for="build_pack" { "Build pack" }
            select #build_pack name="build_pack" aria-invalid=[has_error(n, "build_pack")] {
                option value="" selected[current.is_empty()] { "Detected from the source" }
                @for pack in berth_build::detect::BuildPack::ALL {
                    option value=(pack.as_str()) selected[current == pack.as_str()] { (pack.as_str()) }
                }
            }
            (field_error(n, "build_pack"))
        }
    }
}

/// The settings tab's form for every build setting, branch and previews (HOSTING_UPDATE_SITE).
fn build_settings_form(session: &Session, site: &SiteDetail, n: Option<&Notice>) -> Markup {
    let name = &site.summary.name;
    let value = |k: &str| -> String {
        match site.build_settings.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(v)) => v.to_string(),
            _ => String::new(),
        }
    };
    let git = site.source_kind == "git";
    html! {
        section.card #build-settings {
            h2 { "Build settings" }
            p.muted.small { "Empty fields are detected from the source at each build. Changes apply at the next deploy." }
            form.form #settings-form method="post" action=(format!("/sites/{name}/settings/build")) {
                (csrf_input(session))
                div.grid2 {
                    (build_pack_select(n, &value("build_pack")))
                    (text_field(n, "root_dir", "Root folder", &value("root_dir"), "the repository's root", Some("The app's subfolder in a monorepo, e.g. apps/web.")))
                    (text_field(n, "install_command", "Install command", &value("install_command"), "detected", None))
                    (text_field(n, "build_command", "Build command", &value("build_command"), "detected", None))
                    (text_field(n, "start_command", "Start command", &value("start_command"), "detected", Some("The app must listen on $PORT.")))
                    (text_field(n, "output_dir", "Output folder", &value("output_dir"), "detected", Some("The folder with the built index.html, for static sites.")))
                    (text_field(n, "port", "Port", &value("port"), "picked by berth", None))
                    (text_field(n, "health_check_path", "Health check path", &value("health_check_path"), "/", None))
                    (text_field(n, "drain_seconds", "Drain period (seconds)", &site.drain_seconds.to_string(), "30", Some("After a deploy, promote, rollback or scale-in, an old instance gets up to this long (0-600) to finish its requests; it stops as soon as none is left. Applies at once.")))
                    @if git {
                        (text_field(n, "branch", "Branch", site.branch.as_deref().unwrap_or_default(), "default branch", Some("Production deploys pushes to this branch.")))
                    }
                }
                @if git {
                    input type="hidden" name="previews_shown" value="1";
                    label.check { input #previews type="checkbox" name="previews" value="true" checked[site.previews]; " Preview environments for other pushed branches" }
                    (field_error(n, "previews"))
                }
                div.form-actions {
                    button.btn.btn-primary #settings-submit type="submit" { "Save settings" }
                }
            }
        }
    }
}

/// A range the Monitoring tab shows, with the timeline resolution that draws it (within
/// the timeline tool's 1,500 points and the minutes' retention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitoringRange {
    /// The last hour, per minute (61 points at most).
    Hour,
    /// The last 24 hours, per hour.
    Day,
    /// The last 7 days, per hour.
    Week,
    /// The last 30 days, per day.
    Month,
}

impl MonitoringRange {
    /// Every range, shortest first.
    pub const ALL: [MonitoringRange; 4] = [Self::Hour, Self::Day, Self::Week, Self::Month];

    /// The range of a `?range=` value (the last hour when absent or unknown).
    pub fn parse(text: Option<&str>) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| Some(r.label()) == text)
            .unwrap_or(Self::Hour)
    }

    /// Its `?range=` value, also a `since` the metrics tools read.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
        }
    }

    /// The timeline resolution it is drawn at.
    pub fn resolution(self) -> &'static str {
        match self {
            Self::Hour => "1m",
            Self::Day | Self::Week => "1h",
            Self::Month => "1d",
        }
    }
}

/// What the Monitoring tab shows of one environment's traffic over a range.
pub struct Traffic {
    /// Requests, errors, latency and cold starts per point.
    pub timeline: crate::service::TimelineOutput,
    /// Totals and quantiles of the range.
    pub summary: crate::service::MetricsSummaryOutput,
    /// Requests by status code.
    pub codes: crate::service::StatusCodesOutput,
    /// The busiest path templates.
    pub paths: crate::service::TopPathsOutput,
}

/// One line of a chart: its name, its CSS class and a value per point (none: no data).
struct ChartLine<'a> {
    name: &'a str,
    class: &'a str,
    values: Vec<Option<f64>>,
}

/// An SVG line chart of `lines` over the timeline's points, with a title and a description
/// for screen readers and the same numbers as a table beside it.
fn line_chart(id: &str, title: &str, unit: &str, starts: &[String], lines: &[ChartLine<'_>]) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 160.0;
    const PAD: f64 = 4.0;
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let top = if max > 0.0 { max } else { 1.0 };
    let n = starts.len();
    let x = |i: usize| {
        if n <= 1 {
            W / 2.0
        } else {
            PAD + i as f64 * (W - 2.0 * PAD) / (n - 1) as f64
        }
    };
    let y = |v: f64| H - PAD - v / top * (H - 2.0 * PAD);
    let fmt = |v: f64| {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    let described = lines
        .iter()
        .map(|l| {
            let values: Vec<f64> = l.values.iter().flatten().copied().collect();
            let peak = values.iter().fold(0.0f64, |a, b| a.max(*b));
            format!("{}: peak {}{unit}", l.name, fmt(peak))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let (first, last) = (
        starts.first().cloned().unwrap_or_default(),
        starts.last().cloned().unwrap_or_default(),
    );
    html! {
        figure.chart {
            svg #(format!("chart-{id}")) data-chart=(id) data-points=(n) viewBox=(format!("0 0 {W} {H}"))
                role="img" aria-labelledby=(format!("chart-{id}-title chart-{id}-desc"))
                preserveAspectRatio="none" width="100%" height="160" {
                title #(format!("chart-{id}-title")) { (title) }
                desc #(format!("chart-{id}-desc")) { (n) " points from " (first) " to " (last) "; " (described) }
                line.axis x1="0" y1=(H - PAD) x2=(W) y2=(H - PAD) {}
                @for l in lines {
                    polyline class=(format!("series {}", l.class)) data-series=(l.name) fill="none"
                        points=(l.values.iter().enumerate().filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v)))).collect::<Vec<_>>().join(" ")) {}
                }
            }
            figcaption {
                (title) " · peak " (fmt(max)) (unit) " · "
                @for (i, l) in lines.iter().enumerate() {
                    @if i > 0 { ", " }
                    span class=(format!("key {}", l.class)) { (l.name) }
                }
            }
            details {
                summary { "As a table" }
                table.vars data-table=(id) {
                    thead { tr { th { "Start" } @for l in lines { th { (l.name) } } } }
                    tbody {
                        @for (i, start) in starts.iter().enumerate() {
                            tr {
                                td.mono { (start) }
                                @for l in lines {
                                    td { (l.values[i].map_or("—".to_string(), |v| format!("{}{unit}", fmt(v)))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Monitoring tab: the traffic of one environment over a chosen range (requests, errors
/// and latency over time as SVG charts, totals, status codes, top paths, cold starts) from
/// the metrics tools, then CPU and memory of every instance as the provider measures them
/// now (HOSTING_GET_RESOURCE_USAGE).
pub fn monitoring(
    site: &str,
    detail: &SiteDetail,
    environment: &str,
    range: MonitoringRange,
    traffic: &Result<Traffic, crate::error::ServiceError>,
    patterns: &Result<crate::service::ErrorPatternsOutput, crate::error::ServiceError>,
    usage: &[ResourceUsageOutput],
) -> Markup {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let href =
        |env: &str, r: MonitoringRange| format!("/sites/{site}/monitoring?environment={env}&range={}", r.label());
    html! {
        section.card #traffic {
            h2 { "Traffic" }
            nav.ranges aria-label="Environment" {
                @for e in &detail.environments {
                    @if e.name == environment {
                        a.btn.btn-small aria-current="page" href=(href(&e.name, range)) { (e.name) }
                    } @else {
                        a.btn.btn-small.btn-ghost href=(href(&e.name, range)) { (e.name) }
                    }
                }
            }
            nav.ranges aria-label="Time range" {
                @for r in MonitoringRange::ALL {
                    @if r == range {
                        a.btn.btn-small data-range=(r.label()) aria-current="page" href=(href(environment, r)) { (r.label()) }
                    } @else {
                        a.btn.btn-small.btn-ghost data-range=(r.label()) href=(href(environment, r)) { (r.label()) }
                    }
                }
            }
            @match traffic {
                Err(e) => {
                    div.notice.notice-error role="alert" #traffic-error { span aria-hidden="true" { "✕ " } (e.envelope().error.message) }
                }
                Ok(t) if t.summary.current.requests == 0 => {
                    p.muted #traffic-empty { "No traffic in this range (" (range.label()) " of " (environment) "). Requests to the site show up here within seconds." }
                }
                Ok(t) => {
                    @let points = &t.timeline.points;
                    @let starts: Vec<String> = points.iter().map(|p| p.start.clone()).collect();
                    @let current = &t.summary.current;
                    dl.totals #traffic-totals {
                        div { dt { "Requests" } dd data-total="requests" { (current.requests) } }
                        div { dt { "4xx" } dd data-total="client_errors" { (t.codes.classes.get(3).map_or(0, |c| c.requests)) } }
                        div { dt { "5xx" } dd data-total="server_errors" { (t.codes.classes.get(4).map_or(0, |c| c.requests)) } }
                        div { dt { "p50" } dd { (current.latency_ms.as_ref().map_or("—".to_string(), |q| format!("{:.1} ms", q.p50))) } }
                        div { dt { "p95" } dd { (current.latency_ms.as_ref().map_or("—".to_string(), |q| format!("{:.1} ms", q.p95))) } }
                        div { dt { "Cold starts" } dd data-total="cold_starts" { (current.cold_starts) } }
                    }
                    p.muted.small { (t.summary.summary) " · one point per " (t.timeline.resolution) }
                    (line_chart("requests", "Requests", "", &starts, &[ChartLine {
                        name: "requests", class: "s-requests",
                        values: points.iter().map(|p| Some(p.requests as f64)).collect(),
                    }]))
                    (line_chart("errors", "Errors", "", &starts, &[
                        ChartLine { name: "4xx", class: "s-4xx", values: points.iter().map(|p| Some(p.client_errors as f64)).collect() },
                        ChartLine { name: "5xx", class: "s-5xx", values: points.iter().map(|p| Some(p.server_errors as f64)).collect() },
                    ]))
                    (line_chart("latency", "Time to first byte", " ms", &starts, &[
                        ChartLine { name: "p50", class: "s-p50", values: points.iter().map(|p| p.p50_ms).collect() },
                        ChartLine { name: "p95", class: "s-p95", values: points.iter().map(|p| p.p95_ms).collect() },
                    ]))
                    @if current.cold_starts > 0 {
                        (line_chart("cold-starts", "Cold starts", "", &starts, &[ChartLine {
                            name: "cold starts", class: "s-cold",
                            values: points.iter().map(|p| Some(p.cold_starts as f64)).collect(),
                        }]))
                    }
                    div.split {
                        div {
                            h3 { "Status codes" }
                            table.vars #status-codes {
                                thead { tr { th { "Code" } th { "Requests" } th { "Share" } } }
                                tbody {
                                    @for c in &t.codes.codes {
                                        tr { td.mono { (c.code) } td { (c.requests) } td { (format!("{:.1} %", c.share * 100.0)) } }
                                    }
                                }
                            }
                        }
                        div {
                            h3 { "Top paths" }
                            table.vars #top-paths {
                                thead { tr { th { "Path" } th { "Requests" } th { "4xx" } th { "5xx" } } }
                                tbody {
                                    @for p in &t.paths.paths {
                                        tr {
                                            td.mono { (p.template) @if p.approximate { span.muted title="at least this many" { " ≥" } } }
                                            td { (p.requests) } td { (p.client_errors) } td { (p.server_errors) }
                                        }
                                    }
                                    @if t.paths.other.requests > 0 {
                                        tr.muted { td { "other" } td { (t.paths.other.requests) } td { (t.paths.other.client_errors) } td { (t.paths.other.server_errors) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (error_patterns(environment, range, patterns))
        section.card {
            h2 { "Resource usage" }
            p.muted.small { "Measured when this page loaded; reload for new figures." }
            @for env in usage {
                h3 { (env.environment) " " span.tag { (env.provider) } }
                @if env.instances.is_empty() {
                    p.muted { "No instances run: the environment is asleep, serves a static site, or has no deployment." }
                } @else {
                    table.vars.usage {
                        thead { tr { th { "Instance" } th { "State" } th { "CPU" } th { "Memory" } } }
                        tbody {
                            @for i in &env.instances {
                                tr {
                                    td.mono { (i.index) }
                                    td { (i.state) }
                                    td { (i.cpu_percent.map_or("—".to_string(), |c| format!("{c:.1} %"))) }
                                    td {
                                        (i.memory_bytes.map_or("—".to_string(), mib))
                                        @if let Some(limit) = i.memory_limit_bytes {
                                            span.muted { " of " (mib(limit)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The Monitoring tab's error patterns of the range (HOSTING_GET_ERROR_PATTERNS): each
/// template with its events, first and last seen, deployments and its latest event behind
/// a disclosure, next to the 5xx responses by path template.
fn error_patterns(
    environment: &str,
    range: MonitoringRange,
    patterns: &Result<crate::service::ErrorPatternsOutput, crate::error::ServiceError>,
) -> Markup {
    html! {
        section.card #error-patterns {
            h2 { "Error patterns" }
            @match patterns {
                Err(e) => {
                    div.notice.notice-error role="alert" #error-patterns-error { span aria-hidden="true" { "✕ " } (e.envelope().error.message) }
                }
                Ok(out) => {
                    p.muted.small { (out.summary) }
                    div.split {
                        div {
                            h3 { "Runtime errors" }
                            @if out.patterns.is_empty() {
                                p.muted #error-patterns-empty { "No error events in this range (" (range.label()) " of " (environment) "). Lines on stderr and lines that look like errors or tracebacks show up here." }
                            } @else {
                                table.vars #error-pattern-list {
                                    thead { tr { th { "Template" } th { "Events" } th { "First seen" } th { "Last seen" } th { "Deployments" } } }
                                    tbody {
                                        @for e in &out.patterns {
                                            tr data-pattern=(e.template) {
                                                td.mono {
                                                    (e.template)
                                                    details {
                                                        summary { "Sample" }
                                                        pre.logview-static { (e.sample) }
                                                    }
                                                }
                                                td data-events=(e.events) { (e.events) }
                                                td.mono { (e.first_seen) }
                                                td.mono { (e.last_seen) }
                                                td.mono {
                                                    @for (i, d) in e.deployments.iter().enumerate() {
                                                        @if i > 0 { ", " }
                                                        (d.deployment_id) " (" (d.events) ")"
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                                @if out.more_patterns > 0 {
                                    p.muted.small { (out.more_patterns) " more templates in this range (HOSTING_GET_ERROR_PATTERNS with a higher limit lists them)." }
                                }
                            }
                        }
                        div {
                            h3 { "5xx by path" }
                            @if out.server_errors.is_empty() {
                                p.muted #server-error-paths-empty { "No 5xx responses in this range." }
                            } @else {
                                table.vars #server-error-paths {
                                    thead { tr { th { "Path" } th { "5xx" } th { "Requests" } } }
                                    tbody {
                                        @for s in &out.server_errors {
                                            tr { td.mono { (s.template) } td { (s.server_errors) } td { (s.requests) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the add-domain form holds, kept to refill it after an error.
#[derive(Clone, Debug, Default)]
pub struct AddDomainForm {
    /// The domain as typed.
    pub domain: String,
    /// Environment it serves ("" = production).
    pub environment: String,
    /// Also answer for the www/apex partner with a redirect.
    pub redirect_www: bool,
    /// Send Strict-Transport-Security over HTTPS.
    pub hsts: bool,
}

/// The add-domain form's inputs: service errors about them are shown next to them.
pub const DOMAIN_FORM_FIELDS: [&str; 4] = ["domain", "environment", "redirect_www", "hsts"];

/// Domains tab: every domain of the site with its state, records to create (copyable),
/// the last check per record and the next step; the add form, and check/remove buttons
/// for roles that may use them. `data-domain-watch` cards are re-checked by the script.
pub fn domains(
    session: &Session,
    site: &SiteDetail,
    list: &[DomainInfo],
    form: &AddDomainForm,
    n: Option<&Notice>,
) -> Markup {
    let name = &site.summary.name;
    // Cheap: the session's actor is already loaded; the service checks again on every POST.
    let can_manage = session
        .actor
        .require(crate::service::access::Action::ManageDomains, Some(name), None)
        .is_ok();
    html! {
        section.card #domains {
            h2 { "Domains" }
            @if list.is_empty() {
                p.muted #domains-empty { "No custom domain yet. The site is served at " span.mono { (site.summary.url) } "." }
            }
            ul.plain.domain-list {
                @for (i, d) in list.iter().enumerate() {
                    (domain_card(session, name, i, d, can_manage))
                }
            }
        }
        @if can_manage {
            section.card #add-domain {
                h2 { "Add a domain" }
                p.muted.small { "berth answers the DNS records to create at your DNS host, checks them, then obtains a certificate and serves the site at the domain." }
                form.form #add-domain-form method="post" action=(format!("/sites/{name}/domains")) {
                    (csrf_input(session))
                    div.grid2 {
                        (text_field(n, "domain", "Domain", &form.domain, "www.example.com", Some("A subdomain needs a CNAME; an apex (example.com) A/AAAA records.")))
                        div.field {
                            label for="environment" { "Environment" }
                            select #environment name="environment" aria-invalid=[has_error(n, "environment")] {
                                @for e in &site.environments {
                                    option value=(e.name) selected[form.environment == e.name || (form.environment.is_empty() && e.name == "production")] { (e.name) }
                                }
                            }
                            (field_error(n, "environment"))
                        }
                    }
                    label.check { input #redirect_www type="checkbox" name="redirect_www" value="true" checked[form.redirect_www]; " Redirect the www/apex partner here (www.example.com ↔ example.com)" }
                    (field_error(n, "redirect_www"))
                    label.check { input #hsts type="checkbox" name="hsts" value="true" checked[form.hsts]; " HSTS: browsers keep to HTTPS for two years" }
                    (field_error(n, "hsts"))
                    div.form-actions {
                        button.btn.btn-primary #add-domain-submit type="submit" { "Add domain" }
                    }
                }
            }
        }
    }
}

/// A domain's next step as this page says it: the tool calls it names for agents become
/// the page's own button and listing (the script does the same to live updates).
pub fn next_for_people(next: &str) -> String {
    let mut out = String::with_capacity(next.len());
    let mut rest = next;
    let tools = [
        ("HOSTING_VALIDATE_DOMAIN", "“Check now”"),
        ("HOSTING_LIST_DOMAINS", "this page"),
    ];
    while let Some((at, tool, words)) = tools
        .iter()
        .filter_map(|(tool, words)| rest.find(tool).map(|at| (at, *tool, *words)))
        .min_by_key(|(at, _, _)| *at)
    {
        out.push_str(&rest[..at]);
        out.push_str(words);
        rest = &rest[at + tool.len()..];
        // The call's arguments, ` {"site": …}`, go with it.
        if let Some(args) = rest.strip_prefix(" {")
            && let Some(end) = args.find('}')
        {
            rest = &args[end + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// One domain: state, next step, certificate, records, last check, actions.
fn domain_card(session: &Session, site: &str, index: usize, d: &DomainInfo, can_manage: bool) -> Markup {
    let status = d.status.as_str();
    let served = d.status.is_served();
    html! {
        li.card.domain-card data-domain=(d.name) data-site=(site) data-status=(status)
            data-domain-watch data-can-check=[can_manage.then_some("true")] {
            div.site-card-head {
                h3.mono { (d.name) }
                span data-domain-badge { (badge(status)) }
            }
            p.muted.small {
                "Serves " span.tag { (d.environment) }
                @if let Some(from) = &d.redirect_from { " · " span.mono { (from) } " redirects here" }
                @if d.hsts { " · HSTS" }
                @if served { " · " a href=(d.url) target="_blank" rel="noopener" { (d.url) } }
            }
            p data-domain-next { strong { "Next: " } span data-domain-next-text { (next_for_people(&d.next)) } }
            p.small data-domain-cert {
                @if let Some(c) = &d.certificate {
                    "Certificate expires " (when(&c.expires_at)) " · renewed from " (when(&c.renews_at))
                } @else if let Some(p) = &d.certificate_problem {
                    "Certificate order failed: " (p.message)
                } @else {
                    span.muted { "No certificate yet." }
                }
            }
            @for w in &d.warnings {
                div.notice.notice-error role="alert" data-domain-warning { span aria-hidden="true" { "⚠ " } (w) }
            }
            details.subsection open[!served] {
                summary { "DNS records to create" }
                table.dns data-records {
                    thead { tr { th scope="col" { "Type" } th scope="col" { "Name" } th scope="col" { "Value" } th scope="col" { "Why" } } }
                    tbody {
                        @for (j, r) in d.records.iter().enumerate() {
                            @let id = format!("record-{index}-{j}");
                            tr data-record=(format!("{} {}", r.record_type, r.name)) {
                                td.mono { (r.record_type) }
                                td.mono { (r.name) }
                                td {
                                    span.copyable {
                                        code id=(id) data-record-value { (r.value) }
                                        (copy_button(&format!("#{id}"), "Copy"))
                                    }
                                    @if r.managed { " " span.tag.tag-current data-managed title="berth created this record at the DNS provider and removes it with the domain" { "created by berth" } }
                                }
                                td.small { (r.why) }
                            }
                        }
                    }
                }
                h4 {
                    "Last check "
                    span.muted.small data-domain-checked {
                        @if let Some(at) = &d.checked_at { (when(at)) } @else { "not yet" }
                    }
                }
                table.dns {
                    thead { tr { th scope="col" { "Type" } th scope="col" { "Name" } th scope="col" { "Expected" } th scope="col" { "Observed" } th scope="col" { "Result" } } }
                    tbody data-diagnosis {
                        @for c in d.diagnosis.iter().flatten() {
                            tr data-check=(format!("{} {}", c.record_type, c.name)) data-check-ok=(c.ok) {
                                td.mono { (c.record_type) }
                                td.mono { (c.name) }
                                td.mono { (c.expected) }
                                td.mono {
                                    @if c.observed.is_empty() { span.muted { "nothing" } } @else { (c.observed.join(", ")) }
                                    @if let Some(at) = &c.authoritative {
                                        br;
                                        span.small { "name servers: " }
                                        @if at.observed.is_empty() { span.muted { "nothing" } } @else { (at.observed.join(", ")) }
                                    }
                                }
                                td {
                                    @if c.ok {
                                        span.ok-mark { span aria-hidden="true" { "✓ " } "ok" }
                                    } @else {
                                        span.bad-mark { span aria-hidden="true" { "✕ " } (c.next) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.small.muted data-domain-live aria-live="polite" {}
            @if can_manage {
                div.actions {
                    form method="post" action=(format!("/sites/{site}/domains/{}/check", d.name)) {
                        (csrf_input(session))
                        button.btn.btn-small type="submit" data-check-now { "Check now" }
                    }
                    form method="post" action=(format!("/sites/{site}/domains/{}/remove", d.name))
                        data-confirm=(format!("Remove {}? berth stops serving it at once.", d.name)) {
                        (csrf_input(session))
                        button.btn.btn-small.btn-danger type="submit" data-remove-domain { "Remove" }
                    }
                }
            }
        }
    }
}

/// The style sheet and script, embedded in the binary.
pub const APP_CSS: &str = include_str!("assets/app.css");
/// See [`APP_CSS`].
pub const APP_JS: &str = include_str!("assets/app.js");

// ---------------------------------------------------------------- providers

/// Outcome shown on one provider's card.
pub enum ProviderOutcome {
    /// A connection test's result.
    Tested(crate::service::TestConnectionOutput),
    /// Saving failed (the service's message).
    Failed(Notice),
    /// Saved.
    Saved,
}

/// The providers page: every provider's settings (secrets masked), editable, with a
/// connection test.
pub fn providers(
    session: &Session,
    list: &[crate::service::ProviderConfig],
    outcome: Option<(&str, &ProviderOutcome)>,
) -> Markup {
    page(
        Some(session),
        "Providers",
        html! {
            div.pagehead {
                div {
                    h1 { "Providers" }
                    p.muted { "Where deployments run and which services berth talks to. Secret values are stored sealed and never shown again." }
                }
            }
            ul.grid.grid-wide #providers {
                @for p in list {
                    li.card data-provider=(p.provider) {
                        div.site-card-head {
                            h2 { (p.provider) }
                            @if p.configured {
                                span.badge.badge-ok { span.badge-icon aria-hidden="true" { "✓" } "Configured" }
                            } @else {
                                span.badge.badge-idle { span.badge-icon aria-hidden="true" { "○" } "Defaults" }
                            }
                        }
                        p.muted { (p.summary) }
                        @if let Some(at) = &p.updated_at { p.muted.small { "Changed " (when(at)) } }
                        @match outcome.filter(|(name, _)| *name == p.provider).map(|(_, o)| o) {
                            Some(ProviderOutcome::Tested(t)) if t.ok => {
                                div.notice.notice-ok role="status" data-test-result="ok" { span aria-hidden="true" { "✓ " } "Connection works: " (t.detail) }
                            }
                            Some(ProviderOutcome::Tested(t)) => {
                                div.notice.notice-error role="alert" data-test-result="failed" { span aria-hidden="true" { "✕ " } "Connection failed: " (t.detail) }
                            }
                            Some(ProviderOutcome::Failed(n)) => { (notice(Some(n))) }
                            Some(ProviderOutcome::Saved) => { (notice(Some(&Notice::ok("Settings saved.")))) }
                            None => {}
                        }
                        @if p.keys.is_empty() {
                            p.small.muted { "This provider has no settings." }
                        } @else {
                            form.form method="post" action=(format!("/providers/{}", p.provider)) {
                                (csrf_input(session))
                                @for k in &p.keys {
                                    @let id = format!("{}-{}", p.provider, k.name);
                                    @let current = p.config.get(&k.name);
                                    div.field {
                                        label for=(id) { (k.name) @if k.secret { " " span.tag { "secret" } } }
                                        @if k.secret {
                                            input id=(id) type="password" name=(format!("key.{}", k.name)) autocomplete="off"
                                                placeholder=(if current.is_some() { "set — leave empty to keep" } else { "not set" });
                                        } @else {
                                            input id=(id) type="text" name=(format!("key.{}", k.name)) autocomplete="off"
                                                value=(current.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).unwrap_or_default());
                                        }
                                        small.hint { (k.description) }
                                        @if current.is_some() {
                                            label.check.small { input type="checkbox" name=(format!("clear.{}", k.name)) value="true"; " Remove this setting" }
                                        }
                                    }
                                }
                                button.btn.btn-primary.btn-small type="submit" { "Save settings" }
                            }
                        }
                        form method="post" action=(format!("/providers/{}/test", p.provider)) {
                            (csrf_input(session))
                            button.btn.btn-small type="submit" data-test-provider=(p.provider) { "Test connection" }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Actor;
    use crate::service::ProviderConfig;
    use crate::service::config::ConfigKeyInfo;

    fn session() -> Session {
        Session::for_tests(Actor::system("org_1".into(), "default".into(), "key_1".into(), "admin"))
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn provider_secrets_are_never_printed_and_plain_values_are() {
        let mut config = crate::service::ConfigMap::new();
        config.insert("token".into(), serde_json::json!("should-not-show"));
        config.insert("endpoint".into(), serde_json::json!("unix:///run/x.sock"));
        let p = ProviderConfig {
            provider: "example".into(),
            summary: "An example".into(),
            configured: true,
            config,
            keys: vec![
                ConfigKeyInfo {
                    name: "token".into(),
                    secret: true,
                    description: "API token".into(),
                },
                ConfigKeyInfo {
                    name: "endpoint".into(),
                    secret: false,
                    description: "Where".into(),
                },
            ],
            updated_at: None,
            capabilities: None,
        };
        let html = providers(&session(), &[p], None).into_string();
        assert!(!html.contains("should-not-show"), "{html}");
        assert!(html.contains("set — leave empty to keep"));
        assert!(html.contains("value=\"unix:///run/x.sock\""));
        assert!(html.contains("name=\"_csrf\" value=\"csrf-token\""));
    }

    #[test]
    fn domain_next_steps_name_the_page_s_buttons_not_tools() {
        assert_eq!(
            next_for_people(
                "create the records listed, then check them with HOSTING_VALIDATE_DOMAIN {\"site\": \"shop\", \"domain\": \"a.example.com\"}"
            ),
            "create the records listed, then check them with “Check now”"
        );
        assert_eq!(
            next_for_people(
                "add TXT x; then check again with HOSTING_VALIDATE_DOMAIN (DNS changes can take the records' TTL to show)"
            ),
            "add TXT x; then check again with “Check now” (DNS changes can take the records' TTL to show)"
        );
        assert_eq!(
            next_for_people("being issued; see it with HOSTING_LIST_DOMAINS {\"site\": \"shop\"}"),
            "being issued; see it with this page"
        );
        assert_eq!(
            next_for_people("served at https://a.example.com"),
            "served at https://a.example.com"
        );
    }

    #[test]
    fn text_is_escaped_and_status_is_never_colour_alone() {
        let html = error_page(Some(&session()), "Oops", "<script>alert(1)</script>").into_string();
        assert!(!html.contains("<script>alert(1)"));
        assert!(html.contains("&lt;script&gt;"));
        for status in [
            "live",
            "building",
            "failed",
            "sleeping",
            "crashed",
            "new",
            "pending_dns",
            "validating",
            "issuing",
            "active",
            "renewing",
        ] {
            let b = badge(status).into_string();
            let (icon, label, _) = status_parts(status);
            assert!(b.contains(icon) && b.contains(label), "{b}");
        }
    }
}
