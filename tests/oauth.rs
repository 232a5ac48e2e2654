//! OAuth 2.1 for MCP clients, end to end against the real server: discovery from `/mcp`'s
//! 401, dynamic registration, the dashboard's consent form (a subset of sites, production
//! left out), the token exchange with PKCE, a `tools/list` filtered by the grant, calls
//! inside and outside it, refresh rotation with reuse detection, revocation; rmcp's own
//! client-side OAuth (`auth` feature) connecting the same way; a client metadata document
//! served over TLS; and the negative cases of every redirect and token rule.

mod common;

use common::oauth_flow::*;
use common::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolResult;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

fn error_of(r: &CallToolResult) -> Option<(String, String)> {
    if r.is_error != Some(true) {
        return None;
    }
    let v = r.structured_content.clone().unwrap_or_default();
    Some((
        v["error"]["code"].as_str().unwrap_or("?").to_string(),
        v["error"]["message"].as_str().unwrap_or("?").to_string(),
    ))
}

/// A server with a developer member and three sites that have not deployed.
async fn setup() -> (TestServer, String) {
    setup_with(&[]).await
}

/// [`setup`] with extra environment for the server.
async fn setup_with(env: &[(&str, &str)]) -> (TestServer, String) {
    let server = TestServer::start_with(env).await;
    let (status, out) = rest(
        &server,
        "POST",
        "/api/members",
        json!({ "email": "dev@a.test", "role": "developer", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    for name in ["alpha", "beta"] {
        let dir = app(&[("index.html", name)]);
        let (status, out) = rest(
            &server,
            "POST",
            "/api/sites",
            json!({ "name": name, "repo": dir.path().to_str().unwrap(), "deploy": false }),
        )
        .await;
        assert_eq!(status, 201, "{out}");
    }
    let cookie = login(&server, "dev@a.test").await;
    (server, cookie)
}

#[tokio::test]
async fn an_mcp_client_connects_by_oauth_narrowed_to_what_the_person_chose() {
    let (server, cookie) = setup().await;

    // Discovery from the 401, as an MCP client does it.
    let r = server
        .http
        .post(server.api("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("scope=\"sites:read"), "{challenge}");
    let prm_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("resource_metadata")
        .to_string();
    assert_eq!(prm_url, server.api("/.well-known/oauth-protected-resource/mcp"));
    let prm: Value = server.http.get(&prm_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(prm["resource"], server.api("/mcp"), "{prm}");
    let issuer = prm["authorization_servers"][0].as_str().unwrap().to_string();
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let meta: Value = server
            .http
            .get(format!("{issuer}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(meta["issuer"], issuer.as_str(), "{meta}");
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]), "{meta}");
        assert_eq!(meta["token_endpoint_auth_methods_supported"], json!(["none"]), "{meta}");
        assert_eq!(meta["client_id_metadata_document_supported"], true, "{meta}");
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true, "{meta}");
        assert_eq!(
            meta["registration_endpoint"],
            format!("{issuer}/oauth/register"),
            "{meta}"
        );
    }

    // Registration as clients send it: three redirect URIs, one a custom scheme.
    let (status, client) = register(
        &server,
        &[
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "http://127.0.0.1/callback",
            "https://agent.example/cb",
        ],
    )
    .await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().unwrap().to_string();

    // Authorize with a loopback redirect on a random port, omitting `resource`; consent
    // to the site alpha only, without production.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let query = authorize_query(&client_id, &redirect, &[]);
    // Signed out, the request leads to the login page and back.
    let r = no_redirects()
        .get(server.api(&format!("/oauth/authorize?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login?next=%2Foauth%2Fauthorize")
    );
    let params = consent(
        &server,
        &cookie,
        &query,
        &[
            ("sites", "some"),
            ("site", "alpha"),
            ("grant_scope", "sites:read"),
            ("grant_scope", "logs:read"),
            ("grant_scope", "deploy"),
        ],
    )
    .await;
    assert_eq!(param(&params, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&params, "iss").as_deref(), Some(issuer.as_str()));
    let code = param(&params, "code").expect("a code");

    let (status, tokens) = exchange(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // tools/list shows what the grant allows, nothing more.
    let agent = mcp(&server, &access).await;
    let tools: Vec<String> = agent
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for shown in [
        "HOSTING_GET_SITE",
        "HOSTING_DEPLOY",
        "HOSTING_GET_DEPLOYMENT_LOGS",
        "HOSTING_WHOAMI",
    ] {
        assert!(tools.contains(&shown.to_string()), "{shown} in {tools:?}");
    }
    for hidden in [
        "HOSTING_DELETE_SITE",
        "HOSTING_SET_ENV_VARS",
        "HOSTING_CREATE_API_KEY",
        "HOSTING_ADD_MEMBER",
        "HOSTING_SET_CONFIG",
    ] {
        assert!(!tools.contains(&hidden.to_string()), "{hidden} in {tools:?}");
    }
    // The granted site answers; the other is as unknown as a missing one.
    let r = call(&agent, "HOSTING_GET_SITE", json!({ "site": "alpha" })).await;
    assert_eq!(error_of(&r), None, "{r:?}");
    let r = call(&agent, "HOSTING_GET_SITE", json!({ "site": "beta" })).await;
    assert_eq!(error_of(&r).map(|e| e.0).as_deref(), Some("not_found"), "{r:?}");
    let r = call(&agent, "HOSTING_DEPLOY", json!({ "site": "beta" })).await;
    assert_eq!(error_of(&r).map(|e| e.0).as_deref(), Some("not_found"), "{r:?}");
    // Production was left out: deploying to it is refused, naming where to grant it.
    let r = call(&agent, "HOSTING_DEPLOY", json!({ "site": "alpha" })).await;
    let (code_name, message) = error_of(&r).expect("refused");
    assert_eq!(code_name, "forbidden", "{message}");
    assert!(
        message.contains("production") && message.contains("/oauth/authorize"),
        "{message}"
    );
    // A scope not granted: HTTP 403 insufficient_scope naming it, which rmcp's client
    // reports as such.
    let params = rmcp::model::CallToolRequestParams::new("HOSTING_SET_ENV_VARS").with_arguments(
        json!({ "site": "alpha", "environment": "preview", "vars": {"A": "1"} })
            .as_object()
            .cloned()
            .unwrap(),
    );
    let refused = format!("{:?}", agent.call_tool(params).await.expect_err("refused"));
    assert!(
        refused.contains("InsufficientScope") && refused.contains("env:write"),
        "{refused}"
    );
    agent.cancel().await.unwrap();

    // OAuth tokens are for /mcp only.
    let r = server
        .http
        .get(server.api("/api/whoami"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // API keys keep working on /mcp as before.
    assert_eq!(mcp_status(&server, KEY).await, 200);

    // Refresh rotates; the old refresh token replayed revokes the whole grant.
    let refresh_form = |token: &str| {
        vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), token.to_string()),
            ("client_id".to_string(), client_id.clone()),
        ]
    };
    let as_refs = |v: &Vec<(String, String)>| v.iter().map(|(a, b)| (a.clone(), b.clone())).collect::<Vec<_>>();
    let post = |form: Vec<(String, String)>| {
        let http = server.http.clone();
        let url = server.api("/oauth/token");
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(&form).unwrap())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, rotated) = post(as_refs(&refresh_form(&refresh))).await;
    assert_eq!(status, 200, "{rotated}");
    let new_access = rotated["access_token"].as_str().unwrap().to_string();
    assert_ne!(rotated["refresh_token"].as_str().unwrap(), refresh);
    assert_eq!(mcp_status(&server, &new_access).await, 200);
    let (status, replay) = post(as_refs(&refresh_form(&refresh))).await;
    assert_eq!(status, 400, "{replay}");
    assert_eq!(replay["error"], "invalid_grant");
    assert_eq!(
        mcp_status(&server, &new_access).await,
        401,
        "the grant was revoked by the replay"
    );
    let (status, _) = post(as_refs(&refresh_form(rotated["refresh_token"].as_str().unwrap()))).await;
    assert_eq!(status, 400, "the rotated refresh token went with its grant");

    // Revocation: only the client's own tokens; always 200.
    let params = consent(
        &server,
        &cookie,
        &query,
        &[("sites", "all"), ("grant_scope", "sites:read")],
    )
    .await;
    let code = param(&params, "code").unwrap();
    let (status, tokens) = exchange(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let revoke = |token: String, client: String| {
        let http = server.http.clone();
        let url = server.api("/oauth/revoke");
        async move {
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string([("token", token), ("client_id", client)]).unwrap())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        revoke(access.to_string(), "berth_client_someone_else".into()).await,
        200
    );
    assert_eq!(
        mcp_status(&server, access).await,
        200,
        "another client cannot revoke it"
    );
    assert_eq!(revoke(access.to_string(), client_id.clone()).await, 200);
    assert_eq!(mcp_status(&server, access).await, 401);
}

#[tokio::test]
async fn redirect_and_token_rules_refuse_what_they_must() {
    let (server, cookie) = setup().await;

    // Registration refuses every bad redirect URI.
    for bad in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "https://agent.example/cb#frag",
        "https://user:pw@agent.example/cb",
        "http://agent.example/cb",
        "file:///etc/passwd",
    ] {
        let (status, out) = register(&server, &[bad]).await;
        assert_eq!(status, 400, "{bad}: {out}");
        assert_eq!(out["error"], "invalid_redirect_uri", "{bad}: {out}");
    }
    let (status, out) = register(&server, &[]).await;
    assert_eq!(status, 400, "{out}");

    let (_, client) = register(&server, &["https://agent.example/cb", "http://127.0.0.1/cb"]).await;
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let http = no_redirects();
    let get = |query: String| {
        let (http, url, cookie) = (
            http.clone(),
            server.api(&format!("/oauth/authorize?{query}")),
            cookie.clone(),
        );
        async move { http.get(url).header("cookie", cookie).send().await.unwrap() }
    };

    // A redirect URI the client did not register: berth's own page, never a redirect.
    for other in [
        "https://evil.example/cb",
        "https://agent.example/cb/other",
        "http://127.0.0.1:99/elsewhere",
    ] {
        let r = get(authorize_query(&client_id, other, &[])).await;
        assert_eq!(r.status(), 400, "{other}");
        assert!(r.headers().get("location").is_none(), "{other}");
    }
    // An unknown client too.
    let r = get(authorize_query("berth_client_nobody", "https://agent.example/cb", &[])).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());

    // Once the redirect URI is trusted, errors go back to it.
    let redirect = "https://agent.example/cb";
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("resource", "https://other.example/mcp")], "invalid_target"),
        (vec![("scope", "root")], "invalid_scope"),
    ] {
        let r = get(authorize_query(&client_id, redirect, &extra)).await;
        assert_eq!(r.status(), 303, "{extra:?}");
        let (location, params) = location_params(&r);
        assert!(location.starts_with(redirect), "{location}");
        assert_eq!(param(&params, "error").as_deref(), Some(error), "{extra:?}");
        assert_eq!(param(&params, "state").as_deref(), Some("st-123"));
        assert!(param(&params, "code").is_none());
    }

    // The resource named explicitly (the /mcp URL) is accepted like the default.
    let resource = server.api("/mcp");
    let query = authorize_query(&client_id, redirect, &[("resource", &resource)]);
    let choices = [("sites", "all"), ("grant_scope", "sites:read")];
    let code = param(&consent(&server, &cookie, &query, &choices).await, "code").unwrap();
    let exchange_with = |code: String, verifier: &'static str, redirect: &'static str| {
        let client_id = client_id.clone();
        let server = &server;
        async move {
            exchange(
                server,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("client_id", &client_id),
                    ("code_verifier", verifier),
                ],
            )
            .await
        }
    };
    // A wrong verifier is refused (and spends the code).
    let wrong = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (status, out) = exchange_with(code.clone(), wrong, redirect).await;
    assert_eq!((status, out["error"].as_str()), (400, Some("invalid_grant")), "{out}");

    // A mismatched redirect_uri is refused.
    let code = param(&consent(&server, &cookie, &query, &choices).await, "code").unwrap();
    let (status, out) = exchange_with(code, VERIFIER, "http://127.0.0.1/cb").await;
    assert_eq!((status, out["error"].as_str()), (400, Some("invalid_grant")), "{out}");

    // Code reuse: the second exchange fails and revokes what the first one got.
    let code = param(&consent(&server, &cookie, &query, &choices).await, "code").unwrap();
    let (status, first) = exchange_with(code.clone(), VERIFIER, redirect).await;
    assert_eq!(status, 200, "{first}");
    let access = first["access_token"].as_str().unwrap().to_string();
    assert_eq!(mcp_status(&server, &access).await, 200);
    let (status, out) = exchange_with(code, VERIFIER, redirect).await;
    assert_eq!((status, out["error"].as_str()), (400, Some("invalid_grant")), "{out}");
    assert_eq!(mcp_status(&server, &access).await, 401, "code reuse revoked the grant");

    // An expired code (its 60 seconds moved into the past in the real database).
    let code = param(&consent(&server, &cookie, &query, &choices).await, "code").unwrap();
    let db = common::open_db(server.data.path()).await;
    sqlx::query("UPDATE oauth_codes SET expires_at = 0 WHERE used_at IS NULL")
        .execute(&db)
        .await
        .unwrap();
    let (status, out) = exchange_with(code, VERIFIER, redirect).await;
    assert_eq!((status, out["error"].as_str()), (400, Some("invalid_grant")), "{out}");
    assert!(out["error_description"].as_str().unwrap().contains("expired"), "{out}");

    // A code for the /mcp resource asked for another one at the token endpoint.
    let code = param(&consent(&server, &cookie, &query, &choices).await, "code").unwrap();
    let (status, out) = exchange(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
            ("resource", "https://other.example/mcp"),
        ],
    )
    .await;
    assert_eq!((status, out["error"].as_str()), (400, Some("invalid_target")), "{out}");

    // A metadata document on a loopback address is never fetched by default.
    let r = get(authorize_query("https://127.0.0.1:9/client.json", redirect, &[])).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("non-public address"), "{page}");
}

/// Documents by path, set once the server's port is known (they name their own URL).
type Docs = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, String)>>>;

/// A tiny HTTPS server on 127.0.0.1 answering every request with the document at its
/// path (404 for others): its port and the PEM of its self-signed certificate.
async fn metadata_server(docs: Docs) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, docs) = (acceptor.clone(), docs.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                while read < buf.len() {
                    let Ok(n) = tls.read(&mut buf[read..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read += n;
                    if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..read]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let found = docs
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.clone());
                let answer = match found {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
                };
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, pem)
}

#[tokio::test]
async fn a_client_id_metadata_document_is_fetched_verified_and_shown() {
    let docs_for = |port: u16| {
        let base = format!("https://127.0.0.1:{port}");
        vec![
            (
                "/client.json",
                json!({
                    "client_id": format!("{base}/client.json"),
                    "client_name": "Metadata Agent",
                    "redirect_uris": ["http://127.0.0.1/callback"],
                    "token_endpoint_auth_method": "none",
                })
                .to_string(),
            ),
            (
                "/liar.json",
                json!({ "client_id": format!("{base}/client.json"), "redirect_uris": ["http://127.0.0.1/callback"] })
                    .to_string(),
            ),
            (
                "/evil.json",
                json!({ "client_id": format!("{base}/evil.json"), "redirect_uris": ["javascript:alert(1)"] })
                    .to_string(),
            ),
        ]
    };
    let docs = Docs::default();
    let (port, pem) = metadata_server(docs.clone()).await;
    *docs.lock().unwrap() = docs_for(port);
    let roots = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(roots.path(), &pem).unwrap();
    let (server, cookie) = setup_with(&[
        ("BERTH_OAUTH_ALLOW_PRIVATE_METADATA_HOSTS", "127.0.0.1"),
        ("BERTH_OAUTH_METADATA_CA_ROOTS", roots.path().to_str().unwrap()),
    ])
    .await;
    let client_id = format!("https://127.0.0.1:{port}/client.json");
    let redirect = "http://127.0.0.1:40123/callback";
    let query = authorize_query(&client_id, redirect, &[]);
    let params = consent_as(
        &server,
        &cookie,
        &query,
        &[("sites", "all"), ("grant_scope", "sites:read")],
        "Metadata Agent",
        "metadata verified at",
    )
    .await;
    let code = param(&params, "code").expect("a code");
    let (status, tokens) = exchange(
        &server,
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
    let agent = mcp(&server, tokens["access_token"].as_str().unwrap()).await;
    let tools: Vec<String> = agent
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(tools.contains(&"HOSTING_LIST_SITES".to_string()), "{tools:?}");
    assert!(
        !tools.contains(&"HOSTING_DEPLOY".to_string()),
        "a read-only grant: {tools:?}"
    );
    let r = call(&agent, "HOSTING_GET_SITE", json!({ "site": "beta" })).await;
    assert_eq!(error_of(&r), None, "{r:?}");
    agent.cancel().await.unwrap();

    // A document naming another client_id, or a forbidden redirect URI, is refused on
    // berth's page.
    let http = no_redirects();
    for doc in ["liar.json", "evil.json"] {
        let id = format!("https://127.0.0.1:{port}/{doc}");
        let r = http
            .get(server.api(&format!("/oauth/authorize?{}", authorize_query(&id, redirect, &[]))))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{doc}");
        assert!(r.headers().get("location").is_none(), "{doc}");
    }
}

#[tokio::test]
async fn rmcp_client_side_auth_discovers_registers_and_connects() {
    use rmcp::transport::auth::{AuthClient, AuthorizationRequest, OAuthState};
    let (server, cookie) = setup().await;
    // rmcp's own OAuth client: discovery from the 401, dynamic registration, PKCE.
    let mut oauth = OAuthState::new(server.api("/mcp"), None)
        .await
        .expect("an OAuth client");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    oauth
        .start_authorization(AuthorizationRequest::new(redirect.clone()).with_client_name("rmcp agent"))
        .await
        .expect("discovery and registration");
    let url = oauth.get_authorization_url().await.expect("an authorization URL");
    let (endpoint, query) = url.split_once('?').expect("a query");
    assert_eq!(endpoint, server.api("/oauth/authorize"));
    // The person consents in the browser (every site, read-only).
    let params = consent_as(
        &server,
        &cookie,
        query,
        &[
            ("sites", "all"),
            ("grant_scope", "sites:read"),
            ("grant_scope", "logs:read"),
        ],
        "rmcp agent",
        "unverified (registered dynamically)",
    )
    .await;
    let callback = format!("{redirect}?{}", serde_urlencoded::to_string(&params).unwrap());
    // Exchanges the code (checking `state` and `iss`) and completes the authorization.
    oauth
        .handle_callback_url(&callback)
        .await
        .expect("code exchange with iss check");
    let manager = oauth.into_authorization_manager().expect("authorized");
    let transport = StreamableHttpClientTransport::with_client(
        AuthClient::new(reqwest::Client::default(), manager),
        StreamableHttpClientTransportConfig::with_uri(server.api("/mcp")),
    );
    let agent = ().serve(transport).await.expect("MCP over OAuth");
    let tools: Vec<String> = agent
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(tools.contains(&"HOSTING_LIST_SITES".to_string()), "{tools:?}");
    assert!(!tools.contains(&"HOSTING_DEPLOY".to_string()), "read-only: {tools:?}");
    let r = call(&agent, "HOSTING_GET_SITE", json!({ "site": "beta" })).await;
    assert_eq!(error_of(&r), None, "{r:?}");
    agent.cancel().await.unwrap();
}

#[tokio::test]
async fn a_tool_call_beyond_the_grants_scopes_is_http_403_insufficient_scope() {
    let server = TestServer::start().await;
    let (status, out) = rest(
        &server,
        "POST",
        "/api/members",
        json!({ "email": "dev@a.test", "role": "developer", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let cookie = login(&server, "dev@a.test").await;
    // The grant has sites:read and logs:read; the developer's role could create sites.
    let (_, access, _) = connect(&server, &cookie).await;
    let agent = mcp(&server, &access).await;
    let r = call(&agent, "HOSTING_LIST_SITES", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");

    let init = server
        .http
        .post(server.api("/mcp"))
        .bearer_auth(&access)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let resp = server
        .http
        .post(server.api("/mcp"))
        .bearer_auth(&access)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "HOSTING_CREATE_SITE", "arguments": {"name": "made"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(
        challenge.contains("scope=\"sites:read logs:read deploy\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("/.well-known/oauth-protected-resource/mcp"),
        "{challenge}"
    );
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'deploy'") && message.contains("/oauth/authorize"),
        "{body}"
    );
    let (_, sites) = rest(&server, "GET", "/api/sites", Value::Null).await;
    assert_eq!(sites["sites"], json!([]), "{sites}");

    // A call the grant's scopes allow still goes through.
    let r = call(&agent, "HOSTING_LIST_SITES", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    agent.cancel().await.unwrap();
}
