//! The dashboard's resources page (`/resources`): the org's resources (disks attached to a
//! site) by name, paged with the service's cursor, a create form and per-row delete (with
//! detach for an attached one). Like every page it only calls the service layer as the
//! session's actor: roles, names, kinds and sizes are the service's to judge, and its
//! refusals are shown on the page.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::session::{CsrfForm, Session, see_other, urlencode};
use super::views::{Notice, csrf_input, field_error, has_error, human_bytes, notice, page, when};
use super::{UiState, error_page, html as respond, notice_of};
use crate::error::ServiceError;
use crate::service::resources::{DEFAULT_SIZE_MB, MAX_SIZE_MB, MIN_SIZE_MB};
use crate::service::*;

/// The page's query: the cursor of the page shown and what the last form did.
#[derive(Deserialize, Serialize, Default)]
pub(super) struct ResourcesQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cursor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    done: String,
}

/// The create form as typed, kept to refill it after an error.
#[derive(Deserialize, Default, Clone)]
pub(super) struct ResourceForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    size_mb: String,
    #[serde(default)]
    site: String,
}

/// The delete form: `detach` is set by the button of an attached resource.
#[derive(Deserialize, Default)]
pub(super) struct DeleteForm {
    #[serde(default)]
    detach: String,
}

fn done_notice(done: &str) -> Option<Notice> {
    Some(Notice::ok(match done {
        "created" => "Resource created.",
        "deleted" => "Resource deleted: its disk and data are gone.",
        "detached" => "Resource detached and deleted: its site's apps restarted without it, and its data is gone.",
        _ => return None,
    }))
}

/// `GET /resources`.
pub(super) async fn resources(State(state): State<UiState>, s: Session, Query(q): Query<ResourcesQuery>) -> Response {
    let n = done_notice(&q.done);
    render(&state, &s, &q.cursor, n, &ResourceForm::default(), StatusCode::OK).await
}

async fn render(
    state: &UiState,
    s: &Session,
    cursor: &str,
    n: Option<Notice>,
    form: &ResourceForm,
    status: StatusCode,
) -> Response {
    let input = ListResourcesInput {
        site: None,
        limit: None,
        cursor: (!cursor.is_empty()).then(|| cursor.to_string()),
    };
    match state.service.list_resources(&s.actor, &input).await {
        Ok(list) => respond(status, resources_view(s, Some(&list), n.as_ref(), form)),
        // A refusal to list (or a bad cursor) is shown in place of the table; an earlier
        // notice, if any, goes first.
        Err(e @ (ServiceError::Forbidden { .. } | ServiceError::Invalid { .. })) => {
            let n = n.unwrap_or_else(|| notice_of(&e));
            respond(e.status(), resources_view(s, None, Some(&n), form))
        }
        Err(e) => error_page(Some(s), &e),
    }
}

/// `POST /resources`: creates one, then back to the list.
pub(super) async fn create(State(state): State<UiState>, CsrfForm(s, form): CsrfForm<ResourceForm>) -> Response {
    let size_mb = match form.size_mb.trim() {
        "" => None,
        size => match size.parse::<u32>() {
            Ok(size) => Some(size),
            Err(_) => {
                let e = ServiceError::invalid(
                    "size_mb",
                    format!(
                        "'{}' is not a size; give a whole number of MiB from {MIN_SIZE_MB} to {MAX_SIZE_MB}, or leave it empty for {DEFAULT_SIZE_MB}",
                        size.chars().take(20).collect::<String>()
                    ),
                );
                return render(&state, &s, "", Some(notice_of(&e)), &form, e.status()).await;
            }
        },
    };
    let input = CreateResourceInput {
        name: form.name.trim().to_string(),
        kind: form.kind.clone(),
        size_mb,
        site: Some(form.site.trim().to_string()).filter(|site| !site.is_empty()),
    };
    match state.service.create_resource(&s.actor, &input).await {
        Ok(_) => see_other("/resources?done=created"),
        Err(e) => render(&state, &s, "", Some(notice_of(&e)), &form, e.status()).await,
    }
}

/// `POST /resources/{name}/delete`: deletes it (detaching it first when asked).
pub(super) async fn delete(
    State(state): State<UiState>,
    Path(name): Path<String>,
    CsrfForm(s, form): CsrfForm<DeleteForm>,
) -> Response {
    let detach = form.detach == "true";
    let input = DeleteResourceInput {
        name,
        detach: Some(detach),
    };
    match state.service.delete_resource(&s.actor, &input).await {
        Ok(out) if out.detached_from.is_some() => see_other("/resources?done=detached"),
        Ok(_) => see_other("/resources?done=deleted"),
        Err(e) => {
            render(
                &state,
                &s,
                "",
                Some(notice_of(&e)),
                &ResourceForm::default(),
                e.status(),
            )
            .await
        }
    }
}

fn resources_view(s: &Session, list: Option<&ResourceList>, n: Option<&Notice>, form: &ResourceForm) -> Markup {
    const FIELDS: [&str; 4] = ["name", "kind", "size_mb", "site"];
    let page_notice = n.filter(|n| !n.error || !n.field.as_deref().is_some_and(|f| FIELDS.contains(&f)));
    let kind = if form.kind.is_empty() {
        ResourceKind::Sqlite.as_str()
    } else {
        form.kind.as_str()
    };
    page(
        Some(s),
        "Resources",
        html! {
            div.pagehead {
                div {
                    h1 { "Resources" }
                    p.muted { "Stores of " (s.actor.org_name) " that outlive deployments: a " code { "sqlite" } " resource is a disk of its own, seen by its site's apps at " code { "/data/<name>" } " and named by " code { "DATABASE_URL" } "." }
                }
            }
            (notice(page_notice))
            @if let Some(list) = list {
                section.card #resources {
                    h2 { "Resources" }
                    @if list.resources.is_empty() {
                        p.muted #resources-empty { "No resources yet." }
                    } @else {
                        table.vars {
                            thead { tr {
                                th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Size" } th scope="col" { "Used" }
                                th scope="col" { "Site" } th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } }
                            } }
                            tbody {
                                @for r in &list.resources { (resource_row(s, r)) }
                            }
                        }
                    }
                    @if let Some(cursor) = &list.next_cursor {
                        p.pager {
                            (list.resources.len()) " of " (list.total) " resources · "
                            a #resources-next href=(format!("/resources?cursor={}", urlencode(cursor))) { "Next page →" }
                        }
                    }
                }
            }
            section.card #create-resource {
                h2 { "Create a resource" }
                form.form #create-resource-form method="post" action="/resources" {
                    (csrf_input(s))
                    div.grid2 {
                        div.field {
                            label for="resource-name" { "Name" }
                            input #resource-name type="text" name="name" value=(form.name) placeholder="main-db" required autocomplete="off"
                                aria-invalid=[has_error(n, "name")];
                            small.hint { "Lowercase letters, digits and single hyphens, starting with a letter." }
                            (field_error(n, "name"))
                        }
                        div.field {
                            label for="resource-kind" { "Kind" }
                            select #resource-kind name="kind" aria-invalid=[has_error(n, "kind")] {
                                @for k in ResourceKind::ALL {
                                    option value=(k.as_str()) selected[kind == k.as_str()] { (k.as_str()) }
                                }
                            }
                            (field_error(n, "kind"))
                        }
                    }
                    div.grid2 {
                        div.field {
                            label for="resource-size" { "Size (MiB)" }
                            input #resource-size type="text" inputmode="numeric" name="size_mb" value=(form.size_mb)
                                placeholder=(DEFAULT_SIZE_MB) autocomplete="off" aria-invalid=[has_error(n, "size_mb")];
                            small.hint { (MIN_SIZE_MB) " to " (MAX_SIZE_MB) "; " (DEFAULT_SIZE_MB) " when left empty." }
                            (field_error(n, "size_mb"))
                        }
                        div.field {
                            label for="resource-site" { "Site (optional)" }
                            input #resource-site type="text" name="site" value=(form.site) placeholder="my-site" autocomplete="off"
                                aria-invalid=[has_error(n, "site")];
                            small.hint { "Attach it to this site: its running apps restart to see it." }
                            (field_error(n, "site"))
                        }
                    }
                    div.form-actions { button.btn.btn-primary #create-resource-submit type="submit" { "Create resource" } }
                }
            }
        },
    )
}

fn resource_row(s: &Session, r: &ResourceInfo) -> Markup {
    let action = format!("/resources/{}/delete", urlencode(&r.name));
    html! {
        tr data-resource=(r.name) {
            td.mono { (r.name) }
            td { (r.kind.as_str()) }
            td { (r.size_mb) " MiB" }
            td {
                @match r.used_bytes {
                    Some(used) => { (human_bytes(used)) }
                    None => { span.muted title="Known while an app that has it runs" { "—" } }
                }
            }
            td {
                @if let Some(site) = &r.site {
                    a.mono href=(format!("/sites/{}", urlencode(site))) { (site) }
                } @else {
                    span.muted { "not attached" }
                }
            }
            td { (when(&r.created_at)) }
            td {
                @if let Some(site) = &r.site {
                    form method="post" action=(action)
                        data-confirm=(format!("Detach {} from {site} and delete it? Its apps restart without it, and its data is lost.", r.name)) {
                        (csrf_input(s))
                        input type="hidden" name="detach" value="true";
                        button.btn.btn-small.btn-danger type="submit" { "Detach and delete" }
                    }
                } @else {
                    form method="post" action=(action)
                        data-confirm=(format!("Delete {}? Its data is lost.", r.name)) {
                        (csrf_input(s))
                        button.btn.btn-small.btn-danger type="submit" { "Delete" }
                    }
                }
            }
        }
    }
}
