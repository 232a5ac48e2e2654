//! The git server's shared state: where repositories live, the push-token cache and the
//! one-time grants post-receive hooks report with. What a push means is decided in the
//! service layer (`service::git`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::store::git::GitTokenRow;
use crate::util::random_hex;

/// A post-receive callback grant is good for this long (a push that takes longer is
/// reported by nobody, and its ref changes are still applied by the fallback).
const HOOK_GRANT_TTL: Duration = Duration::from_secs(600);
/// Who a verified push token speaks for: one repository of one org.
#[derive(Clone, Debug)]
pub struct GitGrant {
    /// Org of the repository.
    pub org_id: String,
    /// Its name (as in URLs).
    pub org_name: String,
    /// Repository id.
    pub repo_id: String,
    /// Repository name.
    pub repo_name: String,
    /// The token's id (recorded as the deploy's author key).
    pub token_id: String,
}

/// Shared state of the git server.
#[derive(Default)]
pub struct GitState {
    settings: OnceLock<GitSettings>,
    pub(crate) verified: Mutex<HashMap<[u8; 32], (GitTokenRow, Instant)>>,
    hook_grants: Mutex<HashMap<String, (GitGrant, Instant)>>,
}

struct GitSettings {
    root: PathBuf,
    hooks_dir: PathBuf,
    api_addr: SocketAddr,
}

impl GitState {
    /// Sets up the git root (`DATA/git`) and its shared hooks folder, whose post-receive
    /// hook runs this binary to report pushes back over loopback.
    pub fn start(&self, data_dir: &Path, api_addr: SocketAddr) -> anyhow::Result<()> {
        let root = std::path::absolute(data_dir.join("git")).context("resolving the git root")?;
        let hooks_dir = root.join("hooks");
        std::fs::create_dir_all(&hooks_dir).with_context(|| format!("creating {}", hooks_dir.display()))?;
        let exe = std::env::current_exe().context("finding the berth binary for the git hook")?;
        let hook = hooks_dir.join("post-receive");
        let script = format!(
            "#!/bin/sh\n# Reports pushed refs to the berth server that received them.\nexec {} git-hook post-receive\n",
            shell_quote(&exe.display().to_string())
        );
        std::fs::write(&hook, script).with_context(|| format!("writing {}", hook.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        let mut api_addr = api_addr;
        if api_addr.ip().is_unspecified() {
            api_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = self.settings.set(GitSettings {
            root,
            hooks_dir,
            api_addr,
        });
        Ok(())
    }

    fn settings(&self) -> &GitSettings {
        self.settings.get().expect("GitState::start runs before serving")
    }

    /// Folder holding an org's bare repositories (the CGI's project root).
    pub fn org_root(&self, org_id: &str) -> PathBuf {
        self.settings().root.join(org_id)
    }

    /// The shared hooks folder (set as `core.hooksPath` for every request).
    pub fn hooks_dir(&self) -> &Path {
        &self.settings().hooks_dir
    }

    /// The control plane's address, for URLs handed out and the hook's callback.
    pub fn api_addr(&self) -> SocketAddr {
        self.settings().api_addr
    }

    /// A one-time grant the post-receive hook of one push presents to report its refs.
    pub fn issue_hook_grant(&self, grant: &GitGrant) -> String {
        let token = random_hex(24);
        let mut grants = self.hook_grants.lock().expect("hook grants lock");
        grants.retain(|_, (_, at)| at.elapsed() < HOOK_GRANT_TTL);
        grants.insert(token.clone(), (grant.clone(), Instant::now()));
        token
    }

    /// Redeems a hook grant (once).
    pub fn take_hook_grant(&self, token: &str) -> Option<GitGrant> {
        let mut grants = self.hook_grants.lock().expect("hook grants lock");
        grants
            .remove(token)
            .filter(|(_, at)| at.elapsed() < HOOK_GRANT_TTL)
            .map(|(g, _)| g)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
