//! The store's named operations on sites and deployments: each is one write transaction
//! that makes its change together with the event that tells of it. The service decides and
//! prepares (ids, rows, sealed values); a storage invariant checked under the write lock
//! comes back as a typed outcome, never as a user message.

use serde_json::json;

use super::people::{count_orgs_of, member_role, upsert_member};
use super::{DeploymentRow, EnvironmentRow, NewAuditEntry, OrgRow, SiteRow, Store, Tx};
use crate::model::{DeploymentStatus, Role};

/// A job to enqueue with a change, as the service describes it.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    /// Kind (the worker that runs it).
    pub kind: &'a str,
    /// Payload, as the worker reads it.
    pub payload: serde_json::Value,
    /// Give up after this many attempts.
    pub max_attempts: i64,
    /// A second enqueue with this key is a no-op.
    pub idempotency_key: Option<String>,
    /// Jobs sharing this key take turns with other keys' jobs.
    pub fair_key: Option<String>,
}

/// A deployment to queue: its row, the job that builds it, and whether it needs this
/// replica to be the only live one (a deploy to a target that runs apps on its own server).
#[derive(Clone, Debug)]
pub struct NewDeploy<'a> {
    /// The deployment row, status `queued`.
    pub deployment: &'a DeploymentRow,
    /// The job that builds it.
    pub job: NewJob<'a>,
    /// `Some((me, since))`: refuse while a replica other than `me` has beaten since `since`.
    pub sole_replica: Option<(&'a str, i64)>,
}

/// What became of a queued deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployQueued {
    /// The deployment and its job are stored.
    Queued,
    /// Refused: this many other replicas are live on the database.
    OtherReplicasLive(usize),
}

/// A site to create with its production environment.
#[derive(Clone, Debug)]
pub struct NewSite<'a> {
    /// The site row.
    pub site: &'a SiteRow,
    /// Its production environment.
    pub environment: &'a EnvironmentRow,
    /// Env vars of the site, values sealed.
    pub env_vars: Vec<(String, String)>,
    /// The first deploy, queued with the site.
    pub deploy: Option<NewDeploy<'a>>,
}

/// What became of a site to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteCreated {
    /// Stored (with its first deploy, when asked).
    Created,
    /// The org already has a site of that name.
    NameTaken,
    /// Another org's site has that name (site names are hostnames, shared by every org).
    NameTakenByOtherOrg,
    /// The first deploy was refused: this many other replicas are live.
    OtherReplicasLive(usize),
}

/// What activating a built deployment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activation {
    /// It is its environment's live deployment now.
    Live,
    /// A newer deployment of the environment was already live (its id): this one is
    /// superseded without ever serving.
    Superseded(String),
    /// It could no longer go live (cancelled meanwhile); nothing changed.
    NoLongerLive,
}

impl Store {
    /// Moves a deployment along the state machine with its `deployment.<status>` event.
    /// False when the transition is not allowed from its current status (nothing changes).
    pub async fn set_deployment_status(
        &self,
        d: &DeploymentRow,
        to: DeploymentStatus,
        error: Option<&str>,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        let moved = super::transition_deployment(&mut *tx, &d.id, to, error).await?;
        // A build ends when its deployment leaves `building`: built, failed or cancelled.
        // Counted once per deployment for the org's usage (a later move adds nothing).
        if moved
            && matches!(
                to,
                DeploymentStatus::Deploying | DeploymentStatus::Failed | DeploymentStatus::Cancelled
            )
        {
            super::usage::record_build(&mut *tx, &d.id, crate::util::now_ms()).await?;
        }
        if moved {
            let data = json!({ "site_id": d.site_id, "status": to.as_str(), "error": error });
            super::insert_event(
                &mut *tx,
                &d.org_id,
                &format!("deployment.{}", to.as_str()),
                &d.id,
                &data,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Makes a built deployment its environment's live one: moves it to `live`, points the
    /// environment at it and supersedes the previous one, in one transaction; the newest
    /// deployment of an environment wins when deploys finish out of order.
    pub async fn activate_deployment(&self, d: &DeploymentRow) -> sqlx::Result<Activation> {
        let mut tx = self.begin().await?;
        if let Some(current) = super::newer_live_deployment(&mut *tx, &d.environment_id, d.created_at).await? {
            super::transition_deployment(&mut *tx, &d.id, DeploymentStatus::Superseded, None).await?;
            let data = json!({ "site_id": d.site_id, "newer": current });
            super::insert_event(&mut *tx, &d.org_id, "deployment.superseded", &d.id, &data).await?;
            tx.commit().await?;
            return Ok(Activation::Superseded(current));
        }
        if !super::transition_deployment(&mut *tx, &d.id, DeploymentStatus::Live, None).await? {
            return Ok(Activation::NoLongerLive);
        }
        let previous = super::get_environment_by_id(&mut *tx, &d.environment_id)
            .await?
            .and_then(|e| e.deployment_id);
        super::set_environment_deployment(&mut *tx, &d.environment_id, &d.id).await?;
        let superseded = super::refresh_liveness(&mut tx, &previous.into_iter().collect::<Vec<_>>()).await?;
        let data = json!({ "site_id": d.site_id, "superseded": superseded });
        super::insert_event(&mut *tx, &d.org_id, "deployment.live", &d.id, &data).await?;
        insert_superseded_events(&mut tx, &d.org_id, &d.site_id, &superseded, &d.id).await?;
        tx.commit().await?;
        Ok(Activation::Live)
    }

    /// Points an environment at a built deployment (promote, rollback) with its
    /// `environment.pointed` event; the deployment it served before is superseded unless
    /// another environment serves it.
    pub async fn point_environment(&self, site: &SiteRow, env: &EnvironmentRow, d: &DeploymentRow) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::set_environment_deployment(&mut *tx, &env.id, &d.id).await?;
        let mut touched: Vec<String> = env.deployment_id.clone().into_iter().collect();
        touched.push(d.id.clone());
        let superseded = super::refresh_liveness(&mut tx, &touched).await?;
        let data = json!({ "site_id": site.id, "environment": env.name, "deployment_id": d.id });
        super::insert_event(&mut *tx, &site.org_id, "environment.pointed", &env.id, &data).await?;
        insert_superseded_events(&mut tx, &site.org_id, &site.id, &superseded, &d.id).await?;
        tx.commit().await
    }

    /// Queues a deploy: the deployment row, its `deployment.queued` event and its job.
    pub async fn enqueue_deploy(&self, deploy: &NewDeploy<'_>) -> sqlx::Result<DeployQueued> {
        let mut tx = self.begin().await?;
        let queued = enqueue_deploy_in(&mut tx, deploy).await?;
        if queued == DeployQueued::Queued {
            tx.commit().await?;
        }
        Ok(queued)
    }

    /// Creates a site with its production environment, its env vars and its `site.created`
    /// event, and queues its first deploy when asked; the name is checked under the write
    /// lock (another org may have taken it meanwhile).
    pub async fn create_site(&self, new: &NewSite<'_>) -> sqlx::Result<SiteCreated> {
        let site = new.site;
        let mut tx = self.begin().await?;
        if super::site_name_owner(&mut *tx, &site.name)
            .await?
            .is_some_and(|org| org != site.org_id)
        {
            return Ok(SiteCreated::NameTakenByOtherOrg);
        }
        match super::insert_site(&mut *tx, site).await {
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(SiteCreated::NameTaken),
            other => other?,
        }
        super::insert_environment(&mut *tx, new.environment).await?;
        let data = json!({ "name": site.name });
        super::insert_event(&mut *tx, &site.org_id, "site.created", &site.id, &data).await?;
        for (name, sealed) in &new.env_vars {
            super::upsert_env_var(&mut *tx, &site.org_id, &site.id, "", name, sealed).await?;
        }
        if let Some(deploy) = &new.deploy
            && let DeployQueued::OtherReplicasLive(n) = enqueue_deploy_in(&mut tx, deploy).await?
        {
            return Ok(SiteCreated::OtherReplicasLive(n));
        }
        tx.commit().await?;
        Ok(SiteCreated::Created)
    }

    /// Creates an environment of a site with its `environment.created` event, and queues
    /// its first deploy when given (a refused deploy creates nothing).
    pub async fn create_environment(
        &self,
        env: &EnvironmentRow,
        deploy: Option<&NewDeploy<'_>>,
    ) -> sqlx::Result<DeployQueued> {
        let mut tx = self.begin().await?;
        super::insert_environment(&mut *tx, env).await?;
        let data = json!({ "site_id": env.site_id, "name": env.name });
        super::insert_event(&mut *tx, &env.org_id, "environment.created", &env.id, &data).await?;
        if let Some(deploy) = deploy
            && let refused @ DeployQueued::OtherReplicasLive(_) = enqueue_deploy_in(&mut tx, deploy).await?
        {
            return Ok(refused);
        }
        tx.commit().await?;
        Ok(DeployQueued::Queued)
    }

    /// Deletes an environment with its `environment.deleted` event; deployments built for
    /// it that another environment serves move to that one. Returns the ids of the
    /// deployments deleted with it.
    pub async fn delete_environment(&self, env: &EnvironmentRow) -> sqlx::Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let doomed = super::rehome_deployments(&mut tx, &env.id).await?;
        super::delete_environment_row(&mut *tx, &env.id).await?;
        let data = json!({ "site_id": env.site_id, "name": env.name });
        super::insert_event(&mut *tx, &env.org_id, "environment.deleted", &env.id, &data).await?;
        tx.commit().await?;
        Ok(doomed)
    }

    /// Deletes a site's rows (its environments, deployments, domains and the rest go with
    /// it) and records `site.deleted`.
    pub async fn delete_site(&self, site: &SiteRow) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::delete_site_rows(&mut *tx, &site.id).await?;
        let data = json!({ "name": site.name });
        super::insert_event(&mut *tx, &site.org_id, "site.deleted", &site.id, &data).await?;
        tx.commit().await
    }
}

/// What became of a dashboard session's switch to another org.
#[derive(Clone, Debug)]
pub enum OrgSwitch {
    /// The session acts in this org now, as this role.
    Switched(OrgRow, Role),
    /// The person is not a member of such an org (or it does not exist); nothing changed.
    NotMember,
    /// The session is gone (expired, logged out); nothing changed.
    SessionGone,
}

/// What became of a new org.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrgCreated {
    /// Created, its first owner a member.
    Created,
    /// Its owner-to-be belongs to this many orgs already, the most allowed.
    TooManyOrgs,
    /// An org of that name exists.
    NameTaken,
}

impl Store {
    /// Moves a dashboard session to another org of its person with a new CSRF token, and
    /// records `audit` there: its `org_id` becomes the org moved to and its arguments
    /// `{"org": name, "role": role}`.
    pub async fn switch_session_org(
        &self,
        session_id_hash: &str,
        user_id: &str,
        org_id: &str,
        csrf_token: &str,
        audit: &NewAuditEntry<'_>,
    ) -> sqlx::Result<OrgSwitch> {
        let mut tx = self.begin().await?;
        let Some(role) = member_role(&mut *tx, org_id, user_id)
            .await?
            .and_then(|r| Role::parse(&r))
        else {
            return Ok(OrgSwitch::NotMember);
        };
        let Some(org) = super::get_org(&mut *tx, org_id).await? else {
            return Ok(OrgSwitch::NotMember);
        };
        if !super::ui_sessions::switch_org(&mut *tx, session_id_hash, user_id, &org.id, csrf_token).await? {
            return Ok(OrgSwitch::SessionGone);
        }
        let arguments = json!({ "org": org.name, "role": role });
        let entry = NewAuditEntry {
            org_id: &org.id,
            arguments: &arguments,
            ..*audit
        };
        super::insert_audit(&mut *tx, &entry).await?;
        tx.commit().await?;
        Ok(OrgSwitch::Switched(org, role))
    }

    /// Creates an org with `owner` as its first owner and records `audit` (whose `org_id`
    /// is the new org's); refused when the owner has `max_orgs` orgs already or the name
    /// is taken, both checked under the write lock.
    pub async fn create_org(
        &self,
        id: &str,
        name: &str,
        owner: &str,
        max_orgs: i64,
        audit: &NewAuditEntry<'_>,
    ) -> sqlx::Result<OrgCreated> {
        let mut tx = self.begin().await?;
        if count_orgs_of(&mut *tx, owner).await? >= max_orgs {
            return Ok(OrgCreated::TooManyOrgs);
        }
        if super::get_org_by_name(&mut *tx, name).await?.is_some() {
            return Ok(OrgCreated::NameTaken);
        }
        super::insert_org(&mut *tx, id, name).await?;
        upsert_member(&mut *tx, id, owner, Role::Owner.as_str()).await?;
        super::insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(OrgCreated::Created)
    }
}

impl Store {
    /// Freezes (every grant of the org revoked, new consents refused) or unfreezes an
    /// org's agents. Returns the grants revoked and when the org is frozen since.
    pub async fn set_agents_frozen(&self, org_id: &str, frozen: bool) -> sqlx::Result<(u64, Option<i64>)> {
        let mut tx = self.begin().await?;
        let revoked = super::oauth::set_frozen(&mut tx, org_id, frozen).await?;
        let at = super::oauth::frozen_at(&mut *tx, org_id).await?;
        tx.commit().await?;
        Ok((revoked, at))
    }

    /// Stores an org's settings of a provider (sealed) with its `provider.configured`
    /// event naming the keys set.
    pub async fn configure_provider(
        &self,
        org_id: &str,
        provider: &str,
        sealed: &str,
        keys: &[&String],
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::set_provider_config(&mut *tx, org_id, provider, sealed).await?;
        let data = json!({ "provider": provider, "keys": keys });
        super::insert_event(&mut *tx, org_id, "provider.configured", provider, &data).await?;
        tx.commit().await
    }

    /// Sets (a sealed value) or deletes (`None`) env vars of a site in one scope (`""`
    /// for the site, else an environment id), with their `env_vars.changed` event
    /// (`environment` as the caller named it).
    pub async fn change_env_vars(
        &self,
        site: &SiteRow,
        scope: &str,
        environment: Option<&str>,
        changes: &[(&String, Option<String>)],
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for (name, sealed) in changes {
            match sealed {
                Some(sealed) => super::upsert_env_var(&mut *tx, &site.org_id, &site.id, scope, name, sealed).await?,
                None => {
                    super::delete_env_var(&mut *tx, &site.id, scope, name).await?;
                }
            }
        }
        let names: Vec<&String> = changes.iter().map(|(name, _)| *name).collect();
        let data = json!({ "site_id": site.id, "environment": environment, "names": names });
        super::insert_event(&mut *tx, &site.org_id, "env_vars.changed", &site.id, &data).await?;
        tx.commit().await
    }
}

/// A site's settings as they are to be stored; `None` fields are unchanged.
#[derive(Clone, Debug)]
pub struct SiteSettingsChange<'a> {
    /// Build settings (JSON).
    pub build_settings: &'a str,
    /// The site's branch (production follows it when it changes).
    pub branch: Option<&'a str>,
    /// Whether the branch changed.
    pub branch_changed: bool,
    /// Its target.
    pub provider: &'a str,
    /// Previews on or off, when changed.
    pub previews: Option<bool>,
    /// The drain period, when changed.
    pub drain_seconds: Option<Option<i64>>,
    /// The names of the settings changed, for the `site.updated` event.
    pub changed: &'a [String],
}

impl Store {
    /// Stores a site's changed settings with its `site.updated` event; production's
    /// branch follows the site's.
    pub async fn update_site(&self, site: &SiteRow, change: &SiteSettingsChange<'_>) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::update_site_settings(
            &mut *tx,
            &site.id,
            change.build_settings,
            change.branch,
            change.provider,
        )
        .await?;
        if change.branch_changed
            && let Some(production) = super::get_environment(&mut *tx, &site.id, "production").await?
        {
            super::set_environment_branch(&mut *tx, &production.id, change.branch).await?;
        }
        if let Some(previews) = change.previews {
            super::git::set_site_previews(&mut *tx, &site.id, previews).await?;
        }
        if let Some(drain_seconds) = change.drain_seconds {
            super::set_site_drain_seconds(&mut *tx, &site.id, drain_seconds).await?;
        }
        let data = json!({ "name": site.name, "changed": change.changed });
        super::insert_event(&mut *tx, &site.org_id, "site.updated", &site.id, &data).await?;
        tx.commit().await
    }

    /// Stores an environment's scaling with its `environment.scaled` event.
    pub async fn scale_environment(
        &self,
        site: &SiteRow,
        env: &EnvironmentRow,
        scaling: &super::ScalingRow,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::set_scaling(&mut *tx, &env.id, scaling).await?;
        let data = json!({ "site_id": site.id, "environment": env.name, "min": scaling.min_instances, "max": scaling.max_instances });
        super::insert_event(&mut *tx, &site.org_id, "environment.scaled", &env.id, &data).await?;
        tx.commit().await
    }
}

/// An API key to store (only its hash).
#[derive(Clone, Copy, Debug)]
pub struct NewApiKey<'a> {
    /// Id.
    pub id: &'a str,
    /// Name, as shown.
    pub name: &'a str,
    /// Public lookup prefix.
    pub prefix: &'a str,
    /// argon2id hash of the key.
    pub hash: &'a str,
    /// Role name.
    pub role: &'a str,
}

impl Store {
    /// Creates an org with a first API key (the server's bootstrap).
    pub async fn create_org_with_key(&self, org_id: &str, name: &str, key: &NewApiKey<'_>) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::insert_org(&mut *tx, org_id, name).await?;
        super::insert_api_key(&mut *tx, key.id, org_id, key.name, key.prefix, key.hash, key.role).await?;
        tx.commit().await
    }

    /// Records that a live deployment crash-loops: `crashed` with its `deployment.crashed`
    /// event (the environment's name and the deployment it rolls back to, if any). False
    /// when it was no longer live (handled already); nothing changes then.
    pub async fn record_crash(
        &self,
        d: &DeploymentRow,
        environment: &str,
        error: &str,
        rolled_back_to: Option<&str>,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        if !super::transition_deployment(&mut *tx, &d.id, DeploymentStatus::Crashed, Some(error)).await? {
            return Ok(false);
        }
        let data = json!({
            "site_id": d.site_id,
            "environment": environment,
            "error": error,
            "rolled_back_to": rolled_back_to,
        });
        super::insert_event(&mut *tx, &d.org_id, "deployment.crashed", &d.id, &data).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a grant's new access and refresh tokens (by their digests) and deletes
    /// expired codes and tokens, so neither table grows with time.
    pub async fn issue_oauth_tokens(
        &self,
        grant_id: &str,
        access: (&str, i64),
        refresh: (&str, i64),
        now: i64,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        super::oauth::insert_token(&mut *tx, access.0, grant_id, "access", access.1).await?;
        super::oauth::insert_token(&mut *tx, refresh.0, grant_id, "refresh", refresh.1).await?;
        super::oauth::delete_expired(&mut tx, now).await?;
        tx.commit().await
    }
}

/// The writes of a queued deploy, inside a caller's transaction.
async fn enqueue_deploy_in(tx: &mut Tx, deploy: &NewDeploy<'_>) -> sqlx::Result<DeployQueued> {
    if let Some((me, since)) = deploy.sole_replica {
        let live = super::live_replicas(&mut **tx, since).await?;
        let others = live.iter().filter(|id| id.as_str() != me).count();
        if others > 0 {
            return Ok(DeployQueued::OtherReplicasLive(others));
        }
    }
    let d = deploy.deployment;
    super::insert_deployment(&mut **tx, d).await?;
    let data = json!({ "site_id": d.site_id });
    super::insert_event(&mut **tx, &d.org_id, "deployment.queued", &d.id, &data).await?;
    super::enqueue_job(&mut *tx, &d.org_id, &deploy.job).await?;
    Ok(DeployQueued::Queued)
}

/// Records, in the transaction that superseded them, a `deployment.superseded` event for
/// each deployment `by` took the place of: readers follow each deployment by its own events.
async fn insert_superseded_events(
    tx: &mut Tx,
    org_id: &str,
    site_id: &str,
    superseded: &[String],
    by: &str,
) -> sqlx::Result<()> {
    for id in superseded {
        let data = json!({ "site_id": site_id, "status": "superseded", "by": by });
        super::insert_event(&mut **tx, org_id, "deployment.superseded", id, &data).await?;
    }
    Ok(())
}
