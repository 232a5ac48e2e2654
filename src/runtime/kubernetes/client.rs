//! A small Kubernetes API client over HTTP JSON: discovery, server-side apply (field
//! manager `berth`), GET, LIST by label selector, DELETE with foreground propagation and
//! pod logs. Every request has a timeout and every answer a size bound; the bearer token
//! travels only in the `Authorization` header and never appears in an error.

use std::time::Duration;

use serde_json::Value;

use super::connection::{Connection, Credential};

/// Most bytes of a token file.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Most bytes of one API answer berth reads (a LIST of a namespace's pods fits easily).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one followed log stream stays open before it is opened again.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(600);

/// Why an API call failed. Messages name the server and the next step, never the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// Nothing answered, or the TLS handshake failed.
    #[error("the Kubernetes API at {url} is not answering ({reason}); check api_url and ca_certificate")]
    Unreachable {
        /// The API server's URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("the Kubernetes API refused {what} ({status}): {message}")]
    Refused {
        /// What was asked (method and path).
        what: String,
        /// HTTP status.
        status: u16,
        /// The server's message (its `Status` object's `message`).
        message: String,
    },
    /// The answer was not what the API documents (or too large).
    #[error("the Kubernetes API answered {what} with something berth cannot read: {reason}")]
    Unreadable {
        /// What was asked.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

impl ApiError {
    /// Whether the server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Refused { status: 404, .. })
    }
}

/// A connection to one API server, as an org's settings describe it.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    credential: Credential,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `api_url`, authenticating with the bearer `token`, trusting
    /// `ca_certificate` (PEM) in addition to the usual roots when given.
    pub fn new(api_url: &str, token: &str, ca_certificate: Option<&str>) -> Result<Self, String> {
        Self::connect(&Connection {
            api_url: api_url.to_string(),
            credential: Credential::Token(token.to_string()),
            ca_certificate: ca_certificate.map(str::to_string),
        })
    }

    /// A client of the API server `connection` describes: a bearer token (from a file,
    /// read at each request, when it rotates) or a client certificate (TLS).
    pub fn connect(connection: &Connection) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &connection.ca_certificate {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|_| "ca_certificate must be a PEM certificate (-----BEGIN CERTIFICATE-----)".to_string())?;
            builder = builder.tls_certs_merge([cert]);
        }
        if let Credential::ClientCertificate(pem) = &connection.credential {
            let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|_| {
                "the client certificate and key must be PEM (client-certificate-data, client-key-data)".to_string()
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| format!("could not set up the API client: {e}"))?;
        Ok(Self {
            http,
            base: connection.api_url.trim_end_matches('/').to_string(),
            credential: connection.credential.clone(),
        })
    }

    /// `request` with berth's credential: the bearer token (a token file is read now,
    /// so a rotated token is used from its next request on); a client certificate is
    /// presented by TLS instead.
    async fn authorized(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, ApiError> {
        match &self.credential {
            Credential::Token(token) => Ok(request.bearer_auth(token)),
            Credential::ClientCertificate(_) => Ok(request),
            Credential::TokenFile(path) => {
                let unreadable = |reason: String| ApiError::Unreachable {
                    url: self.base.clone(),
                    reason: format!(
                        "the service account token at {} cannot be read: {reason}",
                        path.display()
                    ),
                };
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| unreadable(e.to_string()))?;
                let mut text = String::new();
                tokio::io::AsyncReadExt::read_to_string(
                    &mut tokio::io::AsyncReadExt::take(file, MAX_TOKEN_BYTES),
                    &mut text,
                )
                .await
                .map_err(|e| unreadable(e.to_string()))?;
                let token = text.trim();
                if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(unreadable("it is empty or not one bearer token".into()));
                }
                Ok(request.bearer_auth(token))
            }
        }
    }

    /// Sends one request and reads its JSON answer, bounded.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, ApiError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut request = self
            .authorized(self.http.request(method, format!("{}{path}", self.base)))
            .await?
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some((content_type, bytes)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
        }
        let unreachable = |e: reqwest::Error| ApiError::Unreachable {
            url: self.base.clone(),
            reason: e.without_url().to_string(),
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ApiError::Unreadable {
                    what,
                    reason: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(ApiError::Refused {
                what,
                status: status.as_u16(),
                message,
            });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Unreadable {
            what,
            reason: e.to_string(),
        })
    }

    /// `GET /version`: the server's version (`gitVersion`).
    pub async fn version(&self) -> Result<String, ApiError> {
        let v = self.call(reqwest::Method::GET, "/version", None).await?;
        v["gitVersion"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::Unreadable {
                what: "GET /version".into(),
                reason: "no gitVersion".into(),
            })
    }

    /// `GET /apis`: the API groups the server offers.
    pub async fn api_groups(&self) -> Result<Vec<String>, ApiError> {
        let v = self.call(reqwest::Method::GET, "/apis", None).await?;
        Ok(v["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(|g| g["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET /apis`: every `group/version` the server offers (`serving.knative.dev/v1`, …).
    pub async fn api_group_versions(&self) -> Result<Vec<String>, ApiError> {
        let v = self.call(reqwest::Method::GET, "/apis", None).await?;
        Ok(v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["versions"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v["groupVersion"].as_str().map(str::to_string))
            .collect())
    }

    /// A JSON merge patch of the object at `path` (`application/merge-patch+json`).
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(patch).expect("a JSON value serialises");
        self.call(
            reqwest::Method::PATCH,
            &format!("{path}?fieldManager=berth"),
            Some(("application/merge-patch+json", body)),
        )
        .await
    }

    /// Server-side apply of `object` with field manager `berth` (taking over fields
    /// another manager set); returns the object as stored.
    pub async fn apply(&self, object: &Value) -> Result<Value, ApiError> {
        self.server_side_apply(object, "").await
    }

    /// Server-side dry run of applying `object` (`dryRun=All`): the object as the server
    /// would store it; nothing is stored.
    pub async fn apply_dry_run(&self, object: &Value) -> Result<Value, ApiError> {
        self.server_side_apply(object, "&dryRun=All").await
    }

    async fn server_side_apply(&self, object: &Value, query: &str) -> Result<Value, ApiError> {
        let path = object_path(object).ok_or_else(|| ApiError::Unreadable {
            what: "apply".into(),
            reason: format!("berth does not know where {} objects live", object["kind"]),
        })?;
        let body = serde_json::to_vec(object).expect("a JSON value serialises");
        self.call(
            reqwest::Method::PATCH,
            &format!("{path}?fieldManager=berth&force=true{query}"),
            Some(("application/apply-patch+yaml", body)),
        )
        .await
    }

    /// GET of the object at `path`; `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, ApiError> {
        match self.call(reqwest::Method::GET, path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// LIST of the collection at `path` whose objects match `selector` (a label or field
    /// selector query, e.g. `labelSelector=a%3Db`).
    pub async fn list(&self, path: &str, selector: &str) -> Result<Vec<Value>, ApiError> {
        let v = self
            .call(reqwest::Method::GET, &format!("{path}?{selector}&limit=500"), None)
            .await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// DELETE of the object at `path`, its dependents first (foreground propagation).
    /// One already gone is fine.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground",
        }))
        .expect("a JSON value serialises");
        match self
            .call(
                reqwest::Method::DELETE,
                &format!("{path}?propagationPolicy=Foreground"),
                Some(("application/json", body)),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets the replicas of the Deployment at `path` through its `scale` subresource (a
    /// merge patch of `spec.replicas` only, as `kubectl scale` does).
    pub async fn scale(&self, path: &str, replicas: u32) -> Result<(), ApiError> {
        let body = serde_json::to_vec(&serde_json::json!({ "spec": { "replicas": replicas } }))
            .expect("a JSON value serialises");
        self.call(
            reqwest::Method::PATCH,
            &format!("{path}/scale?fieldManager=berth"),
            Some(("application/merge-patch+json", body)),
        )
        .await
        .map(drop)
    }

    /// Opens a streamed GET (a followed pod log at `path`); the stream is cut after
    /// [`FOLLOW_TIMEOUT`] and the caller opens it again.
    pub async fn follow(&self, path: &str) -> Result<reqwest::Response, ApiError> {
        let response = self
            .authorized(self.http.get(format!("{}{path}", self.base)))
            .await?
            .timeout(FOLLOW_TIMEOUT)
            .send()
            .await
            .map_err(|e| ApiError::Unreachable {
                url: self.base.clone(),
                reason: e.without_url().to_string(),
            })?;
        if !response.status().is_success() {
            return Err(ApiError::Refused {
                what: format!("GET {}", path.split('?').next().unwrap_or_default()),
                status: response.status().as_u16(),
                message: "no log stream".into(),
            });
        }
        Ok(response)
    }

    /// The last `tail` lines of a pod's app container.
    pub async fn pod_log(&self, namespace: &str, pod: &str, tail: u32) -> Result<Vec<String>, ApiError> {
        let path =
            format!("/api/v1/namespaces/{namespace}/pods/{pod}/log?container=app&tailLines={tail}&limitBytes=65536");
        let mut response = self
            .authorized(self.http.get(format!("{}{path}", self.base)))
            .await?
            .send()
            .await
            .map_err(|e| ApiError::Unreachable {
                url: self.base.clone(),
                reason: e.without_url().to_string(),
            })?;
        if !response.status().is_success() {
            return Err(ApiError::Refused {
                what: format!("GET {}", path.split('?').next().unwrap_or_default()),
                status: response.status().as_u16(),
                message: "no log".into(),
            });
        }
        let mut bytes = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > 65536 {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect())
    }
}

/// The collection path of `kind` objects in `namespace` (`None`: cluster-scoped).
pub fn collection_path(kind: &str, namespace: Option<&str>) -> Option<String> {
    let (group, plural) = match kind {
        "Namespace" => ("/api/v1", "namespaces"),
        "ResourceQuota" => ("/api/v1", "resourcequotas"),
        "LimitRange" => ("/api/v1", "limitranges"),
        "ServiceAccount" => ("/api/v1", "serviceaccounts"),
        "Service" => ("/api/v1", "services"),
        "ConfigMap" => ("/api/v1", "configmaps"),
        "Secret" => ("/api/v1", "secrets"),
        "Pod" => ("/api/v1", "pods"),
        "Event" => ("/api/v1", "events"),
        "NetworkPolicy" => ("/apis/networking.k8s.io/v1", "networkpolicies"),
        "Ingress" => ("/apis/networking.k8s.io/v1", "ingresses"),
        "Deployment" => ("/apis/apps/v1", "deployments"),
        "Job" => ("/apis/batch/v1", "jobs"),
        _ => return None,
    };
    Some(match namespace {
        Some(ns) if kind != "Namespace" => format!("{group}/namespaces/{ns}/{plural}"),
        _ => format!("{group}/{plural}"),
    })
}

/// The path of `object` (by its kind, namespace and name).
pub fn object_path(object: &Value) -> Option<String> {
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    let namespace = object["metadata"]["namespace"].as_str();
    let collection = if object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with(super::knative::GROUP))
    {
        super::knative::collection_path(kind, namespace?)?
    } else {
        collection_path(kind, namespace)?
    };
    Some(format!("{collection}/{name}"))
}

/// A label selector query for `labels` (`labelSelector=k%3Dv,k2%3Dv2`).
pub fn label_selector(labels: &[(&str, &str)]) -> String {
    let joined = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    format!("labelSelector={}", urlencode(&joined))
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_layout() {
        let ns = serde_json::json!({"kind": "Namespace", "metadata": {"name": "berth-o"}});
        assert_eq!(object_path(&ns).as_deref(), Some("/api/v1/namespaces/berth-o"));
        let d = serde_json::json!({"kind": "Deployment", "metadata": {"name": "a", "namespace": "n"}});
        assert_eq!(
            object_path(&d).as_deref(),
            Some("/apis/apps/v1/namespaces/n/deployments/a")
        );
        assert_eq!(
            label_selector(&[("berth.dev/site", "a b")]),
            "labelSelector=berth.dev%2Fsite%3Da%20b"
        );
    }
}
