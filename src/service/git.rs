//! Push to deploy, the service side: internal repositories and their short-lived push
//! tokens, and what a branch update means for the sites that deploy from a repository
//! (deploy the pushed commit, build or remove a preview). The HTTP face (smart HTTP,
//! the post-receive callback, webhooks) lives in `crate::git_http` and calls in here.

use crate::service::access::{Action, Target};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth;
use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, validate_site_name};
use crate::store::SiteRow;
use crate::store::git::{self as git_store, GitTokenRow, RepoRow};
use crate::util::{new_id, now_ms, random_hex, rfc3339};

use super::*;
pub use crate::platform::git::{GitGrant, GitState};

/// Default, smallest and largest lifetime of a push token.
const DEFAULT_TOKEN_TTL: u64 = 3600;
const MIN_TOKEN_TTL: u64 = 1;
const MAX_TOKEN_TTL: u64 = 86_400;
/// A verified push token is trusted this long before argon2 runs again.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Branch name of a new internal repository.
pub const DEFAULT_BRANCH: &str = "main";
/// The user name handed out with push tokens (git needs one; the token decides).
const GIT_USERNAME: &str = "berth";

/// Why a git request was refused.
#[derive(Debug, thiserror::Error)]
pub enum GitAuthError {
    /// The repository name in the URL is not a safe path segment.
    #[error("{0}")]
    BadName(String),
    /// Wrong, expired or another repository's token.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error("internal error")]
    Internal(#[from] sqlx::Error),
}

/// One ref changed by a push: `old`/`new` are SHAs, all zeros for created/deleted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefUpdate {
    /// Previous SHA.
    pub old: String,
    /// New SHA.
    pub new: String,
    /// Full ref name (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub refname: String,
}

impl RefUpdate {
    /// The branch, for `refs/heads/*` refs.
    pub fn branch(&self) -> Option<&str> {
        self.refname.strip_prefix("refs/heads/")
    }
    /// The ref was deleted.
    pub fn is_delete(&self) -> bool {
        is_zero_sha(&self.new)
    }
}

/// Whether a SHA is git's all-zeros placeholder.
pub fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// What one branch update did to one environment of a site.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushOutcome {
    /// Site.
    pub site: String,
    /// Environment touched.
    pub environment: String,
    /// The deployment started (or found, for a repeat), when one was.
    pub deployment: Option<DeploymentInfo>,
    /// One line for the pusher.
    pub message: String,
}

/// Checks a repository name: a safe path segment (no separators, no dot-dot, no leading
/// dot or dash) that is also readable in URLs.
pub fn validate_repo_name(name: &str) -> Result<(), String> {
    let shown = name.chars().take(80).collect::<String>();
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && !name.contains("..")
        && !name.ends_with(".git")
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid repository name '{shown}'; use 1-100 lowercase letters, digits, '-', '_' and '.', starting with a letter or digit, e.g. 'my-app'"
        ))
    }
}

/// The environment a branch previews in: the branch as a DNS label that fits in front
/// of the site name, or `None` when nothing usable is left.
pub fn preview_environment_name(branch: &str, site: &str) -> Option<String> {
    let mut name = String::new();
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let room = 63usize.saturating_sub(site.len() + 2).min(40);
    name.truncate(room);
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        return None;
    }
    if name == "production" || validate_site_name(&name).is_err() {
        let prefixed = format!("branch-{name}");
        let prefixed = prefixed[..prefixed.len().min(room)].trim_end_matches('-').to_string();
        return validate_site_name(&prefixed).is_ok().then_some(prefixed);
    }
    Some(name)
}

impl Service {
    /// `HOSTING_LIST_REPOS`: one page of the org's internal repositories, by name.
    pub async fn list_repos(&self, actor: &Actor, input: &ListReposInput) -> ServiceResult<RepoList> {
        self.authorize(actor, Action::ReadSites, Target::AnySite(None)).await?;
        let limit = page_limit(input.limit)?;
        // The cursor is the name of the previous page's last repository.
        let after = input.cursor.as_deref().unwrap_or("");
        if !after.is_empty() && validate_repo_name(after).is_err() {
            return Err(bad_cursor());
        }
        let store = &self.platform.store;
        let mut rows = store
            .list_repos_page(&actor.org_id, after, i64::from(limit) + 1)
            .await?;
        let next_cursor = super::cut_page(&mut rows, limit as usize, |r| r.name.clone());
        let total = store.count_repos(&actor.org_id).await? as u64;
        let repos = rows
            .into_iter()
            .map(|r| RepoSummary {
                clone_url: self.clone_url(&actor.org_name, &r.name),
                repo: r.name,
                created_at: rfc3339(r.created_at),
            })
            .collect();
        Ok(RepoList {
            repos,
            total,
            next_cursor,
        })
    }

    /// `HOSTING_CREATE_REPO`: an empty bare repository served over smart HTTP.
    pub async fn create_repo(&self, actor: &Actor, input: &CreateRepoInput) -> ServiceResult<RepoOutput> {
        self.authorize(actor, Action::CreateSite, Target::AnySite(None)).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self.create_repo_inner(actor, input).await;
        self.audit(actor, "HOSTING_CREATE_REPO", args, &result).await;
        result
    }

    async fn create_repo_inner(&self, actor: &Actor, input: &CreateRepoInput) -> ServiceResult<RepoOutput> {
        validate_repo_name(&input.name).map_err(|m| ServiceError::invalid("name", m))?;
        let exists = || {
            ServiceError::conflict(format!(
                "a repository named '{}' already exists; get push credentials with HOSTING_GET_GIT_TOKEN {{\"repo\": \"{}\"}}",
                input.name, input.name
            ))
        };
        let store = &self.platform.store;
        if store.get_repo(&actor.org_id, &input.name).await?.is_some() {
            return Err(exists());
        }
        let row = RepoRow {
            id: new_id("repo"),
            org_id: actor.org_id.clone(),
            name: input.name.clone(),
            created_at: now_ms(),
        };
        // Initialised beside its place first, moved there once the row is stored: the
        // name is only known to be free under the store's write lock.
        let dir = self.repo_dir(&actor.org_id, &input.name);
        let fresh = dir.with_extension(format!("git.{}", row.id));
        tokio::fs::create_dir_all(&fresh).await.map_err(anyhow::Error::from)?;
        let out = tokio::process::Command::new("git")
            .args(["init", "--quiet", "--bare", "--initial-branch", DEFAULT_BRANCH])
            .arg(&fresh)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .await
            .map_err(anyhow::Error::from);
        let out = match out {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                let _ = tokio::fs::remove_dir_all(&fresh).await;
                return Err(ServiceError::Internal(anyhow::anyhow!(
                    "git init --bare failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&fresh).await;
                return Err(e.into());
            }
        };
        drop(out);
        let created = self.platform.store.create_repo(&row).await;
        if !matches!(created, Ok(git_store::RepoCreated::Created)) {
            let _ = tokio::fs::remove_dir_all(&fresh).await;
        }
        if created? == git_store::RepoCreated::NameTaken {
            return Err(exists());
        }
        if dir.exists() {
            // Left by a deleted org or a crash: start clean.
            tokio::fs::remove_dir_all(&dir).await.map_err(anyhow::Error::from)?;
        }
        tokio::fs::rename(&fresh, &dir).await.map_err(anyhow::Error::from)?;
        tracing::info!(repo.name = %row.name, "repository created");
        Ok(RepoOutput {
            clone_url: self.clone_url(&actor.org_name, &row.name),
            next_steps: format!(
                "get push credentials with HOSTING_GET_GIT_TOKEN {{\"repo\": \"{0}\"}}, then create a site from it with HOSTING_CREATE_SITE {{\"name\": …, \"repo\": \"{0}\"}} and `git push` to deploy",
                row.name
            ),
            repo: row.name,
        })
    }

    /// `HOSTING_GET_GIT_TOKEN`: a short-lived token that opens one repository.
    pub async fn get_git_token(&self, actor: &Actor, input: &GitTokenInput) -> ServiceResult<GitTokenOutput> {
        self.authorize(actor, Action::CreateSite, Target::AnySite(None)).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self.get_git_token_inner(actor, input).await;
        self.audit(actor, "HOSTING_GET_GIT_TOKEN", args, &result).await;
        result
    }

    async fn get_git_token_inner(&self, actor: &Actor, input: &GitTokenInput) -> ServiceResult<GitTokenOutput> {
        let ttl = input.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL);
        if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
            return Err(ServiceError::invalid(
                "ttl_seconds",
                format!("ttl_seconds must be {MIN_TOKEN_TTL}-{MAX_TOKEN_TTL}; ask for a new token when one expires"),
            ));
        }
        let repo = self.find_repo(actor, &input.repo).await?;
        let token = format!("bgt_{}", random_hex(24));
        let hash = {
            let token = token.clone();
            tokio::task::spawn_blocking(move || auth::hash_key(&token))
                .await
                .map_err(anyhow::Error::from)??
        };
        let expires_at = now_ms() + (ttl as i64) * 1000;
        let row = GitTokenRow {
            id: new_id("gtk"),
            org_id: actor.org_id.clone(),
            repo_id: repo.id.clone(),
            hash,
            expires_at,
        };
        self.platform
            .store
            .issue_git_token(&row, &auth::lookup_id(&token))
            .await?;
        let clone_url = self.clone_url(&actor.org_name, &repo.name);
        let push_url = clone_url.replacen("://", &format!("://{GIT_USERNAME}:{token}@"), 1);
        Ok(GitTokenOutput {
            clone_url,
            username: GIT_USERNAME.into(),
            token,
            expires_at: rfc3339(expires_at),
            push_url,
        })
    }

    /// Checks the credentials of a git request for `/git/<org>/<repo>.git`.
    pub async fn authorize_git(&self, org_name: &str, repo_name: &str, token: &str) -> Result<GitGrant, GitAuthError> {
        validate_repo_name(repo_name).map_err(GitAuthError::BadName)?;
        let refused = || {
            GitAuthError::Forbidden(format!(
                "this token does not open {org_name}/{repo_name}.git or has expired; get a new one with HOSTING_GET_GIT_TOKEN {{\"repo\": \"{repo_name}\"}}"
            ))
        };
        if token.is_empty() || token.len() > 200 {
            return Err(refused());
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = {
            let cache = self.platform.git.verified.lock().expect("git token cache lock");
            cache
                .get(&digest)
                .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
                .map(|(row, _)| row.clone())
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let store = &self.platform.store;
                let row = store
                    .find_git_token(&auth::lookup_id(token))
                    .await?
                    .ok_or_else(refused)?;
                let (hash, candidate) = (row.hash.clone(), token.to_string());
                let ok = tokio::task::spawn_blocking(move || auth::verify_hash(&hash, &candidate))
                    .await
                    .unwrap_or(false);
                if !ok {
                    return Err(refused());
                }
                let mut cache = self.platform.git.verified.lock().expect("git token cache lock");
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(digest, (row.clone(), Instant::now()));
                row
            }
        };
        if row.expires_at <= now_ms() {
            return Err(refused());
        }
        let store = &self.platform.store;
        let repo = store.get_repo_by_id(&row.repo_id).await?.ok_or_else(refused)?;
        let org = store.get_org(&row.org_id).await?.ok_or_else(refused)?;
        if repo.name != repo_name || org.name != org_name {
            return Err(refused());
        }
        Ok(GitGrant {
            org_id: org.id,
            org_name: org.name,
            repo_id: repo.id,
            repo_name: repo.name,
            token_id: row.id,
        })
    }

    /// A push changed refs of an internal repository: deploy, preview or clean up every
    /// site that deploys from it. Returns one line per outcome for the pusher.
    pub async fn on_internal_push(&self, grant: &GitGrant, updates: &[RefUpdate]) -> ServiceResult<Vec<String>> {
        let source = self.repo_source(&grant.org_id, &grant.repo_name);
        let sites = self.platform.store.sites_with_source(&grant.org_id, &[source]).await?;
        let actor = Actor::system(
            grant.org_id.clone(),
            grant.org_name.clone(),
            grant.token_id.clone(),
            "git push",
        );
        let mut lines = Vec::new();
        for site in &sites {
            for update in updates {
                let Some(branch) = update.branch() else { continue };
                let new = (!update.is_delete()).then_some(update.new.as_str());
                for outcome in self
                    .apply_branch_update(&actor, site, branch, new, DEFAULT_BRANCH)
                    .await
                {
                    lines.push(outcome.message);
                }
            }
        }
        if sites.is_empty() {
            lines.push(format!(
                "no site deploys from '{}' yet; create one with HOSTING_CREATE_SITE {{\"name\": …, \"repo\": \"{}\"}}",
                grant.repo_name, grant.repo_name
            ));
        }
        Ok(lines)
    }

    /// What one branch update means for one site: the environments following `branch`
    /// deploy `new` (exactly that commit); a new branch gets a preview when the site has
    /// previews on; a deleted branch loses its preview. Repeats of the same commit (a
    /// redelivered webhook, a re-run hook) are absorbed by idempotency keys.
    pub async fn apply_branch_update(
        &self,
        actor: &Actor,
        site: &SiteRow,
        branch: &str,
        new: Option<&str>,
        default_branch: &str,
    ) -> Vec<PushOutcome> {
        match self
            .apply_branch_update_inner(actor, site, branch, new, default_branch)
            .await
        {
            Ok(outcomes) => outcomes,
            Err(err) => {
                tracing::warn!(site.name = %site.name, branch, error = %err, "a pushed branch could not be deployed");
                vec![PushOutcome {
                    site: site.name.clone(),
                    environment: String::new(),
                    deployment: None,
                    message: format!("site '{}': could not act on branch '{branch}': {err}", site.name),
                }]
            }
        }
    }

    async fn apply_branch_update_inner(
        &self,
        actor: &Actor,
        site: &SiteRow,
        branch: &str,
        new: Option<&str>,
        default_branch: &str,
    ) -> ServiceResult<Vec<PushOutcome>> {
        let store = &self.platform.store;
        let tracked = site.branch.as_deref().unwrap_or(default_branch);
        let previews = bool::from(site.previews_enabled);
        let preview_name = preview_environment_name(branch, &site.name);
        let envs = store.list_environments(&site.id).await?;
        let mut outcomes = Vec::new();
        let Some(sha) = new else {
            // Deleted: remove the preview this branch made; production stays as it is.
            for env in envs.iter().filter(|e| {
                e.name != "production" && Some(&e.name) == preview_name.as_ref() && e.branch.as_deref() == Some(branch)
            }) {
                let input = EnvironmentRef {
                    site: site.name.clone(),
                    environment: env.name.clone(),
                    idempotency_key: None,
                };
                self.delete_environment(actor, &input).await?;
                outcomes.push(PushOutcome {
                    site: site.name.clone(),
                    environment: env.name.clone(),
                    deployment: None,
                    message: format!(
                        "site '{}': branch '{branch}' deleted, preview environment '{}' removed",
                        site.name, env.name
                    ),
                });
            }
            return Ok(outcomes);
        };
        let following: Vec<&EnvironmentRow> = envs
            .iter()
            .filter(|e| {
                if e.name == "production" {
                    branch == tracked
                } else {
                    e.branch.as_deref() == Some(branch)
                }
            })
            .collect();
        for env in &following {
            let input = DeployInput {
                site: site.name.clone(),
                commit: Some(sha.to_string()),
                environment: Some(env.name.clone()),
                idempotency_key: Some(push_key(&site.id, &env.name, sha)),
                ..Default::default()
            };
            let out = self.deploy(actor, input, None, &mut |_| {}).await?;
            outcomes.push(deployed(site, &env.name, out.deployment));
        }
        if following.is_empty() && branch != tracked {
            match (&preview_name, previews) {
                (Some(name), true) => {
                    let input = CreateEnvironmentInput {
                        site: site.name.clone(),
                        name: name.clone(),
                        branch: Some(branch.to_string()),
                        commit: Some(sha.to_string()),
                        idempotency_key: Some(push_key(&site.id, name, sha)),
                        ..Default::default()
                    };
                    let out = self.create_environment(actor, input, &mut |_| {}).await?;
                    match out.deployment {
                        Some(d) => outcomes.push(deployed(site, name, d)),
                        None => outcomes.push(PushOutcome {
                            site: site.name.clone(),
                            environment: name.clone(),
                            deployment: None,
                            message: format!("site '{}': preview '{name}' created", site.name),
                        }),
                    }
                }
                (None, true) => outcomes.push(PushOutcome {
                    site: site.name.clone(),
                    environment: String::new(),
                    deployment: None,
                    message: format!(
                        "site '{}': branch '{branch}' has no name usable as a preview environment; nothing deployed",
                        site.name
                    ),
                }),
                (_, false) => outcomes.push(PushOutcome {
                    site: site.name.clone(),
                    environment: String::new(),
                    deployment: None,
                    message: format!(
                        "site '{}' deploys branch '{tracked}', not '{branch}'; nothing deployed (previews are off for this site)",
                        site.name
                    ),
                }),
            }
        }
        Ok(outcomes)
    }

    /// How a site's source is shown to callers: an internal repository by its name (as
    /// it was given), never as the server path it is cloned from.
    pub fn shown_source(&self, site: &SiteRow) -> String {
        let Some(source) = site.source.as_deref() else {
            return "upload".into();
        };
        let internal = format!("file://{}/", self.platform.git.org_root(&site.org_id).display());
        source
            .strip_prefix(&internal)
            .and_then(|repo| repo.strip_suffix(".git"))
            .map_or_else(|| source.to_string(), str::to_string)
    }

    /// The URL a site created from an internal repository clones from (local, no token).
    pub fn repo_source(&self, org_id: &str, repo: &str) -> String {
        format!("file://{}", self.repo_dir(org_id, repo).display())
    }

    /// For a `repo` argument naming an internal repository: its clone source and whether
    /// it has no commits yet. `None` for URLs and paths.
    pub async fn internal_repo(&self, actor: &Actor, repo: &str) -> ServiceResult<Option<(String, bool)>> {
        let repo = repo.trim();
        if repo.contains('/') || repo.contains(':') || repo.is_empty() {
            return Ok(None);
        }
        let row = self.find_repo(actor, repo).await?;
        let dir = self.repo_dir(&actor.org_id, &row.name);
        let refs = tokio::process::Command::new("git")
            .args(["for-each-ref", "--count=1", "refs/heads"])
            .current_dir(&dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .await
            .map_err(anyhow::Error::from)?;
        Ok(Some((
            self.repo_source(&actor.org_id, &row.name),
            refs.stdout.is_empty(),
        )))
    }

    fn repo_dir(&self, org_id: &str, repo: &str) -> PathBuf {
        self.platform.git.org_root(org_id).join(format!("{repo}.git"))
    }

    fn clone_url(&self, org_name: &str, repo: &str) -> String {
        format!("http://{}/git/{org_name}/{repo}.git", self.platform.git.api_addr())
    }

    async fn find_repo(&self, actor: &Actor, name: &str) -> ServiceResult<RepoRow> {
        validate_repo_name(name).map_err(|m| ServiceError::invalid("repo", m))?;
        let store = &self.platform.store;
        if let Some(row) = store.get_repo(&actor.org_id, name).await? {
            return Ok(row);
        }
        // A few names, never all of them: the error stays small however many there are.
        const SHOWN: usize = 10;
        let names: Vec<String> = store
            .list_repos_page(&actor.org_id, "", SHOWN as i64)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        let total = store.count_repos(&actor.org_id).await? as usize;
        let more = match total.saturating_sub(names.len()) {
            0 => String::new(),
            n => format!(" and {n} more (HOSTING_LIST_REPOS lists them)"),
        };
        Err(ServiceError::not_found(if names.is_empty() {
            format!("no repository '{name}'; this org has none yet: create one with HOSTING_CREATE_REPO")
        } else {
            format!(
                "no repository '{name}'; repositories: {}{more}; create one with HOSTING_CREATE_REPO",
                names.join(", ")
            )
        }))
    }
}

/// The idempotency key of deploying `sha` to one environment of a site from a push or a
/// webhook: the same commit to the same place never builds twice.
pub fn push_key(site_id: &str, environment: &str, sha: &str) -> String {
    format!("push:{site_id}:{environment}:{sha}")
}

fn deployed(site: &SiteRow, environment: &str, d: DeploymentInfo) -> PushOutcome {
    let short = d.commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("");
    PushOutcome {
        site: site.name.clone(),
        environment: environment.to_string(),
        message: format!(
            "site '{}': deploying {short} to {environment} as {} ({}) → {}",
            site.name,
            d.id,
            d.status.as_str(),
            d.url
        ),
        deployment: Some(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in ["a", "my-app", "app_2", "v1.2", "0x"] {
            assert!(validate_repo_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "-x",
            ".x",
            "A",
            "x.git",
            "a..b",
            "x.",
            "a b",
            "a%2f",
            &"a".repeat(101),
        ] {
            assert!(validate_repo_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preview_names() {
        assert_eq!(
            preview_environment_name("feature/Login", "web").as_deref(),
            Some("feature-login")
        );
        assert_eq!(preview_environment_name("--x--", "web").as_deref(), Some("x"));
        assert_eq!(
            preview_environment_name("production", "web").as_deref(),
            Some("branch-production")
        );
        assert_eq!(preview_environment_name("api", "web").as_deref(), Some("branch-api"));
        assert_eq!(preview_environment_name("///", "web"), None);
        let long = preview_environment_name(&"b".repeat(100), "web").unwrap();
        assert!(long.len() <= 40);
    }

    #[test]
    fn zero_shas() {
        assert!(is_zero_sha("0000000000000000000000000000000000000000"));
        assert!(!is_zero_sha("0000000000000000000000000000000000000001"));
        assert!(!is_zero_sha(""));
    }
}
