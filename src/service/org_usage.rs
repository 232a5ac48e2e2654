//! `HOSTING_GET_USAGE`: what an org used in a calendar month (UTC), in total and per site:
//! requests and response bytes through the edge, builds and their time, and instance time.
//! Read from the usage the store keeps per site and day (see [`crate::store::usage`]),
//! which outlives the metrics buckets, pruned deployments and deleted sites.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;
use crate::service::access::{Action, Target};
use crate::store::usage::{RETENTION_MS, UsageSiteRow, UsageSums};
use crate::util::{now_ms, rfc3339};

use super::Service;

/// Default page of `HOSTING_GET_USAGE`'s sites.
pub const DEFAULT_USAGE_PAGE: u32 = 50;
/// Largest page of `HOSTING_GET_USAGE`'s sites.
pub const MAX_USAGE_PAGE: u32 = 200;

/// `HOSTING_GET_USAGE` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageInput {
    /// The month, `YYYY-MM` in UTC (default the current month). Not in the future, nor
    /// older than the usage kept (400 days).
    #[serde(default)]
    pub month: Option<String>,
    /// Only this site (a site of the org that exists).
    #[serde(default)]
    pub site: Option<String>,
    /// Sites per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// What a site, or the whole org, used in the month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsageAmounts {
    /// Requests the edge answered (every environment).
    pub requests: u64,
    /// Response body bytes the edge sent.
    pub bandwidth_bytes: u64,
    /// Builds that ended in the month (built, failed or cancelled), each counted once.
    pub builds: u64,
    /// Their time, from the start of each build to its end, in seconds.
    pub build_seconds: f64,
    /// The same in minutes.
    pub build_minutes: f64,
    /// Instance time: each running app instance (starting, healthy or restarting; not
    /// asleep) for as long as it ran, in seconds. Static sites use none.
    pub instance_seconds: f64,
    /// The same in hours.
    pub instance_hours: f64,
}

impl From<&UsageSums> for UsageAmounts {
    fn from(s: &UsageSums) -> Self {
        let build_seconds = s.build_ms.max(0) as f64 / 1000.0;
        let instance_seconds = s.instance_ms.max(0) as f64 / 1000.0;
        UsageAmounts {
            requests: s.requests.max(0) as u64,
            bandwidth_bytes: s.bytes_out.max(0) as u64,
            builds: s.builds.max(0) as u64,
            build_seconds,
            build_minutes: build_seconds / 60.0,
            instance_seconds,
            instance_hours: instance_seconds / 3600.0,
        }
    }
}

/// One site's usage in the month.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SiteUsage {
    /// The site's name.
    pub site: String,
    /// True for a site deleted since: its usage up to its deletion still counts.
    pub deleted: bool,
    /// What it used.
    #[serde(flatten)]
    pub usage: UsageAmounts,
}

/// `HOSTING_GET_USAGE` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UsageOutput {
    /// The org.
    pub org: String,
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Its first moment (RFC 3339, UTC).
    pub start: String,
    /// The first moment after it (RFC 3339, UTC).
    pub end: String,
    /// Every site's usage added up (only `site`'s when one is named), deleted sites'
    /// included.
    pub totals: UsageAmounts,
    /// A page of sites by name: the org's sites that existed by the month's end and every
    /// site with usage in it (deleted ones marked).
    pub sites: Vec<SiteUsage>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The first moment of a month and of the month after it, in ms.
fn month_bounds(year: i32, month: Month) -> (i64, i64) {
    let start = |y: i32, m: Month| {
        Date::from_calendar_date(y, m, 1)
            .map(|d| (d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(0)
    };
    let (next_year, next) = if month == Month::December {
        (year + 1, Month::January)
    } else {
        (year, month.next())
    };
    (start(year, month), start(next_year, next))
}

/// Reads `YYYY-MM` (default: the month of `now`) into its label and bounds, refusing a
/// month in the future or one older than the usage kept.
fn parse_month(text: Option<&str>, now: i64) -> ServiceResult<(String, i64, i64)> {
    let today = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
        .map_err(|_| ServiceError::Internal(anyhow::anyhow!("the clock is out of range")))?;
    let (year, month) = match text {
        None => (today.year(), today.month()),
        Some(text) => {
            let parsed = text.trim().split_once('-').and_then(|(y, m)| {
                if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
                Some((y.parse::<i32>().ok()?, month))
            });
            parsed.ok_or_else(|| {
                ServiceError::invalid(
                    "month",
                    format!(
                        "'{}' is not a month; give it as YYYY-MM (e.g. {:04}-{:02}), or leave it out for the current month",
                        text.chars().take(40).collect::<String>(),
                        today.year(),
                        today.month() as u8
                    ),
                )
            })?
        }
    };
    let label = format!("{year:04}-{:02}", month as u8);
    let (start, end) = month_bounds(year, month);
    if start > now {
        return Err(ServiceError::invalid(
            "month",
            format!(
                "{label} has not started; the latest month is {:04}-{:02} (UTC)",
                today.year(),
                today.month() as u8
            ),
        ));
    }
    if end <= now - RETENTION_MS {
        return Err(ServiceError::invalid(
            "month",
            format!(
                "{label} is older than the usage kept (400 days); the oldest month is {}",
                oldest_month(now)
            ),
        ));
    }
    Ok((label, start, end))
}

/// The oldest month with usage still kept at `now`.
fn oldest_month(now: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(now - RETENTION_MS) * 1_000_000)
        .map(|t| format!("{:04}-{:02}", t.year(), t.month() as u8))
        .unwrap_or_default()
}

impl Service {
    /// `HOSTING_GET_USAGE`: the org's usage in a month, in total and per site.
    pub async fn get_usage(&self, actor: &Actor, input: &UsageInput) -> ServiceResult<UsageOutput> {
        self.authorize(actor, Action::ReadSites, Target::AnySite(input.site.as_deref()))
            .await?;
        let (month, start, end) = parse_month(input.month.as_deref(), now_ms())?;
        let (limit, after) =
            super::name_page(input.limit, input.cursor.as_deref(), DEFAULT_USAGE_PAGE, MAX_USAGE_PAGE)?;
        // The cursor is the last row's name and id: names of deleted sites may repeat.
        let after = match after {
            "" => ("", ""),
            cursor => cursor.split_once(' ').ok_or_else(|| {
                ServiceError::invalid(
                    "cursor",
                    "not a cursor of this list; pass the next_cursor of the previous page as it was given",
                )
            })?,
        };
        let site = self.find_optional_site(actor, input.site.as_deref()).await?;
        let site_id = site.as_ref().map(|s| s.id.as_str());
        let store = &self.platform.store;
        let mut rows = store
            .usage_page(&actor.org_id, site_id, start, end, after, i64::from(limit) + 1)
            .await?;
        let next_cursor = super::cut_page(&mut rows, limit as usize, |r| format!("{} {}", r.site_name, r.site_id));
        let totals = store.usage_totals(&actor.org_id, site_id, start, end).await?;
        Ok(UsageOutput {
            org: actor.org_name.clone(),
            month,
            start: rfc3339(start),
            end: rfc3339(end),
            totals: UsageAmounts::from(&totals),
            sites: rows.iter().map(site_usage).collect(),
            next_cursor,
        })
    }
}

fn site_usage(row: &UsageSiteRow) -> SiteUsage {
    SiteUsage {
        site: row.site_name.clone(),
        deleted: row.live == 0,
        usage: UsageAmounts::from(&UsageSums {
            requests: row.requests,
            bytes_out: row.bytes_out,
            instance_ms: row.instance_ms,
            builds: row.builds,
            build_ms: row.build_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEC_2_2026: i64 = 1_796_169_600_000; // 2026-12-02T00:00:00Z

    #[test]
    fn months_parse_to_their_bounds_and_bad_ones_are_refused() {
        let (label, start, end) = parse_month(Some("2026-02"), DEC_2_2026).unwrap();
        assert_eq!(label, "2026-02");
        assert_eq!(rfc3339(start), "2026-02-01T00:00:00.000Z");
        assert_eq!(rfc3339(end), "2026-03-01T00:00:00.000Z");
        let (label, _, end) = parse_month(None, DEC_2_2026).unwrap();
        assert_eq!(label, "2026-12");
        assert_eq!(rfc3339(end), "2027-01-01T00:00:00.000Z");
        for bad in ["2026-13", "x", "2026-1", "26-01", "2026-00", "2027-01", "2024-01"] {
            assert!(
                matches!(
                    parse_month(Some(bad), DEC_2_2026),
                    Err(ServiceError::Invalid { field: "month", .. })
                ),
                "{bad}"
            );
        }
    }
}
