//! The OAuth flow as an MCP client and a person go through it, shared by the tests of
//! OAuth and of connected applications: login with a password, dynamic registration,
//! the consent form, the code exchange with PKCE.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use super::{KEY, TestServer};

/// Every member's password in these tests.
pub const PASSWORD: &str = "correct horse battery";
/// A PKCE verifier and its S256 challenge (computed independently).
pub const VERIFIER: &str = "berth-test-verifier-0123456789-abcdefghijklmnopq";
pub const CHALLENGE: &str = "X-qY82McKsZHSbJIs5Ma70SVrVpnDg-pjMc4K_WW4vs";

/// A client that shows redirects instead of following them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A REST call with the admin key: (status, answer).
pub async fn rest(server: &TestServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let req = match method {
        "POST" => server.http.post(server.api(path)).json(&body),
        _ => server.http.get(server.api(path)),
    };
    let r = req.bearer_auth(KEY).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The CSRF token of a dashboard form.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + "name=\"_csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

/// Logs a member in with email and password: the session cookie.
pub async fn login(server: &TestServer, email: &str) -> String {
    let http = no_redirects();
    let page = http.get(server.api("/login")).send().await.unwrap();
    let login_cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = csrf_of(&page.text().await.unwrap());
    let body = serde_urlencoded::to_string([
        ("_csrf", csrf.as_str()),
        ("email", email),
        ("password", PASSWORD),
        ("next", "/sites"),
    ])
    .unwrap();
    let resp = http
        .post(server.api("/login"))
        .header("cookie", login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("berth_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Registers a client dynamically: (status, answer).
pub async fn register(server: &TestServer, redirect_uris: &[&str]) -> (u16, Value) {
    let r = server
        .http
        .post(server.api("/oauth/register"))
        .json(&json!({ "client_name": "Test Agent", "redirect_uris": redirect_uris }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The query of an authorization request.
pub fn authorize_query(client_id: &str, redirect_uri: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("scope", "sites:read logs:read deploy"),
    ];
    for (k, v) in extra {
        pairs.retain(|(n, _)| n != k);
        if !v.is_empty() {
            pairs.push((k, v));
        }
    }
    serde_urlencoded::to_string(pairs).unwrap()
}

/// The query parameters of a redirect's `Location`.
pub fn location_params(resp: &reqwest::Response) -> (String, Vec<(String, String)>) {
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    (location, params)
}

pub fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// Opens the consent page and approves it with `choices` (form fields besides the
/// request's own): the redirect's parameters.
pub async fn consent(
    server: &TestServer,
    cookie: &str,
    query: &str,
    choices: &[(&str, &str)],
) -> Vec<(String, String)> {
    consent_as(
        server,
        cookie,
        query,
        choices,
        "Test Agent",
        "unverified (registered dynamically)",
    )
    .await
}

/// [`consent`] for a client shown with `name` and `provenance`.
pub async fn consent_as(
    server: &TestServer,
    cookie: &str,
    query: &str,
    choices: &[(&str, &str)],
    name: &str,
    provenance: &str,
) -> Vec<(String, String)> {
    let resp = consent_post(server, cookie, query, choices, name, provenance).await;
    if resp.status() != 303 {
        panic!(
            "the approval answered {}: {}\n{}",
            resp.status(),
            resp.text().await.unwrap(),
            server.log()
        );
    }
    location_params(&resp).1
}

/// Opens the consent page (checking it shows `name` and `provenance`) and approves it
/// with `choices`: the answer to the approval.
pub async fn consent_post(
    server: &TestServer,
    cookie: &str,
    query: &str,
    choices: &[(&str, &str)],
    name: &str,
    provenance: &str,
) -> reqwest::Response {
    let http = no_redirects();
    let page = http
        .get(server.api(&format!("/oauth/authorize?{query}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the consent page");
    let html = page.text().await.unwrap();
    assert!(html.contains(name), "the client's name is shown: {html}");
    assert!(html.contains(provenance), "{html}");
    let org = html
        .split("option value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("an org choice")
        .to_string();
    let mut form: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    form.push(("_csrf".into(), csrf_of(&html)));
    form.push(("org".into(), org));
    form.push(("decision".into(), "approve".into()));
    for (k, v) in choices {
        form.push((k.to_string(), v.to_string()));
    }
    http.post(server.api("/oauth/authorize"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&form).unwrap())
        .send()
        .await
        .unwrap()
}

/// Exchanges a code: (status, answer).
pub async fn exchange(server: &TestServer, form: &[(&str, &str)]) -> (u16, Value) {
    let r = server
        .http
        .post(server.api("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// An MCP client on `/mcp` with a bearer token.
pub async fn mcp(server: &TestServer, token: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(token.to_string());
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP client connects")
}

/// Calls a tool.
pub async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> CallToolResult {
    let params =
        CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default());
    client.call_tool(params).await.expect("tool call")
}

/// Whether a bearer token gets through `/mcp` (an initialize request).
pub async fn mcp_status(server: &TestServer, token: &str) -> u16 {
    server
        .http
        .post(server.api("/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Registers a client, lets the member of `cookie` consent (every site, the scopes
/// sites:read and logs:read) and exchanges the code: (client_id, access token, refresh
/// token).
pub async fn connect(server: &TestServer, cookie: &str) -> (String, String, String) {
    connect_with(
        server,
        cookie,
        &[],
        &[
            ("sites", "all"),
            ("grant_scope", "sites:read"),
            ("grant_scope", "logs:read"),
        ],
    )
    .await
}

/// [`connect`] with extra authorization parameters (`scope`, …) and the consent form the
/// member submits: (client_id, access token, refresh token).
pub async fn connect_with(
    server: &TestServer,
    cookie: &str,
    authorize: &[(&str, &str)],
    consent_form: &[(&str, &str)],
) -> (String, String, String) {
    let (status, client) = register(server, &["http://127.0.0.1/callback"]).await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let redirect = "http://127.0.0.1:4567/callback";
    let query = authorize_query(&client_id, redirect, authorize);
    let params = consent(server, cookie, &query, consent_form).await;
    let code = param(&params, "code").expect("a code");
    let (status, tokens) = exchange(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    (
        client_id,
        tokens["access_token"].as_str().unwrap().to_string(),
        tokens["refresh_token"].as_str().unwrap().to_string(),
    )
}
