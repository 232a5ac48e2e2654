//! Where the API server is and how berth authenticates to it, from one of three sources
//! in an org's settings (exactly one): `api_url` + `token` (+ `ca_certificate`); a
//! `kubeconfig` (its current context, or `kubeconfig_context`, with the cluster's
//! `server` and `certificate-authority-data` and the user's `token` or
//! `client-certificate-data` + `client-key-data`); or `in_cluster: true`, the pod's own
//! service account (`KUBERNETES_SERVICE_HOST`/`_PORT`, and the token and CA in
//! [`SERVICE_ACCOUNT_DIR`], which the environment variable [`SERVICE_ACCOUNT_DIR_ENV`]
//! overrides, for tests). Anything berth cannot use by itself (credential plugins, auth
//! providers, file paths) is refused naming what to use instead.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::text;
use crate::runtime::target::Settings;

/// Where a pod's service account token and CA are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`] (for tests).
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "BERTH_KUBERNETES_SERVICE_ACCOUNT_DIR";
/// Most bytes of a kubeconfig.
const MAX_KUBECONFIG_BYTES: usize = 256 * 1024;

/// How berth proves who it is to the API server.
#[derive(Clone)]
pub enum Credential {
    /// A bearer token.
    Token(String),
    /// A bearer token read from this file at each request (a projected service account
    /// token rotates).
    TokenFile(PathBuf),
    /// A client certificate and its key (PEM, both in one text).
    ClientCertificate(String),
}

/// Where the API server is and how to talk to it.
#[derive(Clone)]
pub struct Connection {
    /// The API server's URL.
    pub api_url: String,
    /// The credential.
    pub credential: Credential,
    /// The CA certificate (PEM) of the API server, if not one of the usual roots.
    pub ca_certificate: Option<String>,
}

/// Reads the connection from an org's settings; the message names the key and the fix.
pub fn parse(settings: &Settings, is_pem_certificate: fn(&str) -> bool) -> Result<Connection, String> {
    let in_cluster = match settings.get("in_cluster") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "kubernetes setting 'in_cluster' must be true or false, not {v}"
            ));
        }
    };
    let kubeconfig = text(settings, "kubeconfig")?;
    let direct: Vec<&str> = ["api_url", "token", "ca_certificate"]
        .into_iter()
        .filter(|k| text(settings, k).ok().flatten().is_some())
        .collect();
    let connection = match (in_cluster, kubeconfig) {
        (true, Some(_)) => {
            return Err(
                "kubernetes settings 'in_cluster' and 'kubeconfig' are alternatives: set one, and the other to null"
                    .into(),
            );
        }
        (true, None) | (false, Some(_)) if !direct.is_empty() => {
            let chosen = if in_cluster { "in_cluster" } else { "kubeconfig" };
            return Err(format!(
                "kubernetes setting '{chosen}' is an alternative to {}: set those to null, or '{chosen}' to null",
                direct.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
            ));
        }
        (true, None) => in_cluster_connection()?,
        (false, Some(kubeconfig)) => from_kubeconfig(kubeconfig, text(settings, "kubeconfig_context")?)?,
        (false, None) => {
            let api_url = text(settings, "api_url")?.ok_or(
                "kubernetes setting 'api_url' is required, e.g. https://10.0.0.1:6443 (or give 'kubeconfig', or 'in_cluster': true when berth runs in the cluster)",
            )?;
            let token = text(settings, "token")?
                .ok_or("kubernetes setting 'token' is required, e.g. the service account's bearer token")?;
            Connection {
                api_url: api_url.to_string(),
                credential: Credential::Token(token.to_string()),
                ca_certificate: text(settings, "ca_certificate")?.map(str::to_string),
            }
        }
    };
    if text(settings, "kubeconfig_context")?.is_some() && kubeconfig.is_none() {
        return Err("kubernetes setting 'kubeconfig_context' needs 'kubeconfig'".into());
    }
    check(&connection, is_pem_certificate)?;
    Ok(connection)
}

/// Checks the URL, the token's form and the CA certificate.
fn check(connection: &Connection, is_pem_certificate: fn(&str) -> bool) -> Result<(), String> {
    let api_url = &connection.api_url;
    let parsed = reqwest::Url::parse(api_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.username().is_empty());
    if parsed.is_none() {
        return Err(format!(
            "kubernetes setting 'api_url' must be an http(s) URL such as https://10.0.0.1:6443, got '{api_url}'"
        ));
    }
    if let Credential::Token(token) = &connection.credential
        && token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("kubernetes setting 'token' must be a bearer token without spaces".into());
    }
    if let Some(pem) = &connection.ca_certificate
        && !is_pem_certificate(pem)
    {
        return Err(
            "kubernetes setting 'ca_certificate' (or the kubeconfig's certificate-authority-data, or the service account's ca.crt) must be a PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        );
    }
    if let Credential::ClientCertificate(pem) = &connection.credential
        && reqwest::Identity::from_pem(pem.as_bytes()).is_err()
    {
        return Err("the kubeconfig's client-certificate-data and client-key-data must be a PEM certificate and its PEM private key".into());
    }
    Ok(())
}

/// The pod's own service account.
fn in_cluster_connection() -> Result<Connection, String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty());
    let port = std::env::var("KUBERNETES_SERVICE_PORT")
        .ok()
        .filter(|p| !p.trim().is_empty());
    let (Some(host), Some(port)) = (host, port) else {
        return Err("kubernetes setting 'in_cluster' is true, but KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: berth is not running in a Kubernetes pod; give 'kubeconfig' or 'api_url' and 'token' instead".into());
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let dir =
        std::env::var_os(SERVICE_ACCOUNT_DIR_ENV).map_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR), PathBuf::from);
    let token = dir.join("token");
    if !token.is_file() {
        return Err(format!(
            "kubernetes setting 'in_cluster' is true, but there is no service account token at {}: run berth's pod with a service account token mounted (automountServiceAccountToken), or give 'kubeconfig' or 'api_url' and 'token' instead",
            token.display()
        ));
    }
    let ca = read_bounded(&dir.join("ca.crt"))?;
    Ok(Connection {
        api_url: format!("https://{host}:{}", port.trim()),
        credential: Credential::TokenFile(token),
        ca_certificate: Some(ca),
    })
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > MAX_KUBECONFIG_BYTES {
        return Err(format!(
            "{} is larger than {MAX_KUBECONFIG_BYTES} bytes",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// The YAML document as JSON (a kubeconfig is plain maps, lists and scalars).
fn to_json(yaml: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), to_json(v))))
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// The entry of `list` (`clusters`, `users`, `contexts`) named `name`, its inner object.
fn named<'a>(config: &'a Value, list: &str, inner: &str, name: &str) -> Result<&'a Value, String> {
    config[list]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .map(|i| &i[inner])
        .filter(|v| v.is_object())
        .ok_or_else(|| format!("kubernetes setting 'kubeconfig' has no entry '{name}' in {list}"))
}

/// Base64 data of the kubeconfig as text.
fn decoded(value: &Value, key: &str) -> Result<Option<String>, String> {
    let Some(data) = value[key].as_str() else {
        return Ok(None);
    };
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| format!("the kubeconfig's {key} must be base64 of PEM text"))
}

/// The connection a kubeconfig's context describes.
fn from_kubeconfig(text: &str, context: Option<&str>) -> Result<Connection, String> {
    if text.len() > MAX_KUBECONFIG_BYTES {
        return Err(format!(
            "kubernetes setting 'kubeconfig' is larger than {MAX_KUBECONFIG_BYTES} bytes"
        ));
    }
    let docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| format!("kubernetes setting 'kubeconfig' is not YAML: {e}"))?;
    let config = docs.first().map(to_json).unwrap_or(Value::Null);
    if config["kind"] != "Config" && config["clusters"].is_null() {
        return Err("kubernetes setting 'kubeconfig' must be a kubeconfig (kind: Config, with clusters, users and contexts), as `kubectl config view --minify --flatten` prints it".into());
    }
    let context_name = match context {
        Some(name) => name.to_string(),
        None => config["current-context"]
            .as_str()
            .filter(|c| !c.is_empty())
            .ok_or("kubernetes setting 'kubeconfig' has no current-context: set 'kubeconfig_context' to one of its contexts")?
            .to_string(),
    };
    let chosen = named(&config, "contexts", "context", &context_name)?;
    let cluster_name = chosen["cluster"].as_str().unwrap_or_default();
    let user_name = chosen["user"].as_str().unwrap_or_default();
    let cluster = named(&config, "clusters", "cluster", cluster_name)?;
    let user = named(&config, "users", "user", user_name)?;
    let flatten = "use `kubectl config view --minify --flatten` to put the data itself in the kubeconfig";
    if cluster["insecure-skip-tls-verify"] == true {
        return Err(format!(
            "the kubeconfig's cluster '{cluster_name}' skips TLS verification, which berth does not do: give its certificate-authority-data instead"
        ));
    }
    if cluster.get("certificate-authority").is_some() {
        return Err(format!(
            "the kubeconfig's cluster '{cluster_name}' names a certificate-authority file, which berth does not read: give certificate-authority-data instead ({flatten})"
        ));
    }
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| format!("the kubeconfig's cluster '{cluster_name}' has no server"))?;
    for (key, instead) in [("exec", "a credential plugin"), ("auth-provider", "an auth provider")] {
        if user.get(key).is_some() {
            return Err(format!(
                "the kubeconfig's user '{user_name}' authenticates with {instead} ({key}), which berth does not run: give a service account's token (user.token) or client-certificate-data and client-key-data instead"
            ));
        }
    }
    for (key, instead) in [
        ("tokenFile", "token"),
        ("client-certificate", "client-certificate-data"),
        ("client-key", "client-key-data"),
    ] {
        if user.get(key).is_some() {
            return Err(format!(
                "the kubeconfig's user '{user_name}' names a {key} file, which berth does not read: give {instead} instead ({flatten})"
            ));
        }
    }
    if user.get("username").is_some() || user.get("password").is_some() {
        return Err(format!(
            "the kubeconfig's user '{user_name}' uses a username and password, which berth does not: give a service account's token (user.token) or client-certificate-data and client-key-data instead"
        ));
    }
    let certificate = decoded(user, "client-certificate-data")?;
    let key = decoded(user, "client-key-data")?;
    let credential = match (user["token"].as_str(), certificate, key) {
        (Some(token), None, None) => Credential::Token(token.trim().to_string()),
        (None, Some(certificate), Some(key)) => Credential::ClientCertificate(format!("{certificate}\n{key}")),
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(format!(
                "the kubeconfig's user '{user_name}' has both a token and a client certificate: keep one"
            ));
        }
        (None, Some(_), None) | (None, None, Some(_)) => {
            return Err(format!(
                "the kubeconfig's user '{user_name}' needs both client-certificate-data and client-key-data"
            ));
        }
        (None, None, None) => {
            return Err(format!(
                "the kubeconfig's user '{user_name}' has no credential berth can use: give a service account's token (user.token) or client-certificate-data and client-key-data"
            ));
        }
    };
    Ok(Connection {
        api_url: server.to_string(),
        credential,
        ca_certificate: decoded(cluster, "certificate-authority-data")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n{user}\n"
        )
    }

    fn settings(pairs: &[(&str, Value)]) -> Settings {
        pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect()
    }

    fn any_pem(_: &str) -> bool {
        true
    }

    #[test]
    fn a_kubeconfig_token_is_read_from_the_current_context() {
        let s = settings(&[("kubeconfig", Value::String(kubeconfig("    token: abc123")))]);
        let c = parse(&s, any_pem).unwrap();
        assert_eq!(c.api_url, "https://10.0.0.1:6443");
        assert!(matches!(c.credential, Credential::Token(t) if t == "abc123"));
    }

    #[test]
    fn plugins_files_and_two_sources_are_refused_naming_the_fix() {
        for (user, says) in [
            ("    exec:\n      command: aws", "credential plugin"),
            ("    auth-provider:\n      name: gcp", "auth provider"),
            (
                "    client-certificate: /home/me/c.crt\n    client-key: /home/me/c.key",
                "client-certificate-data",
            ),
            ("    tokenFile: /t", "give token"),
        ] {
            let s = settings(&[("kubeconfig", Value::String(kubeconfig(user)))]);
            let err = parse(&s, any_pem).err().unwrap();
            assert!(err.contains(says), "{err}");
        }
        let s = settings(&[
            ("kubeconfig", Value::String(kubeconfig("    token: abc"))),
            ("api_url", Value::String("https://x:1".into())),
        ]);
        let err = parse(&s, any_pem).err().unwrap();
        assert!(err.contains("alternative") && err.contains("'api_url'"), "{err}");
        let s = settings(&[
            ("kubeconfig", Value::String(kubeconfig("    token: abc"))),
            ("kubeconfig_context", Value::String("other".into())),
        ]);
        let err = parse(&s, any_pem).err().unwrap();
        assert!(err.contains("no entry 'other' in contexts"), "{err}");
    }
}
