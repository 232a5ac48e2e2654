//! An agent's view: rmcp's own client over streamable HTTP (`/mcp` with a bearer key) and
//! over stdio (`berth mcp` spawned as a child process).

mod common;

use common::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const TOOLS: &[&str] = &[
    "HOSTING_WHOAMI",
    "HOSTING_LIST_SITES",
    "HOSTING_GET_SITE",
    "HOSTING_CREATE_SITE",
    "HOSTING_UPDATE_SITE",
    "HOSTING_DELETE_SITE",
    "HOSTING_DEPLOY",
    "HOSTING_LIST_DEPLOYMENTS",
    "HOSTING_GET_DEPLOYMENT",
    "HOSTING_GET_DEPLOYMENT_LOGS",
    "HOSTING_LIST_ENVIRONMENTS",
    "HOSTING_CREATE_ENVIRONMENT",
    "HOSTING_DELETE_ENVIRONMENT",
    "HOSTING_GET_ENVIRONMENT_LOGS",
    "HOSTING_PROMOTE",
    "HOSTING_ROLLBACK",
    "HOSTING_CANCEL_DEPLOYMENT",
    "HOSTING_GET_ENV_VARS",
    "HOSTING_SET_ENV_VARS",
    "HOSTING_GET_SCALING_CONFIG",
    "HOSTING_SET_SCALING_CONFIG",
    "HOSTING_SCALE_ENVIRONMENT",
    "HOSTING_GET_CONFIG",
    "HOSTING_SET_CONFIG",
    "HOSTING_TEST_CONNECTION",
    "HOSTING_GET_RESOURCE_USAGE",
    "HOSTING_GET_USAGE",
    "HOSTING_LIST_REPOS",
    "HOSTING_CREATE_REPO",
    "HOSTING_GET_GIT_TOKEN",
    "HOSTING_LIST_DOMAINS",
    "HOSTING_ADD_DOMAIN",
    "HOSTING_VALIDATE_DOMAIN",
    "HOSTING_REMOVE_DOMAIN",
    "HOSTING_CREATE_RESOURCE",
    "HOSTING_LIST_RESOURCES",
    "HOSTING_GET_RESOURCE",
    "HOSTING_DELETE_RESOURCE",
    "HOSTING_LIST_MEMBERS",
    "HOSTING_ADD_MEMBER",
    "HOSTING_SET_MEMBER_ROLE",
    "HOSTING_REMOVE_MEMBER",
    "HOSTING_INVITE_MEMBER",
    "HOSTING_LIST_INVITATIONS",
    "HOSTING_REVOKE_INVITATION",
    "HOSTING_CREATE_API_KEY",
    "HOSTING_LIST_API_KEYS",
    "HOSTING_REVOKE_API_KEY",
    "HOSTING_GET_METRICS_SUMMARY",
    "HOSTING_GET_STATUS_CODES",
    "HOSTING_GET_TOP_PATHS",
    "HOSTING_GET_USAGE_TIMELINE",
    "HOSTING_GET_ERROR_PATTERNS",
    "HOSTING_GET_METRICS_FIELDS",
    "HOSTING_LIST_CONNECTED_APPS",
    "HOSTING_REVOKE_CONNECTED_APP",
    "HOSTING_FREEZE_AGENTS",
    "HOSTING_LIST_AUDIT_LOG",
    "HOSTING_CREATE_ORG",
];

async fn http_client(server: &TestServer, key: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(key.to_string());
    let transport = StreamableHttpClientTransport::from_config(config);
    ().serve(transport).await.expect("MCP client connects")
}

async fn call<H: rmcp::ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &'static str,
    args: Value,
) -> CallToolResult {
    let params = CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap_or_default());
    client.call_tool(params).await.expect("tool call")
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().expect("structured content")
}

#[tokio::test]
async fn tools_are_listed_with_schemas_and_annotations() {
    let server = TestServer::start().await;
    let client = http_client(&server, KEY).await;
    // The server introduces itself as berth, not as the SDK it is built with.
    let info = client.peer_info().expect("server info");
    let me = info.server_info.as_ref().expect("server info");
    assert_eq!(
        (me.name.as_str(), me.version.as_str()),
        ("berth", env!("CARGO_PKG_VERSION"))
    );
    let tools = client.list_all_tools().await.expect("list tools");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    let mut want = TOOLS.to_vec();
    want.sort();
    assert_eq!(names, want);
    for t in &tools {
        let ann = t
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} has annotations", t.name));
        assert!(ann.read_only_hint.is_some(), "{} read_only_hint", t.name);
        assert!(t.output_schema.is_some(), "{} output schema", t.name);
        assert!(
            t.description.as_ref().is_some_and(|d| d.len() > 20),
            "{} description",
            t.name
        );
    }
    let delete = tools.iter().find(|t| t.name == "HOSTING_DELETE_SITE").unwrap();
    assert_eq!(delete.annotations.as_ref().unwrap().destructive_hint, Some(true));
    let create = tools.iter().find(|t| t.name == "HOSTING_CREATE_SITE").unwrap();
    let props = create.input_schema.get("properties").expect("properties");
    for p in [
        "name",
        "repo",
        "branch",
        "commit",
        "wait",
        "env_vars",
        "idempotency_key",
        "timeout_seconds",
    ] {
        assert!(props.get(p).is_some(), "create_site has {p}");
    }
    // Metrics tools state their bounds in their schemas.
    let top = tools.iter().find(|t| t.name == "HOSTING_GET_TOP_PATHS").unwrap();
    let limit = top.input_schema["properties"]["limit"].to_string();
    assert!(limit.contains(r#""maximum":100"#), "{limit}");
    let timeline = tools.iter().find(|t| t.name == "HOSTING_GET_USAGE_TIMELINE").unwrap();
    assert!(timeline.description.as_deref().unwrap().contains("1,500 points"));
    let patterns = tools.iter().find(|t| t.name == "HOSTING_GET_ERROR_PATTERNS").unwrap();
    let limit = patterns.input_schema["properties"]["limit"].to_string();
    assert!(limit.contains(r#""maximum":100"#), "{limit}");
    assert!(patterns.description.as_deref().unwrap().contains("500 templates"));
    client.cancel().await.ok();
}

#[tokio::test]
async fn agent_creates_a_site_from_git_waits_debugs_and_deletes_it() {
    let server = TestServer::start().await;
    let client = http_client(&server, KEY).await;

    let me = call(&client, "HOSTING_WHOAMI", json!({})).await;
    assert_eq!(structured(&me)["org"], "default");

    let repo = node_app("agent app");
    git_init(repo.path());
    let created = call(
        &client,
        "HOSTING_CREATE_SITE",
        json!({"name": "agent", "repo": format!("file://{}", s(repo.path())), "branch": "main", "wait": true}),
    )
    .await;
    let out = structured(&created);
    assert_eq!(created.is_error, Some(false), "{out}");
    assert_eq!(out["deployment"]["status"], "live", "{out}\n{}", server.log());
    let url = format!("http://agent.localhost:{}", server.edge_port);
    assert_eq!(out["url"], url.as_str());
    assert_eq!(
        server.edge("agent.localhost", "/").await,
        (200, "agent app /".to_string())
    );
    let summary = created
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap();
    assert!(summary.contains("live"), "human summary first: {summary}");

    let listed = call(&client, "HOSTING_LIST_SITES", json!({})).await;
    let sites = structured(&listed);
    assert_eq!(sites["sites"][0]["name"], "agent");
    // The data is sent once, as structured content; the text part is one line.
    let texts: Vec<String> = listed
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert_eq!(texts.len(), 1, "one text block, not the data again as JSON: {texts:?}");
    assert!(
        !texts[0].contains('\n') && !texts[0].trim_start().starts_with('{'),
        "{texts:?}"
    );

    let site = structured(&call(&client, "HOSTING_GET_SITE", json!({"site": "agent"})).await);
    assert_eq!(site["status"], "live");
    assert_eq!(site["recent_deployments"].as_array().unwrap().len(), 1);
    assert!(
        site["build_log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("deployment is live")),
        "{site}"
    );

    let deployed = structured(&call(&client, "HOSTING_DEPLOY", json!({"site": "agent", "wait": true})).await);
    assert_eq!(deployed["deployment"]["status"], "live", "{deployed}");
    let list = structured(&call(&client, "HOSTING_LIST_DEPLOYMENTS", json!({"site": "agent"})).await);
    assert_eq!(list["deployments"].as_array().unwrap().len(), 2);
    assert_eq!(list["deployments"][0]["id"], deployed["deployment"]["id"]);

    let id = deployed["deployment"]["id"].as_str().unwrap();
    let got = structured(&call(&client, "HOSTING_GET_DEPLOYMENT", json!({"deployment_id": id})).await);
    assert_eq!(got["status"], "live");
    let logs = structured(
        &call(
            &client,
            "HOSTING_GET_DEPLOYMENT_LOGS",
            json!({"deployment_id": id, "limit": 3}),
        )
        .await,
    );
    assert_eq!(logs["lines"].as_array().unwrap().len(), 3);
    assert_eq!(logs["has_more"], true);
    let more = structured(
        &call(
            &client,
            "HOSTING_GET_DEPLOYMENT_LOGS",
            json!({"deployment_id": id, "cursor": logs["next_cursor"], "limit": 1000}),
        )
        .await,
    );
    assert!(more["lines"][0]["cursor"].as_i64().unwrap() > logs["next_cursor"].as_i64().unwrap());

    let deleted = structured(&call(&client, "HOSTING_DELETE_SITE", json!({"site": "agent"})).await);
    assert_eq!(deleted["deployments_removed"], 2);
    assert_eq!(server.edge("agent.localhost", "/").await.0, 404);

    // Errors tell the agent what to do next.
    let missing = call(&client, "HOSTING_GET_SITE", json!({"site": "agent"})).await;
    assert_eq!(missing.is_error, Some(true));
    let err = structured(&missing);
    assert_eq!(err["error"]["code"], "not_found");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HOSTING_CREATE_SITE"),
        "{err}"
    );
    client.cancel().await.ok();
}

#[tokio::test]
async fn failed_deploy_with_wait_returns_error_and_log_lines() {
    let server = TestServer::start().await;
    let client = http_client(&server, KEY).await;
    let broken = app(&[(
        "package.json",
        r#"{"name":"b","scripts":{"build":"echo compiling && echo 'syntax error in app.js' >&2 && exit 3","start":"node x.js"}}"#,
    )]);
    let r = call(
        &client,
        "HOSTING_CREATE_SITE",
        json!({"name": "broken", "repo": s(broken.path()), "wait": true}),
    )
    .await;
    // A failed wait is a tool error for the agent, still carrying the deployment.
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["deployment"]["status"], "failed", "{out}");
    assert!(
        out["deployment"]["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{out}"
    );
    let lines = out["deployment"]["last_log_lines"].to_string();
    assert!(lines.contains("syntax error in app.js"), "{out}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn wrong_key_is_refused_over_mcp() {
    let server = TestServer::start().await;
    let config =
        StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header("berth_wrong".to_string());
    let transport = StreamableHttpClientTransport::from_config(config);
    assert!(
        ().serve(transport).await.is_err(),
        "a wrong key cannot open an MCP session"
    );
    let r = server.http.post(server.api("/mcp")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn stdio_transport_relays_to_the_server() {
    let server = TestServer::start().await;
    let site = app(&[("index.html", "over stdio")]);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("mcp").env("BERTH_URL", server.api("")).env("BERTH_TOKEN", KEY);
    let transport = TokioChildProcess::new(cmd).expect("spawn berth mcp");
    let client = ().serve(transport).await.expect("stdio MCP session");
    let tools = client.list_all_tools().await.expect("tools");
    assert_eq!(tools.len(), TOOLS.len());
    let r = call(
        &client,
        "HOSTING_CREATE_SITE",
        json!({"name": "stdio", "repo": s(site.path()), "wait": true}),
    )
    .await;
    assert_eq!(structured(&r)["deployment"]["status"], "live", "{:?}", r);
    assert_eq!(server.edge("stdio.localhost", "/").await.1, "over stdio");
    client.cancel().await.ok();
}

/// A client that records the progress notifications it receives.
#[derive(Clone, Default)]
struct ProgressRecorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl rmcp::ClientHandler for ProgressRecorder {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().push(params.message.unwrap_or_default());
    }
}

#[tokio::test]
async fn deploy_with_wait_sends_progress_notifications() {
    let server = TestServer::start().await;
    let site = app(&[(
        "package.json",
        r#"{"scripts":{"build":"sleep 1 && mkdir -p dist && echo ok > dist/index.html"}}"#,
    )]);
    let recorder = ProgressRecorder::default();
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(KEY.to_string());
    let client = recorder
        .clone()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("connect");
    let created = call(
        &client,
        "HOSTING_CREATE_SITE",
        json!({"name": "progress", "repo": s(site.path()), "deploy": false}),
    )
    .await;
    assert_eq!(created.is_error, Some(false), "{created:?}");

    let params = CallToolRequestParams::new("HOSTING_DEPLOY")
        .with_arguments(json!({"site": "progress", "wait": true}).as_object().cloned().unwrap());
    let handle = client
        .send_cancellable_request(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(params)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("send");
    let response = handle.await_response().await.expect("response");
    let rmcp::model::ServerResult::CallToolResult(result) = response else {
        panic!("unexpected {response:?}")
    };
    assert_eq!(structured(&result)["deployment"]["status"], "live", "{result:?}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let seen = recorder.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(|m| m.contains("building")),
        "progress while building: {seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.ends_with("is live")),
        "progress at the end: {seen:?}"
    );
    client.cancel().await.ok();
}

/// A client that records when each progress notification came, and its message.
#[derive(Clone, Default)]
struct TimedProgress(std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>);

impl rmcp::ClientHandler for TimedProgress {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let message = params.message.unwrap_or_default();
        self.0.lock().unwrap().push((std::time::Instant::now(), message));
    }
}

#[tokio::test]
async fn a_long_build_sends_its_log_lines_as_progress_at_least_every_two_seconds() {
    let server = TestServer::start().await;
    let site = app(&[(
        "package.json",
        r#"{"scripts":{"build":"for i in 1 2 3 4 5 6; do echo compiling part $i; sleep 1; done; mkdir -p dist && echo ok > dist/index.html"}}"#,
    )]);
    let recorder = TimedProgress::default();
    let config = StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")).auth_header(KEY.to_string());
    let client = recorder
        .clone()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("connect");
    let params = CallToolRequestParams::new("HOSTING_CREATE_SITE").with_arguments(
        json!({"name": "slow", "repo": s(site.path()), "wait": true})
            .as_object()
            .cloned()
            .unwrap(),
    );
    let handle = client
        .send_cancellable_request(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(params)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("send");
    let response = handle.await_response().await.expect("response");
    let rmcp::model::ServerResult::CallToolResult(result) = response else {
        panic!("unexpected {response:?}")
    };
    assert_eq!(structured(&result)["deployment"]["status"], "live", "{result:?}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let seen = recorder.0.lock().unwrap().clone();
    let building: Vec<&(std::time::Instant, String)> = seen.iter().filter(|(_, m)| m.contains("is building")).collect();
    let messages: Vec<&String> = seen.iter().map(|(_, m)| m).collect();
    assert!(
        building.iter().filter(|(_, m)| m.contains("compiling part")).count() >= 3,
        "the build's lines come as progress: {messages:?}"
    );
    for pair in building.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap <= std::time::Duration::from_secs(2),
            "{gap:?} without progress during the build: {messages:?}"
        );
    }
    assert!(
        building.last().unwrap().0 - building[0].0 >= std::time::Duration::from_secs(4),
        "progress throughout the build: {messages:?}"
    );
    client.cancel().await.ok();
}

#[tokio::test]
async fn provider_settings_over_mcp() {
    let server = TestServer::start().await;
    let client = http_client(&server, KEY).await;
    let r = call(&client, "HOSTING_GET_CONFIG", json!({})).await;
    let providers = structured(&r)["providers"].clone();
    assert!(
        providers.as_array().unwrap().iter().any(|p| p["provider"] == "local"),
        "{providers}"
    );
    let r = call(&client, "HOSTING_TEST_CONNECTION", json!({"provider": "local"})).await;
    assert_eq!(structured(&r)["ok"], true, "{:?}", r);
    // Unknown providers and keys are tool errors that say what exists; nothing is stored.
    let r = call(
        &client,
        "HOSTING_SET_CONFIG",
        json!({"provider": "nope", "config": {"a": 1}}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        format!("{:?}", r.content).contains("known providers: local"),
        "{:?}",
        r.content
    );
    let r = call(
        &client,
        "HOSTING_SET_CONFIG",
        json!({"provider": "local", "config": {"a": 1}}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        format!("{:?}", r.content).contains("takes no settings"),
        "{:?}",
        r.content
    );
    let r = call(&client, "HOSTING_GET_CONFIG", json!({"provider": "local"})).await;
    assert_eq!(structured(&r)["providers"][0]["configured"], false);
    client.cancel().await.ok();
}

#[tokio::test]
async fn the_readme_lists_exactly_the_tools_the_server_serves() {
    let server = TestServer::start().await;
    let client = http_client(&server, KEY).await;
    let mut served: Vec<String> = client
        .list_all_tools()
        .await
        .expect("list tools")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    served.sort();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("Tools: `HOSTING_").expect("the README's tool list");
    let end = start + readme[start..].find("Every tool has").expect("end of the list");
    let mut listed: Vec<String> = readme[start..end]
        .split('`')
        .filter(|w| w.starts_with("HOSTING_"))
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(listed, served, "README.md's tool list and the served tools differ");
    client.cancel().await.ok();
}
