//! The MCP adapter: every `HOSTING_*` tool is a thin call into the service layer. Served
//! over streamable HTTP at `/mcp` (the bearer key is checked by the HTTP layer, which puts
//! the caller's [`Actor`] in the request), and over stdio by `berth mcp`, which relays to
//! a running server.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{IntoCallToolResult, schema_for_output};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, ProgressNotificationParam, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::ServiceError;
use crate::model::Actor;
use crate::service::*;

/// A tool's result: structured content plus a one-line summary for humans. `failed`: the
/// call went through but what it waited for failed (a deploy with `wait`), so the result
/// is marked `isError` for the agent while still carrying the deployment, its error and
/// its last log lines.
pub struct Reply<T> {
    summary: String,
    value: T,
    failed: bool,
}

impl<T: Serialize + JsonSchema + 'static> IntoCallToolResult for Reply<T> {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        let value = serde_json::to_value(&self.value).map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(data_once(self.summary, value, self.failed).into())
    }
}

/// A tool's failure: the error envelope as structured content, `isError: true`.
pub struct ToolError(ServiceError);

impl From<ServiceError> for ToolError {
    fn from(e: ServiceError) -> Self {
        Self(e)
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        crate::prometheus::error_answered(self.0.code());
        let envelope = self.0.envelope();
        let line = format!("{}: {}", envelope.error.code, envelope.error.message);
        let value = serde_json::to_value(envelope).unwrap_or_default();
        Ok(data_once(line, value, true).into())
    }
}

/// A result whose text part is one line for humans and whose data is sent once, as
/// structured content (rmcp's `structured` would also send it again as JSON text, doubling
/// every large listing).
fn data_once(line: String, value: serde_json::Value, is_error: bool) -> CallToolResult {
    let mut result = if is_error {
        CallToolResult::structured_error(value)
    } else {
        CallToolResult::structured(value)
    };
    result.content = vec![ContentBlock::text(line)];
    result
}

type ToolResult<T> = Result<Reply<T>, ToolError>;

fn reply<T>(summary: impl Into<String>, value: T) -> ToolResult<T> {
    Ok(Reply {
        summary: summary.into(),
        value,
        failed: false,
    })
}

/// A reply about a deployment that is marked `isError` when the deployment ended failed
/// or cancelled (only a call that waited sees a final status).
fn deployment_reply<T>(summary: impl Into<String>, value: T, deployment: Option<&DeploymentInfo>) -> ToolResult<T> {
    let failed = deployment.is_some_and(|d| {
        matches!(
            d.status,
            crate::model::DeploymentStatus::Failed | crate::model::DeploymentStatus::Cancelled
        )
    });
    Ok(Reply {
        summary: summary.into(),
        value,
        failed,
    })
}

/// `HOSTING_DEPLOY`'s result: the deployment (its fields at the top level), or with
/// `dry_run` the objects a release would apply.
#[derive(Serialize, JsonSchema)]
pub struct DeployToolOutput {
    /// The deployment and its environment's URL.
    #[serde(flatten)]
    deployed: Option<DeployOutput>,
    /// With `dry_run: true`: what a release would apply (no deployment was made).
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<DryRunOutput>,
}

/// The MCP server: one per session, cheap to create.
#[derive(Clone)]
pub struct BerthMcp {
    service: Service,
    /// Every tool, by domain (`tool_router` + `provider_router` + `domain_router` +
    /// `resource_router` + `people_router` + `metrics_router`).
    tool_router: ToolRouter<Self>,
}

fn actor_of(ctx: &RequestContext<RoleServer>) -> Result<Actor, ToolError> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Actor>())
        .cloned()
        .ok_or(ToolError(ServiceError::Unauthorized))
}

/// Forwards the progress of a waited-on deployment (status changes, and its newest log
/// line while it builds or starts) as MCP progress notifications.
fn progress_forwarder(ctx: &RequestContext<RoleServer>) -> impl FnMut(&DeploymentInfo) + Send + use<> {
    let token = ctx.meta.get_progress_token();
    let peer = ctx.peer.clone();
    let mut step = 0.0;
    move |d: &DeploymentInfo| {
        let Some(token) = token.clone() else { return };
        step += 1.0;
        let mut message = format!("deployment {} is {}", d.id, d.status.as_str());
        if let Some(line) = d.progress_line.as_deref().filter(|l| !l.is_empty()) {
            message.push_str(": ");
            message.push_str(line);
        }
        let param = ProgressNotificationParam::new(token, step).with_message(message);
        let peer = peer.clone();
        tokio::spawn(async move {
            let _ = peer.notify_progress(param).await;
        });
    }
}

#[tool_router]
impl BerthMcp {
    /// A server over the service.
    pub fn new(service: Service) -> Self {
        Self {
            service,
            tool_router: Self::tool_router()
                + Self::provider_router()
                + Self::domain_router()
                + Self::resource_router()
                + Self::people_router()
                + Self::metrics_router(),
        }
    }

    #[tool(
        name = "HOSTING_WHOAMI",
        description = "Who am I: the org, user and API key this connection acts as, its role, scopes, site and environment restriction and expiry, the actions it may take, the URL pattern sites get, and (for a person) every org they belong to with their role in each.",
        output_schema = schema_for_output::<WhoAmI>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn whoami(&self, ctx: RequestContext<RoleServer>) -> ToolResult<WhoAmI> {
        let actor = actor_of(&ctx)?;
        let me = self.service.whoami(&actor).await?;
        let orgs = me.orgs.as_ref().filter(|o| o.len() > 1).map(|orgs| {
            let names: Vec<String> = orgs.iter().map(|o| format!("{} ({})", o.name, o.role)).collect();
            format!("; member of: {}", names.join(", "))
        });
        reply(
            format!(
                "org '{}' as key '{}' ({}); may: {}{}",
                me.org,
                me.key_name,
                me.role,
                me.allowed_actions
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                orgs.unwrap_or_default()
            ),
            me,
        )
    }

    #[tool(
        name = "HOSTING_LIST_SITES",
        description = "List the org's sites, a page at a time by name (limit: default 50, at most 200; pass next_cursor back as cursor; name_contains filters), with status (live, building, failed, crashed, starting, new), URL and latest deployment.",
        output_schema = schema_for_output::<SiteList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_sites(
        &self,
        Parameters(input): Parameters<ListSitesInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<SiteList> {
        let actor = actor_of(&ctx)?;
        let list = self.service.list_sites(&actor, &input).await?;
        // One line: the sites themselves are in the structured content.
        let summary = match (&list.next_cursor, list.sites.is_empty()) {
            (_, true) if list.total == 0 => "no sites yet; create one with HOSTING_CREATE_SITE".to_string(),
            (Some(cursor), _) => format!(
                "{} of {} sites; next page: HOSTING_LIST_SITES {{\"cursor\": \"{cursor}\"}}",
                list.sites.len(),
                list.total
            ),
            (None, _) => {
                let names: Vec<String> = list
                    .sites
                    .iter()
                    .take(20)
                    .map(|s| format!("{} ({})", s.name, s.status))
                    .collect();
                let more = list.sites.len().saturating_sub(20);
                format!(
                    "{} of {} sites: {}{}",
                    list.sites.len(),
                    list.total,
                    names.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
        };
        reply(summary, list)
    }

    #[tool(
        name = "HOSTING_GET_SITE",
        description = "Get one site: status, URLs, environments, recent deployments, and the tails of its build log and runtime log (use these to debug).",
        output_schema = schema_for_output::<SiteDetail>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_site(
        &self,
        Parameters(input): Parameters<GetSiteInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<SiteDetail> {
        let actor = actor_of(&ctx)?;
        let site = self.service.get_site(&actor, &input).await?;
        reply(
            format!(
                "{} is {} at {}",
                site.summary.name, site.summary.status, site.summary.url
            ),
            site,
        )
    }

    #[tool(
        name = "HOSTING_CREATE_SITE",
        description = "Create a site from a git URL (https://, file://) or a folder path on the server and deploy it. With wait=true the call returns once the site is live (with its URL) or failed (with the error and last log lines). Build packs: static, procfile, node (bun too), python, go, rust, deno (detected; override with build_pack and commands). Apps must listen on $PORT.",
        output_schema = schema_for_output::<CreateSiteOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn create_site(
        &self,
        Parameters(input): Parameters<CreateSiteInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<CreateSiteOutput> {
        let actor = actor_of(&ctx)?;
        let mut progress = progress_forwarder(&ctx);
        let out = self.service.create_site(&actor, input, None, &mut progress).await?;
        let deployment = out.deployment.clone();
        deployment_reply(
            format!("site '{}': {}", out.site, out.next_steps),
            out,
            deployment.as_ref(),
        )
    }

    #[tool(
        name = "HOSTING_UPDATE_SITE",
        description = "Change a site's settings: build_pack, install_command, build_command, start_command, output_dir, root_dir (monorepo subfolder), port, health_check_path, branch, previews, provider, drain_seconds (0-600, default 30: how long an old instance may finish its requests after a deploy, promote, rollback or scale-in). Absent fields are unchanged; null clears a setting back to detection (or the default). Validated like HOSTING_CREATE_SITE (a bad value changes nothing); answers the settings after the change. They apply at the next deploy (HOSTING_DEPLOY), drain_seconds at the next drain; HOSTING_DEPLOY `overrides` tries settings for one deployment without changing the site.",
        output_schema = schema_for_output::<UpdateSiteOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn update_site(
        &self,
        Parameters(input): Parameters<UpdateSiteInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<UpdateSiteOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.update_site(&actor, &input).await?;
        let summary = if out.changed.is_empty() {
            format!("site '{}': {}", out.site, out.next_steps)
        } else {
            format!(
                "site '{}': changed {}; {}",
                out.site,
                out.changed.join(", "),
                out.next_steps
            )
        };
        reply(summary, out)
    }

    #[tool(
        name = "HOSTING_DELETE_SITE",
        description = "Delete a site: stops its processes, removes its route, deployments, logs and files. Cannot be undone.",
        output_schema = schema_for_output::<DeleteSiteOutput>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn delete_site(
        &self,
        Parameters(input): Parameters<SiteRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DeleteSiteOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.delete_site(&actor, &input).await?;
        reply(
            format!(
                "deleted site '{}' and {} deployment(s)",
                out.site, out.deployments_removed
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_DEPLOY",
        description = "Deploy a site again (its branch, or a given branch or commit); `overrides` (the build settings of HOSTING_UPDATE_SITE) apply to this deployment only and are recorded with it. With wait=true, returns when live or failed and sends progress notifications meanwhile; a failed deployment carries its error and last log lines. The previous deployment keeps serving until the new one is healthy.",
        output_schema = schema_for_output::<DeployToolOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn deploy(
        &self,
        Parameters(input): Parameters<DeployInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DeployToolOutput> {
        let actor = actor_of(&ctx)?;
        if input.dry_run == Some(true) {
            let dry_run = self.service.dry_run_deploy(&actor, &input).await?;
            let summary = format!(
                "dry run of {} ({}): {} objects, nothing built or applied",
                dry_run.site,
                dry_run.environment,
                dry_run.objects.len()
            );
            return reply(
                summary,
                DeployToolOutput {
                    deployed: None,
                    dry_run: Some(dry_run),
                },
            );
        }
        let mut progress = progress_forwarder(&ctx);
        let out = self.service.deploy(&actor, input, None, &mut progress).await?;
        let deployment = out.deployment.clone();
        deployment_reply(
            next_steps_for(&out.deployment, &out.url),
            DeployToolOutput {
                deployed: Some(out),
                dry_run: None,
            },
            Some(&deployment),
        )
    }

    #[tool(
        name = "HOSTING_LIST_DEPLOYMENTS",
        description = "List a site's deployments, newest first, a page at a time (limit: default 20, at most 100; pass next_cursor back as cursor): id, status, commit, environment, created_at, url. Each environment keeps its newest kept_per_environment finished deployments; older ones are removed.",
        output_schema = schema_for_output::<DeploymentList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_deployments(
        &self,
        Parameters(input): Parameters<ListDeploymentsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DeploymentList> {
        let actor = actor_of(&ctx)?;
        let list = self.service.list_deployments(&actor, &input).await?;
        let mut summary = list
            .deployments
            .iter()
            .map(|d| format!("{} {} {}", d.id, d.status.as_str(), d.created_at))
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(cursor) = &list.next_cursor {
            summary.push_str(&format!(
                "\nolder: HOSTING_LIST_DEPLOYMENTS {{\"site\": \"{}\", \"cursor\": \"{cursor}\"}}",
                input.site
            ));
        }
        reply(
            if summary.is_empty() {
                "no deployments yet".into()
            } else {
                summary
            },
            list,
        )
    }

    #[tool(
        name = "HOSTING_GET_DEPLOYMENT",
        description = "Get one deployment: status, commit, build pack, error, for a failed one its last log lines, and once it has served traffic its requests, 5xx rate and p95 against the deployment of the same environment that served before it, with a verdict (better, worse, about the same).",
        output_schema = schema_for_output::<DeploymentInfo>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_deployment(
        &self,
        Parameters(input): Parameters<DeploymentRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DeploymentInfo> {
        let actor = actor_of(&ctx)?;
        let d = self.service.get_deployment(&actor, &input).await?;
        reply(format!("{} is {}", d.id, d.status.as_str()), d)
    }

    #[tool(
        name = "HOSTING_GET_DEPLOYMENT_LOGS",
        description = "Read a deployment's build and runtime log lines after a cursor (default 100 lines, at most 1000). Pass next_cursor back to continue; has_more says whether more lines exist now.",
        output_schema = schema_for_output::<LogPage>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_deployment_logs(
        &self,
        Parameters(input): Parameters<LogsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<LogPage> {
        let actor = actor_of(&ctx)?;
        let page = self.service.get_deployment_logs(&actor, &input).await?;
        let summary = page
            .lines
            .iter()
            .map(|l| l.line.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        reply(
            if summary.is_empty() {
                "no log lines after this cursor".into()
            } else {
                summary
            },
            page,
        )
    }

    #[tool(
        name = "HOSTING_LIST_ENVIRONMENTS",
        description = "List a site's environments (production first, then previews by name), a page at a time (limit: default 50, at most 200; pass next_cursor back as cursor), with URL, branch, serving deployment and status.",
        output_schema = schema_for_output::<EnvironmentList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_environments(
        &self,
        Parameters(input): Parameters<ListEnvironmentsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<EnvironmentList> {
        let actor = actor_of(&ctx)?;
        let list = self.service.list_environments(&actor, &input).await?;
        // One line: the environments themselves are in the structured content.
        let names: Vec<String> = list
            .environments
            .iter()
            .take(20)
            .map(|e| format!("{} ({})", e.name, e.status))
            .collect();
        let more = list.environments.len().saturating_sub(names.len());
        let mut summary = format!("{} environment(s): {}", list.environments.len(), names.join(", "));
        if more > 0 {
            summary.push_str(&format!(" and {more} more"));
        }
        if let Some(cursor) = &list.next_cursor {
            summary.push_str(&format!(
                "; next page: HOSTING_LIST_ENVIRONMENTS {{\"site\": \"{}\", \"cursor\": \"{cursor}\"}}",
                input.site
            ));
        }
        reply(summary, list)
    }

    #[tool(
        name = "HOSTING_CREATE_ENVIRONMENT",
        description = "Create a preview environment of a site, served at http://<name>--<site>.<base-domain>. Git sites build the given branch or commit into it; other sites start it on production's current deployment. wait=true blocks until its deployment is live or failed.",
        output_schema = schema_for_output::<EnvironmentOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn create_environment(
        &self,
        Parameters(input): Parameters<CreateEnvironmentInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<EnvironmentOutput> {
        let actor = actor_of(&ctx)?;
        let mut progress = progress_forwarder(&ctx);
        let out = self.service.create_environment(&actor, input, &mut progress).await?;
        reply(
            format!("environment '{}' at {}", out.environment.name, out.environment.url),
            out,
        )
    }

    #[tool(
        name = "HOSTING_DELETE_ENVIRONMENT",
        description = "Delete a preview environment: stops its processes and removes its route and the deployments built for it. production cannot be deleted (delete the site instead).",
        output_schema = schema_for_output::<EnvironmentList>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn delete_environment(
        &self,
        Parameters(input): Parameters<EnvironmentRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<EnvironmentList> {
        let actor = actor_of(&ctx)?;
        let list = self.service.delete_environment(&actor, &input).await?;
        reply(
            format!("deleted environment '{}' of '{}'", input.environment, input.site),
            list,
        )
    }

    #[tool(
        name = "HOSTING_GET_ENVIRONMENT_LOGS",
        description = "Runtime log lines of the deployment an environment serves: the newest `limit` lines (default 100, max 1000), or the lines after `cursor`.",
        output_schema = schema_for_output::<LogPage>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_environment_logs(
        &self,
        Parameters(input): Parameters<EnvironmentLogsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<LogPage> {
        let actor = actor_of(&ctx)?;
        let page = self.service.get_environment_logs(&actor, &input).await?;
        let summary = page
            .lines
            .iter()
            .map(|l| l.line.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        reply(
            if summary.is_empty() {
                "no runtime log lines".into()
            } else {
                summary
            },
            page,
        )
    }

    #[tool(
        name = "HOSTING_PROMOTE",
        description = "Point an environment (default production) at any live or superseded deployment of the site. No rebuild: the switch happens as soon as the deployment's app is healthy (instant for static sites and running apps). A deployment built for another environment (a preview) becomes a new deployment of this one with the same build and this environment's variables; the output names it.",
        output_schema = schema_for_output::<SwitchOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn promote(
        &self,
        Parameters(input): Parameters<PromoteInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<SwitchOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.promote(&actor, &input).await?;
        reply(
            format!("{} now serves {}", out.environment.name, out.deployment.id),
            out,
        )
    }

    #[tool(
        name = "HOSTING_ROLLBACK",
        description = "Point an environment (default production) back at the newest built deployment older than the one it serves, without rebuilding. Call again to go further back.",
        output_schema = schema_for_output::<SwitchOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn rollback(
        &self,
        Parameters(input): Parameters<RollbackInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<SwitchOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.rollback(&actor, &input).await?;
        reply(
            format!("{} rolled back to {}", out.environment.name, out.deployment.id),
            out,
        )
    }

    #[tool(
        name = "HOSTING_CANCEL_DEPLOYMENT",
        description = "Cancel a queued or building deployment: its build processes are killed and it ends as cancelled; whatever is serving keeps serving.",
        output_schema = schema_for_output::<DeploymentInfo>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn cancel_deployment(
        &self,
        Parameters(input): Parameters<DeploymentRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DeploymentInfo> {
        let actor = actor_of(&ctx)?;
        let d = self.service.cancel_deployment(&actor, &input).await?;
        reply(format!("{} is {}", d.id, d.status.as_str()), d)
    }

    #[tool(
        name = "HOSTING_GET_ENV_VARS",
        description = "List a site's env vars (and an environment's overrides) with values masked; reveal=true shows values to admin keys.",
        output_schema = schema_for_output::<EnvVarsOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_env_vars(
        &self,
        Parameters(input): Parameters<GetEnvVarsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<EnvVarsOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_env_vars(&actor, &input).await?;
        reply(
            format!(
                "{} variable(s): {}",
                out.vars.len(),
                out.vars.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_SET_ENV_VARS",
        description = "Set env vars of a site (or one environment with `environment`); a null value deletes. Values are encrypted at rest, masked in outputs and redacted from logs. restart=true restarts running apps so they see the change; otherwise it applies at the next deploy.",
        output_schema = schema_for_output::<EnvVarsOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn set_env_vars(
        &self,
        Parameters(input): Parameters<SetEnvVarsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<EnvVarsOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.set_env_vars(&actor, &input).await?;
        reply(
            format!("updated {} variable(s) of '{}'", input.vars.len(), out.site),
            out,
        )
    }

    #[tool(
        name = "HOSTING_GET_SCALING_CONFIG",
        description = "An environment's scale settings (min/max instances, idle timeout, target concurrency) and how many instances run now.",
        output_schema = schema_for_output::<ScalingConfig>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_scaling_config(
        &self,
        Parameters(input): Parameters<ScalingRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ScalingConfig> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_scaling(&actor, &input).await?;
        reply(
            format!(
                "{}: min {} max {}, {} running",
                out.environment, out.min_instances, out.max_instances, out.running_instances
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_SET_SCALING_CONFIG",
        description = "Change an environment's scale settings; omitted fields keep their value. min_instances 0 lets an idle environment sleep after idle_timeout_seconds (scale to zero): the next request wakes it and is held until the app is healthy. On docker an idle container is first paused (woken in milliseconds) and removed after the provider's keep_paused_seconds.",
        output_schema = schema_for_output::<ScalingConfig>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn set_scaling_config(
        &self,
        Parameters(input): Parameters<SetScalingInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ScalingConfig> {
        let actor = actor_of(&ctx)?;
        let out = self
            .service
            .set_scaling(&actor, "HOSTING_SET_SCALING_CONFIG", &input)
            .await?;
        reply(
            format!(
                "{}: min {} max {}, idle timeout {} s",
                out.environment, out.min_instances, out.max_instances, out.idle_timeout_seconds
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_SCALE_ENVIRONMENT",
        description = "Scale an environment now: set min_instances (0 = sleep when idle) and max_instances. Same settings as HOSTING_SET_SCALING_CONFIG.",
        output_schema = schema_for_output::<ScalingConfig>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn scale_environment(
        &self,
        Parameters(input): Parameters<SetScalingInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ScalingConfig> {
        let actor = actor_of(&ctx)?;
        let out = self
            .service
            .set_scaling(&actor, "HOSTING_SCALE_ENVIRONMENT", &input)
            .await?;
        reply(
            format!(
                "{}: min {} max {}, {} running",
                out.environment, out.min_instances, out.max_instances, out.running_instances
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_LIST_REPOS",
        description = "List the org's internal git repositories by name, a page at a time (limit: default 50, at most 200; pass next_cursor back as cursor), with clone_url and total.",
        output_schema = schema_for_output::<RepoList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_repos(
        &self,
        Parameters(input): Parameters<ListReposInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<RepoList> {
        let actor = actor_of(&ctx)?;
        let list = self.service.list_repos(&actor, &input).await?;
        // One line: the repositories themselves are in the structured content.
        let summary = match &list.next_cursor {
            _ if list.total == 0 => "no repositories yet; create one with HOSTING_CREATE_REPO".to_string(),
            Some(cursor) => format!(
                "{} of {} repositories; next page: HOSTING_LIST_REPOS {{\"cursor\": \"{cursor}\"}}",
                list.repos.len(),
                list.total
            ),
            None => {
                let names: Vec<&str> = list.repos.iter().take(20).map(|r| r.repo.as_str()).collect();
                let more = list.repos.len().saturating_sub(names.len());
                format!(
                    "{} of {} repositories: {}{}",
                    list.repos.len(),
                    list.total,
                    names.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
        };
        reply(summary, list)
    }

    #[tool(
        name = "HOSTING_CREATE_REPO",
        description = "Create an empty internal git repository, served over smart HTTP at clone_url. Then HOSTING_GET_GIT_TOKEN for push credentials and HOSTING_CREATE_SITE {name, repo: <this name>}: every `git push` to the site's branch deploys exactly the pushed commit (and other branches build previews when the site has previews=true).",
        output_schema = schema_for_output::<RepoOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn create_repo(
        &self,
        Parameters(input): Parameters<CreateRepoInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<RepoOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.create_repo(&actor, &input).await?;
        reply(format!("repository '{}' at {}", out.repo, out.clone_url), out)
    }

    #[tool(
        name = "HOSTING_GET_GIT_TOKEN",
        description = "Short-lived HTTP basic credentials for one internal repository (username + token; push_url has them embedded): `git push <push_url> HEAD:main`. The token is shown once, stored hashed, opens only this repository and expires after ttl_seconds (default 3600).",
        output_schema = schema_for_output::<GitTokenOutput>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn get_git_token(
        &self,
        Parameters(input): Parameters<GitTokenInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<GitTokenOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_git_token(&actor, &input).await?;
        reply(
            format!("token for '{}' until {} (shown once)", input.repo, out.expires_at),
            out,
        )
    }
}

/// Provider settings tools.
#[tool_router(router = provider_router)]
impl BerthMcp {
    #[tool(
        name = "HOSTING_GET_CONFIG",
        description = "Settings of the providers (where apps run, where code comes from): which keys each accepts, current values with secrets masked as ***, and for each target where apps run (local, docker) its capabilities (scale_to_zero, max_instances, promote_without_rebuild, runtime_logs, resource_usage, custom_domains, build); an operation a site's target cannot do is refused. Give `provider` for one.",
        output_schema = schema_for_output::<ConfigOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_config(
        &self,
        Parameters(input): Parameters<GetConfigInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ConfigOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_config(&actor, &input).await?;
        let names: Vec<String> = out
            .providers
            .iter()
            .map(|p| {
                format!(
                    "{} ({})",
                    p.provider,
                    if p.configured { "configured" } else { "defaults" }
                )
            })
            .collect();
        reply(names.join(", "), out)
    }

    #[tool(
        name = "HOSTING_SET_CONFIG",
        description = "Set a provider's settings: {provider, config: {key: value}}; a null value removes a key, other keys keep their values. Validated as a whole before anything is stored; stored encrypted; admin keys only. HOSTING_GET_CONFIG lists the keys.",
        output_schema = schema_for_output::<ProviderConfig>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn set_config(
        &self,
        Parameters(input): Parameters<SetConfigInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ProviderConfig> {
        let actor = actor_of(&ctx)?;
        let out = self.service.set_config(&actor, &input).await?;
        let keys: Vec<&String> = input.config.keys().collect();
        reply(
            format!(
                "{}: updated {}",
                out.provider,
                keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_TEST_CONNECTION",
        description = "Try a provider with its current settings (e.g. reach the Docker engine). Returns ok and what was found, or what is wrong and how to fix it.",
        output_schema = schema_for_output::<TestConnectionOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = true)
    )]
    async fn test_connection(
        &self,
        Parameters(input): Parameters<TestConnectionInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<TestConnectionOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.test_connection(&actor, &input).await?;
        reply(
            format!(
                "{}: {} ({})",
                out.provider,
                if out.ok { "ok" } else { "failed" },
                out.detail
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_GET_USAGE",
        description = "What the org used in a calendar month (UTC; `month` as YYYY-MM, default the current one): requests and response bytes (`bandwidth_bytes`) through the edge, builds and their time (`build_seconds`, `build_minutes`), and app instance time (`instance_seconds`, `instance_hours`; static sites and sleeping apps use none), in `totals` and per site by name (a page: `limit` 1-200, default 50, then `cursor`: `next_cursor`). Deleted sites still count, marked `deleted`. `site` narrows it to one site. A month in the future or older than 400 days is refused.",
        output_schema = schema_for_output::<UsageOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_usage(
        &self,
        Parameters(input): Parameters<UsageInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<UsageOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_usage(&actor, &input).await?;
        let t = &out.totals;
        let next = out.next_cursor.as_deref().map_or_else(String::new, |c| {
            format!("; next page: HOSTING_GET_USAGE {{\"cursor\": \"{c}\"}}")
        });
        reply(
            format!(
                "{} in {}: {} requests, {} bytes out, {} builds ({:.1} build minutes), {:.2} instance hours; {} sites on this page{next}",
                out.org,
                out.month,
                t.requests,
                t.bandwidth_bytes,
                t.builds,
                t.build_minutes,
                t.instance_hours,
                out.sites.len()
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_GET_RESOURCE_USAGE",
        description = "CPU and memory of each running instance of a site's environment (default production), as its provider measures them: docker reports the engine's stats; local reports none yet. Also the disk the whole site holds: log bytes per environment, deployment folders, build cache, with the settings that bound each.",
        output_schema = schema_for_output::<ResourceUsageOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_resource_usage(
        &self,
        Parameters(input): Parameters<ResourceUsageInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ResourceUsageOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_resource_usage(&actor, &input).await?;
        let summary = out
            .instances
            .iter()
            .map(|i| match (i.cpu_percent, i.memory_bytes) {
                (Some(cpu), Some(mem)) => format!("#{}: {cpu:.1}% CPU, {} MiB", i.index, mem / (1024 * 1024)),
                _ => format!("#{}: not measured", i.index),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let log_bytes: u64 = out.disk.logs.iter().map(|l| l.bytes).sum();
        reply(
            format!(
                "{} {} on {}: {}; site disk {:.1} MiB (logs {:.1}, deployments {:.1}, build cache {:.1})",
                out.site,
                out.environment,
                out.provider,
                if summary.is_empty() {
                    "no running instance".into()
                } else {
                    summary
                },
                mib(out.disk.total_bytes),
                mib(log_bytes),
                mib(out.disk.deployments_bytes),
                mib(out.disk.build_cache_bytes),
            ),
            out,
        )
    }
}

/// Traffic metrics tools: what the edge counted for a site's environment.
#[tool_router(router = metrics_router)]
impl BerthMcp {
    #[tool(
        name = "HOSTING_GET_METRICS_SUMMARY",
        description = "Traffic of a site's environment (default production) as the edge counted it, for a range (since/until: a duration back from now such as 30m, 24h, 7d, or an RFC 3339 time; default the last hour; at most 400 days back, not in the future): requests, bytes sent, 5xx and 4xx rates, time-to-first-byte p50/p90/p95/p99 (within 1 %), cold starts, and the change against the period of the same length before it.",
        output_schema = schema_for_output::<MetricsSummaryOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_metrics_summary(
        &self,
        Parameters(input): Parameters<MetricsRangeInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<MetricsSummaryOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_metrics_summary(&actor, &input).await?;
        reply(out.summary.clone(), out)
    }

    #[tool(
        name = "HOSTING_GET_METRICS_FIELDS",
        description = "What a site's traffic holds in a range, to discover values before filtering the other metrics tools: the environments with traffic, the status codes, the path templates (most requested first, at most 100, with counts), the deployments that served traffic (at most 50) and the filters each metrics tool accepts. environment narrows codes, paths and deployments to one environment (default: every one); since/until as for HOSTING_GET_METRICS_SUMMARY. No tool filters by path: the rollups keep per template only the top 100 templates' requests, 4xx and 5xx.",
        output_schema = schema_for_output::<MetricsFieldsOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_metrics_fields(
        &self,
        Parameters(input): Parameters<MetricsFieldsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<MetricsFieldsOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_metrics_fields(&actor, &input).await?;
        reply(out.summary.clone(), out)
    }

    #[tool(
        name = "HOSTING_GET_STATUS_CODES",
        description = "Requests of a site's environment by HTTP status code and class (1xx to 5xx) in a range (since/until as for HOSTING_GET_METRICS_SUMMARY). No path filter: buckets keep no status codes per path template, only each top template's 4xx and 5xx (HOSTING_GET_TOP_PATHS).",
        output_schema = schema_for_output::<StatusCodesOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_status_codes(
        &self,
        Parameters(input): Parameters<MetricsRangeInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<StatusCodesOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_status_codes(&actor, &input).await?;
        reply(out.summary.clone(), out)
    }

    #[tool(
        name = "HOSTING_GET_TOP_PATHS",
        description = "The busiest path templates of a site's environment (`GET /users/:id`: numbers, UUIDs, hex ids and tokens masked, query dropped) with their 4xx and 5xx, in a range (since/until as for HOSTING_GET_METRICS_SUMMARY); limit 1 to 100 (default 20); the rest as `other`.",
        output_schema = schema_for_output::<TopPathsOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_top_paths(
        &self,
        Parameters(input): Parameters<TopPathsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<TopPathsOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_top_paths(&actor, &input).await?;
        reply(out.summary.clone(), out)
    }

    #[tool(
        name = "HOSTING_GET_ERROR_PATTERNS",
        description = "Runtime log errors of a site's environment clustered into templates (stderr lines and stdout lines that look like errors, tracebacks and stack traces joined into one event; ids, numbers, UUIDs, IPs, dates, quoted strings and paths with numbers masked as <*>), most events in the range first, each with first/last seen, the deployments it occurred in and a sample, next to the 5xx responses by path template in the same range: what broke, since when, in which deploy. since/until as for HOSTING_GET_METRICS_SUMMARY; limit 1 to 100 (default 20); at most 500 templates per environment are kept (least recently seen evicted).",
        output_schema = schema_for_output::<ErrorPatternsOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_error_patterns(
        &self,
        Parameters(input): Parameters<ErrorPatternsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ErrorPatternsOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_error_patterns(&actor, &input).await?;
        reply(out.summary.clone(), out)
    }

    #[tool(
        name = "HOSTING_GET_USAGE_TIMELINE",
        description = "Requests, 4xx, 5xx, bytes, cold starts and p95 latency of a site's environment over time, one point per bucket: resolution 1m (kept 7 days), 1h (90 days) or 1d (400 days), at most 1,500 points (1m covers 25 h, 1h 62.5 days); since/until as for HOSTING_GET_METRICS_SUMMARY. No path filter: buckets keep only the top 100 path templates' requests, 4xx and 5xx (space-saving), not an exact series per template.",
        output_schema = schema_for_output::<TimelineOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_usage_timeline(
        &self,
        Parameters(input): Parameters<TimelineInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<TimelineOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_usage_timeline(&actor, &input).await?;
        reply(out.summary.clone(), out)
    }
}

/// A domain's status and what to do next, in one line.
fn domain_line(d: &DomainInfo) -> String {
    let mut line = format!(
        "{} → {}/{}: {} ({})",
        d.name,
        d.site,
        d.environment,
        d.status.as_str(),
        d.next
    );
    if let Some(cert) = &d.certificate {
        line.push_str(&format!("; certificate expires {}", cert.expires_at));
    }
    for warning in &d.warnings {
        line.push_str(&format!("; WARNING: {warning}"));
    }
    line
}

/// Custom domain tools.
#[tool_router(router = domain_router)]
impl BerthMcp {
    #[tool(
        name = "HOSTING_LIST_DOMAINS",
        description = "Custom domains of the org (or of one `site`), by name, with status, the DNS records each needs and the last check's diagnosis. Paged: `limit` (default 50, max 200) and `cursor` (the previous page's next_cursor).",
        output_schema = schema_for_output::<DomainList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_domains(
        &self,
        Parameters(input): Parameters<ListDomainsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DomainList> {
        let actor = actor_of(&ctx)?;
        let out = self.service.list_domains(&actor, &input).await?;
        let summary = out.domains.iter().map(domain_line).collect::<Vec<_>>().join("\n");
        reply(
            if summary.is_empty() {
                "no domains".into()
            } else {
                summary
            },
            out,
        )
    }

    #[tool(
        name = "HOSTING_ADD_DOMAIN",
        description = "Attach a custom domain to a site's environment (default production): {site, domain, environment?, redirect_www?: false, hsts?: false, wait?: false, timeout_seconds?: 120}. Answers the exact DNS records to create ({type, name, value, why}): a CNAME to the site's host for a subdomain, A/AAAA with the server's public addresses for an apex, and a TXT ownership record _berth-challenge.<domain>. Not served until its DNS checks out (HOSTING_VALIDATE_DOMAIN); then berth orders its certificate (ACME) and serves it over HTTPS, redirecting HTTP. With wait, returns once the certificate is served, or at the timeout with the diagnosis. IDNs are accepted (stored as punycode); a wildcard *.example.com (one label under it, exact names win) needs a DNS provider (DNS-01); IP addresses, the base domain and names attached anywhere else are refused.",
        output_schema = schema_for_output::<DomainInfo>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn add_domain(
        &self,
        Parameters(input): Parameters<AddDomainInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DomainInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.add_domain(&actor, &input).await?;
        let records = out
            .records
            .iter()
            .map(|r| format!("{} {} {}", r.record_type, r.name, r.value))
            .collect::<Vec<_>>()
            .join("; ");
        reply(format!("{}; create: {records}", domain_line(&out)), out)
    }

    #[tool(
        name = "HOSTING_VALIDATE_DOMAIN",
        description = "Check a domain's DNS for real now: the CNAME (or A/AAAA, stray addresses included), the TXT ownership record and CAA up the tree (RFC 8659, CNAME target included). Answers a diagnosis per record (type, name, expected, observed, resolver, ok, next step). When every record is right its certificate is ordered (validating → issuing → active, served over HTTPS; a failed order says why and when it is retried); when one is wrong it is (or goes back to) pending_dns and no order is placed. {site, domain, wait?: false, timeout_seconds?: 120}: with wait, returns once the certificate is served or at the timeout.",
        output_schema = schema_for_output::<DomainInfo>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn validate_domain(
        &self,
        Parameters(input): Parameters<ValidateDomainInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DomainInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.validate_domain(&actor, &input).await?;
        reply(domain_line(&out), out)
    }

    #[tool(
        name = "HOSTING_REMOVE_DOMAIN",
        description = "Detach a custom domain from a site: the edge stops serving it at once and the name can be attached again.",
        output_schema = schema_for_output::<RemovedDomain>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn remove_domain(
        &self,
        Parameters(input): Parameters<DomainRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<RemovedDomain> {
        let actor = actor_of(&ctx)?;
        let out = self.service.remove_domain(&actor, &input).await?;
        reply(format!("removed {} from '{}'", out.removed, out.site), out)
    }
}

#[tool_router(router = people_router)]
impl BerthMcp {
    #[tool(
        name = "HOSTING_LIST_MEMBERS",
        description = "List the org's members (email, role, joined). Needs admin.",
        output_schema = schema_for_output::<MemberList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_members(&self, ctx: RequestContext<RoleServer>) -> ToolResult<MemberList> {
        let actor = actor_of(&ctx)?;
        let out = self.service.list_members(&actor).await?;
        let line = out
            .members
            .iter()
            .map(|m| format!("{} ({})", m.email, m.role))
            .collect::<Vec<_>>()
            .join(", ");
        reply(if line.is_empty() { "no members yet".into() } else { line }, out)
    }

    #[tool(
        name = "HOSTING_ADD_MEMBER",
        description = "Add a person to the org with a role (owner, admin, developer, deployer, viewer); give a password (at least 12 characters) when they have no account yet. Needs admin; only owners add owners.",
        output_schema = schema_for_output::<MemberInfo>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn add_member(
        &self,
        Parameters(input): Parameters<AddMemberInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<MemberInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.add_member(&actor, &input).await?;
        reply(format!("{} is now a member ({})", out.email, out.role), out)
    }

    #[tool(
        name = "HOSTING_SET_MEMBER_ROLE",
        description = "Change a member's role; their personal keys follow at once. Needs admin; only owners make or unmake owners, and the last owner stays one.",
        output_schema = schema_for_output::<MemberInfo>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn set_member_role(
        &self,
        Parameters(input): Parameters<SetMemberRoleInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<MemberInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.set_member_role(&actor, &input).await?;
        reply(format!("{} is now {}", out.email, out.role), out)
    }

    #[tool(
        name = "HOSTING_REMOVE_MEMBER",
        description = "Remove a member from the org: their personal keys are revoked and their dashboard sessions end. Needs admin; the last owner cannot be removed.",
        output_schema = schema_for_output::<MemberInfo>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn remove_member(
        &self,
        Parameters(input): Parameters<MemberRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<MemberInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.remove_member(&actor, &input).await?;
        reply(format!("removed {} from the org", out.email), out)
    }

    #[tool(
        name = "HOSTING_INVITE_MEMBER",
        description = "Invite a person to the org with a role (owner, admin, developer, deployer, viewer): answers a single-use link, shown only this once, that lets them set a password (or sign in) and join; it expires in expires_in_days (default 7, at most 30). When the org has smtp settings (HOSTING_SET_CONFIG {\"provider\": \"smtp\"}) berth also emails the link; `email` says sent, not_configured or failed (with the reason), and unless it says sent, give the link to the person yourself. A failed email never loses the invitation. Needs admin; only owners invite owners.",
        output_schema = schema_for_output::<CreatedInvitation>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn invite_member(
        &self,
        Parameters(input): Parameters<InviteMemberInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<CreatedInvitation> {
        let actor = actor_of(&ctx)?;
        let out = self.service.invite_member(&actor, &input).await?;
        reply(
            format!(
                "invited {} as {} (id {}, expires {}); email: {}; the link is in the structured result and is shown only this once",
                out.invitation.email, out.invitation.role, out.invitation.id, out.invitation.expires_at, out.email
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_LIST_INVITATIONS",
        description = "List the org's invitations (never their links), newest first, a page at a time (limit: default 50, at most 200; pass next_cursor back as cursor): email, role, who invited, created, expiry and status (pending, accepted, revoked, expired). Needs admin.",
        output_schema = schema_for_output::<InvitationList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_invitations(
        &self,
        Parameters(input): Parameters<ListInvitationsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<InvitationList> {
        let actor = actor_of(&ctx)?;
        let out = self.service.list_invitations(&actor, &input).await?;
        let line = out
            .invitations
            .iter()
            .map(|i| format!("{} {} ({}, {})", i.id, i.email, i.role, i.status.as_str()))
            .collect::<Vec<_>>()
            .join("\n");
        let text = match (&out.next_cursor, line.is_empty()) {
            (_, true) => "no invitations".to_string(),
            (Some(cursor), false) => {
                format!("{line}\nnext page: HOSTING_LIST_INVITATIONS {{\"cursor\": \"{cursor}\"}}")
            }
            (None, false) => line,
        };
        reply(text, out)
    }

    #[tool(
        name = "HOSTING_REVOKE_INVITATION",
        description = "Revoke a pending invitation by id: its link stops working at once. Needs admin.",
        output_schema = schema_for_output::<InvitationInfo>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn revoke_invitation(
        &self,
        Parameters(input): Parameters<InvitationRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<InvitationInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.revoke_invitation(&actor, &input).await?;
        reply(format!("revoked the invitation of {} ({})", out.email, out.id), out)
    }

    #[tool(
        name = "HOSTING_CREATE_API_KEY",
        description = "Create an API key, shown once: personal (yours, acting as your current role) or service (the org's, with a role; needs admin). Narrow it with scopes (sites:read, logs:read, deploy, env:write, secrets:read, domains:write, sites:delete, org:admin), sites and environments; it expires in expires_in_days (default 90, at most 365). A key never gets more than its maker has.",
        output_schema = schema_for_output::<CreatedApiKey>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn create_api_key(
        &self,
        Parameters(input): Parameters<CreateApiKeyInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<CreatedApiKey> {
        let actor = actor_of(&ctx)?;
        let out = self.service.create_api_key(&actor, &input).await?;
        reply(
            format!(
                "created {} key '{}' (id {}, expires {}); its token is in the structured result and is shown only this once",
                out.key.kind,
                out.key.name,
                out.key.id,
                out.key.expires_at.as_deref().unwrap_or("never")
            ),
            out,
        )
    }

    #[tool(
        name = "HOSTING_LIST_API_KEYS",
        description = "List API keys (never their tokens): the org's for admins, your own otherwise; with kind, scopes, restriction, expiry, last use and status.",
        output_schema = schema_for_output::<ApiKeyList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_api_keys(&self, ctx: RequestContext<RoleServer>) -> ToolResult<ApiKeyList> {
        let actor = actor_of(&ctx)?;
        let out = self.service.list_api_keys(&actor).await?;
        let line = out
            .keys
            .iter()
            .map(|k| format!("{} {} ({}, {})", k.id, k.name, k.kind, k.status))
            .collect::<Vec<_>>()
            .join("\n");
        reply(if line.is_empty() { "no keys".into() } else { line }, out)
    }

    #[tool(
        name = "HOSTING_REVOKE_API_KEY",
        description = "Revoke an API key by id: refused from its next request on. Your own keys, or any of the org's for admins.",
        output_schema = schema_for_output::<ApiKeyInfo>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn revoke_api_key(
        &self,
        Parameters(input): Parameters<ApiKeyRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ApiKeyInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.revoke_api_key(&actor, &input).await?;
        reply(format!("revoked key '{}' ({})", out.name, out.id), out)
    }

    #[tool(
        name = "HOSTING_FREEZE_AGENTS",
        description = "Freeze (frozen: true) or unfreeze the org's agents: freezing revokes every connected OAuth application of the org at once and refuses new ones until unfrozen; unfreezing lets applications connect again (revoked ones must connect anew). Needs admin.",
        output_schema = schema_for_output::<FreezeAgentsOutput>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn freeze_agents(
        &self,
        Parameters(input): Parameters<FreezeAgentsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<FreezeAgentsOutput> {
        let actor = actor_of(&ctx)?;
        let out = self.service.freeze_agents(&actor, &input).await?;
        let text = if out.frozen {
            format!(
                "agents are frozen: {} connected application(s) revoked, new ones refused until unfrozen",
                out.revoked_grants
            )
        } else {
            "agents are not frozen: applications may connect again".to_string()
        };
        reply(text, out)
    }

    #[tool(
        name = "HOSTING_LIST_CONNECTED_APPS",
        description = "List connected applications (OAuth grants): client name, verified metadata host or 'unverified', the person, scopes, sites, whether production is included, created and last used; the org's for admins, your own otherwise; and whether agents are frozen.",
        output_schema = schema_for_output::<ConnectedAppList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_connected_apps(&self, ctx: RequestContext<RoleServer>) -> ToolResult<ConnectedAppList> {
        let actor = actor_of(&ctx)?;
        let out = self.service.list_connected_apps(&actor).await?;
        let mut lines: Vec<String> = out
            .apps
            .iter()
            .map(|a| {
                format!(
                    "{} {} ({}, {})",
                    a.id,
                    a.client_name,
                    a.verified_host,
                    a.user.as_deref().unwrap_or("?")
                )
            })
            .collect();
        if lines.is_empty() {
            lines.push("no connected applications".into());
        }
        if out.frozen {
            lines.push("agents are frozen".into());
        }
        reply(lines.join("\n"), out)
    }

    #[tool(
        name = "HOSTING_REVOKE_CONNECTED_APP",
        description = "Revoke a connected application (an OAuth grant) by id: its access and refresh tokens are refused from the next request on. Your own, or any of the org's for admins.",
        output_schema = schema_for_output::<ConnectedApp>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn revoke_connected_app(
        &self,
        Parameters(input): Parameters<ConnectedAppRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ConnectedApp> {
        let actor = actor_of(&ctx)?;
        let out = self.service.revoke_connected_app(&actor, &input).await?;
        reply(format!("revoked '{}' ({})", out.client_name, out.id), out)
    }

    #[tool(
        name = "HOSTING_LIST_AUDIT_LOG",
        description = "Read the org's audit log, newest first, a page at a time (limit: default 50, at most 200; pass next_cursor back as cursor with the same filters): who made each mutating call (kind user, key, oauth_client or system; name; email), when, the tool, its arguments with secrets replaced by ***, and the outcome or error. Filters: action (e.g. HOSTING_SET_ENV_VARS), actor_kind, actor (part of a name or email), outcome (ok or error), since and until (RFC 3339). Needs admin.",
        output_schema = schema_for_output::<AuditPage>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_audit_log(
        &self,
        Parameters(input): Parameters<ListAuditInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<AuditPage> {
        let actor = actor_of(&ctx)?;
        let out = self.service.list_audit(&actor, &input).await?;
        // One line: the entries are in the structured content.
        let text = match (out.entries.first(), &out.next_cursor) {
            (None, _) => "no audit entries match".to_string(),
            (Some(newest), None) => format!("{} entries, the newest at {}", out.entries.len(), newest.time),
            (Some(newest), Some(cursor)) => format!(
                "{} entries, the newest at {}; next page: HOSTING_LIST_AUDIT_LOG with the same filters and \"cursor\": \"{cursor}\"",
                out.entries.len(),
                newest.time
            ),
        };
        reply(text, out)
    }

    #[tool(
        name = "HOSTING_CREATE_ORG",
        description = "Create another org, owned by you (the person calling: a password session or a personal key; needs owner in the current org). Org names are 1-63 lowercase letters, digits and single hyphens, unique on the server. Switch to it in the dashboard; keys act in the org they were made in.",
        output_schema = schema_for_output::<CreatedOrg>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn create_org(
        &self,
        Parameters(input): Parameters<CreateOrgInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<CreatedOrg> {
        let actor = actor_of(&ctx)?;
        let out = self.service.create_org(&actor, &input).await?;
        reply(
            format!("created org '{}' ({}); you own it", out.org.name, out.org.id),
            out,
        )
    }
}

fn resource_line(r: &ResourceInfo) -> String {
    let site = r.site.as_deref().map_or_else(
        || "not attached".to_string(),
        |s| format!("attached to '{s}' at {}", r.mount_path),
    );
    let used = r
        .used_bytes
        .map_or_else(String::new, |b| format!(", {} KiB used", b >> 10));
    format!("{} ({}, {} MiB{used}): {site}", r.name, r.kind.as_str(), r.size_mb)
}

/// Resource tools.
#[tool_router(router = resource_router)]
impl BerthMcp {
    #[tool(
        name = "HOSTING_CREATE_RESOURCE",
        description = "Create a resource: kind `sqlite` is a persistent disk of `size_mb` (default 256, 16-10240) that outlives deployments. With `site` (only at creation) it is attached: the site's apps see it at /data/<name> and get DATABASE_URL=sqlite:///data/<name>/db.sqlite (a site's later resources get <NAME>_URL instead) and BERTH_RESOURCE_<NAME>_PATH; a variable the site sets itself wins. Attaching restarts the site's running apps so they see it at once (listed in `restarted`). Local provider only.",
        output_schema = schema_for_output::<CreatedResource>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn create_resource(
        &self,
        Parameters(input): Parameters<CreateResourceInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<CreatedResource> {
        let actor = actor_of(&ctx)?;
        let out = self.service.create_resource(&actor, &input).await?;
        reply(format!("created {}", resource_line(&out.resource)), out)
    }

    #[tool(
        name = "HOSTING_LIST_RESOURCES",
        description = "Resources of the org (or those attached to one `site`), by name, with kind, size, attached site and the env vars each gives. Paged: `limit` (default 50, max 200) and `cursor` (the previous page's next_cursor).",
        output_schema = schema_for_output::<ResourceList>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_resources(
        &self,
        Parameters(input): Parameters<ListResourcesInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ResourceList> {
        let actor = actor_of(&ctx)?;
        let out = self.service.list_resources(&actor, &input).await?;
        let summary = out.resources.iter().map(resource_line).collect::<Vec<_>>().join("\n");
        reply(
            if summary.is_empty() {
                "no resources".into()
            } else {
                summary
            },
            out,
        )
    }

    #[tool(
        name = "HOSTING_GET_RESOURCE",
        description = "One resource: kind, size, bytes used (while an app that has it runs), attached site, where it is mounted and the env vars it gives.",
        output_schema = schema_for_output::<ResourceInfo>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_resource(
        &self,
        Parameters(input): Parameters<ResourceRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<ResourceInfo> {
        let actor = actor_of(&ctx)?;
        let out = self.service.get_resource(&actor, &input).await?;
        reply(resource_line(&out), out)
    }

    #[tool(
        name = "HOSTING_DELETE_RESOURCE",
        description = "Delete a resource and its data for good. Refused while it is attached to a site unless `detach: true`: then the site's running apps restart without it first.",
        output_schema = schema_for_output::<DeletedResource>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn delete_resource(
        &self,
        Parameters(input): Parameters<DeleteResourceInput>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<DeletedResource> {
        let actor = actor_of(&ctx)?;
        let out = self.service.delete_resource(&actor, &input).await?;
        let from = out
            .detached_from
            .as_deref()
            .map_or_else(String::new, |s| format!(" (detached from '{s}')"));
        reply(format!("deleted resource '{}'{from}", out.name), out)
    }
}

/// The action a tool needs, to list only the tools an OAuth grant allows (`None`: every
/// caller may call it).
pub(crate) fn tool_action(name: &str) -> Option<Action> {
    Some(match name {
        "HOSTING_WHOAMI" => return None,
        "HOSTING_GET_DEPLOYMENT_LOGS" | "HOSTING_GET_ENVIRONMENT_LOGS" => Action::ReadLogs,
        "HOSTING_CREATE_SITE"
        | "HOSTING_UPDATE_SITE"
        | "HOSTING_CREATE_ENVIRONMENT"
        | "HOSTING_SET_SCALING_CONFIG"
        | "HOSTING_SCALE_ENVIRONMENT"
        | "HOSTING_CREATE_REPO"
        | "HOSTING_GET_GIT_TOKEN" => Action::CreateSite,
        "HOSTING_DEPLOY" | "HOSTING_PROMOTE" | "HOSTING_ROLLBACK" | "HOSTING_CANCEL_DEPLOYMENT" => Action::Deploy,
        "HOSTING_DELETE_SITE" | "HOSTING_DELETE_ENVIRONMENT" => Action::Delete,
        "HOSTING_SET_ENV_VARS" | "HOSTING_CREATE_RESOURCE" | "HOSTING_DELETE_RESOURCE" => Action::SetEnvVars,
        "HOSTING_GET_CONFIG" | "HOSTING_SET_CONFIG" | "HOSTING_TEST_CONNECTION" => Action::ManageProviders,
        "HOSTING_ADD_DOMAIN" | "HOSTING_VALIDATE_DOMAIN" | "HOSTING_REMOVE_DOMAIN" => Action::ManageDomains,
        "HOSTING_LIST_MEMBERS"
        | "HOSTING_ADD_MEMBER"
        | "HOSTING_SET_MEMBER_ROLE"
        | "HOSTING_REMOVE_MEMBER"
        | "HOSTING_INVITE_MEMBER"
        | "HOSTING_LIST_INVITATIONS"
        | "HOSTING_REVOKE_INVITATION"
        | "HOSTING_CREATE_API_KEY"
        | "HOSTING_LIST_API_KEYS"
        | "HOSTING_REVOKE_API_KEY"
        | "HOSTING_FREEZE_AGENTS"
        | "HOSTING_LIST_AUDIT_LOG" => Action::ManageMembers,
        "HOSTING_CREATE_ORG" => Action::ManageOrg,
        _ => Action::ReadSites,
    })
}

/// Whether `tools/list` shows a tool to an actor: everything to API keys (as before);
/// to an OAuth grant only what its scopes and its person's role allow, never the key
/// tools (a key would outlive the grant), and only read-only tools to a read-only grant.
fn listed_for(actor: &Actor, tool: &rmcp::model::Tool) -> bool {
    if actor.grant.is_none() {
        return true;
    }
    let name = tool.name.as_ref();
    // A grant acts in its one org: keys would outlive it, and a new org lies outside it.
    if name.contains("API_KEY") || name == "HOSTING_CREATE_ORG" {
        return false;
    }
    let read_only_grant = actor
        .scopes
        .iter()
        .all(|s| matches!(s, Scope::SitesRead | Scope::LogsRead));
    let read_only_tool = tool
        .annotations
        .as_ref()
        .is_some_and(|a| a.read_only_hint == Some(true));
    if read_only_grant && !read_only_tool {
        return false;
    }
    tool_action(name).is_none_or(|action| actor.require(action, None, None).is_ok())
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BerthMcp {
    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, ErrorData> {
        let actor = actor_of(&context).ok();
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|t| actor.as_ref().is_none_or(|a| listed_for(a, t)))
            .collect();
        Ok(rmcp::model::ListToolsResult::with_all_items(tools))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                rmcp::model::Implementation::new("berth", env!("CARGO_PKG_VERSION"))
                    .with_title("berth — self-hosted, agent-native hosting"),
            )
            .with_instructions(
            "berth hosts apps on the operator's own machines. Typical flow: HOSTING_CREATE_SITE {name, repo, wait: true} → live URL; \
             debug with HOSTING_GET_SITE (log tails) and HOSTING_GET_DEPLOYMENT_LOGS; redeploy with HOSTING_DEPLOY; clean up with HOSTING_DELETE_SITE.",
        )
    }
}

/// The MCP tools as (name, description), in the router's order: the dashboard's landing
/// page lists them from here so it always matches what `/mcp` serves.
pub fn tool_catalog() -> Vec<(String, String)> {
    let mut tools: Vec<(String, String)> = BerthMcp::tool_router()
        .list_all()
        .into_iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.description.map(|d| d.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    tools.sort();
    tools
}
