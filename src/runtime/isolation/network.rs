//! A network namespace per sandboxed command tree: a veth pair whose host end is
//! `bth<slot>` and whose other end is the namespace's `eth0`, on a /30 of the app subnet.
//! The host firewall (one set of chains shared by every berth on the machine) lets
//! namespaces reach the public internet and the host's DNS resolvers and nothing else:
//! not the host itself (its loopback, the control plane, any service), not each other,
//! not private, shared, link-local or multicast ranges. Inside, TCP arriving on `eth0` is
//! forwarded to the namespace's loopback, so an app listening on `127.0.0.1` is
//! reachable by the edge as one listening on every address. The whole subnet is routed
//! `unreachable` on the host, so the address of a namespace that is gone answers at once
//! with an error and nothing for it ever leaves the machine.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tokio::process::Command;

/// Ranges no app may open connections to (besides the app subnet itself): "this
/// network", private (RFC 1918), shared address space (carrier NAT), loopback,
/// link-local (cloud metadata endpoints live there), IETF protocol assignments,
/// benchmarking, multicast and reserved.
pub const BLOCKED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The app subnet: a /30 per slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppSubnet {
    base: Ipv4Addr,
    prefix: u8,
}

impl AppSubnet {
    /// Parses `A.B.C.D/N` (N from 8 to 28; the base must be aligned to N).
    pub fn parse(text: &str) -> Result<AppSubnet, String> {
        let bad = || format!("'{text}' is not an IPv4 subnet such as 10.213.0.0/16");
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=28).contains(&prefix) {
            return Err(format!("the app subnet {text} must be between a /8 and a /28"));
        }
        if u32::from(base) & !mask(prefix) != 0 {
            return Err(format!("{text} is not aligned: its host bits must be zero"));
        }
        Ok(AppSubnet { base, prefix })
    }

    /// How many slots (a /30 each) fit.
    pub fn slots(&self) -> u32 {
        1 << (30 - self.prefix)
    }

    /// Host and namespace addresses of slot `index`.
    pub fn pair(&self, index: u32) -> (Ipv4Addr, Ipv4Addr) {
        let block = u32::from(self.base) + index * 4;
        (Ipv4Addr::from(block + 1), Ipv4Addr::from(block + 2))
    }
}

impl std::fmt::Display for AppSubnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
}

/// The host's IPv4 DNS resolvers from `/etc/resolv.conf` (apps bind the same file, so
/// these are the servers they ask). Loopback resolvers cannot be reached from a
/// namespace and are left out.
pub fn host_resolvers() -> Vec<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// The host firewall rules, as one `iptables-restore --noflush` input: declaring berth's
/// chains flushes and refills them in one commit, so concurrent starts never see a
/// half-written chain.
pub fn firewall_rules(subnet: AppSubnet, resolvers: &[Ipv4Addr]) -> String {
    let mut r = String::from("*filter\n:BERTH-FWD - [0:0]\n:BERTH-EGRESS - [0:0]\n:BERTH-IN - [0:0]\n");
    r += "-A BERTH-FWD -i bth+ -j BERTH-EGRESS\n";
    r += "-A BERTH-FWD -o bth+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    r += "-A BERTH-FWD -o bth+ -j DROP\n";
    r += "-A BERTH-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    for ip in resolvers {
        for proto in ["udp", "tcp"] {
            r += &format!("-A BERTH-EGRESS -d {ip}/32 -p {proto} --dport 53 -j ACCEPT\n");
        }
    }
    r += &format!("-A BERTH-EGRESS -d {subnet} -j REJECT --reject-with icmp-net-prohibited\n");
    r += &format!(
        "-A BERTH-EGRESS -d {} -j REJECT --reject-with icmp-net-prohibited\n",
        BLOCKED_RANGES.join(",")
    );
    r += "-A BERTH-EGRESS -j ACCEPT\n";
    r += "-A BERTH-IN -i bth+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    r += "-A BERTH-IN -i bth+ -p tcp -j REJECT --reject-with tcp-reset\n";
    r += "-A BERTH-IN -i bth+ -j REJECT --reject-with icmp-port-unreachable\n";
    r += "COMMIT\n*nat\n:BERTH-NAT - [0:0]\n";
    r += &format!("-A BERTH-NAT -s {subnet} ! -d {subnet} -j MASQUERADE\n");
    r += "COMMIT\n";
    r
}

/// The same egress policy as an nftables table of berth's own, on the forward hook just
/// before iptables' filter chains (priority -1). dockerd deletes and re-inserts its
/// `FORWARD -j DOCKER-USER` jump whenever a network is created; for that moment its own
/// accept rules for every bridge come first, and berth's iptables chains would be skipped.
/// Nothing else writes this table, so its order never changes. A drop or reject here is
/// final; an accept only ends this chain, and the iptables rules still apply after it.
/// Replaced whole in one transaction.
pub fn guard_rules(subnet: AppSubnet, resolvers: &[Ipv4Addr]) -> String {
    let blocked = std::iter::once(subnet.to_string())
        .chain(BLOCKED_RANGES.iter().map(|r| r.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = String::from(
        "table ip berth_guard {}
delete table ip berth_guard
table ip berth_guard {
",
    );
    r += "  chain egress {
";
    r += "    ct state established,related accept
";
    if !resolvers.is_empty() {
        let list = resolvers.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ");
        r += &format!(
            "    ip daddr {{ {list} }} meta l4proto {{ tcp, udp }} th dport 53 accept
"
        );
    }
    r += &format!(
        "    ip daddr {{ {blocked} }} reject with icmp type net-prohibited
"
    );
    r += "  }
";
    r += "  chain forward {
    type filter hook forward priority -1; policy accept;
";
    r += "    iifname \"bth*\" jump egress
";
    r += "    oifname \"bth*\" ct state established,related accept
";
    r += "    oifname \"bth*\" drop
";
    r += "  }
}
";
    r
}

/// Puts the firewall in place (idempotent; shared by every berth on the machine).
pub async fn install_firewall(subnet: AppSubnet) -> Result<(), String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("cannot enable IPv4 forwarding for app egress: {e}"))?;
    // An address of the subnet whose namespace is gone must go nowhere, never out the
    // default route: each live slot's /30 is more specific than this.
    run("ip", &["route", "replace", "unreachable", &subnet.to_string()]).await?;
    let rules = firewall_rules(subnet, &host_resolvers());
    run_with_input("iptables-restore", &["-w", "--noflush"], &rules).await?;
    for (table, chain, target) in [
        ("filter", "FORWARD", "BERTH-FWD"),
        ("filter", "INPUT", "BERTH-IN"),
        ("nat", "POSTROUTING", "BERTH-NAT"),
    ] {
        let rule = ["-w", "-t", table, "-C", chain, "-j", target];
        if run("iptables", &rule).await.is_err() {
            run("iptables", &["-w", "-t", table, "-I", chain, "1", "-j", target]).await?;
        }
    }
    // Docker's FORWARD rules accept whatever leaves its bridges, and a dockerd started
    // after berth puts them above berth's jump. DOCKER-USER comes before all of them (and
    // Docker never changes it): org bridges (`bthd…`) meet berth's rules first whatever
    // started first. Made here if dockerd has not made it yet; it keeps it.
    let _ = run("iptables", &["-w", "-N", "DOCKER-USER"]).await;
    if run("iptables", &["-w", "-C", "DOCKER-USER", "-j", "BERTH-FWD"])
        .await
        .is_err()
    {
        run("iptables", &["-w", "-I", "DOCKER-USER", "1", "-j", "BERTH-FWD"]).await?;
    }
    // The same policy where Docker cannot reorder it (see `guard_rules`).
    run_with_input("nft", &["-f", "-"], &guard_rules(subnet, &host_resolvers()))
        .await
        .map_err(|e| format!("{e}; install nftables (the nft command)"))?;
    Ok(())
}

/// One slot's namespace and veth pair.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    /// The namespace's address, where the edge reaches the app.
    pub addr: Ipv4Addr,
}

impl Namespace {
    /// The namespace and host interface names of slot `index`.
    pub fn names(index: u32) -> (String, String) {
        (format!("berth-{index}"), format!("bth{index}"))
    }

    /// Creates the namespace of slot `index`, wired and firewalled.
    pub async fn create(subnet: AppSubnet, index: u32) -> Result<Namespace, String> {
        let (name, veth) = Self::names(index);
        let (host, inside) = subnet.pair(index);
        // Leftovers of a crashed run that held this slot (looked for first: removing one
        // costs a process, and there usually is none).
        if std::path::Path::new("/run/netns").join(&name).exists() {
            let _ = run("ip", &["netns", "del", &name]).await;
        }
        if std::path::Path::new("/sys/class/net").join(&veth).exists() {
            let _ = run("ip", &["link", "del", &veth]).await;
        }
        let ns = Namespace { name, addr: inside };
        let host_side = format!(
            "netns add {n}\nlink add {veth} type veth peer name eth0 netns {n}\naddr add {host}/30 dev {veth}\nlink set {veth} up\n",
            n = ns.name
        );
        run_with_input("ip", &["-batch", "-"], &host_side).await?;
        // The host end gets no IPv6 address, so nothing on the host is reachable over it.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1");
        let inside_setup =
            format!("addr add {inside}/30 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {host}\n");
        let path = ns.path();
        tokio::task::spawn_blocking(move || set_up_inside(&path, &inside_setup))
            .await
            .map_err(|e| e.to_string())??;
        Ok(ns)
    }

    /// Where `nsenter --net=` finds it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Removes the namespace (and with it the veth pair).
    pub async fn remove(&self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]).await {
            tracing::warn!(netns = %self.name, error = %e, "removing an app network namespace failed");
        }
    }
}

/// Sets up the inside of the namespace at `netns` from a thread that joins it (and then
/// ends, so no other work runs there): `ip_batch` (its address, loopback and route), and
/// TCP arriving on `eth0` forwarded to its loopback (`route_localnet` and one DNAT rule).
/// Two processes, where `ip -n` and `nsenter … sh -c` took four.
fn set_up_inside(netns: &std::path::Path, ip_batch: &str) -> Result<(), String> {
    let (netns, ip_batch) = (netns.to_path_buf(), ip_batch.to_string());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).map_err(|e| format!("{}: {e}", netns.display()))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot enter {}: {e}", netns.display()))?;
        run_blocking("ip", &["-batch", "-"], &ip_batch)?;
        // Sysctls of `net` are the calling thread's namespace's.
        for conf in ["all", "eth0"] {
            let path = format!("/proc/sys/net/ipv4/conf/{conf}/route_localnet");
            std::fs::write(&path, "1").map_err(|e| format!("{path}: {e}"))?;
        }
        let dnat = [
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "eth0",
            "-p",
            "tcp",
            "-j",
            "DNAT",
            "--to-destination",
            "127.0.0.1",
        ];
        run_blocking("iptables", &dnat, "")
    })
    .join()
    .map_err(|_| "setting up an app network namespace failed (its thread panicked)".to_string())?
}

/// [`run_with_input`] for a blocking thread: the child is forked from it, so it starts in
/// that thread's namespaces.
fn run_blocking(program: &str, args: &[&str], input: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the namespace of slot `index` if one is left (blocking; for sweeps).
pub fn remove_blocking(index: u32) {
    let (name, veth) = Namespace::names(index);
    let _ = std::process::Command::new("ip").args(["netns", "del", &name]).output();
    let _ = std::process::Command::new("ip").args(["link", "del", &veth]).output();
}

async fn run(program: &str, args: &[&str]) -> Result<(), String> {
    run_with_input(program, args, "").await
}

async fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child.wait_with_output().await.map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_split_into_slots_of_four_addresses() {
        let s = AppSubnet::parse("10.213.0.0/16").unwrap();
        assert_eq!(s.slots(), 16_384);
        assert_eq!(
            s.pair(0),
            ("10.213.0.1".parse().unwrap(), "10.213.0.2".parse().unwrap())
        );
        assert_eq!(
            s.pair(64),
            ("10.213.1.1".parse().unwrap(), "10.213.1.2".parse().unwrap())
        );
        assert!(AppSubnet::parse("10.213.0.1/16").unwrap_err().contains("aligned"));
        assert!(AppSubnet::parse("10.213.0.0/30").is_err());
        assert!(AppSubnet::parse("nonsense").is_err());
    }

    #[test]
    fn firewall_allows_resolvers_before_it_rejects_private_ranges() {
        let rules = firewall_rules(
            AppSubnet::parse("10.213.0.0/16").unwrap(),
            &["10.255.255.53".parse().unwrap()],
        );
        let dns = rules.find("-d 10.255.255.53/32 -p udp --dport 53 -j ACCEPT").unwrap();
        let private = rules.find("10.0.0.0/8").unwrap();
        assert!(dns < private, "{rules}");
        assert!(rules.contains("169.254.0.0/16"));
        assert!(rules.trim_end().ends_with("COMMIT"));
        assert!(rules.contains("-A BERTH-NAT -s 10.213.0.0/16 ! -d 10.213.0.0/16 -j MASQUERADE"));
    }
}
