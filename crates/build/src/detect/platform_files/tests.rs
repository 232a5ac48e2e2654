//! Platform config files: each test writes a small source tree with one file
//! and checks the plan detection makes of it and the build-log notes.

use std::fs;
use std::path::Path;

use crate::detect::{BuildSettings, DetectError, Detection, ServePlan, detect_explained, resolve_output_dir};

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
    dir
}

fn detect(dir: &Path, settings: &BuildSettings) -> Detection {
    detect_explained(dir, settings).unwrap_or_else(|e| panic!("detect failed: {e}"))
}

fn start_of(d: &Detection) -> Option<(&str, Option<u16>)> {
    match &d.plan.serve {
        ServePlan::Process { command, port } => Some((command.as_str(), *port)),
        ServePlan::Static { .. } => None,
    }
}

fn step<'a>(d: &'a Detection, name: &str) -> Option<&'a str> {
    d.plan.steps.iter().find(|s| s.name == name).map(|s| s.command.as_str())
}

const NODE_APP: &str =
    r#"{"name":"a","scripts":{"start":"node index.js","build":"node build.js"},"dependencies":{"express":"4"}}"#;

#[test]
fn berth_toml_sets_every_setting_and_the_site_wins() {
    let dir = tree(&[
        ("package.json", NODE_APP),
        (
            "berth.toml",
            "# build settings\nstart_command = \"node server.js --prod\"\nbuild_command = \"\"\nport = 3000\nhealth_check_path = \"/healthz\"\n",
        ),
    ]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert_eq!(start_of(&d), Some(("node server.js --prod", Some(3000))));
    assert_eq!(step(&d, "build"), None, "an empty build_command removes the step");
    assert_eq!(d.plan.health_check_path, "/healthz");
    assert!(
        d.notes
            .iter()
            .any(|n| n == "berth.toml: start_command = 'node server.js --prod'"),
        "{:?}",
        d.notes
    );
    assert!(d.notes.iter().any(|n| n == "berth.toml: port = 3000"), "{:?}", d.notes);

    // The site's own setting wins over the file, and the log says so.
    let site = BuildSettings {
        start_command: Some("node other.js".into()),
        ..BuildSettings::default()
    };
    let d = detect(dir.path(), &site);
    assert_eq!(start_of(&d), Some(("node other.js", Some(3000))));
    assert!(
        d.notes.iter().any(|n| n.contains("site's own start_command win")),
        "{:?}",
        d.notes
    );
}

#[test]
fn berth_toml_with_a_typo_or_a_wrong_type_is_an_error_naming_the_file() {
    let dir = tree(&[("index.html", "hi"), ("berth.toml", "start_comand = \"node x.js\"\n")]);
    let err = detect_explained(dir.path(), &BuildSettings::default()).unwrap_err();
    assert!(
        matches!(err, DetectError::InvalidManifest { file: "berth.toml", .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("berth.toml") && text.contains("start_comand"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");

    let dir = tree(&[("index.html", "hi"), ("berth.toml", "port = \"eighty\"\n")]);
    let err = detect_explained(dir.path(), &BuildSettings::default()).unwrap_err();
    assert!(err.to_string().contains("berth.toml"), "{err}");
}

#[test]
fn render_yaml_web_service_commands_are_used() {
    let dir = tree(&[
        ("package.json", NODE_APP),
        (
            "render.yaml",
            "services:\n  - type: worker\n    name: jobs\n    startCommand: node worker.js\n  - type: web\n    name: site\n    runtime: node\n    buildCommand: npm run build:prod\n    startCommand: node dist/server.js\n    healthCheckPath: /up\n",
        ),
    ]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert_eq!(start_of(&d), Some(("node dist/server.js", None)));
    assert_eq!(step(&d, "build"), Some("npm run build:prod"));
    assert_eq!(d.plan.health_check_path, "/up");
    assert!(
        d.notes
            .iter()
            .any(|n| n == "render.yaml: start_command = 'node dist/server.js'"),
        "{:?}",
        d.notes
    );
}

#[test]
fn render_yaml_static_site_publishes_its_folder() {
    let dir = tree(&[
        ("site/index.html", "<h1>hi</h1>"),
        (
            "render.yaml",
            "services:\n  - type: web\n    name: docs\n    runtime: static\n    buildCommand: \"\"\n    staticPublishPath: ./site/\n",
        ),
    ]);
    let mut d = detect(dir.path(), &BuildSettings::default());
    assert!(
        matches!(&d.plan.serve, ServePlan::Static { dir, .. } if dir == "site"),
        "{:?}",
        d.plan.serve
    );
    resolve_output_dir(dir.path(), &BuildSettings::default(), &mut d.plan).unwrap();
    assert!(
        matches!(&d.plan.serve, ServePlan::Static { dir, .. } if dir == "site"),
        "{:?}",
        d.plan.serve
    );
}

#[test]
fn railway_json_and_toml_give_build_start_and_health() {
    for (file, body) in [
        (
            "railway.json",
            r#"{"$schema":"https://railway.com/railway.schema.json","build":{"builder":"NIXPACKS","buildCommand":"npm run compile"},"deploy":{"startCommand":"node out/main.js","healthcheckPath":"/health","restartPolicyType":"ON_FAILURE"}}"#,
        ),
        (
            "railway.toml",
            "[build]\nbuilder = \"nixpacks\"\nbuildCommand = \"npm run compile\"\n\n[deploy]\nstartCommand = \"node out/main.js\"\nhealthcheckPath = \"/health\"\nhealthcheckTimeout = 100\n",
        ),
    ] {
        let dir = tree(&[("package.json", NODE_APP), (file, body)]);
        let d = detect(dir.path(), &BuildSettings::default());
        assert_eq!(start_of(&d), Some(("node out/main.js", None)), "{file}");
        assert_eq!(step(&d, "build"), Some("npm run compile"), "{file}");
        assert_eq!(d.plan.health_check_path, "/health", "{file}");
    }
}

#[test]
fn nixpacks_phases_and_start_and_the_defaults_marker() {
    let dir = tree(&[
        ("package.json", NODE_APP),
        (
            "nixpacks.toml",
            "[phases.install]\ncmds = [\"npm ci\", \"npm run postinstall-fix\"]\n\n[phases.build]\ncmds = [\"...\", \"npm run extra\"]\n\n[start]\ncmd = \"node index.js --cluster\"\n",
        ),
    ]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert_eq!(step(&d, "install"), Some("npm ci && npm run postinstall-fix"));
    // "..." extends the defaults: detection keeps its own build step.
    assert_eq!(step(&d, "build"), Some("npm run build"));
    assert_eq!(start_of(&d), Some(("node index.js --cluster", None)));
}

#[test]
fn fly_toml_process_port_and_check() {
    let dir = tree(&[
        ("package.json", NODE_APP),
        (
            "fly.toml",
            "app = \"my-app\"\nprimary_region = \"ams\"\n\n[processes]\napp = \"node server.js\"\nworker = \"node worker.js\"\n\n[http_service]\ninternal_port = 3000\nforce_https = true\n\n[[http_service.checks]]\ninterval = \"10s\"\npath = \"/status\"\n",
        ),
    ]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert_eq!(start_of(&d), Some(("node server.js", Some(3000))));
    assert_eq!(d.plan.health_check_path, "/status");
}

#[test]
fn procfile_wins_over_another_platforms_start_command() {
    let dir = tree(&[
        ("Procfile", "web: ./serve --port $PORT\n"),
        ("railway.json", r#"{"deploy":{"startCommand":"./other"}}"#),
    ]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert_eq!(start_of(&d), Some(("./serve --port $PORT", None)));
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("the Procfile's web: line") && n.contains("wins")),
        "{:?}",
        d.notes
    );
}

#[test]
fn berth_toml_wins_over_other_platform_files_and_a_broken_foreign_file_is_ignored() {
    let dir = tree(&[
        ("index.html", "hi"),
        ("berth.toml", "start_command = \"./mine\"\n"),
        ("render.yaml", "services:\n  - type: web\n    startCommand: ./theirs\n"),
    ]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert_eq!(start_of(&d), Some(("./mine", None)));
    assert!(!d.notes.iter().any(|n| n.contains("render.yaml")), "{:?}", d.notes);

    let dir = tree(&[("index.html", "hi"), ("render.yaml", "services: [unclosed\n")]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert!(matches!(d.plan.serve, ServePlan::Static { .. }));
    assert!(
        d.notes.iter().any(|n| n.starts_with("render.yaml could not be read")),
        "{:?}",
        d.notes
    );
}

#[test]
fn a_settings_command_that_runs_the_package_manager_keeps_its_setup_step() {
    let dir = tree(&[
        ("package.json", NODE_APP),
        ("yarn.lock", "# yarn lockfile v1\n"),
        (
            "berth.toml",
            "install_command = \"yarn install --production=false\"\nbuild_command = \"yarn build\"\n",
        ),
    ]);
    let d = detect(dir.path(), &BuildSettings::default());
    assert!(
        step(&d, "setup").is_some(),
        "yarn must be provisioned: {:?}",
        d.plan.steps
    );
    assert_eq!(step(&d, "install"), Some("yarn install --production=false"));
}

#[test]
fn config_files_that_are_symlinks_out_of_the_tree_are_not_read() {
    let outside = tree(&[("berth.toml", "start_command = \"cat /etc/shadow\"\n")]);
    let dir = tree(&[("index.html", "hi")]);
    std::os::unix::fs::symlink(outside.path().join("berth.toml"), dir.path().join("berth.toml")).unwrap();
    let d = detect(dir.path(), &BuildSettings::default());
    assert!(matches!(d.plan.serve, ServePlan::Static { .. }), "{:?}", d.plan.serve);
}
