//! A real registry that requires authentication: Debian's `docker-registry` (installed by
//! `scripts/docker-test-env.sh`, as is python3-bcrypt) with `auth: htpasswd`, on a free
//! loopback port (dockerd treats 127.0.0.0/8 registries as insecure: no TLS needed), its
//! storage and bcrypt htpasswd file in a temporary folder. The password reaches python on
//! its standard input, never a command line.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};

/// A running registry, stopped when dropped.
pub struct AuthRegistry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl AuthRegistry {
    /// Starts a registry accepting only `username` with `password`.
    pub async fn start(username: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut python = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import bcrypt, sys; sys.stdout.write(bcrypt.hashpw(sys.stdin.read().encode(), bcrypt.gensalt(rounds=5)).decode())",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (with python3-bcrypt) runs");
        python
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("write the password");
        let out = python.wait_with_output().expect("python3 finishes");
        assert!(
            out.status.success(),
            "bcrypt hashing failed (is python3-bcrypt installed?)"
        );
        let hash = String::from_utf8(out.stdout).expect("utf-8");
        std::fs::write(dir.path().join("htpasswd"), format!("{username}:{hash}\n")).expect("write htpasswd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n",
            data = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("write config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log file"))
            .spawn()
            .expect("docker-registry runs (scripts/docker-test-env.sh installs it)");
        let registry = Self {
            address,
            child,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            let answer = client.get(format!("http://{}/v2/", registry.address)).send().await;
            if answer.is_ok_and(|r| r.status() == 401) {
                return registry;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the registry at {} did not come up", registry.address);
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
