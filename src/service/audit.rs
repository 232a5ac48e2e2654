//! The audit log: who (a person, an API key, an MCP client acting for a person, or the
//! server itself) made which mutating call, when, with which arguments and outcome. Secrets
//! are removed here, in one place, before anything is written: env var values, provider
//! settings, passwords and tokens in the arguments, and credentials in URLs; the same
//! values are cut out of the error text, which may echo an argument. Only admins read it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, ActorKind};
use crate::service::access::{Action, Target};
use crate::store::{self, AuditFilter, NewAuditEntry};
use crate::util::rfc3339;

use super::{Service, bad_cursor, page_limit};

/// What replaces a secret.
const MASK: &str = "***";
/// Fields whose values are all secrets: env vars (`HOSTING_CREATE_SITE`,
/// `HOSTING_SET_ENV_VARS`) and provider settings (`HOSTING_SET_CONFIG`).
const SECRET_MAPS: [&str; 3] = ["env_vars", "vars", "config"];
/// Secret values shorter than this are masked in the arguments but not searched for in
/// error text, where cutting every `1` or `on` would garble the message and hide nothing.
const MIN_SCRUBBED_LEN: usize = 4;
/// Longest `actor` filter.
const MAX_ACTOR_FILTER: usize = 200;
/// Entries read at a time while an actor filter is applied.
const ACTOR_SCAN_CHUNK: i64 = 500;
/// Entries one page looks through at most for an actor filter; a page that stops there
/// holds what it found so far and a `next_cursor` to look further.
const ACTOR_SCAN_MAX: usize = 10_000;
/// Longest `action` filter.
const MAX_ACTION_FILTER: usize = 100;

/// `HOSTING_LIST_AUDIT_LOG` / `GET /api/audit` arguments: one page of the org's audit log,
/// newest first, filtered. Empty filters are ignored.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAuditInput {
    /// Only this tool or action, e.g. `HOSTING_SET_ENV_VARS`.
    #[serde(default)]
    pub action: Option<String>,
    /// Only this kind of caller: user (dashboard password session), key (API key),
    /// oauth_client (an MCP client acting for a person) or system (push token, webhook).
    #[serde(default)]
    pub actor_kind: Option<String>,
    /// Only callers whose name or email contains this text (case-insensitive): an email,
    /// a key's name, a client's name.
    #[serde(default)]
    pub actor: Option<String>,
    /// Only `ok` or only `error` calls.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Only calls at or after this RFC 3339 time (2026-01-31T12:00:00Z).
    #[serde(default)]
    pub since: Option<String>,
    /// Only calls before this RFC 3339 time.
    #[serde(default)]
    pub until: Option<String>,
    /// Entries per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous (newer) page, with the same filters; omit for the
    /// newest entries.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One page of the audit log.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` (with the same filters) for the next, older page; absent on the
    /// last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It did what was asked.
    Ok,
    /// It was refused or failed; see `error`.
    Error,
}

impl AuditOutcome {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }

    /// The outcome of a stored or typed name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Ok, Self::Error].into_iter().find(|o| o.as_str() == name)
    }
}

/// Who made a call.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditActor {
    /// user, key, oauth_client or system.
    pub kind: ActorKind,
    /// The person's email, the key's name and prefix, the client's name, or what the
    /// server acted on (git push, github webhook).
    pub name: String,
    /// The person acting (a password session, a personal key, an OAuth client's person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// An audit entry.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// Its id (entries are listed by it).
    pub id: i64,
    /// When (RFC 3339).
    pub time: String,
    /// Who.
    pub actor: AuditActor,
    /// The id of the key, OAuth grant or user that made the call.
    pub key_id: Option<String>,
    /// Tool or action.
    pub action: String,
    /// Arguments, secrets replaced by `***`.
    pub arguments: serde_json::Value,
    /// ok or error.
    pub outcome: AuditOutcome,
    /// The error, secrets removed.
    pub error: Option<String>,
}

impl Actor {
    /// Who this is in the audit log and on pages: the person's email, the key's name
    /// and prefix, the OAuth client's name, or what the server acted on.
    pub fn display_name(&self) -> String {
        match self.kind {
            ActorKind::User => self.user_email.clone().unwrap_or_else(|| self.key_name.clone()),
            ActorKind::Key => format!("{} ({})", self.key_name, self.key_prefix.unwrap_or("berth_…")),
            ActorKind::OauthClient => self
                .grant
                .as_ref()
                .map_or_else(|| self.key_name.clone(), |g| g.client_name.clone()),
            ActorKind::System => self.key_name.clone(),
        }
    }
}

impl Service {
    /// Records a mutating call with its outcome. Secrets are removed from the arguments
    /// and the error here, whatever the caller passed. A failed write is logged, not
    /// returned: the call itself already happened.
    pub(super) async fn audit<T>(
        &self,
        actor: &Actor,
        action: &str,
        arguments: serde_json::Value,
        result: &ServiceResult<T>,
    ) {
        let (arguments, secrets) = redact_arguments(arguments);
        let (outcome, error) = match result {
            Ok(_) => (AuditOutcome::Ok, None),
            Err(e) => (
                AuditOutcome::Error,
                Some(scrub_text(&e.envelope().error.message, &secrets)),
            ),
        };
        let name = actor.display_name();
        let entry = NewAuditEntry {
            org_id: &actor.org_id,
            key_id: Some(&actor.key_id),
            actor_kind: actor.kind.as_str(),
            actor_name: &name,
            actor_email: actor.user_email.as_deref(),
            action,
            arguments: &arguments,
            outcome: outcome.as_str(),
            error: error.as_deref(),
        };
        if let Err(err) = self.platform.store.insert_audit(&entry).await {
            tracing::error!(error = %err, action, "writing the audit log failed");
        }
    }

    /// `HOSTING_LIST_AUDIT_LOG`: the caller's org's audit log, newest first, a page at a
    /// time, filtered by action, caller, outcome and time. Admins only.
    pub async fn list_audit(&self, actor: &Actor, input: &ListAuditInput) -> ServiceResult<AuditPage> {
        self.authorize(actor, Action::ManageMembers, Target::Org).await?;
        let limit = page_limit(input.limit)?;
        // The cursor is the id of the previous page's last (oldest) entry.
        let before = match given(&input.cursor) {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(bad_cursor)?),
        };
        let action = given(&input.action).map(check_action).transpose()?;
        let actor_kind = given(&input.actor_kind)
            .map(|k| {
                ActorKind::parse(&k.to_ascii_lowercase()).ok_or_else(|| {
                    ServiceError::invalid(
                        "actor_kind",
                        format!(
                            "unknown actor kind '{}'; give one of: {}",
                            clip(k),
                            ActorKind::ALL.map(ActorKind::as_str).join(", ")
                        ),
                    )
                })
            })
            .transpose()?;
        let who = given(&input.actor)
            .map(|a| {
                if a.chars().count() > MAX_ACTOR_FILTER {
                    return Err(ServiceError::invalid(
                        "actor",
                        format!("actor is over {MAX_ACTOR_FILTER} characters; give part of an email or a name"),
                    ));
                }
                Ok(a.to_lowercase())
            })
            .transpose()?;
        let outcome = given(&input.outcome)
            .map(|o| {
                AuditOutcome::parse(&o.to_ascii_lowercase()).ok_or_else(|| {
                    ServiceError::invalid("outcome", format!("unknown outcome '{}'; give ok or error", clip(o)))
                })
            })
            .transpose()?;
        let since = given(&input.since).map(|t| parse_time("since", t)).transpose()?;
        let until = given(&input.until).map(|t| parse_time("until", t)).transpose()?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(ServiceError::invalid(
                "until",
                format!(
                    "until ({}) is not after since ({}); swap them or widen the range",
                    rfc3339(u),
                    rfc3339(s)
                ),
            ));
        }
        let filter = AuditFilter {
            before,
            action: action.as_deref(),
            actor_kind: actor_kind.map(ActorKind::as_str),
            outcome: outcome.map(AuditOutcome::as_str),
            since,
            until,
        };
        let store = &self.platform.store;
        let (mut rows, mut next_cursor) = match &who {
            None => (
                store.list_audit(&actor.org_id, &filter, i64::from(limit) + 1).await?,
                None,
            ),
            // Names and emails are compared here, Unicode-aware (SQLite's lower() folds
            // ASCII only), a bounded number of entries per page.
            Some(who) => {
                let mut found = Vec::new();
                let mut scanned = 0;
                let mut before = filter.before;
                loop {
                    let chunk_filter = AuditFilter { before, ..filter };
                    let chunk = store.list_audit(&actor.org_id, &chunk_filter, ACTOR_SCAN_CHUNK).await?;
                    let last_chunk = chunk.len() < ACTOR_SCAN_CHUNK as usize;
                    for row in chunk {
                        scanned += 1;
                        before = Some(row.id);
                        if actor_matches(&row, who) {
                            found.push(row);
                            if found.len() > limit as usize {
                                break;
                            }
                        }
                    }
                    if found.len() > limit as usize || last_chunk {
                        break (found, None);
                    }
                    if scanned >= ACTOR_SCAN_MAX {
                        // More may match further back: the page ends where the scan did.
                        break (found, before.map(|id| id.to_string()));
                    }
                }
            }
        };
        if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            next_cursor = rows.last().map(|r| r.id.to_string());
        }
        let entries = rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                time: rfc3339(r.created_at),
                actor: AuditActor {
                    // Rows from before actor kinds were recorded read as keys.
                    kind: ActorKind::parse(&r.actor_kind).unwrap_or(ActorKind::Key),
                    name: r.actor_name,
                    email: r.actor_email,
                },
                key_id: r.key_id,
                action: r.action,
                arguments: serde_json::from_str(&r.arguments).unwrap_or_default(),
                outcome: AuditOutcome::parse(&r.outcome).unwrap_or(AuditOutcome::Error),
                error: r.error,
            })
            .collect();
        Ok(AuditPage { entries, next_cursor })
    }
}

/// Whether an entry's actor name or email contains `who` (already lowercased), in any
/// case, non-ASCII letters included.
fn actor_matches(row: &store::AuditRow, who: &str) -> bool {
    row.actor_name.to_lowercase().contains(who)
        || row
            .actor_email
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains(who))
}

/// A filter's text, trimmed; `None` when absent or empty (an empty form field).
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The first 60 characters of a bad value, for an error message.
fn clip(text: &str) -> String {
    text.chars().take(60).collect()
}

/// An `action` filter: a tool or action name, upper-cased.
fn check_action(action: &str) -> ServiceResult<String> {
    let upper = action.to_ascii_uppercase();
    let ok = upper.len() <= MAX_ACTION_FILTER && upper.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    if !ok {
        return Err(ServiceError::invalid(
            "action",
            format!(
                "'{}' is not an action name; give a tool name such as HOSTING_SET_ENV_VARS",
                clip(action)
            ),
        ));
    }
    Ok(upper)
}

/// An RFC 3339 time as ms.
fn parse_time(field: &'static str, text: &str) -> ServiceResult<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        ServiceError::invalid(
            field,
            format!(
                "'{}' is not an RFC 3339 time; give one such as 2026-01-31T12:00:00Z",
                clip(text)
            ),
        )
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Whether a field holds a secret itself (a password, a token).
fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "password" | "token" | "secret" | "credentials" | "private_key" | "api_key"
    ) || n.ends_with("_password")
        || n.ends_with("_token")
        || n.ends_with("_secret")
}

/// Call arguments as the audit log keeps them: every value of an env var or provider
/// settings map, every password or token field, and the credentials of every URL replaced
/// by `***`. Also returns the secret texts removed, to cut them from the error text too.
pub(super) fn redact_arguments(mut arguments: serde_json::Value) -> (serde_json::Value, Vec<String>) {
    let mut secrets = Vec::new();
    redact_value(&mut arguments, &mut secrets);
    secrets.retain(|s| s.len() >= MIN_SCRUBBED_LEN);
    // Longest first, so a secret containing another is cut whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    (arguments, secrets)
}

fn redact_value(value: &mut serde_json::Value, secrets: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if SECRET_MAPS.contains(&name.as_str())
                    && let Value::Object(map) = field
                {
                    for v in map.values_mut() {
                        mask(v, secrets);
                    }
                } else if is_secret_field(name) {
                    mask(field, secrets);
                } else {
                    redact_value(field, secrets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secrets)),
        Value::String(text) if text.contains("://") => *text = strip_url_credentials(text, secrets),
        _ => {}
    }
}

/// Replaces a secret value (not a `null`, which deletes and says nothing) by the mask.
fn mask(value: &mut serde_json::Value, secrets: &mut Vec<String>) {
    match value {
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => {
            secrets.push(std::mem::take(s));
            *value = serde_json::Value::String(MASK.into());
        }
        other => {
            secrets.push(other.to_string());
            *other = serde_json::Value::String(MASK.into());
        }
    }
}

/// `text` with the user-info of every URL in it (`https://user:token@host/…`) replaced
/// by the mask; what was removed goes to `secrets`.
fn strip_url_credentials(text: &str, secrets: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"' | '`' | '<' | '>') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) => {
                let userinfo = &authority[..i];
                secrets.push(userinfo.to_string());
                if let Some((_, password)) = userinfo.split_once(':') {
                    secrets.push(password.to_string());
                }
                out.push_str(MASK);
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// An error message as the audit log keeps it: URL credentials and the call's secret
/// values cut out.
pub(super) fn scrub_text(text: &str, secrets: &[String]) -> String {
    let mut found = Vec::new();
    let mut out = strip_url_credentials(text, &mut found);
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_values_passwords_tokens_and_url_credentials_are_masked() {
        let args = json!({
            "name": "shop",
            "repo": "https://deploy:gh-pat-123456@github.com/acme/shop.git",
            "env_vars": { "API_TOKEN": "s3cret-value" },
            "vars": { "DB_URL": "postgres://u:pw-98765@db/x", "GONE": null },
            "config": { "api_token": "cf-token-abcdef", "default": true },
            "password": "correct horse battery",
            "nested": [{ "webhook_secret": "whsec-777777" }],
            "idempotency_key": "k-1",
        });
        let (out, secrets) = redact_arguments(args);
        let text = out.to_string();
        for secret in [
            "gh-pat-123456",
            "s3cret-value",
            "pw-98765",
            "cf-token-abcdef",
            "correct horse",
            "whsec-777777",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(out["repo"], "https://***@github.com/acme/shop.git");
        assert_eq!(out["env_vars"]["API_TOKEN"], MASK);
        assert_eq!(out["vars"]["GONE"], serde_json::Value::Null);
        assert_eq!(out["config"]["default"], MASK);
        assert_eq!(out["idempotency_key"], "k-1");
        assert_eq!(out["name"], "shop");
        assert!(secrets.contains(&"gh-pat-123456".to_string()), "{secrets:?}");

        let error = "could not reach https://deploy:gh-pat-123456@github.com/acme/shop.git: \
                     the value s3cret-value is refused";
        let scrubbed = scrub_text(error, &secrets);
        assert!(
            !scrubbed.contains("gh-pat-123456") && !scrubbed.contains("s3cret-value"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("github.com/acme/shop.git"), "{scrubbed}");
    }

    #[test]
    fn text_without_credentials_is_unchanged() {
        let mut secrets = Vec::new();
        for text in [
            "https://github.com/acme/shop.git",
            "git@github.com:acme/shop.git",
            "plain words, a@b.c mail",
            "two https://a.test/x and file:///tmp/y",
        ] {
            assert_eq!(strip_url_credentials(text, &mut secrets), text);
        }
        assert!(secrets.is_empty());
    }

    #[test]
    fn filters_parse_or_name_the_fix() {
        assert_eq!(check_action("hosting_set_env_vars").unwrap(), "HOSTING_SET_ENV_VARS");
        assert!(check_action("DROP TABLE").is_err());
        assert!(parse_time("since", "2026-01-31T12:00:00Z").is_ok());
        assert!(parse_time("since", "yesterday").is_err());
        assert_eq!(given(&Some("  ".into())), None);
    }
}
