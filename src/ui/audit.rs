//! The dashboard's audit log page (`/audit`, admins): who did what, when, with which
//! arguments and outcome, filtered by a GET form and paged with the service's cursor.
//! Like every page it only calls the service layer as the session's actor; secrets were
//! removed before the entries were written.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::session::Session;
use super::views::{Notice, field_error, has_error, notice, page, when};
use super::{UiState, error_page, html as respond, notice_of};
use crate::error::ServiceError;
use crate::model::ActorKind;
use crate::service::{AuditEntry, AuditOutcome, AuditPage, ListAuditInput};

/// The filter form as typed (every field optional; empty means any).
#[derive(Deserialize, Serialize, Default, Clone)]
pub(super) struct AuditQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    actor_kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    actor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    since: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    until: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cursor: String,
}

impl AuditQuery {
    fn input(&self) -> ListAuditInput {
        let some = |v: &str| (!v.trim().is_empty()).then(|| v.to_string());
        ListAuditInput {
            action: some(&self.action),
            actor_kind: some(&self.actor_kind),
            actor: some(&self.actor),
            outcome: some(&self.outcome),
            since: some(&self.since),
            until: some(&self.until),
            limit: None,
            cursor: some(&self.cursor),
        }
    }

    fn filtered(&self) -> bool {
        [
            &self.action,
            &self.actor_kind,
            &self.actor,
            &self.outcome,
            &self.since,
            &self.until,
        ]
        .iter()
        .any(|v| !v.trim().is_empty())
    }

    /// The link to the next (older) page: the same filters and the cursor.
    fn older_link(&self, cursor: &str) -> String {
        let next = Self {
            cursor: cursor.to_string(),
            ..self.clone()
        };
        format!("/audit?{}", serde_urlencoded::to_string(&next).unwrap_or_default())
    }
}

/// `GET /audit`.
pub(super) async fn audit(State(state): State<UiState>, s: Session, Query(q): Query<AuditQuery>) -> Response {
    match state.service.list_audit(&s.actor, &q.input()).await {
        Ok(page) => respond(StatusCode::OK, audit_view(&s, &q, Some(&page), None)),
        // Those who may not read it see why, and no table; a bad filter shows next to
        // its field with the form as typed.
        Err(e @ (ServiceError::Forbidden { .. } | ServiceError::Invalid { .. })) => {
            respond(e.status(), audit_view(&s, &q, None, Some(&notice_of(&e))))
        }
        Err(e) => error_page(Some(&s), &e),
    }
}

fn audit_view(s: &Session, q: &AuditQuery, page_of: Option<&AuditPage>, n: Option<&Notice>) -> Markup {
    let forbidden = page_of.is_none() && n.is_some_and(|n| n.field.is_none());
    let page_notice = n.filter(|n| n.field.is_none());
    page(
        Some(s),
        "Audit log",
        html! {
            div.pagehead {
                div {
                    h1 { "Audit log" }
                    p.muted { "Every change made in " (s.actor.org_name) ": who, what, when, with which arguments (secrets shown as ***) and how it ended." }
                }
            }
            (notice(page_notice))
            @if !forbidden {
                form.filters #audit-filters method="get" action="/audit" role="search" {
                    div.field.field-inline {
                        label for="audit-action" { "Action" }
                        input #audit-action type="text" name="action" value=(q.action) placeholder="HOSTING_SET_ENV_VARS"
                            aria-invalid=[has_error(n, "action")];
                        (field_error(n, "action"))
                    }
                    div.field.field-inline {
                        label for="audit-kind" { "Kind" }
                        select #audit-kind name="actor_kind" aria-invalid=[has_error(n, "actor_kind")] {
                            option value="" selected[q.actor_kind.is_empty()] { "any" }
                            @for k in ActorKind::ALL {
                                option value=(k.as_str()) selected[q.actor_kind == k.as_str()] { (kind_label(k)) }
                            }
                        }
                        (field_error(n, "actor_kind"))
                    }
                    div.field.field-inline {
                        label for="audit-actor" { "Who" }
                        input #audit-actor type="text" name="actor" value=(q.actor) placeholder="email or name"
                            aria-invalid=[has_error(n, "actor")];
                        (field_error(n, "actor"))
                    }
                    div.field.field-inline {
                        label for="audit-outcome" { "Outcome" }
                        select #audit-outcome name="outcome" aria-invalid=[has_error(n, "outcome")] {
                            option value="" selected[q.outcome.is_empty()] { "any" }
                            option value="ok" selected[q.outcome == "ok"] { "ok" }
                            option value="error" selected[q.outcome == "error"] { "error" }
                        }
                        (field_error(n, "outcome"))
                    }
                    div.field.field-inline {
                        label for="audit-since" { "Since" }
                        input #audit-since type="text" name="since" value=(q.since) placeholder="2026-01-31T12:00:00Z"
                            aria-invalid=[has_error(n, "since")];
                        (field_error(n, "since"))
                    }
                    div.field.field-inline {
                        label for="audit-until" { "Until" }
                        input #audit-until type="text" name="until" value=(q.until) placeholder="2026-02-01T00:00:00Z"
                            aria-invalid=[has_error(n, "until")];
                        (field_error(n, "until"))
                    }
                    button.btn type="submit" { "Filter" }
                    @if q.filtered() { " " a href="/audit" { "Clear" } }
                }
                (field_error(n, "cursor"))
            }
            @if let Some(p) = page_of {
                section.card #audit {
                    @if p.entries.is_empty() {
                        p.muted #audit-empty {
                            @if q.filtered() { "No entry matches. " a href="/audit" { "Clear the filters" } }
                            @else { "Nothing recorded yet." }
                        }
                    } @else {
                        table.vars {
                            thead { tr { th scope="col" { "Time" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "Outcome" } th scope="col" { "Arguments" } } }
                            tbody {
                                @for e in &p.entries { (entry_row(e)) }
                            }
                        }
                    }
                    @if let Some(cursor) = &p.next_cursor {
                        p { a #audit-older href=(q.older_link(cursor)) { "Older entries →" } }
                    }
                }
            }
        },
    )
}

fn entry_row(e: &AuditEntry) -> Markup {
    let arguments = serde_json::to_string(&e.arguments).unwrap_or_default();
    html! {
        tr data-audit=(e.id) {
            td { (when(&e.time)) }
            td {
                span.tag { (kind_label(e.actor.kind)) } " " (e.actor.name)
                @if let Some(email) = e.actor.email.as_ref().filter(|m| **m != e.actor.name) {
                    br; span.muted.small { "for " (email) }
                }
            }
            td.mono { (e.action) }
            td {
                @match e.outcome {
                    AuditOutcome::Ok => { span aria-hidden="true" { "✓ " } "ok" }
                    AuditOutcome::Error => {
                        span aria-hidden="true" { "✕ " } "error"
                        @if let Some(error) = &e.error { br; span.muted.small { (error) } }
                    }
                }
            }
            td.mono.small { (arguments) }
        }
    }
}

fn kind_label(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::User => "user",
        ActorKind::Key => "API key",
        ActorKind::OauthClient => "OAuth client",
        ActorKind::System => "system",
    }
}
