//! The web dashboard, driven as a person would: headless Chromium over WebDriver
//! (chromedriver, started per test on a free port) against the real `berth serve`, plus
//! plain HTTP checks of the session and CSRF rules. Screenshots of the main pages land in
//! `$CARGO_TARGET_TMPDIR/screenshots`.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long the browser waits for an element before the test fails.
const WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- browser harness

/// A chromedriver process and a WebDriver session of headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        // Its own process group: Chromium's processes are its children, and a failing test
        // must not leave them running.
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{url}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                let _ = driver.kill();
                panic!("chromedriver did not answer on {url}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert("unhandledPromptBehavior".into(), json!("accept"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-proxy-server", "--disable-breakpad", "--disable-crash-reporter",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("tls roots")
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits for an element to exist (explicit wait, no sleeps).
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    async fn fill(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(value).await.expect("type");
    }

    /// Clicks a button whose form asks `confirm()`; the session accepts such dialogs
    /// (`unhandledPromptBehavior`), as a person clicking OK would.
    async fn click_and_confirm(&self, css: &str) {
        self.click(css).await;
    }

    /// Waits until the page's body text contains `needle`.
    async fn wait_text(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            // The page may be navigating: a stale or missing body just means "not yet".
            let body = match self.client.find(Locator::Css("body")).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if body.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {needle:?}; it shows:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn login(&self, server: &TestServer, key: &str) {
        self.goto(&server.api("/login")).await;
        self.fill("#key", key).await;
        self.click("form.card button[type=submit]").await;
    }

    /// Ends the WebDriver session (Chromium quits); the driver goes with the drop.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium process still alive.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}

/// Polls the edge until `host` answers with a body containing `needle`.
async fn wait_edge(server: &TestServer, host: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.edge(host, "/").await;
        if status == 200 && body.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} never served {needle:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- browser scenarios

#[tokio::test]
async fn chromium_landing_page_and_login() {
    let server = TestServer::start().await;
    let b = Browser::start().await;

    b.goto(&server.api("/")).await;
    assert!(b.text("h1").await.contains("agents can drive"));
    let snippet = b.text("#mcp-http").await;
    assert!(
        snippet.contains(&format!("127.0.0.1:{}/mcp", server.api_port)),
        "{snippet}"
    );
    assert!(b.text("#mcp-stdio").await.contains("\"mcp\""));
    b.screenshot("landing").await;
    b.click("details.tools summary").await;
    assert!(b.text("details.tools").await.contains("HOSTING_CREATE_SITE"));

    b.login(&server, "berth_not_the_key").await;
    assert!(b.text("#login-error").await.contains("not valid"));
    b.screenshot("login-error").await;

    b.login(&server, KEY).await;
    b.find("#sites-empty").await;
    assert!(b.text("#sites-empty").await.contains("Create your first site"));
    b.screenshot("sites-empty").await;

    // Providers: settings listed, "Test connection" shows its result either way.
    b.click("nav.mainnav a[href='/providers']").await;
    b.click("[data-test-provider=local]").await;
    let result = b.text("[data-provider=local] [data-test-result]").await;
    assert!(
        result.contains("Connection works") || result.contains("Connection failed"),
        "{result}"
    );
    b.screenshot("providers").await;

    b.click("form[action='/logout'] button").await;
    b.find("section.hero").await;
    b.goto(&server.api("/sites")).await;
    b.find("#key").await;
    b.close().await;
}

#[tokio::test]
async fn chromium_org_switcher_shows_the_other_orgs_sites() {
    let server = TestServer::start().await;
    const OTHER_KEY: &str = "berth_org_b_admin_key_0123456789";
    const PASSWORD: &str = "correct horse battery";
    add_org(&server, "org_b", "bee", OTHER_KEY).await;
    let dir = app(&[("index.html", "x")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "alpha", "repo": s(dir.path()), "deploy": false}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let r = server
        .http
        .post(server.api("/api/sites"))
        .bearer_auth(OTHER_KEY)
        .json(&json!({"name": "beta", "repo": s(dir.path()), "deploy": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Ada: owner of the first org, viewer of the second.
    let (status, out) = server
        .post(
            "/api/members",
            &json!({"email": "ada@a.test", "role": "owner", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let r = server
        .http
        .post(server.api("/api/members"))
        .bearer_auth(OTHER_KEY)
        .json(&json!({"email": "ada@a.test", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let b = Browser::start().await;
    b.goto(&server.api("/login")).await;
    b.fill("#email", "ada@a.test").await;
    b.fill("#password", PASSWORD).await;
    b.click("#password-login button[type=submit]").await;
    b.wait_text("alpha").await;
    assert!(b.text("#org-switch option[selected]").await.contains("default (owner)"));
    assert!(!b.text("main").await.contains("beta"));
    b.screenshot("org-switcher").await;

    b.click("#org-switch option[value='org_b']").await;
    b.click("#org-switch-submit").await;
    b.wait_text("beta").await;
    assert!(b.text("#org-switch option[selected]").await.contains("bee (viewer)"));
    assert!(!b.text("main").await.contains("alpha"));
    b.close().await;
}

#[tokio::test]
async fn chromium_site_from_folder_live_promote_rollback_env_and_delete() {
    let server = TestServer::start().await;
    let folder = app(&[("index.html", "<!doctype html><h1>hello v1</h1>")]);
    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.find("#sites-empty").await;

    // Create from a folder; the build log streams and the deployment goes live.
    b.goto(&server.api("/sites/new")).await;
    b.fill("#name", "webby").await;
    b.click("input[name=source_kind][value=path] + span").await;
    b.fill("#repo", s(folder.path())).await;
    b.screenshot("create").await;
    b.click("#create-submit").await;
    b.find("#deployment[data-status=live]").await;
    b.find("[data-logview][data-kind=build][data-lines]").await;
    let log = b.text("[data-logview][data-kind=build] [data-log-body]").await;
    assert!(log.contains("static"), "build log streamed: {log}");
    b.screenshot("deployment-live").await;

    // The sites grid shows it live, with its last deploy.
    b.goto(&server.api("/sites")).await;
    assert!(b.text("[data-site=webby][data-status=live]").await.contains("by admin"));
    b.screenshot("sites").await;

    // The live URL through the edge, in the browser (Chromium resolves *.localhost).
    let site_url = format!("http://webby.localhost:{}/", server.edge_port);
    b.goto(&site_url).await;
    assert_eq!(b.text("h1").await, "hello v1");

    // A second version, deployed from the overview.
    std::fs::write(folder.path().join("index.html"), "<!doctype html><h1>hello v2</h1>").unwrap();
    b.goto(&server.api("/sites/webby")).await;
    b.screenshot("site-overview").await;
    b.click("form[action='/sites/webby/deploy'] button").await;
    b.find("#deployment[data-status=live]").await;
    wait_edge(&server, "webby.localhost", "hello v2").await;
    let (_, list) = server.get("/api/sites/webby/deployments").await;
    let (v2, v1) = (
        list["deployments"][0]["id"].as_str().unwrap().to_string(),
        list["deployments"][1]["id"].as_str().unwrap().to_string(),
    );

    // Roll back, then promote v2 again, from the deployments tab.
    b.goto(&server.api("/sites/webby/deployments")).await;
    b.screenshot("site-deployments").await;
    b.click_and_confirm("#rollback-button").await;
    b.wait_text("Rolled back").await;
    wait_edge(&server, "webby.localhost", "hello v1").await;
    let (_, site) = server.get("/api/sites/webby").await;
    assert_eq!(site["environments"][0]["deployment_id"], v1.as_str(), "{site}");
    b.click(&format!("li[data-deployment='{v2}'] summary")).await;
    b.click_and_confirm(&format!("[data-promote='{v2}']")).await;
    b.wait_text("Promoted").await;
    wait_edge(&server, "webby.localhost", "hello v2").await;

    // Environments tab renders its cards.
    b.goto(&server.api("/sites/webby/environments")).await;
    b.find("[data-environment=production]").await;
    b.screenshot("site-environments").await;

    // An env var is masked once saved; the value shows only after an explicit reveal.
    b.goto(&server.api("/sites/webby/settings")).await;
    b.fill("#var_name", "API_TOKEN").await;
    b.fill("#var_value", "tok-123-secret").await;
    b.click("#env-form button[type=submit]").await;
    b.wait_text("Variable saved").await;
    assert_eq!(b.text("tr[data-var=API_TOKEN] [data-var-value]").await, "********");
    let page = b.client.source().await.unwrap();
    assert!(!page.contains("tok-123-secret"), "the secret is not in the page");
    b.screenshot("site-settings").await;
    b.click("#reveal").await;
    b.wait_text("Hide values").await;
    assert_eq!(
        b.text("tr[data-var=API_TOKEN] [data-var-value]").await,
        "tok-123-secret"
    );

    // The domains tab says when there is none yet.
    b.goto(&server.api("/sites/webby/domains")).await;
    b.find("#domains-empty").await;

    // Delete with the typed name: the button waits for it.
    b.goto(&server.api("/sites/webby/settings")).await;
    let delete = b.find("#delete-site").await;
    assert!(!delete.is_enabled().await.unwrap(), "disabled until the name is typed");
    b.fill("#confirm", "webby").await;
    assert!(delete.is_enabled().await.unwrap());
    b.click("#delete-site").await;
    b.find("#sites-empty").await;
    let (status, _) = server.get("/api/sites/webby").await;
    assert_eq!(status, 404);

    // Phone width: the sites page and a form still lay out.
    b.client.set_window_size(375, 812).await.unwrap();
    b.goto(&server.api("/sites/new")).await;
    b.find("#create-form").await;
    b.screenshot("create-phone").await;
    b.close().await;
}

#[tokio::test]
async fn chromium_build_settings_in_the_create_form_and_the_settings_tab() {
    let server = TestServer::start().await;
    let folder = app(&[
        ("index.html", "<!doctype html><h1>from the root</h1>"),
        ("site/index.html", "<!doctype html><h1>from site</h1>"),
    ]);
    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.find("#sites-empty").await;

    // The create form has every build setting, build pack and output folder included.
    b.goto(&server.api("/sites/new")).await;
    b.fill("#name", "tuned").await;
    b.click("input[name=source_kind][value=path] + span").await;
    b.fill("#repo", s(folder.path())).await;
    b.click("details.subsection summary").await;
    for id in [
        "#build_pack",
        "#root_dir",
        "#install_command",
        "#build_command",
        "#start_command",
        "#port",
        "#health_check_path",
    ] {
        b.find(id).await;
    }
    b.click("#build_pack option[value=static]").await;
    b.fill("#output_dir", "site").await;
    b.click("#create-submit").await;
    b.find("#deployment[data-status=live]").await;
    wait_edge(&server, "tuned.localhost", "from site").await;
    let (_, site) = server.get("/api/sites/tuned").await;
    assert_eq!(site["build_settings"]["output_dir"], "site", "{site}");
    assert_eq!(site["build_settings"]["build_pack"], "static", "{site}");

    // The settings tab shows them in a form; an emptied field returns to detection.
    b.goto(&server.api("/sites/tuned/settings")).await;
    assert_eq!(
        b.find("#output_dir").await.prop("value").await.unwrap().as_deref(),
        Some("site")
    );
    b.client
        .execute("document.getElementById('build-settings').scrollIntoView()", vec![])
        .await
        .unwrap();
    b.screenshot("site-build-settings").await;
    b.fill("#output_dir", "").await;
    b.fill("#health_check_path", "/index.html").await;
    b.click("#settings-submit").await;
    b.wait_text("Settings saved").await;
    let (_, site) = server.get("/api/sites/tuned").await;
    assert_eq!(site["build_settings"]["output_dir"], Value::Null, "{site}");
    assert_eq!(site["build_settings"]["health_check_path"], "/index.html", "{site}");
    assert_eq!(site["build_settings"]["build_pack"], "static", "kept: {site}");

    // A bad value is shown next to its field and changes nothing.
    b.fill("#root_dir", "../outside").await;
    b.click("#settings-submit").await;
    b.find("#root_dir-error").await;
    let (_, after) = server.get("/api/sites/tuned").await;
    assert_eq!(after["build_settings"], site["build_settings"]);

    // Applied at the next deploy.
    b.goto(&server.api("/sites/tuned")).await;
    b.click("form[action='/sites/tuned/deploy'] button").await;
    b.find("#deployment[data-status=live]").await;
    wait_edge(&server, "tuned.localhost", "from the root").await;
    b.close().await;
}

/// The text of an element inside one domain's card.
async fn domain_text(b: &Browser, domain: &str, css: &str) -> String {
    b.text(&format!("[data-domain='{domain}'] {css}")).await
}

#[tokio::test]
async fn chromium_domain_wizard_records_live_check_to_active_and_removal() {
    let dns = common::pebble::Dns::start().await;
    let server = TestServer::start_with(&[("BERTH_DNS_RESOLVERS", &dns.resolver())]).await;
    let _dir = static_site(&server, "shop").await;
    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.find("#sites-grid").await;
    b.goto(&server.api("/sites/shop/domains")).await;
    b.find("#domains-empty").await;

    // A bad name: the service's message next to the field, the name kept, nothing added.
    b.fill("#domain", "not a domain!").await;
    b.click("#add-domain-submit").await;
    let error = b.text("#domain-error").await;
    assert!(error.contains("'not a domain!' is not a domain name"), "{error}");
    assert_eq!(
        b.find("#domain").await.prop("value").await.unwrap().as_deref(),
        Some("not a domain!")
    );
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(list["total"], 0, "{list}");

    // Added through the form: the records to create, each value copyable.
    b.fill("#domain", "www.example.com").await;
    b.click("#add-domain-submit").await;
    b.wait_text("Domain added").await;
    let card = "[data-domain='www.example.com']";
    b.find(card).await;
    let cname = domain_text(
        &b,
        "www.example.com",
        "[data-record='CNAME www.example.com'] [data-record-value]",
    )
    .await;
    assert_eq!(cname, "shop.localhost");
    let token = domain_text(
        &b,
        "www.example.com",
        "[data-record='TXT _berth-challenge.www.example.com'] [data-record-value]",
    )
    .await;
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert!(list["domains"][0]["records"].to_string().contains(&token), "{list}");
    // Where the clipboard API is missing, the value is shown selected in a read-only field.
    b.client
        .execute(
            "Object.defineProperty(navigator, 'clipboard', { value: undefined, configurable: true })",
            vec![],
        )
        .await
        .unwrap();
    b.click(&format!("{card} [data-record='CNAME www.example.com'] [data-copy]"))
        .await;
    let fallback = b
        .find(&format!(
            "{card} [data-record='CNAME www.example.com'] [data-copy-fallback]"
        ))
        .await;
    assert_eq!(fallback.prop("value").await.unwrap().as_deref(), Some("shop.localhost"));
    assert_eq!(fallback.attr("readonly").await.unwrap().as_deref(), Some("true"));
    b.screenshot("site-domains-pending").await;

    // The page checks on its own: first the records are missing, named per record.
    b.client.execute("window.stillThisPage = true", vec![]).await.unwrap();
    b.find(&format!(
        "{card} [data-check='CNAME www.example.com'][data-check-ok=false]"
    ))
    .await;
    let txt = domain_text(
        &b,
        "www.example.com",
        "[data-check='TXT _berth-challenge.www.example.com']",
    )
    .await;
    assert!(txt.contains(&token), "says what to create: {txt}");
    let next = domain_text(&b, "www.example.com", "[data-domain-next]").await;
    assert!(
        next.contains("“Check now”") && !next.contains("HOSTING_"),
        "the next step names the page's button: {next}"
    );

    // Records set at the DNS server: the live check turns the domain active, no reload.
    dns.set(
        "/set-cname",
        json!({"host": "www.example.com", "target": "shop.localhost"}),
    )
    .await;
    dns.set(
        "/set-txt",
        json!({"host": "_berth-challenge.www.example.com.", "value": token}),
    )
    .await;
    b.find(&format!("{card}[data-status=active]")).await;
    assert_eq!(
        b.client
            .execute("return window.stillThisPage === true", vec![])
            .await
            .unwrap(),
        json!(true),
        "updated in place, without a reload"
    );
    assert!(
        domain_text(&b, "www.example.com", "[data-domain-badge]")
            .await
            .contains("Active")
    );
    b.find(&format!(
        "{card} [data-check='CNAME www.example.com'][data-check-ok=true]"
    ))
    .await;
    assert!(
        domain_text(&b, "www.example.com", "[data-domain-next]")
            .await
            .contains("served at http://www.example.com")
    );
    wait_edge(&server, "www.example.com", "hi").await;
    b.screenshot("site-domains-active").await;

    // Removed (after the confirmation): no longer listed nor served.
    b.click_and_confirm(&format!("{card} [data-remove-domain]")).await;
    b.wait_text("Domain removed").await;
    b.find("#domains-empty").await;
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(list["total"], 0, "{list}");
    let (status, _) = server.edge("www.example.com", "/").await;
    assert_eq!(status, 404);
    b.close().await;
}

// ---------------------------------------------------------------- plain HTTP

/// A browser-like client: logs in through the form and keeps the session cookie.
struct WebSession {
    http: reqwest::Client,
    base: String,
    cookie: String,
    set_cookie: String,
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + "name=\"_csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

/// A urlencoded form body (the request builder's `form` needs a reqwest feature we do not use).
trait FormBody {
    fn urlencoded(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn urlencoded(self, pairs: &[(&str, &str)]) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs).unwrap())
    }
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

impl WebSession {
    async fn login(server: &TestServer, key: &str, headers: &[(&str, &str)]) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = http.get(server.api("/login")).send().await.unwrap();
        let login_cookie = cookie_pair(page.headers()["set-cookie"].to_str().unwrap());
        let token = csrf_of(&page.text().await.unwrap());
        let mut req = http
            .post(server.api("/login"))
            .header("cookie", login_cookie)
            .urlencoded(&[("_csrf", token.as_str()), ("key", key), ("next", "/sites")]);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 303, "login with the right key redirects");
        let set_cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("berth_session="))
            .expect("a session cookie");
        Self {
            http,
            base: server.api(""),
            cookie: cookie_pair(&set_cookie),
            set_cookie,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .urlencoded(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn csrf(&self) -> String {
        csrf_of(&self.get("/sites").await.1)
    }
}

async fn static_site(server: &TestServer, name: &str) -> tempfile::TempDir {
    let dir = app(&[("index.html", "<h1>hi</h1>")]);
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    dir
}

#[tokio::test]
async fn logged_out_visitors_get_the_landing_page_and_are_sent_to_login() {
    let server = TestServer::start().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let landing = http.get(server.api("/")).send().await.unwrap();
    assert_eq!(landing.status(), 200);
    let csp = landing.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let text = landing.text().await.unwrap();
    assert!(text.contains("mcpServers") && text.contains("HOSTING_DEPLOY"), "{text}");
    for path in ["/sites", "/sites/new", "/sites/anything/settings"] {
        let r = http.get(server.api(path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(to.starts_with("/login?next=%2Fsites"), "{path} → {to}");
    }
    // Unknown paths: a page for people, the JSON envelope under /api.
    let r = http.get(server.api("/no/such/page")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Not found"));
    let (status, body) = server.get("/api/no-such-endpoint").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // The API without a key or a session stays closed.
    let r = http.get(server.api("/api/sites")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A forged session cookie is no session.
    let r = http
        .get(server.api("/sites"))
        .header("cookie", format!("berth_session={}", "a".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // After login, an open redirect target is not followed.
    let page = http.get(server.api("/login")).send().await.unwrap();
    let login_cookie = cookie_pair(page.headers()["set-cookie"].to_str().unwrap());
    let token = csrf_of(&page.text().await.unwrap());
    let r = http
        .post(server.api("/login"))
        .header("cookie", login_cookie)
        .urlencoded(&[("_csrf", token.as_str()), ("key", KEY), ("next", "//evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/sites");
}

#[tokio::test]
async fn session_cookie_flags_and_logout() {
    let server = TestServer::start().await;
    let web = WebSession::login(&server, KEY, &[]).await;
    let c = web.set_cookie.to_ascii_lowercase();
    assert!(
        c.contains("httponly") && c.contains("samesite=lax") && c.contains("path=/"),
        "{c}"
    );
    assert!(!c.contains("secure"), "plain HTTP gets no Secure flag: {c}");
    let (status, page) = web.get("/sites").await;
    assert_eq!(status, 200);
    assert!(page.contains("default · admin"), "the session acts as the key");

    let behind_tls = WebSession::login(&server, KEY, &[("x-forwarded-proto", "https")]).await;
    assert!(behind_tls.set_cookie.contains("; Secure"), "{}", behind_tls.set_cookie);

    // The database holds only a hash of the cookie value.
    let token = web.cookie.trim_start_matches("berth_session=");
    let stored = database_contents(server.data.path());
    assert!(!String::from_utf8_lossy(&stored).contains(token));

    // Logging out ends the session server-side, not just in the browser.
    let csrf = web.csrf().await;
    let (status, _) = web.post("/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(status, 303);
    let (status, _) = web.get("/sites").await;
    assert_eq!(status, 303, "the old cookie no longer works");
}

#[tokio::test]
async fn state_changing_requests_without_the_csrf_token_are_refused() {
    let server = TestServer::start().await;
    let _dir = static_site(&server, "keep").await;
    let web = WebSession::login(&server, KEY, &[]).await;
    let csrf = web.csrf().await;

    // Forms: no token, a wrong token → 403, nothing deleted.
    let (status, page) = web.post("/sites/keep/delete", &[("confirm", "keep")]).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("CSRF"), "{page}");
    let wrong = "0".repeat(csrf.len());
    let (status, _) = web
        .post("/sites/keep/delete", &[("confirm", "keep"), ("_csrf", &wrong)])
        .await;
    assert_eq!(status, 403);
    let (status, _) = web
        .post("/sites/keep/env", &[("var_name", "A"), ("var_value", "b")])
        .await;
    assert_eq!(status, 403);
    assert_eq!(server.get("/api/sites/keep").await.0, 200);
    let (_, vars) = server.get("/api/sites/keep/env").await;
    assert!(vars["vars"].as_object().unwrap().is_empty(), "{vars}");

    // The REST API with the cookie: reads work, writes need the token in a header.
    let (status, _) = web.get("/api/sites/keep").await;
    assert_eq!(status, 200);
    let r = web
        .http
        .delete(server.api("/api/sites/keep"))
        .header("cookie", &web.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(server.get("/api/sites/keep").await.0, 200);

    // Login itself is protected too (double-submit token).
    let r = web
        .http
        .post(server.api("/login"))
        .urlencoded(&[("key", KEY), ("next", "/sites")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Wrong typed name: refused next to the field, nothing deleted.
    let (status, page) = web
        .post("/sites/keep/delete", &[("confirm", "kee"), ("_csrf", &csrf)])
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("confirm-error"), "{page}");
    // Bad input shows the service's message next to the field.
    let (status, page) = web
        .post(
            "/sites/keep/env",
            &[("var_name", "1BAD"), ("var_value", "x"), ("_csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("var_name-error"), "{page}");
    // With the token, the same form works.
    let (status, _) = web
        .post("/sites/keep/delete", &[("confirm", "keep"), ("_csrf", &csrf)])
        .await;
    assert_eq!(status, 303);
    assert_eq!(server.get("/api/sites/keep").await.0, 404);
}

#[tokio::test]
async fn another_orgs_session_sees_none_of_this_orgs_sites() {
    let server = TestServer::start().await;
    let _dir = static_site(&server, "private").await;
    // berth has no API to create orgs yet: add a second org and key straight to the store,
    // the way bootstrap does.
    let other_key = "berth_other_org_key_0123456789";
    {
        let store = common::open_store(server.data.path()).await;
        berth::auth::create_org_with_key(&store, "org_other", "other", "other-admin", "admin", other_key)
            .await
            .unwrap();
    }
    let web = WebSession::login(&server, other_key, &[]).await;
    let (status, page) = web.get("/sites").await;
    assert_eq!(status, 200);
    assert!(page.contains("other · other-admin"), "{page}");
    assert!(!page.contains("private"), "another org's site is not listed");
    for path in [
        "/sites/private",
        "/sites/private/settings?reveal=true",
        "/sites/private/deployments",
        "/api/sites/private",
    ] {
        let (status, body) = web.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let csrf = web.csrf().await;
    let (status, _) = web
        .post("/sites/private/delete", &[("confirm", "private"), ("_csrf", &csrf)])
        .await;
    assert_eq!(status, 404);
    assert_eq!(server.get("/api/sites/private").await.0, 200, "still there");
}

/// A `multipart/form-data` body built by hand (reqwest's multipart is a feature we do not use).
fn multipart(fields: &[(&str, &str)], archive: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "berthtestboundary7f3c";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    if let Some(bytes) = archive {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"app.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn create_form_shows_service_errors_by_field_and_creates_nothing_on_bad_input() {
    let server = TestServer::start().await;
    let web = WebSession::login(&server, KEY, &[]).await;
    let csrf = web.csrf().await;
    let post = |fields: Vec<(&'static str, String)>, archive: Option<Vec<u8>>| {
        let web = &web;
        async move {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (ctype, body) = multipart(&pairs, archive.as_deref());
            let r = web
                .http
                .post(format!("{}/sites/new", web.base))
                .header("cookie", &web.cookie)
                .header("content-type", ctype)
                .body(body)
                .send()
                .await
                .unwrap();
            let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), location, r.text().await.unwrap())
        }
    };
    let folder = app(&[("index.html", "<h1>up</h1>")]);

    // A bad name: the service's message, next to the name field, the form refilled.
    let (status, _, page) = post(
        vec![
            ("_csrf", csrf.clone()),
            ("name", "Bad_Name".into()),
            ("source_kind", "path".into()),
            ("repo", s(folder.path()).into()),
        ],
        None,
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("id=\"name-error\"") && page.contains("invalid site name"),
        "{page}"
    );
    assert!(page.contains("value=\"Bad_Name\""), "the form keeps what was typed");

    // A broken archive: refused next to the file input, and no site is left behind.
    let (status, _, page) = post(
        vec![
            ("_csrf", csrf.clone()),
            ("name", "up".into()),
            ("source_kind", "upload".into()),
            ("env", "GREETING=hi".into()),
        ],
        Some(b"definitely not a tarball".to_vec()),
    )
    .await;
    assert!(status >= 400, "{status}: {page}");
    assert!(page.contains("id=\"archive-error\""), "{page}");
    let (_, sites) = server.get("/api/sites").await;
    assert!(sites["sites"].as_array().unwrap().is_empty(), "{sites}");

    // Without the CSRF token nothing happens.
    let (status, _, _) = post(
        vec![("name", "up".into()), ("source_kind", "upload".into())],
        Some(pack(folder.path())),
    )
    .await;
    assert_eq!(status, 403);

    // A real upload with an env var: created, deploying, then live.
    let (status, location, page) = post(
        vec![
            ("_csrf", csrf.clone()),
            ("name", "up".into()),
            ("source_kind", "upload".into()),
            ("env", "GREETING=hi".into()),
        ],
        Some(pack(folder.path())),
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let location = location.unwrap();
    assert!(location.starts_with("/sites/up/deployments/dpl_"), "{location}");
    let id = location.rsplit('/').next().unwrap();
    assert_eq!(server.wait_deployment(id).await["status"], "live");
    wait_edge(&server, "up.localhost", "up").await;
    let (_, vars) = server.get("/api/sites/up/env").await;
    assert_eq!(vars["vars"]["GREETING"]["value"], "********", "{vars}");
}

#[tokio::test]
async fn environments_scaling_and_scoped_variables_through_the_forms() {
    let server = TestServer::start().await;
    let _dir = static_site(&server, "envy").await;
    let web = WebSession::login(&server, KEY, &[]).await;
    let csrf = web.csrf().await;

    let (status, page) = web
        .post(
            "/sites/envy/environments",
            &[("_csrf", &csrf), ("env_name", "Bad Name")],
        )
        .await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("id=\"env_name-error\""),
        "the service's error is next to the field: {page}"
    );
    let (status, _) = web
        .post("/sites/envy/environments", &[("_csrf", &csrf), ("env_name", "staging")])
        .await;
    assert_eq!(status, 303);
    let (_, page) = web.get("/sites/envy/environments").await;
    assert!(page.contains("data-environment=\"staging\""), "{page}");

    let (status, _) = web
        .post(
            "/sites/envy/environments/staging/scale",
            &[("_csrf", &csrf), ("min_instances", "0"), ("idle_timeout_seconds", "60")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, scaling) = server.get("/api/sites/envy/scaling?environment=staging").await;
    assert_eq!(scaling["min_instances"], 0, "{scaling}");
    assert_eq!(scaling["idle_timeout_seconds"], 60, "{scaling}");
    let (status, page) = web
        .post(
            "/sites/envy/environments/staging/scale",
            &[("_csrf", &csrf), ("min_instances", "lots")],
        )
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("min instances must be a whole number"), "{page}");

    // Variables per scope: a staging override shadows the site value there only.
    let (status, _) = web
        .post(
            "/sites/envy/env",
            &[("_csrf", &csrf), ("var_name", "GREETING"), ("var_value", "site")],
        )
        .await;
    assert_eq!(status, 303);
    let (status, page) = web
        .post(
            "/sites/envy/env",
            &[
                ("_csrf", &csrf),
                ("var_name", "GREETING"),
                ("var_value", "stage"),
                ("environment", "staging"),
            ],
        )
        .await;
    assert_eq!(status, 303, "{page}");
    let (_, vars) = server.get("/api/sites/envy/env?environment=staging&reveal=true").await;
    assert_eq!(vars["vars"]["GREETING"]["value"], "stage", "{vars}");
    assert_eq!(vars["vars"]["GREETING"]["scope"], "staging", "{vars}");
    let (_, vars) = server.get("/api/sites/envy/env?reveal=true").await;
    assert_eq!(vars["vars"]["GREETING"]["value"], "site", "{vars}");
    let (_, page) = web.get("/sites/envy/settings?environment=staging").await;
    assert!(page.contains("<option value=\"staging\" selected>"), "{page}");
    assert!(
        !page.contains("stage<") && page.contains("********"),
        "masked in the page"
    );
    let (status, _) = web
        .post(
            "/sites/envy/env/delete",
            &[("_csrf", &csrf), ("name", "GREETING"), ("environment", "staging")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, vars) = server.get("/api/sites/envy/env?environment=staging").await;
    assert_eq!(
        vars["vars"]["GREETING"]["scope"], "site",
        "the site value shows through again: {vars}"
    );

    let (status, _) = web
        .post("/sites/envy/environments/staging/delete", &[("_csrf", &csrf)])
        .await;
    assert_eq!(status, 303);
    let (_, envs) = server.get("/api/sites/envy/environments").await;
    assert_eq!(envs["environments"].as_array().unwrap().len(), 1, "{envs}");
}

#[tokio::test]
async fn the_monitoring_tab_shows_each_instances_cpu_and_memory() {
    let server = TestServer::start().await;
    let dir = node_app("measured");
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "meter", "repo": s(dir.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (_, out) = server
        .post(
            "/api/sites/meter/environments",
            &json!({"name": "staging", "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let web = WebSession::login(&server, KEY, &[]).await;
    let (status, page) = web.get("/sites/meter/monitoring").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Resource usage"), "{page}");
    assert!(!page.contains("This tab is a placeholder"), "{page}");
    for env in ["production", "staging"] {
        assert!(page.contains(&format!("<h3>{env} ")), "{env}: {page}");
    }
    // Two rows, each with a healthy instance and its memory as the provider measured it,
    // out of the instance's memory limit.
    assert_eq!(page.matches("<td>healthy</td>").count(), 2, "{page}");
    assert_eq!(page.matches(" MiB<span class=\"muted\"> of ").count(), 2, "{page}");
    // A site of another org, or none, is not found.
    let (status, _) = web.get("/sites/nothing-here/monitoring").await;
    assert_eq!(status, 404);
}

/// The attribute `name` of the element at `css`, as a number.
async fn attr_number(b: &Browser, css: &str, name: &str) -> usize {
    let value = b.find(css).await.attr(name).await.expect("attribute");
    value
        .unwrap_or_else(|| panic!("{css} has no {name}"))
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn chromium_monitoring_tab_charts_known_traffic_over_each_range() {
    let server = TestServer::start().await;
    let _dir = static_site(&server, "charted").await;
    let _quiet = static_site(&server, "quiet").await;
    for _ in 0..5 {
        assert_eq!(server.edge("charted.localhost", "/").await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(server.edge("charted.localhost", "/nothing-here").await.0, 404);
    }
    // The tap is flushed every 2 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/api/sites/charted/metrics/summary?since=1h").await.1["requests"] != 7 {
        assert!(Instant::now() < deadline, "the traffic was never recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.wait_text("charted").await;
    b.goto(&server.api("/sites/charted/monitoring")).await;
    assert_eq!(b.text("[data-total=requests]").await, "7");
    assert_eq!(b.text("[data-total=client_errors]").await, "2");
    assert_eq!(b.text("[data-total=server_errors]").await, "0");
    // The last hour per minute: 60 points, 61 when the hour does not start on a minute.
    let points = attr_number(&b, "svg[data-chart=requests]", "data-points").await;
    assert!((60..=61).contains(&points), "{points}");
    let line = b
        .find("svg[data-chart=requests] polyline")
        .await
        .attr("points")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.split(' ').count(), points, "{line}");
    // Accessible: a title and a description, and the same numbers as a table.
    let title = b.find("#chart-requests-title").await.html(true).await.unwrap();
    assert_eq!(title, "Requests");
    let label = b
        .find("svg[data-chart=requests]")
        .await
        .attr("aria-labelledby")
        .await
        .unwrap();
    assert_eq!(label.as_deref(), Some("chart-requests-title chart-requests-desc"));
    let rows = b
        .client
        .find_all(Locator::Css("table[data-table=requests] tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), points);
    let status_codes = b.text("#status-codes").await;
    assert!(
        status_codes.contains("200") && status_codes.contains("404"),
        "{status_codes}"
    );
    assert!(b.text("#top-paths").await.contains("GET /"));
    b.find("svg[data-chart=errors]").await;
    b.find("svg[data-chart=latency]").await;
    b.screenshot("monitoring").await;

    // Each range redraws at its resolution, the totals staying the same.
    for (range, lo, hi) in [("24h", 24, 25), ("7d", 168, 169), ("30d", 30, 31)] {
        b.click(&format!("a[data-range='{range}']")).await;
        b.find(&format!("a[data-range='{range}'][aria-current=page]")).await;
        let points = attr_number(&b, "svg[data-chart=requests]", "data-points").await;
        assert!((lo..=hi).contains(&points), "{range}: {points}");
        assert_eq!(b.text("[data-total=requests]").await, "7", "{range}");
        assert!(
            b.client
                .current_url()
                .await
                .unwrap()
                .as_str()
                .ends_with(&format!("range={range}"))
        );
    }

    // A site without traffic says so instead of drawing empty charts.
    b.goto(&server.api("/sites/quiet/monitoring?range=24h")).await;
    assert!(b.text("#traffic-empty").await.contains("No traffic in this range"));
    assert!(b.client.find(Locator::Css("svg[data-chart]")).await.is_err());
    // An unknown environment is a clear error in place of the charts; the page still shows.
    b.goto(&server.api("/sites/quiet/monitoring?environment=nope")).await;
    assert!(b.text("#traffic-error").await.contains("nope"));
    b.wait_text("Resource usage").await;
    b.close().await;
}

#[tokio::test]
async fn domain_forms_refuse_bad_input_by_field_and_a_viewer_only_reads() {
    let dns = common::pebble::Dns::start().await;
    let server = TestServer::start_with(&[("BERTH_DNS_RESOLVERS", &dns.resolver())]).await;
    let _shop = static_site(&server, "shop").await;
    let _blog = static_site(&server, "blog").await;
    let web = WebSession::login(&server, KEY, &[]).await;
    let csrf = web.csrf().await;
    // Domains attached to either site.
    let count = || async {
        let mut total = 0;
        for site in ["shop", "blog"] {
            let (_, list) = server.get(&format!("/api/sites/{site}/domains")).await;
            total += list["total"].as_u64().unwrap_or_else(|| panic!("{list}"));
        }
        total
    };

    // An apex while no public address is configured: refused next to the field, naming the fix.
    let (status, page) = web
        .post("/sites/shop/domains", &[("_csrf", &csrf), ("domain", "example.com")])
        .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("id=\"domain-error\""), "{page}");
    assert!(page.contains("--public-ipv4"), "{page}");
    assert!(page.contains("value=\"example.com\""), "the form keeps what was typed");
    // An IP address, the base domain: the same.
    for bad in ["192.0.2.1", "shop.localhost"] {
        let (status, page) = web
            .post("/sites/shop/domains", &[("_csrf", &csrf), ("domain", bad)])
            .await;
        assert_eq!(status, 400, "{bad}: {page}");
        assert!(page.contains("id=\"domain-error\""), "{bad}: {page}");
    }
    // An unknown environment: a notice, nothing added.
    let (status, page) = web
        .post(
            "/sites/shop/domains",
            &[("_csrf", &csrf), ("domain", "app.example.com"), ("environment", "nope")],
        )
        .await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("notice-error"), "{page}");
    assert_eq!(count().await, 0);

    // Added with its options; then the same name on another site is taken.
    let (status, page) = web
        .post(
            "/sites/shop/domains",
            &[
                ("_csrf", &csrf),
                ("domain", "App.Example.COM"),
                ("environment", "production"),
                ("redirect_www", "true"),
                ("hsts", "true"),
            ],
        )
        .await;
    assert_eq!(status, 303, "{page}");
    let (_, list) = server.get("/api/sites/shop/domains").await;
    assert_eq!(list["domains"][0]["name"], "app.example.com", "{list}");
    assert_eq!(list["domains"][0]["hsts"], true, "{list}");
    assert_eq!(list["domains"][0]["redirect_from"], "www.app.example.com", "{list}");
    let (status, page) = web
        .post(
            "/sites/blog/domains",
            &[("_csrf", &csrf), ("domain", "app.example.com")],
        )
        .await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("already attached"), "{page}");
    assert_eq!(count().await, 1);

    // Without JavaScript, "Check now" asks DNS and shows the result per record.
    let (status, _) = web
        .post("/sites/shop/domains/app.example.com/check", &[("_csrf", &csrf)])
        .await;
    assert_eq!(status, 303);
    let (_, page) = web.get("/sites/shop/domains?done=domain-checked").await;
    assert!(page.contains("DNS checked"), "{page}");
    assert!(
        page.contains("data-check=\"CNAME app.example.com\" data-check-ok=\"false\""),
        "{page}"
    );
    // No CSRF token: nothing removed.
    let (status, _) = web.post("/sites/shop/domains/app.example.com/remove", &[]).await;
    assert_eq!(status, 403);
    assert_eq!(count().await, 1);

    // A viewer sees the domain and its records, but no forms; posting anyway is refused
    // with the service's notice and changes nothing.
    let (status, out) = server
        .post(
            "/api/keys",
            &json!({"name": "viewer key", "kind": "service", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let viewer = WebSession::login(&server, out["token"].as_str().unwrap(), &[]).await;
    let (status, page) = viewer.get("/sites/shop/domains").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-domain=\"app.example.com\""), "{page}");
    assert!(page.contains("data-record-value"), "{page}");
    assert!(!page.contains("add-domain-form"), "{page}");
    assert!(
        !page.contains("data-remove-domain") && !page.contains("data-check-now"),
        "{page}"
    );
    let vcsrf = viewer.csrf().await;
    let (status, page) = viewer
        .post(
            "/sites/shop/domains",
            &[("_csrf", &vcsrf), ("domain", "other.example.com")],
        )
        .await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("notice-error") && page.contains("viewer"), "{page}");
    for action in ["check", "remove"] {
        let (status, page) = viewer
            .post(
                &format!("/sites/shop/domains/app.example.com/{action}"),
                &[("_csrf", &vcsrf)],
            )
            .await;
        assert_eq!(status, 403, "{action}: {page}");
    }
    assert_eq!(count().await, 1);

    let (status, _) = web
        .post("/sites/shop/domains/app.example.com/remove", &[("_csrf", &csrf)])
        .await;
    assert_eq!(status, 303);
    assert_eq!(count().await, 0);
}

/// An app that logs 3 database timeouts (varying numbers and addresses) on stderr once it
/// starts and answers `/boom` with 500.
fn erring_app() -> tempfile::TempDir {
    app(&[
        ("requirements.txt", "# no dependencies\n"),
        (
            "app.py",
            r#"import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(500 if self.path == '/boom' else 200)
        self.send_header('content-length', '2')
        self.end_headers()
        self.wfile.write(b'ok')

for i in range(3):
    sys.stderr.write('db timeout after %d ms on 10.0.%d.7:5432\n' % (30 + i * 11, i))
    sys.stderr.flush()
HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()
"#,
        ),
    ])
}

#[tokio::test]
async fn chromium_monitoring_tab_lists_error_patterns_with_their_samples() {
    let server = TestServer::start().await;
    let source = erring_app();
    let (_, out) = server
        .post(
            "/api/sites",
            &json!({"name": "erring", "repo": s(source.path()), "wait": true}),
        )
        .await;
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let deployment = out["deployment"]["id"].as_str().unwrap().to_string();
    let _quiet = static_site(&server, "calm").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.edge("erring.localhost", "/").await.0 != 200 {
        assert!(Instant::now() < deadline, "the app never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..2 {
        assert_eq!(server.edge("erring.localhost", "/boom").await.0, 500);
    }
    let template = "db timeout after <*> ms on <*>";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, p) = server.get("/api/sites/erring/metrics/error-patterns?since=1h").await;
        let logged = p["patterns"][0]["template"] == template && p["patterns"][0]["events"] == 3;
        if logged && p["server_errors"][0]["server_errors"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the errors were never counted: {p}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.wait_text("erring").await;
    b.goto(&server.api("/sites/erring/monitoring")).await;
    let row = format!("#error-pattern-list tr[data-pattern='{template}']");
    assert!(b.text(&row).await.contains(template));
    assert_eq!(b.text(&format!("{row} [data-events]")).await, "3");
    assert!(b.text(&row).await.contains(&deployment));
    // The latest event is behind a disclosure, as logged.
    b.click(&format!("{row} details summary")).await;
    assert!(
        b.text(&format!("{row} details pre"))
            .await
            .contains("db timeout after 52 ms")
    );
    let paths = b.text("#server-error-paths").await;
    assert!(paths.contains("GET /boom") && paths.contains('2'), "{paths}");
    b.screenshot("monitoring-error-patterns").await;

    // A site that logged nothing says so.
    b.goto(&server.api("/sites/calm/monitoring")).await;
    assert!(
        b.text("#error-patterns-empty")
            .await
            .contains("No error events in this range")
    );
    assert!(b.text("#server-error-paths-empty").await.contains("No 5xx"));
    b.close().await;
}

// ---------------------------------------------------------------- people pages

#[tokio::test]
async fn chromium_invite_from_the_members_page_accept_in_a_second_browser_and_a_key_shown_once() {
    let server = TestServer::start().await;
    let admin = Browser::start().await;
    admin.login(&server, KEY).await;
    admin.find("#sites-empty").await;
    admin.click("nav.mainnav a[href='/members']").await;

    // A bad email is refused next to its field.
    admin.fill("#invite-email", "ada@localhost").await;
    admin.click("#invite-submit").await;
    assert!(admin.text("#email-error").await.contains("not an email address"));
    assert!(admin.client.find(Locator::Css("#invite-link")).await.is_err());

    // The invitation's link is shown once, on the answer.
    admin.fill("#invite-email", "ada@example.test").await;
    admin
        .find("#invite-role option[value=developer]")
        .await
        .click()
        .await
        .unwrap();
    admin.click("#invite-submit").await;
    let link = admin.text("#invite-link-value").await;
    assert!(link.contains("/invite/berth_inv_"), "{link}");
    assert!(admin.text("#invitations").await.contains("pending"));
    admin.screenshot("members-invited").await;
    admin.goto(&server.api("/members")).await;
    admin.find("#invitations").await;
    let token = link.rsplit('/').next().unwrap().to_string();
    assert!(!admin.client.source().await.unwrap().contains(&token));

    // A second browser opens the link, chooses a password and is in, as a developer.
    let ada = Browser::start().await;
    ada.goto(&link).await;
    assert_eq!(ada.text("#invite-role").await, "developer");
    ada.fill("#password", "correct horse battery").await;
    ada.fill("#password_again", "correct horse battery").await;
    ada.click("#accept-submit").await;
    ada.find("#sites-empty").await;
    ada.goto(&server.api("/api/whoami")).await;
    ada.wait_text("\"role\":\"developer\"").await;
    // The link is spent.
    ada.goto(&link).await;
    ada.wait_text("already used").await;

    // A developer manages no members: no Members link, and the page has no forms.
    ada.goto(&server.api("/keys")).await;
    assert!(
        ada.client
            .find(Locator::Css("nav.mainnav a[href='/members']"))
            .await
            .is_err()
    );
    ada.goto(&server.api("/members")).await;
    ada.wait_text("needs the role admin").await;
    assert!(ada.client.find(Locator::Css("#invite-form")).await.is_err());

    // The admin sees the new member and the invitation used.
    admin.goto(&server.api("/members")).await;
    assert!(
        admin
            .text("tr[data-member='ada@example.test']")
            .await
            .contains("ada@example.test")
    );
    assert!(admin.text("#invitations").await.contains("accepted"));

    // Ada makes a personal key (a developer cannot make service keys): a bad site name is
    // refused by its field, then the token is shown once and the key listed.
    ada.goto(&server.api("/keys")).await;
    assert!(
        ada.client
            .find(Locator::Css("#key-kind option[value=service]"))
            .await
            .is_err()
    );
    ada.fill("#key-name", "laptop").await;
    ada.fill("#key-sites", "Not_A_Site!").await;
    ada.click("#create-key-submit").await;
    assert!(ada.text("#sites-error").await.contains("not a site name"));
    assert!(ada.client.find(Locator::Css("#new-key")).await.is_err());
    ada.fill("#key-sites", "").await;
    ada.click("#create-key-submit").await;
    let token = ada.text("#new-key-token").await;
    assert!(token.starts_with("berth_pk_"), "{token}");
    ada.screenshot("keys-created").await;
    let (status, me) = {
        let r = server
            .http
            .get(server.api("/api/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["role"], "developer", "{me}");
    ada.goto(&server.api("/keys")).await;
    let row = ada.text("#keys tbody tr").await;
    assert!(row.contains("laptop") && row.contains("berth_pk_"), "{row}");
    assert_eq!(
        ada.client.find_all(Locator::Css("#keys tbody tr")).await.unwrap().len(),
        1
    );
    assert!(!ada.client.source().await.unwrap().contains(&token));

    // And revokes it from the list.
    ada.click_and_confirm("#keys tbody tr form button").await;
    ada.wait_text("Key revoked").await;
    let r = server
        .http
        .get(server.api("/api/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The admin changes her role from the list; it applies at once.
    admin.goto(&server.api("/members")).await;
    admin
        .find("tr[data-member='ada@example.test'] select option[value=viewer]")
        .await
        .click()
        .await
        .unwrap();
    admin
        .click("tr[data-member='ada@example.test'] form.inline button")
        .await;
    admin.wait_text("Role changed.").await;
    ada.goto(&server.api("/api/whoami")).await;
    ada.wait_text("\"role\":\"viewer\"").await;
    ada.close().await;
    admin.close().await;
}

#[tokio::test]
async fn chromium_connected_apps_are_revoked_and_frozen_from_the_page() {
    use common::oauth_flow::{PASSWORD, connect, login as member_login, mcp_status};

    let server = TestServer::start().await;
    let (status, out) = server
        .post(
            "/api/members",
            &json!({ "email": "dev@example.test", "role": "developer", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let dev = member_login(&server, "dev@example.test").await;
    let (_, first, _) = connect(&server, &dev).await;
    let (_, second, _) = connect(&server, &dev).await;
    assert_eq!(mcp_status(&server, &first).await, 200);

    // The developer sees their apps but no freeze switch.
    let page = server
        .http
        .get(server.api("/connected-apps"))
        .header("cookie", &dev)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-app="), "{page}");
    assert!(!page.contains("freeze-submit"), "{page}");

    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.find("#sites-empty").await;
    b.click("nav.mainnav a[href='/connected-apps']").await;
    assert_eq!(
        b.client.find_all(Locator::Css("#apps tbody tr")).await.unwrap().len(),
        2
    );
    let row = b.text("#apps tbody tr").await;
    assert!(row.contains("Test Agent") && row.contains("dev@example.test"), "{row}");
    assert!(row.contains("sites:read"), "{row}");
    b.screenshot("connected-apps").await;

    // Revoking one grant stops its token and leaves the other.
    b.click_and_confirm("#apps tbody tr form button").await;
    b.wait_text("Connected app revoked").await;
    assert_eq!(
        b.client.find_all(Locator::Css("#apps tbody tr")).await.unwrap().len(),
        1
    );
    let (a, c) = (mcp_status(&server, &first).await, mcp_status(&server, &second).await);
    assert_eq!([a, c].iter().filter(|s| **s == 401).count(), 1, "{a} {c}");
    assert_eq!([a, c].iter().filter(|s| **s == 200).count(), 1, "{a} {c}");

    // The freeze switch revokes the rest and says so; unfreezing is offered.
    b.click_and_confirm("#freeze-submit").await;
    b.wait_text("Agents frozen").await;
    b.find("#frozen-state").await;
    b.find("#apps-empty").await;
    assert_eq!(mcp_status(&server, &first).await, 401);
    assert_eq!(mcp_status(&server, &second).await, 401);
    assert_eq!(b.text("#freeze-submit").await, "Unfreeze agents");
    b.click("#freeze-submit").await;
    b.wait_text("Agents unfrozen").await;
    b.close().await;
}

/// The cell of `site`'s row on the usage page under `css`.
fn usage_cell(site: &str, css: &str) -> String {
    format!("#usage-sites tr[data-usage-site='{site}'] {css}")
}

#[tokio::test]
async fn chromium_usage_page_shows_the_months_requests_per_site_other_months_and_a_bad_month() {
    let server = TestServer::start().await;
    let _dir = static_site(&server, "counted").await;
    const N: u64 = 12;
    for i in 0..N {
        assert_eq!(server.edge("counted.localhost", &format!("/?n={i}")).await.0, 200);
    }
    // The edge's counts are stored every 2 s.
    let requests = async || {
        let (status, usage) = server.get("/api/usage").await;
        assert_eq!(status, 200, "{usage}");
        let row = usage["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["site"] == "counted")
            .cloned();
        (
            usage.clone(),
            row.unwrap_or_else(|| panic!("no row for counted: {usage}")),
        )
    };
    eventually("usage shows the traffic", 60, async || {
        requests().await.1["requests"].as_u64().unwrap() >= N
    })
    .await;

    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.wait_text("counted").await;
    b.click("nav.mainnav a[href='/usage']").await;
    let (api, row) = requests().await;
    let month = api["month"].as_str().unwrap().to_string();
    assert!(b.text("#usage-totals h2").await.contains(&month));
    let shown = b.text(&usage_cell("counted", "td[data-requests]")).await;
    assert_eq!(
        shown,
        row["requests"].to_string(),
        "the page says what GET /api/usage says"
    );
    assert!(row["requests"].as_u64().unwrap() >= N, "{row}");
    assert_eq!(
        b.text("#usage-totals td[data-requests]").await,
        api["totals"]["requests"].to_string()
    );
    // Bandwidth in human units, the exact bytes in its title.
    let bandwidth = b.find(&usage_cell("counted", "td:nth-child(3)")).await;
    let bytes = row["bandwidth_bytes"].as_u64().unwrap();
    assert!(bytes > 0, "{row}");
    assert_eq!(
        bandwidth.attr("title").await.unwrap().as_deref(),
        Some(format!("{bytes} bytes").as_str())
    );
    let text = bandwidth.text().await.unwrap();
    assert!(
        text.ends_with(" B") || text.ends_with(" KiB"),
        "{text} for {bytes} bytes"
    );
    assert_eq!(
        b.text(&usage_cell("counted", "td:nth-child(4)")).await,
        "1",
        "one build"
    );
    // The link goes to the site; the current month has no next one.
    b.find(&usage_cell("counted", "a[href='/sites/counted']")).await;
    assert!(b.client.find(Locator::Css("#usage-next")).await.is_err());
    b.screenshot("usage").await;

    // The month before: the site did not exist yet, so nothing, and a way back.
    b.click("#usage-prev").await;
    b.find("#usage-empty").await;
    assert!(b.text("#usage-empty").await.contains("No site used anything"));
    let url = b.client.current_url().await.unwrap();
    let previous = url.query().unwrap().trim_start_matches("month=").to_string();
    assert_ne!(previous, month);
    assert!(b.text("#usage-totals h2").await.contains(&previous));
    assert_eq!(b.text("#usage-totals td[data-requests]").await, "0");
    let (status, before) = server.get(&format!("/api/usage?month={previous}")).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["sites"], json!([]), "{before}");
    b.click("#usage-next").await;
    b.find(&usage_cell("counted", "td[data-requests]")).await;

    // A bad month shows the service's error on the page, not a table.
    b.goto(&server.api("/usage?month=garbage")).await;
    b.wait_text("'garbage' is not a month; give it as YYYY-MM").await;
    assert!(b.client.find(Locator::Css("#usage-sites")).await.is_err());
    assert_eq!(
        b.find("#month").await.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    b.close().await;

    let web = WebSession::login(&server, KEY, &[]).await;
    let (status, page) = web.get("/usage?month=2026-13").await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("is not a month"), "{page}");
}

/// The org's resources as `GET /api/resources` lists them, by name.
async fn resource_names(server: &TestServer) -> Vec<String> {
    let (status, out) = server.get("/api/resources").await;
    assert_eq!(status, 200, "{out}");
    out["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Resources are refused on Postgres, so scripts/test.sh leaves the tests named
/// `chromium_resources_*` out of its Postgres run, as it does tests/resources.rs.
#[tokio::test]
async fn chromium_resources_page_creates_refuses_a_bad_size_and_deletes_through_the_forms() {
    assert!(
        !on_postgres(),
        "resources are refused on Postgres: run this test on SQLite (scripts/test.sh leaves it out of the Postgres run)"
    );
    let server = TestServer::start().await;
    let _dir = static_site(&server, "shop").await;
    let b = Browser::start().await;
    b.login(&server, KEY).await;
    b.wait_text("shop").await;
    b.click("nav.mainnav a[href='/resources']").await;
    assert!(b.text("#resources-empty").await.contains("No resources yet"));

    // Created through the form, attached to the site.
    b.fill("#resource-name", "main-db").await;
    b.fill("#resource-size", "16").await;
    b.fill("#resource-site", "shop").await;
    b.click("#create-resource-submit").await;
    b.wait_text("Resource created").await;
    let row = b.text("tr[data-resource='main-db']").await;
    assert!(row.contains("sqlite") && row.contains("16 MiB"), "{row}");
    b.find("tr[data-resource='main-db'] a[href='/sites/shop']").await;
    assert_eq!(resource_names(&server).await, ["main-db"]);
    b.screenshot("resources").await;

    // A bad size: the service's error next to the field, the form as typed, nothing made.
    b.fill("#resource-name", "tiny").await;
    b.fill("#resource-size", "5").await;
    b.fill("#resource-site", "").await;
    b.click("#create-resource-submit").await;
    assert!(
        b.text("#size_mb-error")
            .await
            .contains("size_mb 5 is out of range; give 16 to 10240"),
        "the service's message"
    );
    assert_eq!(
        b.find("#resource-name").await.prop("value").await.unwrap().as_deref(),
        Some("tiny")
    );
    assert_eq!(resource_names(&server).await, ["main-db"]);
    assert!(b.client.find(Locator::Css("tr[data-resource='tiny']")).await.is_err());

    // One attached to no site, deleted with its button.
    b.fill("#resource-name", "scratch").await;
    b.fill("#resource-size", "16").await;
    b.click("#create-resource-submit").await;
    b.wait_text("Resource created").await;
    assert!(b.text("tr[data-resource='scratch']").await.contains("not attached"));
    assert_eq!(resource_names(&server).await, ["main-db", "scratch"]);

    // A viewer sees the page, but the service refuses its writes and the page says so.
    let (status, out) = server
        .post(
            "/api/keys",
            &json!({"name": "viewer key", "kind": "service", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let viewer = WebSession::login(&server, out["token"].as_str().unwrap(), &[]).await;
    let (status, page) = viewer.get("/resources").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-resource=\"scratch\""), "{page}");
    let vcsrf = viewer.csrf().await;
    let (status, page) = viewer
        .post(
            "/resources",
            &[
                ("_csrf", &vcsrf),
                ("name", "mine"),
                ("kind", "sqlite"),
                ("size_mb", "16"),
            ],
        )
        .await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("notice-error") && page.contains("viewer"), "{page}");
    let (status, page) = viewer.post("/resources/scratch/delete", &[("_csrf", &vcsrf)]).await;
    assert_eq!(status, 403, "{page}");
    assert_eq!(resource_names(&server).await, ["main-db", "scratch"]);

    b.click_and_confirm("tr[data-resource='scratch'] button[type=submit]")
        .await;
    b.wait_text("Resource deleted").await;
    assert!(
        b.client
            .find(Locator::Css("tr[data-resource='scratch']"))
            .await
            .is_err()
    );
    assert_eq!(resource_names(&server).await, ["main-db"]);

    // The attached one is detached and deleted.
    assert_eq!(
        b.text("tr[data-resource='main-db'] button[type=submit]").await,
        "Detach and delete"
    );
    b.click_and_confirm("tr[data-resource='main-db'] button[type=submit]")
        .await;
    b.wait_text("Resource detached and deleted").await;
    b.find("#resources-empty").await;
    assert!(resource_names(&server).await.is_empty());
    b.close().await;
}
