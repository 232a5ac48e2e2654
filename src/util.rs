//! Small shared helpers: clocks, identifiers, and redaction.

use rand::RngCore;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, the one time unit the store uses.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats store milliseconds as RFC 3339 for outputs people and agents read.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
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

/// Recreates the tree at `from` under `to` (which must not exist) with hard links to the
/// same files: a copy that costs no data, for build output that is never rewritten in
/// place. Symlinks are recreated as they are.
pub fn link_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::hard_link(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn link_tree_links_files_and_keeps_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        std::fs::create_dir_all(from.join("sub/deep")).unwrap();
        std::fs::write(from.join("top.txt"), "top").unwrap();
        std::fs::write(from.join("sub/deep/f.txt"), "deep").unwrap();
        std::os::unix::fs::symlink("sub/deep/f.txt", from.join("link")).unwrap();
        let to = dir.path().join("b");
        link_tree(&from, &to).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("sub/deep/f.txt")).unwrap(), "deep");
        assert_eq!(std::fs::read_to_string(to.join("link")).unwrap(), "deep");
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            std::path::Path::new("sub/deep/f.txt")
        );
        let (a, b) = (
            std::fs::metadata(from.join("top.txt")).unwrap(),
            std::fs::metadata(to.join("top.txt")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "the same file, linked");
        // A new file in one tree does not appear in the other.
        std::fs::write(to.join("new.txt"), "x").unwrap();
        assert!(!from.join("new.txt").exists());
        assert!(link_tree(&from, &to).is_err(), "an existing target is refused");
    }
}
