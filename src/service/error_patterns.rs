//! `HOSTING_GET_ERROR_PATTERNS`: the error templates of a site's environment in a range
//! (from the pattern task, see [`crate::runtime::error_patterns`]), most events first,
//! each with when it was first and last seen, the deployments it occurred in and a
//! sample, next to the 5xx responses by path template from the edge's metrics of the
//! same range: what broke, since when, in which deploy. Ranges and limits follow the
//! other metrics tools.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ServiceResult;
use crate::model::Actor;
use crate::store::error_patterns as store_patterns;
use crate::store::metrics::Resolution;
use crate::util::rfc3339;

use super::Service;
use super::metrics::check_limit;

/// `HOSTING_GET_ERROR_PATTERNS` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorPatternsInput {
    /// Site name.
    pub site: String,
    /// Environment (default "production").
    #[serde(default)]
    pub environment: Option<String>,
    /// Start (see `HOSTING_GET_METRICS_SUMMARY`); default 1 h ago. Counted by whole minutes.
    #[serde(default)]
    pub since: Option<String>,
    /// End; default now.
    #[serde(default)]
    pub until: Option<String>,
    /// Templates returned, 1 to 100 (default 20).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}

/// A deployment's share of one template in the range.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PatternDeployment {
    /// The deployment.
    pub deployment_id: String,
    /// Its events of this template in the range.
    pub events: u64,
    /// The start of the first minute of the range it had one (RFC 3339).
    pub first_seen: String,
}

/// One error template.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorPattern {
    /// The template: ids, numbers, UUIDs, IPs, dates, quoted strings and paths with
    /// numbers masked as `<*>`, and tokens that differ between events too.
    pub template: String,
    /// Its events in the range.
    pub events: u64,
    /// Its events since it was first seen (within the log retention).
    pub total_events: u64,
    /// Its first event (RFC 3339).
    pub first_seen: String,
    /// Its latest event (RFC 3339).
    pub last_seen: String,
    /// The deployments it occurred in during the range, earliest first.
    pub deployments: Vec<PatternDeployment>,
    /// Every deployment it occurred in (the last 20), earliest first.
    pub all_deployments: Vec<String>,
    /// Its latest event, as logged (at most 50 lines, 8 KiB).
    pub sample: String,
}

/// 5xx responses to one path template.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServerErrorPath {
    /// `METHOD /path/:id`.
    pub template: String,
    /// Its requests answered 5xx in the range.
    pub server_errors: u64,
    /// All its requests in the range.
    pub requests: u64,
}

/// `HOSTING_GET_ERROR_PATTERNS` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorPatternsOutput {
    /// Site name.
    pub site: String,
    /// Environment name.
    pub environment: String,
    /// Start (RFC 3339, the start of its minute).
    pub since: String,
    /// End (RFC 3339).
    pub until: String,
    /// Error events in the range, all templates.
    pub events: u64,
    /// The templates with most events, most first (ties: latest seen first).
    pub patterns: Vec<ErrorPattern>,
    /// Templates with events in the range beyond `limit`.
    pub more_patterns: u64,
    /// 5xx responses by path template in the range, most first (at most 20).
    pub server_errors: Vec<ServerErrorPath>,
    /// One line to act on.
    pub summary: String,
}

/// Path templates with 5xx listed at most.
const MAX_ERROR_PATHS: usize = 20;

impl Service {
    /// `HOSTING_GET_ERROR_PATTERNS`.
    pub async fn get_error_patterns(
        &self,
        actor: &Actor,
        input: &ErrorPatternsInput,
    ) -> ServiceResult<ErrorPatternsOutput> {
        let limit = check_limit(input.limit)?;
        let (site, env, range, now) = self
            .metrics_target(
                actor,
                &input.site,
                input.environment.as_deref(),
                input.since.as_deref(),
                input.until.as_deref(),
            )
            .await?;
        // What was logged until now is counted.
        self.platform.logs.flush_patterns().await;
        let store = &self.platform.store;
        let since = Resolution::Minute.floor(range.since);
        let counts = store.error_pattern_range_counts(&env.id, since, range.until).await?;
        let mut by_key: HashMap<i64, Vec<store_patterns::RangeCount>> = HashMap::new();
        for c in counts {
            by_key.entry(c.key).or_default().push(c);
        }
        let mut patterns = Vec::new();
        for (key, mut deployments) in by_key {
            let Some(row) = store.error_pattern(&env.id, key).await? else {
                continue;
            };
            deployments.sort_by(|a, b| {
                a.first_minute_ms
                    .cmp(&b.first_minute_ms)
                    .then(a.deployment_id.cmp(&b.deployment_id))
            });
            patterns.push((row, deployments));
        }
        let events_of = |d: &[store_patterns::RangeCount]| d.iter().map(|c| c.count.max(0) as u64).sum::<u64>();
        patterns.sort_by(|a, b| {
            events_of(&b.1)
                .cmp(&events_of(&a.1))
                .then(b.0.last_seen_ms.cmp(&a.0.last_seen_ms))
                .then(a.0.key.cmp(&b.0.key))
        });
        let events: u64 = patterns.iter().map(|p| events_of(&p.1)).sum();
        let more_patterns = patterns.len().saturating_sub(limit as usize) as u64;
        let patterns: Vec<ErrorPattern> = patterns
            .into_iter()
            .take(limit as usize)
            .map(|(row, deployments)| ErrorPattern {
                events: events_of(&deployments),
                template: row.template,
                total_events: row.count.max(0) as u64,
                first_seen: rfc3339(row.first_seen_ms),
                last_seen: rfc3339(row.last_seen_ms),
                deployments: deployments
                    .into_iter()
                    .map(|c| PatternDeployment {
                        deployment_id: c.deployment_id,
                        events: c.count.max(0) as u64,
                        first_seen: rfc3339(c.first_minute_ms),
                    })
                    .collect(),
                all_deployments: serde_json::from_str(&row.deployments).unwrap_or_default(),
                sample: row.sample,
            })
            .collect();
        let (traffic, _) = self.metrics_total(&env.id, range, now).await?;
        let (ranked, _) = traffic.paths.ranked();
        let mut server_errors: Vec<ServerErrorPath> = ranked
            .into_iter()
            .filter(|p| p.server_errors > 0)
            .map(|p| ServerErrorPath {
                template: p.template.clone(),
                server_errors: p.server_errors,
                requests: p.guaranteed(),
            })
            .collect();
        server_errors.sort_by(|a, b| b.server_errors.cmp(&a.server_errors).then(a.template.cmp(&b.template)));
        server_errors.truncate(MAX_ERROR_PATHS);
        let templates = patterns.len() as u64 + more_patterns;
        let summary = summary_line(&site.name, &env.name, events, templates, &patterns, &server_errors);
        Ok(ErrorPatternsOutput {
            site: site.name,
            environment: env.name,
            since: rfc3339(since),
            until: rfc3339(range.until),
            events,
            patterns,
            more_patterns,
            server_errors,
            summary,
        })
    }
}

fn summary_line(
    site: &str,
    environment: &str,
    events: u64,
    templates: u64,
    patterns: &[ErrorPattern],
    server_errors: &[ServerErrorPath],
) -> String {
    let paths = match server_errors.first() {
        Some(p) => format!("; 5xx most on {} ({} of {})", p.template, p.server_errors, p.requests),
        None => "; no 5xx".into(),
    };
    let Some(top) = patterns.first() else {
        return format!("{site} {environment}: no error events in this range{paths}");
    };
    let template: String = top.template.chars().take(120).collect();
    let deployments: Vec<&str> = top.deployments.iter().map(|d| d.deployment_id.as_str()).collect();
    format!(
        "{site} {environment}: {events} error events in {templates} templates; most: \"{template}\" × {} since {} in \
         {}{paths}",
        top.events,
        top.first_seen,
        if deployments.len() == 1 {
            format!("deployment {}", deployments[0])
        } else {
            format!("deployments {}", deployments.join(", "))
        }
    )
}
