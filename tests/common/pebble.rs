//! Real ACME and DNS for tests: Debian's `pebble` (an ACME test CA) and
//! `pebble-challtestsrv` (an authoritative DNS server whose records are set through its
//! management API). Both on loopback, on ports picked here.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A port free on loopback for both TCP and UDP right now, below the kernel's ephemeral
/// range (32768 and up), so that the many port-0 binds of tests running beside this one
/// cannot take it before the program it is meant for binds it (pebble binds seconds later).
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        let Ok(_tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `pebble-challtestsrv` as the authoritative DNS for every name, with no default
/// addresses (a name has only the records a test gives it).
pub struct Dns {
    child: Child,
    dns_port: u16,
    management: String,
    http: reqwest::Client,
}

impl Dns {
    /// Starts it and waits until its management API answers. Its ports are picked free
    /// and then given to it, so another process may take one in between: a server that
    /// exits (it could not listen) is started again on other ports.
    pub async fn start() -> Dns {
        for _ in 0..5 {
            let (dns_port, management_port) = (free_port(), free_port());
            let child = Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{management_port}")])
                .args(["-defaultIPv4", "", "-defaultIPv6", ""])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble-challtestsrv runs (Debian package pebble; scripts/test.sh installs it)");
            let mut dns = Dns {
                child,
                dns_port,
                management: format!("http://127.0.0.1:{management_port}"),
                http: reqwest::Client::builder().no_proxy().build().unwrap(),
            };
            // Ready once its management API answers (bounded).
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if dns.try_set("/clear-txt", json!({"host": "ready.test"})).await.is_ok() {
                    return dns;
                }
                if dns.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "pebble-challtestsrv never answered");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("pebble-challtestsrv exited at every start (ports taken?)");
    }

    /// `IP:PORT` of its DNS listener.
    pub fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.dns_port)
    }

    /// Calls a management endpoint (`/add-a`, `/set-txt`, …).
    pub async fn try_set(&self, path: &str, body: Value) -> Result<(), reqwest::Error> {
        self.http
            .post(format!("{}{path}", self.management))
            .json(&body)
            .send()
            .await?
            .error_for_status()
            .map(drop)
    }

    /// Calls a management endpoint; panics when it fails.
    pub async fn set(&self, path: &str, body: Value) {
        self.try_set(path, body.clone())
            .await
            .unwrap_or_else(|e| panic!("challtestsrv {path} {body}: {e}"));
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a pebble will listen, chosen before berth starts (berth needs the directory URL,
/// pebble needs berth's edge ports), and the TLS files of its API.
pub struct PebblePlan {
    /// Its ACME API port.
    pub port: u16,
    /// Its management port (`/roots/0`).
    pub management_port: u16,
    dir: tempfile::TempDir,
}

impl PebblePlan {
    /// Picks ports and makes the certificate pebble's API is served with.
    pub fn new() -> PebblePlan {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("api.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("api.key"), key.serialize_pem()).unwrap();
        PebblePlan {
            port: free_port(),
            management_port: free_port(),
            dir,
        }
    }

    /// The directory URL berth is given.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The PEM file berth trusts for pebble's API (`BERTH_ACME_CA_ROOTS`).
    pub fn api_root(&self) -> PathBuf {
        self.dir.path().join("api.pem")
    }

    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`,
    /// resolving names through `dns`, issuing certificates valid for `validity_seconds`.
    /// No validation sleeps; nonce rejection stays on (5 %).
    pub async fn start(self, dns: &Dns, http_port: u16, tls_port: u16, validity_seconds: u64) -> Pebble {
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{}", self.management_port),
            "certificate": self.dir.path().join("api.pem"),
            "privateKey": self.dir.path().join("api.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_seconds,
        }});
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.resolver()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::from(
                std::fs::File::create(self.dir.path().join("pebble.log")).unwrap(),
            ))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble runs (Debian package pebble; scripts/test.sh installs it)");
        let http = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let management = format!("https://127.0.0.1:{}", self.management_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        let root = loop {
            if let Ok(r) = http.get(format!("{management}/roots/0")).send().await
                && r.status().is_success()
            {
                break r.text().await.unwrap();
            }
            let log = std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "pebble never answered: {log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Pebble {
            child,
            root_pem: root,
            plan: self,
        }
    }
}

/// A running pebble.
pub struct Pebble {
    child: Child,
    /// PEM of the root its certificates chain to (what a client of the edge trusts).
    pub root_pem: String,
    plan: PebblePlan,
}

impl Pebble {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.plan.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
