//! A FAKE Kubernetes API server — not Kubernetes — for contract tests, in process on
//! 127.0.0.1:0. It follows the API documentation where berth depends on it: a bearer token
//! checked on every call; discovery (`GET /version`, `GET /apis`); server-side apply
//! (`PATCH` with `fieldManager` and `application/apply-patch+yaml`, creating or updating the
//! object, bumping `resourceVersion` and, on a spec change, `metadata.generation`;
//! namespaced objects need their namespace); GET of an object (404 `Status` when missing);
//! LIST with `labelSelector` (`k=v,…`) and `fieldSelector=involvedObject.name=…`; DELETE
//! (a Deployment takes its pods with it, and the garbage collector deletes every object
//! whose `metadata.ownerReferences` names a deleted object's uid, transitively); and pod
//! logs; `dryRun=All` on an apply answers without storing anything. A Deployment applied back to the template its ready pod runs scales back to that
//! pod (as its old ReplicaSet would), without a new pull.
//!
//! Its fake kubelet plays a Deployment's rollout forward with the real Docker Engine: it
//! pulls the template's image from the real registry (by digest), runs it with the pod's
//! security context (uid, read-only root, `/tmp` tmpfs, no capabilities, no new
//! privileges) and the template's env, probes the readiness path, and then marks the
//! Deployment available; a container that exits is a `CrashLoopBackOff` (with its log), a
//! failed pull an `ErrImagePull`. A test can force image pulls to fail
//! ([`Rollout::ImagePullFailure`]). Its fake ingress controller proxies a request by its
//! `Host` to the ready container behind the Ingress rule's Service, so a test sees the
//! app's own answer. Containers it started are removed when it is dropped.

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
    token: String,
    objects: Mutex<BTreeMap<String, Value>>,
    version: AtomicU64,
    rollout: Mutex<Rollout>,
    seen: Mutex<Vec<Seen>>,
    /// Containers of the fake kubelet, by pod path.
    containers: Mutex<HashMap<String, String>>,
    /// Pod logs, by pod path.
    logs: Mutex<HashMap<String, String>>,
    /// Where a Deployment's ready pod listens, by `namespace/name`.
    backends: Mutex<HashMap<String, SocketAddr>>,
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
            token: token.to_string(),
            objects: Mutex::default(),
            version: AtomicU64::new(100),
            rollout: Mutex::new(Rollout::Run),
            seen: Mutex::default(),
            containers: Mutex::default(),
            logs: Mutex::default(),
            backends: Mutex::default(),
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
            remove_pods(&self.shared, &deployment, None);
            let ns = deployment["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
            self.shared.backends.lock().unwrap().remove(&format!("{ns}/{name}"));
            let rv = self.shared.version.fetch_add(1, Ordering::SeqCst) + 1;
            let shared = self.shared.clone();
            tokio::spawn(async move { kubelet(shared, deployment, rv).await });
        }
    }

    /// The requests answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
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
    let authorised = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token));
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
            return axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
                {"name": "networking.k8s.io", "versions": [{"groupVersion": "networking.k8s.io/v1", "version": "v1"}]},
            ]}))
            .into_response();
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
        (Method::PATCH, Place::Object { namespace }) => apply(&shared, &parts.headers, &path, &query, namespace, &body),
        (Method::DELETE, Place::Object { .. }) => {
            let removed = shared.objects.lock().unwrap().remove(&path);
            let Some(removed) = removed else {
                return status(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found"));
            };
            // The garbage collector: dependents of a deleted object go too.
            let mut doomed = vec![removed];
            while let Some(removed) = doomed.pop() {
                if removed["kind"] == "Deployment" {
                    remove_pods(&shared, &removed, None);
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
        remove_pods(shared, &object, Some(&pod));
        return axum::Json(object).into_response();
    }
    if object["kind"] == "Deployment" && template_changed {
        let ready = object["status"]["availableReplicas"].as_i64().unwrap_or(0);
        object["status"] = json!({
            "observedGeneration": generation,
            "replicas": ready + 1,
            "updatedReplicas": 1,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}],
        });
        let (shared, deployment) = (shared.clone(), object.clone());
        tokio::spawn(async move { kubelet(shared, deployment, rv).await });
    }
    objects.insert(path.to_string(), object.clone());
    axum::Json(object).into_response()
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
fn remove_pods(shared: &Shared, deployment: &Value, keep: Option<&str>) {
    let ns = deployment["metadata"]["namespace"].as_str().unwrap_or_default();
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let prefix = format!("/api/v1/namespaces/{ns}/pods/");
    let mut objects = shared.objects.lock().unwrap();
    let doomed: Vec<String> = objects
        .iter()
        .filter(|(k, v)| {
            k.starts_with(&prefix)
                && Some(k.as_str()) != keep
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

/// Plays one rollout of `deployment` (as applied at resourceVersion `rv`) forward.
async fn kubelet(shared: Arc<Shared>, deployment: Value, rv: u64) {
    let ns = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let template = &deployment["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap_or_default().to_string();
    let pod = format!("{name}-{rv}");
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
        Rollout::Run => docker(&["pull".into(), "-q".into(), image.clone()]).await,
    };
    if let Err(reason) = pulled {
        set_pod(
            &shared,
            &pod_path,
            json!({"waiting": {"reason": "ErrImagePull", "message": reason}}),
            false,
        );
        event(
            &shared,
            &ns,
            &pod,
            "Failed",
            &format!("Failed to pull image \"{image}\": {reason}"),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_pod(
            &shared,
            &pod_path,
            json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")}}),
            false,
        );
        event(
            &shared,
            &ns,
            &pod,
            "BackOff",
            &format!("Back-off pulling image \"{image}\""),
        );
        return;
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
    for var in container["env"].as_array().into_iter().flatten() {
        args.extend([
            "-e".into(),
            format!(
                "{}={}",
                var["name"].as_str().unwrap_or_default(),
                var["value"].as_str().unwrap_or_default()
            ),
        ]);
    }
    args.push(image.clone());
    if let Err(reason) = docker(&args).await {
        set_pod(
            &shared,
            &pod_path,
            json!({"waiting": {"reason": "CreateContainerConfigError", "message": reason}}),
            false,
        );
        event(&shared, &ns, &pod, "Failed", &reason);
        return;
    }
    shared
        .containers
        .lock()
        .unwrap()
        .insert(pod_path.clone(), container_name.clone());
    set_pod(&shared, &pod_path, json!({"running": {}}), false);
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
                &shared,
                &pod_path,
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container=app"}}),
                false,
            );
            event(
                &shared,
                &ns,
                &pod,
                "BackOff",
                "Back-off restarting failed container app",
            );
            return;
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
            set_pod(&shared, &pod_path, json!({"running": {}}), true);
            let deployment_path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
            let current = shared.objects.lock().unwrap().get(&deployment_path).cloned();
            let Some(current) = current else { return };
            // Only the newest rollout takes over.
            if current["spec"]["template"] != deployment["spec"]["template"] {
                return;
            }
            shared.backends.lock().unwrap().insert(format!("{ns}/{name}"), addr);
            remove_pods(&shared, &current, Some(&pod_path));
            if let Some(d) = shared.objects.lock().unwrap().get_mut(&deployment_path) {
                let generation = d["metadata"]["generation"].clone();
                d["status"] = json!({
                    "observedGeneration": generation,
                    "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                    "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
                });
            }
            return;
        }
    }
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
    // The Service selects the Deployment's pods (same name, as berth makes them).
    let addr = backend.and_then(|key| shared.backends.lock().unwrap().get(&key).copied());
    let Some(addr) = addr else {
        return (StatusCode::NOT_FOUND, "default backend - 404").into_response();
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
