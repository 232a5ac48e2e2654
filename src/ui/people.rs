//! The dashboard's people pages: Members (roles, removal, invitations), API keys and
//! Connected apps (OAuth grants and the freeze switch). Like every page they only call the
//! service layer as the session's actor; forms a role cannot use are not shown, and the
//! service checks again on every POST. A new invitation's link and a new key's token are
//! shown once, in the answer to the form that made them, and never again.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::{CsrfForm, Session, see_other, urlencode};
use super::views::{Notice, copy_button, csrf_input, field_error, has_error, notice, page, when};
use super::{Empty, UiState, error_page, html as respond, notice_of};
use crate::error::ServiceError;
use crate::service::access::{Action, Role, Scope};
use crate::service::*;

// ---------------------------------------------------------------- members

/// What the Members page shows once, after an action.
#[derive(Default)]
struct MembersOutcome {
    notice: Option<Notice>,
    /// A new invitation: (email, link).
    link: Option<(String, String)>,
    /// The invite form as typed (after an error).
    form: InviteForm,
}

#[derive(Deserialize, Default, Clone)]
pub(super) struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_in_days: String,
}

#[derive(Deserialize)]
pub(super) struct DoneQuery {
    done: Option<String>,
}

fn done_notice(done: Option<&str>) -> Option<Notice> {
    Some(Notice::ok(match done? {
        "role" => "Role changed.",
        "removed" => "Member removed: their personal keys are revoked and their sessions ended.",
        "invitation-revoked" => "Invitation revoked: its link no longer works.",
        "key-revoked" => "Key revoked: it is refused from its next request on.",
        "app-revoked" => "Connected app revoked: its tokens are refused from their next request on.",
        "frozen" => "Agents frozen: every connected app was revoked and new ones are refused.",
        "unfrozen" => "Agents unfrozen: apps may connect again.",
        _ => return None,
    }))
}

/// `GET /members`.
pub(super) async fn members(State(state): State<UiState>, s: Session, Query(q): Query<DoneQuery>) -> Response {
    let outcome = MembersOutcome {
        notice: done_notice(q.done.as_deref()),
        ..Default::default()
    };
    render_members(&state, &s, outcome, StatusCode::OK).await
}

async fn render_members(state: &UiState, s: &Session, outcome: MembersOutcome, status: StatusCode) -> Response {
    // The newest page of invitations; the CLI and the API page through the rest.
    let first_page = ListInvitationsInput {
        limit: Some(MAX_PAGE),
        cursor: None,
    };
    let (members, invitations) = match state.service.list_members(&s.actor).await {
        Ok(m) => match state.service.list_invitations(&s.actor, &first_page).await {
            Ok(i) => (Some(m.members), i),
            Err(e) => return error_page(Some(s), &e),
        },
        // Those who may not manage members see why, and no forms.
        Err(ServiceError::Forbidden { message }) => {
            let outcome = MembersOutcome {
                notice: Some(Notice::error(message, None)),
                ..outcome
            };
            return respond(status, members_view(s, None, &[], false, &outcome));
        }
        Err(e) => return error_page(Some(s), &e),
    };
    let older = invitations.next_cursor.is_some();
    respond(
        status,
        members_view(s, members.as_deref(), &invitations.invitations, older, &outcome),
    )
}

/// `POST /members/invite`: the link is shown on the answer, once.
pub(super) async fn invite(State(state): State<UiState>, CsrfForm(s, form): CsrfForm<InviteForm>) -> Response {
    let days = match form.expires_in_days.trim() {
        "" => None,
        d => match d.parse::<u32>() {
            Ok(d) => Some(d),
            Err(_) => {
                let e = ServiceError::invalid("expires_in_days", "give a whole number of days from 1 to 30");
                let outcome = MembersOutcome {
                    notice: Some(notice_of(&e)),
                    form,
                    ..Default::default()
                };
                return render_members(&state, &s, outcome, e.status()).await;
            }
        },
    };
    let input = InviteMemberInput {
        email: form.email.clone(),
        role: form.role.clone(),
        expires_in_days: days,
    };
    match state.service.invite_member(&s.actor, &input).await {
        Ok(out) => {
            let (who, role) = (&out.invitation.email, out.invitation.role);
            let text = match &out.email {
                InvitationEmail::Sent => {
                    format!("Invited {who} as {role} and emailed them the link (also below, shown only now).")
                }
                InvitationEmail::NotConfigured => format!("Invited {who} as {role}. Give them the link below."),
                InvitationEmail::Failed { reason } => format!(
                    "Invited {who} as {role}, but emailing the link failed ({reason}). Give them the link below."
                ),
            };
            let outcome = MembersOutcome {
                notice: Some(Notice::ok(text)),
                link: Some((out.invitation.email, out.link)),
                form: InviteForm::default(),
            };
            render_members(&state, &s, outcome, StatusCode::CREATED).await
        }
        Err(e) => {
            let outcome = MembersOutcome {
                notice: Some(notice_of(&e)),
                form,
                ..Default::default()
            };
            render_members(&state, &s, outcome, e.status()).await
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RoleForm {
    role: String,
}

/// `POST /members/{email}/role`.
pub(super) async fn set_role(
    State(state): State<UiState>,
    Path(email): Path<String>,
    CsrfForm(s, form): CsrfForm<RoleForm>,
) -> Response {
    let input = SetMemberRoleInput { email, role: form.role };
    match state.service.set_member_role(&s.actor, &input).await {
        Ok(_) => see_other("/members?done=role"),
        Err(e) => members_error(&state, &s, &e).await,
    }
}

/// `POST /members/{email}/remove`.
pub(super) async fn remove(
    State(state): State<UiState>,
    Path(email): Path<String>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    match state.service.remove_member(&s.actor, &MemberRef { email }).await {
        Ok(_) => see_other("/members?done=removed"),
        Err(e) => members_error(&state, &s, &e).await,
    }
}

/// `POST /members/invitations/{id}/revoke`.
pub(super) async fn revoke_invitation(
    State(state): State<UiState>,
    Path(invitation_id): Path<String>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    match state
        .service
        .revoke_invitation(&s.actor, &InvitationRef { invitation_id })
        .await
    {
        Ok(_) => see_other("/members?done=invitation-revoked"),
        Err(e) => members_error(&state, &s, &e).await,
    }
}

async fn members_error(state: &UiState, s: &Session, e: &ServiceError) -> Response {
    let outcome = MembersOutcome {
        notice: Some(notice_of(e)),
        ..Default::default()
    };
    render_members(state, s, outcome, e.status()).await
}

fn role_options(selected: &str, up_to: Role) -> Markup {
    html! {
        @for r in Role::ALL.iter().rev().filter(|r| **r <= up_to) {
            option value=(r.as_str()) selected[selected == r.as_str()] { (r.as_str()) }
        }
    }
}

fn members_view(
    s: &Session,
    members: Option<&[MemberInfo]>,
    invitations: &[InvitationInfo],
    older: bool,
    o: &MembersOutcome,
) -> Markup {
    let can_manage = members.is_some();
    let is_owner = s.actor.require(Action::ManageOrg, None, None).is_ok();
    // Admins give roles up to admin, owners up to owner.
    let top = if is_owner { Role::Owner } else { Role::Admin };
    let n = o.notice.as_ref();
    let page_notice = n.filter(|n| !n.error || n.field.is_none());
    page(
        Some(s),
        "Members",
        html! {
            div.pagehead {
                div {
                    h1 { "Members" }
                    p.muted { "Who belongs to " (s.actor.org_name) " and with which role. Invite people with a single-use link." }
                }
            }
            (notice(page_notice))
            @if let Some((email, link)) = &o.link {
                section.card #invite-link {
                    h2 { "Invitation link for " (email) }
                    p { "Give this link to " (email) ". It works once, and berth cannot show it again." }
                    p { code.mono #invite-link-value { (link) } " " (copy_button("#invite-link-value", "Copy")) }
                }
            }
            @if let Some(members) = members {
                section.card #members {
                    h2 { "People" }
                    table.vars {
                        thead { tr { th { "Email" } th { "Role" } th { "Joined" } th { span.sr-only { "Actions" } } } }
                        tbody {
                            @for m in members {
                                @let may = m.role != Role::Owner || is_owner;
                                tr data-member=(m.email) {
                                    td.mono { (m.email) }
                                    td {
                                        @if may {
                                            form.inline method="post" action=(format!("/members/{}/role", urlencode(&m.email))) {
                                                (csrf_input(s))
                                                label.sr-only for=(format!("role-{}", m.email)) { "Role of " (m.email) }
                                                select id=(format!("role-{}", m.email)) name="role" { (role_options(m.role.as_str(), top)) }
                                                " "
                                                button.btn.btn-small type="submit" { "Change" }
                                            }
                                        } @else {
                                            (m.role)
                                        }
                                    }
                                    td { (when(&m.joined_at)) }
                                    td {
                                        @if may {
                                            form method="post" action=(format!("/members/{}/remove", urlencode(&m.email)))
                                                data-confirm=(format!("Remove {} from the org? Their personal keys are revoked.", m.email)) {
                                                (csrf_input(s))
                                                button.btn.btn-small.btn-danger type="submit" { "Remove" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if can_manage {
                section.card #invite {
                    h2 { "Invite someone" }
                    form.form #invite-form method="post" action="/members/invite" {
                        (csrf_input(s))
                        div.grid2 {
                            div.field {
                                label for="invite-email" { "Email" }
                                input #invite-email type="email" name="email" value=(o.form.email) required autocomplete="off"
                                    aria-invalid=[has_error(n, "email")];
                                (field_error(n, "email"))
                            }
                            div.field {
                                label for="invite-role" { "Role" }
                                select #invite-role name="role" aria-invalid=[has_error(n, "role")] {
                                    (role_options(if o.form.role.is_empty() { "developer" } else { &o.form.role }, top))
                                }
                                (field_error(n, "role"))
                            }
                        }
                        div.field {
                            label for="invite-days" { "Expires in (days)" }
                            input #invite-days type="number" name="expires_in_days" min="1" max="30" placeholder="7"
                                value=(o.form.expires_in_days) aria-invalid=[has_error(n, "expires_in_days")];
                            small.hint { "1 to 30; 7 when left empty." }
                            (field_error(n, "expires_in_days"))
                        }
                        div.form-actions { button.btn.btn-primary #invite-submit type="submit" { "Create invitation link" } }
                    }
                }
                section.card #invitations {
                    h2 { "Invitations" }
                    @if invitations.is_empty() {
                        p.muted #invitations-empty { "No invitations yet." }
                    } @else {
                        table.vars {
                            thead { tr { th { "Email" } th { "Role" } th { "Status" } th { "Expires" } th { "Invited by" } th { span.sr-only { "Actions" } } } }
                            tbody {
                                @for i in invitations {
                                    tr data-invitation=(i.id) {
                                        td.mono { (i.email) }
                                        td { (i.role) }
                                        td { (i.status.as_str()) }
                                        td { (when(&i.expires_at)) }
                                        td { (i.invited_by) }
                                        td {
                                            @if i.status == InvitationStatus::Pending {
                                                form method="post" action=(format!("/members/invitations/{}/revoke", i.id))
                                                    data-confirm=(format!("Revoke the invitation of {}?", i.email)) {
                                                    (csrf_input(s))
                                                    button.btn.btn-small.btn-danger type="submit" { "Revoke" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        @if older {
                            p.muted #invitations-older {
                                "The newest " (invitations.len()) " are shown; "
                                code { "berth users invitations" } " lists them all."
                            }
                        }
                    }
                }
            }
        },
    )
}

// ---------------------------------------------------------------- API keys

/// The create-key form as posted (scopes repeat, so it is read from the pairs).
#[derive(Default, Clone)]
pub(super) struct KeyForm {
    name: String,
    kind: String,
    role: String,
    /// Ticked scopes (a repeated field).
    scope: Vec<String>,
    /// Site names, comma-separated.
    sites: String,
    expires_in_days: String,
}

impl KeyForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (k, v) in pairs {
            match k.as_str() {
                "name" => form.name = v,
                "kind" => form.kind = v,
                "role" => form.role = v,
                "scope" => form.scope.push(v),
                "sites" => form.sites = v,
                "expires_in_days" => form.expires_in_days = v,
                _ => {}
            }
        }
        form
    }
}

/// `GET /keys`.
pub(super) async fn keys(State(state): State<UiState>, s: Session, Query(q): Query<DoneQuery>) -> Response {
    render_keys(
        &state,
        &s,
        done_notice(q.done.as_deref()),
        None,
        &KeyForm::default(),
        StatusCode::OK,
    )
    .await
}

async fn render_keys(
    state: &UiState,
    s: &Session,
    n: Option<Notice>,
    created: Option<&CreatedApiKey>,
    form: &KeyForm,
    status: StatusCode,
) -> Response {
    match state.service.list_api_keys(&s.actor).await {
        Ok(list) => respond(status, keys_view(s, &list.keys, n.as_ref(), created, form)),
        Err(e) => error_page(Some(s), &e),
    }
}

/// `POST /keys`: the token is shown on the answer, once.
pub(super) async fn create_key(
    State(state): State<UiState>,
    CsrfForm(s, pairs): CsrfForm<Vec<(String, String)>>,
) -> Response {
    let form = KeyForm::from_pairs(pairs);
    let sites: Vec<String> = form
        .sites
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect();
    let days = match form.expires_in_days.trim() {
        "" => Ok(None),
        d => d
            .parse::<u32>()
            .map(Some)
            .map_err(|_| ServiceError::invalid("expires_in_days", "give a whole number of days from 1 to 365")),
    };
    let result = match days {
        Ok(days) => {
            let input = CreateApiKeyInput {
                name: form.name.clone(),
                kind: Some(form.kind.clone()).filter(|k| !k.is_empty()),
                role: Some(form.role.clone()).filter(|r| !r.is_empty() && form.kind == "service"),
                scopes: Some(form.scope.clone()),
                sites: (!sites.is_empty()).then_some(sites),
                environments: None,
                expires_in_days: days,
            };
            state.service.create_api_key(&s.actor, &input).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(created) => {
            let n = Notice::ok(format!("Created key '{}'. Copy its token now.", created.key.name));
            render_keys(
                &state,
                &s,
                Some(n),
                Some(&created),
                &KeyForm::default(),
                StatusCode::CREATED,
            )
            .await
        }
        Err(e) => render_keys(&state, &s, Some(notice_of(&e)), None, &form, e.status()).await,
    }
}

/// `POST /keys/{id}/revoke`.
pub(super) async fn revoke_key(
    State(state): State<UiState>,
    Path(key_id): Path<String>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    match state.service.revoke_api_key(&s.actor, &ApiKeyRef { key_id }).await {
        Ok(_) => see_other("/keys?done=key-revoked"),
        Err(e) => render_keys(&state, &s, Some(notice_of(&e)), None, &KeyForm::default(), e.status()).await,
    }
}

fn keys_view(
    s: &Session,
    keys: &[ApiKeyInfo],
    n: Option<&Notice>,
    created: Option<&CreatedApiKey>,
    form: &KeyForm,
) -> Markup {
    let is_admin = s.actor.require(Action::ManageMembers, None, None).is_ok();
    // A personal key needs a person; a session of an API key can only make service keys.
    let personal = s.actor.user_id.is_some();
    let reachable = Scope::of_role(s.actor.role);
    let can_create = s.actor.grant.is_none() && (personal || is_admin);
    let page_notice = n.filter(|n| !n.error || n.field.is_none());
    page(
        Some(s),
        "API keys",
        html! {
            div.pagehead {
                div {
                    h1 { "API keys" }
                    p.muted {
                        @if is_admin { "The org's keys. " } @else { "Your keys. " }
                        "A key acts with its scopes, never more than its owner's current role."
                    }
                }
            }
            (notice(page_notice))
            @if let Some(c) = created {
                section.card #new-key {
                    h2 { "Token of '" (c.key.name) "'" }
                    p { "Send it as " span.mono { "Authorization: Bearer <token>" } ". berth keeps only an HMAC of it and cannot show it again." }
                    p { code.mono #new-key-token { (c.token) } " " (copy_button("#new-key-token", "Copy")) }
                }
            }
            section.card #keys {
                h2 { "Keys" }
                @if keys.is_empty() {
                    p.muted #keys-empty { "No keys yet." }
                } @else {
                    table.vars {
                        thead { tr { th { "Name" } th { "Prefix" } th { "Kind" } th { "Scopes" } th { "Sites" } th { "Last used" } th { "Expires" } th { "Status" } th { span.sr-only { "Actions" } } } }
                        tbody {
                            @for k in keys {
                                tr data-key=(k.id) {
                                    td { (k.name) @if let Some(u) = &k.user { br; span.muted.small { (u) } } }
                                    td.mono { (k.prefix) }
                                    td { (k.kind) @if let Some(r) = k.role { " (" (r) ")" } }
                                    td.small { (Scope::join(&k.scopes).replace(',', ", ")) }
                                    td.small { (k.sites.as_ref().map_or_else(|| "all".to_string(), |s| s.join(", "))) }
                                    td { @if let Some(at) = &k.last_used_at { (when(at)) } @else { span.muted { "never" } } }
                                    td { @if let Some(at) = &k.expires_at { (when(at)) } @else { span.muted { "never" } } }
                                    td { (k.status) }
                                    td {
                                        @if k.status == "active" {
                                            form method="post" action=(format!("/keys/{}/revoke", k.id))
                                                data-confirm=(format!("Revoke the key '{}'? It stops working at once.", k.name)) {
                                                (csrf_input(s))
                                                button.btn.btn-small.btn-danger type="submit" { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if can_create {
                section.card #create-key {
                    h2 { "Create a key" }
                    form.form #create-key-form method="post" action="/keys" {
                        (csrf_input(s))
                        div.grid2 {
                            div.field {
                                label for="key-name" { "Name" }
                                input #key-name type="text" name="name" value=(form.name) placeholder="ci" required autocomplete="off"
                                    aria-invalid=[has_error(n, "name")];
                                (field_error(n, "name"))
                            }
                            div.field {
                                label for="key-kind" { "Kind" }
                                select #key-kind name="kind" aria-invalid=[has_error(n, "kind")] {
                                    @if personal { option value="personal" selected[form.kind != "service"] { "personal (acts as you)" } }
                                    @if is_admin { option value="service" selected[form.kind == "service" || !personal] { "service (the org's, with a role)" } }
                                }
                                (field_error(n, "kind"))
                            }
                        }
                        @if is_admin {
                            div.field {
                                label for="key-role" { "Role of a service key" }
                                select #key-role name="role" aria-invalid=[has_error(n, "role")] {
                                    @for r in Role::ALL.iter().rev().filter(|r| **r <= s.actor.role) {
                                        option value=(r.as_str()) selected[form.role == r.as_str() || (form.role.is_empty() && *r == Role::Developer)] { (r.as_str()) }
                                    }
                                }
                                (field_error(n, "role"))
                            }
                        }
                        fieldset.field #key-scopes {
                            legend { "Scopes" }
                            @for sc in &reachable {
                                label.check {
                                    input type="checkbox" name="scope" value=(sc.as_str())
                                        checked[form.scope.is_empty() || form.scope.iter().any(|x| x == sc.as_str())];
                                    " " span.mono { (sc.as_str()) }
                                }
                            }
                            (field_error(n, "scopes"))
                        }
                        div.grid2 {
                            div.field {
                                label for="key-sites" { "Only these sites" }
                                input #key-sites type="text" name="sites" value=(form.sites) placeholder="all sites" autocomplete="off"
                                    aria-invalid=[has_error(n, "sites")];
                                small.hint { "Comma-separated; empty for every site." }
                                (field_error(n, "sites"))
                            }
                            div.field {
                                label for="key-days" { "Expires in (days)" }
                                input #key-days type="number" name="expires_in_days" min="1" max="365" placeholder="90"
                                    value=(form.expires_in_days) aria-invalid=[has_error(n, "expires_in_days")];
                                small.hint { "1 to 365; 90 when left empty." }
                                (field_error(n, "expires_in_days"))
                            }
                        }
                        div.form-actions { button.btn.btn-primary #create-key-submit type="submit" { "Create key" } }
                    }
                }
            }
        },
    )
}

// ---------------------------------------------------------------- connected apps

/// `GET /connected-apps`.
pub(super) async fn connected_apps(State(state): State<UiState>, s: Session, Query(q): Query<DoneQuery>) -> Response {
    render_apps(&state, &s, done_notice(q.done.as_deref()), StatusCode::OK).await
}

async fn render_apps(state: &UiState, s: &Session, n: Option<Notice>, status: StatusCode) -> Response {
    match state.service.list_connected_apps(&s.actor).await {
        Ok(list) => respond(status, apps_view(s, &list, n.as_ref())),
        Err(e) => error_page(Some(s), &e),
    }
}

/// `POST /connected-apps/{id}/revoke`.
pub(super) async fn revoke_app(
    State(state): State<UiState>,
    Path(app_id): Path<String>,
    CsrfForm(s, _): CsrfForm<Empty>,
) -> Response {
    match state
        .service
        .revoke_connected_app(&s.actor, &ConnectedAppRef { app_id })
        .await
    {
        Ok(_) => see_other("/connected-apps?done=app-revoked"),
        Err(e) => render_apps(&state, &s, Some(notice_of(&e)), e.status()).await,
    }
}

#[derive(Deserialize)]
pub(super) struct FreezeForm {
    frozen: bool,
}

/// `POST /connected-apps/freeze`.
pub(super) async fn freeze(State(state): State<UiState>, CsrfForm(s, form): CsrfForm<FreezeForm>) -> Response {
    let input = FreezeAgentsInput { frozen: form.frozen };
    match state.service.freeze_agents(&s.actor, &input).await {
        Ok(out) if out.frozen => see_other("/connected-apps?done=frozen"),
        Ok(_) => see_other("/connected-apps?done=unfrozen"),
        Err(e) => render_apps(&state, &s, Some(notice_of(&e)), e.status()).await,
    }
}

fn apps_view(s: &Session, list: &ConnectedAppList, n: Option<&Notice>) -> Markup {
    let is_admin = s.actor.require(Action::ManageMembers, None, None).is_ok();
    page(
        Some(s),
        "Connected apps",
        html! {
            div.pagehead {
                div {
                    h1 { "Connected apps" }
                    p.muted {
                        "MCP clients people connected by signing in (OAuth). "
                        @if is_admin { "Every app of the org." } @else { "The apps you connected." }
                    }
                }
            }
            (notice(n))
            @if list.frozen {
                div.notice.notice-error role="status" #frozen-state { span aria-hidden="true" { "❄ " } "Agents are frozen: no app can connect until an admin unfreezes." }
            }
            section.card #apps {
                h2 { "Apps" }
                @if list.apps.is_empty() {
                    p.muted #apps-empty { "No connected apps." }
                } @else {
                    table.vars {
                        thead { tr { th { "Client" } th { "Person" } th { "Scopes" } th { "Sites" } th { "Production" } th { "Last used" } th { span.sr-only { "Actions" } } } }
                        tbody {
                            @for a in &list.apps {
                                tr data-app=(a.id) {
                                    td { (a.client_name) br; span.muted.small { (a.verified_host) } }
                                    td.mono { (a.user.as_deref().unwrap_or("?")) }
                                    td.small { (Scope::join(&a.scopes).replace(',', ", ")) }
                                    td.small { (a.sites.as_ref().map_or_else(|| "all".to_string(), |s| s.join(", "))) }
                                    td { @if a.production { "yes" } @else { "no" } }
                                    td { @if let Some(at) = &a.last_used_at { (when(at)) } @else { span.muted { "never" } } }
                                    td {
                                        form method="post" action=(format!("/connected-apps/{}/revoke", a.id))
                                            data-confirm=(format!("Revoke {}? Its tokens stop working at once.", a.client_name)) {
                                            (csrf_input(s))
                                            button.btn.btn-small.btn-danger type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if is_admin {
                section.card #freeze {
                    h2 { "Freeze agents" }
                    p.muted { "Revokes every connected app of the org at once and refuses new ones until unfrozen." }
                    form method="post" action="/connected-apps/freeze"
                        data-confirm=[(!list.frozen).then_some("Revoke every connected app of the org and refuse new ones?")] {
                        (csrf_input(s))
                        input type="hidden" name="frozen" value=(if list.frozen { "false" } else { "true" });
                        @if list.frozen {
                            button.btn #freeze-submit type="submit" { "Unfreeze agents" }
                        } @else {
                            button.btn.btn-danger #freeze-submit type="submit" { "Freeze agents" }
                        }
                    }
                }
            }
        },
    )
}
