//! Real authoritative DNS for tests: Debian's `nsd`, one zone from a zone file written
//! here, on a loopback address and port chosen by the test, stopped when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `nsd` serving one zone.
pub struct Nsd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nsd {
    /// Serves `zone` (such as `zone-a.test`) with `records` (zone-file lines relative to
    /// the zone, e.g. `app IN CNAME shop.localhost.`; an SOA is added) on `address`, and
    /// waits until it answers.
    pub fn start(address: SocketAddr, zone: &str, records: &[String]) -> Nsd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut zone_text =
            format!("$ORIGIN {zone}.\n$TTL 300\n@ IN SOA ns1.{zone}. admin.{zone}. 1 300 300 3000 300\n");
        for record in records {
            zone_text.push_str(record);
            zone_text.push('\n');
        }
        std::fs::write(path.join("zone"), zone_text).unwrap();
        let config = format!(
            "server:\n  ip-address: {ip}@{port}\n  username: \"\"\n  zonesdir: \"{dir}\"\n  database: \"\"\n  pidfile: \"{dir}/nsd.pid\"\n  xfrdfile: \"{dir}/xfrd.state\"\n  zonelistfile: \"{dir}/zone.list\"\n  logfile: \"{dir}/log\"\n  server-count: 1\n  tcp-count: 10\nremote-control:\n  control-enable: no\nzone:\n  name: {zone}\n  zonefile: zone\n",
            ip = address.ip(),
            port = address.port(),
            dir = path.display(),
        );
        std::fs::write(path.join("nsd.conf"), config).unwrap();
        let child = Command::new("/usr/sbin/nsd")
            .args(["-d", "-c"])
            .arg(path.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nsd runs (Debian package nsd; scripts/test.sh installs it)");
        let nsd = Nsd { child, _dir: dir };
        // Ready once it answers a query for the zone's SOA (bounded).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers(address, zone) {
            assert!(
                Instant::now() < deadline,
                "nsd on {address} never answered: {}",
                std::fs::read_to_string(path.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nsd
    }
}

/// Whether a DNS server at `address` answers an SOA query for `zone` (a hand-made query:
/// header, one question).
fn answers(address: SocketAddr, zone: &str) -> bool {
    let mut query = vec![0x42, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in zone.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 6, 0, 1]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    if socket.send_to(&query, address).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv(&mut buf), Ok(n) if n > 12 && buf[0] == 0x42 && buf[3] & 0x0f == 0)
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
