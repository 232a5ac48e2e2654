//! Host-side access to an app's files that never follows a symlink out of the app's
//! folder.
//!
//! berth looks at an app's tree as its own user on the host: to detect the build pack,
//! to find the static output folder, to hash lockfiles for the dependency cache. That
//! tree comes from an untrusted repository or build, and may hold symlinks with any
//! target (`dist -> /etc`, `package.json -> <data dir>/master.key`). Every helper here
//! resolves the path first and answers as if a file whose real location is outside the
//! tree were absent; symlinks that stay inside the tree work as usual. Reads also check,
//! after opening, where the opened file really is (through `/proc/self/fd`), so a link
//! swapped in between the check and the open cannot redirect them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The real (canonical) path of `rel` below `root`, if it exists and every symlink on
/// the way resolves to a place inside `root`'s own real path. `None` when it does not
/// exist or leads outside; an absolute `rel` or one with `..` is judged the same way.
pub fn real_path_in_tree(root: &Path, rel: impl AsRef<Path>) -> Option<PathBuf> {
    let root = root.canonicalize().ok()?;
    let real = root.join(rel).canonicalize().ok()?;
    real.starts_with(&root).then_some(real)
}

/// Whether `rel` below `root` exists inside the tree (see [`real_path_in_tree`]).
pub fn exists_in_tree(root: &Path, rel: impl AsRef<Path>) -> bool {
    real_path_in_tree(root, rel).is_some()
}

/// Whether `rel` below `root` is a regular file inside the tree.
pub fn is_file_in_tree(root: &Path, rel: impl AsRef<Path>) -> bool {
    real_path_in_tree(root, rel).is_some_and(|p| p.is_file())
}

/// Whether `rel` below `root` is a folder inside the tree.
pub fn is_dir_in_tree(root: &Path, rel: impl AsRef<Path>) -> bool {
    real_path_in_tree(root, rel).is_some_and(|p| p.is_dir())
}

/// Opens `rel` below `root` for reading when it is a regular file inside the tree.
/// `Ok(None)` when it does not exist or leads outside the tree; an error when it exists
/// inside but is not a regular file or cannot be read.
pub fn open_in_tree(root: &Path, rel: impl AsRef<Path>) -> io::Result<Option<File>> {
    let Some(real) = real_path_in_tree(root, &rel) else {
        return Ok(None);
    };
    let file = match open_no_follow(&real) {
        Ok(file) => file,
        // A symlink put in place since the path was resolved.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(root) = root.canonicalize().ok() else {
        return Ok(None);
    };
    if !opened_path(&file).is_some_and(|p| p.starts_with(&root)) {
        return Ok(None);
    }
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", rel.as_ref().display()),
        ));
    }
    Ok(Some(file))
}

/// The content of `rel` below `root` when it is a regular file inside the tree; see
/// [`open_in_tree`].
pub fn read_in_tree(root: &Path, rel: impl AsRef<Path>) -> io::Result<Option<Vec<u8>>> {
    let Some(mut file) = open_in_tree(root, rel)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Names of the entries at the top of `root` that are symlinks leading outside the tree
/// (or nowhere), sorted: what the helpers above treat as absent, for a build log line.
pub fn links_leaving_tree(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter(|e| !exists_in_tree(root, e.file_name()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Opens a path whose last component must not be a symlink. Non-blocking so that a FIFO
/// cannot stall the caller, and never as a controlling terminal.
fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
}

/// Where an open file really is, as the kernel knows it.
fn opened_path(file: &File) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// `<tmp>/app` with a file, a folder and links in and out; `<tmp>/host/secret`.
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        let host = tmp.path().join("host");
        std::fs::create_dir_all(app.join("dist")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(app.join("package.json"), "{}").unwrap();
        std::fs::write(app.join("dist/index.html"), "in").unwrap();
        std::fs::write(host.join("secret"), "host secret").unwrap();
        std::fs::write(host.join("index.html"), "host index").unwrap();
        symlink(host.join("secret"), app.join("out-file")).unwrap();
        symlink(&host, app.join("out-dir")).unwrap();
        symlink("../host/secret", app.join("out-relative")).unwrap();
        symlink("package.json", app.join("in-file")).unwrap();
        symlink("dist", app.join("in-dir")).unwrap();
        symlink(app.join("dist"), app.join("in-absolute")).unwrap();
        symlink("nowhere", app.join("dangling")).unwrap();
        (tmp, app)
    }

    #[test]
    fn links_out_of_the_tree_are_absent() {
        let (_tmp, app) = tree();
        for rel in [
            "out-file",
            "out-relative",
            "out-dir",
            "out-dir/secret",
            "../host/secret",
            "/etc/passwd",
        ] {
            assert_eq!(real_path_in_tree(&app, rel), None, "{rel}");
            assert!(!exists_in_tree(&app, rel), "{rel}");
            assert!(!is_file_in_tree(&app, rel), "{rel}");
            assert!(read_in_tree(&app, rel).unwrap().is_none(), "{rel}");
        }
        assert!(!is_dir_in_tree(&app, "out-dir"));
        assert!(!is_file_in_tree(&app, "out-dir/index.html"));
    }

    #[test]
    fn files_and_links_inside_the_tree_work() {
        let (_tmp, app) = tree();
        assert_eq!(read_in_tree(&app, "package.json").unwrap().unwrap(), b"{}");
        assert_eq!(read_in_tree(&app, "in-file").unwrap().unwrap(), b"{}");
        assert!(is_dir_in_tree(&app, "in-dir"));
        assert!(is_file_in_tree(&app, "in-dir/index.html"));
        assert!(is_file_in_tree(&app, "in-absolute/index.html"));
        assert!(is_dir_in_tree(&app, "."));
        assert!(!exists_in_tree(&app, "missing"));
        assert!(read_in_tree(&app, "missing").unwrap().is_none());
        assert!(read_in_tree(&app, "dist").is_err(), "a folder is not a file");
    }

    #[test]
    fn a_tree_reached_through_a_symlink_is_judged_by_its_real_path() {
        let (tmp, app) = tree();
        let alias = tmp.path().join("alias");
        symlink(&app, &alias).unwrap();
        assert!(is_file_in_tree(&alias, "dist/index.html"));
        assert!(!exists_in_tree(&alias, "out-file"));
    }

    #[test]
    fn top_level_links_leaving_the_tree_are_named() {
        let (_tmp, app) = tree();
        assert_eq!(
            links_leaving_tree(&app),
            ["dangling", "out-dir", "out-file", "out-relative"]
        );
    }
}
