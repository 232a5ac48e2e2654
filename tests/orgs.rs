//! A person in several orgs: the dashboard session switches between them (only into an
//! org they are a member of now, acting as their role there, with a new CSRF token), the
//! switch is refused alike for a foreign org and a made-up one, removal from the org a
//! session is in ends its access at once, and an owner makes a new org that they own.

mod common;

use common::*;
use serde_json::{Value, json};

/// The second org's admin key.
const B_KEY: &str = "berth_org_b_admin_key_0123456789";
/// A third org Ada is not in.
const C_KEY: &str = "berth_org_c_admin_key_0123456789";
const PASSWORD: &str = "correct horse battery";

/// A REST call with a bearer key: (status, JSON).
async fn as_key(server: &TestServer, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = server.api(path);
    let req = match method {
        "GET" => server.http.get(url),
        "POST" => server.http.post(url),
        "DELETE" => server.http.delete(url),
        other => panic!("method {other}"),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.bearer_auth(key).send().await.expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn quiet_site(server: &TestServer, key: &str, name: &str) {
    let dir = app(&[("index.html", name)]);
    let body = json!({ "name": name, "repo": s(dir.path()), "deploy": false });
    let (status, out) = as_key(server, key, "POST", "/api/sites", Some(body)).await;
    assert_eq!(status, 201, "{out}");
}

async fn add_member(server: &TestServer, key: &str, email: &str, role: &str, password: Option<&str>) {
    let mut body = json!({ "email": email, "role": role });
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let (status, out) = as_key(server, key, "POST", "/api/members", Some(body)).await;
    assert_eq!(status, 201, "{out}");
}

/// Org A (`default`, the bootstrap key's) with site `alpha`, org B (`bee`) with `beta`,
/// org C (`sea`) with `gamma`; Ada is owner of A and viewer of B, and not in C.
async fn three_orgs() -> TestServer {
    let server = TestServer::start().await;
    add_org(&server, "org_b", "bee", B_KEY).await;
    add_org(&server, "org_c", "sea", C_KEY).await;
    quiet_site(&server, KEY, "alpha").await;
    quiet_site(&server, B_KEY, "beta").await;
    quiet_site(&server, C_KEY, "gamma").await;
    add_member(&server, KEY, "ada@a.test", "owner", Some(PASSWORD)).await;
    add_member(&server, B_KEY, "ada@a.test", "viewer", None).await;
    server
}

/// A browser without redirects following, holding one session cookie.
struct Browser {
    http: reqwest::Client,
    cookie: String,
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + "name=\"_csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

impl Browser {
    /// Logs in by email and password (or by API key when `email` is empty).
    async fn login(server: &TestServer, email: &str, secret: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = http.get(server.api("/login")).send().await.unwrap();
        let login_cookie = page.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let csrf = csrf_of(&page.text().await.unwrap());
        let form = if email.is_empty() {
            vec![("_csrf", csrf.as_str()), ("key", secret)]
        } else {
            vec![("_csrf", csrf.as_str()), ("email", email), ("password", secret)]
        };
        let resp = http
            .post(server.api("/login"))
            .header("cookie", login_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(&form).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303, "login");
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("berth_session="))
            .expect("a session cookie")
            .split(';')
            .next()
            .unwrap()
            .to_string();
        Self { http, cookie }
    }

    /// A dashboard page: (status, body).
    async fn page(&self, server: &TestServer, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(server.api(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The CSRF token the pages carry now.
    async fn csrf(&self, server: &TestServer) -> String {
        let (status, html) = self.page(server, "/sites").await;
        assert_eq!(status, 200);
        csrf_of(&html)
    }

    /// Posts the header's switcher form: (status, location or body).
    async fn switch(&self, server: &TestServer, org: &str, csrf: &str) -> (u16, String) {
        let r = self
            .http
            .post(server.api("/orgs/switch"))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string([("_csrf", csrf), ("org", org)]).unwrap())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        (status, location.unwrap_or(r.text().await.unwrap()))
    }

    /// `/api` with the session cookie (and CSRF token for changes): (status, JSON).
    async fn api(
        &self,
        server: &TestServer,
        method: &str,
        path: &str,
        csrf: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let req = match method {
            "GET" => self.http.get(server.api(path)),
            "POST" => self.http.post(server.api(path)),
            "PATCH" => self.http.patch(server.api(path)),
            other => panic!("method {other}"),
        };
        let req = req.header("cookie", &self.cookie).header("x-csrf-token", csrf);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn whoami(&self, server: &TestServer) -> Value {
        let (status, me) = self.api(server, "GET", "/api/whoami", "", None).await;
        assert_eq!(status, 200, "{me}");
        me
    }
}

fn org_names(me: &Value) -> Vec<(String, String, bool)> {
    me["orgs"]
        .as_array()
        .expect("a person's orgs")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["role"].as_str().unwrap().to_string(),
                o["current"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_member_switches_orgs_and_acts_with_their_role_there() {
    let server = three_orgs().await;
    let ada = Browser::login(&server, "ada@a.test", PASSWORD).await;
    let me = ada.whoami(&server).await;
    assert_eq!(
        (me["org"].as_str(), me["role"].as_str()),
        (Some("default"), Some("owner"))
    );
    assert_eq!(
        org_names(&me),
        [
            ("bee".into(), "viewer".into(), false),
            ("default".into(), "owner".into(), true)
        ]
    );
    let (_, html) = ada.page(&server, "/sites").await;
    assert!(html.contains("id=\"org-switch\""), "the switcher shows for two orgs");
    assert!(html.contains("alpha") && !html.contains("beta"));
    let before = csrf_of(&html);

    // Without the CSRF token nothing moves.
    let (status, _) = ada.switch(&server, "org_b", "not-the-token").await;
    assert_eq!(status, 403);
    assert_eq!(ada.whoami(&server).await["org"], "default");

    let (status, location) = ada.switch(&server, "org_b", &before).await;
    assert_eq!((status, location.as_str()), (303, "/sites"));
    let (_, html) = ada.page(&server, "/sites").await;
    assert!(html.contains("beta") && !html.contains("alpha"), "B's sites, not A's");
    let after = csrf_of(&html);
    assert_ne!(after, before, "the CSRF token rotates on a switch");
    let me = ada.whoami(&server).await;
    assert_eq!((me["org"].as_str(), me["role"].as_str()), (Some("bee"), Some("viewer")));

    // Owner in A, viewer in B: she acts as a viewer now.
    let change = json!({ "drain_seconds": 5 });
    let (status, out) = ada
        .api(&server, "PATCH", "/api/sites/beta", &after, Some(change.clone()))
        .await;
    assert_eq!(status, 403, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("you are viewer"),
        "{out}"
    );
    let (status, out) = ada.api(&server, "GET", "/api/members", &after, None).await;
    assert_eq!(status, 403, "{out}");
    // A's site is another org's now: not found, not forbidden.
    let (status, _) = ada.api(&server, "GET", "/api/sites/alpha", &after, None).await;
    assert_eq!(status, 404);
    // The old token is dead.
    let (status, _) = ada
        .api(&server, "PATCH", "/api/sites/beta", &before, Some(change.clone()))
        .await;
    assert_eq!(status, 403);

    // The switch is in B's audit log, as Ada.
    let (_, log) = as_key(&server, B_KEY, "GET", "/api/audit", None).await;
    let text = log.to_string();
    assert!(text.contains("SWITCH_ORG"), "{log}");

    // Back to A: owner again.
    let me = ada.whoami(&server).await;
    let a_id = me["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "default")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ada.switch(&server, &a_id, &after).await.0, 303);
    let me = ada.whoami(&server).await;
    assert_eq!(
        (me["org"].as_str(), me["role"].as_str()),
        (Some("default"), Some("owner"))
    );
    let (_, me) = as_key(&server, KEY, "GET", "/api/whoami", None).await;
    assert_eq!(me["orgs"], Value::Null, "a service key has no orgs of a person: {me}");
}

#[tokio::test]
async fn switching_to_an_org_one_is_not_in_is_not_found_and_changes_nothing() {
    let server = three_orgs().await;
    let ada = Browser::login(&server, "ada@a.test", PASSWORD).await;
    let csrf = ada.csrf(&server).await;

    // An existing org she is not in, and a made-up one: the same answer.
    let (foreign_status, foreign) = ada.switch(&server, "org_c", &csrf).await;
    let (made_up_status, made_up) = ada.switch(&server, "org_zz", &csrf).await;
    assert_eq!((foreign_status, made_up_status), (404, 404));
    assert_eq!(foreign.replace("org_c", "ID"), made_up.replace("org_zz", "ID"));
    assert!(!foreign.contains("gamma"), "{foreign}");

    // The session is where it was, with the same token.
    let me = ada.whoami(&server).await;
    assert_eq!(
        (me["org"].as_str(), me["role"].as_str()),
        (Some("default"), Some("owner"))
    );
    assert_eq!(ada.csrf(&server).await, csrf);
    let (_, html) = ada.page(&server, "/sites").await;
    assert!(html.contains("alpha") && !html.contains("gamma"));

    // A session made with an API key belongs to the key's org and does not switch.
    let key_session = Browser::login(&server, "", KEY).await;
    let key_csrf = key_session.csrf(&server).await;
    let (status, _) = key_session.switch(&server, "org_b", &key_csrf).await;
    assert_eq!(status, 400);
    assert_eq!(key_session.whoami(&server).await["org"], "default");
}

#[tokio::test]
async fn removal_from_the_org_a_session_is_in_ends_its_access_at_the_next_request() {
    let server = three_orgs().await;
    let ada = Browser::login(&server, "ada@a.test", PASSWORD).await;
    let csrf = ada.csrf(&server).await;
    assert_eq!(ada.switch(&server, "org_b", &csrf).await.0, 303);
    let (status, html) = ada.page(&server, "/sites").await;
    assert!(status == 200 && html.contains("beta"));

    let (status, out) = as_key(&server, B_KEY, "DELETE", "/api/members/ada@a.test", None).await;
    assert_eq!(status, 200, "{out}");
    let (status, location) = ada.page(&server, "/sites/beta").await;
    assert_eq!(status, 303, "{location}");
    let (status, _) = ada.api(&server, "GET", "/api/sites/beta", "", None).await;
    assert_eq!(status, 401);
    // She is still a member of A, and a new login gets there.
    let again = Browser::login(&server, "ada@a.test", PASSWORD).await;
    let me = again.whoami(&server).await;
    assert_eq!(me["org"], "default");
    assert_eq!(org_names(&me).len(), 1);
}

#[tokio::test]
async fn an_owner_creates_an_org_they_own_and_others_cannot() {
    let server = three_orgs().await;
    add_member(&server, KEY, "dev@a.test", "developer", Some(PASSWORD)).await;
    let ada = Browser::login(&server, "ada@a.test", PASSWORD).await;
    let csrf = ada.csrf(&server).await;

    // Bad names and a taken one change nothing.
    for (name, status) in [("Ada Labs", 400), ("-x", 400), ("bee", 409)] {
        let (got, out) = ada
            .api(&server, "POST", "/api/orgs", &csrf, Some(json!({ "name": name })))
            .await;
        assert_eq!(got, status, "{name}: {out}");
    }
    let (status, out) = ada
        .api(&server, "POST", "/api/orgs", &csrf, Some(json!({ "name": "ada-labs" })))
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(
        (out["org"]["name"].as_str(), out["org"]["role"].as_str()),
        (Some("ada-labs"), Some("owner"))
    );
    let id = out["org"]["id"].as_str().unwrap().to_string();
    assert_eq!(org_names(&ada.whoami(&server).await).len(), 3);

    // She switches there: an empty org she owns.
    assert_eq!(ada.switch(&server, &id, &csrf).await.0, 303);
    let me = ada.whoami(&server).await;
    assert_eq!(
        (me["org"].as_str(), me["role"].as_str()),
        (Some("ada-labs"), Some("owner"))
    );
    let csrf = ada.csrf(&server).await;
    let (_, sites) = ada.api(&server, "GET", "/api/sites", &csrf, None).await;
    assert_eq!(sites["sites"], json!([]), "{sites}");

    // A developer may not; the bootstrap key is no person to own one.
    let dev = Browser::login(&server, "dev@a.test", PASSWORD).await;
    let dev_csrf = dev.csrf(&server).await;
    let (status, out) = dev
        .api(
            &server,
            "POST",
            "/api/orgs",
            &dev_csrf,
            Some(json!({ "name": "dev-org" })),
        )
        .await;
    assert_eq!(status, 403, "{out}");
    let (status, out) = as_key(&server, KEY, "POST", "/api/orgs", Some(json!({ "name": "key-org" }))).await;
    assert_eq!(status, 400, "{out}");
    for name in ["dev-org", "key-org"] {
        let (status, _) = ada
            .api(&server, "POST", "/api/orgs", &csrf, Some(json!({ "name": name })))
            .await;
        assert_eq!(status, 201, "{name} was not made before");
    }
}
