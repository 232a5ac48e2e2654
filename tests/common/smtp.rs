//! A real SMTP relay for tests: Debian's `python3-aiosmtpd` on a loopback port it picks
//! itself, with STARTTLS required before AUTH (aiosmtpd's default), one account, and a
//! handler that stores each accepted message as a file; stopped when dropped. Its
//! certificate is self-signed and made here, so berth trusts it through `ca_certificate`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The relay: a small aiosmtpd program. Arguments: folder, user, password, cert, key.
/// It writes the port it bound to `<folder>/port`, each message to `<folder>/mail/N.eml`
/// (envelope recipients, the main headers and the plain-text body, decoded as a mail
/// client would), and each sign-in attempt's
/// outcome to `<folder>/auth.log`.
const RELAY: &str = r#"
import asyncio, email, email.policy, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

folder, user, password, cert, key = sys.argv[1:6]
mail = os.path.join(folder, "mail")
os.makedirs(mail, exist_ok=True)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
    with open(os.path.join(folder, "auth.log"), "a") as log:
        log.write(("ok " if ok else "refused ") + mechanism + "\n")
    # handled=False: aiosmtpd itself answers a refusal (535).
    return AuthResult(success=ok, handled=False)

class Store:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Store.count += 1
        path = os.path.join(mail, "%04d.eml" % Store.count)
        # Decoded as a mail client would (headers, quoted-printable body).
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        text = "X-Rcpt-To: %s\nFrom: %s\nTo: %s\nSubject: %s\nContent-Type: %s\n\n%s" % (
            ",".join(envelope.rcpt_tos), msg["From"], msg["To"], msg["Subject"],
            msg.get_content_type(), msg.get_body(("plain",)).get_content())
        with open(path + ".tmp", "w") as out:
            out.write(text)
        os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"

def relay():
    return SMTP(Store(), hostname="localhost", tls_context=context, require_starttls=True,
                authenticator=authenticate, auth_require_tls=True, auth_required=True)

async def main():
    server = await asyncio.get_running_loop().create_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open(os.path.join(folder, "port.tmp"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(folder, "port.tmp"), os.path.join(folder, "port"))
    await server.serve_forever()

asyncio.run(main())
"#;

/// A running relay.
pub struct SmtpRelay {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// PEM of its certificate (what berth's `ca_certificate` trusts).
    pub certificate: String,
}

impl SmtpRelay {
    /// Starts a relay that accepts the sign-in `user` / `password`, and waits until it
    /// listens (bounded).
    pub fn start(user: &str, password: &str) -> SmtpRelay {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("relay.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("relay.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("relay.py"), RELAY).unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(dir.path().join("relay.py"))
            .arg(dir.path())
            .args([user, password])
            .arg(dir.path().join("relay.pem"))
            .arg(dir.path().join("relay.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("relay.log")).unwrap(),
            ))
            .spawn()
            .expect("python3 runs (Debian packages python3 and python3-aiosmtpd; scripts/test.sh installs them)");
        let mut relay = SmtpRelay {
            child,
            port: 0,
            certificate: cert.pem(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        relay.port = loop {
            if let Ok(port) = std::fs::read_to_string(relay.dir.path().join("port"))
                && let Ok(port) = port.trim().parse()
            {
                break port;
            }
            assert!(
                Instant::now() < deadline && relay.child.try_wait().unwrap().is_none(),
                "the SMTP relay did not start: {}",
                relay.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        relay
    }

    /// The relay's own output (its errors, if any).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// Sign-in outcomes so far, one line each (`ok PLAIN`, `refused LOGIN`).
    pub fn sign_ins(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("auth.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }
}

impl Drop for SmtpRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
