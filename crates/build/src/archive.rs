//! Source uploads as tar.gz: packing a local folder on the client side and
//! extracting an untrusted upload on the server side.
//!
//! This module owns the *safety* of that boundary. An upload is attacker
//! controlled, so extraction refuses anything that could write or point
//! outside the destination folder (absolute paths, `..`, writing through a
//! symlink, symlinks leaving the tree), anything that is not a plain file,
//! folder or in-tree symlink (hard links, devices, FIFOs, sparse files), and
//! anything too big (compressed size, unpacked size, entry count, and the
//! unpacked/compressed ratio as bytes flow, to stop compression bombs early).
//!
//! Packing is the friendly mirror image: it honours `.gitignore`/`.ignore`,
//! never ships `.git`, keeps in-tree symlinks as symlinks and leaves out links
//! that would be refused on the other side.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use tar::EntryType;

/// Size limits applied while extracting an upload.
///
/// All limits are enforced while bytes flow, so a hostile archive is stopped
/// as soon as it crosses a limit instead of after it has filled the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Maximum size of the compressed upload as read from the reader.
    pub max_compressed_bytes: u64,
    /// Maximum number of bytes produced by decompression (file contents plus
    /// tar headers), i.e. roughly the size of the unpacked tree.
    pub max_unpacked_bytes: u64,
    /// Maximum number of archive entries (files, folders and symlinks).
    pub max_entries: u64,
    /// Maximum unpacked/compressed ratio. Checked continuously once more than
    /// [`RATIO_GRACE_BYTES`] have been unpacked (tiny archives legitimately
    /// have huge ratios because of tar padding). `0` disables the check.
    pub max_ratio: u64,
}

/// Unpacked bytes allowed before the compression-ratio check kicks in.
///
/// A small archive of text files is mostly tar header padding and can easily
/// reach ratios of 100+; a megabyte of output is harmless no matter how small
/// its input was.
pub const RATIO_GRACE_BYTES: u64 = 1024 * 1024;

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_compressed_bytes: 100 * 1024 * 1024,
            max_unpacked_bytes: 1024 * 1024 * 1024,
            max_entries: 100_000,
            max_ratio: 200,
        }
    }
}

/// Why an upload could not be packed or extracted. Every message is meant to
/// be shown to the person who uploaded and tells them what to change.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The compressed upload or its unpacked contents exceed a size limit.
    #[error(
        "the {what} is larger than the {} limit; leave build outputs and dependencies (e.g. node_modules, .venv) out of the upload by listing them in .gitignore",
        fmt_bytes(*.limit)
    )]
    TooLarge {
        /// What was measured: "compressed upload" or "unpacked upload".
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// The archive has more entries than allowed.
    #[error(
        "the upload has more than {limit} entries (files, folders and links); leave generated files and dependencies out of it by listing them in .gitignore"
    )]
    TooManyEntries {
        /// The entry limit.
        limit: u64,
    },
    /// The archive decompresses far more than its compressed size suggests.
    #[error(
        "the upload expands to more than {limit} times its compressed size, which looks like a compression bomb; leave large generated or padded files out of the upload"
    )]
    CompressionBomb {
        /// The ratio limit.
        limit: u64,
    },
    /// An entry's path (or a symlink's target) would reach outside the
    /// destination folder.
    #[error("archive entry '{path}' {reason}")]
    UnsafePath {
        /// The entry's path as stored in the archive (lossily decoded).
        path: String,
        /// Why it was refused, phrased to follow the quoted path.
        reason: &'static str,
    },
    /// An entry of a kind uploads may not contain (hard link, device, ...).
    #[error(
        "archive entry '{path}' is a {kind}, which uploads may not contain; only regular files, folders and symlinks that stay inside the folder are allowed"
    )]
    UnsupportedEntry {
        /// The entry's path as stored in the archive (lossily decoded).
        path: String,
        /// Human name of the entry type, e.g. "hard link".
        kind: &'static str,
    },
    /// The data is not a valid gzip-compressed tar archive.
    #[error("the upload is not a valid tar.gz archive: {0}")]
    Corrupt(String),
    /// Reading the upload or writing the tree failed for a reason that is not
    /// the upload's fault (disk full, permissions, connection dropped).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

const ESCAPES: &str = "escapes the upload root; paths must be relative and inside the folder";
const ABSOLUTE: &str = "is an absolute path; paths must be relative and inside the folder";
const EMPTY_PATH: &str = "has an empty path";
const NUL_BYTE: &str = "contains a NUL byte in its path or link target";
const THROUGH_SYMLINK: &str =
    "goes through a symlink; files must not be written through links, upload the real folder instead";
const CONFLICT: &str = "conflicts with an earlier entry of a different kind (file vs folder)";
const LINK_ABSOLUTE: &str = "is a symlink with an absolute target; use a relative target that stays inside the folder";
const LINK_ESCAPES: &str = "is a symlink that points outside the upload root; links must stay inside the folder";
const LINK_LOOP: &str = "is part of a symlink loop or a chain of more than 40 links";
const LINK_EMPTY: &str = "is a symlink with an empty target";

/// What [`extract_tar_gz`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Regular files written.
    pub files: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Folder entries in the archive (parents created implicitly not counted).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
}

/// What [`pack_dir_tar_gz`] put into the archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Regular files packed.
    pub files: u64,
    /// Bytes of file contents packed (uncompressed).
    pub bytes: u64,
    /// Folders packed.
    pub dirs: u64,
    /// Symlinks packed.
    pub symlinks: u64,
    /// Relative paths left out because the server would refuse them
    /// (symlinks pointing outside the folder, sockets, FIFOs, devices).
    pub skipped: Vec<String>,
}

// ---------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------

/// Which limit a byte counter tripped. Kept outside the reader because the
/// tar crate wraps reader errors in its own, and we want a precise message.
#[derive(Clone, Copy, Debug)]
enum Violation {
    Compressed,
    Unpacked,
    Ratio,
}

#[derive(Default)]
struct Budget {
    compressed: Cell<u64>,
    unpacked: Cell<u64>,
    violation: Cell<Option<Violation>>,
}

impl Budget {
    fn trip(&self, v: Violation) -> io::Error {
        if self.violation.get().is_none() {
            self.violation.set(Some(v));
        }
        io::Error::other("upload limit exceeded")
    }
}

/// Counts bytes read from the raw (compressed) upload.
struct CompressedCounter<R> {
    inner: R,
    budget: Rc<Budget>,
    limit: u64,
}

impl<R: Read> Read for CompressedCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.budget.compressed.get() + n as u64;
        self.budget.compressed.set(total);
        if total > self.limit {
            return Err(self.budget.trip(Violation::Compressed));
        }
        Ok(n)
    }
}

/// Counts bytes coming out of the decompressor and enforces the unpacked and
/// ratio limits on every read, so a bomb is stopped after at most one buffer.
struct UnpackedCounter<R> {
    inner: R,
    budget: Rc<Budget>,
    max_unpacked: u64,
    max_ratio: u64,
}

impl<R: Read> Read for UnpackedCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.budget.unpacked.get() + n as u64;
        self.budget.unpacked.set(total);
        if total > self.max_unpacked {
            return Err(self.budget.trip(Violation::Unpacked));
        }
        if self.max_ratio > 0
            && total > RATIO_GRACE_BYTES
            && total > self.max_ratio.saturating_mul(self.budget.compressed.get())
        {
            return Err(self.budget.trip(Violation::Ratio));
        }
        Ok(n)
    }
}

/// Extracts an untrusted tar.gz upload into `dest`.
///
/// `dest` should be a fresh, empty folder that the caller owns (it is created
/// if missing). On error this function removes everything it wrote (and
/// `dest` itself if it created it), but the caller should still treat `dest`
/// as garbage and delete it: never build from a folder whose extraction
/// failed.
///
/// Refused (with an [`ArchiveError`] naming the entry): absolute paths, `..`
/// components, entries whose parent path goes through a symlink, symlinks with
/// absolute targets or targets that resolve outside the tree (following
/// chains of symlinks in the archive), hard links, devices, FIFOs, sparse
/// files, and any limit in `limits` being crossed.
///
/// File modes are normalised: executable files become `0755`, others `0644`,
/// folders `0755`; setuid/setgid/sticky bits and ownership are dropped. A
/// later entry for the same path replaces an earlier one, like `tar` does.
/// pax global headers (written by `git archive`) are ignored.
pub fn extract_tar_gz(reader: impl Read, dest: &Path, limits: &ArchiveLimits) -> Result<ExtractStats, ArchiveError> {
    let created_dest = match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => false,
        Ok(_) => {
            return Err(ArchiveError::Io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("extraction destination {} exists and is not a folder", dest.display()),
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|e| io_at(dest, e))?;
            true
        }
        Err(e) => return Err(io_at(dest, e)),
    };
    let mut ex = Extractor {
        dest,
        created: Vec::new(),
        symlinks: HashMap::new(),
        stats: ExtractStats::default(),
    };
    match ex.run(reader, limits) {
        Ok(()) => Ok(ex.stats),
        Err(e) => {
            ex.cleanup(created_dest);
            Err(e)
        }
    }
}

struct Extractor<'a> {
    dest: &'a Path,
    /// Everything we created, in creation order, for cleanup on error.
    created: Vec<PathBuf>,
    /// Symlinks created so far: relative link path → target.
    symlinks: HashMap<PathBuf, PathBuf>,
    stats: ExtractStats,
}

impl Extractor<'_> {
    fn run(&mut self, reader: impl Read, limits: &ArchiveLimits) -> Result<(), ArchiveError> {
        let budget = Rc::new(Budget::default());
        let compressed = CompressedCounter {
            inner: reader,
            budget: budget.clone(),
            limit: limits.max_compressed_bytes,
        };
        let unpacked = UnpackedCounter {
            inner: MultiGzDecoder::new(compressed),
            budget: budget.clone(),
            max_unpacked: limits.max_unpacked_bytes,
            max_ratio: limits.max_ratio,
        };
        let mut archive = tar::Archive::new(unpacked);
        let entries = archive.entries().map_err(|e| read_error(e, &budget, limits))?;
        let mut count: u64 = 0;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_error(e, &budget, limits))?;
            count += 1;
            if count > limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }
            self.entry(&mut entry, &budget, limits)?;
        }
        if count == 0 && budget.unpacked.get() == 0 {
            // An empty gzip stream is almost certainly a broken upload, not an
            // intentionally empty project.
            return Err(ArchiveError::Corrupt("the upload is empty".into()));
        }
        self.verify_symlinks()
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        budget: &Budget,
        limits: &ArchiveLimits,
    ) -> Result<(), ArchiveError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // `git archive` writes one of these (holding the commit id); it
            // carries no file.
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let Some(rel) = sanitize_path(&raw_path, &display)? else {
            // "." / "./": the destination itself.
            return Ok(());
        };
        let unsupported = |kind: &'static str| ArchiveError::UnsupportedEntry {
            path: display.clone(),
            kind,
        };
        match kind {
            EntryType::Regular | EntryType::Continuous => self.file(entry, &rel, &display, budget, limits),
            EntryType::Directory => self.dir(&rel, &display),
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                self.symlink(&rel, &display, &target)
            }
            EntryType::Link => Err(unsupported("hard link")),
            EntryType::Char => Err(unsupported("character device")),
            EntryType::Block => Err(unsupported("block device")),
            EntryType::Fifo => Err(unsupported("FIFO (named pipe)")),
            EntryType::GNUSparse => Err(unsupported("sparse file")),
            EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader | EntryType::XGlobalHeader => Err(
                ArchiveError::Corrupt(format!("dangling extension header before '{display}'")),
            ),
            _ => Err(unsupported("entry of unknown type")),
        }
    }

    /// Creates missing parent folders of `rel`, refusing to go through
    /// symlinks or files.
    fn ensure_parents(&mut self, rel: &Path, display: &str) -> Result<(), ArchiveError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut cur = self.dest.to_path_buf();
        for comp in parent.components() {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(unsafe_path(display, THROUGH_SYMLINK));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(unsafe_path(display, CONFLICT)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| io_at(&cur, e))?;
                    self.created.push(cur.clone());
                    set_mode(&cur, 0o755)?;
                }
                Err(e) => return Err(io_at(&cur, e)),
            }
        }
        Ok(())
    }

    /// Makes room for a new non-folder entry at `path`: a later entry replaces
    /// an earlier file or symlink (tar semantics), but never a folder.
    fn clear_slot(&mut self, path: &Path, display: &str) -> Result<(), ArchiveError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Err(unsafe_path(display, CONFLICT)),
            Ok(_) => {
                fs::remove_file(path).map_err(|e| io_at(path, e))?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(path, e)),
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        display: &str,
        budget: &Budget,
        limits: &ArchiveLimits,
    ) -> Result<(), ArchiveError> {
        // Fail before writing anything if the header already admits the file
        // is too big; the byte counters would catch it later anyway.
        if entry.size() > limits.max_unpacked_bytes {
            return Err(ArchiveError::TooLarge {
                what: "unpacked upload",
                limit: limits.max_unpacked_bytes,
            });
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| ArchiveError::Corrupt(format!("bad mode for '{display}': {e}")))?;
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        self.ensure_parents(rel, display)?;
        self.symlinks.remove(rel);
        let path = self.dest.join(rel);
        self.clear_slot(&path, display)?;
        // create_new = O_EXCL: never follows a symlink that might have
        // appeared at this path.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| io_at(&path, e))?;
        self.created.push(path.clone());
        let mut buf = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| read_error(e, budget, limits))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(|e| io_at(&path, e))?;
            written += n as u64;
        }
        drop(file);
        // Explicit chmod: the umask must not decide, and this is where
        // setuid/setgid/sticky are guaranteed gone.
        set_mode(&path, mode)?;
        self.stats.files += 1;
        self.stats.bytes += written;
        Ok(())
    }

    fn dir(&mut self, rel: &Path, display: &str) -> Result<(), ArchiveError> {
        self.ensure_parents(rel, display)?;
        let path = self.dest.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path(display, THROUGH_SYMLINK));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(unsafe_path(display, CONFLICT)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(|e| io_at(&path, e))?;
                self.created.push(path.clone());
                set_mode(&path, 0o755)?;
            }
            Err(e) => return Err(io_at(&path, e)),
        }
        self.stats.dirs += 1;
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, display: &str, target: &[u8]) -> Result<(), ArchiveError> {
        if target.is_empty() {
            return Err(unsafe_path(display, LINK_EMPTY));
        }
        if target.contains(&0) {
            return Err(unsafe_path(display, NUL_BYTE));
        }
        let target = PathBuf::from(OsStr::from_bytes(target));
        // Cheap lexical check now (so an obviously hostile link is never even
        // created); the chain-aware check runs once all links are known.
        resolve_symlink(rel, &target, &mut |_| None).map_err(|r| unsafe_path(display, r))?;
        self.ensure_parents(rel, display)?;
        let path = self.dest.join(rel);
        self.clear_slot(&path, display)?;
        std::os::unix::fs::symlink(&target, &path).map_err(|e| io_at(&path, e))?;
        self.created.push(path);
        self.symlinks.insert(rel.to_path_buf(), target);
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A link that is fine on its own can still escape through another link
    /// (`a -> .`, then `b -> a/..`), so every link is resolved again with all
    /// links of the archive known.
    fn verify_symlinks(&self) -> Result<(), ArchiveError> {
        let mut links: Vec<_> = self.symlinks.iter().collect();
        links.sort();
        for (link, target) in links {
            resolve_symlink(link, target, &mut |p| self.symlinks.get(p).cloned())
                .map_err(|r| unsafe_path(&link.to_string_lossy(), r))?;
        }
        Ok(())
    }

    fn cleanup(&self, created_dest: bool) {
        if created_dest {
            // Everything inside is ours. remove_dir_all does not follow
            // symlinks, so hostile links cannot redirect the deletion.
            let _ = fs::remove_dir_all(self.dest);
            return;
        }
        for path in self.created.iter().rev() {
            match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir_all(path);
                }
                Ok(_) => {
                    let _ = fs::remove_file(path);
                }
                Err(_) => {}
            }
        }
    }
}

/// Turns an archive path into a safe relative path (`None` for the root).
fn sanitize_path(raw: &[u8], display: &str) -> Result<Option<PathBuf>, ArchiveError> {
    if raw.is_empty() {
        return Err(unsafe_path(display, EMPTY_PATH));
    }
    if raw.contains(&0) {
        return Err(unsafe_path(display, NUL_BYTE));
    }
    let mut out = PathBuf::new();
    for comp in Path::new(OsStr::from_bytes(raw)).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path(display, ESCAPES)),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path(display, ABSOLUTE));
            }
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// Resolves the symlink at `link` (relative to the tree root) pointing to
/// `target` the way the kernel would, substituting other symlinks of the tree
/// via `lookup` (relative path → its target, `None` if not a symlink).
///
/// Returns the refusal reason if resolution would leave the tree, uses an
/// absolute target, or loops. Dangling links are fine: they cannot be used
/// to reach anything.
fn resolve_symlink(
    link: &Path,
    target: &Path,
    lookup: &mut dyn FnMut(&Path) -> Option<PathBuf>,
) -> Result<(), &'static str> {
    enum Part {
        Up,
        Name(OsString),
    }
    fn parts(p: &Path) -> Result<Vec<Part>, &'static str> {
        let mut out = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(n) => out.push(Part::Name(n.to_os_string())),
                Component::ParentDir => out.push(Part::Up),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return Err(LINK_ABSOLUTE),
            }
        }
        Ok(out)
    }
    let mut cur: Vec<OsString> = link
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str().to_os_string()).collect())
        .unwrap_or_default();
    let mut pending: VecDeque<Part> = parts(target)?.into();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part {
            Part::Up => {
                if cur.pop().is_none() {
                    return Err(LINK_ESCAPES);
                }
            }
            Part::Name(n) => {
                cur.push(n);
                let here: PathBuf = cur.iter().collect();
                if let Some(next) = lookup(&here) {
                    hops += 1;
                    if hops > 40 {
                        return Err(LINK_LOOP);
                    }
                    cur.pop();
                    for p in parts(&next)?.into_iter().rev() {
                        pending.push_front(p);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Maps an error from the read side (gzip/tar/upload stream) to the most
/// useful [`ArchiveError`].
fn read_error(e: io::Error, budget: &Budget, limits: &ArchiveLimits) -> ArchiveError {
    match budget.violation.get() {
        Some(Violation::Compressed) => ArchiveError::TooLarge {
            what: "compressed upload",
            limit: limits.max_compressed_bytes,
        },
        Some(Violation::Unpacked) => ArchiveError::TooLarge {
            what: "unpacked upload",
            limit: limits.max_unpacked_bytes,
        },
        Some(Violation::Ratio) => ArchiveError::CompressionBomb {
            limit: limits.max_ratio,
        },
        None => match e.kind() {
            // tar reports format problems as `Other`, flate2 as
            // InvalidData/InvalidInput, truncation as UnexpectedEof.
            io::ErrorKind::Other
            | io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof => ArchiveError::Corrupt(e.to_string()),
            _ => ArchiveError::Io(e),
        },
    }
}

fn unsafe_path(display: &str, reason: &'static str) -> ArchiveError {
    ArchiveError::UnsafePath {
        path: display.to_string(),
        reason,
    }
}

fn io_at(path: &Path, e: io::Error) -> ArchiveError {
    ArchiveError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ArchiveError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_at(path, e))
}

/// Formats a byte count for humans ("100 MiB").
fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

// ---------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------

/// Packs `dir` into a tar.gz written to `out`, the way an upload should look.
///
/// * `.gitignore` and `.ignore` files are honoured (also without a git
///   repository); global git excludes and ignore files in parent folders are
///   not, so the result does not depend on the machine it runs on.
/// * Hidden files are included; `.git` (folder or submodule file) never is.
///   `node_modules` is included only if nothing ignores it.
/// * Paths are stored relative to `dir`; files keep only their executable
///   bit, ownership is not recorded.
/// * Symlinks that stay inside `dir` are stored as symlinks; symlinks leaving
///   it, sockets, FIFOs and devices are left out and listed in
///   [`PackStats::skipped`] (the server would refuse them).
pub fn pack_dir_tar_gz(dir: &Path, out: impl Write) -> Result<PackStats, ArchiveError> {
    let meta = fs::metadata(dir).map_err(|e| io_at(dir, e))?;
    if !meta.is_dir() {
        return Err(ArchiveError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a folder", dir.display()),
        )));
    }
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .ignore(true)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != OsStr::new(".git"))
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();

    let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    let mut stats = PackStats::default();
    for item in walker {
        let entry = item.map_err(|e| ArchiveError::Io(io::Error::other(e.to_string())))?;
        if entry.depth() == 0 {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(dir)
            .map_err(|_| ArchiveError::Io(io::Error::other("walked outside the folder")))?;
        let meta = fs::symlink_metadata(path).map_err(|e| io_at(path, e))?;
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_uid(0);
        header.set_gid(0);
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, rel, io::empty())
                .map_err(ArchiveError::Io)?;
            stats.dirs += 1;
        } else if ft.is_file() {
            let size = meta.len();
            header.set_entry_type(EntryType::Regular);
            header.set_mode(if meta.mode() & 0o111 != 0 { 0o755 } else { 0o644 });
            header.set_size(size);
            let file = fs::File::open(path).map_err(|e| io_at(path, e))?;
            // `take` + count: a file that grows or shrinks while we read it
            // must not desynchronise the archive's size fields.
            let mut counted = CountingRead {
                inner: file.take(size),
                count: 0,
            };
            builder
                .append_data(&mut header, rel, &mut counted)
                .map_err(|e| io_at(path, e))?;
            if counted.count != size {
                return Err(ArchiveError::Io(io::Error::other(format!(
                    "{} changed size while it was being packed; try again",
                    path.display()
                ))));
            }
            stats.files += 1;
            stats.bytes += size;
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|e| io_at(path, e))?;
            let verdict = resolve_symlink(rel, &target, &mut |p| {
                let full = dir.join(p);
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.file_type().is_symlink() => fs::read_link(&full).ok(),
                    _ => None,
                }
            });
            if let Err(reason) = verdict {
                tracing::warn!(
                    path = %rel.display(),
                    target = %target.display(),
                    "leaving symlink out of the upload: it {reason}"
                );
                stats.skipped.push(rel.to_string_lossy().into_owned());
                continue;
            }
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, rel, &target)
                .map_err(|e| io_at(path, e))?;
            stats.symlinks += 1;
        } else {
            tracing::warn!(path = %rel.display(), "leaving special file (socket, FIFO or device) out of the upload");
            stats.skipped.push(rel.to_string_lossy().into_owned());
        }
    }
    let gz = builder.into_inner().map_err(ArchiveError::Io)?;
    let mut out = gz.finish().map_err(ArchiveError::Io)?;
    out.flush().map_err(ArchiveError::Io)?;
    Ok(stats)
}

struct CountingRead<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
