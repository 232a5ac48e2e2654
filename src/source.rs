//! Fetching a deployment's source into its work directory: a git clone (the git CLI, any
//! URL git accepts or a local repository), or a copy of a local folder that honours
//! `.gitignore`. Uploads are extracted when they arrive (see the service).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Why a fetch failed, phrased for the person who asked for the deploy.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// git exited non-zero; `detail` is its last error line.
    #[error("git could not fetch '{url}'{at}: {detail}", at = git_ref.as_deref().map(|r| format!(" at '{r}'")).unwrap_or_default())]
    Git {
        /// The URL.
        url: String,
        /// The branch or commit.
        git_ref: Option<String>,
        /// git's own message.
        detail: String,
    },
    /// The clone took too long.
    #[error(
        "fetching the source timed out after {0:?}; check the URL is reachable or raise BERTH_CLONE_TIMEOUT_SECONDS"
    )]
    TimedOut(Duration),
    /// Cancelled by a caller.
    #[error("cancelled")]
    Cancelled,
    /// Anything else (disk, spawn).
    #[error("{0}")]
    Other(String),
}

/// Where a repo argument points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoLocation {
    /// Clone with git.
    Git(String),
    /// Copy a plain folder.
    Folder(PathBuf),
}

/// The fix named in every refusal of a server folder.
const ALLOW_HINT: &str =
    "server folders are off; an operator can allow roots with --allow-local-repos (BERTH_ALLOW_LOCAL_REPOS)";

/// Which folders of the server a `repo` may name (a path, or a `file://` URL, which git
/// also reads from disk): none unless an operator listed roots, and never the data dir.
/// Paths are compared after resolving symlinks and `..`, so a link under an allowed root
/// cannot lead out of it.
#[derive(Clone, Debug, Default)]
pub struct LocalRepoPolicy {
    /// Allowed roots, resolved.
    roots: Vec<PathBuf>,
    /// The data dir, resolved.
    data_dir: PathBuf,
}

impl LocalRepoPolicy {
    /// The policy of `--allow-local-repos`. Refuses (with the fix) a root that does not
    /// exist, or that contains or lies inside the data dir.
    pub fn new(roots: &[PathBuf], data_dir: &Path) -> Result<Self, String> {
        let data = std::fs::canonicalize(data_dir)
            .map_err(|e| format!("resolving the data dir {}: {e}", data_dir.display()))?;
        let mut resolved = Vec::with_capacity(roots.len());
        for root in roots {
            let real = std::fs::canonicalize(root).map_err(|e| {
                format!(
                    "--allow-local-repos: '{}' cannot be used ({e}); list existing folders",
                    root.display()
                )
            })?;
            if real.starts_with(&data) || data.starts_with(&real) {
                return Err(format!(
                    "--allow-local-repos: '{}' contains or is inside the data dir {}; list folders outside it (the data dir holds keys and the database)",
                    root.display(),
                    data.display()
                ));
            }
            resolved.push(real);
        }
        Ok(Self {
            roots: resolved,
            data_dir: data,
        })
    }

    /// The server path a `repo` names, if it names one: an absolute path or a `file://`
    /// URL. Other URLs give `Ok(None)`.
    pub fn local_path(repo: &str) -> Result<Option<PathBuf>, String> {
        let repo = repo.trim();
        if let Some(rest) = repo.strip_prefix("file://") {
            // git decodes %XX in file URLs; refuse rather than check one path and clone another.
            if !rest.starts_with('/') || rest.contains('%') {
                return Err(format!(
                    "'{repo}' is not a plain file:// URL; write it as file:///absolute/path without %-escapes"
                ));
            }
            return Ok(Some(PathBuf::from(rest)));
        }
        if repo.contains("://") {
            return Ok(None);
        }
        Ok(repo.starts_with('/').then(|| PathBuf::from(repo)))
    }

    /// Checks a `repo` naming a server path against the allowed roots; returns its real
    /// path (`None` for remote URLs, which this policy does not govern).
    pub fn check(&self, repo: &str) -> Result<Option<PathBuf>, String> {
        let Some(path) = Self::local_path(repo)? else {
            return Ok(None);
        };
        if self.roots.is_empty() {
            return Err(format!("'{}' is a folder of the server: {ALLOW_HINT}", repo.trim()));
        }
        let refused = || {
            format!(
                "'{}' is not under a folder allowed with --allow-local-repos; deploy from a folder under {}, or an operator can allow its root",
                repo.trim(),
                self.roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let Ok(real) = std::fs::canonicalize(&path) else {
            // Do not tell whether a folder outside the allowed roots exists.
            let plain = path.components().all(|c| c != std::path::Component::ParentDir);
            return if plain && self.roots.iter().any(|r| path.starts_with(r)) {
                Err(format!("no folder at '{}' on the server", path.display()))
            } else {
                Err(refused())
            };
        };
        if real.starts_with(&self.data_dir) || !self.roots.iter().any(|r| real.starts_with(r)) {
            return Err(refused());
        }
        Ok(Some(real))
    }

    /// Whether `repo` is a `file://` URL of a repository inside `internal_root` (berth's
    /// own git server of one org), which berth clones from its data dir itself.
    pub fn is_internal(repo: &str, internal_root: &Path) -> bool {
        let Some(rest) = repo.trim().strip_prefix("file://") else {
            return false;
        };
        match (std::fs::canonicalize(rest), std::fs::canonicalize(internal_root)) {
            (Ok(real), Ok(root)) => !rest.contains('%') && real.starts_with(root),
            _ => false,
        }
    }
}

/// Classifies a `repo` argument: URLs and local git repositories are cloned, other local
/// folders are copied. Refuses values git would take as options or helper commands.
pub fn classify_repo(repo: &str) -> Result<RepoLocation, String> {
    let repo = repo.trim();
    if repo.is_empty() {
        return Err("repo is empty; give a git URL (https://…, file://…) or a folder path".into());
    }
    if repo.starts_with('-') || repo.contains("::") || repo.chars().any(|c| c.is_control()) {
        return Err(format!("'{repo}' is not a git URL or path"));
    }
    for scheme in ["https://", "http://", "git://", "ssh://", "file://"] {
        if repo.starts_with(scheme) {
            return Ok(RepoLocation::Git(repo.to_string()));
        }
    }
    if repo.contains("://") {
        return Err(format!(
            "unsupported URL scheme in '{repo}'; use https://, http://, git://, ssh:// or file://"
        ));
    }
    let path = Path::new(repo);
    if !path.is_absolute() {
        return Err(format!(
            "'{repo}' is neither a URL nor an absolute path; give https://… or /path/to/app"
        ));
    }
    if !path.is_dir() {
        return Err(format!("no folder at '{repo}' on the server"));
    }
    if path.join(".git").exists() {
        Ok(RepoLocation::Git(repo.to_string()))
    } else {
        Ok(RepoLocation::Folder(path.to_path_buf()))
    }
}

/// Credentials for one fetch: an HTTP header git sends (`http.extraHeader`), passed in the
/// environment so it shows in no process list and no log line.
#[derive(Clone)]
pub struct GitAuth {
    /// `Authorization: …`
    pub header: String,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitAuth(***)")
    }
}

/// Clones `url` into `dest` (which must not exist) at `branch` or `commit`, streaming git's
/// progress to `on_line`. Returns the checked-out commit.
pub async fn git_clone(
    url: &str,
    branch: Option<&str>,
    commit: Option<&str>,
    dest: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(String) + Send),
) -> Result<String, SourceError> {
    git_clone_with(url, branch, commit, dest, timeout, cancel, on_line, None).await
}

/// [`git_clone`] with credentials for the remote.
#[expect(clippy::too_many_arguments, reason = "git_clone plus its credentials")]
pub async fn git_clone_with(
    url: &str,
    branch: Option<&str>,
    commit: Option<&str>,
    dest: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(String) + Send),
    auth: Option<&GitAuth>,
) -> Result<String, SourceError> {
    let git_ref = commit.or(branch).map(str::to_string);
    let fail = |detail: String| SourceError::Git {
        url: url.to_string(),
        git_ref: git_ref.clone(),
        detail,
    };
    if let Some(c) = commit
        && (c.len() < 4 || c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_hexdigit()))
    {
        return Err(fail(format!("'{c}' is not a commit SHA (4-64 hex digits)")));
    }
    if let Some(b) = branch
        && (b.starts_with('-') || b.contains("..") || b.chars().any(|ch| ch.is_control() || ch == ' '))
    {
        return Err(fail(format!("'{b}' is not a valid branch name")));
    }
    let mut args: Vec<String> = vec!["clone".into(), "--progress".into()];
    // A clone of a plain path links the objects and ignores --depth (git says so in a
    // warning the build log does not need).
    if commit.is_none() && url.contains("://") {
        args.extend(["--depth".into(), "1".into()]);
    }
    if let Some(b) = branch {
        args.extend(["--branch".into(), b.into()]);
    }
    // Cloned from the destination's parent under a relative name, so git's "Cloning into
    // '…'" line names the app folder, not where the server keeps its data.
    let (cwd, target) = match (dest.parent(), dest.file_name()) {
        (Some(parent), Some(name)) => (Some(parent), name.to_string_lossy().into_owned()),
        _ => (None, dest.display().to_string()),
    };
    args.extend(["--".into(), url.into(), target]);
    let work = async {
        run_git(&args, cwd, on_line, auth).await.map_err(fail)?;
        if let Some(c) = commit {
            run_git(
                &["checkout".into(), "--detach".into(), c.into()],
                Some(dest),
                on_line,
                None,
            )
            .await
            .map_err(|d| fail(format!("commit not found: {d}")))?;
        }
        let out = git()
            .args(["rev-parse", "HEAD"])
            .current_dir(dest)
            .output()
            .await
            .map_err(|e| SourceError::Other(format!("running git: {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, work) => r.unwrap_or(Err(SourceError::TimedOut(timeout))),
        _ = cancel.cancelled() => Err(SourceError::Cancelled),
    }
}

/// How many of the files checked out in `clone` differ from (or are missing in) the work
/// tree `repo` was cloned from, when `repo` is a plain folder path; `None` otherwise. A deploy
/// from a work tree takes its committed HEAD, so the build log says when edits are left
/// behind. No git command runs in the user's folder (its config could make `git status` run
/// commands as the server): the files are compared directly, at most 20,000 of them.
pub async fn work_tree_differences(repo: &str, clone: &Path) -> Option<usize> {
    let work_tree = Path::new(repo.trim()).to_path_buf();
    if repo.contains("://") || !work_tree.is_absolute() {
        return None;
    }
    let clone = clone.to_path_buf();
    tokio::task::spawn_blocking(move || count_differences(&clone, &work_tree))
        .await
        .ok()
}

fn count_differences(clone: &Path, work_tree: &Path) -> usize {
    const MAX_FILES: usize = 20_000;
    const MAX_COMPARED_BYTES: u64 = 1 << 20;
    let mut differ = 0;
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0;
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(clone.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = rel.join(entry.file_name());
            if name == Path::new(".git") {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                stack.push(name);
                continue;
            }
            seen += 1;
            if seen > MAX_FILES {
                return differ;
            }
            let ours = std::fs::symlink_metadata(clone.join(&name));
            let theirs = std::fs::symlink_metadata(work_tree.join(&name));
            let same = match (ours, theirs) {
                (Ok(a), Ok(b)) if a.file_type().is_symlink() || b.file_type().is_symlink() => {
                    std::fs::read_link(clone.join(&name)).ok() == std::fs::read_link(work_tree.join(&name)).ok()
                }
                (Ok(a), Ok(b)) if a.len() != b.len() || !b.is_file() => false,
                (Ok(a), Ok(_)) if a.len() > MAX_COMPARED_BYTES => true,
                (Ok(_), Ok(_)) => std::fs::read(clone.join(&name)).ok() == std::fs::read(work_tree.join(&name)).ok(),
                _ => false,
            };
            if !same {
                differ += 1;
            }
        }
    }
    differ
}

/// Checks that a remote can be read and, if given, has `branch`, without cloning it
/// (`git ls-remote`), so a bad URL or an unknown branch is refused before anything is
/// created.
pub async fn check_remote(url: &str, branch: Option<&str>, timeout: Duration) -> Result<(), SourceError> {
    check_remote_with(url, branch, timeout, None).await
}

/// [`check_remote`] with credentials for the remote.
pub async fn check_remote_with(
    url: &str,
    branch: Option<&str>,
    timeout: Duration,
    auth: Option<&GitAuth>,
) -> Result<(), SourceError> {
    let git_ref = branch.map(str::to_string);
    let fail = |detail: String| SourceError::Git {
        url: url.to_string(),
        git_ref: git_ref.clone(),
        detail,
    };
    if let Some(b) = branch
        && (b.is_empty() || b.starts_with('-') || b.contains("..") || b.chars().any(|ch| ch.is_control() || ch == ' '))
    {
        return Err(fail(format!("'{b}' is not a valid branch name")));
    }
    let mut args: Vec<String> = vec!["ls-remote".into(), "--heads".into(), "--".into(), url.into()];
    if let Some(b) = branch {
        args.push(format!("refs/heads/{b}"));
    }
    let mut cmd = git_with(auth);
    cmd.args(&args);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| SourceError::TimedOut(timeout))?
        .map_err(|e| SourceError::Other(format!("could not run git: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("git ls-remote failed");
        return Err(fail(detail.trim_start_matches("fatal: ").to_string()));
    }
    if let Some(b) = branch
        && out.stdout.is_empty()
    {
        let all = git_with(auth)
            .args(["ls-remote", "--heads", "--", url])
            .output()
            .await
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let branches: Vec<&str> = all
            .lines()
            .filter_map(|l| l.split("refs/heads/").nth(1))
            .take(20)
            .collect();
        return Err(fail(format!(
            "branch '{b}' does not exist; branches: {}",
            if branches.is_empty() {
                "(none)".into()
            } else {
                branches.join(", ")
            }
        )));
    }
    Ok(())
}

async fn run_git(
    args: &[String],
    cwd: Option<&Path>,
    on_line: &mut (dyn FnMut(String) + Send),
    auth: Option<&GitAuth>,
) -> Result<(), String> {
    let mut cmd = git_with(auth);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| format!("could not run git: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).split(b'\n');
    let mut last = String::new();
    while let Ok(Some(raw)) = lines.next_segment().await {
        // git draws progress with carriage returns; keep the final state of each line.
        let text = String::from_utf8_lossy(&raw);
        let line = text
            .rsplit('\r')
            .find(|s| !s.trim().is_empty())
            .unwrap_or("")
            .trim_end()
            .to_string();
        if !line.is_empty() {
            last = line.clone();
            on_line(line);
        }
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(last.trim_start_matches("fatal: ").to_string())
    }
}

/// A git command that never prompts for credentials and only speaks the transports
/// berth accepts (no `ext::` helpers that would run commands).
fn git() -> Command {
    git_with(None)
}

/// [`git`] sending an extra HTTP header (credentials) to the remote.
fn git_with(auth: Option<&GitAuth>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(auth) = auth {
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", &auth.header);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Copies a folder into `dest`, honouring `.gitignore` (through the same packer the CLI
/// uses for uploads, so both paths see the same files).
pub async fn copy_folder(src: &Path, dest: &Path) -> Result<(), SourceError> {
    let (src, dest) = (src.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut packed = Vec::new();
        berth_build::archive::pack_dir_tar_gz(&src, &mut packed).map_err(|e| SourceError::Other(e.to_string()))?;
        std::fs::create_dir_all(&dest).map_err(|e| SourceError::Other(e.to_string()))?;
        berth_build::archive::extract_tar_gz(&packed[..], &dest, &berth_build::archive::ArchiveLimits::default())
            .map_err(|e| SourceError::Other(e.to_string()))?;
        Ok(())
    })
    .await
    .map_err(|e| SourceError::Other(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_repo_policy() {
        assert_eq!(LocalRepoPolicy::local_path("https://x/y.git"), Ok(None));
        assert_eq!(LocalRepoPolicy::local_path("/a/b"), Ok(Some("/a/b".into())));
        assert_eq!(LocalRepoPolicy::local_path("file:///a/b"), Ok(Some("/a/b".into())));
        assert!(LocalRepoPolicy::local_path("file://host/a").is_err());
        assert!(LocalRepoPolicy::local_path("file:///a/%2e%2e/b").is_err());

        let base = tempfile::tempdir().unwrap();
        let (data, root) = (base.path().join("data"), base.path().join("apps"));
        std::fs::create_dir_all(data.join("git")).unwrap();
        std::fs::create_dir_all(root.join("site")).unwrap();
        std::os::unix::fs::symlink(&data, root.join("pivot")).unwrap();
        for bad in [&data, &data.join("git"), &base.path().to_path_buf()] {
            assert!(
                LocalRepoPolicy::new(std::slice::from_ref(bad), &data).is_err(),
                "{bad:?}"
            );
        }
        let off = LocalRepoPolicy::new(&[], &data).unwrap();
        let err = off.check(root.join("site").to_str().unwrap()).unwrap_err();
        assert!(err.contains("server folders are off"), "{err}");
        let on = LocalRepoPolicy::new(std::slice::from_ref(&root), &data).unwrap();
        assert!(on.check(root.join("site").to_str().unwrap()).unwrap().is_some());
        assert!(on.check(&format!("file://{}", root.join("site").display())).is_ok());
        assert!(on.check(root.join("pivot").to_str().unwrap()).is_err());
        assert!(on.check(&format!("{}/../data", root.display())).is_err());
        assert_eq!(on.check("https://example.com/x.git"), Ok(None));
        assert!(LocalRepoPolicy::is_internal(
            &format!("file://{}", data.join("git").display()),
            &data.join("git")
        ));
        assert!(!LocalRepoPolicy::is_internal(
            &format!("file://{}/..", data.join("git").display()),
            &data.join("git")
        ));
    }

    #[test]
    fn classify() {
        assert_eq!(
            classify_repo("https://x/y.git"),
            Ok(RepoLocation::Git("https://x/y.git".into()))
        );
        assert!(classify_repo("-uhello").is_err());
        assert!(classify_repo("ext::sh -c touch% /tmp/pwned").is_err());
        assert!(classify_repo("ftp://x").is_err());
        assert!(classify_repo("relative/path").is_err());
        assert!(classify_repo("/definitely/not/here").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            classify_repo(dir.path().to_str().unwrap()),
            Ok(RepoLocation::Folder(dir.path().into()))
        );
    }
}
