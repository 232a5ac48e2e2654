//! Python specifics of detection: where the dependencies come from (a
//! requirements file, a lockfile read into pinned `pip install` arguments,
//! or pyproject.toml), which WSGI/ASGI app object the project defines, and
//! which server from its dependencies runs it on `$PORT`.
//!
//! Lockfiles are read, not run: `uv`, `poetry` and `pipenv` are not on the
//! server, but their lockfiles pin every package, so the pins reachable from
//! the project's main dependencies are passed to pip (markers kept, hashes
//! and dev-only groups left out).

use std::collections::{BTreeMap, BTreeSet};

use super::toml_lite::{self, Table};
use super::{DetectError, SourceFiles, shell_quote};

/// A Python project's dependencies as berth installs them.
pub(super) struct PythonDeps {
    /// What follows `pip install` (already shell-quoted), or `None` when
    /// there is nothing to install.
    pub pip_args: Option<String>,
    /// Normalised names of the dependencies (to find the server).
    pub names: BTreeSet<String>,
}

/// Normalises a distribution name the way pip compares them.
fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// The name at the start of a requirement ("uvicorn[standard]>=0.30; ..." →
/// "uvicorn").
fn requirement_name(req: &str) -> Option<String> {
    let name: String = req
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    (!name.is_empty()).then(|| normalize(&name))
}

/// Reads the dependencies, first source that has any: requirements.txt,
/// uv.lock, poetry.lock, Pipfile.lock, pyproject.toml's `[project]
/// dependencies`, then an installable pyproject.toml (`pip install .`).
pub(super) fn dependencies(files: &SourceFiles<'_>, notes: &mut Vec<String>) -> Result<PythonDeps, DetectError> {
    let pyproject = files.read_opt("pyproject.toml")?.map(|t| toml_lite::tables(&t));
    if let Some(text) = files.read_opt("requirements.txt")?
        && super::requirements_have_entries(&text)
    {
        let mut names = BTreeSet::new();
        requirement_names(files, &text, &mut names, 0)?;
        notes.push("python dependencies: requirements.txt".into());
        return Ok(PythonDeps {
            pip_args: Some("-r requirements.txt".into()),
            names,
        });
    }
    for (lock, read) in [
        ("uv.lock", uv_lock_pins as LockReader),
        ("poetry.lock", poetry_lock_pins as LockReader),
    ] {
        if let Some(text) = files.read_opt(lock)? {
            let pins = read(&text, pyproject.as_deref().unwrap_or(&[]), notes);
            if !pins.is_empty() {
                notes.push(format!(
                    "python dependencies: {} pinned packages read from {lock} (installed with pip)",
                    pins.len()
                ));
                return Ok(pinned(pins));
            }
        }
    }
    if let Some(text) = files.read_opt("Pipfile.lock")? {
        let pins = pipfile_lock_pins(&text, notes)?;
        if !pins.is_empty() {
            notes.push(format!(
                "python dependencies: {} pinned packages read from Pipfile.lock (installed with pip)",
                pins.len()
            ));
            return Ok(pinned(pins));
        }
    }
    if let Some(tables) = &pyproject {
        let project = tables.iter().find(|t| t.name == "project");
        let has_build_system = tables.iter().any(|t| t.name == "build-system");
        let deps: Vec<String> = project
            .and_then(|t| t.get("dependencies"))
            .map(toml_lite::string_array)
            .unwrap_or_default();
        let names: BTreeSet<String> = deps.iter().filter_map(|d| requirement_name(d)).collect();
        if has_build_system {
            // A package with a build backend: install it, which also
            // installs its dependencies and makes src/ layouts importable.
            notes.push("python dependencies: pyproject.toml (the project is installed with pip install .)".into());
            return Ok(PythonDeps {
                pip_args: Some(".".into()),
                names,
            });
        }
        if !deps.is_empty() {
            notes.push("python dependencies: pyproject.toml [project] dependencies".into());
            let args: Vec<String> = deps.iter().map(|d| shell_quote(d)).collect();
            return Ok(PythonDeps {
                pip_args: Some(args.join(" ")),
                names,
            });
        }
        if tables.iter().any(|t| t.name == "project" || t.name == "tool.poetry") {
            notes.push("python dependencies: pyproject.toml (the project is installed with pip install .)".into());
            return Ok(PythonDeps {
                pip_args: Some(".".into()),
                names,
            });
        }
    }
    Ok(PythonDeps {
        pip_args: None,
        names: BTreeSet::new(),
    })
}

type LockReader = fn(&str, &[Table], &mut Vec<String>) -> BTreeMap<String, Pin>;

/// One pinned package: its version and the markers of the edges to it
/// (`None`: needed everywhere).
pub(super) struct Pin {
    version: String,
    marker: Option<String>,
}

impl Pin {
    fn add_edge(&mut self, marker: Option<&str>) {
        self.marker = match (self.marker.take(), marker) {
            (Some(a), Some(b)) if a != b => Some(format!("({a}) or ({b})")),
            (Some(a), Some(_)) => Some(a),
            _ => None,
        };
    }
}

fn pinned(pins: BTreeMap<String, Pin>) -> PythonDeps {
    let args: Vec<String> = pins
        .iter()
        .map(|(name, pin)| match &pin.marker {
            Some(m) => shell_quote(&format!("{name}=={}; {m}", pin.version)),
            None => shell_quote(&format!("{name}=={}", pin.version)),
        })
        .collect();
    PythonDeps {
        pip_args: Some(args.join(" ")),
        names: pins.into_keys().collect(),
    }
}

/// Names in a requirements file, following `-r other.txt` a few levels deep.
fn requirement_names(
    files: &SourceFiles<'_>,
    text: &str,
    names: &mut BTreeSet<String>,
    depth: u32,
) -> Result<(), DetectError> {
    for line in text.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let included = line
            .strip_prefix("-r ")
            .or_else(|| line.strip_prefix("--requirement "))
            .or_else(|| line.strip_prefix("--requirement="))
            .map(str::trim);
        if let Some(file) = included {
            if depth < 3
                && !file.contains("..")
                && !file.starts_with('/')
                && let Some(inner) = files.read_opt(file)?
            {
                requirement_names(files, &inner, names, depth + 1)?;
            }
            continue;
        }
        if line.starts_with('-') {
            continue;
        }
        if let Some(name) = requirement_name(line) {
            names.insert(name);
        }
    }
    Ok(())
}

/// The `[[package]]` records of a lockfile with their sub-tables.
struct LockPackage<'a> {
    main: &'a Table,
    subtables: Vec<&'a Table>,
}

impl LockPackage<'_> {
    fn name(&self) -> String {
        normalize(&self.main.string("name").unwrap_or_default())
    }

    fn subtable(&self, suffix: &str) -> Option<&Table> {
        self.subtables
            .iter()
            .copied()
            .find(|t| t.name == format!("package.{suffix}"))
    }
}

fn lock_packages(tables: &[Table]) -> Vec<LockPackage<'_>> {
    let mut out: Vec<LockPackage<'_>> = Vec::new();
    for t in tables {
        if t.name == "package" {
            out.push(LockPackage {
                main: t,
                subtables: Vec::new(),
            });
        } else if t.name.starts_with("package.")
            && let Some(last) = out.last_mut()
        {
            last.subtables.push(t);
        }
    }
    out
}

/// An edge of the dependency graph: target name, extras, marker.
struct Edge {
    name: String,
    extras: Vec<String>,
    marker: Option<String>,
}

/// Walks the graph from `roots`, pinning every package reached.
fn walk(
    roots: Vec<Edge>,
    packages: &[LockPackage<'_>],
    edges_of: &dyn Fn(&LockPackage<'_>, &[String]) -> Vec<Edge>,
    notes: &mut Vec<String>,
    lock: &str,
) -> BTreeMap<String, Pin> {
    let mut pins: BTreeMap<String, Pin> = BTreeMap::new();
    let mut queue = roots;
    let mut visited: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
    // Bounded by the lockfile's size: each (package, extras) is expanded once.
    while let Some(edge) = queue.pop() {
        let Some(pkg) = packages.iter().find(|p| p.name() == edge.name) else {
            continue;
        };
        if let Some(source) = pkg.main.get("source")
            && !source.contains("registry")
        {
            if !visited.contains(&(edge.name.clone(), Vec::new())) {
                notes.push(format!(
                    "{lock}: {} comes from {source}, not a package index; it is not installed (use a requirements.txt for it)",
                    edge.name
                ));
                visited.insert((edge.name.clone(), Vec::new()));
            }
            continue;
        }
        let version = pkg.main.string("version").unwrap_or_default();
        match pins.get_mut(&edge.name) {
            Some(pin) => pin.add_edge(edge.marker.as_deref()),
            None => {
                pins.insert(
                    edge.name.clone(),
                    Pin {
                        version,
                        marker: edge.marker.clone(),
                    },
                );
            }
        }
        if visited.insert((edge.name.clone(), edge.extras.clone())) {
            queue.extend(edges_of(pkg, &edge.extras));
        }
    }
    pins
}

/// Pins from a uv.lock, walked from the project's own `dependencies` (dev
/// groups are separate tables and are left out).
fn uv_lock_pins(text: &str, _pyproject: &[Table], notes: &mut Vec<String>) -> BTreeMap<String, Pin> {
    let tables = toml_lite::tables(text);
    let packages = lock_packages(&tables);
    let parse_edges = |raw: &str| -> Vec<Edge> {
        toml_lite::array(raw)
            .iter()
            .map(|item| toml_lite::inline_table(item))
            .filter_map(|kv| {
                let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
                Some(Edge {
                    name: normalize(&toml_lite::string(get("name")?)?),
                    extras: get("extra").map(toml_lite::string_array).unwrap_or_default(),
                    marker: get("marker").and_then(toml_lite::string),
                })
            })
            .collect()
    };
    let edges_of = |pkg: &LockPackage<'_>, extras: &[String]| -> Vec<Edge> {
        let mut edges = pkg.main.get("dependencies").map(parse_edges).unwrap_or_default();
        if let Some(optional) = pkg.subtable("optional-dependencies") {
            for extra in extras {
                if let Some(raw) = optional.get(extra) {
                    edges.extend(parse_edges(raw));
                }
            }
        }
        edges
    };
    let mut roots = Vec::new();
    for pkg in &packages {
        let source = pkg.main.get("source").unwrap_or("");
        if source.contains("editable = \".\"") || source.contains("virtual = \".\"") {
            roots.extend(edges_of(pkg, &[]));
        }
    }
    walk(roots, &packages, &edges_of, notes, "uv.lock")
}

/// Pins from a poetry.lock, walked from pyproject.toml's main dependencies
/// (`[tool.poetry.dependencies]` or `[project] dependencies`).
fn poetry_lock_pins(text: &str, pyproject: &[Table], notes: &mut Vec<String>) -> BTreeMap<String, Pin> {
    let tables = toml_lite::tables(text);
    let packages = lock_packages(&tables);
    let mut roots = Vec::new();
    if let Some(deps) = pyproject.iter().find(|t| t.name == "tool.poetry.dependencies") {
        for (name, raw) in &deps.entries {
            if name == "python" {
                continue;
            }
            let table = toml_lite::inline_table(raw);
            let get = |k: &str| table.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            if get("optional") == Some("true") {
                continue;
            }
            roots.push(Edge {
                name: normalize(name),
                extras: get("extras").map(toml_lite::string_array).unwrap_or_default(),
                marker: get("markers").and_then(toml_lite::string),
            });
        }
    }
    if let Some(project) = pyproject.iter().find(|t| t.name == "project") {
        for req in project
            .get("dependencies")
            .map(toml_lite::string_array)
            .unwrap_or_default()
        {
            if let Some(name) = requirement_name(&req) {
                let extras = req
                    .split_once('[')
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .map(|(e, _)| e.split(',').map(|x| x.trim().to_string()).collect())
                    .unwrap_or_default();
                let marker = req.split_once(';').map(|(_, m)| m.trim().to_string());
                roots.push(Edge { name, extras, marker });
            }
        }
    }
    let edges_of = |pkg: &LockPackage<'_>, extras: &[String]| -> Vec<Edge> {
        let mut edges = Vec::new();
        let mut enabled: BTreeSet<String> = BTreeSet::new();
        if let Some(table) = pkg.subtable("extras") {
            for extra in extras {
                for req in table.get(extra).map(toml_lite::string_array).unwrap_or_default() {
                    if let Some(name) = requirement_name(&req) {
                        enabled.insert(name);
                    }
                }
            }
        }
        if let Some(table) = pkg.subtable("dependencies") {
            for (name, raw) in &table.entries {
                let inline = toml_lite::inline_table(raw);
                // A dependency may be listed twice (per Python version) as
                // an array of tables; the first entry's fields are used.
                let inline = if inline.is_empty() {
                    toml_lite::array(raw)
                        .first()
                        .map(|i| toml_lite::inline_table(i))
                        .unwrap_or_default()
                } else {
                    inline
                };
                let get = |k: &str| inline.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
                if get("optional") == Some("true") && !enabled.contains(&normalize(name)) {
                    continue;
                }
                edges.push(Edge {
                    name: normalize(name),
                    extras: get("extras").map(toml_lite::string_array).unwrap_or_default(),
                    marker: get("markers").and_then(toml_lite::string),
                });
            }
        }
        edges
    };
    walk(roots, &packages, &edges_of, notes, "poetry.lock")
}

/// Pins from a Pipfile.lock's `default` section (its `develop` section is
/// for development only).
fn pipfile_lock_pins(text: &str, notes: &mut Vec<String>) -> Result<BTreeMap<String, Pin>, DetectError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DetectError::InvalidManifest {
        file: "Pipfile.lock",
        reason: e.to_string(),
    })?;
    let mut pins = BTreeMap::new();
    for (name, entry) in value.get("default").and_then(|d| d.as_object()).into_iter().flatten() {
        let Some(version) = entry
            .get("version")
            .and_then(|v| v.as_str())
            .and_then(|v| v.strip_prefix("=="))
        else {
            notes.push(format!(
                "Pipfile.lock: {name} has no pinned version (a git or path dependency); it is not installed"
            ));
            continue;
        };
        pins.insert(
            normalize(name),
            Pin {
                version: version.to_string(),
                marker: entry.get("markers").and_then(|m| m.as_str()).map(str::to_string),
            },
        );
    }
    Ok(pins)
}

/// The kind of app object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interface {
    Wsgi,
    Asgi,
}

/// A web app object found in the source: `module:attribute` and its kind.
struct Entry {
    /// The import target, e.g. "app:app", "mysite.wsgi:application",
    /// "app:create_app()".
    target: String,
    interface: Interface,
    /// The framework, for the log ("Flask", "Django", ...).
    framework: &'static str,
    /// Where it was found, for the log.
    file: String,
    /// The target is a factory function, not the app itself.
    factory: bool,
}

/// Files searched, in order, for a Flask/FastAPI/Starlette app object.
const APP_FILES: [&str; 10] = [
    "app.py",
    "main.py",
    "wsgi.py",
    "asgi.py",
    "server.py",
    "application.py",
    "api.py",
    "app/main.py",
    "app/app.py",
    "app/__init__.py",
];

/// Constructors of app objects and their interface.
const APP_CLASSES: [(&str, &str, Interface); 7] = [
    ("Flask", "Flask", Interface::Wsgi),
    ("FastAPI", "FastAPI", Interface::Asgi),
    ("Starlette", "Starlette", Interface::Asgi),
    ("Quart", "Quart", Interface::Asgi),
    ("Litestar", "Litestar", Interface::Asgi),
    ("Bottle", "Bottle", Interface::Wsgi),
    ("Falcon", "falcon.App", Interface::Wsgi),
];

/// The start command of a Python web app without a Procfile, and the build
/// step it needs (Django's collectstatic), or `None` when no app object was
/// found.
pub(super) struct WebApp {
    /// The start command.
    pub start: String,
    /// A build step, if any.
    pub build: Option<String>,
}

/// Finds the web app and the server to run it with.
pub(super) fn web_app(
    files: &SourceFiles<'_>,
    deps: &PythonDeps,
    notes: &mut Vec<String>,
) -> Result<Option<WebApp>, DetectError> {
    let mut build = None;
    let entry = match django_entry(files, deps, notes)? {
        Some((entry, collectstatic)) => {
            build = collectstatic;
            Some(entry)
        }
        None => app_object(files)?,
    };
    let Some(entry) = entry else {
        return Ok(None);
    };
    notes.push(format!(
        "detected {} app {} in {}",
        entry.framework, entry.target, entry.file
    ));
    let has = |n: &str| deps.names.contains(n);
    let target = shell_quote(&entry.target);
    let (server, start) = match entry.interface {
        Interface::Asgi if has("uvicorn") => (
            "uvicorn",
            format!(".venv/bin/uvicorn {target} --host 0.0.0.0 --port $PORT"),
        ),
        Interface::Asgi if has("hypercorn") => (
            "hypercorn",
            format!(".venv/bin/hypercorn --bind 0.0.0.0:$PORT {target}"),
        ),
        Interface::Wsgi if has("gunicorn") => ("gunicorn", format!(".venv/bin/gunicorn --bind 0.0.0.0:$PORT {target}")),
        Interface::Wsgi if has("waitress") && !entry.factory => (
            "waitress",
            format!(".venv/bin/waitress-serve --listen=0.0.0.0:$PORT {target}"),
        ),
        Interface::Wsgi if has("hypercorn") => (
            "hypercorn",
            format!(".venv/bin/hypercorn --bind 0.0.0.0:$PORT {target}"),
        ),
        _ => {
            let wanted = match entry.interface {
                Interface::Wsgi => "gunicorn or waitress",
                Interface::Asgi => "uvicorn or hypercorn",
            };
            let fallback = match entry.framework {
                "Django" => Some(".venv/bin/python manage.py runserver 0.0.0.0:$PORT --noreload".to_string()),
                "Flask" if !entry.factory => Some(format!(
                    ".venv/bin/flask --app {target} run --host 0.0.0.0 --port $PORT"
                )),
                _ => None,
            };
            match fallback {
                Some(cmd) => {
                    notes.push(format!(
                        "no {wanted} in the dependencies: running {}'s development server; add {wanted} to the dependencies for production",
                        entry.framework
                    ));
                    return Ok(Some(WebApp { start: cmd, build }));
                }
                None => {
                    notes.push(format!(
                        "no {wanted} in the dependencies to serve {}; add one, or set start_command",
                        entry.target
                    ));
                    return Ok(None);
                }
            }
        }
    };
    notes.push(format!("server: {server} (in the dependencies), on $PORT"));
    Ok(Some(WebApp { start, build }))
}

/// Django: the settings module named in manage.py, its wsgi.py/asgi.py,
/// and collectstatic when the settings define STATIC_ROOT.
fn django_entry(
    files: &SourceFiles<'_>,
    deps: &PythonDeps,
    notes: &mut Vec<String>,
) -> Result<Option<(Entry, Option<String>)>, DetectError> {
    let Some(manage) = files.read_opt("manage.py")? else {
        return Ok(None);
    };
    let Some(settings) = django_settings_module(&manage) else {
        return Ok(None);
    };
    let package = settings.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    if package.is_empty() {
        return Ok(None);
    }
    let dir = package.replace('.', "/");
    let asgi_server = deps.names.contains("uvicorn") || deps.names.contains("hypercorn");
    let wsgi_server = ["gunicorn", "waitress"].iter().any(|s| deps.names.contains(*s));
    let asgi = files.is_file(&format!("{dir}/asgi.py")) && asgi_server && !wsgi_server;
    let (module, interface) = if asgi {
        ("asgi", Interface::Asgi)
    } else if files.is_file(&format!("{dir}/wsgi.py")) {
        ("wsgi", Interface::Wsgi)
    } else {
        return Ok(None);
    };
    let settings_file = [
        format!("{}.py", settings.replace('.', "/")),
        format!("{}/__init__.py", settings.replace('.', "/")),
    ];
    let mut static_root = false;
    for f in &settings_file {
        if let Some(text) = files.read_opt(f)? {
            static_root = text.lines().any(|l| l.trim_start().starts_with("STATIC_ROOT"));
            break;
        }
    }
    let collectstatic = if static_root {
        notes.push(format!(
            "Django settings {settings} define STATIC_ROOT: the build runs collectstatic"
        ));
        Some(".venv/bin/python manage.py collectstatic --noinput".to_string())
    } else {
        None
    };
    Ok(Some((
        Entry {
            target: format!("{package}.{module}:application"),
            interface,
            framework: "Django",
            file: format!("{dir}/{module}.py (settings {settings} from manage.py)"),
            factory: false,
        },
        collectstatic,
    )))
}

/// The `DJANGO_SETTINGS_MODULE` default manage.py sets, if it is a plain
/// dotted module name.
fn django_settings_module(manage: &str) -> Option<String> {
    let line = manage.lines().find(|l| l.contains("DJANGO_SETTINGS_MODULE"))?;
    let after = line.split("DJANGO_SETTINGS_MODULE").nth(1)?;
    let value = after.split(['"', '\'']).map(str::trim).find(|s| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') && s.contains('.')
    })?;
    Some(value.to_string())
}

/// The first Flask/FastAPI/Starlette/... app object (or Flask factory) in
/// the usual files.
fn app_object(files: &SourceFiles<'_>) -> Result<Option<Entry>, DetectError> {
    for file in APP_FILES {
        let Some(text) = files.read_opt(file)? else {
            continue;
        };
        let module = file
            .trim_end_matches(".py")
            .trim_end_matches("/__init__")
            .replace('/', ".");
        for line in text.lines() {
            // `name = Flask(__name__)` / `app = fastapi.FastAPI()` at the top level.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            let name = name.trim().split(':').next().unwrap_or("").trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let value = value.trim();
            for (framework, class, interface) in APP_CLASSES {
                let called = value.starts_with(&format!("{class}("))
                    || value.contains(&format!(".{class}("))
                        && value.split('(').next().is_some_and(|f| !f.contains(' '));
                if called {
                    return Ok(Some(Entry {
                        target: format!("{module}:{name}"),
                        interface,
                        framework,
                        file: file.to_string(),
                        factory: false,
                    }));
                }
            }
        }
        // A Flask application factory.
        if text.contains("Flask(") && text.lines().any(|l| l.starts_with("def create_app(")) {
            return Ok(Some(Entry {
                target: format!("{module}:create_app()"),
                interface: Interface::Wsgi,
                framework: "Flask",
                file: file.to_string(),
                factory: true,
            }));
        }
    }
    Ok(None)
}
