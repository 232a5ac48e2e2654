//! The dashboard's usage page (`/usage`): what the org used in a UTC month
//! (`HOSTING_GET_USAGE`), its totals and a page of sites, with a month picker and the
//! service's cursor for the next page. Like every page it only calls the service layer as
//! the session's actor; a bad month or cursor shows the service's error on the page.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::session::{Session, urlencode};
use super::views::{Notice, field_error, has_error, human_bytes, notice, page};
use super::{UiState, error_page, html as respond, notice_of};
use crate::error::ServiceError;
use crate::service::{SiteUsage, UsageAmounts, UsageInput, UsageOutput};

/// The page's query as typed (empty means the current month, the first page).
#[derive(Deserialize, Serialize, Default, Clone)]
pub(super) struct UsageQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    month: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cursor: String,
}

impl UsageQuery {
    fn input(&self) -> UsageInput {
        let some = |v: &str| (!v.trim().is_empty()).then(|| v.to_string());
        UsageInput {
            month: some(&self.month),
            site: None,
            limit: None,
            cursor: some(&self.cursor),
        }
    }
}

/// `GET /usage`.
pub(super) async fn usage(State(state): State<UiState>, s: Session, Query(q): Query<UsageQuery>) -> Response {
    match state.service.get_usage(&s.actor, &q.input()).await {
        Ok(out) => respond(StatusCode::OK, usage_view(&s, &q, Some(&out), None)),
        // A bad month or cursor shows next to the picker, the refusal of a key that may not
        // read every site at the top; neither has a table.
        Err(e @ (ServiceError::Forbidden { .. } | ServiceError::Invalid { .. })) => {
            respond(e.status(), usage_view(&s, &q, None, Some(&notice_of(&e))))
        }
        Err(e) => error_page(Some(&s), &e),
    }
}

/// The month `delta` months from `month` (`YYYY-MM`).
fn shift_month(month: &str, delta: i32) -> Option<String> {
    let (y, m) = month.split_once('-')?;
    let index = y.parse::<i32>().ok()? * 12 + m.parse::<i32>().ok()? - 1 + delta;
    Some(format!("{:04}-{:02}", index.div_euclid(12), index.rem_euclid(12) + 1))
}

fn month_link(month: &str) -> String {
    format!("/usage?month={}", urlencode(month))
}

fn usage_view(s: &Session, q: &UsageQuery, out: Option<&UsageOutput>, n: Option<&Notice>) -> Markup {
    let page_notice = n.filter(|n| n.field.as_deref() != Some("month"));
    let shown_month = out.map_or(q.month.as_str(), |o| o.month.as_str());
    page(
        Some(s),
        "Usage",
        html! {
            div.pagehead {
                div {
                    h1 { "Usage" }
                    p.muted { "What " (s.actor.org_name) " used in a calendar month (UTC): requests and bandwidth through the edge, builds and their time, and app instance time, per site and in total." }
                }
            }
            (notice(page_notice))
            form.filters #usage-month method="get" action="/usage" {
                @if let Some(o) = out {
                    @if let Some(prev) = shift_month(&o.month, -1) {
                        a #usage-prev href=(month_link(&prev)) { "← " (prev) }
                    }
                }
                div.field.field-inline {
                    label for="month" { "Month" }
                    input #month type="text" name="month" value=(shown_month) placeholder="YYYY-MM" inputmode="numeric"
                        aria-invalid=[has_error(n, "month")];
                }
                button.btn type="submit" { "Show" }
                @if let Some(o) = out {
                    // The current month has no next one yet.
                    @if o.end.as_str() <= crate::util::rfc3339(crate::util::now_ms()).as_str() {
                        @if let Some(next) = shift_month(&o.month, 1) {
                            a #usage-next href=(month_link(&next)) { (next) " →" }
                        }
                    }
                } @else {
                    " " a href="/usage" { "This month" }
                }
            }
            (field_error(n, "month"))
            @if let Some(o) = out {
                section.card #usage-totals {
                    h2 { "Totals for " (o.month) }
                    (amounts_table(&o.totals))
                }
                section.card #usage-sites {
                    h2 { "Sites" }
                    @if o.sites.is_empty() {
                        p.muted #usage-empty { "No site used anything in " (o.month) "." }
                    } @else {
                        table.vars {
                            thead { tr {
                                th scope="col" { "Site" } th scope="col" { "Requests" } th scope="col" { "Bandwidth" }
                                th scope="col" { "Builds" } th scope="col" { "Build minutes" } th scope="col" { "Instance hours" }
                            } }
                            tbody {
                                @for site in &o.sites { (site_row(site)) }
                            }
                        }
                    }
                    @if let Some(cursor) = &o.next_cursor {
                        @let next = UsageQuery { month: o.month.clone(), cursor: cursor.clone() };
                        p.pager { a #usage-next-page href=(format!("/usage?{}", serde_urlencoded::to_string(&next).unwrap_or_default())) { "Next page →" } }
                    }
                }
            }
        },
    )
}

fn amounts_table(a: &UsageAmounts) -> Markup {
    html! {
        table.vars {
            thead { tr {
                th scope="col" { "Requests" } th scope="col" { "Bandwidth" } th scope="col" { "Builds" }
                th scope="col" { "Build minutes" } th scope="col" { "Instance hours" }
            } }
            tbody { tr data-usage-totals {
                td data-requests=(a.requests) { (a.requests) }
                td title=(format!("{} bytes", a.bandwidth_bytes)) { (human_bytes(a.bandwidth_bytes)) }
                td { (a.builds) }
                td { (format!("{:.1}", a.build_minutes)) }
                td { (format!("{:.2}", a.instance_hours)) }
            } }
        }
    }
}

fn site_row(site: &SiteUsage) -> Markup {
    let a = &site.usage;
    html! {
        tr data-usage-site=(site.site) {
            td {
                @if site.deleted {
                    span.mono { (site.site) } " " span.tag { "deleted" }
                } @else {
                    a.mono href=(format!("/sites/{}", site.site)) { (site.site) }
                }
            }
            td data-requests=(a.requests) { (a.requests) }
            td title=(format!("{} bytes", a.bandwidth_bytes)) { (human_bytes(a.bandwidth_bytes)) }
            td { (a.builds) }
            td { (format!("{:.1}", a.build_minutes)) }
            td { (format!("{:.2}", a.instance_hours)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shift_month;

    #[test]
    fn months_shift_across_years() {
        assert_eq!(shift_month("2026-01", -1).as_deref(), Some("2025-12"));
        assert_eq!(shift_month("2026-12", 1).as_deref(), Some("2027-01"));
        assert_eq!(shift_month("2026-06", 1).as_deref(), Some("2026-07"));
        assert_eq!(shift_month("garbage", 1), None);
    }
}
