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
        "no index.html, Procfile, package.json, requirements.txt, pyproject.toml, go.mod, Cargo.toml or deno.json found in the source root; add one or set build_pack and start_command"
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
        "unknown build_pack 'ruby'; valid values are static, procfile, node, python, go, rust and deno"
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
    // yarn and pnpm come through corepack: see the package manager tests.
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
    // An app, not a package: its dependencies are installed, not the project.
    assert_eq!(
        f.auto(),
        plan(
            "python",
            vec![step(
                "install",
                "python3 -m venv .venv && .venv/bin/pip install fastapi"
            )],
            process(".venv/bin/python wsgi.py", None)
        )
    );
    // A package with a build backend is installed as a whole.
    f.add(
        "pyproject.toml",
        "[build-system]\nrequires = [\"hatchling\"]\n[project]\nname = \"x\"\ndependencies = [\"fastapi\"]\n",
    );
    assert_eq!(
        f.auto()["steps"],
        json!([step("install", "python3 -m venv .venv && .venv/bin/pip install .")])
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
        root_dir: None,
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

// ----- package managers -----------------------------------------------------

/// A command run through corepack, as detection writes it.
fn corepack(args: &str) -> String {
    format!("{} corepack {args}", node::COREPACK_ENV)
}

fn explained(f: &Fixture) -> Detection {
    detect_explained(f.path(), &BuildSettings::default()).unwrap_or_else(|e| panic!("detect failed: {e}"))
}

const DEPS_AND_BUILD: &str =
    r#"{"dependencies":{"ms":"2"},"scripts":{"build":"node build.js","start":"node server.js"}}"#;

#[test]
fn yarn_classic_lockfile_is_installed_with_yarn_1_through_corepack() {
    let f = Fixture::new(&[
        ("package.json", DEPS_AND_BUILD),
        (
            "yarn.lock",
            "# THIS IS AN AUTOGENERATED FILE.\n# yarn lockfile v1\n\n\nms@2:\n  version \"2.1.3\"\n",
        ),
    ]);
    let d = explained(&f);
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap(),
        plan(
            "node",
            vec![
                step("setup", &corepack("yarn@1.22.22 --version")),
                step("install", &corepack("yarn@1.22.22 install --frozen-lockfile")),
                step("build", &corepack("yarn@1.22.22 run build")),
            ],
            process("node server.js", None)
        )
    );
    assert_eq!(d.package_manager.as_deref(), Some("yarn@1.22.22"));
    assert!(
        d.notes
            .contains(&"package manager: yarn@1.22.22 (yarn.lock)".to_string()),
        "{:?}",
        d.notes
    );
    // The cache and the sandbox only see the app folder: corepack keeps its
    // downloads there, in the folder the build cache carries between builds.
    assert!(
        d.plan.steps[0]
            .command
            .contains("COREPACK_HOME=\"$HOME/.cache/corepack\"")
    );
    assert_eq!(COREPACK_HOME_DIR, ".cache/corepack");
}

#[test]
fn yarn_berry_lockfile_picks_the_berry_major() {
    for (version, spec) in [("8", "yarn@4.9.1"), ("6", "yarn@3.8.7")] {
        let f = Fixture::new(&[
            ("package.json", DEPS_AND_BUILD),
            (
                "yarn.lock",
                &format!(
                    "# This file is generated by running \"yarn install\"\n\n__metadata:\n  version: {version}\n  cacheKey: 10c0\n"
                ),
            ),
        ]);
        let d = explained(&f);
        assert_eq!(
            d.plan.steps[1].command,
            corepack(&format!("{spec} install --immutable")),
            "{version}"
        );
        assert_eq!(d.package_manager.as_deref(), Some(spec));
    }
}

#[test]
fn pnpm_lockfile_version_picks_the_pnpm_major() {
    for (version, spec) in [("'9.0'", "pnpm@9"), ("'6.0'", "pnpm@8"), ("5.4", "pnpm@7")] {
        let f = Fixture::new(&[
            ("package.json", DEPS_AND_BUILD),
            ("pnpm-lock.yaml", &format!("lockfileVersion: {version}\n\nimporters:\n")),
        ]);
        let d = explained(&f);
        assert_eq!(
            serde_json::to_value(&d.plan).unwrap()["steps"],
            json!([
                step("setup", &corepack(&format!("{spec} --version"))),
                step("install", &corepack(&format!("{spec} install --frozen-lockfile"))),
                step("build", &corepack(&format!("{spec} run build"))),
            ]),
            "{version}"
        );
        assert!(d.notes.contains(&format!("package manager: {spec} (pnpm-lock.yaml)")));
    }
}

#[test]
fn package_manager_field_wins_over_lockfiles() {
    let field = "pnpm@9.1.0+sha512.0123abcd";
    let f = Fixture::new(&[
        (
            "package.json",
            &format!(r#"{{"packageManager":"{field}","dependencies":{{"ms":"2"}},"scripts":{{"start":"node s.js"}}}}"#),
        ),
        ("package-lock.json", "{}"),
    ]);
    let d = explained(&f);
    // corepack reads the exact version and hash from package.json itself.
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap()["steps"],
        json!([
            step("setup", &corepack("pnpm --version")),
            step("install", &corepack("pnpm install")),
        ])
    );
    assert_eq!(d.package_manager.as_deref(), Some(field));
    assert!(d.notes[0].contains("packageManager in package.json"), "{:?}", d.notes);

    // yarn 2+ by packageManager uses berry's flags.
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"packageManager":"yarn@4.5.0","dependencies":{"ms":"2"},"scripts":{"start":"node s.js"}}"#,
        ),
        ("yarn.lock", "__metadata:\n  version: 8\n"),
    ]);
    assert_eq!(
        explained(&f).plan.steps[1].command,
        corepack("yarn install --immutable")
    );

    // npm by packageManager: the server's npm, no setup step.
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"packageManager":"npm@10.2.0","dependencies":{"ms":"2"},"scripts":{"start":"node s.js"}}"#,
        ),
        ("yarn.lock", ""),
    ]);
    let d = explained(&f);
    assert_eq!(
        d.plan.steps,
        vec![BuildStep {
            name: "install".into(),
            command: "npm install --no-audit --no-fund".into()
        }]
    );
    assert_eq!(d.package_manager, None);
}

/// True when this machine has a system bun, which detection prefers to a download.
fn system_bun() -> bool {
    ["/usr/local/bin/bun", "/usr/bin/bun"]
        .iter()
        .any(|p| Path::new(p).exists())
}

#[test]
fn bun_lockfile_gets_bun_from_the_npm_registry_and_bun_runs_the_app() {
    if system_bun() {
        return; // this machine has bun: no download is planned
    }
    for lockfile in ["bun.lock", "bun.lockb"] {
        let f = Fixture::new(&[
            (
                "package.json",
                r#"{"dependencies":{"ms":"2"},"scripts":{"start":"bun run server.ts"}}"#,
            ),
            (lockfile, "{}"),
            ("server.ts", "Bun.serve({})"),
        ]);
        let d = explained(&f);
        let label = format!("bun@{}", tools::BUN_VERSION);
        assert_eq!(d.package_manager.as_deref(), Some(label.as_str()));
        assert!(
            d.notes.contains(&format!("package manager: {label} ({lockfile})")),
            "{:?}",
            d.notes
        );
        assert_eq!(
            serde_json::to_value(&d.plan).unwrap(),
            json!({
                "pack": "node",
                "steps": [
                    step(SETUP_STEP, &tools::setup_command(tools::Runtime::Bun, tools::BUN_VERSION)),
                    step("install", "bun install --frozen-lockfile"),
                ],
                "serve": process("bun run server.ts", None),
                "health_check_path": "/",
            })
        );
    }
}

#[test]
fn bun_is_provisioned_for_the_start_command_even_without_dependencies() {
    if system_bun() {
        return;
    }
    // packageManager names the release; with nothing to install bun still runs the app.
    let f = Fixture::new(&[
        ("package.json", r#"{"packageManager":"bun@1.1.38"}"#),
        ("index.ts", "Bun.serve({})"),
    ]);
    let d = explained(&f);
    assert_eq!(d.package_manager.as_deref(), Some("bun@1.1.38"));
    assert_eq!(
        d.plan.steps,
        vec![BuildStep {
            name: SETUP_STEP.into(),
            command: tools::setup_command(tools::Runtime::Bun, "1.1.38"),
        }]
    );
    assert_eq!(
        serde_json::to_value(&d.plan.serve).unwrap(),
        process("bun index.ts", None)
    );
    // A packageManager value that is no plain release is never put in a command.
    let f = Fixture::new(&[
        ("package.json", r#"{"packageManager":"bun@1.1;rm -rf /"}"#),
        ("index.ts", "Bun.serve({})"),
    ]);
    let d = explained(&f);
    assert_eq!(d.package_manager, Some(format!("bun@{}", tools::BUN_VERSION)));
    assert!(!d.plan.steps[0].command.contains("1.1;"), "{:?}", d.plan.steps);
}

#[test]
fn bun_setup_downloads_once_into_the_tools_folder() {
    let cmd = tools::setup_command(tools::Runtime::Bun, "1.4.5");
    // Skipped when the folder (restored from the build cache) already has it.
    assert!(cmd.contains(r#"if [ ! -x "$d/bin/bun" ]"#), "{cmd}");
    assert!(
        cmd.contains(r#"npm pack --silent --cache ./.npm-cache "$p@1.4.5""#),
        "{cmd}"
    );
    assert!(
        cmd.contains("@oven/bun-linux-x64") && cmd.contains("-baseline"),
        "{cmd}"
    );
    assert!(cmd.contains(r#"ln -sfn "../bun-1.4.5/bin/bun" "$t/bin/bun""#), "{cmd}");
    assert!(crate::sandbox::SANDBOX_PATH.contains(&format!("/app/{}/bin", tools::TOOLS_HOME_DIR)));
    let deno = tools::setup_command(tools::Runtime::Deno, "2.9.6");
    assert!(
        deno.contains("@deno/linux-x64-glibc") && deno.contains(r#""../deno-2.9.6/deno""#),
        "{deno}"
    );
}

#[test]
fn the_package_manager_is_provisioned_only_when_a_detected_step_uses_it() {
    // Nothing to install: npm runs the build, no corepack download.
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"scripts":{"build":"node b.js","start":"node s.js"}}"#,
        ),
        ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
    ]);
    let d = explained(&f);
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap()["steps"],
        json!([step("build", "npm run build")])
    );
    assert_eq!(d.package_manager, None);

    // Both steps overridden: the user's commands decide.
    let f = Fixture::new(&[
        ("package.json", DEPS_AND_BUILD),
        ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
    ]);
    let s = BuildSettings {
        install_command: Some("npm install".into()),
        build_command: Some("".into()),
        ..Default::default()
    };
    let d = detect_explained(f.path(), &s).unwrap();
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap()["steps"],
        json!([step("install", "npm install")])
    );
    assert_eq!(d.package_manager, None);
}

#[test]
fn setup_failure_hint_names_the_manager_and_the_fix() {
    let hint = setup_failure_hint("pnpm@9");
    assert!(hint.starts_with("could not get pnpm@9 through corepack"), "{hint}");
    assert!(
        hint.contains("npm registry") && hint.contains("install_command") && hint.contains("use pnpm"),
        "{hint}"
    );
}

// ----- frontend frameworks ----------------------------------------------------

#[test]
fn vite_spa_with_a_dev_server_start_script_serves_dist() {
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"devDependencies":{"vite":"6"},"scripts":{"start":"vite","build":"vite build"}}"#,
        ),
        ("package-lock.json", "{}"),
        ("index.html", "<script type=module src=/src/main.js></script>"),
    ]);
    let d = explained(&f);
    assert_eq!(
        d.plan.serve,
        ServePlan::Static {
            dir: "dist".into(),
            spa_fallback: true
        }
    );
    assert!(
        d.notes
            .contains(&"detected vite (package.json devDependencies) → static output dist, SPA fallback".to_string()),
        "{:?}",
        d.notes
    );
    assert!(
        d.notes.iter().any(|n| n.contains("'vite' is a development server")),
        "{:?}",
        d.notes
    );
}

#[test]
fn framework_output_folders_and_spa_fallback() {
    // package.json, extra files, output folder, SPA fallback.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, bool);
    let cases: [Case<'_>; 5] = [
        (
            r#"{"dependencies":{"react-scripts":"5","react":"18"},"scripts":{"start":"react-scripts start","build":"react-scripts build"}}"#,
            &[],
            "build",
            true,
        ),
        (
            r#"{"dependencies":{"next":"15"},"scripts":{"start":"next start","build":"next build"}}"#,
            &[(
                "next.config.mjs",
                "const nextConfig = {\n  output: 'export',\n};\nexport default nextConfig;\n",
            )],
            "out",
            false,
        ),
        (
            r#"{"dependencies":{"astro":"5"},"scripts":{"start":"astro dev","build":"astro build"}}"#,
            &[],
            "dist",
            false,
        ),
        (
            r#"{"dependencies":{"gatsby":"5"},"scripts":{"start":"gatsby develop","build":"gatsby build"}}"#,
            &[],
            "public",
            false,
        ),
        (
            r#"{"devDependencies":{"@sveltejs/kit":"2","@sveltejs/adapter-static":"3","vite":"6"},"scripts":{"build":"vite build"}}"#,
            &[("svelte.config.js", "adapter: adapter({ fallback: 'index.html' })")],
            "build",
            true,
        ),
    ];
    for (pkg, extra, dir, spa) in cases {
        let f = Fixture::new(&[("package.json", pkg)]);
        for (name, body) in extra {
            f.add(name, body);
        }
        let d = explained(&f);
        assert_eq!(
            d.plan.serve,
            ServePlan::Static {
                dir: dir.into(),
                spa_fallback: spa
            },
            "{pkg}"
        );
        assert!(
            d.notes
                .iter()
                .any(|n| n.starts_with("detected ") && n.contains(&format!("static output {dir}"))),
            "{:?}",
            d.notes
        );
    }
}

#[test]
fn server_frameworks_run_their_start_script() {
    let cases = [
        r#"{"dependencies":{"next":"15"},"scripts":{"start":"next start","build":"next build"}}"#,
        r#"{"dependencies":{"@remix-run/node":"2","@remix-run/serve":"2","vite":"5"},"scripts":{"start":"remix-serve ./build/server/index.js","build":"remix vite:build"}}"#,
        r#"{"dependencies":{"nuxt":"3"},"scripts":{"start":"node .output/server/index.mjs","build":"nuxt build"}}"#,
        r#"{"dependencies":{"@sveltejs/kit":"2","@sveltejs/adapter-node":"5"},"scripts":{"start":"node build","build":"vite build"}}"#,
        r#"{"dependencies":{"astro":"5","@astrojs/node":"9"},"scripts":{"start":"node ./dist/server/entry.mjs","build":"astro build"}}"#,
        r#"{"dependencies":{"express":"4"},"scripts":{"start":"node server.js"}}"#,
        // A vite front end served by the app's own server.
        r#"{"dependencies":{"express":"4","vite":"6"},"scripts":{"start":"node server.js","build":"vite build"}}"#,
    ];
    for pkg in cases {
        let f = Fixture::new(&[("package.json", pkg)]);
        let d = explained(&f);
        let start: serde_json::Value = serde_json::from_str(pkg).unwrap();
        let start = start["scripts"]["start"].as_str().unwrap().to_string();
        assert_eq!(
            d.plan.serve,
            ServePlan::Process {
                command: start,
                port: None
            },
            "{pkg}"
        );
        assert!(
            d.notes.iter().any(|n| n.starts_with("detected ")),
            "{pkg}: {:?}",
            d.notes
        );
    }
    // Next.js without output: "export" says why it is a server.
    let f = Fixture::new(&[
        ("package.json", cases[0]),
        ("next.config.js", "module.exports = { reactStrictMode: true }"),
    ]);
    assert!(
        explained(&f)
            .notes
            .iter()
            .any(|n| n.contains("Next.js") && n.contains("runs as a server"))
    );
}

#[test]
fn a_dev_server_start_script_is_never_the_start_command() {
    // A template with its built site committed: served from dist/.
    let f = Fixture::new(&[
        (
            "package.json",
            r#"{"devDependencies":{"browser-sync":"3"},"scripts":{"start":"browser-sync start --server dist"}}"#,
        ),
        ("dist/index.html", "built"),
    ]);
    assert_eq!(
        explained(&f).plan.serve,
        ServePlan::Static {
            dir: "dist".into(),
            spa_fallback: false
        }
    );

    // Nothing built and nothing to build: the error names both settings.
    let f = Fixture::new(&[(
        "package.json",
        r#"{"main":"index.js","scripts":{"start":"vite --port 3000"}}"#,
    )]);
    let err = f.err(&BuildSettings::default());
    assert!(matches!(err, DetectError::DevServerStart { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("'vite --port 3000'") && msg.contains("output_dir") && msg.contains("start_command"),
        "{msg}"
    );

    // A build that writes no index.html: the same message after the build.
    let f = Fixture::new(&[(
        "package.json",
        r#"{"devDependencies":{"parcel":"2"},"scripts":{"start":"parcel index.html","build":"parcel build"}}"#,
    )]);
    let settings = BuildSettings::default();
    let mut p = detect(f.path(), &settings).unwrap();
    let err = resolve_output_dir(f.path(), &settings, &mut p).unwrap_err();
    assert!(matches!(err, DetectError::DevServerStart { .. }), "{err}");

    // start_command still wins over everything.
    let s = BuildSettings {
        start_command: Some("node server.js".into()),
        ..Default::default()
    };
    assert_eq!(
        detect(f.path(), &s).unwrap().serve,
        ServePlan::Process {
            command: "node server.js".into(),
            port: None
        }
    );
}

#[test]
fn dev_server_scripts_are_recognised() {
    for dev in [
        "vite",
        "vite dev",
        "vite --host",
        "vite preview --port 8080",
        "react-scripts start",
        "next dev",
        "astro dev",
        "gatsby develop",
        "nuxt dev",
        "ng serve",
        "webpack serve --mode development",
        "webpack-dev-server",
        "parcel src/index.html",
        "serve -s build",
        "http-server dist",
        "lite-server",
        "NODE_ENV=development vite",
        "cross-env PORT=3000 react-scripts start",
    ] {
        assert!(is_dev_server(dev), "{dev}");
    }
    for server in [
        "node server.js",
        "next start",
        "vite build",
        "parcel build",
        "remix-serve build/index.js",
        "NODE_ENV=production node index.js",
        "nuxt start",
        "",
    ] {
        assert!(!is_dev_server(server), "{server}");
    }
}

// ----- python web apps ----------------------------------------------------------

#[test]
fn flask_with_gunicorn_and_no_procfile() {
    let f = Fixture::new(&[
        ("requirements.txt", "Flask==3.1.0\ngunicorn>=22 # server\n"),
        (
            "app.py",
            "from flask import Flask\n\napp = Flask(__name__)\n\n@app.get('/')\ndef index():\n    return 'hi'\n",
        ),
    ]);
    let d = explained(&f);
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap(),
        plan(
            "python",
            vec![step(
                "install",
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
            )],
            process(".venv/bin/gunicorn --bind 0.0.0.0:$PORT app:app", None)
        )
    );
    assert!(
        d.notes.contains(&"detected Flask app app:app in app.py".to_string()),
        "{:?}",
        d.notes
    );
    assert!(
        d.notes.iter().any(|n| n.starts_with("server: gunicorn")),
        "{:?}",
        d.notes
    );
}

#[test]
fn asgi_and_wsgi_servers_from_the_requirements() {
    let cases = [
        (
            "fastapi\nuvicorn[standard]\n",
            "app/main.py",
            "import fastapi\napp = fastapi.FastAPI(title='x')\n",
            ".venv/bin/uvicorn app.main:app --host 0.0.0.0 --port $PORT",
        ),
        (
            "starlette\nhypercorn\n",
            "main.py",
            "from starlette.applications import Starlette\napi: Starlette = Starlette()\n",
            ".venv/bin/hypercorn --bind 0.0.0.0:$PORT main:api",
        ),
        (
            "flask\nwaitress\n",
            "wsgi.py",
            "from flask import Flask\napplication = Flask(__name__)\n",
            ".venv/bin/waitress-serve --listen=0.0.0.0:$PORT wsgi:application",
        ),
        (
            "flask\ngunicorn\n",
            "app/__init__.py",
            "from flask import Flask\n\ndef create_app():\n    app = Flask(__name__)\n    return app\n",
            ".venv/bin/gunicorn --bind 0.0.0.0:$PORT 'app:create_app()'",
        ),
        (
            "flask\n",
            "app.py",
            "from flask import Flask\napp = Flask(__name__)\n",
            ".venv/bin/flask --app app:app run --host 0.0.0.0 --port $PORT",
        ),
    ];
    for (requirements, file, code, start) in cases {
        let f = Fixture::new(&[("requirements.txt", requirements), (file, code)]);
        let d = explained(&f);
        assert_eq!(
            d.plan.serve,
            ServePlan::Process {
                command: start.into(),
                port: None
            },
            "{requirements}"
        );
    }
    // Flask's development server is said to be one.
    let f = Fixture::new(&[
        ("requirements.txt", "flask\n"),
        ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
    ]);
    assert!(
        explained(&f)
            .notes
            .iter()
            .any(|n| n.contains("development server") && n.contains("gunicorn"))
    );
    // Requirements included with -r count.
    let f = Fixture::new(&[
        ("requirements.txt", "-r requirements/base.txt\n"),
        ("requirements/base.txt", "flask\ngunicorn\n"),
        ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
    ]);
    assert_eq!(
        explained(&f).plan.serve,
        ServePlan::Process {
            command: ".venv/bin/gunicorn --bind 0.0.0.0:$PORT app:app".into(),
            port: None
        }
    );
}

fn django(settings_body: &str, requirements: &str) -> Fixture {
    Fixture::new(&[
        ("requirements.txt", requirements),
        (
            "manage.py",
            "import os, sys\n\ndef main():\n    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n",
        ),
        ("mysite/__init__.py", ""),
        ("mysite/settings.py", settings_body),
        ("mysite/wsgi.py", "application = get_wsgi_application()\n"),
        ("mysite/asgi.py", "application = get_asgi_application()\n"),
    ])
}

#[test]
fn django_from_manage_py_with_collectstatic() {
    let f = django(
        "STATIC_URL = 'static/'\nSTATIC_ROOT = BASE_DIR / 'staticfiles'\n",
        "Django>=5\ngunicorn\n",
    );
    let d = explained(&f);
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap(),
        plan(
            "python",
            vec![
                step(
                    "install",
                    "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
                ),
                step("build", ".venv/bin/python manage.py collectstatic --noinput"),
            ],
            process(".venv/bin/gunicorn --bind 0.0.0.0:$PORT mysite.wsgi:application", None)
        )
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("STATIC_ROOT") && n.contains("collectstatic")),
        "{:?}",
        d.notes
    );

    // Without STATIC_ROOT there is nothing to collect; with only uvicorn the ASGI entry.
    let f = django("STATIC_URL = 'static/'\n", "django\nuvicorn\n");
    let d = explained(&f);
    assert_eq!(d.plan.steps.len(), 1);
    assert_eq!(
        d.plan.serve,
        ServePlan::Process {
            command: ".venv/bin/uvicorn mysite.asgi:application --host 0.0.0.0 --port $PORT".into(),
            port: None
        }
    );

    // A Procfile decides the start command; collectstatic still runs.
    let f = django("STATIC_ROOT = 'static'\n", "django\ngunicorn\n");
    f.add("Procfile", "web: .venv/bin/gunicorn mysite.wsgi\n");
    let d = explained(&f);
    assert_eq!(
        d.plan.steps[1].command,
        ".venv/bin/python manage.py collectstatic --noinput"
    );
    assert_eq!(
        d.plan.serve,
        ServePlan::Process {
            command: ".venv/bin/gunicorn mysite.wsgi".into(),
            port: None
        }
    );
}

const UV_LOCK: &str = r#"version = 1
requires-python = ">=3.11"

[[package]]
name = "blinker"
version = "1.9.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "click"
version = "8.1.8"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "colorama", marker = "sys_platform == 'win32'" },
]

[[package]]
name = "colorama"
version = "0.4.6"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "flask"
version = "3.1.0"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "blinker" },
    { name = "click" },
]

[[package]]
name = "gunicorn"
version = "23.0.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "pytest"
version = "8.3.4"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "web"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
    { name = "flask" },
    { name = "gunicorn" },
]

[package.dev-dependencies]
dev = [
    { name = "pytest" },
]

[package.metadata]
requires-dist = [
    { name = "flask", specifier = ">=3" },
    { name = "gunicorn" },
]
"#;

#[test]
fn uv_lock_pins_are_installed_with_pip_without_dev_groups() {
    let f = Fixture::new(&[
        (
            "pyproject.toml",
            "[project]\nname = \"web\"\ndependencies = [\"flask>=3\", \"gunicorn\"]\n\n[dependency-groups]\ndev = [\"pytest\"]\n",
        ),
        ("uv.lock", UV_LOCK),
        ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
    ]);
    let d = explained(&f);
    assert_eq!(
        d.plan.steps[0].command,
        "python3 -m venv .venv && .venv/bin/pip install blinker==1.9.0 click==8.1.8 'colorama==0.4.6; sys_platform == '\\''win32'\\''' flask==3.1.0 gunicorn==23.0.0"
    );
    assert_eq!(
        d.plan.serve,
        ServePlan::Process {
            command: ".venv/bin/gunicorn --bind 0.0.0.0:$PORT app:app".into(),
            port: None
        }
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("5 pinned packages read from uv.lock")),
        "{:?}",
        d.notes
    );
}

#[test]
fn poetry_lock_pins_follow_the_main_dependencies() {
    let f = Fixture::new(&[
        (
            "pyproject.toml",
            "[tool.poetry]\nname = \"web\"\npackage-mode = false\n\n[tool.poetry.dependencies]\npython = \"^3.11\"\nfastapi = \"^0.115\"\nuvicorn = { version = \"^0.32\", extras = [\"standard\"] }\n\n[tool.poetry.group.dev.dependencies]\npytest = \"^8\"\n",
        ),
        (
            "poetry.lock",
            "[[package]]\nname = \"fastapi\"\nversion = \"0.115.6\"\noptional = false\n\n[package.dependencies]\nstarlette = \">=0.40.0,<0.42.0\"\n\n[package.extras]\nall = [\"jinja2 (>=3)\"]\n\n[[package]]\nname = \"jinja2\"\nversion = \"3.1.5\"\n\n[[package]]\nname = \"pytest\"\nversion = \"8.3.4\"\n\n[[package]]\nname = \"starlette\"\nversion = \"0.41.3\"\n\n[[package]]\nname = \"uvicorn\"\nversion = \"0.32.1\"\n\n[package.dependencies]\nuvloop = {version = \">=0.14.0\", optional = true, markers = \"sys_platform != \\\"win32\\\"\"}\nh11 = \">=0.8\"\n\n[package.extras]\nstandard = [\"uvloop (>=0.14.0)\"]\n\n[[package]]\nname = \"uvloop\"\nversion = \"0.21.0\"\n\n[[package]]\nname = \"h11\"\nversion = \"0.14.0\"\n\n[metadata]\nlock-version = \"2.0\"\n",
        ),
        ("main.py", "from fastapi import FastAPI\napp = FastAPI()\n"),
    ]);
    let d = explained(&f);
    assert_eq!(
        d.plan.steps[0].command,
        "python3 -m venv .venv && .venv/bin/pip install fastapi==0.115.6 h11==0.14.0 starlette==0.41.3 uvicorn==0.32.1 'uvloop==0.21.0; sys_platform != \"win32\"'"
    );
    assert_eq!(
        d.plan.serve,
        ServePlan::Process {
            command: ".venv/bin/uvicorn main:app --host 0.0.0.0 --port $PORT".into(),
            port: None
        }
    );
}

#[test]
fn pipfile_lock_default_section_is_installed() {
    let f = Fixture::new(&[
        (
            "Pipfile.lock",
            r#"{"_meta":{},"default":{"flask":{"hashes":["sha256:x"],"version":"==3.1.0"},"gunicorn":{"version":"==23.0.0","markers":"python_version >= '3.7'"},"mylib":{"git":"https://example.com/x.git"}},"develop":{"pytest":{"version":"==8.3.4"}}}"#,
        ),
        ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
    ]);
    let d = explained(&f);
    assert_eq!(d.plan.pack, BuildPack::Python);
    assert_eq!(
        d.plan.steps[0].command,
        "python3 -m venv .venv && .venv/bin/pip install flask==3.1.0 'gunicorn==23.0.0; python_version >= '\\''3.7'\\'''"
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("mylib") && n.contains("not installed")),
        "{:?}",
        d.notes
    );
}

/// A go command as detection writes it.
fn go_cmd(args: &str) -> String {
    format!(
        "export GOTOOLCHAIN=local GOPATH=\"$HOME/.cache/go\" GOMODCACHE=\"$HOME/.cache/go/mod\" GOCACHE=\"$HOME/.cache/go/build\" GOFLAGS=\"${{GOFLAGS:--modcacherw}}\"; go {args}"
    )
}

#[test]
fn go_module_is_built_into_one_binary_that_is_started() {
    let f = Fixture::new(&[
        (
            "go.mod",
            "module example.com/hello\n\ngo 1.22\n\nrequire github.com/google/uuid v1.6.0\n",
        ),
        ("go.sum", ""),
        ("main.go", "// Package main serves.\npackage main\n\nfunc main() {}\n"),
        ("main_test.go", "package main\n"),
    ]);
    let d = explained(&f);
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap(),
        json!({
            "pack": "go",
            "steps": [
                step("install", &go_cmd("mod download")),
                step("build", &go_cmd("build -o .berth/bin/app .")),
            ],
            "serve": process(".berth/bin/app", None),
            "health_check_path": "/",
        })
    );
    assert_eq!(
        d.notes,
        vec!["detected a Go module example.com/hello (go.mod)", "main package: ."]
    );
    assert_eq!(
        d.toolchain,
        vec![toolchain::Request {
            tool: toolchain::Tool::Go,
            wanted: "1.22".into(),
            source: "go.mod go directive",
            strength: toolchain::Strength::Pin,
        }]
    );
    // A pin: another server version builds with a note, never fails.
    assert!(matches!(
        toolchain::check(&d.toolchain[0], "go version go1.19.8 linux/amd64"),
        toolchain::Verdict::Nearest(m) if m.contains("go 1.22 (go.mod go directive)") && m.contains("1.19.8")
    ));
    assert!(matches!(
        toolchain::check(&d.toolchain[0], "go version go1.22.5 linux/amd64"),
        toolchain::Verdict::Fits(_)
    ));
}

#[test]
fn go_main_package_in_cmd_is_found() {
    let f = Fixture::new(&[
        ("go.mod", "module github.com/acme/api\n\ngo 1.19\n"),
        ("lib.go", "package api\n"),
        ("cmd/tool/main.go", "package main\n"),
        ("cmd/api/main.go", "/* the server */\npackage main\n"),
    ]);
    let d = explained(&f);
    assert_eq!(d.plan.steps[1].command, go_cmd("build -o .berth/bin/app ./cmd/api"));
    // No main package at all: the error says what to add or set.
    let f = Fixture::new(&[("go.mod", "module x\n"), ("lib.go", "package x\n")]);
    let e = f.err(&BuildSettings::default()).to_string();
    assert!(e.contains("no main package") && e.contains("start_command"), "{e}");
    // A forced pack without its manifest.
    let f = Fixture::new(&[("index.html", "hi")]);
    let e = f.err(&BuildSettings {
        build_pack: Some("go".into()),
        ..Default::default()
    });
    assert!(matches!(e, DetectError::MissingFile { file: "go.mod", .. }), "{e}");
}

#[test]
fn rust_package_is_built_locked_in_release_mode_and_its_binary_started() {
    let cargo = "export CARGO_HOME=\"$HOME/.cache/cargo\" CARGO_TARGET_DIR=\"$HOME/.cache/cargo/target\";";
    let f = Fixture::new(&[
        (
            "Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\n\n[dependencies]\n",
        ),
        ("Cargo.lock", "version = 3\n"),
        ("src/main.rs", "fn main() {}"),
        (
            "rust-toolchain.toml",
            "[toolchain]\nchannel = \"1.75\"\ncomponents = [\"clippy\"]\n",
        ),
    ]);
    let d = explained(&f);
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap(),
        json!({
            "pack": "rust",
            "steps": [
                step("install", &format!("{cargo} cargo fetch --locked")),
                step("build", &format!("{cargo} cargo build --release --locked")),
            ],
            "serve": process(".cache/cargo/target/release/hello", None),
            "health_check_path": "/",
        })
    );
    assert_eq!(d.toolchain.len(), 1);
    assert_eq!(
        (
            d.toolchain[0].tool,
            d.toolchain[0].wanted.as_str(),
            d.toolchain[0].source
        ),
        (toolchain::Tool::Rust, "1.75", "rust-toolchain.toml")
    );
    assert!(matches!(
        toolchain::check(&d.toolchain[0], "rustc 1.63.0 (4b91a6ea7 2022-08-08)"),
        toolchain::Verdict::Nearest(m) if m.contains("1.63.0") && m.contains("nearest available")
    ));
    // The legacy file holds the bare channel; a name is no version and builds as is.
    f.add("rust-toolchain", "stable\n");
    std::fs::remove_file(f.path().join("rust-toolchain.toml")).unwrap();
    let d = explained(&f);
    assert_eq!(d.toolchain[0].wanted, "stable");
    assert!(matches!(
        toolchain::check(&d.toolchain[0], "rustc 1.63.0"),
        toolchain::Verdict::Fits(_)
    ));
}

#[test]
fn rust_bins_without_a_lockfile_and_a_library_alone() {
    let cargo = "export CARGO_HOME=\"$HOME/.cache/cargo\" CARGO_TARGET_DIR=\"$HOME/.cache/cargo/target\";";
    let f = Fixture::new(&[(
        "Cargo.toml",
        "[package]\nname = \"tools\"\n\n[[bin]]\nname = \"web\"\npath = \"src/web.rs\"\n\n[[bin]]\nname = \"cli\"\n",
    )]);
    let d = explained(&f);
    assert_eq!(
        d.plan.steps[1].command,
        format!("{cargo} cargo build --release --bin web")
    );
    assert_eq!(
        serde_json::to_value(&d.plan.serve).unwrap(),
        process(".cache/cargo/target/release/web", None)
    );
    // A library has nothing to start.
    let f = Fixture::new(&[("Cargo.toml", "[package]\nname = \"lib\"\n"), ("src/lib.rs", "")]);
    let e = f.err(&BuildSettings::default()).to_string();
    assert!(e.contains("no binary") && e.contains("start_command"), "{e}");
    // A workspace root names what to set.
    let f = Fixture::new(&[("Cargo.toml", "[workspace]\nmembers = [\"api\"]\n")]);
    let e = f.err(&BuildSettings::default()).to_string();
    assert!(e.contains("root_dir"), "{e}");
}

#[test]
fn deno_project_gets_deno_its_dependencies_at_build_time_and_server_permissions() {
    let env = "export DENO_DIR=\"$HOME/.cache/deno\" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1; [ -n \"$DENO_CERT\" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ] || export DENO_CERT=/etc/ssl/certs/ca-certificates.crt;";
    let f = Fixture::new(&[
        ("deno.json", r#"{"imports": {"ms": "npm:ms@2.1.3"}}"#),
        ("main.ts", "Deno.serve(() => new Response('hi'))"),
    ]);
    let d = explained(&f);
    let label = format!("deno@{}", tools::DENO_VERSION);
    assert_eq!(d.package_manager.as_deref(), Some(label.as_str()));
    assert_eq!(
        serde_json::to_value(&d.plan).unwrap(),
        json!({
            "pack": "deno",
            "steps": [
                step(SETUP_STEP, &tools::setup_command(tools::Runtime::Deno, tools::DENO_VERSION)),
                step("install", &format!("{env} deno install && deno cache main.ts")),
            ],
            "serve": process(&format!("{env} exec deno run --cached-only --allow-net --allow-env --allow-read=. main.ts"), None),
            "health_check_path": "/",
        })
    );

    // A start task (in a deno.jsonc with comments and trailing commas) is the start command.
    let f = Fixture::new(&[
        (
            "deno.jsonc",
            "{\n  // the server\n  \"tasks\": { \"start\": \"deno run -A server.ts\", },\n  /* done */\n}\n",
        ),
        ("server.ts", ""),
    ]);
    let d = explained(&f);
    assert_eq!(d.plan.pack, BuildPack::Deno);
    assert_eq!(
        serde_json::to_value(&d.plan.serve).unwrap(),
        process(&format!("{env} exec deno task start"), None)
    );

    // A lone main.ts is a Deno app; next to a package.json it is a Node project's file.
    let f = Fixture::new(&[("main.ts", "")]);
    assert_eq!(explained(&f).plan.pack, BuildPack::Deno);
    let f = Fixture::new(&[
        ("main.ts", ""),
        ("package.json", r#"{"scripts":{"start":"node x.js"}}"#),
    ]);
    assert_eq!(explained(&f).plan.pack, BuildPack::Node);
    // Nothing to run: the error names the task to add.
    let f = Fixture::new(&[("deno.json", "{}")]);
    let e = f.err(&BuildSettings::default()).to_string();
    assert!(e.contains("start task") && e.contains("start_command"), "{e}");
}

#[test]
fn new_packs_can_be_forced_and_are_named_in_errors() {
    for pack in ["go", "rust", "deno"] {
        assert_eq!(pack.parse::<BuildPack>().unwrap().as_str(), pack);
    }
    let e = "cobol".parse::<BuildPack>().unwrap_err().to_string();
    assert!(e.contains("go, rust and deno"), "{e}");
    let f = Fixture::new(&[("README.md", "")]);
    let e = f.err(&BuildSettings::default()).to_string();
    assert!(e.contains("go.mod, Cargo.toml or deno.json"), "{e}");
}

#[test]
fn go_package_folder_names_are_quoted_for_the_shell() {
    let f = Fixture::new(&[
        ("go.mod", "module example.com/x\n"),
        ("cmd/a;touch pwned/main.go", "package main\n"),
    ]);
    let d = explained(&f);
    assert_eq!(
        d.plan.steps[1].command,
        go_cmd("build -o .berth/bin/app './cmd/a;touch pwned'")
    );
}

#[test]
fn a_missing_go_or_cargo_is_named_with_the_package_that_provides_it() {
    use toolchain::Tool;
    assert_eq!(Tool::required_by(BuildPack::Go), Some(Tool::Go));
    assert_eq!(Tool::required_by(BuildPack::Rust), Some(Tool::Rust));
    // bun and deno are provisioned, node and python checked by their own requests.
    assert_eq!(Tool::required_by(BuildPack::Deno), None);
    assert_eq!(Tool::required_by(BuildPack::Node), None);
    let go = Tool::Go.missing_hint();
    assert!(
        go.contains("apt-get install golang-go") && go.contains("/usr/local/bin"),
        "{go}"
    );
    assert!(Tool::Rust.missing_hint().contains("apt-get install cargo"));
    assert_eq!(
        toolchain::version_in("go version go1.19.8 linux/amd64").as_deref(),
        Some("1.19.8")
    );
    assert_eq!(
        toolchain::version_in("rustc 1.63.0 (4b91a6ea7 2022-08-08)").as_deref(),
        Some("1.63.0")
    );
    assert_eq!(toolchain::version_in("Python 3.11.2").as_deref(), Some("3.11.2"));
    assert_eq!(toolchain::version_in("v20.19.2").as_deref(), Some("20.19.2"));
}

#[test]
fn node_releases_are_downloaded_only_when_the_servers_does_not_do() {
    use super::toolchain::{Request, Strength, Tool, node_to_provision};
    let req = |wanted: &str, strength| Request {
        tool: Tool::Node,
        wanted: wanted.into(),
        source: "package.json engines.node",
        strength,
    };
    let server = "v20.19.2";
    // The app's constraint excludes the server's node: download.
    assert_eq!(
        node_to_provision(&req("18.x", Strength::Constraint), server),
        Some("18.x")
    );
    assert_eq!(
        node_to_provision(&req(">=16 <19", Strength::Constraint), server),
        Some(">=16 <19")
    );
    // A pin of another major: download; of the same major: the server's, with a note.
    assert_eq!(node_to_provision(&req("v18", Strength::Pin), server), Some("v18"));
    assert_eq!(node_to_provision(&req("20.0.0", Strength::Pin), server), None);
    // Fits, or cannot be read: the server's.
    assert_eq!(node_to_provision(&req(">=18", Strength::Constraint), server), None);
    assert_eq!(node_to_provision(&req("lts/*", Strength::Pin), server), None);
    // Nothing that could break out of the command's quotes is ever downloaded.
    for hostile in ["18\"; touch /x; \"", "18 $(id)", "18`id`", "18\\n", "1'8"] {
        assert_eq!(
            node_to_provision(&req(hostile, Strength::Constraint), server),
            None,
            "{hostile}"
        );
        assert!(super::tools::node_setup_command(hostile).is_none(), "{hostile}");
    }
    let cmd = super::tools::node_setup_command(">=16 <19").unwrap();
    assert!(cmd.contains("\"$p@>=16 <19\""), "{cmd}");
}
