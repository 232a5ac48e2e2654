//! The TCP ports an instance's own processes listen on, for apps that ignore `$PORT`
//! (a hard-coded 3000, a framework's default). The socket inodes held open by the
//! instance's process tree (`/proc/<pid>/fd`) are matched against the listening sockets
//! of that tree's network namespace (`/proc/<pid>/net/tcp`, `tcp6`): only the instance's
//! own sockets count, so in the plain sandbox on the host network no other program's port
//! is ever picked, and in a namespace of its own nothing outside it is even seen.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// One listening TCP socket of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// The port.
    pub port: u16,
    /// The address it is bound to.
    pub addr: IpAddr,
    /// Whether the edge can reach it at the instance's address (see [`Listeners`]).
    pub reachable: bool,
}

/// Finds the listening sockets of one launched instance.
#[derive(Clone, Copy, Debug)]
pub struct Listeners {
    /// The process at the root of the instance's tree (the sandbox's outer process).
    leader: u32,
    /// Whether a socket bound to IPv4 loopback is reached at the instance's address: on
    /// the host network the edge connects to loopback itself, and in a namespace of its
    /// own TCP arriving there is forwarded to loopback; a container's is not.
    loopback: bool,
}

impl Listeners {
    /// The sockets of a local instance: the process tree under `leader`.
    pub fn of_tree(leader: u32) -> Self {
        Self { leader, loopback: true }
    }

    /// The sockets of a container whose first process is `pid` on this host (a local
    /// engine), reached at the container's own address.
    pub fn of_container(pid: u32) -> Self {
        Self {
            leader: pid,
            loopback: false,
        }
    }

    /// Whether a socket bound to `addr` is reached at the instance's address.
    fn reaches(&self, addr: IpAddr) -> bool {
        let v4 = match addr {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) if ip.is_unspecified() => return true,
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
        v4.is_some_and(|ip| ip.is_unspecified() || (self.loopback && ip.is_loopback()))
    }

    /// The TCP sockets the tree listens on now, by port (blocking: reads `/proc`).
    pub fn scan(&self) -> Vec<Listener> {
        let pids = berth_build::step::tree_pids(self.leader);
        let mut inodes = HashSet::new();
        // One process per network namespace is enough to read that namespace's table.
        let mut namespaces: Vec<(String, u32)> = Vec::new();
        for pid in pids {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let before = inodes.len();
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path())
                    && let Some(inode) = socket_inode(&target.to_string_lossy())
                {
                    inodes.insert(inode);
                }
            }
            if inodes.len() > before
                && let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            {
                let ns = ns.to_string_lossy().into_owned();
                if !namespaces.iter().any(|(n, _)| *n == ns) {
                    namespaces.push((ns, pid));
                }
            }
        }
        let mut found: Vec<Listener> = Vec::new();
        for (_, pid) in namespaces {
            for table in ["tcp", "tcp6"] {
                let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
                found.extend(
                    parse_table(&text)
                        .into_iter()
                        .filter(|(_, inode)| inodes.contains(inode))
                        .map(|(l, _)| Listener {
                            reachable: self.reaches(l.addr),
                            ..l
                        }),
                );
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// The inode of an fd link such as `socket:[12345]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The listening sockets of a `/proc/net/tcp` or `tcp6` table, with their inodes.
fn parse_table(text: &str) -> Vec<(Listener, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let (addr, port) = fields.get(1)?.split_once(':')?;
            let listener = Listener {
                port: u16::from_str_radix(port, 16).ok()?,
                addr: parse_addr(addr)?,
                reachable: false,
            };
            Some((listener, fields.get(9)?.parse().ok()?))
        })
        .collect()
}

/// An address as the kernel prints it: 32-bit words in hex, each in host byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_yield_listening_sockets_with_their_inodes() {
        let loopback = u32::from_ne_bytes([127, 0, 0, 1]);
        let v4 = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             0: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n   \
             1: {loopback:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0 100 0 0 10 0\n   \
             2: {loopback:08X}:1F90 {loopback:08X}:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0 20 4 30 10 -1\n"
        );
        let found = parse_table(&v4);
        assert_eq!(
            found,
            vec![
                (
                    Listener {
                        port: 3000,
                        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        reachable: false
                    },
                    4242
                ),
                (
                    Listener {
                        port: 8080,
                        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        reachable: false
                    },
                    4343
                ),
            ],
            "an established connection is not a listener"
        );
        let v6 = "  sl  local_address remote_address st\n   \
                  0: 00000000000000000000000000000000:1435 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1\n";
        let found = parse_table(v6);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.port, 5173);
        assert_eq!(found[0].0.addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
    }

    #[test]
    fn only_sockets_reached_at_the_instances_address_are_routable() {
        let (local, container) = (Listeners::of_tree(1), Listeners::of_container(1));
        let at = |addr: &str| addr.parse::<IpAddr>().unwrap();
        for every in ["0.0.0.0", "::"] {
            assert!(local.reaches(at(every)) && container.reaches(at(every)));
        }
        for loopback in ["127.0.0.1", "::ffff:127.0.0.1"] {
            assert!(local.reaches(at(loopback)) && !container.reaches(at(loopback)));
        }
        for other in ["::1", "10.1.2.3"] {
            assert!(!local.reaches(at(other)) && !container.reaches(at(other)));
        }
    }

    #[test]
    fn a_process_tree_listening_is_found_and_other_sockets_are_not() {
        // A listener of this test process is not in a child's tree.
        let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let found = Listeners::of_tree(child.id()).scan();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            found,
            vec![Listener {
                port,
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                reachable: true
            }]
        );
        assert!(!found.iter().any(|l| l.port == mine.local_addr().unwrap().port()));
    }
}
