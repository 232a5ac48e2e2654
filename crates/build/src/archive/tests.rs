//! Tests for packing and hostile-archive extraction. Hostile archives are
//! crafted byte by byte with the `tar` crate's `Header` API, because the
//! `Builder` conveniences refuse to write most of them.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;

// ----- helpers --------------------------------------------------------------

/// Deterministic incompressible bytes (xorshift), so size limits are hit by
/// the unpacked counter and not by the ratio guard.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Builds raw tar streams, including entries the `Builder` helpers refuse.
struct RawTar {
    b: tar::Builder<Vec<u8>>,
}

impl RawTar {
    fn new() -> Self {
        RawTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &[u8], kind: EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        assert!(name.len() <= 100, "use long_name for long paths");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        h
    }

    fn entry(mut self, name: &str, kind: EntryType, data: &[u8], mode: u32) -> Self {
        let h = Self::header(name.as_bytes(), kind, data.len() as u64, mode);
        self.b.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, EntryType::Regular, data, 0o644)
    }

    fn dir(self, name: &str) -> Self {
        self.entry(name, EntryType::Directory, b"", 0o755)
    }

    fn link(mut self, name: &str, kind: EntryType, target: &str) -> Self {
        let mut h = Self::header(name.as_bytes(), kind, 0, 0o777);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.b.append(&h, io::empty()).unwrap();
        self
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.link(name, EntryType::Symlink, target)
    }

    /// A GNU long-name extension entry followed by the real entry, the way
    /// GNU tar stores paths over 100 bytes.
    fn long_name_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut long = name.as_bytes().to_vec();
        long.push(0);
        let h = Self::header(b"././@LongLink", EntryType::GNULongName, long.len() as u64, 0o644);
        self.b.append(&h, &long[..]).unwrap();
        self.file("placeholder", data)
    }

    /// A pax extended header overriding the next entry's path.
    fn pax_path_file(mut self, path: &str, data: &[u8]) -> Self {
        let body = format!("path={path}\n");
        // A pax record's length prefix counts itself.
        let mut len = body.len() + 2;
        loop {
            let candidate = format!("{len} {body}");
            if candidate.len() == len {
                break;
            }
            len = candidate.len();
        }
        let record = format!("{len} {body}");
        let h = Self::header(b"PaxHeader", EntryType::XHeader, record.len() as u64, 0o644);
        self.b.append(&h, record.as_bytes()).unwrap();
        self.file("placeholder", data)
    }

    fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    fn tgz(self) -> Vec<u8> {
        gz(&self.tar())
    }
}

fn extract(bytes: &[u8], dest: &Path) -> Result<ExtractStats, ArchiveError> {
    extract_tar_gz(bytes, dest, &ArchiveLimits::default())
}

/// Extracts into a fresh pre-created folder and asserts that an error left it
/// empty (nothing partial the caller could mistake for a good tree).
fn extract_err(bytes: &[u8]) -> ArchiveError {
    extract_err_with(bytes, &ArchiveLimits::default())
}

fn extract_err_with(bytes: &[u8], limits: &ArchiveLimits) -> ArchiveError {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let err = extract_tar_gz(bytes, &dest, limits).expect_err("extraction should fail");
    let left: Vec<_> = fs::read_dir(&dest).unwrap().collect();
    assert!(
        left.is_empty(),
        "failed extraction left {} entries behind ({err})",
        left.len()
    );
    // Nothing may have been written next to the destination either.
    let siblings: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec![OsString::from("dest")], "{err}");
    err
}

fn assert_unsafe(err: ArchiveError, want_path: &str, want_reason: &str) {
    match &err {
        ArchiveError::UnsafePath { path, reason } => {
            assert_eq!(path, want_path, "{err}");
            assert_eq!(*reason, want_reason, "{err}");
        }
        other => panic!("expected UnsafePath for {want_path}, got {other:?}"),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, exec: bool },
    Link(PathBuf),
}

/// Snapshot of a tree: relative path → kind, contents, exec bit, link target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                walk(root, &path, out);
            } else {
                let exec = meta.mode() & 0o111 != 0;
                out.insert(
                    rel,
                    Node::File {
                        data: fs::read(&path).unwrap(),
                        exec,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

// ----- packing --------------------------------------------------------------

#[test]
fn pack_then_extract_round_trips_and_honours_ignores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("index.html"), b"<h1>hi</h1>");
    write(&src.join("run.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&src.join(".env.example"), b"A=1");
    write(&src.join(".gitignore"), b"dist/\n*.log\n");
    write(&src.join("sub/.ignore"), b"secret.txt\n");
    write(&src.join("sub/secret.txt"), b"ignored by .ignore");
    write(&src.join("sub/deep/file.txt"), b"deep");
    write(&src.join("dist/bundle.js"), b"ignored");
    write(&src.join("debug.log"), b"ignored");
    write(&src.join(".git/config"), b"[core]");
    write(&src.join("node_modules/left-pad/index.js"), b"module.exports=1");
    fs::create_dir_all(src.join("empty")).unwrap();
    let long = format!("{}/{}.txt", "d".repeat(80), "f".repeat(90));
    write(&src.join(&long), b"long path");
    symlink("sub/deep/file.txt", src.join("to-file")).unwrap();
    symlink("sub", src.join("to-dir")).unwrap();
    symlink("../../to-dir", src.join("sub/deep/up-link")).unwrap();
    symlink("../outside", src.join("escape")).unwrap();
    symlink("/etc/passwd", src.join("absolute")).unwrap();
    // Escapes only through another link: to-dir -> sub, so to-dir/../.. is
    // the parent of the tree.
    symlink("to-dir/../..", src.join("sneaky")).unwrap();

    let mut tgz = Vec::new();
    let stats = pack_dir_tar_gz(&src, &mut tgz).unwrap();
    let mut skipped = stats.skipped.clone();
    skipped.sort();
    assert_eq!(skipped, vec!["absolute", "escape", "sneaky"]);
    assert_eq!(stats.symlinks, 3);

    let dest = tmp.path().join("dest");
    let ex = extract(&tgz, &dest).unwrap();
    assert_eq!(ex.files, stats.files);
    assert_eq!(ex.bytes, stats.bytes);
    assert_eq!(ex.symlinks, 3);

    // Expected = source minus what must not travel.
    let mut expected = snapshot(&src);
    for gone in [
        "dist",
        "dist/bundle.js",
        "debug.log",
        ".git",
        ".git/config",
        "sub/secret.txt",
        "escape",
        "absolute",
        "sneaky",
    ] {
        assert!(expected.remove(Path::new(gone)).is_some(), "{gone}");
    }
    let got = snapshot(&dest);
    assert_eq!(got, expected);
    // Spot checks that make the intent explicit.
    assert!(got.contains_key(Path::new("node_modules/left-pad/index.js")));
    assert!(got.contains_key(Path::new(".env.example")));
    assert!(got.contains_key(Path::new("empty")));
    assert!(got.contains_key(Path::new(&long)));
    assert_eq!(
        got[Path::new("run.sh")],
        Node::File {
            data: b"#!/bin/sh\necho hi\n".to_vec(),
            exec: true
        }
    );
    assert_eq!(
        fs::read(dest.join("to-dir/deep/file.txt")).unwrap(),
        b"deep",
        "directory symlink must work after extraction"
    );
}

#[test]
fn pack_leaves_out_ignored_node_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("package.json"), b"{}");
    write(&src.join(".gitignore"), b"node_modules\n");
    write(&src.join("node_modules/x/index.js"), b"x");
    let mut tgz = Vec::new();
    pack_dir_tar_gz(&src, &mut tgz).unwrap();
    let dest = tmp.path().join("dest");
    extract(&tgz, &dest).unwrap();
    assert!(dest.join("package.json").exists());
    assert!(!dest.join("node_modules").exists());
}

#[test]
fn pack_never_ships_git_even_when_not_ignored_and_as_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a.txt"), b"a");
    write(&src.join(".git/HEAD"), b"ref: refs/heads/main");
    // A submodule checkout has a `.git` *file*.
    write(&src.join("vendor/lib/.git"), b"gitdir: ../../.git/modules/lib");
    write(&src.join("vendor/lib/lib.c"), b"int x;");
    let mut tgz = Vec::new();
    pack_dir_tar_gz(&src, &mut tgz).unwrap();
    let dest = tmp.path().join("dest");
    extract(&tgz, &dest).unwrap();
    let names: Vec<_> = snapshot(&dest).into_keys().collect();
    assert!(!names.iter().any(|p| p.ends_with(".git")), "{names:?}");
    assert!(dest.join("vendor/lib/lib.c").exists());
}

// ----- extraction: hostile paths --------------------------------------------

#[test]
fn refuses_parent_dir_traversal_and_cleans_up() {
    let tgz = RawTar::new()
        .file("good.txt", b"written first")
        .dir("sub")
        .file("../x", b"evil")
        .tgz();
    let err = extract_err(&tgz);
    assert_eq!(
        err.to_string(),
        "archive entry '../x' escapes the upload root; paths must be relative and inside the folder"
    );
    assert_unsafe(err, "../x", ESCAPES);
}

#[test]
fn refuses_traversal_hidden_in_the_middle_of_a_path() {
    let tgz = RawTar::new().file("a/../../x", b"evil").tgz();
    assert_unsafe(extract_err(&tgz), "a/../../x", ESCAPES);
    // Even `a/..` (which stays inside) is refused: no legitimate packer
    // writes it and refusing is simpler than reasoning about it.
    let tgz = RawTar::new().file("a/../x", b"x").tgz();
    assert_unsafe(extract_err(&tgz), "a/../x", ESCAPES);
}

#[test]
fn refuses_absolute_paths() {
    let tgz = RawTar::new().file("/tmp/berth-evil", b"evil").tgz();
    assert_unsafe(extract_err(&tgz), "/tmp/berth-evil", ABSOLUTE);
    assert!(!Path::new("/tmp/berth-evil").exists());
}

#[test]
fn refuses_traversal_in_gnu_long_names_and_pax_paths() {
    let long = format!("../{}/x", "a".repeat(150));
    let tgz = RawTar::new().long_name_file(&long, b"evil").tgz();
    assert_unsafe(extract_err(&tgz), &long, ESCAPES);

    let tgz = RawTar::new().pax_path_file("../../pax-evil", b"evil").tgz();
    assert_unsafe(extract_err(&tgz), "../../pax-evil", ESCAPES);
}

#[test]
fn long_names_inside_the_tree_are_fine() {
    let long = format!("{}/x.txt", "a".repeat(150));
    let tgz = RawTar::new().long_name_file(&long, b"ok").tgz();
    let tmp = tempfile::tempdir().unwrap();
    extract(&tgz, tmp.path()).unwrap();
    assert_eq!(fs::read(tmp.path().join(&long)).unwrap(), b"ok");
}

#[test]
fn refuses_writing_through_a_symlinked_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // `link -> .` stays inside, so the link itself is accepted; writing
    // `link/...` must still be refused because the parent is a link.
    let tgz = RawTar::new()
        .symlink("link", ".")
        .file("link/x.txt", b"through the link")
        .tgz();
    assert_unsafe(extract_err(&tgz), "link/x.txt", THROUGH_SYMLINK);

    let tgz = RawTar::new().dir("sub").symlink("sub/l", "..").dir("sub/l/d").tgz();
    assert_unsafe(extract_err(&tgz), "sub/l/d", THROUGH_SYMLINK);
}

#[test]
fn refuses_symlinks_leaving_the_tree() {
    let tgz = RawTar::new().symlink("up", "../outside").tgz();
    let err = extract_err(&tgz);
    assert_eq!(
        err.to_string(),
        "archive entry 'up' is a symlink that points outside the upload root; links must stay inside the folder"
    );
    assert_unsafe(err, "up", LINK_ESCAPES);

    let tgz = RawTar::new().dir("a").symlink("a/b", "../../x").tgz();
    assert_unsafe(extract_err(&tgz), "a/b", LINK_ESCAPES);

    let tgz = RawTar::new().symlink("passwd", "/etc/passwd").tgz();
    assert_unsafe(extract_err(&tgz), "passwd", LINK_ABSOLUTE);

    let tgz = RawTar::new().symlink("empty", "").tgz();
    assert_unsafe(extract_err(&tgz), "empty", LINK_EMPTY);
}

#[test]
fn refuses_symlinks_escaping_through_other_symlinks() {
    // Each link is harmless lexically; `b` escapes because `a` points to the
    // root, so `a/..` is the root's parent.
    let tgz = RawTar::new().symlink("b", "a/..").symlink("a", ".").tgz();
    assert_unsafe(extract_err(&tgz), "b", LINK_ESCAPES);

    // Deeper: d/up -> .. is fine, but x -> d/up/../.. leaves the tree.
    let tgz = RawTar::new()
        .dir("d")
        .symlink("d/up", "..")
        .symlink("x", "d/up/d/up/..")
        .tgz();
    assert_unsafe(extract_err(&tgz), "x", LINK_ESCAPES);

    let tgz = RawTar::new().symlink("l1", "l2").symlink("l2", "l1").tgz();
    assert!(matches!(
        extract_err(&tgz),
        ArchiveError::UnsafePath { reason: LINK_LOOP, .. }
    ));
}

#[test]
fn in_tree_symlink_chains_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = RawTar::new()
        .dir("sub")
        .file("sub/f.txt", b"f")
        .symlink("d", "sub")
        .symlink("e", "d/f.txt")
        .symlink("sub/self", "../sub")
        .symlink("dangling", "nowhere/at/all")
        .tgz();
    let stats = extract(&tgz, tmp.path()).unwrap();
    assert_eq!(stats.symlinks, 4);
    assert_eq!(fs::read(tmp.path().join("e")).unwrap(), b"f");
    assert_eq!(fs::read_link(tmp.path().join("d")).unwrap(), Path::new("sub"));
}

#[test]
fn a_later_file_replaces_a_symlink_instead_of_writing_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = RawTar::new()
        .file("target.txt", b"original")
        .symlink("x", "target.txt")
        .file("x", b"replacement")
        .tgz();
    extract(&tgz, tmp.path()).unwrap();
    assert_eq!(fs::read(tmp.path().join("target.txt")).unwrap(), b"original");
    assert!(fs::symlink_metadata(tmp.path().join("x")).unwrap().is_file());
    assert_eq!(fs::read(tmp.path().join("x")).unwrap(), b"replacement");
}

#[test]
fn refuses_file_and_folder_conflicts() {
    let tgz = RawTar::new().dir("a").file("a", b"x").tgz();
    assert_unsafe(extract_err(&tgz), "a", CONFLICT);
    let tgz = RawTar::new().file("a", b"x").file("a/b", b"y").tgz();
    assert_unsafe(extract_err(&tgz), "a/b", CONFLICT);
}

// ----- extraction: unsupported entry types ----------------------------------

#[test]
fn refuses_hard_links_devices_and_fifos() {
    let cases = [
        (EntryType::Link, "hard link"),
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "FIFO (named pipe)"),
    ];
    for (kind, name) in cases {
        let tgz = RawTar::new()
            .file("target.txt", b"t")
            .link("node", kind, "target.txt")
            .tgz();
        match extract_err(&tgz) {
            ArchiveError::UnsupportedEntry { path, kind } => {
                assert_eq!(path, "node");
                assert_eq!(kind, name);
            }
            other => panic!("{name}: expected UnsupportedEntry, got {other:?}"),
        }
    }
    let tgz = RawTar::new().link("hl", EntryType::Link, "/etc/shadow").tgz();
    let msg = extract_err(&tgz).to_string();
    assert!(msg.contains("'hl' is a hard link"), "{msg}");
}

#[test]
fn skips_pax_global_headers_like_git_archive_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let record = b"52 comment=0123456789012345678901234567890123456789\n";
    let mut tar = RawTar::new();
    let h = RawTar::header(
        b"pax_global_header",
        EntryType::XGlobalHeader,
        record.len() as u64,
        0o666,
    );
    tar.b.append(&h, &record[..]).unwrap();
    let tgz = tar.file("app.js", b"console.log(1)").tgz();
    let stats = extract(&tgz, tmp.path()).unwrap();
    assert_eq!(stats.files, 1);
    assert!(!tmp.path().join("pax_global_header").exists());
}

// ----- extraction: modes ----------------------------------------------------

#[test]
fn keeps_exec_bit_and_drops_setuid_setgid_sticky() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = RawTar::new()
        .entry("suid", EntryType::Regular, b"x", 0o4755)
        .entry("sgid-noexec", EntryType::Regular, b"x", 0o2640)
        .entry("private", EntryType::Regular, b"x", 0o600)
        .entry("group-exec", EntryType::Regular, b"x", 0o010)
        .entry("sticky-dir", EntryType::Directory, b"", 0o1700)
        .entry("ro-dir", EntryType::Directory, b"", 0o555)
        .file("ro-dir/inside", b"must still be writable into")
        .tgz();
    extract(&tgz, tmp.path()).unwrap();
    assert_eq!(mode_of(&tmp.path().join("suid")), 0o755);
    assert_eq!(mode_of(&tmp.path().join("sgid-noexec")), 0o644);
    assert_eq!(mode_of(&tmp.path().join("private")), 0o644);
    assert_eq!(mode_of(&tmp.path().join("group-exec")), 0o755);
    assert_eq!(mode_of(&tmp.path().join("sticky-dir")), 0o755);
    assert_eq!(mode_of(&tmp.path().join("ro-dir")), 0o755);
}

// ----- extraction: limits ---------------------------------------------------

#[test]
fn refuses_too_many_entries() {
    let limits = ArchiveLimits {
        max_entries: 3,
        ..ArchiveLimits::default()
    };
    let mut tar = RawTar::new();
    for i in 0..5 {
        tar = tar.file(&format!("f{i}"), b"x");
    }
    match extract_err_with(&tar.tgz(), &limits) {
        ArchiveError::TooManyEntries { limit } => assert_eq!(limit, 3),
        other => panic!("{other:?}"),
    }
    // Exactly at the limit is fine.
    let mut tar = RawTar::new();
    for i in 0..3 {
        tar = tar.file(&format!("f{i}"), b"x");
    }
    let tmp = tempfile::tempdir().unwrap();
    extract_tar_gz(&tar.tgz()[..], tmp.path(), &limits).unwrap();
}

#[test]
fn refuses_too_many_unpacked_bytes() {
    let limits = ArchiveLimits {
        max_unpacked_bytes: 256 * 1024,
        max_ratio: 0,
        ..ArchiveLimits::default()
    };
    // Several files, each under the limit, together over it: only the
    // streaming counter can catch this.
    let mut tar = RawTar::new();
    for i in 0..4 {
        tar = tar.file(&format!("f{i}.bin"), &noise(100 * 1024, i + 1));
    }
    let err = extract_err_with(&tar.tgz(), &limits);
    assert!(
        matches!(err, ArchiveError::TooLarge { what: "unpacked upload", limit } if limit == 256 * 1024),
        "{err:?}"
    );
    assert!(err.to_string().contains("256 KiB"), "{err}");

    // A single file whose header admits it is too big fails before writing.
    let tgz = RawTar::new().file("big.bin", &noise(300 * 1024, 9)).tgz();
    assert!(matches!(
        extract_err_with(&tgz, &limits),
        ArchiveError::TooLarge {
            what: "unpacked upload",
            ..
        }
    ));
}

#[test]
fn refuses_too_many_compressed_bytes() {
    let limits = ArchiveLimits {
        max_compressed_bytes: 16 * 1024,
        ..ArchiveLimits::default()
    };
    let tgz = RawTar::new().file("noise.bin", &noise(64 * 1024, 7)).tgz();
    assert!(tgz.len() > 16 * 1024);
    let err = extract_err_with(&tgz, &limits);
    assert!(
        matches!(
            err,
            ArchiveError::TooLarge {
                what: "compressed upload",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn stops_compression_bombs_while_they_flow() {
    // 64 MiB of zeros compresses ~1000:1. The ratio guard must stop it long
    // before the 1 GiB unpacked limit would.
    let zeros = vec![0u8; 64 * 1024 * 1024];
    let tgz = RawTar::new().file("bomb.bin", &zeros).tgz();
    drop(zeros);
    assert!(tgz.len() < 512 * 1024, "fixture should be a bomb: {}", tgz.len());

    // Count how much of the compressed input was consumed: a guard that
    // triggers only at the end would read all of it.
    struct Tracked<'a> {
        data: &'a [u8],
        pos: usize,
    }
    impl Read for Tracked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Small reads, like a network upload, so the position measures
            // how far decompression got rather than the buffer size.
            let end = (self.pos + 512).min(self.data.len());
            let n = (&self.data[self.pos..end]).read(buf)?;
            self.pos += n;
            Ok(n)
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let mut input = Tracked { data: &tgz, pos: 0 };
    let err = extract_tar_gz(&mut input, &dest, &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::CompressionBomb { limit: 200 }), "{err:?}");
    assert!(
        input.pos < tgz.len() / 4,
        "guard triggered late: read {} of {} bytes",
        input.pos,
        tgz.len()
    );
    assert!(!dest.exists(), "dest created by extract must be removed on error");
    assert!(err.to_string().contains("compression bomb"));
}

#[test]
fn small_archives_with_high_ratios_are_fine() {
    // A small project with a very repetitive file (fixture data, padding)
    // has a ratio far above 200 but stays below the grace size, so it must
    // extract.
    let tmp = tempfile::tempdir().unwrap();
    let rows = "id,name,value\n".repeat(60_000);
    let raw = RawTar::new()
        .file("index.html", b"<h1>hi</h1>")
        .file("fixture.csv", rows.as_bytes())
        .tar();
    assert!((raw.len() as u64) < RATIO_GRACE_BYTES);
    let tgz = gz(&raw);
    assert!(raw.len() as u64 / tgz.len() as u64 > 200);
    extract(&tgz, tmp.path()).unwrap();
}

// ----- extraction: corrupt input --------------------------------------------

#[test]
fn reports_corrupt_and_truncated_uploads() {
    let err = extract_err(&noise(4096, 3));
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");

    let tgz = RawTar::new().file("a.txt", &noise(50_000, 5)).tgz();
    let err = extract_err(&tgz[..tgz.len() / 2]);
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");

    let err = extract_err(b"");
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");

    // A gzip of something that is not a tar.
    let err = extract_err(&gz(&noise(2048, 11)));
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");
}

#[test]
fn extraction_creates_missing_dest_and_accepts_dot_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("new/dest");
    // `tar -C dir .` style archives start with "./".
    let tgz = RawTar::new()
        .dir("./")
        .dir("./src")
        .file("./src/main.py", b"print(1)")
        .tgz();
    let stats = extract(&tgz, &dest).unwrap();
    assert_eq!(stats.files, 1);
    assert_eq!(stats.bytes, 8);
    assert_eq!(fs::read(dest.join("src/main.py")).unwrap(), b"print(1)");
}

#[test]
fn formats_byte_sizes_for_humans() {
    assert_eq!(fmt_bytes(100 * 1024 * 1024), "100 MiB");
    assert_eq!(fmt_bytes(1024 * 1024 * 1024), "1 GiB");
    assert_eq!(fmt_bytes(1536), "1.5 KiB");
    assert_eq!(fmt_bytes(12), "12 bytes");
}
