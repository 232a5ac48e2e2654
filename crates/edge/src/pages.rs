//! The small HTML pages the edge answers with itself (400, 404, 405, 413,
//! 502, 503, 504). They name hosts and sites, never internal addresses or
//! paths, and escape everything that came from a request or the control
//! plane.

use std::fmt::Write as _;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::EdgeBody;

const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>";
const STYLE: &str = "</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;\
margin:4rem auto;padding:0 1rem;color:#222}h1{font-size:1.4rem}</style></head><body><h1>";

/// Builds a complete edge page: `status` in the title and heading, then the
/// already-escaped `paragraphs_html`.
pub(crate) fn page(status: StatusCode, paragraphs_html: &str) -> Response<EdgeBody> {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut html = String::with_capacity(HEAD.len() + STYLE.len() + paragraphs_html.len() + 128);
    let _ = writeln!(
        html,
        "{HEAD}{code} {reason}{STYLE}{code} {reason}</h1>{paragraphs_html}</body></html>"
    );
    let mut res = Response::new(EdgeBody::full(html));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Edge pages describe a transient state of the platform; caching them
    // would keep showing an error after the site recovers.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Escapes text for use in HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn bad_request() -> Response<EdgeBody> {
    page(
        StatusCode::BAD_REQUEST,
        "<p>The request has no valid <code>Host</code> header, so no site can be chosen.</p>",
    )
}

/// 421 for a request whose host the TLS connection's certificate does not cover: the
/// client should open a connection for that name (RFC 9110 section 15.5.20).
pub(crate) fn misdirected(host: &str) -> Response<EdgeBody> {
    page(
        StatusCode::MISDIRECTED_REQUEST,
        &format!(
            "<p>This connection was made for another name than <strong>{}</strong>; connect to it by its own name.</p>",
            escape(host)
        ),
    )
}

pub(crate) fn unknown_host(host: &str) -> Response<EdgeBody> {
    page(
        StatusCode::NOT_FOUND,
        &format!("<p>No site is deployed at <strong>{}</strong>.</p>", escape(host)),
    )
}

pub(crate) fn domain_not_verified(host: &str) -> Response<EdgeBody> {
    page(
        StatusCode::NOT_FOUND,
        &format!(
            "<p><strong>{}</strong> is attached to a site here, but its DNS records are not verified yet, so nothing is served at it.</p>\
             <p>Its owner can see what is missing with <code>HOSTING_VALIDATE_DOMAIN</code>.</p>",
            escape(host)
        ),
    )
}

/// A 308 to the same path and query on `to`, keeping the port the request came in on
/// (taken from its `Host`).
pub(crate) fn redirect(to: &str, host_value: &HeaderValue, uri: &hyper::Uri) -> Response<EdgeBody> {
    let raw = host_value.to_str().unwrap_or_default();
    let port = match raw.rfind(':') {
        Some(i) if !raw.ends_with(']') && raw[i + 1..].bytes().all(|b| b.is_ascii_digit()) && i + 1 < raw.len() => {
            &raw[i..]
        }
        _ => "",
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("http://{to}{port}{path}");
    let mut res = page(
        StatusCode::PERMANENT_REDIRECT,
        &format!("<p>This site is at <a href=\"{0}\">{0}</a>.</p>", escape(&location)),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, value);
    }
    res
}

/// A 308 to the same path and query over HTTPS on `port` (left out when 443), for a
/// plain-HTTP request to `host` (normalised), which has a certificate.
pub(crate) fn https_redirect(host: &str, port: u16, uri: &hyper::Uri) -> Response<EdgeBody> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut res = page(
        StatusCode::PERMANENT_REDIRECT,
        &format!("<p>This site is at <a href=\"{0}\">{0}</a>.</p>", escape(&location)),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, value);
    }
    res
}

pub(crate) fn not_found() -> Response<EdgeBody> {
    page(StatusCode::NOT_FOUND, "<p>There is nothing at this address.</p>")
}

pub(crate) fn method_not_allowed() -> Response<EdgeBody> {
    let mut res = page(
        StatusCode::METHOD_NOT_ALLOWED,
        "<p>This site only serves files: use GET or HEAD.</p>",
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}

pub(crate) fn payload_too_large(limit: u64) -> Response<EdgeBody> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "<p>The request body is larger than the {} this site accepts.</p>",
            human_bytes(limit)
        ),
    )
}

pub(crate) fn bad_gateway(host: &str) -> Response<EdgeBody> {
    page(
        StatusCode::BAD_GATEWAY,
        &format!("<p>The app at <strong>{}</strong> is not responding.</p>", escape(host)),
    )
}

pub(crate) fn gateway_timeout(host: &str) -> Response<EdgeBody> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "<p>The app at <strong>{}</strong> took too long to respond.</p>",
            escape(host)
        ),
    )
}

pub(crate) fn unavailable(
    site: &str,
    status: u16,
    message: &str,
    retry_after_seconds: Option<u32>,
) -> Response<EdgeBody> {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut res = page(
        status,
        &format!(
            "<p>The site <strong>{}</strong> is not available right now.</p><p>{}</p>",
            escape(site),
            escape(message)
        ),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE
        && let Some(seconds) = retry_after_seconds
    {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    res
}

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const KIB: u64 = 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_html_specials() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(32 * 1024 * 1024), "32 MiB");
        assert_eq!(human_bytes(2048), "2 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }

    #[test]
    fn https_redirect_keeps_path_and_query_and_omits_443() {
        let uri: hyper::Uri = "/a/b?c=1&d".parse().unwrap();
        let res = https_redirect("app.example.com", 8443, &uri);
        assert_eq!(res.status(), 308);
        assert_eq!(
            res.headers()[header::LOCATION],
            "https://app.example.com:8443/a/b?c=1&d"
        );
        let res = https_redirect("app.example.com", 443, &uri);
        assert_eq!(res.headers()[header::LOCATION], "https://app.example.com/a/b?c=1&d");
    }

    #[test]
    fn unavailable_status_is_clamped() {
        assert_eq!(unavailable("s", 200, "m", None).status(), 503);
        assert_eq!(unavailable("s", 502, "m", Some(5)).status(), 502);
        assert!(
            unavailable("s", 502, "m", Some(5))
                .headers()
                .get(header::RETRY_AFTER)
                .is_none()
        );
        assert_eq!(unavailable("s", 503, "m", Some(5)).headers()[header::RETRY_AFTER], "5");
    }
}
