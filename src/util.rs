//! Small shared helpers: clocks, identifiers, and redaction.

use std::net::IpAddr;

use rand::RngCore;
use time::OffsetDateTime;

/// Whether an address is on the public internet (not loopback, private, link-local,
/// shared, documentation, multicast or reserved).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || s[0] == 0x0064)
        }
    }
}

/// Milliseconds since the Unix epoch, the one time unit the store uses.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats store milliseconds as RFC 3339 for outputs people and agents read, always
/// with three fraction digits in UTC (`2026-11-30T08:01:12.390Z`): fixed width, so the
/// text sorts like the time.
pub fn rfc3339(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A new sortable identifier with a short type prefix (`site_…`, `dpl_…`).
pub fn new_id(prefix: &str) -> String {
    let uuid = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{uuid}")
}

/// `n` random bytes, hex encoded: key material and tokens.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Equal-length comparison that does not stop at the first difference (tokens, CSRF
/// values, PKCE challenges).
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && !a.is_empty() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Copies the tree at `from` to `to` (which must not exist) with `cp -a`: modes,
/// symlinks and timestamps kept (packages' own `.bin` links rely on them), data shared
/// only as reflinks where the file system has them. Never hard links: each copy's
/// files are its own inodes, so writing one never changes the other.
pub async fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    if to.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    let status = tokio::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg("--")
        .arg(from)
        .arg(to)
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("cp exited with {status}")))
    }
}

/// Writes `contents` to a new file at `path` that only its owner may read (a key made at
/// first start), synced; refuses a file that exists.
pub fn write_new_private_file(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn tokens_compare_whole() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "abcd"));
        assert!(!tokens_match("", ""), "an empty token never matches");
    }

    #[test]
    fn timestamps_have_a_fixed_width_and_sort_as_text() {
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(1_700_000_000_280), "2023-11-14T22:13:20.280Z");
        assert_eq!(rfc3339(1_700_000_000_007), "2023-11-14T22:13:20.007Z");
        let times = [
            1_700_000_000_009,
            1_700_000_000_010,
            1_700_000_000_100,
            1_700_000_001_000,
        ];
        let texts: Vec<String> = times.iter().map(|t| rfc3339(*t)).collect();
        assert!(
            texts.windows(2).all(|w| w[0] < w[1] && w[0].len() == w[1].len()),
            "{texts:?}"
        );
    }

    #[tokio::test]
    async fn copy_tree_copies_files_and_keeps_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        std::fs::create_dir_all(from.join("sub/deep")).unwrap();
        std::fs::write(from.join("top.txt"), "top").unwrap();
        std::fs::write(from.join("sub/deep/f.txt"), "deep").unwrap();
        std::os::unix::fs::symlink("sub/deep/f.txt", from.join("link")).unwrap();
        let to = dir.path().join("b");
        copy_tree(&from, &to).await.unwrap();
        assert_eq!(std::fs::read_to_string(to.join("sub/deep/f.txt")).unwrap(), "deep");
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            std::path::Path::new("sub/deep/f.txt")
        );
        let (a, b) = (
            std::fs::metadata(from.join("top.txt")).unwrap(),
            std::fs::metadata(to.join("top.txt")).unwrap(),
        );
        assert_ne!(a.ino(), b.ino(), "a file of its own");
        std::fs::write(to.join("top.txt"), "changed").unwrap();
        assert_eq!(std::fs::read_to_string(from.join("top.txt")).unwrap(), "top");
        assert!(copy_tree(&from, &to).await.is_err(), "an existing target is refused");
    }
}
