//! Email through an org's SMTP relay: the `smtp` provider's settings (host, port,
//! security, credentials, sender, an optional private root certificate) and sending one
//! plain-text message with lettre. Every exchange is bounded by [`SEND_TIMEOUT`]; the
//! password goes only into the AUTH exchange, never into an error, a log line or `Debug`
//! output, and failure texts (which quote the server) are scrubbed of the password and of
//! whatever the caller marks secret.

use std::net::IpAddr;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncTransport, Message, Tokio1Executor};

use crate::error::{ServiceError, ServiceResult};
use crate::platform::Platform;
use crate::platform::providers::{ConfigKey, ConfigMap, ProviderSettings, config_str};

/// Provider name in `HOSTING_SET_CONFIG`.
pub const PROVIDER: &str = "smtp";
/// The longest one connection (connect, hello, TLS, sign-in, sending) may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest failure reason passed on (it quotes the server, which berth does not control).
const MAX_REASON_CHARS: usize = 300;
/// What a set-the-settings hint says.
const SET_HINT: &str = "HOSTING_SET_CONFIG {\"provider\": \"smtp\", \"config\": {…}}";

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (submission, port 587).
    StartTls,
    /// TLS from the first byte (submissions, port 465).
    Tls,
    /// No encryption: only to a relay on this machine (loopback).
    None,
}

impl SmtpSecurity {
    /// Setting value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartTls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }

    /// The port this security usually runs on.
    fn default_port(self) -> u16 {
        match self {
            Self::StartTls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// Opened `smtp` settings of one org.
#[derive(Clone)]
pub struct SmtpConfig {
    /// Relay host name or IP address.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Connection protection.
    pub security: SmtpSecurity,
    /// Sign-in name, when the relay wants one.
    pub username: Option<String>,
    /// Sign-in password (with `username`).
    password: Option<String>,
    /// The sender of every message.
    pub from: Mailbox,
    /// PEM of a root to trust beside the system's, for a relay with a private CA.
    ca_certificate: Option<String>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from.to_string())
            .field("ca_certificate", &self.ca_certificate.is_some())
            .finish()
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    /// The recipient's address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl SmtpConfig {
    /// Parses and checks stored settings; `None` when nothing is set (not configured).
    /// Errors name the key and what it accepts; they never quote the password.
    pub fn from_map(config: &ConfigMap) -> ServiceResult<Option<Self>> {
        if config.is_empty() {
            return Ok(None);
        }
        let invalid = |m: String| ServiceError::invalid("config", m);
        let get = |k: &str| config_str(config, k).map(|v| v.map(str::trim).filter(|s| !s.is_empty()));
        let shown = |v: &str| v.chars().take(80).collect::<String>();

        let security = match get("security")? {
            None | Some("starttls") => SmtpSecurity::StartTls,
            Some("tls") => SmtpSecurity::Tls,
            Some("none") => SmtpSecurity::None,
            Some(other) => {
                return Err(invalid(format!(
                    "security must be \"starttls\" (port 587, the default), \"tls\" (port 465) or \"none\" (a relay on this machine only), not \"{}\"",
                    shown(other)
                )));
            }
        };
        let Some(host) = get("host")? else {
            return Err(invalid(format!(
                "host is required: the name of your SMTP relay, like smtp.example.com ({SET_HINT})"
            )));
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let is_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if ip.is_none() && !is_name {
            return Err(invalid(format!(
                "host '{}' is not a host name or IP address; give only the name, like smtp.example.com (the port goes in 'port')",
                shown(&host)
            )));
        }
        let host = ip.map(|ip| ip.to_string()).unwrap_or(host);
        if security == SmtpSecurity::None && !is_loopback(&host) {
            return Err(invalid(format!(
                "security \"none\" sends the password and mail unencrypted, so it is allowed only to a relay on this machine (localhost, 127.0.0.1, ::1), not to '{host}'; use \"starttls\" or \"tls\""
            )));
        }
        // A number, or its digits as text (what the dashboard's form sends).
        let port = match config.get("port") {
            None | Some(serde_json::Value::Null) => Some(security.default_port()),
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Some(serde_json::Value::String(s)) => s.trim().parse::<u16>().ok(),
            Some(_) => None,
        };
        let port = match port {
            Some(p) if p > 0 => p,
            _ => {
                return Err(invalid(format!(
                    "port must be a number from 1 to 65535 (587 for starttls, 465 for tls), not {}",
                    shown(&config.get("port").map(|v| v.to_string()).unwrap_or_default())
                )));
            }
        };
        let username = get("username")?;
        let password = match config.get("password") {
            None => None,
            Some(serde_json::Value::String(p)) if !p.is_empty() => Some(p.as_str()),
            Some(serde_json::Value::String(_)) => None,
            Some(_) => return Err(invalid("password must be a string".into())),
        };
        match (username, password) {
            (Some(_), None) => {
                return Err(invalid(
                    "username is set but password is not: set both (the relay's sign-in), or neither".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "password is set but username is not: set both (the relay's sign-in), or neither".into(),
                ));
            }
            _ => {}
        }
        if let Some(user) = username
            && (user.len() > 256 || user.chars().any(char::is_control))
        {
            return Err(invalid(
                "username must be at most 256 characters, without control characters".into(),
            ));
        }
        if password.is_some_and(|p| p.len() > 1024 || p.chars().any(|c| c == '\r' || c == '\n' || c == '\0')) {
            return Err(invalid(
                "password must be at most 1024 characters, without line breaks or NUL".into(),
            ));
        }
        let Some(from) = get("from")? else {
            return Err(invalid(format!(
                "from is required: the sender address, like \"berth <noreply@example.com>\" or noreply@example.com ({SET_HINT})"
            )));
        };
        let from: Mailbox = from.parse().map_err(|_| {
            invalid(format!(
                "from '{}' is not an email address; use noreply@example.com or \"berth <noreply@example.com>\"",
                shown(from)
            ))
        })?;
        let ca_certificate = get("ca_certificate")?.map(str::to_string);
        if let Some(pem) = &ca_certificate {
            let parsed = Certificate::from_pem(pem.as_bytes());
            if !pem.contains("-----BEGIN CERTIFICATE-----") || parsed.is_err() {
                return Err(invalid(
                    "ca_certificate must be a PEM certificate (-----BEGIN CERTIFICATE----- …): the root that signed the relay's certificate".into(),
                ));
            }
        }
        Ok(Some(Self {
            host,
            port,
            security,
            username: username.map(str::to_string),
            password: password.map(str::to_string),
            from,
            ca_certificate,
        }))
    }

    /// The transport these settings describe; `hello_name` is berth's own host name.
    fn transport(&self, hello_name: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let tls = match self.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(self.tls_parameters()?),
            SmtpSecurity::Tls => Tls::Wrapper(self.tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
            .port(self.port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT))
            .hello_name(client_id(hello_name));
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }

    fn tls_parameters(&self) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(self.host.clone());
        if let Some(pem) = &self.ca_certificate {
            let cert = Certificate::from_pem(pem.as_bytes())
                .map_err(|_| "ca_certificate is not a PEM certificate; set it again".to_string())?;
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map_err(|e| format!("preparing TLS for {} failed: {e}", self.host))
    }

    fn address(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// Connects, says hello, secures the connection and signs in, without sending mail:
    /// what works, or what failed and how to fix it.
    pub async fn check(&self, hello_name: &str) -> Result<String, String> {
        let transport = self.transport(hello_name)?;
        let outcome = tokio::time::timeout(SEND_TIMEOUT, transport.test_connection()).await;
        match outcome {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => Err(self.describe(&e, &[])),
            Ok(Ok(false)) => Err(format!(
                "{} answered the hello but not a NOOP; check that it is an SMTP relay",
                self.address()
            )),
            Ok(Ok(true)) => Ok(format!(
                "connected to {} ({}){}; mail is sent from {}",
                self.address(),
                self.security.as_str(),
                match &self.username {
                    Some(user) => format!(" and signed in as {user}"),
                    None => " without signing in (no username set)".to_string(),
                },
                self.from
            )),
        }
    }

    /// Sends one message, bounded by [`SEND_TIMEOUT`]. The reason of a failure names what
    /// to fix; `secrets` (e.g. a link in the body) never appear in it.
    pub async fn send(&self, hello_name: &str, email: &OutgoingEmail, secrets: &[&str]) -> Result<(), String> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|_| "the recipient is not an email address berth can send to".to_string())?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.as_str())
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| format!("the message could not be built: {e}"))?;
        let transport = self.transport(hello_name)?;
        match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => Err(self.describe(&e, secrets)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn timed_out(&self) -> String {
        format!(
            "{} did not finish within {} s; check host, port and security (starttls for 587, tls for 465)",
            self.address(),
            SEND_TIMEOUT.as_secs()
        )
    }

    /// A lettre error phrased with the fix, scrubbed of the password and `secrets`.
    fn describe(&self, e: &lettre::transport::smtp::Error, secrets: &[&str]) -> String {
        let address = self.address();
        let code = e.status().map(|c| c.to_string());
        let detail = e.to_string();
        let text = if matches!(code.as_deref(), Some("530" | "534" | "535" | "538")) {
            format!("{address} refused the username or password ({detail}); set them again with {SET_HINT}")
        } else if detail.contains("No compatible authentication mechanism") {
            format!(
                "{address} offers no sign-in method berth can use (PLAIN, LOGIN or XOAUTH2) on this connection; check security, or remove username and password if the relay needs none"
            )
        } else if e.is_tls() {
            format!(
                "TLS with {address} failed ({detail}); check security (starttls for 587, tls for 465) and, for a private CA, ca_certificate"
            )
        } else if e.is_timeout() {
            self.timed_out()
        } else if e.is_permanent() {
            format!("{address} refused the message ({detail})")
        } else if e.is_transient() {
            format!("{address} deferred the message ({detail}); try again later")
        } else if e.is_client() {
            format!("talking to {address} failed ({detail}); check that it is an SMTP relay and the security setting")
        } else {
            format!("could not reach {address} ({detail}); check host, port and security")
        };
        let mut secret_words: Vec<&str> = secrets.to_vec();
        if let Some(p) = &self.password {
            secret_words.push(p);
        }
        scrub(&text, &secret_words)
    }
}

/// Whether `host` is this machine.
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The name berth says hello with: its public host, or the loopback address.
fn client_id(hello_name: &str) -> ClientId {
    match hello_name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(IpAddr::V4(ip)) => ClientId::Ipv4(ip),
        Ok(IpAddr::V6(ip)) => ClientId::Ipv6(ip),
        Err(_) if !hello_name.is_empty() && hello_name.contains('.') => ClientId::Domain(hello_name.to_string()),
        Err(_) => ClientId::Ipv4(std::net::Ipv4Addr::LOCALHOST),
    }
}

/// `text` without any of `secrets` (each at least 4 characters), bounded in length.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "***");
    }
    if out.chars().count() > MAX_REASON_CHARS {
        out = out.chars().take(MAX_REASON_CHARS).collect::<String>() + "…";
    }
    out
}

/// The `smtp` provider in the settings registry.
pub struct SmtpSettings;

#[async_trait::async_trait]
impl ProviderSettings for SmtpSettings {
    fn name(&self) -> &'static str {
        PROVIDER
    }
    fn summary(&self) -> &'static str {
        "An SMTP relay berth sends email through (invitation links); without it berth sends no email and links are given by hand."
    }
    fn keys(&self) -> &'static [ConfigKey] {
        &[
            ConfigKey {
                name: "host",
                secret: false,
                description: "The relay's host name or IP address, like smtp.example.com (required).",
            },
            ConfigKey {
                name: "port",
                secret: false,
                description: "The relay's port, 1-65535 (default 587 for starttls, 465 for tls, 25 for none).",
            },
            ConfigKey {
                name: "security",
                secret: false,
                description: "\"starttls\" (default: STARTTLS is required), \"tls\" (TLS from the start) or \"none\" (unencrypted, only to a relay on this machine).",
            },
            ConfigKey {
                name: "username",
                secret: false,
                description: "Sign-in name at the relay (with password); omit both for a relay that needs none.",
            },
            ConfigKey {
                name: "password",
                secret: true,
                description: "Sign-in password at the relay (with username).",
            },
            ConfigKey {
                name: "from",
                secret: false,
                description: "The sender address, like \"berth <noreply@example.com>\" (required).",
            },
            ConfigKey {
                name: "ca_certificate",
                secret: false,
                description: "PEM of a root certificate to trust beside the system's, for a relay whose certificate a private CA signed.",
            },
        ]
    }
    fn validate(&self, config: &ConfigMap) -> ServiceResult<()> {
        SmtpConfig::from_map(config).map(drop)
    }
    async fn test_connection(&self, platform: &Platform, config: &ConfigMap) -> ServiceResult<String> {
        let Some(config) = SmtpConfig::from_map(config)? else {
            return Err(ServiceError::conflict(format!(
                "SMTP is not configured: {SET_HINT} with host, from, and username and password if the relay wants them"
            )));
        };
        config
            .check(&platform.hello_name())
            .await
            .map_err(ServiceError::conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn map(v: Value) -> ConfigMap {
        v.as_object().cloned().unwrap()
    }

    fn err(v: Value) -> String {
        SmtpConfig::from_map(&map(v)).unwrap_err().to_string()
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let ok = SmtpConfig::from_map(&map(json!({
            "host": "SMTP.Example.com", "username": "u", "password": "hunter2-secret", "from": "berth <noreply@example.com>"
        })))
        .unwrap()
        .unwrap();
        assert_eq!(ok.host, "smtp.example.com");
        assert_eq!((ok.port, ok.security), (587, SmtpSecurity::StartTls));
        assert!(!format!("{ok:?}").contains("hunter2"));
        assert!(SmtpConfig::from_map(&ConfigMap::new()).unwrap().is_none());

        let base = json!({"host": "smtp.example.com", "from": "a@example.com"});
        let with = |k: &str, v: Value| {
            let mut m = base.clone();
            m[k] = v;
            m
        };
        assert!(err(with("port", json!(0))).contains("port must be"));
        assert!(err(with("port", json!(70000))).contains("port must be"));
        assert!(err(with("port", json!("smtp"))).contains("port must be"));
        assert!(err(with("port", json!(true))).contains("port must be"));
        let text = SmtpConfig::from_map(&map(with("port", json!(" 2525 "))))
            .unwrap()
            .unwrap();
        assert_eq!(text.port, 2525);
        assert!(err(with("from", json!("not an address"))).contains("from '"));
        assert!(err(with("security", json!("ssl"))).contains("security must be"));
        assert!(err(with("security", json!("none"))).contains("only to a relay on this machine"));
        assert!(err(with("host", json!("smtp.example.com:587"))).contains("host '"));
        assert!(err(with("ca_certificate", json!("nope"))).contains("ca_certificate must be"));
        assert!(err(json!({"from": "a@example.com"})).contains("host is required"));
        assert!(err(json!({"host": "smtp.example.com"})).contains("from is required"));
        let lone = err(with("password", json!("hunter2-secret")));
        assert!(lone.contains("username is not"), "{lone}");
        assert!(!lone.contains("hunter2"));
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            let c = SmtpConfig::from_map(&map(json!({"host": host, "security": "none", "from": "a@example.com"})))
                .unwrap()
                .unwrap();
            assert_eq!(c.port, 25, "{host}");
        }
    }

    #[test]
    fn reasons_never_carry_secrets() {
        let reason = scrub(
            "535 5.7.8 no for hunter2-secret at /invite/berth_inv_abc",
            &["hunter2-secret", "berth_inv_abc"],
        );
        assert!(
            !reason.contains("hunter2") && !reason.contains("berth_inv_abc"),
            "{reason}"
        );
        assert!(scrub(&"x".repeat(1000), &[]).chars().count() <= MAX_REASON_CHARS + 1);
    }
}
