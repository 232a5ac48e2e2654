//! Error patterns from runtime logs: which lines are errors ([`Assembler`]: stderr lines,
//! stdout lines that look like errors, with their continuation lines — indented lines,
//! Python tracebacks, `at …` stack frames, `Caused by:`, Rust panic notes — joined into one
//! event of at most [`MAX_EVENT_LINES`] lines and [`MAX_EVENT_BYTES`] bytes), and the
//! Drain-style clustering of events into templates ([`Drain`]).
//!
//! Drain (He et al., 2017) keeps templates in a tree of fixed depth keyed by the number of
//! tokens and the first tokens, so an event is compared only with the few templates of its
//! leaf; the most similar one at or above [`SIMILARITY`] takes it (the tokens that differ
//! become `<*>`), else it starts a template of its own. Variable parts are masked first
//! ([`mask`]: UUIDs, hex ids, IPs, numbers, dates and times, quoted strings, paths with
//! numbers), so `user 42 not found` and `user 7 not found` are one template before any
//! comparison. An environment keeps at most [`MAX_TEMPLATES`] templates; a new one beyond
//! that evicts the least recently seen. Everything here is pure: the work per line is
//! bounded by the line's length and the leaf's size, whatever an app writes.

use std::collections::HashMap;

/// Lines one event joins at most (further continuation lines are dropped).
pub const MAX_EVENT_LINES: usize = 50;
/// Bytes one event's text holds at most.
pub const MAX_EVENT_BYTES: usize = 8 * 1024;
/// Templates one site+environment keeps at most (least recently seen evicted).
pub const MAX_TEMPLATES: usize = 500;
/// Tokens of an event's headline that are clustered (the rest become one `…`).
pub const MAX_TOKENS: usize = 64;
/// The share of a template's fixed tokens an event must match to join it.
pub const SIMILARITY: f64 = 0.5;
/// How many leading tokens key the tree below the token count.
const PREFIX_TOKENS: usize = 2;
/// The wildcard of a template.
pub const WILDCARD: &str = "<*>";

/// Words that mark a line as an error when one of its first tokens (after a timestamp or
/// level prefix) is one of them.
const LEVEL_WORDS: [&str; 10] = [
    "error",
    "err",
    "fatal",
    "critical",
    "crit",
    "panic",
    "panicked",
    "exception",
    "traceback",
    "severe",
];
/// How many leading tokens are looked at for a level word.
const LEVEL_TOKENS: usize = 5;

/// Whether a stdout line looks like the start of an error.
pub fn looks_like_error(line: &str) -> bool {
    for token in line.split_whitespace().take(LEVEL_TOKENS) {
        let word = token.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '.');
        let lower = word.to_ascii_lowercase();
        // `level=error`, `lvl:error`
        let value = lower.rsplit(['=', ':']).next().unwrap_or(&lower);
        if LEVEL_WORDS.contains(&value) {
            return true;
        }
        // `TypeError:`, `java.lang.IllegalStateException:`
        if token.ends_with(':') && (word.ends_with("Error") || word.ends_with("Exception")) {
            return true;
        }
    }
    false
}

/// Whether `line` continues the event before it: indented (stack frames, traceback
/// frames), `Caused by:`, `... 3 more`, Rust's `note:` and `stack backtrace:`.
fn continues(line: &str) -> bool {
    line.starts_with([' ', '\t'])
        || line.starts_with("Caused by:")
        || line.starts_with("...")
        || line.starts_with("note: ")
        || line.starts_with("stack backtrace:")
        || line.starts_with("at ")
}

/// One error event: its lines joined with `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The joined lines (at most [`MAX_EVENT_BYTES`]).
    pub text: String,
    /// The time of its first line (ms).
    pub ts: i64,
}

impl Event {
    /// The line the event is clustered by: its first line, or for a Python traceback its
    /// last line (the exception and its message).
    pub fn headline(&self) -> &str {
        let first = self.text.lines().next().unwrap_or("");
        if first.trim_start().starts_with("Traceback (most recent call last)") {
            return self
                .text
                .lines()
                .rev()
                .find(|l| !l.starts_with([' ', '\t']) && !l.trim().is_empty())
                .unwrap_or(first);
        }
        first
    }
}

/// An event being joined.
#[derive(Debug)]
struct Open {
    event: Event,
    lines: usize,
    /// Inside a Python traceback: the next unindented line is its last.
    traceback: bool,
    /// A Rust panic header (`thread 'x' panicked at src/x.rs:1:2:`): the next line is its
    /// message.
    panic_header: bool,
}

impl Open {
    fn new(line: &str, ts: i64) -> Self {
        let mut text = String::new();
        push_bounded(&mut text, line);
        Self {
            event: Event { text, ts },
            lines: 1,
            traceback: line.trim_start().starts_with("Traceback (most recent call last)"),
            panic_header: line.contains(" panicked at ") && line.ends_with(':'),
        }
    }

    fn push(&mut self, line: &str) {
        self.panic_header = false;
        if self.lines >= MAX_EVENT_LINES {
            return;
        }
        self.lines += 1;
        if self.event.text.len() < MAX_EVENT_BYTES {
            self.event.text.push('\n');
            push_bounded(&mut self.event.text, line);
        }
    }
}

fn push_bounded(text: &mut String, line: &str) {
    let room = MAX_EVENT_BYTES.saturating_sub(text.len());
    let mut cut = line.len().min(room);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    text.push_str(&line[..cut]);
}

/// Joins one stream's lines into error events. Feed it the stream's lines in order;
/// an event is complete when a line that does not continue it arrives, or when the
/// stream has been quiet for a while ([`Assembler::finish`]).
#[derive(Debug, Default)]
pub struct Assembler {
    open: Option<Open>,
}

impl Assembler {
    /// Takes one line (`stderr`: whether every line counts, else only those that look like
    /// errors start an event); returns the event it completed, if any.
    pub fn push(&mut self, line: &str, stderr: bool, ts: i64) -> Option<Event> {
        if let Some(open) = &mut self.open {
            if line.trim().is_empty() {
                return self.finish();
            }
            if open.panic_header || continues(line) {
                open.push(line);
                return None;
            }
            if open.traceback {
                // The exception line ends the traceback.
                open.push(line);
                return self.finish();
            }
        }
        let done = self.finish();
        if !line.trim().is_empty() && (stderr || looks_like_error(line)) {
            self.open = Some(Open::new(line, ts));
        }
        done
    }

    /// Completes the open event, if any.
    pub fn finish(&mut self) -> Option<Event> {
        self.open.take().map(|o| o.event)
    }

    /// Whether an event is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }
}

/// Replaces quoted strings (`'…'`, `"…"` on one line, at most 200 characters) by `<*>`;
/// a quote counts only at the start of a word, so `can't` stays.
fn mask_quotes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.char_indices().peekable();
    let mut prev: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        let opens = (c == '\'' || c == '"') && prev.is_none_or(|p| p.is_whitespace() || "([{=:,".contains(p));
        if opens && let Some(len) = line[i + 1..].chars().take(200).position(|x| x == c) {
            let end = i + 1 + line[i + 1..].chars().take(len).map(char::len_utf8).sum::<usize>();
            out.push_str(WILDCARD);
            while chars.peek().is_some_and(|(j, _)| *j <= end) {
                chars.next();
            }
            prev = Some(c);
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// Whether the core of a token (punctuation around it stripped) is a variable.
fn is_variable(core: &str) -> bool {
    if core.is_empty() || core == WILDCARD {
        return false;
    }
    let digits = core.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let b = core.as_bytes();
    // Numbers, dates, times, IPv4 addresses with ports, ISO timestamps.
    if b.iter().all(|c| c.is_ascii_digit() || b"-+.:,/TZ_".contains(c)) {
        return true;
    }
    // Hex ids and UUIDs (`0x` or not).
    let hex = core.strip_prefix("0x").unwrap_or(core);
    if hex.len() >= 6 && hex.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-') {
        return true;
    }
    // IPv6.
    if core.matches(':').count() >= 2 && core.bytes().all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.') {
        return true;
    }
    // A number with a unit: `30ms`, `5s`, `12KB`, `#42`.
    let trimmed = core.trim_start_matches('#');
    let number_end = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    if number_end > 0
        && trimmed[number_end..].len() <= 3
        && trimmed[number_end..].bytes().all(|c| c.is_ascii_alphabetic())
    {
        return true;
    }
    // Paths and URLs with numbers in them.
    core.contains('/')
}

/// Masks one token: its variable core becomes `<*>`, punctuation around it stays
/// (`id=42,` → `id=<*>,`).
fn mask_token(token: &str) -> String {
    let start = token.find(|c: char| !"([{<'\"".contains(c)).unwrap_or(token.len());
    let end = token
        .rfind(|c: char| !")]}>,;.:'\"".contains(c))
        .map_or(start, |i| i + token[i..].chars().next().map_or(1, char::len_utf8));
    if start >= end {
        return token.to_string();
    }
    let core = &token[start..end];
    if core.contains(WILDCARD) {
        return token.to_string();
    }
    if is_variable(core) {
        return format!("{}{WILDCARD}{}", &token[..start], &token[end..]);
    }
    // `key=value`, `key:value`
    if let Some(at) = core.find(['=', ':'])
        && at > 0
        && is_variable(&core[at + 1..])
    {
        return format!("{}{}{WILDCARD}{}", &token[..start], &core[..=at], &token[end..]);
    }
    token.to_string()
}

/// The masked tokens of a headline: quoted strings, then each token's variable part,
/// replaced by `<*>`; at most [`MAX_TOKENS`] (the rest become one `…`).
pub fn mask(headline: &str) -> Vec<String> {
    let quoted = mask_quotes(headline);
    let mut tokens: Vec<String> = quoted.split_whitespace().take(MAX_TOKENS + 1).map(mask_token).collect();
    if tokens.len() > MAX_TOKENS {
        tokens.truncate(MAX_TOKENS);
        tokens.push("…".into());
    }
    tokens
}

/// One template of an environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Its stable number in this [`Drain`].
    pub key: u64,
    /// Its tokens, `<*>` where events differ.
    pub tokens: Vec<String>,
    /// When an event last joined it (ms), for eviction.
    pub last_seen: i64,
}

impl Cluster {
    /// The template as text.
    pub fn template(&self) -> String {
        self.tokens.join(" ")
    }
}

/// What [`Drain::add`] did with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    /// The template it joined or started.
    pub key: u64,
    /// Whether it started a new template.
    pub new: bool,
    /// Whether the template's text changed.
    pub changed: bool,
    /// The template evicted to make room, if any.
    pub evicted: Option<u64>,
}

/// The templates of one site+environment (see the module's header).
#[derive(Debug)]
pub struct Drain {
    clusters: HashMap<u64, Cluster>,
    /// Leaves: (token count, first tokens) → templates.
    leaves: HashMap<(usize, Vec<String>), Vec<u64>>,
    next_key: u64,
    capacity: usize,
}

impl Default for Drain {
    fn default() -> Self {
        Self::with_capacity(MAX_TEMPLATES)
    }
}

/// The tree key of a template or event: a token that is or holds a variable keys as `<*>`.
fn leaf_key(tokens: &[String]) -> (usize, Vec<String>) {
    (
        tokens.len(),
        tokens
            .iter()
            .take(PREFIX_TOKENS)
            .map(|t| {
                if t.contains(WILDCARD) || t.bytes().any(|c| c.is_ascii_digit()) {
                    WILDCARD.to_string()
                } else {
                    t.clone()
                }
            })
            .collect(),
    )
}

/// The share of `template`'s fixed tokens `tokens` matches (same length).
fn similarity(template: &[String], tokens: &[String]) -> f64 {
    let fixed = template.iter().filter(|t| *t != WILDCARD).count();
    if fixed == 0 {
        return 1.0;
    }
    let same = template
        .iter()
        .zip(tokens)
        .filter(|(t, e)| *t != WILDCARD && t == e)
        .count();
    same as f64 / fixed as f64
}

impl Drain {
    /// An empty tree keeping at most `capacity` templates.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            clusters: HashMap::new(),
            leaves: HashMap::new(),
            next_key: 1,
            capacity: capacity.max(1),
        }
    }

    /// How many templates it holds.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// A template by its key.
    pub fn get(&self, key: u64) -> Option<&Cluster> {
        self.clusters.get(&key)
    }

    /// Puts back a template kept elsewhere (on start), under `key`.
    pub fn restore(&mut self, key: u64, template: &str, last_seen: i64) {
        let tokens: Vec<String> = template.split_whitespace().map(str::to_string).collect();
        if tokens.is_empty() || self.clusters.contains_key(&key) {
            return;
        }
        self.leaves.entry(leaf_key(&tokens)).or_default().push(key);
        self.clusters.insert(key, Cluster { key, tokens, last_seen });
        self.next_key = self.next_key.max(key + 1);
    }

    /// Clusters one event's headline seen at `at` (ms).
    pub fn add(&mut self, headline: &str, at: i64) -> Added {
        let tokens = mask(headline);
        let leaf = leaf_key(&tokens);
        let best = self.leaves.get(&leaf).and_then(|keys| {
            keys.iter()
                .filter_map(|k| self.clusters.get(k))
                .map(|c| (similarity(&c.tokens, &tokens), c.key))
                .filter(|(s, _)| *s >= SIMILARITY)
                .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        });
        if let Some((_, key)) = best {
            let cluster = self.clusters.get_mut(&key).expect("a leaf's template exists");
            let mut changed = false;
            for (t, e) in cluster.tokens.iter_mut().zip(&tokens) {
                if t != e && t != WILDCARD {
                    *t = WILDCARD.to_string();
                    changed = true;
                }
            }
            cluster.last_seen = cluster.last_seen.max(at);
            return Added {
                key,
                new: false,
                changed,
                evicted: None,
            };
        }
        let evicted = if self.clusters.len() >= self.capacity {
            self.evict_oldest()
        } else {
            None
        };
        let key = self.next_key;
        self.next_key += 1;
        self.leaves.entry(leaf).or_default().push(key);
        self.clusters.insert(
            key,
            Cluster {
                key,
                tokens,
                last_seen: at,
            },
        );
        Added {
            key,
            new: true,
            changed: true,
            evicted,
        }
    }

    /// Removes the least recently seen template (a linear scan: it runs only when a new
    /// template finds the tree full, at most [`MAX_TEMPLATES`] entries).
    fn evict_oldest(&mut self) -> Option<u64> {
        let key = self
            .clusters
            .values()
            .min_by_key(|c| (c.last_seen, c.key))
            .map(|c| c.key)?;
        self.remove(key);
        Some(key)
    }

    /// Forgets a template.
    pub fn remove(&mut self, key: u64) {
        if let Some(cluster) = self.clusters.remove(&key) {
            let leaf = leaf_key(&cluster.tokens);
            if let Some(keys) = self.leaves.get_mut(&leaf) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    self.leaves.remove(&leaf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[(&str, bool)]) -> Vec<String> {
        let mut a = Assembler::default();
        let mut out: Vec<String> = lines
            .iter()
            .filter_map(|(l, stderr)| a.push(l, *stderr, 0))
            .map(|e| e.text)
            .collect();
        out.extend(a.finish().map(|e| e.text));
        out
    }

    #[test]
    fn continuation_lines_join_their_event() {
        let got = events(&[
            ("listening on 3000", false),
            ("Traceback (most recent call last):", true),
            ("  File \"app.py\", line 10, in <module>", true),
            ("    int(x)", true),
            ("ValueError: invalid literal for int() with base 10: 'abc'", true),
            ("Error: boom 42", true),
            ("    at handler (/app/server.js:10:11)", true),
            ("    at process (node:internal/x:1:2)", true),
            ("thread 'main' panicked at src/main.rs:2:5:", true),
            ("called `Option::unwrap()` on a `None` value", true),
            (
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
                true,
            ),
            ("2026-01-02 10:00:00 INFO all good", false),
            ("2026-01-02 10:00:01 ERROR db timeout after 30 ms", false),
            ("java.lang.IllegalStateException: closed", false),
            ("\tat com.example.A.run(A.java:12)", false),
            ("Caused by: java.io.IOException: reset", false),
            ("request served", false),
        ]);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].starts_with("Traceback") && got[0].ends_with("'abc'") && got[0].lines().count() == 4);
        assert_eq!(got[1].lines().count(), 3);
        assert_eq!(got[2].lines().count(), 3, "{}", got[2]);
        assert_eq!(got[3], "2026-01-02 10:00:01 ERROR db timeout after 30 ms");
        assert_eq!(got[4].lines().count(), 3);
        let tb = Event {
            text: got[0].clone(),
            ts: 0,
        };
        assert_eq!(
            tb.headline(),
            "ValueError: invalid literal for int() with base 10: 'abc'"
        );
    }

    #[test]
    fn events_are_bounded() {
        let mut a = Assembler::default();
        assert!(a.push("Error: deep", true, 0).is_none());
        for i in 0..500 {
            assert!(
                a.push(&format!("    at frame{i} {}", "x".repeat(100)), true, 0)
                    .is_none()
            );
        }
        let e = a.finish().unwrap();
        assert_eq!(e.text.lines().count(), MAX_EVENT_LINES);
        assert!(e.text.len() <= MAX_EVENT_BYTES);
        let mut a = Assembler::default();
        a.push(&"é".repeat(10_000), true, 0);
        assert!(a.finish().unwrap().text.len() <= MAX_EVENT_BYTES);
    }

    #[test]
    fn stdout_lines_that_look_like_errors() {
        for yes in [
            "ERROR something",
            "[ERROR] x",
            "2026-01-01T00:00:00Z level=error msg=x",
            "12:00:01 [main] FATAL: out of memory",
            "TypeError: x is undefined",
            "panic: runtime error: index out of range",
            "Unhandled Exception in thread",
        ] {
            assert!(looks_like_error(yes), "{yes}");
        }
        for no in [
            "INFO started",
            "GET /errors 200",
            "all fine, no errors here at all today",
        ] {
            assert!(!looks_like_error(no), "{no}");
        }
    }

    #[test]
    fn masks_hide_what_varies() {
        let m = |s: &str| mask(s).join(" ");
        assert_eq!(
            m("user 42 not found (req 3f2a9c1b-8e4d-4f1a-9b2c-0d1e2f3a4b5c) from 10.0.0.7:5432"),
            "user <*> not found (req <*>) from <*>"
        );
        assert_eq!(
            m("2026-01-02T10:00:00.123Z ERROR open '/data/my file.txt' failed after 30ms id=981, trace 0xdeadbeef"),
            "<*> ERROR open <*> failed after <*> id=<*>, trace <*>"
        );
        assert_eq!(
            m("GET /users/42/posts failed: can't connect"),
            "GET <*> failed: can't connect"
        );
        assert_eq!(
            m("thread 'main' panicked at src/main.rs:2:5:"),
            "thread <*> panicked at <*>:"
        );
    }

    #[test]
    fn drain_groups_by_template_and_generalises() {
        let mut d = Drain::default();
        let a = d.add("ERROR payment 12 failed for user alice", 1);
        let b = d.add("ERROR payment 13 failed for user bob", 2);
        assert!(a.new && !b.new && b.changed);
        assert_eq!(a.key, b.key);
        assert_eq!(
            d.get(a.key).unwrap().template(),
            "ERROR payment <*> failed for user <*>"
        );
        let c = d.add("ERROR cache miss", 3);
        assert_ne!(c.key, a.key, "another token count is another leaf");
        let e = d.add("ERROR disk full on volume data and more", 4);
        assert_ne!(e.key, a.key, "too different to join");
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn the_tree_stays_within_its_bound_evicting_the_least_recently_seen() {
        let mut d = Drain::with_capacity(10);
        let first = d.add("alpha beta gamma", 0).key;
        for i in 0..100 {
            let word: String = (0..8)
                .map(|j| char::from(b'a' + ((i * 7 + j * 3) % 26) as u8))
                .collect();
            d.add(&format!("{word} {word} unique {i}"), i64::from(i) + 1);
            // Keep the first template recent: it stays.
            d.add("alpha beta gamma", i64::from(i) + 1);
            assert!(d.len() <= 10);
        }
        assert!(d.get(first).is_some());
        assert_eq!(d.len(), 10);
    }
}
