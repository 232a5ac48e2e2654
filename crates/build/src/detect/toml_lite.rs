//! Just enough TOML for detection: the tables of a file with their keys and
//! raw values (multi-line arrays joined), string and string-array values,
//! and inline tables. pyproject.toml, uv.lock and poetry.lock are written by
//! tools in a regular shape, and detection only needs a few keys of them, so
//! this stays far smaller than a full parser; what it cannot read is simply
//! not found.

/// One `[table]` or `[[array.of.tables]]` with its `key = value` lines.
pub(super) struct Table {
    /// The header without brackets ("project", "package.dependencies").
    pub name: String,
    /// Keys in file order, values raw (still quoted).
    pub entries: Vec<(String, String)>,
}

impl Table {
    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The string value of `key`.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).and_then(string)
    }
}

/// Splits a file into tables; keys before any header belong to a table
/// named "".
pub(super) fn tables(text: &str) -> Vec<Table> {
    let mut out = vec![Table {
        name: String::new(),
        entries: Vec::new(),
    }];
    let mut pending: Option<(String, String, i32)> = None;
    for line in text.lines() {
        let line = strip_line_comment(line);
        if let Some((key, mut value, depth)) = pending.take() {
            value.push(' ');
            value.push_str(line.trim());
            let depth = depth + bracket_depth(line);
            if depth > 0 {
                pending = Some((key, value, depth));
            } else if let Some(t) = out.last_mut() {
                t.entries.push((key, value));
            }
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let name = line.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or("").trim().trim_matches('"');
            out.push(Table {
                name: name.to_string(),
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches('"').to_string();
        let value = value.trim().to_string();
        let depth = bracket_depth(&value);
        if depth > 0 {
            pending = Some((key, value, depth));
        } else if let Some(t) = out.last_mut() {
            t.entries.push((key, value));
        }
    }
    out
}

/// Net count of opening `[`/`{` over closing ones outside strings.
fn bracket_depth(s: &str) -> i32 {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth
}

/// A basic or literal string value, unquoted (escapes `\"` and `\\` only).
pub(super) fn string(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let q = raw.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let mut out = String::new();
    let mut escaped = false;
    for c in raw[1..].chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' && q == '"' {
            escaped = true;
        } else if c == q {
            return Some(out);
        } else {
            out.push(c);
        }
    }
    None
}

/// Splits the inside of an array or inline table at top-level commas.
fn split_top(inner: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in inner.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                current.push(c);
            }
            None => match c {
                '"' | '\'' => {
                    quote = Some(c);
                    current.push(c);
                }
                '[' | '{' => {
                    depth += 1;
                    current.push(c);
                }
                ']' | '}' => {
                    depth -= 1;
                    current.push(c);
                }
                ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
                _ => current.push(c),
            },
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The items of an array value, raw.
pub(super) fn array(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    match raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => split_top(inner),
        None => Vec::new(),
    }
}

/// The strings of an array value.
pub(super) fn string_array(raw: &str) -> Vec<String> {
    array(raw).iter().filter_map(|s| string(s)).collect()
}

/// The `key = value` pairs of an inline table, values raw.
pub(super) fn inline_table(raw: &str) -> Vec<(String, String)> {
    let raw = raw.trim();
    let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
        return Vec::new();
    };
    split_top(inner)
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().trim_matches('"').to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The line without its `# comment` (a `#` inside a string is kept).
fn strip_line_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}
