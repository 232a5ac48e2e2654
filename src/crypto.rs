//! Secrets at rest: values are sealed with AES-256-GCM under the master key, bound to
//! where they belong (associated data), so a sealed value copied to another site or
//! name does not open. The master key comes from `BERTH_MASTER_KEY` or a key file made
//! once in the data dir (mode 0600).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Seals and opens secret values.
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box over a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    /// The master key from `env_key` (64 hex digits or base64 of 32 bytes), else from
    /// `DIR/master.key`, created on first use.
    pub fn load(data_dir: &Path, env_key: Option<&str>) -> anyhow::Result<Self> {
        if let Some(text) = env_key.filter(|k| !k.trim().is_empty()) {
            return Ok(Self::new(&parse_key(text.trim()).context("BERTH_MASTER_KEY")?));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            return Ok(Self::new(
                &parse_key(text.trim()).with_context(|| format!("{}", path.display()))?,
            ));
        }
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        crate::util::write_new_private_file(&path, hex::encode(key).as_bytes())?;
        Ok(Self::new(&key))
    }

    /// Seals `plaintext` for the place `context` names.
    pub fn seal(&self, plaintext: &str, context: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(format!("v1:{}", B64.encode(out)))
    }

    /// Opens a sealed value; fails if it was sealed for another context or another key.
    pub fn open(&self, sealed: &str, context: &str) -> anyhow::Result<String> {
        let raw = B64.decode(sealed.strip_prefix("v1:").context("unknown sealed format")?)?;
        if raw.len() < 12 + 16 {
            bail!("sealed value is truncated");
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("a secret could not be opened: wrong master key, or data was altered"))?;
        Ok(String::from_utf8(pt)?)
    }
}

fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(text)?
    } else {
        B64.decode(text)
            .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes as 64 hex digits or base64"))?
    };
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the master key must be exactly 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let b = SecretBox::new(&[7u8; 32]);
        let sealed = b.seal("hunter2", "site_a:TOKEN").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(b.open(&sealed, "site_a:TOKEN").unwrap(), "hunter2");
        assert!(b.open(&sealed, "site_b:TOKEN").is_err(), "bound to its place");
        assert!(
            SecretBox::new(&[8u8; 32]).open(&sealed, "site_a:TOKEN").is_err(),
            "bound to its key"
        );
        assert_ne!(
            sealed,
            b.seal("hunter2", "site_a:TOKEN").unwrap(),
            "fresh nonce each time"
        );
    }

    #[test]
    fn key_file_is_created_once_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load(dir.path(), None).unwrap();
        let sealed = a.seal("x", "c").unwrap();
        let b = SecretBox::load(dir.path(), None).unwrap();
        assert_eq!(b.open(&sealed, "c").unwrap(), "x");
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(SecretBox::load(dir.path(), Some("short")).is_err());
        assert!(SecretBox::load(dir.path(), Some(&"ab".repeat(32))).is_ok());
    }
}
