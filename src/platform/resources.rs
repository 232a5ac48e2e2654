//! What a site's resources give its app instances: a mount at `/data/<name>` and env vars
//! naming it. Decided here once, so every deploy, wake, scale-out and restart (all go
//! through the instance spec) gets the same.

use crate::runtime::AttachedResource;
use crate::store::SiteRow;

use super::Platform;

/// The one provider that serves resources in this version.
pub const RESOURCE_PROVIDER: &str = "local";

/// Why a site on another provider cannot run with its resources.
pub fn provider_limitation(provider: &str) -> String {
    format!(
        "sqlite resources are served by the local provider only in this version, and this site runs on '{provider}'; detach the resource (HOSTING_DELETE_RESOURCE with detach: true deletes it) or move the site to the local provider"
    )
}

/// The env var names a resource injects, given its position among its site's resources
/// (oldest first): the first one's URL is `DATABASE_URL`, each later one's
/// `<NAME_UPPER>_URL`; every one also gets `BERTH_RESOURCE_<NAME_UPPER>_PATH`.
pub fn resource_env_names(position: usize, name: &str) -> (String, String) {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    let url = if position == 0 {
        "DATABASE_URL".to_string()
    } else {
        format!("{upper}_URL")
    };
    (url, format!("BERTH_RESOURCE_{upper}_PATH"))
}

/// The env vars of a site's resources (oldest first), with their values.
pub fn resource_env(resources: &[AttachedResource]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (position, resource) in resources.iter().enumerate() {
        let (url, path) = resource_env_names(position, &resource.name);
        let inside = resource.mount_path().to_string_lossy().into_owned();
        env.push((url, format!("sqlite://{inside}/db.sqlite")));
        env.push((path, inside));
    }
    env
}

impl Platform {
    /// The resources attached to `site`, oldest first; an error naming the limitation
    /// when the site runs on a provider that cannot serve them.
    pub async fn site_resources(&self, site: &SiteRow) -> anyhow::Result<Vec<AttachedResource>> {
        let rows = self.store.site_resources(&site.id).await?;
        if !rows.is_empty() && site.provider != RESOURCE_PROVIDER {
            anyhow::bail!(provider_limitation(&site.provider));
        }
        Ok(rows
            .into_iter()
            .map(|r| AttachedResource { id: r.id, name: r.name })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_resource_is_the_database_url_and_later_ones_are_named() {
        let attached = |name: &str| AttachedResource {
            id: format!("res_{name}"),
            name: name.into(),
        };
        let env = resource_env(&[attached("main"), attached("cache-db")]);
        assert_eq!(
            env,
            [
                ("DATABASE_URL".to_string(), "sqlite:///data/main/db.sqlite".to_string()),
                ("BERTH_RESOURCE_MAIN_PATH".into(), "/data/main".into()),
                ("CACHE_DB_URL".into(), "sqlite:///data/cache-db/db.sqlite".into()),
                ("BERTH_RESOURCE_CACHE_DB_PATH".into(), "/data/cache-db".into()),
            ]
        );
    }
}
