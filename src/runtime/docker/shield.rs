//! Keeps containers away from the control plane. On its default loopback address the API
//! is out of their reach (a container's loopback is its own); bound to another address it
//! would be reachable through the org network's gateway, so berth then rejects TCP from
//! each org bridge to the control plane's ports with one iptables rule per port (in the
//! host's INPUT chain, where traffic from a container to the host itself arrives). The
//! rules carry a comment naming the installation, so they can be found and removed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::process::Command;

use super::engine::Engine;

/// Closes `ports` to containers of the networks it has seen.
#[derive(Clone, Default)]
pub struct Shield {
    ports: Vec<u16>,
    /// Networks whose rules are in place.
    done: Arc<Mutex<HashSet<String>>>,
}

impl Shield {
    /// Closes `ports` (the control plane's); none: nothing to do.
    pub fn new(ports: Vec<u16>) -> Self {
        Self {
            ports,
            done: Arc::default(),
        }
    }

    /// Whether there are ports to close.
    pub fn is_active(&self) -> bool {
        !self.ports.is_empty()
    }

    /// Makes sure containers on `network` (an id) cannot open connections to the
    /// control plane's ports. Fails (and the container is not started) when the rule
    /// cannot be put in place.
    pub async fn close(&self, engine: &Engine, network: &str, owner: &str) -> Result<(), String> {
        if self.ports.is_empty() || self.done.lock().expect("shield lock").contains(network) {
            return Ok(());
        }
        let bridge = bridge_name(engine, network).await?;
        for port in &self.ports {
            let rule = rule(&bridge, *port, owner);
            if iptables("-C", &rule).await.is_ok() {
                continue;
            }
            iptables("-I", &rule).await.map_err(|e| {
                format!(
                    "could not keep containers from reaching the control plane on port {port} (the API listens on a non-loopback address): {e}; install iptables, or bind the API to 127.0.0.1"
                )
            })?;
        }
        self.done.lock().expect("shield lock").insert(network.to_string());
        Ok(())
    }
}

/// The host interface of a bridge network.
async fn bridge_name(engine: &Engine, network: &str) -> Result<String, String> {
    let info = engine
        .docker()
        .inspect_network(network, None)
        .await
        .map_err(|e| engine.error(e).to_string())?;
    let named = info
        .options
        .unwrap_or_default()
        .get("com.docker.network.bridge.name")
        .cloned();
    Ok(named.unwrap_or_else(|| format!("br-{}", &network[..network.len().min(12)])))
}

/// The INPUT rule (after the chain name) that rejects TCP from `bridge` to `port`.
fn rule(bridge: &str, port: u16, owner: &str) -> Vec<String> {
    [
        "INPUT",
        "-i",
        bridge,
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-m",
        "comment",
        "--comment",
        &comment(owner),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The comment on this installation's rules.
pub fn comment(owner: &str) -> String {
    format!("berth {owner}: control plane")
}

async fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()
        .await
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {op}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_names_the_bridge_port_and_installation() {
        let r = rule("br-0123456789ab", 7070, "own");
        assert_eq!(
            r.join(" "),
            "INPUT -i br-0123456789ab -p tcp --dport 7070 -m comment --comment berth own: control plane -j REJECT --reject-with tcp-reset"
        );
    }
}
