//! Static-site serving: safe mapping of request paths onto files below a
//! site's root (clean URLs, `index.html`, `404.html`, SPA fallback), HTTP
//! validators (`ETag`, `Last-Modified`, 304) and streamed file bodies.
//!
//! All filesystem work for one request happens in a single blocking task,
//! so a request costs one thread-pool hop rather than one per syscall.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode, Uri};
use percent_encoding::percent_decode_str;
use tracing::debug;

use crate::body::EdgeBody;
use crate::pages;

/// Files up to this size are read in the blocking task and sent as one
/// chunk; bigger ones are streamed so memory stays bounded.
const SMALL_FILE: u64 = 128 * 1024;

const HTML_CACHE: &str = "public, max-age=0, must-revalidate";
const ASSET_CACHE: &str = "public, max-age=3600";
const IMMUTABLE_CACHE: &str = "public, max-age=31536000, immutable";
/// Directories that frameworks fill only with content-hashed file names,
/// so their files can be cached forever.
const IMMUTABLE_PREFIXES: &[&str] = &["/_next/static/", "/_astro/", "/_app/immutable/"];

/// Serves one request for a static site rooted at `root`, with files whose real path
/// is inside `jail` only.
pub(crate) async fn serve(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    root: &Path,
    jail: &Path,
    spa_fallback: bool,
) -> Response<EdgeBody> {
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return pages::method_not_allowed(),
    };
    let Some(rel) = decode_path(uri.path()) else {
        return pages::not_found();
    };
    let conditions = Conditions {
        if_none_match: headers.get(header::IF_NONE_MATCH).cloned(),
        if_modified_since: headers.get(header::IF_MODIFIED_SINCE).cloned(),
    };
    let (root, jail) = (root.to_path_buf(), jail.to_path_buf());
    let immutable = IMMUTABLE_PREFIXES.iter().any(|p| rel.starts_with(p));
    let outcome =
        tokio::task::spawn_blocking(move || lookup(&root, &jail, &rel, spa_fallback, head, &conditions)).await;
    match outcome {
        Ok(Some(found)) => respond(found, immutable),
        Ok(None) => pages::not_found(),
        Err(e) => {
            debug!(error = %e, "static lookup task failed");
            pages::not_found()
        }
    }
}

/// Percent-decodes the request path and refuses anything that could name a
/// file outside the site or a hidden file: `..` segments, NUL, backslashes,
/// invalid UTF-8, and dot-files other than `.well-known`. Decoding first
/// means `%2e%2e` and `..%2f` are caught as well.
fn decode_path(raw: &str) -> Option<String> {
    let decoded = percent_decode_str(raw).decode_utf8().ok()?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    for seg in decoded.split('/') {
        if seg.starts_with('.') && seg != "." && seg != ".well-known" {
            return None;
        }
    }
    Some(decoded.into_owned())
}

struct Conditions {
    if_none_match: Option<HeaderValue>,
    if_modified_since: Option<HeaderValue>,
}

struct Found {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    status: StatusCode,
    body: FoundBody,
}

enum FoundBody {
    /// HEAD request: headers only.
    None,
    /// The client's cached copy is current.
    NotModified,
    Small(Vec<u8>),
    Stream(File),
}

/// Finds the file for `rel` (falling back to `404.html`, then the SPA
/// index) and loads what the response needs. `None` means a plain 404.
fn lookup(
    root: &Path,
    jail: &Path,
    rel: &str,
    spa_fallback: bool,
    head: bool,
    conditions: &Conditions,
) -> Option<Found> {
    // The root is taken as given, never re-resolved here: the route was built with
    // its resolved path, and whatever it has become since is judged file by file
    // against the jail.
    let (file, meta, path, status) = candidates(root, rel)
        .into_iter()
        .find_map(|c| open_within(jail, &c))
        .map(|(f, m, p)| (f, m, p, StatusCode::OK))
        .or_else(|| open_within(jail, &root.join("404.html")).map(|(f, m, p)| (f, m, p, StatusCode::NOT_FOUND)))
        .or_else(|| {
            spa_fallback
                .then(|| open_within(jail, &root.join("index.html")))
                .flatten()
                .map(|(f, m, p)| (f, m, p, StatusCode::OK))
        })?;

    let len = meta.len();
    let modified = meta.modified().ok();
    let body = if status == StatusCode::OK && not_modified(conditions, len, modified) {
        FoundBody::NotModified
    } else if head {
        FoundBody::None
    } else if len <= SMALL_FILE {
        let mut buf = Vec::with_capacity(len as usize);
        let mut file = file;
        if let Err(e) = file.read_to_end(&mut buf) {
            debug!(error = %e, "reading static file failed");
            return None;
        }
        FoundBody::Small(buf)
    } else {
        FoundBody::Stream(file)
    };
    Some(Found {
        path,
        len,
        modified,
        status,
        body,
    })
}

/// Files that may answer `rel`, most specific first: the exact file, then
/// clean-URL forms `rel.html` and `rel/index.html`; a directory path only
/// maps to its `index.html`.
fn candidates(root: &Path, rel: &str) -> Vec<PathBuf> {
    let mut base = root.to_path_buf();
    let mut has_name = false;
    for seg in rel.split('/').filter(|s| !s.is_empty() && *s != ".") {
        base.push(seg);
        has_name = true;
    }
    if !has_name || rel.ends_with('/') {
        return vec![base.join("index.html")];
    }
    let mut with_html = OsString::from(base.as_os_str());
    with_html.push(".html");
    let index = base.join("index.html");
    vec![base, PathBuf::from(with_html), index]
}

/// Opens `path` only if it is a regular file whose real location (after
/// resolving every symlink) is inside `jail`. The path is resolved first, so
/// nothing outside is even opened, and the opened file's location is checked
/// again through `/proc/self/fd`, so a link swapped in between cannot
/// redirect the read.
fn open_within(jail: &Path, path: &Path) -> Option<(File, Metadata, PathBuf)> {
    let real = path.canonicalize().ok()?;
    if !real.starts_with(jail) {
        debug!("static path resolves outside the deployment");
        return None;
    }
    let file = OpenOptions::new()
        .read(true)
        // Non-blocking: a FIFO must not stall the worker thread.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&real)
        .ok()?;
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    if !opened.starts_with(jail) {
        debug!("opened static file is outside the deployment");
        return None;
    }
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta, real))
}

fn etag(len: u64, modified: Option<SystemTime>) -> String {
    match modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => format!("W/\"{len:x}-{:x}\"", d.as_nanos()),
        None => format!("W/\"{len:x}\""),
    }
}

/// Whether the client's validators say its copy is current. `If-None-Match`
/// wins over `If-Modified-Since` (RFC 9110 §13.1.3); ETags compare weakly.
fn not_modified(conditions: &Conditions, len: u64, modified: Option<SystemTime>) -> bool {
    if let Some(inm) = &conditions.if_none_match {
        let Ok(inm) = inm.to_str() else { return false };
        let ours = etag(len, modified);
        let ours = opaque(&ours);
        return inm
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || opaque(tag) == ours);
    }
    if let (Some(ims), Some(modified)) = (&conditions.if_modified_since, modified) {
        let Some(ims) = ims.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok()) else {
            return false;
        };
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        return secs(modified) <= secs(ims);
    }
    false
}

fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

fn respond(found: Found, immutable: bool) -> Response<EdgeBody> {
    let is_html = matches!(
        found.path.extension().and_then(|e| e.to_str()),
        Some(e) if e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm")
    );
    let cache = if is_html {
        HTML_CACHE
    } else if immutable {
        IMMUTABLE_CACHE
    } else {
        ASSET_CACHE
    };

    let not_modified = matches!(found.body, FoundBody::NotModified);
    let body = match found.body {
        FoundBody::None | FoundBody::NotModified => EdgeBody::Empty,
        FoundBody::Small(bytes) => EdgeBody::full(bytes),
        FoundBody::Stream(file) => EdgeBody::file(tokio::fs::File::from_std(file), found.len),
    };
    let mut res = Response::new(body);
    *res.status_mut() = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        found.status
    };
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if found.status == StatusCode::OK {
        if let Ok(v) = HeaderValue::from_str(&etag(found.len, found.modified)) {
            headers.insert(header::ETAG, v);
        }
        if let Some(modified) = found.modified
            && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified))
        {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
    if not_modified {
        return res;
    }
    headers.insert(header::CONTENT_TYPE, content_type(&found.path, is_html));
    // Explicit so HEAD responses carry the length a GET would have.
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(found.len));
    res
}

fn content_type(path: &Path, is_html: bool) -> HeaderValue {
    if is_html {
        return HeaderValue::from_static("text/html; charset=utf-8");
    }
    let mime = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    match mime {
        "text/css" => HeaderValue::from_static("text/css; charset=utf-8"),
        "text/javascript" | "application/javascript" => HeaderValue::from_static("text/javascript; charset=utf-8"),
        "text/plain" => HeaderValue::from_static("text/plain; charset=utf-8"),
        "application/json" => HeaderValue::from_static("application/json"),
        m if m.starts_with("text/") => {
            HeaderValue::from_str(&format!("{m}; charset=utf-8")).unwrap_or_else(|_| HeaderValue::from_static(mime))
        }
        m => HeaderValue::from_static(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_traversal_and_tricks() {
        assert_eq!(decode_path("/a/b.html").as_deref(), Some("/a/b.html"));
        assert_eq!(decode_path("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(decode_path("/./a").as_deref(), Some("/./a"));
        assert_eq!(decode_path("/.well-known/x").as_deref(), Some("/.well-known/x"));
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/..%2f..%2fetc",
            "/a%5c..%5cb",
            "/a%00.html",
            "/.git/config",
            "/.env",
            "/%ff",
        ] {
            assert_eq!(decode_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn candidates_clean_urls() {
        let root = Path::new("/r");
        assert_eq!(candidates(root, "/"), vec![PathBuf::from("/r/index.html")]);
        assert_eq!(candidates(root, "/docs/"), vec![PathBuf::from("/r/docs/index.html")]);
        assert_eq!(
            candidates(root, "/about"),
            vec![
                PathBuf::from("/r/about"),
                PathBuf::from("/r/about.html"),
                PathBuf::from("/r/about/index.html")
            ]
        );
    }

    #[test]
    fn content_types() {
        let ct = |p: &str| content_type(Path::new(p), false);
        assert_eq!(ct("a.css"), "text/css; charset=utf-8");
        assert_eq!(ct("a.js"), "text/javascript; charset=utf-8");
        assert_eq!(ct("a.png"), "image/png");
        assert_eq!(ct("a.unknownext"), "application/octet-stream");
        assert_eq!(ct("a.csv"), "text/csv; charset=utf-8");
    }

    #[test]
    fn etag_conditions() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let tag = etag(10, Some(t));
        let c = |inm: Option<&str>, ims: Option<&str>| Conditions {
            if_none_match: inm.map(|s| HeaderValue::from_str(s).unwrap()),
            if_modified_since: ims.map(|s| HeaderValue::from_str(s).unwrap()),
        };
        assert!(not_modified(&c(Some(&tag), None), 10, Some(t)));
        assert!(not_modified(&c(Some(&tag[2..]), None), 10, Some(t)));
        assert!(not_modified(&c(Some(&format!("\"x\", {tag}")), None), 10, Some(t)));
        assert!(not_modified(&c(Some("*"), None), 10, Some(t)));
        assert!(!not_modified(&c(Some(&tag), None), 11, Some(t)));
        let date = httpdate::fmt_http_date(t);
        assert!(not_modified(&c(None, Some(&date)), 10, Some(t)));
        let earlier = httpdate::fmt_http_date(t - std::time::Duration::from_secs(5));
        assert!(!not_modified(&c(None, Some(&earlier)), 10, Some(t)));
        // If-None-Match takes precedence even when the date would match.
        assert!(!not_modified(&c(Some("\"other\""), Some(&date)), 10, Some(t)));
    }
}
