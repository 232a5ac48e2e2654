//! A FAKE of Cloudflare's API v4 — not Cloudflare — for contract tests, in process on
//! 127.0.0.1:0. It follows the API's documentation where berth depends on it: every answer
//! in the envelope `{success, errors: [{code, message}], messages, result, result_info}`;
//! a Bearer token checked on every call (`GET /user/tokens/verify`); zones found by
//! `GET /zones?name=`; DNS records listed with `type` / `name` / `page` / `per_page`
//! filters and `result_info`, created, read, patched and deleted (a CNAME cannot share its
//! name, as in Cloudflare); custom hostnames (Cloudflare for SaaS) whose `status`
//! (`pending` → `active`) and `ssl.status` (`pending_validation` → `active`) advance when
//! a test says so or after a number of reads; and a switch that answers the next N calls
//! with HTTP 429, `Retry-After` and `Ratelimit` headers. It serves no DNS.

#![allow(dead_code, reason = "each test file uses a different part of the fake")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// The path the fake's API lives under, like Cloudflare's.
const BASE: &str = "/client/v4";

/// A DNS record the fake holds.
#[derive(Clone, Debug)]
pub struct FakeRecord {
    /// Id.
    pub id: String,
    /// Zone id.
    pub zone_id: String,
    /// Record type.
    pub record_type: String,
    /// Full name.
    pub name: String,
    /// Value.
    pub content: String,
    /// TTL.
    pub ttl: u64,
    /// Comment.
    pub comment: Option<String>,
}

/// A custom hostname the fake holds.
#[derive(Clone, Debug)]
pub struct FakeHostname {
    /// Id.
    pub id: String,
    /// Zone id.
    pub zone_id: String,
    /// The hostname.
    pub hostname: String,
    /// `pending` or `active`.
    pub status: String,
    /// `pending_validation` or `active`.
    pub ssl_status: String,
    /// Reads so far.
    pub reads: u32,
    ownership_value: String,
    ssl_txt_value: String,
}

#[derive(Default)]
struct Fake {
    token: String,
    zones: Vec<(String, String)>,
    records: Vec<FakeRecord>,
    hostnames: Vec<FakeHostname>,
    rate_limit_next: u32,
    reads_to_active: u32,
    reject_type: Option<String>,
    requests: u32,
}

type Shared = Arc<Mutex<Fake>>;

/// The running fake.
pub struct CloudflareFake {
    /// Its API base URL (the `api_url` setting).
    pub url: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CloudflareFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl CloudflareFake {
    /// Starts the fake; calls must carry `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> CloudflareFake {
        let state: Shared = Arc::new(Mutex::new(Fake {
            token: token.to_string(),
            ..Fake::default()
        }));
        let api = Router::new()
            .route("/user/tokens/verify", get(verify))
            .route("/zones", get(list_zones))
            .route("/zones/{zone}", get(get_zone))
            .route("/zones/{zone}/dns_records", get(list_records).post(create_record))
            .route(
                "/zones/{zone}/dns_records/{id}",
                get(get_record).patch(patch_record).delete(delete_record),
            )
            .route(
                "/zones/{zone}/custom_hostnames",
                get(list_hostnames).post(create_hostname),
            )
            .route(
                "/zones/{zone}/custom_hostnames/{id}",
                get(get_hostname).delete(delete_hostname),
            )
            .layer(middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state.clone());
        let app = Router::new().nest(BASE, api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake");
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake serves");
        });
        CloudflareFake {
            url: format!("http://127.0.0.1:{port}{BASE}"),
            state,
            server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds a zone; answers its id.
    pub fn add_zone(&self, name: &str) -> String {
        let id = new_id();
        self.with(|f| f.zones.push((id.clone(), name.to_string())));
        id
    }

    /// Adds a record as a person would in the dashboard; answers its id.
    pub fn insert_record(
        &self,
        zone_id: &str,
        record_type: &str,
        name: &str,
        content: &str,
        comment: Option<&str>,
    ) -> String {
        let id = new_id();
        self.with(|f| {
            f.records.push(FakeRecord {
                id: id.clone(),
                zone_id: zone_id.to_string(),
                record_type: record_type.to_string(),
                name: name.to_string(),
                content: content.to_string(),
                ttl: 1,
                comment: comment.map(str::to_string),
            })
        });
        id
    }

    /// Changes a record's comment, as a person editing it in the dashboard would.
    pub fn set_comment(&self, id: &str, comment: Option<&str>) {
        self.with(|f| {
            for r in f.records.iter_mut().filter(|r| r.id == id) {
                r.comment = comment.map(str::to_string);
            }
        });
    }

    /// The records of a zone.
    pub fn records(&self, zone_id: &str) -> Vec<FakeRecord> {
        self.with(|f| f.records.iter().filter(|r| r.zone_id == zone_id).cloned().collect())
    }

    /// The custom hostnames of every zone.
    pub fn hostnames(&self) -> Vec<FakeHostname> {
        self.with(|f| f.hostnames.clone())
    }

    /// Answers the next `n` calls with HTTP 429.
    pub fn rate_limit_next(&self, n: u32) {
        self.with(|f| f.rate_limit_next = n);
    }

    /// Custom hostnames become active on their `n`th read (0: only when told).
    pub fn activate_after_reads(&self, n: u32) {
        self.with(|f| f.reads_to_active = n);
    }

    /// Makes a custom hostname active now (ownership and certificate validated).
    pub fn activate(&self, hostname: &str) {
        self.with(|f| {
            for h in f.hostnames.iter_mut().filter(|h| h.hostname == hostname) {
                h.status = "active".into();
                h.ssl_status = "active".into();
            }
        });
    }

    /// Refuses to create records of this type (as Cloudflare refuses bad content).
    pub fn reject_records_of_type(&self, record_type: Option<&str>) {
        self.with(|f| f.reject_type = record_type.map(str::to_string));
    }

    /// Calls answered so far (429s included).
    pub fn requests(&self) -> u32 {
        self.with(|f| f.requests)
    }
}

fn envelope(status: StatusCode, result: Value, result_info: Option<Value>) -> Response {
    let mut body = json!({ "success": true, "errors": [], "messages": [], "result": result });
    if let Some(info) = result_info {
        body["result_info"] = info;
    }
    (status, axum::Json(body)).into_response()
}

fn ok(result: Value) -> Response {
    envelope(StatusCode::OK, result, None)
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "success": false,
            "errors": [{ "code": code, "message": message }],
            "messages": [],
            "result": null
        })),
    )
        .into_response()
}

/// A page of `items` as `result` with `result_info`.
fn page(items: Vec<Value>, query: &HashMap<String, String>, default_per_page: usize, max_per_page: usize) -> Response {
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_per_page)
        .clamp(1, max_per_page);
    let page: usize = query.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let total = items.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let info = json!({
        "page": page, "per_page": per_page, "count": slice.len(),
        "total_count": total, "total_pages": total_pages
    });
    envelope(StatusCode::OK, Value::Array(slice), Some(info))
}

/// Rate limit first, then the token, as Cloudflare's edge does.
async fn gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let (limited, token) = {
        let mut f = state.lock().unwrap();
        f.requests += 1;
        let limited = f.rate_limit_next > 0;
        if limited {
            f.rate_limit_next -= 1;
        }
        (limited, f.token.clone())
    };
    if limited {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            971,
            "Please wait and consider throttling your request speed",
        );
        let headers = response.headers_mut();
        headers.insert("retry-after", HeaderValue::from_static("1"));
        headers.insert("ratelimit", HeaderValue::from_static("\"default\";r=0;t=1"));
        headers.insert("ratelimit-policy", HeaderValue::from_static("\"default\";q=1200;w=300"));
        return response;
    }
    let verify = request.uri().path().ends_with("/user/tokens/verify");
    match request.headers().get("authorization").and_then(|v| v.to_str().ok()) {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                9106,
                "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
            );
        }
        Some(value) if value != format!("Bearer {token}") => {
            return if verify {
                error(StatusCode::UNAUTHORIZED, 1000, "Invalid API Token")
            } else {
                error(StatusCode::FORBIDDEN, 10000, "Authentication error")
            };
        }
        Some(_) => {}
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("ratelimit", HeaderValue::from_static("\"default\";r=1199;t=300"));
    response
}

async fn verify() -> Response {
    ok(json!({ "id": "ed17574386854bf78a67040be0a770b0", "status": "active" }))
}

fn zone_json(id: &str, name: &str) -> Value {
    json!({ "id": id, "name": name, "status": "active", "type": "full" })
}

fn zone_name(f: &Fake, zone: &str) -> Option<String> {
    f.zones.iter().find(|(id, _)| id == zone).map(|(_, name)| name.clone())
}

fn no_zone(zone: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        7003,
        &format!("Could not route to /zones/{zone}, perhaps your object identifier is invalid?"),
    )
}

async fn list_zones(State(state): State<Shared>, Query(query): Query<HashMap<String, String>>) -> Response {
    let f = state.lock().unwrap();
    let zones = f
        .zones
        .iter()
        .filter(|(_, name)| query.get("name").is_none_or(|n| n == name))
        .map(|(id, name)| zone_json(id, name))
        .collect();
    page(zones, &query, 20, 50)
}

async fn get_zone(State(state): State<Shared>, Path(zone): Path<String>) -> Response {
    let f = state.lock().unwrap();
    match zone_name(&f, &zone) {
        Some(name) => ok(zone_json(&zone, &name)),
        None => no_zone(&zone),
    }
}

fn record_json(f: &Fake, r: &FakeRecord) -> Value {
    json!({
        "id": r.id, "zone_id": r.zone_id, "zone_name": zone_name(f, &r.zone_id),
        "type": r.record_type, "name": r.name, "content": r.content, "ttl": r.ttl,
        "proxied": false, "comment": r.comment, "tags": [],
        "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z"
    })
}

async fn list_records(
    State(state): State<Shared>,
    Path(zone): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let f = state.lock().unwrap();
    if zone_name(&f, &zone).is_none() {
        return no_zone(&zone);
    }
    let name = query.get("name").or_else(|| query.get("name.exact"));
    let records = f
        .records
        .iter()
        .filter(|r| r.zone_id == zone)
        .filter(|r| query.get("type").is_none_or(|t| t.eq_ignore_ascii_case(&r.record_type)))
        .filter(|r| name.is_none_or(|n| n.eq_ignore_ascii_case(&r.name)))
        .map(|r| record_json(&f, r))
        .collect();
    page(records, &query, 100, 5000)
}

async fn create_record(
    State(state): State<Shared>,
    Path(zone): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut f = state.lock().unwrap();
    let Some(zone_name) = zone_name(&f, &zone) else {
        return no_zone(&zone);
    };
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let (record_type, name, content) = (text("type").to_ascii_uppercase(), text("name"), text("content"));
    if !matches!(record_type.as_str(), "A" | "AAAA" | "CNAME" | "TXT" | "CAA" | "MX") {
        return error(StatusCode::BAD_REQUEST, 9000, "DNS record type is invalid.");
    }
    if name.is_empty() || !(name == zone_name || name.ends_with(&format!(".{zone_name}"))) {
        return error(
            StatusCode::BAD_REQUEST,
            9007,
            "Content for record name is invalid: it must be in the zone.",
        );
    }
    let bad_content = content.is_empty()
        || f.reject_type.as_deref() == Some(record_type.as_str())
        || (record_type == "A" && content.parse::<std::net::Ipv4Addr>().is_err())
        || (record_type == "AAAA" && content.parse::<std::net::Ipv6Addr>().is_err());
    if bad_content {
        return error(
            StatusCode::BAD_REQUEST,
            9005,
            &format!("Content for {record_type} record is invalid."),
        );
    }
    let at_name = |r: &&FakeRecord| r.zone_id == zone && r.name.eq_ignore_ascii_case(&name);
    if f.records
        .iter()
        .filter(at_name)
        .any(|r| r.record_type == record_type && r.content == content)
    {
        return error(StatusCode::BAD_REQUEST, 81058, "An identical record already exists.");
    }
    let address_like = |t: &str| matches!(t, "A" | "AAAA" | "CNAME");
    if address_like(&record_type)
        && f.records
            .iter()
            .filter(at_name)
            .any(|r| address_like(&r.record_type) && (r.record_type == "CNAME" || record_type == "CNAME"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            81053,
            "An A, AAAA, or CNAME record with that host already exists.",
        );
    }
    let record = FakeRecord {
        id: new_id(),
        zone_id: zone.clone(),
        record_type,
        name,
        content,
        ttl: body["ttl"].as_u64().unwrap_or(1),
        comment: body["comment"].as_str().map(str::to_string),
    };
    let json = record_json(&f, &record);
    f.records.push(record);
    ok(json)
}

fn no_record() -> Response {
    error(StatusCode::NOT_FOUND, 81044, "Record does not exist.")
}

async fn get_record(State(state): State<Shared>, Path((zone, id)): Path<(String, String)>) -> Response {
    let f = state.lock().unwrap();
    match f.records.iter().find(|r| r.zone_id == zone && r.id == id) {
        Some(r) => ok(record_json(&f, r)),
        None => no_record(),
    }
}

async fn patch_record(
    State(state): State<Shared>,
    Path((zone, id)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut f = state.lock().unwrap();
    let Some(index) = f.records.iter().position(|r| r.zone_id == zone && r.id == id) else {
        return no_record();
    };
    let record = &mut f.records[index];
    if let Some(content) = body["content"].as_str() {
        record.content = content.to_string();
    }
    if let Some(ttl) = body["ttl"].as_u64() {
        record.ttl = ttl;
    }
    if body.get("comment").is_some() {
        record.comment = body["comment"].as_str().map(str::to_string);
    }
    let record = record.clone();
    ok(record_json(&f, &record))
}

async fn delete_record(State(state): State<Shared>, Path((zone, id)): Path<(String, String)>) -> Response {
    let mut f = state.lock().unwrap();
    let before = f.records.len();
    f.records.retain(|r| !(r.zone_id == zone && r.id == id));
    if f.records.len() == before {
        return no_record();
    }
    ok(json!({ "id": id }))
}

fn hostname_json(h: &FakeHostname) -> Value {
    let pending = h.status != "active";
    let ssl_pending = h.ssl_status != "active";
    json!({
        "id": h.id,
        "hostname": h.hostname,
        "status": h.status,
        "ssl": {
            "id": format!("ssl-{}", h.id),
            "type": "dv",
            "method": "txt",
            "status": h.ssl_status,
            "validation_records": if ssl_pending {
                json!([{ "txt_name": format!("_acme-challenge.{}", h.hostname), "txt_value": h.ssl_txt_value }])
            } else { json!([]) },
            "validation_errors": []
        },
        "verification_errors": if pending { json!(["custom hostname does not CNAME to this zone."]) } else { json!([]) },
        "ownership_verification": if pending {
            json!({ "type": "txt", "name": format!("_cf-custom-hostname.{}", h.hostname), "value": h.ownership_value })
        } else { Value::Null },
        "created_at": "2026-01-01T00:00:00Z"
    })
}

/// One read of a hostname: it may move on in its lifecycle.
fn read_hostname(h: &mut FakeHostname, reads_to_active: u32) {
    h.reads += 1;
    if reads_to_active > 0 && h.reads >= reads_to_active {
        h.status = "active".into();
        h.ssl_status = "active".into();
    } else if reads_to_active > 0 && h.reads * 2 >= reads_to_active {
        // Ownership first, then the certificate, as the docs describe.
        h.status = "active".into();
    }
}

async fn create_hostname(
    State(state): State<Shared>,
    Path(zone): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut f = state.lock().unwrap();
    if zone_name(&f, &zone).is_none() {
        return no_zone(&zone);
    }
    let Some(hostname) = body["hostname"].as_str().filter(|h| h.contains('.')) else {
        return error(StatusCode::BAD_REQUEST, 1411, "Hostname is invalid.");
    };
    if f.hostnames.iter().any(|h| h.hostname == hostname) {
        return error(StatusCode::CONFLICT, 1406, "Duplicate custom hostname found.");
    }
    let h = FakeHostname {
        id: uuid::Uuid::now_v7().hyphenated().to_string(),
        zone_id: zone,
        hostname: hostname.to_string(),
        status: "pending".into(),
        ssl_status: "pending_validation".into(),
        reads: 0,
        ownership_value: new_id(),
        ssl_txt_value: new_id(),
    };
    let json = hostname_json(&h);
    f.hostnames.push(h);
    ok(json)
}

async fn list_hostnames(
    State(state): State<Shared>,
    Path(zone): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut f = state.lock().unwrap();
    let reads = f.reads_to_active;
    let items = f
        .hostnames
        .iter_mut()
        .filter(|h| h.zone_id == zone && query.get("hostname").is_none_or(|n| *n == h.hostname))
        .map(|h| {
            read_hostname(h, reads);
            hostname_json(h)
        })
        .collect();
    page(items, &query, 50, 50)
}

async fn get_hostname(State(state): State<Shared>, Path((zone, id)): Path<(String, String)>) -> Response {
    let mut f = state.lock().unwrap();
    let reads = f.reads_to_active;
    match f.hostnames.iter_mut().find(|h| h.zone_id == zone && h.id == id) {
        Some(h) => {
            read_hostname(h, reads);
            ok(hostname_json(h))
        }
        None => error(StatusCode::NOT_FOUND, 1551, "The custom hostname was not found."),
    }
}

async fn delete_hostname(State(state): State<Shared>, Path((zone, id)): Path<(String, String)>) -> Response {
    let mut f = state.lock().unwrap();
    let before = f.hostnames.len();
    f.hostnames.retain(|h| !(h.zone_id == zone && h.id == id));
    if f.hostnames.len() == before {
        return error(StatusCode::NOT_FOUND, 1551, "The custom hostname was not found.");
    }
    ok(json!({ "id": id }))
}
