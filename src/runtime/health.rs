//! Health checks and what they saw: each probe's outcome (healthy, an HTTP status with
//! the first lines of its body, refused, timed out), and the messages that turn what a
//! failed start saw into the fix (the setting to change: `port`, `start_command`,
//! `health_check_path`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::InstanceSpec;
use super::listeners::Listener;

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Body bytes of a failing answer read for the error.
const BODY_BYTES: usize = 4096;
/// Lines of a failing answer's body quoted in the error, and their longest length.
const BODY_LINES: usize = 5;
const BODY_LINE_CHARS: usize = 200;

/// Where settings are changed in place, named in messages.
const UPDATE_TOOL: &str = "HOSTING_UPDATE_SITE";

/// What one health check saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An answer below 500.
    Healthy,
    /// An answer of 500 or more, with the first lines of its body.
    Status {
        /// The HTTP status.
        code: u16,
        /// Its body's first lines (tags stripped from HTML).
        body: Vec<String>,
    },
    /// Nothing listens there.
    Refused,
    /// No answer in time.
    TimedOut,
    /// Any other failure, described.
    Failed(String),
}

impl Probe {
    /// A short account, for messages (`HTTP 500 …`, `connection refused`).
    fn describe(&self) -> String {
        match self {
            Probe::Healthy => "healthy".into(),
            Probe::Status { code, body } if body.is_empty() => format!("HTTP {code}"),
            Probe::Status { code, body } => format!("HTTP {code}: {}", body.join(" | ")),
            Probe::Refused => "connection refused".into(),
            Probe::TimedOut => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
            Probe::Failed(why) => why.clone(),
        }
    }
}

/// One `GET path` at `addr`.
pub async fn probe(http: &reqwest::Client, addr: SocketAddr, path: &str) -> Probe {
    let resp = match http.get(format!("http://{addr}{path}")).send().await {
        Ok(resp) => resp,
        Err(e) => return probe_error(&e),
    };
    let code = resp.status().as_u16();
    if code < 500 {
        return Probe::Healthy;
    }
    let html = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("html"));
    let mut resp = resp;
    let mut body = Vec::new();
    while body.len() < BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(BODY_BYTES);
    Probe::Status {
        code,
        body: body_lines(&String::from_utf8_lossy(&body), html),
    }
}

fn probe_error(e: &reqwest::Error) -> Probe {
    if e.is_timeout() {
        return Probe::TimedOut;
    }
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Probe::Refused,
                std::io::ErrorKind::TimedOut => Probe::TimedOut,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => {
                    Probe::Failed("the connection was closed without an HTTP answer".into())
                }
                _ => Probe::Failed(format!("the connection failed: {io}")),
            };
        }
        source = err.source();
    }
    if e.is_connect() {
        Probe::Refused
    } else {
        Probe::Failed("no HTTP answer (the connection was closed or the answer was not HTTP)".into())
    }
}

/// The first non-empty lines of a body, cut; tags removed from HTML.
fn body_lines(body: &str, html: bool) -> Vec<String> {
    let text = if html { strip_tags(body) } else { body.to_string() };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(BODY_LINES)
        .map(|l| cut(l, BODY_LINE_CHARS))
        .collect()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push('\n');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// `text` cut to at most `max` characters, marked when cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// What the health checks of one start saw, for the error if it never passes.
#[derive(Debug, Default)]
pub struct Seen {
    /// The port given to the app as `$PORT`, once probed.
    pub port: Option<u16>,
    /// The latest probe of `$PORT`.
    pub last: Option<Probe>,
    /// The TCP sockets the app's processes listened on at the latest look.
    pub listeners: Vec<Listener>,
    /// What the probes of those other ports saw.
    pub elsewhere: Vec<(u16, Probe)>,
}

/// The warning logged when the edge is pointed at the port the app listens on.
pub fn rerouted_warning(port: u16, chosen: u16, others: &[u16]) -> String {
    let mut w = format!("warning: the app listens on port {chosen}, not on $PORT ({port}); berth routes to {chosen}");
    if !others.is_empty() {
        let _ = write!(
            w,
            " (the lowest port that passes the health check; it also listens on {})",
            join_ports(others)
        );
    }
    let _ = write!(
        w,
        ". Make it listen on the PORT environment variable, or set the site's `port` to {chosen} ({UPDATE_TOOL}) to silence this warning"
    );
    w
}

/// Why a start never passed its health check, and what to change.
pub fn unhealthy_message(spec: &InstanceSpec, port: u16, seen: &Seen, last_lines: &[String]) -> String {
    let path = &spec.health_check_path;
    let mut m = format!(
        "the app did not pass its health check (GET {path} on $PORT={port}) within {} s: ",
        spec.start_timeout.as_secs()
    );
    let elsewhere: Vec<u16> = {
        let mut ports: Vec<u16> = seen.listeners.iter().map(|l| l.port).filter(|p| *p != port).collect();
        ports.dedup();
        ports
    };
    match &seen.last {
        Some(Probe::Refused) | None if !elsewhere.is_empty() => {
            let _ = write!(
                m,
                "nothing listens on $PORT={port}; your app listens on {}, not $PORT={port}",
                join_ports(&elsewhere)
            );
            let unreachable: Vec<String> = seen
                .listeners
                .iter()
                .filter(|l| !l.reachable)
                .map(|l| format!("{}:{}", l.addr, l.port))
                .collect();
            if !unreachable.is_empty() {
                let _ = write!(
                    m,
                    " ({} only, which berth cannot reach: listen on 0.0.0.0)",
                    unreachable.join(", ")
                );
            }
            for (p, probe) in &seen.elsewhere {
                let _ = write!(m, "; GET {path} on {p}: {}", probe.describe());
            }
            let _ = write!(
                m,
                ". Make it listen on the PORT environment variable, or set the site's `port` to the port it should serve on ({UPDATE_TOOL})"
            );
        }
        Some(Probe::Refused) | None => {
            let _ = write!(
                m,
                "nothing listens on $PORT={port} (connection refused) and the app opened no other TCP port. Make it listen on the PORT environment variable, or set the site's `port` to the port it uses ({UPDATE_TOOL})"
            );
        }
        Some(Probe::TimedOut) => {
            let _ = write!(
                m,
                "a connection to $PORT={port} got no HTTP answer within {} s (timeout). Make sure the app serves HTTP there, or set `health_check_path` to a path that answers quickly ({UPDATE_TOOL})",
                PROBE_TIMEOUT.as_secs()
            );
        }
        Some(status @ Probe::Status { .. }) => {
            let _ = write!(
                m,
                "it answered {}. Fix what fails (the app's output is below), or set `health_check_path` to a path that answers below 500 ({UPDATE_TOOL})",
                status.describe()
            );
        }
        Some(Probe::Failed(why)) => {
            let _ = write!(
                m,
                "{why}. Make sure the app serves HTTP on the PORT environment variable"
            );
        }
        Some(Probe::Healthy) => m.push_str("it passed too late"),
    }
    if let Some((url, other)) = printed_url(last_lines, port)
        && !elsewhere.contains(&other)
    {
        let _ = write!(
            m,
            ". The app printed {url}: a server on port {other}, not $PORT={port}; set `port` to {other}, or `start_command` if that is a development server"
        );
    }
    m
}

/// Why a start ended with the app exiting, and what to change.
pub fn exited_message(spec: &InstanceSpec, how: Option<&str>) -> String {
    let started = if spec.command.trim().is_empty() {
        "the image's own command".to_string()
    } else {
        format!("`{}`", cut(spec.command.trim(), 200))
    };
    match how {
        Some("code 0") => {
            let mut m = format!(
                "berth started {started}, which exited with code 0 before it became healthy: a web app must keep running and listen on $PORT"
            );
            if spec.command.contains("python") {
                m.push_str(
                    " (a Python script that defines an app object but never starts a server exits at once; run it with a server such as `gunicorn app:app`, or call app.run on $PORT)",
                );
            }
            let _ = write!(
                m,
                ". Set `start_command` to the command that starts your server ({UPDATE_TOOL}); its last output is below"
            );
            m
        }
        Some(how) => format!(
            "the app exited with {how} before it became healthy (berth started {started}); its last output is below. If that is not your server's command, set `start_command` ({UPDATE_TOOL})"
        ),
        None => format!("the app exited before it became healthy (berth started {started}); its last output is below"),
    }
}

/// A local URL the app printed on another port than `port` (a dev server's
/// `Local: http://localhost:5173/`), the newest first.
pub fn printed_url(lines: &[String], port: u16) -> Option<(String, u16)> {
    for line in lines.iter().rev() {
        for (at, _) in line.match_indices("http") {
            let rest = &line[at..];
            let Some(after) = rest.strip_prefix("http://").or_else(|| rest.strip_prefix("https://")) else {
                continue;
            };
            let end = after
                .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'' || c == ')')
                .unwrap_or(after.len());
            let authority = &after[..end];
            let Some((host, p)) = authority.rsplit_once(':') else {
                continue;
            };
            let local = matches!(host, "localhost" | "127.0.0.1" | "0.0.0.0" | "[::]" | "[::1]");
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(other) = digits.parse::<u16>()
                && local
                && other != port
            {
                let url = cut(&rest[..rest.len() - after.len() + end], 100);
                return Some((url, other));
            }
        }
    }
    None
}

fn join_ports(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_servers_url_on_another_port_is_found() {
        let lines = vec![
            "  VITE v5.0.0  ready in 300 ms".to_string(),
            "  ➜  Local:   http://localhost:5173/".to_string(),
            "listening on http://0.0.0.0:8080".to_string(),
        ];
        assert_eq!(
            printed_url(&lines, 8080),
            Some(("http://localhost:5173".to_string(), 5173))
        );
        assert_eq!(printed_url(&lines[2..], 8080), None);
        assert_eq!(printed_url(&["see https://example.com:8443/x".to_string()], 8080), None);
    }

    #[test]
    fn html_bodies_are_quoted_as_text_in_a_few_short_lines() {
        let body = "<!DOCTYPE html><html><head><title>Server Error</title></head><body><h1>KeyError: 'DATABASE_URL'</h1></body></html>";
        assert_eq!(body_lines(body, true), ["Server Error", "KeyError: 'DATABASE_URL'"]);
        let long = "x".repeat(500) + "\n" + &"line\n".repeat(20);
        let lines = body_lines(&long, false);
        assert_eq!(lines.len(), BODY_LINES);
        assert_eq!(lines[0].chars().count(), BODY_LINE_CHARS + 1);
    }
}
