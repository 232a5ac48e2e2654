//! Real apps go live on the first try: each app of the corpus under `tests/apps/` (Express on yarn,
//! pnpm, a Vite SPA, a Create React App build, a Next.js static export, a Next.js server,
//! Flask, FastAPI, Django, an app only its render.yaml explains, Go, Rust, Bun, Deno) is
//! deployed with no settings at all, as a new user would, and fetched through the edge;
//! the monorepo with only `root_dir` set. Dependencies come from the real registries (npm,
//! PyPI); the apps are kept to a few small ones. Go and Rust build with the server's `go`
//! and `cargo` (Debian's packages, installed by scripts/test.sh); bun and deno are
//! downloaded from the npm registry.
//!
//! Each app is deployed twice: the second deploy must reuse the site's build cache (the
//! installed dependencies and, for yarn and pnpm, the package manager corepack fetched).
//! The times of both are printed (`cargo nextest run --test real_apps --no-capture`).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use serde_json::{Value, json};

/// A corpus app's folder.
fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps").join(name)
}

/// A server allowed to deploy from the corpus folders.
async fn corpus_server() -> TestServer {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps");
    TestServer::start_with(&[("BERTH_ALLOW_LOCAL_REPOS", root.to_str().expect("utf-8 path"))]).await
}

/// Creates site `name` from the corpus app with no settings and waits for the deploy;
/// returns the finished deployment, its build log and how long it took.
async fn first_deploy(server: &TestServer, name: &str, app: &str) -> (Value, String, f64) {
    let started = Instant::now();
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": name, "repo": corpus(app).to_string_lossy(), "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let id = out["deployment"]["id"].as_str().expect("deployment id").to_string();
    let deployment = server.wait_deployment(&id).await;
    let secs = started.elapsed().as_secs_f64();
    let log = server.deployment_log(&id, "build").await;
    (deployment, log, secs)
}

/// Deploys site `name` again (same source); returns the deployment, its log and its time.
async fn redeploy(server: &TestServer, name: &str) -> (Value, String, f64) {
    let started = Instant::now();
    let (status, out) = server
        .post(&format!("/api/sites/{name}/deploy"), &json!({"wait": true}))
        .await;
    assert!(status == 200 || status == 202, "{status} {out}");
    let id = out["deployment"]["id"].as_str().expect("deployment id").to_string();
    let deployment = server.wait_deployment(&id).await;
    let secs = started.elapsed().as_secs_f64();
    let log = server.deployment_log(&id, "build").await;
    (deployment, log, secs)
}

/// Asserts a deployment is live, showing its log otherwise.
fn assert_live(deployment: &Value, log: &str) {
    assert_eq!(deployment["status"], "live", "{deployment}\n--- build log ---\n{log}");
}

fn report(app: &str, cold: f64, warm: f64) {
    eprintln!("real app {app}: live on the first try; cold {cold:.1} s, warm {warm:.1} s");
}

#[tokio::test]
async fn yarn_app_gets_yarn_through_corepack_once_per_site() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "yarnapp", "yarn-app").await;
    assert_live(&d, &log);
    assert!(log.contains("package manager: yarn@1.22.22 (yarn.lock)"), "{log}");
    assert_eq!(
        server.edge("yarnapp.localhost", "/").await,
        (200, "yarn app: 1m\n".to_string())
    );
    // An Express app: its router answers the routes it defines.
    assert_eq!(
        server.edge("yarnapp.localhost", "/users/7").await,
        (200, r#"{"id":"7","via":"express"}"#.to_string())
    );

    let (d, log, warm) = redeploy(&server, "yarnapp").await;
    assert_live(&d, &log);
    assert!(log.contains("package manager restored from the build cache"), "{log}");
    assert!(log.contains("dependencies restored from the build cache"), "{log}");
    // The download is kept in the site's own folder of the cache, nowhere shared.
    let cache = server.data.path().join("cache");
    let sites: Vec<PathBuf> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(sites.len(), 1, "{sites:?}");
    let tools = sites[0].join("tools");
    assert!(
        tools.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false),
        "{tools:?}"
    );
    report("yarn-app", cold, warm);
}

#[tokio::test]
async fn pnpm_app_goes_live_and_without_the_registry_the_failure_names_pnpm() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "pnpmapp", "pnpm-app").await;
    assert_live(&d, &log);
    assert!(log.contains("package manager: pnpm@9 (pnpm-lock.yaml)"), "{log}");
    assert_eq!(
        server.edge("pnpmapp.localhost", "/").await,
        (200, "pnpm app: 1m\n".to_string())
    );
    let (d, log, warm) = redeploy(&server, "pnpmapp").await;
    assert_live(&d, &log);
    assert!(log.contains("package manager restored from the build cache"), "{log}");
    report("pnpm-app", cold, warm);

    // A registry corepack cannot reach (a closed local port): the deployment fails at
    // the setup step with a message that names pnpm and what to do.
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({
                "name": "offline",
                "repo": corpus("pnpm-app").to_string_lossy(),
                "env_vars": {"COREPACK_NPM_REGISTRY": "http://127.0.0.1:9"},
                "wait": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("setup step exited with code")
            && error.contains("could not get pnpm@9 through corepack")
            && error.contains("npm registry")
            && error.contains("install_command"),
        "{d}"
    );
}

#[tokio::test]
async fn vite_spa_is_built_and_served_with_deep_links() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "vitespa", "vite-spa").await;
    assert_live(&d, &log);
    assert!(
        log.contains("detected vite (package.json devDependencies) → static output dist, SPA fallback"),
        "{log}"
    );
    // Its start script is `vite`, the dev server: never run.
    assert!(log.contains("the start script 'vite' is a development server"), "{log}");
    assert!(!log.contains("starting: vite"), "{log}");
    let (code, home) = server.edge("vitespa.localhost", "/").await;
    assert_eq!(code, 200);
    assert!(
        home.contains("vite spa shell") && home.contains("/assets/"),
        "the built index.html: {home}"
    );
    // A route only the client-side router knows: answered with index.html.
    assert_eq!(server.edge("vitespa.localhost", "/about").await, (200, home.clone()));
    let script = home
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("script tag")
        .to_string();
    let (code, js) = server.edge("vitespa.localhost", &script).await;
    assert_eq!(code, 200);
    assert!(js.contains("about page"), "{js}");

    let (d, log, warm) = redeploy(&server, "vitespa").await;
    assert_live(&d, &log);
    assert!(log.contains("dependencies restored from the build cache"), "{log}");
    report("vite-spa", cold, warm);
}

#[tokio::test]
async fn create_react_app_build_folder_is_served() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "craapp", "cra-app").await;
    assert_live(&d, &log);
    assert!(
        log.contains(
            "detected Create React App (react-scripts) (package.json dependencies) → static output build, SPA fallback"
        ),
        "{log}"
    );
    let (code, home) = server.edge("craapp.localhost", "/").await;
    assert_eq!(code, 200);
    assert!(home.contains("cra app") && !home.contains("cra template"), "{home}");
    assert_eq!(server.edge("craapp.localhost", "/users/42").await, (200, home));
    let (code, js) = server.edge("craapp.localhost", "/static/js/main.js").await;
    assert_eq!((code, js.contains("cra app built")), (200, true), "{js}");
    let (d, log, warm) = redeploy(&server, "craapp").await;
    assert_live(&d, &log);
    report("cra-app", cold, warm);
}

#[tokio::test]
async fn flask_app_runs_under_gunicorn_without_a_procfile() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "flaskapp", "flask-gunicorn").await;
    assert_live(&d, &log);
    assert!(log.contains("detected Flask app app:app in app.py"), "{log}");
    assert!(
        log.contains("starting: .venv/bin/gunicorn --bind 0.0.0.0:$PORT app:app"),
        "{log}"
    );
    assert_eq!(
        server.edge("flaskapp.localhost", "/").await,
        (200, "flask under gunicorn\n".to_string())
    );
    let (d, log, warm) = redeploy(&server, "flaskapp").await;
    assert_live(&d, &log);
    report("flask-gunicorn", cold, warm);
}

#[tokio::test]
async fn fastapi_app_from_pyproject_runs_under_uvicorn() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "fastapiapp", "fastapi-uvicorn").await;
    assert_live(&d, &log);
    assert!(log.contains("pyproject.toml [project] dependencies"), "{log}");
    assert!(log.contains("detected FastAPI app main:app in main.py"), "{log}");
    assert_eq!(
        server.edge("fastapiapp.localhost", "/items/7").await,
        (200, r#"{"item":7}"#.to_string())
    );
    let (d, log, warm) = redeploy(&server, "fastapiapp").await;
    assert_live(&d, &log);
    report("fastapi-uvicorn", cold, warm);
}

#[tokio::test]
async fn django_site_collects_and_serves_its_static_files() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "djangoapp", "django-static").await;
    assert_live(&d, &log);
    assert!(log.contains("mysite.wsgi:application"), "{log}");
    assert!(
        log.contains("$ .venv/bin/python manage.py collectstatic --noinput"),
        "{log}"
    );
    let (code, page) = server.edge("djangoapp.localhost", "/").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("django site"), "{page}");
    let (code, css) = server.edge("djangoapp.localhost", "/static/css/site.css").await;
    assert_eq!((code, css.contains("rebeccapurple")), (200, true), "{css}");
    let (d, log, warm) = redeploy(&server, "djangoapp").await;
    assert_live(&d, &log);
    report("django-static", cold, warm);
}

#[tokio::test]
async fn render_yaml_alone_says_how_to_build_and_start() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "renderapp", "render-yaml").await;
    assert_live(&d, &log);
    assert!(log.contains("render.yaml: start_command = 'node srv/main.js'"), "{log}");
    assert!(log.contains("render.yaml: health_check_path = /healthz"), "{log}");
    assert_eq!(
        server.edge("renderapp.localhost", "/").await,
        (200, "built by render.yaml's buildCommand\n".to_string())
    );
    let (d, log, warm) = redeploy(&server, "renderapp").await;
    assert_live(&d, &log);
    report("render-yaml", cold, warm);
}

#[tokio::test]
async fn monorepo_apps_deploy_with_only_root_dir_set() {
    let server = corpus_server().await;
    let repo = corpus("monorepo");
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "monoweb", "repo": repo.to_string_lossy(), "root_dir": "apps/web", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let id = out["deployment"]["id"].as_str().expect("deployment id").to_string();
    let d = server.wait_deployment(&id).await;
    let log = server.deployment_log(&id, "build").await;
    assert_live(&d, &log);
    assert!(log.contains("root_dir: building and serving 'apps/web' only"), "{log}");
    assert_eq!(
        server.edge("monoweb.localhost", "/x").await,
        (200, "monorepo web /x".to_string())
    );

    // Detection runs in the subfolder too: the docs folder is a static site.
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({"name": "monodocs", "repo": repo.to_string_lossy(), "root_dir": "apps/docs/", "wait": true}),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}");
    let (code, page) = server.edge("monodocs.localhost", "/").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("monorepo docs"), "{page}");

    // A root_dir that is not there fails the build naming the setting; production keeps
    // serving what it served.
    let (status, out) = server
        .patch("/api/sites/monoweb", &json!({"root_dir": "apps/missing"}))
        .await;
    assert_eq!(status, 200, "{out}");
    let (d, log, _) = redeploy(&server, "monoweb").await;
    assert_eq!(d["status"], "failed", "{d}\n{log}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("root_dir is 'apps/missing'") && error.contains("HOSTING_UPDATE_SITE"),
        "{error}"
    );
    assert_eq!(
        server.edge("monoweb.localhost", "/").await,
        (200, "monorepo web /".to_string())
    );

    // The repository's root holds no app of its own: cleared back to it, the failure
    // names the setting to change and how.
    let (status, out) = server.patch("/api/sites/monoweb", &json!({"root_dir": null})).await;
    assert_eq!(status, 200, "{out}");
    let (d, log, _) = redeploy(&server, "monoweb").await;
    assert_eq!(d["status"], "failed", "{d}\n{log}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("start_command") && error.contains(r#"HOSTING_UPDATE_SITE {"site": "monoweb""#),
        "{error}"
    );
}

#[tokio::test]
async fn next_static_export_is_built_and_served_with_clean_urls() {
    // The real `next` from the npm registry; deployed once (its build is the suite's
    // longest, the cache is proven by the other Node apps).
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "nextexport", "next-export").await;
    assert_live(&d, &log);
    assert!(
        log.contains(
            "detected Next.js (package.json dependencies, next.config.mjs sets output: \"export\") → static output out"
        ),
        "{log}"
    );
    assert!(!log.contains("starting: next"), "a static export runs no server: {log}");
    let (code, home) = server.edge("nextexport.localhost", "/").await;
    assert_eq!(code, 200);
    assert!(home.contains("next export home"), "{home}");
    // `next build` wrote about.html: served at /about, as `next start` would.
    let (code, about) = server.edge("nextexport.localhost", "/about").await;
    assert_eq!(code, 200);
    assert!(about.contains("next export about"), "{about}");
    // Not an SPA: an unknown path is Next's own 404 page, with a 404.
    let (code, missing) = server.edge("nextexport.localhost", "/no/such/page").await;
    assert_eq!(code, 404, "{missing}");
    eprintln!("real app next-export: live on the first try; cold {cold:.1} s");
}

#[tokio::test]
async fn next_server_app_runs_next_start_on_port() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "nextssr", "next-ssr").await;
    assert_live(&d, &log);
    assert!(log.contains("runs as a server"), "{log}");
    // Rendered per request by the Next.js server: it saw this request's user agent.
    let (code, home) = server.edge("nextssr.localhost", "/").await;
    assert_eq!(code, 200);
    assert!(
        home.contains("next ssr home") && home.contains("rendered for"),
        "{home}"
    );
    let (code, api) = server.edge("nextssr.localhost", "/api/hello").await;
    assert_eq!(code, 200);
    assert!(api.contains("from a next route handler"), "{api}");
    eprintln!("real app next-ssr: live on the first try; cold {cold:.1} s");
}

#[tokio::test]
async fn go_module_is_built_with_the_servers_go_and_its_binary_served() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "goapp", "go-http").await;
    assert_live(&d, &log);
    assert!(log.contains("build pack: go"), "{log}");
    assert!(
        log.contains("detected a Go module example.com/go-http (go.mod)"),
        "{log}"
    );
    assert!(log.contains("go 1.19 (go.mod go directive)"), "{log}");
    assert!(log.contains("starting: .berth/bin/app"), "{log}");
    assert_eq!(
        server.edge("goapp.localhost", "/hello").await,
        (200, "go app: /hello\n".to_string())
    );
    // The module and build caches come back: only what changed is compiled.
    let (d, log, warm) = redeploy(&server, "goapp").await;
    assert_live(&d, &log);
    assert!(log.contains("dependencies restored from the build cache"), "{log}");
    report("go-http", cold, warm);
}

#[tokio::test]
async fn rust_package_is_built_with_the_servers_cargo_and_its_binary_served() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "rustapp", "rust-http").await;
    assert_live(&d, &log);
    assert!(log.contains("detected a Rust package rust-http (Cargo.toml)"), "{log}");
    assert!(log.contains("cargo build --release --locked"), "{log}");
    // rust-toolchain.toml asks for 1.75: a pin, said in the log, never a failure.
    assert!(log.contains("rust 1.75 (rust-toolchain.toml)"), "{log}");
    assert_eq!(
        server.edge("rustapp.localhost", "/x").await,
        (200, "rust app: /x\n".to_string())
    );
    // CARGO_HOME and the target folder come back: only the app's own crate is compiled.
    let (d, log, warm) = redeploy(&server, "rustapp").await;
    assert_live(&d, &log);
    assert!(log.contains("dependencies restored from the build cache"), "{log}");
    report("rust-http", cold, warm);
}

#[tokio::test]
async fn bun_app_gets_bun_from_the_npm_registry_once_per_site() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "bunapp", "bun-app").await;
    assert_live(&d, &log);
    assert!(log.contains("package manager: bun@1.4.5 (bun.lock)"), "{log}");
    assert!(log.contains("$ bun install --frozen-lockfile"), "{log}");
    assert_eq!(
        server.edge("bunapp.localhost", "/").await,
        (200, "bun app 1.4.5: 1m /\n".to_string())
    );
    let (d, log, warm) = redeploy(&server, "bunapp").await;
    assert_live(&d, &log);
    assert!(log.contains("runtime bun@1.4.5 restored from the build cache"), "{log}");
    assert!(log.contains("dependencies restored from the build cache"), "{log}");
    report("bun-app", cold, warm);

    // Without the registry the setup step fails, naming bun and what to do.
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({
                "name": "bunoffline",
                "repo": corpus("bun-app").to_string_lossy(),
                "env_vars": {"npm_config_registry": "http://127.0.0.1:9/", "npm_config_fetch_retries": "0"},
                "wait": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("setup step exited with code")
            && error.contains("could not get bun@1.4.5 from the npm registry")
            && error.contains("install_command"),
        "{d}"
    );
}

#[tokio::test]
async fn deno_app_gets_deno_and_its_dependencies_at_build_time() {
    let server = corpus_server().await;
    let (d, log, cold) = first_deploy(&server, "denoapp", "deno-app").await;
    assert_live(&d, &log);
    assert!(log.contains("detected a Deno project (deno.json)"), "{log}");
    assert!(log.contains("--allow-net --allow-env --allow-read=."), "{log}");
    // The app has no network: its npm import was fetched by the build.
    assert_eq!(
        server.edge("denoapp.localhost", "/x").await,
        (200, "deno app 2.9.6: 1m /x\n".to_string())
    );
    let (d, log, warm) = redeploy(&server, "denoapp").await;
    assert_live(&d, &log);
    assert!(
        log.contains("runtime deno@2.9.6 restored from the build cache"),
        "{log}"
    );
    assert!(log.contains("dependencies restored from the build cache"), "{log}");
    report("deno-app", cold, warm);

    // Without the registry the setup step fails, naming deno and what to do.
    let (status, out) = server
        .post(
            "/api/sites",
            &json!({
                "name": "denooffline",
                "repo": corpus("deno-app").to_string_lossy(),
                "env_vars": {"npm_config_registry": "http://127.0.0.1:9/", "npm_config_fetch_retries": "0"},
                "wait": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "{out}");
    let id = out["deployment"]["id"].as_str().unwrap().to_string();
    let d = server.wait_deployment(&id).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("could not get deno@2.9.6 from the npm registry") && error.contains("npm_config_registry"),
        "{d}"
    );
}
