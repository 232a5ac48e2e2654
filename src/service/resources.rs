//! Resources: stores attached to a site that outlive its deployments
//! (`HOSTING_CREATE_RESOURCE`, `HOSTING_LIST_RESOURCES`, `HOSTING_GET_RESOURCE`,
//! `HOSTING_DELETE_RESOURCE`). The one kind is `sqlite`: a disk of its own size that the
//! site's app instances see at `/data/<name>`, named by env vars
//! (`crate::platform::resources`). A resource is attached to at most one site, at
//! creation; attaching restarts the site's running apps so they see it at once.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::platform::resources::{RESOURCE_PROVIDER, provider_limitation, resource_env_names};
use crate::runtime::isolation::resource_disk::ResourceDisks;
use crate::service::access::{Action, Target};
use crate::store::resources::{ResourceCreated, ResourceRow};
use crate::util::{new_id, now_ms, rfc3339};

use super::Service;

/// Default and largest page of `HOSTING_LIST_RESOURCES`.
const DEFAULT_RESOURCES_PAGE: u32 = 50;
const MAX_RESOURCES_PAGE: u32 = 200;
/// A resource disk's default, smallest and largest size, in MiB.
pub const DEFAULT_SIZE_MB: u32 = 256;
/// Smallest resource disk, in MiB.
pub const MIN_SIZE_MB: u32 = 16;
/// Largest resource disk, in MiB.
pub const MAX_SIZE_MB: u32 = 10240;
/// Longest resource name (its env var names stay short).
const MAX_NAME_LEN: usize = 40;

/// What a resource is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A persistent disk for an SQLite database (or any files), at `/data/<name>`.
    Sqlite,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 1] = [ResourceKind::Sqlite];

    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
        }
    }

    /// The kind of a stored or given name.
    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

/// `HOSTING_CREATE_RESOURCE` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResourceInput {
    /// Name, unique in the org: 1-40 lowercase letters, digits and single hyphens,
    /// starting with a letter; the app sees it at `/data/<name>`.
    pub name: String,
    /// Kind: `sqlite` (a persistent disk for an SQLite file, the only kind now).
    pub kind: String,
    /// Disk size in MiB (default 256, 16 to 10240); writes past it fail with "no space
    /// left on device".
    #[serde(default)]
    pub size_mb: Option<u32>,
    /// The site to attach it to (its running apps restart to see it). Only at creation in
    /// this version.
    #[serde(default)]
    pub site: Option<String>,
}

/// `HOSTING_LIST_RESOURCES` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListResourcesInput {
    /// Only the resources attached to this site (default: every resource of the org).
    #[serde(default)]
    pub site: Option<String>,
    /// Resources per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `HOSTING_GET_RESOURCE` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// The resource's name.
    pub name: String,
}

/// `HOSTING_DELETE_RESOURCE` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteResourceInput {
    /// The resource's name.
    pub name: String,
    /// Delete it even though it is attached to a site: the site's apps restart without it.
    #[serde(default)]
    pub detach: Option<bool>,
}

/// A resource.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResourceInfo {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: ResourceKind,
    /// Disk size in MiB.
    pub size_mb: u32,
    /// Bytes used on its disk, while an app that has it runs (its disk is mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// The site it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Where the site's apps see it.
    pub mount_path: String,
    /// The env vars it gives the site's apps (none while detached); a variable the site
    /// sets itself keeps the site's value.
    pub env_vars: Vec<String>,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// `HOSTING_CREATE_RESOURCE` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CreatedResource {
    /// The resource.
    pub resource: ResourceInfo,
    /// Environments of the site whose running apps restarted to see it.
    pub restarted: Vec<String>,
}

/// `HOSTING_LIST_RESOURCES` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ResourceList {
    /// Resources, by name.
    pub resources: Vec<ResourceInfo>,
    /// Resources matching the query, on all pages.
    pub total: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `HOSTING_DELETE_RESOURCE` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeletedResource {
    /// The resource's name.
    pub name: String,
    /// The site it was detached from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached_from: Option<String>,
    /// Environments of that site whose running apps restarted without it.
    pub restarted: Vec<String>,
}

impl Service {
    /// `HOSTING_CREATE_RESOURCE`: makes the resource's disk and, with `site`, attaches it
    /// and restarts the site's running apps so they see it.
    pub async fn create_resource(&self, actor: &Actor, input: &CreateResourceInput) -> ServiceResult<CreatedResource> {
        match &input.site {
            Some(site) => {
                self.authorize(actor, Action::SetEnvVars, Target::Environment(site, None))
                    .await?
            }
            None => self.authorize(actor, Action::SetEnvVars, Target::AnySite(None)).await?,
        }
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self.create_resource_inner(actor, input).await;
        self.audit(actor, "HOSTING_CREATE_RESOURCE", args, &result).await;
        result
    }

    async fn create_resource_inner(
        &self,
        actor: &Actor,
        input: &CreateResourceInput,
    ) -> ServiceResult<CreatedResource> {
        validate_resource_name(&input.name)?;
        let kind = ResourceKind::parse(&input.kind).ok_or_else(|| {
            ServiceError::invalid(
                "kind",
                format!(
                    "unknown resource kind '{}'; the kinds are: {}",
                    input.kind.chars().take(40).collect::<String>(),
                    ResourceKind::ALL.map(ResourceKind::as_str).join(", ")
                ),
            )
        })?;
        let size_mb = input.size_mb.unwrap_or(DEFAULT_SIZE_MB);
        if !(MIN_SIZE_MB..=MAX_SIZE_MB).contains(&size_mb) {
            return Err(ServiceError::invalid(
                "size_mb",
                format!(
                    "size_mb {size_mb} is out of range; give {MIN_SIZE_MB} to {MAX_SIZE_MB} (MiB), or omit it for {DEFAULT_SIZE_MB}"
                ),
            ));
        }
        let site = self.find_optional_site(actor, input.site.as_deref()).await?;
        if let Some(site) = &site
            && site.provider != RESOURCE_PROVIDER
        {
            return Err(ServiceError::invalid("site", provider_limitation(&site.provider)));
        }
        if self.platform.store.backend() == crate::store::Backend::Postgres {
            return Err(ServiceError::conflict(
                "resources keep their data on one server's disk, so they are not available while berth runs on Postgres (replicas) in this version; use a database service outside berth and set its URL with HOSTING_SET_ENV_VARS",
            ));
        }
        let disks = self.resource_disks()?;
        if self
            .platform
            .store
            .get_resource(&actor.org_id, &input.name)
            .await?
            .is_some()
        {
            return Err(name_taken(&input.name));
        }
        let row = ResourceRow {
            id: new_id("res"),
            org_id: actor.org_id.clone(),
            name: input.name.clone(),
            kind: kind.as_str().into(),
            size_mb: i64::from(size_mb),
            site_id: site.as_ref().map(|s| s.id.clone()),
            site_name: site.as_ref().map(|s| s.name.clone()),
            created_at: now_ms(),
        };
        let max_total = i64::try_from(self.platform.config.sandbox.resources_max_mb).unwrap_or(i64::MAX);
        let held = self.platform.store.total_resource_mb(&actor.org_id).await?;
        if held + row.size_mb > max_total {
            return Err(over_total(size_mb, held, max_total));
        }
        // The disk first: a row never names a disk that is not there.
        disks
            .create(&row.id, u64::from(size_mb) << 20)
            .await
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!(e)))?;
        match self.platform.store.insert_resource(&row, max_total).await {
            Ok(ResourceCreated::Created) => {}
            Ok(ResourceCreated::NameTaken) => {
                let _ = disks.remove(&row.id).await;
                return Err(name_taken(&input.name));
            }
            // Another creation took the room meanwhile.
            Ok(ResourceCreated::OverTotal(held)) => {
                let _ = disks.remove(&row.id).await;
                return Err(over_total(size_mb, held, max_total));
            }
            Err(e) => {
                let _ = disks.remove(&row.id).await;
                return Err(e.into());
            }
        }
        tracing::info!(resource.name = %row.name, resource.kind = kind.as_str(), size_mb, site.name = ?row.site_name, "resource created");
        let restarted = match &site {
            Some(site) => self.restart_environments(site, None).await.map_err(|e| {
                ServiceError::conflict(format!("the resource '{}' is created and attached, but {e}", row.name))
            })?,
            None => Vec::new(),
        };
        Ok(CreatedResource {
            resource: self.resource_info(&row).await?,
            restarted,
        })
    }

    /// `HOSTING_LIST_RESOURCES`: one page, by name.
    pub async fn list_resources(&self, actor: &Actor, input: &ListResourcesInput) -> ServiceResult<ResourceList> {
        self.authorize(actor, Action::ReadSites, Target::AnySite(input.site.as_deref()))
            .await?;
        let (limit, after) = super::name_page(
            input.limit,
            input.cursor.as_deref(),
            DEFAULT_RESOURCES_PAGE,
            MAX_RESOURCES_PAGE,
        )?;
        let site = self.find_optional_site(actor, input.site.as_deref()).await?;
        let site_id = site.as_ref().map(|s| s.id.as_str());
        let store = &self.platform.store;
        let mut rows = store
            .list_resources_page(&actor.org_id, site_id, after, i64::from(limit) + 1)
            .await?;
        let next_cursor = super::cut_page(&mut rows, limit as usize, |r| r.name.clone());
        let total = store.count_resources(&actor.org_id, site_id).await? as u64;
        let mut resources = Vec::with_capacity(rows.len());
        for row in &rows {
            resources.push(self.resource_info(row).await?);
        }
        Ok(ResourceList {
            resources,
            total,
            next_cursor,
        })
    }

    /// `HOSTING_GET_RESOURCE`.
    pub async fn get_resource(&self, actor: &Actor, input: &ResourceRef) -> ServiceResult<ResourceInfo> {
        let row = self.find_resource(actor, Action::ReadSites, &input.name).await?;
        self.resource_info(&row).await
    }

    /// `HOSTING_DELETE_RESOURCE`: removes the resource and its data; refused while it is
    /// attached unless `detach` (then the site's running apps restart without it first).
    pub async fn delete_resource(&self, actor: &Actor, input: &DeleteResourceInput) -> ServiceResult<DeletedResource> {
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let row = self.find_resource(actor, Action::SetEnvVars, &input.name).await?;
            self.delete_resource_inner(actor, row, input.detach.unwrap_or(false))
                .await
        }
        .await;
        self.audit(actor, "HOSTING_DELETE_RESOURCE", args, &result).await;
        result
    }

    async fn delete_resource_inner(
        &self,
        actor: &Actor,
        row: ResourceRow,
        detach: bool,
    ) -> ServiceResult<DeletedResource> {
        let disks = self.resource_disks()?;
        let mut restarted = Vec::new();
        if let Some(site_name) = &row.site_name {
            if !detach {
                return Err(ServiceError::conflict(format!(
                    "the resource '{}' is attached to site '{site_name}', whose apps use it; delete it with detach: true (its data is lost), or keep it",
                    row.name
                )));
            }
            self.platform.store.detach_resource(&row.id).await?;
            let site = self.find_site(actor, site_name).await?;
            restarted = self.restart_environments(&site, None).await.map_err(|e| {
                ServiceError::conflict(format!(
                    "the resource '{}' is detached but not deleted yet, because {e}; delete it again",
                    row.name
                ))
            })?;
        }
        // The disk before the row: an interrupted deletion leaves a row without a disk
        // (deleting it again finishes), never a disk nothing names.
        disks
            .remove(&row.id)
            .await
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!(e)))?;
        self.platform.store.delete_resource(&row.id).await?;
        tracing::info!(resource.name = %row.name, "resource deleted");
        Ok(DeletedResource {
            name: row.name,
            detached_from: row.site_name,
            restarted,
        })
    }

    /// Looks at the disks no resource names, at start (before the API answers, so no
    /// creation is under way). A creation makes the disk before it writes the row, so a
    /// crash in between leaves a disk that was never mounted: it holds nothing and is
    /// removed. A disk that was mounted may hold an app's data and is kept, with a warning
    /// at every start saying what to do: a deletion removes the disk before the row, so
    /// such a disk comes from elsewhere (a server started on another database than the one
    /// that made it, or a restore), and is never thrown away on a guess.
    pub async fn look_at_orphan_resource_disks(&self) -> anyhow::Result<()> {
        let Ok(disks) = self.platform.isolation.resource_disks() else {
            return Ok(());
        };
        let images = disks.image_ids();
        let named: std::collections::HashSet<String> = self
            .platform
            .store
            .existing_resource_ids(&images)
            .await?
            .into_iter()
            .collect();
        for id in images.into_iter().filter(|id| !named.contains(id)) {
            let image = disks.image(&id);
            match disks.ever_mounted(&id) {
                Ok(false) => match disks.remove(&id).await {
                    Ok(()) => {
                        tracing::info!(resource.id = %id, "removed the empty disk of a resource whose creation was interrupted")
                    }
                    Err(e) => {
                        tracing::warn!(resource.id = %id, error = %e, "removing the disk of an interrupted resource creation failed")
                    }
                },
                Ok(true) => tracing::warn!(
                    resource.id = %id,
                    image = %image.display(),
                    "no resource of this server's database names this disk, which has held data; it is kept. If this server runs on the database that made it, restore that database; if its resource is gone for good, delete the file"
                ),
                Err(e) => {
                    tracing::warn!(resource.id = %id, image = %image.display(), error = %e, "cannot read a disk no resource names; it is kept")
                }
            }
        }
        Ok(())
    }

    /// The org's resource `name`, once the caller may do `action` on the site it is
    /// attached to (or on the whole org, for one attached to none).
    async fn find_resource(&self, actor: &Actor, action: Action, name: &str) -> ServiceResult<ResourceRow> {
        let row = self.platform.store.get_resource(&actor.org_id, name).await?;
        match row.as_ref().and_then(|r| r.site_name.as_deref()) {
            Some(site) if action == Action::ReadSites => self.authorize(actor, action, Target::Site(site)).await?,
            Some(site) => self.authorize(actor, action, Target::Environment(site, None)).await?,
            None => self.authorize(actor, action, Target::AnySite(None)).await?,
        }
        row.ok_or_else(|| {
            ServiceError::not_found(format!(
                "no resource named '{}'; list them with HOSTING_LIST_RESOURCES",
                name.chars().take(80).collect::<String>()
            ))
        })
    }

    fn resource_disks(&self) -> ServiceResult<std::sync::Arc<ResourceDisks>> {
        self.platform.isolation.resource_disks().map_err(ServiceError::conflict)
    }

    async fn resource_info(&self, row: &ResourceRow) -> ServiceResult<ResourceInfo> {
        let env_vars = match &row.site_id {
            Some(site_id) => {
                let siblings = self.platform.store.site_resources(site_id).await?;
                let position = siblings.iter().position(|r| r.id == row.id).unwrap_or(0);
                let (url, path) = resource_env_names(position, &row.name);
                vec![url, path]
            }
            None => Vec::new(),
        };
        let used_bytes = self
            .platform
            .isolation
            .resource_disks()
            .ok()
            .and_then(|d| d.used_bytes(&row.id));
        Ok(ResourceInfo {
            name: row.name.clone(),
            kind: ResourceKind::parse(&row.kind).unwrap_or(ResourceKind::Sqlite),
            size_mb: u32::try_from(row.size_mb).unwrap_or(0),
            used_bytes,
            site: row.site_name.clone(),
            mount_path: format!("/data/{}", row.name),
            env_vars,
            created_at: rfc3339(row.created_at),
        })
    }
}

/// The refusal of a resource that would take the org's disks past the allowed total.
fn over_total(size_mb: u32, held: i64, max_total: i64) -> ServiceError {
    ServiceError::conflict(format!(
        "a {size_mb} MiB resource would take this org's resource disks to {} MiB, over the {max_total} MiB the server allows (its --resources-max-mb); \
         delete a resource you no longer need (HOSTING_DELETE_RESOURCE), create a smaller one (size_mb), or ask the operator to raise the limit",
        held + i64::from(size_mb)
    ))
}

fn name_taken(name: &str) -> ServiceError {
    ServiceError::conflict(format!(
        "a resource named '{name}' already exists; pick another name, or read it with HOSTING_GET_RESOURCE"
    ))
}

/// Resource names: they become a folder (`/data/<name>`) and part of env var names
/// (`<NAME_UPPER>_URL`), so they start with a letter and have no `--` (two names never
/// give one variable).
pub fn validate_resource_name(name: &str) -> ServiceResult<()> {
    let bad = |why: &str| {
        Err(ServiceError::invalid(
            "name",
            format!(
                "invalid resource name '{}': {why}; use 1-{MAX_NAME_LEN} lowercase letters, digits and single hyphens, starting with a letter, e.g. 'main-db'",
                name.chars().take(80).collect::<String>()
            ),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it must start with a letter");
    }
    if name.ends_with('-') || name.contains("--") {
        return bad("it must not end with '-' or hold '--'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_folder_and_env_var_safe() {
        for ok in ["db", "main-db", "a1", "x"] {
            assert!(validate_resource_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1db",
            "-db",
            "db-",
            "a--b",
            "Db",
            "a_b",
            "a/b",
            "..",
            &"a".repeat(41),
        ] {
            assert!(validate_resource_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_kinds_round_trip() {
        for kind in ResourceKind::ALL {
            assert_eq!(ResourceKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ResourceKind::parse("postgres"), None);
    }
}
