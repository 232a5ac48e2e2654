//! Registry credentials: berth's docker engine pushes with them (the engine API's
//! `X-Registry-Auth` header, never a command line), and each org's namespace holds them
//! as a `kubernetes.io/dockerconfigjson` Secret named in the namespace's app
//! ServiceAccount's `imagePullSecrets`, so every pod berth runs there pulls with them.

use base64::Engine as _;
use serde_json::{Value, json};

use super::text;
use crate::runtime::target::Settings;

/// The name of the pull Secret in each org's namespace.
pub const PULL_SECRET: &str = "berth-registry";

/// The username and password of the registry images are pushed to and pulled from.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry's `host[:port]` (what the credentials are for).
    pub server: String,
    /// The username.
    pub username: String,
    password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RegistryAuth {
    /// The settings' `registry_username` and `registry_password` for `registry`
    /// (`host:port[/path]`): both or neither.
    pub fn parse(settings: &Settings, registry: &str) -> Result<Option<Self>, String> {
        let username = text(settings, "registry_username")?;
        let password = settings.get("registry_password").and_then(Value::as_str);
        let password = password.filter(|p| !p.is_empty());
        if !matches!(
            settings.get("registry_password"),
            None | Some(Value::Null | Value::String(_))
        ) {
            return Err("kubernetes setting 'registry_password' must be a string".into());
        }
        match (username, password) {
            (None, None) => Ok(None),
            (Some(username), Some(password)) => {
                if username.contains(':') || username.chars().any(char::is_control) {
                    return Err(
                        "kubernetes setting 'registry_username' must not contain ':' or control characters".into(),
                    );
                }
                if password.chars().any(char::is_control) {
                    return Err("kubernetes setting 'registry_password' must not contain control characters".into());
                }
                Ok(Some(Self {
                    server: registry.split('/').next().unwrap_or(registry).to_string(),
                    username: username.to_string(),
                    password: password.to_string(),
                }))
            }
            (Some(_), None) => Err(
                "kubernetes setting 'registry_username' needs 'registry_password' too (or set both to null for a registry without authentication)".into(),
            ),
            (None, Some(_)) => Err(
                "kubernetes setting 'registry_password' needs 'registry_username' too (or set both to null for a registry without authentication)".into(),
            ),
        }
    }

    /// What the engine API's `X-Registry-Auth` header carries.
    pub fn docker_credentials(&self) -> bollard::auth::DockerCredentials {
        bollard::auth::DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.server.clone()),
            ..Default::default()
        }
    }

    /// `text` with the password cut out (an engine's message never should hold it, and
    /// now cannot).
    pub fn scrub(&self, text: &str) -> String {
        text.replace(&self.password, "<registry_password>")
    }

    /// The `.dockerconfigjson` of the pull Secret.
    pub(super) fn docker_config(&self) -> String {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.username, self.password));
        json!({ "auths": { &self.server: {
            "username": self.username, "password": self.password, "auth": auth,
        }}})
        .to_string()
    }
}

/// Adds the pull Secret to an org's namespace objects (labelled as its ServiceAccount,
/// applied just before it) and names it in that ServiceAccount's `imagePullSecrets`;
/// without credentials the objects stay as they are.
pub fn add_pull_secret(org_objects: &mut Vec<Value>, auth: Option<&RegistryAuth>) {
    let Some(auth) = auth else {
        return;
    };
    let Some(at) = org_objects.iter().position(|o| o["kind"] == "ServiceAccount") else {
        return;
    };
    let mut metadata = org_objects[at]["metadata"].clone();
    metadata["name"] = json!(PULL_SECRET);
    let data = base64::engine::general_purpose::STANDARD.encode(auth.docker_config());
    org_objects[at]["imagePullSecrets"] = json!([{ "name": PULL_SECRET }]);
    org_objects.insert(
        at,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "kubernetes.io/dockerconfigjson",
            "data": { ".dockerconfigjson": data },
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, Value)]) -> Settings {
        pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect()
    }

    #[test]
    fn both_or_neither_and_the_password_never_printed() {
        let none = RegistryAuth::parse(&settings(&[]), "r.example:5000/x").unwrap();
        assert!(none.is_none());
        let err = RegistryAuth::parse(&settings(&[("registry_username", json!("u"))]), "r:1").unwrap_err();
        assert!(err.contains("registry_password"), "{err}");
        let auth = RegistryAuth::parse(
            &settings(&[
                ("registry_username", json!("u")),
                ("registry_password", json!("pw-9f8e")),
            ]),
            "r.example:5000/team",
        )
        .unwrap()
        .unwrap();
        assert_eq!(auth.server, "r.example:5000");
        assert!(!format!("{auth:?}").contains("pw-9f8e"));
        assert_eq!(auth.scrub("bad pw-9f8e"), "bad <registry_password>");
    }

    #[test]
    fn the_pull_secret_is_named_by_the_service_account() {
        let mut objects = vec![
            json!({"kind": "Namespace"}),
            json!({"kind": "ServiceAccount",
            "metadata": {"name": "berth-app", "namespace": "berth-o", "labels": {"app.kubernetes.io/managed-by": "berth"}}}),
        ];
        let auth = RegistryAuth {
            server: "r:5000".into(),
            username: "u".into(),
            password: "p".into(),
        };
        add_pull_secret(&mut objects, Some(&auth));
        assert_eq!(objects[1]["kind"], "Secret");
        assert_eq!(objects[1]["metadata"]["namespace"], "berth-o");
        assert_eq!(
            objects[1]["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "berth"
        );
        assert_eq!(objects[2]["imagePullSecrets"][0]["name"], PULL_SECRET);
        let data = objects[1]["data"][".dockerconfigjson"].as_str().unwrap();
        let config: Value =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap();
        assert_eq!(config["auths"]["r:5000"]["auth"], "dTpw");
    }
}
