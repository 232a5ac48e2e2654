//! Fixture tests for detection: each builds a small source tree in a tempdir
//! and compares the whole plan, as JSON, with the expected one (snapshot
//! style, so any change in commands shows up as a readable diff).

use super::*;
use serde_json::{Value, json};
use std::fs;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        Fixture { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn add(&self, name: &str, body: &str) {
        let path = self.dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    fn plan(&self, settings: &BuildSettings) -> Value {
        let plan = detect(self.path(), settings).unwrap_or_else(|e| panic!("detect failed: {e}"));
        serde_json::to_value(plan).unwrap()
    }

    fn auto(&self) -> Value {
        self.plan(&BuildSettings::default())
    }

    fn err(&self, settings: &BuildSettings) -> DetectError {
        match detect(self.path(), settings) {
            Ok(plan) => panic!("expected an error, got {plan:?}"),
            Err(e) => e,
        }
    }
}

fn static_serve(dir: &str, spa: bool) -> Value {
    json!({ "Static": { "dir": dir, "spa_fallback": spa } })
}

fn process(cmd: &str, port: Option<u16>) -> Value {
    json!({ "Process": { "command": cmd, "port": port } })
}

fn step(name: &str, cmd: &str) -> Value {
    json!({ "name": name, "command": cmd })
}

fn plan(pack: &str, steps: Vec<Value>, serve: Value) -> Value {
    json!({ "pack": pack, "steps": steps, "serve": serve, "health_check_path": "/" })
}

// ----- static ---------------------------------------------------------------

#[test]
fn static_site_at_the_root() {
    let f = Fixture::new(&[("index.html", "<h1>hi</h1>"), ("style.css", "")]);
    assert_eq!(f.auto(), plan("static", vec![], static_serve(".", false)));
}

#[test]
fn static_site_in_a_build_folder() {
    for dir in ["dist", "build", "public", "out"] {
        let f = Fixture::new(&[(&format!("{dir}/index.html"), "x")]);
        assert_eq!(f.auto(), plan("static", vec![], static_serve(dir, false)), "{dir}");
    }
    // Root wins over build folders.
    let f = Fixture::new(&[("index.html", "x"), ("dist/index.html", "x")]);
    assert_eq!(f.auto()["serve"], static_serve(".", false));
}

#[test]
fn static_output_dir_setting_is_normalised_and_wins() {
    let f = Fixture::new(&[("index.html", "x"), ("site/index.html", "x")]);
    let s = BuildSettings {
        output_dir: Some("./site/".into()),
        ..Default::default()
    };
    assert_eq!(f.plan(&s), plan("static", vec![], static_serve("site", false)));

    // An output_dir without index.html and no build step cannot be served.
    let s = BuildSettings {
        output_dir: Some("missing".into()),
        ..Default::default()
    };
    let err = f.err(&s);
    assert_eq!(
        err.to_string(),
        "no index.html found in missing; set output_dir to the folder that contains index.html"
    );
}

#[test]
fn static_site_generator_run_by_the_user() {
    // The output only exists after the build, so build_command + output_dir
    // is enough to choose static.
    let f = Fixture::new(&[("content/post.md", "# hi")]);
    let s = BuildSettings {
        build_command: Some("./generate.sh".into()),
        output_dir: Some("_site".into()),
        ..Default::default()
    };
    assert_eq!(
        f.plan(&s),
        plan(
            "static",
            vec![step("build", "./generate.sh")],
            static_serve("_site", false)
        )
    );
}

#[test]
fn forced_static_without_index_html_is_an_error() {
    let f = Fixture::new(&[("README.md", "x")]);
    let s = BuildSettings {
        build_pack: Some("static".into()),
        ..Default::default()
    };
    assert!(matches!(f.err(&s), DetectError::NoIndexHtml { .. }));
}

#[test]
fn empty_source_says_what_to_add() {
    let f = Fixture::new(&[("README.md", "nothing to run")]);
    let err = f.err(&BuildSettings::default());
    assert!(matches!(err, DetectError::NothingDetected));
    assert_eq!(
        err.to_string(),
        "no index.html, Procfile, package.json, requirements.txt or pyproject.toml found in the source root; add one or set build_pack and start_command"
    );
}

#[test]
fn unknown_build_pack_lists_the_valid_ones() {
    let f = Fixture::new(&[("index.html", "x")]);
    let s = BuildSettings {
        build_pack: Some("ruby".into()),
        ..Default::default()
    };
    assert_eq!(
        f.err(&s).to_string(),
        "unknown build_pack 'ruby'; valid values are static, procfile, node and python"
    );
    // Case and spaces are forgiven.
    let s = BuildSettings {
        build_pack: Some(" Static ".into()),
        ..Default::default()
    };
    assert_eq!(f.plan(&s)["pack"], "static");
}

// ----- procfile -------------------------------------------------------------

#[test]
fn procfile_web_line_is_the_start_command() {
    let f = Fixture::new(&[(
        "Procfile",
        "# processes\nworker: ./worker\nweb:  ./server --port $PORT \n",
    )]);
    assert_eq!(
        f.auto(),
        plan("procfile", vec![], process("./server --port $PORT", None))
    );
}

#[test]
fn procfile_without_web_line() {
    let f = Fixture::new(&[("Procfile", "worker: ./worker\n")]);
    // Not detected automatically...
    assert!(matches!(f.err(&BuildSettings::default()), DetectError::NothingDetected));
    // ...and forcing it explains what is missing.
    let s = BuildSettings {
        build_pack: Some("procfile".into()),
        ..Default::default()
    };
    let err = f.err(&s);
    assert!(matches!(
        err,
        DetectError::NoStartCommand {
            pack: BuildPack::Procfile,
            ..
        }
    ));
    assert!(err.to_string().contains("Procfile has no web: line"), "{err}");
}

#[test]
fn procfile_beats_static_index_html() {
    let f = Fixture::new(&[("Procfile", "web: ./serve"), ("index.html", "x")]);
    assert_eq!(f.auto()["pack"], "procfile");
}

#[test]
fn start_command_alone_runs_as_a_process() {
    let f = Fixture::new(&[("server", "#!/bin/sh")]);
    let s = BuildSettings {
        start_command: Some("./server".into()),
        port: Some(8080),
        ..Default::default()
    };
    assert_eq!(f.plan(&s), plan("procfile", vec![], process("./server", Some(8080))));
}

// ----- node -----------------------------------------------------------------

#[test]
fn node_without_dependencies_has_no_install_step() {
    let f = Fixture::new(&[
        ("package.json", r#"{"name":"x","scripts":{"start":"node server.js"}}"#),
        ("server.js", ""),
        // A lockfile without dependencies still means nothing to install.
        ("package-lock.json", "{}"),
    ]);
    assert_eq!(f.auto(), plan("node", vec![], process("node server.js", None)));
}

#[test]
fn node_install_uses_the_lockfiles_tool() {
    let cases = [
        ("package-lock.json", "npm ci --no-audit --no-fund"),
        ("npm-shrinkwrap.json", "npm ci --no-audit --no-fund"),
        ("yarn.lock", "yarn install --frozen-lockfile"),
        ("pnpm-lock.yaml", "pnpm install --frozen-lockfile"),
        ("", "npm install --no-audit --no-fund"),
    ];
    for (lockfile, install) in cases {
        let f = Fixture::new(&[(
            "package.json",
            r#"{"dependencies":{"express":"^4"},"scripts":{"start":"node app.js"}}"#,
        )]);
        if !lockfile.is_empty() {
            f.add(lockfile, "");
        }
        assert_eq!(
            f.auto(),
            plan("node", vec![step("install", install)], process("node app.js", None)),
            "{lockfile}"
        );
    }
    // devDependencies alone also need an install (the build uses them).
    let f = Fixture::new(&[(
        "package.json",
        r#"{"devDependencies":{"typescript":"5"},"scripts":{"build":"tsc","start":"node dist/main.js"}}"#,
    )]);
    assert_eq!(
        f.auto(),
        plan(
            "node",
            vec![
                step("install", "npm install --no-audit --no-fund"),
                step("build", "npm run build")
            ],
            process("node dist/main.js", None)
        )
    );
}

#[test]
fn node_start_falls_back_to_main_then_well_known_files() {
    let f = Fixture::new(&[("package.json", r#"{"main":"src/my server.js"}"#)]);
    assert_eq!(f.auto()["serve"], process("node 'src/my server.js'", None));

    let f = Fixture::new(&[("package.json", r#"{"name":"x"}"#), ("app.js", ""), ("index.js", "")]);
    assert_eq!(f.auto()["serve"], process("node index.js", None));

    let f = Fixture::new(&[("package.json", r#"{"name":"x"}"#), ("app.js", ""), ("server.js", "")]);
    assert_eq!(f.auto()["serve"], process("node server.js", None));
}

#[test]
fn node_spa_build_serves_the_output_folder() {
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"devDependencies":{"vite":"5"},"scripts":{"dev":"vite","build":"vite build"}}"#,
        ),
        ("package-lock.json", "{}"),
        // Vite keeps its source index.html at the root; it must not be
        // mistaken for the output.
        ("index.html", "<script src=/src/main.js>"),
    ]);
    assert_eq!(
        f.auto(),
        plan(
            "node",
            vec![
                step("install", "npm ci --no-audit --no-fund"),
                step("build", "npm run build")
            ],
            static_serve("dist", true)
        )
    );
}

#[test]
fn node_static_output_is_resolved_after_the_build() {
    // create-react-app: public/index.html is the template, build/ the output.
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"dependencies":{"react-scripts":"5"},"scripts":{"build":"react-scripts build"}}"#,
        ),
        ("public/index.html", "template"),
    ]);
    let settings = BuildSettings::default();
    let mut p = detect(f.path(), &settings).unwrap();
    assert_eq!(
        p.serve,
        ServePlan::Static {
            dir: "build".into(),
            spa_fallback: true
        }
    );
    // Before the build has written anything, the template in public/ is the
    // only index.html around; the build output is preferred once it exists.
    f.add("build/index.html", "built");
    resolve_output_dir(f.path(), &settings, &mut p).unwrap();
    assert_eq!(
        p.serve,
        ServePlan::Static {
            dir: "build".into(),
            spa_fallback: true
        }
    );

    // Guess was wrong (dist), output went to out/ with its own 404 page.
    let f = Fixture::new(&[(
        "package.json",
        r#"{"devDependencies":{"some-bundler":"1"},"scripts":{"build":"bundle"}}"#,
    )]);
    let mut p = detect(f.path(), &settings).unwrap();
    assert_eq!(
        p.serve,
        ServePlan::Static {
            dir: "dist".into(),
            spa_fallback: true
        }
    );
    f.add("out/index.html", "built");
    f.add("out/404.html", "not found");
    resolve_output_dir(f.path(), &settings, &mut p).unwrap();
    assert_eq!(
        p.serve,
        ServePlan::Static {
            dir: "out".into(),
            spa_fallback: false
        }
    );

    // Build produced nothing servable.
    let f = Fixture::new(&[("package.json", r#"{"scripts":{"build":"true"}}"#)]);
    let mut p = detect(f.path(), &settings).unwrap();
    let err = resolve_output_dir(f.path(), &settings, &mut p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no index.html found in dist, build, out, public, .; set output_dir to the folder that contains index.html"
    );

    // An explicit output_dir is not second-guessed.
    let explicit = BuildSettings {
        output_dir: Some("www".into()),
        ..Default::default()
    };
    let f = Fixture::new(&[("package.json", r#"{"scripts":{"build":"true"}}"#)]);
    let mut p = detect(f.path(), &explicit).unwrap();
    f.add("dist/index.html", "x");
    assert!(matches!(
        resolve_output_dir(f.path(), &explicit, &mut p),
        Err(DetectError::NoIndexHtml { .. })
    ));
}

#[test]
fn node_tooling_only_package_json_with_root_index_html_is_static() {
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"devDependencies":{"prettier":"3"},"scripts":{"fmt":"prettier -w ."}}"#,
        ),
        ("index.html", "x"),
    ]);
    assert_eq!(
        f.auto(),
        plan(
            "node",
            vec![step("install", "npm install --no-audit --no-fund")],
            static_serve(".", false)
        )
    );
}

#[test]
fn node_without_anything_to_start() {
    let f = Fixture::new(&[("package.json", r#"{"name":"x","scripts":{"test":"x"}}"#)]);
    let err = f.err(&BuildSettings::default());
    assert!(err.to_string().contains("add a start script"), "{err}");
}

#[test]
fn node_invalid_package_json() {
    let f = Fixture::new(&[("package.json", "{ not json")]);
    let err = f.err(&BuildSettings::default());
    assert!(matches!(
        err,
        DetectError::InvalidManifest {
            file: "package.json",
            ..
        }
    ));
    assert!(err.to_string().starts_with("package.json is not valid: "), "{err}");
}

#[test]
fn node_procfile_supplies_the_start_command() {
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"dependencies":{"x":"1"},"scripts":{"start":"node a.js"}}"#,
        ),
        ("Procfile", "web: node --enable-source-maps b.js"),
    ]);
    assert_eq!(
        f.auto(),
        plan(
            "node",
            vec![step("install", "npm install --no-audit --no-fund")],
            process("node --enable-source-maps b.js", None)
        )
    );
}

#[test]
fn forced_node_without_package_json() {
    let f = Fixture::new(&[("index.html", "x")]);
    let s = BuildSettings {
        build_pack: Some("node".into()),
        ..Default::default()
    };
    let err = f.err(&s);
    assert_eq!(
        err.to_string(),
        "build_pack is 'node' but the source root has no package.json; add it or choose another build_pack"
    );
}

// ----- python ---------------------------------------------------------------

#[test]
fn python_requirements_and_app_py() {
    let f = Fixture::new(&[("requirements.txt", "flask==3.0\n"), ("app.py", "")]);
    assert_eq!(
        f.auto(),
        plan(
            "python",
            vec![step(
                "install",
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
            )],
            process(".venv/bin/python app.py", None)
        )
    );
}

#[test]
fn python_without_requirements_skips_pip() {
    let f = Fixture::new(&[
        ("requirements.txt", "# stdlib only\n\n   # really\n"),
        ("server.py", ""),
        ("main.py", ""),
    ]);
    assert_eq!(
        f.auto(),
        plan(
            "python",
            vec![step("install", "python3 -m venv --without-pip .venv")],
            process(".venv/bin/python main.py", None)
        )
    );
}

#[test]
fn python_pyproject() {
    let f = Fixture::new(&[
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\ndependencies = [\"fastapi\"]\n",
        ),
        ("wsgi.py", ""),
    ]);
    assert_eq!(
        f.auto(),
        plan(
            "python",
            vec![step("install", "python3 -m venv .venv && .venv/bin/pip install .")],
            process(".venv/bin/python wsgi.py", None)
        )
    );
    // Tool configuration only: nothing to pip install.
    let f = Fixture::new(&[("pyproject.toml", "[tool.ruff]\nline-length = 100\n"), ("app.py", "")]);
    assert_eq!(
        f.auto()["steps"],
        json!([step("install", "python3 -m venv --without-pip .venv")])
    );
    // Both: the pinned requirements win.
    let f = Fixture::new(&[
        ("pyproject.toml", "[project]\nname = \"x\"\n"),
        ("requirements.txt", "-r base.txt\n"),
        ("app.py", ""),
    ]);
    assert_eq!(
        f.auto()["steps"],
        json!([step(
            "install",
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
        )])
    );
}

#[test]
fn python_procfile_supplies_the_start_command_and_install_still_runs() {
    let f = Fixture::new(&[
        ("requirements.txt", "gunicorn\nflask\n"),
        ("Procfile", "web: .venv/bin/gunicorn -b 0.0.0.0:$PORT app:app\n"),
        ("app.py", ""),
    ]);
    assert_eq!(
        f.auto(),
        plan(
            "python",
            vec![step(
                "install",
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
            )],
            process(".venv/bin/gunicorn -b 0.0.0.0:$PORT app:app", None)
        )
    );
}

#[test]
fn python_without_entry_point() {
    let f = Fixture::new(&[("requirements.txt", "flask\n"), ("lib.py", "")]);
    let err = f.err(&BuildSettings::default());
    assert!(matches!(
        err,
        DetectError::NoStartCommand {
            pack: BuildPack::Python,
            ..
        }
    ));
    assert!(err.to_string().contains("or set start_command"), "{err}");
}

// ----- overrides ------------------------------------------------------------

#[test]
fn every_override_wins() {
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"dependencies":{"x":"1"},"scripts":{"build":"b","start":"node a.js"}}"#,
        ),
        ("package-lock.json", "{}"),
    ]);
    let s = BuildSettings {
        build_pack: None,
        install_command: Some("npm ci --omit=dev".into()),
        build_command: Some("npm run build:prod".into()),
        start_command: Some("node dist/server.js".into()),
        port: Some(3000),
        health_check_path: Some("healthz".into()),
        output_dir: None,
    };
    assert_eq!(
        f.plan(&s),
        json!({
            "pack": "node",
            "steps": [step("install", "npm ci --omit=dev"), step("build", "npm run build:prod")],
            "serve": process("node dist/server.js", Some(3000)),
            "health_check_path": "/healthz",
        })
    );
    // Empty strings remove steps.
    let s = BuildSettings {
        install_command: Some(String::new()),
        build_command: Some("  ".into()),
        ..Default::default()
    };
    assert_eq!(f.plan(&s)["steps"], json!([]));
}

#[test]
fn forced_python_pack_on_a_node_project() {
    let f = Fixture::new(&[("package.json", "{}"), ("main.py", "")]);
    let s = BuildSettings {
        build_pack: Some("python".into()),
        ..Default::default()
    };
    assert_eq!(f.plan(&s)["serve"], process(".venv/bin/python main.py", None));
}

#[test]
fn invalid_settings_are_rejected() {
    let f = Fixture::new(&[("index.html", "x")]);
    for bad in ["../outside", "/abs", "a/../../b"] {
        let s = BuildSettings {
            output_dir: Some(bad.into()),
            ..Default::default()
        };
        assert!(
            matches!(
                f.err(&s),
                DetectError::InvalidSetting {
                    field: "output_dir",
                    ..
                }
            ),
            "{bad}"
        );
    }
    let s = BuildSettings {
        health_check_path: Some("/health check".into()),
        ..Default::default()
    };
    assert!(matches!(
        f.err(&s),
        DetectError::InvalidSetting {
            field: "health_check_path",
            ..
        }
    ));
}

#[test]
fn plans_round_trip_through_json() {
    let f = Fixture::new(&[("requirements.txt", "x\n"), ("app.py", "")]);
    let p = detect(f.path(), &BuildSettings::default()).unwrap();
    let back: BuildPlan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    let s: BuildSettings = serde_json::from_value(json!({ "build_pack": "node" })).unwrap();
    assert_eq!(s.build_pack.as_deref(), Some("node"));
}

#[test]
fn procfile_parsing_edge_cases() {
    assert_eq!(parse_procfile_web("web: a: b"), Some("a: b".into()));
    assert_eq!(parse_procfile_web("webby: x\nweb:"), None);
    assert_eq!(parse_procfile_web("#web: x\n web :y"), Some("y".into()));
}
