//! `HOSTING_GET_METRICS_FIELDS`: what a site's traffic holds in a range before an agent
//! filters it (the environments with traffic, the status codes, the path templates, the
//! client countries when a GeoIP database counts them, the deployments that served) and which filters each metrics tool accepts. Ranges follow the
//! other metrics tools (the same checks, see [`super::metrics`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ServiceResult;
use crate::model::Actor;
use crate::store::metrics::Bucket;
use crate::util::rfc3339;

use super::Service;
use super::metrics::{CountryCount, MAX_TOP_PATHS, country_counts};

/// Deployments listed at most.
const MAX_DEPLOYMENTS: i64 = 50;

/// Why the metrics tools take no `path` filter (in the tool's answer and its description).
pub const NO_PATH_FILTER: &str = "no tool filters by path: a bucket keeps, per path template, only the requests, 4xx \
                                  and 5xx of its top 100 templates (space-saving, the rest as `other`), so status \
                                  codes, bytes, latency or a timeline of one template cannot be answered exactly; \
                                  HOSTING_GET_TOP_PATHS gives each template's requests, 4xx and 5xx";

/// `HOSTING_GET_METRICS_FIELDS` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsFieldsInput {
    /// Site name.
    pub site: String,
    /// Only this environment's codes, paths and deployments (default: every environment).
    #[serde(default)]
    pub environment: Option<String>,
    /// Start (see `HOSTING_GET_METRICS_SUMMARY`); default 1 h ago.
    #[serde(default)]
    pub since: Option<String>,
    /// End; default now.
    #[serde(default)]
    pub until: Option<String>,
}

/// An environment with traffic in the range.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentField {
    /// Its name (the `environment` filter's value).
    pub name: String,
    /// Its requests in the range.
    pub requests: u64,
}

/// A status code answered in the range.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusCodeField {
    /// The code.
    pub code: u16,
    /// Requests answered with it.
    pub requests: u64,
}

/// A path template requested in the range.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PathField {
    /// `METHOD /path/:id`.
    pub template: String,
    /// Its requests (a lower bound when `approximate`).
    pub requests: u64,
    /// Whether the count may miss requests counted under `other` while it was not among
    /// the top 100 of a bucket.
    pub approximate: bool,
}

/// A deployment that served traffic in the range.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentField {
    /// The deployment.
    pub deployment_id: String,
    /// Its environment.
    pub environment: String,
    /// Its requests since it first served (not only those in the range).
    pub total_requests: u64,
    /// Its first counted request (RFC 3339, to the tap's 2-second flush).
    pub first_served: String,
    /// Its latest counted request (RFC 3339).
    pub last_served: String,
}

/// The filters one metrics tool accepts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ToolFilters {
    /// The tool.
    pub tool: String,
    /// Its filters and options besides `site`.
    pub filters: Vec<String>,
}

/// `HOSTING_GET_METRICS_FIELDS` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MetricsFieldsOutput {
    /// Site name.
    pub site: String,
    /// The environment asked for, if one was.
    pub environment: Option<String>,
    /// Start (RFC 3339).
    pub since: String,
    /// End (RFC 3339).
    pub until: String,
    /// Requests in the range (of `environment` when given, else of the site).
    pub requests: u64,
    /// Environments with traffic in the range, most requests first (every one, not only
    /// `environment`).
    pub environments: Vec<EnvironmentField>,
    /// Status codes answered, most requests first.
    pub status_codes: Vec<StatusCodeField>,
    /// Path templates, most requests first (at most 100).
    pub paths: Vec<PathField>,
    /// Requests to templates not listed (counted as `other`).
    pub other_path_requests: u64,
    /// Client countries, most requests first (at most 50); absent when no GeoIP database
    /// (`--geoip-db`) counted any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<CountryCount>,
    /// Deployments whose traffic (first to latest request) overlaps the range, latest
    /// served first (at most 50).
    pub deployments: Vec<DeploymentField>,
    /// The filters each metrics tool accepts.
    pub filters: Vec<ToolFilters>,
    /// Filters the tools do not take, and why.
    pub not_filters: Vec<String>,
    /// One line to act on.
    pub summary: String,
}

/// The filters of every metrics tool, as their inputs define them.
fn tool_filters() -> Vec<ToolFilters> {
    let range = ["environment", "since", "until"];
    [
        ("HOSTING_GET_METRICS_SUMMARY", &[][..]),
        ("HOSTING_GET_STATUS_CODES", &[]),
        ("HOSTING_GET_TOP_PATHS", &["limit (1 to 100)"]),
        ("HOSTING_GET_USAGE_TIMELINE", &["resolution (1m, 1h, 1d)"]),
        ("HOSTING_GET_ERROR_PATTERNS", &["limit (1 to 100)"]),
        ("HOSTING_GET_METRICS_FIELDS", &[]),
    ]
    .into_iter()
    .map(|(tool, extra)| ToolFilters {
        tool: tool.into(),
        filters: range
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .map(String::from)
            .collect(),
    })
    .collect()
}

impl Service {
    /// `HOSTING_GET_METRICS_FIELDS`.
    pub async fn get_metrics_fields(
        &self,
        actor: &Actor,
        input: &MetricsFieldsInput,
    ) -> ServiceResult<MetricsFieldsOutput> {
        let (site, range, now) = self
            .metrics_site_range(actor, &input.site, input.since.as_deref(), input.until.as_deref())
            .await?;
        let only = match input.environment.as_deref() {
            Some(name) => Some(self.find_environment(&site, name).await?),
            None => None,
        };
        let store = &self.platform.store;
        let mut environments = Vec::new();
        let mut total = Bucket::default();
        for env in store.list_environments(&site.id).await? {
            let (traffic, _) = self.metrics_total(&env.id, range, now).await?;
            if traffic.requests == 0 {
                continue;
            }
            environments.push(EnvironmentField {
                name: env.name.clone(),
                requests: traffic.requests,
            });
            if only.as_ref().is_none_or(|o| o.id == env.id) {
                total.merge(&traffic);
            }
        }
        environments.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.name.cmp(&b.name)));
        let mut status_codes: Vec<StatusCodeField> = total
            .statuses
            .iter()
            .map(|(code, n)| StatusCodeField {
                code: *code,
                requests: *n,
            })
            .collect();
        status_codes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.code.cmp(&b.code)));
        let (ranked, mut other) = total.paths.ranked();
        let mut paths = Vec::new();
        for entry in ranked {
            if paths.len() < MAX_TOP_PATHS as usize {
                paths.push(PathField {
                    template: entry.template.clone(),
                    requests: entry.guaranteed(),
                    approximate: entry.overcount > 0,
                });
            } else {
                other.0 += entry.guaranteed();
            }
        }
        let deployments: Vec<DeploymentField> = store
            .deployments_serving(
                &site.id,
                only.as_ref().map(|e| e.id.as_str()),
                range.since,
                range.until,
                MAX_DEPLOYMENTS,
            )
            .await?
            .into_iter()
            .map(|d| DeploymentField {
                deployment_id: d.deployment_id,
                environment: d.environment,
                total_requests: d.requests.max(0) as u64,
                first_served: rfc3339(d.first_ms),
                last_served: rfc3339(d.last_ms),
            })
            .collect();
        let scope = match &only {
            Some(env) => format!("{} {}", site.name, env.name),
            None => site.name.clone(),
        };
        let summary = if total.requests == 0 {
            format!("{scope}: no requests in this range")
        } else {
            format!(
                "{scope}: {} requests; environments {}; codes {}; {} path templates (busiest {}); {} deployments served",
                total.requests,
                environments
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                status_codes
                    .iter()
                    .map(|c| c.code.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                paths.len(),
                paths.first().map_or("-", |p| p.template.as_str()),
                deployments.len()
            )
        };
        Ok(MetricsFieldsOutput {
            site: site.name,
            environment: only.map(|e| e.name),
            since: rfc3339(range.since),
            until: rfc3339(range.until),
            requests: total.requests,
            environments,
            status_codes,
            paths,
            other_path_requests: other.0,
            countries: country_counts(&total.countries).0,
            deployments,
            filters: tool_filters(),
            not_filters: vec![format!("path: {NO_PATH_FILTER}")],
            summary,
        })
    }
}
