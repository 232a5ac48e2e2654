//! A FAKE Kubernetes API server — not Kubernetes — for contract tests, in process on
//! 127.0.0.1:0. It follows the API documentation where berth depends on it: a bearer token
//! checked on every call; discovery (`GET /version`, `GET /apis`); server-side apply
//! (`PATCH` with `fieldManager` and `application/apply-patch+yaml`, creating or updating the
//! object, bumping `resourceVersion` and, on a spec change, `metadata.generation`;
//! namespaced objects need their namespace); GET of an object (404 `Status` when missing);
//! LIST with `labelSelector` (`k=v,…`) and `fieldSelector=involvedObject.name=…`; DELETE
//! (a Deployment takes its pods with it, and the garbage collector deletes every object
//! whose `metadata.ownerReferences` names a deleted object's uid, transitively); and pod
//! logs; `dryRun=All` on an apply answers without storing anything; an `immutable` Secret's
//! data cannot change. A Deployment applied back to the template its ready pod runs scales back to that
//! pod (as its old ReplicaSet would), without a new pull.
//!
//! Its fake kubelet plays a Deployment's rollout forward with the real Docker Engine: it
//! pulls the template's image from the real registry (by digest), runs it with the pod's
//! security context (uid, read-only root, `/tmp` tmpfs, no capabilities, no new
//! privileges) and the template's env (`valueFrom.secretKeyRef` resolved from the stored
//! Secret; a missing Secret or key is a `CreateContainerConfigError`), probes the readiness path, puts the new pods in
//! the Service's endpoints before it drains and removes the old ones (`maxUnavailable:
//! 0`), and then marks the Deployment available; a container that exits is a `CrashLoopBackOff` (with its log), a
//! failed pull an `ErrImagePull`. It pulls with the credentials of the pod's (or its
//! ServiceAccount's) `imagePullSecrets`, as a kubelet does, and with none without them. A test can force image pulls to fail
//! ([`Rollout::ImagePullFailure`]). Its fake ingress controller proxies a request by its
//! `Host` to the ready container behind the Ingress rule's Service, so a test sees the
//! app's own answer. Containers it started are removed when it is dropped.
//!
//! With [`FakeKube::offer_knative`] it also fakes what Knative Serving does for what berth
//! calls (off by default: a cluster without Knative): discovery lists
//! `serving.knative.dev/v1` and `v1beta1`; a Knative Service's template must be named
//! `<service>-…` and a name already taken by a revision with another spec is refused, as
//! Knative's webhook does; its fake controller creates the Revision the template names
//! (owned by the Service, carrying the template's labels and annotations), runs its pod
//! through the fake kubelet (labelled `serving.knative.dev/revision`), reports the
//! Revision's and Service's `Ready` conditions, and routes (`status.traffic`) only to
//! revisions that are ready; its fake ingress routes a DomainMapping's host to the pod
//! of the revision the mapped Service's traffic goes to. It does not scale revisions
//! (no activator, no scale to zero): `min-scale` is only an annotation here.
//!
//! Its FAKE job runner plays a `batch/v1` Job forward the way a cluster running a kaniko
//! executor would (without running the init or executor images): it creates the Job's
//! pod (labelled `batch.kubernetes.io/job-name`, owned by the Job), resolves the
//! containers' `secretKeyRef` variables from the stored Secret (a missing one is a
//! `CreateContainerConfigError`), downloads the context from the URL the init
//! container's `wget` names with a real HTTP GET (a failure ends the init container with
//! exit 1 and the Job `Failed`), builds it with the real Docker Engine (`docker build` of
//! the tarball, `--build-arg NAME` taking the value from the executor's variables, as
//! kaniko does), pushes it to the `--destination` on the real registry, and sets the
//! executor's termination message to the pushed digest and the Job `Complete`; a build
//! that fails ends the executor with exit 1 and the Job `Failed`
//! (`BackoffLimitExceeded`). The build output is the pod's executor log (followed while
//! it builds). [`FakeKube::hold_jobs`] keeps new Jobs' pods pending until released.

#![allow(dead_code, reason = "each test file uses a different part of the fake")]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How the fake kubelet plays the next rollouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Pull and run the image for real.
    Run,
    /// Every pull fails (as if the registry did not have the image).
    ImagePullFailure,
}

/// One request the fake answered: method, path and query.
pub type Seen = (String, String);

struct Shared {
    token: Mutex<String>,
    objects: Mutex<BTreeMap<String, Value>>,
    version: AtomicU64,
    rollout: Mutex<Rollout>,
    seen: Mutex<Vec<Seen>>,
    /// Containers of the fake kubelet, by pod path.
    containers: Mutex<HashMap<String, String>>,
    /// Pod logs, by pod path.
    logs: Mutex<HashMap<String, String>>,
    /// Where a Deployment's ready pods listen (pod path, address), by `namespace/name`.
    backends: Mutex<HashMap<String, Vec<(String, SocketAddr)>>>,
    /// One rollout or scaling played at a time, as a Deployment controller does.
    kubelet: tokio::sync::Mutex<()>,
    /// Round robin of the fake ingress.
    next_backend: AtomicU64,
    /// Whether discovery lists `metrics.k8s.io` (as a cluster with metrics-server does).
    metrics: std::sync::atomic::AtomicBool,
    /// Whether it fakes Knative Serving.
    knative: std::sync::atomic::AtomicBool,
    /// Whether new Jobs wait for [`FakeKube::release_jobs`].
    hold_jobs: std::sync::atomic::AtomicBool,
    /// Wakes held Jobs.
    jobs_released: tokio::sync::Notify,
    /// Pods of the job runner whose executor has ended (their log stream ends).
    finished_pods: Mutex<std::collections::HashSet<String>>,
    /// Images the job runner built (removed when the fake is dropped).
    built_images: Mutex<Vec<String>>,
    /// Jobs the job runner saw, as applied.
    jobs_seen: Mutex<Vec<Value>>,
}

/// Marks a request that came with a client certificate the TLS listener verified.
#[derive(Clone, Copy)]
struct VerifiedClient;

/// The fake API over TLS ([`FakeKube::serve_tls`]), stopped when dropped.
pub struct TlsApi {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// The CA of its certificate (and of the client certificate below), PEM.
    pub ca_pem: String,
    /// A client certificate the listener accepts, PEM.
    pub client_certificate_pem: String,
    /// Its key, PEM.
    pub client_key_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fake API server and its fake ingress controller.
pub struct FakeKube {
    /// The API's URL.
    pub url: String,
    /// Where the fake ingress controller listens.
    pub ingress: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeKube {
    /// Starts the fake API and ingress on loopback, accepting `token`.
    pub async fn start(token: &str) -> Self {
        let shared = Arc::new(Shared {
            token: Mutex::new(token.to_string()),
            objects: Mutex::default(),
            version: AtomicU64::new(100),
            rollout: Mutex::new(Rollout::Run),
            seen: Mutex::default(),
            containers: Mutex::default(),
            logs: Mutex::default(),
            backends: Mutex::default(),
            kubelet: tokio::sync::Mutex::new(()),
            next_backend: AtomicU64::new(0),
            metrics: std::sync::atomic::AtomicBool::new(false),
            knative: std::sync::atomic::AtomicBool::new(false),
            hold_jobs: std::sync::atomic::AtomicBool::new(false),
            jobs_released: tokio::sync::Notify::new(),
            finished_pods: Mutex::default(),
            built_images: Mutex::default(),
            jobs_seen: Mutex::default(),
        });
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ingress = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", api.local_addr().expect("addr"));
        let ingress_addr = ingress.local_addr().expect("addr");
        let api_app = Router::new().fallback(api_call).with_state(shared.clone());
        let ingress_app = Router::new().fallback(ingress_call).with_state(shared.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(api, api_app).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(ingress, ingress_app).await;
            }),
        ];
        Self {
            url,
            ingress: ingress_addr,
            shared,
            tasks,
        }
    }

    /// Accepts `token` from now on instead of the one before (a rotated token).
    pub fn set_token(&self, token: &str) {
        *self.shared.token.lock().unwrap() = token.to_string();
    }

    /// The same API over TLS on another loopback port, with a certificate of a CA made
    /// here; with `client_certificates`, the TLS handshake requires a client certificate
    /// signed by that CA, and a request on such a connection is authenticated without a
    /// token (as an API server's client certificate authentication does).
    pub async fn serve_tls(&self, client_certificates: bool) -> TlsApi {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake-kube-ca");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let issue = |names: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            params.distinguished_name.push(rcgen::DnType::CommonName, "berth");
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert, key)
        };
        let (server_cert, server_key) = issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = issue(vec![], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_certificates {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
        let config = builder.with_single_cert(vec![server_cert.der().clone()], key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let verified = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    let mut app = Router::new().fallback(api_call).with_state(shared);
                    if verified {
                        app = app.layer(axum::Extension(VerifiedClient));
                    }
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsApi {
            url: format!("https://{address}"),
            address,
            ca_pem: ca.pem(),
            client_certificate_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            task,
        }
    }

    /// Chooses how the next rollouts go.
    pub fn set_rollout(&self, rollout: Rollout) {
        *self.shared.rollout.lock().unwrap() = rollout;
    }

    /// Every object stored, by path.
    pub fn objects(&self) -> BTreeMap<String, Value> {
        self.shared.objects.lock().unwrap().clone()
    }

    /// The object at `path`.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.shared.objects.lock().unwrap().get(path).cloned()
    }

    /// Stores an object as another client would (not through berth).
    pub fn put(&self, path: &str, object: Value) {
        self.shared.objects.lock().unwrap().insert(path.to_string(), object);
    }

    /// Restarts every Deployment's pods (as a node restart would): the pods go and the
    /// fake kubelet runs each Deployment's current template again.
    pub fn restart_pods(&self) {
        let deployments: Vec<Value> = self
            .shared
            .objects
            .lock()
            .unwrap()
            .values()
            .filter(|o| o["kind"] == "Deployment")
            .cloned()
            .collect();
        for deployment in deployments {
            remove_pods(&self.shared, &deployment, &[]);
            let ns = deployment["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
            self.shared.backends.lock().unwrap().remove(&format!("{ns}/{name}"));
            let rv = self.shared.version.fetch_add(1, Ordering::SeqCst) + 1;
            let shared = self.shared.clone();
            tokio::spawn(async move { kubelet(shared, deployment, rv).await });
        }
    }

    /// Removes the object at `path` (as another client of the cluster would).
    pub fn remove(&self, path: &str) {
        self.shared.objects.lock().unwrap().remove(path);
    }

    /// The requests answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The containers running for the Deployment `namespace/name`'s ready pods.
    pub fn ready_containers(&self, namespace: &str, name: &str) -> Vec<String> {
        let pods: Vec<String> = self
            .shared
            .backends
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .map(|b| b.iter().map(|(pod, _)| pod.clone()).collect())
            .unwrap_or_default();
        let containers = self.shared.containers.lock().unwrap();
        pods.iter().filter_map(|p| containers.get(p).cloned()).collect()
    }

    /// Offers the metrics API (`metrics.k8s.io/v1beta1` PodMetrics from `docker stats` of
    /// the pods' containers) or not.
    pub fn offer_metrics(&self, on: bool) {
        self.shared.metrics.store(on, Ordering::SeqCst);
    }

    /// Fakes Knative Serving (discovery, Services, Revisions, DomainMappings) or not.
    pub fn offer_knative(&self, on: bool) {
        self.shared.knative.store(on, Ordering::SeqCst);
    }

    /// Keeps the pods of new Jobs pending (`true`) until [`Self::release_jobs`].
    pub fn hold_jobs(&self, on: bool) {
        self.shared.hold_jobs.store(on, Ordering::SeqCst);
    }

    /// Lets held Jobs run.
    pub fn release_jobs(&self) {
        self.shared.hold_jobs.store(false, Ordering::SeqCst);
        self.shared.jobs_released.notify_waiters();
    }

    /// The Jobs the job runner saw, as they were applied.
    pub fn jobs_seen(&self) -> Vec<Value> {
        self.shared.jobs_seen.lock().unwrap().clone()
    }

    /// Every container the fake kubelet has running.
    pub fn containers(&self) -> Vec<String> {
        self.shared.containers.lock().unwrap().values().cloned().collect()
    }
}

impl FakeKube {
    /// Removes every container the fake kubelet started (so their images can go).
    pub fn remove_containers(&self) {
        let names: Vec<String> = self.shared.containers.lock().unwrap().drain().map(|(_, v)| v).collect();
        if !names.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&names)
                .output();
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let built: Vec<String> = self.shared.built_images.lock().unwrap().drain(..).collect();
        if !built.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f"])
                .args(&built)
                .output();
        }
        let names: Vec<String> = self.shared.containers.lock().unwrap().values().cloned().collect();
        if !names.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&names)
                .output();
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

/// Where a path points.
enum Place {
    /// A collection: its path.
    Collection,
    /// One object: its namespace (if namespaced) and name.
    Object { namespace: Option<String> },
    /// A pod's log: the pod's path.
    Log(String),
    /// A Deployment's scale subresource: the Deployment's path.
    Scale(String),
}

fn place(path: &str) -> Option<Place> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..)?,
        Some(&"apis") => segments.get(3..)?,
        _ => return None,
    };
    match rest {
        ["namespaces"] | ["namespaces", _, _] => Some(Place::Collection),
        ["namespaces", _] => Some(Place::Object { namespace: None }),
        ["namespaces", ns, _, _] => Some(Place::Object {
            namespace: Some(ns.to_string()),
        }),
        ["namespaces", _, "pods", _, "log"] => Some(Place::Log(path.trim_end_matches("/log").to_string())),
        ["namespaces", _, "deployments", _, "scale"] => Some(Place::Scale(path.trim_end_matches("/scale").to_string())),
        _ => None,
    }
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches_selectors(object: &Value, label_selector: Option<&str>, field_selector: Option<&str>) -> bool {
    let labels = &object["metadata"]["labels"];
    let labels_ok = label_selector.is_none_or(|sel| {
        sel.split(',')
            .filter(|s| !s.is_empty())
            .all(|term| term.split_once('=').is_some_and(|(k, v)| labels[k].as_str() == Some(v)))
    });
    let fields_ok = field_selector.is_none_or(|sel| {
        sel.split(',').all(|term| match term.split_once('=') {
            Some(("involvedObject.name", name)) => object["involvedObject"]["name"].as_str() == Some(name),
            Some(("metadata.name", name)) => object["metadata"]["name"].as_str() == Some(name),
            _ => false,
        })
    });
    labels_ok && fields_ok
}

async fn api_call(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 8 * 1024 * 1024).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    shared
        .seen
        .lock()
        .unwrap()
        .push((parts.method.to_string(), format!("{path}?{query}")));
    let token = shared.token.lock().unwrap().clone();
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"));
    // A client certificate the TLS listener verified authenticates as a token does.
    let authorised = bearer || parts.extensions.get::<VerifiedClient>().is_some();
    if !authorised {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into());
    }
    match (parts.method.clone(), path.as_str()) {
        (Method::GET, "/version") => {
            return axum::Json(
                json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "platform": "linux/amd64"}),
            )
            .into_response();
        }
        (Method::GET, "/apis") => {
            let mut groups = vec![
                json!({"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]}),
                json!({"name": "networking.k8s.io", "versions": [{"groupVersion": "networking.k8s.io/v1", "version": "v1"}]}),
                json!({"name": "batch", "versions": [{"groupVersion": "batch/v1", "version": "v1"}]}),
            ];
            if shared.knative.load(Ordering::SeqCst) {
                groups.push(json!({"name": KNATIVE_GROUP, "versions": [
                    {"groupVersion": "serving.knative.dev/v1", "version": "v1"},
                    {"groupVersion": "serving.knative.dev/v1beta1", "version": "v1beta1"},
                ]}));
            }
            if shared.metrics.load(Ordering::SeqCst) {
                groups.push(json!({"name": "metrics.k8s.io", "versions": [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}]}));
            }
            return axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})).into_response();
        }
        (_, p) if p.starts_with("/apis/serving.knative.dev/") && !shared.knative.load(Ordering::SeqCst) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
            );
        }
        (Method::GET, p) if p.starts_with("/apis/metrics.k8s.io/") => {
            if !shared.metrics.load(Ordering::SeqCst) {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                );
            }
            return pod_metrics(&shared, p, &query).await;
        }
        _ => {}
    }
    let Some(place) = place(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find {path}"),
        );
    };
    match (parts.method, place) {
        (Method::GET, Place::Log(pod)) if query_value(&query, "follow").as_deref() == Some("true") => {
            let container = shared.containers.lock().unwrap().get(&pod).cloned();
            let built = shared.logs.lock().unwrap().contains_key(&pod);
            match container {
                Some(container) => follow_log(&container, &query),
                None if built => follow_build_log(shared.clone(), pod),
                None => status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("container \"app\" in pod {pod} is waiting to start"),
                ),
            }
        }
        (Method::PATCH, Place::Scale(deployment)) => scale(&shared, &parts.headers, &deployment, &body),
        (Method::GET, Place::Log(pod)) => {
            let log = shared.logs.lock().unwrap().get(&pod).cloned();
            match log {
                Some(text) => {
                    let tail: usize = query_value(&query, "tailLines")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(usize::MAX);
                    let lines: Vec<&str> = text.lines().collect();
                    let start = lines.len().saturating_sub(tail);
                    lines[start..].join("\n").into_response()
                }
                None => status(StatusCode::NOT_FOUND, "NotFound", format!("pods {pod} not found")),
            }
        }
        (Method::GET, Place::Collection) => {
            let label_selector = query_value(&query, "labelSelector");
            let field_selector = query_value(&query, "fieldSelector");
            let prefix = format!("{path}/");
            let objects = shared.objects.lock().unwrap();
            let items: Vec<Value> = objects
                .iter()
                .filter(|(key, _)| key.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/')))
                .map(|(_, v)| v.clone())
                .filter(|v| matches_selectors(v, label_selector.as_deref(), field_selector.as_deref()))
                .collect();
            let rv = shared.version.load(Ordering::SeqCst).to_string();
            axum::Json(json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}))
                .into_response()
        }
        (Method::GET, Place::Object { .. }) => match shared.objects.lock().unwrap().get(&path) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => status(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found")),
        },
        (Method::PATCH, Place::Object { .. })
            if parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
                == Some("application/merge-patch+json") =>
        {
            merge_patch_object(&shared, &path, &body)
        }
        (Method::PATCH, Place::Object { namespace }) => apply(&shared, &parts.headers, &path, &query, namespace, &body),
        (Method::DELETE, Place::Object { .. }) => {
            let removed = shared.objects.lock().unwrap().remove(&path);
            let Some(removed) = removed else {
                return status(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found"));
            };
            // The garbage collector: dependents of a deleted object go too.
            let mut doomed = vec![removed];
            while let Some(removed) = doomed.pop() {
                if removed["kind"] == "Revision" {
                    remove_revision_pods(&shared, &removed);
                }
                if removed["kind"] == "Deployment" {
                    remove_pods(&shared, &removed, &[]);
                    let key = format!(
                        "{}/{}",
                        removed["metadata"]["namespace"].as_str().unwrap_or_default(),
                        removed["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    shared.backends.lock().unwrap().remove(&key);
                }
                let uid = removed["metadata"]["uid"].clone();
                let mut objects = shared.objects.lock().unwrap();
                let dependents: Vec<String> = objects
                    .iter()
                    .filter(|(_, o)| {
                        !uid.is_null()
                            && o["metadata"]["ownerReferences"]
                                .as_array()
                                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in dependents {
                    doomed.extend(objects.remove(&key));
                }
            }
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})).into_response()
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the fake".into(),
        ),
    }
}

/// Server-side apply.
fn apply(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    path: &str,
    query: &str,
    namespace: Option<String>,
    body: &[u8],
) -> Response {
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/apply-patch+yaml") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "PATCH needs a patch content type".into(),
        );
    }
    let Some(manager) = query_value(query, "fieldManager") else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "fieldManager is required for apply patch".into(),
        );
    };
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not an object".into(),
        );
    };
    let name = path.rsplit('/').next().unwrap_or_default();
    if object["metadata"]["name"].as_str() != Some(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL".into(),
        );
    }
    if let Some(ns) = &namespace {
        if object["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the namespace of the object does not match the URL".into(),
            );
        }
        let ns_path = format!("/api/v1/namespaces/{ns}");
        if !shared.objects.lock().unwrap().contains_key(&ns_path) {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
            );
        }
    }
    let knative_service = object["kind"] == "Service" && object["apiVersion"] == "serving.knative.dev/v1";
    if knative_service && let Err(message) = check_knative_service(shared, path, &object) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
    }
    // An immutable Secret's data stays as it is.
    if object["kind"] == "Secret"
        && let Some(old) = shared.objects.lock().unwrap().get(path)
        && old["immutable"] == true
        && (old["data"] != object["data"] || object["immutable"] != true)
    {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("Secret \"{name}\" is invalid: data: Forbidden: field is immutable when `immutable` is set"),
        );
    }
    // A server-side dry run: the object as it would be stored; nothing changes.
    if query_value(query, "dryRun").as_deref() == Some("All") {
        let previous = shared.objects.lock().unwrap().get(path).cloned();
        object["metadata"]["uid"] = previous.map_or_else(|| json!("uid-dry-run"), |old| old["metadata"]["uid"].clone());
        object["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply"}]);
        return axum::Json(object).into_response();
    }
    let rv = shared.version.fetch_add(1, Ordering::SeqCst) + 1;
    let mut objects = shared.objects.lock().unwrap();
    let previous = objects.get(path).cloned();
    let generation = match &previous {
        Some(old) if old["spec"] == object["spec"] => old["metadata"]["generation"].as_i64().unwrap_or(1),
        Some(old) => old["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
        None => 1,
    };
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    object["metadata"]["generation"] = json!(generation);
    object["metadata"]["uid"] = previous
        .as_ref()
        .map_or_else(|| json!(format!("uid-{rv}")), |old| old["metadata"]["uid"].clone());
    object["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply"}]);
    if let Some(old) = &previous {
        object["status"] = old["status"].clone();
    }
    let template_changed = previous
        .as_ref()
        .is_none_or(|old| old["spec"]["template"] != object["spec"]["template"]);
    // Back to the template a ready pod runs: the old ReplicaSet scales up again.
    let serving_pod = (object["kind"] == "Deployment" && template_changed)
        .then(|| {
            let template = &object["spec"]["template"];
            objects
                .iter()
                .find(|(_, pod)| {
                    pod["kind"] == "Pod"
                        && pod["metadata"]["namespace"] == object["metadata"]["namespace"]
                        && pod["status"]["containerStatuses"][0]["ready"] == true
                        && pod["metadata"]["labels"] == template["metadata"]["labels"]
                        && pod["spec"] == template["spec"]
                })
                .map(|(k, _)| k.clone())
        })
        .flatten();
    if let Some(pod) = serving_pod {
        object["status"] = json!({
            "observedGeneration": generation,
            "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        });
        objects.insert(path.to_string(), object.clone());
        drop(objects);
        remove_pods(shared, &object, std::slice::from_ref(&pod));
        return axum::Json(object).into_response();
    }
    if object["kind"] == "Deployment" && template_changed {
        let ready = object["status"]["availableReplicas"].as_i64().unwrap_or(0);
        object["status"] = json!({
            "observedGeneration": generation,
            "replicas": ready,
            "updatedReplicas": 0,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}],
        });
        let (shared, deployment) = (shared.clone(), object.clone());
        tokio::spawn(async move { kubelet(shared, deployment, rv).await });
    } else if object["kind"] == "Deployment"
        && previous
            .as_ref()
            .is_some_and(|old| old["spec"]["replicas"] != object["spec"]["replicas"])
    {
        let (shared, path) = (shared.clone(), path.to_string());
        tokio::spawn(async move { scale_pods(shared, path).await });
    }
    let new_job = object["kind"] == "Job" && previous.is_none();
    objects.insert(path.to_string(), object.clone());
    drop(objects);
    if new_job {
        let (shared, path) = (shared.clone(), path.to_string());
        tokio::spawn(async move { job_runner(shared, path).await });
    }
    if knative_service {
        knative_controller(shared, path);
        let answer = shared.objects.lock().unwrap().get(path).cloned().unwrap_or(object);
        return axum::Json(answer).into_response();
    }
    axum::Json(object).into_response()
}

/// Knative's API group.
const KNATIVE_GROUP: &str = "serving.knative.dev";
/// Label Knative puts on a revision's pods.
const REVISION_LABEL: &str = "serving.knative.dev/revision";

/// Knative's webhook: the template is named `<service>-…`, and a revision of that name
/// must have the template's spec.
fn check_knative_service(shared: &Shared, path: &str, service: &Value) -> Result<(), String> {
    let name = service["metadata"]["name"].as_str().unwrap_or_default();
    let revision = service["spec"]["template"]["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    if !revision.starts_with(&format!("{name}-")) {
        return Err(format!(
            "spec.template.metadata.name: must have prefix \"{name}-\", got \"{revision}\""
        ));
    }
    let revision_path = revision_path(path, revision);
    if let Some(existing) = shared.objects.lock().unwrap().get(&revision_path)
        && existing["spec"] != service["spec"]["template"]["spec"]
    {
        return Err(format!(
            "spec.template.metadata.name: saw the expected revision name {revision} already taken with another spec"
        ));
    }
    Ok(())
}

/// The path of the revision `name` next to the Knative Service at `service_path`.
fn revision_path(service_path: &str, name: &str) -> String {
    let collection = service_path.rsplit_once('/').map_or("", |(c, _)| c);
    format!("{}/revisions/{name}", collection.trim_end_matches("/services"))
}

/// The fake Knative controller, after a Service was applied: the revision its template
/// names is created (and its pod started) when missing; its status follows.
fn knative_controller(shared: &Arc<Shared>, service_path: &str) {
    let Some(service) = shared.objects.lock().unwrap().get(service_path).cloned() else {
        return;
    };
    let template = service["spec"]["template"].clone();
    let ns = service["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let service_name = service["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let name = template["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let path = revision_path(service_path, &name);
    let created = {
        let mut objects = shared.objects.lock().unwrap();
        if objects.contains_key(&path) {
            false
        } else {
            let rv = shared.version.fetch_add(1, Ordering::SeqCst) + 1;
            let mut labels = template["metadata"]["labels"].clone();
            labels["serving.knative.dev/service"] = json!(service_name);
            labels["serving.knative.dev/configuration"] = json!(service_name);
            objects.insert(
                path.clone(),
                json!({
                    "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                    "metadata": {
                        "name": name, "namespace": ns, "labels": labels,
                        "annotations": template["metadata"]["annotations"],
                        "uid": format!("uid-{rv}"), "resourceVersion": rv.to_string(), "generation": 1,
                        "ownerReferences": [{"apiVersion": "serving.knative.dev/v1", "kind": "Configuration",
                            "name": service_name, "uid": service["metadata"]["uid"], "controller": true}],
                    },
                    "spec": template["spec"],
                    "status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "Deploying"}]},
                }),
            );
            true
        }
    };
    service_status(shared, service_path);
    if created {
        let (shared, service_path) = (shared.clone(), service_path.to_string());
        tokio::spawn(async move {
            let mut pod_template = template.clone();
            pod_template["metadata"]["labels"][REVISION_LABEL] = json!(name);
            let as_deployment = json!({"metadata": {"namespace": ns}, "spec": {"template": pod_template}});
            let rv = shared.version.fetch_add(1, Ordering::SeqCst) + 1;
            let started = run_pod(&shared, &as_deployment, format!("{name}-deployment-{rv}")).await;
            let condition = match &started {
                Some((pod, addr)) => {
                    shared
                        .backends
                        .lock()
                        .unwrap()
                        .insert(format!("{ns}/{name}"), vec![(pod.clone(), *addr)]);
                    json!({"type": "Ready", "status": "True"})
                }
                None => {
                    let waiting = shared
                        .objects
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(_, p)| p["kind"] == "Pod" && p["metadata"]["labels"][REVISION_LABEL] == name.as_str())
                        .map(|(_, p)| p["status"]["containerStatuses"][0]["state"]["waiting"].clone())
                        .unwrap_or_default();
                    json!({"type": "Ready", "status": "False", "reason": "RevisionFailed",
                        "message": format!("Revision \"{name}\" failed with message: {}: {}",
                            waiting["reason"].as_str().unwrap_or("the container did not start"),
                            waiting["message"].as_str().unwrap_or_default())})
                }
            };
            if let Some(revision) = shared.objects.lock().unwrap().get_mut(&path) {
                revision["status"] = json!({"observedGeneration": 1, "conditions": [condition]});
            }
            service_status(&shared, &service_path);
        });
    }
}

/// A Knative Service's status: traffic goes to the pinned revision once it is ready
/// (until then, where it went before); `Ready` follows that revision.
fn service_status(shared: &Shared, service_path: &str) {
    let mut objects = shared.objects.lock().unwrap();
    let Some(service) = objects.get(service_path).cloned() else {
        return;
    };
    let pinned = service["spec"]["traffic"][0]["revisionName"]
        .as_str()
        .unwrap_or_default();
    let revision = objects.get(&revision_path(service_path, pinned)).cloned();
    let condition = revision
        .as_ref()
        .and_then(|r| r["status"]["conditions"].as_array().and_then(|c| c.first().cloned()))
        .unwrap_or_else(|| json!({"type": "Ready", "status": "False", "reason": "RevisionMissing"}));
    let mut status = service["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = service["metadata"]["generation"].clone();
    status["latestCreatedRevisionName"] = service["spec"]["template"]["metadata"]["name"].clone();
    status["conditions"] = json!([condition]);
    if condition["status"] == "True" {
        status["traffic"] = json!([{"revisionName": pinned, "percent": 100, "latestRevision": false}]);
    }
    if let Some(stored) = objects.get_mut(service_path) {
        stored["status"] = status;
    }
}

/// Removes a revision's pods, their containers and its backends.
fn remove_revision_pods(shared: &Shared, revision: &Value) {
    let name = revision["metadata"]["name"].as_str().unwrap_or_default();
    let ns = revision["metadata"]["namespace"].as_str().unwrap_or_default();
    shared.backends.lock().unwrap().remove(&format!("{ns}/{name}"));
    let mut objects = shared.objects.lock().unwrap();
    let doomed: Vec<String> = objects
        .iter()
        .filter(|(_, p)| p["kind"] == "Pod" && p["metadata"]["labels"][REVISION_LABEL] == name)
        .map(|(k, _)| k.clone())
        .collect();
    for path in doomed {
        objects.remove(&path);
        if let Some(container) = shared.containers.lock().unwrap().remove(&path) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &container])
                .output();
        }
    }
}

/// A JSON merge patch (RFC 7386) of a stored object.
fn merge_patch_object(shared: &Shared, path: &str, body: &[u8]) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not JSON".into());
    };
    let rv = shared.version.fetch_add(1, Ordering::SeqCst) + 1;
    let mut objects = shared.objects.lock().unwrap();
    let Some(object) = objects.get_mut(path) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found"));
    };
    merge(object, &patch);
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    axum::Json(object.clone()).into_response()
}

fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("an object");
    for (key, value) in fields {
        if value.is_null() {
            map.remove(key);
        } else {
            merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Stores an Event about a pod.
fn event(shared: &Shared, namespace: &str, pod: &str, reason: &str, message: &str) {
    let rv = shared.version.fetch_add(1, Ordering::SeqCst) + 1;
    let name = format!("{pod}.{rv}");
    shared.objects.lock().unwrap().insert(
        format!("/api/v1/namespaces/{namespace}/events/{name}"),
        json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv.to_string()},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
            "reason": reason, "message": message, "type": "Warning",
        }),
    );
}

/// Sets a pod's container state.
fn set_pod(shared: &Shared, pod_path: &str, state: Value, ready: bool) {
    if let Some(pod) = shared.objects.lock().unwrap().get_mut(pod_path) {
        pod["status"]["containerStatuses"] = json!([{"name": "app", "ready": ready, "state": state}]);
        pod["status"]["phase"] = json!(if ready { "Running" } else { "Pending" });
    }
}

/// Removes a Deployment's pods (all, or all but `keep`) and their containers.
fn remove_pods(shared: &Shared, deployment: &Value, keep: &[String]) {
    let ns = deployment["metadata"]["namespace"].as_str().unwrap_or_default();
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let prefix = format!("/api/v1/namespaces/{ns}/pods/");
    let mut objects = shared.objects.lock().unwrap();
    let doomed: Vec<String> = objects
        .iter()
        .filter(|(k, v)| {
            k.starts_with(&prefix)
                && !keep.contains(k)
                && selector
                    .as_object()
                    .is_some_and(|m| m.iter().all(|(lk, lv)| &v["metadata"]["labels"][lk] == lv))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for path in doomed {
        objects.remove(&path);
        if let Some(container) = shared.containers.lock().unwrap().remove(&path) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &container])
                .output();
        }
    }
}

async fn docker(args: &[String]) -> Result<String, String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Pulls `image` as a kubelet does for a pod with `spec`: with the registry credentials
/// of the pod's `imagePullSecrets`, or else of its ServiceAccount's (`kubernetes.io/
/// dockerconfigjson` Secrets of the namespace), and with none otherwise (a Docker config
/// folder of its own, never the machine's).
async fn pull(shared: &Shared, ns: &str, spec: &Value, image: &str) -> Result<String, String> {
    use base64::Engine as _;
    let account = spec["serviceAccountName"].as_str().unwrap_or("default");
    let secret_names: Vec<String> = {
        let objects = shared.objects.lock().unwrap();
        let named = match spec["imagePullSecrets"].as_array() {
            Some(list) if !list.is_empty() => list.clone(),
            _ => objects
                .get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/{account}"))
                .and_then(|sa| sa["imagePullSecrets"].as_array().cloned())
                .unwrap_or_default(),
        };
        named
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect()
    };
    let mut auths = serde_json::Map::new();
    for name in secret_names {
        let secret = shared
            .objects
            .lock()
            .unwrap()
            .get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"))
            .cloned();
        let Some(secret) = secret.filter(|s| s["type"] == "kubernetes.io/dockerconfigjson") else {
            continue;
        };
        let decoded = secret["data"][".dockerconfigjson"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        if let Some(entries) = decoded.as_ref().and_then(|c| c["auths"].as_object()) {
            auths.extend(entries.clone());
        }
    }
    // The registry is asked for the manifest with the pod's credentials first, as a
    // kubelet pulling with `imagePullPolicy: Always` does: one Docker Engine serves every
    // fake pod, and it may skip the registry for an image it pulled before.
    let (host, rest) = image.split_once('/').unwrap_or_default();
    let (repo, reference) = rest
        .split_once('@')
        .or_else(|| rest.rsplit_once(':'))
        .unwrap_or((rest, "latest"));
    let mut check = reqwest::Client::new()
        .head(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        );
    if let Some((user, password)) = auths
        .get(host)
        .and_then(|a| a["auth"].as_str())
        .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
        .and_then(|a| String::from_utf8(a).ok())
        .and_then(|a| a.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
    {
        check = check.basic_auth(user, Some(password));
    }
    match check.send().await {
        Ok(answer) if answer.status() == 401 => {
            return Err(format!(
                "failed to authorize: failed to fetch manifest of {image}: 401 Unauthorized (no valid credentials for {host} in the pod's imagePullSecrets)"
            ));
        }
        Ok(answer) if !answer.status().is_success() => {
            return Err(format!("failed to resolve reference \"{image}\": {}", answer.status()));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("failed to do request: {e}")),
    }
    let config = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(config.path().join("config.json"), json!({ "auths": auths }).to_string())
        .map_err(|e| e.to_string())?;
    docker(&[
        "--config".into(),
        config.path().display().to_string(),
        "pull".into(),
        "-q".into(),
        image.to_string(),
    ])
    .await
}

/// Runs one pod of `deployment` named `pod`: pulls its image, runs it as the pod's
/// security context says and probes its readiness path; returns where it listens once
/// ready, or `None` after marking the pod failed (with its Events and log).
async fn run_pod(shared: &Arc<Shared>, deployment: &Value, pod: String) -> Option<(String, SocketAddr)> {
    let ns = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let template = &deployment["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap_or_default().to_string();
    let pod_path = format!("/api/v1/namespaces/{ns}/pods/{pod}");
    shared.objects.lock().unwrap().insert(
        pod_path.clone(),
        json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": pod, "namespace": ns, "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }),
    );
    let rollout = *shared.rollout.lock().unwrap();
    let pulled = match rollout {
        Rollout::ImagePullFailure => Err(format!(
            "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
        )),
        Rollout::Run => pull(shared, &ns, &template["spec"], &image).await,
    };
    if let Err(reason) = pulled {
        set_pod(
            shared,
            &pod_path,
            json!({"waiting": {"reason": "ErrImagePull", "message": reason}}),
            false,
        );
        event(
            shared,
            &ns,
            &pod,
            "Failed",
            &format!("Failed to pull image \"{image}\": {reason}"),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_pod(
            shared,
            &pod_path,
            json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")}}),
            false,
        );
        event(
            shared,
            &ns,
            &pod,
            "BackOff",
            &format!("Back-off pulling image \"{image}\""),
        );
        return None;
    }
    // The pod's security context, as a container runtime applies it.
    let pod_sc = &template["spec"]["securityContext"];
    let sc = &container["securityContext"];
    let uid = pod_sc["runAsUser"].as_u64().unwrap_or(0);
    let gid = pod_sc["runAsGroup"].as_u64().unwrap_or(uid);
    let port = container["ports"][0]["containerPort"].as_u64().unwrap_or(8080);
    let container_name = format!("fake-kubelet-{}-{pod}", std::process::id());
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        container_name.clone(),
        "--user".into(),
        format!("{uid}:{gid}"),
        "-p".into(),
        format!("127.0.0.1::{port}"),
    ];
    if sc["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if template["spec"]["volumes"].to_string().contains("emptyDir") {
        args.extend(["--tmpfs".into(), "/tmp:mode=1777".into()]);
    }
    if sc["capabilities"]["drop"] == json!(["ALL"]) {
        args.extend(["--cap-drop".into(), "ALL".into()]);
    }
    if sc["allowPrivilegeEscalation"] == false {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    // The variables as a kubelet resolves them: a missing Secret or key keeps the
    // container from being created.
    let env = match container_env(shared, &ns, container) {
        Ok(env) => env,
        Err(reason) => {
            set_pod(
                shared,
                &pod_path,
                json!({"waiting": {"reason": "CreateContainerConfigError", "message": reason}}),
                false,
            );
            event(shared, &ns, &pod, "Failed", &format!("Error: {reason}"));
            return None;
        }
    };
    for (name, value) in env {
        args.extend(["-e".into(), format!("{name}={value}")]);
    }
    args.push(image.clone());
    if let Err(reason) = docker(&args).await {
        set_pod(
            shared,
            &pod_path,
            json!({"waiting": {"reason": "CreateContainerConfigError", "message": reason}}),
            false,
        );
        event(shared, &ns, &pod, "Failed", &reason);
        return None;
    }
    shared
        .containers
        .lock()
        .unwrap()
        .insert(pod_path.clone(), container_name.clone());
    set_pod(shared, &pod_path, json!({"running": {}}), false);
    let probe = container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap_or("/")
        .to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let running = docker(&[
            "inspect".into(),
            "-f".into(),
            "{{.State.Running}}".into(),
            container_name.clone(),
        ])
        .await;
        if running.as_deref() != Ok("true") {
            let log = tokio::process::Command::new("docker")
                .args(["logs", &container_name])
                .output()
                .await
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            shared.logs.lock().unwrap().insert(pod_path.clone(), log);
            set_pod(
                shared,
                &pod_path,
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container=app"}}),
                false,
            );
            event(shared, &ns, &pod, "BackOff", "Back-off restarting failed container app");
            return None;
        }
        let Ok(mapped) = docker(&["port".into(), container_name.clone(), format!("{port}/tcp")]).await else {
            continue;
        };
        let Some(addr) = mapped.lines().find_map(|l| l.trim().parse::<SocketAddr>().ok()) else {
            continue;
        };
        let ok = http
            .get(format!("http://{addr}{probe}"))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() < 400);
        if ok {
            set_pod(shared, &pod_path, json!({"running": {}}), true);
            return Some((pod_path, addr));
        }
    }
    None
}

/// Plays one rollout of `deployment` (as applied at resourceVersion `rv`) forward: its
/// replicas started and ready, then the older pods removed.
async fn kubelet(shared: Arc<Shared>, deployment: Value, rv: u64) {
    let _one_at_a_time = shared.kubelet.lock().await;
    let ns = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let deployment_path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
    let current = shared.objects.lock().unwrap().get(&deployment_path).cloned();
    // Scaled since it was applied: the newest count.
    let replicas = current.as_ref().unwrap_or(&deployment)["spec"]["replicas"]
        .as_u64()
        .unwrap_or(1);
    let started =
        futures::future::join_all((0..replicas).map(|i| run_pod(&shared, &deployment, format!("{name}-{rv}-{i}"))))
            .await;
    let Some(ready) = started.into_iter().collect::<Option<Vec<_>>>() else {
        return;
    };
    let current = shared.objects.lock().unwrap().get(&deployment_path).cloned();
    let Some(current) = current else { return };
    // Only the newest rollout takes over.
    if current["spec"]["template"] != deployment["spec"]["template"] {
        return;
    }
    // As a rolling update with `maxUnavailable: 0` does: the new pods join the Service's
    // endpoints before the old ones leave, and an old pod is terminated only after the
    // requests the ingress already sent it are answered (here: a short drain).
    let keep: Vec<String> = ready.iter().map(|(pod, _)| pod.clone()).collect();
    shared.backends.lock().unwrap().insert(format!("{ns}/{name}"), ready);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    remove_pods(&shared, &current, &keep);
    set_ready(&shared, &deployment_path);
}

/// A Deployment's status once its ready pods are what it asks for.
fn set_ready(shared: &Shared, deployment_path: &str) {
    let key = deployment_path
        .strip_prefix("/apis/apps/v1/namespaces/")
        .unwrap_or_default()
        .replace("/deployments/", "/");
    let ready = shared.backends.lock().unwrap().get(&key).map_or(0, Vec::len);
    if let Some(d) = shared.objects.lock().unwrap().get_mut(deployment_path) {
        let generation = d["metadata"]["generation"].clone();
        d["status"] = json!({
            "observedGeneration": generation,
            "replicas": ready, "updatedReplicas": ready, "readyReplicas": ready, "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        });
    }
}

/// The scale subresource: a merge patch of `spec.replicas`.
fn scale(shared: &Arc<Shared>, headers: &HeaderMap, deployment_path: &str, body: &[u8]) -> Response {
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/merge-patch+json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the fake takes a merge patch of the scale subresource".into(),
        );
    }
    let Some(replicas) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["spec"]["replicas"].as_u64())
    else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.replicas is required".into(),
        );
    };
    let rv = shared.version.fetch_add(1, Ordering::SeqCst) + 1;
    let scaled = {
        let mut objects = shared.objects.lock().unwrap();
        let Some(d) = objects.get_mut(deployment_path) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{deployment_path} not found"),
            );
        };
        if d["spec"]["replicas"].as_u64() != Some(replicas) {
            d["spec"]["replicas"] = json!(replicas);
            let generation = d["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            d["metadata"]["generation"] = json!(generation);
        }
        d["metadata"]["resourceVersion"] = json!(rv.to_string());
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": d["metadata"]["name"], "namespace": d["metadata"]["namespace"]},
            "spec": {"replicas": replicas},
            "status": {"replicas": d["status"]["replicas"]},
        })
    };
    let (shared, path) = (shared.clone(), deployment_path.to_string());
    tokio::spawn(async move { scale_pods(shared, path).await });
    axum::Json(scaled).into_response()
}

/// Brings a Deployment's ready pods to its `replicas` (same template): surplus pods and
/// their containers removed, missing ones started.
async fn scale_pods(shared: Arc<Shared>, deployment_path: String) {
    let _one_at_a_time = shared.kubelet.lock().await;
    let Some(deployment) = shared.objects.lock().unwrap().get(&deployment_path).cloned() else {
        return;
    };
    let ns = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let key = format!("{ns}/{name}");
    let want = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let mut have = shared.backends.lock().unwrap().get(&key).cloned().unwrap_or_default();
    while have.len() > want {
        let (pod, _) = have.pop().expect("not empty");
        // Out of the Service's endpoints before it stops.
        shared.backends.lock().unwrap().insert(key.clone(), have.clone());
        shared.objects.lock().unwrap().remove(&pod);
        let container = shared.containers.lock().unwrap().remove(&pod);
        if let Some(container) = container {
            let _ = docker(&["rm".into(), "-f".into(), container]).await;
        }
    }
    if have.len() < want {
        let missing = want - have.len();
        let names: Vec<String> = (0..missing)
            .map(|_| format!("{name}-{}", shared.version.fetch_add(1, Ordering::SeqCst) + 1))
            .collect();
        let started = futures::future::join_all(names.into_iter().map(|pod| run_pod(&shared, &deployment, pod))).await;
        have.extend(started.into_iter().flatten());
    }
    shared.backends.lock().unwrap().insert(key, have);
    set_ready(&shared, &deployment_path);
}

/// `PodMetricsList` of the pods a label selector picks, measured with `docker stats
/// --no-stream` of their containers.
async fn pod_metrics(shared: &Arc<Shared>, path: &str, query: &str) -> Response {
    let Some(ns) = path
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/namespaces/")
        .and_then(|rest| rest.strip_suffix("/pods"))
    else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find {path}"),
        );
    };
    let selector = query_value(query, "labelSelector");
    let pods: Vec<(String, Value, String)> = {
        let objects = shared.objects.lock().unwrap();
        let containers = shared.containers.lock().unwrap();
        let prefix = format!("/api/v1/namespaces/{ns}/pods/");
        objects
            .iter()
            .filter(|(k, v)| k.starts_with(&prefix) && matches_selectors(v, selector.as_deref(), None))
            .filter_map(|(k, v)| Some((k.clone(), v.clone(), containers.get(k)?.clone())))
            .collect()
    };
    let mut items = Vec::new();
    for (_, pod, container) in pods {
        let Ok(stats) = docker(&[
            "stats".into(),
            "--no-stream".into(),
            "--format".into(),
            "{{.CPUPerc}};{{.MemUsage}}".into(),
            container,
        ])
        .await
        else {
            continue;
        };
        let (cpu, memory) = stats.split_once(';').unwrap_or_default();
        let nanocores = (cpu.trim().trim_end_matches('%').parse::<f64>().unwrap_or(0.0) / 100.0 * 1e9) as u64;
        let used = memory.split('/').next().unwrap_or_default().trim();
        let digits = used.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let factor = match &used[digits.len()..] {
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => 1.0,
        };
        let bytes = (digits.parse::<f64>().unwrap_or(0.0) * factor) as u64;
        items.push(json!({
            "metadata": {"name": pod["metadata"]["name"], "namespace": ns, "labels": pod["metadata"]["labels"]},
            "window": "10s",
            "containers": [{"name": "app", "usage": {"cpu": format!("{nanocores}n"), "memory": format!("{}Ki", bytes / 1024)}}],
        }));
    }
    axum::Json(
        json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    )
    .into_response()
}

/// A followed pod log: `docker logs --follow --timestamps` of its container, streamed
/// (stdout and stderr together, as the kubelet serves them).
fn follow_log(container: &str, query: &str) -> Response {
    let mut command = tokio::process::Command::new("sh");
    let mut docker_args = format!("exec docker logs --follow --timestamps {container}");
    if let Some(since) = query_value(query, "sinceTime") {
        docker_args.push_str(&format!(" --since '{}'", since.replace('\'', "")));
    }
    if let Some(tail) = query_value(query, "tailLines").and_then(|t| t.parse::<u32>().ok()) {
        docker_args.push_str(&format!(" --tail {tail}"));
    }
    command
        .args(["-c", &format!("{docker_args} 2>&1")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let Ok(mut child) = command.spawn() else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "docker logs did not start".into(),
        );
    };
    let stdout = child.stdout.take().expect("piped");
    // The child goes with the stream: a client that hangs up stops `docker logs`.
    let stream = futures::stream::unfold(
        (tokio_util::io::ReaderStream::new(stdout), child),
        |(mut reader, child)| async move {
            use futures::StreamExt as _;
            reader.next().await.map(|chunk| (chunk, (reader, child)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(axum::body::Body::from_stream(stream))
        .expect("a response")
}

/// The fake ingress controller: by `Host`, to the ready pod behind the Ingress rule.
async fn ingress_call(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let backend = {
        let objects = shared.objects.lock().unwrap();
        objects.values().filter(|o| o["kind"] == "Ingress").find_map(|ingress| {
            let ns = ingress["metadata"]["namespace"].as_str()?;
            ingress["spec"]["rules"].as_array()?.iter().find_map(|rule| {
                (rule["host"].as_str() == Some(host.as_str())).then(|| {
                    let service = rule["http"]["paths"][0]["backend"]["service"]["name"]
                        .as_str()
                        .unwrap_or_default();
                    format!("{ns}/{service}")
                })
            })
        })
    };
    // A DomainMapping of the host: the pod of the revision its Service routes to.
    let backend = backend.or_else(|| {
        let objects = shared.objects.lock().unwrap();
        let mapping = objects
            .values()
            .find(|o| o["kind"] == "DomainMapping" && o["metadata"]["name"].as_str() == Some(host.as_str()))?;
        let ns = mapping["metadata"]["namespace"].as_str()?;
        let service = mapping["spec"]["ref"]["name"].as_str()?;
        let service = objects.get(&format!("/apis/{KNATIVE_GROUP}/v1/namespaces/{ns}/services/{service}"))?;
        let revision = service["status"]["traffic"]
            .as_array()?
            .iter()
            .find_map(|t| (t["percent"] == 100).then(|| t["revisionName"].as_str()).flatten())?;
        Some(format!("{ns}/{revision}"))
    });
    let Some(backend) = backend else {
        return (StatusCode::NOT_FOUND, "default backend - 404").into_response();
    };
    // The Service selects the Deployment's ready pods (same name, as berth makes them),
    // taken in turn; none ready is a 503, as ingress-nginx answers.
    let addr = {
        let backends = shared.backends.lock().unwrap();
        let ready = backends.get(&backend).map(Vec::as_slice).unwrap_or_default();
        let turn = shared.next_backend.fetch_add(1, Ordering::Relaxed) as usize;
        (!ready.is_empty()).then(|| ready[turn % ready.len()].1)
    };
    let Some(addr) = addr else {
        return (StatusCode::SERVICE_UNAVAILABLE, "503 Service Temporarily Unavailable").into_response();
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(answer) => {
            let code = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (code, answer.bytes().await.unwrap_or_default()).into_response()
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response(),
    }
}

/// A build pod's executor log as a followed stream: what it wrote so far and what it
/// writes next, until its executor ends.
fn follow_build_log(shared: Arc<Shared>, pod: String) -> Response {
    let stream = futures::stream::unfold((shared, pod, 0usize, false), |(shared, pod, at, done)| async move {
        if done {
            return None;
        }
        loop {
            let text = shared.logs.lock().unwrap().get(&pod).cloned().unwrap_or_default();
            let finished = shared.finished_pods.lock().unwrap().contains(&pod);
            if text.len() > at {
                let chunk = Bytes::from(text[at..].to_string());
                return Some((Ok::<_, std::io::Error>(chunk), (shared, pod, text.len(), false)));
            }
            if finished {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(axum::body::Body::from_stream(stream))
        .expect("a response")
}

/// The values of a container's `env` (`value`, or `valueFrom.secretKeyRef` of a stored
/// Secret); `Err` names a missing Secret or key, as the kubelet's
/// `CreateContainerConfigError` does.
fn container_env(shared: &Shared, ns: &str, container: &Value) -> Result<Vec<(String, String)>, String> {
    use base64::Engine as _;
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        if let Some(value) = var["value"].as_str() {
            env.push((name, value.to_string()));
            continue;
        }
        let reference = &var["valueFrom"]["secretKeyRef"];
        let secret = reference["name"].as_str().unwrap_or_default();
        let key = reference["key"].as_str().unwrap_or_default();
        let stored = shared
            .objects
            .lock()
            .unwrap()
            .get(&format!("/api/v1/namespaces/{ns}/secrets/{secret}"))
            .cloned()
            .ok_or_else(|| format!("secret \"{secret}\" not found"))?;
        let data = stored["data"][key]
            .as_str()
            .ok_or_else(|| format!("couldn't find key {key} in Secret {ns}/{secret}"))?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("bad base64 in {key}: {e}"))?;
        env.push((name, String::from_utf8_lossy(&value).into_owned()));
    }
    Ok(env)
}

/// Sets a build pod's phase and container states (only while its Job exists).
fn set_build_pod(shared: &Shared, pod_path: &str, phase: &str, fetch: Value, executor: Value) {
    if let Some(pod) = shared.objects.lock().unwrap().get_mut(pod_path) {
        pod["status"] = json!({
            "phase": phase,
            "initContainerStatuses": [{"name": "fetch", "ready": false, "state": fetch}],
            "containerStatuses": [{"name": "executor", "ready": false, "state": executor}],
        });
    }
}

/// Ends a Job: `Complete`, or `Failed` with `reason`.
fn finish_job(shared: &Shared, job_path: &str, pod_path: &str, failed: Option<(&str, &str)>) {
    shared.finished_pods.lock().unwrap().insert(pod_path.to_string());
    if let Some(job) = shared.objects.lock().unwrap().get_mut(job_path) {
        job["status"] = match failed {
            None => json!({"succeeded": 1, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"}]}),
            Some((reason, message)) => json!({"failed": 1, "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason},
                {"type": "Failed", "status": "True", "reason": reason, "message": message}]}),
        };
    }
}

/// Appends to a build pod's executor log.
fn build_log(shared: &Shared, pod_path: &str, text: &str) {
    shared
        .logs
        .lock()
        .unwrap()
        .entry(pod_path.to_string())
        .or_default()
        .push_str(text);
}

/// The FAKE job runner (see the module's documentation).
async fn job_runner(shared: Arc<Shared>, job_path: String) {
    let Some(job) = shared.objects.lock().unwrap().get(&job_path).cloned() else {
        return;
    };
    shared.jobs_seen.lock().unwrap().push(job.clone());
    let ns = job["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    let name = job["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let template = &job["spec"]["template"];
    let rv = shared.version.fetch_add(1, Ordering::SeqCst) + 1;
    let pod_name = format!("{name}-{rv:05}");
    let pod_path = format!("/api/v1/namespaces/{ns}/pods/{pod_name}");
    let mut labels = template["metadata"]["labels"].clone();
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["job-name"] = json!(name);
    let waiting = json!({"waiting": {"reason": "PodInitializing"}});
    shared.objects.lock().unwrap().insert(
        pod_path.clone(),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": labels, "uid": format!("uid-{rv}"),
                "resourceVersion": rv.to_string(),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                    "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }),
    );
    set_build_pod(&shared, &pod_path, "Pending", waiting.clone(), waiting.clone());
    if shared.hold_jobs.load(Ordering::SeqCst) {
        let released = shared.jobs_released.notified();
        if shared.hold_jobs.load(Ordering::SeqCst) {
            released.await;
        }
    }
    let spec = &template["spec"];
    let (init, executor) = (&spec["initContainers"][0], &spec["containers"][0]);
    let config_error =
        |message: String| json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
    let init_env = match container_env(&shared, &ns, init) {
        Ok(env) => env,
        Err(e) => return set_build_pod(&shared, &pod_path, "Pending", config_error(e), waiting),
    };
    // The variable `wget` downloads: the one the script names as "$NAME".
    let script = init["command"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(Value::as_str)
        .unwrap_or_default();
    let variable: String = script
        .split_once("\"$")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .unwrap_or_default();
    let url = init_env
        .iter()
        .find(|(k, _)| *k == variable)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    set_build_pod(&shared, &pod_path, "Pending", running.clone(), waiting.clone());
    let fetched = match reqwest::get(&url).await {
        Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| e.to_string()),
        Ok(r) => Err(format!("server returned error: HTTP/1.1 {}", r.status())),
        Err(e) => Err(format!("can't connect to remote host: {e}")),
    };
    let context = match fetched {
        Ok(bytes) => bytes,
        Err(e) => {
            let failed = json!({"terminated": {"exitCode": 1, "reason": "Error", "message": format!("wget: {e}")}});
            set_build_pod(&shared, &pod_path, "Failed", failed, waiting);
            return finish_job(
                &shared,
                &job_path,
                &pod_path,
                Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit")),
            );
        }
    };
    let done = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    let executor_env = match container_env(&shared, &ns, executor) {
        Ok(env) => env,
        Err(e) => return set_build_pod(&shared, &pod_path, "Pending", done, config_error(e)),
    };
    let args: Vec<String> = executor["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string))
    };
    let destination = flag("destination").unwrap_or_default();
    let dockerfile = flag("dockerfile").unwrap_or_else(|| "Dockerfile".into());
    assert_eq!(flag("context").as_deref(), Some("tar:///workspace/context.tar.gz"));
    let tarball = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(tarball.path(), &context).expect("writing the context");
    build_log(&shared, &pod_path, "");
    set_build_pod(&shared, &pod_path, "Running", done.clone(), running);
    let mut build: Vec<String> = vec![
        "build".into(),
        "-f".into(),
        dockerfile,
        "-t".into(),
        destination.clone(),
    ];
    for arg in args.iter().filter_map(|a| a.strip_prefix("--build-arg=")) {
        build.push("--build-arg".into());
        build.push(arg.to_string());
    }
    build.push("-".into());
    let mut command = tokio::process::Command::new("sh");
    command
        .args(["-c", "exec docker \"$@\" 2>&1", "sh"])
        .args(&build)
        .envs(executor_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::fs::File::open(tarball.path()).expect("the context"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("docker build starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut buffer = [0u8; 4096];
    loop {
        use tokio::io::AsyncReadExt as _;
        match stdout.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => build_log(&shared, &pod_path, &String::from_utf8_lossy(&buffer[..n])),
        }
    }
    let built = child.wait().await.is_ok_and(|s| s.success());
    let pushed = if built {
        shared.built_images.lock().unwrap().push(destination.clone());
        let push = docker(&["push".into(), destination.clone()]).await;
        build_log(&shared, &pod_path, &format!("{}\n", push.clone().unwrap_or_else(|e| e)));
        let repository = destination
            .rsplit_once(':')
            .map_or(destination.as_str(), |(r, _)| r)
            .to_string();
        match push {
            Ok(_) => docker(&[
                "inspect".into(),
                "--format".into(),
                "{{range .RepoDigests}}{{println .}}{{end}}".into(),
                destination.clone(),
            ])
            .await
            .ok()
            .and_then(|out| {
                out.lines()
                    .find_map(|l| l.strip_prefix(&format!("{repository}@")).map(str::to_string))
            }),
            Err(_) => None,
        }
    } else {
        None
    };
    if !shared.objects.lock().unwrap().contains_key(&job_path) {
        return; // deleted meanwhile (its pod went with it)
    }
    match pushed {
        Some(digest) => {
            let ended = json!({"terminated": {"exitCode": 0, "reason": "Completed", "message": digest}});
            set_build_pod(&shared, &pod_path, "Succeeded", done, ended);
            finish_job(&shared, &job_path, &pod_path, None);
        }
        None => {
            let ended = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
            set_build_pod(&shared, &pod_path, "Failed", done, ended);
            finish_job(
                &shared,
                &job_path,
                &pod_path,
                Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit")),
            );
        }
    }
}
