//! The language version an app asks for, and what to do when the server has another.
//!
//! berth builds with the Node, Python, Go and Rust the server has; it does not download
//! toolchains. What an app asks for is read from the usual places: `engines.node` in
//! package.json (an npm semver range), `.nvmrc` / `.node-version` (a pin),
//! `requires-python` in pyproject.toml (PEP 440 specifiers), `.python-version` and
//! `runtime.txt` (pins), the `go` directive of go.mod (a pin: go builds older and newer
//! modules alike) and the channel of `rust-toolchain.toml` / `rust-toolchain` (a pin;
//! "stable" and other names are not versions and are built with what is there). A pin
//! the server cannot match is a note in the build log (the build goes on with the version
//! it has); a range that excludes the server's version fails the build at once, naming
//! what was asked and what is here, because the app says it cannot run there.

use std::cmp::Ordering;

use super::{BuildPack, SourceFiles};

/// A language the server provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `node`.
    Node,
    /// `python3`.
    Python,
    /// `go` (Debian's `golang-go`).
    Go,
    /// `rustc` and `cargo` (Debian's `cargo`).
    Rust,
}

impl Tool {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Node => "node",
            Tool::Python => "python",
            Tool::Go => "go",
            Tool::Rust => "rust",
        }
    }

    /// The tool a pack builds with that berth does not provision itself, if any: its
    /// absence fails the build at once with [`Tool::missing_hint`].
    pub fn required_by(pack: BuildPack) -> Option<Tool> {
        match pack {
            BuildPack::Go => Some(Tool::Go),
            BuildPack::Rust => Some(Tool::Rust),
            _ => None,
        }
    }

    /// The program asked for the server's version (`<program> --version`, or `go version`).
    pub fn program(self) -> &'static str {
        match self {
            Tool::Node => "node",
            Tool::Python => "python3",
            Tool::Go => "go",
            Tool::Rust => "rustc",
        }
    }

    /// The error when the server lacks the tool, naming the fix.
    pub fn missing_hint(self) -> String {
        let install = match self {
            Tool::Node => "apt-get install nodejs npm",
            Tool::Python => "apt-get install python3 python3-venv",
            Tool::Go => "apt-get install golang-go",
            Tool::Rust => "apt-get install cargo",
        };
        let program = match self {
            Tool::Rust => "cargo and rustc",
            other => other.program(),
        };
        format!(
            "this app is built with {name}, and builds find no {program} on the server (they see /usr/local/bin, /usr/bin and /bin only, not a toolchain in a home folder); install it on the server ({install}), or set build_pack and the commands to build it another way",
            name = self.name(),
        )
    }
}

/// The folders builds find programs in (the sandbox's `PATH` without the app's own).
pub const SYSTEM_BIN_DIRS: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// The version number in a tool's `--version` output ("go version go1.19.8 linux/amd64"
/// → "1.19.8", "rustc 1.63.0 (4b91a6ea7 2022-08-08)" → "1.63.0", "v20.19.2" → "20.19.2").
pub fn version_in(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .map(|w| w.trim_start_matches("go").trim_start_matches('v'))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

/// How binding a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strength {
    /// A version manager's pin (`.nvmrc`): a wish; another version is used with a note.
    Pin,
    /// The app's own constraint (`engines`, `requires-python`): a version outside it fails.
    Constraint,
}

/// What an app asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Which language.
    pub tool: Tool,
    /// The text as written ("^18.17", ">=3.10").
    pub wanted: String,
    /// Where it was read ("package.json engines.node").
    pub source: &'static str,
    /// Pin or constraint.
    pub strength: Strength,
}

/// A request checked against the server's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The server's version fits.
    Fits(String),
    /// It does not fit a pin: building with it anyway.
    Nearest(String),
    /// It is outside the app's own constraint: the build cannot go on.
    Excluded(String),
}

/// The requests of the project at `files` for the tool of its `pack` (node's for a Node
/// project, python's for a Python one, ...). A value berth cannot read is ignored (it is
/// the other tool's business).
pub(super) fn requests(files: &SourceFiles<'_>, pack: BuildPack) -> Vec<Request> {
    let (node, python) = (pack == BuildPack::Node, pack == BuildPack::Python);
    let mut out = Vec::new();
    let mut push = |tool, wanted: Option<String>, source, strength| {
        if let Some(w) = wanted
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty() && w.len() <= 200)
        {
            out.push(Request {
                tool,
                wanted: w,
                source,
                strength,
            });
        }
    };
    if node {
        let engines = files
            .read_opt("package.json")
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.pointer("/engines/node").and_then(|n| n.as_str()).map(str::to_string));
        push(Tool::Node, engines, "package.json engines.node", Strength::Constraint);
        for file in [".nvmrc", ".node-version"] {
            let pin = first_line(files, file).map(|l| l.trim_start_matches('v').to_string());
            push(Tool::Node, pin, file, Strength::Pin);
        }
    }
    if python {
        let requires = files.read_opt("pyproject.toml").ok().flatten().and_then(|t| {
            super::toml_lite::tables(&t)
                .into_iter()
                .find(|t| t.name == "project")
                .and_then(|t| t.string("requires-python"))
        });
        push(
            Tool::Python,
            requires,
            "pyproject.toml requires-python",
            Strength::Constraint,
        );
        push(
            Tool::Python,
            first_line(files, ".python-version"),
            ".python-version",
            Strength::Pin,
        );
        let runtime = first_line(files, "runtime.txt").map(|l| l.trim_start_matches("python-").to_string());
        push(Tool::Python, runtime, "runtime.txt", Strength::Pin);
    }
    if pack == BuildPack::Go {
        let directive = files.read_opt("go.mod").ok().flatten().and_then(|t| {
            t.lines()
                .find_map(|l| l.trim().strip_prefix("go ").map(|v| v.trim().to_string()))
        });
        push(Tool::Go, directive, "go.mod go directive", Strength::Pin);
    }
    if pack == BuildPack::Rust {
        let toml = files.read_opt("rust-toolchain.toml").ok().flatten().and_then(|t| {
            super::toml_lite::tables(&t)
                .into_iter()
                .find(|t| t.name == "toolchain")
                .and_then(|t| t.string("channel"))
        });
        if toml.is_some() {
            push(Tool::Rust, toml, "rust-toolchain.toml", Strength::Pin);
        } else {
            // The older file is the bare channel, or TOML itself.
            let legacy =
                files.read_opt("rust-toolchain").ok().flatten().and_then(|t| {
                    match super::toml_lite::tables(&t).into_iter().find(|t| t.name == "toolchain") {
                        Some(table) => table.string("channel"),
                        None => t.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string),
                    }
                });
            push(Tool::Rust, legacy, "rust-toolchain", Strength::Pin);
        }
    }
    out
}

fn first_line(files: &SourceFiles<'_>, name: &str) -> Option<String> {
    let text = files.read_opt(name).ok().flatten()?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

/// Checks `request` against the server's `available` version ("v20.19.2", "Python 3.11.2").
pub fn check(request: &Request, available: &str) -> Verdict {
    let normalized = version_in(available);
    let have_text = normalized
        .as_deref()
        .unwrap_or_else(|| available.trim().trim_start_matches("Python ").trim_start_matches('v'));
    let Some(have) = Version::parse(have_text) else {
        return Verdict::Fits(format!(
            "{}: could not read the server's version '{available}'",
            request.tool.name()
        ));
    };
    let what = format!("{} {} ({})", request.tool.name(), request.wanted, request.source);
    let fits = match (request.tool, request.strength) {
        (Tool::Node, Strength::Constraint) => npm_range_matches(&request.wanted, &have),
        (Tool::Python, Strength::Constraint) => pep440_matches(&request.wanted, &have),
        (_, Strength::Pin) | (Tool::Go | Tool::Rust, Strength::Constraint) => pin_matches(&request.wanted, &have),
    };
    match (fits, request.strength) {
        (Some(true), _) => Verdict::Fits(format!("{what}: using {have_text}")),
        (None, _) => Verdict::Fits(format!(
            "{what}: not a version berth can read; building with {have_text}"
        )),
        (Some(false), Strength::Pin) => Verdict::Nearest(format!(
            "{what} asked for; this server has {have_text}, the nearest available: building with it"
        )),
        (Some(false), Strength::Constraint) => Verdict::Excluded(format!(
            "the app asks for {what}, which excludes {have_text}, the only {} on this server; relax the constraint or install a matching {} on the server",
            request.tool.name(),
            request.tool.name()
        )),
    }
}

/// A dotted version; missing parts are `None` (a partial "18" or "3.11").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    parts: [Option<u64>; 3],
}

impl Version {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches(['v', '=']);
        // Pre-release and build tags are not compared.
        let core = text.split(['-', '+']).next()?;
        let mut parts = [None; 3];
        for (i, p) in core.split('.').enumerate() {
            if i >= 3 {
                break;
            }
            match p {
                "x" | "X" | "*" => break,
                _ => parts[i] = Some(p.parse().ok()?),
            }
        }
        parts[0]?;
        Some(Self { parts })
    }

    /// The full version, missing parts as 0.
    fn floor(self) -> [u64; 3] {
        self.parts.map(|p| p.unwrap_or(0))
    }

    /// How many parts were given.
    fn given(self) -> usize {
        self.parts.iter().take_while(|p| p.is_some()).count()
    }

    /// The smallest version above every version this partial one stands for ("18" → 19.0.0).
    fn ceiling(self) -> [u64; 3] {
        let mut c = self.floor();
        match self.given() {
            1 => c = [c[0] + 1, 0, 0],
            2 => c = [c[0], c[1] + 1, 0],
            _ => c[2] += 1,
        }
        c
    }
}

fn cmp(a: [u64; 3], b: [u64; 3]) -> Ordering {
    a.cmp(&b)
}

/// A pin ("20", "20.11", "3.11.4", "lts/*"): the given parts must be equal. `None` for
/// an alias berth cannot resolve.
fn pin_matches(wanted: &str, have: &Version) -> Option<bool> {
    let want = Version::parse(wanted)?;
    let n = want.given();
    Some(want.parts[..n] == have.parts[..n])
}

/// An npm semver range (`>=18 <21`, `^18.17.0 || ^20`, `18.x`, `1.2 - 2.3`, `~20.1`).
fn npm_range_matches(range: &str, have: &Version) -> Option<bool> {
    let have = have.floor();
    let mut any = false;
    for alternative in range.split("||") {
        let alternative = alternative.trim();
        if alternative.is_empty() || alternative == "*" || alternative.eq_ignore_ascii_case("x") {
            return Some(true);
        }
        let ok = if let Some((lo, hi)) = alternative.split_once(" - ") {
            let (lo, hi) = (Version::parse(lo)?, Version::parse(hi)?);
            cmp(have, lo.floor()) != Ordering::Less && cmp(have, hi.ceiling()) == Ordering::Less
        } else {
            let mut all = true;
            // "> = 18" is written ">=18" by everyone; comparators are separated by spaces.
            for comparator in alternative.split_whitespace() {
                all &= npm_comparator(comparator, have)?;
            }
            all
        };
        any |= ok;
    }
    Some(any)
}

fn npm_comparator(c: &str, have: [u64; 3]) -> Option<bool> {
    let (op, rest) = split_op(c, &[">=", "<=", ">", "<", "=", "^", "~"]);
    let v = Version::parse(rest)?;
    let (floor, given) = (v.floor(), v.given());
    Some(match op {
        ">=" => cmp(have, floor) != Ordering::Less,
        ">" => cmp(have, v.ceiling()) != Ordering::Less,
        "<" => cmp(have, floor) == Ordering::Less,
        "<=" => cmp(have, v.ceiling()) == Ordering::Less,
        "^" => {
            // Up to the next change of the first non-zero part given.
            let upper = if floor[0] > 0 || given == 1 {
                [floor[0] + 1, 0, 0]
            } else if floor[1] > 0 || given == 2 {
                [0, floor[1] + 1, 0]
            } else {
                [0, 0, floor[2] + 1]
            };
            cmp(have, floor) != Ordering::Less && cmp(have, upper) == Ordering::Less
        }
        "~" => {
            let upper = if given == 1 {
                [floor[0] + 1, 0, 0]
            } else {
                [floor[0], floor[1] + 1, 0]
            };
            cmp(have, floor) != Ordering::Less && cmp(have, upper) == Ordering::Less
        }
        // "=18", "18", "18.x": every version the given parts stand for.
        _ => cmp(have, floor) != Ordering::Less && cmp(have, v.ceiling()) == Ordering::Less,
    })
}

/// PEP 440 specifiers as `requires-python` uses them (`>=3.9,<4`, `~=3.10`, `==3.11.*`, `!=3.12`).
fn pep440_matches(spec: &str, have: &Version) -> Option<bool> {
    let have = have.floor();
    let mut all = true;
    for clause in spec.split(',') {
        let clause = clause.trim();
        if clause.is_empty() {
            continue;
        }
        let (op, rest) = split_op(clause, &["~=", "===", "==", "!=", ">=", "<=", ">", "<"]);
        let rest = rest.trim();
        let wildcard = rest.ends_with(".*");
        let v = Version::parse(rest.trim_end_matches(".*"))?;
        let floor = v.floor();
        let within = |v: Version| cmp(have, v.floor()) != Ordering::Less && cmp(have, v.ceiling()) == Ordering::Less;
        all &= match op {
            ">=" => cmp(have, floor) != Ordering::Less,
            ">" => cmp(have, floor) == Ordering::Greater,
            "<=" => cmp(have, floor) != Ordering::Greater,
            "<" => cmp(have, floor) == Ordering::Less,
            "==" | "===" if wildcard => within(v),
            "==" | "===" => cmp(have, floor) == Ordering::Equal,
            "!=" if wildcard => !within(v),
            "!=" => cmp(have, floor) != Ordering::Equal,
            "~=" => {
                // ~=3.10 means >=3.10, ==3.*; ~=3.10.2 means >=3.10.2, ==3.10.*.
                let prefix = Version {
                    parts: match v.given() {
                        3 => [v.parts[0], v.parts[1], None],
                        _ => [v.parts[0], None, None],
                    },
                };
                cmp(have, floor) != Ordering::Less && within(prefix)
            }
            _ => return None,
        };
    }
    Some(all)
}

fn split_op<'a>(text: &'a str, ops: &[&'static str]) -> (&'static str, &'a str) {
    let text = text.trim();
    for op in ops {
        if let Some(rest) = text.strip_prefix(op) {
            return (op, rest.trim());
        }
    }
    ("", text)
}

/// The Node.js range to download for `request` when the server's node (`available`) does
/// not do: the app's own constraint excludes it, or a pin names another major release (a
/// pin of the same major is built with the server's, with a note). `None`: use the
/// server's node (it fits, the request cannot be read, or it is not about node).
pub fn node_to_provision<'a>(request: &'a Request, available: &str) -> Option<&'a str> {
    if request.tool != Tool::Node {
        return None;
    }
    let have = Version::parse(version_in(available).as_deref().unwrap_or(available))?;
    let range = super::tools::node_range(&request.wanted)?;
    match check(request, available) {
        Verdict::Excluded(_) => Some(range),
        Verdict::Nearest(_) => {
            let wanted = Version::parse(range)?;
            (wanted.parts[0] != have.parts[0]).then_some(range)
        }
        Verdict::Fits(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(wanted: &str, strength: Strength) -> Request {
        Request {
            tool: Tool::Node,
            wanted: wanted.into(),
            source: "package.json engines.node",
            strength,
        }
    }

    fn python(wanted: &str) -> Request {
        Request {
            tool: Tool::Python,
            wanted: wanted.into(),
            source: "pyproject.toml requires-python",
            strength: Strength::Constraint,
        }
    }

    fn fits(r: &Request, have: &str) -> bool {
        matches!(check(r, have), Verdict::Fits(_))
    }

    #[test]
    fn npm_ranges() {
        let c = Strength::Constraint;
        for (range, yes) in [
            (">=18", true),
            (">=18.0.0 <21", true),
            (">=22", false),
            ("^20.11.0", true),
            ("^20.20", false),
            ("^18.17.0 || ^20.9.0", true),
            ("18.x || 20.x", true),
            ("20", true),
            ("20.19", true),
            ("~20.19.0", true),
            ("~20.18", false),
            ("16 - 20", true),
            ("16 - 19", false),
            ("*", true),
            ("<20", false),
            ("<=20", true),
            (">20", false),
            (">19", true),
        ] {
            assert_eq!(fits(&node(range, c), "v20.19.2"), yes, "{range}");
        }
        assert!(matches!(check(&node(">=22", c), "v20.19.2"), Verdict::Excluded(m) if m.contains("excludes 20.19.2")));
    }

    #[test]
    fn pins_are_wishes() {
        let pin = node("18", Strength::Pin);
        assert!(matches!(check(&pin, "v20.19.2"), Verdict::Nearest(m) if m.contains("nearest available")));
        assert!(fits(&node("20", Strength::Pin), "v20.19.2"));
        assert!(fits(&node("20.19.2", Strength::Pin), "v20.19.2"));
        // An alias berth cannot resolve builds with what is there.
        assert!(fits(&node("lts/iron", Strength::Pin), "v20.19.2"));
    }

    #[test]
    fn python_specifiers() {
        for (spec, yes) in [
            (">=3.9", true),
            (">=3.9,<4", true),
            (">=3.12", false),
            ("~=3.10", true),
            ("~=3.11.4", false),
            ("~=3.11.1", true),
            ("==3.11.*", true),
            ("==3.10.*", false),
            ("!=3.11.*", false),
            (">=3.8, !=3.10.*", true),
            ("<3.11", false),
        ] {
            assert_eq!(fits(&python(spec), "Python 3.11.2"), yes, "{spec}");
        }
    }
}
