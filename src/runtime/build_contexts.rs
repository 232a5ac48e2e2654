//! Build contexts a builder outside berth downloads once: a deployment's source folder
//! packed as `.tar.gz` into berth's data dir (mode 0600, at most [`MAX_CONTEXT_BYTES`]),
//! offered under a random token (32 bytes) at `GET /internal/build-contexts/{token}`
//! for at most [`CONTEXT_TTL`]. The token is the credential: the first request that
//! presents it takes the file (a second gets nothing), and the offer goes when the build
//! ends, whichever comes first. Tokens are kept as SHA-256 digests and compared in
//! constant time; at most [`MAX_OFFERED`] offers are open at once.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// Largest packed build context (compressed).
pub const MAX_CONTEXT_BYTES: u64 = 500 * 1024 * 1024;
/// How long an offered context can be downloaded.
pub const CONTEXT_TTL: Duration = Duration::from_secs(15 * 60);
/// Most contexts offered at once.
pub const MAX_OFFERED: usize = 64;

/// The contexts on offer.
pub struct BuildContexts {
    dir: PathBuf,
    offered: Mutex<HashMap<String, Offered>>,
}

struct Offered {
    /// Hex SHA-256 of the token.
    token_digest: String,
    file: PathBuf,
    expires: Instant,
}

/// One offered context; the offer (and its file) goes when this is dropped.
pub struct ContextOffer {
    contexts: Arc<BuildContexts>,
    id: String,
    token: String,
    /// Bytes of the packed context.
    pub bytes: u64,
}

impl ContextOffer {
    /// The token to put into the download URL (never logged).
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for ContextOffer {
    fn drop(&mut self) {
        self.contexts.withdraw(&self.id);
    }
}

/// A writer that refuses to go past [`MAX_CONTEXT_BYTES`].
struct Bounded<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(TOO_LARGE));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

const TOO_LARGE: &str = "context too large";

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl BuildContexts {
    /// Contexts kept in `dir` (created 0700; leftovers of an earlier run removed).
    pub fn new(dir: PathBuf) -> std::io::Result<Arc<Self>> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Arc::new(Self {
            dir,
            offered: Mutex::default(),
        }))
    }

    /// Packs `app_dir` (as image builds pack it: `.gitignore`d files and `.git` left out)
    /// and offers it under a new token.
    pub async fn offer(self: &Arc<Self>, app_dir: &Path) -> Result<ContextOffer, String> {
        self.offer_bounded(app_dir, MAX_CONTEXT_BYTES).await
    }

    async fn offer_bounded(self: &Arc<Self>, app_dir: &Path, limit: u64) -> Result<ContextOffer, String> {
        self.sweep();
        if self.offered.lock().expect("contexts lock").len() >= MAX_OFFERED {
            return Err(format!(
                "{MAX_OFFERED} build contexts are already waiting to be downloaded; try again when builds have finished"
            ));
        }
        let id = crate::util::random_hex(16);
        let file = self.dir.join(format!("{id}.tar.gz"));
        let (dir, path) = (app_dir.to_path_buf(), file.clone());
        let packed = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let out = options
                .open(&path)
                .map_err(|e| format!("internal error: writing the build context: {e}"))?;
            let mut bounded = Bounded {
                inner: std::io::BufWriter::new(out),
                written: 0,
                limit,
            };
            let packed = berth_build::pack_dir_tar_gz(&dir, &mut bounded).and_then(|_| {
                bounded.flush().map_err(berth_build::ArchiveError::Io)
            });
            match packed {
                Ok(()) => Ok(bounded.written),
                Err(e) if e.to_string().contains(TOO_LARGE) => Err(format!(
                    "the build context (the app folder packed as .tar.gz) is larger than {} MiB: leave build outputs and dependencies out of the repository (.gitignore)",
                    limit / (1024 * 1024)
                )),
                Err(e) => Err(format!("could not pack the app folder for the build: {e}")),
            }
        })
        .await
        .map_err(|e| format!("internal error: packing the build context: {e}"))
        .and_then(|r| r);
        let bytes = match packed {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
        };
        let token = crate::util::random_hex(32);
        self.offered.lock().expect("contexts lock").insert(
            id.clone(),
            Offered {
                token_digest: digest(&token),
                file,
                expires: Instant::now() + CONTEXT_TTL,
            },
        );
        Ok(ContextOffer {
            contexts: self.clone(),
            id,
            token,
            bytes,
        })
    }

    /// The context offered under `token`, taken: the offer is gone, the file unlinked (the
    /// open handle still reads it). `None` for an unknown, used or expired token.
    pub fn take(&self, token: &str) -> Option<std::fs::File> {
        let presented = digest(token);
        let mut offered = self.offered.lock().expect("contexts lock");
        // Every entry is compared, each in constant time.
        let mut found = None;
        for (id, o) in offered.iter() {
            if crate::util::tokens_match(&o.token_digest, &presented) {
                found = Some(id.clone());
            }
        }
        let o = offered.remove(&found?)?;
        drop(offered);
        let file = std::fs::File::open(&o.file).ok();
        let _ = std::fs::remove_file(&o.file);
        file.filter(|_| Instant::now() < o.expires)
    }

    /// Removes an offer and its file.
    fn withdraw(&self, id: &str) {
        if let Some(o) = self.offered.lock().expect("contexts lock").remove(id) {
            let _ = std::fs::remove_file(&o.file);
        }
    }

    /// Removes expired offers.
    fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .offered
            .lock()
            .expect("contexts lock")
            .iter()
            .filter(|(_, o)| o.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.withdraw(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_context_is_taken_once_and_gone_with_its_offer() {
        let data = tempfile::tempdir().unwrap();
        let app = data.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("Dockerfile"), "FROM scratch\n").unwrap();
        let contexts = BuildContexts::new(data.path().join("contexts")).unwrap();
        let offer = contexts.offer(&app).await.unwrap();
        assert!(contexts.take("0".repeat(64).as_str()).is_none(), "a wrong token");
        assert!(contexts.take(offer.token()).is_some());
        assert!(contexts.take(offer.token()).is_none(), "a second download");
        let second = contexts.offer(&app).await.unwrap();
        let token = second.token().to_string();
        drop(second);
        assert!(contexts.take(&token).is_none(), "the build ended");
        assert_eq!(std::fs::read_dir(data.path().join("contexts")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_context_over_the_limit_is_refused_naming_the_limit() {
        let data = tempfile::tempdir().unwrap();
        let app = data.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("blob"), crate::util::random_hex(200_000)).unwrap();
        let contexts = BuildContexts::new(data.path().join("contexts")).unwrap();
        let err = contexts.offer_bounded(&app, 64 * 1024).await.err().unwrap();
        assert!(err.contains("larger than") && err.contains(".gitignore"), "{err}");
        assert_eq!(std::fs::read_dir(data.path().join("contexts")).unwrap().count(), 0);
    }
}
